//! Who the client really is, behind reverse proxies. Only a connection from an address in
//! `server.trusted_proxies` may tell us the client's address, scheme and host (RFC 7239
//! `Forwarded`, else `X-Forwarded-For` / `-Proto` / `-Host`); from anyone else those
//! headers are ignored. In a chain the client is the right-most address that is not a
//! trusted proxy (each proxy appends the address it saw, so everything left of an
//! untrusted hop may be forged).

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use warp::http::HeaderMap;

/// The client of one request, as the handlers, limits, logs and metrics see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// The TCP peer (a proxy, or the client itself).
    pub peer: SocketAddr,
    /// The client's address (the peer's unless a trusted proxy said otherwise).
    pub ip: IpAddr,
    /// Whether a trusted proxy forwarded the request.
    pub proxied: bool,
    /// `https` or `http`, as the client used it.
    pub scheme: &'static str,
    /// The host the client asked for (the forwarded host through a proxy, else `Host`).
    pub host: Option<String>,
}

/// The parsed `server.trusted_proxies`.
#[derive(Clone, Debug, Default)]
pub struct Trusted(Vec<IpNet>);

/// Most forwarded hops looked at (a longer header is cut, not walked).
const MAX_HOPS: usize = 32;

impl Trusted {
    /// From the validated config strings (an entry that does not parse is skipped; the
    /// validator refuses such files).
    pub fn new(entries: &[String]) -> Trusted {
        Trusted(
            entries
                .iter()
                .filter_map(|e| crate::config::validate::parse_net(e))
                .collect(),
        )
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client behind `peer`, from the request's headers when `peer` is trusted.
    pub fn resolve(&self, peer: SocketAddr, tls: bool, headers: &HeaderMap) -> Client {
        let own = Client {
            peer,
            ip: canonical(peer.ip()),
            proxied: false,
            scheme: if tls { "https" } else { "http" },
            host: header(headers, "host").map(str::to_owned),
        };
        if !self.contains(peer.ip()) {
            return own;
        }
        let fwd = forwarded(headers);
        let chain: Vec<Option<IpAddr>> = if fwd.is_empty() {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|s| parse_node(s.trim()))
                .collect()
        } else {
            fwd.iter()
                .map(|e| e.for_.as_deref().and_then(parse_node))
                .collect()
        };
        if chain.is_empty() {
            // A trusted peer that forwards nothing is itself the client.
            return own;
        }
        // From the right: skip the trusted proxies' hops; the first other address is the
        // client. A hop that is not an address (`unknown`, junk) ends the walk: the client
        // is then the last trusted hop seen, still counted as proxied (never exempt).
        let mut ip = canonical(peer.ip());
        for hop in chain.iter().rev().take(MAX_HOPS) {
            match hop {
                Some(h) if self.contains(*h) => ip = canonical(*h),
                Some(h) => {
                    ip = canonical(*h);
                    break;
                }
                None => break,
            }
        }
        let last = fwd.last();
        let proto = last
            .and_then(|e| e.proto.clone())
            .or_else(|| last_value(headers, "x-forwarded-proto"));
        let host = last
            .and_then(|e| e.host.clone())
            .or_else(|| last_value(headers, "x-forwarded-host"));
        Client {
            peer,
            ip,
            proxied: true,
            scheme: match proto.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("https") => "https",
                Some("http") => "http",
                _ => own.scheme,
            },
            host: host.filter(|h| plain_host(h)).or(own.host),
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (a dual-stack socket reports IPv4 clients so).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The last comma-separated value of a header (the one the nearest proxy set).
fn last_value(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())
        .map(str::to_owned)
}

/// A host[:port] fit for building URLs.
pub fn plain_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

/// One element of RFC 7239 `Forwarded`.
#[derive(Debug, Default, PartialEq)]
struct Element {
    for_: Option<String>,
    proto: Option<String>,
    host: Option<String>,
}

/// Every element of every `Forwarded` header, in order.
fn forwarded(h: &HeaderMap) -> Vec<Element> {
    let mut out = Vec::new();
    for v in h
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for elem in split_outside_quotes(v, ',') {
            let mut e = Element::default();
            for pair in split_outside_quotes(&elem, ';') {
                let Some((k, val)) = pair.split_once('=') else {
                    continue;
                };
                let val = val.trim().trim_matches('"').to_owned();
                match k.trim().to_ascii_lowercase().as_str() {
                    "for" => e.for_ = Some(val),
                    "proto" => e.proto = Some(val),
                    "host" => e.host = Some(val),
                    _ => {}
                }
            }
            out.push(e);
            if out.len() > MAX_HOPS * 2 {
                return out;
            }
        }
    }
    out
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in s.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == sep && !quoted {
            out.push(String::new());
        } else if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

/// A forwarded node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`, `2001:db8::1`.
/// Obfuscated (`_hidden`) and `unknown` nodes are not addresses: None.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = s.strip_prefix('[')?;
    inner.split_once(']')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn trusted() -> Trusted {
        Trusted::new(&["127.0.0.1".into(), "10.0.0.0/8".into(), "::1".into()])
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_trusted_proxy_names_the_client_scheme_and_host() {
        let h = headers(&[
            ("host", "127.0.0.1:5000"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "tv.example.org"),
        ]);
        let c = trusted().resolve(peer("127.0.0.1:40000"), false, &h);
        assert_eq!(c.ip, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert!(c.proxied);
        assert_eq!(c.scheme, "https");
        assert_eq!(c.host.as_deref(), Some("tv.example.org"));
    }

    #[test]
    fn headers_from_anyone_else_change_nothing() {
        let h = headers(&[
            ("host", "nas:5000"),
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=198.51.100.2;proto=https"),
        ]);
        let c = trusted().resolve(peer("192.0.2.9:5555"), false, &h);
        assert_eq!(c.ip, "192.0.2.9".parse::<IpAddr>().unwrap());
        assert!(!c.proxied);
        assert_eq!((c.scheme, c.host.as_deref()), ("http", Some("nas:5000")));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        // A client forging "1.1.1.1" in front: nginx appends the real address.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.1.2.3")]);
        let c = trusted().resolve(peer("127.0.0.1:1"), false, &h);
        assert_eq!(c.ip, "203.0.113.7".parse::<IpAddr>().unwrap());
        // Several headers are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.8"),
        ]);
        let c = trusted().resolve(peer("127.0.0.1:1"), false, &h);
        assert_eq!(c.ip, "203.0.113.8".parse::<IpAddr>().unwrap());
        // Only trusted hops: the left-most is the client.
        let h = headers(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]);
        let c = trusted().resolve(peer("127.0.0.1:1"), false, &h);
        assert_eq!(c.ip, "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn rfc7239_forwarded_is_read_with_ports_quotes_and_ipv6() {
        let h = headers(&[(
            "forwarded",
            r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711";proto=https;host="tv.example.org:8443""#,
        )]);
        let c = trusted().resolve(peer("[::1]:9"), false, &h);
        assert_eq!(c.ip, "2001:db8:cafe::17".parse::<IpAddr>().unwrap());
        assert_eq!(c.scheme, "https");
        assert_eq!(c.host.as_deref(), Some("tv.example.org:8443"));
        // Forwarded wins over X-Forwarded-For.
        let h = headers(&[
            ("forwarded", "for=192.0.2.61"),
            ("x-forwarded-for", "192.0.2.62"),
        ]);
        let c = trusted().resolve(peer("127.0.0.1:9"), true, &h);
        assert_eq!(c.ip, "192.0.2.61".parse::<IpAddr>().unwrap());
        assert_eq!(
            c.scheme, "https",
            "the connection's own scheme without proto"
        );
    }

    #[test]
    fn unreadable_or_hostile_values_fall_back_to_the_peer() {
        let t = trusted();
        for bad in ["unknown", "_hidden", "not an ip", "junk, 10.0.0.9"] {
            let c = t.resolve(
                peer("127.0.0.1:2"),
                false,
                &headers(&[("x-forwarded-for", bad)]),
            );
            assert!(
                c.proxied,
                "{bad}: counted as proxied, never loopback-exempt"
            );
            assert!(
                c.ip.is_loopback() || c.ip == "10.0.0.9".parse::<IpAddr>().unwrap(),
                "{bad}"
            );
        }
        // Junk the client put in front of its own address does not hide it.
        let c = t.resolve(
            peer("127.0.0.1:2"),
            false,
            &headers(&[("x-forwarded-for", "junk, 203.0.113.9")]),
        );
        assert_eq!(c.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        // No forwarding header from a trusted peer: the peer is the client.
        let c = t.resolve(peer("127.0.0.1:2"), false, &HeaderMap::new());
        assert!(!c.proxied && c.ip.is_loopback());
        // A host that could break a URL is not used.
        let h = headers(&[
            ("host", "ok:1"),
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-host", "evil\"/><script>"),
        ]);
        assert_eq!(
            t.resolve(peer("127.0.0.1:2"), false, &h).host.as_deref(),
            Some("ok:1")
        );
        // A mapped IPv4 peer counts as its IPv4 address.
        let c = t.resolve(
            peer("[::ffff:127.0.0.1]:3"),
            false,
            &headers(&[("x-forwarded-for", "203.0.113.2")]),
        );
        assert_eq!(c.ip, "203.0.113.2".parse::<IpAddr>().unwrap());
        // A very long chain is cut, not walked.
        let long = vec!["10.0.0.1"; 5000].join(",");
        let c = t.resolve(
            peer("127.0.0.1:2"),
            false,
            &headers(&[("x-forwarded-for", &long)]),
        );
        assert!(c.proxied);
    }
}
