//! `custom_ffmpeg` channels: the real ffmpeg CLI as a supervised child process.

mod common;

use common::media;
use common::{alive, children_named, eventually, save, Server, Viewer, TOKEN};
use std::process::Command;
use std::time::Duration;

const FFMPEG: &str = "ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=sample_rate=48000 -c:v libx264 -preset ultrafast -g 25 -c:a aac -f mpegts pipe:1";

fn config(streams: &str, extra_server: &str) -> String {
    format!("server:\n  auth_token: {TOKEN}\n{extra_server}engine:\n  idle_grace_secs: 1\n  stall_timeout_secs: 3\nstreams:\n{streams}")
}

fn custom(id: u32, command: &str) -> String {
    format!(
        "  - id: {id}\n    name: Custom {id}\n    source: unused\n    custom_ffmpeg: {command:?}\n"
    )
}

#[test]
fn one_process_serves_every_client_and_late_joiners_start_on_a_keyframe() {
    let s = Server::start(&config(&custom(1, FFMPEG), ""));
    let mut a = Viewer::open(&s, 1);
    let mut b = Viewer::open(&s, 1);
    let ta = std::thread::spawn(move || a.read_for(Duration::from_secs(3)));
    let bb = b.read_for(Duration::from_secs(1));
    let mut late = Viewer::open(&s, 1);
    let ll = late.read_for(Duration::from_millis(1500));
    let aa = ta.join().unwrap();
    assert_eq!(
        children_named(s.pid(), "ffmpeg").len(),
        1,
        "one ffmpeg for three clients"
    );
    for (name, got) in [("second", &bb), ("late", &ll)] {
        assert!(got.len() > 2 * 376, "{name}: {} bytes", got.len());
        let probe = &got[376..(376 + 2048).min(got.len())];
        assert!(
            aa.windows(probe.len()).any(|w| w == probe),
            "{name} client's bytes differ"
        );
    }
    let f = save(&ll, "late.ts");
    assert!(media::starts_with_keyframe(&f));
    assert_eq!(media::codecs(&f), vec!["h264", "aac"]);
    assert_eq!(media::decode_errors(&f), "");
    let st = s.get("/api/streams/1/status").json();
    assert_eq!(st["producer"], "process");
    assert_eq!(st["state"], "running");
}

#[test]
fn placeholders_reach_the_command_as_single_literal_arguments() {
    // The command writes its arguments, one per line, to a file, then streams.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("args.txt");
    let script = dir.path().join("cmd.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\nexec {FFMPEG}\n",
            out.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let evil = r#"Ev'il "name"; touch /tmp/amps-pwned $(id) `id`"#;
    let streams = format!(
        "  - id: 2\n    name: {evil:?}\n    source: \"a b;c\"\n    custom_ffmpeg: {cmd:?}\n  - id: 3\n    name: {evil:?}\n    source: \"x\"\n    custom_ffmpeg: {{command: {shcmd:?}, shell: true}}\n",
        cmd = format!("{} {{name}} --src={{source}} {{id}}", script.display()),
        shcmd = format!("{} {{name}} {{source}}", script.display()),
    );
    let s = Server::start(&config(&streams, ""));
    let mut v = Viewer::open(&s, 2);
    assert!(!v.read_for(Duration::from_millis(300)).is_empty());
    let args = std::fs::read_to_string(&out).unwrap();
    assert_eq!(args, format!("{evil}\n--src=a b;c\n2\n"));
    drop(v);
    let mut v = Viewer::open(&s, 3);
    assert!(!v.read_for(Duration::from_millis(300)).is_empty());
    let args = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        args,
        format!("{evil}\nx\n"),
        "with a shell, each value is still one argument"
    );
    assert!(!std::path::Path::new("/tmp/amps-pwned").exists());
}

#[test]
fn a_killed_child_is_restarted_and_clients_keep_receiving() {
    let s = Server::start(&config(&custom(4, FFMPEG), ""));
    let mut v = Viewer::open(&s, 4);
    assert!(v.read_for(Duration::from_secs(1)).len() > 10_000);
    let kids = children_named(s.pid(), "ffmpeg");
    assert_eq!(kids.len(), 1);
    Command::new("kill")
        .arg("-KILL")
        .arg(kids[0].to_string())
        .status()
        .unwrap();
    let after = v.read_for(Duration::from_secs(5));
    assert!(
        after.len() > 50_000,
        "only {} bytes after the child was killed",
        after.len()
    );
    let now = children_named(s.pid(), "ffmpeg");
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], kids[0], "a new child was started");
    let st = s.get("/api/streams/4/status").json();
    assert!(st["restarts"].as_u64().unwrap() >= 1, "{st}");
}

#[test]
fn a_command_that_cannot_start_reports_its_stderr() {
    let cmd = "ffmpeg -hide_banner -i /nonexistent/input.ts -f mpegts pipe:1";
    let s = Server::start(&config(&custom(5, cmd), ""));
    let t0 = std::time::Instant::now();
    let r = s.get("/stream/5");
    assert_eq!(r.status, 503);
    assert!(t0.elapsed() < Duration::from_secs(8));
    let st = s.get("/api/streams/5/status").json();
    assert_eq!(st["state"], "failed");
    let tail = st["stderr_tail"].to_string();
    assert!(tail.contains("No such file or directory"), "{st}");
    assert!(
        st["last_error"].as_str().unwrap().contains("exited"),
        "{st}"
    );
    assert!(children_named(s.pid(), "ffmpeg").is_empty());
}

#[test]
fn delete_idle_and_shutdown_leave_no_process_behind() {
    let mut s = Server::start(&config(
        &(custom(6, FFMPEG) + &custom(7, FFMPEG) + &custom(8, FFMPEG)),
        "",
    ));
    // Deleting the stream stops its child.
    let mut v = Viewer::open(&s, 6);
    assert!(!v.read_for(Duration::from_millis(500)).is_empty());
    let kid = children_named(s.pid(), "ffmpeg")[0];
    assert_eq!(
        s.request("DELETE", "/api/streams/6", &[("X-Amps-Token", TOKEN)], None)
            .status,
        204
    );
    assert!(v.ends_within(Duration::from_secs(4)));
    assert!(
        eventually(Duration::from_secs(4), || !alive(kid)),
        "ffmpeg {kid} survived the stream's deletion"
    );
    // The last client leaving stops it after the grace period.
    let mut v = Viewer::open(&s, 7);
    assert!(!v.read_for(Duration::from_millis(500)).is_empty());
    let kid = children_named(s.pid(), "ffmpeg")[0];
    drop(v);
    assert!(
        eventually(Duration::from_secs(6), || !alive(kid)),
        "ffmpeg {kid} outlived its last client"
    );
    // SIGTERM of amps with a running child and a connected client.
    let mut v = Viewer::open(&s, 8);
    assert!(!v.read_for(Duration::from_millis(500)).is_empty());
    let kid = children_named(s.pid(), "ffmpeg")[0];
    let status = s
        .terminate(Duration::from_secs(6))
        .expect("amps exits within 6 s of SIGTERM");
    assert!(status.success());
    assert!(
        eventually(Duration::from_secs(2), || !alive(kid)),
        "ffmpeg {kid} survived amps"
    );
}

#[test]
fn sigkill_of_amps_takes_its_children_along() {
    let s = Server::start(&config(&custom(9, FFMPEG), ""));
    let mut v = Viewer::open(&s, 9);
    assert!(!v.read_for(Duration::from_millis(500)).is_empty());
    let kid = children_named(s.pid(), "ffmpeg")[0];
    Command::new("kill")
        .arg("-KILL")
        .arg(s.pid().to_string())
        .status()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || !alive(kid)),
        "ffmpeg {kid} orphaned by kill -9"
    );
}

#[test]
fn the_api_cannot_add_commands_unless_the_config_allows_it() {
    let body = format!(
        r#"{{"id": 20, "name": "x", "source": "http://h/s.ts", "custom_ffmpeg": {FFMPEG:?}}}"#
    );
    let s = Server::start(&config("  []\n", ""));
    assert_eq!(s.send_json("POST", "/api/streams", &body).status, 403);
    let s = Server::start(&config("  []\n", "  allow_api_commands: true\n"));
    assert_eq!(s.send_json("POST", "/api/streams", &body).status, 201);
    let mut v = Viewer::open(&s, 20);
    assert!(v.read_for(Duration::from_secs(1)).len() > 10_000);
}
