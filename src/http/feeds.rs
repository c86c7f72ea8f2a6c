//! What players and scrapers read: `GET /playlist.m3u`, `GET /epg.xml` (XMLTV, gzip when
//! asked) and `GET /metrics` (Prometheus text, or OpenMetrics when asked).

use super::state::AppState;
use super::state::View;
use crate::error::{Error, ErrorKind};
use std::io::Write;
use warp::http::{header, HeaderValue};
use warp::reply::Response;
use warp::Reply;

/// XMLTV of every channel; gzip-compressed when the client accepts it.
pub fn epg(
    state: &AppState,
    view: &View,
    accept_encoding: Option<&str>,
) -> Result<Response, Error> {
    let minutes = i64::from(state.server.guide_program_minutes);
    let xml = crate::epg::render(
        &view.channels(state),
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

/// The M3U playlist of every channel the token may see, with the guide's URL in its
/// header. URLs carry the token the request presented (a viewer's playlist hands out
/// the viewer's token, never the admin's).
pub fn playlist(state: &AppState, query: &str, view: &View) -> Response {
    let base = &view.base;
    let token = view.token.as_deref();
    let epg_url = format!("{base}/epg.xml{}", view.token_query());
    let channels = view.channels(state);
    // `?profile=<name>`: the variant for a phone or a slow line; a name no channel
    // offers is an error (a typo would otherwise give the full-size playlist).
    let profile = crate::auth::query_param(query, "profile");
    if let Some(p) = &profile {
        if !channels.iter().any(|s| s.profiles.contains(p)) {
            let mut offered: Vec<&str> = channels
                .iter()
                .flat_map(|s| s.profiles.iter().map(String::as_str))
                .collect();
            offered.sort_unstable();
            offered.dedup();
            let list = if offered.is_empty() {
                "none".to_owned()
            } else {
                offered.join(", ")
            };
            return super::reply::error(&crate::error::Error::not_found(format!(
                "no stream offers profile {p:?}; offered: {list}"
            )));
        }
    }
    let text = crate::playlist::render(
        &channels,
        &crate::playlist::Options {
            base_url: base,
            token,
            epg_url: Some(&epg_url),
            now: state.clock.now(),
            profile: profile.as_deref(),
        },
    );
    let mut resp = text.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("audio/x-mpegurl"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// The Prometheus text format, or OpenMetrics for a scraper that asks for it.
pub fn metrics(state: &AppState, accept: Option<&str>) -> Response {
    let n = state.registry.len();
    let open = accept.is_some_and(|a| a.contains("application/openmetrics-text"));
    let (text, ctype) = if open {
        (
            state.metrics.render_openmetrics(n),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            state.metrics.render(n),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    resp
}
