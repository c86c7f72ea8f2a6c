//! The reliability and attack suite: faults of upstreams, clients and processes, brute
//! force, limits, and durability of API changes. Real binary, real sockets, loopback only,
//! every wait bounded. Results: docs/RELIABILITY.md.

mod common;

use common::media;
use common::upstream::Upstream;
use common::{eventually, ts, Server, Viewer, TOKEN};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const LIGHT: &str = "lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]";

fn config(server_extra: &str, engine_extra: &str, streams: &str) -> String {
    format!(
        "server:\n  auth_token: {TOKEN}\n{server_extra}engine:\n  idle_grace_secs: 1\n  start_timeout_secs: 6\n  stall_timeout_secs: 3\n{engine_extra}ffmpeg_profiles:\n  light: {{video_codec: mpeg2video, audio_codec: mp2}}\n  relay: {{video_codec: copy, audio_codec: copy}}\nstreams:\n{streams}"
    )
}

fn light(id: u32) -> String {
    format!("  - {{id: {id}, name: Light {id}, source: '{LIGHT}', ffmpeg_profile: light}}\n")
}

fn status(s: &Server, id: u32) -> serde_json::Value {
    s.get(&format!("/api/streams/{id}/status")).json()
}

// ---- access ----------------------------------------------------------------------------

#[test]
fn an_address_that_fails_the_token_check_too_often_is_refused_for_a_while() {
    let s = Server::start(&config(
        "  auth_fail_limit: 3\n  auth_block_secs: 2\n  auth_limit_loopback: true\n",
        "",
        &light(1),
    ));
    for _ in 0..3 {
        let r = s.request("GET", "/api/streams?token=guess", &[], None);
        assert_eq!(r.status, 401);
    }
    // Now even the right token is refused, with a Retry-After.
    let r = s.get("/api/streams");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"], "too_many_requests");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(
        s.request("GET", "/health", &[], None).status,
        200,
        "health stays open"
    );
    // Wait for the end of the block (every refused try counts as a blocked request).
    let blocked_at = Instant::now();
    let mut refused = 1;
    loop {
        let status = s.get("/api/streams").status;
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        refused += 1;
        assert!(
            blocked_at.elapsed() < Duration::from_secs(20),
            "the block never ends"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        blocked_at.elapsed() >= Duration::from_millis(500),
        "the block lasted only {:?} of 2 s",
        blocked_at.elapsed()
    );
    let m = s.get("/metrics").body;
    assert!(
        m.contains(&format!("amps_auth_blocked_total {refused}\n")),
        "{refused} refused: {m}"
    );
    assert!(m.contains("amps_auth_failures_total 3\n"), "{m}");
    assert!(s.logs().contains("too many failed token checks"));
}

#[test]
fn loopback_is_not_blocked_unless_asked() {
    // A reverse proxy on the same machine makes every client 127.0.0.1: blocking it would
    // lock everyone out.
    let s = Server::start(&config("  auth_fail_limit: 2\n", "", &light(1)));
    for _ in 0..5 {
        assert_eq!(
            s.request("GET", "/api/streams?token=guess", &[], None)
                .status,
            401
        );
    }
    assert_eq!(s.get("/api/streams").status, 200);
}

#[test]
fn a_channel_at_its_client_limit_answers_503_json_and_others_play_on() {
    let s = Server::start(&config(
        "",
        "  max_clients_per_channel: 2\n",
        &format!("{}{}", light(1), light(2)),
    ));
    let mut a = Viewer::open(&s, 1);
    let mut b = Viewer::open(&s, 1);
    let r = s.get("/stream/1");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "unavailable");
    assert!(r.body.contains("max_clients_per_channel"), "{}", r.body);
    let mut c = Viewer::open(&s, 2);
    for v in [&mut a, &mut b, &mut c] {
        assert!(v.read_for(Duration::from_millis(500)).len() > 1000);
    }
    drop(a);
    assert!(eventually(Duration::from_secs(3), || status(&s, 1)
        ["clients"]
        == 1));
    let mut d = Viewer::open(&s, 1);
    assert!(
        !d.read_for(Duration::from_millis(300)).is_empty(),
        "a freed place is taken"
    );
}

// ---- durability ------------------------------------------------------------------------

#[test]
fn every_acknowledged_api_change_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let cfg = config(
        &format!("  state_file: {}\n", state.display()),
        "",
        &light(1),
    );
    let s = Server::start(&cfg);
    let addr = s.addr.clone();
    // A burst of writes. Before each request the writer says which id it touches, after
    // the acknowledgement what the stream must now be (a name, or None: deleted).
    enum Note {
        Attempt(u32),
        Ack(u32, Option<String>),
    }
    let (tx, rx) = std::sync::mpsc::channel::<Note>();
    let writer = std::thread::spawn(move || {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(5))
            .build();
        let url = |p: &str| format!("http://{addr}{p}");
        let send = |method: &str, path: &str, body: Option<String>| -> Option<u16> {
            let req = agent
                .request(method, &url(path))
                .set("X-Amps-Token", TOKEN)
                .set("Content-Type", "application/json");
            let r = match body {
                Some(b) => req.send_string(&b),
                None => req.call(),
            };
            r.ok().map(|r| r.status())
        };
        for i in 0..10_000u32 {
            let id = 100 + i;
            let _ = tx.send(Note::Attempt(id));
            let body = format!(
                r#"{{"id": {id}, "name": "Made {i}", "source": "http://127.0.0.1:9/{id}.ts", "ffmpeg_profile": "relay"}}"#
            );
            if send("POST", "/api/streams", Some(body)) != Some(201) {
                return;
            }
            let _ = tx.send(Note::Ack(id, Some(format!("Made {i}"))));
            if i % 3 == 1 {
                let _ = tx.send(Note::Attempt(id));
                let body = format!(r#"{{"name": "Renamed {i}"}}"#);
                if send("PATCH", &format!("/api/streams/{id}"), Some(body)) != Some(200) {
                    return;
                }
                let _ = tx.send(Note::Ack(id, Some(format!("Renamed {i}"))));
            }
            if i % 3 == 2 {
                let _ = tx.send(Note::Attempt(id));
                if send("DELETE", &format!("/api/streams/{id}"), None) != Some(204) {
                    return;
                }
                let _ = tx.send(Note::Ack(id, None));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1_500));
    s.signal("KILL");
    writer.join().unwrap();
    let mut expected = std::collections::BTreeMap::new();
    let mut in_flight = None;
    while let Ok(note) = rx.try_recv() {
        match note {
            Note::Attempt(id) => in_flight = Some(id),
            Note::Ack(id, name) => {
                in_flight = None;
                expected.insert(id, name);
            }
        }
    }
    // The write amps died during may or may not have been saved: it was never acknowledged.
    if let Some(id) = in_flight {
        expected.remove(&id);
    }
    assert!(
        expected.len() >= 20,
        "the burst made only {} changes",
        expected.len()
    );
    drop(s);

    let s = Server::start(&cfg);
    let listed = s.get("/api/streams").json();
    for (id, name) in &expected {
        let r = s.get(&format!("/api/streams/{id}"));
        match name {
            Some(n) => {
                assert_eq!(r.status, 200, "acknowledged stream {id} was lost");
                assert_eq!(
                    &r.json()["name"],
                    n,
                    "stream {id}: the acknowledged change was lost"
                );
            }
            None => assert_eq!(r.status, 404, "acknowledged delete of {id} was lost"),
        }
    }
    // Nothing more than the config's channel, the acknowledged streams and at most the
    // one write in flight when amps died.
    let live = expected.values().filter(|n| n.is_some()).count();
    let n = listed.as_array().unwrap().len();
    assert!(
        (live..=live + 2).contains(&n),
        "{n} streams for {live} acknowledged"
    );
}

// ---- upstream faults -------------------------------------------------------------------

fn fault_dir() -> std::path::PathBuf {
    let d = tempfile::tempdir().unwrap().keep();
    let hd = std::fs::read(media::dir().join("hd.ts")).unwrap();
    // Random bytes: no MPEG-TS at all.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let garbage: Vec<u8> = (0..2_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(d.join("garbage.ts"), garbage).unwrap();
    // Cut mid-packet a third of the way in.
    std::fs::write(d.join("truncated.ts"), &hd[..hd.len() / 3 + 77]).unwrap();
    std::fs::write(d.join("hd.ts"), &hd).unwrap();
    d
}

#[test]
fn broken_upstreams_fail_cleanly_while_other_channels_play_on() {
    let up = Upstream::start(fault_dir(), 0);
    let refused = "http://127.0.0.1:9/none.ts";
    let streams = format!(
        "{}  - {{id: 2, name: Garbage, source: '{}', ffmpeg_profile: relay}}\n  - {{id: 3, name: Truncated, source: '{}', ffmpeg_profile: relay}}\n  - {{id: 4, name: Refused, source: '{refused}', ffmpeg_profile: relay}}\n  - {{id: 5, name: Trickle, source: '{}', ffmpeg_profile: relay}}\n",
        light(1),
        up.url("garbage.ts"),
        up.url("truncated.ts"),
        up.url("hd.ts?live=8")
    );
    let s = Server::start(&config("", "", &streams));
    let mut healthy = Viewer::open(&s, 1);
    assert!(!healthy.read_for(Duration::from_millis(500)).is_empty());

    // Refused and garbage: a clear 503 within the start timeout, with the reason.
    for id in [4, 2] {
        let t0 = Instant::now();
        let r = s.get(&format!("/stream/{id}"));
        assert_eq!(r.status, 503, "channel {id}: {}", r.body);
        assert!(
            t0.elapsed() < Duration::from_secs(9),
            "channel {id} took {:?}",
            t0.elapsed()
        );
        assert!(r.json()["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("stream {id}")));
        let st = status(&s, id);
        assert!(st["last_error"].is_string(), "{st}");
        assert!(st["start_failures"].as_u64().unwrap() >= 1, "{st}");
    }
    // Truncated: what there is plays, then the provider's end is treated as a source end:
    // the channel notes it, reconnects (an HTTP source is live: its end is not the end of
    // the channel), and its client stays.
    let mut t = Viewer::open(&s, 3);
    let got = t.read_for(Duration::from_secs(2));
    assert!(
        got.len() > 100_000,
        "the truncated file's start plays: {}",
        got.len()
    );
    assert!(
        eventually(Duration::from_secs(15), || {
            t.read_for(Duration::from_millis(100));
            let st = status(&s, 3);
            st["restarts"].as_u64().unwrap_or(0) >= 1 && st["last_error"] == "the source ended"
        }),
        "the truncated source's end was not treated as a source end: {}",
        status(&s, 3)
    );
    assert_eq!(status(&s, 3)["clients"], 1, "its client stays");
    assert!(
        t.read_for(Duration::from_secs(2)).len() > 50_000,
        "and plays again after the reconnect"
    );
    // Trickle (half of real time): clients stay connected, status shows the speed.
    let mut slow = Viewer::open(&s, 5);
    assert!(!slow.read_for(Duration::from_secs(3)).is_empty());
    let st = status(&s, 5);
    let speed = st["speed"].as_f64().unwrap_or(1.0);
    assert!(speed < 0.8, "a trickling source shows in its speed: {st}");
    // Through all of it the healthy channel kept its pace.
    let bytes = healthy.read_for(Duration::from_secs(2));
    assert!(
        bytes.len() > 50_000,
        "the healthy channel kept playing: {}",
        bytes.len()
    );
    assert_eq!(status(&s, 1)["restarts"], 0);
    let m = s.get("/metrics").body;
    assert!(
        m.contains("amps_channel_start_failures_total{channel=\"2\""),
        "{m}"
    );
}

// ---- client faults ---------------------------------------------------------------------

/// A raw client that sends the request and never reads.
fn half_open(addr: &str, id: u32) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /stream/{id}?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    s
}

#[test]
fn clients_that_stop_reading_or_leave_during_start_cost_nothing_lasting() {
    let s = Server::start(&config(
        "  write_timeout_secs: 2\n",
        "  buffer_bytes: 1048576\n  max_client_skips: 2\n",
        &format!(
            "{}  - {{id: 2, name: HD, source: 'lavfi:testsrc2=size=1280x720:rate=25[out0];sine[out1]', ffmpeg_profile: heavy}}\n",
            light(1)
        ),
    )
    .replace(
        "ffmpeg_profiles:\n",
        "ffmpeg_profiles:\n  heavy: {video_codec: mpeg2video, video_bitrate: 8000k, audio_codec: mp2}\n",
    ));
    // Half-open clients next to a normal one.
    let stuck: Vec<TcpStream> = (0..5).map(|_| half_open(&s.addr, 2)).collect();
    let mut normal = Viewer::open(&s, 2);
    let t0 = Instant::now();
    let got = normal.read_for(Duration::from_secs(6));
    // 8 Mbit/s for 6 s is 6 MB; half of that at least, while five others are stuck.
    assert!(
        got.len() > 3_000_000,
        "the normal client was not slowed: {} bytes in {:?}",
        got.len(),
        t0.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(15), || status(&s, 2)["clients"] == 1),
        "stuck clients were dropped: {}",
        status(&s, 2)
    );
    drop(stuck);
    drop(normal);

    // Clients that leave while the channel starts: nothing keeps running afterwards.
    for _ in 0..10 {
        let c = TcpStream::connect(&s.addr).unwrap();
        let mut c2 = c.try_clone().unwrap();
        write!(
            c2,
            "GET /stream/1?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        drop(c);
        drop(c2);
    }
    assert!(
        eventually(Duration::from_secs(8), || {
            common::threads_named(s.pid(), "amps-ch-") == 0
        }),
        "channel threads stop after the grace period"
    );
    assert_eq!(status(&s, 1)["clients"], 0);
    assert_eq!(status(&s, 1)["state"], "idle");
}

#[test]
fn two_hundred_clients_joining_and_leaving_at_random() {
    let s = Server::start(&config(
        "",
        "",
        &format!("{}{}{}", light(1), light(2), light(3)),
    ));
    let (threads0, fds0) = common::threads_and_fds(s.pid());
    let addr = s.addr.clone();
    let workers: Vec<_> = (0..200u64)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                // A little deterministic randomness per client.
                let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut next = || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                std::thread::sleep(Duration::from_millis(next() % 3_000));
                let id = 1 + (next() % 3) as u32;
                let mut c = TcpStream::connect(&addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                write!(
                    c,
                    "GET /stream/{id}?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n"
                )
                .unwrap();
                let stay = Duration::from_millis(200 + next() % 2_500);
                let t0 = Instant::now();
                let mut buf = [0u8; 16 * 1024];
                let mut head = Vec::new();
                let mut n = 0usize;
                while t0.elapsed() < stay {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            if head.len() < 12 {
                                head.extend_from_slice(&buf[..k.min(12)]);
                            }
                            n += k;
                        }
                    }
                }
                (String::from_utf8_lossy(&head).into_owned(), n)
            })
        })
        .collect();
    let results: Vec<(String, usize)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    for (head, n) in &results {
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "every join was served: {head:?}"
        );
        assert!(*n > 1_000, "every client got media: {n}");
    }
    for id in 1..=3 {
        assert!(eventually(Duration::from_secs(5), || status(&s, id)
            ["clients"]
            == 0));
    }
    assert!(
        eventually(Duration::from_secs(15), || {
            let (t, f) = common::threads_and_fds(s.pid());
            t <= threads0 && f <= fds0 + 2
        }),
        "threads and fds back to their baseline ({threads0}, {fds0}): {:?}",
        common::threads_and_fds(s.pid())
    );
}

// ---- leaks -----------------------------------------------------------------------------

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_thousand_start_stop_cycles_return_threads_fds_and_memory_to_baseline() {
    // Each cycle: a client starts the channel, reads its first bytes and leaves. Idle grace
    // 0: every cycle starts and stops a producer (and races a join against the stop). The
    // channel transcodes a file: demuxer, decoder, filters, encoder and muxer each time.
    // (Not a lavfi source: FFmpeg 5.1's lavfi input device leaks one frame per close,
    // measured at about 150 KiB per start for 320x240; see docs/RELIABILITY.md.)
    let file = media::dir().join("long.ts");
    let s = Server::start(
        &config(
            "",
            "",
            &format!(
                "  - {{id: 1, name: File, source: '{}', ffmpeg_profile: light, loop: true}}\n",
                file.display()
            ),
        )
        .replace("idle_grace_secs: 1", "idle_grace_secs: 0"),
    );
    // Even cycles wait until the producer has stopped (a full start and stop); odd ones
    // join again at once, racing the producer's decision to stop.
    let cycle = |i: u32| {
        let mut v = Viewer::open(&s, 1);
        assert!(
            !v.read_for(Duration::from_millis(50)).is_empty(),
            "cycle {i}"
        );
        drop(v);
        if i % 2 == 0 {
            assert!(
                eventually(Duration::from_secs(5), || status(&s, 1)["state"] == "idle"),
                "cycle {i}: the producer did not stop"
            );
        }
    };
    for i in 0..30 {
        cycle(i);
    }
    let settle = || {
        eventually(Duration::from_secs(5), || {
            common::threads_named(s.pid(), "amps-ch-") == 0
        })
    };
    assert!(settle());
    let (t0, f0) = common::threads_and_fds(s.pid());
    let m0 = rss_kib(s.pid());
    let started = Instant::now();
    let mut m_half = 0;
    for i in 30..1030 {
        cycle(i);
        if i == 529 {
            m_half = rss_kib(s.pid());
        }
    }
    assert!(settle());
    // Blocking-pool threads that joined producers linger up to 10 s before they exit.
    assert!(
        eventually(Duration::from_secs(15), || {
            let (t, f) = common::threads_and_fds(s.pid());
            t <= t0 && f <= f0 + 2
        }),
        "threads and fds back to ({t0}, {f0}): {:?}",
        common::threads_and_fds(s.pid())
    );
    let m1 = rss_kib(s.pid());
    let starts = status(&s, 1)["starts"].as_u64().unwrap();
    eprintln!(
        "measured: 1,000 cycles in {:?}: {starts} producer starts; threads/fds {:?} -> {:?}; RSS {m0} -> {m_half} (500 cycles) -> {m1} KiB",
        started.elapsed(),
        (t0, f0),
        common::threads_and_fds(s.pid())
    );
    // 515 of the 1,030 cycles waited for the stop; each of those started anew.
    assert!(
        starts >= 515,
        "every waited-for cycle started the producer anew: {starts}"
    );
    // Back to the baseline: 4 MiB over 1,000 cycles is 4 KiB a cycle (measured: +0.3 MiB
    // in all), and the second 500 cycles may not grow more than 2 MiB (a leak grows
    // steadily; allocator arenas settle in the first cycles).
    assert!(
        m1 < m0 + 4 * 1024,
        "resident memory {m0} KiB -> {m_half} KiB -> {m1} KiB after 1,000 cycles in {:?}",
        started.elapsed()
    );
    assert!(
        m1 < m_half + 2 * 1024,
        "resident memory grew {m_half} KiB -> {m1} KiB over the last 500 cycles"
    );
}

// ---- hostile requests ------------------------------------------------------------------

/// Sends raw bytes as one request; returns the status code.
fn raw(addr: &str, request: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    std::str::from_utf8(&head[9..12.min(got.max(9))])
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn hostile_requests_get_a_4xx_never_a_5xx_or_a_crash() {
    let s = Server::start(&config("", "", &light(1)));
    let get = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nX-Amps-Token: {TOKEN}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
    };
    let post = |path: &str, body: &[u8]| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nX-Amps-Token: {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let deep = format!("{}1{}", "[".repeat(50_000), "]".repeat(50_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot id", get("/api/streams/..%2F..%2Fetc%2Fpasswd")),
        ("dot-dot path", get("/api/streams/1/../../../etc/passwd")),
        ("fractional id", get("/api/streams/1.0")),
        ("negative id", get("/api/streams/-1")),
        ("huge id", get("/api/streams/99999999999999999999")),
        ("NUL in id", get("/stream/%00")),
        (
            "bad UTF-8 tuner token",
            b"GET /hdhr/%ff%fe/discover.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        ("bad UTF-8 body", post("/api/streams", b"\xff\xfe\xfd")),
        ("deep nesting", post("/api/streams", deep.as_bytes())),
        ("wrong type", post("/api/streams", b"[]")),
        ("huge number", post("/api/streams", br#"{"id": 1e999, "name": "x", "source": "http://h/x"}"#)),
        ("id overflow", post("/api/streams", br#"{"id": 4294967296, "name": "x", "source": "http://h/x"}"#)),
        ("file source", post("/api/streams", br#"{"id": 9, "name": "x", "source": "/etc/passwd", "ffmpeg_profile": "relay"}"#)),
        ("concat source", post("/api/streams", br#"{"id": 9, "name": "x", "source": "concat:/etc/passwd|/etc/shadow", "ffmpeg_profile": "relay"}"#)),
        ("subfile source", post("/api/streams", br#"{"id": 9, "name": "x", "source": "subfile,,start,0,end,0,,:/etc/passwd", "ffmpeg_profile": "relay"}"#)),
        ("data source", post("/api/streams", br#"{"id": 9, "name": "x", "source": "data:text/plain,hello", "ffmpeg_profile": "relay"}"#)),
        ("command", post("/api/streams", br#"{"id": 9, "name": "x", "source": "http://h/x", "custom_ffmpeg": "sh -c 'id'"}"#)),
        ("garbage request line", b"\x00\x01\x02 / HTTP/1.1\r\n\r\n".to_vec()),
    ];
    for (what, req) in cases {
        let code = raw(&s.addr, &req);
        assert!((400..500).contains(&code), "{what}: answered {code}");
    }
    // Still serving.
    assert_eq!(s.get("/api/streams").status, 200);
    assert!(!Viewer::open(&s, 1)
        .read_for(Duration::from_millis(200))
        .is_empty());
}

#[test]
fn a_live_hls_playlist_that_stops_updating_is_detected_and_retried() {
    // A live playlist (no ENDLIST) whose segments never advance: after the last segment
    // the provider is silent. Clients stay connected while Amps retries.
    let d = tempfile::tempdir().unwrap().keep();
    for e in std::fs::read_dir(media::dir()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("hd0") {
            std::fs::copy(e.path(), d.join(&name)).unwrap();
        }
    }
    let vod = std::fs::read_to_string(media::dir().join("hd.m3u8")).unwrap();
    let live: String = vod
        .lines()
        .filter(|l| !l.starts_with("#EXT-X-ENDLIST") && !l.starts_with("#EXT-X-PLAYLIST-TYPE"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(d.join("live.m3u8"), live).unwrap();
    let up = Upstream::start(d, 0);
    let s = Server::start(&config(
        "",
        "",
        &format!(
            "{}  - {{id: 2, name: Stale HLS, source: '{}', ffmpeg_profile: relay}}\n",
            light(1),
            up.url("live.m3u8")
        ),
    ));
    let mut other = Viewer::open(&s, 1);
    let mut v = Viewer::open(&s, 2);
    assert!(
        v.read_for(Duration::from_secs(2)).len() > 100_000,
        "the segments there are play"
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let st = status(&s, 2);
            st["restarts"].as_u64().unwrap_or(0) >= 1
                && st["last_error"].as_str().is_some_and(|e| !e.is_empty())
        }),
        "the stale playlist was noticed: {}",
        status(&s, 2)
    );
    assert_eq!(
        status(&s, 2)["clients"],
        1,
        "its client stays connected while it retries"
    );
    assert!(
        other.read_for(Duration::from_secs(1)).len() > 10_000,
        "the other channel plays on"
    );
    let m = s.get("/metrics").body;
    assert!(
        m.contains("amps_channel_restarts_total{channel=\"2\",producer=\"libav\"}"),
        "{m}"
    );
}

/// A client socket with a 16 KiB receive buffer (the kernel doubles it) (set before connecting, so the TCP window
/// stays small and the kernel cannot absorb a slow reader's lag for it).
fn small_buffer_client(addr: &str) -> TcpStream {
    use std::os::fd::FromRawFd;
    let addr: std::net::SocketAddrV4 = addr.parse().unwrap();
    // SAFETY: plain socket calls on a descriptor we own; the stream takes ownership.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 16384;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            4,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        assert_eq!(
            libc::connect(
                fd,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of_val(&sa) as u32
            ),
            0
        );
        TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn a_client_reading_at_a_tenth_of_the_rate_never_stalls_the_others() {
    // A 256 KiB backlog and max_client_skips 0: the first time the slow client falls
    // behind the backlog it is dropped. The write timeout is long, so it is the skip that
    // drops it. What delays the drop is the server's socket send buffer: Linux grows it to
    // about 3 MB for this connection whatever the client's receive buffer (measured with
    // `ss -tm`: Send-Q 3.2 MB), and wakes the writer only when it has drained to about
    // half: at a tenth of the rate that takes tens of seconds.
    let s = Server::start(
        &config(
            "  write_timeout_secs: 120\n",
            "  buffer_bytes: 262144\n  max_client_skips: 0\n",
            "  - {id: 1, name: Busy, source: 'lavfi:testsrc2=size=1280x720:rate=25[out0];sine[out1]', ffmpeg_profile: heavy}\n",
        )
        .replace(
            "ffmpeg_profiles:\n",
            "ffmpeg_profiles:\n  heavy: {video_codec: mpeg2video, video_bitrate: 8000k, gop: 12, audio_codec: mp2}\n",
        ),
    );
    let addr = s.addr.clone();
    // The slow one: 100 KB/s against an 8 Mbit/s (1 MB/s) channel, with a small receive
    // buffer. It falls behind by 900 KB a second.
    let slow = std::thread::spawn(move || {
        let mut c = small_buffer_client(&addr);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(c, "GET /stream/1?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 10_000];
        let t0 = Instant::now();
        let mut n = 0;
        let mut ended = None;
        while t0.elapsed() < Duration::from_secs(90) {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => {
                    ended = Some(t0.elapsed());
                    break;
                }
                Ok(k) => n += k,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (n, ended)
    });
    // Normal clients: measure the largest gap between reads.
    let normals: Vec<_> = (0..3)
        .map(|_| {
            let addr = s.addr.clone();
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(&addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                write!(c, "GET /stream/1?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                let t0 = Instant::now();
                let (mut n, mut gap, mut last) = (0usize, Duration::ZERO, Instant::now());
                while t0.elapsed() < Duration::from_secs(8) {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            n += k;
                            gap = gap.max(last.elapsed());
                            last = Instant::now();
                        }
                    }
                }
                (n, gap)
            })
        })
        .collect();
    for h in normals {
        let (n, gap) = h.join().unwrap();
        assert!(
            n > 5_000_000,
            "a normal client got {n} bytes in 8 s (8 Mbit/s is 8 MB)"
        );
        assert!(
            gap < Duration::from_millis(1_000),
            "a normal client waited {gap:?} once"
        );
    }
    let (slow_bytes, ended) = slow.join().unwrap();
    let st = status(&s, 1);
    eprintln!(
        "measured: slow client read {slow_bytes} bytes, ended after {ended:?}; skips {}, drops {}",
        st["client_skips"], st["client_drops"]
    );
    // It was served at its own pace (10 KB every 100 ms) until it fell too far behind...
    let ended = ended.expect("the slow client was never dropped in 90 s");
    let pace = slow_bytes as f64 / ended.as_secs_f64().max(0.1);
    assert!(
        pace > 60_000.0,
        "the slow client was served at its pace: {slow_bytes} bytes in {ended:?}"
    );
    // ...then fell behind the backlog, and was dropped for it.
    assert_eq!(st["client_skips"], 1, "{st}");
    assert_eq!(st["client_drops"], 1, "{st}");
    assert_eq!(st["restarts"], 0, "{st}");
}

#[test]
fn idle_connections_are_closed_by_the_header_timeout() {
    let s = Server::start(&config("  header_timeout_secs: 2\n", "", &light(1)));
    // A connection that never sends a byte (slowloris' cheapest form)...
    let mut silent = TcpStream::connect(&s.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(6)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "closed after {:?} ({n} bytes)",
        t0.elapsed()
    );
    // ...and a keep-alive connection left idle after a request.
    let mut kept = TcpStream::connect(&s.addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    write!(kept, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let t0 = Instant::now();
    loop {
        match kept.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "an idle keep-alive connection was closed after {:?}",
        t0.elapsed()
    );
}

#[test]
fn jumps_in_a_sources_timestamps_do_not_stall_or_break_the_output() {
    // Three 2 s pieces: 0-2 s, then 1000-1002 s (a jump forward), then 0-2 s again (a
    // jump back), as an upstream encoder restart or a splice produces them.
    let d = tempfile::tempdir().unwrap().keep();
    let piece = |name: &str, offset: &str| {
        media::generate(
            &d.join(name),
            "320x240",
            2,
            &[],
            &["-output_ts_offset", offset],
        );
        std::fs::read(d.join(name)).unwrap()
    };
    let a = piece("a.ts", "0");
    let b = piece("b.ts", "1000");
    std::fs::write(d.join("jumps.ts"), [a.clone(), b, a].concat()).unwrap();
    let src = d.join("jumps.ts");
    let s = Server::start(&config(
        "",
        "",
        &format!(
            "  - {{id: 1, name: Jumps, source: '{}', ffmpeg_profile: relay}}\n  - {{id: 2, name: Jumps transcoded, source: '{}', ffmpeg_profile: light}}\n",
            src.display(),
            src.display()
        ),
    ));
    for id in [1, 2] {
        let t0 = Instant::now();
        let mut v = Viewer::open(&s, id);
        let bytes = v.read_for(Duration::from_secs(15));
        let wall = t0.elapsed();
        // 6 s of media paced to real time: at least 6 s less the 1 s the output may lead
        // by; a stall on a jump would make it longer, skipping the pacing shorter.
        assert!(
            (Duration::from_millis(4_500)..Duration::from_secs(10)).contains(&wall),
            "channel {id}: the file took {wall:?} (stalled on a jump, or not paced?)"
        );
        let path = common::save(&bytes, &format!("jumps-{id}.ts"));
        // In the order received: every stream's timestamps only go forward, never by
        // 0.5 s or more (no hole in the timeline), audio and video stay together.
        let r = ts::check(&bytes);
        eprintln!("measured: jumps channel {id}: {}", r.summary());
        r.assert_clean(&format!("channel {id}"), 0.5, 0.5);
        for (kind, st) in [("video", r.video().unwrap()), ("audio", r.audio().unwrap())] {
            assert!(
                (5.0..7.0).contains(&st.span()),
                "channel {id}: {} s of {kind} for 6 s of source ({} PES)",
                st.span(),
                st.pes
            );
        }
        let frames = media::video_csv(&path, "packet=pts_time", &[])
            .lines()
            .count();
        assert!(frames >= 140, "channel {id}: {frames} of 150 frames");
        assert_eq!(media::decode_errors(&path), "", "channel {id}");
    }
}

// ---- process -----------------------------------------------------------------------------

/// Every descendant of `pid` (children of all its threads, recursively).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

#[test]
fn sigterm_with_pipelines_processes_and_clients_exits_promptly_leaving_nothing() {
    let ffmpeg = "ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=sample_rate=48000 -c:v libx264 -preset ultrafast -g 25 -c:a aac -f mpegts pipe:1";
    let streams = format!(
        "{}{}  - id: 3\n    name: Process\n    source: unused\n    custom_ffmpeg: {ffmpeg:?}\n  - id: 4\n    name: Shell pipeline\n    source: unused\n    custom_ffmpeg: {{command: {:?}, shell: true}}\n",
        light(1),
        light(2),
        format!("{ffmpeg} | cat")
    );
    let mut s = Server::start(&config("", "", &streams));
    let mut viewers: Vec<Viewer> = (1..=4).map(|id| Viewer::open(&s, id)).collect();
    for v in &mut viewers {
        assert!(!v.read_for(Duration::from_millis(500)).is_empty());
    }
    let kids = descendants(s.pid());
    // ffmpeg (3), sh + ffmpeg + cat (4).
    assert!(kids.len() >= 4, "{kids:?}");
    let t0 = Instant::now();
    let status = s
        .terminate(Duration::from_secs(8))
        .expect("amps exits after SIGTERM");
    eprintln!(
        "measured: SIGTERM to exit with 4 channels and 4 clients: {:?}",
        t0.elapsed()
    );
    assert!(status.success());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(
        eventually(Duration::from_secs(2), || kids
            .iter()
            .all(|k| !common::alive(*k))),
        "left behind: {:?}",
        kids.iter()
            .filter(|k| common::alive(**k))
            .collect::<Vec<_>>()
    );
    for v in &mut viewers {
        assert!(
            v.ends_within(Duration::from_secs(2)),
            "clients get a clean end"
        );
    }
}
