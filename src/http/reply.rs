//! Turning results into HTTP responses: JSON bodies, JSON errors (the one place an
//! [`Error`] becomes a status and a body), typed byte bodies. Handlers return
//! `Result<Response, Error>`; routing and auth answers are built here too.

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

/// 401: no valid token.
pub fn unauthorized() -> Response {
    error(&Error::new(
        ErrorKind::Unauthorized,
        "a valid token is required: send Authorization: Bearer <token>, X-Amps-Token: <token> or ?token=<token>",
    ))
}

/// 429: too many failed token checks from this address, with `Retry-After`.
pub fn blocked(secs: u64) -> Response {
    let mut resp = error(&Error::new(
        ErrorKind::TooManyRequests,
        format!("too many failed token checks from this address; try again in {secs} s"),
    ));
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// 405: a known route, another method.
pub fn method_not_allowed() -> Response {
    json(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({"error": "method_not_allowed", "detail": "this route does not accept that method"}),
    )
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
