//! The order in which an output's packets reach the MPEG-TS muxer: by decoding time, as
//! libav's own interleaver (`av_interleaved_write_frame`) orders them, so every PES is in
//! the stream before its decoding time (the PCR leads the video's DTS), but without the
//! two waits that make libav's unfit for live channels:
//!
//! - libav holds every packet until each output stream has one queued, or until the
//!   queue spans `max_interleave_delta` (10 s). A DVB subtitle stream is silent for
//!   minutes between programmes, so a channel carrying one starts 10 s late and then
//!   runs 10 s behind (the ffmpeg CLI's "Delay between the first packet and last packet
//!   in the muxing queue" message). Here *sparse* streams (subtitles, data) are never
//!   waited for: they take their place in the order when they come.
//! - A transcode's audio encoder gives its first packet only once the source's first
//!   audio has come, which may be well after the first video keyframe (an upstream that
//!   packs 170 ms of audio in a PES). libav would hold the keyframe until then; here a
//!   stream is waited for only once it has *started* (given a packet), and a stream that
//!   gave nothing while the others moved on by [`GONE`] is not waited for until it gives
//!   again (an audio track that ended, a decoder that fails on damaged input).
//!
//! A continuous stream's packet that comes after packets more than [`LATE`] later than
//! it went out is dropped and counted: it would reach a player after its decoding time.
//! That happens only to a stream that was not waited for (its first packets, or the first
//! after it was gone). Pure: generic over the packet, the clock passed in, so it is
//! tested without libav.

use std::collections::VecDeque;

/// 90 kHz ticks.
const TICKS_PER_MS: i64 = 90;
/// A packet more than this earlier than one already released comes too late (the PCR
/// leads the video's DTS by 100 ms; see pipeline.rs `MUX_DELAY_US`).
pub const LATE: i64 = 40 * TICKS_PER_MS;
/// A started stream is not waited for once it gave no packet for this long, both in
/// real time and in the output's decoding time: an encoder's steady delay, a burst of
/// held packets, or a source that stalled and resumed where it was do not count.
pub const GONE_MS: u64 = 2_000;
const GONE: i64 = GONE_MS as i64 * TICKS_PER_MS;
/// The queue never spans more than this (libav's `max_interleave_delta`): beyond it the
/// oldest packet goes out whatever is missing (streams far out of sync).
pub const MAX_SPAN: i64 = 10_000 * TICKS_PER_MS;

/// How a stream's packets come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Video, audio: a packet every frame; the order waits for them.
    Continuous,
    /// Subtitles, teletext, data: maybe nothing for minutes; never waited for.
    Sparse,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stream {
    /// The newest decoding time of this stream's packets, and when (ms on the caller's
    /// clock) it came; None until its first.
    last: Option<(i64, u64)>,
}

/// See the module documentation. `T` is the packet; times are 90 kHz decoding times.
pub struct Interleaver<T> {
    kinds: Vec<Kind>,
    streams: Vec<Stream>,
    /// Sorted by decoding time; equal times keep their arrival order.
    queue: VecDeque<(i64, usize, T)>,
    /// The newest decoding time pushed, of any stream.
    newest: Option<i64>,
    /// The newest decoding time of a continuous stream's packet released.
    released: Option<i64>,
    /// Packets dropped as too late.
    pub late: u64,
}

impl<T> Interleaver<T> {
    /// An interleaver for an output whose stream `i` is of kind `kinds[i]`.
    pub fn new(kinds: Vec<Kind>) -> Interleaver<T> {
        let streams = vec![Stream::default(); kinds.len()];
        Interleaver {
            kinds,
            streams,
            queue: VecDeque::new(),
            newest: None,
            released: None,
            late: 0,
        }
    }

    /// Takes packet `item` of stream `stream` with decoding time `dts` (None: unknown,
    /// taken as the newest so far) at `now_ms` on the caller's clock, and returns the
    /// packets that may go out now, in order.
    pub fn push(&mut self, stream: usize, dts: Option<i64>, now_ms: u64, item: T) -> Vec<T> {
        let kind = self.kinds.get(stream).copied().unwrap_or(Kind::Sparse);
        let dts = dts.or(self.newest).unwrap_or(0);
        if kind == Kind::Continuous && self.released.is_some_and(|r| dts < r - LATE) {
            self.late += 1;
            return Vec::new();
        }
        self.newest = Some(self.newest.map_or(dts, |n| n.max(dts)));
        if let Some(s) = self.streams.get_mut(stream) {
            let t = s.last.map_or(dts, |(t, _)| t.max(dts));
            s.last = Some((t, now_ms));
        }
        let at = self
            .queue
            .iter()
            .rposition(|(t, _, _)| *t <= dts)
            .map_or(0, |p| p + 1);
        self.queue.insert(at, (dts, stream, item));
        self.release(Some(now_ms))
    }

    /// Every packet still queued, in order (the end of the output).
    pub fn flush(&mut self) -> Vec<T> {
        self.release(None)
    }

    /// Packets that may go out at `now_ms` (None: all).
    fn release(&mut self, now_ms: Option<u64>) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(&(dts, stream, _)) = self.queue.front() {
            if now_ms.is_some_and(|now| !self.ready(dts, stream, now)) {
                break;
            }
            let Some((dts, stream, item)) = self.queue.pop_front() else {
                break;
            };
            if self.kinds.get(stream) == Some(&Kind::Continuous) {
                self.released = Some(self.released.map_or(dts, |r| r.max(dts)));
            }
            out.push(item);
        }
        out
    }

    /// Whether the oldest packet (of `stream`, at `dts`) may go out: no other continuous
    /// stream that is waited for can still give an earlier one (each gives its packets
    /// in decoding order, so one that gave one at `dts` or later cannot), or the queue
    /// spans [`MAX_SPAN`].
    fn ready(&self, dts: i64, stream: usize, now_ms: u64) -> bool {
        let newest = self.newest.unwrap_or(dts);
        if newest - dts > MAX_SPAN {
            return true;
        }
        self.streams.iter().enumerate().all(|(i, s)| {
            i == stream
                || self.kinds[i] == Kind::Sparse
                || match s.last {
                    // Not started: not waited for.
                    None => true,
                    Some((t, at)) => {
                        t >= dts || (now_ms.saturating_sub(at) > GONE_MS && newest - t > GONE)
                    }
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V: usize = 0;
    const A: usize = 1;
    const S: usize = 2;
    const MS: i64 = TICKS_PER_MS;

    type Out = Vec<(usize, i64)>;

    fn av_sub() -> Interleaver<(usize, i64)> {
        Interleaver::new(vec![Kind::Continuous, Kind::Continuous, Kind::Sparse])
    }

    /// A packet of stream `s` at `ms` of media time, which comes at `ms` of real time
    /// (a paced output).
    fn push(i: &mut Interleaver<(usize, i64)>, s: usize, ms: i64) -> Out {
        i.push(s, Some(ms * MS), ms as u64, (s, ms))
    }

    #[test]
    fn a_first_keyframe_does_not_wait_for_audio_that_has_not_started() {
        let mut i = av_sub();
        assert_eq!(push(&mut i, V, 0), vec![(V, 0)]);
        assert_eq!(push(&mut i, V, 40), vec![(V, 40)]);
        // The audio starts: from now on each waits for the other.
        assert_eq!(push(&mut i, A, 45), vec![]);
        assert_eq!(push(&mut i, V, 80), vec![(A, 45)]);
        assert_eq!(push(&mut i, A, 66), vec![(A, 66)]);
        assert_eq!(push(&mut i, A, 87), vec![(V, 80)]);
        assert_eq!(i.flush(), vec![(A, 87)]);
        assert_eq!(i.late, 0);
    }

    #[test]
    fn audio_that_starts_after_video_it_should_have_preceded_is_dropped() {
        let mut i = av_sub();
        for t in 0..5 {
            push(&mut i, V, t * 40);
        }
        // Released up to 160 ms: audio of 100 ms is more than LATE behind, 130 ms is not.
        assert_eq!(push(&mut i, A, 100), vec![]);
        assert_eq!(i.late, 1);
        assert_eq!(push(&mut i, A, 130), vec![(A, 130)]);
    }

    #[test]
    fn a_silent_subtitle_stream_holds_nothing() {
        let mut i = av_sub();
        assert_eq!(push(&mut i, S, 0), vec![(S, 0)]);
        let mut out = Vec::new();
        for t in 0..100 {
            out.extend(push(&mut i, V, t * 40));
            out.extend(push(&mut i, A, t * 40 + 10));
        }
        // Everything is out but the last audio packet, which waits for the next video.
        assert_eq!(out.len(), 199);
        // A subtitle takes its place in the order.
        assert_eq!(push(&mut i, S, 3_950), vec![(S, 3_950)]);
        assert_eq!(push(&mut i, V, 4_000), vec![(A, 3_970)]);
    }

    #[test]
    fn a_stream_that_ends_is_waited_for_only_until_it_is_gone() {
        let mut i = av_sub();
        for t in 0..10 {
            push(&mut i, V, t * 40);
            push(&mut i, A, t * 40 + 10);
        }
        // The audio's last packet was at 370 ms; the video is held, GONE at most.
        assert_eq!(push(&mut i, V, 400), vec![(A, 370)]);
        let mut out = Vec::new();
        let mut t = 11;
        while out.is_empty() {
            out = push(&mut i, V, t * 40);
            t += 1;
        }
        let since = (t - 1) * 40 - 370;
        assert!(
            since > GONE_MS as i64 && since <= GONE_MS as i64 + 40,
            "{since}"
        );
        assert!(out.len() > 40, "{}", out.len());
        // ... then goes out as it comes.
        assert_eq!(push(&mut i, V, t * 40), vec![(V, t * 40)]);
    }

    #[test]
    fn an_encoders_delay_and_a_burst_of_held_packets_are_waited_for() {
        // The video's first packet comes 3 s after the audio of the same time (an
        // encoder's lookahead), with the 3 s of audio held until then in one burst; then
        // the video comes steadily, 3 s behind: the audio waits for it, nothing is late.
        let mut i = av_sub();
        let mut out = i.push(V, Some(0), 3_000, (V, 0));
        for n in 0..150 {
            out.extend(i.push(A, Some(n * 20 * MS), 3_000, (A, n * 20)));
        }
        for n in 150..500i64 {
            let now = (n * 20) as u64;
            out.extend(i.push(A, Some(n * 20 * MS), now, (A, n * 20)));
            if n % 2 == 0 {
                let v = (n - 148) * 20;
                out.extend(i.push(V, Some(v * MS), now, (V, v)));
            }
        }
        out.extend(i.flush());
        assert_eq!(i.late, 0);
        assert_eq!(out.len(), 1 + 500 + 175);
        let times: Vec<i64> = out.iter().map(|p| p.1).collect();
        let mut sorted = times.clone();
        sorted.sort();
        assert_eq!(times, sorted);
    }

    #[test]
    fn a_source_that_stalls_and_resumes_where_it_was_loses_nothing() {
        let mut i = av_sub();
        for t in 0..10 {
            push(&mut i, V, t * 40);
            push(&mut i, A, t * 40 + 10);
        }
        // Nothing for 5 s of real time, then the source goes on, video first.
        let mut out = i.push(V, Some(400 * MS), 5_400, (V, 400));
        out.extend(i.push(V, Some(440 * MS), 5_401, (V, 440)));
        out.extend(i.push(A, Some(410 * MS), 5_402, (A, 410)));
        assert_eq!(out, vec![(A, 370), (V, 400), (A, 410)]);
        assert_eq!(i.late, 0);
    }

    proptest! {
        /// Whatever the arrival, continuous streams go out in decoding-time order within
        /// LATE, and nothing is lost but what was counted late.
        #[test]
        fn output_is_ordered_and_nothing_is_lost(
            steps in proptest::collection::vec((0usize..3, 0i64..200, 0u64..500), 1..300)
        ) {
            let mut i = av_sub();
            let mut next = [0i64; 3];
            let mut now = 0u64;
            let mut pushed = 0u64;
            let mut out = Vec::new();
            for (s, gap, wait) in steps {
                next[s] += gap;
                now += wait;
                pushed += 1;
                out.extend(i.push(s, Some(next[s] * MS), now, (s, next[s] * MS)));
            }
            out.extend(i.flush());
            prop_assert_eq!(out.len() as u64 + i.late, pushed);
            let mut latest: Option<i64> = None;
            for (s, t) in out {
                if s != S {
                    prop_assert!(latest.is_none_or(|l| t >= l - LATE), "{} after {:?}", t, latest);
                    latest = Some(latest.map_or(t, |l| l.max(t)));
                }
            }
        }
    }
}
