//! From a decoded request to a response: the token check for every route that is not
//! public, then one exhaustive match of (path, method) onto the handlers. Unknown paths
//! answer 404 and known paths with another method 405, both only after the token check,
//! so a client without the token learns nothing about the route set.

use super::access::{Denied, Request, View};
use super::hdhr::{self, Target};
use super::reply::{self, respond};
use super::routes::Path;
use super::state::AppState;
use super::{
    api, catchup, dashboard, feeds, login, media, providers, providers_page, recordings, schedule,
};
use crate::error::Error;
use std::sync::Arc;
use warp::http::{Method, StatusCode};
use warp::reply::Response;

/// The largest login form accepted (a token and a user name).
const LOGIN_BODY_LIMIT: u64 = 8 * 1024;

/// Answers one request.
pub async fn handle(state: Arc<AppState>, req: Request) -> Response {
    if req.path.is_public(req.method.as_str()) {
        return public(&state, req).await;
    }
    // A request refused here leaves its body unread, and the server then closes the
    // connection: say so, or a keep-alive client sends its next request into a closed
    // connection (and fails with an unexpected end of file).
    let unread = |resp: Response| {
        if req.has_body() {
            close_after(resp)
        } else {
            resp
        }
    };
    let (who, token) = match req.authorize(&state) {
        Ok(found) => found,
        Err(Denied::Blocked(secs)) => return unread(reply::blocked(secs)),
        Err(Denied::Unauthorized { login: true }) => {
            return unread(login::login_page(StatusCode::UNAUTHORIZED, None))
        }
        Err(Denied::Unauthorized { login: false }) => return unread(reply::unauthorized()),
        Err(Denied::Forbidden(why)) => {
            return unread(reply::error(&Error::new(
                crate::error::ErrorKind::Forbidden,
                why,
            )))
        }
    };
    let view = req.view(&state, who, token);
    if let Some(id) = req.path.channel().filter(|id| hidden(&state, &view, *id)) {
        // Not this token's channel: as if it did not exist.
        return unread(reply::error(&crate::registry::no_such(id)));
    }
    route(&state, req, &view).await
}

/// `Connection: close` on a response.
fn close_after(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        warp::http::header::CONNECTION,
        warp::http::HeaderValue::from_static("close"),
    );
    resp
}

/// Whether channel `id` exists but is outside the token's groups.
fn hidden(st: &AppState, view: &View, id: u32) -> bool {
    st.registry.get(id).is_some_and(|s| !view.sees(&s))
}

/// The routes answered without a token.
async fn public(st: &AppState, mut req: Request) -> Response {
    match (&req.path, req.method.clone()) {
        (Path::Health, Method::GET) => {
            reply::json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
        }
        (Path::Login, Method::GET) => login::login_form(st),
        (Path::Login, Method::POST) => {
            match req.body(LOGIN_BODY_LIMIT, "the login form's limit").await {
                Ok(b) => login::login(st, &b, req.client.as_ref()),
                Err(e) => reply::error(&e),
            }
        }
        (Path::Logout, Method::POST) => {
            login::logout(st, req.header("cookie"), req.client.as_ref())
        }
        _ => reply::error(&Error::not_found("no such route")),
    }
}

async fn route(st: &AppState, mut req: Request, view: &View) -> Response {
    use Method as M;
    use Path as P;
    let path = std::mem::replace(&mut req.path, P::NotFound);
    let ct = req.header("content-type").map(str::to_owned);
    let limit = st.server.max_body_bytes;
    let body_key = "server.max_body_bytes";
    match (path, req.method.clone()) {
        (P::Health | P::Login | P::Logout, _) => reply::method_not_allowed(),
        (P::Dashboard, M::GET) => dashboard::page(st, view),
        (P::Watch(id), M::GET) => dashboard::watch_page(st, id, &req.query, view),
        (P::Ui(f), M::GET) => dashboard::asset(&f),
        (P::Thumb(id), M::GET) => dashboard::thumbnail(st, id).await,
        (P::Playlist, M::GET) => feeds::playlist(st, &req.query, view),
        (P::Metrics, M::GET) => feeds::metrics(st, req.header("accept")),
        (P::Epg, M::GET) => respond(feeds::epg(st, view, req.header("accept-encoding"))),
        (P::Streams, M::GET) => respond(api::list(st, view)),
        (P::Streams, M::POST) => {
            let body = req.body(limit, body_key).await;
            respond(api::create(st, ct, body))
        }
        (P::Stream(id), M::GET) => respond(api::get(st, id, view)),
        (P::Stream(id), M::PUT) => {
            let body = req.body(limit, body_key).await;
            respond(api::replace(st, id, ct, body))
        }
        (P::Stream(id), M::PATCH) => {
            let body = req.body(limit, body_key).await;
            respond(api::patch(st, id, ct, body))
        }
        (P::Stream(id), M::DELETE) => respond(api::delete(st, id)),
        (P::Programs(id), M::GET) => respond(api::get_programs(st, id)),
        (P::Programs(id), M::PUT) => {
            let body = req.body(limit, body_key).await;
            respond(api::put_programs(st, id, ct, body))
        }
        (P::Status(id), M::GET) => respond(api::status(st, id)),
        (P::Reload, M::POST) => respond(api::reload(st)),
        (P::Tokens, M::GET) => respond(api::tokens(st)),
        (P::Tokens, M::POST) => {
            let body = req.body(limit, body_key).await;
            respond(api::create_token(st, ct, body))
        }
        (P::Token(name), M::DELETE) => respond(api::delete_token(st, &name)),
        (P::Schedule, M::GET) => respond(schedule::list(st, view)),
        (P::Schedule, M::POST) => {
            let body = req.body(limit, body_key).await;
            respond(schedule::create(st, ct, body))
        }
        (P::Scheduled(id), M::GET) => respond(schedule::get(st, id, view)),
        (P::Scheduled(id), M::PUT) => {
            let body = req.body(limit, body_key).await;
            respond(schedule::replace(st, id, ct, body))
        }
        (P::Scheduled(id), M::DELETE) => respond(schedule::delete(st, id)),
        (P::Media(id), M::GET) => media::watch(st, id, &req.query, view).await,
        (P::Media(id), M::HEAD) => media::head(st, id, &req.query),
        (P::HlsPlaylist(id), M::GET) => {
            let early = media::follows_parts(&req.headers);
            media::hls_playlist(st, id, &req.query, early, view).await
        }
        (P::HlsMaster(id), M::GET) => {
            let early = media::follows_parts(&req.headers);
            media::hls_master(st, id, &req.query, early, view).await
        }
        (P::HlsSegment(id, f), M::GET) => media::hls_segment(st, id, &f, &req.query, view).await,
        (P::Playlists, M::GET) => respond(providers::list(st)),
        (P::Playlists, M::POST) => {
            let body = req.body(limit, body_key).await;
            respond(providers::create(st, ct, body))
        }
        (P::PlaylistSource(name), M::GET) => respond(providers::get(st, &name)),
        (P::PlaylistSource(name), M::PUT) => {
            let body = req.body(limit, body_key).await;
            respond(providers::replace(st, &name, ct, body))
        }
        (P::PlaylistSource(name), M::DELETE) => respond(providers::delete(st, &name)),
        (P::PlaylistRefresh(name), M::POST) => respond(providers::refresh(st, name).await),
        (P::PlaylistChannels(name), M::GET) => respond(providers::channels(st, &name, view)),
        (P::PlaylistChannel(name, id), M::PUT) => {
            let body = req.body(limit, body_key).await;
            respond(providers::set_override(st, &name, id, ct, body))
        }
        (P::PlaylistsPage, M::GET) => {
            let cookie = req
                .header("cookie")
                .and_then(|h| crate::auth::cookie(h, crate::auth::SESSION_COOKIE))
                .map(str::to_owned);
            providers_page::page(st, view, &req.query, cookie.as_deref())
        }
        (P::PageRefresh(name), M::POST) => {
            respond(providers_page::refresh(st, name, &req.query).await)
        }
        (P::PageChannel(name, id), M::POST) => match req.body(limit, body_key).await {
            Ok(b) => respond(providers_page::save(st, &name, id, &req.query, &b)),
            Err(e) => reply::error(&e),
        },
        (P::Guides, M::GET) => respond(providers::guides(st)),
        (P::GuidesRefresh, M::POST) => respond(providers::refresh_guides(st).await),
        (P::Recordings, M::GET) => respond(recordings::list(st, view)),
        (P::Recordings, M::POST) => {
            let body = req.body(limit, body_key).await;
            respond(recordings::create(st, ct, body))
        }
        (P::Recording(id), M::GET) => respond(recordings::get(st, id, view)),
        (P::Recording(id), M::DELETE) => respond(recordings::delete(st, id)),
        (P::RecordingFile(f), m @ (M::GET | M::HEAD)) => {
            let range = req.header("range");
            recordings::file(st, &f, range, view, m == M::HEAD).await
        }
        (P::RecordingsPlaylist, M::GET) => respond(recordings::playlist(st, view)),
        (P::Catchup(id), m @ (M::GET | M::HEAD)) => {
            let range = req.header("range");
            catchup::ts(st, id, &req.query, range, view, m == M::HEAD).await
        }
        (P::CatchupPlaylist(id), M::GET) => catchup::playlist(st, id, &req.query, view).await,
        (P::CatchupSegment(id, f), M::GET) => catchup::segment(st, id, &f, view).await,
        (P::Tuner(t), m) => tuner(st, t, m, &req.query, view).await,
        (P::NotFound, _) => reply::error(&Error::not_found("no such route")),
        _ => reply::method_not_allowed(),
    }
}

/// The tuner emulation (`/hdhr/[<token>/]...`); 404 when it is turned off, and for a
/// method a tuner does not answer (Plex treats 404 and 405 alike).
async fn tuner(
    st: &AppState,
    target: Target,
    method: Method,
    req_query: &str,
    view: &View,
) -> Response {
    let not_found = || reply::error(&Error::not_found("no such route"));
    if !st.hdhomerun.enabled {
        return not_found();
    }
    let read = method == Method::GET || method == Method::HEAD;
    match target {
        Target::Channel(n) if read => {
            let Some(ch) = hdhr::channel_for(st, n).filter(|c| view.sees(c)) else {
                return reply::error(&Error::not_found(format!(
                    "no channel with guide number {n}"
                )));
            };
            // `?transcode=<value>` (Jellyfin, Channels): the profile it is mapped to.
            let offered = st.engine.offered_profiles(ch.id).unwrap_or_default();
            let query = hdhr::profile_query(&st.hdhomerun, req_query, &offered);
            if method == Method::HEAD {
                media::head(st, ch.id, &query)
            } else {
                media::watch(st, ch.id, &query, view).await
            }
        }
        Target::LineupPost if method == Method::POST || method == Method::GET => {
            hdhr::answer(st, target, view)
        }
        Target::LineupPost | Target::Channel(_) => not_found(),
        t if method == Method::GET => hdhr::answer(st, t, view),
        _ => not_found(),
    }
}
