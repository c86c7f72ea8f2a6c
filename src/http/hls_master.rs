//! The master playlist of a channel's renditions (`/hls/<id>/master.m3u8`): pure, from
//! what each rendition's HLS session measured and what the channel reports of it.

use crate::engine::hls::SegmentStats;
use crate::engine::RenditionInfo;
use std::fmt::Write;

/// One rendition as the master playlist lists it.
pub struct Variant {
    /// Its media playlist, relative to the master playlist.
    pub uri: String,
    pub stats: SegmentStats,
    pub info: RenditionInfo,
}

/// The RFC 6381 codec of an H.264 stream: `avc1.PPCCLL` from the first sequence parameter
/// set in `ts` (an MPEG-TS segment; the SPS follows the keyframe's PES header).
pub fn avc_codec(ts: &[u8]) -> Option<String> {
    let mut payload = Vec::new();
    for p in ts.chunks_exact(188).take(64) {
        if p[0] != 0x47 {
            return None;
        }
        let afc = (p[3] >> 4) & 3;
        let start = match afc {
            1 => 4,
            3 => 5 + usize::from(p[4]),
            _ => continue,
        };
        if start < 188 {
            payload.extend_from_slice(&p[start..]);
        }
    }
    payload.windows(7).find_map(|w| {
        (w[0] == 0 && w[1] == 0 && w[2] == 1 && w[3] & 0x9f == 0x07)
            .then(|| format!("avc1.{:02x}{:02x}{:02x}", w[4], w[5], w[6]))
    })
}

/// The RFC 6381 codec of an audio codec as the status names it.
fn audio_codec(name: &str) -> Option<&'static str> {
    match name {
        "aac" => Some("mp4a.40.2"),
        "ac3" => Some("ac-3"),
        "eac3" => Some("ec-3"),
        "mp3" | "libmp3lame" => Some("mp4a.40.34"),
        "mp2" => Some("mp4a.40.33"),
        _ => None,
    }
}

/// The `CODECS` attribute's value: every codec of the rendition, or None when one has no
/// known name (the attribute is then left out rather than wrong).
fn codecs(v: &Variant) -> Option<String> {
    let mut out = vec![v.stats.first.as_deref().and_then(avc_codec)?];
    for a in &v.info.audio {
        out.push(audio_codec(a)?.to_owned());
    }
    Some(out.join(","))
}

/// Renders the master playlist, variants in the order given. `independent`: every
/// segment starts with a keyframe (not so where a session's first segment ends early:
/// its second starts mid-GOP).
pub fn render(variants: &[Variant], independent: bool) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
    if independent {
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    }
    for v in variants {
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={}",
            v.stats.peak_bps.max(1),
            v.stats.average_bps.max(1)
        );
        if let Some(r) = &v.info.resolution {
            let _ = write!(out, ",RESOLUTION={r}");
        }
        if let Some(f) = v.info.frame_rate.filter(|f| *f > 0.0) {
            let _ = write!(out, ",FRAME-RATE={f:.3}");
        }
        if let Some(c) = codecs(v) {
            let _ = write!(out, ",CODECS=\"{c}\"");
        }
        let _ = write!(out, "\n{}\n", v.uri);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts_with(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x47, 0x41, 0x00, 0x10];
        p.extend_from_slice(payload);
        p.resize(188, 0xff);
        p
    }

    #[test]
    fn the_master_playlist_lists_each_rendition_with_its_measures() {
        let seg = ts_with(&[
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0xac,
        ]);
        let v = |uri: &str, peak, avg, res: Option<&str>, audio: &[&str]| Variant {
            uri: uri.into(),
            stats: SegmentStats {
                peak_bps: peak,
                average_bps: avg,
                first: Some(bytes::Bytes::from(seg.clone())),
            },
            info: RenditionInfo {
                resolution: res.map(str::to_owned),
                frame_rate: Some(25.0),
                audio: audio.iter().map(|a| (*a).to_owned()).collect(),
            },
        };
        let text = render(
            &[
                v(
                    "index.m3u8?token=t",
                    4_100_000,
                    3_900_000,
                    Some("1920x1080"),
                    &["aac"],
                ),
                v(
                    "index.m3u8?profile=low&token=t",
                    300_000,
                    280_000,
                    Some("256x144"),
                    &["opus"],
                ),
            ],
            true,
        );
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=4100000,AVERAGE-BANDWIDTH=3900000,RESOLUTION=1920x1080,FRAME-RATE=25.000,CODECS=\"avc1.64001f,mp4a.40.2\"\n\
             index.m3u8?token=t\n\
             #EXT-X-STREAM-INF:BANDWIDTH=300000,AVERAGE-BANDWIDTH=280000,RESOLUTION=256x144,FRAME-RATE=25.000\n\
             index.m3u8?profile=low&token=t\n"
        );
        assert_eq!(avc_codec(&ts_with(&[1, 2, 3])), None);
    }
}
