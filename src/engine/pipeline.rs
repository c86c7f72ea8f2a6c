//! One session of a channel's in-process libav pipeline: open the source, map its best
//! video and audio streams to copy or transcode, mux MPEG-TS into memory (custom I/O into
//! the hub), paced to real time, until end of input, an error, or a stop request.
//!
//! Runs on the channel's own named OS thread (see [`super::channel`]); never on tokio.
//! Sessions after the first continue the output timeline (a timestamp offset), so a
//! reconnect or a loop shows up to players as a short gap, flagged as a discontinuity.

use super::error::{Error, Stage};
use super::hub::{Hub, HubWriter};
use super::source;
use super::status::Status;
use super::timeline::{GapFiller, JumpSmoother, SessionStamps, Timeline};
use super::transcode::Transcoder;
use super::{mapping, prime};
use crate::auth::redact_source;
use crate::config::source::SourceKind;
use crate::config::{Profile, StreamConfig};
use ff::format::context::{Input, Output, StreamIo};
use ff::{media, Dictionary, Packet, Rational, Rescale};
use ffmpeg_next as ff;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// MPEG-TS output time base.
const TS_TB: Rational = Rational(1, 90_000);
/// How far the PCR leads the DTS (the muxer's `max_delay`, microseconds).
const MUX_DELAY_US: i32 = 100_000;

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

enum Route {
    Copy { ost: usize, in_tb: Rational },
    Transcode { ost: usize, tx: Box<Transcoder> },
}

impl Route {
    /// Frames encoded so far.
    fn frames(&self) -> u64 {
        match self {
            Route::Copy { .. } => 0,
            Route::Transcode { tx, .. } => tx.frames,
        }
    }
}

fn now_ms(base: Instant) -> u64 {
    base.elapsed().as_millis() as u64
}

fn codec_name(p: &ff::codec::Parameters) -> String {
    ff::codec::decoder::find(p.id())
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| format!("{:?}", p.id()).to_lowercase())
}

/// The open input and the watchdog its interrupt callback reads: how long since the
/// source last delivered, against the open or the stall limit.
pub(super) struct Watchdog {
    base: Instant,
    last_activity: Arc<AtomicU64>,
    opening: Arc<AtomicBool>,
    stall: Duration,
}

impl Watchdog {
    pub(super) fn new(stall: Duration) -> Watchdog {
        Watchdog {
            base: Instant::now(),
            last_activity: Arc::new(AtomicU64::new(0)),
            opening: Arc::new(AtomicBool::new(true)),
            stall,
        }
    }

    /// libav's interrupt callback: true aborts the blocking call.
    pub(super) fn interrupt(
        &self,
        open: Duration,
        keep: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> impl FnMut() -> bool + Send + 'static {
        let (base, la, op) = (self.base, self.last_activity.clone(), self.opening.clone());
        let (stall, open) = (self.stall.as_millis() as u64, open.as_millis() as u64);
        move || {
            let limit = if op.load(Ordering::Relaxed) {
                open
            } else {
                stall
            };
            !keep() || now_ms(base).saturating_sub(la.load(Ordering::Relaxed)) > limit
        }
    }

    pub(super) fn opened(&self) {
        self.opening.store(false, Ordering::Relaxed);
        self.active();
    }

    pub(super) fn active(&self) {
        self.last_activity
            .store(now_ms(self.base), Ordering::Relaxed);
    }

    pub(super) fn stalled(&self) -> bool {
        now_ms(self.base).saturating_sub(self.last_activity.load(Ordering::Relaxed))
            > self.stall.as_millis() as u64
    }
}

/// Opens the session's source with the watchdog's interrupt callback installed.
fn open_input(ctx: &Ctx, watch: &Watchdog) -> Result<Input, String> {
    let kind = SourceKind::classify(&ctx.stream.source);
    let options = source::input_options(&kind, &ctx.profile.input_options);
    let interrupt = watch.interrupt(ctx.open_timeout, ctx.keep_going.clone());
    source::open(&ctx.stream.source, &options, interrupt).map_err(|e| {
        if !(ctx.keep_going)() {
            "stopped".to_owned()
        } else {
            format!("cannot open {}: {e}", redact_source(&ctx.stream.source))
        }
    })
}

/// What mapping needs to know of the input's streams.
fn sources(ictx: &Input) -> Vec<mapping::Source> {
    ictx.streams()
        .map(|st| {
            let par = st.parameters();
            let kind = match par.medium() {
                media::Type::Video => mapping::Kind::Video,
                media::Type::Audio => mapping::Kind::Audio,
                media::Type::Subtitle => mapping::Kind::Subtitle,
                media::Type::Data => mapping::Kind::Data,
                _ => mapping::Kind::Other,
            };
            mapping::Source {
                index: st.index(),
                kind,
                codec: par.id(),
                language: st.metadata().get("language").map(str::to_owned),
                attached_picture: st
                    .disposition()
                    .contains(ff::format::stream::Disposition::ATTACHED_PIC),
            }
        })
        .collect()
}

/// Maps the source's streams (see [`mapping::plan`]) to copy or transcode routes,
/// adding their output streams to `octx`; records the codecs in the status.
fn map_streams(
    ctx: &Ctx,
    ictx: &Input,
    plan: mapping::Plan,
    octx: &mut Output,
) -> Result<Vec<Option<Route>>, String> {
    let mut routes: Vec<Option<Route>> = (0..ictx.nb_streams()).map(|_| None).collect();
    let (mut desc_in, mut desc_out) = (Vec::new(), Vec::new());
    let channel = ctx.stream.id;
    for (index, action) in &plan.outputs {
        let Some(ist) = ictx.stream(*index) else {
            continue;
        };
        let params = ist.parameters();
        desc_in.push(stream_label(&ist, &codec_name(&params)));
        let route = match action {
            mapping::Action::Copy => {
                let ost = add_copy(octx, &ist)?;
                desc_out.push(stream_label(
                    &ist,
                    &format!("{} (copy)", codec_name(&params)),
                ));
                Route::Copy {
                    ost,
                    in_tb: ist.time_base(),
                }
            }
            mapping::Action::Encode(codec) => {
                let tx = if params.medium() == media::Type::Video {
                    Transcoder::video(&ist, ctx.profile, codec, octx, channel)?
                } else {
                    Transcoder::audio(&ist, ctx.profile, codec, octx, channel)?
                };
                desc_out.push(stream_label(&ist, codec));
                Route::Transcode {
                    ost: octx.nb_streams() as usize - 1,
                    tx: Box::new(tx),
                }
            }
        };
        routes[*index] = Some(route);
    }
    let mut st = ctx.status.lock().unwrap_or_else(|p| p.into_inner());
    if !plan.skipped.is_empty() && st.skipped_streams != plan.skipped {
        tracing::warn!(channel, skipped = ?plan.skipped, "source streams left out of the output");
    }
    st.skipped_streams = plan.skipped;
    st.input_codecs = desc_in;
    st.output_codecs = desc_out;
    if let Some(v) = ictx.streams().best(media::Type::Video) {
        let p = v.parameters();
        // SAFETY: reading plain fields of valid codec parameters.
        let (w, h) = unsafe { ((*p.as_ptr()).width, (*p.as_ptr()).height) };
        st.input_resolution = (w > 0).then(|| format!("{w}x{h}"));
        let r = v.avg_frame_rate();
        st.input_frame_rate = (r.denominator() != 0).then(|| f64::from(r));
    }
    Ok(routes)
}

/// A stream as the status lists it: codec, then language and dispositions if any
/// (`aac [deu, hearing_impaired]`). Video shows the codec alone, as it always has.
fn stream_label(ist: &ff::format::stream::Stream, codec: &str) -> String {
    let mut tags: Vec<String> = ist
        .metadata()
        .get("language")
        .map(str::to_owned)
        .into_iter()
        .collect();
    if ist.parameters().medium() != media::Type::Video {
        tags.extend(
            mapping::disposition_names(ist.disposition())
                .into_iter()
                .filter(|d| *d != "default")
                .map(str::to_owned),
        );
    }
    if tags.is_empty() {
        codec.to_owned()
    } else {
        format!("{codec} [{}]", tags.join(", "))
    }
}

/// Adds an output stream that copies a source stream; its index.
fn add_copy(octx: &mut Output, ist: &ff::format::stream::Stream) -> Result<usize, String> {
    let mut ost = octx
        .add_stream(ff::encoder::find(ff::codec::Id::None))
        .map_err(|e| format!("output stream: {e}"))?;
    ost.set_parameters(ist.parameters());
    // SAFETY: clearing the container tag of the copied parameters for MPEG-TS.
    unsafe { (*ost.parameters().as_mut_ptr()).codec_tag = 0 };
    mapping::carry_stream_info(ist, &mut ost);
    Ok(ost.index())
}

/// Writes a session's packets onto the channel's timeline: timestamps moved by
/// [`SessionStamps`], real-time pacing, the encoder speed in the status.
struct Muxer<'a> {
    ctx: &'a Ctx<'a>,
    timeline: &'a mut Timeline,
    stamps: SessionStamps,
    ost_tbs: Vec<Rational>,
    started: Instant,
    media_start: Option<i64>,
    /// The output's video stream: nothing is written before its first keyframe. No
    /// client could decode what comes before, and a client kept across a restart would
    /// see the new muxer's first, discontinuity-flagged packets skipped.
    video_ost: Option<usize>,
    keyframe_written: bool,
    /// Other streams' packets that came before that keyframe (an encoder's lookahead
    /// delays video): those not earlier than it go out after it.
    held: Vec<(Packet, usize, Rational)>,
}

impl Muxer<'_> {
    fn write(
        &mut self,
        octx: &mut Output,
        mut pkt: Packet,
        ost: usize,
        tb: Rational,
    ) -> Result<(), Fail> {
        if !self.keyframe_written && self.video_ost.is_some() {
            if self.video_ost != Some(ost) {
                if self.held.len() < 1_000 {
                    self.held.push((pkt, ost, tb));
                }
                return Ok(());
            }
            if !pkt.is_key() {
                return Ok(());
            }
            self.keyframe_written = true;
            let key_at = pkt.dts().or(pkt.pts()).map(|t| t.rescale(tb, TS_TB));
            self.write(octx, pkt, ost, tb)?;
            for (p, o, t) in std::mem::take(&mut self.held) {
                let at = p.dts().or(p.pts()).map(|v| v.rescale(t, TS_TB));
                if at.zip(key_at).is_none_or(|(a, k)| a >= k) {
                    self.write(octx, p, o, t)?;
                }
            }
            return Ok(());
        }
        pkt.set_stream(ost);
        pkt.rescale_ts(tb, self.ost_tbs[ost]);
        let Some(s) = self
            .stamps
            .place(self.timeline, ost, pkt.pts(), pkt.dts(), pkt.duration())
        else {
            return Ok(());
        };
        pkt.set_pts(s.pts);
        pkt.set_dts(s.dts);
        pkt.set_position(-1);
        if let Some(t) = s.dts.or(s.pts) {
            let m0 = *self.media_start.get_or_insert(t);
            self.timeline.pacer.wait(t, &*self.ctx.keep_going);
            let wall = self.started.elapsed().as_secs_f64();
            if wall > 0.5 {
                let media = (t - m0) as f64 / 90_000.0;
                self.ctx
                    .status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .speed = Some(media / wall);
            }
        }
        pkt.write_interleaved(octx)
            .map_err(|e| (Stage::Mux, format!("muxing: {e}")))
    }

    /// Sends a packet through its route (copy, or decode/encode) to the output.
    fn route(
        &mut self,
        octx: &mut Output,
        route: &mut Route,
        pkt: Option<Packet>,
    ) -> Result<(), Fail> {
        match (route, pkt) {
            (Route::Copy { ost, in_tb }, Some(p)) => self.write(octx, p, *ost, *in_tb),
            (Route::Copy { .. }, None) => Ok(()),
            (Route::Transcode { ost, tx }, p) => {
                for e in tx.push(p.as_ref(), octx).map_err(at(Stage::Transcode))? {
                    self.write(octx, e.packet, *ost, e.time_base)?;
                }
                Ok(())
            }
        }
    }
}

/// What failed, and libav's words for it.
type Fail = (Stage, String);

fn at(stage: Stage) -> impl Fn(String) -> Fail {
    move |e| (stage, e)
}

/// Runs one session. Errors name the stage, the channel and the (redacted) source.
pub fn run(ctx: &Ctx, timeline: &mut Timeline) -> Result<End, Error> {
    session(ctx, timeline)
        .map_err(|(stage, detail)| Error::new(ctx.stream.id, &ctx.stream.source, stage, detail))
}

/// Plans the session's streams and primes the input (see [`prime`]): the plan without
/// the streams whose parameters never came, and the packets read meanwhile.
fn plan_and_prime(
    ctx: &Ctx,
    ictx: &mut Input,
    watch: &Watchdog,
) -> Result<(mapping::Plan, Vec<Packet>), String> {
    let best_video = ictx.streams().best(media::Type::Video).map(|s| s.index());
    let mut plan = mapping::plan(&sources(ictx), best_video, ctx.profile)?;
    let wanted: Vec<usize> = plan.outputs.iter().map(|o| o.0).collect();
    let primed = prime::prime(ictx, &wanted, &*ctx.keep_going, || watch.active());
    if !primed.incomplete.is_empty() {
        plan.outputs.retain(|o| !primed.incomplete.contains(&o.0));
        for i in &primed.incomplete {
            plan.skipped
                .push(format!("stream {i}: its audio parameters never came"));
        }
        if plan.outputs.is_empty() {
            return Err("the source's streams have no usable parameters".into());
        }
    }
    Ok((plan, primed.packets))
}

fn session(ctx: &Ctx, timeline: &mut Timeline) -> Result<End, Fail> {
    let watch = Watchdog::new(ctx.stall_timeout);
    let mut ictx = open_input(ctx, &watch).map_err(at(Stage::Open))?;
    if !(ctx.keep_going)() {
        return Ok(End::Stopped);
    }
    watch.opened();
    let (plan, primed) = plan_and_prime(ctx, &mut ictx, &watch).map_err(at(Stage::Setup))?;
    let writer = HubWriter::new(ctx.hub.clone());
    let io = StreamIo::from_write_with_capacity(writer, 188 * 64)
        .map_err(|e| (Stage::Setup, format!("output buffer: {e}")))?;
    let mut octx = ff::format::output_to_stream(io, None, Some("mpegts"))
        .map_err(|e| (Stage::Setup, format!("MPEG-TS muxer: {e}")))?;
    let mut routes = map_streams(ctx, &ictx, plan, &mut octx).map_err(at(Stage::Setup))?;
    // T-STD: the PCR leads the DTS by this much, so every PES (audio too) is in the
    // decoder's buffer before its decoding time; the ffmpeg CLI uses 0.7 s, which a
    // live viewer would wait through.
    // SAFETY: a plain field write on the output context before its header.
    unsafe { (*octx.as_mut_ptr()).max_delay = MUX_DELAY_US };
    let mut opts = Dictionary::new();
    opts.set("flush_packets", "1");
    opts.set("mpegts_flags", "+initial_discontinuity");
    // One audio frame per PES, as before the PCR lead: with the lead, the muxer would
    // pack frames together and write a session's last ones in its trailer.
    opts.set("pes_payload_size", "0");
    // Never shift timestamps per session: the timeline keeps them positive (see
    // `SessionStamps::begin`), and a shift would differ between sessions.
    opts.set("avoid_negative_ts", "disabled");
    octx.write_header_with(opts)
        .map_err(|e| (Stage::Mux, format!("MPEG-TS header: {e}")))?;
    let ost_tbs: Vec<Rational> = octx.streams().map(|s| s.time_base()).collect();
    debug_assert!(ost_tbs.iter().all(|tb| *tb == TS_TB));
    // SAFETY: reading a plain field of the open input context.
    let input_start = match unsafe { (*ictx.as_ptr()).start_time } {
        t if t == ff::ffi::AV_NOPTS_VALUE => None,
        t => Some(t.rescale(Rational(1, 1_000_000), TS_TB)),
    };
    let frames_before = ctx
        .status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .frames_encoded;
    let mut mux = Muxer {
        ctx,
        stamps: SessionStamps::begin(timeline, input_start),
        timeline,
        ost_tbs,
        started: Instant::now(),
        media_start: None,
        video_ost: octx
            .streams()
            .find(|s| s.parameters().medium() == media::Type::Video)
            .map(|s| s.index()),
        keyframe_written: false,
        held: Vec::new(),
    };
    let in_tbs: Vec<Rational> = ictx.streams().map(|s| s.time_base()).collect();
    let frames: Vec<i64> = ictx.streams().map(|s| nominal_duration(&s)).collect();
    let mut gaps = GapFiller::default();
    let mut jumps = JumpSmoother::default();
    let mut primed = primed.into_iter();
    let end = loop {
        if !(ctx.keep_going)() {
            break End::Stopped;
        }
        let mut pkt = match primed.next() {
            Some(p) => p,
            None => match read_packet(ctx, &mut ictx, &watch)? {
                Some(p) => p,
                None if !(ctx.keep_going)() => break End::Stopped,
                None => break End::Eof,
            },
        };
        watch.active();
        let Some(route) = routes.get_mut(pkt.stream()).and_then(Option::as_mut) else {
            continue;
        };
        let i = pkt.stream();
        let (pts, dts) = gaps.fill(i, pkt.pts(), pkt.dts(), pkt.duration(), frames[i]);
        pkt.set_pts(pts);
        pkt.set_dts(dts);
        smooth(&mut jumps, &mut pkt, in_tbs[i]);
        mux.route(&mut octx, route, Some(pkt))?;
        // Time spent pacing is not a stall of the source.
        watch.active();
        if ctx.hub.has_keyframe() {
            (ctx.on_running)();
            let frames: u64 = routes.iter().flatten().map(Route::frames).sum();
            ctx.status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .frames_encoded = frames_before + frames;
        }
    };
    if end == End::Eof {
        for route in routes.iter_mut().flatten() {
            mux.route(&mut octx, route, None)?;
        }
    }
    let _ = octx.write_trailer();
    Ok(end)
}

/// An audio stream's packet duration in its time base (samples per frame over the sample
/// rate); 0 when unknown or not audio.
fn nominal_duration(st: &ff::format::stream::Stream) -> i64 {
    let par = st.parameters();
    // SAFETY: reading plain fields of valid codec parameters.
    let (rate, size) = unsafe { ((*par.as_ptr()).sample_rate, (*par.as_ptr()).frame_size) };
    // The codec's own frame size where the stream does not say (an RTP source).
    let size = match (size, par.id()) {
        (s, _) if s > 0 => s,
        (_, ff::codec::Id::AAC | ff::codec::Id::AAC_LATM) => 1024,
        (_, ff::codec::Id::MP2 | ff::codec::Id::MP3) => 1152,
        (_, ff::codec::Id::AC3 | ff::codec::Id::EAC3) => 1536,
        _ => 0,
    };
    if par.medium() != media::Type::Audio || rate <= 0 || size <= 0 {
        return 0;
    }
    i64::from(size).rescale(Rational(1, rate), st.time_base())
}

/// The next packet of the source; None at its end (or when asked to stop).
fn read_packet(ctx: &Ctx, ictx: &mut Input, watch: &Watchdog) -> Result<Option<Packet>, Fail> {
    let mut pkt = Packet::empty();
    match pkt.read(ictx) {
        Ok(()) => Ok(Some(pkt)),
        Err(ff::Error::Eof) => Ok(None),
        Err(_) if !(ctx.keep_going)() => Ok(None),
        // Our interrupt callback is the only source of AVERROR_EXIT, and with
        // keep_going still true it fired for a stall.
        Err(e) if matches!(e, ff::Error::Exit) || watch.stalled() => {
            let secs = ctx.stall_timeout.as_secs();
            Err((Stage::Read, format!("no data from the source for {secs} s")))
        }
        Err(e) => Err((Stage::Read, format!("reading the source: {e}"))),
    }
}

/// Applies the [`JumpSmoother`]'s shift to a packet in time base `tb`.
fn smooth(jumps: &mut JumpSmoother, pkt: &mut Packet, tb: Rational) {
    let Some(t) = pkt.dts().or(pkt.pts()) else {
        return;
    };
    let shift = jumps.shift_for(pkt.stream(), t.rescale(tb, TS_TB));
    if shift != 0 {
        let d = shift.rescale(TS_TB, tb);
        pkt.set_pts(pkt.pts().map(|v| v + d));
        pkt.set_dts(pkt.dts().map(|v| v + d));
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

#[cfg(test)]
mod tests {
    use super::*;

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
            smooth(&mut j, &mut p, tb);
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
}
