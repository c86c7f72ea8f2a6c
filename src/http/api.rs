//! REST API handlers: stream CRUD and upcoming programs.
//!
//! Each handler is a plain function from request parts to `Result<Response, Error>`; the
//! registry validates and applies, so the API obeys exactly the config file's rules.
//! Changes apply at once; subscribers (the engine) react to the registry's notifications.

use super::reply::{json, parse_json};
use super::state::AppState;
use super::state::View;
use crate::config::{Program, StreamConfig};
use crate::error::{Error, ErrorKind};
use crate::registry::Origin;
use bytes::Bytes;

/// A request body as the router hands it over: the bytes, or why they were refused.
pub type Body = Result<Bytes, Error>;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

/// Saves stream `id` as it is now to the state file (when configured) before the change
/// is acknowledged.
pub fn persist_stream(state: &AppState, id: u32) -> Result<(), Error> {
    match &state.state_file {
        Some(f) => f.stream_changed(id, || state.registry.get(id).map(|s| (*s).clone())),
        None => Ok(()),
    }
}

/// Keys a viewer token does not see: where a channel comes from (provider URLs carry
/// credentials) and how it is made.
const ADMIN_ONLY_KEYS: &[&str] = &["source", "backup_sources", "custom_ffmpeg"];

/// A stream as `view` may see it: everything for an admin; without its sources and
/// commands for a viewer.
pub fn visible_stream(view: &View, s: &StreamConfig) -> Value {
    // An imported channel's sources are the provider's URLs, with its account in them:
    // even an admin sees them redacted.
    let mut v = match s.origin {
        Some(_) => serde_json::to_value(s.with_redacted_sources()),
        None => serde_json::to_value(s),
    }
    .unwrap_or(Value::Null);
    if !view.who.is_admin() {
        if let Some(o) = v.as_object_mut() {
            for k in ADMIN_ONLY_KEYS {
                o.remove(*k);
            }
        }
    }
    v
}

pub fn list(state: &AppState, view: &View) -> Result<Response, Error> {
    let out: Vec<Value> = view
        .channels(state)
        .iter()
        .map(|s| visible_stream(view, s))
        .collect();
    Ok(json(StatusCode::OK, &out))
}

pub fn get(state: &AppState, id: u32, view: &View) -> Result<Response, Error> {
    let s = state
        .registry
        .get(id)
        .ok_or_else(|| crate::registry::no_such(id))?;
    Ok(json(StatusCode::OK, &visible_stream(view, &s)))
}

/// The body of `POST /api/tokens`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    #[serde(default)]
    role: crate::config::Role,
    #[serde(default)]
    max_streams: Option<u32>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    expires: Option<chrono::DateTime<chrono::Utc>>,
}

/// Saves the API-created tokens to the state file (when configured).
fn persist_tokens(state: &AppState) -> Result<(), Error> {
    match &state.state_file {
        Some(f) => f.tokens_changed(|| state.tokens.api_tokens()),
        None => Ok(()),
    }
}

/// `POST /api/tokens`: creates a token with a random secret, answered once (201); the
/// server keeps only its digest.
pub fn create_token(state: &AppState, ct: Option<String>, body: Body) -> Result<Response, Error> {
    let t: NewToken = parse_json(ct.as_deref(), &body?)?;
    let invalid = |m: String| Error::new(ErrorKind::Invalid, m);
    if !crate::config::validate::token_name_ok(&t.name) {
        return Err(invalid(format!(
            "name: {:?} must be 1 to 64 letters, digits, '-', '_' or '.'",
            t.name
        )));
    }
    if t.max_streams == Some(0) {
        return Err(invalid(
            "max_streams: must be at least 1 (leave it out for no limit)".into(),
        ));
    }
    if t.groups.iter().any(|g| g.trim().is_empty()) {
        return Err(invalid("groups: group names must not be empty".into()));
    }
    let (token, secret) =
        crate::tokens::ApiToken::generate(t.name, t.role, t.max_streams, t.groups, t.expires)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    "no random numbers for a token (getrandom failed)",
                )
            })?;
    let name = token.name.clone();
    state
        .tokens
        .add_api(token)
        .map_err(|m| Error::new(ErrorKind::Conflict, m))?;
    if let Err(e) = persist_tokens(state) {
        state.tokens.remove_api(&name);
        return Err(e);
    }
    tracing::info!(token = %name, "token created through the API");
    let info = state
        .tokens
        .list(state.hls_lease(), state.clock.now())
        .into_iter()
        .find(|i| i.name == name);
    let mut v = serde_json::to_value(info).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("token".into(), Value::String(secret));
    }
    super::reply::created(&v, &format!("/api/tokens/{name}"))
}

/// `DELETE /api/tokens/<name>`: removes an API-created token; its streams end at once.
/// Tokens of the config file are removed there (and a reload).
pub fn delete_token(state: &AppState, name: &str) -> Result<Response, Error> {
    let known = state
        .tokens
        .list(state.hls_lease(), state.clock.now())
        .into_iter()
        .find(|i| i.name == name);
    match known {
        None => Err(Error::not_found(format!("no token named {name:?}"))),
        Some(i) if i.source == crate::tokens::Source::Config => Err(Error::new(
            ErrorKind::Conflict,
            format!("token {name:?} is defined in the config file (server.auth_token or server.tokens): remove it there and reload"),
        )),
        Some(_) => {
            state.tokens.remove_api(name);
            persist_tokens(state)?;
            tracing::info!(token = %name, "token removed through the API");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
}

/// `GET /api/tokens`: every token by name with its sessions open now (never a secret).
pub fn tokens(state: &AppState) -> Result<Response, Error> {
    Ok(json(
        StatusCode::OK,
        &state.tokens.list(state.hls_lease(), state.clock.now()),
    ))
}

pub fn create(state: &AppState, ct: Option<String>, body: Body) -> Result<Response, Error> {
    let body = body?;
    let stream: StreamConfig = parse_json(ct.as_deref(), &body)?;
    if state.scheduler.get(stream.id).is_some() {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "id {} belongs to a scheduled stream (see /api/schedule)",
                stream.id
            ),
        ));
    }
    let created = state.registry.create(stream, Origin::Api)?;
    persist_stream(state, created.id)?;
    tracing::info!(id = created.id, name = %created.name, "stream created through the API");
    super::reply::created(&created, &format!("/api/streams/{}", created.id))
}

/// A PUT body as the stream at `id`: `id` may be omitted (taken from the URL). A
/// different `id` is refused by the writer (ids cannot change).
pub fn stream_for(id: u32, ct: Option<String>, body: Body) -> Result<StreamConfig, Error> {
    let mut value: Value = parse_json(ct.as_deref(), &body?)?;
    if let Value::Object(m) = &mut value {
        m.entry("id").or_insert(Value::from(id));
    }
    from_value(value)
}

/// PUT: the body replaces the stream. Its `id` may be omitted; if present it must match.
pub fn replace(
    state: &AppState,
    id: u32,
    ct: Option<String>,
    body: Body,
) -> Result<Response, Error> {
    let new = stream_for(id, ct, body)?;
    let updated = state.registry.update(id, Origin::Api, move |_| Ok(new))?;
    persist_stream(state, id)?;
    tracing::info!(id, "stream replaced through the API");
    Ok(json(StatusCode::OK, &updated))
}

/// PATCH: a JSON merge patch (RFC 7396) applied to the current stream.
pub fn patch(state: &AppState, id: u32, ct: Option<String>, body: Body) -> Result<Response, Error> {
    let body = body?;
    let patch: Value = parse_json(ct.as_deref(), &body)?;
    if !patch.is_object() {
        return Err(Error::invalid(
            "a PATCH body is a JSON object of the fields to change",
        ));
    }
    let updated = state.registry.update(id, Origin::Api, |current| {
        let mut doc = serde_json::to_value(current)
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        merge_patch(&mut doc, &patch);
        from_value(doc)
    })?;
    tracing::info!(id, "stream patched through the API");
    persist_stream(state, id)?;
    Ok(json(StatusCode::OK, &updated))
}

pub fn delete(state: &AppState, id: u32) -> Result<Response, Error> {
    let old = state.registry.remove_api(id)?;
    persist_stream(state, id)?;
    tracing::info!(id, name = %old.name, "stream deleted through the API");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub fn get_programs(state: &AppState, id: u32) -> Result<Response, Error> {
    let s = state
        .registry
        .get(id)
        .ok_or_else(|| crate::registry::no_such(id))?;
    Ok(json(StatusCode::OK, &s.next_programs))
}

pub fn put_programs(
    state: &AppState,
    id: u32,
    ct: Option<String>,
    body: Body,
) -> Result<Response, Error> {
    let body = body?;
    let programs: Vec<Program> = parse_json(ct.as_deref(), &body)?;
    let s = state.registry.set_programs(id, programs)?;
    persist_stream(state, id)?;
    Ok(json(StatusCode::OK, &s.next_programs))
}

pub fn status(state: &AppState, id: u32) -> Result<Response, Error> {
    let s = state
        .engine
        .status(id)
        .ok_or_else(|| crate::registry::no_such(id))?;
    Ok(json(StatusCode::OK, &s))
}

fn from_value(v: Value) -> Result<StreamConfig, Error> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        Error::invalid(if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        })
    })
}

/// RFC 7396: objects merge recursively, `null` deletes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// POST /api/reload: re-reads the config file; 422 with every error if it is bad (nothing
/// changes then).
pub fn reload(state: &AppState) -> Result<Response, Error> {
    let report = apply_reload(state, "API")?;
    Ok(json(StatusCode::OK, &report))
}

/// Reloads and logs the outcome (shared by the API and SIGHUP).
pub fn apply_reload(state: &AppState, by: &str) -> Result<crate::reload::Report, Error> {
    // Saved API changes to ids the old or the new file defines give way to the file.
    let (old_streams, old_scheduled) = state.reloader.file_ids();
    match state.reloader.reload(&state.registry, &state.scheduler) {
        Ok(r) => {
            state.tokens.apply(&state.reloader.server());
            let imported = state.providers.reload(&state.reloader.config());
            if let Some(f) = &state.state_file {
                if let Err(e) = f.playlists_changed(|| state.providers.api_playlists()) {
                    tracing::error!("{e}");
                }
            }
            state.engine.set_connection_limits(state.providers.limits());
            if !(imported.added.is_empty() && imported.removed.is_empty()) {
                tracing::info!(
                    added = imported.added.len(),
                    removed = imported.removed.len(),
                    "imported channels after the reload"
                );
            }
            if let Some(tls) = &state.tls {
                tls.reload_logged(&format!("reload by {by}"));
            }
            if let Some(f) = &state.state_file {
                let (mut streams, mut scheduled) = state.reloader.file_ids();
                streams.extend(old_streams);
                scheduled.extend(old_scheduled);
                if let Err(e) = f.reloaded(&streams, &scheduled) {
                    tracing::error!("{e}");
                }
            }
            tracing::info!(
                by,
                added = ?r.streams.added,
                updated = ?r.streams.updated,
                removed = ?r.streams.removed,
                scheduled_added = ?r.scheduled_streams.added,
                scheduled_updated = ?r.scheduled_streams.updated,
                scheduled_removed = ?r.scheduled_streams.removed,
                profiles_changed = ?r.profiles_changed,
                "configuration reloaded"
            );
            for w in &r.warnings {
                tracing::warn!("{w}");
            }
            if !r.needs_restart.is_empty() {
                tracing::warn!(keys = ?r.needs_restart, "these settings changed but take effect only after a restart");
            }
            Ok(r)
        }
        Err(e) => {
            tracing::error!(
                by,
                "configuration reload refused; the running configuration stays: {e}"
            );
            // (The error's text already lists every problem.)
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge_patch(
            &mut doc,
            &json!({"a": null, "b": {"c": 5}, "e": [2, 3], "f": "new"}),
        );
        assert_eq!(doc, json!({"b": {"c": 5, "d": 3}, "e": [2, 3], "f": "new"}));
    }
}
