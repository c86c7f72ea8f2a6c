//! Decode -> filter (deinterlace/scale/fps/format, or resample/downmix) -> encode, for one
//! stream.
//!
//! As the ffmpeg CLI does (fftools `ffmpeg_filter.c`), the filter graph is configured
//! from the first decoded frame, not from the probed stream parameters, and rebuilt when
//! a frame's properties change (size, pixel format, sample rate, sample format, channel
//! layout): a source joined before its parameter sets, or one that switches from stereo
//! to 5.1 at a programme boundary or changes size at an ad break, keeps going with
//! continuous timestamps. A damaged packet the decoder refuses is skipped, never the
//! channel. The output (encoder settings) stays as it was first set up, so players never
//! see the output change.
//!
//! Scaling and resampling go through a libavfilter graph built on the pipeline thread, so
//! frame sizing for AAC (1024-sample frames), pixel format conversion, downmixing
//! (swresample's matrix, not channel dropping) and frame-rate conversion are libav's, and
//! no non-`Send` swscale context crosses threads.

use super::frames::{target_size, FrameProps};
use crate::config::units::{Bitrate, Value};
use crate::config::{Deinterlace, DeinterlaceRate, Profile};
use ff::format::context::Output;
use ff::{codec, filter, frame, ChannelLayout, Dictionary, Packet, Rational, Rescale};
use ffmpeg_next as ff;

/// Encoded packets come out with timestamps in `time_base`.
pub struct Encoded {
    pub packet: Packet,
    pub time_base: Rational,
}

/// The video output, decided once.
struct VideoOut {
    codec: ff::Codec,
    pix: ff::format::Pixel,
    /// The output frame rate, decided with the first frame: the profile's, else the
    /// probed one, else the bitstream's (the decoder's), else 25.
    fps: Rational,
    fixed_fps: Option<Rational>,
    probed_fps: Option<Rational>,
    enc: Option<ff::encoder::video::Encoder>,
    /// The encoder of the first GOP, while it lasts (see [`QuickStart`]).
    quick: Option<QuickStart>,
    /// The next output slot (see [`Transcoder::constant_rate`]) and the last frame.
    next_slot: Option<i64>,
    prev: Option<frame::Frame>,
    /// Output size and aspect, from the first frame.
    size: Option<(u32, u32, Rational)>,
    /// The graph deinterlaces (decided by the profile, the field order and the frames).
    deinterlacing: bool,
    /// The source declares interlaced fields (its field order).
    field_coded: bool,
}

/// A zap does not wait for the encoder's frame threads. x264's `ultrafast` (no lookahead,
/// no B-frames) with frame threads still holds back `threads - 1` frames plus one of sync
/// lookahead: three frames, 120 ms at 25 fps, on two cores, which a viewer of a cold
/// channel would wait after the first picture is decoded, at the source's pace. So the
/// first GOP is encoded by a second encoder with the same settings and x264's
/// `zerolatency` tune (slice threads), which gives each frame back at once; at the first
/// keyframe of the profile's own encoder (the GOP's end, or the source's next keyframe
/// when aligned) the stream goes on from that encoder, which starts there with an IDR
/// picture. Its delay then shows once, as a pause of those three frames at the first
/// GOP's end, which a player's buffer absorbs. Presets with a lookahead or B-frames
/// (delays of 10 to 60 frames) are left alone: their pause would be a stall.
struct QuickStart {
    enc: ff::encoder::video::Encoder,
    /// Frames sent to it.
    sent: u64,
    /// Switch after this many frames (the profile's GOP); None when keyframes are the
    /// source's (aligned): switch at the first of them.
    gop: Option<u64>,
}

/// Whether the first GOP of `codec` with `p`'s settings gets a [`QuickStart`]: x264
/// `ultrafast`, unless its options add a lookahead or B-frames or it is low-latency
/// already.
fn quick_start(codec: &ff::Codec, p: &Profile) -> bool {
    let delaying = ["bf", "b", "rc-lookahead", "x264-params", "x264opts"];
    codec.name() == "libx264"
        && p.preset.as_deref() == Some("ultrafast")
        && !p.tune.as_deref().is_some_and(|t| t.contains("zerolatency"))
        && !p
            .encoder_options
            .keys()
            .any(|k| delaying.contains(&k.as_str()))
}

enum Kind {
    Video {
        out: Box<VideoOut>,
    },
    Audio {
        enc: ff::encoder::audio::Encoder,
        /// The encoder's frame size (0: any).
        frame_size: u32,
    },
}

pub struct Transcoder {
    kind: Kind,
    profile: Profile,
    /// The output stream's index in the muxer.
    ost: usize,
    graph: Option<(filter::Graph, FrameProps)>,
    sink_tb: Rational,
    enc_tb: Rational,
    in_tb: Rational,
    /// The frame rate the decoder reads from the bitstream (0/1: none).
    coded_fps: Rational,
    /// Keyframes only where the source has its own (see [`Transcoder::align_keyframes`]).
    aligned: bool,
    /// The source codec has only keyframes (raw video, MJPEG, a `lavfi:` source).
    intra_only: bool,
    /// The second (of the timestamps) of the last keyframe forced when aligned.
    key_second: Option<i64>,
    pub frames: u64,
    /// Decoded frames dropped because no graph would take them (damaged input).
    pub dropped: u64,
    /// Another output scales from this one's pictures (see [`Transcoder::tap`]).
    tap: bool,
    /// What the last frame pushed gave for other outputs (see [`Transcoder::tapped`]).
    tapped: Option<Tapped>,
}

/// What a tapped video output hands on for one decoded frame: its scaled pictures (its
/// graph only scales), or nothing of its own (the other output takes the decoded frame).
pub enum Tapped {
    /// Pictures of this size, in the input's time base and pixel format.
    Scaled(Vec<frame::Frame>, (u32, u32)),
    Source,
}

enum Decoding {
    Video(ff::decoder::Video),
    Audio(ff::decoder::Audio),
}

/// Largest picture (in pixels) a quick decoder starts with: one core decodes 1080p H.264,
/// HEVC or MPEG-2 several times faster than real time; 4K waits for frame threads.
const QUICK_MAX_PIXELS: u32 = 1920 * 1088;
/// Packets the frame-threaded decoder may take to catch up before the quick one is kept
/// for good (damaged input where the two never agree).
const HANDOVER_MAX_PACKETS: u32 = 64;

/// The frame-threaded decoder that takes over from the quick one: it started at a
/// keyframe (timestamp `key`) and gets every packet from there; its pictures are dropped
/// until one of them (at or after `key`) is one the quick decoder has given out, and it
/// replaces the quick decoder then.
struct Handover {
    next: ff::decoder::Video,
    key: i64,
    packets: u32,
}

/// One input stream's decoder, shared by every output that encodes that stream: a
/// channel with several output profiles decodes its source once.
///
/// A video decoder up to 1080p starts with slice threads only, which return each picture
/// as soon as its packet is decoded: frame threads (one per core, as the ffmpeg CLI
/// uses) hold back one picture per extra thread (80 ms at 25 fps on two cores), which a
/// zap would wait through. At the source's next keyframe a frame-threaded decoder starts
/// beside it, and takes over once it has decoded a picture the first one already gave
/// (see [`Handover`]): no picture is lost or given twice.
pub struct Decoder {
    dec: Decoding,
    /// Opened mid-stream: video packets are skipped until a keyframe (what comes before
    /// cannot be decoded, and would only log errors).
    wait_key: bool,
    /// Frames decoded so far.
    pub frames: u64,
    /// The decoder is the quick one (slice threads) and hands over at the next keyframe:
    /// the stream's parameters and time base, and the channel, for the next decoder.
    quick: Option<(ff::codec::Parameters, Rational, u32)>,
    handover: Option<Handover>,
    /// The timestamp of the latest picture given out.
    last_pts: Option<i64>,
    /// After a handover: the frame-threaded decoder's pictures in this span (its keyframe
    /// to the quick decoder's last picture) were given by the quick one; they are still
    /// in its threads. A span, not a bound, so timestamps that start again lower (a
    /// source that loops) are never taken for pictures already given.
    given: Option<std::ops::RangeInclusive<i64>>,
    /// The audio format the session's first encoder of this stream assumed, the
    /// source's being unknown then (it started before the first audio came): later
    /// outputs (renditions) take the same, so every output of the session has one.
    assumed: Option<(u32, u16)>,
}

/// A new reference to `f`'s buffers (no copy): each consumer of a shared decoded frame
/// gets its own, as the filter graph takes the references it is given.
pub fn share(f: &frame::Frame) -> Option<frame::Frame> {
    // SAFETY: av_frame_clone makes a new AVFrame referencing the same (reference-counted)
    // buffers; a null result (out of memory) is refused.
    unsafe {
        let p = ff::ffi::av_frame_clone(f.as_ptr());
        (!p.is_null()).then(|| frame::Frame::wrap(p))
    }
}

impl Decoder {
    /// A decoder for input stream `ist`; `mid_stream`: the stream is already flowing (an
    /// output profile that starts while the channel runs).
    pub fn new(
        ist: &ff::format::stream::Stream,
        channel: u32,
        mid_stream: bool,
    ) -> Result<Decoder, String> {
        let params = ist.parameters();
        let video = params.medium() == ff::media::Type::Video;
        // SAFETY: reading plain fields of the stream's codec parameters.
        let pixels = unsafe { (*params.as_ptr()).width * (*params.as_ptr()).height };
        // A size not known yet (a live source joined mid-GOP: the next keyframe brings it)
        // is taken as broadcast H.264 or MPEG-2 has it, at most 1080p; other codecs (HEVC
        // is where 4K lives) start with frame threads then.
        let quick = video
            && match u32::try_from(pixels) {
                Ok(0) => matches!(params.id(), codec::Id::H264 | codec::Id::MPEG2VIDEO),
                Ok(p) => p <= QUICK_MAX_PIXELS,
                Err(_) => false,
            };
        let d = decoder(ist, channel, !quick)?;
        let dec = if video {
            Decoding::Video(d.video().map_err(|e| err("video decoder", e))?)
        } else {
            Decoding::Audio(d.audio().map_err(|e| err("audio decoder", e))?)
        };
        Ok(Decoder {
            wait_key: mid_stream && video,
            dec,
            frames: 0,
            quick: quick.then(|| (params, ist.time_base(), channel)),
            handover: None,
            last_pts: None,
            given: None,
            assumed: None,
        })
    }

    /// Whether the frame-threaded decoder has taken over (see [`Decoder`]).
    #[cfg(test)]
    fn frame_threaded(&self) -> bool {
        self.quick.is_none() && self.handover.is_none()
    }

    /// A keyframe after the quick decoder's first pictures starts the frame-threaded one.
    fn start_handover(&mut self, p: &Packet) {
        let Some((params, tb, channel)) = &self.quick else {
            return;
        };
        if self.handover.is_some() || self.frames == 0 || !p.is_key() {
            return;
        }
        let Some(key) = p.pts().or(p.dts()) else {
            // No timestamps to match pictures by: the quick decoder stays.
            self.quick = None;
            return;
        };
        let next = codec::context::Context::from_parameters(params.clone())
            .map_err(|e| err("decoder", e))
            .and_then(|mut c| {
                threads(&mut c, *channel, true);
                let mut d = c.decoder();
                d.set_packet_time_base(*tb);
                d.video().map_err(|e| err("video decoder", e))
            });
        match next {
            Ok(next) => {
                self.handover = Some(Handover {
                    next,
                    key,
                    packets: 0,
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, "no frame-threaded decoder; the quick one stays");
                self.quick = None;
            }
        }
    }

    /// Feeds the frame-threaded decoder during a handover; returns its pictures that the
    /// quick decoder has not given, once it has taken over.
    fn hand_over(&mut self, packet: Option<&Packet>) -> Vec<frame::Frame> {
        let Some(h) = &mut self.handover else {
            return Vec::new();
        };
        h.packets += 1;
        let sent = match packet {
            Some(p) => h.next.send_packet(p),
            None => h.next.send_eof(),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "decoder refused a packet");
        }
        let mut taken = false;
        let mut out = Vec::new();
        for f in receive(&mut h.next) {
            let Some(pts) = f.pts() else { continue };
            let given = self.last_pts.is_some_and(|l| pts <= l);
            if !taken && pts >= h.key && given {
                taken = true;
            } else if !given && (taken || pts >= h.key) {
                taken = true;
                out.push(f);
            }
        }
        if taken {
            let h = self.handover.take().expect("checked above");
            self.dec = Decoding::Video(h.next);
            self.quick = None;
            self.given = self.last_pts.map(|l| h.key..=l);
        } else if h.packets > HANDOVER_MAX_PACKETS || packet.is_none() {
            tracing::debug!("the frame-threaded decoder never caught up; the quick one stays");
            self.handover = None;
            self.quick = None;
        }
        out
    }

    /// The frame rate the bitstream declares (0/1 when it declares none).
    pub fn coded_fps(&self) -> Rational {
        // SAFETY: reading a plain field of the open decoder.
        Rational::from(unsafe {
            let ctx = match &self.dec {
                Decoding::Video(d) => d.as_ptr(),
                Decoding::Audio(d) => d.as_ptr(),
            };
            (*ctx).framerate
        })
    }

    /// Feeds one packet (None: the end of input) and returns the frames decoded, each
    /// with its best-effort timestamp as its `pts`.
    pub fn push(&mut self, packet: Option<&Packet>) -> Vec<frame::Frame> {
        if let Some(p) = packet {
            if self.wait_key {
                if !p.is_key() {
                    return Vec::new();
                }
                self.wait_key = false;
            }
            self.start_handover(p);
        }
        let handing_over = self.handover.is_some();
        let sent = match (&mut self.dec, packet) {
            (Decoding::Video(d), Some(p)) => d.send_packet(p),
            (Decoding::Video(d), None) => d.send_eof(),
            (Decoding::Audio(d), Some(p)) => d.send_packet(p),
            (Decoding::Audio(d), None) => d.send_eof(),
        };
        if let Err(e) = sent {
            // A corrupt packet is not fatal: skip it, as the ffmpeg CLI does.
            tracing::debug!(error = %e, "decoder refused a packet");
        }
        let mut out = match &mut self.dec {
            Decoding::Video(d) => receive(d),
            Decoding::Audio(d) => receive(d),
        };
        if let Some(given) = &self.given {
            out.retain(|f| f.pts().is_none_or(|p| !given.contains(&p)));
            if !out.is_empty() {
                self.given = None;
            }
        }
        self.note_latest(&out);
        if handing_over {
            let more = self.hand_over(packet);
            self.note_latest(&more);
            out.extend(more);
        }
        self.frames += out.len() as u64;
        out
    }

    /// Remembers the timestamp of the latest of `frames` given out (they come in display
    /// order).
    fn note_latest(&mut self, frames: &[frame::Frame]) {
        if let Some(l) = frames.iter().rev().find_map(|f| f.pts()) {
            self.last_pts = Some(l);
        }
    }

    /// A video decoder's picture size and sample aspect, once it knows them.
    pub fn picture(&self) -> Option<(u32, u32, Rational)> {
        match &self.dec {
            Decoding::Video(d) if d.width() > 0 && d.height() > 0 => {
                Some((d.width(), d.height(), d.aspect_ratio()))
            }
            _ => None,
        }
    }

    fn size(&self) -> (u32, u32) {
        match &self.dec {
            Decoding::Video(d) => (d.width(), d.height()),
            Decoding::Audio(_) => (0, 0),
        }
    }

    /// The source's audio rate and channels as the session's encoders take them: the
    /// decoder's, or what the first encoder assumed while they were unknown; (0, 0)
    /// when neither is known.
    fn audio_format(&self) -> (u32, u16) {
        match (&self.dec, self.assumed) {
            (Decoding::Audio(_), Some(f)) => f,
            (Decoding::Audio(d), None) => (d.rate(), d.channels()),
            (Decoding::Video(_), _) => (0, 0),
        }
    }
}

fn err(what: &str, e: ff::Error) -> String {
    format!("{what}: {e}")
}

/// A bitrate field's value in bits per second.
fn bps(v: &Option<Value<Bitrate>>) -> Option<u64> {
    v.as_ref().and_then(Value::get).map(|b| b.bps())
}

fn options(p: &Profile, extra: &[(&str, String)]) -> Dictionary<'static> {
    let mut d = Dictionary::new();
    for (k, v) in extra {
        d.set(k, v);
    }
    for (k, v) in &p.encoder_options {
        d.set(k, v);
    }
    d
}

/// A decoder for input stream `ist`, its log lines marked as channel `channel`'s; with
/// `frame_threaded`, on every core as the ffmpeg CLI does (a 4K HEVC source needs it),
/// else with slice threads only (see [`Decoder`]).
fn decoder(
    ist: &ff::format::stream::Stream,
    channel: u32,
    frame_threaded: bool,
) -> Result<codec::decoder::Decoder, String> {
    let mut c = codec::context::Context::from_parameters(ist.parameters())
        .map_err(|e| err("decoder", e))?;
    threads(&mut c, channel, frame_threaded);
    let mut dec = c.decoder();
    dec.set_packet_time_base(ist.time_base());
    Ok(dec)
}

/// Sets a decoder context that is not open yet to decode on every core (with
/// `frame_threaded`, frame and slice threads; else slice threads only), its log lines
/// marked as channel `channel`'s.
fn threads(c: &mut codec::context::Context, channel: u32, frame_threaded: bool) {
    // SAFETY: plain field writes on a decoder context that is not open yet.
    unsafe {
        let p = c.as_mut_ptr();
        (*p).thread_count = 0;
        (*p).thread_type = if frame_threaded {
            ff::ffi::FF_THREAD_FRAME | ff::ffi::FF_THREAD_SLICE
        } else {
            ff::ffi::FF_THREAD_SLICE
        };
        (*p).opaque = super::avlog::tag(channel);
    }
}

/// Every frame an open decoder has ready, each with its best-effort timestamp as its
/// `pts`.
fn receive<D: std::ops::DerefMut<Target = codec::decoder::Opened>>(d: &mut D) -> Vec<frame::Frame> {
    let mut out = Vec::new();
    loop {
        // SAFETY: allocates an empty AVFrame (av_frame_alloc); no data is read from it.
        let mut decoded = unsafe { frame::Frame::empty() };
        match d.receive_frame(&mut decoded) {
            Ok(()) => {
                // SAFETY: reading a plain field of a decoded frame.
                let ts = unsafe { (*decoded.as_ptr()).best_effort_timestamp };
                decoded.set_pts((ts != ff::ffi::AV_NOPTS_VALUE).then_some(ts));
                out.push(decoded);
            }
            Err(ff::Error::Eof)
            | Err(ff::Error::Other {
                errno: ff::util::error::EAGAIN,
            }) => break,
            // A decoding error (damaged data): the next packet may decode.
            Err(e) => {
                tracing::debug!(error = %e, "decoder error");
                break;
            }
        }
    }
    out
}

/// Adds the output stream for `codec` and copies the source stream's language, title and
/// disposition to it.
fn add_output(
    octx: &mut Output,
    codec: ff::Codec,
    ist: &ff::format::stream::Stream,
) -> Result<usize, String> {
    let mut ost = octx
        .add_stream(codec)
        .map_err(|e| err("output stream", e))?;
    super::mapping::carry_stream_info(ist, &mut ost);
    Ok(ost.index())
}

impl Transcoder {
    /// A video transcoder for input stream `ist` (decoded by `dec`), adding its output
    /// stream to `octx`. The encoder opens on the first decoded frame.
    pub fn video(
        ist: &ff::format::stream::Stream,
        dec: &Decoder,
        p: &Profile,
        name: &str,
        octx: &mut Output,
    ) -> Result<Transcoder, String> {
        let (dec_w, dec_h) = dec.size();
        let codec =
            ff::encoder::find_by_name(name).ok_or_else(|| format!("no video encoder {name:?}"))?;
        // SAFETY: reading a plain field of the stream's parameters.
        let field_order = unsafe { (*ist.parameters().as_ptr()).field_order };
        let field_coded = !matches!(
            field_order,
            ff::ffi::AVFieldOrder::AV_FIELD_PROGRESSIVE | ff::ffi::AVFieldOrder::AV_FIELD_UNKNOWN
        );
        let fixed_fps = p
            .framerate
            .as_ref()
            .and_then(Value::get)
            .map(|f| Rational::new(f.num, f.den));
        let r = ist.avg_frame_rate();
        let probed_fps =
            (r.numerator() > 0 && r.denominator() > 0 && f64::from(r) <= 240.0).then_some(r);
        let pix = codec
            .video()
            .ok()
            .and_then(|v| v.formats().map(|f| f.collect::<Vec<_>>()))
            .and_then(|f| {
                if f.contains(&ff::format::Pixel::YUV420P) {
                    Some(ff::format::Pixel::YUV420P)
                } else {
                    f.first().copied()
                }
            })
            .unwrap_or(ff::format::Pixel::YUV420P);
        let ost = add_output(octx, codec, ist)?;
        // The muxer needs the stream's type and codec before the header; the rest comes
        // with the encoder.
        if let Some(s) = octx.stream_mut(ost) {
            // SAFETY: plain field writes on the new output stream's parameters.
            unsafe {
                let par = s.parameters().as_mut_ptr();
                (*par).codec_type = ff::ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
                (*par).codec_id = codec.id().into();
                (*par).width = dec_w.max(2) as i32;
                (*par).height = dec_h.max(2) as i32;
            }
        }
        let tb = Rational::new(1, 25);
        Ok(Transcoder {
            kind: Kind::Video {
                out: Box::new(VideoOut {
                    codec,
                    pix,
                    fps: Rational::new(25, 1),
                    fixed_fps,
                    probed_fps,
                    enc: None,
                    quick: None,
                    next_slot: None,
                    prev: None,
                    size: None,
                    deinterlacing: false,
                    field_coded,
                }),
            },
            profile: p.clone(),
            ost,
            graph: None,
            sink_tb: tb,
            enc_tb: tb,
            in_tb: ist.time_base(),
            coded_fps: dec.coded_fps(),
            aligned: false,
            // SAFETY: avcodec_descriptor_get returns null or a static descriptor.
            intra_only: unsafe {
                let d = ff::ffi::avcodec_descriptor_get(ist.parameters().id().into());
                !d.is_null() && (*d).props & ff::ffi::AV_CODEC_PROP_INTRA_ONLY != 0
            },
            key_second: None,
            frames: 0,
            dropped: 0,
            tap: false,
            tapped: None,
        })
    }

    /// An audio transcoder for input stream `ist` (decoded by `dec`), adding its output
    /// stream to `octx`. The encoder opens now (the muxer needs its parameters); its rate
    /// and channels come from the profile, else from the source (at most stereo), else,
    /// the source's first audio not having come yet, 48 kHz stereo (for every output of
    /// the session: see [`Decoder::audio_format`]).
    pub fn audio(
        ist: &ff::format::stream::Stream,
        dec: &mut Decoder,
        p: &Profile,
        name: &str,
        octx: &mut Output,
    ) -> Result<Transcoder, String> {
        let (src_rate, src_channels) = match dec.audio_format() {
            (0, _) | (_, 0) => *dec.assumed.insert((48_000, 2)),
            known => known,
        };
        let codec =
            ff::encoder::find_by_name(name).ok_or_else(|| format!("no audio encoder {name:?}"))?;
        let acodec = codec.audio().map_err(|e| err("audio encoder", e))?;
        let want_rate = p.audio_sample_rate.unwrap_or(src_rate).max(8000) as i32;
        let rate = match acodec.rates() {
            Some(r) => {
                let r: Vec<i32> = r.collect();
                if r.contains(&want_rate) {
                    want_rate
                } else if r.contains(&48000) {
                    48000
                } else {
                    r.first().copied().unwrap_or(48000)
                }
            }
            None => want_rate,
        };
        let channels = p
            .audio_channels
            .map(i32::from)
            .unwrap_or_else(|| i32::from(src_channels).clamp(1, 2));
        let layout = ChannelLayout::default(channels);
        let sample_fmt = acodec
            .formats()
            .and_then(|mut f| f.next())
            .unwrap_or(ff::format::Sample::F32(ff::format::sample::Type::Planar));
        let ost = add_output(octx, codec, ist)?;
        let mut enc = codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(|e| err("audio encoder", e))?;
        enc.set_rate(rate);
        enc.set_channel_layout(layout);
        enc.set_channels(channels);
        enc.set_format(sample_fmt);
        let enc_tb = Rational::new(1, rate);
        enc.set_time_base(enc_tb);
        if let Some(b) = bps(&p.audio_bitrate) {
            enc.set_bit_rate(b as usize);
        }
        let enc = enc
            .open_as_with(codec, options(p, &[]))
            .map_err(|e| err(&format!("opening {name}"), e))?;
        let variable = codec
            .capabilities()
            .contains(codec::capabilities::Capabilities::VARIABLE_FRAME_SIZE);
        let frame_size = if variable { 0 } else { enc.frame_size() };
        set_output_parameters(octx, ost, &enc);
        Ok(Transcoder {
            kind: Kind::Audio { enc, frame_size },
            profile: p.clone(),
            ost,
            graph: None,
            sink_tb: enc_tb,
            enc_tb,
            in_tb: ist.time_base(),
            coded_fps: Rational::new(0, 1),
            aligned: false,
            intra_only: false,
            key_second: None,
            frames: 0,
            dropped: 0,
            tap: false,
            tapped: None,
        })
    }

    /// Places the video's keyframes where the source has its own (an intra-only source,
    /// where every frame is one, gets one a second: on the first frame of each second of
    /// the timestamps), and nowhere else: no GOP of the profile's, no scene-cut keyframes. Every output of a channel with `profiles`,
    /// copied or encoded, then has its keyframes at the same pictures, so their HLS
    /// segments line up for adaptive players.
    pub fn align_keyframes(mut self) -> Transcoder {
        self.aligned = true;
        self
    }

    /// The graph's filters after the source, for frames with `props`.
    fn filter_spec(&mut self, props: FrameProps, interlaced_frame: bool) -> Result<String, String> {
        match &mut self.kind {
            Kind::Audio { enc, .. } => Ok(format!(
                "aresample=async=1000,aformat=sample_fmts={}:sample_rates={}:channel_layouts=0x{:x}",
                enc.format().name(),
                enc.rate(),
                enc.channel_layout().bits()
            )),
            Kind::Video { out } => {
                let FrameProps::Video { width, height, sar, .. } = props else {
                    return Err("a video transcoder got audio".into());
                };
                let sar = Rational::new(sar.0, sar.1);
                if out.size.is_none() {
                    let coded = self.coded_fps;
                    let source = out
                        .probed_fps
                        .or((coded.numerator() > 0 && coded.denominator() > 0 && f64::from(coded) <= 240.0).then_some(coded))
                        .unwrap_or(Rational::new(25, 1));
                    let doubled = self.profile.deinterlace_rate == Some(DeinterlaceRate::Field)
                        && self.profile.deinterlace != Some(Deinterlace::Off)
                        && (out.field_coded || interlaced_frame);
                    let source = if doubled {
                        Rational::new(source.numerator() * 2, source.denominator())
                    } else {
                        source
                    };
                    out.fps = out.fixed_fps.unwrap_or(source);
                }
                let (w, h, out_sar) = *out.size.get_or_insert_with(|| {
                    let keep = self.profile.resolution.is_none();
                    let res = self.profile.resolution.as_ref().and_then(Value::get);
                    let (w, h) = target_size(res, (width as u32, height as u32), sar);
                    (w, h, if keep { sar } else { Rational::new(1, 1) })
                });
                let mode = self.profile.deinterlace.unwrap_or_default();
                out.deinterlacing = match mode {
                    Deinterlace::Off => false,
                    Deinterlace::On => true,
                    Deinterlace::Auto => out.deinterlacing || out.field_coded || interlaced_frame,
                };
                let mut spec = String::new();
                if out.deinterlacing {
                    // Field-coded sources (and `on`): every frame; otherwise only the
                    // frames flagged interlaced, progressive ones pass untouched.
                    let deint = if out.field_coded || mode == Deinterlace::On {
                        "all"
                    } else {
                        "interlaced"
                    };
                    let per = match self.profile.deinterlace_rate.unwrap_or_default() {
                        DeinterlaceRate::Frame => "send_frame",
                        DeinterlaceRate::Field => "send_field",
                    };
                    spec.push_str(&format!("bwdif=mode={per}:parity=auto:deint={deint},"));
                }
                let pix = out.pix.descriptor().map(|d| d.name()).unwrap_or("yuv420p");
                // The frame rate is made constant after the graph (`constant_rate`).
                spec.push_str(&format!(
                    "scale={w}:{h},setsar={}/{},format={pix}",
                    out_sar.numerator(),
                    out_sar.denominator(),
                ));
                Ok(spec)
            }
        }
    }

    /// Builds the filter graph for frames with `props` (the old one, if any, was
    /// drained by the caller).
    fn build_graph(&mut self, props: FrameProps, interlaced_frame: bool) -> Result<(), String> {
        let video = matches!(props, FrameProps::Video { .. });
        let (source, sink) = if video {
            ("buffer", "buffersink")
        } else {
            ("abuffer", "abuffersink")
        };
        let spec = self.filter_spec(props, interlaced_frame)?;
        let find = |name: &str| {
            filter::find(name).ok_or_else(|| format!("this libav has no {name} filter"))
        };
        let mut graph = filter::Graph::new();
        graph
            .add(&find(source)?, "in", &props.source_args(self.in_tb))
            .map_err(|e| err(&format!("{source} filter"), e))?;
        graph
            .add(&find(sink)?, "out", "")
            .map_err(|e| err(&format!("{sink} filter"), e))?;
        graph
            .output("in", 0)
            .and_then(|g| g.input("out", 0))
            .and_then(|g| g.parse(&spec))
            .map_err(|e| err("filter graph", e))?;
        graph.validate().map_err(|e| err("filter graph", e))?;
        if let Kind::Audio { frame_size, .. } = &self.kind {
            if *frame_size > 0 {
                graph
                    .get("out")
                    .expect("sink added")
                    .sink()
                    .set_frame_size(*frame_size);
            }
        }
        let ctx = graph.get("out").expect("sink added");
        // SAFETY: `ctx` is the validated buffersink of `graph`.
        self.sink_tb =
            unsafe { Rational::from(ff::ffi::av_buffersink_get_time_base(ctx.as_ptr())) };
        self.graph = Some((graph, props));
        Ok(())
    }

    /// Opens the video encoder for the first filtered frame's size: the first GOP's
    /// [`QuickStart`] encoder where it helps (the profile's own then opens with the second
    /// frame, after the first has gone out), else the profile's.
    fn open_video_encoder(&mut self, octx: &mut Output) -> Result<(), String> {
        let p = &self.profile;
        let Kind::Video { out, .. } = &mut self.kind else {
            return Ok(());
        };
        if out.enc.is_some() || out.quick.is_some() {
            return Ok(());
        }
        self.enc_tb = out.frame_tb();
        if quick_start(&out.codec, p) {
            let tune = match &p.tune {
                Some(t) => format!("{t},zerolatency"),
                None => "zerolatency".to_owned(),
            };
            match video_encoder(p, out, self.aligned, Some(tune)) {
                Ok(quick) => {
                    set_output_parameters(octx, self.ost, &quick);
                    out.quick = Some(QuickStart {
                        enc: quick,
                        sent: 0,
                        gop: (!self.aligned).then_some(u64::from(out.gop(p))),
                    });
                    return Ok(());
                }
                // The profile's encoder alone, as without a quick start.
                Err(e) => tracing::debug!(error = %e, "no quick-start encoder"),
            }
        }
        let enc = video_encoder(p, out, self.aligned, p.tune.clone())?;
        set_output_parameters(octx, self.ost, &enc);
        out.enc = Some(enc);
        Ok(())
    }

    /// Feeds one decoded frame of the input stream (or None at its end: everything
    /// buffered is flushed) and returns the encoded packets. `coded_fps`: the decoder's
    /// [`Decoder::coded_fps`].
    pub fn push(
        &mut self,
        decoded: Option<&frame::Frame>,
        coded_fps: Rational,
        octx: &mut Output,
    ) -> Result<Vec<Encoded>, String> {
        let mut out = Vec::new();
        self.coded_fps = coded_fps;
        match decoded {
            Some(f) => match share(f) {
                Some(mut f) => self.filter(&mut f, octx, &mut out)?,
                None => self.dropped += 1,
            },
            None => {
                self.tapped = None;
                self.flush_graph(octx, &mut out)?;
                self.end_quick_start(&mut out)?;
                let flushed = match &mut self.kind {
                    Kind::Video { out: v } => v.enc.as_mut().map(|e| e.send_eof()),
                    Kind::Audio { enc, .. } => Some(enc.send_eof()),
                };
                if let Some(r) = flushed {
                    r.map_err(|e| err("encoder flush", e))?;
                }
                self.drain_encoder(&mut out);
            }
        }
        Ok(out)
    }

    /// Sends a decoded frame through the graph, rebuilding the graph first when the
    /// frame's properties differ from those it was built for.
    fn filter(
        &mut self,
        decoded: &mut frame::Frame,
        octx: &mut Output,
        out: &mut Vec<Encoded>,
    ) -> Result<(), String> {
        let video = matches!(self.kind, Kind::Video { .. });
        let Some(props) = FrameProps::of(decoded, video) else {
            self.dropped += 1;
            return Ok(());
        };
        // SAFETY: reading a plain field of a decoded frame.
        let interlaced = unsafe { (*decoded.as_ptr()).interlaced_frame != 0 };
        let newly_interlaced = interlaced
            && self.profile.deinterlace.unwrap_or_default() == Deinterlace::Auto
            && matches!(&self.kind, Kind::Video { out, .. } if !out.deinterlacing);
        let changed = self.graph.as_ref().is_none_or(|(_, p)| *p != props) || newly_interlaced;
        // Frames the old graph still gives out are not handed on.
        self.tapped = self.tap.then_some(Tapped::Source);
        if changed {
            if let Some((_, old)) = &self.graph {
                tracing::info!(from = ?old, to = ?props, "the frames changed; rebuilding the filters");
                self.flush_graph(octx, out)?;
            }
            self.build_graph(props, interlaced)?;
        }
        if self.tap && self.plain_for(props, interlaced) {
            if let Kind::Video { out: v } = &self.kind {
                self.tapped = v.size.map(|(w, h, _)| Tapped::Scaled(Vec::new(), (w, h)));
            }
        }
        let Some((graph, _)) = self.graph.as_mut() else {
            return Ok(());
        };
        if let Err(e) = graph.get("in").expect("source added").source().add(decoded) {
            // Not fatal: drop the frame (a damaged frame with odd properties).
            tracing::debug!(error = %e, "the filters refused a frame");
            self.dropped += 1;
            self.tapped = self.tap.then_some(Tapped::Source);
            return Ok(());
        }
        self.drain_filter(octx, out)
    }

    /// Whether the current graph, for frames with `props`, only scales: its pictures are
    /// then what another output scaling the same frame further would start from.
    fn plain_for(&self, props: FrameProps, interlaced: bool) -> bool {
        let (Kind::Video { out: v }, FrameProps::Video { format, .. }) = (&self.kind, props) else {
            return false;
        };
        !v.deinterlacing
            && !v.field_coded
            && !interlaced
            && self.sink_tb == self.in_tb
            && ff::ffi::AVPixelFormat::from(v.pix) as i32 == format
    }

    /// Keeps, for each frame pushed, what another output may scale from (see
    /// [`Transcoder::tapped`]).
    pub fn tap(&mut self, on: bool) {
        self.tap = on;
        if !on {
            self.tapped = None;
        }
    }

    /// What the last frame pushed gave for other outputs (None: not tapped, or no frame).
    pub fn tapped(&mut self) -> Option<Tapped> {
        self.tapped.take()
    }

    /// Flushes the current graph (its buffered frames reach the encoder) and drops it.
    fn flush_graph(&mut self, octx: &mut Output, out: &mut Vec<Encoded>) -> Result<(), String> {
        if let Some((graph, _)) = self.graph.as_mut() {
            let _ = graph.get("in").expect("source added").source().flush();
            self.drain_filter(octx, out)?;
        }
        self.graph = None;
        Ok(())
    }

    fn drain_filter(&mut self, octx: &mut Output, out: &mut Vec<Encoded>) -> Result<(), String> {
        // SAFETY: as above.
        let mut filtered = unsafe { frame::Frame::empty() };
        loop {
            let Some((graph, _)) = self.graph.as_mut() else {
                return Ok(());
            };
            if graph
                .get("out")
                .expect("sink added")
                .sink()
                .frame(&mut filtered)
                .is_err()
            {
                return Ok(());
            }
            self.open_video_encoder(octx)?;
            if let Kind::Audio { enc, .. } = &mut self.kind {
                if self.sink_tb != self.enc_tb {
                    let pts = filtered.pts().map(|p| p.rescale(self.sink_tb, self.enc_tb));
                    filtered.set_pts(pts);
                }
                let sent = enc.send_frame(&filtered);
                self.sent(sent);
                self.drain_encoder(out);
                continue;
            }
            if let (Some(Tapped::Scaled(frames, _)), Some(f)) =
                (self.tapped.as_mut(), share(&filtered))
            {
                frames.push(f);
            }
            for (frame, original) in self.constant_rate(&filtered) {
                self.send_video(frame, original, octx, out)?;
            }
        }
    }

    /// The output's constant frame rate, without holding a frame back (libavfilter's
    /// `fps` waits for the next frame before it lets one go: a frame of latency, and the
    /// last frame of a stream lost): each frame takes the output slot nearest its time;
    /// one whose slot is taken is dropped, and slots skipped since the last frame are
    /// filled with it (at most 10 s of them: a longer gap is left a gap). Slots are
    /// counted in the encoder's time base (one tick a frame). The frames to encode, each
    /// with whether it is the source's (not a repeat).
    fn constant_rate(&mut self, f: &frame::Frame) -> Vec<(frame::Frame, bool)> {
        let Kind::Video { out: v } = &mut self.kind else {
            return Vec::new();
        };
        let Some(pts) = f.pts() else {
            self.dropped += 1;
            return Vec::new();
        };
        let slot = pts.rescale_with(self.sink_tb, self.enc_tb, ff::Rounding::NearInfinity);
        let next = v.next_slot.unwrap_or(slot);
        if slot < next {
            return Vec::new();
        }
        let mut frames = Vec::new();
        let max_fill = (f64::from(v.fps) * 10.0).ceil() as i64;
        if let Some(prev) = &v.prev {
            if slot - next <= max_fill {
                for k in next..slot {
                    if let Some(mut d) = share(prev) {
                        d.set_pts(Some(k));
                        frames.push((d, false));
                    }
                }
            }
        }
        v.prev = share(f);
        v.next_slot = Some(slot + 1);
        if let Some(mut c) = share(f) {
            c.set_pts(Some(slot));
            frames.push((c, true));
        }
        frames
    }

    /// Sends one output frame to the video encoder (the quick-start one while it lasts).
    fn send_video(
        &mut self,
        mut frame: frame::Frame,
        original: bool,
        octx: &mut Output,
        out: &mut Vec<Encoded>,
    ) -> Result<(), String> {
        let Kind::Video { out: v } = &mut self.kind else {
            return Ok(());
        };
        // SAFETY: plain field reads and a write on the frame: the encoder decides
        // keyframes, or (aligned) takes the source's.
        let force = unsafe {
            let f = frame.as_mut_ptr();
            let key = original
                && ((*f).key_frame != 0
                    || (*f).pict_type == ff::ffi::AVPictureType::AV_PICTURE_TYPE_I);
            let second = frame
                .pts()
                .map(|p| (p as f64 * f64::from(self.enc_tb)).floor() as i64);
            let force = self.aligned
                && key
                && (!self.intra_only
                    || second.is_some_and(|s| self.key_second.is_none_or(|l| s > l)));
            if force {
                self.key_second = second;
            }
            (*f).pict_type = if force {
                ff::ffi::AVPictureType::AV_PICTURE_TYPE_I
            } else {
                ff::ffi::AVPictureType::AV_PICTURE_TYPE_NONE
            };
            force
        };
        // The profile's encoder takes over at its first keyframe.
        let handover = v
            .quick
            .as_ref()
            .is_some_and(|q| q.sent > 0 && q.gop.map_or(force, |g| q.sent >= g));
        if handover {
            self.finish_quick(octx, out)?;
        }
        let Kind::Video { out: v } = &mut self.kind else {
            return Ok(());
        };
        // The profile's encoder opens with the second frame, once the first is out.
        if v.enc.is_none() && v.quick.as_ref().is_some_and(|q| q.sent == 1) {
            v.enc = Some(video_encoder(
                &self.profile,
                v,
                self.aligned,
                self.profile.tune.clone(),
            )?);
        }
        let sent = match v.quick.as_mut() {
            Some(q) => {
                q.sent += 1;
                Some(q.enc.send_frame(&frame))
            }
            None => v.enc.as_mut().map(|e| e.send_frame(&frame)),
        };
        if let Some(r) = sent {
            self.sent(r);
        }
        self.drain_encoder(out);
        Ok(())
    }

    /// Counts a frame the encoder took, or refused (odd timestamps after damage: the
    /// frame is dropped).
    fn sent(&mut self, r: Result<(), ff::Error>) {
        match r {
            Ok(()) => self.frames += 1,
            Err(e) => {
                tracing::debug!(error = %e, "the encoder refused a frame");
                self.dropped += 1;
            }
        }
    }

    /// Ends the first GOP's encoder, if one is running: what it holds goes out, and the
    /// profile's encoder goes on from the next frame.
    fn end_quick_start(&mut self, out: &mut Vec<Encoded>) -> Result<(), String> {
        if let Kind::Video { out: v } = &mut self.kind {
            Self::drain_quick(v, self.enc_tb, out, true)?;
            v.quick = None;
        }
        Ok(())
    }

    /// Flushes the quick-start encoder and drops it (see [`QuickStart`]).
    fn finish_quick(&mut self, octx: &mut Output, out: &mut Vec<Encoded>) -> Result<(), String> {
        let Kind::Video { out: v } = &mut self.kind else {
            return Ok(());
        };
        Self::drain_quick(v, self.enc_tb, out, true)?;
        v.quick = None;
        if v.enc.is_none() {
            v.enc = Some(video_encoder(
                &self.profile,
                v,
                self.aligned,
                self.profile.tune.clone(),
            )?);
        }
        if let Some(enc) = &v.enc {
            set_output_parameters(octx, self.ost, enc);
        }
        tracing::debug!("the first GOP's low-delay encoder handed over to the profile's");
        Ok(())
    }

    /// The quick-start encoder's packets (all of them, after an end of stream, with `eof`).
    fn drain_quick(
        v: &mut VideoOut,
        tb: Rational,
        out: &mut Vec<Encoded>,
        eof: bool,
    ) -> Result<(), String> {
        let Some(q) = v.quick.as_mut() else {
            return Ok(());
        };
        if eof {
            q.enc.send_eof().map_err(|e| err("encoder flush", e))?;
        }
        loop {
            let mut packet = Packet::empty();
            if q.enc.receive_packet(&mut packet).is_err() {
                return Ok(());
            }
            out.push(Encoded {
                packet,
                time_base: tb,
            });
        }
    }

    fn drain_encoder(&mut self, out: &mut Vec<Encoded>) {
        if let Kind::Video { out: v } = &mut self.kind {
            if v.quick.is_some() {
                // Not at an end of stream: the packets it has now.
                let _ = Self::drain_quick(v, self.enc_tb, out, false);
                return;
            }
        }
        loop {
            let mut packet = Packet::empty();
            let r = match &mut self.kind {
                Kind::Video { out: v } => match v.enc.as_mut() {
                    Some(e) => e.receive_packet(&mut packet),
                    None => return,
                },
                Kind::Audio { enc, .. } => enc.receive_packet(&mut packet),
            };
            if r.is_err() {
                break;
            }
            out.push(Encoded {
                packet,
                time_base: self.enc_tb,
            });
        }
    }

    pub fn input_time_base(&self) -> Rational {
        self.in_tb
    }

    /// The video output's frame rate, once its first frame decided it.
    pub fn frame_rate(&self) -> Option<f64> {
        match &self.kind {
            Kind::Video { out } if out.size.is_some() => Some(f64::from(out.fps)),
            _ => None,
        }
    }
}

impl VideoOut {
    /// The encoder's time base: one tick a frame (see [`Transcoder::constant_rate`]).
    fn frame_tb(&self) -> Rational {
        Rational::new(self.fps.denominator(), self.fps.numerator())
    }

    /// The profile's GOP in frames (two seconds when it sets none).
    fn gop(&self, p: &Profile) -> u32 {
        p.gop
            .unwrap_or_else(|| (f64::from(self.fps) * 2.0).round().max(1.0) as u32)
    }
}

/// A video encoder of `out`'s size and rate with `p`'s settings and `tune`.
fn video_encoder(
    p: &Profile,
    out: &VideoOut,
    aligned: bool,
    tune: Option<String>,
) -> Result<ff::encoder::video::Encoder, String> {
    let (w, h, sar) = out.size.ok_or("no output size")?;
    let mut enc = codec::context::Context::new_with_codec(out.codec)
        .encoder()
        .video()
        .map_err(|e| err("video encoder", e))?;
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(out.pix);
    enc.set_time_base(out.frame_tb());
    enc.set_frame_rate(Some(out.fps));
    enc.set_aspect_ratio(sar);
    if let Some(b) = bps(&p.video_bitrate) {
        enc.set_bit_rate(b as usize);
    }
    if let Some(m) = bps(&p.maxrate) {
        enc.set_max_bit_rate(m as usize);
    }
    if let Some(s) = bps(&p.bufsize) {
        // SAFETY: plain field write on an encoder context that is not open yet.
        unsafe { (*enc.as_mut_ptr()).rc_buffer_size = s.min(i32::MAX as u64) as i32 };
    }
    // Aligned: the encoder makes keyframes only where it is told to (IDR for x264).
    enc.set_gop(if aligned { 100_000 } else { out.gop(p) });
    let mut extra = vec![("threads", p.threads.unwrap_or(0).to_string())];
    if aligned {
        extra.push(("sc_threshold", "0".into()));
        extra.push(("forced-idr", "1".into()));
    }
    if let Some(preset) = &p.preset {
        extra.push(("preset", preset.clone()));
    }
    if let Some(tune) = tune {
        extra.push(("tune", tune));
    }
    let name = out.codec.name().to_owned();
    enc.open_as_with(out.codec, options(p, &extra))
        .map_err(|e| err(&format!("opening {name}"), e))
}

/// Sets output stream `ost`'s parameters from its opened encoder.
fn set_output_parameters<P: Into<codec::Parameters>>(octx: &mut Output, ost: usize, enc: P) {
    if let Some(mut s) = octx.stream_mut(ost) {
        s.set_parameters(enc);
        // SAFETY: clearing the tag lets the muxer choose the right one for MPEG-TS.
        unsafe { (*s.parameters().as_mut_ptr()).codec_tag = 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes `frames` frames of a generated 25 fps source with `profile` (YAML), one
    /// decoded frame at a time: each packet with the number of frames pushed when it came.
    fn encode(profile: &str, frames: usize) -> Vec<(usize, Packet)> {
        crate::libav::init();
        let p: Profile = serde_yaml::from_str(profile).unwrap();
        let mut ictx =
            super::super::source::open("lavfi:testsrc2=size=320x240:rate=25", &[], || false)
                .unwrap();
        let mut octx = ff::format::output_as("/dev/null", "mpegts").unwrap();
        let (index, mut dec, mut tx) = {
            let ist = ictx.streams().best(ff::media::Type::Video).unwrap();
            let dec = Decoder::new(&ist, 0, false).unwrap();
            let tx = Transcoder::video(&ist, &dec, &p, "libx264", &mut octx).unwrap();
            (ist.index(), dec, tx)
        };
        let mut out = Vec::new();
        let mut pushed = 0;
        for (st, pkt) in ictx.packets() {
            if st.index() != index {
                continue;
            }
            for f in dec.push(Some(&pkt)) {
                if pushed == frames {
                    break;
                }
                pushed += 1;
                for e in tx.push(Some(&f), dec.coded_fps(), &mut octx).unwrap() {
                    out.push((pushed, e.packet));
                }
            }
            if pushed == frames {
                break;
            }
        }
        for e in tx.push(None, dec.coded_fps(), &mut octx).unwrap() {
            out.push((pushed, e.packet));
        }
        out
    }

    #[test]
    fn a_cold_start_encodes_its_first_gop_without_frame_delay_then_hands_over() {
        // Four frame threads even on a small machine: the profile's own encoder holds
        // four frames back.
        let profile = "{video_codec: libx264, preset: ultrafast, gop: 25, threads: 4}";
        let out = encode(profile, 60);
        assert_eq!(out.len(), 60, "every frame encoded once, the last one too");
        // The first GOP: each picture is out as soon as it is in.
        for (n, (at, _)) in out.iter().take(25).enumerate() {
            assert_eq!(*at, n + 1, "packet {n} came after {at} frames");
        }
        // Keyframes where the GOP says, the profile's encoder from the second on: it
        // delays (lookahead, B-frames), so its packets come later than their frames.
        let keys: Vec<i64> = out
            .iter()
            .filter(|(_, p)| p.is_key())
            .map(|(_, p)| p.pts().unwrap())
            .collect();
        let first = out[0].1.pts().unwrap();
        let frame = out[1].1.pts().unwrap() - first;
        assert_eq!(
            keys.iter().map(|k| (k - first) / frame).collect::<Vec<_>>(),
            vec![0, 25, 50],
            "keyframes every 25 frames"
        );
        // From there on the profile's own encoder, with its frame threads' delay.
        assert!(
            out[25].0 >= 25 + 3,
            "frame 25 came after {} frames: not the profile's encoder",
            out[25].0
        );
        // Decoding timestamps keep increasing through the handover and never pass the
        // presentation's.
        for w in out.windows(2) {
            let (a, b) = (&w[0].1, &w[1].1);
            assert!(
                b.dts().unwrap() > a.dts().unwrap(),
                "{:?} then {:?}",
                a.dts(),
                b.dts()
            );
        }
        assert!(out
            .iter()
            .all(|(_, p)| p.dts().unwrap() <= p.pts().unwrap()));
        // And the stream decodes to the same 60 pictures, without a decoding error.
        let codec = ff::decoder::find(ff::codec::Id::H264).unwrap();
        let mut d = codec::context::Context::new_with_codec(codec)
            .decoder()
            .video()
            .unwrap();
        let mut pictures = 0;
        let mut f = unsafe { frame::Frame::empty() };
        for (_, p) in &out {
            d.send_packet(p).expect("decodes");
            while d.receive_frame(&mut f).is_ok() {
                pictures += 1;
            }
        }
        d.send_eof().unwrap();
        while d.receive_frame(&mut f).is_ok() {
            pictures += 1;
        }
        assert_eq!(pictures, 60);
    }

    #[test]
    fn only_delay_free_presets_get_a_quick_start() {
        crate::libav::init();
        let p = |y: &str| -> Profile { serde_yaml::from_str(y).unwrap() };
        let x264 = ff::encoder::find_by_name("libx264").unwrap();
        assert!(quick_start(&x264, &p("{preset: ultrafast}")));
        assert!(quick_start(&x264, &p("{preset: ultrafast, tune: film}")));
        for no in [
            "{preset: ultrafast, tune: zerolatency}",
            "{preset: veryfast}",
            "{}",
            "{preset: ultrafast, encoder_options: {bf: '2'}}",
            "{preset: ultrafast, encoder_options: {x264-params: 'rc-lookahead=20'}}",
        ] {
            assert!(!quick_start(&x264, &p(no)), "{no}");
        }
        let mpeg2 = ff::encoder::find_by_name("mpeg2video").unwrap();
        assert!(!quick_start(&mpeg2, &p("{preset: ultrafast}")));
    }

    /// Decodes a generated 4 s, 25 fps file (`codec`, GOP 25, `bframes` B-frames) packet
    /// by packet: the pictures' timestamps, and the packet count at the first picture.
    fn decode_all(codec: &str, bframes: u32) -> (Vec<i64>, usize, bool) {
        crate::libav::init();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("src.ts");
        let ok = std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=640x360:rate=25",
            ])
            .args([
                "-t",
                "4",
                "-c:v",
                codec,
                "-g",
                "25",
                "-bf",
                &bframes.to_string(),
            ])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ffmpeg made the source");
        let mut ictx = super::super::source::open(path.to_str().unwrap(), &[], || false).unwrap();
        let ist = ictx.streams().best(ff::media::Type::Video).unwrap();
        let index = ist.index();
        let mut dec = Decoder::new(&ist, 0, false).unwrap();
        assert!(!dec.frame_threaded(), "starts with the quick decoder");
        let (mut pts, mut packets, mut first) = (Vec::new(), 0, 0);
        for (st, pkt) in ictx.packets() {
            if st.index() != index {
                continue;
            }
            packets += 1;
            let got = dec.push(Some(&pkt));
            if first == 0 && !got.is_empty() {
                first = packets;
            }
            pts.extend(got.iter().map(|f| f.pts().unwrap()));
        }
        pts.extend(dec.push(None).iter().map(|f| f.pts().unwrap()));
        (pts, first, dec.frame_threaded())
    }

    #[test]
    fn a_video_decoder_gives_its_first_picture_at_once_and_hands_over_without_a_gap() {
        // MPEG-2 with B-frames has open GOPs: the frame-threaded decoder's first
        // pictures after its keyframe reference the GOP before, which it never saw.
        for (codec, bframes) in [("libx264", 0), ("libx264", 2), ("mpeg2video", 2)] {
            let (pts, first, handed_over) = decode_all(codec, bframes);
            assert!(
                handed_over,
                "{codec} -bf {bframes}: the frame-threaded decoder took over"
            );
            assert_eq!(
                pts.len(),
                100,
                "{codec} -bf {bframes}: every picture once: {pts:?}"
            );
            let step = pts[1] - pts[0];
            assert!(
                step > 0 && pts.windows(2).all(|w| w[1] - w[0] == step),
                "{codec} -bf {bframes}: in order, none missing or repeated: {pts:?}"
            );
            if bframes == 0 {
                // Frame threads would hold it until a packet per extra thread had come.
                assert_eq!(
                    first, 1,
                    "{codec}: the first packet gives the first picture"
                );
            }
        }
    }
}
