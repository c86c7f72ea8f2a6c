//! HLS sessions: a channel's HLS output while HLS viewers keep asking for it. A session
//! is one more reader of the channel's hub (no second decode or encode), feeding a
//! [`hls::Segmenter`]; it holds one client place on the channel, and ends when no
//! playlist or segment has been requested for a while, when the channel ends, or at
//! shutdown.

use super::hls;
use super::hls::SegmentStats;
use super::subscription::Subscription;
use crate::config::EngineConfig;
use crate::error::{Error, ErrorKind};
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A channel's HLS output while HLS viewers keep asking for it. It holds one client place
/// on the channel (so the producer runs) and ends when no playlist or segment has been
/// requested for a while, when the channel ends, or at shutdown.
pub struct HlsSession {
    pub id: u32,
    /// The output profile it cuts (None: the channel's own).
    pub profile: Option<String>,
    /// Part of every segment name: a later session never reuses a name a cache may hold.
    pub name: String,
    segmenter: Mutex<hls::Segmenter>,
    changed: tokio::sync::Notify,
    created: Instant,
    /// `engine.hls_segment_secs`.
    target: f64,
    /// Milliseconds after `created` of the last request.
    last_request: AtomicU64,
    ended: AtomicBool,
    error: Mutex<Option<String>>,
}

impl std::fmt::Debug for HlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlsSession")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl HlsSession {
    fn new(
        id: u32,
        profile: Option<String>,
        role: hls::Role,
        settings: &EngineConfig,
    ) -> HlsSession {
        use std::time::{SystemTime, UNIX_EPOCH};
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        HlsSession {
            id,
            profile,
            name: format!("{ms:x}"),
            segmenter: Mutex::new(
                hls::Segmenter::new(settings.hls_segment_secs, settings.hls_list_size + 4)
                    .with_role(role)
                    .with_parts(settings.hls_part_secs),
            ),
            changed: tokio::sync::Notify::new(),
            created: Instant::now(),
            target: settings.hls_segment_secs,
            last_request: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            error: Mutex::new(None),
        }
    }

    fn touch(&self) {
        self.last_request
            .store(self.created.elapsed().as_millis() as u64, Ordering::SeqCst);
    }

    fn idle_for(&self) -> Duration {
        let ms = (self.created.elapsed().as_millis() as u64)
            .saturating_sub(self.last_request.load(Ordering::SeqCst));
        Duration::from_millis(ms)
    }

    fn end(&self, error: Option<String>) {
        if error.is_some() {
            *lock(&self.error) = error;
        }
        self.ended.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// What the kept segments measure (for the master playlist).
    pub fn stats(&self) -> SegmentStats {
        lock(&self.segmenter).stats()
    }

    /// A finished segment by sequence number (None once it left the kept window).
    pub fn segment(&self, seq: u64) -> Option<hls::Segment> {
        self.touch();
        lock(&self.segmenter).segment(seq)
    }

    /// The live playlist; waits (up to `limit`) until a new session has enough to list
    /// (see [`hls::Segmenter::listable`]; `early`: the player follows partial segments).
    /// `until` is a blocking reload's `_HLS_msn` and `_HLS_part`: the answer waits (up to
    /// three target durations) until the playlist holds that segment or part.
    pub async fn playlist(
        &self,
        window: usize,
        limit: Duration,
        early: bool,
        until: Option<(u64, Option<usize>)>,
        uri: impl Fn(u64, Option<usize>) -> String,
    ) -> Result<String, Error> {
        self.touch();
        let started = tokio::time::Instant::now();
        let deadline = started + limit;
        // A blocking reload is answered within three target durations in any case.
        let block_end = started + Duration::from_secs_f64(3.0 * self.target);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let seg = lock(&self.segmenter);
                if let Some((msn, _)) = until {
                    if msn > seg.next_part().0 + 2 {
                        return Err(Error::new(
                            ErrorKind::BadRequest,
                            format!(
                                "_HLS_msn={msn} is more than two segments past the live edge ({})",
                                seg.next_part().0
                            ),
                        ));
                    }
                }
                let held = until.is_none_or(|(msn, part)| {
                    seg.holds(msn, part) || tokio::time::Instant::now() >= block_end
                });
                if held {
                    if let Some(p) = seg.playlist(window, early, &uri) {
                        drop(seg);
                        // A first request may have waited: its player asks again from now.
                        self.touch();
                        return Ok(p);
                    }
                }
            }
            if self.ended() {
                let why = lock(&self.error)
                    .clone()
                    .unwrap_or_else(|| "the channel ended".into());
                return Err(Error::new(ErrorKind::Unavailable, why));
            }
            let wake = if until.is_some() && tokio::time::Instant::now() < block_end {
                deadline.min(block_end)
            } else {
                deadline
            };
            if tokio::time::timeout_at(wake, changed).await.is_err() && wake == deadline {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "stream {} produced no HLS playlist within {} s",
                        self.id,
                        limit.as_secs()
                    ),
                ));
            }
        }
    }

    /// Partial segment `index` of segment `seq`. The part that comes next (the one a
    /// playlist's preload hint names) is waited for, up to `limit`; any other part that
    /// is not there (left the window, or further ahead) is None at once.
    pub async fn part(&self, seq: u64, index: usize, limit: Duration) -> Option<hls::Part> {
        self.touch();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let seg = lock(&self.segmenter);
                if let Some(p) = seg.part(seq, index) {
                    return Some(p);
                }
                if seg.next_part() != (seq, index) || self.ended() {
                    return None;
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Whether every segment starts with a keyframe (`EXT-X-INDEPENDENT-SEGMENTS`): not
    /// where the first segment ends early.
    pub fn independent_segments(&self) -> bool {
        !lock(&self.segmenter).ends_early()
    }

    /// Whether this session cuts partial segments.
    pub fn has_parts(&self) -> bool {
        lock(&self.segmenter).part_target() > 0.0
    }
}

/// A channel and one of its output profiles (None: its own).
type Key = (u32, Option<String>);

/// The HLS sessions of every channel and profile, where each one's next session continues
/// its numbering (see [`hls::Segmenter::continue_after`]), and each channel's cuts, which
/// its profiles' sessions follow (see [`hls::Role`]).
#[derive(Debug)]
pub struct HlsSessions {
    map: Mutex<HashMap<Key, Arc<HlsSession>>>,
    positions: Mutex<HashMap<Key, (u64, u64)>>,
    cuts: Mutex<HashMap<u32, Arc<Mutex<hls::Cuts>>>>,
    settings: EngineConfig,
}

impl HlsSessions {
    pub fn new(settings: &EngineConfig) -> HlsSessions {
        HlsSessions {
            map: Mutex::new(HashMap::new()),
            positions: Mutex::new(HashMap::new()),
            cuts: Mutex::new(HashMap::new()),
            settings: settings.clone(),
        }
    }

    /// The running session of channel `id`'s `profile` (None: its own output), or a new
    /// one (true: the caller starts feeding it). A profile's new session follows the
    /// cuts of the channel's own session when that one runs (a master playlist starts it
    /// first), so the renditions' segments line up.
    pub fn open(&self, id: u32, profile: Option<&str>) -> (Arc<HlsSession>, bool) {
        let key: Key = (id, profile.map(str::to_owned));
        let mut map = lock(&self.map);
        if let Some(s) = map.get(&key).filter(|s| !s.ended()) {
            s.touch();
            return (s.clone(), false);
        }
        let cuts = lock(&self.cuts).entry(id).or_default().clone();
        let role = match profile {
            None => hls::Role::Leader(cuts),
            Some(_) if map.get(&(id, None)).is_some_and(|s| !s.ended()) => {
                hls::Role::Follower(cuts)
            }
            Some(_) => hls::Role::Alone,
        };
        let session = Arc::new(HlsSession::new(id, key.1.clone(), role, &self.settings));
        if let Some((seq, disc)) = lock(&self.positions).get(&key).copied() {
            lock(&session.segmenter).continue_after(seq, disc);
        }
        session.touch();
        map.insert(key, session.clone());
        (session, true)
    }

    /// The running session of channel `id`'s `profile`.
    pub fn running(&self, id: u32, profile: Option<&str>) -> Option<Arc<HlsSession>> {
        lock(&self.map)
            .get(&(id, profile.map(str::to_owned)))
            .filter(|s| !s.ended())
            .cloned()
    }

    /// Whether channel `id` has any HLS session running.
    pub fn any_running(&self, id: u32) -> bool {
        lock(&self.map)
            .iter()
            .any(|((i, _), s)| *i == id && !s.ended())
    }

    /// How long a session lives without requests: the playlist window, at least 10 s,
    /// plus 10 s for players that pause between reloads.
    fn idle_limit(&self) -> Duration {
        let window = self.settings.hls_segment_secs * self.settings.hls_list_size as f64;
        Duration::from_secs_f64(window.max(10.0) + 10.0)
    }

    /// A session whose channel could not be joined ends with that error.
    pub fn failed(&self, session: &Arc<HlsSession>, error: &str) {
        session.end(Some(error.to_owned()));
        self.remove(session);
    }

    /// Feeds a session's segmenter from its channel subscription until the session goes
    /// idle, the channel ends or `shutdown` is set.
    pub async fn feed(
        &self,
        session: Arc<HlsSession>,
        mut sub: Subscription,
        shutdown: &AtomicBool,
    ) {
        tracing::info!(channel = session.id, session = %session.name, "HLS output started");
        let idle = self.idle_limit();
        loop {
            tokio::select! {
                parts = sub.next_parts() => match parts {
                    Some(parts) => {
                        let now = Instant::now();
                        let mut seg = lock(&session.segmenter);
                        for (data, kind) in parts {
                            seg.feed(data, kind, now);
                        }
                        drop(seg);
                        session.changed.notify_waiters();
                    }
                    None => break,
                },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if session.idle_for() > idle || shutdown.load(Ordering::SeqCst) {
                break;
            }
        }
        tracing::info!(channel = session.id, session = %session.name, "HLS output stopped");
        let position = lock(&session.segmenter).position();
        lock(&self.positions).insert((session.id, session.profile.clone()), position);
        session.end(None);
        self.remove(&session);
    }

    fn remove(&self, session: &Arc<HlsSession>) {
        let mut map = lock(&self.map);
        let key = (session.id, session.profile.clone());
        if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, session)) {
            map.remove(&key);
        }
    }
}
