//! `amps list`: the configured channels as a table or JSON.

use crate::config::{Config, StreamConfig};
use argh::FromArgs;
use std::path::PathBuf;

/// list the configured channels
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct Args {
    /// configuration file (default: $AMPS_CONFIG, ./config.yaml, or the bundled default)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// print JSON instead of a table
    #[argh(switch)]
    pub json: bool,
}

pub fn run(args: Args) -> i32 {
    match super::common::load_config(args.config.as_deref()) {
        Ok(l) => {
            for w in &l.warnings {
                eprintln!("warning: {w}");
            }
            let imported = imported(&l.config);
            if args.json {
                let all: Vec<&StreamConfig> = l
                    .config
                    .streams
                    .iter()
                    .chain(&l.config.scheduled_streams)
                    .chain(&imported)
                    .collect();
                match serde_json::to_string_pretty(&all) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("cannot encode JSON: {e}");
                        return 1;
                    }
                }
            } else {
                print!("{}", table(&l.config, chrono::Utc::now()));
                print!("{}", playlists(&l.config, &imported));
                print!("{}", recordings(&l.config));
            }
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn cut(s: &str, max: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() <= max {
        s
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// The channels the playlists import, from their caches (what the server serves when it
/// starts; nothing is fetched here), with the owner's overrides from the state file and
/// their sources redacted.
fn imported(c: &Config) -> Vec<StreamConfig> {
    if c.playlists.is_empty() {
        return Vec::new();
    }
    let state = c
        .server
        .state_file
        .as_deref()
        .and_then(|p| crate::state::StateFile::open(std::path::Path::new(p)).ok());
    let overrides = state.as_ref().map(|f| f.imported()).unwrap_or_default();
    let api = state.as_ref().map(|f| f.playlists()).unwrap_or_default();
    let registry = std::sync::Arc::new(crate::registry::Registry::from_config(c));
    let cache = crate::providers::default_cache_dir(c, &crate::config::process_env);
    let _providers = crate::providers::Providers::new(c, registry.clone(), cache, overrides, api);
    registry
        .list()
        .iter()
        .filter(|s| s.origin.is_some())
        .map(|s| s.with_redacted_sources())
        .collect()
}

/// The imported channels, by playlist ("" without playlists).
fn playlists(c: &Config, imported: &[StreamConfig]) -> String {
    let mut out = String::new();
    for p in &c.playlists {
        let origin = format!("playlist:{}", p.name);
        let chans: Vec<&StreamConfig> = imported
            .iter()
            .filter(|s| s.origin.as_deref() == Some(&origin))
            .collect();
        let kind = if p.xtream.is_some() { "xtream" } else { "m3u" };
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "\nPLAYLIST {} ({kind}, {} channels from its cache{})\n",
                p.name,
                chans.len(),
                if chans.is_empty() {
                    "; none yet: the server fetches it at start"
                } else {
                    ""
                }
            ),
        );
        for s in chans {
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!(
                    "{:<10}  {:>6}  {:<28}  {:<14}  {}{}\n",
                    s.id,
                    s.channel_number
                        .map_or_else(|| "-".into(), |n| n.to_string()),
                    cut(&s.name, 28),
                    cut(s.group.as_deref().unwrap_or("-"), 14),
                    s.ffmpeg_profile.as_deref().unwrap_or("-"),
                    if s.backup_sources.is_empty() {
                        String::new()
                    } else {
                        format!("  (+{} backup)", s.backup_sources.len())
                    }
                ),
            );
        }
    }
    out
}

/// The recordings of `engine.recordings_dir`, one line each ("" without the folder).
fn recordings(c: &Config) -> String {
    let Some(dir) = c.engine.recordings_dir.as_deref() else {
        return String::new();
    };
    let all = crate::engine::recordings::read_all(dir);
    let mut out = format!("\nRECORDINGS ({})\n", all.len());
    for r in all {
        let state = serde_json::to_value(r.state).ok();
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "{:<4} channel {:<5} {} .. {}  {:<9}  {:>8.1} MiB  {}{}\n",
                r.id,
                r.stream_id,
                r.start.format("%Y-%m-%d %H:%M"),
                r.end.format("%H:%M UTC"),
                state.as_ref().and_then(|v| v.as_str()).unwrap_or("?"),
                r.bytes as f64 / 1048576.0,
                cut(&r.title, 40),
                r.error
                    .map(|e| format!(" ({})", cut(&e, 60)))
                    .unwrap_or_default()
            ),
        );
    }
    out
}

/// A channel's archive: "-" without one, else its window and what the folder holds
/// ("24 h: 1.2 GiB, 2026-12-01 10:00 .. 2026-12-02 10:00 UTC").
fn archive(c: &Config, s: &StreamConfig) -> String {
    let Some(dir) = c
        .engine
        .archive_dir
        .as_deref()
        .filter(|_| s.catchup_hours > 0)
    else {
        return "-".into();
    };
    let ix = crate::engine::archive::read_index(dir, s.id);
    let fmt = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map_or_else(|| "?".into(), |t| t.format("%Y-%m-%d %H:%M").to_string())
    };
    match ix.span() {
        None => format!("{} h: empty", s.catchup_hours),
        Some((a, b)) => format!(
            "{} h: {}, {} .. {} UTC",
            s.catchup_hours,
            crate::engine::archive::human_size(ix.bytes()),
            fmt(a),
            fmt(b)
        ),
    }
}

/// The channel table: always-on channels in registry order, then scheduled ones.
pub fn table(c: &Config, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut streams: Vec<&StreamConfig> = c.streams.iter().collect();
    streams.sort_by_key(|s| s.order_key());
    let mut rows = vec![[
        "ID", "NO", "NAME", "GROUP", "PROFILE", "SOURCE", "SCHEDULE", "ARCHIVE",
    ]
    .map(String::from)];
    for s in streams.into_iter().chain(&c.scheduled_streams) {
        let profile = match (&s.custom_ffmpeg, &s.ffmpeg_profile) {
            (Some(_), _) => "custom".to_owned(),
            (None, Some(p)) => p.clone(),
            (None, None) => "-".to_owned(),
        };
        let schedule = match &s.schedule {
            None => "always".to_owned(),
            Some(w) => {
                let state = crate::schedule::window_state(Some(w), now);
                let state = serde_json::to_value(state).ok();
                format!(
                    "{} .. {} ({})",
                    w.start
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "now".into()),
                    w.end
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "forever".into()),
                    state.as_ref().and_then(|v| v.as_str()).unwrap_or("?")
                )
            }
        };
        rows.push([
            s.id.to_string(),
            s.channel_number
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            cut(&s.name, 28),
            cut(s.group.as_deref().unwrap_or("-"), 14),
            cut(&profile, 16),
            cut(&s.source, 48),
            schedule,
            archive(c, s),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_row_per_channel_in_order() {
        let c: Config = serde_yaml::from_str(
            "ffmpeg_profiles: {copy: {}}\nstreams:\n- {id: 9, name: Late, source: lavfi:x, ffmpeg_profile: copy}\n- {id: 2, name: \"Two\\nLines\", source: s, custom_ffmpeg: x, channel_number: 1, group: G}\nscheduled_streams:\n- {id: 900, name: Spot, source: s, ffmpeg_profile: copy, schedule: {start: '2024-05-04T18:00:00Z'}}\n",
        )
        .unwrap();
        let t = table(
            &c,
            crate::config::Timestamp::parse("2024-05-04T12:00:00Z")
                .unwrap()
                .utc(),
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("ID   NO  NAME"), "{t}");
        assert!(
            lines[1].starts_with("2    1   Two Lines  G      custom"),
            "{t}"
        );
        assert!(lines[2].starts_with("9    -   Late"), "{t}");
        assert!(
            lines[3].contains("2024-05-04T18:00:00Z .. forever (pending)"),
            "{t}"
        );
        assert!(
            lines.iter().skip(1).all(|l| l.ends_with("  -")),
            "no archives: {t}"
        );
    }

    #[test]
    fn archived_channels_show_what_their_folder_holds() {
        let dir = tempfile::tempdir().unwrap();
        let ch = dir.path().join("5");
        std::fs::create_dir_all(&ch).unwrap();
        // 2024-05-04 10:00 and 10:00:06 UTC, 6 s each, 1 GiB together; channel 7: 3 MiB.
        for (name, len) in [
            ("1714816800000-6000-d.ts", 1u64 << 29),
            ("1714816806000-6000.ts", 1 << 29),
        ] {
            std::fs::File::create(ch.join(name))
                .unwrap()
                .set_len(len)
                .unwrap();
        }
        std::fs::create_dir_all(dir.path().join("7")).unwrap();
        std::fs::File::create(dir.path().join("7").join("1714816800000-6000.ts"))
            .unwrap()
            .set_len(3 << 20)
            .unwrap();
        let c: Config = serde_yaml::from_str(&format!(
            "engine: {{archive_dir: {}}}\nffmpeg_profiles: {{copy: {{}}}}\nstreams:\n- {{id: 5, name: A, source: s, ffmpeg_profile: copy, catchup_hours: 24}}\n- {{id: 6, name: B, source: s, ffmpeg_profile: copy, catchup_hours: 2}}\n- {{id: 7, name: C, source: s, ffmpeg_profile: copy, catchup_hours: 1}}\n",
            dir.path().display()
        ))
        .unwrap();
        let t = table(&c, chrono::Utc::now());
        assert!(
            t.contains("24 h: 1.0 GiB, 2024-05-04 10:00 .. 2024-05-04 10:00 UTC"),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("6 ") && l.ends_with("2 h: empty")),
            "{t}"
        );
        assert!(
            t.contains("1 h: 3.0 MiB, 2024-05-04 10:00 .. 2024-05-04 10:00 UTC"),
            "{t}"
        );
        assert_eq!(recordings(&c), "", "no recordings_dir");
        let rec = dir.path().join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        std::fs::write(rec.join("3.json"), r#"{"id": 3, "stream_id": 5, "title": "Match", "start": "2024-05-04T20:00:00Z", "end": "2024-05-04T21:00:00Z", "state": "failed", "error": "stream 5 is unavailable", "bytes": 2097152, "created": "2024-05-04T19:00:00Z"}"#).unwrap();
        let c: Config =
            serde_yaml::from_str(&format!("engine: {{recordings_dir: {}}}\n", rec.display()))
                .unwrap();
        assert_eq!(
            recordings(&c),
            "\nRECORDINGS (1)\n3    channel 5     2024-05-04 20:00 .. 21:00 UTC  failed          2.0 MiB  Match (stream 5 is unavailable)\n"
        );
    }
}
