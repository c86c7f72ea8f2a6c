//! Turning results into HTTP responses: JSON bodies, JSON errors, and the one mapping from
//! warp's routing rejections to statuses. Handlers return `Result<Response, Error>`; only
//! routing and auth reject.

use crate::error::{Error, ErrorKind};
use serde::de::DeserializeOwned;
use serde::Serialize;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

/// A JSON response with the given status.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

/// 201 Created with the new resource as JSON and its `Location`.
pub fn created<T: Serialize>(value: &T, location: &str) -> Result<Response, Error> {
    let mut resp = json(StatusCode::CREATED, value);
    let loc = HeaderValue::from_str(location)
        .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
    resp.headers_mut().insert(header::LOCATION, loc);
    Ok(resp)
}

/// The JSON error body: `{"error": kind, "detail": message, "errors": [..]}`.
pub fn error(e: &Error) -> Response {
    let status =
        StatusCode::from_u16(e.kind().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = serde_json::json!({ "error": e.kind().as_str(), "detail": e.message() });
    if !e.details().is_empty() {
        body["errors"] = serde_json::json!(e.details());
    }
    let mut resp = json(status, &body);
    if e.kind() == ErrorKind::Unauthorized {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"amps\""),
        );
    }
    resp
}

/// Either side of a handler result as a response.
pub fn respond(r: Result<Response, Error>) -> Response {
    r.unwrap_or_else(|e| error(&e))
}

/// Parses a JSON request body into `T`, with errors that point at the bad field:
/// 415 if the body is not declared as JSON, 400 if it is not JSON at all, 422 if it is JSON
/// of the wrong shape (`next_programs[2].start: ...`).
pub fn parse_json<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<T, Error> {
    let is_json = content_type
        .and_then(|c| c.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || m.ends_with("+json")
        })
        .unwrap_or(false);
    if !is_json {
        return Err(Error::new(
            ErrorKind::UnsupportedMediaType,
            "send the body as JSON with the header Content-Type: application/json",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let kind = if inner.is_data() {
            ErrorKind::Invalid
        } else {
            ErrorKind::BadRequest
        };
        let msg = if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        };
        Error::new(kind, msg)
    })
}

/// A body of bytes with its type, caching rule and `nosniff` (media, images, scripts).
pub fn bytes(
    data: bytes::Bytes,
    content_type: &'static str,
    cache: warp::http::HeaderValue,
) -> Response {
    let mut resp = Response::new(data.into());
    typed(&mut resp, content_type, cache);
    resp
}

/// Sets the type, caching rule and `nosniff` of a response.
pub fn typed(resp: &mut Response, content_type: &'static str, cache: warp::http::HeaderValue) {
    use warp::http::{header, HeaderValue};
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, cache);
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

/// Rejections that reach the top: auth failures, unknown routes, wrong methods, limits.
#[derive(Debug)]
pub struct Unauthorized {
    /// Answer with the dashboard's login form (a browser asked for a page).
    pub login: bool,
}
impl warp::reject::Reject for Unauthorized {}

/// Too many failed token checks from this address: refused for this many more seconds.
#[derive(Debug)]
pub struct Blocked(pub u64);
impl warp::reject::Reject for Blocked {}

pub async fn recover(r: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    if let Some(Blocked(secs)) = r.find::<Blocked>() {
        let mut resp = error(&Error::new(
            ErrorKind::TooManyRequests,
            format!("too many failed token checks from this address; try again in {secs} s"),
        ));
        if let Ok(v) = warp::http::HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut()
                .insert(warp::http::header::RETRY_AFTER, v);
        }
        return Ok(resp);
    }
    if r.find::<Unauthorized>().is_some_and(|u| u.login) {
        return Ok(super::dashboard::login_page(StatusCode::UNAUTHORIZED, None));
    }
    let e = if r.find::<Unauthorized>().is_some() {
        Error::new(
            ErrorKind::Unauthorized,
            "a valid token is required: send Authorization: Bearer <token>, X-Amps-Token: <token> or ?token=<token>",
        )
    } else if r.is_not_found() {
        Error::not_found("no such route")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method_not_allowed", "detail": "this route does not accept that method"}),
        ));
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        Error::new(
            ErrorKind::PayloadTooLarge,
            "the request body is larger than server.max_body_bytes",
        )
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        Error::new(ErrorKind::BadRequest, "a Content-Length header is required")
    } else if let Some(h) = r.find::<warp::reject::InvalidHeader>() {
        Error::new(ErrorKind::BadRequest, h.to_string())
    } else if let Some(q) = r.find::<warp::reject::InvalidQuery>() {
        Error::new(ErrorKind::BadRequest, q.to_string())
    } else {
        tracing::warn!(rejection = ?r, "unhandled rejection");
        Error::new(ErrorKind::BadRequest, "the request could not be handled")
    };
    Ok(error(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Program;

    #[test]
    fn json_errors_are_classified_and_point_at_the_field() {
        let ct = Some("application/json; charset=utf-8");
        let e = parse_json::<Vec<Program>>(ct, br#"[{"title":"a"},{"title":"b","start":"x"}]"#)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert!(
            e.message()
                .starts_with("[1].start: \"x\" is not an ISO-8601 time"),
            "{}",
            e.message()
        );
        let e = parse_json::<Vec<Program>>(ct, b"[{").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadRequest);
        let e = parse_json::<Vec<Program>>(Some("text/plain"), b"[]").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsupportedMediaType);
        let e = parse_json::<Vec<Program>>(ct, br#"[{"titel":"a"}]"#).unwrap_err();
        assert!(
            e.message().starts_with("[0].titel: unknown field `titel`"),
            "{}",
            e.message()
        );
    }
}
