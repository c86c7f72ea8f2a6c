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
    /// Output size and aspect, from the first frame.
    size: Option<(u32, u32, Rational)>,
    /// The graph deinterlaces (decided by the profile, the field order and the frames).
    deinterlacing: bool,
    /// The source declares interlaced fields (its field order).
    field_coded: bool,
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
}

enum Decoding {
    Video(ff::decoder::Video),
    Audio(ff::decoder::Audio),
}

/// One input stream's decoder, shared by every output that encodes that stream: a
/// channel with several output profiles decodes its source once.
pub struct Decoder {
    dec: Decoding,
    /// Opened mid-stream: video packets are skipped until a keyframe (what comes before
    /// cannot be decoded, and would only log errors).
    wait_key: bool,
    /// Frames decoded so far.
    pub frames: u64,
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
        let d = decoder(ist, channel)?;
        let dec = if ist.parameters().medium() == ff::media::Type::Video {
            Decoding::Video(d.video().map_err(|e| err("video decoder", e))?)
        } else {
            Decoding::Audio(d.audio().map_err(|e| err("audio decoder", e))?)
        };
        Ok(Decoder {
            wait_key: mid_stream && matches!(dec, Decoding::Video(_)),
            dec,
            frames: 0,
        })
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
        }
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
        let mut out = Vec::new();
        loop {
            // SAFETY: allocates an empty AVFrame (av_frame_alloc); no data is read from it.
            let mut decoded = unsafe { frame::Frame::empty() };
            let r = match &mut self.dec {
                Decoding::Video(d) => d.receive_frame(&mut decoded),
                Decoding::Audio(d) => d.receive_frame(&mut decoded),
            };
            match r {
                Ok(()) => {
                    // SAFETY: reading a plain field of a decoded frame.
                    let ts = unsafe { (*decoded.as_ptr()).best_effort_timestamp };
                    decoded.set_pts((ts != ff::ffi::AV_NOPTS_VALUE).then_some(ts));
                    self.frames += 1;
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

    fn size(&self) -> (u32, u32) {
        match &self.dec {
            Decoding::Video(d) => (d.width(), d.height()),
            Decoding::Audio(_) => (0, 0),
        }
    }

    fn audio_format(&self) -> (u32, u16) {
        match &self.dec {
            Decoding::Audio(d) => (d.rate(), d.channels()),
            Decoding::Video(_) => (0, 0),
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

/// A decoder for input stream `ist`, on every core as the ffmpeg CLI does (a 4K HEVC
/// source needs it), its log lines marked as channel `channel`'s.
fn decoder(
    ist: &ff::format::stream::Stream,
    channel: u32,
) -> Result<codec::decoder::Decoder, String> {
    let mut c = codec::context::Context::from_parameters(ist.parameters())
        .map_err(|e| err("decoder", e))?;
    // SAFETY: plain field writes on a decoder context that is not open yet.
    unsafe {
        let p = c.as_mut_ptr();
        (*p).thread_count = 0;
        (*p).thread_type = ff::ffi::FF_THREAD_FRAME | ff::ffi::FF_THREAD_SLICE;
        (*p).opaque = super::avlog::tag(channel);
    }
    let mut dec = c.decoder();
    dec.set_packet_time_base(ist.time_base());
    Ok(dec)
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
        })
    }

    /// An audio transcoder for input stream `ist` (decoded by `dec`), adding its output
    /// stream to `octx`. The encoder opens now (the muxer needs its parameters); its rate
    /// and channels come from the profile, else from the source (at most stereo).
    pub fn audio(
        ist: &ff::format::stream::Stream,
        dec: &Decoder,
        p: &Profile,
        name: &str,
        octx: &mut Output,
    ) -> Result<Transcoder, String> {
        let (dec_rate, dec_channels) = dec.audio_format();
        let codec =
            ff::encoder::find_by_name(name).ok_or_else(|| format!("no audio encoder {name:?}"))?;
        let acodec = codec.audio().map_err(|e| err("audio encoder", e))?;
        let src_rate = if dec_rate > 0 { dec_rate } else { 48_000 };
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
        let src_channels = if dec_channels > 0 { dec_channels } else { 2 };
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
                spec.push_str(&format!(
                    "scale={w}:{h},setsar={}/{},format={pix},fps={}/{}",
                    out_sar.numerator(),
                    out_sar.denominator(),
                    out.fps.numerator(),
                    out.fps.denominator()
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

    /// Opens the video encoder for the first filtered frame's size.
    fn open_video_encoder(&mut self, octx: &mut Output) -> Result<(), String> {
        let p = &self.profile;
        let Kind::Video { out, .. } = &mut self.kind else {
            return Ok(());
        };
        if out.enc.is_some() {
            return Ok(());
        }
        let (w, h, sar) = out.size.ok_or("no output size")?;
        let mut enc = codec::context::Context::new_with_codec(out.codec)
            .encoder()
            .video()
            .map_err(|e| err("video encoder", e))?;
        enc.set_width(w);
        enc.set_height(h);
        enc.set_format(out.pix);
        enc.set_time_base(self.sink_tb);
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
        let gop = p
            .gop
            .unwrap_or_else(|| (f64::from(out.fps) * 2.0).round().max(1.0) as u32);
        // Aligned: the encoder makes keyframes only where it is told to (IDR for x264).
        enc.set_gop(if self.aligned { 100_000 } else { gop });
        let mut extra = vec![("threads", p.threads.unwrap_or(0).to_string())];
        if self.aligned {
            extra.push(("sc_threshold", "0".into()));
            extra.push(("forced-idr", "1".into()));
        }
        if let Some(preset) = &p.preset {
            extra.push(("preset", preset.clone()));
        }
        if let Some(tune) = &p.tune {
            extra.push(("tune", tune.clone()));
        }
        let name = out.codec.name().to_owned();
        let enc = enc
            .open_as_with(out.codec, options(p, &extra))
            .map_err(|e| err(&format!("opening {name}"), e))?;
        set_output_parameters(octx, self.ost, &enc);
        self.enc_tb = self.sink_tb;
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
                self.flush_graph(octx, &mut out)?;
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
        if changed {
            if let Some((_, old)) = &self.graph {
                tracing::info!(from = ?old, to = ?props, "the source's frames changed; rebuilding the filters");
                self.flush_graph(octx, out)?;
            }
            self.build_graph(props, interlaced)?;
        }
        let Some((graph, _)) = self.graph.as_mut() else {
            return Ok(());
        };
        if let Err(e) = graph.get("in").expect("source added").source().add(decoded) {
            // Not fatal: drop the frame (a damaged frame with odd properties).
            tracing::debug!(error = %e, "the filters refused a frame");
            self.dropped += 1;
            return Ok(());
        }
        self.drain_filter(octx, out)
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
            if self.sink_tb != self.enc_tb {
                let pts = filtered.pts().map(|p| p.rescale(self.sink_tb, self.enc_tb));
                filtered.set_pts(pts);
            }
            let sent = match &mut self.kind {
                Kind::Video { out: v } => {
                    // SAFETY: plain field reads and a write on the filtered frame: the
                    // encoder decides keyframes, or (aligned) takes the source's.
                    unsafe {
                        let f = filtered.as_mut_ptr();
                        let key = (*f).key_frame != 0
                            || (*f).pict_type == ff::ffi::AVPictureType::AV_PICTURE_TYPE_I;
                        let second = filtered
                            .pts()
                            .map(|p| (p as f64 * f64::from(self.sink_tb)).floor() as i64);
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
                    }
                    v.enc.as_mut().map(|e| e.send_frame(&filtered))
                }
                Kind::Audio { enc, .. } => Some(enc.send_frame(&filtered)),
            };
            match sent {
                Some(Ok(())) => self.frames += 1,
                // The encoder refused one frame (odd timestamps after damage): drop it.
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "the encoder refused a frame");
                    self.dropped += 1;
                }
                None => {}
            }
            self.drain_encoder(out);
        }
    }

    fn drain_encoder(&mut self, out: &mut Vec<Encoded>) {
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

/// Sets output stream `ost`'s parameters from its opened encoder.
fn set_output_parameters<P: Into<codec::Parameters>>(octx: &mut Output, ost: usize, enc: P) {
    if let Some(mut s) = octx.stream_mut(ost) {
        s.set_parameters(enc);
        // SAFETY: clearing the tag lets the muxer choose the right one for MPEG-TS.
        unsafe { (*s.parameters().as_mut_ptr()).codec_tag = 0 };
    }
}
