//! `/api/playlists` and `/api/guides`: the provider sources' state, refreshes on demand,
//! and the owner's overrides of imported channels. Admin only (the route table says so).
//! Nothing here ever shows a provider's URL or account.

use super::api::{visible_stream, Body};

use super::reply::{json, parse_json};
use super::state::AppState;
use crate::config::PlaylistConfig;
use crate::error::{Error, ErrorKind};
use crate::providers::{ChannelOverride, PlaylistStatus};
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;

fn with_connections(st: &AppState, mut s: PlaylistStatus) -> PlaylistStatus {
    s.connections_in_use = st.engine.connections_of(&format!("playlist:{}", s.name));
    s
}

/// `GET /api/playlists`.
pub fn list(st: &AppState) -> Result<Response, Error> {
    let v: Vec<PlaylistStatus> = st
        .providers
        .statuses()
        .into_iter()
        .map(|s| with_connections(st, s))
        .collect();
    Ok(json(StatusCode::OK, &v))
}

/// `GET /api/playlists/<name>`.
pub fn get(st: &AppState, name: &str) -> Result<Response, Error> {
    let s = st.providers.status(name)?;
    Ok(json(StatusCode::OK, &with_connections(st, s)))
}

/// `POST /api/playlists/<name>/refresh`: fetches now and answers when done, with the
/// source's status and what changed. A provider that fails is a 502 with the reason (the
/// last good list stays in force).
pub async fn refresh(st: &AppState, name: String) -> Result<Response, Error> {
    let p = st.providers.clone();
    let now = st.clock.now();
    let (status, diff) = tokio::task::spawn_blocking(move || p.refresh(&name, now))
        .await
        .map_err(|e| Error::new(crate::error::ErrorKind::Internal, e.to_string()))??;
    // Channels changed: the guide is read again for the new ones, in the background.
    if !diff.added.is_empty() {
        let p = st.providers.clone();
        tokio::task::spawn_blocking(move || p.refresh_guides(now));
    }
    let code = if status.last_success == Some(now) {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    let status = with_connections(st, status);
    Ok(json(code, &json!({"playlist": status, "changes": diff})))
}

/// `GET /api/playlists/<name>/channels`: every channel the source imports (hidden ones
/// too), as it is served, with the owner's override.
pub fn channels(st: &AppState, name: &str, view: &super::state::View) -> Result<Response, Error> {
    let v: Vec<Value> = st
        .providers
        .channels_of(name)?
        .into_iter()
        .map(|(c, o)| {
            let mut served = c.clone();
            if let Some(cur) = st.registry.get(c.id) {
                served = (*cur).clone();
            }
            let mut v = visible_stream(view, &served);
            if let Some(m) = v.as_object_mut() {
                m.remove("next_programs");
                m.insert("hidden".into(), Value::Bool(o.hidden));
                m.insert(
                    "override".into(),
                    serde_json::to_value(&o).unwrap_or_default(),
                );
            }
            v
        })
        .collect();
    Ok(json(StatusCode::OK, &v))
}

/// `PUT /api/playlists/<name>/channels/<id>`: sets the override (an empty object clears
/// it), saved to the state file before the answer.
pub fn set_override(
    st: &AppState,
    name: &str,
    id: u32,
    ct: Option<String>,
    body: Body,
) -> Result<Response, Error> {
    let o: ChannelOverride = parse_json(ct.as_deref(), &body?)?;
    save_override(st, name, id, o.clone(), "the API")?;
    let served = st.registry.get(id).map(|s| (*s).clone());
    Ok(json(
        StatusCode::OK,
        &json!({"id": id, "override": o, "served": served.is_some()}),
    ))
}

/// Sets the override of imported channel `id` and saves it to the state file before the
/// answer (undone if that fails). `by`: who, for the log.
pub fn save_override(
    st: &AppState,
    name: &str,
    id: u32,
    o: ChannelOverride,
    by: &str,
) -> Result<(), Error> {
    let before = st.providers.overrides();
    let hidden = o.hidden;
    st.providers.set_override(name, id, o)?;
    if let Some(f) = &st.state_file {
        if let Err(e) = f.imported_changed(|| st.providers.overrides()) {
            st.providers.restore_overrides(before);
            return Err(e);
        }
    }
    tracing::info!(playlist = name, id, hidden, by, "imported channel changed");
    Ok(())
}

/// `GET /api/guides`.
pub fn guides(st: &AppState) -> Result<Response, Error> {
    Ok(json(StatusCode::OK, &st.providers.guides.statuses()))
}

/// `POST /api/guides/refresh`: reads every guide now and answers when done.
pub async fn refresh_guides(st: &AppState) -> Result<Response, Error> {
    let p = st.providers.clone();
    let now = st.clock.now();
    let v = tokio::task::spawn_blocking(move || p.refresh_guides(now))
        .await
        .map_err(|e| Error::new(crate::error::ErrorKind::Internal, e.to_string()))?;
    Ok(json(StatusCode::OK, &v))
}

/// The API's rules for a playlist: the config file's validation, and (unless the config
/// allows it) only network addresses, never a file path.
fn check(st: &AppState, p: &PlaylistConfig) -> Result<(), Error> {
    let issues = crate::config::validate::validate_playlist(p, &st.registry.profiles(), "");
    if let Some(first) = issues.first() {
        return Err(Error::with_details(
            ErrorKind::Invalid,
            first.to_string(),
            issues.iter().map(ToString::to_string).collect(),
        ));
    }
    let local = p
        .url
        .as_deref()
        .is_some_and(|u| !u.to_ascii_lowercase().starts_with("http"));
    if local && !st.server.allow_api_local_sources {
        return Err(Error::new(
            ErrorKind::Forbidden,
            "url: only http:// and https:// playlists can be added through the API; set server.allow_api_local_sources: true in the config file to allow file paths",
        ));
    }
    Ok(())
}

/// Applies an API change of the playlists, saves it to the state file before the answer
/// (undone if that fails), puts the connection limits in force, and fetches `fetch` in
/// the background.
fn change(
    st: &AppState,
    apply: impl FnOnce() -> Result<crate::registry::ReloadDiff, Error>,
    fetch: Option<String>,
) -> Result<crate::registry::ReloadDiff, Error> {
    let before = st.providers.api_playlists();
    let diff = apply()?;
    if let Some(f) = &st.state_file {
        if let Err(e) = f.playlists_changed(|| st.providers.api_playlists()) {
            st.providers.restore_api(before);
            return Err(e);
        }
    }
    st.engine.set_connection_limits(st.providers.limits());
    if let Some(name) = fetch {
        let p = st.providers.clone();
        let now = st.clock.now();
        tokio::task::spawn_blocking(move || {
            if p.refresh(&name, now).is_ok() {
                p.refresh_guides(now);
            }
        });
    }
    Ok(diff)
}

/// `POST /api/playlists`: adds a playlist (201); it is fetched in the background.
pub fn create(st: &AppState, ct: Option<String>, body: Body) -> Result<Response, Error> {
    let p: PlaylistConfig = parse_json(ct.as_deref(), &body?)?;
    check(st, &p)?;
    if st.providers.has(&p.name) {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("playlist {:?} already exists", p.name),
        ));
    }
    let name = p.name.clone();
    change(st, || Ok(st.providers.upsert(p)), Some(name.clone()))?;
    tracing::info!(playlist = %name, "playlist added through the API");
    let status = with_connections(st, st.providers.status(&name)?);
    super::reply::created(&status, &format!("/api/playlists/{name}"))
}

/// `PUT /api/playlists/<name>`: replaces a playlist (the file's too, until a reload
/// brings the file's back); fetched again when what it fetches changed.
pub fn replace(
    st: &AppState,
    name: &str,
    ct: Option<String>,
    body: Body,
) -> Result<Response, Error> {
    let p: PlaylistConfig = parse_json(ct.as_deref(), &body?)?;
    if p.name != name {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!(
                "name: {:?} does not match the playlist in the URL ({name}); names cannot change",
                p.name
            ),
        ));
    }
    if !st.providers.has(name) {
        return Err(Error::not_found(format!("no playlist named {name:?}")));
    }
    check(st, &p)?;
    let diff = change(st, || Ok(st.providers.upsert(p)), Some(name.to_owned()))?;
    tracing::info!(playlist = %name, "playlist replaced through the API");
    let status = with_connections(st, st.providers.status(name)?);
    Ok(json(
        StatusCode::OK,
        &json!({"playlist": status, "changes": diff}),
    ))
}

/// `DELETE /api/playlists/<name>`: its channels go and their streams end.
pub fn delete(st: &AppState, name: &str) -> Result<Response, Error> {
    let diff = change(st, || st.providers.remove(name), None)?;
    tracing::info!(playlist = %name, removed = diff.removed.len(), "playlist deleted through the API");
    Ok(json(
        StatusCode::OK,
        &json!({"deleted": name, "changes": diff}),
    ))
}
