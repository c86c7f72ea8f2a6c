//! `/playlists`: the dashboard's page of provider playlists and guides (admin). Each
//! source with its channels, last refresh, errors and connections in use; a "Refresh now"
//! button; a search over the imported channels with a form per channel to rename it or
//! hide it.
//!
//! The forms post to `/playlists/<name>/refresh` and `/playlists/<name>/channels/<id>`.
//! A session cookie alone never authorises a change (a cookie rides along on requests
//! other sites trigger); these two routes accept it together with `?csrf=`, a value
//! derived from the session that only a page of this server can know
//! ([`crate::auth::csrf_of`]). A page opened with the token puts the token there instead.

use super::html::{head, html};
use super::state::{AppState, View};
use crate::epg::escape;
use crate::error::{Error, ErrorKind};
use std::fmt::Write;
use warp::http::StatusCode;
use warp::reply::Response;

/// Channels listed for one search.
const MATCHES: usize = 100;

/// The query that authorises the page's forms: `?csrf=` for a session, `?token=` when the
/// page itself was opened with one.
fn form_query(view: &View, cookie: Option<&str>) -> String {
    match (&view.token, cookie) {
        (Some(t), _) => crate::auth::token_query(Some(t)),
        (None, Some(c)) => format!("?csrf={}", crate::auth::csrf_of(c)),
        (None, None) => String::new(),
    }
}

fn value(v: &Option<impl std::fmt::Display>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_owned(), |x| escape(&x.to_string()))
}

/// `GET /playlists[?q=...]`.
pub fn page(st: &AppState, view: &View, query: &str, cookie: Option<&str>) -> Response {
    let q = crate::auth::query_param(query, "q").unwrap_or_default();
    let fq = form_query(view, cookie);
    let mut s = head("Amps: playlists", &[]);
    s.push_str("<body>\n<header>\n<h1>Playlists</h1>\n<p><a href=\"/\">Channels</a></p>\n</header>\n<main class=\"providers\">\n");
    let sources = st.providers.statuses();
    if sources.is_empty() {
        s.push_str("<p>No provider playlists: add them under <code>playlists:</code> in the config file (docs/PROVIDERS.md).</p>\n");
    }
    for p in &sources {
        let used = st.engine.connections_of(&format!("playlist:{}", p.name));
        let _ = writeln!(
            s,
            "<section class=\"source\" id=\"{n}\">\n<h2>{n} ({kind})</h2>\n<dl>",
            n = escape(&p.name),
            kind = p.kind
        );
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "<dt>{k}</dt><dd>{v}</dd>");
        };
        row(
            "Channels",
            format!(
                "{} served of {} entries ({} filtered out, {} merged into another provider's, {} hidden, {} skipped as malformed)",
                p.channels, p.entries, p.filtered, p.merged, p.hidden, p.skipped
            ),
        );
        row("Last refresh", value(&p.last_attempt));
        row("Last success", value(&p.last_success));
        if let Some(e) = &p.error {
            row("Error", format!("<strong>{}</strong>", escape(e)));
        }
        row(
            "Connections",
            match p.max_connections {
                Some(m) => format!("{} of {m} in use", used.len()),
                None => format!("{} in use (no limit)", used.len()),
            },
        );
        let _ = writeln!(
            s,
            "</dl>\n<form method=\"post\" action=\"/playlists/{}/refresh{fq}\"><button type=\"submit\">Refresh now</button></form>\n</section>",
            escape(&p.name)
        );
    }
    if !sources.is_empty() {
        let _ = writeln!(
            s,
            "<section class=\"search\">\n<h2>Imported channels</h2>\n<form method=\"get\" action=\"/playlists\"><input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"name, group or number\"><button type=\"submit\">Find</button></form>",
            escape(&q)
        );
        let needle = q.to_lowercase();
        let mut shown = 0;
        s.push_str(
            "<table>\n<tr><th>No</th><th>Name</th><th>Group</th><th>Playlist</th><th></th></tr>\n",
        );
        'all: for p in &sources {
            let Ok(chans) = st.providers.channels_of(&p.name) else {
                continue;
            };
            for (c, o) in chans {
                let name = o.name.clone().unwrap_or_else(|| c.name.clone());
                let number = o.channel_number.or(c.channel_number);
                let group = o
                    .group
                    .clone()
                    .or_else(|| c.group.clone())
                    .unwrap_or_default();
                let hay = format!("{name} {group} {}", number.unwrap_or(0)).to_lowercase();
                if !needle.is_empty() && !hay.contains(&needle) {
                    continue;
                }
                if shown == MATCHES {
                    let _ = writeln!(s, "<tr><td colspan=\"5\">More than {MATCHES} match: narrow the search.</td></tr>");
                    break 'all;
                }
                shown += 1;
                let back = crate::auth::encode_for_query(&q);
                let _ = writeln!(
                    s,
                    "<tr{}><td>{}</td><td><form method=\"post\" action=\"/playlists/{pn}/channels/{id}{fq}{sep}q={back}\"><input name=\"name\" value=\"{}\" aria-label=\"name\"> <label><input type=\"checkbox\" name=\"hidden\" value=\"1\"{}> hidden</label> <button type=\"submit\">Save</button></form></td><td>{}</td><td>{pn}</td><td>{}</td></tr>",
                    if o.hidden { " class=\"hidden\"" } else { "" },
                    number.map_or_else(|| "-".into(), |n| n.to_string()),
                    escape(&name),
                    if o.hidden { " checked" } else { "" },
                    escape(&group),
                    if o.is_empty() { "" } else { "changed" },
                    pn = escape(&p.name),
                    id = c.id,
                    sep = if fq.is_empty() { "?" } else { "&" },
                );
            }
        }
        s.push_str("</table>\n</section>\n");
    }
    let guides = st.providers.guides.statuses();
    if !guides.is_empty() {
        s.push_str("<section class=\"guides\">\n<h2>Guides</h2>\n<table>\n<tr><th>Guide</th><th>Last read</th><th>Channels filled</th><th>Programmes</th><th>Error</th></tr>\n");
        for g in guides {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{} ({} by name)</td><td>{}</td><td>{}</td></tr>",
                escape(&g.name),
                value(&g.last_success),
                g.channels_filled,
                g.matched_by_name,
                g.programmes_kept,
                g.error.as_deref().map(escape).unwrap_or_default()
            );
        }
        s.push_str("</table>\n</section>\n");
    }
    s.push_str("</main>\n</body>\n</html>\n");
    html(StatusCode::OK, s)
}

/// Where a form goes back to.
fn back(query: &str) -> Response {
    let q = crate::auth::query_param(query, "q").unwrap_or_default();
    let to = if q.is_empty() {
        "/playlists".to_owned()
    } else {
        format!("/playlists?q={}", crate::auth::encode_for_query(&q))
    };
    let mut r = html(StatusCode::SEE_OTHER, String::new());
    if let Ok(v) = warp::http::HeaderValue::from_str(&to) {
        r.headers_mut().insert(warp::http::header::LOCATION, v);
    }
    r
}

/// `POST /playlists/<name>/refresh` (the page's button).
pub async fn refresh(st: &AppState, name: String, query: &str) -> Result<Response, Error> {
    let p = st.providers.clone();
    let now = st.clock.now();
    tokio::task::spawn_blocking(move || p.refresh(&name, now))
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))??;
    Ok(back(query))
}

/// `POST /playlists/<name>/channels/<id>` (a channel's form: `name`, `hidden`).
pub fn save(
    st: &AppState,
    name: &str,
    id: u32,
    query: &str,
    body: &[u8],
) -> Result<Response, Error> {
    let form = String::from_utf8_lossy(body);
    let get = |k: &str| crate::auth::query_param(&form, k).map(|v| v.trim().to_owned());

    let chans = st.providers.channels_of(name)?;
    let (c, mut o) = chans
        .into_iter()
        .find(|(c, _)| c.id == id)
        .ok_or_else(|| Error::not_found(format!("playlist {name} imports no channel {id}")))?;
    o.hidden = get("hidden").is_some_and(|v| v == "1");
    o.name = get("name").filter(|n| !n.is_empty() && *n != c.name);
    super::providers::save_override(st, name, id, o, "the dashboard")?;
    Ok(back(query))
}
