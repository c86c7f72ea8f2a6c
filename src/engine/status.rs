//! What a channel reports about itself: state, clients, errors, codecs, speed, counters.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The lifecycle state of a channel's producer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Nothing running (no client, or stopped after the idle grace period).
    #[default]
    Idle,
    /// Opening the source; no picture yet.
    Starting,
    /// Producing output.
    Running,
    /// The source broke while clients watch; reconnecting with backoff.
    Retrying,
    /// Could not start; the next request tries again.
    Failed,
}

/// A channel's status, as served on `/api/streams/<id>/status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub id: u32,
    pub state: State,
    pub clients: usize,
    pub started_at: Option<DateTime<Utc>>,
    pub uptime_secs: Option<u64>,
    /// Producer runs started (first client after idle, or after a change).
    pub starts: u64,
    /// Runs that ended without ever producing a picture (the channel went to `failed`).
    pub start_failures: u64,
    /// Producer sessions restarted after a failure while the run went on.
    pub restarts: u64,
    pub last_error: Option<String>,
    pub producer: &'static str,
    /// The running session relays the source's MPEG-TS packets as they arrive (a copy
    /// profile on a live MPEG-TS source) rather than demuxing and remuxing them.
    pub ts_relay: bool,
    pub input_codecs: Vec<String>,
    pub output_codecs: Vec<String>,
    pub input_resolution: Option<String>,
    /// The output's video size (the source's when copied), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_resolution: Option<String>,
    /// The encoded video's frame rate, once its encoder has started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_frame_rate: Option<f64>,
    pub input_frame_rate: Option<f64>,
    /// Media seconds produced per wall second (1.0 = real time).
    pub speed: Option<f64>,
    pub frames_encoded: u64,
    /// Frames the channel's decoders produced: one decode per source frame however many
    /// outputs (the channel's own and its profiles') encode it.
    pub frames_decoded: u64,
    pub output_kbps: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub buffered_bytes: usize,
    pub client_skips: u64,
    pub client_drops: u64,
    /// The source now in use (credentials and query removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_source: Option<String>,
    /// 0 for the primary `source`, n for `backup_sources[n - 1]`.
    pub active_source_index: usize,
    /// Switches between sources (failover and failback).
    pub source_switches: u64,
    /// Why the last switch happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_switch: Option<String>,
    /// HLS output is running (`/hls/<id>/index.m3u8` was requested lately). Its session
    /// counts as one of `clients`.
    pub hls: bool,
    /// The channel runs with no viewers (`always_on`).
    pub always_on: bool,
    /// Kept running as one of the most recently watched channels (`engine.warm_recent`).
    pub warm: bool,
    /// The channel's archive (`catchup_hours`), if it has or writes one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveStatus>,
    /// Source streams the output leaves out, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_streams: Vec<String>,
    /// The channel's extra output profiles (`streams[].profiles`) and their outputs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub renditions: Vec<super::rendition::RenditionStatus>,
    /// Last lines libav logged for this channel (decoder errors and the like).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub libav_log: Vec<String>,
    /// Last lines a custom command wrote to stderr.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stderr_tail: Vec<String>,
}

/// A channel's archive, as the status reports it.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ArchiveStatus {
    /// `recording`, `stopped` (nothing is written now; what was is still served) or
    /// `failed` (see `error`).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub hours: u32,
    pub segments: usize,
    pub bytes: u64,
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
    /// Bytes of output the archive lost (a writer that fell behind, a failed write).
    pub dropped_bytes: u64,
    pub write_errors: u64,
}
