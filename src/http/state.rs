//! What every request handler shares: the application state, the client's address, and
//! the base URL players are told to use.

use super::proxy::{plain_host, Client, Trusted};
use crate::auth::{FailureLimiter, Sessions};
use crate::clock::SharedClock;
use crate::config::{HdhrConfig, ServerConfig};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::reload::Reloader;
use crate::schedule::Scheduler;
use crate::state::StateFile;
use std::net::SocketAddr;
use std::sync::Arc;

/// Everything request handlers share.
#[derive(Debug)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub engine: Arc<Engine>,
    pub scheduler: Arc<Scheduler>,
    pub reloader: Arc<Reloader>,
    /// Where API changes are saved (`server.state_file`), if anywhere.
    pub state_file: Option<Arc<StateFile>>,
    pub metrics: Arc<Metrics>,
    /// Providers' playlists and guides.
    pub providers: Arc<crate::providers::Providers>,
    pub server: ServerConfig,
    pub hdhomerun: HdhrConfig,
    /// The admin token and the named tokens in force.
    pub tokens: Arc<crate::tokens::Tokens>,
    /// `server.trusted_proxies`.
    pub proxies: Trusted,
    /// The TLS certificate in force (reloaded on SIGHUP and when its files change).
    pub tls: Option<Arc<super::tls::Certs>>,
    /// Failed token checks per client address (brute-force protection).
    pub auth_limiter: FailureLimiter,
    /// The dashboard's login sessions.
    pub sessions: Sessions,
    pub clock: SharedClock,
    /// The address the server is bound to (fallback base URL).
    pub local_addr: SocketAddr,
}

impl AppState {
    /// The address whose failed token checks count towards a block: the client's, unless
    /// it is the machine itself (loopback, not through a trusted proxy) and
    /// `server.auth_limit_loopback` is off.
    pub fn limited_ip(&self, client: Option<&Client>) -> Option<std::net::IpAddr> {
        client
            .filter(|c| c.proxied || !c.ip.is_loopback() || self.server.auth_limit_loopback)
            .map(|c| c.ip)
    }

    /// How long a token's HLS viewing of a channel counts after its last request.
    pub fn hls_lease(&self) -> std::time::Duration {
        crate::tokens::hls_lease(self.engine.settings().hls_segment_secs)
    }
}

/// The base URL players should use: `server.public_url`, else the scheme and host the
/// client used (through a trusted proxy: the forwarded ones) when the host is a plain
/// host[:port], else the bound address.
pub fn base_url(state: &AppState, client: Option<&Client>) -> String {
    if let Some(u) = &state.server.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let scheme = client.map_or(if state.tls.is_some() { "https" } else { "http" }, |c| {
        c.scheme
    });
    match client
        .and_then(|c| c.host.as_deref())
        .filter(|h| plain_host(h))
    {
        Some(h) => format!("{scheme}://{h}"),
        None => format!("{scheme}://{}", state.local_addr),
    }
}

/// What a handler knows about who asked: the identity, the token to embed in URLs it
/// hands out (only one the request itself presented), and the base URL it used.
pub struct View {
    pub who: crate::tokens::Identity,
    /// The request's own valid token (None: no token needed, or only a session cookie).
    pub token: Option<String>,
    /// Whether tokens are needed at all.
    pub required: bool,
    pub base: String,
}

impl View {
    /// Whether this token may see the channel.
    pub fn sees(&self, s: &crate::config::StreamConfig) -> bool {
        self.who.sees(s.group.as_deref())
    }

    /// The registry's channels this token may see.
    pub fn channels(&self, state: &AppState) -> Vec<std::sync::Arc<crate::config::StreamConfig>> {
        let mut all = state.registry.list();
        all.retain(|s| self.sees(s));
        all
    }

    /// `?token=<own token>` for URLs ("" when none is needed or none was presented).
    pub fn token_query(&self) -> String {
        crate::auth::token_query(self.token.as_deref())
    }
}
