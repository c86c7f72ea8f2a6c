//! The disk cache of each source's last good list (`<cache_dir>/playlist-<name>.json`,
//! mode 0600: it holds the account's stream URLs), so a restart while a provider is down
//! still serves its channels.

use super::m3u::Entry;
use crate::config::Config;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where caches go when `server.cache_dir` is not set.
pub fn default_cache_dir(cfg: &Config, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(d) = &cfg.server.cache_dir {
        return Some(d.clone());
    }
    if let Some(state) = &cfg.server.state_file {
        let p = std::path::Path::new(state);
        let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
        return Some(dir.map_or_else(|| PathBuf::from("."), |d| d.to_path_buf()));
    }
    env("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("amps"))
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".cache/amps"))
        })
}

/// What is cached on disk per source: the last good list and the ids it was given.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Cache {
    pub(super) fetched_at: Option<DateTime<Utc>>,
    pub(super) guide_url: Option<String>,
    pub(super) entries: Vec<CachedEntry>,
    pub(super) ids: BTreeMap<String, u32>,
}

/// [`Entry`] as cached (a plain mirror, so the parser's type stays free of serde).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct CachedEntry {
    name: String,
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tvg_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tvg_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tvg_shift: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    catchup_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    referrer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream_id: Option<u64>,
}

impl From<&Entry> for CachedEntry {
    fn from(e: &Entry) -> Self {
        CachedEntry {
            name: e.name.clone(),
            url: e.url.clone(),
            tvg_id: e.tvg_id.clone(),
            tvg_name: e.tvg_name.clone(),
            logo: e.logo.clone(),
            group: e.group.clone(),
            number: e.number,
            tvg_shift: e.tvg_shift,
            catchup_days: e.catchup_days,
            user_agent: e.user_agent.clone(),
            referrer: e.referrer.clone(),
            stream_id: e.stream_id,
        }
    }
}

impl From<CachedEntry> for Entry {
    fn from(e: CachedEntry) -> Self {
        Entry {
            name: e.name,
            url: e.url,
            tvg_id: e.tvg_id,
            tvg_name: e.tvg_name,
            logo: e.logo,
            group: e.group,
            number: e.number,
            tvg_shift: e.tvg_shift,
            catchup_days: e.catchup_days,
            user_agent: e.user_agent,
            referrer: e.referrer,
            stream_id: e.stream_id,
        }
    }
}
