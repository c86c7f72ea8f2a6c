//! The channel registry: the in-memory map of channels that are live right now.
//!
//! Filled from the config's `streams` at start, then changed by the REST API (and by the
//! scheduler). Readers take cheap snapshots (`Arc<StreamConfig>`); every writer validates
//! with the same rules as the config file and then notifies subscribers with a [`Change`],
//! which is how the media engine learns to stop or restart a channel's pipeline. Order is
//! stable: channel number, then id. This module does no I/O.

use crate::config::validate::{validate_stream, Issue};
use crate::config::{Config, Profile, Program, StreamConfig};
use crate::error::{Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

/// A change to the channel set, sent to subscribers after it is applied.
#[derive(Clone, Debug)]
pub enum Change {
    Added(Arc<StreamConfig>),
    Updated {
        old: Arc<StreamConfig>,
        new: Arc<StreamConfig>,
    },
    Removed(Arc<StreamConfig>),
}

/// Who asks for a change: config-file content is trusted, API input is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Config,
    Api,
}

#[derive(Debug)]
pub struct Registry {
    channels: RwLock<BTreeMap<u32, Arc<StreamConfig>>>,
    profiles: RwLock<Arc<BTreeMap<String, Profile>>>,
    allow_api_commands: bool,
    allow_api_local_sources: bool,
    /// `engine.archive_dir` is set: channels may archive (`catchup_hours`).
    archive: bool,
    events: broadcast::Sender<Change>,
}

/// Turns validation issues into one `Invalid` error listing each (`name: must not be empty`).
fn invalid(issues: Vec<Issue>) -> Error {
    let details: Vec<String> = issues.iter().map(ToString::to_string).collect();
    let first = details.first().cloned().unwrap_or_default();
    Error::with_details(ErrorKind::Invalid, first, details)
}

impl Registry {
    /// A registry holding the config's always-on streams.
    pub fn from_config(config: &Config) -> Registry {
        let (events, _) = broadcast::channel(256);
        let channels = config
            .streams
            .iter()
            .map(|s| (s.id, Arc::new(s.clone())))
            .collect();
        Registry {
            channels: RwLock::new(channels),
            profiles: RwLock::new(Arc::new(config.ffmpeg_profiles.clone())),
            allow_api_commands: config.server.allow_api_commands,
            allow_api_local_sources: config.server.allow_api_local_sources,
            archive: config.engine.archive_dir.is_some(),
            events,
        }
    }

    /// The ffmpeg profiles now in force (replaced as a whole by a config reload).
    pub fn profiles(&self) -> Arc<BTreeMap<String, Profile>> {
        self.profiles
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Receives every change applied after this call.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.events.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, Arc<StreamConfig>>> {
        self.channels.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u32, Arc<StreamConfig>>> {
        self.channels.write().unwrap_or_else(|p| p.into_inner())
    }

    /// All channels, ordered by channel number, then id.
    pub fn list(&self) -> Vec<Arc<StreamConfig>> {
        let mut v: Vec<_> = self.read().values().cloned().collect();
        v.sort_by_key(|s| s.order_key());
        v
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    pub fn get(&self, id: u32) -> Option<Arc<StreamConfig>> {
        self.read().get(&id).cloned()
    }

    /// What API clients may not do unless the config allows it: set or change a command,
    /// or point a channel at a local file or lavfi graph. (Config content is trusted.)
    pub fn check_api_change(&self, new: &StreamConfig, old: Option<&StreamConfig>) -> Result<()> {
        if !self.allow_api_commands
            && new.custom_ffmpeg.as_ref() != old.and_then(|o| o.custom_ffmpeg.as_ref())
        {
            return Err(Error::new(
                ErrorKind::Forbidden,
                "custom_ffmpeg cannot be set through the API; set server.allow_api_commands: true in the config file to allow it",
            ));
        }
        // Also for command channels: `{source}` reaches a trusted command. Backup sources
        // follow the same rule.
        let added: Vec<&str> = std::iter::once(new.source.as_str())
            .chain(new.backup_sources.iter().map(|b| b.source.as_str()))
            .filter(|src| {
                old.is_none_or(|o| {
                    o.source != *src && !o.backup_sources.iter().any(|b| b.source == *src)
                })
            })
            .collect();
        if !self.allow_api_local_sources {
            use crate::config::source::SourceKind;
            if added.iter().any(|src| {
                matches!(
                    SourceKind::classify(src),
                    SourceKind::File | SourceKind::Lavfi(_)
                )
            }) {
                return Err(Error::new(
                    ErrorKind::Forbidden,
                    "source: only network sources (http, https, rtmp, rtmps, rtsp, udp, rtp, srt) can be set through the API; set server.allow_api_local_sources: true in the config file to allow local files and lavfi graphs",
                ));
            }
        }
        Ok(())
    }

    fn check(&self, new: &StreamConfig, old: Option<&StreamConfig>, origin: Origin) -> Result<()> {
        if origin == Origin::Api {
            if let Some(from) = old.and_then(|o| o.origin.as_deref()) {
                return Err(imported(new.id, from));
            }
            if new.origin.is_some() {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    "origin: set by Amps for imported channels; leave it out",
                ));
            }
            if new.id >= crate::config::RESERVED_IDS {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!(
                        "id: ids from {} up are reserved for channels imported from playlists",
                        crate::config::RESERVED_IDS
                    ),
                ));
            }
            self.check_api_change(new, old)?;
            if new.schedule.is_some() || old.is_some_and(|o| o.schedule.is_some()) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "scheduled streams are managed through /api/schedule",
                ));
            }
        }
        let mut issues = validate_stream(new, &self.profiles(), "");
        if new.catchup_hours > 0 && !self.archive {
            issues.push(Issue {
                path: "catchup_hours".into(),
                message: "needs engine.archive_dir in the config file: the folder where channel archives are kept".into(),
            });
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(invalid(issues))
        }
    }

    fn notify(&self, change: Change) {
        // No subscriber is fine: nothing is running yet.
        let _ = self.events.send(change);
    }

    /// Adds a channel. 409 if the id exists.
    pub fn create(&self, stream: StreamConfig, origin: Origin) -> Result<Arc<StreamConfig>> {
        self.check(&stream, None, origin)?;
        let new = Arc::new(stream);
        {
            let mut map = self.write();
            if let Some(existing) = map.get(&new.id) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("stream {} already exists ({:?})", new.id, existing.name),
                ));
            }
            map.insert(new.id, new.clone());
        }
        self.notify(Change::Added(new.clone()));
        Ok(new)
    }

    /// Replaces channel `id` with what `f` makes of the current one, atomically.
    pub fn update(
        &self,
        id: u32,
        origin: Origin,
        f: impl FnOnce(&StreamConfig) -> Result<StreamConfig>,
    ) -> Result<Arc<StreamConfig>> {
        let (old, new) = {
            let mut map = self.write();
            let old = map.get(&id).cloned().ok_or_else(|| no_such(id))?;
            let new = f(&old)?;
            if new.id != id {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!(
                        "id: {} does not match the stream in the URL ({id}); ids cannot change",
                        new.id
                    ),
                ));
            }
            self.check(&new, Some(&old), origin)?;
            if *old == new {
                return Ok(old);
            }
            let new = Arc::new(new);
            map.insert(id, new.clone());
            (old, new)
        };
        self.notify(Change::Updated {
            old,
            new: new.clone(),
        });
        Ok(new)
    }

    /// Replaces the upcoming programs of channel `id`.
    pub fn set_programs(&self, id: u32, programs: Vec<Program>) -> Result<Arc<StreamConfig>> {
        self.update(id, Origin::Api, |s| {
            let mut s = s.clone();
            s.next_programs = programs;
            Ok(s)
        })
    }

    /// Removes channel `id` for an API client: scheduled channels belong to the scheduler,
    /// imported ones to their playlist.
    pub fn remove_api(&self, id: u32) -> Result<Arc<StreamConfig>> {
        if let Some(from) = self.get(id).and_then(|s| s.origin.clone()) {
            return Err(imported(id, &from));
        }
        if self.get(id).is_some_and(|s| s.schedule.is_some()) {
            return Err(Error::new(
                ErrorKind::Conflict,
                "scheduled streams are managed through /api/schedule",
            ));
        }
        self.remove(id)
    }

    /// Removes channel `id`.
    pub fn remove(&self, id: u32) -> Result<Arc<StreamConfig>> {
        let old = self.write().remove(&id).ok_or_else(|| no_such(id))?;
        self.notify(Change::Removed(old.clone()));
        Ok(old)
    }
}

/// What a config reload did to the channel set.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadDiff {
    pub added: Vec<u32>,
    /// Changed channels; running ones restart when the change touches their media.
    pub updated: Vec<u32>,
    pub removed: Vec<u32>,
    pub unchanged: usize,
}

impl Registry {
    /// Brings the config-file channels in line with a newly loaded (validated) config.
    /// `old_ids` are the always-on ids of the previous config: those missing from `streams`
    /// are removed. Channels added through the API stay unless the file now claims their id.
    /// A channel whose profile definition changed gets an update (the engine restarts it).
    pub fn reload(
        &self,
        old_ids: &std::collections::BTreeSet<u32>,
        streams: &[StreamConfig],
        profiles: BTreeMap<String, Profile>,
    ) -> ReloadDiff {
        let old_profiles = self.profiles();
        *self.profiles.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(profiles);
        let new_profiles = self.profiles();
        let profile_changed = |s: &StreamConfig| {
            s.ffmpeg_profile
                .iter()
                .chain(&s.profiles)
                .any(|name| old_profiles.get(name) != new_profiles.get(name))
        };
        let mut diff = ReloadDiff::default();
        let mut changes = Vec::new();
        {
            let mut map = self.write();
            for s in streams {
                let new = Arc::new(s.clone());
                match map.insert(s.id, new.clone()) {
                    None => {
                        diff.added.push(s.id);
                        changes.push(Change::Added(new));
                    }
                    Some(old) if *old != *new || profile_changed(&new) => {
                        if !old_ids.contains(&s.id) {
                            tracing::warn!(id = s.id, "the reloaded config claims a stream id that was added through the API; the config's stream replaces it");
                        }
                        diff.updated.push(s.id);
                        changes.push(Change::Updated { old, new });
                    }
                    Some(_) => diff.unchanged += 1,
                }
            }
            let kept: std::collections::BTreeSet<u32> = streams.iter().map(|s| s.id).collect();
            // Channels the file does not list (API, active scheduled) restart too when
            // their profile's definition changed.
            for (id, s) in map.iter() {
                if !kept.contains(id) && profile_changed(s) {
                    diff.updated.push(*id);
                    changes.push(Change::Updated {
                        old: s.clone(),
                        new: s.clone(),
                    });
                }
            }
            for id in old_ids.difference(&kept) {
                if map.get(id).is_some_and(|s| s.schedule.is_none()) {
                    if let Some(old) = map.remove(id) {
                        diff.removed.push(*id);
                        changes.push(Change::Removed(old));
                    }
                }
            }
        }
        for c in changes {
            self.notify(c);
        }
        diff
    }
}

/// The 409 for an API write to an imported channel.
fn imported(id: u32, from: &str) -> Error {
    let name = from.strip_prefix("playlist:").unwrap_or(from);
    Error::new(
        ErrorKind::Conflict,
        format!(
            "stream {id} is imported from playlist {name}: rename, renumber, regroup, re-profile or hide it with PUT /api/playlists/{name}/channels/{id}"
        ),
    )
}

impl Registry {
    /// Makes the imported channels (those with an `origin`) exactly `channels`: new ones
    /// are added, changed ones updated (the engine restarts only those whose media
    /// changed), missing ones removed (their viewers' streams end). Channels of the config
    /// file and the API are never touched. The caller has validated `channels`.
    pub fn sync_imported(&self, channels: Vec<StreamConfig>) -> ReloadDiff {
        let mut diff = ReloadDiff::default();
        let mut changes = Vec::new();
        {
            let mut map = self.write();
            let mut keep = std::collections::BTreeSet::new();
            for s in channels {
                if s.origin.is_none() {
                    continue;
                }
                keep.insert(s.id);
                match map.get(&s.id) {
                    Some(old) if old.origin.is_none() => {
                        tracing::warn!(id = s.id, "an imported channel's id is taken by a channel of the config or the API; the import skips it");
                    }
                    Some(old) if **old == s => diff.unchanged += 1,
                    Some(old) => {
                        let (old, new) = (old.clone(), Arc::new(s));
                        map.insert(new.id, new.clone());
                        diff.updated.push(new.id);
                        changes.push(Change::Updated { old, new });
                    }
                    None => {
                        let new = Arc::new(s);
                        map.insert(new.id, new.clone());
                        diff.added.push(new.id);
                        changes.push(Change::Added(new));
                    }
                }
            }
            let gone: Vec<u32> = map
                .iter()
                .filter(|(id, s)| s.origin.is_some() && !keep.contains(id))
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                if let Some(old) = map.remove(&id) {
                    diff.removed.push(id);
                    changes.push(Change::Removed(old));
                }
            }
        }
        for c in changes {
            self.notify(c);
        }
        diff
    }

    /// Replaces the programmes of channel `id` with a guide's (no API rules: the guide is
    /// Amps' own import). None when the channel is gone.
    pub fn set_guide_programs(&self, id: u32, programs: Vec<Program>) -> Option<()> {
        self.update(id, Origin::Config, |s| {
            let mut s = s.clone();
            s.next_programs = programs;
            Ok(s)
        })
        .ok()
        .map(|_| ())
    }
}

/// The 404 for an unknown stream id, worded the same everywhere.
pub fn no_such(id: u32) -> Error {
    Error::not_found(format!("no stream with id {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CustomFfmpeg;

    fn config() -> Config {
        serde_yaml::from_str(
            "ffmpeg_profiles: {copy: {}}\nstreams:\n- {id: 5, name: E, source: s, ffmpeg_profile: copy}\n- {id: 2, name: B, source: s, ffmpeg_profile: copy, channel_number: 9}\n- {id: 3, name: C, source: s, ffmpeg_profile: copy, channel_number: 1}\n- {id: 4, name: D, source: s, custom_ffmpeg: 'ffmpeg -i {source}'}\n",
        )
        .unwrap()
    }

    fn stream(id: u32) -> StreamConfig {
        serde_yaml::from_str(&format!(
            "{{id: {id}, name: N, source: 'http://h/{id}.ts', ffmpeg_profile: copy}}"
        ))
        .unwrap()
    }

    #[test]
    fn lists_by_channel_number_then_id() {
        let r = Registry::from_config(&config());
        let ids: Vec<u32> = r.list().iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![3, 2, 4, 5]);
    }

    #[test]
    fn writers_validate_and_notify_subscribers() {
        let r = Registry::from_config(&config());
        let mut rx = r.subscribe();
        r.create(stream(7), Origin::Api).unwrap();
        assert!(matches!(rx.try_recv().unwrap(), Change::Added(s) if s.id == 7));
        assert_eq!(
            r.create(stream(7), Origin::Api).unwrap_err().kind(),
            ErrorKind::Conflict
        );

        let mut bad = stream(8);
        bad.ffmpeg_profile = Some("nope".into());
        let e = r.create(bad, Origin::Api).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert_eq!(
            e.message(),
            "ffmpeg_profile: unknown profile \"nope\" (known: copy)"
        );

        r.update(7, Origin::Api, |s| {
            Ok(StreamConfig {
                name: "New".into(),
                ..s.clone()
            })
        })
        .unwrap();
        assert!(
            matches!(rx.try_recv().unwrap(), Change::Updated { old, new } if old.name == "N" && new.name == "New")
        );
        let e = r
            .update(7, Origin::Api, |s| Ok(StreamConfig { id: 9, ..s.clone() }))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);

        r.remove(7).unwrap();
        assert!(matches!(rx.try_recv().unwrap(), Change::Removed(s) if s.id == 7));
        assert_eq!(r.remove(7).unwrap_err().kind(), ErrorKind::NotFound);
        assert!(rx.try_recv().is_err(), "failed writes must not notify");
    }

    #[test]
    fn api_cannot_set_commands_unless_allowed_but_may_keep_them() {
        let r = Registry::from_config(&config());
        let mut s = stream(10);
        s.custom_ffmpeg = Some(CustomFfmpeg {
            command: "sh -c 'rm -rf /'".into(),
            shell: false,
            cwd: None,
            env: Default::default(),
        });
        assert_eq!(
            r.create(s.clone(), Origin::Api).unwrap_err().kind(),
            ErrorKind::Forbidden
        );
        assert!(r.create(s, Origin::Config).is_ok());
        // Renaming a config-defined command channel through the API keeps its command.
        r.update(4, Origin::Api, |s| {
            Ok(StreamConfig {
                name: "Renamed".into(),
                ..s.clone()
            })
        })
        .unwrap();
        let e = r
            .update(4, Origin::Api, |s| {
                let mut s = s.clone();
                s.custom_ffmpeg.as_mut().unwrap().command = "evil".into();
                Ok(s)
            })
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Forbidden);
    }

    #[test]
    fn api_sources_are_network_only_unless_allowed() {
        let r = Registry::from_config(&config());
        for bad in [
            "/etc/passwd",
            "file:/etc/passwd",
            "concat:/a|/b",
            "subfile:,,start,0,end,0,:/etc/passwd",
            "data:,x",
            "lavfi:movie=/etc/passwd",
        ] {
            let mut s = stream(30);
            s.source = bad.into();
            assert_eq!(
                r.create(s.clone(), Origin::Api).unwrap_err().kind(),
                ErrorKind::Forbidden,
                "{bad}"
            );
            assert!(r
                .update(5, Origin::Api, |_| Ok(StreamConfig { id: 5, ..s.clone() }))
                .is_err());
        }
        for good in [
            "http://h/a.ts",
            "https://h/a.m3u8",
            "rtsp://cam/1",
            "udp://239.0.0.1:1234",
        ] {
            let mut s = stream(31);
            s.source = good.into();
            r.create(s, Origin::Api).unwrap();
            r.remove(31).unwrap();
        }
        // A config-file channel keeps its local source through API edits of other fields.
        r.update(5, Origin::Api, |s| {
            Ok(StreamConfig {
                name: "Renamed".into(),
                ..s.clone()
            })
        })
        .unwrap();
    }

    #[test]
    fn programs_are_replaced_whole() {
        let r = Registry::from_config(&config());
        let p: Vec<Program> =
            serde_json::from_str(r#"[{"title":"A"},{"title":"B","start":"2030-01-01T00:00:00Z"}]"#)
                .unwrap();
        r.set_programs(5, p.clone()).unwrap();
        assert_eq!(r.get(5).unwrap().next_programs, p);
        r.set_programs(5, vec![]).unwrap();
        assert!(r.get(5).unwrap().next_programs.is_empty());
        assert_eq!(
            r.set_programs(99, vec![]).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
}
