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
}

#[derive(Debug)]
struct Building {
    parts: Vec<Bytes>,
    bytes: usize,
    start_pts: Option<u64>,
    started: Instant,
    /// When the latest piece arrived (a segment cut short by a restart ends there, not
    /// when the next run's first keyframe arrives).
    last: Instant,
    discontinuity: bool,
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
        }
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
            PartKind::Key(pts) => {
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
                        _ => secs + 0.001 >= self.target,
                    };
                    if !cut {
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
                let bytes = header.len() + data.len();
                self.building = Some(Building {
                    parts: vec![header, data],
                    bytes,
                    start_pts: pts,
                    started: now,
                    last: now,
                    discontinuity: std::mem::take(&mut self.pending_discontinuity),
                });
            }
            PartKind::Delta => self.append(data, now),
        }
    }

    fn append(&mut self, data: Bytes, now: Instant) {
        let Some(b) = &mut self.building else {
            return; // waiting for a keyframe
        };
        b.last = now;
        b.bytes += data.len();
        b.parts.push(data);
        if b.bytes > MAX_SEGMENT_BYTES {
            self.building = None;
            self.pending_discontinuity = true;
        }
    }

    fn finish(&mut self, b: Building, secs: f64) {
        let mut data = BytesMut::with_capacity(b.bytes);
        for p in &b.parts {
            data.extend_from_slice(p);
        }
        self.longest = self.longest.max(secs.round() as u64);
        self.kept_bytes += data.len();
        self.segments.push_back(Segment {
            seq: self.next_seq,
            duration: secs,
            discontinuity: b.discontinuity && self.next_seq > 0,
            data: data.freeze(),
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
        SegmentStats {
            peak_bps: rates.iter().cloned().fold(0.0, f64::max) as u64,
            average_bps: if secs > 0.0 {
                (bytes as f64 * 8.0 / secs) as u64
            } else {
                0
            },
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

    /// The live playlist of the newest `window` segments; `uri` names a segment. None
    /// until `MIN_LISTED` segments (at most `window`) are complete: RFC 8216 (6.3.3) has
    /// players start at least three target durations from the end, so a shorter live
    /// playlist leaves a strict player (Chromium's own HLS) nowhere to start.
    pub fn playlist(&self, window: usize, uri: impl Fn(u64) -> String) -> Option<String> {
        if self.segments.len() < MIN_LISTED.min(window.max(1)) {
            return None;
        }
        let skip = self.segments.len().saturating_sub(window.max(1));
        let listed: Vec<&Segment> = self.segments.iter().skip(skip).collect();
        let first = listed.first()?;
        // Discontinuities before the window also count in its sequence number.
        let hidden = self
            .segments
            .iter()
            .take(skip)
            .filter(|s| s.discontinuity)
            .count() as u64;
        let target = self.longest.max(self.target.ceil() as u64).max(1);
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
            first.seq,
            self.discontinuity_seq + hidden
        );
        for s in listed {
            if s.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            out.push_str(&format!("#EXTINF:{:.3},\n{}\n", s.duration, uri(s.seq)));
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
            PartKind::Key(Some((pts_secs * 90_000.0) as u64 % PTS_WRAP)),
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
        let pl = s.playlist(6, |n| format!("s-{n}.ts")).unwrap();
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
        let pl = s.playlist(3, |n| n.to_string()).unwrap();
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
            PartKind::Key(None),
            t0 + Duration::from_millis(5500),
        );
        s.feed(
            Bytes::from_static(b"K"),
            PartKind::Key(None),
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
        let pl = s.playlist(6, |n| n.to_string()).unwrap();
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
        let pl = b.playlist(4, |n| n.to_string()).unwrap();
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
        assert!(s.playlist(6, |n| n.to_string()).is_none());
        s.feed(Bytes::from_static(b"H"), PartKind::Header, t0);
        for i in 0..3 {
            key(&mut s, f64::from(i), t0);
        }
        assert_eq!(s.ready(), 2);
        assert!(
            s.playlist(6, |n| n.to_string()).is_none(),
            "two segments are too few"
        );
        key(&mut s, 3.0, t0);
        assert_eq!(s.ready(), 3);
        assert!(s.playlist(6, |n| n.to_string()).is_some());
        assert!(
            s.playlist(2, |n| n.to_string()).is_some(),
            "a 2-segment window lists 2"
        );
    }
}
