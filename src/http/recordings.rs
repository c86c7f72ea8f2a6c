//! Recordings (DVR): `/api/recordings` (schedule, list, read, delete), the files at
//! `/recordings/<id>.ts` (with `Content-Length` and byte ranges), and `/recordings.m3u`
//! for players. A viewer token sees the recordings of the channels it sees.

use super::api::Body;
use super::reply::{self, json, parse_json};
use super::state::{AppState, View};
use crate::engine::recordings::{self, Recording, Recordings};
use crate::error::{Error, ErrorKind};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

/// `POST /api/recordings`: a time window, or the next airing of a programme.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRecording {
    stream_id: u32,
    #[serde(default)]
    start: Option<crate::config::Timestamp>,
    #[serde(default)]
    end: Option<crate::config::Timestamp>,
    #[serde(default)]
    title: Option<String>,
    /// A programme's title in the channel's guide: its next airing (or the one on now).
    #[serde(default)]
    program: Option<String>,
}

fn store(state: &AppState) -> Result<&Arc<Recordings>, Error> {
    state.engine.recordings()
}

/// Whether `view` may see recordings of channel `stream_id` (an admin sees all, also of
/// deleted channels).
fn sees(state: &AppState, view: &View, stream_id: u32) -> bool {
    view.who.is_admin() || state.registry.get(stream_id).is_some_and(|s| view.sees(&s))
}

fn visible(state: &AppState, view: &View, id: u32) -> Result<Recording, Error> {
    store(state)?
        .get(id)
        .filter(|r| sees(state, view, r.stream_id))
        .ok_or_else(|| Error::not_found(format!("no recording {id}")))
}

pub fn list(state: &AppState, view: &View) -> Result<Response, Error> {
    let all: Vec<Recording> = store(state)?
        .list()
        .into_iter()
        .filter(|r| sees(state, view, r.stream_id))
        .collect();
    Ok(json(StatusCode::OK, &all))
}

pub fn get(state: &AppState, id: u32, view: &View) -> Result<Response, Error> {
    Ok(json(StatusCode::OK, &visible(state, view, id)?))
}

pub fn delete(state: &AppState, id: u32) -> Result<Response, Error> {
    store(state)?.delete(id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The start, end and title of a new recording, checked: the stream exists, the window
/// is ordered, at most [`recordings::MAX_HOURS`] long, not over, and a past start needs
/// the channel's archive to hold it.
fn plan(
    state: &AppState,
    req: &NewRecording,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>, String), Error> {
    let stream = state
        .registry
        .get(req.stream_id)
        .ok_or_else(|| Error::invalid(format!("stream_id: no stream {}", req.stream_id)))?;
    let (start, end, title) = match (&req.program, &req.start, &req.end) {
        (Some(p), None, None) => {
            let len = chrono::Duration::minutes(i64::from(state.server.guide_program_minutes));
            let airing = crate::epg::airings(&stream, len)
                .into_iter()
                .find(|(prog, _, stop)| {
                    prog.title.eq_ignore_ascii_case(p.trim()) && stop.with_timezone(&Utc) > now
                })
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "program: {p:?} does not air on stream {} from now on (its guide lists the next_programs with a start)",
                        stream.id
                    ))
                })?;
            let title = req.title.clone().unwrap_or_else(|| airing.0.title.clone());
            (
                airing.1.with_timezone(&Utc),
                airing.2.with_timezone(&Utc),
                title,
            )
        }
        (None, Some(a), Some(b)) => (
            a.utc(),
            b.utc(),
            req.title.clone().unwrap_or_else(|| stream.name.clone()),
        ),
        _ => return Err(Error::invalid(
            "give either start and end (ISO-8601), or program (a title from the channel's guide)",
        )),
    };
    if end <= start {
        return Err(Error::invalid("end: must be after start"));
    }
    if end - start > chrono::Duration::hours(recordings::MAX_HOURS) {
        return Err(Error::invalid(format!(
            "end: a recording lasts at most {} hours",
            recordings::MAX_HOURS
        )));
    }
    if end <= now {
        return Err(Error::invalid("end: is in the past: the programme is over"));
    }
    if start < now - chrono::Duration::seconds(5) {
        // Only an archive holds the past.
        let span = state
            .engine
            .archive_of(stream.id)
            .ok()
            .and_then(|a| a.span(stream.id));
        if span.is_none_or(|(first, _)| first > start.timestamp_millis()) {
            return Err(Error::invalid(format!(
                "start: is in the past, and stream {}'s archive does not reach back to it ({})",
                stream.id,
                crate::engine::catchup::describe_span(span)
            )));
        }
    }
    if title.trim().is_empty() || title.chars().any(char::is_control) || title.len() > 200 {
        return Err(Error::invalid(
            "title: must be one line of at most 200 bytes",
        ));
    }
    Ok((start, end, title))
}

pub fn create(state: &AppState, ct: Option<String>, body: Body) -> Result<Response, Error> {
    let store = store(state)?;
    let req: NewRecording = parse_json(ct.as_deref(), &body?)?;
    let (start, end, title) = plan(state, &req, state.clock.now())?;
    let r = store.create(req.stream_id, title, start, end)?;
    reply::created(&r, &format!("/api/recordings/{}", r.id))
}

/// `/recordings/<id>.ts` (GET or HEAD): the file as far as it is written.
pub async fn file(
    state: &AppState,
    name: &str,
    range: Option<&str>,
    view: &View,
    head: bool,
) -> Response {
    let id = name
        .strip_suffix(".ts")
        .filter(|n| !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u32>().ok());
    let r = match id.map(|id| visible(state, view, id)) {
        Some(Ok(r)) => r,
        Some(Err(e)) => return reply::error(&e),
        None => return reply::error(&Error::not_found(format!("no recording {name}"))),
    };
    let Ok(store) = store(state) else {
        return reply::error(&Error::not_found("recording is off"));
    };
    let path = store.path(r.id);
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(_) => {
            return reply::error(&Error::new(
                ErrorKind::NotFound,
                format!("recording {} has no file yet (state: {:?})", r.id, r.state),
            ))
        }
    };
    let lease = match view.who.open_stream(state.hls_lease()) {
        Ok(l) => l,
        Err(limit) => {
            return reply::error(&Error::new(ErrorKind::TooManyRequests, limit.to_string()))
        }
    };
    super::catchup::file_response(path, len, range, lease, view, head)
}

/// `/recordings.m3u`: the recordings with a file, newest first, for players.
pub fn playlist(state: &AppState, view: &View) -> Result<Response, Error> {
    use std::fmt::Write;
    let store = store(state)?;
    let token = view.token_query();
    let mut out = String::from("#EXTM3U\n");
    for r in store.list() {
        if !sees(state, view, r.stream_id)
            || !matches!(
                r.state,
                recordings::State::Completed | recordings::State::Recording
            )
        {
            continue;
        }
        let title: String = r
            .title
            .chars()
            .map(|c| if c.is_control() || c == ',' { ' ' } else { c })
            .collect();
        let secs = if r.state == recordings::State::Completed {
            r.duration_secs.round() as i64
        } else {
            -1
        };
        let _ = write!(
            out,
            "#EXTINF:{secs},{title} ({})\n{}/recordings/{}.ts{token}\n",
            r.start.format("%Y-%m-%d %H:%M UTC"),
            view.base,
            r.id
        );
    }
    let mut resp = out.into_response();
    resp.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("audio/x-mpegurl; charset=utf-8"),
    );
    Ok(resp)
}
