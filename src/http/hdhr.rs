//! HDHomeRun tuner emulation, so Plex, Jellyfin and Emby can use Amps as a network tuner.
//!
//! Those servers cannot send our header and build their URLs by appending `/discover.json`
//! to what the user typed, so the token travels as a path segment: the user enters
//! `http://host:5000/hdhr/<token>` and every URL Amps hands out (`BaseURL`, `LineupURL`,
//! each channel's `URL`) keeps that prefix. The token filter reads it from the path like
//! the other carriers; access logs and metrics show `/hdhr/{token}/...`, never the value.
//! Discovery on UDP 65001 (`hdhr_discovery.rs`) hands out a tuner URL with
//! `hdhomerun.discovery_token` only: a viewer token meant for tuners, never the admin's.

use super::state::AppState;
use super::state::View;
use crate::config::device_id::with_check_digit;
use crate::config::StreamConfig;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use warp::http::{header, StatusCode};
use warp::reply::Response;
use warp::Reply;

/// The files of a tuner, after the `/hdhr/[<token>/]` prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Discover,
    Lineup,
    LineupStatus,
    LineupPost,
    DeviceXml,
    /// `auto/v<GuideNumber>`: a channel's stream.
    Channel(u32),
}

impl Target {
    fn parse(file: &[&str]) -> Option<Target> {
        Some(match file {
            ["discover.json"] => Target::Discover,
            ["lineup.json"] => Target::Lineup,
            ["lineup_status.json"] => Target::LineupStatus,
            ["lineup.post"] => Target::LineupPost,
            ["device.xml"] | ["capability"] => Target::DeviceXml,
            ["auto", v] => {
                let n = v.strip_prefix('v')?;
                if n.is_empty() || n.len() > 9 || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Target::Channel(n.parse().ok()?)
            }
            _ => return None,
        })
    }
}

/// Splits the path after `/hdhr/` into (token segment, target). The token segment is
/// present when the path has one more segment than the target needs.
pub fn split(tail: &str) -> Option<(Option<&str>, Target)> {
    let segs: Vec<&str> = tail.split('/').collect();
    if let Some(t) = Target::parse(&segs) {
        return Some((None, t));
    }
    let (first, rest) = segs.split_first()?;
    if first.is_empty() {
        return None;
    }
    Target::parse(rest).map(|t| (Some(*first), t))
}

/// The token segment of the path after `/hdhr/`: the segment before a known file, or the
/// first of several segments (so an unknown file is still answered by its token, and its
/// token is still redacted).
fn token_segment(tail: &str) -> Option<&str> {
    match split(tail) {
        Some((token, _)) => token,
        // Anything else (`/hdhr/<token>` alone, `/hdhr//<token>/x`): its first non-empty
        // segment may be a token, and must never reach a log.
        None => tail.split('/').find(|seg| !seg.is_empty()),
    }
}

/// The token a request carries in its `/hdhr/<token>/...` path, percent-decoded.
pub fn path_token(path: &str) -> Option<String> {
    let token = token_segment(path.strip_prefix("/hdhr/")?)?;
    percent_encoding::percent_decode_str(token)
        .decode_utf8()
        .ok()
        .map(|t| t.into_owned())
}

/// `path` with the token segment of an `/hdhr/` path replaced by `replacement`.
pub fn redact_path(path: &str, replacement: &str) -> String {
    if let Some(tail) = path.strip_prefix("/hdhr/") {
        if let Some(token) = token_segment(tail) {
            // `token` is a slice of `tail`: cut around it.
            let start = token.as_ptr() as usize - tail.as_ptr() as usize;
            return format!(
                "/hdhr/{}{replacement}{}",
                &tail[..start],
                &tail[start + token.len()..]
            );
        }
    }
    path.to_owned()
}

fn device_id(st: &AppState) -> String {
    device_id_of(&st.hdhomerun)
}

/// The device id (eight hex digits) of the tuner `h` describes.
pub fn device_id_of(h: &crate::config::HdhrConfig) -> String {
    match &h.device_id {
        Some(id) => id.to_ascii_uppercase(),
        // Stable across restarts and port changes (Plex and Jellyfin key the device by it).
        None => with_check_digit(&format!("amps:{}:{}", h.friendly_name, hostname())),
    }
}

/// This machine's host name (empty if it cannot be read).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    if ok {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    }
}

/// The tuner's base URL, with the request's own token as a path segment.
pub fn base(view: &View) -> String {
    let root = &view.base;
    match &view.token {
        Some(t) => format!("{root}/hdhr/{}", crate::auth::encode_for_query(t)),
        None => format!("{root}/hdhr"),
    }
}

/// The number a tuner client shows and tunes: the channel number, else the id.
pub fn guide_number(s: &StreamConfig) -> u32 {
    s.channel_number.unwrap_or(s.id)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Discover {
    friendly_name: String,
    manufacturer: &'static str,
    model_number: &'static str,
    firmware_name: &'static str,
    firmware_version: &'static str,
    #[serde(rename = "DeviceID")]
    device_id: String,
    device_auth: &'static str,
    #[serde(rename = "BaseURL")]
    base_url: String,
    #[serde(rename = "LineupURL")]
    lineup_url: String,
    tuner_count: u32,
}

/// The model a tuner without `transcode_profiles` reports (not "HDTC": Jellyfin appends
/// `?transcode=` to an HDTC's stream URLs).
pub const MODEL: &str = "HDHR5-4US";
/// The model with `hdhomerun.transcode_profiles`: an HDHomeRun EXTEND, whose `?transcode=`
/// values Jellyfin offers as stream qualities.
pub const TRANSCODING_MODEL: &str = "HDTC-2US";

/// The model tuner `h` reports.
pub fn model_of(h: &crate::config::HdhrConfig) -> &'static str {
    if h.transcode_profiles.is_empty() {
        MODEL
    } else {
        TRANSCODING_MODEL
    }
}

/// The `?profile=` query for a tuner request's `?transcode=` value: the mapped profile
/// where channel `offered` offers it, else nothing (the channel's own output).
pub fn profile_query(h: &crate::config::HdhrConfig, query: &str, offered: &[String]) -> String {
    crate::auth::query_param(query, "transcode")
        .and_then(|t| h.transcode_profiles.get(&t))
        .filter(|p| offered.contains(p))
        .map(|p| format!("profile={}", crate::auth::encode_for_query(p)))
        .unwrap_or_default()
}
pub const FIRMWARE: &str = "hdhomerun5_atsc";
pub const FIRMWARE_VERSION: &str = "20200101";

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LineupEntry {
    guide_number: String,
    guide_name: String,
    #[serde(rename = "URL")]
    url: String,
    /// 0/1 as numbers: older Jellyfin and Emby read `HD` as an int.
    #[serde(rename = "HD")]
    hd: u8,
    favorite: u8,
    #[serde(rename = "DRM")]
    drm: u8,
}

fn with_type(mut resp: Response, ctype: &'static str) -> Response {
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// Answers a tuner file (all but the channel streams).
pub fn answer(st: &AppState, target: Target, view: &View) -> Response {
    let base = base(view);
    match target {
        Target::Discover => super::reply::json(
            StatusCode::OK,
            &Discover {
                friendly_name: st.hdhomerun.friendly_name.clone(),
                manufacturer: "Silicondust",
                model_number: model_of(&st.hdhomerun),
                firmware_name: FIRMWARE,
                firmware_version: FIRMWARE_VERSION,
                device_id: device_id(st),
                device_auth: "amps",
                lineup_url: format!("{base}/lineup.json"),
                base_url: base,
                tuner_count: st.hdhomerun.tuner_count,
            },
        ),
        Target::LineupStatus => super::reply::json(
            StatusCode::OK,
            &serde_json::json!({
                "ScanInProgress": 0,
                "ScanPossible": 1,
                "Source": "Cable",
                "SourceList": ["Cable"],
            }),
        ),
        // Plex "scans" before reading the lineup; there is nothing to scan.
        Target::LineupPost => with_type(String::new().into_response(), "text/plain"),
        Target::Lineup => {
            let entries: Vec<LineupEntry> = view
                .channels(st)
                .iter()
                .map(|s| LineupEntry {
                    guide_number: guide_number(s).to_string(),
                    guide_name: s.name.clone(),
                    url: format!("{base}/auto/v{}", guide_number(s)),
                    hd: 1,
                    favorite: 0,
                    drm: 0,
                })
                .collect();
            super::reply::json(StatusCode::OK, &entries)
        }
        Target::DeviceXml => {
            let id = device_id(st);
            let name = crate::epg::escape(&st.hdhomerun.friendly_name);
            let model = model_of(&st.hdhomerun);
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<root xmlns=\"urn:schemas-upnp-org:device-1-0\">\n  <specVersion><major>1</major><minor>0</minor></specVersion>\n  <URLBase>{}</URLBase>\n  <device>\n    <deviceType>urn:schemas-upnp-org:device:MediaServer:1</deviceType>\n    <friendlyName>{name}</friendlyName>\n    <manufacturer>Silicondust</manufacturer>\n    <modelName>{model}</modelName>\n    <modelNumber>{model}</modelNumber>\n    <serialNumber>{id}</serialNumber>\n    <UDN>uuid:{}</UDN>\n  </device>\n</root>\n",
                crate::epg::escape(&base),
                uuid_for(&id),
            );
            with_type(xml.into_response(), "application/xml")
        }
        Target::Channel(_) => super::reply::error(&crate::error::Error::not_found(
            "channel streams are answered by the media handler",
        )),
    }
}

/// A stable UUID-shaped string for the device id.
fn uuid_for(id: &str) -> String {
    let h = Sha256::digest(format!("amps-hdhr:{id}").as_bytes());
    let x: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// The channel a tuner URL names (`auto/v<GuideNumber>`).
pub fn channel_for(st: &AppState, number: u32) -> Option<Arc<StreamConfig>> {
    st.registry
        .list()
        .into_iter()
        .find(|s| guide_number(s) == number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_token_and_target() {
        assert_eq!(split("discover.json"), Some((None, Target::Discover)));
        assert_eq!(
            split("tok/discover.json"),
            Some((Some("tok"), Target::Discover))
        );
        assert_eq!(
            split("tok/auto/v12"),
            Some((Some("tok"), Target::Channel(12)))
        );
        assert_eq!(split("auto/v3"), Some((None, Target::Channel(3))));
        assert_eq!(split("tok/auto/vx"), None);
        assert_eq!(split("tok/other.json"), None);
        assert_eq!(split("/discover.json"), None);
        assert_eq!(
            path_token("/hdhr/a%20b/lineup.json").as_deref(),
            Some("a b")
        );
        assert_eq!(path_token("/hdhr/lineup.json"), None);
        assert_eq!(
            redact_path("/hdhr/secret/auto/v1", "{token}"),
            "/hdhr/{token}/auto/v1"
        );
        assert_eq!(redact_path("/hdhr/lineup.json", "***"), "/hdhr/lineup.json");
        assert_eq!(redact_path("/hdhr/secret/x/y", "***"), "/hdhr/***/x/y");
        assert_eq!(redact_path("/hdhr/secret", "***"), "/hdhr/***");
        assert_eq!(redact_path("/hdhr//secret/x", "***"), "/hdhr//***/x");
        assert_eq!(
            path_token("/hdhr/secret/nope.json").as_deref(),
            Some("secret")
        );
        assert_eq!(redact_path("/stream/1", "***"), "/stream/1");
    }
}
