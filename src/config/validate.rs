//! Cross-field validation of the typed configuration. Pure: no I/O.
//!
//! Every problem is an [`Issue`] whose `path` names the key (`streams[3].ffmpeg_profile`) so
//! the loader can add file, line and column, and the API can point at the bad field. The
//! same stream rules serve the config file and the REST API.

use super::model::{Config, Profile, StreamConfig};
use std::collections::{BTreeMap, HashMap};

/// One problem, at one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Which media type an encoder must produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    Video,
    Audio,
}

/// Answers "does libav have this encoder". The real one is [`crate::libav::Catalog`].
pub trait EncoderCatalog {
    fn has_encoder(&self, media: Media, name: &str) -> bool;
}

/// Errors (refuse to load) and warnings (load, but tell the operator).
#[derive(Debug, Default)]
pub struct Report {
    pub errors: Vec<Issue>,
    pub warnings: Vec<Issue>,
    /// Indexes into `scheduled_streams` of entries ignored for reusing an id.
    pub ignored_scheduled: Vec<usize>,
}

fn join(prefix: &str, key: &str) -> String {
    if key.is_empty() {
        prefix.to_owned()
    } else if prefix.is_empty() {
        key.to_owned()
    } else if key.starts_with('[') {
        format!("{prefix}{key}")
    } else {
        format!("{prefix}.{key}")
    }
}

struct Sink<'a> {
    prefix: &'a str,
    out: &'a mut Vec<Issue>,
}

impl Sink<'_> {
    fn push(&mut self, key: &str, message: impl Into<String>) {
        self.out.push(Issue {
            path: join(self.prefix, key),
            message: message.into(),
        });
    }
}

/// TLS, proxies and named tokens (`server.tls`, `trusted_proxies`, `tokens`).
fn validate_remote(s: &super::model::ServerConfig, sink: &mut Sink) {
    if let Some(tls) = &s.tls {
        for (key, v) in [
            ("tls.cert_file", &tls.cert_file),
            ("tls.key_file", &tls.key_file),
        ] {
            if v.trim().is_empty() {
                sink.push(key, "must name a PEM file");
            }
        }
    }
    match (s.redirect_http_port, &s.tls) {
        (Some(_), None) => sink.push(
            "redirect_http_port",
            "needs server.tls (it redirects to HTTPS)",
        ),
        (Some(p), Some(_)) if p == s.port => {
            sink.push("redirect_http_port", format!("{p} is server.port itself"))
        }
        _ => {}
    }
    for (i, p) in s.trusted_proxies.iter().enumerate() {
        if parse_net(p).is_none() {
            sink.push(
                &format!("trusted_proxies[{i}]"),
                format!("{p:?} is not an IP address or CIDR (e.g. 127.0.0.1, 10.0.0.0/8, ::1)"),
            );
        }
    }
    let mut names = std::collections::HashSet::new();
    let mut secrets = std::collections::HashSet::new();
    for (i, t) in s.tokens.iter().enumerate() {
        let at = |k: &str| format!("tokens[{i}].{k}");
        if !token_name_ok(&t.name) {
            sink.push(
                &at("name"),
                format!(
                    "{:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
                    t.name
                ),
            );
        } else if t.name == "admin" || !names.insert(t.name.as_str()) {
            sink.push(
                &at("name"),
                format!(
                    "{:?} is used twice (\"admin\" is the auth_token's name)",
                    t.name
                ),
            );
        }
        if let Some(secret) = &t.secret {
            if s.auth_token.as_deref() == Some(secret) || !secrets.insert(secret.as_str()) {
                sink.push(
                    &at("token"),
                    "the same secret is given twice (each token must be its own)",
                );
            }
        }
        if t.max_streams == Some(0) {
            sink.push(
                &at("max_streams"),
                "must be at least 1 (remove the key for no limit)",
            );
        }
        if t.groups.iter().any(|g| g.trim().is_empty()) {
            sink.push(&at("groups"), "group names must not be empty");
        }
    }
    if !s.tokens.is_empty() && s.auth_token.is_none() {
        sink.push(
            "tokens",
            "needs server.auth_token (the admin token) too: without it every request is admitted",
        );
    }
}

/// A token name: 1 to 64 letters, digits, `-`, `_` or `.` (it is a metric label and a
/// path segment of `/api/tokens/<name>`).
pub fn token_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// An address or CIDR of `server.trusted_proxies` (a bare address is a /32 or /128).
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// The `hdhomerun` section.
fn validate_hdhr(h: &super::model::HdhrConfig, errors: &mut Vec<Issue>) {
    let mut err = |key: &str, message: String| {
        errors.push(Issue {
            path: format!("hdhomerun.{key}"),
            message,
        })
    };
    if !(1..=64).contains(&h.tuner_count) {
        err(
            "tuner_count",
            format!("{} is out of range (1 to 64)", h.tuner_count),
        );
    }
    if h.friendly_name.trim().is_empty() || h.friendly_name.len() > 64 {
        err("friendly_name", "must be 1 to 64 characters".into());
    }
    if let Some(id) = &h.device_id {
        if !super::device_id::valid_device_id(id) {
            err(
                "device_id",
                format!(
                    "{id:?} is not 8 hex digits with a valid HDHomeRun check digit (try {})",
                    super::device_id::with_check_digit(id.get(..7).unwrap_or(id))
                ),
            );
        }
    }
}

/// `hdhomerun.transcode_profiles`: known `?transcode=` values, known profiles.
fn validate_transcode_profiles(cfg: &Config, out: &mut Vec<Issue>) {
    for (value, profile) in &cfg.hdhomerun.transcode_profiles {
        let path = format!("hdhomerun.transcode_profiles.{value}");
        if !super::model::HDHR_TRANSCODE_VALUES.contains(&value.as_str()) {
            out.push(Issue {
                path,
                message: format!(
                    "not an HDHomeRun transcode value (one of: {})",
                    super::model::HDHR_TRANSCODE_VALUES.join(", ")
                ),
            });
        } else if !cfg.ffmpeg_profiles.contains_key(profile) {
            let known: Vec<&str> = cfg.ffmpeg_profiles.keys().map(String::as_str).collect();
            out.push(Issue {
                path,
                message: format!("unknown profile {profile:?} (known: {})", known.join(", ")),
            });
        }
    }
}

/// `hdhomerun.discovery*`: the token discovery replies may carry.
fn validate_discovery(cfg: &Config, out: &mut Vec<Issue>) {
    let h = &cfg.hdhomerun;
    let issue = |key: &str, message: String| Issue {
        path: format!("hdhomerun.{key}"),
        message,
    };
    if let Some(name) = &h.discovery_token {
        match cfg.server.tokens.iter().find(|t| &t.name == name) {
            None => out.push(issue(
                "discovery_token",
                format!("{name:?} is not the name of one of server.tokens"),
            )),
            Some(t) if t.role == super::model::Role::Admin => out.push(issue(
                "discovery_token",
                format!("{name:?} is an admin token; discovery tells it to anyone on the network: name a viewer token"),
            )),
            Some(_) => {}
        }
    }
    let needs_token = cfg.server.auth_token.is_some() || !cfg.server.tokens.is_empty();
    if h.discovery == Some(true) && needs_token && h.discovery_token.is_none() {
        out.push(issue(
            "discovery",
            "needs hdhomerun.discovery_token: a viewer token (server.tokens) whose secret the discovery replies may carry".into(),
        ));
    }
    if h.discovery_port == 0 {
        out.push(issue("discovery_port", "must be 1 to 65535".into()));
    }
}

/// Validates the whole configuration.
pub fn validate_config(cfg: &Config, catalog: &dyn EncoderCatalog) -> Report {
    let mut report = Report::default();
    validate_server(cfg, &mut report.errors);
    validate_hdhr(&cfg.hdhomerun, &mut report.errors);
    validate_transcode_profiles(cfg, &mut report.errors);
    validate_discovery(cfg, &mut report.errors);
    for (name, p) in &cfg.ffmpeg_profiles {
        let prefix = format!("ffmpeg_profiles.{name}");
        report
            .errors
            .extend(validate_profile(name, p, catalog, &prefix));
    }

    let mut seen: HashMap<u32, String> = HashMap::new();
    for (i, s) in cfg.streams.iter().enumerate() {
        let prefix = format!("streams[{i}]");
        report
            .errors
            .extend(validate_stream(s, &cfg.ffmpeg_profiles, &prefix));
        if s.schedule.is_some() {
            report.errors.push(Issue {
                path: format!("{prefix}.schedule"),
                message: "only allowed in scheduled_streams".into(),
            });
        }
        if let Some(first) = seen.get(&s.id) {
            report.errors.push(Issue {
                path: format!("{prefix}.id"),
                message: format!("duplicate id {} (also used by {first})", s.id),
            });
        } else {
            seen.insert(s.id, describe(&prefix, s));
        }
    }
    for (i, s) in cfg.scheduled_streams.iter().enumerate() {
        let prefix = format!("scheduled_streams[{i}]");
        report
            .errors
            .extend(validate_stream(s, &cfg.ffmpeg_profiles, &prefix));
        if let Some(first) = seen.get(&s.id) {
            report.warnings.push(Issue {
                path: format!("{prefix}.id"),
                message: format!(
                    "id {} is already used by {first}; {} is ignored",
                    s.id,
                    describe(&prefix, s)
                ),
            });
            report.ignored_scheduled.push(i);
        } else {
            seen.insert(s.id, describe(&prefix, s));
        }
    }
    if cfg.engine.archive_dir.is_none() {
        let archived = keyed_streams(cfg).find(|(_, s)| s.catchup_hours > 0);
        if let Some((prefix, _)) = archived {
            report.errors.push(Issue {
                path: format!("{prefix}.catchup_hours"),
                message: "needs engine.archive_dir: the folder where channel archives are kept"
                    .into(),
            });
        }
    }
    for (prefix, s) in keyed_streams(cfg) {
        if s.id >= super::model::RESERVED_IDS {
            report.errors.push(Issue {
                path: format!("{prefix}.id"),
                message: format!(
                    "ids from {} up are reserved for channels imported from playlists",
                    super::model::RESERVED_IDS
                ),
            });
        }
        if s.origin.is_some() {
            report.errors.push(Issue {
                path: format!("{prefix}.origin"),
                message: "set by Amps for imported channels; leave it out".into(),
            });
        }
    }
    validate_providers(cfg, &mut report.errors);
    // Tuners (Plex, Jellyfin) and Kodi tune by number: the channel number, else the id.
    let mut numbers: HashMap<u32, String> = HashMap::new();
    for (prefix, s) in keyed_streams(cfg) {
        let n = s.channel_number.unwrap_or(s.id);
        let key = if s.channel_number.is_some() {
            "channel_number"
        } else {
            "id"
        };
        match numbers.get(&n) {
            Some(first) => report.warnings.push(Issue {
                path: format!("{prefix}.{key}"),
                message: format!(
                    "channel number {n} is also {first}'s: a tuner (Plex, Jellyfin) plays only the first of them on number {n}"
                ),
            }),
            None => {
                numbers.insert(n, describe(&prefix, s));
            }
        }
    }
    report
}

/// Compiles a playlist's name filter, size-limited (a hostile pattern cannot take the
/// memory; matching is linear-time whatever the pattern).
pub fn compile_name_filter(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| e.to_string())
}

/// Whether `url` is something a playlist or guide can be fetched from: http(s) or a path.
fn fetchable(url: &str) -> bool {
    let l = url.trim().to_ascii_lowercase();
    !url.trim().is_empty()
        && (l.starts_with("http://") || l.starts_with("https://") || !l.contains("://"))
}

/// One playlist source (the config file's or the API's). `prefix` is prepended to keys.
pub fn validate_playlist(
    p: &super::model::PlaylistConfig,
    profiles: &BTreeMap<String, Profile>,
    prefix: &str,
) -> Vec<Issue> {
    let mut out = Vec::new();
    let mut sink = Sink {
        prefix,
        out: &mut out,
    };
    if !token_name_ok(&p.name) {
        sink.push("name", "must be 1 to 64 letters, digits, '-', '_' or '.'");
    }
    match (&p.url, &p.xtream) {
        (Some(_), Some(_)) | (None, None) => sink.push(
            "",
            "needs exactly one of `url` (an M3U playlist) and `xtream` (an Xtream Codes account)",
        ),
        (Some(u), None) if !fetchable(u) => {
            sink.push("url", "must be an http:// or https:// URL or a file path")
        }
        (None, Some(x)) => {
            let l = x.server.to_ascii_lowercase();
            if !(l.starts_with("http://") || l.starts_with("https://")) {
                sink.push(
                    "xtream.server",
                    "must be an http:// or https:// URL (e.g. http://provider:8080)",
                );
            }
            if x.username.is_empty() {
                sink.push("xtream.username", "must not be empty");
            }
            if x.password.is_empty() {
                sink.push("xtream.password", "must not be empty");
            }
        }
        _ => {}
    }
    if !profiles.contains_key(&p.ffmpeg_profile) {
        let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
        sink.push(
            "ffmpeg_profile",
            format!(
                "unknown profile {:?} (known: {})",
                p.ffmpeg_profile,
                known.join(", ")
            ),
        );
    }
    for (key, re) in [
        ("include_names", &p.include_names),
        ("exclude_names", &p.exclude_names),
    ] {
        if let Some(r) = re {
            if let Err(e) = compile_name_filter(r) {
                sink.push(key, format!("not a valid regular expression: {e}"));
            }
        }
    }
    for (key, globs) in [
        ("include_groups", &p.include_groups),
        ("exclude_groups", &p.exclude_groups),
    ] {
        if globs.iter().any(|g| g.trim().is_empty()) {
            sink.push(key, "globs must not be empty");
        }
    }
    if p.max_connections == Some(0) {
        sink.push(
            "max_connections",
            "must be at least 1 (leave it out for no limit)",
        );
    }
    if p.number_start == 0 {
        sink.push("number_start", "must be at least 1");
    }
    if p.merge
        .iter()
        .any(|(k, v)| k.trim().is_empty() || v.trim().is_empty())
    {
        sink.push(
            "merge",
            "names, tvg-ids and the tvg-ids they merge into must not be empty",
        );
    }
    if !(1..=1_000_000).contains(&p.max_entries) {
        sink.push("max_entries", "must be 1 to 1000000");
    }
    if p.user_agent
        .as_deref()
        .is_some_and(|u| u.contains(['\r', '\n']))
    {
        sink.push("user_agent", "must be a single line");
    }
    out
}

/// `playlists` and `guides`.
fn validate_providers(cfg: &Config, out: &mut Vec<Issue>) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, p) in cfg.playlists.iter().enumerate() {
        let prefix = format!("playlists[{i}]");
        if let Some(first) = names.insert(&p.name, i) {
            out.push(Issue {
                path: format!("{prefix}.name"),
                message: format!("{:?} is also playlists[{first}]'s name", p.name),
            });
        }
        out.extend(validate_playlist(p, &cfg.ffmpeg_profiles, &prefix));
    }
    for (i, g) in cfg.guides.iter().enumerate() {
        if !fetchable(&g.url) {
            out.push(Issue {
                path: format!("guides[{i}].url"),
                message: "must be an http:// or https:// URL or a file path".into(),
            });
        }
    }
}

/// Every stream of the file with its key path (`streams[3]`, `scheduled_streams[0]`).
fn keyed_streams(cfg: &Config) -> impl Iterator<Item = (String, &StreamConfig)> {
    let streams = cfg.streams.iter().enumerate();
    let scheduled = cfg.scheduled_streams.iter().enumerate();
    streams
        .map(|(i, s)| (format!("streams[{i}]"), s))
        .chain(scheduled.map(|(i, s)| (format!("scheduled_streams[{i}]"), s)))
}

fn describe(prefix: &str, s: &StreamConfig) -> String {
    format!("{prefix} ({:?})", s.name)
}

fn validate_server(cfg: &Config, out: &mut Vec<Issue>) {
    let mut sink = Sink {
        prefix: "server",
        out,
    };
    let s = &cfg.server;
    if let Some(t) = &s.auth_token {
        if t.trim().is_empty() {
            sink.push(
                "auth_token",
                "must not be empty (remove the key to run without a token on loopback)",
            );
        } else if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            sink.push(
                "auth_token",
                "must not contain spaces or control characters",
            );
        }
    }
    if let Some(u) = &s.public_url {
        if !(u.starts_with("http://") || u.starts_with("https://"))
            || u.chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '"')
        {
            sink.push(
                "public_url",
                format!("{u:?} must be an http:// or https:// URL"),
            );
        }
    }
    if s.host.trim().is_empty() {
        sink.push("host", "must not be empty");
    }
    if s.max_body_bytes < 1024 {
        sink.push("max_body_bytes", "must be at least 1024");
    }
    if s.max_connections == 0 {
        sink.push("max_connections", "must be at least 1");
    }
    if s.header_timeout_secs == 0 {
        sink.push("header_timeout_secs", "must be at least 1");
    }
    if s.auth_fail_limit > 0 && s.auth_block_secs == 0 {
        sink.push(
            "auth_block_secs",
            "must be at least 1 when auth_fail_limit is on",
        );
    }
    if s.state_file.as_deref().is_some_and(|f| f.trim().is_empty()) {
        sink.push(
            "state_file",
            "must not be empty (remove the key to turn it off)",
        );
    }
    if s.write_timeout_secs == 0 {
        sink.push("write_timeout_secs", "must be at least 1");
    }
    if s.guide_program_minutes == 0 {
        sink.push("guide_program_minutes", "must be at least 1");
    }
    validate_remote(s, &mut sink);
    let e = &cfg.engine;
    let mut sink = Sink {
        prefix: "engine",
        out: sink.out,
    };
    if e.start_timeout_secs == 0 {
        sink.push("start_timeout_secs", "must be at least 1");
    }
    if e.stall_timeout_secs == 0 {
        sink.push("stall_timeout_secs", "must be at least 1");
    }
    if e.failback_check_secs == 0 {
        sink.push("failback_check_secs", "must be at least 1");
    }
    if !(0.5..=30.0).contains(&e.hls_segment_secs) {
        sink.push("hls_segment_secs", "must be between 0.5 and 30");
    }
    if e.hls_part_secs != 0.0
        && !(0.2..=e.hls_segment_secs.max(0.5) / 2.0).contains(&e.hls_part_secs)
    {
        sink.push(
            "hls_part_secs",
            "must be 0 (no partial segments) or between 0.2 and half of hls_segment_secs",
        );
    }
    if !(3..=100).contains(&e.hls_list_size) {
        sink.push(
            "hls_list_size",
            "must be between 3 and 100 (players start three segments from the live end)",
        );
    }
    if e.buffer_bytes < 256 * 1024 {
        sink.push("buffer_bytes", "must be at least 262144 (256 KiB)");
    }
    if !(1.0..=60.0).contains(&e.archive_segment_secs) {
        sink.push("archive_segment_secs", "must be between 1 and 60");
    }
    if e.archive_max_bytes.is_some_and(|b| b < 64 * 1024 * 1024) {
        sink.push(
            "archive_max_bytes",
            "must be at least 67108864 (64 MiB): a few minutes of one channel",
        );
    }
    for (key, dir) in [
        ("archive_dir", &e.archive_dir),
        ("recordings_dir", &e.recordings_dir),
    ] {
        if dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            sink.push(key, "must not be empty");
        }
    }
}

/// The most output profiles a stream may offer besides its own (`profiles`).
pub const MAX_STREAM_PROFILES: usize = 8;

/// The longest archive a channel may keep (`catchup_hours`).
pub const MAX_CATCHUP_HOURS: u32 = 30 * 24;

/// Validates one stream against the known profiles. `prefix` is prepended to key paths.
pub fn validate_stream(
    s: &StreamConfig,
    profiles: &BTreeMap<String, Profile>,
    prefix: &str,
) -> Vec<Issue> {
    let mut out = Vec::new();
    let mut sink = Sink {
        prefix,
        out: &mut out,
    };
    if s.name.trim().is_empty() {
        sink.push("name", "must not be empty");
    }
    if s.source.trim().is_empty() {
        sink.push("source", "must not be empty");
    }
    if s.backup_sources.len() > 16 {
        sink.push("backup_sources", "at most 16 backup sources");
    }
    for (i, b) in s.backup_sources.iter().enumerate() {
        if b.source.trim().is_empty() {
            sink.push(&format!("backup_sources[{i}].source"), "must not be empty");
        } else if b.source == s.source {
            sink.push(
                &format!("backup_sources[{i}].source"),
                "is the primary source; a backup must be another source",
            );
        }
    }
    match (&s.ffmpeg_profile, &s.custom_ffmpeg) {
        (None, None) => sink.push(
            "ffmpeg_profile",
            "required unless custom_ffmpeg is set (name a profile from ffmpeg_profiles)",
        ),
        (Some(p), _) if !profiles.contains_key(p) => {
            let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
            sink.push(
                "ffmpeg_profile",
                format!("unknown profile {p:?} (known: {})", known.join(", ")),
            );
        }
        _ => {}
    }
    if let Some(c) = &s.custom_ffmpeg {
        if c.command.trim().is_empty() {
            sink.push("custom_ffmpeg.command", "must not be empty");
        }
    }
    if !s.profiles.is_empty() && s.custom_ffmpeg.is_some() {
        sink.push(
            "profiles",
            "needs the in-process engine: a custom_ffmpeg command has one output",
        );
    }
    if s.profiles.len() > MAX_STREAM_PROFILES {
        sink.push(
            "profiles",
            format!("at most {MAX_STREAM_PROFILES} profiles per stream"),
        );
    }
    for (i, p) in s.profiles.iter().enumerate() {
        let key = format!("profiles[{i}]");
        if !profiles.contains_key(p) {
            let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
            sink.push(
                &key,
                format!("unknown profile {p:?} (known: {})", known.join(", ")),
            );
        } else if s.ffmpeg_profile.as_deref() == Some(p.as_str()) {
            sink.push(&key, format!("{p:?} is the stream's own ffmpeg_profile"));
        } else if s.profiles[..i].contains(p) {
            sink.push(&key, format!("{p:?} is listed twice"));
        }
    }
    if s.channel_number == Some(0) {
        sink.push("channel_number", "must be 1 or more");
    }
    if s.catchup_hours > MAX_CATCHUP_HOURS {
        sink.push(
            "catchup_hours",
            format!("at most {MAX_CATCHUP_HOURS} (30 days)"),
        );
    }
    if let Some(t) = &s.tvg_id {
        if t.trim().is_empty() || t.chars().any(char::is_control) {
            sink.push("tvg_id", "must be a non-empty single-line string");
        }
    }
    if let Some(sch) = &s.schedule {
        if let (Some(a), Some(b)) = (&sch.start, &sch.end) {
            if b <= a {
                sink.push(
                    "schedule.end",
                    format!("{b} is not after schedule.start {a}"),
                );
            }
        }
    }
    for (i, p) in s.next_programs.iter().enumerate() {
        if p.title.trim().is_empty() {
            sink.push(&format!("next_programs[{i}].title"), "must not be empty");
        }
    }
    out
}

/// Validates one profile's values (syntax, ranges, encoders present in the linked libav).
pub fn validate_profile(
    name: &str,
    p: &Profile,
    catalog: &dyn EncoderCatalog,
    prefix: &str,
) -> Vec<Issue> {
    let mut out = Vec::new();
    let mut sink = Sink {
        prefix,
        out: &mut out,
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        sink.push(
            "",
            "profile names use letters, digits, '-', '_' and '.' only",
        );
    }
    for (key, codec, media) in [
        ("video_codec", &p.video_codec, Media::Video),
        ("audio_codec", &p.audio_codec, Media::Audio),
    ] {
        if let Some(c) = codec {
            if c != "copy" && !catalog.has_encoder(media, c) {
                let what = if media == Media::Video {
                    "a video"
                } else {
                    "an audio"
                };
                sink.push(
                    key,
                    format!("{c:?} is not {what} encoder in this libav build (or `copy`)"),
                );
            }
        }
    }
    for (key, v) in [
        ("video_bitrate", &p.video_bitrate),
        ("audio_bitrate", &p.audio_bitrate),
        ("maxrate", &p.maxrate),
        ("bufsize", &p.bufsize),
    ] {
        if let Some(e) = v.as_ref().and_then(|v| v.error()) {
            sink.push(key, e);
        }
    }
    if let Some(e) = p.resolution.as_ref().and_then(|v| v.error()) {
        sink.push("resolution", e);
    }
    if let Some(e) = p.framerate.as_ref().and_then(|v| v.error()) {
        sink.push("framerate", e);
    }
    if let Some(super::model::AudioTracks::Languages(langs)) = &p.audio_tracks {
        if langs.is_empty() {
            sink.push(
                "audio_tracks",
                "list at least one language code, or use `all`",
            );
        }
        for l in langs {
            if !(2..=3).contains(&l.len()) || !l.bytes().all(|b| b.is_ascii_lowercase()) {
                sink.push(
                    "audio_tracks",
                    format!("{l:?} is not a language code (ISO 639, e.g. eng or deu)"),
                );
            }
        }
    }
    if p.gop == Some(0) {
        sink.push("gop", "must be at least 1 frame");
    }
    if p.threads.is_some_and(|t| t > 64) {
        sink.push("threads", "must be 0 (automatic) to 64");
    }
    if p.audio_channels.is_some_and(|c| !(1..=8).contains(&c)) {
        sink.push("audio_channels", "must be 1 to 8");
    }
    if p.audio_sample_rate
        .is_some_and(|r| !(8_000..=192_000).contains(&r))
    {
        sink.push("audio_sample_rate", "must be 8000 to 192000");
    }
    if let Some(f) = &p.format {
        if f != "mpegts" {
            sink.push("format", format!("{f:?} is not supported (only mpegts)"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::libav::Catalog;

    fn cfg(yaml: &str) -> Config {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn errors(yaml: &str) -> Vec<String> {
        validate_config(&cfg(yaml), &Catalog::new())
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const PROFILES: &str = "ffmpeg_profiles: {copy: {video_codec: copy, audio_codec: copy}}\n";

    #[test]
    fn a_stream_needs_a_known_profile_or_a_command() {
        let e = errors(&format!(
            "{PROFILES}streams:\n- {{id: 1, name: A, source: s}}\n- {{id: 2, name: B, source: s, ffmpeg_profile: hd}}\n- {{id: 3, name: C, source: s, custom_ffmpeg: 'ffmpeg -i x'}}\n"
        ));
        assert_eq!(
            e,
            vec![
                "streams[0].ffmpeg_profile: required unless custom_ffmpeg is set (name a profile from ffmpeg_profiles)",
                "streams[1].ffmpeg_profile: unknown profile \"hd\" (known: copy)",
            ]
        );
    }

    #[test]
    fn duplicate_ids_and_bad_numbers_are_errors() {
        let e = errors(&format!(
            "{PROFILES}streams:\n- {{id: 1, name: A, source: s, ffmpeg_profile: copy}}\n- {{id: 1, name: B, source: s, ffmpeg_profile: copy, channel_number: 0}}\n"
        ));
        assert_eq!(
            e,
            vec![
                "streams[1].channel_number: must be 1 or more",
                "streams[1].id: duplicate id 1 (also used by streams[0] (\"A\"))",
            ]
        );
    }

    #[test]
    fn scheduled_duplicates_are_ignored_with_a_warning_naming_both() {
        let c = cfg(&format!(
            "{PROFILES}streams:\n- {{id: 1, name: A, source: s, ffmpeg_profile: copy}}\nscheduled_streams:\n- {{id: 1, name: B, source: s, ffmpeg_profile: copy}}\n"
        ));
        let r = validate_config(&c, &Catalog::new());
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.ignored_scheduled, vec![0]);
        assert_eq!(
            r.warnings[0].to_string(),
            "scheduled_streams[0].id: id 1 is already used by streams[0] (\"A\"); scheduled_streams[0] (\"B\") is ignored"
        );
    }

    #[test]
    fn schedule_window_must_be_ordered_and_only_in_scheduled_streams() {
        let e = errors(&format!(
            "{PROFILES}streams:\n- {{id: 1, name: A, source: s, ffmpeg_profile: copy, schedule: {{start: '2024-05-04T18:00:00Z'}}}}\nscheduled_streams:\n- {{id: 2, name: B, source: s, ffmpeg_profile: copy, schedule: {{start: '2024-05-04T18:00:00Z', end: '2024-05-04T17:00:00Z'}}}}\n"
        ));
        assert_eq!(
            e,
            vec![
                "streams[0].schedule: only allowed in scheduled_streams",
                "scheduled_streams[0].schedule.end: 2024-05-04T17:00:00Z is not after schedule.start 2024-05-04T18:00:00Z",
            ]
        );
    }

    #[test]
    fn profiles_are_checked_against_the_linked_libav() {
        let e = errors(
            "ffmpeg_profiles:\n  hd: {video_codec: libx264, audio_codec: aac, video_bitrate: 2500k, resolution: x720}\n  bad: {video_codec: nosuchenc, audio_codec: libx264, video_bitrate: fast, resolution: 1281x720, framerate: '0', format: mp4}\n",
        );
        assert_eq!(
            e,
            vec![
                "ffmpeg_profiles.bad.video_codec: \"nosuchenc\" is not a video encoder in this libav build (or `copy`)",
                "ffmpeg_profiles.bad.audio_codec: \"libx264\" is not an audio encoder in this libav build (or `copy`)",
                "ffmpeg_profiles.bad.video_bitrate: \"fast\" is not a bitrate (expected e.g. 2500k or 2.5M)",
                "ffmpeg_profiles.bad.resolution: \"1281x720\": each side must be an even number from 16 to 8192",
                "ffmpeg_profiles.bad.framerate: \"0\": frame rate must be above 0 and at most 240",
                "ffmpeg_profiles.bad.format: \"mp4\" is not supported (only mpegts)",
            ]
        );
    }

    #[test]
    fn server_values_are_checked() {
        let e = errors("server: {auth_token: ' ', public_url: 'ftp://x', max_body_bytes: 10}\n");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("server.auth_token: must not be empty"));
        assert!(e[1].starts_with("server.public_url: "));
        assert!(e[2].starts_with("server.max_body_bytes: "));
    }
}
