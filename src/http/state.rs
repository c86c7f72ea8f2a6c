//! What every request handler shares: the application state, the client's address, and
//! the base URL players are told to use.

use crate::auth::{FailureLimiter, Sessions, TokenCheck};
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
    pub server: ServerConfig,
    pub hdhomerun: HdhrConfig,
    pub token: TokenCheck,
    /// Failed token checks per client address (brute-force protection).
    pub auth_limiter: FailureLimiter,
    /// The dashboard's login sessions.
    pub sessions: Sessions,
    pub clock: SharedClock,
    /// The address the server is bound to (fallback base URL).
    pub local_addr: SocketAddr,
}

/// The client's address, put on each request by the server loop.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl AppState {
    /// The address whose failed token checks count towards a block: the client's, unless
    /// it is loopback and `server.auth_limit_loopback` is off.
    pub fn limited_ip(&self, client: Option<ClientAddr>) -> Option<std::net::IpAddr> {
        client
            .map(|c| c.0.ip())
            .filter(|ip| !ip.is_loopback() || self.server.auth_limit_loopback)
    }
}

/// The base URL players should use: `server.public_url`, else the request's `Host` when it
/// is a plain host[:port], else the bound address.
pub fn base_url(state: &AppState, host: Option<&str>) -> String {
    if let Some(u) = &state.server.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let ok = |h: &&str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
    };
    match host.filter(ok) {
        Some(h) => format!("http://{h}"),
        None => format!("http://{}", state.local_addr),
    }
}
