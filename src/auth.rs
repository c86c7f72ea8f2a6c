//! Tokens in requests: where a request may carry one, dashboard sessions, brute-force
//! limits, and how tokens and credentials are kept out of logs. The tokens themselves and
//! their constant-time comparison are in the `tokens` module; the HTTP filter that applies
//! them lives in `http`.
//!
//! Accepted carriers: `Authorization: Bearer <t>`, `X-Amps-Token: <t>`, `?token=<t>`.

use sha2::{Digest, Sha256};

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// The token a request carries, from (in order) the `Authorization: Bearer` header, the
/// `X-Amps-Token` header, or the `token` query parameter.
pub fn presented<'a>(
    authorization: Option<&'a str>,
    x_amps_token: Option<&'a str>,
    query: Option<&'a str>,
) -> Option<String> {
    if let Some(a) = authorization {
        let a = a.trim();
        if a.len() > 7 && a[..7].eq_ignore_ascii_case("bearer ") {
            return Some(a[7..].trim().to_owned());
        }
    }
    if let Some(t) = x_amps_token {
        return Some(t.trim().to_owned());
    }
    query.and_then(query_token)
}

/// The name of the dashboard's session cookie.
pub const SESSION_COOKIE: &str = "amps_session";

/// One login session: when it ends and the name of the token it logged in with.
#[derive(Debug, Clone)]
struct Session {
    expires: std::time::Instant,
    name: std::sync::Arc<str>,
}

/// The dashboard's login sessions: random values handed out as cookies, kept here only
/// as SHA-256 digests with an expiry. Logging out ends one; a restart ends them all.
#[derive(Debug)]
pub struct Sessions {
    map: std::sync::Mutex<std::collections::HashMap<[u8; 32], Session>>,
    ttl: std::time::Duration,
    max: usize,
}

impl Sessions {
    pub fn new(ttl: std::time::Duration, max: usize) -> Sessions {
        Sessions {
            map: Default::default(),
            ttl,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session's cookie value (64 hex digits from the kernel's random source) for
    /// the token named `name`, or None if there is no randomness to be had. When full,
    /// the oldest session ends.
    pub fn create(&self, name: &str) -> Option<String> {
        let value = random_hex(32)?;
        let now = std::time::Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= self.max {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            digest(&value),
            Session {
                expires: now + self.ttl,
                name: name.into(),
            },
        );
        Some(value)
    }

    /// The token name of the live session `cookie`, if it is one.
    pub fn valid(&self, cookie: &str) -> Option<std::sync::Arc<str>> {
        let now = std::time::Instant::now();
        self.lock()
            .get(&digest(cookie))
            .filter(|s| s.expires > now)
            .map(|s| s.name.clone())
    }

    /// Ends the session `cookie` (logout).
    pub fn end(&self, cookie: &str) {
        self.lock().remove(&digest(cookie));
    }
}

/// `bytes` bytes from the kernel's random source as hex digits (None if it fails).
pub fn random_hex(bytes: usize) -> Option<String> {
    let mut raw = vec![0u8; bytes];
    // SAFETY: getrandom writes at most `raw.len()` bytes into `raw`.
    let n = unsafe { libc::getrandom(raw.as_mut_ptr().cast(), raw.len(), 0) };
    if n != raw.len() as isize {
        return None;
    }
    Some(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// The value of cookie `name` in a `Cookie` header.
/// The value a page of this server puts in its forms for session `cookie` (`?csrf=`):
/// another site can send the cookie but cannot know this.
pub fn csrf_of(cookie: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("amps-csrf\0{cookie}").as_bytes());
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// The decoded value of the first `token=` query parameter.
pub fn query_token(query: &str) -> Option<String> {
    query_param(query, "token")
}

/// The decoded value of the first `key=` parameter of a query string or a form body
/// (`application/x-www-form-urlencoded`: `+` is a space).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// A query string fit for logs: the value of every `token` parameter replaced by `***`.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("token") => format!("{k}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Everything but RFC 3986's unreserved characters is escaped in query values.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a token for use in a URL query value or a path segment (only
/// unreserved characters stay as they are).
pub fn encode_for_query(token: &str) -> String {
    percent_encoding::utf8_percent_encode(token, QUERY_VALUE).to_string()
}

/// The `?token=<t>` query that carries `token` in a URL ("" without a token).
pub fn token_query(token: Option<&str>) -> String {
    token
        .map(|t| format!("?token={}", encode_for_query(t)))
        .unwrap_or_default()
}

/// Providers' account secrets (usernames, passwords) that may appear as path segments of
/// their stream URLs (`/live/<user>/<pass>/1.ts`): [`redact_source`] hides them.
static SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Remembers a provider secret for redaction (empty strings are ignored).
pub fn remember_secret(secret: &str) {
    let secret = secret.trim();
    if secret.is_empty() {
        return;
    }
    let mut v = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    if !v.iter().any(|s| s == secret) {
        v.push(secret.to_owned());
    }
}

/// Every `scheme://...` in a line of text (a libav log line) redacted as a source.
pub fn redact_text(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains("://") {
        return line.into();
    }
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.'))
            .map_or(0, |p| p + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
            .map_or(rest.len(), |e| i + e);
        out.push_str(&rest[..start]);
        out.push_str(&redact_source(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out.into()
}

/// A source URL fit for status and logs: credentials, query strings and remembered
/// provider secrets removed.
pub fn redact_source(source: &str) -> String {
    let mut s = source.to_owned();
    let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    if !secrets.is_empty() && s.contains("://") {
        let decoded = |seg: &str| {
            percent_encoding::percent_decode_str(seg)
                .decode_utf8_lossy()
                .into_owned()
        };
        let path_end = s.find('?').unwrap_or(s.len());
        let (path, tail) = s.split_at(path_end);
        let scheme_end = path.find("://").map_or(0, |i| i + 3);
        let (head, segs) = path.split_at(scheme_end);
        let segs: Vec<String> = segs
            .split('/')
            .enumerate()
            .map(|(i, seg)| {
                let d = decoded(seg);
                let base = d.split('.').next().unwrap_or(&d).to_owned();
                if i > 0 && secrets.iter().any(|x| *x == d || *x == base) {
                    "***".to_owned()
                } else {
                    seg.to_owned()
                }
            })
            .collect();
        s = format!("{head}{}{tail}", segs.join("/"));
    }
    drop(secrets);
    if let Some(q) = s.find('?') {
        s.truncate(q);
        s.push_str("?…");
    }
    if let Some(scheme_end) = s.find("://") {
        let rest = &s[scheme_end + 3..];
        if let Some(at) = rest.find('@').filter(|at| rest[..*at].find('/').is_none()) {
            s = format!("{}://***@{}", &s[..scheme_end], &rest[at + 1..]);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn sessions_are_random_bounded_and_end_on_logout() {
        let s = Sessions::new(std::time::Duration::from_secs(60), 2);
        let a = s.create("admin").unwrap();
        let b = s.create("tv").unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(s.valid(&a).as_deref(), Some("admin"));
        assert_eq!(s.valid(&b).as_deref(), Some("tv"));
        assert!(s.valid("0000").is_none() && s.valid("").is_none());
        s.end(&a);
        assert!(s.valid(&a).is_none(), "logged out");
        let c = s.create("admin").unwrap();
        let d = s.create("admin").unwrap();
        assert!(s.valid(&b).is_none(), "the oldest goes when full");
        assert!(s.valid(&c).is_some() && s.valid(&d).is_some());
        let short = Sessions::new(std::time::Duration::ZERO, 10);
        let e = short.create("admin").unwrap();
        assert!(short.valid(&e).is_none(), "expired");
        assert_eq!(
            cookie("theme=dark; amps_session=abc; x=1", SESSION_COOKIE),
            Some("abc")
        );
        assert_eq!(cookie("amps_sessionx=1", SESSION_COOKIE), None);
    }

    use super::*;

    #[test]
    fn remembered_provider_secrets_are_hidden_in_paths_and_log_lines() {
        super::remember_secret("acct-user-77");
        super::remember_secret("s3cr%t");
        assert_eq!(
            redact_source("http://xc:8080/live/acct-user-77/s3cr%25t/101.ts"),
            "http://xc:8080/live/***/***/101.ts"
        );
        assert_eq!(
            redact_source("http://acct-user-77/a/b"),
            "http://acct-user-77/a/b",
            "a host is never a secret segment"
        );
        let line = "Opening 'http://p/acct-user-77/x/1.ts?token=abc' for reading";
        let r = super::redact_text(line);
        assert_eq!(r, "Opening 'http://p/***/x/1.ts?…' for reading");
        assert_eq!(super::redact_text("no url here"), "no url here");
    }

    #[test]
    fn source_redaction_hides_credentials_and_queries() {
        assert_eq!(
            redact_source("http://user:pw@host/x.ts?token=1"),
            "http://***@host/x.ts?…"
        );
        assert_eq!(redact_source("/media/a.ts"), "/media/a.ts");
    }

    use proptest::prelude::*;

    #[test]
    fn accepts_each_carrier_and_refuses_other_schemes() {
        let p = |a, x, q| presented(a, x, q);
        assert_eq!(
            p(Some("Bearer s3cret"), None, None).as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            p(Some("bearer  s3cret "), None, None).as_deref(),
            Some("s3cret")
        );
        assert_eq!(p(None, Some("s3cret"), None).as_deref(), Some("s3cret"));
        assert_eq!(
            p(None, None, Some("a=1&token=s3cret")).as_deref(),
            Some("s3cret")
        );
        assert_eq!(p(Some("Basic s3cret"), None, None), None);
        assert_eq!(p(None, None, None), None);
    }

    #[test]
    fn query_tokens_are_percent_decoded() {
        let t = "a b&c=d/é";
        let q = format!("x=1&token={}", encode_for_query(t));
        assert_eq!(query_token(&q).as_deref(), Some(t));
    }

    #[test]
    fn redaction_hides_every_token_parameter() {
        assert_eq!(
            redact_query("a=1&token=abc&TOKEN=x&b=2"),
            "a=1&token=***&TOKEN=***&b=2"
        );
        assert_eq!(redact_query("tokenish=1"), "tokenish=1");
    }

    proptest! {
        #[test]
        fn redacted_queries_never_contain_the_token(t in "[a-zA-Z0-9]{8,20}", pre in "[a-z]{0,5}") {
            let q = format!("{pre}=1&token={t}&x=2");
            prop_assert!(!redact_query(&q).contains(&t));
        }
    }
}

/// Counts failed token checks per client address and refuses an address that failed too
/// often (a token guessed by brute force). Memory is bounded: at most [`MAX_TRACKED`]
/// addresses are tracked; expired entries are dropped first.
#[derive(Debug)]
pub struct FailureLimiter {
    limit: u32,
    window: std::time::Duration,
    entries: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: std::time::Instant,
    blocked_until: Option<std::time::Instant>,
    /// Blocks so far: each lasts twice as long as the one before (at most a day).
    strikes: u32,
}

/// The longest block.
pub const MAX_BLOCK: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Addresses tracked at most (an attacker cycling addresses cannot grow memory).
pub const MAX_TRACKED: usize = 10_000;

impl FailureLimiter {
    /// `limit` failures within `window` block the address for `window`, the next block
    /// for twice that, and so on up to [`MAX_BLOCK`]; `limit` 0 turns it off.
    pub fn new(limit: u32, window: std::time::Duration) -> FailureLimiter {
        FailureLimiter {
            limit,
            window,
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, Failures>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key an address is counted under: IPv6 by its /64 (one subscriber's network
    /// holds 2^64 addresses), IPv4 as is.
    fn key(ip: std::net::IpAddr) -> std::net::IpAddr {
        match ip {
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => std::net::IpAddr::V4(v4),
                None => std::net::IpAddr::V6(std::net::Ipv6Addr::from(
                    u128::from(v6) & !((1u128 << 64) - 1),
                )),
            },
            v4 => v4,
        }
    }

    /// Seconds `ip` must still wait, if it is blocked at `now`.
    pub fn blocked(&self, ip: std::net::IpAddr, now: std::time::Instant) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        let ip = Self::key(ip);
        let until = self.lock().get(&ip)?.blocked_until?;
        until
            .checked_duration_since(now)
            .map(|d| d.as_secs().max(1))
    }

    /// Records a failure; returns true when this one blocks the address.
    pub fn failed(&self, ip: std::net::IpAddr, now: std::time::Instant) -> bool {
        if self.limit == 0 {
            return false;
        }
        let ip = Self::key(ip);
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            let window = self.window;
            map.retain(|_, f| {
                f.blocked_until.is_some_and(|u| u > now) || now.duration_since(f.first) < window
            });
            if map.len() >= MAX_TRACKED {
                // Still full: forget counting addresses, keep every active block.
                map.retain(|_, f| f.blocked_until.is_some_and(|u| u > now));
            }
            if map.len() >= MAX_TRACKED {
                // Full of blocked addresses: this one is not tracked until some expire.
                return false;
            }
        }
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            first: now,
            blocked_until: None,
            strikes: 0,
        });
        if now.duration_since(f.first) >= self.window && f.blocked_until.is_none_or(|u| u <= now) {
            *f = Failures {
                count: 0,
                first: now,
                blocked_until: None,
                strikes: f.strikes,
            };
        }
        f.count += 1;
        if f.count >= self.limit && f.blocked_until.is_none_or(|u| u <= now) {
            let factor = 1u32 << f.strikes.min(16);
            f.blocked_until = Some(now + self.window.saturating_mul(factor).min(MAX_BLOCK));
            f.strikes += 1;
            f.count = 0;
            f.first = now;
            return true;
        }
        false
    }

    /// A success forgets the address's earlier failures (not an active block).
    pub fn succeeded(&self, ip: std::net::IpAddr) {
        if self.limit == 0 {
            return;
        }
        let ip = Self::key(ip);
        let mut map = self.lock();
        if map.get(&ip).is_some_and(|f| f.blocked_until.is_none()) {
            map.remove(&ip);
        }
    }
}

#[cfg(test)]
mod limiter_tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    #[test]
    fn blocks_after_the_limit_for_the_window_then_forgets() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Instant::now();
        assert!(!l.failed(a, t));
        assert!(!l.failed(a, t + Duration::from_secs(1)));
        assert_eq!(l.blocked(a, t), None);
        assert!(
            l.failed(a, t + Duration::from_secs(2)),
            "the third failure blocks"
        );
        assert_eq!(l.blocked(a, t + Duration::from_secs(3)), Some(59));
        assert_eq!(
            l.blocked(b, t + Duration::from_secs(3)),
            None,
            "per address"
        );
        // A success does not lift an active block.
        l.succeeded(a);
        assert!(l.blocked(a, t + Duration::from_secs(30)).is_some());
        assert_eq!(
            l.blocked(a, t + Duration::from_secs(63)),
            None,
            "the block ends"
        );
        // The next block lasts twice as long, the one after four times.
        let t2 = t + Duration::from_secs(63);
        for i in 0..3 {
            l.failed(a, t2 + Duration::from_secs(i));
        }
        assert_eq!(l.blocked(a, t2 + Duration::from_secs(3)), Some(119));
        let t3 = t2 + Duration::from_secs(125);
        for i in 0..3 {
            l.failed(a, t3 + Duration::from_secs(i));
        }
        assert_eq!(l.blocked(a, t3 + Duration::from_secs(2)), Some(240));
        // Failures spread wider than the window never block.
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        for i in 0..10 {
            assert!(!l.failed(c, t + Duration::from_secs(61 * i)));
        }
        // A success forgets earlier failures.
        let d: IpAddr = "192.0.2.4".parse().unwrap();
        l.failed(d, t);
        l.failed(d, t);
        l.succeeded(d);
        assert!(!l.failed(d, t));
        // Off.
        let off = FailureLimiter::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            assert!(!off.failed(a, t));
        }
        assert_eq!(off.blocked(a, t), None);
    }

    #[test]
    fn an_ipv6_network_counts_as_one_address() {
        let l = FailureLimiter::new(3, Duration::from_secs(60));
        let t = Instant::now();
        for host in 1..=3u16 {
            let ip: IpAddr = format!("2001:db8:1:2::{host:x}").parse().unwrap();
            l.failed(ip, t);
        }
        let other_host: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(
            l.blocked(other_host, t).is_some(),
            "the whole /64 is blocked"
        );
        let other_net: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(l.blocked(other_net, t), None);
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let l = FailureLimiter::new(5, Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 5_000) {
            l.failed(IpAddr::from(i.to_be_bytes()), t);
        }
        assert!(l.lock().len() <= MAX_TRACKED);
    }
}
