//! Amps: an advanced media playlist server.
//!
//! Layout (data flows one way: config -> registry -> engine -> hub -> HTTP clients):
//!
//! - [`config`]: the `config.yaml` model, loading (defaults, file, environment) and
//!   validation with errors that name the key path, file, line and column.
//! - [`registry`]: the in-memory channel map. The config's streams at start, then REST API
//!   changes; writers validate and notify subscribers.
//! - [`engine`]: the media engine: per-channel producers (in-process libav pipelines or
//!   `custom_ffmpeg` processes) on named OS threads, and the fan-out hub.
//! - [`epg`]: pure XMLTV guide rendering.
//! - [`schedule`]: scheduled channels: window logic and the task that adds and retires them.
//! - [`playlist`]: pure M3U rendering (no I/O), hardened against injection.
//! - [`providers`]: importing providers' M3U playlists, Xtream Codes accounts and XMLTV
//!   guides as channels and programmes (refreshed, cached, filtered, merged).
//! - [`auth`]: the shared token: extraction, constant-time comparison, log redaction.
//! - [`http`]: the HTTP surface (route table, REST API, error mapping, the server loop).
//! - [`metrics`]: counters and gauges exposed on `/metrics`.
//! - [`libav`]: what we ask of the linked libav at start (versions, encoder catalogue).
//! - [`cmds`]: one module per CLI subcommand; `main.rs` only dispatches.
//! - [`clock`]: the one source of "now", so time-dependent code is testable.

pub mod auth;
pub mod clock;
pub mod cmds;
pub mod config;
pub mod engine;
pub mod epg;
pub mod error;
pub mod fuzz;
pub mod http;
pub mod libav;
pub mod metrics;
pub mod playlist;
pub mod providers;
pub mod registry;
pub mod reload;
pub mod schedule;
pub mod state;
pub mod sync;
pub mod tokens;

pub use error::{Error, ErrorKind};
