//! `/stream/<id>`: a channel's MPEG-TS, streamed for as long as the client stays.
//!
//! The handler only asks the engine for a subscription and turns it into a response body;
//! it never touches libav. Dropping the body (client gone) drops the subscription, which
//! frees the client's place at once.

use super::reply;
use super::AppState;
use bytes::Bytes;
use futures_util::StreamExt;
use std::convert::Infallible;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

const MPEG_TS: &str = "video/mp2t";

fn ts_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(MPEG_TS));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

/// GET: subscribe and stream.
pub async fn watch(state: &AppState, id: u32) -> Response {
    let sub = match state.engine.subscribe(id).await {
        Ok(s) => s,
        Err(e) => return reply::error(&e),
    };
    let chunks = futures_util::stream::unfold(sub, |mut sub| async move {
        let next = sub.next().await?;
        Some((next, sub))
    })
    .flat_map(|v| futures_util::stream::iter(v.into_iter().map(Ok::<Bytes, Infallible>)));
    let mut resp = warp::reply::stream(chunks).into_response();
    ts_headers(&mut resp);
    resp
}

/// HEAD: the same headers, no body, no pipeline start (players probe with it).
pub fn head(state: &AppState, id: u32) -> Response {
    if state.registry.get(id).is_none() {
        return reply::error(&crate::registry::no_such(id));
    }
    let mut resp = StatusCode::OK.into_response();
    ts_headers(&mut resp);
    resp
}
