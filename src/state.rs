//! Durable API changes (`server.state_file`): what the API changed, saved before the
//! change is acknowledged and reapplied at start, so a crash or `kill -9` loses nothing a
//! client was told succeeded.
//!
//! The file holds an overlay on the config file, per id: the stream as the API left it, or
//! `null` where the API deleted it; the same for scheduled streams. It is written whole,
//! atomically: to a temporary file in the same directory, fsync, rename over the old one,
//! fsync the directory. A config reload drops the overlay entries of ids the new file
//! defines (the file wins, as at reload).

use crate::config::StreamConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::registry::{Origin, Registry};
use crate::schedule::Scheduler;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Overlay {
    /// Format version, for future changes.
    version: u32,
    streams: BTreeMap<u32, Option<StreamConfig>>,
    scheduled_streams: BTreeMap<u32, Option<StreamConfig>>,
    /// Tokens created through the API (digests only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tokens: Vec<crate::tokens::ApiToken>,
    /// Owner's changes to imported channels (name, number, group, profile, logo, hidden),
    /// by id; kept across the playlists' refreshes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    imported: BTreeMap<u32, crate::config::ChannelOverride>,
    /// Playlists added or replaced through the API, by name (`null`: deleted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    playlists: BTreeMap<String, Option<crate::config::PlaylistConfig>>,
}

/// The state file and the overlay it holds.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    overlay: Mutex<Overlay>,
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl StateFile {
    /// Opens (or prepares to create) the state file. A file that cannot be read or parsed
    /// is an error: starting without it would silently lose acknowledged changes.
    pub fn open(path: &Path) -> Result<StateFile> {
        let overlay = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "{}: server.state_file is not valid: {e}; fix or move it",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Overlay::default(),
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("{}: cannot read server.state_file: {e}", path.display()),
                ))
            }
        };
        Ok(StateFile {
            path: path.to_path_buf(),
            overlay: Mutex::new(overlay),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, o: &Overlay) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(o)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("state file: {e}")))?;
        write_atomic(&self.path, &bytes).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!(
                    "the change was applied but could not be saved to {}: {e}",
                    self.path.display()
                ),
            )
        })
    }

    /// Records stream `id` as the registry holds it now (None: deleted) and saves. `now`
    /// is read under the file's lock, so concurrent changes are saved in order.
    pub fn stream_changed(
        &self,
        id: u32,
        now: impl FnOnce() -> Option<StreamConfig>,
    ) -> Result<()> {
        let mut o = self.lock();
        o.streams.insert(id, now());
        self.save(&o)
    }

    /// Records scheduled stream `id` as the scheduler holds it now (None: deleted) and saves.
    pub fn scheduled_changed(
        &self,
        id: u32,
        now: impl FnOnce() -> Option<StreamConfig>,
    ) -> Result<()> {
        let mut o = self.lock();
        o.scheduled_streams.insert(id, now());
        self.save(&o)
    }

    /// The tokens created through the API, as saved.
    pub fn tokens(&self) -> Vec<crate::tokens::ApiToken> {
        self.lock().tokens.clone()
    }

    /// Saves the API-created tokens (`now` is read under the file's lock).
    pub fn tokens_changed(&self, now: impl FnOnce() -> Vec<crate::tokens::ApiToken>) -> Result<()> {
        let mut o = self.lock();
        o.tokens = now();
        self.save(&o)
    }

    pub fn playlists(&self) -> BTreeMap<String, Option<crate::config::PlaylistConfig>> {
        self.lock().playlists.clone()
    }

    /// Saves the API's playlist changes (`now` is read under the file's lock).
    pub fn playlists_changed(
        &self,
        now: impl FnOnce() -> BTreeMap<String, Option<crate::config::PlaylistConfig>>,
    ) -> Result<()> {
        let mut o = self.lock();
        o.playlists = now();
        self.save(&o)
    }

    pub fn imported(&self) -> BTreeMap<u32, crate::config::ChannelOverride> {
        self.lock().imported.clone()
    }

    /// Saves the overrides of imported channels (`now` is read under the file's lock).
    pub fn imported_changed(
        &self,
        now: impl FnOnce() -> BTreeMap<u32, crate::config::ChannelOverride>,
    ) -> Result<()> {
        let mut o = self.lock();
        o.imported = now();
        self.save(&o)
    }

    /// After a config reload: the new file wins for the ids it defines.
    pub fn reloaded(&self, stream_ids: &[u32], scheduled_ids: &[u32]) -> Result<()> {
        let mut o = self.lock();
        let before = o.streams.len() + o.scheduled_streams.len();
        o.streams.retain(|id, _| !stream_ids.contains(id));
        o.scheduled_streams
            .retain(|id, _| !scheduled_ids.contains(id));
        if o.streams.len() + o.scheduled_streams.len() != before {
            self.save(&o)?;
        }
        Ok(())
    }

    /// Reapplies the saved changes at start; returns what could not be applied (each
    /// logged and kept out of the registry, e.g. a stream whose profile the config file
    /// no longer has).
    pub fn apply(&self, registry: &Registry, scheduler: &Scheduler) -> Vec<String> {
        let o = self.lock();
        let mut problems = Vec::new();
        for (id, s) in &o.streams {
            let r = match s {
                Some(s) if registry.get(*id).is_some() => {
                    let s = s.clone();
                    registry
                        .update(*id, Origin::Config, move |_| Ok(s))
                        .map(|_| ())
                }
                Some(s) => registry.create(s.clone(), Origin::Config).map(|_| ()),
                None => match registry.get(*id) {
                    Some(_) => registry.remove(*id).map(|_| ()),
                    None => Ok(()),
                },
            };
            if let Err(e) = r {
                problems.push(format!("state file: stream {id}: {e}"));
            }
        }
        for (id, s) in &o.scheduled_streams {
            let r = match s {
                Some(s) => {
                    let exists = scheduler.get(*id).is_some();
                    scheduler
                        .upsert(s.clone(), Origin::Config, exists)
                        .map(|_| ())
                }
                None => match scheduler.get(*id) {
                    Some(_) => scheduler.remove(*id),
                    None => Ok(()),
                },
            };
            if let Err(e) = r {
                problems.push(format!("state file: scheduled stream {id}: {e}"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_silent_loss() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        std::fs::write(&p, b"{not json").unwrap();
        let e = StateFile::open(&p).unwrap_err();
        assert!(
            e.to_string().contains("server.state_file is not valid"),
            "{e}"
        );
        assert!(StateFile::open(&dir.path().join("missing.json")).is_ok());
    }
}
