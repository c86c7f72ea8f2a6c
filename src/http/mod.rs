//! The HTTP surface. A request flows through these files in order:
//!
//! - `server.rs`: the accept loop (connection limit, header and write timeouts, access log,
//!   per-route metrics, graceful shutdown);
//! - `access.rs`: the request's parts, read once, and the token check;
//! - `routes.rs`: the one route table, decoding a path into a typed [`Path`];
//! - `dispatch.rs`: the one match from (path, method) to a handler;
//! - handlers by concern: `api.rs` (streams, programs, status, reload), `schedule.rs`
//!   (`/api/schedule`), `feeds.rs` (playlist, guide, metrics), `media.rs` (`/stream`,
//!   `/hls`), `hdhr.rs` (tuner emulation), `dashboard.rs`, `login.rs`, with `html.rs`
//!   and `reply.rs` (responses, the one `Error` to status mapping) under them.
//!
//! All routes but the public ones in [`ROUTES`] pass the token check first, so a new route
//! cannot forget authentication; the black-box tests walk the table to prove it. This
//! layer asks the engine for subscriptions and statuses; it never touches libav.

pub mod access;
pub mod api;
pub mod catchup;
pub mod dashboard;
pub mod dispatch;
pub mod feeds;
pub mod hdhr;
pub mod hdhr_discovery;
pub mod hdhr_pkt;
pub mod hls_master;
pub mod html;
pub mod io;
pub mod login;
pub mod media;
pub mod providers;
pub mod providers_page;
pub mod proxy;
pub mod recordings;
pub mod reply;
pub mod routes;
pub mod schedule;
pub mod server;
pub mod state;
pub mod tls;

pub use proxy::Client;
pub use routes::{pattern_of, Access, Path, RouteSpec, ROUTES};
pub use server::{redirect_http, routes, serve};
pub use state::{base_url, AppState};
