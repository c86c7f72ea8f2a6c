//! The shared token: where a request may carry it, how it is compared, and how it is kept
//! out of logs. Pure functions; the HTTP filter that applies them lives in [`crate::http`].
//!
//! Accepted carriers: `Authorization: Bearer <t>`, `X-Amps-Token: <t>`, `?token=<t>`.
//! Comparison hashes both sides to fixed-length digests and compares those in constant time,
//! so neither the content nor the length of the token leaks through timing.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured token (or none: open access, allowed on loopback only).
#[derive(Clone)]
pub struct TokenCheck {
    digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.digest.is_some() {
            "TokenCheck(<redacted>)"
        } else {
            "TokenCheck(open)"
        })
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl TokenCheck {
    pub fn new(token: Option<&str>) -> Self {
        TokenCheck {
            digest: token.map(digest),
        }
    }

    /// Whether any token is required.
    pub fn required(&self) -> bool {
        self.digest.is_some()
    }

    /// True if `presented` grants access.
    pub fn allows(&self, presented: Option<&str>) -> bool {
        match (&self.digest, presented) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(want), Some(got)) => bool::from(want.ct_eq(&digest(got))),
        }
    }
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

/// The dashboard's login sessions: random values handed out as cookies, kept here only
/// as SHA-256 digests with an expiry. Logging out ends one; a restart ends them all.
#[derive(Debug)]
pub struct Sessions {
    map: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>,
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

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], std::time::Instant>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session's cookie value (64 hex digits from the kernel's random source), or
    /// None if there is no randomness to be had. When full, the oldest session ends.
    pub fn create(&self) -> Option<String> {
        let mut raw = [0u8; 32];
        // SAFETY: getrandom writes at most `raw.len()` bytes into `raw`.
        let n = unsafe { libc::getrandom(raw.as_mut_ptr().cast(), raw.len(), 0) };
        if n != raw.len() as isize {
            return None;
        }
        let value: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = std::time::Instant::now();
        let mut map = self.lock();
        map.retain(|_, exp| *exp > now);
        if map.len() >= self.max {
            if let Some(oldest) = map.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(digest(&value), now + self.ttl);
        Some(value)
    }

    /// Whether `cookie` is a live session.
    pub fn valid(&self, cookie: &str) -> bool {
        let now = std::time::Instant::now();
        self.lock()
            .get(&digest(cookie))
            .is_some_and(|exp| *exp > now)
    }

    /// Ends the session `cookie` (logout).
    pub fn end(&self, cookie: &str) {
        self.lock().remove(&digest(cookie));
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// The decoded value of the first `token=` query parameter.
pub fn query_token(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == "token").then(|| {
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

/// A source URL fit for status and logs: credentials and query strings removed.
pub fn redact_source(source: &str) -> String {
    let mut s = source.to_owned();
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
        let a = s.create().unwrap();
        let b = s.create().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(s.valid(&a) && s.valid(&b));
        assert!(!s.valid("0000") && !s.valid(""));
        s.end(&a);
        assert!(!s.valid(&a), "logged out");
        let c = s.create().unwrap();
        let d = s.create().unwrap();
        assert!(!s.valid(&b), "the oldest goes when full");
        assert!(s.valid(&c) && s.valid(&d));
        let short = Sessions::new(std::time::Duration::ZERO, 10);
        let e = short.create().unwrap();
        assert!(!short.valid(&e), "expired");
        assert_eq!(
            cookie("theme=dark; amps_session=abc; x=1", SESSION_COOKIE),
            Some("abc")
        );
        assert_eq!(cookie("amps_sessionx=1", SESSION_COOKIE), None);
    }

    use super::*;

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
    fn accepts_each_carrier_and_refuses_wrong_or_missing() {
        let c = TokenCheck::new(Some("s3cret"));
        assert!(c.allows(presented(Some("Bearer s3cret"), None, None).as_deref()));
        assert!(c.allows(presented(Some("bearer  s3cret "), None, None).as_deref()));
        assert!(c.allows(presented(None, Some("s3cret"), None).as_deref()));
        assert!(c.allows(presented(None, None, Some("a=1&token=s3cret")).as_deref()));
        assert!(!c.allows(presented(None, None, Some("token=s3cre")).as_deref()));
        assert!(!c.allows(presented(Some("Basic s3cret"), None, None).as_deref()));
        assert!(!c.allows(None));
        assert!(TokenCheck::new(None).allows(None));
    }

    #[test]
    fn query_tokens_are_percent_decoded() {
        let t = "a b&c=d/é";
        let q = format!("x=1&token={}", encode_for_query(t));
        assert_eq!(query_token(&q).as_deref(), Some(t));
        assert!(TokenCheck::new(Some(t)).allows(query_token(&q).as_deref()));
    }

    #[test]
    fn redaction_hides_every_token_parameter() {
        assert_eq!(
            redact_query("a=1&token=abc&TOKEN=x&b=2"),
            "a=1&token=***&TOKEN=***&b=2"
        );
        assert_eq!(redact_query("tokenish=1"), "tokenish=1");
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let s = format!("{:?}", TokenCheck::new(Some("s3cret")));
        assert!(!s.contains("s3cret"));
    }

    proptest! {
        #[test]
        fn only_the_exact_token_is_accepted(t in "[ -~]{1,40}", u in "[ -~]{0,40}") {
            let c = TokenCheck::new(Some(&t));
            prop_assert!(c.allows(Some(&t)));
            prop_assert_eq!(c.allows(Some(&u)), u == t);
        }

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
}

/// Addresses tracked at most (an attacker cycling addresses cannot grow memory).
pub const MAX_TRACKED: usize = 10_000;

impl FailureLimiter {
    /// `limit` failures within `window` block the address for `window`; 0 turns it off.
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
        });
        if now.duration_since(f.first) >= self.window && f.blocked_until.is_none_or(|u| u <= now) {
            *f = Failures {
                count: 0,
                first: now,
                blocked_until: None,
            };
        }
        f.count += 1;
        if f.count >= self.limit && f.blocked_until.is_none_or(|u| u <= now) {
            f.blocked_until = Some(now + self.window);
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
