//! Scheduled channels and the XMLTV guide, black-box.

mod common;

use common::{eventually, Server, Viewer, TOKEN};
use std::time::Duration;

const DTD: &str = "/usr/share/sgml/xmltv/dtd/0.5/xmltv.dtd";

fn config(streams: &str, scheduled: &str) -> String {
    format!(
        "server:\n  auth_token: {TOKEN}\nffmpeg_profiles:\n  light: {{video_codec: mpeg2video, audio_codec: mp2}}\n  relay: {{video_codec: copy, audio_codec: copy}}\nstreams:\n{streams}scheduled_streams:\n{scheduled}"
    )
}

fn iso(offset_secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(offset_secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Validates XML against the XMLTV DTD with xmllint (Debian: libxml2-utils, libxmltv-perl).
fn validate(xml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("epg.xml");
    std::fs::write(&f, xml).unwrap();
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--dtdvalid", DTD])
        .arg(&f)
        .output()
        .expect("xmllint is installed (./scripts/setup)");
    assert!(
        out.status.success(),
        "XMLTV invalid: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_guide_is_valid_xmltv_and_follows_program_changes() {
    let streams = "  - {id: 1, name: 'Caf\u{e9} & <Co>', source: 'http://h/1.ts', ffmpeg_profile: relay, channel_number: 4, logo: 'http://l/1.png?a=1&b=2'}\n  - {id: 2, name: Two, source: 'http://h/2.ts', ffmpeg_profile: relay}\n";
    let s = Server::start(&config(streams, "  []\n"));
    let r = s.send_json(
        "PUT",
        "/api/streams/1/programs",
        r#"[{"title": "Nachrichten \"live\" <heute> & mehr", "start": "2031-01-01T18:00:00+01:00", "description": "Ümlaut ✓"}, {"title": "Late", "start": "2031-01-01T20:00:00Z"}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let g = s.get("/epg.xml");
    assert_eq!(g.status, 200);
    assert_eq!(
        g.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    validate(&g.body);
    assert!(g.body.contains("<channel id=\"1.amps\">"));
    assert!(g
        .body
        .contains("<display-name>Caf\u{e9} &amp; &lt;Co&gt;</display-name>"));
    assert!(
        g.body
            .contains("start=\"20310101180000 +0100\" stop=\"20310101200000 +0000\""),
        "{}",
        g.body
    );
    assert!(g
        .body
        .contains("<title>Nachrichten &quot;live&quot; &lt;heute&gt; &amp; mehr</title>"));
    assert!(g.body.contains("<desc>Ümlaut ✓</desc>"));
    // gzip when asked.
    let z = s.request(
        "GET",
        "/epg.xml",
        &[("X-Amps-Token", TOKEN), ("Accept-Encoding", "gzip")],
        None,
    );
    assert_eq!(z.header("content-encoding"), Some("gzip"));
    // The playlist points players at the guide, with the token.
    let pl = s.get("/playlist.m3u").body;
    let first = pl.lines().next().unwrap();
    assert!(first.starts_with("#EXTM3U x-tvg-url=\"http://"), "{first}");
    assert!(
        first.contains(&format!("/epg.xml?token={TOKEN}\" url-tvg=\"")),
        "{first}"
    );
}

#[test]
fn scheduled_windows_open_and_close_while_a_client_watches() {
    let src = "lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]";
    // The window opens 8 s after the config is written (whole seconds, so at least 7 s
    // from now): time for a slow start on two busy cores, then the checks that need the
    // window still pending. If the server took longer, the test says so instead of
    // failing on a state that has moved on.
    let written = std::time::Instant::now();
    let scheduled = format!(
        "  - {{id: 900, name: Soon, source: '{src}', ffmpeg_profile: light, schedule: {{start: '{}', end: '{}'}}}}\n  - {{id: 901, name: Past, source: '{src}', ffmpeg_profile: light, schedule: {{end: '2001-01-01T00:00:00Z'}}}}\n  - {{id: 1, name: Dup, source: '{src}', ffmpeg_profile: light}}\n",
        iso(8),
        iso(12)
    );
    let s = Server::start(&config(
        &format!("  - {{id: 1, name: Static, source: '{src}', ffmpeg_profile: light}}\n"),
        &scheduled,
    ));
    assert!(
        s.logs()
            .contains("scheduled_streams[2].id: id 1 is already used by streams[0]"),
        "{}",
        s.logs()
    );
    let states = s.get("/api/schedule").json();
    assert_eq!(states.as_array().unwrap().len(), 2, "{states}");
    assert_eq!(states[0]["state"], "pending");
    assert_eq!(states[1]["state"], "ended");
    assert_eq!(s.get("/stream/900").status, 404);
    assert!(!s.get("/playlist.m3u").body.contains("Soon"));
    assert!(
        written.elapsed() < Duration::from_secs(7),
        "the server took {:?} to start and answer: the pending checks came too late",
        written.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(20), || s.get("/api/streams/900").status
            == 200),
        "window did not open"
    );
    assert!(s.get("/playlist.m3u").body.contains(",Soon\n"));
    let mut v = Viewer::open(&s, 900);
    assert!(!v.read_for(Duration::from_millis(500)).is_empty());
    assert!(
        v.ends_within(Duration::from_secs(20)),
        "the client was not ended when the window closed"
    );
    assert_eq!(s.get("/api/streams/900").status, 404);
    assert_eq!(s.get("/api/schedule/900").json()["state"], "ended");
}

#[test]
fn the_api_manages_scheduled_streams() {
    let s = Server::start(&config(
        "  - {id: 1, name: Static, source: 'http://h/1.ts', ffmpeg_profile: relay}\n",
        "  []\n",
    ));
    let body = format!(
        r#"{{"id": 950, "name": "Match", "source": "http://h/m.ts", "ffmpeg_profile": "relay", "schedule": {{"start": "{}"}}}}"#,
        iso(3600)
    );
    let r = s.send_json("POST", "/api/schedule", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("location"), Some("/api/schedule/950"));
    assert_eq!(r.json()["state"], "pending");
    assert_eq!(s.send_json("POST", "/api/schedule", &body).status, 409);
    // A pending scheduled entry's id is taken for /api/streams too.
    let plain = r#"{"id": 950, "name": "X", "source": "http://h/x.ts", "ffmpeg_profile": "relay"}"#;
    assert_eq!(s.send_json("POST", "/api/streams", plain).status, 409);
    // Static ids and unscheduled bodies are refused; scheduled streams are not edited
    // through /api/streams.
    let clash = body.replace("950", "1");
    assert_eq!(s.send_json("POST", "/api/schedule", &clash).status, 409);
    let unscheduled =
        r#"{"id": 951, "name": "X", "source": "http://h/x.ts", "ffmpeg_profile": "relay"}"#;
    assert_eq!(
        s.send_json("POST", "/api/schedule", unscheduled).status,
        422
    );
    let local = body
        .replace("950", "952")
        .replace("http://h/m.ts", "/etc/passwd");
    assert_eq!(s.send_json("POST", "/api/schedule", &local).status, 403);
    // Opening the window now activates it at once.
    let now = s.send_json(
        "PUT",
        "/api/schedule/950",
        r#"{"name": "Match", "source": "http://h/m.ts", "ffmpeg_profile": "relay", "schedule": {"end": "2099-01-01T00:00:00Z"}}"#,
    );
    assert_eq!(now.status, 200, "{}", now.body);
    assert_eq!(now.json()["state"], "active");
    assert_eq!(s.get("/api/streams/950").status, 200);
    assert_eq!(
        s.send_json("PATCH", "/api/streams/950", r#"{"name": "x"}"#)
            .status,
        409
    );
    assert_eq!(
        s.request(
            "DELETE",
            "/api/streams/950",
            &[("X-Amps-Token", TOKEN)],
            None
        )
        .status,
        409
    );
    assert_eq!(
        s.request(
            "DELETE",
            "/api/schedule/950",
            &[("X-Amps-Token", TOKEN)],
            None
        )
        .status,
        204
    );
    assert_eq!(s.get("/api/streams/950").status, 404);
    assert_eq!(s.get("/api/schedule/950").status, 404);
}
