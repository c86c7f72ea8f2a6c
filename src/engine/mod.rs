//! The media engine: turns channels into MPEG-TS for any number of HTTP clients.
//!
//! - [`source`]: what a source is, its libav protocol whitelist, opening it interruptibly.
//! - [`pipeline`]: one in-process libav session (demux, decode/filter/encode or copy, mux
//!   MPEG-TS into memory).
//! - [`transcode`]: the decode -> filter -> encode chain of one stream.
//! - [`process`] and [`command`]: the `custom_ffmpeg` producer and its argv templating.
//! - [`ts`] and [`hub`]: TS inspection and the per-channel fan-out buffer.
//! - [`channel`]: a channel's runtime and its worker thread.
//! - [`hls`]: HLS segments and playlists cut from a channel's TS output.
//! - [`thumb`]: JPEG thumbnails of a channel's latest keyframe.
//!
//! This module owns the channel runtimes: at most one producer per channel, started by the
//! first client, stopped after the idle grace period, restarted when the registry says the
//! stream changed (clients stay and continue on the new output), ended when it is deleted
//! or the server shuts down. libav never touches tokio: producers run on named OS threads
//! and hand bytes to the async side through the hub.

pub mod channel;
pub mod command;
pub mod hls;
pub mod hub;
pub mod pipeline;
pub mod process;
pub mod source;
pub mod status;
pub mod thumb;
pub mod transcode;
pub mod ts;

use crate::config::{EngineConfig, Profile, StreamConfig};
use crate::error::{Error, ErrorKind};
use crate::registry::{Change, Registry};
use bytes::Bytes;
use channel::Channel;
use hub::Cursor;
use status::{State, Status};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Engine {
    registry: Arc<Registry>,
    settings: EngineConfig,
    channels: Mutex<HashMap<u32, Arc<Channel>>>,
    hls: Mutex<HashMap<u32, Arc<HlsSession>>>,
    /// Where each channel's next HLS session continues its numbering (see
    /// [`hls::Segmenter::continue_after`]).
    hls_positions: Mutex<HashMap<u32, (u64, u64)>>,
    /// The latest thumbnail of each channel and when it was made.
    thumbs: Mutex<HashMap<u32, (Instant, Bytes)>>,
    /// One thumbnail is made at a time (they are decodes; the machine may have 2 cores).
    thumb_gate: Arc<tokio::sync::Semaphore>,
    shutdown: Arc<AtomicBool>,
}

/// How long a thumbnail is reused before a new one is made.
const THUMB_FRESH: Duration = Duration::from_secs(5);
/// Thumbnail width in pixels.
const THUMB_WIDTH: u32 = 320;

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

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// A client's subscription to a channel: a stream of TS chunks. Dropping it leaves.
pub struct Subscription {
    channel: Arc<Channel>,
    cursor: Cursor,
}

impl Subscription {
    /// A client's place on `channel`, or None when the channel is at `limit` clients
    /// (0: no limit). Counting and checking are one atomic step.
    fn join(channel: Arc<Channel>, limit: usize) -> Option<Subscription> {
        channel.try_join(limit).then(|| Subscription {
            channel,
            cursor: Cursor::default(),
        })
    }

    /// The next chunks, or None when the channel ends (or this client was too slow).
    pub async fn next(&mut self) -> Option<Vec<Bytes>> {
        self.channel.hub.next(&mut self.cursor).await
    }

    /// Starts this (not yet read) subscription at the oldest keyframe of the channel's
    /// backlog rather than the newest.
    pub fn from_oldest(mut self) -> Subscription {
        self.cursor = Cursor::from_oldest();
        self
    }

    /// Like [`Subscription::next`], each chunk with what it is (for the HLS segmenter).
    pub async fn next_parts(&mut self) -> Option<Vec<(Bytes, hub::PartKind)>> {
        self.channel.hub.next_parts(&mut self.cursor).await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.channel.client_left();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    pub fn new(registry: Arc<Registry>, settings: EngineConfig) -> Arc<Engine> {
        crate::libav::init();
        Arc::new(Engine {
            registry,
            settings,
            channels: Mutex::new(HashMap::new()),
            hls: Mutex::new(HashMap::new()),
            hls_positions: Mutex::new(HashMap::new()),
            thumbs: Mutex::new(HashMap::new()),
            thumb_gate: Arc::new(tokio::sync::Semaphore::new(1)),
            shutdown: Arc::new(AtomicBool::new(false)),
        })
    }

    fn profile_for(&self, stream: &StreamConfig) -> Profile {
        stream
            .ffmpeg_profile
            .as_ref()
            .and_then(|p| self.registry.profiles().get(p).cloned())
            .unwrap_or_default()
    }

    /// The runtime of channel `id`, created from the registry's current entry if needed.
    /// The registry is read under the channels lock: a change applied meanwhile is either
    /// seen here or delivered to the runtime by [`Engine::apply`] afterwards.
    fn channel(&self, id: u32) -> Option<Arc<Channel>> {
        let mut map = lock(&self.channels);
        let stream = self.registry.get(id)?;
        if let Some(ch) = map.get(&id) {
            return Some(ch.clone());
        }
        let profile = self.profile_for(&stream);
        let ch = Channel::new(
            stream.clone(),
            profile,
            self.settings.clone(),
            self.shutdown.clone(),
        );
        map.insert(stream.id, ch.clone());
        Some(ch)
    }

    /// Joins channel `id`: starts its producer if needed and waits (bounded) until it has
    /// a picture. 404 for an unknown channel, 503 if it cannot start.
    pub async fn subscribe(&self, id: u32) -> Result<Subscription, Error> {
        if self.shutdown.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the server is shutting down",
            ));
        }
        let ch = self
            .channel(id)
            .ok_or_else(|| crate::registry::no_such(id))?;
        let limit = self.settings.max_clients_per_channel;
        let Some(sub) = Subscription::join(ch.clone(), limit) else {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("stream {id} already has its maximum of {limit} clients (engine.max_clients_per_channel)"),
            ));
        };
        let mut state = ch.subscribe_state();
        if ch.hub.has_keyframe() && ch.is_running() {
            return Ok(sub);
        }
        let outcome = ch.ensure_running();
        if outcome == channel::Ensure::Removed {
            return Err(crate::registry::no_such(id));
        }
        // A restart in progress passes through `idle`: wait for its outcome instead.
        let restarting = outcome == channel::Ensure::Restarting;
        let limit = Duration::from_secs(self.settings.start_timeout_secs);
        let waited = tokio::time::timeout(
            limit,
            state.wait_for(|s| {
                matches!(s, State::Running | State::Failed) || (*s == State::Idle && !restarting)
            }),
        )
        .await;
        match waited {
            Ok(Ok(s)) if *s == State::Running => Ok(sub),
            Ok(_) => {
                let why = ch
                    .status()
                    .last_error
                    .unwrap_or_else(|| "the channel could not start".into());
                Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("stream {id} is unavailable: {why}"),
                ))
            }
            Err(_) => Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "stream {id} produced no picture within {} s",
                    limit.as_secs()
                ),
            )),
        }
    }

    pub fn settings(&self) -> &EngineConfig {
        &self.settings
    }

    /// The HLS session of channel `id`, started if there is none. 404 for an unknown
    /// channel, 503 at shutdown. A new session starts the channel in the background; its
    /// first playlist request waits until there are segments to list.
    pub fn hls_session(self: &Arc<Self>, id: u32) -> Result<Arc<HlsSession>, Error> {
        if self.shutdown.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the server is shutting down",
            ));
        }
        if self.registry.get(id).is_none() {
            return Err(crate::registry::no_such(id));
        }
        let mut map = lock(&self.hls);
        if let Some(s) = map.get(&id).filter(|s| !s.ended()) {
            s.touch();
            return Ok(s.clone());
        }
        let session = Arc::new(HlsSession::new(id, &self.settings));
        if let Some((seq, disc)) = lock(&self.hls_positions).get(&id).copied() {
            lock(&session.segmenter).continue_after(seq, disc);
        }
        session.touch();
        map.insert(id, session.clone());
        tokio::spawn(self.clone().run_hls(session.clone()));
        Ok(session)
    }

    /// The running HLS session of channel `id` (segments are only served from one).
    pub fn hls_running(&self, id: u32) -> Option<Arc<HlsSession>> {
        lock(&self.hls).get(&id).filter(|s| !s.ended()).cloned()
    }

    /// How long an HLS session lives without requests: the playlist window, at least 10 s,
    /// plus 10 s for players that pause between reloads.
    fn hls_idle(&self) -> Duration {
        let window = self.settings.hls_segment_secs * self.settings.hls_list_size as f64;
        Duration::from_secs_f64(window.max(10.0) + 10.0)
    }

    /// Feeds a session's segmenter from the channel's hub until the session goes idle or
    /// the channel ends.
    async fn run_hls(self: Arc<Self>, session: Arc<HlsSession>) {
        // From the oldest buffered keyframe: on a channel that already runs, the window
        // fills at once and players start a few segments behind the live edge, as they
        // should, instead of stalling at it.
        let mut sub = match self.subscribe(session.id).await {
            Ok(sub) => sub.from_oldest(),
            Err(e) => {
                session.end(Some(e.message().to_owned()));
                self.drop_hls(&session);
                return;
            }
        };
        tracing::info!(channel = session.id, session = %session.name, "HLS output started");
        let idle = self.hls_idle();
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
            if session.idle_for() > idle || self.shutdown.load(Ordering::SeqCst) {
                break;
            }
        }
        tracing::info!(channel = session.id, session = %session.name, "HLS output stopped");
        let position = lock(&session.segmenter).position();
        lock(&self.hls_positions).insert(session.id, position);
        session.end(None);
        self.drop_hls(&session);
    }

    fn drop_hls(&self, session: &Arc<HlsSession>) {
        let mut map = lock(&self.hls);
        if map
            .get(&session.id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            map.remove(&session.id);
        }
    }

    /// A JPEG of channel `id`'s live picture (its latest keyframe), at most
    /// [`THUMB_FRESH`] old. Never starts a channel: 404 when it is not running. One is made
    /// at a time, in a task that caches its result even when the request that asked for it
    /// has gone (a refreshing dashboard drops image requests), so requests never pile up
    /// decodes.
    pub async fn thumbnail(self: &Arc<Self>, id: u32) -> Result<Bytes, Error> {
        if self.registry.get(id).is_none() {
            return Err(crate::registry::no_such(id));
        }
        if let Some(b) = self.fresh_thumbnail(id) {
            return Ok(b);
        }
        let engine = self.clone();
        let made = tokio::spawn(async move {
            let _gate = engine
                .thumb_gate
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::new(ErrorKind::Unavailable, "the server is shutting down"))?;
            if let Some(b) = engine.fresh_thumbnail(id) {
                return Ok(b); // made while this one waited
            }
            let no_picture = || {
                Error::not_found(format!(
                    "stream {id} is not running: there is no picture to show"
                ))
            };
            let ch = lock(&engine.channels).get(&id).cloned();
            let ch = ch.filter(|c| c.is_running()).ok_or_else(no_picture)?;
            let ts = ch.hub.keyframe(8 * 1024 * 1024).ok_or_else(no_picture)?;
            let jpeg = tokio::task::spawn_blocking(move || thumb::jpeg(ts, THUMB_WIDTH))
                .await
                .map_err(|e| Error::new(ErrorKind::Internal, format!("thumbnail: {e}")))?
                .map_err(|e| Error::new(ErrorKind::Unavailable, e))?;
            let jpeg = Bytes::from(jpeg);
            let live: Vec<u32> = lock(&engine.channels).keys().copied().collect();
            let mut thumbs = lock(&engine.thumbs);
            thumbs.retain(|k, _| live.contains(k));
            thumbs.insert(id, (Instant::now(), jpeg.clone()));
            Ok(jpeg)
        });
        made.await
            .map_err(|e| Error::new(ErrorKind::Internal, format!("thumbnail: {e}")))?
    }

    fn fresh_thumbnail(&self, id: u32) -> Option<Bytes> {
        lock(&self.thumbs)
            .get(&id)
            .filter(|(at, _)| at.elapsed() < THUMB_FRESH)
            .map(|(_, b)| b.clone())
    }

    /// Whether channel `id` has HLS output now.
    pub fn hls_active(&self, id: u32) -> bool {
        self.hls_running(id).is_some()
    }

    /// Status of channel `id` (idle if it never ran). None for an unknown channel.
    pub fn status(&self, id: u32) -> Option<Status> {
        let stream = self.registry.get(id)?;
        let mut st = match lock(&self.channels).get(&id) {
            Some(ch) => ch.status(),
            None => Status {
                id,
                producer: channel::producer_of(&stream),
                ..Status::default()
            },
        };
        st.hls = self.hls_active(id);
        Some(st)
    }

    /// Statuses of every channel that has a runtime.
    pub fn statuses(&self) -> Vec<Status> {
        let mut v: Vec<Status> = lock(&self.channels).values().map(|c| c.status()).collect();
        for s in &mut v {
            s.hls = self.hls_active(s.id);
        }
        v.sort_by_key(|s| s.id);
        v
    }

    /// Number of producer threads alive.
    pub fn running(&self) -> usize {
        lock(&self.channels)
            .values()
            .filter(|c| c.is_running())
            .count()
    }

    /// Applies a registry change: a changed stream restarts its producer (clients stay);
    /// a removed one ends its clients.
    pub async fn apply(&self, change: Change) {
        match change {
            Change::Added(_) => {}
            Change::Updated { new, .. } => {
                let Some(ch) = lock(&self.channels).get(&new.id).cloned() else {
                    return;
                };
                let profile = self.profile_for(&new);
                if *ch.stream() == *new && ch.profile() == profile {
                    // The runtime was created from this very version (a client joined
                    // between the registry write and this notification).
                    return;
                }
                // A reload can change a profile's definition under an unchanged stream.
                let restart = !ch.stream().same_media(&new) || ch.profile() != profile;
                ch.reconfigure(new, profile);
                if !restart {
                    // Name, logo, programs...: viewers keep watching undisturbed.
                    return;
                }
                let handle = ch.stop();
                join(handle).await;
                // (The next run resets the hub itself.)
                if ch.clients() > 0 {
                    ch.ensure_running();
                }
            }
            Change::Removed(old) => {
                let Some(ch) = lock(&self.channels).remove(&old.id) else {
                    return;
                };
                ch.remove();
                let handle = ch.stop();
                ch.hub.close();
                join(handle).await;
            }
        }
    }

    /// Follows registry changes until shutdown.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mut rx = self.registry.subscribe();
        let engine = self.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(change) => engine.apply(change).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "engine missed registry changes; restarting changed channels"
                        );
                        engine.resync().await;
                    }
                    Err(_) => break,
                }
            }
        })
    }

    /// After missed notifications: make every runtime match the registry again.
    async fn resync(&self) {
        let chans: Vec<Arc<Channel>> = lock(&self.channels).values().cloned().collect();
        for ch in chans {
            match self.registry.get(ch.id) {
                None => {
                    self.apply(Change::Removed(ch.stream())).await;
                }
                Some(s) if *s != *ch.stream() => {
                    self.apply(Change::Updated {
                        old: ch.stream(),
                        new: s,
                    })
                    .await;
                }
                Some(_) => {}
            }
        }
    }

    /// Stops every producer and ends every client; waits up to `limit` for the threads.
    pub async fn shutdown(&self, limit: Duration) {
        self.shutdown.store(true, Ordering::SeqCst);
        let chans: Vec<Arc<Channel>> = lock(&self.channels).drain().map(|(_, c)| c).collect();
        let mut handles = Vec::new();
        for ch in &chans {
            ch.remove();
            handles.extend(ch.stop());
            ch.hub.close();
        }
        let all = async {
            for h in handles {
                join(Some(h)).await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("some channel threads did not stop within {limit:?}");
        }
    }
}

async fn join(handle: Option<std::thread::JoinHandle<()>>) {
    if let Some(h) = handle {
        let _ = tokio::task::spawn_blocking(move || h.join()).await;
    }
}
