//! Configuration: the model, how it is loaded, and how it is validated.
//!
//! Loading is defaults, then the file, then environment overrides, then validation. Errors
//! name the file, line and column where known and the key path
//! (`config.yaml:27:5: streams[3].ffmpeg_profile: unknown profile "hd"`). This module does
//! no network or media work; encoder names are checked through [`validate::EncoderCatalog`].

pub mod device_id;
pub mod model;
pub mod secrets;
pub mod source;
pub mod time;
pub mod units;
pub mod validate;
pub mod yaml_index;

pub use model::{
    AudioTracks, BackupSource, ChannelOverride, Config, CustomFfmpeg, Deinterlace, DeinterlaceRate,
    EngineConfig, GuideConfig, HdhrConfig, NamedToken, PlaylistConfig, Profile, Program, Role,
    Schedule, ServerConfig, StreamConfig, Subtitles, TlsConfig, XtreamAccount, RESERVED_IDS,
};
pub use time::Timestamp;

use crate::error::{Error, ErrorKind, Result};
use std::path::{Path, PathBuf};
use validate::{EncoderCatalog, Issue};
use yaml_index::YamlIndex;

/// The bundled `config.yaml`, used when no file is given: offline test-pattern channels.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config.yaml");

/// A loaded, validated configuration and what the operator should be told about it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Where it came from (a path, or `<embedded default>`).
    pub origin: String,
    /// Problems that did not stop loading, each naming its key and line.
    pub warnings: Vec<String>,
}

/// Which file to read: `--config`, else `AMPS_CONFIG`, else `./config.yaml` if present,
/// else the embedded default (None).
pub fn resolve_path(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(p) = env("AMPS_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from("config.yaml");
    local.exists().then_some(local)
}

/// Loads from `path` (or the embedded default), applies `env`, validates.
pub fn load(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    catalog: &dyn EncoderCatalog,
) -> Result<Loaded> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("{}: cannot read: {e}", p.display()),
                )
            })?;
            load_str(&text, &p.display().to_string(), env, catalog)
        }
        None => load_str(EMBEDDED_DEFAULT, "<embedded default>", env, catalog),
    }
}

/// Loads from text; `origin` names it in messages.
pub fn load_str(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
    catalog: &dyn EncoderCatalog,
) -> Result<Loaded> {
    let mut config = parse(text, origin)?;
    apply_env(&mut config, env)?;
    let index = YamlIndex::build(text);
    let secret_issues = secrets::resolve_token_secrets(&mut config, env);
    let mut report = validate::validate_config(&config, catalog);
    report.errors.splice(0..0, secret_issues);
    let locate = |i: &Issue| match index.find(&i.path) {
        // Env overrides have no line; `find` still points at the key they replaced.
        Some(p) => format!("{origin}:{}:{}: {i}", p.line, p.column),
        None => format!("{origin}: {i}"),
    };
    if !report.errors.is_empty() {
        let details: Vec<String> = report.errors.iter().map(locate).collect();
        let n = details.len();
        return Err(Error::with_details(
            ErrorKind::Config,
            format!(
                "{origin}: {n} configuration error{}",
                if n == 1 { "" } else { "s" }
            ),
            details,
        ));
    }
    let warnings = report.warnings.iter().map(locate).collect();
    for i in report.ignored_scheduled.iter().rev() {
        config.scheduled_streams.remove(*i);
    }
    Ok(Loaded {
        config,
        origin: origin.to_owned(),
        warnings,
    })
}

/// Deepest `[`/`{` nesting a config may use. Real configs use 3 or 4; the YAML parser's
/// time grows with the square of the depth, so a pathological file is refused up front.
const MAX_FLOW_DEPTH: usize = 64;

/// Where flow collections (`[`, `{`) nest deeper than [`MAX_FLOW_DEPTH`], as (line, col).
/// Quoted strings and comments are skipped.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut col) = (0usize, 1usize, 0usize);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut prev = '\n';
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        col += 1;
        if c == '\n' {
            line += 1;
            col = 0;
            comment = false;
            prev = c;
            continue;
        }
        if comment {
            continue;
        }
        match quote {
            Some('"') if c == '\\' => {
                chars.next();
                col += 1;
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' if prev.is_whitespace() => comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some((line, col));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    None
}

/// YAML text -> typed model, with serde's message rewritten as `origin:line:col: path: msg`.
pub fn parse(text: &str, origin: &str) -> Result<Config> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    if let Some((line, col)) = too_deep(text) {
        return Err(Error::with_details(
            ErrorKind::Config,
            format!("{origin}: 1 configuration error"),
            vec![format!(
                "{origin}:{line}:{col}: [ and {{ nest deeper than {MAX_FLOW_DEPTH} levels"
            )],
        ));
    }
    serde_yaml::from_str::<Config>(text).map_err(|e| {
        let mut msg = e.to_string();
        if let Some(cut) = msg.rfind(" at line ") {
            msg.truncate(cut);
        }
        let at = match e.location() {
            Some(l) => format!("{origin}:{}:{}", l.line(), l.column()),
            None => origin.to_owned(),
        };
        Error::with_details(
            ErrorKind::Config,
            format!("{origin}: 1 configuration error"),
            vec![format!("{at}: {msg}")],
        )
    })
}

/// Environment overrides: `AMPS_TOKEN`, `AMPS_HOST`, `AMPS_PORT`, `AMPS_PUBLIC_URL`,
/// `AMPS_DEBUG`. An empty variable counts as unset.
pub fn apply_env(config: &mut Config, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(t) = get("AMPS_TOKEN") {
        config.server.auth_token = Some(t);
    }
    if let Some(h) = get("AMPS_HOST") {
        config.server.host = h;
    }
    if let Some(p) = get("AMPS_PORT") {
        config.server.port = p.parse().map_err(|_| {
            Error::new(
                ErrorKind::Config,
                format!("AMPS_PORT: {p:?} is not a port number (0-65535)"),
            )
        })?;
    }
    if let Some(u) = get("AMPS_PUBLIC_URL") {
        config.server.public_url = Some(u);
    }
    if let Some(d) = get("AMPS_DEBUG") {
        config.server.debug =
            matches!(d.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on");
    }
    Ok(())
}

/// The process environment, as the loader's `env` argument.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn flow_nesting_is_bounded_outside_quotes_and_comments() {
        let deep = format!("streams: {}1{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(super::too_deep(&deep), Some((1, 74)));
        let ok = format!("streams: {}1{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(super::too_deep(&ok), None);
        let quoted = format!(
            "a: '{}'\nb: \"{}\\\"\"\n# {}\n",
            "[".repeat(99),
            "{".repeat(99),
            "[".repeat(99)
        );
        assert_eq!(super::too_deep(&quoted), None);
        let e = super::parse(&deep, "c.yaml").unwrap_err();
        assert!(
            e.to_string()
                .contains("c.yaml:1:74: [ and { nest deeper than 64 levels"),
            "{e}"
        );
    }

    use super::*;
    use crate::libav::Catalog;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load_err(text: &str) -> Vec<String> {
        load_str(text, "config.yaml", &no_env, &Catalog::new())
            .unwrap_err()
            .details()
            .to_vec()
    }

    #[test]
    fn the_bundled_config_loads_and_has_the_promised_channels() {
        let l = load(None, &no_env, &Catalog::new()).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let c = &l.config;
        assert!(c.streams.len() >= 3);
        assert!(c
            .streams
            .iter()
            .all(|s| s.source.starts_with("lavfi:") || s.custom_ffmpeg.is_some()));
        let profile = |s: &StreamConfig| s.ffmpeg_profile.as_ref().map(|p| &c.ffmpeg_profiles[p]);
        assert!(c
            .ffmpeg_profiles
            .values()
            .any(|p| p.video_codec.as_deref() == Some("copy")));
        assert!(c
            .streams
            .iter()
            .any(|s| profile(s).is_some_and(|p| p.video_codec.as_deref() == Some("mpeg2video"))));
        assert!(c
            .streams
            .iter()
            .any(|s| profile(s).is_some_and(|p| p.video_codec.as_deref() == Some("libx264"))));
        assert!(c.streams.iter().any(|s| s.custom_ffmpeg.is_some()));
        assert_eq!(c.server.host, "127.0.0.1");
    }

    #[test]
    fn validation_errors_name_file_line_column_and_key() {
        let text = "ffmpeg_profiles:\n  copy: {video_codec: copy}\nstreams:\n  - id: 1\n    name: A\n    source: s\n    ffmpeg_profile: hd\n";
        assert_eq!(
            load_err(text),
            vec![
                "config.yaml:7:5: streams[0].ffmpeg_profile: unknown profile \"hd\" (known: copy)"
            ]
        );
    }

    #[test]
    fn catch_up_needs_an_archive_folder_and_a_bounded_window() {
        let text = "ffmpeg_profiles:\n  copy: {video_codec: copy}\nstreams:\n  - id: 1\n    name: A\n    source: s\n    ffmpeg_profile: copy\n    catchup_hours: 800\n";
        assert_eq!(
            load_err(text),
            vec![
                "config.yaml:8:5: streams[0].catchup_hours: at most 720 (30 days)",
                "config.yaml:8:5: streams[0].catchup_hours: needs engine.archive_dir: the folder where channel archives are kept",
            ]
        );
        let text = "engine:\n  archive_segment_secs: 0.5\n  archive_max_bytes: 1000\n";
        assert_eq!(
            load_err(text),
            vec![
                "config.yaml:2:3: engine.archive_segment_secs: must be between 1 and 60",
                "config.yaml:3:3: engine.archive_max_bytes: must be at least 67108864 (64 MiB): a few minutes of one channel",
            ]
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_their_line() {
        let e = load_err("server:\n  prot: 5000\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("config.yaml:2:3: server: unknown field `prot`"),
            "{e:?}"
        );
        let e = load_err("streams:\n  - id: one\n    name: A\n    source: s\n");
        assert!(
            e[0].starts_with("config.yaml:2:9: streams[0].id: invalid type"),
            "{e:?}"
        );
        let e = load_err("streams:\n  - id: 1\n    name: A\n    source: s\n    next_programs:\n      - title: T\n        start: soon\n");
        assert!(
            e[0].contains("streams[0].next_programs[0].start: \"soon\" is not an ISO-8601 time"),
            "{e:?}"
        );
    }

    #[test]
    fn env_overrides_file_and_is_validated() {
        let env = |k: &str| match k {
            "AMPS_TOKEN" => Some("s3cret-token".to_string()),
            "AMPS_PORT" => Some("8080".to_string()),
            "AMPS_HOST" => Some("0.0.0.0".to_string()),
            _ => None,
        };
        let l = load_str(
            "server: {port: 5000, auth_token: file}\n",
            "c",
            &env,
            &Catalog::new(),
        )
        .unwrap();
        assert_eq!(l.config.server.auth_token.as_deref(), Some("s3cret-token"));
        assert_eq!(l.config.server.port, 8080);
        assert_eq!(l.config.server.host, "0.0.0.0");
        let bad = |k: &str| (k == "AMPS_PORT").then(|| "http".to_string());
        let e = load_str("", "c", &bad, &Catalog::new()).unwrap_err();
        assert!(
            e.to_string()
                .contains("AMPS_PORT: \"http\" is not a port number"),
            "{e}"
        );
    }

    #[test]
    fn every_error_is_reported_not_just_the_first() {
        let text = "streams:\n  - {id: 1, name: '', source: s}\n  - {id: 1, name: B, source: ''}\n";
        assert_eq!(load_err(text).len(), 5);
    }
}
