//! Process metrics in the Prometheus text format, kept by `prometheus-client`.
//!
//! Labels are bounded: HTTP requests are counted by route pattern (never the raw path) and
//! status. The media engine adds its own families here as it grows.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
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
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("amps");
        let uptime = Gauge::<f64, AtomicU64>::default();
        let channels = Gauge::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let auth_failures = Counter::default();
        registry.register(
            "build",
            "Amps version and the libav it runs on",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                libav: crate::libav::BUILT_AGAINST.into(),
            }),
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
        Metrics {
            registry,
            started: Instant::now(),
            uptime,
            channels,
            http_requests,
            auth_failures,
        }
    }

    /// The exposition text; gauges that are sampled (uptime, channels) are set first.
    pub fn render(&self, channels: usize) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        self.channels.set(channels as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
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
        let text = m.render(3);
        assert!(text.contains("amps_channels 3\n"), "{text}");
        assert!(text.contains("amps_auth_failures_total 1\n"), "{text}");
        assert!(text.contains("amps_http_requests_total{route=\"/stream/{id}\",method=\"GET\",status=\"200\"} 1\n"), "{text}");
        assert!(text.contains("amps_build_info{version=\""), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
