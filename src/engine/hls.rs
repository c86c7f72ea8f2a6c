//! HLS output cut from a channel's own MPEG-TS: no second demux, decode or encode.
//!
//! An HLS session reads the channel's hub like any client (it holds one client place while
//! HLS viewers keep requesting) and feeds a [`Segmenter`], which cuts segments at video
//! keyframes once a segment is at least `engine.hls_segment_secs` long. Each segment starts
//! with PAT + PMT + a keyframe, so any segment can be played on its own. Durations come from
//! the keyframes' PTS (wall-clock time where a PTS is missing). A restart of the channel's
//! producer (a config change, a source switch that resets the output) shows as an
//! `EXT-X-DISCONTINUITY`. Segment names carry the session's id, so a later session never
//! reuses a name an HTTP cache may still hold.
//!
//! With `engine.hls_part_secs` the segmenter also cuts each segment into partial segments
//! (LL-HLS, RFC 8216bis `EXT-X-PART`) at video frame starts, about that long each, listed
//! while the segment is still being built: a player that knows them starts on the first
//! part instead of waiting for whole segments, and follows the live edge part by part.

use super::hub::PartKind;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::time::Instant;

/// PTS are 33-bit, 90 kHz.
const PTS_WRAP: u64 = 1 << 33;
/// Segments a playlist lists at least (see [`Segmenter::playlist`]).
pub const MIN_LISTED: usize = 3;
/// A segment that never sees a keyframe is dropped at this size (a source without them).
const MAX_SEGMENT_BYTES: usize = 64 * 1024 * 1024;
/// Finished segments a session keeps, in bytes at most (oldest go first, but never below
/// [`MIN_LISTED`] segments).
const MAX_KEPT_BYTES: usize = 256 * 1024 * 1024;

/// Seconds from a segment's first keyframe to a later one: their PTS difference (33-bit
/// wrap handled), or `wall` (the clock's seconds between them) where a PTS is missing or
/// the difference is no plausible duration (a jump in the timestamps). `target`: the
/// length segments aim at.
pub fn span(start_pts: Option<u64>, pts: Option<u64>, wall: f64, target: f64) -> f64 {
    match (start_pts, pts) {
        (Some(a), Some(z)) => {
            let d = (z.wrapping_sub(a) % PTS_WRAP) as f64 / 90_000.0;
            if d > 0.0 && d < 4.0 * wall.max(target) {
                d
            } else {
                wall
            }
        }
        _ => wall,
    }
}

/// One finished segment.
#[derive(Clone, Debug)]
pub struct Segment {
    pub seq: u64,
    /// Seconds.
    pub duration: f64,
    /// Preceded by `EXT-X-DISCONTINUITY` (the output restarted before it).
    pub discontinuity: bool,
    pub data: Bytes,
    /// Its partial segments (empty without `hls_part_secs`): slices of `data`.
    pub parts: Vec<Part>,
    /// It ended early (see [`EARLY_PARTS`]): whole when first listed, so its parts are
    /// not listed (a player loads it whole, then the next segment's parts).
    pub early: bool,
}

/// One partial segment (`EXT-X-PART`): whole TS packets from a video frame's start.
#[derive(Clone, Debug)]
pub struct Part {
    /// Seconds.
    pub duration: f64,
    /// Starts with a keyframe (the first part of a segment, with the tables).
    pub independent: bool,
    pub data: Bytes,
}

#[derive(Debug)]
struct Building {
    pieces: Vec<Bytes>,
    bytes: usize,
    start_pts: Option<u64>,
    started: Instant,
    /// When the latest piece arrived (a segment cut short by a restart ends there, not
    /// when the next run's first keyframe arrives).
    last: Instant,
    discontinuity: bool,
    /// Partial segments finished so far.
    done: Vec<Part>,
    /// The part being built: its first piece in `pieces`, its first frame's decode
    /// timestamp, when that arrived, and whether it starts with a keyframe.
    part_from: usize,
    part_dts: Option<u64>,
    part_started: Instant,
    part_independent: bool,
    /// The latest frame's decode timestamp, and seconds from the frame before it.
    last_dts: Option<u64>,
    interval: f64,
    /// PTS minus DTS of its first keyframe (the encoder's reordering delay, 90 kHz).
    reorder: u64,
    /// It follows an early end (see [`EARLY_PARTS`]): it ends at the first keyframe a
    /// part target or more after its start.
    after_early: bool,
}

impl Building {
    fn new(pieces: Vec<Bytes>, pts: Option<u64>, dts: Option<u64>, now: Instant) -> Building {
        Building {
            bytes: pieces.iter().map(Bytes::len).sum(),
            pieces,
            start_pts: pts,
            started: now,
            last: now,
            discontinuity: false,
            done: Vec::new(),
            part_from: 0,
            part_dts: dts.or(pts),
            part_started: now,
            part_independent: true,
            last_dts: dts.or(pts),
            interval: 0.0,
            reorder: match (pts, dts) {
                (Some(p), Some(d)) => p.wrapping_sub(d) % PTS_WRAP,
                _ => 0,
            },
            after_early: false,
        }
    }

    /// The bytes of `pieces[from..]`, as one buffer.
    fn join(&self, from: usize) -> Bytes {
        let rest = &self.pieces[from.min(self.pieces.len())..];
        if let [one] = rest {
            return one.clone();
        }
        let mut data = BytesMut::with_capacity(rest.iter().map(Bytes::len).sum());
        for p in rest {
            data.extend_from_slice(p);
        }
        data.freeze()
    }

    /// Ends the part being built (`secs` long), if it has any bytes; the next starts at
    /// the piece that comes next.
    fn close_part(&mut self, secs: f64) {
        if self.part_from >= self.pieces.len() {
            return;
        }
        let data = self.join(self.part_from);
        self.done.push(Part {
            duration: secs.max(0.001),
            independent: self.part_independent,
            data,
        });
        self.part_from = self.pieces.len();
    }

    /// Seconds of the segment in its finished parts.
    fn parts_secs(&self) -> f64 {
        self.done.iter().map(|p| p.duration).sum()
    }
}

/// What a session's kept segments measure: the highest and the mean bit rate of a
/// segment, and the oldest segment itself (its codec parameters).
#[derive(Clone, Debug, Default)]
pub struct SegmentStats {
    pub peak_bps: u64,
    pub average_bps: u64,
    pub first: Option<Bytes>,
}

/// Where a channel's leading HLS output (its own profile's) started its latest segments:
/// the outputs of its other profiles cut at the same keyframes, with the same media
/// sequence numbers, so a player switches between them without a glitch.
#[derive(Debug, Default)]
pub struct Cuts {
    /// (media sequence number, PTS of the segment's first keyframe), oldest first.
    list: VecDeque<(u64, u64)>,
    /// The leader's first segment, which it ended early (see `EARLY_PARTS`): a follower
    /// that starts with it ends it early too, so the numbers stay the same.
    early: Option<u64>,
}

/// Cuts kept (more than any playlist window).
const CUTS_KEPT: usize = 64;
/// How far two renditions' keyframe PTS may differ and still be the same source picture:
/// an encoder's frame-rate filter puts its frames on its own grid, up to half a frame
/// (20 ms at 25 fps) from the source's PTS. Keyframes are many frames apart.
const SAME_PICTURE: u64 = 3_000;

impl Cuts {
    fn record(&mut self, seq: u64, pts: u64) {
        self.list.push_back((seq, pts));
        while self.list.len() > CUTS_KEPT {
            self.list.pop_front();
        }
    }

    /// The sequence number of the cut at `pts`, if the leader cut there.
    fn at(&self, pts: u64) -> Option<u64> {
        self.list
            .iter()
            .rev()
            .find(|(_, p)| {
                let d = p.wrapping_sub(pts) % PTS_WRAP;
                d.min(PTS_WRAP - d) <= SAME_PICTURE
            })
            .map(|(s, _)| *s)
    }

    /// Whether the leader's latest cut is at or after `pts` (it has passed this keyframe).
    fn passed(&self, pts: u64) -> bool {
        self.list.back().is_some_and(|(_, p)| {
            let d = p.wrapping_sub(pts) % PTS_WRAP;
            d < PTS_WRAP / 2
        })
    }
}

/// How a segmenter places its cuts.
#[derive(Debug, Clone)]
pub enum Role {
    /// By itself (see [`Segmenter::feed`]).
    Alone,
    /// By itself, recording its cuts for followers.
    Leader(std::sync::Arc<std::sync::Mutex<Cuts>>),
    /// At the leader's cuts, with its sequence numbers; by itself where the leader has
    /// not been yet.
    Follower(std::sync::Arc<std::sync::Mutex<Cuts>>),
}

/// With partial segments, a session's first segment ends after this many parts, at a
/// frame that need not be a keyframe (the next segment then depends on it, as RFC 8216
/// allows without `EXT-X-INDEPENDENT-SEGMENTS`): a player that needs one whole segment
/// before it starts (hls.js) starts a cold channel about a second after it began, and
/// follows parts from there. The segments after it end at keyframes as always.
const EARLY_PARTS: usize = 2;

/// How long a follower waits for a keyframe its leader cut at before it starts alone.
const FOLLOW_WAIT_TARGETS: f64 = 3.0;

/// Cuts a hub's pieces into HLS segments and renders the live playlist.
#[derive(Debug)]
pub struct Segmenter {
    role: Role,
    /// A follower that has not started: since when it waits.
    waiting_since: Option<Instant>,
    target: f64,
    /// Finished segments kept (the playlist window plus a few for late fetches).
    keep: usize,
    header: Option<Bytes>,
    building: Option<Building>,
    segments: VecDeque<Segment>,
    kept_bytes: usize,
    next_seq: u64,
    /// Discontinuities that have left the kept segments (`EXT-X-DISCONTINUITY-SEQUENCE`).
    discontinuity_seq: u64,
    pending_discontinuity: bool,
    /// The longest segment so far, rounded (the target duration never shrinks).
    longest: u64,
    /// Partial segments' target length in seconds (0: none are made).
    part_target: f64,
    /// The segment to end after `EARLY_PARTS` parts (the session's first), if any.
    early_seq: Option<u64>,
    /// No segment has been started yet in this session.
    fresh: bool,
}

impl Segmenter {
    pub fn new(target_secs: f64, keep: usize) -> Segmenter {
        Segmenter {
            role: Role::Alone,
            waiting_since: None,
            target: target_secs.max(0.5),
            keep: keep.max(2),
            header: None,
            building: None,
            segments: VecDeque::new(),
            kept_bytes: 0,
            next_seq: 0,
            discontinuity_seq: 0,
            pending_discontinuity: false,
            longest: 0,
            part_target: 0.0,
            early_seq: None,
            fresh: true,
        }
    }

    /// Also cuts partial segments of about `secs` (0: none).
    pub fn with_parts(mut self, secs: f64) -> Segmenter {
        self.part_target = if secs > 0.0 {
            secs.clamp(0.1, self.target / 2.0)
        } else {
            0.0
        };
        self
    }

    /// The partial segments' target length (0: none are made).
    pub fn part_target(&self) -> f64 {
        self.part_target
    }

    /// Whether a session's first segment ends early (see [`EARLY_PARTS`]): only where
    /// that starts a player clearly sooner than a whole segment would (with 1 s segments
    /// it would save a frame or two, and cost the next segment its keyframe).
    pub fn ends_early(&self) -> bool {
        self.part_target > 0.0 && 1.5 * EARLY_PARTS as f64 * self.part_target < self.target
    }

    /// Sets how the segmenter places its cuts (before the first piece).
    pub fn with_role(mut self, role: Role) -> Segmenter {
        self.role = role;
        self
    }

    /// Continues the numbering of an earlier session of the same channel: a player that
    /// reloads the same playlist URL sees the media sequence go on (never back) and a
    /// discontinuity before the first new segment.
    pub fn continue_after(&mut self, next_seq: u64, discontinuity_seq: u64) {
        self.next_seq = next_seq;
        self.discontinuity_seq = discontinuity_seq;
        self.pending_discontinuity = next_seq > 0;
    }

    /// Where a later session of the same channel continues: (next media sequence number,
    /// discontinuity sequence of that segment's window).
    pub fn position(&self) -> (u64, u64) {
        let kept = self.segments.iter().filter(|s| s.discontinuity).count() as u64;
        (self.next_seq, self.discontinuity_seq + kept)
    }

    /// Feeds one piece of the channel's output.
    pub fn feed(&mut self, data: Bytes, kind: PartKind, now: Instant) {
        match kind {
            PartKind::Header => {
                // The output (re)starts: what was being built ends here.
                if let Some(b) = self.building.take() {
                    let secs = b.last.duration_since(b.started).as_secs_f64();
                    self.finish(b, secs);
                }
                if self.header.is_some() {
                    self.pending_discontinuity = true;
                }
                self.header = Some(data);
            }
            // The tables as they stand at the next keyframe: its segment starts with them.
            PartKind::Tables => self.header = Some(data),
            PartKind::Key { pts, dts } => {
                let follow = match (&self.role, pts) {
                    (Role::Follower(cuts), Some(p)) => {
                        let c = cuts.lock().unwrap_or_else(|e| e.into_inner());
                        Some((c.at(p), c.passed(p)))
                    }
                    _ => None,
                };
                if self.building.is_none() && self.header.is_some() {
                    if let Some((cut, _)) = follow {
                        // Start on a keyframe the leader started a segment at, with its
                        // number; alone if the leader gives none for a while.
                        let since = *self.waiting_since.get_or_insert(now);
                        match cut {
                            Some(seq) => self.next_seq = seq,
                            None if now.duration_since(since).as_secs_f64()
                                < FOLLOW_WAIT_TARGETS * self.target =>
                            {
                                return
                            }
                            None => self.role = Role::Alone,
                        }
                    }
                }
                if let Some(b) = &self.building {
                    let wall = now.duration_since(b.started).as_secs_f64();
                    let secs = span(b.start_pts, pts, wall, self.target);
                    let cut = match follow {
                        // The leader cut here: so do we, taking its number.
                        Some((Some(seq), _)) if seq > self.next_seq => true,
                        // The leader has passed this keyframe without cutting.
                        Some((None, true)) | Some((Some(_), _)) => false,
                        // Not there yet, or alone: the same rule as the leader.
                        _ => {
                            secs + 0.001 >= self.target
                                || (b.after_early && secs + 0.001 >= self.part_target)
                        }
                    };
                    if !cut {
                        self.frame(dts.or(pts), true, now);
                        self.append(data, now);
                        return;
                    }
                    let b = self.building.take().expect("checked above");
                    self.finish(b, secs);
                    if let Some((Some(seq), _)) = follow {
                        self.next_seq = seq;
                    }
                }
                let Some(header) = self.header.clone() else {
                    return;
                };
                if let (Role::Leader(cuts), Some(p)) = (&self.role, pts) {
                    cuts.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(self.next_seq, p);
                }
                let mut b = Building::new(vec![header, data], pts, dts, now);
                b.discontinuity = std::mem::take(&mut self.pending_discontinuity);
                self.building = Some(b);
                if std::mem::take(&mut self.fresh) && self.ends_early() {
                    self.early_seq = match &self.role {
                        Role::Follower(cuts) => {
                            let c = cuts.lock().unwrap_or_else(|e| e.into_inner());
                            c.early.filter(|s| *s == self.next_seq)
                        }
                        Role::Leader(cuts) => {
                            let mut c = cuts.lock().unwrap_or_else(|e| e.into_inner());
                            c.early = Some(self.next_seq);
                            c.early
                        }
                        Role::Alone => Some(self.next_seq),
                    };
                }
            }
            PartKind::Frame(dts) => {
                self.frame(dts, false, now);
                self.append(data, now);
            }
            PartKind::Delta => self.append(data, now),
        }
    }

    /// A video frame starts with the next piece: the part being built ends here once
    /// one more frame would take it past the part target.
    fn frame(&mut self, dts: Option<u64>, key: bool, now: Instant) {
        let target = self.part_target;
        let Some(b) = &mut self.building else {
            return;
        };
        if let (Some(a), Some(z)) = (b.last_dts, dts) {
            let d = (z.wrapping_sub(a) % PTS_WRAP) as f64 / 90_000.0;
            if d > 0.0 && d < 1.0 {
                b.interval = d;
            }
        }
        b.last_dts = dts;
        if target <= 0.0 {
            return;
        }
        let wall = now.duration_since(b.part_started).as_secs_f64();
        let secs = span(b.part_dts, dts, wall, target);
        if secs + b.interval > target + 0.001 {
            b.close_part(secs);
            b.part_dts = dts;
            b.part_started = now;
            b.part_independent = key;
            if !key && self.early_seq == Some(self.next_seq) && b.done.len() >= EARLY_PARTS {
                self.end_early(dts, now);
            }
        }
    }

    /// Ends the session's first segment at the frame that starts with the next piece
    /// (see [`EARLY_PARTS`]); the next segment starts there, without tables or keyframe.
    fn end_early(&mut self, dts: Option<u64>, now: Instant) {
        let Some(b) = self.building.take() else {
            return;
        };
        self.early_seq = None;
        let secs = b.parts_secs();
        let reorder = b.reorder;
        let interval = b.interval;
        self.finish(b, secs);
        if let Some(s) = self.segments.back_mut() {
            s.early = true;
        }
        let mut next = Building::new(Vec::new(), dts.map(|d| (d + reorder) % PTS_WRAP), dts, now);
        next.part_independent = false;
        next.after_early = true;
        next.interval = interval;
        next.reorder = reorder;
        self.building = Some(next);
    }

    fn append(&mut self, data: Bytes, now: Instant) {
        let Some(b) = &mut self.building else {
            return; // waiting for a keyframe
        };
        b.last = now;
        b.bytes += data.len();
        b.pieces.push(data);
        if b.bytes > MAX_SEGMENT_BYTES {
            self.building = None;
            self.pending_discontinuity = true;
        }
    }

    fn finish(&mut self, mut b: Building, secs: f64) {
        if self.part_target > 0.0 {
            // The last part ends with the segment; the parts add up to its duration.
            let rest = secs - b.parts_secs();
            b.close_part(rest);
        }
        let data = b.join(0);
        // The parts as slices of the segment: the same bytes, kept once.
        let mut parts = Vec::with_capacity(b.done.len());
        let mut at = 0;
        for p in b.done {
            let end = (at + p.data.len()).min(data.len());
            parts.push(Part {
                data: data.slice(at..end),
                ..p
            });
            at = end;
        }
        self.longest = self.longest.max(secs.round() as u64);
        self.kept_bytes += data.len();
        self.segments.push_back(Segment {
            seq: self.next_seq,
            duration: secs,
            discontinuity: b.discontinuity && self.next_seq > 0,
            data,
            parts,
            early: false,
        });
        self.next_seq += 1;
        while self.segments.len() > self.keep
            || (self.kept_bytes > MAX_KEPT_BYTES && self.segments.len() > MIN_LISTED)
        {
            if let Some(old) = self.segments.pop_front() {
                self.kept_bytes -= old.data.len();
                if old.discontinuity {
                    self.discontinuity_seq += 1;
                }
            }
        }
    }

    /// The kept segments' peak and mean bit rates, and the oldest of them.
    pub fn stats(&self) -> SegmentStats {
        let rates: Vec<f64> = self
            .segments
            .iter()
            .filter(|s| s.duration > 0.1)
            .map(|s| s.data.len() as f64 * 8.0 / s.duration)
            .collect();
        let bytes: usize = self.segments.iter().map(|s| s.data.len()).sum();
        let secs: f64 = self.segments.iter().map(|s| s.duration).sum();
        let average = if secs > 0.0 {
            (bytes as f64 * 8.0 / secs) as u64
        } else {
            0
        };
        SegmentStats {
            // A single short first segment is all a first master playlist may have: the
            // peak is never below the mean.
            peak_bps: (rates.iter().cloned().fold(0.0, f64::max) as u64).max(average),
            average_bps: average,
            first: self.segments.front().map(|s| s.data.clone()),
        }
    }

    /// Finished segments so far (0 until the first is complete).
    pub fn ready(&self) -> usize {
        self.segments.len()
    }

    pub fn segment(&self, seq: u64) -> Option<Segment> {
        self.segments.iter().find(|s| s.seq == seq).cloned()
    }

    /// Partial segment `index` of segment `seq`, finished or in the making.
    pub fn part(&self, seq: u64, index: usize) -> Option<Part> {
        if let Some(s) = self.segments.iter().find(|s| s.seq == seq) {
            return s.parts.get(index).cloned();
        }
        let b = self.building.as_ref().filter(|_| seq == self.next_seq)?;
        b.done.get(index).cloned()
    }

    /// The part that comes next: (segment, index). It is the one a playlist's preload
    /// hint names, and a request for it may wait until it is complete.
    pub fn next_part(&self) -> (u64, usize) {
        match &self.building {
            Some(b) => (self.next_seq, b.done.len()),
            None => (self.next_seq, 0),
        }
    }

    /// Whether a playlist now holds segment `msn` (with `part`: that part of it), for a
    /// blocking playlist reload (`_HLS_msn`, `_HLS_part`).
    pub fn holds(&self, msn: u64, part: Option<usize>) -> bool {
        if msn < self.next_seq {
            return true;
        }
        match (part, &self.building) {
            (Some(p), Some(b)) if msn == self.next_seq => b.done.len() > p,
            _ => false,
        }
    }

    /// Whether the playlist could be answered now. `early`: for a player that follows
    /// partial segments, once the first (short, see [`EARLY_PARTS`]) segment is
    /// complete; otherwise (and without parts) once `MIN_LISTED` segments are (at most
    /// `window`): RFC 8216 (6.3.3) has players start at least three target durations
    /// from the end, so a shorter live playlist leaves a strict player (Chromium's own
    /// HLS) nowhere to start.
    pub fn listable(&self, window: usize, early: bool) -> bool {
        if early && self.part_target > 0.0 {
            return !self.segments.is_empty();
        }
        self.segments.len() >= MIN_LISTED.min(window.max(1))
    }

    /// The live playlist of the newest `window` segments (and, with partial segments,
    /// the parts of the latest ones and of the one being built, with a preload hint for
    /// the next part); `uri(seq, None)` names a segment, `uri(seq, Some(i))` its part
    /// `i`. None until [`Segmenter::listable`].
    pub fn playlist(
        &self,
        window: usize,
        early: bool,
        uri: impl Fn(u64, Option<usize>) -> String,
    ) -> Option<String> {
        if !self.listable(window, early) {
            return None;
        }
        let skip = self.segments.len().saturating_sub(window.max(1));
        let listed: Vec<&Segment> = self.segments.iter().skip(skip).collect();
        let parts = self.part_target > 0.0;
        let first_seq = listed.first().map_or(self.next_seq, |s| s.seq);
        // Discontinuities before the window also count in its sequence number.
        let hidden = self
            .segments
            .iter()
            .take(skip)
            .filter(|s| s.discontinuity)
            .count() as u64;
        let target = self.longest.max(self.target.ceil() as u64).max(1);
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{target}\n",
            if parts { 6 } else { 3 }
        );
        if parts {
            // PART-HOLD-BACK: three part targets (RFC 8216bis 4.4.3.8 asks at least two).
            out.push_str(&format!(
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n#EXT-X-PART-INF:PART-TARGET={:.3}\n",
                3.0 * self.part_target,
                self.part_target
            ));
        }
        out.push_str(&format!(
            "#EXT-X-MEDIA-SEQUENCE:{first_seq}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
            self.discontinuity_seq + hidden
        ));
        // Parts are listed for the segments in the last three target durations.
        let mut recent = listed.len();
        let mut secs = 0.0;
        while parts && recent > 0 && secs < 3.0 * target as f64 {
            recent -= 1;
            secs += listed[recent].duration;
        }
        let part_line = |out: &mut String, seq: u64, i: usize, p: &Part| {
            out.push_str(&format!(
                "#EXT-X-PART:DURATION={:.3},URI=\"{}\"{}\n",
                p.duration,
                uri(seq, Some(i)),
                if p.independent {
                    ",INDEPENDENT=YES"
                } else {
                    ""
                }
            ));
        };
        for (n, s) in listed.iter().enumerate() {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if parts && n >= recent && !s.early {
                for (i, p) in s.parts.iter().enumerate() {
                    part_line(&mut out, s.seq, i, p);
                }
            }
            out.push_str(&format!(
                "#EXTINF:{:.3},\n{}\n",
                s.duration,
                uri(s.seq, None)
            ));
        }
        if parts {
            if let Some(b) = &self.building {
                if b.discontinuity && self.next_seq > 0 && !b.done.is_empty() {
                    out.push_str("#EXT-X-DISCONTINUITY\n");
                }
                for (i, p) in b.done.iter().enumerate() {
                    part_line(&mut out, self.next_seq, i, p);
                }
            }
            let (seq, i) = self.next_part();
            out.push_str(&format!(
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"\n",
                uri(seq, Some(i))
            ));
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(s: &mut Segmenter, pts_secs: f64, at: Instant) {
        s.feed(
            Bytes::from_static(b"K"),
            PartKind::Key {
                pts: Some((pts_secs * 90_000.0) as u64 % PTS_WRAP),
                dts: None,
            },
            at,
        );
        s.feed(Bytes::from_static(b"dd"), PartKind::Delta, at);
    }

    #[test]
    fn cuts_at_keyframes_once_the_target_is_reached() {
        let t0 = Instant::now();
        let mut s = Segmenter::new(2.0, 10);
        s.feed(Bytes::from_static(b"delta before psi"), PartKind::Delta, t0);
        s.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        s.feed(Bytes::from_static(b"orphan"), PartKind::Delta, t0);
        // keyframes every 0.8 s: segments close at the first keyframe >= 2 s in
        for i in 0..12 {
            key(&mut s, 100.0 + 0.8 * f64::from(i), t0);
        }
        assert_eq!(s.ready(), 3, "cut at 2.4 s, 4.8 s and 7.2 s");
        let seg = s.segment(0).unwrap();
        assert!((seg.duration - 2.4).abs() < 1e-6, "{}", seg.duration);
        assert_eq!(&seg.data[..], b"HKddKddKdd", "PSI first, then whole GOPs");
        let pl = s.playlist(6, false, |n, _| format!("s-{n}.ts")).unwrap();
        assert!(
            pl.starts_with(
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
            ),
            "{pl}"
        );
        assert!(
            pl.contains("#EXTINF:2.400,\ns-0.ts\n#EXTINF:2.400,\ns-1.ts\n"),
            "{pl}"
        );
        assert!(!pl.contains("ENDLIST"));
    }

    #[test]
    fn the_window_slides_and_pts_wraps() {
        let t0 = Instant::now();
        let mut s = Segmenter::new(1.0, 4);
        s.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        let start = PTS_WRAP as f64 / 90_000.0 - 3.0; // wraps 3 s in
        for i in 0..12 {
            key(&mut s, start + f64::from(i), t0);
        }
        assert_eq!(s.ready(), 4, "only `keep` segments are kept");
        for n in 7..11 {
            let seg = s.segment(n).unwrap();
            assert!((seg.duration - 1.0).abs() < 1e-3, "{n}: {}", seg.duration);
        }
        assert!(s.segment(6).is_none());
        let pl = s.playlist(3, false, |n, _| n.to_string()).unwrap();
        assert!(pl.contains("#EXT-X-MEDIA-SEQUENCE:8\n"), "{pl}");
        assert_eq!(pl.matches("#EXTINF").count(), 3);
    }

    #[test]
    fn a_restart_is_a_discontinuity_and_missing_pts_use_the_clock() {
        let t0 = Instant::now();
        let mut s = Segmenter::new(2.0, 10);
        s.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        key(&mut s, 10.0, t0);
        key(&mut s, 12.0, t0 + Duration::from_secs(2));
        s.feed(
            Bytes::from_static(b"d"),
            PartKind::Delta,
            t0 + Duration::from_millis(2900),
        );
        // The producer restarts and takes 2 s to come back: the open segment ends with
        // its last piece (0.9 s), not when the new run's PSI arrives; the next is marked.
        s.feed(
            Bytes::from_static(b"H2"),
            PartKind::Header,
            t0 + Duration::from_millis(5000),
        );
        s.feed(
            Bytes::from_static(b"K"),
            PartKind::Key {
                pts: None,
                dts: None,
            },
            t0 + Duration::from_millis(5500),
        );
        s.feed(
            Bytes::from_static(b"K"),
            PartKind::Key {
                pts: None,
                dts: None,
            },
            t0 + Duration::from_millis(8000),
        );
        assert_eq!(s.ready(), 3);
        let second = s.segment(1).unwrap();
        assert!((second.duration - 0.9).abs() < 1e-3, "{}", second.duration);
        assert_eq!(&second.data[..], b"HKddd");
        let third = s.segment(2).unwrap();
        assert!(third.discontinuity);
        assert!((third.duration - 2.5).abs() < 1e-3, "{}", third.duration);
        assert_eq!(&third.data[..], b"H2K", "the new PSI starts it");
        let pl = s.playlist(6, false, |n, _| n.to_string()).unwrap();
        assert!(
            pl.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.500,\n2\n"),
            "{pl}"
        );
        assert!(
            pl.contains("#EXT-X-TARGETDURATION:3\n"),
            "rounded longest: {pl}"
        );
    }

    #[test]
    fn a_later_session_continues_the_numbering_with_a_discontinuity() {
        let t0 = Instant::now();
        let mut a = Segmenter::new(1.0, 4);
        a.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        for i in 0..8 {
            key(&mut a, f64::from(i), t0);
        }
        assert_eq!(a.position(), (7, 0));
        let mut b = Segmenter::new(1.0, 4);
        b.continue_after(7, 0);
        b.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        for i in 0..5 {
            key(&mut b, 500.0 + f64::from(i), t0);
        }
        let pl = b.playlist(4, false, |n, _| n.to_string()).unwrap();
        assert!(pl.contains("#EXT-X-MEDIA-SEQUENCE:7\n"), "{pl}");
        assert!(
            pl.contains(
                "#EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-DISCONTINUITY\n#EXTINF:1.000,\n7\n"
            ),
            "{pl}"
        );
        assert_eq!(b.position(), (11, 1));
    }

    #[test]
    fn a_follower_cuts_where_its_leader_did_with_the_same_numbers() {
        let t0 = Instant::now();
        let cuts = std::sync::Arc::new(std::sync::Mutex::new(Cuts::default()));
        let mut lead = Segmenter::new(2.0, 10).with_role(Role::Leader(cuts.clone()));
        lead.continue_after(40, 0);
        lead.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        // Keyframes every 0.8 s (segments of 2.4 s); the follower joins 3 s later, its
        // encoder has an extra keyframe at 7.0 s and its PTS are on a 25 fps grid.
        for i in 0..12 {
            key(&mut lead, 100.0 + 0.8 * f64::from(i), t0);
        }
        let mut follow = Segmenter::new(2.0, 10).with_role(Role::Follower(cuts));
        follow.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        let mut times: Vec<f64> = (4..12)
            .map(|i| 100.0 + 0.8 * f64::from(i) + 0.008)
            .collect();
        times.push(107.0);
        times.sort_by(f64::total_cmp);
        for t in times {
            key(&mut follow, t, t0);
        }
        // The leader cut at 100, 102.4, 104.8, 107.2 (seq 40..43); the follower waits for
        // 104.8 and cuts at 107.2 too, not at its own extra keyframe.
        assert_eq!(lead.ready(), 3);
        assert_eq!(follow.ready(), 1);
        let seg = follow
            .segment(42)
            .expect("the follower's first segment is 42");
        assert!((seg.duration - 2.4).abs() < 0.01, "{}", seg.duration);
        assert!(follow.segment(41).is_none());
    }

    #[test]
    fn nothing_is_listed_before_three_segments() {
        let t0 = Instant::now();
        let mut s = Segmenter::new(1.0, 6);
        assert!(s.playlist(6, false, |n, _| n.to_string()).is_none());
        s.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        for i in 0..3 {
            key(&mut s, f64::from(i), t0);
        }
        assert_eq!(s.ready(), 2);
        assert!(
            s.playlist(6, false, |n, _| n.to_string()).is_none(),
            "two segments are too few"
        );
        key(&mut s, 3.0, t0);
        assert_eq!(s.ready(), 3);
        assert!(s.playlist(6, false, |n, _| n.to_string()).is_some());
        assert!(
            s.playlist(2, false, |n, _| n.to_string()).is_some(),
            "a 2-segment window lists 2"
        );
    }

    /// 25 fps: a keyframe every `gop` frames from `first`, frames in between; returns
    /// the time after the last frame.
    fn frames(s: &mut Segmenter, first: u32, n: u32, gop: u32, t0: Instant) {
        for f in first..first + n {
            let secs = 10.0 + f64::from(f) * 0.04;
            let ts = Some((secs * 90_000.0).round() as u64);
            let at = t0 + Duration::from_millis(u64::from(f) * 40);
            let kind = if f % gop == 0 {
                PartKind::Key { pts: ts, dts: ts }
            } else {
                PartKind::Frame(ts)
            };
            s.feed(Bytes::from_static(b"F"), kind, at);
            s.feed(Bytes::from_static(b"a"), PartKind::Delta, at);
        }
    }

    #[test]
    fn parts_are_cut_at_frames_and_the_first_segment_ends_early() {
        let t0 = Instant::now();
        let mut s = Segmenter::new(2.0, 10).with_parts(0.5);
        s.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        // 1 s: the first two parts (12 frames each: a 13th would pass 0.5 s) make the
        // first segment, which ends at a frame that is no keyframe.
        frames(&mut s, 0, 25, 50, t0);
        assert_eq!(s.ready(), 1);
        let first = s.segment(0).unwrap();
        assert!((first.duration - 0.96).abs() < 1e-6, "{}", first.duration);
        assert!(first.early);
        assert_eq!(first.parts.len(), 2);
        assert_eq!(
            first
                .parts
                .iter()
                .map(|p| &p.data[..])
                .collect::<Vec<_>>()
                .concat(),
            &first.data[..],
            "the parts are the segment, in order"
        );
        assert!(first.parts[0].independent && !first.parts[1].independent);
        assert_eq!(&first.data[..3], b"HFa", "tables, then the keyframe");
        // A script player gets it now; a strict player waits for three segments.
        assert!(s.listable(6, true) && !s.listable(6, false));
        assert_eq!(s.next_part(), (1, 0));
        assert!(s.holds(0, None) && !s.holds(1, Some(0)));

        // On to 4.04 s: the second segment ends at the keyframe at 2 s (mid-GOP start,
        // no tables: it depends on the first), the third at the one at 4 s.
        frames(&mut s, 25, 77, 50, t0);
        assert_eq!(s.ready(), 3);
        let second = s.segment(1).unwrap();
        assert!((second.duration - 1.04).abs() < 1e-6, "{}", second.duration);
        assert_eq!(&second.data[..1], b"F");
        assert!(second.parts.iter().all(|p| !p.independent));
        let third = s.segment(2).unwrap();
        assert!((third.duration - 2.0).abs() < 1e-6, "{}", third.duration);
        let durations: Vec<f64> = third.parts.iter().map(|p| p.duration).collect();
        assert_eq!(durations.len(), 5, "{durations:?}");
        assert!(durations.iter().all(|d| *d <= 0.5 + 1e-9), "{durations:?}");
        assert!((durations.iter().sum::<f64>() - 2.0).abs() < 1e-6);
        assert!(third.parts[0].independent && !third.parts[1].independent);
        // The fourth is being built: 0.04 s so far, no part finished yet.
        assert_eq!(s.next_part(), (3, 0));
        frames(&mut s, 102, 13, 50, t0);
        assert_eq!(s.next_part(), (3, 1));
        assert!(s.holds(3, Some(0)) && !s.holds(3, Some(1)) && !s.holds(3, None));
        assert_eq!(
            s.part(3, 0).unwrap().data.len(),
            25,
            "tables, 12 frames of 2 pieces"
        );
        assert!(s.part(3, 1).is_none() && s.part(0, 0).is_some());

        let pl = s
            .playlist(6, true, |n, p| match p {
                None => format!("s-{n}.ts"),
                Some(i) => format!("s-{n}.{i}.ts"),
            })
            .unwrap();
        assert!(
            pl.starts_with(
                "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n\
                 #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500\n\
                 #EXT-X-PART-INF:PART-TARGET=0.500\n#EXT-X-MEDIA-SEQUENCE:0\n"
            ),
            "{pl}"
        );
        // The first segment's parts are not listed (it was whole when first listed).
        assert!(!pl.contains("s-0.0.ts") && pl.contains("#EXTINF:0.960,\ns-0.ts\n"));
        assert!(pl.contains(
            "#EXT-X-PART:DURATION=0.480,URI=\"s-2.0.ts\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.480,URI=\"s-2.1.ts\"\n"
        ));
        assert!(
            pl.ends_with(
                "#EXTINF:2.000,\ns-2.ts\n\
                 #EXT-X-PART:DURATION=0.480,URI=\"s-3.0.ts\",INDEPENDENT=YES\n\
                 #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s-3.1.ts\"\n"
            ),
            "{pl}"
        );
        assert!(s.listable(6, false), "three segments: every player gets it");
    }

    #[test]
    fn without_parts_segments_wait_for_keyframes_and_nothing_is_listed_early() {
        let t0 = Instant::now();
        let mut s = Segmenter::new(2.0, 10);
        s.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        frames(&mut s, 0, 51, 50, t0);
        assert_eq!(s.ready(), 1);
        let seg = s.segment(0).unwrap();
        assert!((seg.duration - 2.0).abs() < 1e-6 && seg.parts.is_empty());
        assert!(
            !s.listable(6, true),
            "no parts: three segments for everyone"
        );
        frames(&mut s, 51, 100, 50, t0);
        let pl = s.playlist(6, true, |n, _| n.to_string()).unwrap();
        assert!(
            pl.contains("#EXT-X-VERSION:3\n") && !pl.contains("PART"),
            "{pl}"
        );
    }

    #[test]
    fn short_segments_have_parts_but_every_segment_starts_on_a_keyframe() {
        let t0 = Instant::now();
        let mut s = Segmenter::new(1.0, 10).with_parts(0.5);
        assert!(!s.ends_early(), "a 1 s segment is already short");
        s.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        frames(&mut s, 0, 76, 25, t0);
        assert_eq!(s.ready(), 3);
        for n in 0..3 {
            let seg = s.segment(n).unwrap();
            assert!((seg.duration - 1.0).abs() < 1e-6 && &seg.data[..2] == b"HF");
            assert_eq!(seg.parts.len(), 3, "0.48 + 0.48 + 0.04");
        }
        assert!(s.listable(6, true) && s.listable(6, false));
    }

    #[test]
    fn a_follower_ends_its_first_segment_early_with_its_leader() {
        let t0 = Instant::now();
        let cuts = std::sync::Arc::new(std::sync::Mutex::new(Cuts::default()));
        let mut lead = Segmenter::new(2.0, 10)
            .with_role(Role::Leader(cuts.clone()))
            .with_parts(0.5);
        let mut follow = Segmenter::new(2.0, 10)
            .with_role(Role::Follower(cuts))
            .with_parts(0.5);
        for s in [&mut lead, &mut follow] {
            s.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        }
        for f in 0..151 {
            frames(&mut lead, f, 1, 50, t0);
            frames(&mut follow, f, 1, 50, t0);
        }
        assert_eq!((lead.ready(), follow.ready()), (4, 4));
        for n in 0..4 {
            let (a, b) = (lead.segment(n).unwrap(), follow.segment(n).unwrap());
            assert!((a.duration - b.duration).abs() < 1e-6, "{n}");
            assert_eq!(a.data, b.data, "{n}");
        }
    }
}
