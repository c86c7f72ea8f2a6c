//! `GET /login`, `POST /login`, `POST /logout`: a form that trades the token for a session
//! cookie (`HttpOnly`, `SameSite=Strict`, a random session id kept by
//! [`crate::auth::Sessions`], never the token). Failed attempts count towards the
//! address's block like any wrong token.

use super::html::{head_with, html_with, CSP, STYLE};
use super::proxy::Client;
use super::reply;
use super::state::AppState;
use crate::epg::escape;
use crate::error::Error;
use crate::tokens::Found;
use std::fmt::Write;
use std::time::Instant;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

/// The login page's policy: as [`CSP`], but its style sheet is inline (the page is served
/// without a session, and `/ui/` needs one), allowed by its hash only.
fn login_csp() -> &'static HeaderValue {
    static V: std::sync::OnceLock<HeaderValue> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE));
        let csp = CSP.replace("style-src 'self'", &format!("style-src 'sha256-{hash}'"));
        HeaderValue::from_str(&csp).expect("a valid header")
    })
}

/// The login form, with an error line when a token was refused.
pub fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let mut s = head_with("Amps: log in", &[], &format!("<style>{STYLE}</style>"));
    s.push_str("<body class=\"login\">\n<main>\n<h1>Amps</h1>\n");
    if let Some(e) = error {
        let _ = writeln!(s, "<p class=\"error\" role=\"alert\">{}</p>", escape(e));
    }
    s.push_str(
        "<form method=\"post\" action=\"/login\">\n<input name=\"username\" type=\"hidden\" value=\"amps\" autocomplete=\"username\">\n<label for=\"token\">Token</label>\n<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\n<button type=\"submit\">Log in</button>\n</form>\n<p class=\"hint\">The token is <code>server.auth_token</code> in config.yaml (or <code>AMPS_TOKEN</code>).</p>\n</main>\n</body>\n</html>\n",
    );
    html_with(status, s, login_csp().clone())
}

fn redirect(to: &'static str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    resp
}

/// The session cookie; `Secure` when the client reached Amps over HTTPS (directly, or
/// through a trusted proxy that says so) or the public URL is HTTPS.
fn cookie(state: &AppState, client: Option<&Client>, value: &str, max_age: u64) -> HeaderValue {
    let secure = client.is_some_and(|c| c.scheme == "https")
        || state
            .server
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
    let v = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        crate::auth::SESSION_COOKIE,
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(""))
}

/// `GET /login`: the form, or straight to the dashboard when no token is configured.
pub fn login_form(state: &AppState) -> Response {
    if !state.tokens.required() {
        return redirect("/");
    }
    login_page(StatusCode::OK, None)
}

/// `POST /login` with a form body `token=...`: sets the session cookie and goes to the
/// dashboard. Failed attempts count towards the address's block like any wrong token.
pub fn login(state: &AppState, body: &[u8], client: Option<&Client>) -> Response {
    let ip = state.limited_ip(client);
    let now = Instant::now();
    if let Some(secs) = ip.and_then(|ip| state.auth_limiter.blocked(ip, now)) {
        state.metrics.auth_blocked.inc();
        let mut resp = login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many wrong tokens from this address; try again in {secs} s."
            )),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let form = String::from_utf8_lossy(body);
    let token = crate::auth::query_token(form.trim());
    if !state.tokens.required() {
        return redirect("/");
    }
    if let Found::Valid(who) = state.tokens.find(token.as_deref(), state.clock.now()) {
        if let Some(ip) = ip {
            state.auth_limiter.succeeded(ip);
        }
        let Some(value) = state
            .sessions
            .create(&crate::tokens::Tokens::session_key(&who))
        else {
            return reply::error(&Error::new(
                crate::error::ErrorKind::Internal,
                "no random numbers for a session (getrandom failed)",
            ));
        };
        let mut resp = redirect("/");
        resp.headers_mut().insert(
            header::SET_COOKIE,
            cookie(state, client, &value, 30 * 24 * 3600),
        );
        return resp;
    }
    state.metrics.auth_failures.inc();
    if let Some(ip) = ip {
        if state.auth_limiter.failed(ip, now) {
            tracing::warn!(client = %ip, "too many failed logins; refusing this address for a while");
        }
    }
    login_page(StatusCode::UNAUTHORIZED, Some("That token is not right."))
}

/// `POST /logout`: ends the session and clears its cookie.
pub fn logout(state: &AppState, cookies: Option<&str>, client: Option<&Client>) -> Response {
    if let Some(v) = cookies.and_then(|h| crate::auth::cookie(h, crate::auth::SESSION_COOKIE)) {
        state.sessions.end(v);
    }
    let mut resp = redirect("/login");
    resp.headers_mut()
        .insert(header::SET_COOKIE, cookie(state, client, "", 0));
    resp
}
