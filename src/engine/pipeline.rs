//! One session of a channel's in-process libav pipeline: open the source, map its best
//! video and audio streams to copy or transcode, mux MPEG-TS into memory (custom I/O into
//! the hub), paced to real time, until end of input, an error, or a stop request.
//!
//! Runs on the channel's own named OS thread (see [`super::channel`]); never on tokio.
//! Sessions after the first continue the output timeline (a timestamp offset), so a
//! reconnect or a loop shows up to players as a short gap, flagged as a discontinuity.

use super::hub::{Hub, HubWriter};
use super::source::{self, SourceKind};
use super::status::Status;
use super::transcode::Transcoder;
use crate::config::{Profile, StreamConfig};
use ff::format::context::StreamIo;
use ff::{media, Dictionary, Packet, Rational, Rescale};
use ffmpeg_next as ff;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// MPEG-TS output time base.
const TS_TB: Rational = Rational(1, 90_000);
/// How far ahead of real time output may run (fast start for new clients, smoothing).
const LEAD: Duration = Duration::from_millis(1000);
/// A timestamp this far (90 kHz) from where the output timeline stands is a jump in the
/// source, not interleaving or B-frame reordering.
const JUMP: i64 = 5 * 90_000;
/// How far behind real time output may fall before pacing starts over.
const REANCHOR: Duration = Duration::from_secs(3);

/// How a session ended without error.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The source ended (a file, a finished live stream).
    Eof,
    /// Asked to stop.
    Stopped,
}

/// What a session needs from its channel.
pub struct Ctx<'a> {
    pub stream: &'a StreamConfig,
    pub profile: &'a Profile,
    pub hub: Arc<Hub>,
    pub status: &'a Arc<Mutex<Status>>,
    /// Checked between packets and by libav's interrupt callback.
    pub keep_going: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Called after output reaches the hub once it holds a keyframe (clients can start).
    pub on_running: &'a dyn Fn(),
    pub stall_timeout: Duration,
    pub open_timeout: Duration,
}

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
    pacer: Pacer,
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

    fn begin_session(&mut self) {
        self.prev_end = self.end.clone();
        if self.end.iter().any(Option::is_some) {
            // A one-frame gap between sessions: the MPEG-TS muxer's trailer can emit one
            // more audio frame than was written (seen with libavformat 59 and AAC), and
            // it must not collide with the next session's first frame.
            self.next_start += 3_600;
        }
    }

    /// Whether a packet (output timestamps) may be written; records it if so.
    fn admit(&mut self, ost: usize, dts: i64, pts: i64, dur: i64) -> bool {
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

enum Route {
    Copy { ost: usize, in_tb: Rational },
    Transcode { ost: usize, tx: Box<Transcoder> },
}

fn now_ms(base: Instant) -> u64 {
    base.elapsed().as_millis() as u64
}

fn codec_name(p: &ff::codec::Parameters) -> String {
    ff::codec::decoder::find(p.id())
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| format!("{:?}", p.id()).to_lowercase())
}

/// Runs one session. Errors are human-readable and name what failed.
pub fn run(ctx: &Ctx, timeline: &mut Timeline) -> Result<End, String> {
    let kind = SourceKind::classify(&ctx.stream.source);
    let options = source::input_options(&kind, &ctx.profile.input_options);
    let base = Instant::now();
    let last_activity = Arc::new(AtomicU64::new(0));
    let opening = Arc::new(AtomicBool::new(true));
    let (la, op, keep) = (
        last_activity.clone(),
        opening.clone(),
        ctx.keep_going.clone(),
    );
    let (stall, open_limit) = (
        ctx.stall_timeout.as_millis() as u64,
        ctx.open_timeout.as_millis() as u64,
    );
    let interrupt = move || {
        let limit = if op.load(Ordering::Relaxed) {
            open_limit
        } else {
            stall
        };
        !keep() || now_ms(base).saturating_sub(la.load(Ordering::Relaxed)) > limit
    };
    let mut ictx = source::open(&ctx.stream.source, &options, interrupt).map_err(|e| {
        if !(ctx.keep_going)() {
            "stopped".to_owned()
        } else {
            format!("cannot open {}: {e}", redact_source(&ctx.stream.source))
        }
    })?;
    if !(ctx.keep_going)() {
        return Ok(End::Stopped);
    }
    opening.store(false, Ordering::Relaxed);
    last_activity.store(now_ms(base), Ordering::Relaxed);

    let writer = HubWriter::new(ctx.hub.clone());
    let io = StreamIo::from_write_with_capacity(writer, 188 * 64)
        .map_err(|e| format!("output buffer: {e}"))?;
    let mut octx = ff::format::output_to_stream(io, None, Some("mpegts"))
        .map_err(|e| format!("MPEG-TS muxer: {e}"))?;

    let mut routes: Vec<Option<Route>> = (0..ictx.nb_streams()).map(|_| None).collect();
    let mut desc_in = Vec::new();
    let mut desc_out = Vec::new();
    for medium in [media::Type::Video, media::Type::Audio] {
        let Some(ist) = ictx.streams().best(medium) else {
            continue;
        };
        let params = ist.parameters();
        let codec = if medium == media::Type::Video {
            ctx.profile.video_codec.as_deref()
        } else {
            ctx.profile.audio_codec.as_deref()
        }
        .unwrap_or("copy");
        desc_in.push(codec_name(&params));
        let ost_index = octx.nb_streams() as usize;
        let route = if codec == "copy" {
            if matches!(
                params.id(),
                ff::codec::Id::RAWVIDEO
                    | ff::codec::Id::PCM_S16LE
                    | ff::codec::Id::PCM_F32LE
                    | ff::codec::Id::PCM_S16BE
            ) {
                return Err(format!(
                    "the source's {} is raw ({}): MPEG-TS cannot carry it; use a profile that encodes (e.g. video_codec: libx264)",
                    if medium == media::Type::Video { "video" } else { "audio" },
                    codec_name(&params)
                ));
            }
            let mut ost = octx
                .add_stream(ff::encoder::find(ff::codec::Id::None))
                .map_err(|e| format!("output stream: {e}"))?;
            ost.set_parameters(params.clone());
            // SAFETY: clearing the container tag of the copied parameters for MPEG-TS.
            unsafe { (*ost.parameters().as_mut_ptr()).codec_tag = 0 };
            desc_out.push(format!("{} (copy)", codec_name(&params)));
            Route::Copy {
                ost: ost_index,
                in_tb: ist.time_base(),
            }
        } else {
            let tx = if medium == media::Type::Video {
                Transcoder::video(&ist, ctx.profile, codec, &mut octx)?
            } else {
                Transcoder::audio(&ist, ctx.profile, codec, &mut octx)?
            };
            desc_out.push(codec.to_owned());
            Route::Transcode {
                ost: ost_index,
                tx: Box::new(tx),
            }
        };
        routes[ist.index()] = Some(route);
    }
    if routes.iter().all(Option::is_none) {
        return Err("the source has no audio or video stream".into());
    }
    {
        let mut st = ctx.status.lock().unwrap_or_else(|p| p.into_inner());
        st.input_codecs = desc_in;
        st.output_codecs = desc_out;
        if let Some(v) = ictx.streams().best(media::Type::Video) {
            if let Ok(d) = ff::codec::context::Context::from_parameters(v.parameters())
                .and_then(|c| c.decoder().video())
            {
                st.input_resolution = Some(format!("{}x{}", d.width(), d.height()));
            }
            let r = v.avg_frame_rate();
            st.input_frame_rate = (r.denominator() != 0).then(|| f64::from(r));
        }
    }

    let mut opts = Dictionary::new();
    opts.set("flush_packets", "1");
    opts.set("mpegts_flags", "+initial_discontinuity");
    octx.write_header_with(opts)
        .map_err(|e| format!("MPEG-TS header: {e}"))?;
    let ost_tbs: Vec<Rational> = octx.streams().map(|s| s.time_base()).collect();
    debug_assert!(ost_tbs.iter().all(|tb| *tb == TS_TB));

    // SAFETY: reading a plain field of the open input context.
    let input_start = match unsafe { (*ictx.as_ptr()).start_time } {
        t if t == ff::ffi::AV_NOPTS_VALUE => None,
        t => Some(t.rescale(Rational(1, 1_000_000), TS_TB)),
    };
    let mut offset: Option<i64> = None;
    timeline.begin_session();
    let frames_before = ctx
        .status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .frames_encoded;
    let session_start = timeline.next_start;
    let started = Instant::now();
    let mut media_start: Option<i64> = None;

    let mut write = |octx: &mut ff::format::context::Output,
                     mut pkt: Packet,
                     ost: usize,
                     tb: Rational|
     -> Result<(), String> {
        pkt.set_stream(ost);
        pkt.rescale_ts(tb, ost_tbs[ost]);
        // One offset for all streams, from the input's start (the earliest stream start),
        // so no stream of this session goes below where the last session ended.
        let anchor = input_start.or(pkt.dts()).or(pkt.pts()).unwrap_or(0);
        let off = *offset.get_or_insert_with(|| session_start - anchor);
        pkt.set_pts(pkt.pts().map(|t| t + off));
        pkt.set_dts(pkt.dts().map(|t| t + off));
        pkt.set_position(-1);
        if pkt.dts().is_none() {
            pkt.set_dts(pkt.pts());
        }
        if let (Some(d), Some(p)) = (pkt.dts(), pkt.pts()) {
            // Unknown durations count as one 25 fps frame, so the next session never
            // repeats this one's last timestamp.
            let dur = if pkt.duration() > 0 {
                pkt.duration()
            } else {
                3_600
            };
            if !timeline.admit(ost, d, p, dur) {
                return Ok(());
            }
        }
        if let Some(t) = pkt.dts().or(pkt.pts()) {
            media_start.get_or_insert(t);
            timeline.pacer.wait(t, &*ctx.keep_going);
            if let Some(m0) = media_start {
                let media = (t - m0) as f64 / 90_000.0;
                let wall = started.elapsed().as_secs_f64();
                if wall > 0.5 {
                    let mut st = ctx.status.lock().unwrap_or_else(|p| p.into_inner());
                    st.speed = Some(media / wall);
                }
            }
        }
        pkt.write_interleaved(octx)
            .map_err(|e| format!("muxing: {e}"))
    };

    let in_tbs: Vec<Rational> = ictx.streams().map(|s| s.time_base()).collect();
    let mut jumps = JumpSmoother::default();
    let end = loop {
        if !(ctx.keep_going)() {
            break End::Stopped;
        }
        let mut pkt = Packet::empty();
        match pkt.read(&mut ictx) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break End::Eof,
            Err(e) => {
                if !(ctx.keep_going)() {
                    break End::Stopped;
                }
                // Our interrupt callback is the only source of AVERROR_EXIT, and with
                // keep_going still true it fired for a stall.
                let stalled = matches!(e, ff::Error::Exit)
                    || now_ms(base).saturating_sub(last_activity.load(Ordering::Relaxed)) > stall;
                return Err(if stalled {
                    format!(
                        "no data from the source for {} s",
                        ctx.stall_timeout.as_secs()
                    )
                } else {
                    format!("reading the source: {e}")
                });
            }
        }
        last_activity.store(now_ms(base), Ordering::Relaxed);
        let Some(route) = routes.get_mut(pkt.stream()).and_then(Option::as_mut) else {
            continue;
        };
        let tb = in_tbs[pkt.stream()];
        jumps.smooth(&mut pkt, tb);
        match route {
            Route::Copy { ost, in_tb } => write(&mut octx, pkt, *ost, *in_tb)?,
            Route::Transcode { ost, tx } => {
                for e in tx.push(Some(&pkt))? {
                    write(&mut octx, e.packet, *ost, e.time_base)?;
                }
            }
        }
        // Time spent pacing is not a stall of the source.
        last_activity.store(now_ms(base), Ordering::Relaxed);
        if !ctx.hub.has_keyframe() {
            continue;
        }
        (ctx.on_running)();
        let mut st = ctx.status.lock().unwrap_or_else(|p| p.into_inner());
        st.frames_encoded = frames_before
            + routes
                .iter()
                .flatten()
                .map(|r| {
                    if let Route::Transcode { tx, .. } = r {
                        tx.frames
                    } else {
                        0
                    }
                })
                .sum::<u64>();
    };

    if end == End::Eof {
        for route in routes.iter_mut().flatten() {
            if let Route::Transcode { ost, tx } = route {
                for e in tx.push(None)? {
                    write(&mut octx, e.packet, *ost, e.time_base)?;
                }
            }
        }
    }
    let _ = octx.write_trailer();
    Ok(end)
}

/// Hides jumps in a source's timestamps (an upstream encoder restart, a splice, a
/// provider switching feeds): forward, the pacer would sleep through the gap and a
/// transcode's fps filter would fill it with copies; backward, every packet would be
/// refused until the clock caught up. A packet more than [`JUMP`] away from the latest
/// input time shifts the rest of the session so it continues from there.
#[derive(Debug, Default)]
struct JumpSmoother {
    /// Added to every input timestamp (90 kHz): one shift for all streams, so they stay
    /// in sync.
    shift: i64,
    /// Per input stream, the latest time seen after the shift (90 kHz). Each packet is
    /// compared with its own stream, so streams far apart never look like jumps.
    latest: Vec<Option<i64>>,
}

impl JumpSmoother {
    fn smooth(&mut self, pkt: &mut Packet, tb: Rational) {
        let Some(t) = pkt.dts().or(pkt.pts()) else {
            return;
        };
        let index = pkt.stream();
        if self.latest.len() <= index {
            self.latest.resize(index + 1, None);
        }
        let raw = t.rescale(tb, TS_TB);
        let t90 = raw + self.shift;
        if let Some(latest) = self.latest[index] {
            if (t90 - latest).abs() > JUMP {
                tracing::info!(
                    jump_secs = (t90 - latest) as f64 / 90_000.0,
                    "the source's timestamps jumped; the output continues without a gap"
                );
                // Continue one frame (at 25 fps) after the latest time.
                self.shift += latest + 3_600 - t90;
            }
        }
        if self.shift != 0 {
            let d = self.shift.rescale(TS_TB, tb);
            pkt.set_pts(pkt.pts().map(|v| v + d));
            pkt.set_dts(pkt.dts().map(|v| v + d));
        }
        let adjusted = raw + self.shift;
        self.latest[index] = Some(self.latest[index].map_or(adjusted, |l| l.max(adjusted)));
    }
}

/// Paces output to real time. Files and generated sources would otherwise run as fast as
/// the CPU allows; for live sources it is a no-op (they are never ahead), and it smooths
/// the bursts HLS sources deliver. Output behind schedule is sent at once (catching up).
#[derive(Debug, Default)]
struct Pacer {
    origin: Option<(Instant, i64)>,
    off: bool,
}

impl Pacer {
    fn wait(&mut self, ts: i64, keep_going: &dyn Fn() -> bool) {
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

/// Whether `stream`'s source opens and delivers media within `timeout`: a health check
/// (the primary source of a channel playing a backup). Reads a few packets, no decoding.
pub fn probe(
    stream: &StreamConfig,
    profile: &Profile,
    timeout: Duration,
    keep_going: Arc<dyn Fn() -> bool + Send + Sync>,
) -> bool {
    let kind = SourceKind::classify(&stream.source);
    let options = source::input_options(&kind, &profile.input_options);
    let t0 = Instant::now();
    let expired = Arc::new(AtomicBool::new(false));
    let flag = expired.clone();
    let keep = keep_going.clone();
    let Ok(mut ictx) = source::open(&stream.source, &options, move || {
        flag.load(Ordering::Relaxed) || t0.elapsed() > timeout || !keep()
    }) else {
        return false;
    };
    let mut packets = 0;
    for (_, _) in ictx.packets() {
        packets += 1;
        if packets >= 20 || !keep_going() || t0.elapsed() > timeout {
            break;
        }
    }
    expired.store(true, Ordering::Relaxed);
    packets >= 20
}

/// A source URL fit for status and logs: credentials and query strings removed.
pub fn redact_source(source: &str) -> String {
    let mut s = source.to_owned();
    if let Some(q) = s.find('?') {
        s.truncate(q);
        s.push_str("?…");
    }
    if let Some(scheme_end) = s.find("://") {
        let rest = &s[scheme_end + 3..];
        if let Some(at) = rest.find('@').filter(|at| rest[..*at].find('/').is_none()) {
            s = format!("{}://***@{}", &s[..scheme_end], &rest[at + 1..]);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_redaction_hides_credentials_and_queries() {
        assert_eq!(
            redact_source("http://user:pw@host/x.ts?token=1"),
            "http://***@host/x.ts?…"
        );
        assert_eq!(redact_source("/media/a.ts"), "/media/a.ts");
    }

    #[test]
    fn jumps_in_source_timestamps_are_smoothed_away() {
        crate::libav::init();
        let tb = Rational(1, 90_000);
        let mut j = JumpSmoother::default();
        let mut seen = Vec::new();
        // 0..4 s, then a jump 1000 s ahead, then one 2000 s back: a frame every 40 ms.
        let raw: Vec<i64> = (0..100)
            .map(|i| i * 3_600)
            .chain((0..100).map(|i| 90_000_000 + i * 3_600))
            .chain((0..100).map(|i| -90_000_000 + i * 3_600))
            .collect();
        for t in raw {
            let mut p = Packet::empty();
            p.set_dts(Some(t));
            p.set_pts(Some(t));
            j.smooth(&mut p, tb);
            seen.push(p.dts().unwrap());
        }
        for w in seen.windows(2) {
            let step = w[1] - w[0];
            assert!(
                (0..=7_200).contains(&step),
                "a step of {step} ticks: {:?}",
                &w
            );
        }
        assert_eq!(*seen.last().unwrap(), 299 * 3_600, "no time lost or added");
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
