//! One channel's runtime: its hub, its clients, and the worker thread that produces output.
//!
//! The worker is a named `std::thread` ("amps-ch-<id>") because libav calls block; it takes
//! no commands but a stop flag, and reports through the status and a `watch` channel the
//! HTTP side awaits. It runs sessions of the producer back to back: a looped file starts
//! over at once, a broken source is reopened with backoff while clients watch, and it ends
//! when asked to stop, when the idle grace period after the last client has passed, or when
//! a source that never produced anything keeps failing (the first client then gets a 503;
//! the next request tries again).

use super::failover::{CheckBackoff, Failover, Report, Session, Step};
use super::hub::Hub;
use super::pipeline::{self, End};
use super::rendition::Renditions;
use super::status::{State, Status};
use super::timeline::Timeline;
use crate::config::source::SourceKind;
use crate::config::{EngineConfig, Profile, StreamConfig};
use crate::sync::lock;
use chrono::Utc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

struct Worker {
    stop: Arc<AtomicBool>,
    /// Taken by [`Channel::stop`]: whoever stops the worker joins it.
    handle: Option<JoinHandle<()>>,
    /// Set by the thread, holding the worker lock, once it has decided to end.
    exiting: Arc<AtomicBool>,
    /// Set by the thread as its very last act (also when it panics).
    done: Arc<AtomicBool>,
}

impl Worker {
    /// Producing, or about to: neither deciding to end nor ended.
    fn alive(&self) -> bool {
        !self.exiting.load(Ordering::SeqCst) && !self.done.load(Ordering::SeqCst)
    }
}

/// Marks the worker done when its thread ends, however it ends. A panic (a bug) must not
/// leave clients waiting on a hub nobody writes to.
struct DoneGuard {
    ch: Arc<Channel>,
    done: Arc<AtomicBool>,
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                channel = self.ch.id,
                "the channel producer crashed; its clients are disconnected"
            );
            lock(&self.ch.status).last_error = Some("internal error: the producer crashed".into());
            self.ch.set_state(State::Failed);
            self.ch.hub.close();
            self.ch.renditions().close();
        }
        self.done.store(true, Ordering::SeqCst);
    }
}

pub struct Channel {
    pub id: u32,
    stream: Mutex<Arc<StreamConfig>>,
    profile: Mutex<Profile>,
    pub hub: Arc<Hub>,
    clients: AtomicUsize,
    /// Milliseconds since `epoch` when the last client left.
    idle_since: AtomicU64,
    epoch: Instant,
    status: Arc<Mutex<Status>>,
    /// Producer output before the current run started (for the run's bitrate).
    bytes_at_start: AtomicU64,
    state: watch::Sender<State>,
    worker: Mutex<Option<Worker>>,
    /// The output timeline between runs.
    timeline: Mutex<Timeline>,
    /// One of the most recently watched channels (see [`Channel::warm`]).
    recent: AtomicBool,
    /// Deleted (or shutting down): no new run may start.
    removed: AtomicBool,
    /// Sources a TS relay session found not to be MPEG-TS: they go to the libav pipeline
    /// straight away from then on.
    not_ts: Mutex<std::collections::HashSet<String>>,
    /// The extra output profiles viewers may ask for (`streams[].profiles`).
    renditions: Mutex<Arc<Renditions>>,
    settings: EngineConfig,
    shutdown: Arc<AtomicBool>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("id", &self.id).finish()
    }
}

/// "process" for a `custom_ffmpeg` channel, "libav" otherwise.
pub fn producer_of(stream: &StreamConfig) -> &'static str {
    if stream.custom_ffmpeg.is_some() {
        "process"
    } else {
        "libav"
    }
}

/// What [`Channel::ensure_running`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensure {
    /// A producer was already running.
    Running,
    /// A new producer was started.
    Started,
    /// The producer is being restarted by a configuration change; it comes back.
    Restarting,
    /// The channel was deleted.
    Removed,
}

impl Channel {
    pub fn new(
        stream: Arc<StreamConfig>,
        profile: Profile,
        renditions: Vec<(String, Profile)>,
        settings: EngineConfig,
        shutdown: Arc<AtomicBool>,
    ) -> Arc<Channel> {
        let (state, _) = watch::channel(State::Idle);
        Arc::new(Channel {
            id: stream.id,
            hub: Arc::new(Hub::new(settings.buffer_bytes, settings.max_client_skips)),
            stream: Mutex::new(stream.clone()),
            profile: Mutex::new(profile),
            clients: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            epoch: Instant::now(),
            status: Arc::new(Mutex::new(Status {
                producer: producer_of(&stream),
                ..Status::default()
            })),
            bytes_at_start: AtomicU64::new(0),
            state,
            worker: Mutex::new(None),
            timeline: Mutex::new(Timeline::default()),
            recent: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            not_ts: Mutex::new(std::collections::HashSet::new()),
            renditions: Mutex::new(Arc::new(Renditions::new(renditions, &settings))),
            settings,
            shutdown,
        })
    }

    pub fn stream(&self) -> Arc<StreamConfig> {
        lock(&self.stream).clone()
    }

    /// The profile the next run will use.
    pub fn profile(&self) -> Profile {
        lock(&self.profile).clone()
    }

    /// Replaces the channel's configuration (the caller restarts the worker). Changed
    /// extra profiles end their viewers (they come back to the new ones).
    pub fn reconfigure(
        &self,
        stream: Arc<StreamConfig>,
        profile: Profile,
        renditions: Vec<(String, Profile)>,
    ) {
        lock(&self.status).producer = producer_of(&stream);
        *lock(&self.stream) = stream;
        *lock(&self.profile) = profile;
        let mut r = lock(&self.renditions);
        if r.profiles() != renditions {
            r.close();
            *r = Arc::new(Renditions::new(renditions, &self.settings));
        }
    }

    /// The extra output profiles, as the channel runs them now.
    pub fn renditions(&self) -> Arc<Renditions> {
        lock(&self.renditions).clone()
    }

    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::SeqCst)
    }

    /// Counts a new client unless the channel has `limit` already (0: no limit).
    pub fn try_join(&self, limit: usize) -> bool {
        self.clients
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (limit == 0 || c < limit).then_some(c + 1)
            })
            .is_ok()
    }

    /// Marks the channel deleted (or the server stopping): it never starts again.
    pub fn remove(&self) {
        let _w = lock(&self.worker);
        self.removed.store(true, Ordering::SeqCst);
    }

    pub fn client_left(&self) {
        if self.clients.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle_since
                .store(self.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        }
    }

    /// Whether the channel has had no viewer for its grace period: `idle_grace_secs`,
    /// twice that while it is one of the recently watched channels kept warm, and never
    /// for an `always_on` channel.
    fn idle_expired(&self) -> bool {
        if self.stream().runs_always() {
            return false;
        }
        let grace = self.settings.idle_grace_secs * 1000 * if self.warm() { 2 } else { 1 };
        self.clients() == 0
            && (self.epoch.elapsed().as_millis() as u64)
                .saturating_sub(self.idle_since.load(Ordering::SeqCst))
                > grace
    }

    /// Kept warm as one of the `engine.warm_recent` most recently watched channels.
    pub fn warm(&self) -> bool {
        self.recent.load(Ordering::SeqCst)
    }

    pub fn set_warm(&self, warm: bool) {
        self.recent.store(warm, Ordering::SeqCst);
    }

    pub fn subscribe_state(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }

    fn set_state(&self, s: State) {
        lock(&self.status).state = s.clone();
        self.state.send_replace(s);
    }

    /// A snapshot of the status with live counters filled in.
    pub fn status(&self) -> Status {
        let mut s = lock(&self.status).clone();
        s.id = self.id;
        s.clients = self.clients();
        let st = &self.hub.stats;
        s.bytes_in = st.bytes_in.load(Ordering::Relaxed);
        s.bytes_out = st.bytes_out.load(Ordering::Relaxed);
        s.client_skips = st.skips.load(Ordering::Relaxed);
        s.client_drops = st.drops.load(Ordering::Relaxed);
        s.buffered_bytes = self.hub.buffered_bytes();
        s.libav_log = super::avlog::tail(self.id);
        s.always_on = self.stream().runs_always();
        s.warm = self.warm();
        s.renditions = self.renditions().list.iter().map(|r| r.status()).collect();
        let active = matches!(s.state, State::Starting | State::Running | State::Retrying);
        if let (Some(t), true) = (s.started_at, active) {
            let secs = (Utc::now() - t).num_seconds().max(0) as u64;
            s.uptime_secs = Some(secs);
            let run_bytes = s
                .bytes_in
                .saturating_sub(self.bytes_at_start.load(Ordering::Relaxed));
            s.output_kbps = (run_bytes * 8 / 1000).checked_div(secs);
        }
        s
    }

    /// Whether a worker thread is producing (and not on its way out).
    pub fn is_running(&self) -> bool {
        lock(&self.worker).as_ref().is_some_and(Worker::alive)
    }

    /// Starts the worker unless it is running. Called for every new client.
    ///
    /// Never two producers at once: a worker being stopped by someone else (a restart in
    /// progress) is left to them, and they start the next one if clients remain; a worker
    /// that has decided to end is joined first (it only has to return).
    pub fn ensure_running(self: &Arc<Self>) -> Ensure {
        let mut w = lock(&self.worker);
        if self.removed.load(Ordering::SeqCst) {
            self.hub.close();
            return Ensure::Removed;
        }
        if w.as_ref().is_some_and(Worker::alive) {
            return Ensure::Running;
        }
        if let Some(old) = w.take() {
            match old.handle {
                Some(h) => {
                    let _ = h.join();
                }
                None if !old.done.load(Ordering::SeqCst) => {
                    // Being stopped and joined elsewhere: put it back and let them restart.
                    *w = Some(old);
                    return Ensure::Restarting;
                }
                None => {}
            }
        }
        // A new run starts from an empty backlog: nothing stale for the first client, and
        // "running" means this run produced a keyframe.
        self.hub.reset();
        self.bytes_at_start.store(
            self.hub.stats.bytes_in.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let exiting = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let ch = self.clone();
        let flags = (stop.clone(), exiting.clone(), done.clone());
        self.set_state(State::Starting);
        {
            let mut st = lock(&self.status);
            st.started_at = Some(Utc::now());
            st.last_error = None;
            st.starts += 1;
        }
        let spawned = std::thread::Builder::new()
            .name(format!("amps-ch-{}", self.id))
            .spawn(move || {
                let _log = super::avlog::enter(ch.id);
                ch.work(flags.0, flags.1, flags.2)
            });
        match spawned {
            Ok(handle) => {
                *w = Some(Worker {
                    stop,
                    handle: Some(handle),
                    exiting,
                    done,
                })
            }
            Err(e) => {
                lock(&self.status).last_error = Some(format!("cannot start a thread: {e}"));
                self.set_state(State::Failed);
            }
        }
        Ensure::Started
    }

    /// Asks the worker to stop and returns its handle for joining (off the async runtime).
    /// The worker stays in its slot until it has ended, so nobody starts a second one.
    pub fn stop(&self) -> Option<JoinHandle<()>> {
        let mut w = lock(&self.worker);
        let worker = w.as_mut()?;
        worker.stop.store(true, Ordering::SeqCst);
        worker.handle.take()
    }

    /// The worker thread: runs the producer until asked to stop, until the idle grace
    /// period after the last client has passed (unless a client joins while it decides),
    /// or until the channel ends for good.
    fn work(
        self: Arc<Self>,
        stop: Arc<AtomicBool>,
        exiting: Arc<AtomicBool>,
        done: Arc<AtomicBool>,
    ) {
        let _guard = DoneGuard {
            ch: self.clone(),
            done,
        };
        // The output timeline goes on from the last run: a client kept across a change of
        // source or profile sees timestamps continue, not start over.
        let mut timeline = std::mem::take(&mut *lock(&self.timeline));
        loop {
            let ended = self.produce(&stop, &mut timeline);
            // Decide under the worker lock, so a client joining now either sees this
            // worker alive (and we continue for it) or sees it exiting (and starts anew).
            let _w = lock(&self.worker);
            let asked = stop.load(Ordering::SeqCst) || self.shutdown.load(Ordering::SeqCst);
            if !ended && !asked && self.clients() > 0 {
                tracing::debug!(
                    channel = self.id,
                    "a client joined as the channel was stopping; continuing"
                );
                continue;
            }
            exiting.store(true, Ordering::SeqCst);
            if !ended {
                self.set_state(State::Idle);
            }
            if self.clients() == 0 {
                // Nobody watches: free the backlog now rather than at the next start.
                self.hub.reset();
            }
            self.renditions().stopped();
            break;
        }
        *lock(&self.timeline) = timeline;
        tracing::info!(channel = self.id, "channel stopped");
        if self.clients() == 0 {
            super::memory::give_back();
        }
    }

    /// Records a switch to source `index` (0: the primary) and why.
    fn switch_to(&self, index: usize, source: &str, why: &str) {
        let shown = crate::auth::redact_source(source);
        if index == 0 {
            tracing::info!(channel = self.id, source = %shown, why, "back on the primary source");
        } else {
            tracing::warn!(channel = self.id, backup = index, source = %shown, why, "switching to a backup source");
        }
        let mut st = lock(&self.status);
        st.active_source = Some(shown);
        st.active_source_index = index;
        st.source_switches += 1;
        st.last_switch = Some(why.to_owned());
    }

    /// The primary source and its backups, each as the stream and profile to run with.
    fn candidates(&self) -> Vec<(StreamConfig, Profile)> {
        let stream = self.stream();
        let profile = lock(&self.profile).clone();
        let mut primary = profile.clone();
        primary.input_options.extend(stream.input_options.clone());
        std::iter::once((stream.as_ref().clone(), primary))
            .chain(stream.backup_sources.iter().map(|b| {
                let mut s = stream.as_ref().clone();
                s.source = b.source.clone();
                let mut p = profile.clone();
                if !b.input_options.is_empty() {
                    p.input_options = b.input_options.clone();
                }
                (s, p)
            }))
            .collect()
    }

    /// Runs one producer session; also whether it delivered output.
    fn session(
        self: &Arc<Self>,
        (stream, profile): &(StreamConfig, Profile),
        keep_going: Arc<dyn Fn() -> bool + Send + Sync>,
        timeline: &mut Timeline,
    ) -> (Session, bool) {
        let on_running = || {
            if *self.state.borrow() != State::Running {
                self.set_state(State::Running);
            }
        };
        let ctx = pipeline::Ctx {
            stream,
            profile,
            hub: self.hub.clone(),
            status: &self.status,
            keep_going,
            on_running: &on_running,
            stall_timeout: Duration::from_secs(self.settings.stall_timeout_secs),
            open_timeout: Duration::from_secs(self.settings.start_timeout_secs),
            renditions: (!stream.profiles.is_empty()).then(|| self.renditions()),
        };
        let before = self.hub.stats.bytes_in.load(Ordering::Relaxed);
        let relay = super::ts_relay::eligible(stream, profile)
            && !lock(&self.not_ts).contains(&stream.source);
        lock(&self.status).ts_relay = relay;
        let result = match &stream.custom_ffmpeg {
            Some(cmd) => super::process::run(&ctx, cmd, self.settings.ffmpeg_path.as_deref()),
            None if relay => match super::ts_relay::run(&ctx, timeline) {
                Ok(Some(end)) => Ok(end),
                Ok(None) => {
                    tracing::info!(
                        channel = self.id,
                        "the source is not MPEG-TS: demuxing it with libav"
                    );
                    lock(&self.not_ts).insert(stream.source.clone());
                    lock(&self.status).ts_relay = false;
                    pipeline::run(&ctx, timeline)
                }
                Err(e) => Err(e),
            },
            None => pipeline::run(&ctx, timeline),
        };
        let produced = self.hub.stats.bytes_in.load(Ordering::Relaxed) > before;
        let session = match result {
            Ok(End::Stopped) => Session::Stopped,
            Ok(End::Eof) => Session::Eof,
            Err(e) => {
                tracing::debug!(channel = e.channel, stage = e.stage.as_str(), source = %e.source, error = %e.detail, "producer session failed");
                Session::Failed(e.detail)
            }
        };
        (session, produced)
    }

    /// Runs producer sessions back to back, following the [`Failover`] policy. Returns
    /// true when the channel ended for good (a file without `loop` finished, or no source
    /// produced anything), false when it stopped (asked to, or idle). While a backup
    /// plays, the primary is checked in the background and taken back once healthy.
    fn produce(self: &Arc<Self>, stop: &Arc<AtomicBool>, timeline: &mut Timeline) -> bool {
        let base: Arc<dyn Fn() -> bool + Send + Sync> = {
            let ch = self.clone();
            let stop = stop.clone();
            Arc::new(move || {
                !stop.load(Ordering::SeqCst)
                    && !ch.shutdown.load(Ordering::SeqCst)
                    && !ch.idle_expired()
            })
        };
        let stream = self.stream();
        let candidates = self.candidates();
        let mut policy = Failover::new(candidates.len());
        let primary_back = Arc::new(AtomicBool::new(false));
        // On a backup, a session also ends when the primary is back.
        let on_backup: Arc<dyn Fn() -> bool + Send + Sync> = {
            let (b, back) = (base.clone(), primary_back.clone());
            Arc::new(move || b() && !back.load(Ordering::SeqCst))
        };
        let mut checker: Option<JoinHandle<()>> = None;
        let producer = producer_of(&stream);
        {
            let mut st = lock(&self.status);
            st.producer = producer;
            st.active_source = Some(crate::auth::redact_source(&stream.source));
            st.active_source_index = 0;
        }
        tracing::info!(channel = self.id, name = %stream.name, producer, "channel starting");
        let ended = loop {
            if !base() {
                break false;
            }
            let cur = &candidates[policy.active()];
            let keep_going = if policy.active() == 0 {
                base.clone()
            } else {
                on_backup.clone()
            };
            let (session, produced) = self.session(cur, keep_going, timeline);
            let report = Report {
                session,
                produced,
                wanted: base(),
                looping: cur.0.loop_source,
                file: SourceKind::classify(&cur.0.source) == SourceKind::File,
                has_keyframe: self.hub.has_keyframe(),
            };
            let (error, retry) =
                match policy.after(report, || primary_back.swap(false, Ordering::SeqCst)) {
                    Step::Stop => break false,
                    Step::Again => continue,
                    Step::BackToPrimary => {
                        let why = "the primary source is healthy again";
                        self.switch_to(0, &candidates[0].0.source, why);
                        continue;
                    }
                    Step::FileEnded => {
                        tracing::info!(channel = self.id, "the file ended");
                        self.set_state(State::Idle);
                        self.hub.close();
                        self.renditions().close();
                        break true;
                    }
                    Step::Failed { error, retry } => (error, retry),
                };
            tracing::warn!(channel = self.id, error = %error, "channel producer stopped");
            {
                let mut st = lock(&self.status);
                st.last_error = Some(error);
                st.restarts += 1;
            }
            let Some(retry) = retry else {
                lock(&self.status).start_failures += 1;
                self.set_state(State::Failed);
                tracing::warn!(channel = self.id, "channel failed to start");
                // Clients still attached (e.g. after a change to a bad source) get an end.
                self.hub.close();
                self.renditions().close();
                break true;
            };
            self.set_state(State::Retrying);
            if let Some(sw) = retry.switch {
                self.switch_to(sw.to, &candidates[sw.to].0.source, &sw.why);
                if sw.to != 0 && checker.as_ref().is_none_or(|h| h.is_finished()) {
                    primary_back.store(false, Ordering::SeqCst);
                    checker =
                        self.watch_primary(&candidates[0], primary_back.clone(), on_backup.clone());
                }
            }
            let until = Instant::now() + retry.wait;
            while Instant::now() < until && base() {
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        if let Some(h) = checker {
            // It sees the same stop conditions; at most an interruptible open to finish.
            primary_back.store(true, Ordering::SeqCst);
            let _ = h.join();
        }
        ended
    }

    /// Checks the primary source in the background until it is healthy (sets `back`) or
    /// the channel stops. Never hammers a provider: the wait doubles after each failed
    /// check, up to 5 minutes.
    fn watch_primary(
        &self,
        primary: &(StreamConfig, Profile),
        back: Arc<AtomicBool>,
        keep_going: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> Option<JoinHandle<()>> {
        let (stream, profile) = primary.clone();
        let mut waits = CheckBackoff::new(Duration::from_secs(self.settings.failback_check_secs));
        let open_timeout = Duration::from_secs(self.settings.start_timeout_secs);
        let id = self.id;
        let spawned = std::thread::Builder::new()
            .name(format!("amps-chk-{id}"))
            .spawn(move || loop {
                let _log = super::avlog::enter(id);
                let until = Instant::now() + waits.next_wait();
                while Instant::now() < until {
                    if !keep_going() || back.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let healthy = pipeline::probe(&stream, &profile, open_timeout, keep_going.clone());
                tracing::debug!(channel = id, healthy, "checked the primary source");
                if healthy {
                    back.store(true, Ordering::SeqCst);
                    return;
                }
            });
        match spawned {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(channel = id, error = %e, "cannot start the primary source check");
                None
            }
        }
    }
}
