//! Scheduled channels: streams that exist only inside a time window.
//!
//! [`window_state`] and [`next_boundary`] are pure. The [`Scheduler`] owns the scheduled
//! entries (from the config and the API) and, on each [`Scheduler::apply`], makes the
//! registry hold exactly the entries whose window is open at the given time: added at
//! `start`, removed at `end` (the engine then stops the producer and ends its clients).
//! One background task ([`Scheduler::run`]) sleeps until the next boundary and wakes early
//! when entries change; time comes from a [`Clock`], so tests need no real sleeping.

use crate::clock::SharedClock;
use crate::config::{Schedule, StreamConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::{Origin, Registry};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Where a window stands at some moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowState {
    Pending,
    Active,
    Ended,
}

/// `start` omitted or past: active; `end` omitted: never ends; `end` reached: ended.
pub fn window_state(w: Option<&Schedule>, now: DateTime<Utc>) -> WindowState {
    let start = w.and_then(|w| w.start).map(|t| t.utc());
    let end = w.and_then(|w| w.end).map(|t| t.utc());
    if end.is_some_and(|e| now >= e) {
        WindowState::Ended
    } else if start.is_some_and(|s| now < s) {
        WindowState::Pending
    } else {
        WindowState::Active
    }
}

/// The earliest start or end strictly after `now`.
pub fn next_boundary<'a>(
    windows: impl Iterator<Item = Option<&'a Schedule>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    windows
        .flatten()
        .flat_map(|w| [w.start, w.end])
        .flatten()
        .map(|t| t.utc())
        .filter(|t| *t > now)
        .min()
}

/// A scheduled stream as the API and `amps list` show it.
#[derive(Clone, Debug, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub stream: StreamConfig,
    pub state: WindowState,
}

#[derive(Debug)]
pub struct Scheduler {
    entries: Mutex<Vec<StreamConfig>>,
    registry: Arc<Registry>,
    clock: SharedClock,
    changed: Notify,
}

impl Scheduler {
    /// A scheduler for the config's `scheduled_streams` (already validated and de-duplicated).
    pub fn new(
        streams: &[StreamConfig],
        registry: Arc<Registry>,
        clock: SharedClock,
    ) -> Arc<Scheduler> {
        let now = clock.now();
        for s in streams {
            if window_state(s.schedule.as_ref(), now) == WindowState::Ended {
                tracing::info!(id = s.id, name = %s.name, "scheduled stream's window has already ended; it will not be activated");
            }
        }
        let entries = streams.to_vec();
        Arc::new(Scheduler {
            entries: Mutex::new(entries),
            registry,
            clock,
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<StreamConfig>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the registry in line with the windows at `now`. Returns the next boundary.
    pub fn apply(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let entries = self.lock().clone();
        for e in &entries {
            let id = e.id;
            let present = self.registry.get(id);
            match window_state(e.schedule.as_ref(), now) {
                WindowState::Active if present.is_none() => {
                    // API entries were checked when they were added.
                    match self.registry.create(e.clone(), Origin::Config) {
                        Ok(_) => tracing::info!(id, name = %e.name, "scheduled stream activated"),
                        Err(err) => {
                            tracing::warn!(id, error = %err, "scheduled stream could not be activated")
                        }
                    }
                }
                WindowState::Active => {}
                WindowState::Pending | WindowState::Ended => {
                    // Only remove what the scheduler put there (a static stream keeps its id).
                    if present.is_some_and(|p| p.schedule.is_some())
                        && self.registry.remove(id).is_ok()
                    {
                        tracing::info!(id, name = %e.name, "scheduled stream retired");
                    }
                }
            }
        }
        next_boundary(entries.iter().map(|e| e.schedule.as_ref()), now)
    }

    /// Every scheduled entry with its state now.
    pub fn list(&self) -> Vec<Listed> {
        let now = self.clock.now();
        let mut v: Vec<Listed> = self
            .lock()
            .iter()
            .map(|e| Listed {
                stream: e.clone(),
                state: window_state(e.schedule.as_ref(), now),
            })
            .collect();
        v.sort_by_key(|l| l.stream.id);
        v
    }

    pub fn get(&self, id: u32) -> Option<Listed> {
        self.list().into_iter().find(|l| l.stream.id == id)
    }

    /// Adds or replaces a scheduled entry (API). The id may not belong to a static stream.
    pub fn upsert(&self, stream: StreamConfig, origin: Origin, must_exist: bool) -> Result<Listed> {
        if stream.schedule.is_none() {
            return Err(Error::invalid(
                "schedule: required for a scheduled stream ({start, end})",
            ));
        }
        let issues =
            crate::config::validate::validate_stream(&stream, &self.registry.profiles(), "");
        if let Some(first) = issues.first() {
            return Err(Error::with_details(
                ErrorKind::Invalid,
                first.to_string(),
                issues.iter().map(ToString::to_string).collect(),
            ));
        }
        if let Some(s) = self.registry.get(stream.id) {
            if s.schedule.is_none() {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "id {} belongs to the always-on stream {:?}",
                        stream.id, s.name
                    ),
                ));
            }
        }
        {
            let mut entries = self.lock();
            let pos = entries.iter().position(|e| e.id == stream.id);
            match (pos, must_exist) {
                (Some(_), false) => {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("scheduled stream {} already exists", stream.id),
                    ))
                }
                (None, true) => return Err(crate::registry::no_such(stream.id)),
                (Some(i), true) => {
                    if origin == Origin::Api {
                        self.registry.check_api_change(&stream, Some(&entries[i]))?;
                    }
                    entries[i] = stream.clone();
                    if self.registry.get(stream.id).is_some() {
                        let new = stream.clone();
                        self.registry
                            .update(stream.id, Origin::Config, move |_| Ok(new))?;
                    }
                }
                (None, false) => {
                    if origin == Origin::Api {
                        self.registry.check_api_change(&stream, None)?;
                    }
                    entries.push(stream.clone());
                }
            }
        }
        self.changed.notify_one();
        self.apply(self.clock.now());
        Ok(Listed {
            state: window_state(stream.schedule.as_ref(), self.clock.now()),
            stream,
        })
    }

    /// Removes a scheduled entry (and its channel, if active).
    pub fn remove(&self, id: u32) -> Result<()> {
        let removed = {
            let mut entries = self.lock();
            let pos = entries
                .iter()
                .position(|e| e.id == id)
                .ok_or_else(|| crate::registry::no_such(id))?;
            entries.remove(pos)
        };
        if self.registry.get(id).is_some_and(|s| s.schedule.is_some()) {
            let _ = self.registry.remove(id);
        }
        tracing::info!(id, name = %removed.name, "scheduled stream removed");
        self.changed.notify_one();
        Ok(())
    }

    /// Replaces the config-file entries (ids in `old_ids`) with those of a reloaded config.
    /// Entries added through the API stay unless the file now claims their id.
    pub fn reload(
        &self,
        old_ids: &std::collections::BTreeSet<u32>,
        new: &[StreamConfig],
    ) -> crate::registry::ReloadDiff {
        let mut diff = crate::registry::ReloadDiff::default();
        {
            let mut entries = self.lock();
            let new_ids: std::collections::BTreeSet<u32> = new.iter().map(|e| e.id).collect();
            entries.retain(|e| {
                let gone = old_ids.contains(&e.id) && !new_ids.contains(&e.id);
                if gone {
                    diff.removed.push(e.id);
                }
                !gone
            });
            for n in new {
                match entries.iter().position(|e| e.id == n.id) {
                    Some(i) if entries[i] == *n => diff.unchanged += 1,
                    Some(i) => {
                        entries[i] = n.clone();
                        diff.updated.push(n.id);
                    }
                    None => {
                        entries.push(n.clone());
                        diff.added.push(n.id);
                    }
                }
            }
        }
        let scheduled = |id: u32| self.registry.get(id).is_some_and(|s| s.schedule.is_some());
        for id in &diff.removed {
            if scheduled(*id) {
                let _ = self.registry.remove(*id);
            }
        }
        for n in new.iter().filter(|n| diff.updated.contains(&n.id)) {
            if scheduled(n.id) {
                let n2 = n.clone();
                if let Err(e) = self.registry.update(n.id, Origin::Config, move |_| Ok(n2)) {
                    tracing::warn!(id = n.id, error = %e, "reloaded scheduled stream could not be updated");
                }
            }
        }
        self.changed.notify_one();
        self.apply(self.clock.now());
        diff
    }

    /// Every entry's profile name, with its id (to check a reload keeps what they use).
    pub fn profile_uses(&self) -> Vec<(u32, Option<String>)> {
        self.lock()
            .iter()
            .map(|e| (e.id, e.ffmpeg_profile.clone()))
            .collect()
    }

    /// Applies windows forever: at start, at each boundary, and when entries change.
    pub async fn run(self: Arc<Self>) {
        loop {
            let now = self.clock.now();
            let next = self.apply(now);
            let wait = next
                .map(|t| (t - now).to_std().unwrap_or_default())
                .unwrap_or(std::time::Duration::from_secs(24 * 3600));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.changed.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::config::{Config, Timestamp};

    fn t(s: &str) -> DateTime<Utc> {
        Timestamp::parse(s).unwrap().utc()
    }

    fn setup() -> (Arc<Scheduler>, Arc<Registry>, ManualClock) {
        let c: Config = serde_yaml::from_str(
            "ffmpeg_profiles: {p: {}}\nstreams:\n- {id: 1, name: Static, source: 'http://h/1', ffmpeg_profile: p}\nscheduled_streams:\n- {id: 900, name: Spot, source: 'http://h/9', ffmpeg_profile: p, schedule: {start: '2024-05-04T18:00:00Z', end: '2024-05-04T20:00:00+00:00'}}\n- {id: 901, name: Open, source: 'http://h/9', ffmpeg_profile: p, schedule: {end: '2024-05-04T19:00:00Z'}}\n- {id: 902, name: Forever, source: 'http://h/9', ffmpeg_profile: p, schedule: {start: '2024-05-04T17:00:00+02:00'}}\n",
        )
        .unwrap();
        let registry = Arc::new(Registry::from_config(&c));
        let clock = ManualClock::new(t("2024-05-04T12:00:00Z"));
        let s = Scheduler::new(
            &c.scheduled_streams,
            registry.clone(),
            Arc::new(clock.clone()),
        );
        (s, registry, clock)
    }

    fn ids(r: &Registry) -> Vec<u32> {
        let mut v: Vec<u32> = r.list().iter().map(|s| s.id).collect();
        v.sort();
        v
    }

    #[test]
    fn window_rules() {
        let w = |a: Option<&str>, b: Option<&str>| Schedule {
            start: a.map(|s| Timestamp::parse(s).unwrap()),
            end: b.map(|s| Timestamp::parse(s).unwrap()),
        };
        let now = t("2024-05-04T19:00:00Z");
        assert_eq!(window_state(None, now), WindowState::Active);
        assert_eq!(window_state(Some(&w(None, None)), now), WindowState::Active);
        assert_eq!(
            window_state(Some(&w(Some("2024-05-04T18:00:00Z"), None)), now),
            WindowState::Active
        );
        assert_eq!(
            window_state(Some(&w(Some("2024-05-04T20:00:00Z"), None)), now),
            WindowState::Pending
        );
        assert_eq!(
            window_state(Some(&w(None, Some("2024-05-04T19:00:00Z"))), now),
            WindowState::Ended
        );
        assert_eq!(
            window_state(Some(&w(None, Some("2024-05-04T21:00:00+02:00"))), now),
            WindowState::Ended
        );
    }

    #[test]
    fn entries_join_and_leave_the_registry_at_their_boundaries() {
        let (s, r, clock) = setup();
        // 12:00 UTC: 901 is open (no start), 900 pending, 902 pending (17:00+02:00 = 15:00Z).
        assert_eq!(s.apply(clock.now()), Some(t("2024-05-04T15:00:00Z")));
        assert_eq!(ids(&r), vec![1, 901]);
        clock.set(t("2024-05-04T15:00:00Z"));
        assert_eq!(s.apply(clock.now()), Some(t("2024-05-04T18:00:00Z")));
        assert_eq!(ids(&r), vec![1, 901, 902]);
        clock.set(t("2024-05-04T18:00:00Z"));
        s.apply(clock.now());
        assert_eq!(ids(&r), vec![1, 900, 901, 902]);
        clock.set(t("2024-05-04T19:00:00Z"));
        s.apply(clock.now());
        assert_eq!(ids(&r), vec![1, 900, 902]);
        clock.set(t("2024-05-04T20:00:00Z"));
        assert_eq!(s.apply(clock.now()), None, "no boundary left");
        assert_eq!(ids(&r), vec![1, 902]);
        let states: Vec<(u32, WindowState)> =
            s.list().iter().map(|l| (l.stream.id, l.state)).collect();
        assert_eq!(
            states,
            vec![
                (900, WindowState::Ended),
                (901, WindowState::Ended),
                (902, WindowState::Active)
            ]
        );
    }

    #[test]
    fn api_entries_are_validated_and_cannot_take_a_static_id() {
        let (s, r, clock) = setup();
        let mut e: StreamConfig = serde_yaml::from_str("{id: 1, name: X, source: 'http://h/x', ffmpeg_profile: p, schedule: {start: '2024-05-04T13:00:00Z'}}").unwrap();
        assert_eq!(
            s.upsert(e.clone(), Origin::Api, false).unwrap_err().kind(),
            ErrorKind::Conflict
        );
        e.id = 950;
        let listed = s.upsert(e.clone(), Origin::Api, false).unwrap();
        assert_eq!(listed.state, WindowState::Pending);
        assert_eq!(
            s.upsert(e.clone(), Origin::Api, false).unwrap_err().kind(),
            ErrorKind::Conflict
        );
        clock.set(t("2024-05-04T13:00:00Z"));
        s.apply(clock.now());
        assert!(r.get(950).is_some());
        s.remove(950).unwrap();
        assert!(r.get(950).is_none());
        e.schedule = None;
        assert_eq!(
            s.upsert(e, Origin::Api, false).unwrap_err().kind(),
            ErrorKind::Invalid
        );
    }
}
