//! Backup sources: failover without disconnecting clients, failback to the primary when it
//! is healthy again, every source tried in turn, and providers never hammered. Loopback
//! upstreams that the tests stop and start.

mod common;

use common::upstream::Upstream;
use common::{eventually, media, ts, Server, Viewer, TOKEN};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn config(streams: &str) -> String {
    format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  idle_grace_secs: 1\n  start_timeout_secs: 6\n  stall_timeout_secs: 3\n  failback_check_secs: 1\nffmpeg_profiles:\n  relay: {{video_codec: copy, audio_codec: copy}}\n  light: {{video_codec: mpeg2video, audio_codec: mp2}}\nstreams:\n{streams}"
    )
}

fn status(s: &Server, id: u32) -> serde_json::Value {
    s.get(&format!("/api/streams/{id}/status")).json()
}

/// Waits (up to 10 s) until channel `id` plays source `index`.
fn switches_to(s: &Server, id: u32, index: u64) {
    assert!(
        eventually(Duration::from_secs(10), || active(s, id) == index),
        "{}",
        status(s, id)
    );
}

fn active(s: &Server, id: u32) -> u64 {
    status(s, id)["active_source_index"].as_u64().unwrap()
}

#[test]
fn a_channel_fails_over_in_order_and_back_without_dropping_its_clients() {
    let dir = media::dir().to_path_buf();
    let a = Upstream::start(dir.clone(), 0);
    let b = Upstream::start(dir.clone(), 0);
    let c = Upstream::start(dir.clone(), 0);
    let live = "long.ts?live=30";
    let s = Server::start(&config(&format!(
        "  - id: 1\n    name: Failover\n    source: '{}'\n    backup_sources:\n      - '{}'\n      - {{source: '{}', input_options: {{probesize: '500000'}}}}\n    ffmpeg_profile: relay\n  - {{id: 2, name: Other, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]', ffmpeg_profile: light}}\n",
        a.url(live),
        b.url(live),
        c.url(live)
    )));
    let mut v = Viewer::open(&s, 1);
    let mut other = Viewer::open(&s, 2);
    // Everything the client receives, across all the switches.
    let mut all = v.read_for(Duration::from_secs(1));
    assert!(!all.is_empty());
    assert_eq!(active(&s, 1), 0);

    // The primary dies: backup 1 takes over, the client stays.
    let port_a = a.kill();
    switches_to(&s, 1, 1);
    let got = v.read_for(Duration::from_secs(2));
    assert!(got.len() > 50_000, "the client keeps receiving");
    all.extend(got);
    let st = status(&s, 1);
    assert!(
        st["last_switch"]
            .as_str()
            .unwrap()
            .starts_with("the primary source failed"),
        "{st}"
    );

    // Backup 1 dies as well: backup 2 (with its own input options).
    let _port_b = b.kill();
    switches_to(&s, 1, 2);
    let got = v.read_for(Duration::from_secs(2));
    assert!(got.len() > 50_000);
    all.extend(got);

    // The primary comes back: the channel returns to it.
    let a2 = Upstream::start(dir, port_a);
    let t0 = Instant::now();
    while active(&s, 1) != 0 && t0.elapsed() < Duration::from_secs(15) {
        all.extend(v.read_for(Duration::from_millis(200)));
    }
    assert_eq!(active(&s, 1), 0, "failback: {}", status(&s, 1));
    let st = status(&s, 1);
    assert_eq!(st["last_switch"], "the primary source is healthy again");
    assert!(st["source_switches"].as_u64().unwrap() >= 3, "{st}");
    assert!(a2.requests.load(Ordering::SeqCst) >= 1);
    let got = v.read_for(Duration::from_secs(2));
    assert!(got.len() > 50_000, "still playing, now from the primary");
    all.extend(got);
    // One continuous stream for the client through three switches.
    let path = common::save(&all, "failover.ts");
    let errors = media::decode_errors(&path);
    assert_eq!(errors, "", "the switches are clean for a decoder");
    let r = ts::assert_clean(&all, "a client through three source switches");
    assert!(
        r.discontinuities >= 3,
        "each switch is flagged: {}",
        r.summary()
    );
    assert!(
        other.read_for(Duration::from_millis(500)).len() > 5_000,
        "other channels untouched"
    );
    let m = s.get("/metrics").body;
    assert!(
        m.contains("amps_channel_source_switches_total{channel=\"1\""),
        "{m}"
    );
    assert!(
        m.contains("amps_channel_active_source{channel=\"1\",producer=\"libav\"} 0\n"),
        "{m}"
    );
    drop(c);
}

#[test]
fn every_source_is_tried_once_per_round_and_a_dead_channel_stops_asking() {
    // Three providers answering garbage: each is tried, none is hammered.
    let d = tempfile::tempdir().unwrap().keep();
    std::fs::write(d.join("bad.ts"), vec![0x55u8; 500_000]).unwrap();
    let ups: Vec<Upstream> = (0..3).map(|_| Upstream::start(d.clone(), 0)).collect();
    let s = Server::start(&config(&format!(
        "  - {{id: 1, name: Dead, source: '{}', backup_sources: ['{}', '{}'], ffmpeg_profile: relay}}\n",
        ups[0].url("bad.ts"),
        ups[1].url("bad.ts"),
        ups[2].url("bad.ts")
    )));
    let t0 = Instant::now();
    let r = s.get("/stream/1");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let counts: Vec<usize> = ups
        .iter()
        .map(|u| u.requests.load(Ordering::SeqCst))
        .collect();
    assert!(
        counts.iter().all(|&n| n >= 1),
        "every source was tried: {counts:?}"
    );
    assert!(
        counts.iter().all(|&n| n <= 2),
        "none was hammered: {counts:?}"
    );
    // With nobody watching, a failed channel asks no provider anything.
    std::thread::sleep(Duration::from_secs(4));
    let later: Vec<usize> = ups
        .iter()
        .map(|u| u.requests.load(Ordering::SeqCst))
        .collect();
    assert_eq!(counts, later);
}

#[test]
fn the_primary_is_checked_with_growing_pauses_while_a_backup_plays() {
    let d = tempfile::tempdir().unwrap().keep();
    std::fs::write(d.join("bad.ts"), vec![0x55u8; 500_000]).unwrap();
    let sick = Upstream::start(d, 0);
    let good = Upstream::start(media::dir().to_path_buf(), 0);
    let s = Server::start(&config(&format!(
        "  - {{id: 1, name: Sick primary, source: '{}', backup_sources: ['{}'], ffmpeg_profile: relay}}\n",
        sick.url("bad.ts"),
        good.url("long.ts?live=30")
    )));
    let mut v = Viewer::open(&s, 1);
    assert_eq!(active(&s, 1), 1, "started on the backup");
    let t0 = Instant::now();
    assert!(v.read_for(Duration::from_secs(8)).len() > 200_000);
    // Checks at about 1, 3 and 7 s (1 s doubling), plus the first attempt.
    let asked = sick.requests.load(Ordering::SeqCst);
    assert!(
        (2..=5).contains(&asked),
        "the sick primary was asked {asked} times in {:?}",
        t0.elapsed()
    );
    assert_eq!(active(&s, 1), 1, "an unhealthy primary is not taken back");
}

#[test]
fn backup_sources_obey_the_api_source_rules_and_validation() {
    let s = Server::start(&config(
        "  - {id: 1, name: One, source: 'http://127.0.0.1:9/a.ts', ffmpeg_profile: relay}\n",
    ));
    let r = s.send_json(
        "PATCH",
        "/api/streams/1",
        r#"{"backup_sources": ["http://127.0.0.1:9/b.ts", "/etc/passwd"]}"#,
    );
    assert_eq!(
        r.status, 403,
        "a local backup source through the API: {}",
        r.body
    );
    let r = s.send_json(
        "PATCH",
        "/api/streams/1",
        r#"{"backup_sources": ["http://127.0.0.1:9/a.ts"]}"#,
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body
            .contains("backup_sources[0].source: is the primary source"),
        "{}",
        r.body
    );
    let r = s.send_json(
        "PATCH",
        "/api/streams/1",
        r#"{"backup_sources": ["http://127.0.0.1:9/b.ts", {"source": "http://127.0.0.1:9/c.ts", "input_options": {"rw_timeout": "5000000"}}]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["backup_sources"][1]["input_options"]["rw_timeout"],
        "5000000"
    );
    assert_eq!(r.json()["backup_sources"][0], "http://127.0.0.1:9/b.ts");
}
