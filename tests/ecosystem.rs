//! Black-box tests of how Amps fits the tools around it: Prometheus (checked with the real
//! `promtool`), Plex/Jellyfin through HDHomeRun emulation, and configuration reload.

mod common;

use common::{basic_config, Server, Viewer, TOKEN};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `promtool check metrics` on `text`; returns its exit code and output.
fn promtool(text: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; ./scripts/setup installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut said = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), said)
}

#[test]
fn metrics_pass_promtool_and_cover_the_engine_and_http() {
    let s = Server::start(&basic_config());
    let mut v = Viewer::open(&s, 1);
    assert!(!v.read_for(Duration::from_secs(2)).is_empty());
    // One refused request for the auth counter, one failing channel for the failure counter.
    assert_eq!(
        s.request("GET", "/api/streams?token=wrong", &[], None)
            .status,
        401
    );
    for _ in 0..2 {
        assert_eq!(s.get("/stream/2").status, 503, "channel 2 is unreachable");
    }

    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (code, said) = promtool(&r.body);
    assert_eq!(code, 0, "promtool check metrics: {said}\n{}", r.body);

    let text = &r.body;
    for needle in [
        "amps_build_info{version=\"",
        "amps_uptime_seconds ",
        "amps_channels 3\n",
        "amps_channels_by_state{state=\"running\"} 1\n",
        "amps_clients 1\n",
        "amps_channel_clients{channel=\"1\",producer=\"libav\"} 1\n",
        "amps_channel_bytes_sent_total{channel=\"1\",producer=\"libav\"} ",
        "amps_channel_client_skips_total{channel=\"1\"",
        "amps_channel_client_drops_total{channel=\"1\"",
        "amps_channel_starts_total{channel=\"1\",producer=\"libav\"} 1\n",
        "amps_channel_restarts_total{channel=\"2\"",
        "amps_channel_start_failures_total{channel=\"2\",producer=\"libav\"} ",
        "amps_channel_frames_encoded_total{channel=\"1\"",
        "amps_channel_speed{channel=\"1\"}",
        "amps_auth_failures_total 1\n",
        "amps_http_requests_total{route=\"/stream/{id}\",method=\"GET\",status=\"503\"} 2\n",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }
    let frames: u64 = text
        .lines()
        .find(|l| l.starts_with("amps_channel_frames_encoded_total{channel=\"1\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(frames >= 25, "2 s of 25 fps encoded: {frames}");

    // A scraper that asks for OpenMetrics gets it.
    let r = s.request(
        "GET",
        "/metrics",
        &[
            ("X-Amps-Token", TOKEN),
            ("Accept", "application/openmetrics-text;version=1.0.0"),
        ],
        None,
    );
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/openmetrics-text")));
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
}

/// Two generated channels, a third to drop, and a profile each.
fn reload_config(
    ch2_size: &str,
    ch3: bool,
    ch4: bool,
    ch1_name: &str,
    light_bitrate: &str,
) -> String {
    let mut c = format!(
        "server:\n  auth_token: {TOKEN}\nffmpeg_profiles:\n  light: {{video_codec: mpeg2video, video_bitrate: 1000k, audio_codec: mp2}}\n  other: {{video_codec: mpeg2video, video_bitrate: {light_bitrate}, audio_codec: mp2}}\nstreams:\n  - {{id: 1, name: {ch1_name}, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]', ffmpeg_profile: light}}\n  - {{id: 2, name: Two, source: 'lavfi:testsrc2=size={ch2_size}:rate=25[out0];sine[out1]', ffmpeg_profile: light}}\n"
    );
    if ch3 {
        c.push_str("  - {id: 3, name: Three, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]', ffmpeg_profile: other}\n");
    }
    if ch4 {
        c.push_str("  - {id: 4, name: Four, source: 'lavfi:testsrc2=size=160x120:rate=25[out0];sine[out1]', ffmpeg_profile: other}\n");
    }
    c
}

fn starts(s: &Server, id: u32) -> u64 {
    s.get(&format!("/api/streams/{id}/status")).json()["starts"]
        .as_u64()
        .unwrap()
}

#[test]
fn sighup_reload_restarts_only_changed_channels_and_refuses_a_bad_file() {
    let s = Server::start(&reload_config("320x240", true, false, "One", "800k"));
    let mut one = Viewer::open(&s, 1);
    let mut two = Viewer::open(&s, 2);
    let mut three = Viewer::open(&s, 3);
    for v in [&mut one, &mut two, &mut three] {
        assert!(!v.read_for(Duration::from_millis(800)).is_empty());
    }
    // Rename 1 (no restart), resize 2 (restart), drop 3, add 4.
    std::fs::write(
        s.config_path(),
        reload_config("640x360", false, true, "Renamed", "800k"),
    )
    .unwrap();
    s.signal("HUP");
    assert!(
        common::eventually(Duration::from_secs(10), || s.get("/api/streams/4").status
            == 200),
        "channel 4 was not added: {}",
        s.logs()
    );
    assert_eq!(s.get("/api/streams/3").status, 404);
    assert_eq!(s.get("/api/streams/1").json()["name"], "Renamed");
    assert!(
        three.ends_within(Duration::from_secs(5)),
        "a removed channel ends its clients"
    );

    // Both remaining viewers stay connected; only channel 2 restarted, now at 640x360.
    let bytes_one = one.read_for(Duration::from_secs(2));
    let bytes_two = two.read_for(Duration::from_secs(3));
    assert!(bytes_one.len() > 10_000, "channel 1 kept playing");
    assert_eq!(starts(&s, 1), 1, "the renamed channel was not restarted");
    assert_eq!(starts(&s, 2), 2, "the changed channel restarted once");
    let widths = common::media::frame_widths(&common::save(&bytes_two, "reload-two.ts"));
    assert_eq!(
        widths.last(),
        Some(&640),
        "channel 2 now 640 wide: {widths:?}"
    );

    // A profile redefinition restarts the channels that use it (4), not the others.
    std::fs::write(
        s.config_path(),
        reload_config("640x360", false, true, "Renamed", "600k"),
    )
    .unwrap();
    let mut four = Viewer::open(&s, 4);
    assert!(!four.read_for(Duration::from_millis(500)).is_empty());
    let r = s.send_json("POST", "/api/reload", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let report = r.json();
    assert_eq!(report["profiles_changed"], serde_json::json!(["other"]));
    assert_eq!(report["streams"]["updated"], serde_json::json!([4]));
    assert!(common::eventually(Duration::from_secs(5), || starts(&s, 4) == 2));
    assert_eq!(starts(&s, 1), 1);
    assert!(
        !four.read_for(Duration::from_secs(1)).is_empty(),
        "channel 4's viewer stays"
    );

    // A broken file is refused with its errors (key and line); everything stays.
    std::fs::write(
        s.config_path(),
        "ffmpeg_profiles:\n  light: {video_codec: nosuchcodec}\nstreams:\n  - {id: 1, name: X, source: y, ffmpeg_profile: missing}\n",
    )
    .unwrap();
    let r = s.send_json("POST", "/api/reload", "");
    assert_eq!(r.status, 422, "{}", r.body);
    let body = r.json();
    assert_eq!(body["error"], "invalid_config");
    let details = body["errors"].to_string();
    assert!(details.contains("config.yaml:4:"), "{details}");
    assert!(details.contains("streams[0].ffmpeg_profile"), "{details}");
    s.signal("HUP");
    assert!(common::eventually(Duration::from_secs(5), || s
        .logs()
        .contains("configuration reload refused")));
    assert_eq!(s.get("/api/streams/4").status, 200, "the old config stays");
    assert_eq!(s.get("/api/streams/1").json()["name"], "Renamed");
    assert!(
        one.read_for(Duration::from_secs(1)).len() > 5_000,
        "channel 1 still plays"
    );
    assert_eq!(starts(&s, 1), 1);
}

#[test]
fn reload_keeps_api_streams_and_refuses_to_drop_their_profile() {
    let s = Server::start(&reload_config("320x240", false, false, "One", "800k"));
    let r = s.send_json(
        "POST",
        "/api/streams",
        r#"{"id": 20, "name": "Api", "source": "http://127.0.0.1:9/x.ts", "ffmpeg_profile": "other"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let without_other = reload_config("320x240", false, false, "One", "800k").replace(
        "  other: {video_codec: mpeg2video, video_bitrate: 800k, audio_codec: mp2}\n",
        "",
    );
    std::fs::write(s.config_path(), &without_other).unwrap();
    let r = s.send_json("POST", "/api/reload", "");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body
            .contains("ffmpeg_profiles.other: still used by stream 20"),
        "{}",
        r.body
    );

    // Restore it and change nothing else: the API stream survives the reload.
    std::fs::write(
        s.config_path(),
        reload_config("320x240", false, false, "One", "800k"),
    )
    .unwrap();
    let r = s.send_json("POST", "/api/reload", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["streams"]["unchanged"], 2);
    assert_eq!(s.get("/api/streams/20").status, 200);
    let r = s.request("POST", "/api/reload", &[], None);
    assert_eq!(r.status, 401, "reload needs the token");
}
