//! docs/REMOTE.md, run for real: HTTPS in Amps with a certificate the test makes (checked
//! with curl --cacert and ffprobe), renewal without restart, the HTTP redirect, nginx from
//! Debian in front terminating TLS with forwarded clients, named tokens with roles on
//! every route of the table, groups, stream limits, revocation and expiry.

mod common;

use amps::http::{Access, ROUTES};
use common::nginx::{documented_block, Nginx};
use common::{eventually, free_port, Server, Viewer, TOKEN};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TV: &str = "tv-token-0123456789abcdef";
const OPS: &str = "ops-token-0123456789abcdef";
const PHONE: &str = "phone-token-0123456789abcdef";

/// curl with `args`; returns (HTTP status, body, response headers).
fn curl(args: &[&str]) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "15",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-D",
        ])
        .arg(&headers)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        body.to_owned(),
        std::fs::read_to_string(headers).unwrap_or_default(),
    )
}

fn tokens_yaml() -> String {
    format!(
        "  tokens:\n    - {{name: tv, token: {TV}, role: viewer, groups: [Kids], max_streams: 1}}\n    - {{name: ops, token: {OPS}, role: admin}}\n"
    )
}

const STREAMS: &str = "ffmpeg_profiles:\n  light: {video_codec: mpeg2video, video_bitrate: 500k, audio_codec: mp2}\nstreams:\n  - {id: 1, name: Cartoons, group: Kids, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]', ffmpeg_profile: light}\n  - {id: 2, name: Late News, group: News, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine=f=660[out1]', ffmpeg_profile: light}\n";

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// ffprobe's codec names for a stream URL (empty when it cannot be read).
fn probe(url: &str, extra: &[&str]) -> Vec<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rw_timeout", "10000000"])
        .args(extra)
        .args(["-show_entries", "stream=codec_name", "-of", "json", url])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["codec_name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn https_serves_every_kind_of_route_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::certs::self_signed(dir.path(), "a");
    let redirect = free_port();
    let cfg = format!(
        "server:\n  auth_token: {TOKEN}\n  tls: {{cert_file: {:?}, key_file: {:?}}}\n  redirect_http_port: {redirect}\n{STREAMS}",
        cert.display(),
        key.display()
    );
    let s = Server::start(&cfg);
    let port = port_of(&s.addr);
    let base = format!("https://localhost:{port}");
    // The CA file the clients trust: a copy, as the served files are replaced below.
    let ca_a = dir.path().join("trusted-a.crt");
    std::fs::copy(&cert, &ca_a).unwrap();
    let ca = ca_a.display().to_string();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let get = |path: &str, ca: &str| {
        curl(&[
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            &format!("{base}{path}"),
        ])
    };

    assert_eq!(get("/health", &ca).0, 200);
    // The playlist's URLs are https, with the host the client used.
    let (status, body, _) = get(&format!("/playlist.m3u?token={TOKEN}"), &ca);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("{base}/stream/1?token={TOKEN}")),
        "{body}"
    );
    // A live stream and HLS over TLS, read by ffprobe verifying the certificate.
    let tls_args = ["-ca_file", ca.as_str(), "-tls_verify", "1"];
    let url = format!("https://127.0.0.1:{port}/stream/1?token={TOKEN}");
    assert_eq!(
        probe(&url, &tls_args),
        ["mpeg2video", "mp2"],
        "{}",
        s.logs()
    );
    let (status, pl, _) = get(&format!("/hls/1/index.m3u8?token={TOKEN}"), &ca);
    assert_eq!(status, 200);
    assert!(pl.starts_with("#EXTM3U"), "{pl}");
    // Plain HTTP on the TLS port is not served.
    let (status, _, _) = curl(&[&format!("http://127.0.0.1:{port}/health")]);
    assert_ne!(status, 200);
    // The redirect port sends players to HTTPS, without repeating the query.
    let (status, _, headers) = curl(&[&format!(
        "http://localhost:{redirect}/playlist.m3u?token={TOKEN}"
    )]);
    assert_eq!(status, 308);
    assert!(
        headers.contains(&format!(
            "location: https://localhost:{port}/playlist.m3u\r\n"
        )),
        "{headers}"
    );
    assert!(!headers.contains(TOKEN));

    // Renewal 1: new files, SIGHUP. The new certificate is served, the old CA fails.
    let (cert_b, key_b) = common::certs::self_signed(dir.path(), "b");
    std::fs::copy(&cert_b, &cert).unwrap();
    std::fs::copy(&key_b, &key).unwrap();
    let ca_b = cert_b.display().to_string();
    s.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || get("/health", &ca_b).0 == 200),
        "{}",
        s.logs()
    );
    assert_eq!(
        get("/health", &ca).0,
        0,
        "the old certificate is no longer served"
    );
    // Renewal 2: new files only; the watcher picks them up within its interval.
    let (cert_c, key_c) = common::certs::self_signed(dir.path(), "c");
    std::fs::copy(&key_c, &key).unwrap();
    std::fs::copy(&cert_c, &cert).unwrap();
    let ca_c = cert_c.display().to_string();
    let t0 = Instant::now();
    assert!(
        eventually(Duration::from_secs(25), || get("/health", &ca_c).0 == 200),
        "{}",
        s.logs()
    );
    assert_eq!(
        get("/health", &ca_b).0,
        0,
        "the replaced certificate is gone"
    );
    eprintln!("renewal seen after {:?}", t0.elapsed());
    // A broken renewal keeps the certificate in force.
    std::fs::write(&cert, "not a certificate").unwrap();
    s.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || s
        .logs()
        .contains("keeping the old one")));
    assert_eq!(get("/health", &ca_c).0, 200);
}

#[test]
fn a_missing_or_mismatched_key_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = common::certs::self_signed(dir.path(), "a");
    let (_, other_key) = common::certs::self_signed(dir.path(), "b");
    let run = |cert: &Path, key: &Path| {
        let cfg = dir.path().join("c.yaml");
        std::fs::write(
            &cfg,
            format!(
                "server:\n  auth_token: {TOKEN}\n  tls: {{cert_file: {:?}, key_file: {:?}}}\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_amps"))
            .args(["serve", "--port", "0", "--config"])
            .arg(&cfg)
            .env_remove("AMPS_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&cert, &other_key);
    assert_ne!(code, Some(0));
    assert!(err.contains("does not fit the certificate"), "{err}");
    let (code, err) = run(&dir.path().join("missing.crt"), &other_key);
    assert_ne!(code, Some(0));
    assert!(err.contains("server.tls.cert_file"), "{err}");
}

/// A body for routes that need one, so the role check is what answers.
fn body_for(method: &str, pattern: &str) -> Option<String> {
    match (method, pattern) {
        ("POST", "/api/streams") => Some(
            r#"{"id": 50, "name": "New", "group": "Kids", "source": "http://127.0.0.1:9/x.ts", "ffmpeg_profile": "light"}"#.into(),
        ),
        ("POST", "/api/schedule") | ("PUT", "/api/schedule/{id}") => Some(
            r#"{"id": 900, "name": "S", "group": "Kids", "source": "http://127.0.0.1:9/x.ts", "ffmpeg_profile": "light", "schedule": {"start": "2030-01-01T00:00:00Z", "end": "2030-01-01T01:00:00Z"}}"#.into(),
        ),
        ("PUT", "/api/streams/{id}/programs") => Some(r#"[{"title": "T"}]"#.into()),
        ("PUT", _) => Some(
            r#"{"name": "Put", "group": "Kids", "source": "http://127.0.0.1:9/x.ts", "ffmpeg_profile": "light"}"#.into(),
        ),
        ("PATCH", _) => Some(r#"{"name": "Patched"}"#.into()),
        _ => None,
    }
}

#[test]
fn viewer_and_admin_tokens_on_every_route_of_the_table() {
    let cfg = format!("server:\n  auth_token: {TOKEN}\n{}{STREAMS}", tokens_yaml());
    let s = Server::start(&cfg);
    let mut checked = 0;
    for r in ROUTES.iter().filter(|r| !r.public()) {
        // The tuner routes carry the token in the path.
        let path = r.example.replace("/hdhr/x/", &format!("/hdhr/{TV}/"));
        let body = body_for(r.method, r.pattern);
        let viewer = s.request(
            r.method,
            &path,
            &[("X-Amps-Token", TV), ("Content-Type", "application/json")],
            body.as_deref(),
        );
        match r.access {
            Access::Admin => {
                assert_eq!(
                    viewer.status, 403,
                    "{} {}: {}",
                    r.method, r.pattern, viewer.body
                );
                if r.method != "HEAD" {
                    let j = viewer.json();
                    assert_eq!(j["error"], "forbidden");
                    assert!(j["detail"]
                        .as_str()
                        .unwrap()
                        .contains("\"tv\" is a viewer token"));
                }
            }
            Access::Viewer => assert!(
                ![401, 403].contains(&viewer.status),
                "{} {} refused a viewer: {} {}",
                r.method,
                r.pattern,
                viewer.status,
                viewer.body
            ),
            Access::Public => unreachable!(),
        }
        checked += 1;
    }
    assert!(checked > 30, "{checked} routes");
    // A named admin token may do what the admin token does.
    for path in ["/metrics", "/api/tokens", "/api/streams/1/status"] {
        let r = s.request("GET", path, &[("X-Amps-Token", OPS)], None);
        assert_eq!(r.status, 200, "{path}");
    }
    assert_eq!(
        s.request("POST", "/api/reload", &[("X-Amps-Token", OPS)], None)
            .status,
        200
    );

    // Groups: the viewer sees Kids only, everywhere, and its own token in URLs.
    let pl = s
        .request("GET", &format!("/playlist.m3u?token={TV}"), &[], None)
        .body;
    assert!(pl.contains("Cartoons") && !pl.contains("Late News"), "{pl}");
    assert!(pl.contains(&format!("/stream/1?token={TV}")), "{pl}");
    assert!(
        !pl.contains(TOKEN),
        "the admin token is never handed out: {pl}"
    );
    let epg = s
        .request("GET", "/epg.xml", &[("X-Amps-Token", TV)], None)
        .body;
    assert!(epg.contains("Cartoons") && !epg.contains("Late News"));
    let lineup = s
        .request("GET", &format!("/hdhr/{TV}/lineup.json"), &[], None)
        .json();
    assert_eq!(lineup.as_array().unwrap().len(), 1, "{lineup}");
    assert!(lineup[0]["URL"]
        .as_str()
        .unwrap()
        .contains(&format!("/hdhr/{TV}/")));
    let list = s
        .request("GET", "/api/streams", &[("X-Amps-Token", TV)], None)
        .json();
    let list = list.as_array().unwrap();
    assert!(list.iter().all(|c| c["group"] == "Kids"), "{list:?}");
    assert!(
        list.iter().all(|c| c.get("source").is_none()),
        "viewers never see sources"
    );
    for path in [
        "/stream/2",
        "/api/streams/2",
        "/hls/2/index.m3u8",
        "/watch/2",
    ] {
        let r = s.request("GET", path, &[("X-Amps-Token", TV)], None);
        assert_eq!(r.status, 404, "{path} is not the viewer's: {}", r.body);
    }
    let dash = s.request("GET", "/", &[("X-Amps-Token", TV)], None).body;
    assert!(dash.contains("Cartoons") && !dash.contains("Late News"));
    // The admin sees everything.
    let pl = s.get("/playlist.m3u").body;
    assert!(pl.contains("Cartoons") && pl.contains("Late News"));
    // Never a secret in /api/tokens.
    let t = s.get("/api/tokens");
    assert_eq!(t.status, 200);
    for secret in [TOKEN, TV, OPS] {
        assert!(!t.body.contains(secret));
    }
    let names: Vec<String> = t
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["admin", "tv", "ops"]);
    let m = s.get("/metrics").body;
    assert!(
        m.contains("amps_token_refusals_total{token=\"tv\",reason=\"role\"}"),
        "{m}"
    );
    for secret in [TV, OPS] {
        assert!(!s.logs().contains(secret), "a token in the logs");
    }
}

/// The viewer's open `/stream/1`.
fn watch(s: &Server, token: &str, id: u32) -> Result<Viewer, u16> {
    Viewer::open_url(&s.url(&format!("/stream/{id}?token={token}")))
}

#[test]
fn stream_limits_revocation_and_expiry_end_streams_within_a_second() {
    // Whole seconds, as written in the file.
    let expiry = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 12, 0).unwrap();
    let phone = format!(
        "    - {{name: phone, token: {PHONE}, max_streams: 3, expires: \"{}\"}}\n",
        expiry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let cfg = format!(
        "server:\n  auth_token: {TOKEN}\n{}{phone}{STREAMS}",
        tokens_yaml()
    );
    let s = Server::start(&cfg);
    // max_streams: 1 for tv.
    let mut a = watch(&s, TV, 1).expect("the first stream");
    assert!(!a.read_for(Duration::from_millis(500)).is_empty());
    let r = s.request("GET", &format!("/stream/1?token={TV}"), &[], None);
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .contains("may have 1 stream at once and has 1 open"));
    let r = s.request("GET", &format!("/hls/1/index.m3u8?token={TV}"), &[], None);
    assert_eq!(r.status, 429, "HLS counts against the same limit");
    let tokens = s.get("/api/tokens").json();
    let tv = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "tv")
        .unwrap();
    assert_eq!(tv["sessions"], 1);
    assert!(s
        .get("/metrics")
        .body
        .contains("amps_token_sessions{token=\"tv\"} 1"));
    // Closing it frees the place.
    drop(a);
    assert!(eventually(Duration::from_secs(3), || watch(&s, TV, 1).is_ok()));

    // Removing tv from the file and reloading ends its stream within a second; the
    // phone's and the admin's keep playing.
    let mut tv_stream = eventually_open(&s, TV);
    let mut phone_stream = watch(&s, PHONE, 1).expect("phone");
    let mut admin_stream = watch(&s, TOKEN, 2).expect("admin");
    let without_tv = format!(
        "server:\n  auth_token: {TOKEN}\n  tokens:\n    - {{name: ops, token: {OPS}, role: admin}}\n{phone}{STREAMS}"
    );
    std::fs::write(s.config_path(), without_tv).unwrap();
    let t0 = Instant::now();
    s.signal("HUP");
    assert!(
        tv_stream.ends_within(Duration::from_secs(3)),
        "{}",
        s.logs()
    );
    let ended = t0.elapsed();
    assert!(ended < Duration::from_millis(1500), "ended after {ended:?}");
    eprintln!("a removed token's stream ended {ended:?} after SIGHUP");
    assert_eq!(
        s.request("GET", &format!("/playlist.m3u?token={TV}"), &[], None)
            .status,
        401
    );
    assert!(!phone_stream.read_for(Duration::from_millis(500)).is_empty());
    assert!(!admin_stream.read_for(Duration::from_millis(300)).is_empty());

    // The phone's token expires: its stream ends then, and it is refused after.
    let left = (expiry - chrono::Utc::now()).to_std().unwrap_or_default();
    assert!(phone_stream.ends_within(left + Duration::from_secs(2)));
    assert!(chrono::Utc::now() >= expiry - chrono::Duration::milliseconds(100));
    assert_eq!(
        s.request("GET", &format!("/playlist.m3u?token={PHONE}"), &[], None)
            .status,
        401
    );
    assert!(s
        .get("/metrics")
        .body
        .contains("amps_token_refusals_total{token=\"phone\",reason=\"expired\"}"));
    assert!(!admin_stream.read_for(Duration::from_millis(300)).is_empty());
}

#[test]
fn api_tokens_are_shown_once_kept_as_digests_survive_restarts_and_end_when_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let cfg = format!(
        "server:\n  auth_token: {TOKEN}\n  state_file: {:?}\n{}{STREAMS}",
        state.display(),
        tokens_yaml()
    );
    let s = Server::start(&cfg);
    let r = s.send_json(
        "POST",
        "/api/tokens",
        r#"{"name": "guest", "groups": ["Kids"], "max_streams": 1}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location"), Some("/api/tokens/guest"));
    let secret = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 48);
    assert_eq!(r.json()["source"], "api");
    // Shown once: never in the list, the state file or the logs.
    assert!(!s.get("/api/tokens").body.contains(&secret));
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(
        saved.contains("\"guest\"") && !saved.contains(&secret),
        "{saved}"
    );
    assert!(!s.logs().contains(&secret));
    // It works as a viewer token of its groups.
    let pl = s.request("GET", &format!("/playlist.m3u?token={secret}"), &[], None);
    assert_eq!(pl.status, 200);
    assert!(pl.body.contains("Cartoons") && !pl.body.contains("Late News"));
    // Bad input: 4xx JSON naming the field; a taken name: 409; config tokens: 409.
    let bad = s.send_json("POST", "/api/tokens", r#"{"name": "a b"}"#);
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.json()["detail"].as_str().unwrap().starts_with("name:"));
    assert_eq!(
        s.send_json("POST", "/api/tokens", r#"{"name": "tv"}"#)
            .status,
        409
    );
    let typo = s.send_json("POST", "/api/tokens", r#"{"name": "x", "rol": "admin"}"#);
    assert_eq!(typo.status, 422);
    assert!(typo.body.contains("rol"), "{}", typo.body);
    assert_eq!(
        s.request("DELETE", "/api/tokens/tv", &[("X-Amps-Token", TOKEN)], None)
            .status,
        409
    );
    assert_eq!(
        s.request(
            "DELETE",
            "/api/tokens/nobody",
            &[("X-Amps-Token", TOKEN)],
            None
        )
        .status,
        404
    );
    drop(s);

    // After a restart the token still works (from the state file's digest) ...
    let s = Server::start(&cfg);
    let mut v = watch(&s, &secret, 1).expect("the API token after a restart");
    assert!(!v.read_for(Duration::from_millis(300)).is_empty());
    // ... and deleting it ends its stream at once, for good.
    let t0 = Instant::now();
    let r = s.request(
        "DELETE",
        "/api/tokens/guest",
        &[("X-Amps-Token", TOKEN)],
        None,
    );
    assert_eq!(r.status, 204);
    assert!(v.ends_within(Duration::from_secs(2)));
    eprintln!(
        "a deleted API token's stream ended {:?} after the DELETE",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_millis(1500));
    assert_eq!(
        s.request("GET", &format!("/playlist.m3u?token={secret}"), &[], None)
            .status,
        401
    );
    drop(s);
    let s = Server::start(&cfg);
    assert_eq!(
        s.request("GET", &format!("/playlist.m3u?token={secret}"), &[], None)
            .status,
        401
    );
}

fn eventually_open(s: &Server, token: &str) -> Viewer {
    let t0 = Instant::now();
    loop {
        match watch(s, token, 1) {
            Ok(v) => return v,
            Err(code) if t0.elapsed() < Duration::from_secs(5) => {
                let _ = code;
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(code) => panic!("refused {code}"),
        }
    }
}

/// The ```nginx block of docs/REMOTE.md, in front of Amps at `upstream`.
fn nginx(upstream: &str, cert: &Path, key: &Path) -> Nginx {
    Nginx::start(|port, _| {
        documented_block(
            "REMOTE.md",
            &[
                ("listen 8443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
                ("http://127.0.0.1:5000", format!("http://{upstream}")),
                (
                    "/etc/letsencrypt/live/tv.example.org/fullchain.pem",
                    cert.display().to_string(),
                ),
                (
                    "/etc/letsencrypt/live/tv.example.org/privkey.pem",
                    key.display().to_string(),
                ),
            ],
        )
    })
}

#[test]
fn through_nginx_each_forwarded_client_is_itself_and_forged_headers_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::certs::self_signed(dir.path(), "nginx");
    // Loopback is counted too here: the test's "remote" clients are 127.0.0.2 and .3.
    let cfg = format!(
        "server:\n  auth_token: {TOKEN}\n  trusted_proxies: [127.0.0.1]\n  auth_limit_loopback: true\n  auth_fail_limit: 20\n{STREAMS}"
    );
    let s = Server::start(&cfg);
    let n = nginx(&s.addr, &cert, &key);
    let ca = cert.display().to_string();
    let base = format!("https://localhost:{}", n.port);
    let resolve = format!("localhost:{}:127.0.0.1", n.port);
    let from = |ip: &str, path: &str, extra: &[&str]| {
        let url = format!("{base}{path}");
        let mut args = vec!["--cacert", &ca, "--resolve", &resolve, "--interface", ip];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };

    // Generated URLs use the public scheme and host the proxy forwarded.
    let (status, pl, _) = from("127.0.0.2", &format!("/playlist.m3u?token={TOKEN}"), &[]);
    assert_eq!(status, 200, "{pl}");
    assert!(
        pl.contains(&format!("{base}/stream/1?token={TOKEN}")),
        "{pl}"
    );
    assert!(
        pl.contains(&format!("url-tvg=\"{base}/epg.xml?token={TOKEN}\"")),
        "{pl}"
    );
    // A stream through the proxy, verified by ffprobe.
    let url = format!("https://127.0.0.1:{}/stream/1?token={TOKEN}", n.port);
    assert_eq!(
        probe(&url, &["-ca_file", &ca, "-tls_verify", "1"]),
        ["mpeg2video", "mp2"]
    );
    // A viewer from 127.0.0.3 keeps playing while 127.0.0.2 guesses.
    let mut watching = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "--interface",
            "127.0.0.3",
        ])
        .arg(format!("{base}/stream/2?token={TOKEN}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = watching.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut total = 0usize;
        let mut buf = vec![0u8; 65536];
        while let Ok(k) = out.read(&mut buf) {
            if k == 0 {
                break;
            }
            total += k;
        }
        total
    });
    let mut codes = Vec::new();
    for i in 0..20 {
        codes.push(from("127.0.0.2", &format!("/api/streams?token=wrong{i}"), &[]).0);
    }
    assert!(codes.iter().all(|c| *c == 401), "{codes:?}");
    // After 20 wrong tokens 127.0.0.2 is blocked, even with the right token.
    let (status, _, headers) = from("127.0.0.2", &format!("/api/streams?token={TOKEN}"), &[]);
    assert_eq!(
        status, 429,
        "a right token from a blocked client is refused"
    );
    assert!(
        headers.to_ascii_lowercase().contains("retry-after: "),
        "{headers}"
    );
    // The other forwarded client is not blocked, and its stream flows on.
    assert_eq!(
        from("127.0.0.3", &format!("/api/streams?token={TOKEN}"), &[]).0,
        200
    );
    // A forged X-Forwarded-For from an untrusted address (straight to Amps) changes
    // nothing: the block is counted against the sender, never the forged address.
    let direct = format!("http://{}/api/streams?token=wrong", s.addr);
    for _ in 0..20 {
        curl(&[
            "--interface",
            "127.0.0.4",
            "-H",
            "X-Forwarded-For: 127.0.0.5",
            &direct,
        ]);
    }
    assert_eq!(
        from("127.0.0.5", &format!("/api/streams?token={TOKEN}"), &[]).0,
        200,
        "the forged address is not blocked"
    );
    let own = format!("http://{}/api/streams?token={TOKEN}", s.addr);
    assert_eq!(
        curl(&["--interface", "127.0.0.4", &own]).0,
        429,
        "the sender is"
    );
    // Through nginx, a client cannot forge its way past the block either: nginx appends
    // the real address, and the right-most untrusted one counts.
    let (status, _, _) = from(
        "127.0.0.2",
        &format!("/api/streams?token={TOKEN}"),
        &["-H", "X-Forwarded-For: 198.51.100.9"],
    );
    assert_eq!(status, 429);
    // The access log names the real clients.
    let logs = s.logs();
    assert!(
        logs.contains("client=127.0.0.2 via=") && logs.contains("client=127.0.0.3 via="),
        "{logs}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = watching.kill();
    let _ = watching.wait();
    let total = reader.join().unwrap();
    assert!(
        total > 100_000,
        "the other client's stream flowed: {total} bytes"
    );
}

#[test]
fn a_path_outside_the_config_is_never_read() {
    // Token files are read only where the config says; a missing one is an error naming
    // the key, not a silent open server.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!("server:\n  auth_token: {TOKEN}\n  tokens:\n    - {{name: tv, token_file: /nonexistent/tv}}\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_amps"))
        .args(["serve", "--port", "0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.tokens[0].token_file") && err.contains("/nonexistent/tv"),
        "{err}"
    );
}
