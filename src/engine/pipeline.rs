//! One session of a channel's in-process libav pipeline: open the source, map its best
//! video and audio streams to copy or transcode, mux MPEG-TS into memory (custom I/O into
//! the hub), paced to real time, until end of input, an error, or a stop request.
//!
//! Runs on the channel's own named OS thread (see [`super::channel`]); never on tokio.
//! Sessions after the first continue the output timeline (a timestamp offset), so a
//! reconnect or a loop shows up to players as a short gap, flagged as a discontinuity.

use super::error::{Error, Stage};
use super::hub::{Hub, HubWriter};
use super::interleave::{Interleaver, Kind};
use super::rendition::{RState, Rendition, Renditions};
use super::source;
use super::status::Status;
use super::timeline::{GapFiller, JumpSmoother, SessionStamps, Timeline};
use super::transcode::{share, Decoder, Tapped, Transcoder};
use super::{mapping, prime};
use crate::auth::redact_source;
use crate::config::source::SourceKind;
use crate::config::units::Value;
use crate::config::{Profile, StreamConfig};
use crate::sync::lock;
use ff::format::context::{Input, Output, StreamIo};
use ff::{frame, media, Dictionary, Packet, Rational, Rescale};
use ffmpeg_next as ff;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// MPEG-TS output time base.
const TS_TB: Rational = Rational(1, 90_000);
/// How far the PCR leads the DTS (the muxer's `max_delay`, microseconds).
const MUX_DELAY_US: i32 = 100_000;
/// How much earlier than the first keyframe a subtitle or data packet may be and still
/// go out with it (90 kHz: 50 ms, half a frame at 10 fps; well within the PCR's lead).
const SPARSE_SLACK: i64 = 4_500;

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
    /// The channel's extra output profiles (`streams[].profiles`), fed by this session
    /// from the same input and decoders.
    pub renditions: Option<Arc<Renditions>>,
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

/// What failed, and libav's words for it.
type Fail = (Stage, String);

fn at(stage: Stage) -> impl Fn(String) -> Fail {
    move |e| (stage, e)
}

/// The routes of one output, and how its streams are described in the status.
struct Mapped {
    routes: Vec<Option<Route>>,
    desc_in: Vec<String>,
    desc_out: Vec<String>,
    /// The output's video size, once known from the profile and the source.
    resolution: Option<String>,
}

/// Maps the source's streams (see [`mapping::plan`]) to copy or transcode routes of
/// `profile`, adding their output streams to `octx`. A stream to encode is decoded by the
/// session's shared decoder for it, opened here if no output had one (`mid_stream`: the
/// session is under way, so a video decoder waits for the next keyframe).
fn map_streams(
    ictx: &Input,
    plan: &mapping::Plan,
    profile: &Profile,
    octx: &mut Output,
    decoders: &mut [Option<Decoder>],
    (mid_stream, channel, aligned): (bool, u32, bool),
) -> Result<Mapped, String> {
    let mut routes: Vec<Option<Route>> = (0..ictx.nb_streams()).map(|_| None).collect();
    let (mut desc_in, mut desc_out) = (Vec::new(), Vec::new());
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
                let dec = match &mut decoders[*index] {
                    Some(d) => d,
                    slot => slot.insert(Decoder::new(&ist, channel, mid_stream)?),
                };
                let tx = if params.medium() == media::Type::Video {
                    let tx = Transcoder::video(&ist, dec, profile, codec, octx)?;
                    if aligned {
                        tx.align_keyframes()
                    } else {
                        tx
                    }
                } else {
                    Transcoder::audio(&ist, dec, profile, codec, octx)?
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
    let resolution = ictx.streams().best(media::Type::Video).and_then(|v| {
        let p = v.parameters();
        // SAFETY: reading plain fields of valid codec parameters.
        let (w, h) = unsafe { ((*p.as_ptr()).width, (*p.as_ptr()).height) };
        let sar = v.parameters().medium() == media::Type::Video;
        match (&routes[v.index()], sar && w > 0) {
            (Some(Route::Copy { .. }), true) => Some(format!("{w}x{h}")),
            (Some(Route::Transcode { .. }), true) => {
                let res = profile.resolution.as_ref().and_then(Value::get);
                let (ow, oh) = super::frames::target_size(res, (w as u32, h as u32), {
                    let r = v.parameters();
                    // SAFETY: as above.
                    let a = unsafe { (*r.as_ptr()).sample_aspect_ratio };
                    if a.num > 0 && a.den > 0 {
                        Rational::new(a.num, a.den)
                    } else {
                        Rational::new(1, 1)
                    }
                });
                Some(format!("{ow}x{oh}"))
            }
            _ => None,
        }
    });
    Ok(Mapped {
        routes,
        desc_in,
        desc_out,
        resolution,
    })
}

/// Records the channel's own output's streams in the status.
fn describe(ctx: &Ctx, ictx: &Input, plan: &mapping::Plan, mapped: &Mapped) {
    let mut st = ctx.status.lock().unwrap_or_else(|p| p.into_inner());
    if !plan.skipped.is_empty() && st.skipped_streams != plan.skipped {
        tracing::warn!(channel = ctx.stream.id, skipped = ?plan.skipped, "source streams left out of the output");
    }
    st.skipped_streams = plan.skipped.clone();
    st.input_codecs = mapped.desc_in.clone();
    st.output_codecs = mapped.desc_out.clone();
    st.output_resolution = mapped.resolution.clone();
    if let Some(v) = ictx.streams().best(media::Type::Video) {
        let p = v.parameters();
        // SAFETY: reading plain fields of valid codec parameters.
        let (w, h) = unsafe { ((*p.as_ptr()).width, (*p.as_ptr()).height) };
        st.input_resolution = (w > 0).then(|| format!("{w}x{h}"));
        let r = v.avg_frame_rate();
        st.input_frame_rate = (r.denominator() != 0).then(|| f64::from(r));
    }
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

/// A new reference to `p`'s data (`Packet::clone` copies it).
fn share_packet(p: &Packet) -> Packet {
    let mut out = Packet::empty();
    // SAFETY: `out` is a blank packet; av_packet_ref gives it a new reference to `p`'s
    // (reference-counted) data and copies its properties. On failure `out` stays blank.
    unsafe {
        use ff::packet::{Mut, Ref};
        ff::ffi::av_packet_ref(out.as_mut_ptr(), p.as_ptr())
    };
    out
}

/// Writes an output's packets onto its timeline: timestamps moved by [`SessionStamps`],
/// and for the channel's own output real-time pacing and the speed in the status.
struct Muxer {
    keep_going: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The channel's own output (paced, reports its speed); None for a rendition, which
    /// follows the pace the channel's output sets.
    status: Option<Arc<Mutex<Status>>>,
    timeline: Timeline,
    stamps: SessionStamps,
    ost_tbs: Vec<Rational>,
    started: Instant,
    media_start: Option<i64>,
    /// The output's video stream: nothing is written before its first keyframe. No
    /// client could decode what comes before, and a client kept across a restart would
    /// see the new muxer's first, discontinuity-flagged packets skipped.
    video_ost: Option<usize>,
    keyframe_written: bool,
    /// That keyframe's time (90 kHz, before the session's offset).
    key_at: Option<i64>,
    /// Per output stream: a packet of it has been written since that keyframe.
    begun: Vec<bool>,
    /// Other streams' packets that came before that keyframe (an encoder's lookahead
    /// delays video): those not earlier than it go out after it.
    held: Vec<(Packet, usize, Rational)>,
    /// The order packets go to the muxer in (libav's own interleaver would wait for
    /// silent subtitle streams and for audio that has not started).
    order: Interleaver<Packet>,
}

impl Muxer {
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
            self.key_at = pkt.dts().or(pkt.pts()).map(|t| t.rescale(tb, TS_TB));
            self.write(octx, pkt, ost, tb)?;
            for (p, o, t) in std::mem::take(&mut self.held) {
                self.write(octx, p, o, t)?;
            }
            return Ok(());
        }
        if self.video_ost.is_some_and(|v| v != ost) && !self.begun.get(ost).copied().unwrap_or(true)
        {
            // Another stream's first packets: those earlier than the first keyframe are
            // not sent, so a viewer's audio begins with its first picture (held ones, and
            // an encoder's that come after the keyframe). A subtitle or teletext PES timed
            // on the first picture may say up to half a frame less than the encoded
            // keyframe (the constant-rate stage puts frames on its own slots).
            let at = pkt.dts().or(pkt.pts()).map(|v| v.rescale(tb, TS_TB));
            let slack = match octx.stream(ost).map(|s| s.parameters().medium()) {
                Some(media::Type::Video | media::Type::Audio) => 0,
                _ => SPARSE_SLACK,
            };
            if at.zip(self.key_at).is_some_and(|(a, k)| a < k - slack) {
                return Ok(());
            }
            self.begun[ost] = true;
        }
        pkt.set_stream(ost);
        pkt.rescale_ts(tb, self.ost_tbs[ost]);
        let Some(s) = self.stamps.place(
            &mut self.timeline,
            ost,
            pkt.pts(),
            pkt.dts(),
            pkt.duration(),
        ) else {
            return Ok(());
        };
        pkt.set_pts(s.pts);
        pkt.set_dts(s.dts);
        pkt.set_position(-1);
        let now = self.started.elapsed().as_millis() as u64;
        for p in self.order.push(ost, s.dts.or(s.pts), now, pkt) {
            self.emit(octx, p)?;
        }
        Ok(())
    }

    /// Writes a packet the [`Interleaver`] let go: for the channel's own output at its
    /// time (real-time pacing), with the speed in the status.
    fn emit(&mut self, octx: &mut Output, pkt: Packet) -> Result<(), Fail> {
        if let (Some(t), Some(status)) = (pkt.dts().or(pkt.pts()), &self.status) {
            let m0 = *self.media_start.get_or_insert(t);
            self.timeline.pacer.wait(t, &*self.keep_going);
            let wall = self.started.elapsed().as_secs_f64();
            if wall > 0.5 {
                let media = (t - m0) as f64 / 90_000.0;
                status.lock().unwrap_or_else(|p| p.into_inner()).speed = Some(media / wall);
            }
        }
        pkt.write(octx)
            .map(|_| ())
            .map_err(|e| (Stage::Mux, format!("muxing: {e}")))
    }

    /// Writes what the interleaver still holds (the end of the output).
    fn flush(&mut self, octx: &mut Output) -> Result<(), Fail> {
        for p in self.order.flush() {
            self.emit(octx, p)?;
        }
        if self.order.late > 0 {
            tracing::debug!(
                packets = self.order.late,
                "packets dropped as later than their decoding time"
            );
        }
        Ok(())
    }
}

/// One MPEG-TS output of a session: the channel's own, or a rendition's.
struct Out {
    octx: Output,
    routes: Vec<Option<Route>>,
    mux: Muxer,
}

/// What an output of a session is: whose, of what, how.
struct Spec<'a> {
    plan: &'a mapping::Plan,
    profile: &'a Profile,
    hub: Arc<Hub>,
    channel: u32,
    /// The session is under way (a rendition starting for its first viewer).
    mid_stream: bool,
    /// Encoded video keeps the source's keyframes (a channel with `profiles`).
    aligned: bool,
    /// The channel's own output's stamps, for a rendition: the same offset, so the same
    /// picture has the same timestamps in every output (aligned HLS segments).
    stamps: Option<SessionStamps>,
    keep_going: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The channel's own output: paced, reporting in the status.
    status: Option<Arc<Mutex<Status>>>,
}

impl Out {
    /// Sets up an output of `spec` on `timeline`; on failure the timeline comes back.
    fn open(
        ictx: &Input,
        spec: Spec,
        decoders: &mut [Option<Decoder>],
        mut timeline: Timeline,
    ) -> Result<(Out, Mapped), Box<(Fail, Timeline)>> {
        let setup = Self::setup(
            ictx,
            spec.plan,
            spec.profile,
            spec.hub,
            decoders,
            (spec.mid_stream, spec.channel, spec.aligned),
        );
        match setup {
            Ok((octx, mut mapped, input_start)) => {
                let ost_tbs: Vec<Rational> = octx.streams().map(|s| s.time_base()).collect();
                debug_assert!(ost_tbs.iter().all(|tb| *tb == TS_TB));
                let video_ost = octx
                    .streams()
                    .find(|s| s.parameters().medium() == media::Type::Video)
                    .map(|s| s.index());
                let kinds = octx
                    .streams()
                    .map(|s| match s.parameters().medium() {
                        media::Type::Video | media::Type::Audio => Kind::Continuous,
                        _ => Kind::Sparse,
                    })
                    .collect();
                let routes = std::mem::take(&mut mapped.routes);
                let stamps = match spec.stamps {
                    Some(shared) => {
                        timeline.begin_session();
                        shared
                    }
                    None => SessionStamps::begin(&mut timeline, input_start),
                };
                let mux = Muxer {
                    keep_going: spec.keep_going,
                    status: spec.status,
                    stamps,
                    timeline,
                    ost_tbs,
                    started: Instant::now(),
                    media_start: None,
                    video_ost,
                    keyframe_written: false,
                    key_at: None,
                    begun: vec![false; octx.nb_streams() as usize],
                    held: Vec::new(),
                    order: Interleaver::new(kinds),
                };
                Ok((Out { octx, routes, mux }, mapped))
            }
            Err(e) => Err(Box::new((e, timeline))),
        }
    }

    /// `(mid_stream, channel, aligned)` as in [`Spec`].
    fn setup(
        ictx: &Input,
        plan: &mapping::Plan,
        profile: &Profile,
        hub: Arc<Hub>,
        decoders: &mut [Option<Decoder>],
        (mid_stream, channel, aligned): (bool, u32, bool),
    ) -> Result<(Output, Mapped, Option<i64>), Fail> {
        let writer = HubWriter::new(hub);
        let io = StreamIo::from_write_with_capacity(writer, 188 * 64)
            .map_err(|e| (Stage::Setup, format!("output buffer: {e}")))?;
        let mut octx = ff::format::output_to_stream(io, None, Some("mpegts"))
            .map_err(|e| (Stage::Setup, format!("MPEG-TS muxer: {e}")))?;
        let mapped = map_streams(
            ictx,
            plan,
            profile,
            &mut octx,
            decoders,
            (mid_stream, channel, aligned),
        )
        .map_err(at(Stage::Setup))?;
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
        // SAFETY: reading a plain field of the open input context.
        let input_start = match unsafe { (*ictx.as_ptr()).start_time } {
            t if t == ff::ffi::AV_NOPTS_VALUE => None,
            t => Some(t.rescale(Rational(1, 1_000_000), TS_TB)),
        };
        Ok((octx, mapped, input_start))
    }

    /// How this output takes input stream `i`: None (not at all), Some(false) (copied),
    /// Some(true) (decoded frames).
    fn takes(&self, i: usize) -> Option<bool> {
        match self.routes.get(i)? {
            Some(Route::Copy { .. }) => Some(false),
            Some(Route::Transcode { .. }) => Some(true),
            None => None,
        }
    }

    /// A packet of input stream `i`, for a copy route.
    fn packet(&mut self, i: usize, pkt: Packet) -> Result<(), Fail> {
        if let Some(Some(Route::Copy { ost, in_tb })) = self.routes.get(i) {
            let (ost, tb) = (*ost, *in_tb);
            self.mux.write(&mut self.octx, pkt, ost, tb)?;
        }
        Ok(())
    }

    /// A decoded frame of input stream `i` (None: its end), for a transcode route.
    fn frame(&mut self, i: usize, f: Option<&frame::Frame>, fps: Rational) -> Result<(), Fail> {
        if let Some(Some(Route::Transcode { ost, tx })) = self.routes.get_mut(i) {
            let ost = *ost;
            for e in tx
                .push(f, fps, &mut self.octx)
                .map_err(at(Stage::Transcode))?
            {
                self.mux.write(&mut self.octx, e.packet, ost, e.time_base)?;
            }
        }
        Ok(())
    }

    /// Keeps (or stops keeping) what input stream `i`'s encoder scaled, for another
    /// output that scales further from it (see [`Transcoder::tap`]).
    fn tap(&mut self, i: usize, on: bool) {
        if let Some(Some(Route::Transcode { tx, .. })) = self.routes.get_mut(i) {
            tx.tap(on);
        }
    }

    /// What the last frame of input stream `i` gave for other outputs.
    fn tapped(&mut self, i: usize) -> Option<Tapped> {
        match self.routes.get_mut(i) {
            Some(Some(Route::Transcode { tx, .. })) => tx.tapped(),
            _ => None,
        }
    }

    /// The encoded video's frame rate, once known.
    fn frame_rate(&self) -> Option<f64> {
        self.routes.iter().flatten().find_map(|r| match r {
            Route::Transcode { tx, .. } => tx.frame_rate(),
            Route::Copy { .. } => None,
        })
    }

    /// Frames encoded so far, and frames the filters refused.
    fn frames(&self) -> (u64, u64) {
        self.routes
            .iter()
            .flatten()
            .fold((0, 0), |(f, d), r| match r {
                Route::Copy { .. } => (f, d),
                Route::Transcode { tx, .. } => (f + tx.frames, d + tx.dropped),
            })
    }

    /// Ends the output (flushing the encoders first at the end of input); its timeline.
    fn finish(mut self, eof: bool) -> (Timeline, Result<(), Fail>) {
        let mut result = Ok(());
        if eof {
            for i in 0..self.routes.len() {
                if self.takes(i) == Some(true) {
                    if let Err(e) = self.frame(i, None, Rational::new(0, 1)) {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        if let Err(e) = self.mux.flush(&mut self.octx) {
            result = result.and(Err(e));
        }
        let _ = self.octx.write_trailer();
        (self.mux.timeline, result)
    }
}

/// What a rendition's output thread is sent.
enum Msg {
    /// A packet of input stream `.0`, for a copy route.
    Packet(usize, Packet),
    /// A decoded frame of input stream `.0`, its decoder's coded frame rate, for a
    /// video frame its picture bytes (counted against [`MAX_QUEUED_FRAME_BYTES`]), and
    /// its number in the session (video frames; see [`Forward::from`]).
    Frame(usize, frame::Frame, Rational, usize, u64),
    /// The end of input: flush the encoders.
    Eof,
}

/// Decoded video frames a rendition may have waiting (1.6 s at 25 fps: enough for the
/// burst of a channel's start, when output runs up to a second ahead of real time), and
/// their picture bytes beyond [`MIN_QUEUED_FRAMES`] (1080p: about 20 frames). More are
/// dropped (and counted), so a slow encoder never holds up the channel or the other
/// profiles.
const MAX_QUEUED_FRAMES: usize = 40;
const MAX_QUEUED_FRAME_BYTES: usize = 64 * 1024 * 1024;
const MIN_QUEUED_FRAMES: usize = 8;
/// Messages of any kind a rendition may have waiting before its output is given up.
const MAX_QUEUED: usize = 8_192;

/// About the bytes of a decoded picture (4:2:0 at 8 bits; enough for a bound).
fn picture_bytes(f: &frame::Frame) -> usize {
    // SAFETY: reading plain fields of a decoded frame.
    let (w, h) = unsafe { ((*f.as_ptr()).width, (*f.as_ptr()).height) };
    (w.max(0) as usize * h.max(0) as usize * 3 / 2).max(1)
}

/// A rendition output's queue, as whoever feeds it holds it: the producer, or the
/// profile it scales from (see [`Forward`]).
#[derive(Clone)]
struct Queue {
    tx: mpsc::Sender<Msg>,
    queued: Arc<AtomicUsize>,
    /// Video frames and their picture bytes waiting.
    queued_frames: Arc<(AtomicUsize, AtomicUsize)>,
    rendition: Arc<Rendition>,
}

impl Queue {
    /// Queues a message; `picture`: a video frame's picture bytes (0 for anything else).
    /// false: the output is gone (its thread ended or is stuck); a video frame it has no
    /// room for is dropped and counted.
    fn send(&self, msg: Msg, picture: usize) -> bool {
        let (frames, bytes) = &*self.queued_frames;
        let waiting = frames.load(Ordering::SeqCst);
        if picture > 0
            && (waiting >= MAX_QUEUED_FRAMES
                || (waiting >= MIN_QUEUED_FRAMES
                    && bytes.load(Ordering::SeqCst) + picture > MAX_QUEUED_FRAME_BYTES))
        {
            self.rendition.dropped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if self.queued.load(Ordering::SeqCst) >= MAX_QUEUED {
            // Its thread is stuck: the output is given up (see `Feeds::manage`).
            return false;
        }
        // Counted before it is sent: the thread takes it off when it receives it.
        self.queued.fetch_add(1, Ordering::SeqCst);
        if picture > 0 {
            frames.fetch_add(1, Ordering::SeqCst);
            bytes.fetch_add(picture, Ordering::SeqCst);
        }
        // An error: its thread ended (its output broke).
        self.tx.send(msg).is_ok()
    }

    /// Video frames waiting.
    fn backlog(&self) -> usize {
        self.queued_frames.0.load(Ordering::SeqCst)
    }

    /// How far it is on the way to dropping frames (see [`Queue::send`]), 0 to 1.
    fn fullness(&self) -> f64 {
        let (frames, bytes) = &*self.queued_frames;
        let n = frames.load(Ordering::SeqCst);
        let by_bytes = if n >= MIN_QUEUED_FRAMES {
            bytes.load(Ordering::SeqCst) as f64 / MAX_QUEUED_FRAME_BYTES as f64
        } else {
            0.0
        };
        (n as f64 / MAX_QUEUED_FRAMES as f64).max(by_bytes)
    }
}

/// A smaller profile that scales from this one's pictures instead of the decoded ones
/// (see [`Feeds::cascade`]): its queue, the input stream, its picture size, and the first
/// frame (by number) it takes from here.
struct Forward {
    to: Queue,
    stream: usize,
    size: (u32, u32),
    from: u64,
}

/// The profiles that scale from an output's pictures, and the last video frame (by
/// number) that output has handed on (or, with none to hand on to, taken).
#[derive(Default)]
struct Forwards {
    list: Vec<Forward>,
    done: u64,
}

/// A rendition's output, run on its own thread (so profiles encode in parallel and a slow
/// one drops frames instead of stalling the others).
struct Feed<'s> {
    rendition: Arc<Rendition>,
    /// How the output takes each input stream (see [`Out::takes`]).
    takes: Vec<Option<bool>>,
    /// None once the thread has ended (its output broke).
    queue: Option<Queue>,
    /// Set when the output stops before the end of input: what is still queued is
    /// dropped, so stopping never waits for a slow encoder to work through it.
    abandon: Arc<AtomicBool>,
    thread: std::thread::ScopedJoinHandle<'s, Result<(), Fail>>,
    /// The smaller profiles that scale from this one's pictures.
    forwards: Arc<Mutex<Forwards>>,
    /// While some do: the video frames sent here that it may not have handed on yet
    /// (references to frames its queue holds anyway), so a profile that stops scaling
    /// from here gets them from the producer instead, and loses none.
    ring: std::collections::VecDeque<(u64, usize, frame::Frame, Rational)>,
    /// The profile whose pictures this one scales from (its video frames come from
    /// there, not from the producer).
    fed_by: Option<String>,
    /// Not fed by another profile again before then (it was dropped for falling behind).
    cooldown: Option<Instant>,
    started: Instant,
    /// Since when its queue has been half full (see [`Feeds::cascade`]).
    behind_since: Option<Instant>,
}

impl Feed<'_> {
    /// Queues a message; `picture`: a video frame's picture bytes (0 for anything else).
    fn send(&mut self, msg: Msg, picture: usize) {
        if let Some(q) = &self.queue {
            if !q.send(msg, picture) {
                self.queue = None;
            }
        }
    }
}

/// A rendition output's thread: writes what it is sent until the channel's session ends
/// (its sender is dropped) or the output breaks; gives the timeline back to the rendition.
fn run_feed(
    mut out: Out,
    rx: mpsc::Receiver<Msg>,
    r: Arc<Rendition>,
    (queued, queued_frames, abandon): (
        Arc<AtomicUsize>,
        Arc<(AtomicUsize, AtomicUsize)>,
        Arc<AtomicBool>,
    ),
    forwards: Arc<Mutex<Forwards>>,
    channel: u32,
) -> Result<(), Fail> {
    let _log = super::avlog::enter(channel);
    let mut result = Ok(());
    let mut eof = false;
    while let Ok(msg) = rx.recv() {
        queued.fetch_sub(1, Ordering::SeqCst);
        if abandon.load(Ordering::SeqCst) {
            break;
        }
        let step = match msg {
            Msg::Packet(i, p) => out.packet(i, p),
            Msg::Frame(i, f, fps, picture, seq) => {
                if picture > 0 {
                    queued_frames.0.fetch_sub(1, Ordering::SeqCst);
                    queued_frames.1.fetch_sub(picture, Ordering::SeqCst);
                    // Not held while encoding: the producer attaches and detaches.
                    let tap = lock(&forwards).list.iter().any(|fw| fw.stream == i);
                    out.tap(i, tap);
                    let step = out.frame(i, Some(&f), fps);
                    if step.is_ok() {
                        let mut fw = lock(&forwards);
                        if tap {
                            forward(&fw.list, &mut out, (i, &f, fps, seq));
                        }
                        fw.done = seq;
                    }
                    step
                } else {
                    out.frame(i, Some(&f), fps)
                }
            }
            Msg::Eof => {
                eof = true;
                break;
            }
        };
        r.frames.store(out.frames().0, Ordering::Relaxed);
        if let Some(f) = out.frame_rate() {
            *r.frame_rate.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
        }
        if r.hub.has_keyframe() {
            r.set_state(RState::Running);
        }
        if let Err(e) = step {
            result = Err(e);
            break;
        }
    }
    let (timeline, flushed) = out.finish(eof);
    *r.timeline.lock().unwrap_or_else(|p| p.into_inner()) = timeline;
    result.and(flushed)
}

/// Hands video frame `seq` of input stream `i` (decoded frame `f`) to the smaller
/// profiles that scale from this output: its scaled pictures where its graph only
/// scaled and they are at least as large as a profile's, else the decoded frame.
fn forward(
    forwards: &[Forward],
    out: &mut Out,
    (i, f, fps, seq): (usize, &frame::Frame, Rational, u64),
) {
    if forwards.is_empty() {
        return;
    }
    let tapped = out.tapped(i);
    for fw in forwards
        .iter()
        .filter(|fw| fw.stream == i && seq >= fw.from)
    {
        let scaled = match &tapped {
            Some(Tapped::Scaled(frames, (w, h))) if *w >= fw.size.0 && *h >= fw.size.1 => {
                frames.as_slice()
            }
            _ => std::slice::from_ref(f),
        };
        for s in scaled {
            if let Some(c) = share(s) {
                let picture = picture_bytes(&c);
                // A gone output is reaped by the producer (see `Feeds::manage`).
                let _ = fw.to.send(Msg::Frame(i, c, fps, picture, seq), picture);
            }
        }
    }
}

/// Runs one session. Errors name the stage, the channel and the (redacted) source.
pub fn run(ctx: &Ctx, timeline: &mut Timeline) -> Result<End, Error> {
    session(ctx, timeline)
        .map_err(|(stage, detail)| Error::new(ctx.stream.id, &ctx.stream.source, stage, detail))
}

/// Plans the session's streams and primes the input (see [`prime`]): the plan without
/// the streams whose parameters never came, the packets read meanwhile, and those streams.
fn plan_and_prime(
    ctx: &Ctx,
    ictx: &mut Input,
    watch: &Watchdog,
) -> Result<(mapping::Plan, Vec<Packet>, Vec<usize>), String> {
    let held = prime::identify(ictx, &*ctx.keep_going, || watch.active());
    let best_video = ictx.streams().best(media::Type::Video).map(|s| s.index());
    let mut plan = mapping::plan(&sources(ictx), best_video, ctx.profile)?;
    // The streams some output copies: the muxer needs their parameters before its header.
    // A stream that is only encoded is not waited for (its encoder's format comes from
    // the profile, or is 48 kHz stereo, and its first frames are resampled to it).
    let copied = |p: &mapping::Plan| {
        p.outputs
            .iter()
            .filter(|o| o.1 == mapping::Action::Copy)
            .map(|o| o.0)
            .collect::<Vec<_>>()
    };
    let mut wanted = copied(&plan);
    // The renditions' streams too (a profile may keep tracks the channel's own drops).
    if let Some(rs) = &ctx.renditions {
        for r in &rs.list {
            if let Ok(p) = mapping::plan(&sources(ictx), best_video, &r.profile) {
                wanted.extend(copied(&p));
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
    }
    let primed = prime::prime(ictx, &wanted, held, &*ctx.keep_going, || watch.active());
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
    Ok((plan, primed.packets, primed.incomplete))
}

/// The channel's own output among the outputs a profile may scale from.
const OWN: usize = usize::MAX;

/// A profile that went back to the decoded frames because the one it scaled from was
/// behind is not paired again for this long.
const CASCADE_COOLDOWN: Duration = Duration::from_secs(5);
/// How long an output's queue may stay half full before those scaling from its pictures
/// go back to the decoded frames; and how long an output runs before any may start to.
const CASCADE_BEHIND: Duration = Duration::from_secs(2);

/// Takes the profile `child` off `parent`'s list of those that scale from its pictures,
/// and gives back, in order, the frames `parent` was sent for it and had not handed on
/// (to send to `child` directly: it then loses none).
fn take_back(parent: &Feed, child: &Arc<Rendition>) -> Vec<(Msg, usize)> {
    let mut fw = lock(&parent.forwards);
    let Some(k) = fw
        .list
        .iter()
        .position(|x| Arc::ptr_eq(&x.to.rendition, child))
    else {
        return Vec::new();
    };
    let from = fw.list.remove(k).from;
    // Read under the lock: from now on `parent` hands nothing on to `child`.
    let done = fw.done;
    drop(fw);
    parent
        .ring
        .iter()
        .filter(|e| e.0 > done && e.0 >= from)
        .filter_map(|(seq, i, f, fps)| {
            let c = share(f)?;
            let picture = picture_bytes(&c);
            Some((Msg::Frame(*i, c, *fps, picture, *seq), picture))
        })
        .collect()
}

/// The input stream of the video an output encodes, and its decoder's picture size and
/// sample aspect (None before the decoder knows them).
fn encoded_video(
    takes: &[Option<bool>],
    ictx: &Input,
    decoders: &[Option<Decoder>],
) -> Option<(usize, (u32, u32, Rational))> {
    takes.iter().enumerate().find_map(|(i, t)| {
        let video = ictx
            .stream(i)
            .is_some_and(|s| s.parameters().medium() == media::Type::Video);
        if *t != Some(true) || !video {
            return None;
        }
        Some((i, decoders.get(i)?.as_ref()?.picture()?))
    })
}

/// How often a session looks for renditions to start or stop.
const MANAGE_EVERY: Duration = Duration::from_millis(20);

/// The renditions' outputs of a session (see [`Feed`]).
struct Feeds<'s, 'e> {
    scope: &'s std::thread::Scope<'s, 'e>,
    list: Vec<Feed<'s>>,
    /// Renditions whose output failed this session: not tried again until their viewers
    /// have left.
    failed: Vec<String>,
    last: Option<Instant>,
    /// Video frames sent so far (each is numbered, see [`Forward::from`]).
    seq: u64,
    /// The profiles that scale from the channel's own output's pictures (it runs on the
    /// producer's thread, so it hands them on there: see [`Flow::run`]), and its name.
    own_forwards: Vec<Forward>,
    own_name: String,
    created: Instant,
}

impl<'s> Feeds<'s, '_> {
    /// Starts the outputs of renditions that have viewers, stops those whose viewers left
    /// (after the grace), reaps broken ones, and closes decoders nobody needs any more.
    fn manage(
        &mut self,
        ctx: &Ctx,
        ictx: &Input,
        incomplete: &[usize],
        out: &Out,
        decoders: &mut [Option<Decoder>],
    ) {
        if self.last.is_some_and(|t| t.elapsed() < MANAGE_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let Some(rs) = &ctx.renditions else {
            return;
        };
        let channel = ctx.stream.id;
        // Broken outputs (their thread ended) and outputs nobody wants any more.
        let mut i = 0;
        while i < self.list.len() {
            let f = &self.list[i];
            let broken = f.queue.is_none() || f.thread.is_finished();
            if broken || !f.rendition.wanted(rs.grace) {
                let f = self.list.swap_remove(i);
                let r = f.rendition.clone();
                // The profile it scales from holds its queue too: let go of it, or its
                // thread would wait for more. Those that scale from it get what it had
                // not handed on yet from here, and the decoded frames from now on.
                for p in &self.list {
                    lock(&p.forwards)
                        .list
                        .retain(|fw| !Arc::ptr_eq(&fw.to.rendition, &r));
                }
                self.own_forwards
                    .retain(|fw| !Arc::ptr_eq(&fw.to.rendition, &r));
                for c in &mut self.list {
                    if c.fed_by.as_deref() == Some(r.name.as_str()) {
                        for (msg, picture) in take_back(&f, &c.rendition) {
                            c.send(msg, picture);
                        }
                        c.fed_by = None;
                        c.rendition.set_scaled_from(None);
                    }
                }
                f.abandon.store(true, Ordering::SeqCst);
                let error = match f.stop() {
                    Err((stage, e)) => Some(format!("{}: {e}", stage.as_str())),
                    Ok(()) if broken => Some("the output fell behind the source".to_owned()),
                    Ok(()) => None,
                };
                if let Some(e) = &error {
                    tracing::warn!(channel, profile = %r.name, error = %e, "a profile's output stopped");
                    self.failed.push(r.name.clone());
                } else {
                    tracing::info!(channel, profile = %r.name, "a profile's viewers left; its output stopped");
                }
                r.detached(error);
                continue;
            }
            i += 1;
        }
        // Tried again once a viewer joins after the failure (see `Rendition::joined`).
        self.failed
            .retain(|n| rs.get(n).is_some_and(|r| r.clients() > 0 && r.is_failed()));
        for r in &rs.list {
            let running = self.list.iter().any(|f| Arc::ptr_eq(&f.rendition, r));
            if running || r.clients() == 0 || self.failed.contains(&r.name) {
                continue;
            }
            if let Err(e) = self.start(ctx, ictx, incomplete, r, out, decoders) {
                tracing::warn!(channel, profile = %r.name, error = %e, "a profile's output could not start");
                self.failed.push(r.name.clone());
                r.detached(Some(e));
            }
        }
        self.cascade(channel, ictx, decoders, (ctx.profile, out));
        for (i, d) in decoders.iter_mut().enumerate() {
            let needed =
                out.takes(i) == Some(true) || self.list.iter().any(|f| f.takes[i] == Some(true));
            if d.is_some() && !needed {
                *d = None;
            }
        }
    }

    /// Starts rendition `r`'s output on its own thread.
    fn start(
        &mut self,
        ctx: &Ctx,
        ictx: &Input,
        incomplete: &[usize],
        r: &Arc<Rendition>,
        own: &Out,
        decoders: &mut [Option<Decoder>],
    ) -> Result<(), String> {
        let best_video = ictx.streams().best(media::Type::Video).map(|s| s.index());
        let mut plan = mapping::plan(&sources(ictx), best_video, &r.profile)?;
        plan.outputs.retain(|o| !incomplete.contains(&o.0));
        if plan.outputs.is_empty() {
            return Err("the source's streams have no usable parameters".into());
        }
        // A rendition that was not running starts afresh: its viewers wait for its first
        // keyframe; one kept across a source reconnect goes on.
        if !r.is_live() {
            r.hub.reset();
        }
        let timeline = std::mem::take(&mut *r.timeline.lock().unwrap_or_else(|p| p.into_inner()));
        let spec = Spec {
            plan: &plan,
            profile: &r.profile,
            hub: r.hub.clone(),
            channel: ctx.stream.id,
            mid_stream: true,
            aligned: true,
            stamps: Some(own.mux.stamps.clone()),
            keep_going: ctx.keep_going.clone(),
            status: None,
        };
        let opened = Out::open(ictx, spec, decoders, timeline);
        let (out, mapped) = match opened {
            Ok(o) => o,
            Err(failed) => {
                let ((_, e), timeline) = *failed;
                *r.timeline.lock().unwrap_or_else(|p| p.into_inner()) = timeline;
                return Err(e);
            }
        };
        *r.codecs.lock().unwrap_or_else(|p| p.into_inner()) = (mapped.desc_out, mapped.resolution);
        let takes: Vec<Option<bool>> = (0..out.routes.len()).map(|i| out.takes(i)).collect();
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let queued_frames = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let abandon = Arc::new(AtomicBool::new(false));
        let counters = (queued.clone(), queued_frames.clone(), abandon.clone());
        let forwards = Arc::new(Mutex::new(Forwards::default()));
        let (rend, channel, fw) = (r.clone(), ctx.stream.id, forwards.clone());
        let thread = std::thread::Builder::new()
            .name(format!("amps-ch-{channel}-{}", r.name))
            .spawn_scoped(self.scope, move || {
                run_feed(out, rx, rend, counters, fw, channel)
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        r.attached();
        tracing::info!(channel, profile = %r.name, "a profile's output started");
        self.list.push(Feed {
            rendition: r.clone(),
            takes,
            queue: Some(Queue {
                tx,
                queued,
                queued_frames,
                rendition: r.clone(),
            }),
            abandon,
            thread,
            forwards,
            ring: Default::default(),
            fed_by: None,
            cooldown: None,
            started: Instant::now(),
            behind_since: None,
        });
        Ok(())
    }

    /// Lets a profile scale from a larger profile's pictures instead of the decoded
    /// ones (a 360p from the 720p rather than from the 1080p source: swscale's work for
    /// it then starts from a third of the pixels, and its pictures are as sharp), and
    /// gives it back the decoded frames when that profile stops or falls behind. Only
    /// between outputs that encode the same video stream, each to an explicit
    /// `resolution` below the source's; the larger one hands on its scaled pictures
    /// only while its graph does nothing but scale (for an interlaced frame, or another
    /// pixel format, it hands on the decoded frame: see [`forward`]).
    fn cascade(
        &mut self,
        channel: u32,
        ictx: &Input,
        decoders: &[Option<Decoder>],
        (own_profile, own): (&Profile, &Out),
    ) {
        // A start or a reconnect comes as a burst that fills the queues for a moment: an
        // output is behind when its queue stays half full, or is nearly full.
        let now = Instant::now();
        for f in &mut self.list {
            let full = f.queue.as_ref().map_or(1.0, Queue::fullness);
            f.behind_since = (full >= 0.5).then(|| f.behind_since.unwrap_or(now));
        }
        let behind = |f: &Feed| {
            f.queue.as_ref().is_none_or(|q| q.fullness() >= 0.75)
                || f.behind_since.is_some_and(|t| now - t >= CASCADE_BEHIND)
        };
        // Back to the decoded frames: a profile whose feeder stopped or is behind.
        for c in 0..self.list.len() {
            let Some(name) = self.list[c].fed_by.clone() else {
                continue;
            };
            // The channel's own output never falls behind (it is the producer's pace)
            // and runs as long as the session.
            let me = self.list[c].rendition.clone();
            if self
                .own_forwards
                .iter()
                .any(|fw| Arc::ptr_eq(&fw.to.rendition, &me))
            {
                continue;
            }
            let feeder = self.list.iter().find(|f| f.rendition.name == name);
            if !feeder.is_none_or(behind) {
                continue;
            }
            if let Some(f) = feeder {
                let back = take_back(f, &me);
                for (msg, picture) in back {
                    self.list[c].send(msg, picture);
                }
                self.list[c].cooldown = Some(Instant::now() + CASCADE_COOLDOWN);
                tracing::info!(channel, profile = %me.name, from = %name, "the profile it scaled from fell behind; scaling from the decoded frames again");
            }
            self.list[c].fed_by = None;
            self.list[c].rendition.set_scaled_from(None);
        }
        // New pairs.
        for c in 0..self.list.len() {
            let child = &self.list[c];
            if child.fed_by.is_some()
                || child.queue.is_none()
                || child.cooldown.is_some_and(|t| Instant::now() < t)
                || self
                    .list
                    .iter()
                    .any(|f| f.fed_by.as_deref() == Some(child.rendition.name.as_str()))
            {
                continue;
            }
            let Some((vi, picture)) = encoded_video(&child.takes, ictx, decoders) else {
                continue;
            };
            let size = |p: &Profile| {
                let res = p.resolution.as_ref().and_then(Value::get)?;
                Some(super::frames::target_size(
                    Some(res),
                    (picture.0, picture.1),
                    picture.2,
                ))
            };
            let Some(want) = size(&child.rendition.profile) else {
                continue;
            };
            let candidates: Vec<(usize, (u32, u32))> = self
                .list
                .iter()
                .enumerate()
                .filter(|(p, f)| {
                    *p != c
                        && f.fed_by.is_none()
                        && f.takes.get(vi).copied().flatten() == Some(true)
                        && now - f.started >= CASCADE_BEHIND
                        && f.queue.as_ref().is_some_and(|q| q.backlog() <= 1)
                })
                .filter_map(|(p, f)| Some((p, size(&f.rendition.profile)?)))
                .chain(
                    (own.takes(vi) == Some(true) && now - self.created >= CASCADE_BEHIND)
                        .then(|| size(own_profile).map(|s| (OWN, s)))
                        .flatten(),
                )
                .collect();
            let Some(p) = super::frames::scale_from(want, (picture.0, picture.1), &candidates)
            else {
                continue;
            };
            let Some(to) = self.list[c].queue.clone() else {
                continue;
            };
            let forward = Forward {
                to,
                stream: vi,
                size: want,
                from: self.seq + 1,
            };
            let name = if p == OWN {
                self.own_forwards.push(forward);
                self.own_name.clone()
            } else {
                lock(&self.list[p].forwards).list.push(forward);
                self.list[p].rendition.name.clone()
            };
            tracing::info!(channel, profile = %self.list[c].rendition.name, from = %name, "the profile scales from a larger profile's pictures");
            self.list[c].rendition.set_scaled_from(Some(name.clone()));
            self.list[c].fed_by = Some(name);
        }
    }

    /// Sends input stream `i`'s packet and decoded frames to the outputs that take them;
    /// the number of the first video frame.
    fn send(
        &mut self,
        i: usize,
        pkt: &Packet,
        frames: &[frame::Frame],
        fps: Rational,
        video: bool,
    ) -> u64 {
        let first = self.seq + 1;
        if video {
            self.seq += frames.len() as u64;
        }
        for f in &mut self.list {
            match f.takes.get(i).copied().flatten() {
                Some(false) => f.send(Msg::Packet(i, share_packet(pkt)), 0),
                // Its pictures come from the profile it scales from.
                Some(true) if video && f.fed_by.is_some() => {}
                Some(true) => {
                    let keep = video && {
                        let fw = lock(&f.forwards);
                        let done = fw.done;
                        while f.ring.front().is_some_and(|e| e.0 <= done) {
                            f.ring.pop_front();
                        }
                        !fw.list.is_empty()
                    };
                    if !keep {
                        f.ring.clear();
                    }
                    for (k, fr) in frames.iter().enumerate() {
                        let picture = if video { picture_bytes(fr) } else { 0 };
                        let seq = first + k as u64;
                        if keep {
                            if let Some(c) = share(fr) {
                                f.ring.push_back((seq, i, c, fps));
                            }
                        }
                        if let Some(c) = share(fr) {
                            f.send(Msg::Frame(i, c, fps, picture, seq), picture);
                        }
                    }
                }
                None => {}
            }
        }
        first
    }

    /// The channel's own output's part for input stream `i`'s decoded frames, the
    /// first numbered `first`: it encodes them, and hands on what the profiles that
    /// scale from its pictures take.
    fn own_frames(
        &self,
        out: &mut Out,
        i: usize,
        frames: &[frame::Frame],
        (fps, first, video): (Rational, u64, bool),
    ) -> Result<(), Fail> {
        let tap = video && self.own_forwards.iter().any(|fw| fw.stream == i);
        out.tap(i, tap);
        for (k, f) in frames.iter().enumerate() {
            out.frame(i, Some(f), fps)?;
            if tap {
                forward(&self.own_forwards, out, (i, f, fps, first + k as u64));
            }
        }
        Ok(())
    }

    /// Whether some output takes input stream `i`.
    fn take(&self, i: usize) -> bool {
        self.list
            .iter()
            .any(|f| f.takes.get(i).copied().flatten().is_some())
    }

    /// Ends the session's rendition outputs (flushing them at the end of input). They stay
    /// live: the next session of the channel continues them.
    fn end(self, eof: bool) {
        // Those that scale from another profile's pictures end after it (its last
        // pictures reach them first).
        let (mut list, fed): (Vec<_>, Vec<_>) =
            self.list.into_iter().partition(|f| f.fed_by.is_none());
        list.extend(fed);
        for mut f in list {
            if eof {
                f.send(Msg::Eof, 0);
            } else {
                f.abandon.store(true, Ordering::SeqCst);
            }
            let r = f.rendition.clone();
            r.set_scaled_from(None);
            if let Err((stage, e)) = f.stop() {
                r.detached(Some(format!("{}: {e}", stage.as_str())));
            }
        }
    }
}

impl Feed<'_> {
    /// Closes the output's queue and waits for its thread to write what it has.
    fn stop(mut self) -> Result<(), Fail> {
        self.queue = None;
        match self.thread.join() {
            Ok(r) => r,
            Err(_) => Err((Stage::Mux, "the output thread crashed".into())),
        }
    }
}

fn session(ctx: &Ctx, timeline: &mut Timeline) -> Result<End, Fail> {
    let watch = Watchdog::new(ctx.stall_timeout);
    let mut ictx = open_input(ctx, &watch).map_err(at(Stage::Open))?;
    if !(ctx.keep_going)() {
        return Ok(End::Stopped);
    }
    watch.opened();
    let (plan, primed, incomplete) =
        plan_and_prime(ctx, &mut ictx, &watch).map_err(at(Stage::Setup))?;
    let mut decoders: Vec<Option<Decoder>> = (0..ictx.nb_streams()).map(|_| None).collect();
    let spec = Spec {
        plan: &plan,
        profile: ctx.profile,
        hub: ctx.hub.clone(),
        channel: ctx.stream.id,
        mid_stream: false,
        aligned: ctx.renditions.is_some(),
        stamps: None,
        keep_going: ctx.keep_going.clone(),
        status: Some(ctx.status.clone()),
    };
    let (out, mapped) =
        Out::open(&ictx, spec, &mut decoders, std::mem::take(timeline)).map_err(|failed| {
            let (e, t) = *failed;
            *timeline = t;
            e
        })?;
    describe(ctx, &ictx, &plan, &mapped);
    let (tl, result) = std::thread::scope(|scope| {
        let mut feeds = Feeds {
            scope,
            list: Vec::new(),
            failed: Vec::new(),
            last: None,
            seq: 0,
            own_forwards: Vec::new(),
            own_name: ctx.stream.ffmpeg_profile.clone().unwrap_or_default(),
            created: Instant::now(),
        };
        let mut out = out;
        let mut state = Flow {
            decoders: &mut decoders,
            out: &mut out,
            feeds: &mut feeds,
        };
        let end = state.run(ctx, &mut ictx, &watch, primed, &incomplete);
        let eof = matches!(end, Ok(End::Eof));
        let flushed = if eof {
            state.flush_decoders(&ictx)
        } else {
            Ok(())
        };
        feeds.end(eof);
        let (tl, fin) = out.finish(eof);
        (tl, end.and_then(|e| flushed.and(fin).map(|()| e)))
    });
    *timeline = tl;
    result
}

/// A session's moving parts while it reads.
struct Flow<'a, 's, 'e> {
    decoders: &'a mut [Option<Decoder>],
    out: &'a mut Out,
    feeds: &'a mut Feeds<'s, 'e>,
}

impl Flow<'_, '_, '_> {
    fn run(
        &mut self,
        ctx: &Ctx,
        ictx: &mut Input,
        watch: &Watchdog,
        primed: Vec<Packet>,
        incomplete: &[usize],
    ) -> Result<End, Fail> {
        let frames_before = ctx
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .frames_encoded;
        let decoded_before = ctx
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .frames_decoded;
        let mut decoded = 0u64;
        let in_tbs: Vec<Rational> = ictx.streams().map(|s| s.time_base()).collect();
        let mut frames: Vec<i64> = ictx.streams().map(|s| nominal_duration(&s)).collect();
        let video: Vec<bool> = ictx
            .streams()
            .map(|s| s.parameters().medium() == media::Type::Video)
            .collect();
        let mut gaps = GapFiller::default();
        let mut jumps = JumpSmoother::default();
        let mut primed = primed.into_iter();
        loop {
            if !(ctx.keep_going)() {
                return Ok(End::Stopped);
            }
            self.feeds
                .manage(ctx, ictx, incomplete, self.out, self.decoders);
            let mut pkt = match primed.next() {
                Some(p) => p,
                None => match read_packet(ctx, ictx, watch)? {
                    Some(p) => p,
                    None if !(ctx.keep_going)() => return Ok(End::Stopped),
                    None => return Ok(End::Eof),
                },
            };
            watch.active();
            let i = pkt.stream();
            let own = self.out.takes(i);
            if own.is_none() && !self.feeds.take(i) && self.decoders[i].is_none() {
                continue;
            }
            let (pts, dts) = gaps.fill(i, pkt.pts(), pkt.dts(), pkt.duration(), frames[i]);
            pkt.set_pts(pts);
            pkt.set_dts(dts);
            smooth(&mut jumps, &mut pkt, in_tbs[i]);
            let (decoded_now, fps) = match &mut self.decoders[i] {
                Some(d) => (d.push(Some(&pkt)), d.coded_fps()),
                None => (Vec::new(), Rational::new(0, 1)),
            };
            decoded += decoded_now.len() as u64;
            if !video[i] && frames[i] == 0 {
                // An audio stream the session started without waiting for: its format,
                // now known, for packets without a duration and later outputs that copy.
                if let Some(f) = decoded_now.first() {
                    prime::record(ictx, i, f);
                    frames[i] = ictx.stream(i).map_or(0, |s| nominal_duration(&s));
                }
            }
            let first = self.feeds.send(i, &pkt, &decoded_now, fps, video[i]);
            match own {
                Some(true) => {
                    self.feeds
                        .own_frames(self.out, i, &decoded_now, (fps, first, video[i]))?;
                }
                Some(false) => self.out.packet(i, pkt)?,
                None => {}
            }
            // Time spent pacing is not a stall of the source.
            watch.active();
            if ctx.hub.has_keyframe() {
                (ctx.on_running)();
                let mut st = ctx.status.lock().unwrap_or_else(|p| p.into_inner());
                st.frames_encoded = frames_before + self.out.frames().0;
                st.frames_decoded = decoded_before + decoded;
                if let Some(f) = self.out.frame_rate() {
                    st.output_frame_rate = Some(f);
                }
            }
        }
    }

    /// At the end of input: the decoders' last frames go to every output.
    fn flush_decoders(&mut self, ictx: &Input) -> Result<(), Fail> {
        for i in 0..self.decoders.len() {
            let Some(d) = &mut self.decoders[i] else {
                continue;
            };
            let (frames, fps) = (d.push(None), d.coded_fps());
            let video = ictx
                .stream(i)
                .is_some_and(|s| s.parameters().medium() == media::Type::Video);
            let first = self.feeds.send(i, &Packet::empty(), &frames, fps, video);
            if self.out.takes(i) == Some(true) {
                self.feeds
                    .own_frames(self.out, i, &frames, (fps, first, video))?;
            }
        }
        Ok(())
    }
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
