//! What Amps asks of the linked libav outside the media pipelines: one-time initialisation,
//! the library versions (for `--version`, logs and metrics) and the encoder catalogue used to
//! validate profiles at load time.

use crate::config::validate::{EncoderCatalog, Media};
use std::sync::Once;

static INIT: Once = Once::new();

/// Initialises libav once per process and quiets its logging to errors only.
pub fn init() {
    INIT.call_once(|| {
        // `init` only fails on ancient FFmpeg builds without device registration.
        if let Err(e) = ffmpeg_next::init() {
            tracing::warn!(error = %e, "libav initialisation reported an error");
        }
        crate::engine::avlog::install();
    });
}

/// The libav versions found by `build.rs` at build time (pkg-config), e.g.
/// `libavcodec 59.37.100, libavformat 59.27.100, ...`.
pub const BUILT_AGAINST: &str = env!("AMPS_LIBAV_VERSIONS");

fn split(v: u32) -> String {
    format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// The versions of the libav libraries loaded at run time.
pub fn runtime_versions() -> String {
    format!(
        "libavcodec {}, libavformat {}, libavutil {}, libswscale {}, libswresample {}",
        split(ffmpeg_next::codec::version()),
        split(ffmpeg_next::format::version()),
        split(ffmpeg_next::util::version()),
        split(ffmpeg_next::software::scaling::version()),
        split(ffmpeg_next::software::resampling::version()),
    )
}

/// The encoder catalogue of the linked libav.
#[derive(Debug, Clone, Copy)]
pub struct Catalog;

impl Catalog {
    pub fn new() -> Self {
        init();
        Catalog
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::new()
    }
}

impl EncoderCatalog for Catalog {
    fn has_encoder(&self, media: Media, name: &str) -> bool {
        let want = match media {
            Media::Video => ffmpeg_next::media::Type::Video,
            Media::Audio => ffmpeg_next::media::Type::Audio,
        };
        ffmpeg_next::encoder::find_by_name(name).is_some_and(|c| c.medium() == want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_knows_the_debian_encoders() {
        let c = Catalog::new();
        assert!(c.has_encoder(Media::Video, "libx264"));
        assert!(c.has_encoder(Media::Audio, "aac"));
        assert!(!c.has_encoder(Media::Audio, "libx264"));
        assert!(!c.has_encoder(Media::Video, "no-such-encoder"));
    }

    #[test]
    fn runtime_versions_match_build_time_major_versions() {
        let rt = runtime_versions();
        let avcodec_rt = rt.split(", ").next().unwrap();
        let major = |s: &str| {
            s.split(' ')
                .nth(1)
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .to_owned()
        };
        let built = BUILT_AGAINST
            .split(", ")
            .find(|s| s.starts_with("libavcodec "))
            .unwrap();
        assert_eq!(major(avcodec_rt), major(built), "{rt} vs {BUILT_AGAINST}");
    }
}
