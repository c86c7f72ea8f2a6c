//! The page kit of the dashboard and the login form: the document head, the strict
//! Content-Security-Policy and the security headers every HTML response carries.

use crate::epg::escape;
use std::fmt::Write;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

pub const STYLE: &str = include_str!("../../assets/ui/style.css");

pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
media-src 'self' blob:; connect-src 'self'; worker-src 'self' blob:; form-action 'self'; \
frame-ancestors 'none'; base-uri 'none'";

pub fn html(status: StatusCode, body: String) -> Response {
    html_with(status, body, HeaderValue::from_static(CSP))
}

pub fn html_with(status: StatusCode, body: String, csp: HeaderValue) -> Response {
    let mut resp = warp::reply::with_status(body, status).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

pub fn head(title: &str, scripts: &[&str]) -> String {
    head_with(
        title,
        scripts,
        "<link rel=\"stylesheet\" href=\"/ui/style.css\">",
    )
}

pub fn head_with(title: &str, scripts: &[&str], style: &str) -> String {
    // `data:,` as the icon: browsers ask for no /favicon.ico.
    let mut s = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<link rel=\"icon\" href=\"data:,\">\n{style}\n",
        escape(title)
    );
    for js in scripts {
        let _ = writeln!(s, "<script src=\"/ui/{js}\" defer></script>");
    }
    s.push_str("</head>\n");
    s
}
