//! Source protocols end to end, each served on loopback by a real server the test starts:
//! MPEG-TS over UDP (the ffmpeg CLI sending to 127.0.0.1, as a multicast-to-unicast
//! gateway would), HTTPS with a self-signed certificate (`openssl s_server`), RTSP (the
//! ffmpeg CLI publishing to Amps listening with `rtsp_flags: listen`), and a live HLS
//! playlist that keeps updating (the ffmpeg CLI's HLS muxer writing in real time). The
//! output is checked with ffprobe and the TS checker.

mod common;

use common::{free_port, media, save, ts, Server, Viewer, TOKEN};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed when dropped.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(streams: &str) -> String {
    format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  start_timeout_secs: 20\nffmpeg_profiles:\n  relay: {{video_codec: copy, audio_codec: copy}}\nstreams:\n{streams}"
    )
}

/// Generated H.264 + AAC, sent in real time (looping) by the ffmpeg CLI with `output`.
fn sender(output: &[&str]) -> Kill {
    let src = media::dir().join("long.ts");
    let child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-v",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ])
        .arg(&src)
        .args(["-c", "copy"])
        .args(output)
        .stdin(Stdio::null())
        .spawn()
        .expect("ffmpeg");
    Kill(child)
}

fn check_relay(bytes: &[u8], what: &str) {
    assert!(bytes.len() > 50_000, "{what}: {} bytes", bytes.len());
    let f = save(bytes, "source.ts");
    assert_eq!(media::codecs(&f), vec!["h264", "aac"], "{what}");
    assert_eq!(media::decode_errors(&f), "", "{what}");
    assert!(media::starts_with_keyframe(&f), "{what}");
    ts::assert_clean(bytes, what);
}

#[test]
fn a_udp_source_is_relayed() {
    let port = free_port();
    let _send = sender(&[
        "-f",
        "mpegts",
        &format!("udp://127.0.0.1:{port}?pkt_size=1316"),
    ]);
    let s = Server::start(&config(&format!(
        "  - {{id: 1, name: Udp, source: 'udp://127.0.0.1:{port}', ffmpeg_profile: relay}}\n"
    )));
    let mut v = Viewer::open(&s, 1);
    check_relay(&v.read_for(Duration::from_secs(4)), "UDP");
}

/// A self-signed certificate for 127.0.0.1 in `dir`: (cert, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed")
        .success();
    assert!(ok, "openssl req");
    (cert, key)
}

#[test]
fn an_https_source_with_a_self_signed_certificate_is_relayed() {
    let dir = media::dir();
    let (cert, key) = certificate(&tempfile::tempdir().unwrap().keep());
    let port = free_port();
    // `-WWW` serves the files of its working directory.
    let server = Command::new("openssl")
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let _server = Kill(server);
    assert!(common::eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let s = Server::start(&config(&format!(
        "  - {{id: 1, name: Tls, source: 'https://127.0.0.1:{port}/long.ts', ffmpeg_profile: relay}}\n"
    )));
    let mut v = Viewer::open(&s, 1);
    check_relay(&v.read_for(Duration::from_secs(4)), "HTTPS");
}

#[test]
fn an_rtsp_publisher_is_relayed() {
    let port = free_port();
    let url = format!("rtsp://127.0.0.1:{port}/live");
    let s = Server::start(&config(&format!(
        "  - {{id: 1, name: Rtsp, source: '{url}', ffmpeg_profile: listen}}\n"
    )).replace(
        "ffmpeg_profiles:\n",
        "ffmpeg_profiles:\n  listen: {video_codec: copy, audio_codec: copy, input_options: {rtsp_flags: listen, listen_timeout: '20'}}\n",
    ));
    // Amps listens once a viewer starts the channel; then the CLI publishes to it.
    let viewer = {
        let s_url = s.url(&format!("/stream/1?token={TOKEN}"));
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new()
                .timeout_read(Duration::from_secs(15))
                .build();
            let resp = agent.get(&s_url).call().expect("the channel starts");
            let mut r = resp.into_reader();
            let (t0, mut bytes, mut buf) =
                (std::time::Instant::now(), Vec::new(), vec![0u8; 65536]);
            while t0.elapsed() < Duration::from_secs(4) {
                match std::io::Read::read(&mut r, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => bytes.extend_from_slice(&buf[..n]),
                }
            }
            bytes
        })
    };
    // (No probe of the port: Amps' listener takes the first connection as the publisher.)
    std::thread::sleep(Duration::from_millis(1500));
    // (The CLI cannot copy ADTS AAC into RTSP, which needs its global header: it encodes.)
    let _send = sender(&["-c:a", "aac", "-f", "rtsp", "-rtsp_transport", "tcp", &url]);
    let bytes = viewer.join().unwrap();
    // An RTSP source's streams are only in sync once the publisher's first RTCP sender
    // reports arrive (about a second in): libav's timestamps jump there, the CLI's too.
    // Everything else is checked as for the other sources.
    assert!(bytes.len() > 50_000, "RTSP: {} bytes", bytes.len());
    let f = save(&bytes, "rtsp.ts");
    assert_eq!(media::codecs(&f), vec!["h264", "aac"]);
    assert_eq!(media::decode_errors(&f), "");
    assert!(media::starts_with_keyframe(&f));
    let r = ts::check(&bytes);
    eprintln!("measured: RTSP: {}", r.summary());
    assert_eq!(
        (r.sync_errors, r.cc_errors, r.duplicates),
        (0, 0, 0),
        "{}",
        r.summary()
    );
}

#[test]
fn a_live_hls_source_that_keeps_updating_is_relayed() {
    let dir = tempfile::tempdir().unwrap().keep();
    let playlist = dir.join("live.m3u8");
    let _writer = sender(&[
        "-f",
        "hls",
        "-hls_time",
        "1",
        "-hls_list_size",
        "5",
        "-hls_flags",
        "delete_segments",
        playlist.to_str().unwrap(),
    ]);
    assert!(common::eventually(Duration::from_secs(10), || playlist.exists()));
    let up = common::upstream::Upstream::start(dir.clone(), 0);
    let s = Server::start(&config(&format!(
        "  - {{id: 1, name: Hls, source: '{}', ffmpeg_profile: relay}}\n",
        up.url("live.m3u8")
    )));
    // Wait for a playlist of at least three segments, then zap: the first segment read
    // must be the newest one listed (a zap shows what is on now), not three back.
    let segment_no = |name: &str| -> Option<u64> {
        name.trim_start_matches("live")
            .strip_suffix(".ts")?
            .parse()
            .ok()
    };
    let listed = || -> Vec<u64> {
        std::fs::read_to_string(&playlist)
            .unwrap_or_default()
            .lines()
            .filter_map(segment_no)
            .collect()
    };
    assert!(common::eventually(Duration::from_secs(15), || listed()
        .len()
        >= 3));
    let newest = *listed().last().unwrap();
    let mut v = Viewer::open(&s, 1);
    // Longer than the playlist's window: the source must follow the playlist as it
    // updates, not stop at its first list.
    let bytes = v.read_for(Duration::from_secs(8));
    let f = save(&bytes, "hls-live.ts");
    let dur: f64 = media::probe(&f)["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    assert!(dur > 6.0, "{dur} s of a live HLS source in 8 s");
    check_relay(&bytes, "live HLS");
    let first = up
        .paths
        .lock()
        .unwrap()
        .iter()
        .find_map(|p| segment_no(p))
        .unwrap();
    assert!(
        first >= newest,
        "started at segment {first}; the newest listed at the zap was {newest}"
    );
}
