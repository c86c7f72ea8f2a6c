//! The HTTP surface: the route table, token enforcement, and the server loop.
//!
//! Every route is listed once in [`ROUTES`]. All of them except `/health` are mounted behind
//! one token filter, so a new route cannot forget auth, and the black-box tests walk the
//! table to prove it. The server loop is ours (hyper directly, warp for routing) so that
//! header-read timeouts, connection limits, access logs with redacted tokens, per-route
//! metrics and graceful shutdown are all explicit. This layer never touches libav.

pub mod api;
pub mod dashboard;
pub mod guide;
pub mod hdhr;
pub mod io;
pub mod media;
pub mod reply;

use crate::auth::TokenCheck;
use crate::clock::SharedClock;
use crate::config::ServerConfig;
use crate::error::{Error, ErrorKind};
use crate::metrics::{HttpLabels, Metrics};
use crate::registry::Registry;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;
use warp::http::{header, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// Everything request handlers share.
#[derive(Debug)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub engine: Arc<crate::engine::Engine>,
    pub scheduler: Arc<crate::schedule::Scheduler>,
    pub reloader: Arc<crate::reload::Reloader>,
    /// Where API changes are saved (`server.state_file`), if anywhere.
    pub state_file: Option<Arc<crate::state::StateFile>>,
    pub metrics: Arc<Metrics>,
    pub server: ServerConfig,
    pub hdhomerun: crate::config::HdhrConfig,
    pub token: TokenCheck,
    /// Failed token checks per client address (brute-force protection).
    pub auth_limiter: crate::auth::FailureLimiter,
    /// The dashboard's login sessions.
    pub sessions: crate::auth::Sessions,
    pub clock: SharedClock,
    /// The address the server is bound to (fallback base URL).
    pub local_addr: SocketAddr,
}

/// One route: method, pattern (as used in metrics labels), an example path for tests,
/// and whether it is public.
#[derive(Clone, Copy, Debug)]
pub struct RouteSpec {
    pub method: &'static str,
    pub pattern: &'static str,
    pub example: &'static str,
    pub public: bool,
}

const fn route(method: &'static str, pattern: &'static str, example: &'static str) -> RouteSpec {
    RouteSpec {
        method,
        pattern,
        example,
        public: false,
    }
}

/// A route answered without the token (its example is its pattern).
const fn public(method: &'static str, pattern: &'static str) -> RouteSpec {
    RouteSpec {
        method,
        pattern,
        example: pattern,
        public: true,
    }
}

/// Every route the server answers. Keep in step with [`routes`].
pub const ROUTES: &[RouteSpec] = &[
    public("GET", "/health"),
    public("GET", "/login"),
    public("POST", "/login"),
    public("POST", "/logout"),
    route("GET", "/", "/"),
    route("GET", "/watch/{id}", "/watch/1"),
    route("GET", "/ui/{file}", "/ui/style.css"),
    route("GET", "/thumb/{id}.jpg", "/thumb/1.jpg"),
    route("GET", "/playlist.m3u", "/playlist.m3u"),
    route("GET", "/metrics", "/metrics"),
    route("GET", "/api/streams", "/api/streams"),
    route("POST", "/api/streams", "/api/streams"),
    route("GET", "/api/streams/{id}", "/api/streams/1"),
    route("PUT", "/api/streams/{id}", "/api/streams/1"),
    route("PATCH", "/api/streams/{id}", "/api/streams/1"),
    route("DELETE", "/api/streams/{id}", "/api/streams/1"),
    route(
        "GET",
        "/api/streams/{id}/programs",
        "/api/streams/1/programs",
    ),
    route(
        "PUT",
        "/api/streams/{id}/programs",
        "/api/streams/1/programs",
    ),
    route("GET", "/api/streams/{id}/status", "/api/streams/1/status"),
    route("POST", "/api/reload", "/api/reload"),
    route("GET", "/stream/{id}", "/stream/1"),
    route("HEAD", "/stream/{id}", "/stream/1"),
    route("GET", "/hls/{id}/index.m3u8", "/hls/1/index.m3u8"),
    route("GET", "/hls/{id}/{segment}", "/hls/1/0-0.ts"),
    route("GET", "/epg.xml", "/epg.xml"),
    route("GET", "/api/schedule", "/api/schedule"),
    route("POST", "/api/schedule", "/api/schedule"),
    route("GET", "/api/schedule/{id}", "/api/schedule/900"),
    route("PUT", "/api/schedule/{id}", "/api/schedule/900"),
    route("DELETE", "/api/schedule/{id}", "/api/schedule/900"),
    route(
        "GET",
        "/hdhr/{token}/discover.json",
        "/hdhr/x/discover.json",
    ),
    route("GET", "/hdhr/{token}/lineup.json", "/hdhr/x/lineup.json"),
    route(
        "GET",
        "/hdhr/{token}/lineup_status.json",
        "/hdhr/x/lineup_status.json",
    ),
    route("POST", "/hdhr/{token}/lineup.post", "/hdhr/x/lineup.post"),
    route("GET", "/hdhr/{token}/device.xml", "/hdhr/x/device.xml"),
    route("GET", "/hdhr/{token}/auto/v{n}", "/hdhr/x/auto/v2"),
    route("HEAD", "/hdhr/{token}/auto/v{n}", "/hdhr/x/auto/v2"),
];

/// The route pattern a path belongs to, for bounded metric labels.
pub fn pattern_of(method: &str, path: &str) -> &'static str {
    if let Some(tail) = path.strip_prefix("/hdhr/") {
        let norm = match hdhr::split(tail) {
            Some((_, hdhr::Target::Channel(_))) => "/hdhr/{token}/auto/v{n}".to_owned(),
            Some(_) => hdhr::redact_path(path, "{token}"),
            None => String::new(),
        };
        return ROUTES
            .iter()
            .find(|r| r.pattern == norm)
            .map(|r| r.pattern)
            .unwrap_or("other");
    }
    if path.starts_with("/ui/") {
        return "/ui/{file}";
    }
    if let Some(f) = path.strip_prefix("/thumb/") {
        let id = f.strip_suffix(".jpg").unwrap_or("");
        return if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
            "/thumb/{id}.jpg"
        } else {
            "other"
        };
    }
    if let Some(tail) = path.strip_prefix("/hls/") {
        let mut parts = tail.split('/');
        let id = parts
            .next()
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
        return match (id, parts.next(), parts.next()) {
            (true, Some("index.m3u8"), None) => "/hls/{id}/index.m3u8",
            (true, Some(f), None) if f.ends_with(".ts") => "/hls/{id}/{segment}",
            _ => "other",
        };
    }
    let norm: String = path
        .split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    ROUTES
        .iter()
        .find(|r| r.pattern == norm && r.method == method)
        .or_else(|| ROUTES.iter().find(|r| r.pattern == norm))
        .map(|r| r.pattern)
        .unwrap_or("other")
}

/// The client's address, put on each request by the server loop.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// What a request presents to prove it may be served.
#[derive(Debug)]
struct Creds {
    authorization: Option<String>,
    x_token: Option<String>,
    query: String,
    path: warp::path::FullPath,
    client: Option<ClientAddr>,
    cookie: Option<String>,
    accept: Option<String>,
    method: warp::http::Method,
}

fn creds() -> impl Filter<Extract = (Creds,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::header::optional::<String>("x-amps-token"))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::path::full())
        .and(warp::ext::optional::<ClientAddr>())
        .and(warp::header::optional::<String>("cookie"))
        .and(warp::header::optional::<String>("accept"))
        .and(warp::method())
        .map(
            |authorization, x_token, query, path, client, cookie, accept, method| Creds {
                authorization,
                x_token,
                query,
                path,
                client,
                cookie,
                accept,
                method,
            },
        )
}

/// Whether the request itself carries the valid token (in a header or the query), rather
/// than only a session cookie. Pages and playlists show the token only to such requests, so
/// a session cookie never reveals it. Also true when no token is configured.
fn presents_token(
    state: Arc<AppState>,
) -> impl Filter<Extract = (bool,), Error = Rejection> + Clone {
    creds()
        .and(with_state(state))
        .map(|c: Creds, state: Arc<AppState>| {
            let presented = crate::auth::presented(
                c.authorization.as_deref(),
                c.x_token.as_deref(),
                Some(&c.query),
            )
            .or_else(|| hdhr::path_token(c.path.as_str()));
            !state.token.required() || state.token.allows(presented.as_deref())
        })
}

/// Passes only requests that carry the token (or any request when none is configured).
/// The dashboard's session cookie counts too, for reading (GET and HEAD) only: a cookie
/// rides along on requests other sites trigger, so it never authorises a change.
fn authorized(state: Arc<AppState>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    creds()
        .and(with_state(state))
        .and_then(|c: Creds, state: Arc<AppState>| async move {
            let ip = c
                .client
                .map(|c| c.0.ip())
                .filter(|ip| !ip.is_loopback() || state.server.auth_limit_loopback);
            let now = Instant::now();
            if let Some(secs) = ip.and_then(|ip| state.auth_limiter.blocked(ip, now)) {
                state.metrics.auth_blocked.inc();
                return Err(warp::reject::custom(reply::Blocked(secs)));
            }
            // Tuner clients (Plex, Jellyfin) carry it in the path: /hdhr/<token>/...
            let presented = crate::auth::presented(
                c.authorization.as_deref(),
                c.x_token.as_deref(),
                Some(&c.query),
            )
            .or_else(|| hdhr::path_token(c.path.as_str()));
            let reading = c.method == warp::http::Method::GET || c.method == warp::http::Method::HEAD;
            let session = c
                .cookie
                .as_deref()
                .and_then(|h| crate::auth::cookie(h, crate::auth::SESSION_COOKIE));
            if state.token.allows(presented.as_deref())
                || (reading && session.is_some_and(|v| state.sessions.valid(v)))
            {
                if let Some(ip) = ip {
                    state.auth_limiter.succeeded(ip);
                }
                Ok(())
            } else {
                state.metrics.auth_failures.inc();
                if let Some(ip) = ip {
                    if state.auth_limiter.failed(ip, now) {
                        tracing::warn!(client = %ip, secs = state.server.auth_block_secs, "too many failed token checks; refusing this address for a while");
                    }
                }
                // A browser opening a dashboard page gets the login form.
                let login = reading
                    && dashboard::is_page(c.path.as_str())
                    && c.accept.as_deref().is_some_and(|a| a.contains("text/html"));
                Err(warp::reject::custom(reply::Unauthorized { login }))
            }
        })
        .untuple_one()
}

/// The base URL players should use: `server.public_url`, else the request's `Host` when it
/// is a plain host[:port], else the bound address.
pub fn base_url(state: &AppState, host: Option<&str>) -> String {
    if let Some(u) = &state.server.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let ok = |h: &&str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
    };
    match host.filter(ok) {
        Some(h) => format!("http://{h}"),
        None => format!("http://{}", state.local_addr),
    }
}

fn playlist(state: &AppState, host: Option<String>) -> Response {
    let base = base_url(state, host.as_deref());
    let token = state.server.auth_token.as_deref();
    let epg_url = match token {
        Some(t) => format!("{base}/epg.xml?token={}", crate::auth::encode_for_query(t)),
        None => format!("{base}/epg.xml"),
    };
    let text = crate::playlist::render(
        &state.registry.list(),
        &crate::playlist::Options {
            base_url: &base,
            token,
            epg_url: Some(&epg_url),
            now: state.clock.now(),
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
fn metrics(state: &AppState, accept: Option<String>) -> Response {
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

type Route = warp::filters::BoxedFilter<(Response,)>;

/// The first of `routes` that matches.
fn one_of(routes: Vec<Route>) -> Route {
    let mut it = routes.into_iter();
    let first = it.next().expect("at least one route");
    it.fold(first, |acc, r| acc.or(r).unify().boxed())
}

/// The whole routing tree.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let s = || with_state(state.clone());
    let limit = state.server.max_body_bytes;
    // The body (or why it was refused) reaches the handler, so a body error is answered as
    // such and not lost among other routes' rejections (warp would prefer a 405).
    let body = move || {
        let bounded = warp::body::content_length_limit(limit)
            .and(warp::body::bytes())
            .map(Ok);
        let refused = warp::header::optional::<u64>("content-length").map(move |len: Option<u64>| {
            Err(match len {
                Some(n) if n > limit => Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!("the request body ({n} bytes) is larger than server.max_body_bytes ({limit})"),
                ),
                Some(_) => Error::new(ErrorKind::BadRequest, "the request body could not be read"),
                None => Error::new(ErrorKind::BadRequest, "a Content-Length header is required"),
            })
        });
        warp::header::optional::<String>("content-type").and(bounded.or(refused).unify())
    };
    use warp::path::end;

    let health = warp::path!("health")
        .and(warp::get())
        .map(|| reply::json(StatusCode::OK, &serde_json::json!({"status": "ok"})));

    let playlist = warp::path!("playlist.m3u")
        .and(warp::get())
        .and(s())
        .and(warp::header::optional::<String>("host"))
        .map(|st: Arc<AppState>, host| playlist(&st, host));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(s())
        .and(warp::header::optional::<String>("accept"))
        .map(|st: Arc<AppState>, accept| metrics(&st, accept));

    let streams = warp::path("api").and(warp::path("streams"));
    let list = streams
        .and(end())
        .and(warp::get())
        .and(s())
        .map(|st: Arc<AppState>| reply::respond(api::list(&st)));
    let create = streams
        .and(end())
        .and(warp::post())
        .and(s())
        .and(body())
        .map(|st: Arc<AppState>, ct, b| reply::respond(api::create(&st, ct, b)));
    let one = || streams.and(warp::path::param::<u32>()).and(end());
    let get = one()
        .and(warp::get())
        .and(s())
        .map(|id, st: Arc<AppState>| reply::respond(api::get(&st, id)));
    let put = one()
        .and(warp::put())
        .and(s())
        .and(body())
        .map(|id, st: Arc<AppState>, ct, b| reply::respond(api::replace(&st, id, ct, b)));
    let patch = one()
        .and(warp::patch())
        .and(s())
        .and(body())
        .map(|id, st: Arc<AppState>, ct, b| reply::respond(api::patch(&st, id, ct, b)));
    let delete = one()
        .and(warp::delete())
        .and(s())
        .map(|id, st: Arc<AppState>| reply::respond(api::delete(&st, id)));
    let programs = || {
        streams
            .and(warp::path::param::<u32>())
            .and(warp::path("programs"))
            .and(end())
    };
    let get_programs = programs()
        .and(warp::get())
        .and(s())
        .map(|id, st: Arc<AppState>| reply::respond(api::get_programs(&st, id)));
    let put_programs = programs()
        .and(warp::put())
        .and(s())
        .and(body())
        .map(|id, st: Arc<AppState>, ct, b| reply::respond(api::put_programs(&st, id, ct, b)));

    let reload = warp::path!("api" / "reload")
        .and(warp::post())
        .and(s())
        .map(|st: Arc<AppState>| reply::respond(api::reload(&st)));
    let status = streams
        .and(warp::path::param::<u32>())
        .and(warp::path("status"))
        .and(end())
        .and(warp::get())
        .and(s())
        .map(|id, st: Arc<AppState>| reply::respond(api::status(&st, id)));
    let watch = warp::path!("stream" / u32)
        .and(warp::get())
        .and(s())
        .then(|id, st: Arc<AppState>| async move { media::watch(&st, id).await });
    let probe = warp::path!("stream" / u32)
        .and(warp::head())
        .and(s())
        .map(|id, st: Arc<AppState>| media::head(&st, id));

    let query = || warp::query::raw().or(warp::any().map(String::new)).unify();
    let hls_playlist = warp::path!("hls" / u32 / "index.m3u8")
        .and(warp::get())
        .and(s())
        .and(query())
        .and(presents_token(state.clone()))
        .then(|id, st: Arc<AppState>, q: String, tok: bool| async move {
            media::hls_playlist(&st, id, &q, tok).await
        });
    let hls_segment = warp::path!("hls" / u32 / String)
        .and(warp::get())
        .and(s())
        .and(query())
        .map(|id, file: String, st: Arc<AppState>, q: String| {
            media::hls_segment(&st, id, &file, &q)
        });

    let host = || warp::header::optional::<String>("host");
    let dashboard = end()
        .and(warp::get())
        .and(s())
        .and(host())
        .and(presents_token(state.clone()))
        .map(|st: Arc<AppState>, h: Option<String>, tok: bool| {
            dashboard::page(&st, h.as_deref(), tok)
        });
    let watch_page = warp::path!("watch" / u32)
        .and(warp::get())
        .and(s())
        .and(host())
        .and(presents_token(state.clone()))
        .map(|id, st: Arc<AppState>, h: Option<String>, tok: bool| {
            dashboard::watch_page(&st, id, h.as_deref(), tok)
        });
    let ui = warp::path!("ui" / String)
        .and(warp::get())
        .map(|f: String| dashboard::asset(&f));
    let thumb = warp::path!("thumb" / String)
        .and(warp::get())
        .and(s())
        .then(|f: String, st: Arc<AppState>| async move { dashboard::thumbnail(&st, &f).await });

    let tuner = warp::path("hdhr")
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::header::optional::<String>("host"))
        .and(s())
        .and_then(
            |tail: warp::path::Tail,
             method: warp::http::Method,
             host: Option<String>,
             st: Arc<AppState>| async move {
                let target = match hdhr::split(tail.as_str()) {
                    Some((_, t)) if st.hdhomerun.enabled => t,
                    _ => return Err(warp::reject::not_found()),
                };
                use warp::http::Method;
                let resp = match (target, method) {
                    (hdhr::Target::Channel(n), m) if m == Method::GET || m == Method::HEAD => {
                        let Some(ch) = hdhr::channel_for(&st, n) else {
                            return Ok(reply::error(&Error::not_found(format!(
                                "no channel with guide number {n}"
                            ))));
                        };
                        if m == Method::HEAD {
                            media::head(&st, ch.id)
                        } else {
                            media::watch(&st, ch.id).await
                        }
                    }
                    (hdhr::Target::LineupPost, m) if m == Method::POST || m == Method::GET => {
                        hdhr::answer(&st, target, host.as_deref())
                    }
                    (hdhr::Target::LineupPost | hdhr::Target::Channel(_), _) => {
                        return Err(warp::reject::not_found())
                    }
                    (t, Method::GET) => hdhr::answer(&st, t, host.as_deref()),
                    _ => return Err(warp::reject::not_found()),
                };
                Ok::<_, Rejection>(resp)
            },
        );

    let epg = warp::path!("epg.xml")
        .and(warp::get())
        .and(s())
        .and(warp::header::optional::<String>("accept-encoding"))
        .map(|st: Arc<AppState>, ae| reply::respond(guide::epg(&st, ae)));
    let schedule = warp::path("api").and(warp::path("schedule"));
    let sched_list = schedule
        .and(end())
        .and(warp::get())
        .and(s())
        .map(|st: Arc<AppState>| reply::respond(guide::list(&st)));
    let sched_create = schedule
        .and(end())
        .and(warp::post())
        .and(s())
        .and(body())
        .map(|st: Arc<AppState>, ct, b| reply::respond(guide::create(&st, ct, b)));
    let sched_one = || schedule.and(warp::path::param::<u32>()).and(end());
    let sched_get = sched_one()
        .and(warp::get())
        .and(s())
        .map(|id, st: Arc<AppState>| reply::respond(guide::get(&st, id)));
    let sched_put = sched_one()
        .and(warp::put())
        .and(s())
        .and(body())
        .map(|id, st: Arc<AppState>, ct, b| reply::respond(guide::replace(&st, id, ct, b)));
    let sched_delete = sched_one()
        .and(warp::delete())
        .and(s())
        .map(|id, st: Arc<AppState>| reply::respond(guide::delete(&st, id)));

    // Each route is boxed and the list folded, so the filter type stays flat (a long
    // chain of `or` makes rustc's type checking explode).
    let protected = one_of(vec![
        epg.boxed(),
        sched_list.boxed(),
        sched_create.boxed(),
        sched_get.boxed(),
        sched_put.boxed(),
        sched_delete.boxed(),
        watch.boxed(),
        probe.boxed(),
        hls_playlist.boxed(),
        hls_segment.boxed(),
        dashboard.boxed(),
        watch_page.boxed(),
        ui.boxed(),
        thumb.boxed(),
        status.boxed(),
        playlist.boxed(),
        metrics.boxed(),
        list.boxed(),
        create.boxed(),
        get.boxed(),
        put.boxed(),
        patch.boxed(),
        delete.boxed(),
        get_programs.boxed(),
        put_programs.boxed(),
        reload.boxed(),
        tuner.boxed(),
    ]);

    let login_form = warp::path!("login")
        .and(warp::get())
        .and(s())
        .map(|st: Arc<AppState>| dashboard::login_form(&st));
    let login = warp::path!("login")
        .and(warp::post())
        .and(s())
        .and(warp::body::content_length_limit(8 * 1024))
        .and(warp::body::bytes())
        .and(warp::ext::optional::<ClientAddr>())
        .map(|st: Arc<AppState>, b: bytes::Bytes, c| dashboard::login(&st, &b, c));
    let logout = warp::path!("logout")
        .and(warp::post())
        .and(s())
        .and(warp::header::optional::<String>("cookie"))
        .map(|st: Arc<AppState>, c: Option<String>| dashboard::logout(&st, c.as_deref()));
    let public = one_of(vec![
        health.map(|r: Response| r).boxed(),
        login_form.boxed(),
        login.boxed(),
        logout.boxed(),
    ]);

    public
        .or(authorized(state.clone()).and(protected))
        .unify()
        .recover(reply::recover)
        .unify()
}

/// Answers a connection over the limit with 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    let body = r#"{"error":"unavailable","detail":"too many connections; try again shortly"}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(resp.as_bytes())).await;
}

/// Serves until `shutdown` resolves, then lets open requests finish for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let filtered = warp::service(routes(state.clone()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(state.server.max_connections));
    let header_timeout = Duration::from_secs(state.server.header_timeout_secs);
    let write_timeout = Duration::from_secs(state.server.write_timeout_secs);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(client = %addr, "connection limit reached; answering 503");
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let filtered = filtered.clone();
        let st = state.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let started = Instant::now();
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            req.extensions_mut().insert(ClientAddr(addr));
            let fut = filtered.clone().call(req);
            let st = st.clone();
            async move {
                let resp = fut.await?;
                log_request(&st, addr, method.as_str(), &path, resp.status(), started);
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(
                TokioIo::new(io::WriteTimeout::new(stream, write_timeout)),
                svc,
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(client = %addr, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after {drain:?}; closing them");
    }
}

/// One access-log line and one metric per request. The query string (which may hold the
/// token) is never logged.
fn log_request(
    st: &AppState,
    addr: SocketAddr,
    method: &str,
    path: &str,
    status: StatusCode,
    started: Instant,
) {
    let pattern = pattern_of(method, path);
    st.metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route: pattern.to_owned(),
            method: method.to_owned(),
            status: status.as_u16(),
        })
        .inc();
    let path = hdhr::redact_path(path, "***");
    tracing::info!(
        target: "amps::access",
        client = %addr,
        method,
        path,
        status = status.as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_bounded() {
        assert_eq!(pattern_of("GET", "/api/streams/42"), "/api/streams/{id}");
        assert_eq!(
            pattern_of("PUT", "/api/streams/42/programs"),
            "/api/streams/{id}/programs"
        );
        assert_eq!(pattern_of("GET", "/etc/passwd"), "other");
        assert_eq!(pattern_of("GET", "/health"), "/health");
        assert_eq!(pattern_of("GET", "/stream/1"), "/stream/{id}");
        assert_eq!(pattern_of("HEAD", "/stream/12"), "/stream/{id}");
        assert_eq!(
            pattern_of("GET", "/hls/3/index.m3u8"),
            "/hls/{id}/index.m3u8"
        );
        assert_eq!(
            pattern_of("GET", "/hls/3/19a4c-17.ts"),
            "/hls/{id}/{segment}"
        );
        assert_eq!(pattern_of("GET", "/hls/3/../../etc"), "other");
    }
}
