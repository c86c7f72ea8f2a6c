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
/// A segment that never sees a keyframe is dropped at this size (a source without them).
const MAX_SEGMENT_BYTES: usize = 64 * 1024 * 1024;

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
    discontinuity: bool,
}

/// Cuts a hub's pieces into HLS segments and renders the live playlist.
#[derive(Debug)]
pub struct Segmenter {
    target: f64,
    /// Finished segments kept (the playlist window plus a few for late fetches).
    keep: usize,
    header: Option<Bytes>,
    building: Option<Building>,
    segments: VecDeque<Segment>,
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
            target: target_secs.max(0.5),
            keep: keep.max(2),
            header: None,
            building: None,
            segments: VecDeque::new(),
            next_seq: 0,
            discontinuity_seq: 0,
            pending_discontinuity: false,
            longest: 0,
        }
    }

    /// Feeds one piece of the channel's output.
    pub fn feed(&mut self, data: Bytes, kind: PartKind, now: Instant) {
        match kind {
            PartKind::Header => {
                // The output (re)starts: what was being built ends here.
                if let Some(b) = self.building.take() {
                    let secs = now.duration_since(b.started).as_secs_f64();
                    self.finish(b, secs);
                }
                if self.header.is_some() {
                    self.pending_discontinuity = true;
                }
                self.header = Some(data);
            }
            PartKind::Key(pts) => {
                if let Some(b) = &self.building {
                    let wall = now.duration_since(b.started).as_secs_f64();
                    let secs = match (b.start_pts, pts) {
                        (Some(a), Some(z)) => {
                            let d = (z.wrapping_sub(a) % PTS_WRAP) as f64 / 90_000.0;
                            // A jump in the timestamps is no duration: trust the clock.
                            if d > 0.0 && d < 4.0 * wall.max(self.target) {
                                d
                            } else {
                                wall
                            }
                        }
                        _ => wall,
                    };
                    if secs + 0.001 < self.target {
                        self.append(data);
                        return;
                    }
                    let b = self.building.take().expect("checked above");
                    self.finish(b, secs);
                }
                let Some(header) = self.header.clone() else {
                    return;
                };
                let bytes = header.len() + data.len();
                self.building = Some(Building {
                    parts: vec![header, data],
                    bytes,
                    start_pts: pts,
                    started: now,
                    discontinuity: std::mem::take(&mut self.pending_discontinuity),
                });
            }
            PartKind::Delta => self.append(data),
        }
    }

    fn append(&mut self, data: Bytes) {
        let Some(b) = &mut self.building else {
            return; // waiting for a keyframe
        };
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
        self.segments.push_back(Segment {
            seq: self.next_seq,
            duration: secs,
            discontinuity: b.discontinuity && self.next_seq > 0,
            data: data.freeze(),
        });
        self.next_seq += 1;
        while self.segments.len() > self.keep {
            if let Some(old) = self.segments.pop_front() {
                if old.discontinuity {
                    self.discontinuity_seq += 1;
                }
            }
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
    /// before the first segment is complete.
    pub fn playlist(&self, window: usize, uri: impl Fn(u64) -> String) -> Option<String> {
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
        for i in 0..9 {
            key(&mut s, 100.0 + 0.8 * f64::from(i), t0);
        }
        assert_eq!(s.ready(), 2, "cut at 2.4 s and 4.8 s");
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
        // the producer restarts: the open segment ends, the next one is marked
        s.feed(
            Bytes::from_static(b"H2"),
            PartKind::Header,
            t0 + Duration::from_millis(3000),
        );
        s.feed(
            Bytes::from_static(b"K"),
            PartKind::Key(None),
            t0 + Duration::from_millis(3500),
        );
        s.feed(
            Bytes::from_static(b"K"),
            PartKind::Key(None),
            t0 + Duration::from_millis(6000),
        );
        assert_eq!(s.ready(), 3);
        assert!((s.segment(1).unwrap().duration - 1.0).abs() < 1e-3);
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
    fn nothing_to_list_before_the_first_segment() {
        let mut s = Segmenter::new(4.0, 6);
        assert!(s.playlist(6, |n| n.to_string()).is_none());
        s.feed(Bytes::from_static(b"H"), PartKind::Header, Instant::now());
        key(&mut s, 1.0, Instant::now());
        assert!(s.playlist(6, |n| n.to_string()).is_none());
    }
}
