//! The media engine: turns channels into MPEG-TS for any number of HTTP clients.
//!
//! - [`source`]: what a source is, its libav protocol whitelist, opening it interruptibly.
//! - [`pipeline`]: one in-process libav session (demux, decode/filter/encode or copy, mux
//!   MPEG-TS into memory).
//! - [`transcode`]: the decode -> filter -> encode chain of one stream.
//! - [`process`] and [`command`]: the `custom_ffmpeg` producer and its argv templating.
//! - [`ts`] and [`hub`]: TS inspection and the per-channel fan-out buffer.
//! - [`channel`]: a channel's runtime and its worker thread.
//! - [`memory`]: handing freed heap memory back to the system when channels stop.
//! - [`hls`]: HLS segments and playlists cut from a channel's TS output.
//! - [`hls_session`]: HLS sessions, one more reader of a channel's hub each.
//! - [`archive`], [`archive_index`] and [`catchup`]: channel archives on disk (one more
//!   reader of the hub each) and the catch-up windows cut from them.
//! - [`recordings`]: recordings (DVR) from a channel's archive or its hub.
//! - [`thumb`] and [`thumbs`]: JPEG thumbnails of a channel's latest keyframe, cached.
//! - [`timeline`] and [`failover`]: pure policy (timestamps, pacing; source failover).
//!
//! This module owns the channel runtimes: at most one producer per channel, started by the
//! first client, stopped after the idle grace period, restarted when the registry says the
//! stream changed (clients stay and continue on the new output), ended when it is deleted
//! or the server shuts down. libav never touches tokio: producers run on named OS threads
//! and hand bytes to the async side through the hub.

pub mod archive;
pub mod archive_index;
pub mod avlog;
pub mod catchup;
pub mod channel;
pub mod command;
pub mod error;
pub mod failover;
pub mod frames;
pub mod hls;
pub mod hls_session;
pub mod hub;
pub mod interleave;
pub mod limits;
pub mod mapping;
pub mod memory;
pub mod pipeline;
pub mod prime;
pub mod process;
pub mod recordings;
pub mod rendition;
pub mod source;
pub mod status;
pub mod subscription;
pub mod thumb;
pub mod thumbs;
pub mod timeline;
pub mod transcode;
pub mod ts;
pub mod ts_relay;
pub mod ts_rewrite;

use crate::config::{EngineConfig, Profile, StreamConfig};
use crate::error::{Error, ErrorKind};
use crate::registry::{Change, Registry};
use crate::sync::lock;
use archive::Archives;
use bytes::Bytes;
use channel::Channel;
pub use hls_session::HlsSession;
use hls_session::HlsSessions;
use status::{State, Status};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
pub use subscription::Subscription;
use thumbs::Thumbnails;

/// A channel's output as the master playlist describes it (see
/// [`Engine::rendition_info`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RenditionInfo {
    /// `1280x720`, when known.
    pub resolution: Option<String>,
    pub frame_rate: Option<f64>,
    /// The audio tracks' codec names (`aac`, `ac3`, ...).
    pub audio: Vec<String>,
}

pub struct Engine {
    registry: Arc<Registry>,
    settings: EngineConfig,
    channels: Mutex<HashMap<u32, Arc<Channel>>>,
    hls: Arc<HlsSessions>,
    /// The most recently watched channels, newest first (`engine.warm_recent`).
    recent: Mutex<Vec<u32>>,
    thumbs: Arc<Thumbnails>,
    /// The channel archives (`engine.archive_dir`), if any.
    archives: Option<Arc<Archives>>,
    /// The recordings (`engine.recordings_dir`), or why there are none.
    recordings: Result<Arc<recordings::Recordings>, String>,
    /// Providers' connection limits.
    limits: limits::Limits,
    shutdown: Arc<AtomicBool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(registry: Arc<Registry>, settings: EngineConfig) -> Arc<Engine> {
        crate::libav::init();
        Arc::new(Engine {
            registry,
            channels: Mutex::new(HashMap::new()),
            hls: Arc::new(HlsSessions::new(&settings)),
            recent: Mutex::new(Vec::new()),
            thumbs: Arc::new(Thumbnails::default()),
            archives: Archives::open(&settings),
            recordings: match settings.recordings_dir.as_deref() {
                None => {
                    Err("recording is off: set engine.recordings_dir in the config file".into())
                }
                Some(d) => recordings::Recordings::open(d).map_err(|e| {
                    tracing::error!("{}; recording is off", e.message());
                    format!("recording is off: {}", e.message())
                }),
            },
            limits: limits::Limits::default(),
            shutdown: Arc::new(AtomicBool::new(false)),
            settings,
        })
    }

    fn profile_for(&self, stream: &StreamConfig) -> Profile {
        stream
            .ffmpeg_profile
            .as_ref()
            .and_then(|p| self.registry.profiles().get(p).cloned())
            .unwrap_or_default()
    }

    /// The stream's extra output profiles (`profiles`), by name.
    fn renditions_for(&self, stream: &StreamConfig) -> Vec<(String, Profile)> {
        let known = self.registry.profiles();
        stream
            .profiles
            .iter()
            .filter_map(|n| known.get(n).map(|p| (n.clone(), p.clone())))
            .collect()
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
            self.renditions_for(&stream),
            self.settings.clone(),
            self.shutdown.clone(),
        );
        map.insert(stream.id, ch.clone());
        Some(ch)
    }

    /// Joins channel `id`: starts its producer if needed and waits (bounded) until it has
    /// a picture. 404 for an unknown channel, 503 if it cannot start.
    pub async fn subscribe(&self, id: u32) -> Result<Subscription, Error> {
        self.join(id, true, None).await
    }

    /// Like [`Engine::subscribe`], for output profile `profile` (None, or the stream's
    /// own `ffmpeg_profile`: the channel's own output; else one of its `profiles`). 404
    /// naming the profiles the stream offers for any other.
    pub async fn subscribe_profile(
        &self,
        id: u32,
        profile: Option<&str>,
    ) -> Result<Subscription, Error> {
        self.join(id, true, profile).await
    }

    /// What the master playlist says of channel `id`'s output of `profile` (None: its
    /// own): its video size, frame rate and audio codecs, as the running channel reports
    /// them. None for an unknown channel or profile.
    pub fn rendition_info(&self, id: u32, profile: Option<&str>) -> Option<RenditionInfo> {
        self.registry.get(id)?;
        let ch = lock(&self.channels).get(&id).cloned()?;
        let st = ch.status();
        // The encoder's frame rate; a copy's is the source's.
        let (codecs, resolution, frame_rate) = match profile {
            None => (
                st.output_codecs.clone(),
                st.output_resolution.clone(),
                st.output_frame_rate,
            ),
            Some(p) => {
                let r = ch.renditions().get(p)?.clone();
                let (codecs, res) = lock(&r.codecs).clone();
                let fps = *lock(&r.frame_rate);
                (codecs, res, fps)
            }
        };
        let frame_rate = frame_rate.or(st.input_frame_rate);
        // "aac (copy) [deu]" -> "aac"; the first is the video.
        let audio = codecs
            .iter()
            .skip(1)
            .filter_map(|c| c.split([' ', '[']).next())
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        Some(RenditionInfo {
            resolution,
            frame_rate,
            audio,
        })
    }

    /// 404 for a profile stream `id` does not offer, naming the ones it does.
    pub fn no_such_profile(&self, id: u32, profile: &str) -> Error {
        let offered = self.offered_profiles(id).unwrap_or_default();
        let offered = if offered.is_empty() {
            "none".to_owned()
        } else {
            offered.join(", ")
        };
        Error::new(
            ErrorKind::NotFound,
            format!("stream {id} has no profile {profile:?}; it offers: {offered}"),
        )
    }

    /// The profiles stream `id` offers viewers: its own first, then its `profiles`.
    pub fn offered_profiles(&self, id: u32) -> Option<Vec<String>> {
        let s = self.registry.get(id)?;
        Some(
            s.ffmpeg_profile
                .iter()
                .chain(&s.profiles)
                .cloned()
                .collect(),
        )
    }

    /// Like [`Engine::subscribe`]; `viewer`: a person watches (it counts for
    /// `engine.warm_recent`; the archive and recordings do not).
    async fn join(
        &self,
        id: u32,
        viewer: bool,
        profile: Option<&str>,
    ) -> Result<Subscription, Error> {
        if self.shutdown.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the server is shutting down",
            ));
        }
        let ch = self
            .channel(id)
            .ok_or_else(|| crate::registry::no_such(id))?;
        let stream = ch.stream();
        let rendition = match profile {
            None => None,
            Some(p) if stream.ffmpeg_profile.as_deref() == Some(p) => None,
            Some(p) => match ch.renditions().get(p) {
                Some(r) => Some(r.clone()),
                None => return Err(self.no_such_profile(id, p)),
            },
        };
        let limit = self.settings.max_clients_per_channel;
        let Some(sub) = Subscription::join(ch.clone(), limit, rendition.clone()) else {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("stream {id} already has its maximum of {limit} clients (engine.max_clients_per_channel)"),
            ));
        };
        if viewer {
            self.watched(id);
        }
        let mut state = ch.subscribe_state();
        if sub.has_keyframe() && ch.is_running() {
            return Ok(sub);
        }
        let admitted = if ch.is_running() {
            None
        } else {
            Some(
                self.limits
                    .admit(&ch, || lock(&self.channels).values().cloned().collect())
                    .await?,
            )
        };
        let outcome = ch.ensure_running();
        drop(admitted);
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
        .await
        .map(|r| r.map(|s| s.clone()));
        match waited {
            // A viewer who waited for the start gets the stream from its first keyframe:
            // the producer may already be a keyframe further (it runs up to a second
            // ahead), and joining at the newest would cost the first viewers that GOP.
            Ok(Ok(State::Running)) => match rendition {
                None => Ok(sub.from_oldest()),
                Some(r) => self.rendition_started(id, &r, sub, limit).await,
            },
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

    /// Waits (bounded) until rendition `r` of running channel `id` has a picture: its
    /// output starts with its first viewer, at the source's next keyframe.
    async fn rendition_started(
        &self,
        id: u32,
        r: &rendition::Rendition,
        sub: Subscription,
        limit: Duration,
    ) -> Result<Subscription, Error> {
        let mut state = r.subscribe_state();
        let waited = tokio::time::timeout(
            limit,
            state.wait_for(|s| {
                matches!(s, rendition::RState::Running | rendition::RState::Failed(_))
            }),
        )
        .await
        .map(|r| r.map(|s| s.clone()));
        match waited {
            Ok(Ok(rendition::RState::Running)) => Ok(sub.from_oldest()),
            Ok(Ok(rendition::RState::Failed(why))) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("stream {id} profile {:?} is unavailable: {why}", r.name),
            )),
            _ => Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "stream {id} profile {:?} produced no picture within {} s",
                    r.name,
                    limit.as_secs()
                ),
            )),
        }
    }

    /// Sets the providers' connection limits (origin `playlist:<name>` -> connections).
    pub fn set_connection_limits(&self, max: std::collections::BTreeMap<String, u32>) {
        self.limits.set(max);
    }

    /// How many connections of provider `origin` are in use now, and by which channels.
    pub fn connections_of(&self, origin: &str) -> Vec<u32> {
        let mut v: Vec<u32> = lock(&self.channels)
            .values()
            .filter(|c| c.is_running() && c.stream().origin.as_deref() == Some(origin))
            .map(|c| c.id)
            .collect();
        v.sort_unstable();
        v
    }

    pub fn settings(&self) -> &EngineConfig {
        &self.settings
    }

    /// The recordings: 404 when recording is off.
    pub fn recordings(&self) -> Result<&Arc<recordings::Recordings>, Error> {
        self.recordings
            .as_ref()
            .map_err(|why| Error::not_found(why.clone()))
    }

    /// Channel `id`'s archive, for catch-up: 404 when the channel is unknown or has none.
    pub fn archive_of(&self, id: u32) -> Result<Arc<Archives>, Error> {
        let stream = self
            .registry
            .get(id)
            .ok_or_else(|| crate::registry::no_such(id))?;
        match &self.archives {
            Some(a) if stream.catchup_hours > 0 => Ok(a.clone()),
            _ => Err(Error::not_found(format!(
                "stream {id} has no catch-up (set its catchup_hours)"
            ))),
        }
    }

    /// The HLS session of channel `id`, started if there is none. 404 for an unknown
    /// channel, 503 at shutdown. A new session starts the channel in the background; its
    /// first playlist request waits until there are segments to list.
    pub fn hls_session(
        self: &Arc<Self>,
        id: u32,
        profile: Option<&str>,
    ) -> Result<Arc<HlsSession>, Error> {
        if self.shutdown.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the server is shutting down",
            ));
        }
        if self.registry.get(id).is_none() {
            return Err(crate::registry::no_such(id));
        }
        let (session, new) = self.hls.open(id, profile);
        if new {
            let engine = self.clone();
            let s = session.clone();
            let profile = profile.map(str::to_owned);
            tokio::spawn(async move {
                match engine.subscribe_profile(id, profile.as_deref()).await {
                    // From the oldest buffered keyframe: on a channel that already runs,
                    // the window fills at once and players start a few segments behind
                    // the live edge, as they should, instead of stalling at it.
                    Ok(sub) => {
                        engine
                            .hls
                            .feed(s, sub.from_oldest(), &engine.shutdown)
                            .await
                    }
                    Err(e) => engine.hls.failed(&s, e.message()),
                }
            });
        }
        Ok(session)
    }

    /// The running HLS session of channel `id`'s `profile` (segments are only served from
    /// one).
    pub fn hls_running(&self, id: u32, profile: Option<&str>) -> Option<Arc<HlsSession>> {
        self.hls.running(id, profile)
    }

    /// Whether channel `id` has HLS output now (of any profile).
    pub fn hls_active(&self, id: u32) -> bool {
        self.hls.any_running(id)
    }

    /// A JPEG of channel `id`'s live picture (see [`Thumbnails::get`]). Never starts a
    /// channel: 404 when it is not running.
    pub async fn thumbnail(self: &Arc<Self>, id: u32) -> Result<Bytes, Error> {
        if self.registry.get(id).is_none() {
            return Err(crate::registry::no_such(id));
        }
        let engine = self.clone();
        let keyframe = move || {
            let ch = lock(&engine.channels).get(&id).cloned();
            ch.filter(|c| c.is_running())
                .and_then(|c| c.hub.keyframe(8 * 1024 * 1024))
        };
        let engine = self.clone();
        let live = move || lock(&engine.channels).keys().copied().collect();
        self.thumbs.clone().get(id, keyframe, live).await
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
        st.archive = self
            .archives
            .as_ref()
            .and_then(|a| a.status(id, stream.catchup_hours));
        Some(st)
    }

    /// Statuses of every channel that has a runtime.
    pub fn statuses(&self) -> Vec<Status> {
        let mut v: Vec<Status> = lock(&self.channels).values().map(|c| c.status()).collect();
        for s in &mut v {
            s.hls = self.hls_active(s.id);
            let hours = self.registry.get(s.id).map_or(0, |c| c.catchup_hours);
            s.archive = self.archives.as_ref().and_then(|a| a.status(s.id, hours));
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
                let renditions = self.renditions_for(&new);
                let same_renditions = ch.renditions().profiles() == renditions;
                if *ch.stream() == *new && ch.profile() == profile && same_renditions {
                    // The runtime was created from this very version (a client joined
                    // between the registry write and this notification).
                    return;
                }
                // A reload can change a profile's definition under an unchanged stream.
                let restart =
                    !ch.stream().same_media(&new) || ch.profile() != profile || !same_renditions;
                ch.reconfigure(new, profile, renditions);
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
                avlog::forget(old.id);
            }
        }
    }

    /// Follows registry changes until shutdown.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().keep_always_on());
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

    /// Keeps every `always_on` channel running: started at once, and started again after
    /// a failure or an end, waiting 5 s, then doubling up to a minute while it keeps
    /// failing. Runs until shutdown.
    async fn keep_always_on(self: Arc<Self>) {
        let mut retry: HashMap<u32, (Instant, Duration)> = HashMap::new();
        // When old segments were last removed (None: not yet).
        let mut expired_at: Option<Instant> = None;
        while !self.shutdown.load(Ordering::SeqCst) {
            let now = Instant::now();
            for s in self.registry.list().iter().filter(|s| s.runs_always()) {
                let Some(ch) = self.channel(s.id) else {
                    continue;
                };
                if ch.is_running() {
                    if ch.status().state == State::Running {
                        retry.remove(&s.id);
                    }
                    continue;
                }
                let (at, wait) = retry
                    .get(&s.id)
                    .copied()
                    .unwrap_or((now, Duration::from_secs(5)));
                if now >= at {
                    tracing::debug!(channel = s.id, "starting an always-on channel");
                    ch.ensure_running();
                    retry.insert(s.id, (now + wait, (wait * 2).min(Duration::from_secs(60))));
                }
            }
            retry.retain(|id, _| self.registry.get(*id).is_some_and(|s| s.runs_always()));
            if let Some(a) = self.archives.clone() {
                self.keep_archives(&a, &mut expired_at).await;
            }
            if let Ok(r) = self.recordings.clone() {
                for rec in r.due(chrono::Utc::now()) {
                    self.record(&r, rec);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Starts the archive of every channel with `catchup_hours` (one more reader of its
    /// hub, fed by [`Engine::archive`]), stops those of channels that no longer have it,
    /// and once a minute removes segments older than their channel's window.
    async fn keep_archives(
        self: &Arc<Self>,
        archives: &Arc<Archives>,
        expired_at: &mut Option<Instant>,
    ) {
        let archived: std::collections::HashSet<u32> = self
            .registry
            .list()
            .iter()
            .filter(|s| s.catchup_hours > 0)
            .map(|s| s.id)
            .collect();
        for &id in &archived {
            if let Some(queue) = archives.start_writer(id) {
                tokio::spawn(self.clone().archive(archives.clone(), id, queue));
            }
        }
        if archives
            .writer_ids()
            .iter()
            .any(|id| !archived.contains(id))
        {
            let a = archives.clone();
            let stop = move || a.stop_writers(|id| archived.contains(&id));
            let _ = tokio::task::spawn_blocking(stop).await;
        }
        if expired_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *expired_at = Some(Instant::now());
            let registry = self.registry.clone();
            let a = archives.clone();
            let _ = tokio::task::spawn_blocking(move || {
                a.expire(archive::now_ms(), |id| {
                    registry.get(id).map(|s| s.catchup_hours)
                })
            })
            .await;
        }
    }

    /// Makes recording `rec`, whose start has come: from the channel's archive when it
    /// has one, else as one more reader of its hub until the end.
    fn record(self: &Arc<Self>, all: &Arc<recordings::Recordings>, rec: recordings::Recording) {
        let Some(stream) = self.registry.get(rec.stream_id) else {
            if let Some(job) = all.begin(&rec, "live") {
                all.finish(&job, Err(format!("stream {} was deleted", rec.stream_id)));
            }
            return;
        };
        let secs = (rec.end - rec.start).num_milliseconds() as f64 / 1000.0;
        let kbps = self.status(rec.stream_id).and_then(|s| s.output_kbps);
        let archives = self.archives.clone().filter(|_| stream.catchup_hours > 0);
        let from = if archives.is_some() {
            "archive"
        } else {
            "live"
        };
        let Some(job) = all.begin(&rec, from) else {
            return;
        };
        let limit = match all.reserve(secs, kbps) {
            Ok(l) => l,
            Err(why) => return all.finish(&job, Err(why)),
        };
        tracing::info!(
            recording = rec.id,
            channel = rec.stream_id,
            from,
            "recording started"
        );
        let (engine, all) = (self.clone(), all.clone());
        match archives {
            Some(a) => {
                tokio::task::spawn_blocking(move || {
                    let result = recordings::from_archive(&a, &job, limit);
                    all.finish(&job, result);
                });
            }
            None => {
                tokio::spawn(async move {
                    let result = engine.record_live(&job, limit).await;
                    // Shutdown: the sidecar still says `recording`, so the next start
                    // takes it up again.
                    if !engine.shutdown.load(Ordering::SeqCst) {
                        all.finish(&job, result);
                    }
                });
            }
        }
    }

    /// A recording as one more reader of the channel's hub, until its end (joining again
    /// when the channel ends or restarts). The file is appended to (a recording taken up
    /// after a restart keeps what it had). Ok: seconds of wall clock it covers.
    async fn record_live(&self, job: &recordings::Job, limit: u64) -> Result<f64, String> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&job.path)
            .map_err(|e| format!("cannot write {}: {e}", job.path.display()))?;
        let had = file.metadata().map_or(0, |m| m.len());
        job.written.store(had, std::sync::atomic::Ordering::Relaxed);
        let end = tokio::time::Instant::now()
            + Duration::from_millis((job.end_ms - archive::now_ms()).max(0) as u64);
        let mut media = recordings::MediaTime::default();
        let mut why = None;
        while tokio::time::Instant::now() < end
            && !job.stopped()
            && !self.shutdown.load(Ordering::SeqCst)
        {
            let mut sub = match self.join(job.stream_id, false, None).await {
                Ok(s) => s,
                Err(e) => {
                    why = Some(e.message().to_owned());
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            loop {
                let next = tokio::time::timeout_at(end, sub.next_parts()).await;
                let Ok(Some(parts)) = next else { break };
                let now = archive::now_ms();
                for (_, kind) in &parts {
                    if let hub::PartKind::Key { pts, .. } = kind {
                        media.key(*pts, now);
                    }
                }
                media.seen(now);
                // On a blocking thread: a slow disk delays this reader only (the hub
                // skips it ahead; it never waits for a reader). Tables parts are copies
                // for readers that cut files, not part of the stream.
                let j = job.clone();
                let (f, wrote) = tokio::task::spawn_blocking(move || {
                    let mut f = file;
                    let r = parts
                        .iter()
                        .filter(|(_, k)| *k != hub::PartKind::Tables)
                        .try_for_each(|(c, _)| j.write(&mut f, c, limit));
                    (f, r)
                })
                .await
                .map_err(|e| e.to_string())?;
                file = f;
                wrote?;
                if job.stopped() {
                    break;
                }
            }
            // Joining again: the time in between is not in the file.
            media.gap();
        }
        let _ = file.flush();
        if job.stopped() {
            return Err("cancelled".into());
        }
        match media.secs() {
            Some(secs) => Ok(secs),
            None => Err(why.unwrap_or_else(|| "the channel produced nothing".into())),
        }
    }

    /// Feeds channel `id`'s archive writer from the channel's hub until the queue is
    /// closed (the channel stops archiving) or shutdown; joins the channel again (with
    /// backoff) when it cannot start or ends.
    async fn archive(
        self: Arc<Self>,
        archives: Arc<Archives>,
        id: u32,
        queue: Arc<archive::Queue>,
    ) {
        let mut wait = Duration::from_secs(1);
        while !queue.closed() && !self.shutdown.load(Ordering::SeqCst) {
            match self.join(id, false, None).await {
                Ok(mut sub) => {
                    wait = Duration::from_secs(1);
                    archive::feed(&archives, id, &queue, &mut sub).await;
                }
                Err(e) => {
                    tracing::debug!(channel = id, "archive: {}", e.message());
                    wait = (wait * 2).min(Duration::from_secs(60));
                }
            }
            queue.gap();
            let until = Instant::now() + wait;
            while Instant::now() < until && !queue.closed() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }

    /// Marks channel `id` as just watched: with `engine.warm_recent: N`, the N most
    /// recently watched channels stay running for twice the idle grace period.
    fn watched(&self, id: u32) {
        let n = self.settings.warm_recent;
        if n == 0 {
            return;
        }
        let mut recent = lock(&self.recent);
        recent.retain(|r| *r != id);
        recent.insert(0, id);
        recent.truncate(n);
        for (cid, ch) in lock(&self.channels).iter() {
            ch.set_warm(recent.contains(cid));
        }
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
        let archives = self.archives.clone();
        let all = async {
            for h in handles {
                join(Some(h)).await;
            }
            // The writers finish their open segments: a clean stop loses nothing.
            if let Some(a) = archives {
                let _ = tokio::task::spawn_blocking(move || a.stop_writers(|_| false)).await;
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
