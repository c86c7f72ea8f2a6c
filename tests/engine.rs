//! End-to-end tests of the media engine: the real binary, real libav, media made by the
//! real ffmpeg CLI, served over loopback HTTP, checked with ffprobe.

mod common;

use common::media;
use common::ts;
use common::upstream::Upstream;
use common::{eventually, save, threads_and_fds, threads_named, Server, Viewer, TOKEN};
use std::time::Duration;

fn config(streams: &str, engine: &str) -> String {
    format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  start_timeout_secs: 10\n{engine}ffmpeg_profiles:\n  relay: {{video_codec: copy, audio_codec: copy}}\n  x720: {{video_codec: libx264, video_bitrate: 2000k, maxrate: 2000k, bufsize: 2000k, resolution: x720, preset: ultrafast, gop: 50, audio_codec: aac, audio_bitrate: 128k}}\nstreams:\n{streams}"
    )
}

fn stream(id: u32, source: &str, profile: &str, extra: &str) -> String {
    format!(
        "  - {{id: {id}, name: Ch{id}, source: '{source}', ffmpeg_profile: {profile}{extra}}}\n"
    )
}

fn upstream() -> Upstream {
    Upstream::start(media::dir().to_path_buf(), 0)
}

#[test]
fn copy_channel_relays_the_source_codecs_and_decodes_cleanly() {
    let up = upstream();
    let s = Server::start(&config(&stream(1, &up.url("hd.ts"), "relay", ""), ""));
    let mut v = Viewer::open(&s, 1);
    let bytes = v.read_for(Duration::from_secs(3));
    let f = save(&bytes, "copy.ts");
    assert_eq!(media::codecs(&f), vec!["h264", "aac"]);
    assert_eq!(media::resolution(&f), (1920, 1080));
    assert!(media::starts_with_keyframe(&f));
    assert_eq!(media::decode_errors(&f), "");
    ts::assert_clean(&bytes, "copy channel");
    let st = s.get("/api/streams/1/status").json();
    assert_eq!(st["state"], "running");
    assert_eq!(st["input_codecs"], serde_json::json!(["h264", "aac"]));
    assert_eq!(
        st["output_codecs"],
        serde_json::json!(["h264 (copy)", "aac (copy)"])
    );
}

#[test]
fn transcode_channel_has_the_profile_codec_resolution_and_bitrate() {
    let up = upstream();
    let s = Server::start(&config(
        &stream(2, &up.url("hd.ts"), "x720", ", loop: true"),
        "",
    ));
    let mut v = Viewer::open(&s, 2);
    let bytes = v.read_for(Duration::from_secs(9));
    let f = save(&bytes, "x720.ts");
    assert_eq!(media::codecs(&f), vec!["h264", "aac"]);
    assert_eq!(media::resolution(&f), (1280, 720));
    assert_eq!(media::decode_errors(&f), "");
    ts::assert_clean(&bytes, "transcoded channel");
    let (bps, secs) = media::video_bitrate(&f);
    // Real time: 9 s of reading holds 9 s of media, plus at most the 1 s the output may
    // lead real time by, less the start.
    assert!(
        (6.0..10.5).contains(&secs),
        "{secs} s of video in 9 s: not real time"
    );
    assert!(
        (1_600_000.0..=2_400_000.0).contains(&bps),
        "video bitrate {bps} is not within 20% of 2000k"
    );
    let st = s.get("/api/streams/2/status").json();
    assert!(st["frames_encoded"].as_u64().unwrap() > 100, "{st}");
    assert!(st["speed"].as_f64().unwrap() > 0.8, "{st}");
}

#[test]
fn hls_and_looped_file_sources_play_past_their_end() {
    let up = upstream();
    let file = media::dir().join("hd.ts");
    let streams = stream(3, &up.url("hd.m3u8"), "relay", ", loop: true")
        + &stream(4, &file.display().to_string(), "relay", ", loop: true");
    let s = Server::start(&config(&streams, ""));
    for id in [3, 4] {
        let mut v = Viewer::open(&s, id);
        let bytes = v.read_for(Duration::from_secs(7));
        let f = save(&bytes, &format!("loop{id}.ts"));
        let secs = media::video_bitrate(&f).1;
        assert!(
            (5.5..8.5).contains(&secs),
            "channel {id}: {secs} s of a looped 4 s source in 7 s: not real time"
        );
        assert_eq!(media::decode_errors(&f), "", "channel {id}");
        ts::assert_clean(&bytes, &format!("looped channel {id}"));
    }
}

#[test]
fn clients_share_one_pipeline_and_late_joiners_start_on_a_keyframe() {
    let up = upstream();
    let s = Server::start(&config(&stream(5, &up.url("long.ts"), "relay", ""), ""));
    let mut a = Viewer::open(&s, 5);
    let mut b = Viewer::open(&s, 5);
    let ta = std::thread::spawn(move || a.read_for(Duration::from_secs(4)));
    std::thread::sleep(Duration::from_millis(1500));
    let mut c = Viewer::open(&s, 5);
    let late = c.read_for(Duration::from_secs(2));
    let bb = b.read_for(Duration::from_secs(2));
    let aa = ta.join().unwrap();
    assert_eq!(
        threads_named(s.pid(), "amps-ch-"),
        1,
        "one pipeline for three clients"
    );
    assert_eq!(
        up.requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one upstream connection"
    );
    // Every client gets the same bytes: b's and the late joiner's streams (after the
    // PAT+PMT they start with) appear verbatim in a's.
    for (name, got) in [("second", &bb), ("late", &late)] {
        assert!(got.len() > 10_000, "{name} got {} bytes", got.len());
        let probe = &got[376..376 + 4096];
        assert!(
            aa.windows(probe.len()).any(|w| w == probe),
            "{name} client's bytes differ from the first client's"
        );
    }
    // The late joiner starts with PAT, PMT, then a keyframe.
    assert_eq!(late[0], 0x47);
    assert_eq!(
        ((late[1] & 0x1f) as u16) << 8 | late[2] as u16,
        0,
        "PAT first"
    );
    let f = save(&late, "late.ts");
    assert!(media::starts_with_keyframe(&f));
    assert_eq!(media::decode_errors(&f), "");
    ts::assert_clean(&late, "late joiner");
    ts::assert_clean(&bb, "second client");
}

/// A client that connects, asks for a stream and never reads, with a tiny receive buffer.
fn stalled_client(s: &Server, id: u32) -> std::net::TcpStream {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let addr: std::net::SocketAddrV4 = s.addr.parse().unwrap();
    // SAFETY: plain socket calls on a descriptor we own; the stream takes ownership.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let size: libc::c_int = 4096;
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
        std::net::TcpStream::from_raw_fd(fd)
    };
    let mut w = &stream;
    write!(
        w,
        "GET /stream/{id}?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    stream
}

#[test]
fn a_client_that_stops_reading_does_not_delay_the_others_and_is_dropped() {
    let up = upstream();
    let s = Server::start(
        &config(&stream(6, &up.url("hd.ts"), "relay", ", loop: true"), "")
            .replace("server:\n", "server:\n  write_timeout_secs: 2\n"),
    );
    let _stalled = stalled_client(&s, 6);
    let mut reader = Viewer::open(&s, 6);
    let bytes = reader.read_for(Duration::from_secs(6));
    let f = save(&bytes, "unstalled.ts");
    let secs = media::video_bitrate(&f).1;
    assert!(
        (4.5..7.5).contains(&secs),
        "the reading client got {secs} s of media in 6 s (real time: 6, plus 1 s lead)"
    );
    assert_eq!(media::decode_errors(&f), "");
    ts::assert_clean(&bytes, "the reading client");
    // The stalled client's writes block, time out, and its connection is closed.
    let mut clients = 0;
    let gone = eventually(Duration::from_secs(20), || {
        reader.read_for(Duration::from_millis(100));
        clients = s.get("/api/streams/6/status").json()["clients"]
            .as_u64()
            .unwrap();
        clients == 1
    });
    assert!(
        gone,
        "the stalled client is still attached ({clients} clients)"
    );
}

#[test]
fn a_silent_upstream_is_detected_and_reopened() {
    let up = upstream();
    let s = Server::start(&config(
        &stream(
            12,
            &up.url("long.ts?live=30&stall_after=300000"),
            "relay",
            "",
        ),
        "  stall_timeout_secs: 2\n",
    ));
    let mut v = Viewer::open(&s, 12);
    let first = v.read_for(Duration::from_secs(7));
    assert!(first.len() > 100_000);
    assert!(
        eventually(Duration::from_secs(5), || up
            .requests
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2),
        "amps did not reconnect to a silent upstream"
    );
    let st = s.get("/api/streams/12/status").json();
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("no data from the source"),
        "{st}"
    );
    assert!(
        v.read_for(Duration::from_secs(3)).len() > 20_000,
        "the client stopped receiving after the reconnect"
    );
}

#[test]
fn a_broken_upstream_is_reconnected_while_clients_stay() {
    let up = upstream();
    let port = up.port;
    let s = Server::start(&config(
        &stream(7, &up.url("long.ts?live=30"), "relay", ""),
        "  stall_timeout_secs: 2\n",
    ));
    let mut v = Viewer::open(&s, 7);
    let before = v.read_for(Duration::from_secs(2));
    assert!(before.len() > 50_000);
    up.kill();
    let during = v.read_for(Duration::from_millis(1500));
    let up2 = Upstream::start(media::dir().to_path_buf(), port);
    let after = v.read_for(Duration::from_secs(5));
    assert!(
        after.len() > 100_000,
        "only {} bytes after the upstream came back ({} during)\n{}",
        after.len(),
        during.len(),
        s.logs()
    );
    assert!(up2.requests.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let f = save(&after, "after.ts");
    assert_eq!(media::codecs(&f), vec!["h264", "aac"]);
    // One stream for the client through the reconnect.
    let all = [before, during, after].concat();
    assert_eq!(
        media::decode_errors(&save(&all, "reconnect-all.ts")),
        "",
        "across the reconnect"
    );
    ts::assert_clean(&all, "a client kept across a reconnect");
    let st = s.get("/api/streams/7/status").json();
    // A live MPEG-TS source of a copy channel: relayed packet for packet.
    assert_eq!(st["ts_relay"], true, "{st}");
    assert!(st["restarts"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["last_error"].as_str().is_some(), "{st}");
}

#[test]
fn the_last_client_leaving_stops_the_pipeline_after_the_grace_period_without_leaks() {
    let s = Server::start(&config(
        &stream(
            8,
            "lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]",
            "x720",
            "",
        ),
        "  idle_grace_secs: 1\n",
    ));
    // Warm up once so lazily created runtime threads exist before the baseline.
    let mut v = Viewer::open(&s, 8);
    v.read_for(Duration::from_millis(500));
    drop(v);
    assert!(
        eventually(Duration::from_secs(5), || threads_named(
            s.pid(),
            "amps-ch-"
        ) == 0),
        "pipeline still running after the grace period"
    );
    assert_eq!(s.get("/api/streams/8/status").json()["state"], "idle");
    let (threads0, fds0) = threads_and_fds(s.pid());
    for _ in 0..15 {
        let mut v = Viewer::open(&s, 8);
        assert!(!v.read_for(Duration::from_millis(200)).is_empty());
        drop(v);
        assert!(eventually(Duration::from_secs(5), || threads_named(
            s.pid(),
            "amps-ch-"
        ) == 0));
    }
    // Give the runtime a moment to drop closed sockets.
    assert!(
        eventually(Duration::from_secs(3), || {
            let (t, f) = threads_and_fds(s.pid());
            t <= threads0 + 2 && f <= fds0 + 2
        }),
        "leak: threads/fds {:?} -> {:?}",
        (threads0, fds0),
        threads_and_fds(s.pid())
    );
}

#[test]
fn deleting_a_stream_ends_its_clients_and_changing_it_moves_them() {
    let s = Server::start(
        &config(
            &(stream(
                9,
                "lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]",
                "x720",
                "",
            ) + &stream(
                10,
                "lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]",
                "x720",
                "",
            )),
            "",
        )
        .replace("server:\n", "server:\n  allow_api_local_sources: true\n"),
    );
    // Change: the client stays and continues with the new output.
    let mut v = Viewer::open(&s, 10);
    // Everything this client receives, across the restart.
    let mut all = v.read_for(Duration::from_millis(800));
    assert!(!all.is_empty());
    // A change that does not touch the media (name, programs) does not restart anything.
    let started = s.get("/api/streams/10/status").json()["started_at"].clone();
    assert_eq!(
        s.send_json("PATCH", "/api/streams/10", r#"{"name": "Renamed"}"#)
            .status,
        200
    );
    assert_eq!(
        s.send_json("PUT", "/api/streams/10/programs", r#"[{"title": "News"}]"#)
            .status,
        200
    );
    let more = v.read_for(Duration::from_millis(500));
    assert!(!more.is_empty());
    all.extend(more);
    let st = s.get("/api/streams/10/status").json();
    assert_eq!(
        st["started_at"], started,
        "renaming restarted the pipeline: {st}"
    );
    assert_eq!(st["restarts"], 0);
    let r = s.send_json(
        "PATCH",
        "/api/streams/10",
        r#"{"source": "lavfi:testsrc2=size=640x360:rate=25[out0];sine[out1]"}"#,
    );
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let after = v.read_for(Duration::from_secs(3));
    let f = save(&after, "changed.ts");
    // x720 keeps the aspect ratio: the old 4:3 source gives 960x720, the new 16:9 one 1280x720.
    let widths = media::frame_widths(&f);
    assert_eq!(
        widths.last(),
        Some(&1280),
        "the new source is being served: {widths:?}"
    );
    // The kept client's one stream decodes through the restart, and its timeline goes on:
    // timestamps never go back, counters jump only where flagged as a discontinuity.
    all.extend(after);
    let f = save(&all, "changed-all.ts");
    assert_eq!(media::decode_errors(&f), "", "across the restart");
    let r = ts::assert_clean(&all, "a client kept across a source change");
    assert!(
        r.discontinuities >= 1,
        "the restart is flagged: {}",
        r.summary()
    );

    // Delete: the client's stream ends.
    let mut d = Viewer::open(&s, 9);
    assert!(!d.read_for(Duration::from_millis(500)).is_empty());
    assert_eq!(
        s.request("DELETE", "/api/streams/9", &[("X-Amps-Token", TOKEN)], None)
            .status,
        204
    );
    assert!(
        d.ends_within(Duration::from_secs(3)),
        "client of a deleted stream still connected"
    );
    assert_eq!(s.get("/stream/9").status, 404);
}

#[test]
fn a_source_that_cannot_be_opened_is_a_503_not_a_hang() {
    let s = Server::start(&config(
        &stream(11, "http://127.0.0.1:9/nothing.ts", "relay", ""),
        "",
    ));
    let t0 = std::time::Instant::now();
    let r = s.get("/stream/11");
    assert_eq!(r.status, 503);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t0.elapsed()
    );
    let j = r.json();
    assert_eq!(j["error"], "unavailable");
    assert!(j["detail"].as_str().unwrap().contains("cannot open"), "{j}");
    assert_eq!(s.get("/api/streams/11/status").json()["state"], "failed");
    // Other channels are unaffected and the server still answers.
    assert_eq!(s.request("GET", "/health", &[], None).status, 200);
}

#[test]
fn a_file_without_loop_plays_once_and_its_clients_get_a_clean_end() {
    let file = media::dir().join("hd.ts");
    let s = Server::start(&config(
        &stream(13, &file.display().to_string(), "relay", ""),
        "",
    ));
    let mut v = Viewer::open(&s, 13);
    let t0 = std::time::Instant::now();
    assert!(
        v.ends_within(Duration::from_secs(10)),
        "the stream of a 4 s file did not end"
    );
    // 4 s of media at real time, less the 1 s the output may lead by; plus the start.
    assert!(
        (Duration::from_millis(2_800)..Duration::from_secs(7)).contains(&t0.elapsed()),
        "ended after {:?}: not paced to real time",
        t0.elapsed()
    );
    let st = s.get("/api/streams/13/status").json();
    assert_eq!(st["state"], "idle", "{st}");
    assert_eq!(st["restarts"], 0, "{st}");
}

/// T-STD timing (ISO 13818-1 2.4.2.3): every PES must be in the decoder's buffer before its
/// DTS, so no DTS may be below the PCR that precedes it. The muxer's PCR leads the DTS by
/// 100 ms (before, with no mux delay, audio PES arrived up to about 21 ms late). Checked by
/// tstools' `tsreport` over a whole file played once (one muxer), and by our own checker
/// over a looped one: at a loop the new muxer's first packets are flagged as a
/// discontinuity, which `tsreport` does not honour (it interpolates the PCR across it).
#[test]
fn every_pes_arrives_before_its_decoding_time() {
    let up = upstream();
    // A local file plays once (an HTTP source that ends is reconnected).
    let file = media::dir().join("hd.ts");
    let file = file.to_str().unwrap();
    let streams = stream(20, file, "relay", "")
        + &stream(21, file, "x720", "")
        + &stream(22, &up.url("hd.ts"), "relay", ", loop: true")
        + &stream(23, &up.url("hd.ts"), "x720", ", loop: true");
    let s = Server::start(&config(&streams, ""));
    for id in [20, 21] {
        // The 4 s file, played once to its end.
        let mut v = Viewer::open(&s, id);
        let bytes = v.read_for(Duration::from_secs(10));
        let r = ts::check(&bytes);
        eprintln!("measured: channel {id}: {}", r.summary());
        assert!(r.packets > 1_000, "channel {id}: {}", r.summary());
        let (_, late, text) = ts::tsreport(&save(&bytes, &format!("tstd{id}.ts")));
        assert_eq!(late, 0, "channel {id}: tsreport: {text}");
        r.assert_arrives_before_dts(&format!("channel {id}"));
    }
    for id in [22, 23] {
        let mut v = Viewer::open(&s, id);
        let bytes = v.read_for(Duration::from_secs(6));
        let r = ts::check(&bytes);
        eprintln!("measured: looped channel {id}: {}", r.summary());
        r.assert_arrives_before_dts(&format!("looped channel {id}"));
    }
}
