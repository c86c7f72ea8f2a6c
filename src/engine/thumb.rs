//! Thumbnails of the live picture, made in-process: the channel's latest keyframe (PAT +
//! PMT + the keyframe's TS packets, straight from the hub) is demuxed from memory, decoded,
//! scaled and encoded as a JPEG with libav's MJPEG encoder. No process, no file, no work at
//! all for channels nobody looks at.

use bytes::Bytes;
use ffmpeg_next as ff;
use std::io::Cursor;

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("thumbnail: {what}: {e}")
}

/// A JPEG of the first picture in `ts` (MPEG-TS starting with PAT + PMT + a keyframe),
/// `width` pixels wide (even, at most the source width), height keeping the aspect ratio.
pub fn jpeg(ts: Bytes, width: u32) -> Result<Vec<u8>, String> {
    crate::libav::init();
    let io = ff::format::context::StreamIo::from_read(Cursor::new(ts))
        .map_err(|e| err("memory input", e))?;
    let mut opts = ff::Dictionary::new();
    opts.set("probesize", "2000000");
    let mut ictx = ff::format::input_from_stream(io, Some("live.ts"), Some(opts))
        .map_err(|e| err("demuxer", e))?;
    let (index, params) = {
        let ist = ictx
            .streams()
            .best(ff::media::Type::Video)
            .ok_or_else(|| "thumbnail: the channel has no video".to_owned())?;
        (ist.index(), ist.parameters())
    };
    let mut dec = ff::codec::context::Context::from_parameters(params)
        .and_then(|c| c.decoder().video())
        .map_err(|e| err("decoder", e))?;
    let mut frame = ff::frame::Video::empty();
    let mut got = false;
    for (stream, packet) in ictx.packets() {
        if stream.index() != index {
            continue;
        }
        if dec.send_packet(&packet).is_err() {
            continue;
        }
        if dec.receive_frame(&mut frame).is_ok() {
            got = true;
            break;
        }
    }
    if !got {
        let _ = dec.send_eof();
        got = dec.receive_frame(&mut frame).is_ok();
    }
    if !got {
        return Err("thumbnail: no picture could be decoded from the latest keyframe".into());
    }
    let (sw, sh) = (frame.width().max(2), frame.height().max(2));
    // Square pixels on screen: widen by the sample aspect ratio (an implausible one, as a
    // broken source may report, is ignored), and never taller than 4:1.
    let sar = frame.aspect_ratio();
    let sar = if sar.numerator() > 0 && sar.denominator() > 0 {
        f64::from(sar)
    } else {
        1.0
    };
    let display_w = f64::from(sw)
        * if (0.25..=4.0).contains(&sar) {
            sar
        } else {
            1.0
        };
    let w = (width.min(sw.max(2)) & !1).max(2);
    let h = (((f64::from(w) * f64::from(sh) / display_w) / 2.0).round() as u32 * 2).clamp(2, 4 * w);
    let mut scaler = ff::software::scaling::Context::get(
        frame.format(),
        sw,
        sh,
        ff::format::Pixel::YUVJ420P,
        w,
        h,
        ff::software::scaling::Flags::BILINEAR,
    )
    .map_err(|e| err("scaler", e))?;
    let mut small = ff::frame::Video::empty();
    scaler
        .run(&frame, &mut small)
        .map_err(|e| err("scaling", e))?;
    let codec = ff::encoder::find(ff::codec::Id::MJPEG)
        .ok_or_else(|| "thumbnail: libav has no MJPEG encoder".to_owned())?;
    let mut enc = ff::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| err("encoder", e))?;
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(ff::format::Pixel::YUVJ420P);
    enc.set_time_base(ff::Rational::new(1, 25));
    let mut opts = ff::Dictionary::new();
    // Quality scale 2..31 (lower is better); 4 is a crisp preview of a few tens of KiB.
    opts.set("qmin", "4");
    opts.set("qmax", "4");
    let mut enc = enc
        .open_as_with(codec, opts)
        .map_err(|e| err("encoder", e))?;
    small.set_pts(Some(0));
    enc.send_frame(&small).map_err(|e| err("encoding", e))?;
    enc.send_eof().map_err(|e| err("encoding", e))?;
    let mut packet = ff::Packet::empty();
    enc.receive_packet(&mut packet)
        .map_err(|e| err("encoding", e))?;
    packet
        .data()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "thumbnail: the encoder gave no data".to_owned())
}
