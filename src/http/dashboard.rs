//! The dashboard: plain server-rendered HTML for people, next to the API for programs.
//!
//! - `GET /`: every channel with its state, clients, source, bitrate, encoder speed,
//!   schedule window, next program and a live thumbnail; a few lines of JavaScript
//!   re-fetch the page every few seconds and swap the channel list in.
//! - `GET /watch/<id>`: a channel in a `<video>` element, through hls.js (bundled into the
//!   binary, see `assets/vendor/`), or the browser's own HLS where Media Source Extensions
//!   are missing (iPhone) or `?player=native` asks for it.
//! - The login form is in `login.rs`; pages opened with its session cookie never show
//!   the token, and the cookie authorises reading only (GET/HEAD, see `access.rs`).
//! - `GET /thumb/<id>.jpg`, `GET /ui/<file>`: thumbnails and the page's static files.
//!
//! Every page sends a strict Content-Security-Policy: scripts and styles come only from
//! `/ui/`, nothing inline, no framing.

use super::html::{head, html, STYLE};
use super::reply;
use super::state::AppState;
use super::state::View;
use crate::engine::status::{State, Status};
use crate::epg::escape;
use crate::error::Error;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::fmt::Write;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

const HLS_JS: &[u8] = include_bytes!("../../assets/vendor/hls.light.min.js");
const DASHBOARD_JS: &str = include_str!("../../assets/ui/dashboard.js");
const PLAYER_JS: &str = include_str!("../../assets/ui/player.js");

/// Seconds between the dashboard's refreshes (and the thumbnails' age at most).
const REFRESH_SECS: u64 = 5;

fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    use chrono::Datelike;
    let fmt = if t.date_naive() == now.date_naive() {
        "%H:%M UTC"
    } else if t.year() == now.year() {
        "%a %d %b %H:%M UTC"
    } else {
        "%a %d %b %Y %H:%M UTC"
    };
    t.format(fmt).to_string()
}

/// A source as the dashboard shows it: credentials and query removed, long graphs cut.
fn shown_source(s: &str) -> String {
    let s = crate::auth::redact_source(s);
    if s.chars().count() > 64 {
        format!("{}…", s.chars().take(63).collect::<String>())
    } else {
        s
    }
}

fn state_name(s: &State) -> &'static str {
    match s {
        State::Idle => "idle",
        State::Starting => "starting",
        State::Running => "running",
        State::Retrying => "retrying",
        State::Failed => "failed",
    }
}

/// Whether browsers can play the channel's output (H.264/HEVC video, AAC/MP3 audio).
/// None: not known until it has run.
fn browser_playable(st: &Status) -> Option<bool> {
    if st.output_codecs.is_empty() {
        return None;
    }
    // Names are codecs for copied streams and encoders for transcoded ones.
    let ok = |c: &str| {
        ["264", "265", "hevc", "aac", "mp3"]
            .iter()
            .any(|k| c.contains(k))
    };
    Some(st.output_codecs.iter().all(|c| ok(c)))
}

fn row(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "<dt>{label}</dt><dd>{value}</dd>");
}

fn channel_card(
    out: &mut String,
    stream: &crate::config::StreamConfig,
    st: &Status,
    now: DateTime<Utc>,
    bucket: u64,
    scheduled: bool,
    guide_minutes: u32,
) {
    // A scheduled channel whose window has not opened is not in the registry yet.
    let state = if scheduled {
        "scheduled"
    } else {
        state_name(&st.state)
    };
    let _ = writeln!(
        out,
        "<article class=\"channel state-{state}\" data-id=\"{}\" data-state=\"{state}\">",
        stream.id
    );
    if st.state == State::Running {
        let _ = writeln!(
            out,
            "<a class=\"thumb\" href=\"/watch/{id}\"><img src=\"/thumb/{id}.jpg?t={bucket}\" alt=\"Live picture of {name}\" width=\"320\" height=\"180\"></a>",
            id = stream.id,
            name = escape(&stream.name)
        );
    } else {
        let _ = writeln!(
            out,
            "<a class=\"thumb empty\" href=\"/watch/{}\"><span>{state}</span></a>",
            stream.id
        );
    }
    let number = stream
        .channel_number
        .map(|n| format!("<span class=\"num\">{n}</span> "))
        .unwrap_or_default();
    let _ = writeln!(out, "<h2>{number}{}</h2>\n<dl>", escape(&stream.name));
    row(out, "State", state);
    let clients = if st.hls {
        format!("{} (one is the HLS output)", st.clients)
    } else {
        st.clients.to_string()
    };
    row(out, "Clients", &clients);
    let source = match (&st.active_source, st.active_source_index) {
        (Some(s), 0) => escape(&shown_source(s)),
        (Some(s), n) => format!("{} <em>(backup {n})</em>", escape(&shown_source(s))),
        (None, _) => escape(&shown_source(&stream.source)),
    };
    row(out, "Source", &source);
    let producer = if stream.custom_ffmpeg.is_some() {
        "custom ffmpeg command".to_owned()
    } else {
        stream
            .ffmpeg_profile
            .as_deref()
            .map_or("default profile".to_owned(), |p| {
                format!("profile {}", escape(p))
            })
    };
    row(out, "Output", &producer);
    if let Some(kbps) = st.output_kbps {
        row(out, "Bitrate", &format!("{kbps} kbit/s"));
    }
    if let Some(speed) = st.speed {
        row(out, "Encoder speed", &format!("{speed:.2}×"));
    }
    if let Some(up) = st.uptime_secs {
        row(out, "Running for", &human_secs(up));
    }
    let window = match &stream.schedule {
        None => "always on".to_owned(),
        Some(w) => {
            let start = w.start.map(|t| when(t.utc(), now));
            let end = w.end.map(|t| when(t.utc(), now));
            match (start, end) {
                (Some(a), Some(b)) => format!("{a} to {b}"),
                (Some(a), None) => format!("from {a}"),
                (None, Some(b)) => format!("until {b}"),
                (None, None) => "always on".to_owned(),
            }
        }
    };
    row(out, "Schedule", &escape(&window));
    if let Some(p) = crate::playlist::next_program(&stream.next_programs, now) {
        let at = p
            .start
            .map(|t| format!(" at {}", when(t.utc(), now)))
            .unwrap_or_default();
        row(out, "Next", &format!("{}{}", escape(&p.title), escape(&at)));
    }
    if let Some(a) = &st.archive {
        archive_rows(out, guide_minutes, stream, a, now);
    }
    if let Some(e) = &st.last_error {
        row(out, "Last error", &escape(e));
    }
    out.push_str("</dl>\n");
    let _ = writeln!(
        out,
        "<p class=\"actions\"><a class=\"watch\" href=\"/watch/{}\">Watch</a></p>\n</article>",
        stream.id
    );
}

/// An archived channel's rows: what the archive holds (a link that plays it from its
/// start on into live) and its latest past programmes, each a link to its catch-up.
fn archive_rows(
    out: &mut String,
    guide_minutes: u32,
    stream: &crate::config::StreamConfig,
    a: &crate::engine::status::ArchiveStatus,
    now: chrono::DateTime<chrono::Utc>,
) {
    let id = stream.id;
    let Some(oldest) = a.oldest else {
        row(
            out,
            "Archive",
            &escape(a.error.as_deref().unwrap_or("empty so far")),
        );
        return;
    };
    let size = crate::engine::archive::human_size(a.bytes);
    let mut text = format!(
        "<a href=\"/watch/{id}?start={}\">from {}</a> ({size})",
        oldest.timestamp(),
        escape(&when(oldest, now))
    );
    if let Some(e) = &a.error {
        let _ = write!(text, " <em>{}</em>", escape(e));
    }
    row(out, "Archive", &text);
    let len = chrono::Duration::minutes(i64::from(guide_minutes));
    let past: Vec<String> = crate::epg::airings(stream, len)
        .into_iter()
        // What the archive holds of it (a programme that began before the archive plays
        // from the archive's start).
        .filter(|(_, _, stop)| stop.with_timezone(&chrono::Utc) > oldest)
        .filter(|(_, start, _)| start.with_timezone(&chrono::Utc) < now)
        .rev()
        .take(5)
        .map(|(p, start, stop)| {
            format!(
                "<a class=\"past\" href=\"/watch/{id}?start={}&amp;end={}\">{}</a> {}",
                start.timestamp(),
                stop.timestamp(),
                escape(&p.title),
                escape(&when(start.with_timezone(&chrono::Utc), now))
            )
        })
        .collect();
    if !past.is_empty() {
        row(out, "Catch up", &past.join("<br>"));
    }
}

/// The `?token=...` to show in URLs: the token itself only to a request that presented
/// it; a page opened with the session cookie shows a placeholder (the cookie must not
/// reveal the token, which also authorises changes).
fn token_query(view: &View) -> String {
    match &view.token {
        _ if !view.required => String::new(),
        Some(t) => crate::auth::token_query(Some(t)),
        None => "?token=YOUR_TOKEN".to_owned(),
    }
}

/// `GET /`: the dashboard.
pub fn page(state: &AppState, view: &View) -> Response {
    let now = state.clock.now();
    let streams = view.channels(state);
    let statuses: Vec<Status> = streams
        .iter()
        .map(|s| state.engine.status(s.id).unwrap_or_default())
        .collect();
    let running = statuses
        .iter()
        .filter(|s| matches!(s.state, State::Running | State::Retrying))
        .count();
    let viewers: usize = statuses.iter().map(|s| s.clients).sum();
    let base = &view.base;
    let tok = token_query(view);
    let mut s = head("Amps", &["dashboard.js"]);
    let _ = writeln!(
        s,
        "<body>\n<header>\n<h1>Amps</h1>\n<p id=\"summary\">{} channels, {running} running, {viewers} clients. Up {}. Version {}.</p>",
        streams.len(),
        human_secs(state.metrics.uptime().as_secs()),
        env!("CARGO_PKG_VERSION")
    );
    if view.who.is_admin() && !state.providers.names().is_empty() {
        let _ = writeln!(
            s,
            "<p><a href=\"/playlists{}\">Provider playlists and guides</a></p>",
            view.token_query()
        );
    }
    if view.required {
        s.push_str("<form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form>\n");
    }
    s.push_str("</header>\n<section class=\"urls\">\n<h2>For your players</h2>\n<dl>\n");
    row(
        &mut s,
        "Playlist (VLC, Kodi, Plex, TiviMate)",
        &format!(
            "<code>{}</code>",
            escape(&format!("{base}/playlist.m3u{tok}"))
        ),
    );
    row(
        &mut s,
        "Guide (XMLTV)",
        &format!("<code>{}</code>", escape(&format!("{base}/epg.xml{tok}"))),
    );
    s.push_str("</dl>\n</section>\n");
    let bucket = now.timestamp().max(0) as u64 / REFRESH_SECS;
    let minutes = state.server.guide_program_minutes;
    let _ = writeln!(s, "<main id=\"channels\" data-refresh=\"{REFRESH_SECS}\">");
    for (stream, st) in streams.iter().zip(&statuses) {
        channel_card(&mut s, stream, st, now, bucket, false, minutes);
    }
    // Scheduled channels whose window has not opened yet.
    for l in state.scheduler.list() {
        if l.state != crate::schedule::WindowState::Pending || !view.sees(&l.stream) {
            continue;
        }
        channel_card(
            &mut s,
            &l.stream,
            &Status::default(),
            now,
            bucket,
            true,
            minutes,
        );
    }
    if streams.is_empty() {
        s.push_str(
            "<p class=\"empty\">No channels yet: add some to config.yaml or through the API.</p>\n",
        );
    }
    s.push_str("</main>\n</body>\n</html>\n");
    html(StatusCode::OK, s)
}

/// `GET /watch/<id>`: the channel in a video element.
pub fn watch_page(state: &AppState, id: u32, query: &str, view: &View) -> Response {
    let Some(stream) = state.registry.get(id) else {
        return reply::error(&crate::registry::no_such(id));
    };
    // `?start=` (and `end=`): a window of the channel's archive instead of live.
    let window = if query.split('&').any(|p| p.starts_with("start=")) {
        match super::catchup::window_query(query) {
            Ok(w) if stream.catchup_hours > 0 => Some(w),
            Ok(_) => {
                return reply::error(&crate::error::Error::not_found(format!(
                    "stream {id} has no catch-up (set its catchup_hours)"
                )))
            }
            Err(e) => return reply::error(&e),
        }
    } else {
        None
    };
    let st = state.engine.status(id).unwrap_or_default();
    let base = &view.base;
    let tok = token_query(view);
    let mut s = head(
        &format!("{}: Amps", stream.name),
        &["hls.light.min.js", "player.js"],
    );
    let _ = writeln!(
        s,
        "<body class=\"watch-page\">\n<header>\n<p><a href=\"/\">All channels</a></p>\n<h1>{}</h1>\n</header>\n<main>",
        escape(&stream.name)
    );
    let (src, kind) = match window {
        Some((start, end)) => {
            let end = end
                .map(|e| format!("&end={}", e / 1000))
                .unwrap_or_default();
            (
                format!("/catchup/{id}/index.m3u8?start={}{end}", start / 1000),
                "catchup",
            )
        }
        // The master playlist: the channel's own output and its profiles, for the
        // player to pick and switch between.
        None => (format!("/hls/{id}/master.m3u8"), "live"),
    };
    let _ = writeln!(
        s,
        "<video id=\"player\" controls autoplay muted playsinline data-kind=\"{kind}\" data-src=\"{}\"></video>\n<p id=\"player-status\" role=\"status\">Starting the channel…</p>",
        escape(&src)
    );
    if browser_playable(&st) == Some(false) {
        let _ = writeln!(
            s,
            "<p class=\"warn\">This channel is {}; browsers play only H.264 or HEVC video with AAC or MP3 audio. VLC, mpv and Kodi play it.</p>",
            escape(&st.output_codecs.join(" + "))
        );
    }
    if let Some((oldest, _)) = st
        .archive
        .as_ref()
        .and_then(|a| Some((a.oldest?, a.newest?)))
    {
        // Timeshift: the archive from its start, on into live (an HLS EVENT playlist the
        // player can seek back through).
        let _ = writeln!(
            s,
            "<p class=\"catchup\"><a href=\"/watch/{id}?start={}\">Watch from {} (archive)</a> · <a href=\"/watch/{id}\">Live</a></p>",
            oldest.timestamp(),
            oldest.format("%a %d %b %H:%M UTC")
        );
    }
    let _ = writeln!(
        s,
        "<dl>\n<dt>In a player</dt><dd><code>{}</code></dd>\n<dt>HLS</dt><dd><code>{}</code></dd>\n<dt>HLS, every profile</dt><dd><code>{}</code></dd>\n</dl>\n</main>\n</body>\n</html>",
        escape(&format!("{base}/stream/{id}{tok}")),
        escape(&format!("{base}/hls/{id}/index.m3u8{tok}")),
        escape(&format!("{base}/hls/{id}/master.m3u8{tok}"))
    );
    html(StatusCode::OK, s)
}

/// `GET /ui/<file>`: the dashboard's static files, from inside the binary.
pub fn asset(name: &str) -> Response {
    let (body, ctype): (Bytes, &'static str) = match name {
        "style.css" => (
            Bytes::from_static(STYLE.as_bytes()),
            "text/css; charset=utf-8",
        ),
        "dashboard.js" => (
            Bytes::from_static(DASHBOARD_JS.as_bytes()),
            "text/javascript; charset=utf-8",
        ),
        "player.js" => (
            Bytes::from_static(PLAYER_JS.as_bytes()),
            "text/javascript; charset=utf-8",
        ),
        "hls.light.min.js" => (Bytes::from_static(HLS_JS), "text/javascript; charset=utf-8"),
        _ => return reply::error(&Error::not_found(format!("no file {name:?}"))),
    };
    reply::bytes(
        body,
        ctype,
        HeaderValue::from_static("private, max-age=3600"),
    )
}

/// `GET /thumb/<id>.jpg`: the channel's live picture.
pub async fn thumbnail(state: &AppState, id: u32) -> Response {
    match state.engine.thumbnail(id).await {
        Ok(jpeg) => reply::bytes(
            jpeg,
            "image/jpeg",
            HeaderValue::from_static("private, max-age=5"),
        ),
        Err(e) => reply::error(&e),
    }
}
