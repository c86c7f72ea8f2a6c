//! The configuration data model: what `config.yaml` may contain, with a default per field.
//!
//! Every struct denies unknown keys, so a typo is an error that names the key instead of a
//! silently ignored setting. The same [`StreamConfig`] is used for the `streams` section,
//! the `scheduled_streams` section and the REST API's JSON bodies.

use super::time::Timestamp;
use super::units::{Bitrate, FrameRate, Resolution, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening address, token and other server-wide settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Media engine tuning (pipeline lifetime, buffers, timeouts).
    #[serde(default)]
    pub engine: EngineConfig,
    /// Named transcoding/relay profiles, referenced by `streams[].ffmpeg_profile`.
    #[serde(default, deserialize_with = "unique_keys")]
    pub ffmpeg_profiles: BTreeMap<String, Profile>,
    /// Always-on channels.
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
    /// Channels that exist only inside a `schedule` window.
    #[serde(default)]
    pub scheduled_streams: Vec<StreamConfig>,
    /// HDHomeRun tuner emulation for Plex, Jellyfin and Emby.
    #[serde(default)]
    pub hdhomerun: HdhrConfig,
    /// Providers' playlists (M3U URLs, Xtream Codes accounts) whose channels are imported.
    #[serde(default)]
    pub playlists: Vec<PlaylistConfig>,
    /// XMLTV guides merged into the channels' programmes.
    #[serde(default)]
    pub guides: Vec<GuideConfig>,
}

/// One entry of `playlists`: a provider whose channels Amps imports and serves. Exactly one
/// of `url` and `xtream`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaylistConfig {
    /// Names the source in ids, `origin`, status and logs (letters, digits, `-_.`).
    pub name: String,
    /// An M3U playlist: `http(s)://...` (plain or gzip), or a file path (config file only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// An Xtream Codes account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xtream: Option<XtreamAccount>,
    /// Minutes between refreshes. Default 720; 0: only at start and on demand.
    #[serde(default = "default_refresh")]
    pub refresh_minutes: u32,
    /// Globs (`*`, `?`, case-insensitive) on `group-title`: only these groups. Empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_groups: Vec<String>,
    /// Globs on `group-title`: never these groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_groups: Vec<String>,
    /// A regular expression the channel name must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_names: Option<String>,
    /// A regular expression the channel name must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_names: Option<String>,
    /// The profile imported channels play with (required: e.g. a relay profile).
    pub ffmpeg_profile: String,
    /// Channel numbers of entries that bring none, counting up. Default 1000.
    #[serde(default = "default_number_start")]
    pub number_start: u32,
    /// The account's limit of simultaneous streams. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Import the guide the provider names (`url-tvg`, Xtream's `xmltv.php`). Default true.
    #[serde(default = "yes")]
    pub import_guide: bool,
    /// The User-Agent sent to the provider (playlist and streams). Default: libav's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Most entries read; the rest are dropped with an error in the status. Default 100000.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// Entries that are another provider's channel under another id: the entry's name or
    /// tvg-id -> the tvg-id of that channel (`"BBC 1 FHD": bbc1.uk`). Such an entry is
    /// merged into it as a backup source, as entries with the same tvg-id are.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub merge: BTreeMap<String, String>,
}

fn default_refresh() -> u32 {
    720
}
fn default_number_start() -> u32 {
    1000
}
fn default_max_entries() -> usize {
    100_000
}
fn yes() -> bool {
    true
}

/// `playlists[].xtream`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XtreamAccount {
    /// `http://host:port` of the panel.
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for XtreamAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XtreamAccount")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// One entry of `guides`: an XMLTV file or URL (plain, gzip or xz).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuideConfig {
    /// `http(s)://...` or a file path.
    pub url: String,
    /// Minutes between refreshes. Default 720; 0: only at start and on demand.
    #[serde(default = "default_refresh")]
    pub refresh_minutes: u32,
}

/// The `hdhomerun` section: how Amps presents itself to Plex/Jellyfin/Emby as a network
/// tuner (under `/hdhr/<token>/`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HdhrConfig {
    /// Serve the emulation. Default true.
    pub enabled: bool,
    /// The name Plex and Jellyfin show. Default `Amps`.
    pub friendly_name: String,
    /// Tuners announced (the most channels Plex records or plays at once). Default 4.
    pub tuner_count: u32,
    /// Eight hex digits with a valid HDHomeRun check digit. Default: derived from the
    /// friendly name and the host name, so it is stable across restarts.
    pub device_id: Option<String>,
    /// Answer libhdhomerun's discovery (UDP) and control (TCP) protocols on
    /// `discovery_port`, so Plex, Jellyfin, Emby and Channels find Amps by themselves.
    /// Default: on when the server listens on a network address (not loopback).
    pub discovery: Option<bool>,
    /// The UDP and TCP port of discovery and control. Default 65001 (what clients use).
    pub discovery_port: u16,
    /// The name of a viewer token in `server.tokens` whose secret discovery replies carry
    /// in the tuner's URL (they go to anyone on the network who asks). Needed for
    /// discovery when the server needs a token.
    pub discovery_token: Option<String>,
    /// HDHomeRun `?transcode=` values (`heavy`, `mobile`, `internet720` ... `internet240`)
    /// mapped to profile names: a tuner request with that value gets the profile where the
    /// channel offers it (`streams[].profiles`), else the channel's own output. When set,
    /// the tuner presents itself as a transcoding model, so Jellyfin offers the values.
    pub transcode_profiles: BTreeMap<String, String>,
}

/// The `?transcode=` values HDHomeRun transcoding tuners take.
pub const HDHR_TRANSCODE_VALUES: [&str; 7] = [
    "heavy",
    "mobile",
    "internet720",
    "internet540",
    "internet480",
    "internet360",
    "internet240",
];

impl Default for HdhrConfig {
    fn default() -> Self {
        HdhrConfig {
            enabled: true,
            friendly_name: "Amps".into(),
            tuner_count: 4,
            device_id: None,
            discovery: None,
            discovery_port: 65001,
            discovery_token: None,
            transcode_profiles: BTreeMap::new(),
        }
    }
}

/// A mapping whose keys must be unique (YAML parsers keep the last of duplicates silently,
/// which would hide a profile defined twice).
fn unique_keys<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a mapping of names to profiles")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(k) = m.next_key::<String>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!(
                        "profile {k:?} is defined twice"
                    )));
                }
                let v = m.next_value()?;
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique(std::marker::PhantomData))
}

/// The `server` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind. Default `127.0.0.1`; use `0.0.0.0` to serve the LAN (needs a token).
    pub host: String,
    /// TCP port. Default 5000 (as in the original Amps).
    pub port: u16,
    /// Verbose logging.
    pub debug: bool,
    /// The shared token. Overridden by the `AMPS_TOKEN` environment variable.
    pub auth_token: Option<String>,
    /// Base URL players use to reach Amps (e.g. `http://nas.local:5000`), used in the
    /// playlist's stream URLs. Default: taken from each request's `Host` header.
    pub public_url: Option<String>,
    /// Allow REST API clients to set `custom_ffmpeg` commands. Default false: config-file
    /// commands are trusted, API input is not.
    pub allow_api_commands: bool,
    /// Allow REST API clients to point channels at local files and `lavfi:` graphs.
    /// Default false: through the API only network sources (http, https, rtmp, rtsp, udp,
    /// rtp, srt) may be set; local paths and generators come from the config file.
    pub allow_api_local_sources: bool,
    /// Largest accepted request body, in bytes. Default 1 MiB.
    pub max_body_bytes: u64,
    /// Most simultaneous HTTP connections; more are answered 503. Default 1024.
    pub max_connections: usize,
    /// Seconds a client may take to send its request headers. Default 10.
    pub header_timeout_secs: u64,
    /// Length in minutes of a guide programme that no later programme ends. Default 60.
    pub guide_program_minutes: u32,
    /// Seconds a write to a client may stay blocked (a client that stopped reading)
    /// before the connection is closed. Default 30.
    pub write_timeout_secs: u64,
    /// Failed token checks from one address after which it is refused (429) for
    /// `auth_block_secs`, even with the right token. Default 10; 0 turns it off.
    pub auth_fail_limit: u32,
    /// Seconds an address stays refused after too many failures; failures older than this
    /// are forgotten. Default 60.
    pub auth_block_secs: u64,
    /// Count loopback addresses too. Default false: the machine itself, and a reverse
    /// proxy on it (through which every client would share one address), are never
    /// blocked.
    pub auth_limit_loopback: bool,
    /// A file where changes made through the API (streams, programs, scheduled streams)
    /// are saved, atomically, before they are acknowledged, and reapplied at start.
    /// Default: none (API changes last until restart, as in the original Amps).
    pub state_file: Option<String>,
    /// Serve HTTPS: a PEM certificate chain and its private key. Reloaded on SIGHUP and
    /// when either file changes (a renewal by certbot). Default: plain HTTP.
    pub tls: Option<TlsConfig>,
    /// With `tls`: also listen on this port with plain HTTP, answering every request with
    /// a redirect to the HTTPS address. Default: none.
    pub redirect_http_port: Option<u16>,
    /// Reverse proxies (addresses or CIDRs, e.g. `127.0.0.1`, `10.0.0.0/8`) whose
    /// `Forwarded` / `X-Forwarded-For` / `-Proto` / `-Host` headers are believed. From
    /// anyone else those headers are ignored. Default: none.
    pub trusted_proxies: Vec<String>,
    /// Tokens for people and devices, next to `auth_token` (which stays the admin token).
    /// Reloaded on SIGHUP; a removed token's streams end at once.
    pub tokens: Vec<NamedToken>,
    /// Whether viewer tokens may read `/metrics`. Default false (admin only).
    pub metrics_for_viewers: bool,
    /// Where imported playlists are cached (the last good list of each provider, served
    /// when a provider is down at start). Default: the state file's folder, else
    /// `$XDG_CACHE_HOME/amps` or `~/.cache/amps`.
    pub cache_dir: Option<std::path::PathBuf>,
}

/// `server.tls`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain (leaf first), e.g. certbot's `fullchain.pem`.
    pub cert_file: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1), e.g. `privkey.pem`.
    pub key_file: String,
}

/// What a token may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Playlist, guide, streams, HLS, the tuner routes, the dashboard and reads of the API.
    #[default]
    Viewer,
    /// Everything.
    Admin,
}

/// One entry of `server.tokens`. Exactly one of `token`, `token_file`, `token_env` gives
/// the secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    /// Shown in `/api/tokens`, logs and the `token` label of metrics (never the secret).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the secret (trailing newline ignored), e.g. a Docker secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// An environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(default)]
    pub role: Role,
    /// Most simultaneous `/stream` and HLS sessions. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u32>,
    /// Only channels of these groups (`streams[].group`); empty: every channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// When the token stops working (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    /// The secret, resolved by the loader from whichever key gives it.
    #[serde(skip)]
    pub secret: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 5000,
            debug: false,
            auth_token: None,
            public_url: None,
            allow_api_commands: false,
            allow_api_local_sources: false,
            max_body_bytes: 1024 * 1024,
            max_connections: 1024,
            header_timeout_secs: 10,
            write_timeout_secs: 30,
            auth_fail_limit: 10,
            auth_block_secs: 60,
            auth_limit_loopback: false,
            state_file: None,
            guide_program_minutes: 60,
            tls: None,
            redirect_http_port: None,
            trusted_proxies: Vec::new(),
            tokens: Vec::new(),
            metrics_for_viewers: false,
            cache_dir: None,
        }
    }
}

/// The `engine` section: how channel pipelines live and how clients are treated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Seconds a channel keeps running after its last client leaves (instant zapping back).
    pub idle_grace_secs: u64,
    /// Seconds a first client waits for a channel to produce a picture before a 503.
    pub start_timeout_secs: u64,
    /// Seconds without data from a source before it counts as stalled and is reopened.
    pub stall_timeout_secs: u64,
    /// Per-channel backlog kept for joining and lagging clients, in bytes.
    pub buffer_bytes: usize,
    /// How many times a client may fall behind the backlog (and skip ahead) before it is
    /// disconnected.
    pub max_client_skips: u32,
    /// Most clients of one channel at once; more are answered 503. Default 0: no limit
    /// (`server.max_connections` still bounds the total).
    pub max_clients_per_channel: usize,
    /// Seconds before a channel playing a backup source first checks whether its primary
    /// source is healthy again; the wait doubles after each failed check (at most 5 min).
    /// Default 30.
    pub failback_check_secs: u64,
    /// Length HLS segments aim at, in seconds: a segment ends at the first keyframe after
    /// this much (so with a 2 s GOP and 2, every segment is 2 s). Default 2.
    pub hls_segment_secs: f64,
    /// Segments listed in an HLS playlist (the live window). Default 6.
    pub hls_list_size: usize,
    /// Length of HLS partial segments (LL-HLS `EXT-X-PART`), in seconds: players that
    /// follow them start on the first part of a cold channel and stay near the live
    /// edge. 0: none (plain HLS). Default 0.5.
    pub hls_part_secs: f64,
    /// Keep the N most recently watched channels running for `idle_grace_secs` longer
    /// after their last viewer, so zapping back and forth joins a running channel. 0: off.
    pub warm_recent: usize,
    /// The ffmpeg executable for `custom_ffmpeg` commands that start with `ffmpeg`
    /// (default: `ffmpeg` from PATH).
    pub ffmpeg_path: Option<String>,
    /// Where channels with `catchup_hours` keep their archive (created if missing;
    /// required when any channel archives).
    pub archive_dir: Option<std::path::PathBuf>,
    /// The most bytes all archives together may use; the oldest segments go first, across
    /// channels. Default: no limit but the disk's free space.
    pub archive_max_bytes: Option<u64>,
    /// Where recordings (`/api/recordings`) are saved, as `<id>.ts` with a JSON sidecar
    /// (created if missing). Without it, recording is off.
    pub recordings_dir: Option<std::path::PathBuf>,
    /// Length archive segments aim at, in seconds (each is cut at the first keyframe after
    /// this much). Default 6.
    pub archive_segment_secs: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            idle_grace_secs: 15,
            start_timeout_secs: 15,
            stall_timeout_secs: 10,
            buffer_bytes: 16 * 1024 * 1024,
            max_client_skips: 10,
            max_clients_per_channel: 0,
            failback_check_secs: 30,
            hls_segment_secs: 2.0,
            hls_list_size: 6,
            hls_part_secs: 0.5,
            warm_recent: 0,
            ffmpeg_path: None,
            archive_dir: None,
            archive_max_bytes: None,
            recordings_dir: None,
            archive_segment_secs: 6.0,
        }
    }
}

/// Which audio tracks a profile keeps (`audio_tracks`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AudioTracks {
    /// Every audio track, in source order.
    #[default]
    All,
    /// The first audio track only.
    First,
    /// The tracks in these languages (ISO 639 codes), in this order; the first track
    /// when none matches.
    Languages(Vec<String>),
}

impl Serialize for AudioTracks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AudioTracks::All => s.serialize_str("all"),
            AudioTracks::First => s.serialize_str("first"),
            AudioTracks::Languages(l) => l.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AudioTracks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "all" => Ok(AudioTracks::All),
            Raw::Word(w) if w == "first" => Ok(AudioTracks::First),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "{w:?} is not `all`, `first` or a list of language codes"
            ))),
            Raw::List(l) => Ok(AudioTracks::Languages(l)),
        }
    }
}

/// What a profile does with subtitle and teletext streams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subtitles {
    #[default]
    Copy,
    None,
}

/// Whether a transcode deinterlaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deinterlace {
    /// Interlaced sources (by their field order or their frames' flags) only.
    #[default]
    Auto,
    On,
    Off,
}

/// The rate of a deinterlaced picture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeinterlaceRate {
    /// One picture per frame (25i -> 25p).
    #[default]
    Frame,
    /// One picture per field (25i -> 50p).
    Field,
}

/// A named ffmpeg profile: how a channel's source becomes MPEG-TS.
///
/// `copy` for both codecs relays the source untouched; an encoder name transcodes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `copy` or a libav video encoder name (e.g. `libx264`).
    pub video_codec: Option<String>,
    /// `copy` or a libav audio encoder name (e.g. `aac`).
    pub audio_codec: Option<String>,
    /// Target video bitrate, `2500k` style.
    pub video_bitrate: Option<Value<Bitrate>>,
    /// Target audio bitrate, `128k` style.
    pub audio_bitrate: Option<Value<Bitrate>>,
    /// Video rate-control maximum, `3000k` style.
    pub maxrate: Option<Value<Bitrate>>,
    /// Video rate-control buffer, `5000k` style.
    pub bufsize: Option<Value<Bitrate>>,
    /// `1280x720`, or `x720` to keep the aspect ratio.
    pub resolution: Option<Value<Resolution>>,
    /// Output frame rate, `25`, `29.97` or `30000/1001`.
    pub framerate: Option<Value<FrameRate>>,
    /// Encoder preset (x264: `veryfast`, ...).
    pub preset: Option<String>,
    /// Encoder tune (x264: `zerolatency`, ...).
    pub tune: Option<String>,
    /// Keyframe interval in frames.
    pub gop: Option<u32>,
    /// Encoder threads (0 = automatic).
    pub threads: Option<u32>,
    /// Output audio channels.
    pub audio_channels: Option<u16>,
    /// Output audio sample rate in Hz.
    pub audio_sample_rate: Option<u32>,
    /// Output container; only `mpegts` is served.
    pub format: Option<String>,
    /// Which audio tracks a transcode keeps: `all` (default), `first`, or a list of
    /// language codes in preference order. A relay (`audio_codec: copy`) follows it too.
    pub audio_tracks: Option<AudioTracks>,
    /// Subtitle and teletext streams: `copy` (default) or `none`.
    pub subtitles: Option<Subtitles>,
    /// `auto` (default: interlaced sources only), `on` or `off`.
    pub deinterlace: Option<Deinterlace>,
    /// A deinterlaced picture per `frame` (default) or per `field` (double rate).
    pub deinterlace_rate: Option<DeinterlaceRate>,
    /// A copy profile relays a live MPEG-TS source (HTTP, UDP, SRT) packet by packet as it
    /// arrives (default `true`); `false` demuxes and remuxes it with libav instead.
    pub ts_relay: Option<bool>,
    /// libav options for opening the input (`user_agent`, `headers`, `rw_timeout`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_options: BTreeMap<String, String>,
    /// libav options passed to the encoders.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encoder_options: BTreeMap<String, String>,
}

/// The owner's changes to one imported channel, kept across refreshes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffmpeg_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo: Option<String>,
    /// Not served at all (playlist, guide, tuner, streams).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

impl ChannelOverride {
    pub fn is_empty(&self) -> bool {
        *self == ChannelOverride::default()
    }

    /// Puts the override's fields on the imported channel `s`.
    pub fn apply(&self, s: &mut StreamConfig) {
        if let Some(n) = &self.name {
            s.name = n.clone();
        }
        if let Some(n) = self.channel_number {
            s.channel_number = Some(n);
        }
        if let Some(g) = &self.group {
            s.group = Some(g.clone());
        }
        if let Some(p) = &self.ffmpeg_profile {
            s.ffmpeg_profile = Some(p.clone());
        }
        if let Some(l) = &self.logo {
            s.logo = Some(l.clone());
        }
    }
}

/// The first id of channels imported from playlists; the config file's and the API's ids
/// stay below it, so they never collide.
pub const RESERVED_IDS: u32 = 2_000_000_000;

/// One channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Unique integer identifier, used in `/stream/<id>`.
    pub id: u32,
    /// Display name.
    pub name: String,
    /// Input URL, file path or `lavfi:<filtergraph>`.
    pub source: String,
    /// Play a file source forever, with continuous timestamps.
    #[serde(default, rename = "loop", skip_serializing_if = "std::ops::Not::not")]
    pub loop_source: bool,
    /// Keep the channel's pipeline running with no viewers (restarted like any other on
    /// failure), so a viewer's zap is a join of a running channel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub always_on: bool,
    /// Hours of the channel's output Amps keeps in its archive (`engine.archive_dir`) for
    /// catch-up, timeshift and recordings; 0 (default) keeps none. An archived channel
    /// runs continuously, like `always_on`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub catchup_hours: u32,
    /// Sources to switch to, in order, when the active one fails to open, breaks or
    /// stalls; the primary `source` is taken back once it is healthy again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup_sources: Vec<BackupSource>,
    /// Name of a profile under `ffmpeg_profiles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffmpeg_profile: Option<String>,
    /// More profiles (names under `ffmpeg_profiles`) a viewer may ask for with
    /// `?profile=<name>`; the channel reads and decodes its source once for all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// libav options for opening the primary source, over the profile's `input_options`
    /// (`user_agent`, `referer`, `headers`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_options: BTreeMap<String, String>,
    /// Where an imported channel comes from (`playlist:<name>`); set by Amps, never by
    /// the config file or the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// A bespoke command whose stdout is MPEG-TS; takes precedence over the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_ffmpeg: Option<CustomFfmpeg>,
    /// EPG channel id; default `<id>.amps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tvg_id: Option<String>,
    /// Alternate guide name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tvg_name: Option<String>,
    /// Logo URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo: Option<String>,
    /// Group title for player UIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Channel number (1 or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_number: Option<u32>,
    /// Long description (`#EXTREM:AMP-DESCRIPTION`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// URL of an external schedule feed (`#EXTREM:AMP-PROGRAM-FEED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_feed: Option<String>,
    /// Upcoming programs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next_programs: Vec<Program>,
    /// Activation window; only in `scheduled_streams`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StreamConfig {
    /// The channel is kept running with no viewers (`always_on`, or it archives).
    pub fn runs_always(&self) -> bool {
        self.always_on || self.catchup_hours > 0
    }

    /// The EPG id: `tvg_id`, or `<id>.amps`.
    pub fn effective_tvg_id(&self) -> String {
        match &self.tvg_id {
            Some(t) => t.clone(),
            None => format!("{}.amps", self.id),
        }
    }

    /// Whether `other` produces the same media (same source, profile, command, looping):
    /// a change of anything else (name, logo, programs, ...) needs no producer restart.
    pub fn same_media(&self, other: &StreamConfig) -> bool {
        self.source == other.source
            && self.input_options == other.input_options
            && self.backup_sources == other.backup_sources
            && self.ffmpeg_profile == other.ffmpeg_profile
            && self.profiles == other.profiles
            && self.custom_ffmpeg == other.custom_ffmpeg
            && self.loop_source == other.loop_source
    }

    /// The channel with its source and backup sources fit for status, logs and the API
    /// (credentials, queries and providers' account secrets removed).
    pub fn with_redacted_sources(&self) -> StreamConfig {
        let mut s = self.clone();
        s.source = crate::auth::redact_source(&s.source);
        for b in &mut s.backup_sources {
            b.source = crate::auth::redact_source(&b.source);
        }
        s
    }

    /// The ordering key of the registry and playlist: channel number, then id.
    pub fn order_key(&self) -> (u32, u32) {
        (self.channel_number.unwrap_or(u32::MAX), self.id)
    }
}

/// An upcoming program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// When it ends (default: when the next one starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A scheduled stream's window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
}

/// A backup source: a string, or a mapping with `source` and libav `input_options` (which
/// replace the profile's for this source). Written back in the same form.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupSource {
    pub source: String,
    pub input_options: BTreeMap<String, String>,
}

impl Serialize for BackupSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        if self.input_options.is_empty() {
            return s.serialize_str(&self.source);
        }
        let mut m = s.serialize_struct("BackupSource", 2)?;
        m.serialize_field("source", &self.source)?;
        m.serialize_field("input_options", &self.input_options)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for BackupSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            source: String,
            #[serde(default)]
            input_options: BTreeMap<String, String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Plain(String),
            Full(Full),
        }
        Ok(match Either::deserialize(d)? {
            Either::Plain(source) => BackupSource {
                source,
                input_options: BTreeMap::new(),
            },
            Either::Full(f) => BackupSource {
                source: f.source,
                input_options: f.input_options,
            },
        })
    }
}

/// `custom_ffmpeg`: a command string, or a mapping with `command`, `shell`, `cwd`, `env`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CustomFfmpeg {
    pub command: String,
    #[serde(default)]
    pub shell: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomFfmpegMap {
    command: String,
    #[serde(default)]
    shell: bool,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for CustomFfmpeg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CustomFfmpeg;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a command string or a mapping with `command`, `shell`, `cwd`, `env`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CustomFfmpeg, E> {
                Ok(CustomFfmpeg {
                    command: v.to_owned(),
                    shell: false,
                    cwd: None,
                    env: BTreeMap::new(),
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<CustomFfmpeg, A::Error> {
                let m = CustomFfmpegMap::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(CustomFfmpeg {
                    command: m.command,
                    shell: m.shell,
                    cwd: m.cwd,
                    env: m.env,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_ffmpeg_accepts_string_and_mapping() {
        let s: CustomFfmpeg = serde_yaml::from_str("ffmpeg -i {source} -f mpegts pipe:1").unwrap();
        assert_eq!(s.command, "ffmpeg -i {source} -f mpegts pipe:1");
        assert!(!s.shell);
        let m: CustomFfmpeg =
            serde_yaml::from_str("{command: 'x {id}', shell: true, cwd: /tmp, env: {A: b}}")
                .unwrap();
        assert!(m.shell);
        assert_eq!(m.cwd.as_deref(), Some("/tmp"));
        assert_eq!(m.env.get("A").map(String::as_str), Some("b"));
        let bad = serde_yaml::from_str::<CustomFfmpeg>("{command: x, shel: true}").unwrap_err();
        assert!(bad.to_string().contains("unknown field `shel`"), "{bad}");
        let bad = serde_yaml::from_str::<CustomFfmpeg>("[1, 2]").unwrap_err();
        assert!(
            bad.to_string().contains("a command string or a mapping"),
            "{bad}"
        );
    }

    #[test]
    fn a_profile_defined_twice_is_an_error() {
        let e = serde_yaml::from_str::<Config>(
            "ffmpeg_profiles:\n  relay: {video_codec: copy}\n  relay: {video_codec: libx264}\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("profile \"relay\" is defined twice"),
            "{e}"
        );
    }

    #[test]
    fn default_tvg_id_derives_from_id() {
        let s: StreamConfig =
            serde_yaml::from_str("{id: 7, name: N, source: S, ffmpeg_profile: p}").unwrap();
        assert_eq!(s.effective_tvg_id(), "7.amps");
        assert_eq!(s.order_key(), (u32::MAX, 7));
    }
}
