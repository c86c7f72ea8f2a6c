//! Configuration hot reload, on SIGHUP or `POST /api/reload`.
//!
//! The file the server started from is read and validated again, as at start (same
//! environment overrides and command-line flags). A bad file is refused as a whole with
//! every error, and the running configuration stays. A good one is applied as a diff:
//! channels the file adds, changes or drops are added, restarted or removed; channels it
//! leaves alone keep playing; channels added through the API stay. Settings that are read
//! once at start (`server.*`, `engine.*`) are reported as needing a restart.

use crate::config::validate::EncoderCatalog;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::registry::{Registry, ReloadDiff};
use crate::schedule::Scheduler;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

/// What `amps serve` was told on its command line, re-applied to every reload.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub debug: bool,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(h) = &self.host {
            config.server.host = h.clone();
        }
        if let Some(p) = self.port {
            config.server.port = p;
        }
        config.server.debug |= self.debug;
    }
}

/// What a reload did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The file that was read.
    pub config: String,
    pub streams: ReloadDiff,
    pub scheduled_streams: ReloadDiff,
    /// Profiles added, removed or redefined (their channels restart).
    pub profiles_changed: Vec<String>,
    /// Keys that changed but take effect only when amps restarts.
    pub needs_restart: Vec<String>,
    pub warnings: Vec<String>,
}

/// Holds the configuration in force and applies new versions of it.
pub struct Reloader {
    path: Option<PathBuf>,
    overrides: Overrides,
    current: Mutex<Config>,
    /// Checks encoder names (the linked libav's catalogue, given by the caller).
    catalog: Box<dyn EncoderCatalog + Send + Sync>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Top-level keys of two serializable sections that differ, as `section.key`.
fn changed_keys<T: Serialize>(section: &str, old: &T, new: &T) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{section}.{k}"))
        .collect()
}

/// `server` keys a reload applies at once.
pub const LIVE_SERVER_KEYS: &[&str] = &["server.tokens", "server.auth_token"];

impl Reloader {
    /// `path`: the file the server loaded (None: the embedded default, which never changes).
    pub fn new(
        path: Option<PathBuf>,
        overrides: Overrides,
        current: Config,
        catalog: Box<dyn EncoderCatalog + Send + Sync>,
    ) -> Reloader {
        Reloader {
            path,
            overrides,
            current: Mutex::new(current),
            catalog,
        }
    }

    /// The `server` section in force (tokens are applied from it after a reload).
    pub fn server(&self) -> crate::config::ServerConfig {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .server
            .clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The ids of the streams and scheduled streams the config in force defines.
    pub fn file_ids(&self) -> (Vec<u32>, Vec<u32>) {
        let c = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (
            c.streams.iter().map(|s| s.id).collect(),
            c.scheduled_streams.iter().map(|s| s.id).collect(),
        )
    }

    /// Reads the file again and applies it. On error nothing changes.
    pub fn reload(&self, registry: &Registry, scheduler: &Scheduler) -> Result<Report> {
        // One reload at a time: the lock is held from reading to applying.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let loaded = crate::config::load(
            self.path.as_deref(),
            &crate::config::process_env,
            &*self.catalog,
        )?;
        let mut new = loaded.config;
        self.overrides.apply(&mut new);

        // Channels the files do not own (API-added) must keep a profile to run with; the
        // old file's channels are either in the new file or removed by this reload.
        let file_ids: BTreeSet<u32> = new
            .streams
            .iter()
            .chain(&new.scheduled_streams)
            .chain(&current.streams)
            .chain(&current.scheduled_streams)
            .map(|s| s.id)
            .collect();
        // (Imported channels follow their playlist's profile, validated with the file.)
        let mut uses: Vec<(u32, Option<String>)> = registry
            .list()
            .iter()
            .filter(|s| s.origin.is_none())
            .map(|s| (s.id, s.ffmpeg_profile.clone()))
            .collect();
        uses.extend(scheduler.profile_uses());
        let orphans: Vec<String> = uses
            .into_iter()
            .filter(|(id, _)| !file_ids.contains(id))
            .filter_map(|(id, p)| {
                let p = p?;
                (!new.ffmpeg_profiles.contains_key(&p)).then(|| {
                    format!("ffmpeg_profiles.{p}: still used by stream {id} (added through the API); keep the profile or change the stream first")
                })
            })
            .collect();
        if !orphans.is_empty() {
            return Err(Error::with_details(
                ErrorKind::Config,
                format!(
                    "{}: the new configuration removes profiles in use",
                    loaded.origin
                ),
                orphans,
            ));
        }

        // Tokens (the admin token too) are put in force by the caller after the reload.
        let mut needs_restart: Vec<String> = changed_keys("server", &current.server, &new.server)
            .into_iter()
            .filter(|k| !LIVE_SERVER_KEYS.contains(&k.as_str()))
            .collect();
        needs_restart.extend(changed_keys("engine", &current.engine, &new.engine));
        needs_restart.extend(changed_keys(
            "hdhomerun",
            &current.hdhomerun,
            &new.hdhomerun,
        ));
        let names: BTreeSet<&String> = current
            .ffmpeg_profiles
            .keys()
            .chain(new.ffmpeg_profiles.keys())
            .collect();
        let profiles_changed = names
            .into_iter()
            .filter(|n| current.ffmpeg_profiles.get(*n) != new.ffmpeg_profiles.get(*n))
            .cloned()
            .collect();

        let ids = |v: &[crate::config::StreamConfig]| v.iter().map(|s| s.id).collect();
        let streams = registry.reload(
            &ids(&current.streams),
            &new.streams,
            new.ffmpeg_profiles.clone(),
        );
        let scheduled_streams =
            scheduler.reload(&ids(&current.scheduled_streams), &new.scheduled_streams);
        *current = new;
        Ok(Report {
            config: loaded.origin,
            streams,
            scheduled_streams,
            profiles_changed,
            needs_restart,
            warnings: loaded.warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_names_each_differing_key() {
        let a = crate::config::ServerConfig::default();
        let mut b = a.clone();
        b.port = 6000;
        b.auth_token = Some("secret-value".into());
        let keys = changed_keys("server", &a, &b);
        assert_eq!(keys, vec!["server.auth_token", "server.port"]);
        // Only key names are reported, never values.
        assert!(!keys.concat().contains("secret-value"));
    }
}
