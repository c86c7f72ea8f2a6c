//! The output timeline of a channel, as plain arithmetic on 90 kHz timestamps: where each
//! session starts, which packets may be written (output never goes back), how jumps in a
//! source's timestamps are hidden, and real-time pacing. The pipeline (`pipeline.rs`)
//! applies these to libav packets; the unit tests below check the rules without libav.

use std::time::{Duration, Instant};

/// One frame at 25 fps in 90 kHz units: the gap left between sessions, the duration
/// assumed for packets without one, and the step after a jump.
pub const FRAME: i64 = 3_600;
/// A timestamp this far (90 kHz) from where the output timeline stands is a jump in the
/// source, not interleaving or B-frame reordering.
pub const JUMP: i64 = 5 * 90_000;
/// Where a fresh timeline starts (1 s, 90 kHz): packets a little before a session's
/// anchor (an encoder's priming frames, audio that starts before the video) stay
/// positive, so the muxer never shifts a session's timestamps.
pub const ORIGIN: i64 = 90_000;
/// How far ahead of real time output may run (fast start for new clients, smoothing).
const LEAD: Duration = Duration::from_millis(1000);
/// How far behind real time output may fall before pacing starts over.
const REANCHOR: Duration = Duration::from_secs(3);

/// The output timeline carried from one session to the next (90 kHz units).
#[derive(Debug, Default)]
pub struct Timeline {
    pub next_start: i64,
    /// Per output stream index: the last DTS written (output never goes back)...
    last_dts: Vec<Option<i64>>,
    /// ...and where earlier sessions' presentation ended, so a new session's first
    /// packets that overlap it (an encoder's priming frame) are dropped.
    prev_end: Vec<Option<i64>>,
    end: Vec<Option<i64>>,
    /// Real-time pacing continues across sessions (a loop must not run ahead).
    pub(super) pacer: Pacer,
    /// Per PID, the continuity counter a TS relay session wrote last: the next relay
    /// session's packets continue from it (see `ts_relay`).
    pub(super) relay_cc: std::collections::HashMap<u16, u8>,
}

impl Timeline {
    /// A timeline whose output is not paced to real time: sessions run as fast as the CPU
    /// allows (benchmarks and the load tool measure throughput with it).
    pub fn unpaced() -> Timeline {
        Timeline {
            pacer: Pacer {
                origin: None,
                off: true,
            },
            ..Timeline::default()
        }
    }

    /// Starts a session: its timestamps begin at [`Self::next_start`].
    pub fn begin_session(&mut self) {
        if self.end.iter().all(Option::is_none) {
            self.next_start = self.next_start.max(ORIGIN);
        }
        self.prev_end = self.end.clone();
        if self.end.iter().any(Option::is_some) {
            // A one-frame gap between sessions: the MPEG-TS muxer's trailer can emit one
            // more audio frame than was written (seen with libavformat 59 and AAC), and
            // it must not collide with the next session's first frame.
            self.next_start += FRAME;
        }
    }

    /// A TS relay session presented output up to `end`: the next session starts after it.
    pub fn relayed_until(&mut self, end: i64) {
        self.next_start = self.next_start.max(end);
        if self.end.is_empty() {
            self.end.push(None);
            self.last_dts.push(None);
            self.prev_end.push(None);
        }
        self.end[0] = Some(self.end[0].map_or(end, |e| e.max(end)));
    }

    /// Whether a packet (output timestamps) may be written; records it if so.
    pub fn admit(&mut self, ost: usize, dts: i64, pts: i64, dur: i64) -> bool {
        if self.last_dts.len() <= ost {
            self.last_dts.resize(ost + 1, None);
            self.prev_end.resize(ost + 1, None);
            self.end.resize(ost + 1, None);
        }
        if self.last_dts[ost].is_some_and(|l| dts <= l)
            || self.prev_end[ost].is_some_and(|e| pts < e - dur / 2)
        {
            return false;
        }
        self.last_dts[ost] = Some(dts);
        self.end[ost] = Some(self.end[ost].map_or(pts + dur, |e| e.max(pts + dur)));
        self.next_start = self.next_start.max(pts + dur);
        true
    }
}

/// A packet's output timestamps (90 kHz).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamps {
    pub pts: Option<i64>,
    pub dts: Option<i64>,
}

/// Moves one session's timestamps onto the timeline: one offset for all streams, from the
/// input's start (the earliest stream start), so no stream of this session goes below
/// where the last session ended.
#[derive(Clone, Debug)]
pub struct SessionStamps {
    start: i64,
    input_start: Option<i64>,
    offset: Option<i64>,
}

impl SessionStamps {
    /// Begins a session on `timeline`; `input_start` is the input's start time (90 kHz)
    /// when the demuxer knows it.
    pub fn begin(timeline: &mut Timeline, input_start: Option<i64>) -> SessionStamps {
        timeline.begin_session();
        SessionStamps {
            start: timeline.next_start,
            input_start,
            offset: None,
        }
    }

    /// The output timestamps of a packet with input timestamps `pts`/`dts` (90 kHz) and
    /// `duration` (0: unknown), or None when it must be dropped (it would go back).
    pub fn place(
        &mut self,
        timeline: &mut Timeline,
        ost: usize,
        pts: Option<i64>,
        dts: Option<i64>,
        duration: i64,
    ) -> Option<Stamps> {
        let anchor = self.input_start.or(dts).or(pts).unwrap_or(0);
        let off = *self.offset.get_or_insert(self.start - anchor);
        let pts = pts.map(|t| t + off);
        let dts = dts.map(|t| t + off).or(pts);
        if let Some(d) = dts {
            // Unknown durations count as one 25 fps frame, so the next session never
            // repeats this one's last timestamp.
            let dur = if duration > 0 { duration } else { FRAME };
            if !timeline.admit(ost, d, pts.unwrap_or(d), dur) {
                return None;
            }
        }
        Some(Stamps { pts, dts })
    }
}

/// Gives timestamps to packets that come without (the frames after the first of an audio
/// PES, when the demuxer's short probe left it without the sample rate to interpolate):
/// the previous packet's time plus its duration, per stream, in the stream's time base.
#[derive(Debug, Default)]
pub struct GapFiller {
    /// Per input stream: the last timestamp and its packet's duration.
    last: Vec<Option<(i64, i64)>>,
}

impl GapFiller {
    /// The (pts, dts) a packet of stream `index` should carry; `duration` is its own
    /// (0: unknown), `frame` the stream's nominal packet duration (0: unknown).
    pub fn fill(
        &mut self,
        index: usize,
        pts: Option<i64>,
        dts: Option<i64>,
        duration: i64,
        frame: i64,
    ) -> (Option<i64>, Option<i64>) {
        if self.last.len() <= index {
            self.last.resize(index + 1, None);
        }
        let dur = if duration > 0 { duration } else { frame };
        // The previous packet's duration, or the nominal one if it had none then (an
        // audio stream whose format was learnt since, from its first decoded frame).
        let (pts, dts) = match (pts, dts, self.last[index]) {
            (None, None, Some((t, d))) if d > 0 || frame > 0 => {
                let d = if d > 0 { d } else { frame };
                (Some(t + d), Some(t + d))
            }
            other => (other.0, other.1),
        };
        if let Some(t) = dts.or(pts) {
            self.last[index] = Some((t, dur));
        }
        (pts, dts)
    }
}

/// Hides jumps in a source's timestamps (an upstream encoder restart, a splice, a
/// provider switching feeds): forward, the pacer would sleep through the gap and a
/// transcode's fps filter would fill it with copies; backward, every packet would be
/// refused until the clock caught up. A packet more than [`JUMP`] away from the latest
/// input time shifts the rest of the session so it continues from there.
#[derive(Debug, Default)]
pub struct JumpSmoother {
    /// Added to every input timestamp (90 kHz): one shift for all streams, so they stay
    /// in sync.
    shift: i64,
    /// Per input stream, the latest time seen after the shift (90 kHz). Each packet is
    /// compared with its own stream, so streams far apart never look like jumps.
    latest: Vec<Option<i64>>,
}

impl JumpSmoother {
    /// The shift (90 kHz) to add to a packet of input stream `index` whose timestamp is
    /// `raw` (90 kHz).
    pub fn shift_for(&mut self, index: usize, raw: i64) -> i64 {
        if self.latest.len() <= index {
            self.latest.resize(index + 1, None);
        }
        let t90 = raw + self.shift;
        if let Some(latest) = self.latest[index] {
            if (t90 - latest).abs() > JUMP {
                tracing::info!(
                    jump_secs = (t90 - latest) as f64 / 90_000.0,
                    "the source's timestamps jumped; the output continues without a gap"
                );
                // Continue one frame (at 25 fps) after the latest time.
                self.shift += latest + FRAME - t90;
            }
        }
        let adjusted = raw + self.shift;
        self.latest[index] = Some(self.latest[index].map_or(adjusted, |l| l.max(adjusted)));
        self.shift
    }
}

/// Paces output to real time. Files and generated sources would otherwise run as fast as
/// the CPU allows; for live sources it is a no-op (they are never ahead), and it smooths
/// the bursts HLS sources deliver. Output behind schedule is sent at once (catching up).
#[derive(Debug, Default)]
pub struct Pacer {
    origin: Option<(Instant, i64)>,
    off: bool,
}

impl Pacer {
    /// Sleeps until `ts` (90 kHz) is at most [`LEAD`] ahead of real time.
    pub fn wait(&mut self, ts: i64, keep_going: &dyn Fn() -> bool) {
        if self.off {
            return;
        }
        let (t0, ts0) = *self.origin.get_or_insert((Instant::now(), ts));
        let ahead_ticks = ts - ts0;
        if ahead_ticks <= 0 {
            return;
        }
        let due =
            t0 + Duration::from_micros((ahead_ticks as u64).saturating_mul(1_000_000) / 90_000);
        if due + REANCHOR < Instant::now() {
            // Far behind (the source was down for a while): start pacing afresh from here
            // rather than bursting everything "missed".
            self.origin = Some((Instant::now(), ts));
            return;
        }
        while let Some(left) = due.checked_duration_since(Instant::now() + LEAD) {
            if !keep_going() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_continue_the_timeline_with_a_frame_gap() {
        let mut tl = Timeline::unpaced();
        // A source starting at 10 s: the first session starts the output at the origin.
        let mut s = SessionStamps::begin(&mut tl, Some(900_000));
        let p = s
            .place(&mut tl, 0, Some(900_000), Some(900_000), 3_600)
            .unwrap();
        assert_eq!(
            p,
            Stamps {
                pts: Some(ORIGIN),
                dts: Some(ORIGIN)
            }
        );
        let p = s.place(&mut tl, 0, Some(903_600), None, 3_600).unwrap();
        // A missing DTS is the PTS.
        assert_eq!(
            p,
            Stamps {
                pts: Some(ORIGIN + 3_600),
                dts: Some(ORIGIN + 3_600)
            }
        );
        assert_eq!(tl.next_start, ORIGIN + 7_200);
        // The next session (a reconnect, its source back at 0) continues one frame later.
        let mut s = SessionStamps::begin(&mut tl, Some(0));
        let p = s.place(&mut tl, 0, Some(0), Some(0), 3_600).unwrap();
        assert_eq!(p.pts, Some(ORIGIN + 7_200 + FRAME));
    }

    #[test]
    fn output_never_goes_back() {
        let mut tl = Timeline::unpaced();
        let mut s = SessionStamps::begin(&mut tl, None);
        assert!(s.place(&mut tl, 0, Some(0), Some(0), 0).is_some());
        // The same DTS again, or an earlier one: dropped.
        assert!(s.place(&mut tl, 0, Some(0), Some(0), 0).is_none());
        assert!(s.place(&mut tl, 0, Some(-10), Some(-10), 0).is_none());
        // Another stream has its own order.
        assert!(s.place(&mut tl, 1, Some(0), Some(0), 0).is_some());
        // Unknown durations count as a frame towards the next start.
        assert_eq!(tl.next_start, ORIGIN + FRAME);
        // Without timestamps a packet passes untouched.
        assert_eq!(
            s.place(&mut tl, 0, None, None, 0),
            Some(Stamps {
                pts: None,
                dts: None
            })
        );
    }

    #[test]
    fn a_new_sessions_overlap_with_the_last_is_dropped() {
        let mut tl = Timeline::unpaced();
        let mut a = SessionStamps::begin(&mut tl, Some(0));
        a.place(&mut tl, 0, Some(0), Some(0), 3_600);
        a.place(&mut tl, 0, Some(36_000), Some(36_000), 3_600);
        assert_eq!(tl.next_start, ORIGIN + 39_600);
        // The next session is anchored at its input start (3 600) one frame after the
        // last one's end. A priming frame presented a frame before that start, though
        // decoded after the last DTS, overlaps the last session's picture: dropped.
        let mut b = SessionStamps::begin(&mut tl, Some(3_600));
        assert_eq!(b.place(&mut tl, 0, Some(-3_600), Some(400), 3_600), None);
        let p = b
            .place(&mut tl, 0, Some(3_600), Some(3_600), 3_600)
            .unwrap();
        assert_eq!(p.pts, Some(ORIGIN + 39_600 + FRAME));
    }

    #[test]
    fn packets_without_timestamps_follow_the_one_before() {
        let mut g = GapFiller::default();
        // Nothing known yet: nothing made up.
        assert_eq!(g.fill(1, None, None, 0, 1_920), (None, None));
        assert_eq!(
            g.fill(1, Some(1_000), Some(1_000), 0, 1_920),
            (Some(1_000), Some(1_000))
        );
        assert_eq!(g.fill(1, None, None, 0, 1_920), (Some(2_920), Some(2_920)));
        assert_eq!(g.fill(1, None, None, 0, 1_920), (Some(4_840), Some(4_840)));
        // A packet's own duration wins; a stamped packet is left alone.
        assert_eq!(
            g.fill(1, Some(9_000), None, 100, 1_920),
            (Some(9_000), None)
        );
        assert_eq!(g.fill(1, None, None, 0, 1_920), (Some(9_100), Some(9_100)));
        // Streams are separate; without any duration nothing is made up.
        assert_eq!(g.fill(0, Some(5), Some(5), 0, 0), (Some(5), Some(5)));
        assert_eq!(g.fill(0, None, None, 0, 0), (None, None));
        // A stream whose nominal duration became known after its first packet (a
        // session that started before the audio's format was known).
        assert_eq!(
            g.fill(2, Some(100), Some(100), 0, 0),
            (Some(100), Some(100))
        );
        assert_eq!(g.fill(2, None, None, 0, 1_920), (Some(2_020), Some(2_020)));
    }

    #[test]
    fn jumps_in_source_timestamps_are_smoothed_away() {
        let mut j = JumpSmoother::default();
        assert_eq!(j.shift_for(0, 1_000), 0);
        assert_eq!(j.shift_for(1, 1_200), 0);
        // Small steps and reordering are not jumps.
        assert_eq!(j.shift_for(0, 1_000 + 90_000), 0);
        assert_eq!(j.shift_for(0, 1_000 + 80_000), 0);
        // Forward by an hour: continue one frame after the latest time.
        let raw = 1_000 + 3_600 * 90_000;
        let shift = j.shift_for(0, raw);
        assert_eq!(raw + shift, 91_000 + FRAME);
        // The other stream follows the same shift, so they stay in sync.
        assert_eq!(j.shift_for(1, 1_200 + 3_600 * 90_000), shift);
        // Backward by an hour: the same.
        let shift = j.shift_for(0, 0);
        assert_eq!(shift, 91_000 + 2 * FRAME);
    }

    #[test]
    fn pacer_lets_output_run_ahead_by_the_lead_only() {
        let mut p = Pacer::default();
        let t0 = Instant::now();
        p.wait(0, &|| true);
        p.wait(90_000 / 2, &|| true); // 0.5 s of media: inside the lead, no wait
        assert!(t0.elapsed() < Duration::from_millis(100));
        p.wait(90_000 * 13 / 10, &|| true); // 1.3 s: waits about 0.3 s
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(280) && waited < Duration::from_millis(600),
            "{waited:?}"
        );
    }
}
