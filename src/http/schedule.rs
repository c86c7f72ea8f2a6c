//! `/api/schedule`: the scheduled streams, created, replaced and deleted through the API.
//! Like `/api/streams`, the scheduler validates and applies (see `crate::schedule`).

use super::api::Body;
use super::reply::{json, parse_json};
use super::state::AppState;
use crate::config::StreamConfig;
use crate::error::Error;
use crate::registry::Origin;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

/// Saves scheduled stream `id` as it is now to the state file (when configured).
fn persist_scheduled(state: &AppState, id: u32) -> Result<(), Error> {
    match &state.state_file {
        Some(f) => f.scheduled_changed(id, || state.scheduler.get(id).map(|l| l.stream)),
        None => Ok(()),
    }
}

pub fn list(state: &AppState, view: &super::state::View) -> Result<Response, Error> {
    let out: Vec<serde_json::Value> = state
        .scheduler
        .list()
        .into_iter()
        .filter(|l| view.sees(&l.stream))
        .map(|l| shown(view, &l))
        .collect();
    Ok(json(StatusCode::OK, &out))
}

pub fn get(state: &AppState, id: u32, view: &super::state::View) -> Result<Response, Error> {
    let l = state
        .scheduler
        .get(id)
        .filter(|l| view.sees(&l.stream))
        .ok_or_else(|| crate::registry::no_such(id))?;
    Ok(json(StatusCode::OK, &shown(view, &l)))
}

/// A scheduled stream as `view` may see it.
fn shown(view: &super::state::View, l: &crate::schedule::Listed) -> serde_json::Value {
    let mut v = serde_json::to_value(l).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("stream".into(), super::api::visible_stream(view, &l.stream));
    }
    v
}

pub fn create(state: &AppState, ct: Option<String>, body: Body) -> Result<Response, Error> {
    let stream: StreamConfig = parse_json(ct.as_deref(), &body?)?;
    let listed = state.scheduler.upsert(stream, Origin::Api, false)?;
    persist_scheduled(state, listed.stream.id)?;
    super::reply::created(&listed, &format!("/api/schedule/{}", listed.stream.id))
}

pub fn replace(
    state: &AppState,
    id: u32,
    ct: Option<String>,
    body: Body,
) -> Result<Response, Error> {
    let stream = super::api::stream_for(id, ct, body)?;
    if stream.id != id {
        return Err(Error::invalid(format!(
            "id: {} does not match the stream in the URL ({id}); ids cannot change",
            stream.id
        )));
    }
    let listed = state.scheduler.upsert(stream, Origin::Api, true)?;
    persist_scheduled(state, listed.stream.id)?;
    Ok(json(StatusCode::OK, &listed))
}

pub fn delete(state: &AppState, id: u32) -> Result<Response, Error> {
    state.scheduler.remove(id)?;
    persist_scheduled(state, id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
