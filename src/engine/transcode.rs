//! Decode -> filter (scale/fps/format or resample) -> encode, for one stream.
//!
//! Scaling and resampling go through a libavfilter graph built on the pipeline thread, so
//! frame sizing for AAC (1024-sample frames), pixel format conversion and frame-rate
//! conversion are libav's, and no non-`Send` swscale context crosses threads.

use crate::config::units::{Bitrate, Resolution, Value};
use crate::config::Profile;
use ff::format::context::Output;
use ff::{codec, filter, frame, ChannelLayout, Dictionary, Packet, Rational, Rescale};
use ffmpeg_next as ff;

/// Encoded packets come out with timestamps in `time_base`.
pub struct Encoded {
    pub packet: Packet,
    pub time_base: Rational,
}

enum Kind {
    Video {
        dec: ff::decoder::Video,
        enc: ff::encoder::video::Encoder,
    },
    Audio {
        dec: ff::decoder::Audio,
        enc: ff::encoder::audio::Encoder,
    },
}

pub struct Transcoder {
    kind: Kind,
    graph: filter::Graph,
    sink_tb: Rational,
    enc_tb: Rational,
    in_tb: Rational,
    pub frames: u64,
}

fn err(what: &str, e: ff::Error) -> String {
    format!("{what}: {e}")
}

/// Adds the graph's source ("in", with `args`) and sink ("out") filters.
fn endpoints(
    graph: &mut filter::Graph,
    source: &str,
    sink: &str,
    args: &str,
) -> Result<(), String> {
    let find =
        |name: &str| filter::find(name).ok_or_else(|| format!("this libav has no {name} filter"));
    graph
        .add(&find(source)?, "in", args)
        .map_err(|e| err(&format!("{source} filter"), e))?;
    graph
        .add(&find(sink)?, "out", "")
        .map_err(|e| err(&format!("{sink} filter"), e))?;
    Ok(())
}

fn sink_time_base(graph: &mut filter::Graph) -> Rational {
    let ctx = graph.get("out").expect("sink added");
    // SAFETY: `ctx` is the validated buffersink of `graph`.
    unsafe { Rational::from(ff::ffi::av_buffersink_get_time_base(ctx.as_ptr())) }
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

/// Output size for `resolution` given the source size; a missing side keeps the aspect.
pub fn target_size(res: Option<&Resolution>, src: (u32, u32)) -> (u32, u32) {
    let even = |v: f64| ((v / 2.0).round() as u32).max(1) * 2;
    match res {
        Some(r) => match (r.width, r.height) {
            (Some(w), Some(h)) => (w, h),
            (None, Some(h)) => (
                even(f64::from(src.0) * f64::from(h) / f64::from(src.1.max(1))),
                h,
            ),
            (Some(w), None) => (
                w,
                even(f64::from(src.1) * f64::from(w) / f64::from(src.0.max(1))),
            ),
            (None, None) => src,
        },
        None => (src.0 & !1, src.1 & !1),
    }
}

/// A bitrate field's value in bits per second.
fn bps(v: &Option<Value<Bitrate>>) -> Option<u64> {
    v.as_ref().and_then(Value::get).map(|b| b.bps())
}

/// The profile's video rate control: bitrate, maximum and buffer.
fn rate_control(enc: &mut ff::encoder::video::Video, p: &Profile) {
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
}

/// The video filter graph: the decoder's frames scaled to `size`, converted to `pix` and
/// `fps`; also the time base of its output.
fn video_graph(
    dec: &ff::decoder::Video,
    in_tb: Rational,
    (w, h): (u32, u32),
    pix: ff::format::Pixel,
    fps: Rational,
) -> Result<(filter::Graph, Rational), String> {
    let mut graph = filter::Graph::new();
    let src_fmt = dec.format();
    let sar = dec.aspect_ratio();
    let args = format!(
        "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
        dec.width(),
        dec.height(),
        ff::ffi::AVPixelFormat::from(src_fmt) as i32,
        in_tb.numerator(),
        in_tb.denominator(),
        sar.numerator().max(1),
        sar.denominator().max(1),
    );
    endpoints(&mut graph, "buffer", "buffersink", &args)?;
    let pix_name = pix.descriptor().map(|d| d.name()).unwrap_or("yuv420p");
    let spec = format!(
        "scale={w}:{h},format={pix_name},fps={}/{}",
        fps.numerator(),
        fps.denominator()
    );
    graph
        .output("in", 0)
        .and_then(|g| g.input("out", 0))
        .and_then(|g| g.parse(&spec))
        .map_err(|e| err("video filter graph", e))?;
    graph.validate().map_err(|e| err("video filter graph", e))?;
    let sink_tb = sink_time_base(&mut graph);
    Ok((graph, sink_tb))
}

impl Transcoder {
    /// A video transcoder for input stream `ist`, adding its output stream to `octx`.
    pub fn video(
        ist: &ff::format::stream::Stream,
        p: &Profile,
        name: &str,
        octx: &mut Output,
    ) -> Result<Transcoder, String> {
        let in_tb = ist.time_base();
        let mut dec = codec::context::Context::from_parameters(ist.parameters())
            .map(|mut c| {
                // Decode on every core, as the ffmpeg CLI does (a 4K HEVC source needs it).
                // SAFETY: plain field writes on a decoder context that is not open yet.
                unsafe {
                    (*c.as_mut_ptr()).thread_count = 0;
                    (*c.as_mut_ptr()).thread_type =
                        ff::ffi::FF_THREAD_FRAME | ff::ffi::FF_THREAD_SLICE;
                }
                c
            })
            .and_then(|c| c.decoder().video())
            .map_err(|e| err("video decoder", e))?;
        dec.set_packet_time_base(in_tb);
        let codec =
            ff::encoder::find_by_name(name).ok_or_else(|| format!("no video encoder {name:?}"))?;
        let (w, h) = target_size(
            p.resolution.as_ref().and_then(Value::get),
            (dec.width(), dec.height()),
        );
        let fps = match p.framerate.as_ref().and_then(Value::get) {
            Some(f) => Rational::new(f.num, f.den),
            None => {
                let r = ist.avg_frame_rate();
                if r.numerator() > 0 && r.denominator() > 0 && f64::from(r) <= 240.0 {
                    r
                } else {
                    Rational::new(25, 1)
                }
            }
        };
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

        let (graph, sink_tb) = video_graph(&dec, in_tb, (w, h), pix, fps)?;

        let mut ost = octx
            .add_stream(codec)
            .map_err(|e| err("output stream", e))?;
        let mut enc = codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| err("video encoder", e))?;
        enc.set_width(w);
        enc.set_height(h);
        enc.set_format(pix);
        enc.set_time_base(sink_tb);
        enc.set_frame_rate(Some(fps));
        enc.set_aspect_ratio(Rational::new(1, 1));
        rate_control(&mut enc, p);
        let gop = p
            .gop
            .unwrap_or_else(|| (f64::from(fps) * 2.0).round().max(1.0) as u32);
        enc.set_gop(gop);
        let mut extra = vec![("threads", p.threads.unwrap_or(0).to_string())];
        if let Some(preset) = &p.preset {
            extra.push(("preset", preset.clone()));
        }
        if let Some(tune) = &p.tune {
            extra.push(("tune", tune.clone()));
        }
        let enc = enc
            .open_as_with(codec, options(p, &extra))
            .map_err(|e| err(&format!("opening {name}"), e))?;
        ost.set_parameters(&enc);
        // SAFETY: clearing the tag lets the muxer choose the right one for MPEG-TS.
        unsafe { (*ost.parameters().as_mut_ptr()).codec_tag = 0 };
        Ok(Transcoder {
            kind: Kind::Video { dec, enc },
            graph,
            sink_tb,
            enc_tb: sink_tb,
            in_tb,
            frames: 0,
        })
    }

    /// An audio transcoder for input stream `ist`, adding its output stream to `octx`.
    pub fn audio(
        ist: &ff::format::stream::Stream,
        p: &Profile,
        name: &str,
        octx: &mut Output,
    ) -> Result<Transcoder, String> {
        let in_tb = ist.time_base();
        let mut dec = codec::context::Context::from_parameters(ist.parameters())
            .and_then(|c| c.decoder().audio())
            .map_err(|e| err("audio decoder", e))?;
        dec.set_packet_time_base(in_tb);
        let codec =
            ff::encoder::find_by_name(name).ok_or_else(|| format!("no audio encoder {name:?}"))?;
        let acodec = codec.audio().map_err(|e| err("audio encoder", e))?;
        let want_rate = p.audio_sample_rate.unwrap_or(dec.rate()).max(8000) as i32;
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
            .unwrap_or_else(|| i32::from(dec.channels()).clamp(1, 2));
        let layout = ChannelLayout::default(channels);
        let sample_fmt = acodec
            .formats()
            .and_then(|mut f| f.next())
            .unwrap_or(ff::format::Sample::F32(ff::format::sample::Type::Planar));

        if dec.format() == ff::format::Sample::None {
            return Err("audio decoder: the source's sample format is unknown".into());
        }
        let in_layout = if dec.channel_layout().bits() == 0 {
            ChannelLayout::default(i32::from(dec.channels()))
        } else {
            dec.channel_layout()
        };
        let mut graph = filter::Graph::new();
        let args = format!(
            "time_base={}/{}:sample_rate={}:sample_fmt={}:channel_layout=0x{:x}",
            in_tb.numerator(),
            in_tb.denominator(),
            dec.rate(),
            dec.format().name(),
            in_layout.bits()
        );
        endpoints(&mut graph, "abuffer", "abuffersink", &args)?;
        {
            let mut out = graph.get("out").expect("sink added");
            out.set_sample_format(sample_fmt);
            out.set_channel_layout(layout);
            out.set_sample_rate(rate as u32);
        }
        graph
            .output("in", 0)
            .and_then(|g| g.input("out", 0))
            .and_then(|g| g.parse("aresample=async=1000"))
            .map_err(|e| err("audio filter graph", e))?;
        graph.validate().map_err(|e| err("audio filter graph", e))?;

        let mut ost = octx
            .add_stream(codec)
            .map_err(|e| err("output stream", e))?;
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
        if !codec
            .capabilities()
            .contains(codec::capabilities::Capabilities::VARIABLE_FRAME_SIZE)
            && enc.frame_size() > 0
        {
            graph
                .get("out")
                .expect("sink added")
                .sink()
                .set_frame_size(enc.frame_size());
        }
        let sink_tb = sink_time_base(&mut graph);
        ost.set_parameters(&enc);
        // SAFETY: as for video.
        unsafe { (*ost.parameters().as_mut_ptr()).codec_tag = 0 };
        Ok(Transcoder {
            kind: Kind::Audio { dec, enc },
            graph,
            sink_tb,
            enc_tb,
            in_tb,
            frames: 0,
        })
    }

    /// Feeds one input packet (or None at end of input) and returns the encoded packets.
    pub fn push(&mut self, packet: Option<&Packet>) -> Result<Vec<Encoded>, String> {
        let mut out = Vec::new();
        // Decode.
        let sent = match (&mut self.kind, packet) {
            (Kind::Video { dec, .. }, Some(p)) => dec.send_packet(p),
            (Kind::Video { dec, .. }, None) => dec.send_eof(),
            (Kind::Audio { dec, .. }, Some(p)) => dec.send_packet(p),
            (Kind::Audio { dec, .. }, None) => dec.send_eof(),
        };
        if let Err(e) = sent {
            // A corrupt packet is not fatal: skip it, as the ffmpeg CLI does.
            tracing::debug!(error = %e, "decoder refused a packet");
        }
        // SAFETY: allocates an empty AVFrame (av_frame_alloc); no data is read from it.
        let mut decoded = unsafe { frame::Frame::empty() };
        loop {
            let r = match &mut self.kind {
                Kind::Video { dec, .. } => dec.receive_frame(&mut decoded),
                Kind::Audio { dec, .. } => dec.receive_frame(&mut decoded),
            };
            if r.is_err() {
                break;
            }
            // SAFETY: reading the decoder-set best-effort timestamp of a valid frame.
            let ts = unsafe { (*decoded.as_ptr()).best_effort_timestamp };
            decoded.set_pts((ts != ff::ffi::AV_NOPTS_VALUE).then_some(ts));
            self.graph
                .get("in")
                .expect("source added")
                .source()
                .add(&decoded)
                .map_err(|e| err("filter input", e))?;
            self.drain_filter(&mut out)?;
        }
        if packet.is_none() {
            let _ = self.graph.get("in").expect("source added").source().flush();
            self.drain_filter(&mut out)?;
            match &mut self.kind {
                Kind::Video { enc, .. } => enc.send_eof().map_err(|e| err("encoder flush", e))?,
                Kind::Audio { enc, .. } => enc.send_eof().map_err(|e| err("encoder flush", e))?,
            }
            self.drain_encoder(&mut out);
        }
        Ok(out)
    }

    fn drain_filter(&mut self, out: &mut Vec<Encoded>) -> Result<(), String> {
        // SAFETY: as above.
        let mut filtered = unsafe { frame::Frame::empty() };
        while self
            .graph
            .get("out")
            .expect("sink added")
            .sink()
            .frame(&mut filtered)
            .is_ok()
        {
            if self.sink_tb != self.enc_tb {
                let pts = filtered.pts().map(|p| p.rescale(self.sink_tb, self.enc_tb));
                filtered.set_pts(pts);
            }
            let sent = match &mut self.kind {
                Kind::Video { enc, .. } => {
                    // SAFETY: clearing the picture type so the encoder decides keyframes.
                    unsafe {
                        (*filtered.as_mut_ptr()).pict_type =
                            ff::ffi::AVPictureType::AV_PICTURE_TYPE_NONE
                    };
                    enc.send_frame(&filtered)
                }
                Kind::Audio { enc, .. } => enc.send_frame(&filtered),
            };
            sent.map_err(|e| err("encoder", e))?;
            self.frames += 1;
            self.drain_encoder(out);
        }
        Ok(())
    }

    fn drain_encoder(&mut self, out: &mut Vec<Encoded>) {
        loop {
            let mut packet = Packet::empty();
            let r = match &mut self.kind {
                Kind::Video { enc, .. } => enc.receive_packet(&mut packet),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(s: &str) -> Option<&'static Resolution> {
        Some(Box::leak(Box::new(
            crate::config::units::parse_resolution(s).unwrap(),
        )))
    }

    #[test]
    fn target_sizes_keep_aspect_and_evenness() {
        assert_eq!(target_size(res("1280x720"), (1920, 1080)), (1280, 720));
        assert_eq!(target_size(res("x720"), (1920, 1080)), (1280, 720));
        assert_eq!(target_size(res("x480"), (1920, 1080)), (854, 480));
        assert_eq!(target_size(res("640x"), (1920, 800)), (640, 266));
        assert_eq!(target_size(None, (721, 481)), (720, 480));
    }
}
