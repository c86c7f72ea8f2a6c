//! Process metrics in the Prometheus text format, kept by `prometheus-client`.
//!
//! Labels are bounded: HTTP requests are counted by route pattern (never the raw path) and
//! status; channel metrics by channel id. Channel figures are read from the engine at
//! scrape time (a collector), so the media threads never touch the metrics registry.

use crate::engine::status::{State, Status};
use crate::engine::Engine;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

/// A known token refused something: `reason` is `role`, `expired` or `max_streams`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub token: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    libav: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    started: Instant,
    uptime: Gauge<f64, AtomicU64>,
    channels: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub auth_failures: Counter,
    pub auth_blocked: Counter,
    pub token_refusals: Family<RefusalLabels, Counter>,
}

type Field = fn(&Status) -> u64;

/// The per-channel metrics: name, help, type and the status field they show.
const PER_CHANNEL: &[(&str, &str, MetricType, Field)] = &[
    (
        "channel_clients",
        "Stream clients of the channel",
        MetricType::Gauge,
        |s| s.clients as u64,
    ),
    (
        "channel_bytes_sent",
        "Bytes sent to the channel's clients",
        MetricType::Counter,
        |s| s.bytes_out,
    ),
    (
        "channel_bytes_produced",
        "Bytes of MPEG-TS the channel's producer made",
        MetricType::Counter,
        |s| s.bytes_in,
    ),
    (
        "channel_client_skips",
        "Times a lagging client skipped ahead to the newest keyframe",
        MetricType::Counter,
        |s| s.client_skips,
    ),
    (
        "channel_client_drops",
        "Clients disconnected for lagging too far behind",
        MetricType::Counter,
        |s| s.client_drops,
    ),
    (
        "channel_starts",
        "Producer runs started (label producer: libav pipeline or custom process)",
        MetricType::Counter,
        |s| s.starts,
    ),
    (
        "channel_restarts",
        "Producer sessions restarted after a failure (label producer: libav pipeline or custom process)",
        MetricType::Counter,
        |s| s.restarts,
    ),
    (
        "channel_start_failures",
        "Producer runs that never produced a picture",
        MetricType::Counter,
        |s| s.start_failures,
    ),
    (
        "channel_frames_encoded",
        "Frames encoded by the channel's in-process pipeline",
        MetricType::Counter,
        |s| s.frames_encoded,
    ),
    (
        "channel_frames_decoded",
        "Frames the channel's decoders produced (once per source frame, however many profiles encode it)",
        MetricType::Counter,
        |s| s.frames_decoded,
    ),
    (
        "channel_source_switches",
        "Switches between a channel's primary and backup sources",
        MetricType::Counter,
        |s| s.source_switches,
    ),
    (
        "channel_active_source",
        "The source in use: 0 for the primary, n for the nth backup",
        MetricType::Gauge,
        |s| s.active_source_index as u64,
    ),
    (
        "channel_hls",
        "1 while the channel's HLS output runs (it holds one client place)",
        MetricType::Gauge,
        |s| u64::from(s.hls),
    ),
    (
        "channel_archive_bytes",
        "Bytes the channel's archive (catchup_hours) holds on disk",
        MetricType::Gauge,
        |s| s.archive.as_ref().map_or(0, |a| a.bytes),
    ),
    (
        "channel_archive_segments",
        "Segments the channel's archive holds",
        MetricType::Gauge,
        |s| s.archive.as_ref().map_or(0, |a| a.segments as u64),
    ),
    (
        "channel_archive_failed",
        "1 while the channel's archive cannot write (see its status' archive.error)",
        MetricType::Gauge,
        |s| u64::from(s.archive.as_ref().is_some_and(|a| a.state == "failed")),
    ),
    (
        "channel_archive_dropped_bytes",
        "Bytes of output the channel's archive lost (a slow or failing disk)",
        MetricType::Counter,
        |s| s.archive.as_ref().map_or(0, |a| a.dropped_bytes),
    ),
    (
        "channel_always_on",
        "1 for a channel kept running with no viewers (always_on)",
        MetricType::Gauge,
        |s| u64::from(s.always_on),
    ),
    (
        "channel_warm",
        "1 while the channel is kept running as a recently watched one (engine.warm_recent)",
        MetricType::Gauge,
        |s| u64::from(s.warm),
    ),
    (
        "channel_buffered_bytes",
        "Bytes held in the channel's backlog",
        MetricType::Gauge,
        |s| s.buffered_bytes as u64,
    ),
];

fn kind_of(counter: bool) -> MetricType {
    if counter {
        MetricType::Counter
    } else {
        MetricType::Gauge
    }
}

/// One labelled value of a metric family: a counter, or a gauge.
fn encode_value(
    m: &mut prometheus_client::encoding::MetricEncoder,
    labels: &[(&str, String); 2],
    v: u64,
    counter: bool,
) -> Result<(), std::fmt::Error> {
    if counter {
        ConstCounter::new(v).encode(m.encode_family(labels)?)
    } else {
        ConstGauge::new(v as i64).encode(m.encode_family(labels)?)
    }
}

/// Reads every channel's status at scrape time.
#[derive(Debug)]
struct EngineCollector(Arc<Engine>);

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses = self.0.statuses();
        let states = [
            State::Idle,
            State::Starting,
            State::Running,
            State::Retrying,
            State::Failed,
        ];
        {
            let mut m = enc.encode_descriptor(
                "channels_by_state",
                "Channel runtimes by state",
                None,
                MetricType::Gauge,
            )?;
            for st in states {
                let n = statuses.iter().filter(|s| s.state == st).count() as i64;
                let name = serde_json::to_value(&st)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                ConstGauge::new(n).encode(m.encode_family(&[("state", name)])?)?;
            }
        }
        {
            let total: i64 = statuses.iter().map(|s| s.clients as i64).sum();
            let m = enc.encode_descriptor(
                "clients",
                "Stream clients connected, all channels",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(total).encode(m)?;
        }
        for &(name, help, ref kind, field) in PER_CHANNEL {
            let counter = matches!(kind, MetricType::Counter);
            let mut m = enc.encode_descriptor(name, help, None, kind_of(counter))?;
            for s in &statuses {
                let labels = [
                    ("channel", s.id.to_string()),
                    ("producer", s.producer.to_owned()),
                ];
                encode_value(&mut m, &labels, field(s), counter)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "channel_speed",
                "Media seconds produced per wall second",
                None,
                MetricType::Gauge,
            )?;
            for s in &statuses {
                if let Some(speed) = s.speed {
                    ConstGauge::new(speed)
                        .encode(m.encode_family(&[("channel", s.id.to_string())])?)?;
                }
            }
        }
        type RField = fn(&crate::engine::rendition::RenditionStatus) -> u64;
        let per_profile: [(&str, &str, bool, RField); 5] = [
            (
                "profile_clients",
                "Viewers of one of a channel's profiles (streams[].profiles)",
                false,
                |r| r.clients as u64,
            ),
            (
                "profile_running",
                "1 while the profile's encoder runs",
                false,
                |r| u64::from(r.state == "running"),
            ),
            (
                "profile_frames_encoded",
                "Frames the profile's encoders took",
                true,
                |r| r.frames_encoded,
            ),
            (
                "profile_frames_dropped",
                "Decoded frames the profile's encoder could not take in time",
                true,
                |r| r.frames_dropped,
            ),
            (
                "profile_bytes_sent",
                "Bytes sent to the profile's viewers",
                true,
                |r| r.bytes_out,
            ),
        ];
        for (name, help, counter, field) in per_profile {
            let mut m = enc.encode_descriptor(name, help, None, kind_of(counter))?;
            for s in &statuses {
                for r in &s.renditions {
                    let labels = [
                        ("channel", s.id.to_string()),
                        ("profile", r.profile.clone()),
                    ];
                    encode_value(&mut m, &labels, field(r), counter)?;
                }
            }
        }
        Ok(())
    }
}

/// Reads every token's open sessions at scrape time.
#[derive(Debug)]
struct TokenCollector {
    tokens: Arc<crate::tokens::Tokens>,
    hls_ttl: std::time::Duration,
}

impl Collector for TokenCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = enc.encode_descriptor(
            "token_sessions",
            "Stream and HLS sessions open now, by token name",
            None,
            MetricType::Gauge,
        )?;
        for t in self.tokens.list(self.hls_ttl, chrono::Utc::now()) {
            ConstGauge::new(i64::from(t.sessions))
                .encode(m.encode_family(&[("token", t.name)])?)?;
        }
        Ok(())
    }
}

/// Reads the provider playlists' and guides' state at scrape time.
struct ProviderCollector {
    providers: Arc<crate::providers::Providers>,
    engine: Arc<Engine>,
}

impl std::fmt::Debug for ProviderCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderCollector")
    }
}

impl Collector for ProviderCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let playlists = self.providers.statuses();
        type PField = fn(&crate::providers::PlaylistStatus) -> i64;
        let fields: [(&str, &str, PField); 4] = [
            (
                "playlist_channels",
                "Channels served from the playlist now",
                |p| p.channels as i64,
            ),
            (
                "playlist_entries",
                "Entries in the playlist's last good list",
                |p| p.entries as i64,
            ),
            (
                "playlist_refresh_failed",
                "1 when the playlist's last refresh failed (its last good list is served)",
                |p| i64::from(p.error.is_some() && p.last_attempt != p.last_success),
            ),
            (
                "playlist_last_success_timestamp_seconds",
                "When the playlist was last fetched successfully (Unix time)",
                |p| p.last_success.map_or(0, |t| t.timestamp()),
            ),
        ];
        for (name, help, f) in fields {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for p in &playlists {
                ConstGauge::new(f(p)).encode(m.encode_family(&[("playlist", p.name.clone())])?)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "playlist_connections",
            "Provider connections in use now (channels running from the playlist)",
            None,
            MetricType::Gauge,
        )?;
        for p in &playlists {
            let n = self
                .engine
                .connections_of(&format!("playlist:{}", p.name))
                .len();
            ConstGauge::new(n as i64).encode(m.encode_family(&[("playlist", p.name.clone())])?)?;
        }
        let guides = self.providers.guides.statuses();
        let mut m = enc.encode_descriptor(
            "guide_programmes",
            "Programmes the guide gave served channels at its last read",
            None,
            MetricType::Gauge,
        )?;
        for g in &guides {
            ConstGauge::new(g.programmes_kept as i64)
                .encode(m.encode_family(&[("guide", g.name.clone())])?)?;
        }
        let mut m = enc.encode_descriptor(
            "guide_refresh_failed",
            "1 when the guide's last read failed (its channels keep their programmes)",
            None,
            MetricType::Gauge,
        )?;
        for g in &guides {
            ConstGauge::new(i64::from(g.error.is_some()))
                .encode(m.encode_family(&[("guide", g.name.clone())])?)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// Adds the provider playlists' and guides' gauges.
    pub fn with_providers(
        mut self,
        providers: Arc<crate::providers::Providers>,
        engine: Arc<Engine>,
    ) -> Metrics {
        self.registry
            .register_collector(Box::new(ProviderCollector { providers, engine }));
        self
    }

    /// Adds the per-token session gauge.
    pub fn with_tokens(
        mut self,
        tokens: Arc<crate::tokens::Tokens>,
        hls_ttl: std::time::Duration,
    ) -> Metrics {
        self.registry
            .register_collector(Box::new(TokenCollector { tokens, hls_ttl }));
        self
    }

    /// Counts a refusal of the known token `name` (the label is the configured name,
    /// never a presented value, so it stays bounded).
    pub fn token_refused(&self, name: &str, reason: &str) {
        self.token_refusals
            .get_or_create(&RefusalLabels {
                token: name.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Time since the server started.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Metrics of the HTTP layer, plus the engine's channels when given one.
    pub fn with_engine(engine: Arc<Engine>) -> Metrics {
        let mut m = Metrics::new();
        m.registry
            .register_collector(Box::new(EngineCollector(engine)));
        m
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("amps");
        let uptime = Gauge::<f64, AtomicU64>::default();
        let channels = Gauge::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let auth_failures = Counter::default();
        let auth_blocked = Counter::default();
        let token_refusals = Family::<RefusalLabels, Counter>::default();
        // An info-style gauge (always 1): `promtool` and Prometheus' text parser do not
        // accept the OpenMetrics `info` type.
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                libav: crate::libav::BUILT_AGAINST.into(),
            })
            .set(1);
        registry.register(
            "build_info",
            "Amps version and the libav versions it was built against (always 1)",
            build,
        );
        registry.register(
            "uptime_seconds",
            "Seconds since the server started",
            uptime.clone(),
        );
        registry.register("channels", "Channels in the registry", channels.clone());
        registry.register(
            "http_requests",
            "HTTP requests by route pattern, method and status",
            http_requests.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused for a missing or wrong token",
            auth_failures.clone(),
        );
        registry.register(
            "auth_blocked",
            "Requests refused because their address failed the token check too often",
            auth_blocked.clone(),
        );
        registry.register(
            "token_refusals",
            "Requests of a known token refused, by token name and reason (role, expired, max_streams)",
            token_refusals.clone(),
        );
        Metrics {
            registry,
            started: Instant::now(),
            uptime,
            channels,
            http_requests,
            auth_failures,
            auth_blocked,
            token_refusals,
        }
    }

    /// The Prometheus text format (0.0.4), which every scraper and `promtool` read.
    pub fn render(&self, channels: usize) -> String {
        to_prometheus_text(&self.render_openmetrics(channels))
    }

    /// The OpenMetrics text; gauges that are sampled (uptime, channels) are set first.
    pub fn render_openmetrics(&self, channels: usize) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        self.channels.set(channels as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Rewrites OpenMetrics text (what `prometheus-client` writes) as the Prometheus text format
/// 0.0.4: counter families are named with their `_total` suffix in `HELP`/`TYPE`, and the
/// OpenMetrics-only lines (`# EOF`, `# UNIT`) are dropped. Samples are unchanged.
pub fn to_prometheus_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len() + 16 * counters.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p));
        if let Some(prefix) = meta {
            let rest = &line[prefix.len()..];
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) && !name.ends_with("_total") {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_bounded_labels() {
        let m = Metrics::new();
        m.http_requests
            .get_or_create(&HttpLabels {
                route: "/stream/{id}".into(),
                method: "GET".into(),
                status: 200,
            })
            .inc();
        m.auth_failures.inc();
        let text = m.render_openmetrics(3);
        assert!(text.contains("amps_channels 3\n"), "{text}");
        assert!(text.contains("amps_auth_failures_total 1\n"), "{text}");
        assert!(text.contains("amps_http_requests_total{route=\"/stream/{id}\",method=\"GET\",status=\"200\"} 1\n"), "{text}");
        assert!(text.contains("amps_build_info{version=\""), "{text}");
        assert!(text.contains("# TYPE amps_build_info gauge"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        let prom = m.render(3);
        assert!(
            prom.contains("# TYPE amps_auth_failures_total counter\n"),
            "{prom}"
        );
        assert!(
            prom.contains("# HELP amps_auth_failures_total Requests refused"),
            "{prom}"
        );
        assert!(prom.contains("amps_auth_failures_total 1\n"), "{prom}");
        assert!(!prom.contains("# EOF"), "{prom}");
    }

    #[test]
    fn prometheus_text_renames_only_counter_families() {
        let open = "# HELP a_b Help.\n# TYPE a_b counter\na_b_total{x=\"1\"} 2\n# HELP g A gauge.\n# TYPE g gauge\n# UNIT g seconds\ng 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(open),
            "# HELP a_b_total Help.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 2\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
