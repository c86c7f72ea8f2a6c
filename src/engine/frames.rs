//! What the filters are built for: the properties of decoded frames (a change rebuilds the
//! graph) and the output size a profile's `resolution` gives for a source. Pure but for
//! reading a frame's fields.

use crate::config::units::Resolution;
use ff::{frame, ChannelLayout, Rational};
use ffmpeg_next as ff;

/// The properties of decoded frames a filter graph is built for; a frame with others
/// rebuilds the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameProps {
    Video {
        width: i32,
        height: i32,
        format: i32,
        sar: (i32, i32),
    },
    Audio {
        rate: i32,
        format: i32,
        layout: u64,
        channels: i32,
    },
}

impl FrameProps {
    /// The properties of a decoded frame; None for a frame no filter can take.
    pub fn of(f: &frame::Frame, video: bool) -> Option<FrameProps> {
        // SAFETY: reading plain fields of a frame the decoder filled.
        let p = unsafe { &*f.as_ptr() };
        if video {
            (p.width > 0 && p.height > 0 && p.format >= 0).then_some(FrameProps::Video {
                width: p.width,
                height: p.height,
                format: p.format,
                sar: (
                    p.sample_aspect_ratio.num.max(1),
                    p.sample_aspect_ratio.den.max(1),
                ),
            })
        } else {
            let channels = p.ch_layout.nb_channels;
            let native = p.ch_layout.order == ff::ffi::AVChannelOrder::AV_CHANNEL_ORDER_NATIVE;
            // SAFETY: `u.mask` is the member in use for the native order.
            let mask = if native {
                unsafe { p.ch_layout.u.mask }
            } else {
                0
            };
            let layout = if mask != 0 {
                mask
            } else {
                ChannelLayout::default(channels).bits()
            };
            (p.sample_rate > 0 && p.format >= 0 && channels > 0).then_some(FrameProps::Audio {
                rate: p.sample_rate,
                format: p.format,
                layout,
                channels,
            })
        }
    }

    /// The buffer source's arguments for frames with these properties.
    pub fn source_args(&self, tb: Rational) -> String {
        match *self {
            FrameProps::Video {
                width,
                height,
                format,
                sar,
            } => format!(
                "video_size={width}x{height}:pix_fmt={format}:time_base={}/{}:pixel_aspect={}/{}",
                tb.numerator(),
                tb.denominator(),
                sar.0,
                sar.1
            ),
            FrameProps::Audio {
                rate,
                format,
                layout,
                ..
            } => format!(
                "time_base={}/{}:sample_rate={rate}:sample_fmt={format}:channel_layout=0x{layout:x}",
                tb.numerator(),
                tb.denominator()
            ),
        }
    }
}

/// Output size for `resolution` given the source size and sample aspect: a missing side
/// keeps the displayed aspect ratio (so anamorphic 576i scales to its 16:9 or 4:3 shape).
pub fn target_size(res: Option<&Resolution>, src: (u32, u32), sar: Rational) -> (u32, u32) {
    let even = |v: f64| ((v / 2.0).round() as u32).max(1) * 2;
    let sar = if sar.numerator() > 0 && sar.denominator() > 0 {
        f64::from(sar)
    } else {
        1.0
    };
    let display_w = f64::from(src.0) * sar;
    match res {
        Some(r) => match (r.width, r.height) {
            (Some(w), Some(h)) => (w, h),
            (None, Some(h)) => (even(display_w * f64::from(h) / f64::from(src.1.max(1))), h),
            (Some(w), None) => (
                w,
                even(f64::from(src.1) * f64::from(w) / display_w.max(1.0)),
            ),
            (None, None) => src,
        },
        None => (src.0 & !1, src.1 & !1),
    }
}

/// Which of `candidates` (an output's index and picture size) a picture of size `want`
/// is best scaled from, rather than from the source of size `source`: the smallest that
/// is at least as large on both sides and itself smaller than the source (scaling from
/// it starts from fewer pixels); None when none is.
pub fn scale_from(
    want: (u32, u32),
    source: (u32, u32),
    candidates: &[(usize, (u32, u32))],
) -> Option<usize> {
    let area = |s: (u32, u32)| u64::from(s.0) * u64::from(s.1);
    candidates
        .iter()
        .filter(|(_, s)| {
            s.0 >= want.0
                && s.1 >= want.1
                && s.0 <= source.0
                && s.1 <= source.1
                && area(*s) < area(source)
        })
        .min_by_key(|(_, s)| area(*s))
        .map(|(i, _)| *i)
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
        let square = Rational::new(1, 1);
        assert_eq!(
            target_size(res("1280x720"), (1920, 1080), square),
            (1280, 720)
        );
        assert_eq!(target_size(res("x720"), (1920, 1080), square), (1280, 720));
        assert_eq!(target_size(res("x480"), (1920, 1080), square), (854, 480));
        assert_eq!(target_size(res("640x"), (1920, 800), square), (640, 266));
        assert_eq!(target_size(None, (721, 481), square), (720, 480));
        // Anamorphic PAL 16:9 (720x576, SAR 64:45) keeps its displayed shape.
        assert_eq!(
            target_size(res("x576"), (720, 576), Rational::new(64, 45)),
            (1024, 576)
        );
        assert_eq!(
            target_size(res("x720"), (720, 576), Rational::new(16, 15)),
            (960, 720)
        );
    }

    #[test]
    fn a_picture_is_scaled_from_the_smallest_larger_output_below_the_source() {
        let src = (1920, 1080);
        let outs = [(0, (1280, 720)), (1, (960, 540)), (2, (2560, 1440))];
        assert_eq!(scale_from((640, 360), src, &outs), Some(1));
        assert_eq!(scale_from((960, 540), src, &outs), Some(1), "the same size");
        assert_eq!(scale_from((1024, 576), src, &outs), Some(0));
        // Larger than every output below the source, or an upscale only: from the source.
        assert_eq!(scale_from((1600, 900), src, &outs), None);
        assert_eq!(scale_from((640, 360), src, &[(2, (2560, 1440))]), None);
        // An output of the source's own size saves nothing.
        assert_eq!(scale_from((640, 360), src, &[(3, (1920, 1080))]), None);
        // Both sides must be at least as large (another shape).
        assert_eq!(scale_from((640, 480), src, &[(4, (1280, 400))]), None);
        assert_eq!(scale_from((640, 360), src, &[]), None);
    }
}
