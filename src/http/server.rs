//! The server loop: hyper directly (warp only decodes the request), so header-read
//! timeouts, connection limits, write timeouts, access logs with redacted tokens,
//! per-route metrics and graceful shutdown are all explicit.

use super::access::request;
use super::dispatch::handle;
use super::hdhr;
use super::io;
use super::routes::pattern_of;
use super::state::AppState;
use crate::metrics::HttpLabels;
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
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

/// The whole of routing: every request is read once, decoded into a typed route and
/// answered by [`handle`]. One filter, so rustc never sees a long `or` chain.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    warp::any()
        .map(move || state.clone())
        .and(request())
        .then(handle)
        .recover(|r: warp::Rejection| async move {
            tracing::warn!(rejection = ?r, "unhandled rejection");
            Ok::<_, Infallible>(super::reply::error(&crate::error::Error::new(
                crate::error::ErrorKind::BadRequest,
                "the request could not be handled",
            )))
        })
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

/// How much encrypted output one TLS connection may hold before the socket takes it.
/// rustls' default (64 KiB) is less than what hyper hands over in one write of a busy
/// stream (up to 16 chunks), which split every such write into two `writev` calls.
const TLS_BUFFER: usize = 256 * 1024;

/// Serves until `shutdown` resolves, then lets open requests finish for up to `drain`.
/// With `server.tls` every connection starts with a TLS handshake (bounded by the header
/// timeout).
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
    let acceptor = match state.tls.as_ref().map(|c| c.acceptor()) {
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            tracing::error!("{e}");
            return;
        }
        None => None,
    };
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
        let svc = service(filtered.clone(), state.clone(), addr, acceptor.is_some());
        let watcher = graceful.watcher();
        let st = state.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                None => connection(&st, stream, svc, watcher, addr).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(mut tls)) => {
                            tls.get_mut().1.set_buffer_limit(Some(TLS_BUFFER));
                            connection(&st, tls, svc, watcher, addr).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %addr, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(client = %addr, "TLS handshake timed out"),
                    }
                }
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

/// The per-connection service: resolves the client (through trusted proxies), hands the
/// request to warp, logs and counts it.
fn service<F>(
    filtered: F,
    st: Arc<AppState>,
    addr: SocketAddr,
    tls: bool,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send,
> + Clone
       + Send
where
    F: Service<hyper::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    F::Future: Send + 'static,
{
    let svc = move |mut req: hyper::Request<Incoming>| {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let client = st.proxies.resolve(addr, tls, req.headers());
        req.extensions_mut().insert(client.clone());
        let fut = filtered.clone().call(req);
        let st = st.clone();
        async move {
            let resp = fut.await?;
            log_request(&st, &client, method.as_str(), &path, resp.status(), started);
            Ok::<_, Infallible>(resp)
        }
    };
    hyper::service::service_fn(svc)
}

/// Serves one connection (plain or TLS) until it ends or the server drains.
async fn connection<S, V>(
    st: &AppState,
    io: S,
    svc: V,
    watcher: hyper_util::server::graceful::Watcher,
    addr: SocketAddr,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    V: hyper::service::Service<hyper::Request<Incoming>, Response = Response, Error = Infallible>
        + Send
        + 'static,
    V::Future: Send + 'static,
{
    let write_timeout = Duration::from_secs(st.server.write_timeout_secs);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(st.server.header_timeout_secs))
        .serve_connection(TokioIo::new(io::WriteTimeout::new(io, write_timeout)), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(client = %addr, error = %e, "connection ended with an error");
    }
}

/// With `server.redirect_http_port`: every plain-HTTP request is answered with a
/// permanent redirect to the same path on the HTTPS address (the query, which may hold a
/// token, is dropped rather than repeated in a Location header).
pub async fn redirect_http(listener: TcpListener, state: Arc<AppState>) {
    loop {
        let Ok((stream, addr)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let st = state.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let client = st.proxies.resolve(addr, false, req.headers());
            let host = client
                .host
                .as_deref()
                .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h).to_owned());
            let target = match (&st.server.public_url, host) {
                (Some(u), _) if u.starts_with("https://") => u.trim_end_matches('/').to_owned(),
                (_, Some(h)) if super::proxy::plain_host(&h) => {
                    format!("https://{h}:{}", st.local_addr.port())
                }
                _ => format!("https://{}", st.local_addr),
            };
            let path = req.uri().path().to_owned();
            async move {
                let mut resp = warp::Reply::into_response(StatusCode::PERMANENT_REDIRECT);
                if let Ok(v) = warp::http::HeaderValue::from_str(&format!("{target}{path}")) {
                    resp.headers_mut().insert(warp::http::header::LOCATION, v);
                }
                Ok::<_, Infallible>(resp)
            }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

/// One access-log line and one metric per request. The query string (which may hold the
/// token) is never logged.
fn log_request(
    st: &AppState,
    client: &super::proxy::Client,
    method: &str,
    path: &str,
    status: StatusCode,
    started: Instant,
) {
    let pattern = pattern_of(path);
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
        client = %client.ip,
        via = client.proxied.then(|| client.peer.to_string()),
        method,
        path,
        status = status.as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
}
