//! Who may be served: the parts of a request the server looks at (read once by one warp
//! filter), the token it presents, and the one authorisation check every protected route
//! passes. Also the bounded request body reader.

use super::hdhr;
use super::proxy::Client;
use super::routes::Access;
use super::routes::Path;
use super::state::AppState;
pub use super::state::View;
use crate::error::{Error, ErrorKind};
use crate::tokens::{Found, Identity};
use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::time::Instant;
use warp::http::{HeaderMap, Method};
use warp::{Filter, Rejection};

/// A request body, not read until a handler asks for it.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;

/// A request as the handlers see it.
pub struct Request {
    pub method: Method,
    /// The raw path (never logged with its token: see `hdhr::redact_path`).
    pub raw_path: String,
    pub path: Path,
    /// The raw query string ("" when none).
    pub query: String,
    pub headers: HeaderMap,
    /// The client (through trusted proxies: the one they name), set by the server loop.
    pub client: Option<Client>,
    body: Option<BodyStream>,
}

/// Reads a request's parts. Rejects only when warp cannot hand over the body (never for
/// a request straight from the server loop).
pub fn request() -> impl Filter<Extract = (Request,), Error = Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<Client>())
        .and(warp::body::stream())
        .map(
            |method, full: warp::path::FullPath, query, headers, client, body| Request {
                method,
                path: Path::decode(full.as_str()),
                raw_path: full.as_str().to_owned(),
                query,
                headers,
                client,
                body: Some(boxed(body)),
            },
        )
}

fn boxed<S, B>(body: S) -> BodyStream
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf,
{
    Box::pin(body.map(|r| r.map(|mut b| b.copy_to_bytes(b.remaining()))))
}

/// Why a request is not served.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// Too many failed token checks from this address: refused for this many seconds.
    Blocked(u64),
    /// No valid token (`login`: answer with the login form, a browser asked for a page).
    Unauthorized { login: bool },
    /// A valid token that may not do this (a viewer on an admin route).
    Forbidden(String),
}

impl Request {
    /// A header as text (None when absent or not visible ASCII).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the request comes with a body (a length above 0, or chunked).
    pub fn has_body(&self) -> bool {
        self.header("transfer-encoding").is_some()
            || self
                .header("content-length")
                .and_then(|l| l.trim().parse::<u64>().ok())
                .is_some_and(|l| l > 0)
    }

    pub fn is_read(&self) -> bool {
        self.method == Method::GET || self.method == Method::HEAD
    }

    /// A dashboard form (the only changes a session may make) with the `?csrf=` value
    /// of this request's own session cookie.
    fn csrf_ok(&self) -> bool {
        if !matches!(self.path, Path::PageRefresh(_) | Path::PageChannel(..)) {
            return false;
        }
        let Some(session) = self
            .header("cookie")
            .and_then(|h| crate::auth::cookie(h, crate::auth::SESSION_COOKIE))
        else {
            return false;
        };
        let want = crate::auth::csrf_of(session);
        crate::auth::query_param(&self.query, "csrf").is_some_and(|v| {
            use subtle::ConstantTimeEq;
            v.len() == want.len() && bool::from(v.as_bytes().ct_eq(want.as_bytes()))
        })
    }

    /// The token the request carries: a header, the query, or (tuner clients, which
    /// cannot send headers) the `/hdhr/<token>/` path.
    fn presented(&self) -> Option<String> {
        crate::auth::presented(
            self.header("authorization"),
            self.header("x-amps-token"),
            Some(&self.query),
        )
        .or_else(|| hdhr::path_token(&self.raw_path))
    }

    /// The one check of every protected route: who the request is, and whether that
    /// token may use this route. The dashboard's session cookie counts too, for reading
    /// (GET and HEAD) only: a cookie rides along on requests other sites trigger, so it
    /// never authorises a change.
    ///
    /// Also returns the token the request itself presented (header, query or tuner path)
    /// when that is what admitted it: pages and playlists embed a token only then, so a
    /// session cookie never reveals one.
    pub fn authorize(&self, state: &AppState) -> Result<(Identity, Option<String>), Denied> {
        let ip = state.limited_ip(self.client.as_ref());
        let now = Instant::now();
        if let Some(secs) = ip.and_then(|ip| state.auth_limiter.blocked(ip, now)) {
            state.metrics.auth_blocked.inc();
            return Err(Denied::Blocked(secs));
        }
        let presented = self.presented();
        let found = state.tokens.find(presented.as_deref(), state.clock.now());
        let own = matches!(found, Found::Valid(_)) && state.tokens.required();
        let found = match found {
            Found::None if self.is_read() || self.csrf_ok() => self
                .header("cookie")
                .and_then(|h| crate::auth::cookie(h, crate::auth::SESSION_COOKIE))
                .and_then(|v| state.sessions.valid(v))
                .and_then(|key| state.tokens.by_session_key(&key))
                .filter(|who| !who.expired(state.clock.now()))
                .map_or(Found::None, Found::Valid),
            f => f,
        };
        match found {
            Found::Valid(who) => {
                if let Some(ip) = ip {
                    state.auth_limiter.succeeded(ip);
                }
                let access = self.path.access(self.method.as_str());
                let metrics_ok =
                    matches!(self.path, Path::Metrics) && state.server.metrics_for_viewers;
                if access == Access::Admin && !who.is_admin() && !metrics_ok {
                    state.metrics.token_refused(&who.name, "role");
                    return Err(Denied::Forbidden(format!(
                        "token {:?} is a viewer token; {} {} needs an admin token",
                        who.name,
                        self.method,
                        self.path.pattern()
                    )));
                }
                Ok((who, presented.filter(|_| own)))
            }
            Found::Expired(name) => {
                state.metrics.token_refused(&name, "expired");
                Err(Denied::Unauthorized {
                    login: self.wants_login(),
                })
            }
            Found::None => {
                state.metrics.auth_failures.inc();
                if let Some(ip) = ip {
                    if state.auth_limiter.failed(ip, now) {
                        tracing::warn!(client = %ip, "too many failed token checks; refusing this address for a while");
                    }
                }
                Err(Denied::Unauthorized {
                    login: self.wants_login(),
                })
            }
        }
    }

    /// A browser asking for a page: it gets the login form rather than JSON.
    fn wants_login(&self) -> bool {
        self.is_read()
            && self.path.is_page()
            && self
                .header("accept")
                .is_some_and(|a| a.contains("text/html"))
    }

    /// The body, at most `limit` bytes, announced by `Content-Length`. Errors name the
    /// limit's key (`limit_key`).
    pub async fn body(&mut self, limit: u64, limit_key: &str) -> Result<Bytes, Error> {
        let len = match self.header("content-length").map(str::parse::<u64>) {
            None => {
                return Err(Error::new(
                    ErrorKind::BadRequest,
                    "a Content-Length header is required",
                ))
            }
            Some(Err(_)) => {
                return Err(Error::new(
                    ErrorKind::BadRequest,
                    "the Content-Length header is not a number",
                ))
            }
            Some(Ok(n)) => n,
        };
        if len > limit {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!("the request body ({len} bytes) is larger than {limit_key} ({limit})"),
            ));
        }
        let unreadable = || Error::new(ErrorKind::BadRequest, "the request body could not be read");
        let mut stream = self.body.take().ok_or_else(unreadable)?;
        let mut out = Vec::with_capacity(len as usize);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(|_| unreadable())?);
            if out.len() as u64 > len {
                return Err(unreadable());
            }
        }
        Ok(Bytes::from(out))
    }
}

impl Request {
    /// The [`View`] handlers get: who asked, the token to embed and the base URL.
    pub fn view(&self, state: &AppState, who: Identity, token: Option<String>) -> View {
        View {
            token,
            required: state.tokens.required(),
            base: super::state::base_url(state, self.client.as_ref()),
            who,
        }
    }
}
