//! The server loop: hyper directly (warp only decodes the request), so header-read
//! timeouts, connection limits, write timeouts, access logs with redacted tokens,
//! per-route metrics and graceful shutdown are all explicit.

use super::access::request;
use super::dispatch::handle;
use super::hdhr;
use super::io;
use super::routes::pattern_of;
use super::state::{AppState, ClientAddr};
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
        client = %addr,
        method,
        path,
        status = status.as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
}
