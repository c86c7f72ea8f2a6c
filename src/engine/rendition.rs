//! A channel's extra output profiles (`streams[].profiles`): each a rendition with its own
//! hub and viewers, fed by the channel's one producer (see [`super::pipeline`]): the source
//! is read and decoded once however many profiles are watched, and a profile's encoder
//! runs only while it has viewers (and for the idle grace after the last one leaves).

use super::hub::Hub;
use super::timeline::Timeline;
use crate::config::{EngineConfig, Profile};
use crate::sync::lock;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Where a rendition's output stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RState {
    /// No output (nobody asked for it, or its viewers left).
    Idle,
    /// Its output is set up; no keyframe yet.
    Starting,
    /// Its hub holds a keyframe: viewers can start.
    Running,
    /// Its output could not be set up or broke; why.
    Failed(String),
}

/// A rendition as the channel's status lists it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RenditionStatus {
    pub profile: String,
    /// `idle`, `starting`, `running` or `failed`.
    pub state: &'static str,
    pub clients: usize,
    pub output_codecs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_resolution: Option<String>,
    pub frames_encoded: u64,
    /// Decoded frames this rendition's encoder could not take in time (it fell behind the
    /// source); the other profiles went on unaffected.
    pub frames_dropped: u64,
    pub bytes_out: u64,
    /// The larger profile whose scaled pictures this one scales further (instead of
    /// the decoded frames), while both run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaled_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

pub struct Rendition {
    /// The profile's name (`?profile=<name>`).
    pub name: String,
    pub profile: Profile,
    pub hub: Arc<Hub>,
    clients: AtomicUsize,
    /// Milliseconds since `epoch` when the last viewer left.
    idle_since: AtomicU64,
    epoch: Instant,
    /// The output timeline between outputs (a reconnect of the source continues it).
    pub timeline: Mutex<Timeline>,
    state: watch::Sender<RState>,
    /// An output is attached (set by the producer).
    live: AtomicBool,
    pub frames: AtomicU64,
    pub dropped: AtomicU64,
    pub codecs: Mutex<(Vec<String>, Option<String>)>,
    /// The encoded video's frame rate, once its encoder has started.
    pub frame_rate: Mutex<Option<f64>>,
    scaled_from: Mutex<Option<String>>,
}

impl std::fmt::Debug for Rendition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendition")
            .field("name", &self.name)
            .finish()
    }
}

impl Rendition {
    fn new(name: String, profile: Profile, settings: &EngineConfig) -> Rendition {
        Rendition {
            name,
            profile,
            hub: Arc::new(Hub::new(settings.buffer_bytes, settings.max_client_skips)),
            clients: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            epoch: Instant::now(),
            timeline: Mutex::new(Timeline::default()),
            state: watch::channel(RState::Idle).0,
            live: AtomicBool::new(false),
            frames: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            codecs: Mutex::new((Vec::new(), None)),
            frame_rate: Mutex::new(None),
            scaled_from: Mutex::new(None),
        }
    }

    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::SeqCst)
    }

    /// A viewer joins. After a failure of an output that no longer runs, the failure is
    /// history: this viewer's wait is for a new start (which may fail again).
    pub(super) fn joined(&self) {
        self.clients.fetch_add(1, Ordering::SeqCst);
        if !self.is_live() {
            self.state.send_if_modified(|s| {
                let stale = matches!(s, RState::Failed(_));
                if stale {
                    *s = RState::Idle;
                }
                stale
            });
        }
    }

    /// Whether its output failed and has not been tried again since.
    pub(super) fn is_failed(&self) -> bool {
        matches!(*self.state.borrow(), RState::Failed(_))
    }

    pub(super) fn left(&self) {
        if self.clients.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle_since
                .store(self.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        }
    }

    /// Whether the producer should run this rendition's output: it has viewers, or its
    /// output runs and the last viewer left less than `grace` ago.
    pub(super) fn wanted(&self, grace: Duration) -> bool {
        if self.clients() > 0 {
            return true;
        }
        let idle = (self.epoch.elapsed().as_millis() as u64)
            .saturating_sub(self.idle_since.load(Ordering::SeqCst));
        self.is_live() && idle <= grace.as_millis() as u64
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    pub fn subscribe_state(&self) -> watch::Receiver<RState> {
        self.state.subscribe()
    }

    pub(super) fn set_state(&self, s: RState) {
        self.state.send_if_modified(|cur| {
            let changed = *cur != s;
            *cur = s;
            changed
        });
    }

    /// The producer attached an output.
    pub(super) fn attached(&self) {
        self.live.store(true, Ordering::SeqCst);
        if self.hub.has_keyframe() {
            self.set_state(RState::Running);
        } else {
            self.set_state(RState::Starting);
        }
    }

    /// The producer's output for this rendition ended: `Some(error)` when it broke (its
    /// viewers are ended), None when its viewers had left.
    pub(super) fn detached(&self, error: Option<String>) {
        self.live.store(false, Ordering::SeqCst);
        self.set_scaled_from(None);
        match error {
            Some(e) => {
                self.set_state(RState::Failed(e));
                self.hub.close();
            }
            None => {
                self.set_state(RState::Idle);
                if self.clients() == 0 {
                    self.hub.reset();
                }
            }
        }
    }

    /// The profile it scales from now (set by the producer).
    pub(super) fn set_scaled_from(&self, from: Option<String>) {
        *lock(&self.scaled_from) = from;
    }

    pub fn status(&self) -> RenditionStatus {
        let state = self.state.borrow().clone();
        let st = &self.hub.stats;
        let (codecs, res) = lock(&self.codecs).clone();
        RenditionStatus {
            profile: self.name.clone(),
            state: match state {
                RState::Idle => "idle",
                RState::Starting => "starting",
                RState::Running => "running",
                RState::Failed(_) => "failed",
            },
            clients: self.clients(),
            output_codecs: codecs,
            output_resolution: res,
            frames_encoded: self.frames.load(Ordering::Relaxed),
            frames_dropped: self.dropped.load(Ordering::Relaxed),
            bytes_out: st.bytes_out.load(Ordering::Relaxed),
            scaled_from: lock(&self.scaled_from).clone(),
            last_error: match state {
                RState::Failed(e) => Some(e),
                _ => None,
            },
        }
    }
}

/// A channel's renditions, in the order of `streams[].profiles`.
pub struct Renditions {
    pub list: Vec<Arc<Rendition>>,
    /// How long an output runs on after its last viewer left (`engine.idle_grace_secs`).
    pub grace: Duration,
}

impl Renditions {
    pub fn new(profiles: Vec<(String, Profile)>, settings: &EngineConfig) -> Renditions {
        Renditions {
            list: profiles
                .into_iter()
                .map(|(n, p)| Arc::new(Rendition::new(n, p, settings)))
                .collect(),
            grace: Duration::from_secs(settings.idle_grace_secs),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Rendition>> {
        self.list.iter().find(|r| r.name == name)
    }

    /// The names and profiles, to compare with a new configuration.
    pub fn profiles(&self) -> Vec<(String, Profile)> {
        self.list
            .iter()
            .map(|r| (r.name.clone(), r.profile.clone()))
            .collect()
    }

    /// Ends every rendition's viewers (the channel ended or was reconfigured).
    pub fn close(&self) {
        for r in &self.list {
            r.live.store(false, Ordering::SeqCst);
            r.hub.close();
        }
    }

    /// The channel's producer stopped: outputs nobody watches forget their backlog.
    pub fn stopped(&self) {
        for r in &self.list {
            r.live.store(false, Ordering::SeqCst);
            if r.clients() == 0 {
                r.hub.reset();
                r.set_state(RState::Idle);
            }
        }
    }
}
