//! Guide sources (`guides:` and the guides providers name) read into the channels'
//! programmes.
//!
//! A refresh streams every guide in turn (configured ones first, then the providers'),
//! keeping only programmes of served channels inside the window [now - their catch-up
//! hours - 2 h, now + 8 days], at most [`PER_CHANNEL`] each. The first guide that has
//! programmes for a channel gives them. Channels with programmes of their own (from the
//! config or the API) are left alone: only a channel with none, or with the programmes a
//! guide gave it last time, is filled. A guide that fails keeps its channels' last
//! programmes.

use super::{fetch, xmltv};
use crate::config::{GuideConfig, Program};
use crate::registry::Registry;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// Most programmes kept per channel.
pub const PER_CHANNEL: usize = 2000;
/// Most bytes of one guide, unpacked.
const MAX_GUIDE_BYTES: u64 = 4 << 30;
/// How often providers' own guides are read again.
const PROVIDER_GUIDE_MINUTES: u32 = 720;

/// One guide's last refresh, as `/api/guides` shows it (never the URL).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GuideStatus {
    /// `guides[0]`, or `playlist:<name>` for a provider's own guide.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `<channel>` elements in the guide.
    pub guide_channels: usize,
    /// `<programme>` elements read.
    pub programmes_read: usize,
    /// Programmes kept (served channels, inside the window).
    pub programmes_kept: usize,
    /// Served channels this guide gave programmes to.
    pub channels_filled: usize,
    /// Of those, found by name (no guide channel id matched their tvg-id).
    pub matched_by_name: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_read_ms: Option<u64>,
}

#[derive(Debug)]
pub struct Guides {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    configured: Vec<GuideConfig>,
    statuses: BTreeMap<String, GuideStatus>,
    last_refresh: Option<DateTime<Utc>>,
    /// Channels a guide filled, with a digest of what it gave them.
    filled: HashMap<u32, u64>,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn digest(p: &[Program]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(p).unwrap_or_default().hash(&mut h);
    h.finish()
}

impl Guides {
    pub fn new(configured: &[GuideConfig]) -> Guides {
        Guides {
            inner: Mutex::new(Inner {
                configured: configured.to_vec(),
                ..Inner::default()
            }),
        }
    }

    pub fn reload(&self, configured: &[GuideConfig]) {
        let mut g = lock(&self.inner);
        if g.configured != configured {
            g.configured = configured.to_vec();
            g.last_refresh = None;
        }
    }

    /// Whether a refresh is due: never refreshed, or the shortest interval has passed.
    pub fn due(&self, now: DateTime<Utc>, provider: &[(String, String, Option<String>)]) -> bool {
        let g = lock(&self.inner);
        if g.configured.is_empty() && provider.is_empty() {
            return false;
        }
        let every = g
            .configured
            .iter()
            .map(|c| c.refresh_minutes)
            .filter(|m| *m > 0)
            .chain((!provider.is_empty()).then_some(PROVIDER_GUIDE_MINUTES))
            .min();
        match (g.last_refresh, every) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(t), Some(m)) => now - t >= Duration::minutes(i64::from(m)),
        }
    }

    pub fn statuses(&self) -> Vec<GuideStatus> {
        lock(&self.inner).statuses.values().cloned().collect()
    }

    /// Reads every guide and fills the channels. `provider`: (playlist name, URL, user
    /// agent); `shifts`: `tvg-shift` hours by channel id. Blocking.
    pub fn refresh(
        &self,
        registry: &Registry,
        provider: &[(String, String, Option<String>)],
        shifts: &BTreeMap<u32, f64>,
        now: DateTime<Utc>,
    ) -> Vec<GuideStatus> {
        let (configured, filled) = {
            let mut g = lock(&self.inner);
            g.last_refresh = Some(now);
            (g.configured.clone(), g.filled.clone())
        };
        let channels = registry.list();
        // Channels a guide may fill: none of their own, or a guide's from last time.
        let eligible: Vec<_> = channels
            .iter()
            .filter(|s| {
                s.next_programs.is_empty() || filled.get(&s.id) == Some(&digest(&s.next_programs))
            })
            .collect();
        let wants: Vec<xmltv::Want> = eligible
            .iter()
            .map(|s| xmltv::Want {
                id: s.id,
                tvg_id: s.effective_tvg_id(),
                names: std::iter::once(s.name.clone())
                    .chain(s.tvg_name.clone())
                    .collect(),
                shift_secs: shifts.get(&s.id).map_or(0, |h| (h * 3600.0) as i64),
            })
            .collect();
        let back = channels.iter().map(|s| s.catchup_hours).max().unwrap_or(0);
        let window = (
            now - Duration::hours(i64::from(back) + 2),
            now + Duration::days(8),
        );
        let sources: Vec<(String, String, Option<String>)> = configured
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("guides[{i}]"), c.url.clone(), None))
            .chain(
                provider
                    .iter()
                    .map(|(n, u, ua)| (format!("playlist:{n}"), u.clone(), ua.clone())),
            )
            .collect();
        let mut given: HashMap<u32, Vec<Program>> = HashMap::new();
        let mut all_ok = true;
        let mut statuses = Vec::new();
        for (name, url, ua) in sources {
            let started = std::time::Instant::now();
            let mut st = GuideStatus {
                name: name.clone(),
                last_attempt: Some(now),
                ..GuideStatus::default()
            };
            let mut o = fetch::Options::new(MAX_GUIDE_BYTES);
            o.user_agent = ua;
            o.read_timeout = std::time::Duration::from_secs(60);
            o.total_timeout = std::time::Duration::from_secs(1800);
            let read =
                fetch::open(&url, &o).and_then(|r| xmltv::read(r, &wants, window, PER_CHANNEL));
            match read {
                Ok(found) => {
                    st.last_success = Some(now);
                    st.guide_channels = found.channels;
                    st.programmes_read = found.seen;
                    st.programmes_kept = found.kept;
                    st.matched_by_name = found.by_name;
                    for (id, progs) in found.programmes {
                        if !progs.is_empty() && !given.contains_key(&id) {
                            st.channels_filled += 1;
                            given.insert(id, progs);
                        }
                    }
                    st.last_read_ms = Some(started.elapsed().as_millis() as u64);
                    tracing::info!(guide = %name, channels = st.channels_filled, programmes = st.programmes_kept, ms = st.last_read_ms, "guide read");
                }
                Err(e) => {
                    all_ok = false;
                    tracing::warn!(guide = %name, "guide refresh failed, keeping the last programmes: {e}");
                    let prev = lock(&self.inner).statuses.get(&name).cloned();
                    if let Some(p) = prev {
                        st.last_success = p.last_success;
                    }
                    st.error = Some(e);
                }
            }
            statuses.push(st);
        }
        let mut new_filled = HashMap::new();
        for s in &eligible {
            match given.remove(&s.id) {
                Some(progs) => {
                    let d = digest(&progs);
                    if s.next_programs != progs {
                        registry.set_guide_programs(s.id, progs);
                    }
                    new_filled.insert(s.id, d);
                }
                // Not in any guide now: a guide's old programmes go, unless a guide failed.
                None if filled.contains_key(&s.id) && !s.next_programs.is_empty() => {
                    if all_ok {
                        registry.set_guide_programs(s.id, Vec::new());
                    } else {
                        new_filled.insert(s.id, digest(&s.next_programs));
                    }
                }
                None => {}
            }
        }
        let mut g = lock(&self.inner);
        g.filled = new_filled;
        g.statuses = statuses
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        statuses
    }
}
