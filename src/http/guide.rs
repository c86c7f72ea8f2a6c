//! The guide and the schedule: `GET /epg.xml` (XMLTV, gzip when asked) and the
//! `/api/schedule` resource for scheduled streams.

use super::api::Body;
use super::reply::{json, parse_json};
use super::AppState;
use crate::config::StreamConfig;
use crate::error::{Error, ErrorKind};
use crate::registry::Origin;
use std::io::Write;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

/// XMLTV of every channel; gzip-compressed when the client accepts it.
pub fn epg(state: &AppState, accept_encoding: Option<String>) -> Result<Response, Error> {
    let minutes = i64::from(state.server.guide_program_minutes);
    let xml = crate::epg::render(
        &state.registry.list(),
        chrono::Duration::minutes(minutes),
        state.clock.now(),
    );
    let gzip = accept_encoding.is_some_and(|a| {
        a.split(',').any(|e| {
            e.trim()
                .split(';')
                .next()
                .is_some_and(|n| n.trim().eq_ignore_ascii_case("gzip"))
        })
    });
    let mut resp = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(xml.as_bytes())
            .and_then(|_| enc.finish())
            .map(|bytes| {
                let mut r = bytes.into_response();
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                r
            })
            .map_err(|e| Error::new(ErrorKind::Internal, format!("gzip: {e}")))?
    } else {
        xml.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// Saves scheduled stream `id` as it is now to the state file (when configured).
fn persist_scheduled(state: &AppState, id: u32) -> Result<(), Error> {
    match &state.state_file {
        Some(f) => f.scheduled_changed(id, || state.scheduler.get(id).map(|l| l.stream)),
        None => Ok(()),
    }
}

pub fn list(state: &AppState) -> Result<Response, Error> {
    Ok(json(StatusCode::OK, &state.scheduler.list()))
}

pub fn get(state: &AppState, id: u32) -> Result<Response, Error> {
    let l = state
        .scheduler
        .get(id)
        .ok_or_else(|| crate::registry::no_such(id))?;
    Ok(json(StatusCode::OK, &l))
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
