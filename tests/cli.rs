//! The command line, as a user runs it.

mod common;

use common::run_cli;

fn write(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.yaml");
    std::fs::write(&p, text).unwrap();
    let s = p.display().to_string();
    (dir, s)
}

#[test]
fn version_names_amps_and_libav() {
    let (code, out, _) = run_cli(&["--version"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("amps {}\n", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    // The versions of the libav this machine has, not a hard-coded major: what the build
    // compiled against (pkg-config) and what the linked library reports at run time
    // (the ffmpeg CLI links the same system libavcodec: its `-version` second column).
    let built = std::process::Command::new("pkg-config")
        .args(["--modversion", "libavcodec"])
        .output()
        .expect("pkg-config (./scripts/setup)");
    let built = String::from_utf8(built.stdout).unwrap().trim().to_owned();
    assert!(built.split('.').count() == 3, "{built:?}");
    assert!(
        out.contains(&format!("built against: libavcodec {built},")),
        "{out} (pkg-config: {built})"
    );
    let cli = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-version"])
        .output()
        .expect("ffmpeg (./scripts/setup)");
    let cli = String::from_utf8_lossy(&cli.stdout).into_owned();
    // "libavcodec     59. 37.100 / 59. 37.100": the runtime version after the slash.
    let running: String = cli
        .lines()
        .find_map(|l| l.strip_prefix("libavcodec"))
        .and_then(|l| l.split('/').nth(1))
        .map(|v| v.split_whitespace().collect())
        .expect("ffmpeg -version names libavcodec");
    assert!(
        out.contains(&format!("running with:  libavcodec {running},")),
        "{out} (ffmpeg -version: {running})"
    );
}

#[test]
fn check_accepts_the_bundled_config() {
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml");
    let (code, out, err) = run_cli(&["check", "--config", bundled]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("OK (3 streams, 0 scheduled streams, 4 profiles)"),
        "{out}"
    );
}

#[test]
fn check_reports_every_error_with_its_line() {
    let (_d, path) = write(
        "ffmpeg_profiles:\n  hd: {video_codec: libx265000, video_bitrate: lots}\nstreams:\n  - id: 1\n    name: A\n    source: s\n    ffmpeg_profile: sd\n  - id: 1\n    name: B\n    source: s\n    custom_ffmpeg: ''\n    channel_number: 0\n",
    );
    let (code, _, err) = run_cli(&["check", "--config", &path]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines[0], format!("{path}: 6 configuration errors"));
    // One line per error, none missing and none extra (zip alone would stop at the
    // shorter list).
    assert_eq!(lines.len(), 7, "{err}");
    let want = [
        format!(
            "{path}:2:8: ffmpeg_profiles.hd.video_codec: \"libx265000\" is not a video encoder"
        ),
        format!("{path}:2:33: ffmpeg_profiles.hd.video_bitrate: \"lots\" is not a bitrate"),
        format!("{path}:7:5: streams[0].ffmpeg_profile: unknown profile \"sd\" (known: hd)"),
        format!("{path}:11:5: streams[1].custom_ffmpeg.command: must not be empty"),
        format!("{path}:12:5: streams[1].channel_number: must be 1 or more"),
        format!("{path}:8:5: streams[1].id: duplicate id 1"),
    ];
    for (got, want) in lines[1..].iter().zip(&want) {
        assert!(
            got.trim_start().starts_with(want.as_str()),
            "got {got:?}\nwant {want:?}"
        );
    }
}

#[test]
fn check_reports_yaml_syntax_errors_with_their_line() {
    let (_d, path) = write("streams:\n  - id: 1\n    name: [unclosed\n");
    let (code, _, err) = run_cli(&["check", "--config", &path]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{path}:")), "{err}");
    let (code, _, err) = run_cli(&["check", "--config", "/nonexistent/amps.yaml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/amps.yaml: cannot read"), "{err}");
}

#[test]
fn list_prints_a_table_and_json() {
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml");
    let (code, out, _) = run_cli(&["list", "--config", bundled]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("ID  NO  NAME"));
    assert!(lines[3].contains("custom"));
    let (code, out, _) = run_cli(&["list", "--config", bundled, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[1]["ffmpeg_profile"], "hls-transcode");
}

#[test]
fn serve_refuses_a_network_address_without_a_real_token() {
    let (_d, path) = write("server: {host: 0.0.0.0, port: 0}\n");
    let (code, _, err) = run_cli(&["serve", "--config", &path]);
    assert_eq!(code, 2);
    assert!(
        err.contains("refusing to serve on 0.0.0.0 without a token"),
        "{err}"
    );
    let (_d, path) = write("server: {host: 0.0.0.0, port: 0, auth_token: changeme123}\n");
    let (code, _, err) = run_cli(&["serve", "--config", &path]);
    assert_eq!(code, 2);
    assert!(err.contains("sample token"), "{err}");
}

#[test]
fn serve_without_a_token_on_loopback_warns_loudly_and_serves() {
    let s = common::Server::start("streams: []\n");
    assert_eq!(s.request("GET", "/api/streams", &[], None).status, 200);
    assert!(s.logs().contains("NO TOKEN CONFIGURED"), "{}", s.logs());
}

#[test]
fn environment_overrides_the_token() {
    let s = common::Server::start_with(
        &common::basic_config(),
        &[("AMPS_TOKEN", "from-env-123456")],
        &[],
    );
    assert_eq!(
        s.request(
            "GET",
            "/api/streams",
            &[("X-Amps-Token", common::TOKEN)],
            None
        )
        .status,
        401
    );
    assert_eq!(
        s.request(
            "GET",
            "/api/streams",
            &[("X-Amps-Token", "from-env-123456")],
            None
        )
        .status,
        200
    );
}

#[test]
fn check_names_missing_programs_and_the_channels_that_need_them() {
    let (_d, path) = write(
        "streams:\n  - {id: 4, name: Cam, source: x, custom_ffmpeg: 'no-such-ffmpeg-amps -i {source} -f mpegts pipe:1'}\n",
    );
    let (code, _, err) = run_cli(&["check", "--config", &path]);
    assert_eq!(code, 1);
    assert!(
        err.contains("\"no-such-ffmpeg-amps\" is not installed or not in PATH; needed by channel 4 (\"Cam\")"),
        "{err}"
    );
}

#[test]
fn probe_measures_a_file_and_advises_copy() {
    let file = common::media::dir().join("hd.ts");
    let (code, out, err) = run_cli(&["probe", file.to_str().unwrap(), "--seconds", "3", "--json"]);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["format"], "mpegts");
    assert_eq!(r["kind"], "file");
    let v = &r["streams"][0];
    assert_eq!(v["codec"], "h264");
    assert_eq!(v["resolution"], "1920x1080");
    assert_eq!(v["frame_rate"], 25.0);
    // -g 25 at 25 fps: a keyframe every second.
    assert_eq!(v["keyframe_interval"], 1.0);
    // Encoded at 6 Mbit/s (ultrafast overshoots a little on a test pattern).
    let kbps = v["kbps"].as_u64().unwrap();
    assert!((4_000..=9_000).contains(&kbps), "video kbit/s {kbps}");
    let a = &r["streams"][1];
    assert_eq!(a["codec"], "aac");
    assert_eq!(a["sample_rate"], 48000);
    assert!(r["advice"].as_str().unwrap().starts_with("copy"), "{r}");
    assert!(r["media_secs_read"].as_f64().unwrap() >= 2.9, "{r}");
    // Progress is shown on stderr while it opens (once every 2 s off a terminal).
    assert!(err.contains("opening..."), "{err}");
}

#[test]
fn probe_names_a_source_it_cannot_open() {
    let (code, _, err) = run_cli(&["probe", "http://user:secret@127.0.0.1:9/x.ts"]);
    assert_eq!(code, 1);
    assert!(err.contains("amps probe: cannot open http://"), "{err}");
    assert!(!err.contains("secret"), "credentials are redacted: {err}");
}

#[test]
fn health_answers_for_a_running_server_and_fails_for_none() {
    let s = common::Server::start(&common::basic_config());
    let (code, out, err) = run_cli(&["health", "--addr", &s.addr]);
    assert_eq!((code, out.as_str()), (0, "ok\n"), "{err}");
    drop(s);
    let (code, _, err) = run_cli(&["health", "--addr", "127.0.0.1:9"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("unhealthy: 127.0.0.1:9"), "{err}");
}
