//! `/stream/<id>`: a channel's MPEG-TS, streamed for as long as the client stays.
//!
//! The handler only asks the engine for a subscription and turns it into a response body;
//! it never touches libav. Dropping the body (client gone) drops the subscription, which
//! frees the client's place at once.

use super::reply;
use super::state::AppState;
use super::state::View;
use bytes::Bytes;
use futures_util::StreamExt;
use std::convert::Infallible;
use std::time::Duration;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

const MPEG_TS: &str = "video/mp2t";

fn ts_headers(resp: &mut Response) {
    reply::typed(
        resp,
        MPEG_TS,
        HeaderValue::from_static("no-cache, no-store"),
    );
}

/// 429 for a token at its `max_streams`.
fn over_limit(state: &AppState, limit: &crate::tokens::Limit) -> Response {
    state.metrics.token_refused(&limit.name, "max_streams");
    reply::error(&crate::error::Error::new(
        crate::error::ErrorKind::TooManyRequests,
        limit.to_string(),
    ))
}

/// The `?profile=` a request asks for: None for none (the channel's own output); 404
/// naming the profiles stream `id` offers when it offers no such one.
fn profile_of(
    state: &AppState,
    id: u32,
    query: &str,
) -> Result<Option<String>, crate::error::Error> {
    let Some(p) = crate::auth::query_param(query, "profile") else {
        return Ok(None);
    };
    let Some(offered) = state.engine.offered_profiles(id) else {
        return Err(crate::registry::no_such(id));
    };
    if offered.contains(&p) {
        return Ok(Some(p));
    }
    Err(state.engine.no_such_profile(id, &p))
}

/// GET: subscribe and stream, for as long as the client stays and its token stays valid
/// (a revoked or expired token's streams end at once). `?profile=<name>`: one of the
/// stream's output profiles instead of its own.
pub async fn watch(state: &AppState, id: u32, query: &str, view: &View) -> Response {
    let profile = match profile_of(state, id, query) {
        Ok(p) => p,
        Err(e) => return reply::error(&e),
    };
    let lease = match view.who.open_stream(state.hls_lease()) {
        Ok(l) => l,
        Err(limit) => return over_limit(state, &limit),
    };
    let sub = match state.engine.subscribe_profile(id, profile.as_deref()).await {
        Ok(s) => s,
        Err(e) => return reply::error(&e),
    };
    let ended = view.who.ended();
    let chunks = futures_util::stream::unfold((sub, lease), |(mut sub, lease)| async move {
        let next = sub.next().await?;
        Some((next, (sub, lease)))
    })
    .take_until(ended)
    .flat_map(|v| futures_util::stream::iter(v.into_iter().map(Ok::<Bytes, Infallible>)));
    let mut resp = warp::reply::stream(chunks).into_response();
    ts_headers(&mut resp);
    resp
}

/// HEAD: the same headers, no body, no pipeline start (players probe with it).
pub fn head(state: &AppState, id: u32, query: &str) -> Response {
    if state.registry.get(id).is_none() {
        return reply::error(&crate::registry::no_such(id));
    }
    if let Err(e) = profile_of(state, id, query) {
        return reply::error(&e);
    }
    let mut resp = StatusCode::OK.into_response();
    ts_headers(&mut resp);
    resp
}

/// `Cache-Control` for HLS responses. Shared caches (nginx, a CDN) may keep them only when
/// the URL itself carries the token (or no token is configured): a cache keys on the URL,
/// so a response to a request authorised by a header must stay private.
fn hls_cache(state: &AppState, query: &str, max_age: u64, immutable: bool) -> HeaderValue {
    // The URL's own token must be a valid one: a request that passed on a header or
    // cookie with a stale `?token=` would otherwise be stored under that stale URL.
    let shared = !state.tokens.required()
        || crate::auth::query_token(query).is_some_and(|t| {
            matches!(
                state.tokens.find(Some(&t), state.clock.now()),
                crate::tokens::Found::Valid(_)
            )
        });
    let scope = if shared { "public" } else { "private" };
    let tail = if immutable { ", immutable" } else { "" };
    HeaderValue::from_str(&format!("{scope}, max-age={max_age}{tail}"))
        .unwrap_or(HeaderValue::from_static("no-cache"))
}

/// Whether the requesting player gets a cold channel's first playlist as soon as its
/// first (short) segment is complete, with partial segments to follow (see
/// `engine.hls_part_secs`): a script player in a browser (hls.js, Shaka, video.js: its
/// requests say `Sec-Fetch-Dest: empty`), which follows parts or at least copes with a
/// short live playlist. Every other client waits for three segments as RFC 8216 (6.3.3)
/// players expect: a browser's own media player (`video`, `audio`; Chromium's fails on a
/// shorter live playlist, measured), and apps (VLC, ffmpeg, Kodi), which send no such
/// header and may not follow parts.
pub fn follows_parts(headers: &warp::http::HeaderMap) -> bool {
    headers
        .get("sec-fetch-dest")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|d| d.eq_ignore_ascii_case("empty"))
}

/// A blocking playlist reload's delivery directives (`_HLS_msn`, `_HLS_part`), when the
/// session makes parts; a malformed one is a 400.
fn directives(query: &str) -> Result<Option<(u64, Option<usize>)>, crate::error::Error> {
    let bad = |k: &str| {
        crate::error::Error::new(
            crate::error::ErrorKind::BadRequest,
            format!("{k} must be a whole number"),
        )
    };
    let msn = match crate::auth::query_param(query, "_HLS_msn") {
        None => {
            if crate::auth::query_param(query, "_HLS_part").is_some() {
                return Err(crate::error::Error::new(
                    crate::error::ErrorKind::BadRequest,
                    "_HLS_part needs _HLS_msn",
                ));
            }
            return Ok(None);
        }
        Some(m) => m.parse::<u64>().map_err(|_| bad("_HLS_msn"))?,
    };
    let part = match crate::auth::query_param(query, "_HLS_part") {
        None => None,
        Some(p) => Some(p.parse::<usize>().map_err(|_| bad("_HLS_part"))?),
    };
    Ok(Some((msn, part)))
}

/// The URI of a segment (`part` None) or of one of its partial segments, relative to the
/// playlist, with the session's name and the query the playlist gives them.
fn media_uri(name: &str, params: &str, seq: u64, part: Option<usize>) -> String {
    match part {
        None => format!("{name}-{seq}.ts{params}"),
        Some(i) => format!("{name}-{seq}.{i}.ts{params}"),
    }
}

/// `/hls/<id>/index.m3u8`: the live playlist. Starts the channel's HLS output if needed
/// and waits until it has something to list: the first partial segment for a player
/// that follows them (`early`, see [`follows_parts`]), three segments otherwise (a
/// running channel has them at once, from its buffer). A blocking reload (`_HLS_msn`,
/// `_HLS_part`) waits for the segment or part it names. Segment URLs are relative and
/// carry the token.
///
/// `with_token`: the request presented the token itself. A browser authorised by its
/// session cookie gets segment URLs without it (it sends the cookie for them too), so the
/// cookie never reveals the token.
pub async fn hls_playlist(
    state: &AppState,
    id: u32,
    query: &str,
    early: bool,
    view: &View,
) -> Response {
    if state.registry.get(id).is_some() {
        if let Err(limit) = view.who.touch_hls(id, state.hls_lease()) {
            return over_limit(state, &limit);
        }
    }
    let profile = match profile_of(state, id, query) {
        Ok(p) => p,
        Err(e) => return reply::error(&e),
    };
    let until = match directives(query) {
        Ok(d) => d,
        Err(e) => return reply::error(&e),
    };
    let session = match state.engine.hls_session(id, profile.as_deref()) {
        Ok(s) => s,
        Err(e) => return reply::error(&e),
    };
    let engine = state.engine.settings();
    let limit = first_playlist_limit(engine);
    let params = segment_query(profile.as_deref(), view);
    let name = session.name.clone();
    let uri = move |seq: u64, part: Option<usize>| media_uri(&name, &params, seq, part);
    let until = until.filter(|_| session.has_parts());
    let text = match session
        .playlist(engine.hls_list_size, limit, early, until, uri)
        .await
    {
        Ok(t) => t,
        Err(e) => return reply::error(&e),
    };
    let mut resp = text.into_response();
    // A playlist with parts changes every part; a blocking reload's answer is the one
    // for its directives (an HTTP cache keys it by the whole URL).
    let max_age = if session.has_parts() && until.is_none() {
        1
    } else {
        (engine.hls_segment_secs / 2.0).floor().max(1.0) as u64
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apple.mpegurl"),
    );
    h.insert(
        header::CACHE_CONTROL,
        hls_cache(state, query, max_age, false),
    );
    // A cold channel's first answer depends on the player (see `follows_parts`): a
    // cache must not give a script player's short playlist to a strict one.
    h.insert(header::VARY, HeaderValue::from_static("Sec-Fetch-Dest"));
    resp
}

/// How long a first playlist request waits: three segments must be complete (plus one
/// for the GOP that straddles the start, plus one spare).
fn first_playlist_limit(engine: &crate::config::EngineConfig) -> Duration {
    Duration::from_secs(engine.start_timeout_secs)
        + Duration::from_secs_f64(
            (crate::engine::hls::MIN_LISTED + 2) as f64 * engine.hls_segment_secs,
        )
}

/// The query of a segment or rendition URL: the profile (if any), then the token.
fn segment_query(profile: Option<&str>, view: &View) -> String {
    let token = view.token_query();
    match profile {
        None => token,
        Some(p) => {
            let p = crate::auth::encode_for_query(p);
            match token.strip_prefix('?') {
                Some(t) => format!("?profile={p}&{t}"),
                None => format!("?profile={p}"),
            }
        }
    }
}

/// `/hls/<id>/master.m3u8`: the channel's renditions (its own output, then each of its
/// `profiles`) for adaptive players. Starts every rendition's HLS output, so a player can
/// switch at once, and answers once each has segments to list: `BANDWIDTH` and
/// `AVERAGE-BANDWIDTH` are measured on them, `CODECS` read from their first segment.
pub async fn hls_master(
    state: &AppState,
    id: u32,
    query: &str,
    early: bool,
    view: &View,
) -> Response {
    if state.registry.get(id).is_none() {
        return reply::error(&crate::registry::no_such(id));
    }
    if let Err(limit) = view.who.touch_hls(id, state.hls_lease()) {
        return over_limit(state, &limit);
    }
    let mut wanted: Vec<Option<String>> = vec![None];
    wanted.extend(
        state
            .engine
            .offered_profiles(id)
            .unwrap_or_default()
            .into_iter()
            .skip(1)
            .map(Some),
    );
    let engine = state.engine.settings();
    let limit = first_playlist_limit(engine);
    // The channel's own session first: the profiles' sessions follow its cuts.
    let mut sessions = Vec::new();
    for p in &wanted {
        match state.engine.hls_session(id, p.as_deref()) {
            Ok(s) => sessions.push(s),
            Err(e) => return reply::error(&e),
        }
    }
    let ready = futures_util::future::join_all(sessions.iter().map(|s| {
        s.playlist(engine.hls_list_size, limit, early, None, |_, _| {
            String::new()
        })
    }))
    .await;
    let mut variants = Vec::new();
    for ((profile, session), r) in wanted.iter().zip(&sessions).zip(ready) {
        if let Err(e) = r {
            return reply::error(&e);
        }
        let Some(info) = state.engine.rendition_info(id, profile.as_deref()) else {
            return reply::error(&crate::registry::no_such(id));
        };
        variants.push(super::hls_master::Variant {
            uri: format!("index.m3u8{}", segment_query(profile.as_deref(), view)),
            stats: session.stats(),
            info,
        });
    }
    let independent = sessions.iter().all(|s| s.independent_segments());
    let mut resp = super::hls_master::render(&variants, independent).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apple.mpegurl"),
    );
    h.insert(header::CACHE_CONTROL, hls_cache(state, query, 1, false));
    h.insert(header::VARY, HeaderValue::from_static("Sec-Fetch-Dest"));
    resp
}

/// `/hls/<id>/<session>-<seq>.ts`: one segment of the running HLS session;
/// `<session>-<seq>.<part>.ts`: one of its partial segments. The next part (a preload
/// hint names it before it exists) is answered once it is complete.
pub async fn hls_segment(
    state: &AppState,
    id: u32,
    file: &str,
    query: &str,
    view: &View,
) -> Response {
    let gone = || {
        reply::error(&crate::error::Error::not_found(format!(
            "no HLS segment {file} for stream {id} (it left the live window, or the session ended)"
        )))
    };
    let Some((name, seq, part)) = file
        .strip_suffix(".ts")
        .and_then(|f| f.rsplit_once('-'))
        .and_then(|(n, s)| {
            let (seq, part) = match s.split_once('.') {
                Some((seq, part)) => (seq, Some(part.parse::<usize>().ok()?)),
                None => (s, None),
            };
            Some((n, seq.parse::<u64>().ok()?, part))
        })
    else {
        return gone();
    };
    let profile = crate::auth::query_param(query, "profile");
    let running = state.engine.hls_running(id, profile.as_deref());
    let Some(session) = running.filter(|s| s.name == name) else {
        return gone();
    };
    if let Err(limit) = view.who.touch_hls(id, state.hls_lease()) {
        return over_limit(state, &limit);
    }
    let engine = state.engine.settings();
    let data = match part {
        None => session.segment(seq).map(|s| s.data),
        Some(i) => {
            // A hinted part is at most one part target away; allow a segment's length.
            let wait = Duration::from_secs_f64(engine.hls_segment_secs + 1.0);
            session.part(seq, i, wait).await.map(|p| p.data)
        }
    };
    let Some(data) = data else {
        return gone();
    };
    let keep = (engine.hls_segment_secs * (engine.hls_list_size + 4) as f64).ceil() as u64;
    reply::bytes(data, MPEG_TS, hls_cache(state, query, keep, true))
}
