//! One provider source: its state as `/api/playlists` shows it, its account's secrets
//! (remembered for redaction), and fetching and parsing its list.

use super::m3u::{self, Entry};
use super::{fetch, import, xtream};
use crate::config::PlaylistConfig;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most bytes of a playlist (unpacked).
const MAX_PLAYLIST_BYTES: u64 = 512 << 20;

/// A source's state, as `/api/playlists` shows it (never its URL or account).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PlaylistStatus {
    pub name: String,
    /// `m3u` or `xtream`.
    pub kind: &'static str,
    /// Channels served from this source now (after filters, merging and hiding).
    pub channels: usize,
    /// Entries in the last good list.
    pub entries: usize,
    /// Entries the parser skipped (malformed).
    pub skipped: usize,
    /// Entries the filters left out.
    pub filtered: usize,
    /// Entries repeating another.
    pub duplicates: usize,
    /// Channels that became a backup source of another provider's same channel.
    pub merged: usize,
    /// Channels hidden by the owner.
    pub hidden: usize,
    /// Imported channels that do not validate (e.g. their profile is gone).
    pub invalid: usize,
    pub refresh_minutes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Channels holding a provider connection now (filled in by the HTTP layer).
    pub connections_in_use: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<DateTime<Utc>>,
    /// How long the last successful fetch and parse took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_fetch_ms: Option<u64>,
    /// Why the last refresh failed (the last good list is still served).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The list served came from the disk cache (the provider has not answered yet).
    pub from_cache: bool,
}

pub(super) struct Source {
    pub(super) cfg: PlaylistConfig,
    pub(super) filter: Result<import::Filter, String>,
    pub(super) entries: Arc<Vec<Entry>>,
    pub(super) guide_url: Option<String>,
    pub(super) ids: BTreeMap<String, u32>,
    pub(super) status: PlaylistStatus,
}

impl Source {
    pub(super) fn new(cfg: PlaylistConfig) -> Source {
        for s in secrets_of(&cfg) {
            crate::auth::remember_secret(&s);
        }
        let status = PlaylistStatus {
            name: cfg.name.clone(),
            kind: if cfg.xtream.is_some() {
                "xtream"
            } else {
                "m3u"
            },
            refresh_minutes: cfg.refresh_minutes,
            max_connections: cfg.max_connections,
            ..PlaylistStatus::default()
        };
        Source {
            filter: import::Filter::new(&cfg),
            cfg,
            entries: Arc::new(Vec::new()),
            guide_url: None,
            ids: BTreeMap::new(),
            status,
        }
    }

    /// What a fetch depends on: a change of any of these needs a new fetch.
    pub(super) fn fetch_key(cfg: &PlaylistConfig) -> String {
        format!(
            "{:?}|{:?}|{:?}|{}",
            cfg.url,
            cfg.xtream
                .as_ref()
                .map(|x| (&x.server, &x.username, &x.password)),
            cfg.user_agent,
            cfg.max_entries
        )
    }
}

/// The account secrets of a source: Xtream's username and password, an M3U URL's
/// password and query values (`get.php?username=..&password=..`).
pub(super) fn secrets_of(cfg: &PlaylistConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(x) = &cfg.xtream {
        out.push(x.username.clone());
        out.push(x.password.clone());
    }
    if let Some(u) = &cfg.url {
        if let Some((_, q)) = u.split_once('?') {
            for pair in q.split('&') {
                if let Some((_, v)) = pair.split_once('=') {
                    out.push(
                        percent_encoding::percent_decode_str(v)
                            .decode_utf8_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        if let Some(rest) = u.split_once("://").map(|(_, r)| r) {
            let authority = rest.split('/').next().unwrap_or("");
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                out.extend(userinfo.split(':').map(str::to_owned));
            }
        }
    }
    out.retain(|s| s.len() >= 2);
    out
}

/// What one fetch brought.
pub(super) struct Fetched {
    pub(super) entries: Vec<Entry>,
    pub(super) guide_url: Option<String>,
    pub(super) skipped: usize,
    pub(super) truncated: bool,
}

/// Fetches and parses a source. Errors name what failed, never the URL.
pub(super) fn fetch_source(cfg: &PlaylistConfig) -> Result<Fetched, String> {
    let mut o = fetch::Options::new(MAX_PLAYLIST_BYTES);
    o.user_agent = cfg.user_agent.clone();
    if let Some(x) = &cfg.xtream {
        o.max_bytes = 256 << 20;
        let cats = fetch::fetch(&xtream::api_url(x, "get_live_categories"), &o)
            .map_err(|e| format!("get_live_categories: {e}"))?;
        let streams = fetch::fetch(&xtream::api_url(x, "get_live_streams"), &o)
            .map_err(|e| format!("get_live_streams: {e}"))?;
        let p = xtream::parse(x, &cats, &streams, cfg.max_entries)?;
        return Ok(Fetched {
            entries: p.entries,
            guide_url: None,
            skipped: p.skipped,
            truncated: p.truncated,
        });
    }
    let url = cfg.url.as_deref().unwrap_or_default();
    let bytes = fetch::fetch(url, &o)?;
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).to_string();
    let p = m3u::parse(&bytes, cfg.max_entries);
    if p.entries.is_empty()
        && !head
            .trim_start_matches('\u{feff}')
            .trim_start()
            .starts_with("#EXTM3U")
    {
        return Err("the answer is not an M3U playlist (no #EXTM3U and no entries)".into());
    }
    Ok(Fetched {
        entries: p.entries,
        guide_url: p.guide_url,
        skipped: p.skipped,
        truncated: p.truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::super::default_cache_dir;
    use super::*;
    use crate::config::Config;
    use std::path::PathBuf;

    #[test]
    fn secrets_come_from_accounts_and_playlist_urls() {
        let p: PlaylistConfig = serde_yaml::from_str(
            "{name: a, url: 'http://me:pw99@p/get.php?username=bob7&password=x%2Fy&type=m3u_plus', ffmpeg_profile: r}",
        )
        .unwrap();
        let s = secrets_of(&p);
        for want in ["bob7", "x/y", "m3u_plus", "me", "pw99"] {
            assert!(s.iter().any(|x| x == want), "{want} in {s:?}");
        }
    }

    #[test]
    fn cache_dir_defaults() {
        let mut c = Config::default();
        let env = |k: &str| (k == "HOME").then(|| "/home/u".to_owned());
        assert_eq!(
            default_cache_dir(&c, &env),
            Some(PathBuf::from("/home/u/.cache/amps"))
        );
        c.server.state_file = Some("/data/state.json".into());
        assert_eq!(default_cache_dir(&c, &env), Some(PathBuf::from("/data")));
        c.server.cache_dir = Some("/cache".into());
        assert_eq!(default_cache_dir(&c, &env), Some(PathBuf::from("/cache")));
    }
}
