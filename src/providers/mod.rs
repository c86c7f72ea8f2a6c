//! Providers' playlists and guides: importing M3U playlists and Xtream Codes accounts as
//! ordinary channels, and XMLTV guides as their programmes.
//!
//! - [`m3u`], [`xtream`], [`xmltv`]: pure parsers of what providers send.
//! - [`import`]: pure: filters, stable ids, numbers, merging across providers.
//! - [`fetch`]: HTTP/file fetching with timeouts and size limits (blocking).
//! - [`guides`]: fetching guides and giving their programmes to the channels.
//! - `source` and `cache`: one source's state and fetch; its list cached on disk.
//!
//! [`Providers`] owns each source's last good list. A refresh fetches and parses on a
//! blocking thread; success replaces the list (and its cache file, so a restart while the
//! provider is down still serves it); failure keeps the last good list and records why.
//! The channels are then rebuilt from every source's list plus the owner's overrides and
//! applied to the registry as a diff (unchanged channels keep playing). Provider URLs
//! and accounts never leave this module unredacted: their secrets are remembered for
//! [`crate::auth::redact_source`].

mod cache;
pub mod fetch;
pub mod guides;
pub mod import;
pub mod m3u;
mod source;
pub mod xmltv;
pub mod xtream;

use crate::config::{Config, PlaylistConfig, StreamConfig};
use crate::error::{Error, ErrorKind};
use crate::registry::{Registry, ReloadDiff};
use chrono::{DateTime, Utc};
pub use import::RESERVED_IDS;
use m3u::Entry;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use cache::default_cache_dir;
use cache::{Cache, CachedEntry};
pub use source::PlaylistStatus;
use source::{fetch_source, Source};

pub use crate::config::ChannelOverride;

/// The provider playlists and guides in force.
pub struct Providers {
    registry: Arc<Registry>,
    cache_dir: Option<PathBuf>,
    inner: Mutex<Inner>,
    /// One refresh of the sources at a time.
    refreshing: Mutex<()>,
    pub guides: guides::Guides,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers").finish_non_exhaustive()
    }
}

struct Inner {
    sources: Vec<Source>,
    overrides: BTreeMap<u32, ChannelOverride>,
    /// The config file's playlists.
    file: Vec<PlaylistConfig>,
    /// The API's changes over them, by name: a playlist added or replaced, or `None`
    /// where the API deleted one of the file's.
    api: BTreeMap<String, Option<PlaylistConfig>>,
}

/// The playlists in force: the file's, with the API's changes over them, then the ones
/// the API added (by name).
fn effective(
    file: &[PlaylistConfig],
    api: &BTreeMap<String, Option<PlaylistConfig>>,
) -> Vec<PlaylistConfig> {
    let mut out: Vec<PlaylistConfig> = file
        .iter()
        .filter_map(|p| match api.get(&p.name) {
            Some(over) => over.clone(),
            None => Some(p.clone()),
        })
        .collect();
    for c in api.values().flatten() {
        if !file.iter().any(|f| f.name == c.name) {
            out.push(c.clone());
        }
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Providers {
    /// The sources of `cfg`, each with its cached list (if any), applied to the registry.
    pub fn new(
        cfg: &Config,
        registry: Arc<Registry>,
        cache_dir: Option<PathBuf>,
        overrides: BTreeMap<u32, ChannelOverride>,
        api: BTreeMap<String, Option<PlaylistConfig>>,
    ) -> Arc<Providers> {
        let configs = effective(&cfg.playlists, &api);
        let p = Arc::new(Providers {
            registry,
            cache_dir,
            inner: Mutex::new(Inner {
                sources: Vec::new(),
                overrides,
                file: cfg.playlists.clone(),
                api,
            }),
            refreshing: Mutex::new(()),
            guides: guides::Guides::new(&cfg.guides),
        });
        let sources = configs
            .into_iter()
            .map(|c| p.load_cached(Source::new(c)))
            .collect();
        lock(&p.inner).sources = sources;
        p.rebuild();
        p
    }

    fn cache_path(&self, name: &str) -> Option<PathBuf> {
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("playlist-{name}.json")))
    }

    fn load_cached(&self, mut s: Source) -> Source {
        let Some(path) = self.cache_path(&s.cfg.name) else {
            return s;
        };
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Cache>(&bytes) {
                Ok(c) => {
                    s.entries = Arc::new(c.entries.into_iter().map(Entry::from).collect());
                    s.ids = c.ids;
                    s.guide_url = c.guide_url;
                    s.status.entries = s.entries.len();
                    s.status.last_success = c.fetched_at;
                    s.status.from_cache = true;
                    tracing::info!(playlist = %s.cfg.name, entries = s.entries.len(), "playlist loaded from its cache");
                }
                Err(e) => {
                    tracing::warn!(playlist = %s.cfg.name, path = %path.display(), "the playlist cache is not valid ({e}); it is ignored")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(playlist = %s.cfg.name, path = %path.display(), "cannot read the playlist cache: {e}")
            }
        }
        s
    }

    fn save_cache(&self, s: &Source) {
        let Some(path) = self.cache_path(&s.cfg.name) else {
            return;
        };
        let cache = Cache {
            fetched_at: s.status.last_success,
            guide_url: s.guide_url.clone(),
            entries: s.entries.iter().map(CachedEntry::from).collect(),
            ids: s.ids.clone(),
        };
        let result = (|| {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
            }
            let bytes = serde_json::to_vec(&cache).map_err(std::io::Error::other)?;
            crate::state::write_atomic(&path, &bytes)?;
            // It holds the account's stream URLs: the owner's eyes only.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        })();
        if let Err(e) = result {
            tracing::warn!(playlist = %s.cfg.name, path = %path.display(), "cannot write the playlist cache: {e}");
        }
    }

    /// The channels every source's list gives now, with the overrides applied; hidden
    /// ones and those that do not validate are left out (and counted).
    fn channels(&self, inner: &mut Inner) -> Vec<StreamConfig> {
        let mut taken = HashSet::new();
        let mut all: Vec<StreamConfig> = Vec::new();
        let profiles = self.registry.profiles();
        for s in &mut inner.sources {
            let Ok(filter) = &s.filter else {
                continue;
            };
            let imp = import::import(&s.cfg, filter, &s.entries, &s.ids, &mut taken);
            s.ids = imp.ids;
            s.status.filtered = imp.filtered;
            s.status.duplicates = imp.duplicates;
            all.extend(imp.channels);
        }
        let merged_from: Vec<Option<String>> = all.iter().map(|c| c.origin.clone()).collect();
        import::merge(&mut all);
        for s in &mut inner.sources {
            let origin = format!("playlist:{}", s.cfg.name);
            let total = merged_from
                .iter()
                .filter(|o| o.as_deref() == Some(&origin))
                .count();
            let left = all
                .iter()
                .filter(|c| c.origin.as_deref() == Some(&origin))
                .count();
            s.status.merged = total - left;
            s.status.hidden = 0;
            s.status.invalid = 0;
        }
        let mut out = Vec::with_capacity(all.len());
        for mut c in all {
            let src = c
                .origin
                .as_deref()
                .and_then(|o| o.strip_prefix("playlist:"))
                .unwrap_or("")
                .to_owned();
            let status = inner
                .sources
                .iter_mut()
                .find(|s| s.cfg.name == src)
                .map(|s| &mut s.status);
            if let Some(o) = inner.overrides.get(&c.id) {
                if o.hidden {
                    if let Some(st) = status {
                        st.hidden += 1;
                    }
                    continue;
                }
                o.apply(&mut c);
            }
            let issues = crate::config::validate::validate_stream(&c, &profiles, "");
            if !issues.is_empty() {
                tracing::debug!(
                    id = c.id,
                    "an imported channel does not validate: {}",
                    issues[0]
                );
                if let Some(st) = status {
                    st.invalid += 1;
                }
                continue;
            }
            // The guide's programmes stay until the guide brings new ones.
            if let Some(cur) = self.registry.get(c.id) {
                c.next_programs = cur.next_programs.clone();
            }
            out.push(c);
        }
        for s in &mut inner.sources {
            let origin = format!("playlist:{}", s.cfg.name);
            s.status.channels = out
                .iter()
                .filter(|c| c.origin.as_deref() == Some(&origin))
                .count();
        }
        out
    }

    /// Rebuilds the imported channels and applies them to the registry.
    pub fn rebuild(&self) -> ReloadDiff {
        let mut inner = lock(&self.inner);
        let channels = self.channels(&mut inner);
        drop(inner);
        let diff = self.registry.sync_imported(channels);
        if !(diff.added.is_empty() && diff.updated.is_empty() && diff.removed.is_empty()) {
            tracing::info!(
                added = diff.added.len(),
                updated = diff.updated.len(),
                removed = diff.removed.len(),
                unchanged = diff.unchanged,
                "imported channels changed"
            );
        }
        diff
    }

    /// The connection limits by origin, for the engine.
    pub fn limits(&self) -> BTreeMap<String, u32> {
        lock(&self.inner)
            .sources
            .iter()
            .filter_map(|s| Some((format!("playlist:{}", s.cfg.name), s.cfg.max_connections?)))
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        lock(&self.inner)
            .sources
            .iter()
            .map(|s| s.cfg.name.clone())
            .collect()
    }

    pub fn statuses(&self) -> Vec<PlaylistStatus> {
        lock(&self.inner)
            .sources
            .iter()
            .map(|s| s.status.clone())
            .collect()
    }

    pub fn status(&self, name: &str) -> Result<PlaylistStatus, Error> {
        lock(&self.inner)
            .sources
            .iter()
            .find(|s| s.cfg.name == name)
            .map(|s| s.status.clone())
            .ok_or_else(|| no_such(name))
    }

    /// The guide URLs the sources name (`url-tvg`, Xtream's `xmltv.php`), with the
    /// source's user agent.
    pub fn provider_guides(&self) -> Vec<(String, String, Option<String>)> {
        lock(&self.inner)
            .sources
            .iter()
            .filter(|s| s.cfg.import_guide)
            .filter_map(|s| {
                let url = match &s.cfg.xtream {
                    Some(x) => Some(xtream::guide_url(x)),
                    None => s.guide_url.clone(),
                }?;
                Some((s.cfg.name.clone(), url, s.cfg.user_agent.clone()))
            })
            .collect()
    }

    /// Sources due for a refresh at `now`.
    pub fn due(&self, now: DateTime<Utc>) -> Vec<String> {
        lock(&self.inner)
            .sources
            .iter()
            .filter(|s| match s.status.last_attempt {
                None => true,
                Some(_) if s.cfg.refresh_minutes == 0 => false,
                Some(t) => now - t >= chrono::Duration::minutes(i64::from(s.cfg.refresh_minutes)),
            })
            .map(|s| s.cfg.name.clone())
            .collect()
    }

    /// Fetches and parses source `name`, then rebuilds the channels. Blocking (network).
    /// The answer is the source's status afterwards; a failed fetch is not an `Err` (the
    /// last good list stays; `error` says why), an unknown name is.
    pub fn refresh(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<(PlaylistStatus, ReloadDiff), Error> {
        let _one = lock(&self.refreshing);
        let cfg = lock(&self.inner)
            .sources
            .iter()
            .find(|s| s.cfg.name == name)
            .map(|s| s.cfg.clone())
            .ok_or_else(|| no_such(name))?;
        let started = std::time::Instant::now();
        let result = fetch_source(&cfg);
        {
            let mut inner = lock(&self.inner);
            let Some(s) = inner.sources.iter_mut().find(|s| s.cfg.name == name) else {
                return Err(no_such(name));
            };
            s.status.last_attempt = Some(now);
            match result {
                Ok(f) => {
                    let n = f.entries.len();
                    s.entries = Arc::new(f.entries);
                    s.guide_url = f.guide_url;
                    s.status.entries = n;
                    s.status.skipped = f.skipped;
                    s.status.last_success = Some(now);
                    s.status.last_fetch_ms = Some(started.elapsed().as_millis() as u64);
                    s.status.from_cache = false;
                    s.status.error = f.truncated.then(|| {
                        format!(
                            "the list has more than {} entries; the first {} were imported (raise playlists[].max_entries)",
                            cfg.max_entries, cfg.max_entries
                        )
                    });
                    tracing::info!(playlist = %name, entries = n, skipped = f.skipped, ms = started.elapsed().as_millis() as u64, "playlist refreshed");
                }
                Err(e) => {
                    tracing::warn!(playlist = %name, "playlist refresh failed, keeping the last good list: {e}");
                    s.status.error = Some(e);
                }
            }
        }
        let diff = self.rebuild();
        let inner = lock(&self.inner);
        let s = inner
            .sources
            .iter()
            .find(|s| s.cfg.name == name)
            .ok_or_else(|| no_such(name))?;
        if s.status.last_success == Some(now) {
            self.save_cache(s);
        }
        Ok((s.status.clone(), diff))
    }

    /// Takes a reloaded config's sources: unchanged ones keep their list; changed ones
    /// keep it too until their refresh (due at once); new ones start from their cache.
    /// For names the new file defines, the file wins over the API's changes.
    pub fn reload(&self, cfg: &Config) -> ReloadDiff {
        {
            let mut inner = lock(&self.inner);
            inner.file = cfg.playlists.clone();
            let file: Vec<String> = cfg.playlists.iter().map(|p| p.name.clone()).collect();
            inner.api.retain(|name, _| !file.contains(name));
        }
        self.guides.reload(&cfg.guides);
        self.apply_configs()
    }

    /// The API's playlist changes (for the state file).
    pub fn api_playlists(&self) -> BTreeMap<String, Option<PlaylistConfig>> {
        lock(&self.inner).api.clone()
    }

    /// Whether a playlist of that name is in force.
    pub fn has(&self, name: &str) -> bool {
        lock(&self.inner).sources.iter().any(|s| s.cfg.name == name)
    }

    /// Adds or replaces a playlist (API); due for a refresh at once when what it fetches
    /// changed.
    pub fn upsert(&self, cfg: PlaylistConfig) -> ReloadDiff {
        lock(&self.inner).api.insert(cfg.name.clone(), Some(cfg));
        self.apply_configs()
    }

    /// Removes a playlist (API): its channels go, their viewers' streams end.
    pub fn remove(&self, name: &str) -> Result<ReloadDiff, Error> {
        {
            let mut inner = lock(&self.inner);
            if !inner.sources.iter().any(|s| s.cfg.name == name) {
                return Err(no_such(name));
            }
            if inner.file.iter().any(|f| f.name == name) {
                inner.api.insert(name.to_owned(), None);
            } else {
                inner.api.remove(name);
            }
        }
        if let Some(p) = self.cache_path(name) {
            let _ = std::fs::remove_file(p);
        }
        Ok(self.apply_configs())
    }

    /// Puts back the API's changes (after a failed save).
    pub fn restore_api(&self, api: BTreeMap<String, Option<PlaylistConfig>>) {
        lock(&self.inner).api = api;
        self.apply_configs();
    }

    /// Makes the sources match the playlists in force, keeping what each still-known
    /// source fetched.
    fn apply_configs(&self) -> ReloadDiff {
        {
            let mut inner = lock(&self.inner);
            let configs = effective(&inner.file, &inner.api);
            let mut old: Vec<Source> = std::mem::take(&mut inner.sources);
            inner.sources = configs
                .iter()
                .map(|c| match old.iter().position(|s| s.cfg.name == c.name) {
                    Some(i) => {
                        let mut s = old.swap_remove(i);
                        let refetch = Source::fetch_key(&s.cfg) != Source::fetch_key(c);
                        let mut fresh = Source::new(c.clone());
                        fresh.entries = s.entries.clone();
                        fresh.ids = std::mem::take(&mut s.ids);
                        fresh.guide_url = s.guide_url.take();
                        fresh.status.entries = s.status.entries;
                        fresh.status.skipped = s.status.skipped;
                        fresh.status.last_success = s.status.last_success;
                        fresh.status.last_fetch_ms = s.status.last_fetch_ms;
                        fresh.status.from_cache = s.status.from_cache;
                        fresh.status.error = s.status.error.clone();
                        fresh.status.last_attempt =
                            if refetch { None } else { s.status.last_attempt };
                        fresh
                    }
                    None => self.load_cached(Source::new(c.clone())),
                })
                .collect();
        }
        self.rebuild()
    }

    /// Every channel source `name` imports, including hidden ones, with its override.
    pub fn channels_of(&self, name: &str) -> Result<Vec<(StreamConfig, ChannelOverride)>, Error> {
        let inner = lock(&self.inner);
        let i = inner
            .sources
            .iter()
            .position(|s| s.cfg.name == name)
            .ok_or_else(|| no_such(name))?;
        let mut taken = HashSet::new();
        // Earlier sources' ids first, as in `channels`.
        for s in &inner.sources[..i] {
            taken.extend(s.ids.values().copied());
        }
        let s = &inner.sources[i];
        let Ok(filter) = &s.filter else {
            return Ok(Vec::new());
        };
        let imp = import::import(&s.cfg, filter, &s.entries, &s.ids, &mut taken);
        let overrides = &inner.overrides;
        let out = imp
            .channels
            .into_iter()
            .map(|c| {
                let o = overrides.get(&c.id).cloned().unwrap_or_default();
                (c, o)
            })
            .collect();
        Ok(out)
    }

    /// Sets (or, when empty, clears) the override of imported channel `id` of source
    /// `name`, and applies it. 404 for a channel the source does not import.
    pub fn set_override(
        &self,
        name: &str,
        id: u32,
        o: ChannelOverride,
    ) -> Result<ReloadDiff, Error> {
        if !self.channels_of(name)?.iter().any(|(c, _)| c.id == id) {
            return Err(Error::not_found(format!(
                "playlist {name} imports no channel {id}"
            )));
        }
        if let Some(p) = &o.ffmpeg_profile {
            if !self.registry.profiles().contains_key(p) {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!("ffmpeg_profile: unknown profile {p:?}"),
                ));
            }
        }
        if o.name
            .as_deref()
            .is_some_and(|n| n.trim().is_empty() || n.contains(['\n', '\r']))
        {
            return Err(Error::new(
                ErrorKind::Invalid,
                "name: must be a non-empty single line",
            ));
        }
        if o.channel_number == Some(0) {
            return Err(Error::new(
                ErrorKind::Invalid,
                "channel_number: must be at least 1",
            ));
        }
        {
            let mut inner = lock(&self.inner);
            if o.is_empty() {
                inner.overrides.remove(&id);
            } else {
                inner.overrides.insert(id, o);
            }
        }
        Ok(self.rebuild())
    }

    pub fn overrides(&self) -> BTreeMap<u32, ChannelOverride> {
        lock(&self.inner).overrides.clone()
    }

    /// Restores overrides (after a failed save) and rebuilds.
    pub fn restore_overrides(&self, o: BTreeMap<u32, ChannelOverride>) {
        lock(&self.inner).overrides = o;
        self.rebuild();
    }

    /// Refreshes every source and guide that is due; forever (every 30 s a look).
    pub async fn run(self: Arc<Self>, clock: crate::clock::SharedClock) {
        loop {
            let now = clock.now();
            let mut added = false;
            for name in self.due(now) {
                let p = self.clone();
                if let Ok(Ok((_, diff))) =
                    tokio::task::spawn_blocking(move || p.refresh(&name, now)).await
                {
                    added |= !diff.added.is_empty();
                }
            }
            // New channels get their programmes now, not at the guides' next refresh.
            if added || self.guides.due(now, &self.provider_guides()) {
                let p = self.clone();
                let _ = tokio::task::spawn_blocking(move || p.refresh_guides(now)).await;
            }
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        }
    }

    /// Reads every guide (configured ones first, then the providers') and gives the
    /// channels their programmes. Blocking.
    pub fn refresh_guides(&self, now: DateTime<Utc>) -> Vec<guides::GuideStatus> {
        let shifts: BTreeMap<u32, f64> = {
            let mut inner = lock(&self.inner);
            let mut m = BTreeMap::new();
            let mut taken = HashSet::new();
            for s in &mut inner.sources {
                let Ok(filter) = &s.filter else { continue };
                let kept: Vec<&Entry> = s.entries.iter().filter(|e| filter.keeps(e)).collect();
                let keys = import::keys(&kept);
                for (e, k) in kept.iter().zip(keys) {
                    if let (Some(shift), Some(id)) = (e.tvg_shift, k.and_then(|k| s.ids.get(&k))) {
                        if taken.insert(*id) {
                            m.insert(*id, shift);
                        }
                    }
                }
            }
            m
        };
        self.guides
            .refresh(&self.registry, &self.provider_guides(), &shifts, now)
    }
}

fn no_such(name: &str) -> Error {
    Error::not_found(format!("no playlist named {name:?}"))
}
