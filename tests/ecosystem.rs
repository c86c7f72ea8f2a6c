//! Black-box tests of how Amps fits the tools around it: Prometheus (checked with the real
//! `promtool`), Plex/Jellyfin through HDHomeRun emulation (replays of their request
//! sequences with a plain HTTP client, each sourced below: neither runs here), and
//! configuration reload.

mod common;

use common::{basic_config, Server, Viewer, TOKEN};
use std::process::Command;
use std::time::Duration;

/// Runs `promtool check metrics` on `text`; returns its exit code and output.
fn promtool(text: &str) -> (i32, String) {
    let out = common::pipe(
        Command::new("promtool").args(["check", "metrics"]),
        text.as_bytes(),
    );
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
    for v in [&mut one, &mut three] {
        assert!(!v.read_for(Duration::from_millis(800)).is_empty());
    }
    // Everything channel 2's client receives, across its restart.
    let mut all_two = two.read_for(Duration::from_millis(800));
    assert!(!all_two.is_empty());
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
    // Its client's one stream decodes through the restart, its timeline goes on.
    all_two.extend(bytes_two);
    let f = common::save(&all_two, "reload-two-all.ts");
    assert_eq!(common::media::decode_errors(&f), "", "across the restart");
    let r = common::ts::assert_clean(&all_two, "a client kept across a reload restart");
    assert!(
        r.discontinuities >= 1,
        "the restart is flagged: {}",
        r.summary()
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

/// A GET with no headers at all, as Plex and Jellyfin send them.
fn bare_get(url: &str) -> (u16, String, String) {
    let r = match ureq::get(url).timeout(Duration::from_secs(10)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = r.status();
    let ct = r.content_type().to_owned();
    (status, ct, r.into_string().unwrap_or_default())
}

fn hdhr_config() -> String {
    format!(
        "server:\n  auth_token: {TOKEN}\nhdhomerun:\n  friendly_name: Living Room\n  tuner_count: 2\nffmpeg_profiles:\n  light: {{video_codec: mpeg2video, audio_codec: mp2}}\nstreams:\n  - {{id: 1, name: One, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]', ffmpeg_profile: light, channel_number: 7}}\n  - {{id: 2, name: Two & Co, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]', ffmpeg_profile: light}}\n"
    )
}

fn valid_hdhr_id(id: &str) -> bool {
    const T: [u32; 16] = [10, 5, 15, 6, 7, 12, 1, 11, 9, 2, 8, 13, 4, 3, 14, 0];
    let d: Vec<u32> = id.chars().filter_map(|c| c.to_digit(16)).collect();
    d.len() == 8
        && id.len() == 8
        && (0..8).fold(0, |acc, i| {
            acc ^ if i % 2 == 0 { T[d[i] as usize] } else { d[i] }
        }) == 0
}

/// A replay, with a plain HTTP client (no Jellyfin here), of the requests Jellyfin's tuner
/// code makes. Source: jellyfin/jellyfin
/// `src/Jellyfin.LiveTv/TunerHosts/HdHomerun/HdHomerunHost.cs` (commit 031f001c):
/// `GetModelInfo` GETs the user's URL (trailing `/` trimmed) + `/discover.json`;
/// `GetLineup` GETs `LineupURL` (else `BaseURL + "/lineup.json"`) and drops `DRM`
/// channels; a channel plays by a GET of its `URL` verbatim.
#[test]
fn replay_of_jellyfins_tuner_requests_finds_the_tuner_reads_the_lineup_and_plays() {
    let s = Server::start(&hdhr_config());
    let entered = s.url(&format!("/hdhr/{TOKEN}"));
    let (status, ct, body) = bare_get(&format!("{entered}/discover.json"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct, "application/json");
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    // Jellyfin's DiscoverResponse: exact-case keys, strings and an int TunerCount.
    for key in [
        "FriendlyName",
        "ModelNumber",
        "FirmwareName",
        "FirmwareVersion",
        "DeviceID",
        "DeviceAuth",
        "BaseURL",
        "LineupURL",
    ] {
        assert!(d[key].is_string(), "{key} is a string: {d}");
    }
    assert_eq!(d["TunerCount"], 2);
    assert_eq!(d["FriendlyName"], "Living Room");
    assert_eq!(d["BaseURL"], entered.as_str());
    assert_eq!(d["LineupURL"], format!("{entered}/lineup.json"));
    assert!(!d["ModelNumber"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("hdtc"));
    let id = d["DeviceID"].as_str().unwrap();
    assert!(valid_hdhr_id(id), "DeviceID {id} has a valid check digit");

    let (status, _, body) = bare_get(d["LineupURL"].as_str().unwrap());
    assert_eq!(status, 200);
    let lineup: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(lineup.len(), 2, "{body}");
    let numbers: Vec<&str> = lineup
        .iter()
        .map(|c| c["GuideNumber"].as_str().expect("GuideNumber is a string"))
        .collect();
    assert_eq!(
        numbers,
        ["7", "2"],
        "channel number, else id; in playlist order"
    );
    assert_eq!(lineup[1]["GuideName"], "Two & Co");
    for c in &lineup {
        let url = c["URL"].as_str().unwrap();
        assert!(url.starts_with(&entered), "{url}");
        assert!(
            !url.contains('?'),
            "no query: Jellyfin may append one: {url}"
        );
        // JsonBoolNumberConverter accepts 0/1; old Jellyfin reads HD as an int.
        assert_eq!(c["HD"], 1);
        assert_eq!(c["DRM"], 0);
    }
    // Play channel 7 with a bare GET, as Jellyfin does.
    let url = lineup[0]["URL"].as_str().unwrap();
    let resp = ureq::get(url).call().unwrap();
    assert_eq!(resp.content_type(), "video/mp2t");
    let mut bytes = Vec::new();
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        match std::io::Read::read(&mut reader, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    drop(reader);
    let path = common::save(&bytes, "hdhr.ts");
    assert_eq!(common::media::codecs(&path), ["mpeg2video", "mp2"]);
    assert_eq!(common::media::resolution(&path), (320, 240));
    let st = s.get("/api/streams/1/status").json();
    assert_eq!(st["starts"], 1, "guide number 7 is stream 1: {st}");
}

/// A replay, with a plain HTTP client (no Plex here), of the tuner scan Plex makes:
/// discover, lineup status, a scan request, lineup, device description. Plex Media Server
/// is closed source; the request list is the one an HDHomeRun emulator written for Plex
/// answers: tellytv/telly `routes.go` (commit 4eb58f85): `GET /discover.json`,
/// `GET /lineup_status.json` ("Gotta fake out Plex"), `POST /lineup.post?scan=start`,
/// `GET /lineup.json`, `GET /device.xml`.
#[test]
fn replay_of_plexs_tuner_scan_requests_and_device_description() {
    let s = Server::start(&hdhr_config());
    let base = s.url(&format!("/hdhr/{TOKEN}"));
    let (status, _, _) = bare_get(&format!("{base}/discover.json"));
    assert_eq!(status, 200);
    let (status, _, body) = bare_get(&format!("{base}/lineup_status.json"));
    assert_eq!(status, 200);
    let ls: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ls["ScanInProgress"], 0);
    assert_eq!(ls["ScanPossible"], 1);
    assert_eq!(ls["Source"], "Cable");
    assert_eq!(ls["SourceList"], serde_json::json!(["Cable"]));
    let r = ureq::post(&format!("{base}/lineup.post?scan=start&source=Cable"))
        .send_string("")
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a 404/405 makes Plex say it cannot talk to the device"
    );
    let (status, _, body) = bare_get(&format!("{base}/lineup.json"));
    assert_eq!(status, 200);
    assert!(body.contains("\"GuideNumber\":\"7\""), "{body}");

    let (status, ct, xml) = bare_get(&format!("{base}/device.xml"));
    assert_eq!(status, 200);
    assert_eq!(ct, "application/xml");
    let file = common::save(xml.as_bytes(), "device.xml");
    let xpath = |expr: &str| {
        let out = Command::new("xmllint")
            .args(["--xpath", expr])
            .arg(&file)
            .output()
            .expect("xmllint (libxml2-utils)");
        assert!(out.status.success(), "{expr}: {xml}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let root = "/*[local-name()='root']";
    assert_eq!(
        xpath(&format!("string({root}/*[local-name()='URLBase'])")),
        base
    );
    let dev = format!("{root}/*[local-name()='device']");
    assert_eq!(
        xpath(&format!("string({dev}/*[local-name()='deviceType'])")),
        "urn:schemas-upnp-org:device:MediaServer:1"
    );
    assert_eq!(
        xpath(&format!("string({dev}/*[local-name()='manufacturer'])")),
        "Silicondust"
    );
    assert_eq!(
        xpath(&format!("string({dev}/*[local-name()='friendlyName'])")),
        "Living Room"
    );
    assert!(xpath(&format!("string({dev}/*[local-name()='UDN'])")).starts_with("uuid:"));
    let serial = xpath(&format!("string({dev}/*[local-name()='serialNumber'])"));
    assert!(valid_hdhr_id(&serial), "{serial}");
}

#[test]
fn the_tuner_refuses_wrong_tokens_and_keeps_the_token_out_of_logs_and_metrics() {
    let s = Server::start(&hdhr_config());
    for path in [
        "/hdhr/discover.json".to_owned(),
        "/hdhr/wrong/discover.json".to_owned(),
        "/hdhr/wrong/auto/v7".to_owned(),
        format!("/hdhr/{TOKEN}x/lineup.json"),
    ] {
        let (status, _, body) = bare_get(&s.url(&path));
        assert_eq!(
            status, 401,
            "{path}: a 404 would make Jellyfin fall back silently: {body}"
        );
    }
    let (status, _, _) = bare_get(&s.url(&format!("/hdhr/{TOKEN}/auto/v99")));
    assert_eq!(status, 404);
    let (status, _, _) = bare_get(&s.url(&format!("/hdhr/{TOKEN}/other.json")));
    assert_eq!(status, 404);
    let r = ureq::head(&s.url(&format!("/hdhr/{TOKEN}/auto/v7")))
        .call()
        .unwrap();
    assert_eq!(r.content_type(), "video/mp2t");
    let (status, _, _) = bare_get(&s.url(&format!("/hdhr/{TOKEN}/discover.json")));
    assert_eq!(status, 200);
    let metrics = s.get("/metrics").body;
    assert!(
        metrics.contains("route=\"/hdhr/{token}/discover.json\",method=\"GET\",status=\"200\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"/hdhr/{token}/auto/v{n}\",method=\"HEAD\""),
        "{metrics}"
    );
    assert!(!metrics.contains(TOKEN));
    let logs = s.logs();
    assert!(logs.contains("/hdhr/***/discover.json"), "{logs}");
    assert!(!logs.contains(TOKEN), "{logs}");
}

#[test]
fn the_tuner_can_be_turned_off() {
    let s = Server::start(&hdhr_config().replace("hdhomerun:\n", "hdhomerun:\n  enabled: false\n"));
    let (status, _, _) = bare_get(&s.url(&format!("/hdhr/{TOKEN}/discover.json")));
    assert_eq!(status, 404);
}

#[test]
fn reload_removes_a_stream_together_with_its_profile() {
    let with = format!(
        "server:\n  auth_token: {TOKEN}\nffmpeg_profiles:\n  light: {{video_codec: mpeg2video, audio_codec: mp2}}\n  other: {{video_codec: mpeg2video, audio_codec: mp2}}\nstreams:\n  - {{id: 1, name: One, source: 'lavfi:testsrc2[out0];sine[out1]', ffmpeg_profile: light}}\n  - {{id: 2, name: Two, source: 'lavfi:testsrc2[out0];sine[out1]', ffmpeg_profile: other}}\n"
    );
    let s = Server::start(&with);
    let without = with
        .replace("  other: {video_codec: mpeg2video, audio_codec: mp2}\n", "")
        .replace("  - {id: 2, name: Two, source: 'lavfi:testsrc2[out0];sine[out1]', ffmpeg_profile: other}\n", "");
    assert_ne!(without, with);
    std::fs::write(s.config_path(), &without).unwrap();
    let r = s.send_json("POST", "/api/reload", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let report = r.json();
    assert_eq!(report["streams"]["removed"], serde_json::json!([2]));
    assert_eq!(report["profiles_changed"], serde_json::json!(["other"]));
    assert_eq!(s.get("/api/streams/2").status, 404);
}
