//! HLS sessions: a channel's HLS output while HLS viewers keep asking for it. A session
//! is one more reader of the channel's hub (no second decode or encode), feeding a
//! [`hls::Segmenter`]; it holds one client place on the channel, and ends when no
//! playlist or segment has been requested for a while, when the channel ends, or at
//! shutdown.

use super::hls;
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
    /// Part of every segment name: a later session never reuses a name a cache may hold.
    pub name: String,
    segmenter: Mutex<hls::Segmenter>,
    changed: tokio::sync::Notify,
    created: Instant,
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
    fn new(id: u32, settings: &EngineConfig) -> HlsSession {
        use std::time::{SystemTime, UNIX_EPOCH};
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        HlsSession {
            id,
            name: format!("{ms:x}"),
            segmenter: Mutex::new(hls::Segmenter::new(
                settings.hls_segment_secs,
                settings.hls_list_size + 4,
            )),
            changed: tokio::sync::Notify::new(),
            created: Instant::now(),
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

    /// A finished segment by sequence number (None once it left the kept window).
    pub fn segment(&self, seq: u64) -> Option<hls::Segment> {
        self.touch();
        lock(&self.segmenter).segment(seq)
    }

    /// The live playlist; waits (up to `limit`) until a new session has enough segments
    /// to list (see [`hls::Segmenter::playlist`]).
    pub async fn playlist(
        &self,
        window: usize,
        limit: Duration,
        uri: impl Fn(u64) -> String,
    ) -> Result<String, Error> {
        self.touch();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(p) = lock(&self.segmenter).playlist(window, &uri) {
                // A first request may have waited for segments: its player asks again
                // from now on.
                self.touch();
                return Ok(p);
            }
            if self.ended() {
                let why = lock(&self.error)
                    .clone()
                    .unwrap_or_else(|| "the channel ended".into());
                return Err(Error::new(ErrorKind::Unavailable, why));
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
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
}

/// The HLS sessions of every channel, and where each channel's next session continues
/// its numbering (see [`hls::Segmenter::continue_after`]).
#[derive(Debug)]
pub struct HlsSessions {
    map: Mutex<HashMap<u32, Arc<HlsSession>>>,
    positions: Mutex<HashMap<u32, (u64, u64)>>,
    settings: EngineConfig,
}

impl HlsSessions {
    pub fn new(settings: &EngineConfig) -> HlsSessions {
        HlsSessions {
            map: Mutex::new(HashMap::new()),
            positions: Mutex::new(HashMap::new()),
            settings: settings.clone(),
        }
    }

    /// Channel `id`'s running session, or a new one (true: the caller starts feeding it).
    pub fn open(&self, id: u32) -> (Arc<HlsSession>, bool) {
        let mut map = lock(&self.map);
        if let Some(s) = map.get(&id).filter(|s| !s.ended()) {
            s.touch();
            return (s.clone(), false);
        }
        let session = Arc::new(HlsSession::new(id, &self.settings));
        if let Some((seq, disc)) = lock(&self.positions).get(&id).copied() {
            lock(&session.segmenter).continue_after(seq, disc);
        }
        session.touch();
        map.insert(id, session.clone());
        (session, true)
    }

    /// The running session of channel `id`.
    pub fn running(&self, id: u32) -> Option<Arc<HlsSession>> {
        lock(&self.map).get(&id).filter(|s| !s.ended()).cloned()
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
        lock(&self.positions).insert(session.id, position);
        session.end(None);
        self.remove(&session);
    }

    fn remove(&self, session: &Arc<HlsSession>) {
        let mut map = lock(&self.map);
        if map
            .get(&session.id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            map.remove(&session.id);
        }
    }
}
