//! The TS relay: a copy channel of a live MPEG-TS source forwards the source's packets as
//! they arrive. Each test runs a loopback upstream that sends a generated file at its
//! real-time rate (the ffmpeg CLI makes the media), the real server, and checks the output
//! with ffprobe, a full decode and the TS checker; where it matters, side by side with the
//! libav pipeline (`ts_relay: false`) on the same source. Also a transcode's start on a
//! live source whose audio comes late.

mod common;

use common::media::ffmpeg;
use common::upstream::{request_target, Upstream};
use common::{media, save, ts, Server, Viewer, TOKEN};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PKT: usize = 188;

fn dir() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().unwrap().keep())
}

/// 8 s of 640x360 H.264 (GOP 2 s) + AAC eng + AAC deu + AC-3 5.1 eng, at a 3 Mbit/s
/// mux rate (a broadcast-like constant rate, with null packets).
fn broadcast() -> &'static Path {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let f = dir().join("broadcast.ts");
        #[rustfmt::skip]
        ffmpeg(&[
            "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000",
            "-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000",
            "-filter_complex", "[3:a]pan=5.1|c2=c0|c0=0.2*c0[surround]",
            "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "[surround]",
            "-t", "8", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
            "-b:v", "1500k", "-pix_fmt", "yuv420p",
            "-c:a:0", "aac", "-c:a:1", "aac", "-c:a:2", "ac3",
            "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=deu",
            "-metadata:s:a:2", "language=eng",
            "-muxrate", "3000k", "-f", "mpegts", f.to_str().unwrap(),
        ]);
        f
    })
}

fn config(streams: &str) -> String {
    format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  start_timeout_secs: 20\n  idle_grace_secs: 1\nffmpeg_profiles:\n  relay: {{video_codec: copy, audio_codec: copy}}\n  remux: {{video_codec: copy, audio_codec: copy, ts_relay: false}}\nstreams:\n{streams}"
    )
}

fn stream(id: u32, source: &str, profile: &str) -> String {
    format!("  - {{id: {id}, name: Ch{id}, source: '{source}', ffmpeg_profile: {profile}}}\n")
}

fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

/// Whether packet `p` starts a PES with the random-access flag.
fn key_start(p: &[u8]) -> bool {
    let afc = (p[3] >> 4) & 3;
    p[1] & 0x40 != 0 && (afc & 2) != 0 && p[4] > 0 && p[5] & 0x40 != 0
}

/// The video PID the PMT of `data` names (H.264), if any.
fn video_pid(data: &[u8]) -> Option<u16> {
    let mut pmt = None;
    for p in data.chunks_exact(PKT) {
        let start = if (p[3] >> 4) & 3 == 3 {
            5 + usize::from(p[4])
        } else {
            4
        };
        if p[1] & 0x40 == 0 || start >= PKT {
            continue;
        }
        let t = &p[start + 1 + usize::from(p[start])..];
        if pid(p) == 0 && t[0] == 0 {
            pmt = Some((u16::from(t[10] & 0x1f) << 8) | u16::from(t[11]));
        } else if Some(pid(p)) == pmt && t[0] == 2 {
            let info = (usize::from(t[10] & 0x0f) << 8) | usize::from(t[11]);
            let end = 3 + ((usize::from(t[1] & 0x0f) << 8) | usize::from(t[2])) - 4;
            let mut i = 12 + info;
            while i + 5 <= end {
                if t[i] == 0x1b {
                    return Some((u16::from(t[i + 1] & 0x1f) << 8) | u16::from(t[i + 2]));
                }
                i += 5 + ((usize::from(t[i + 3] & 0x0f) << 8) | usize::from(t[i + 4]));
            }
        }
    }
    None
}

#[test]
fn a_live_ts_source_is_relayed_packet_for_packet_with_every_track() {
    let src = broadcast();
    let up = Upstream::start(dir().to_path_buf(), 0);
    let url = up.url("broadcast.ts?live=8");
    let s = Server::start(&config(
        &[stream(1, &url, "relay"), stream(2, &url, "remux")].concat(),
    ));
    let mut relay = Viewer::open(&s, 1);
    let mut remux = Viewer::open(&s, 2);
    let st = s.get("/api/streams/1/status").json();
    assert_eq!(st["ts_relay"], true, "{st}");
    assert_eq!(s.get("/api/streams/2/status").json()["ts_relay"], false);
    assert_eq!(
        st["input_codecs"],
        serde_json::json!(["h264", "aac [eng]", "aac [deu]", "ac3 [eng]"]),
        "{st}"
    );
    // 7 s of the 8 s source (its end would start it over).
    let (a, b) = std::thread::scope(|t| {
        let a = t.spawn(|| relay.read_for(Duration::from_secs(7)));
        (a.join().unwrap(), remux.read_for(Duration::from_secs(7)))
    });
    let (fa, fb) = (save(&a, "relay.ts"), save(&b, "remux.ts"));
    // Every track, with its language, as the source has them and as the libav relay
    // gives them.
    let want = vec![
        ("video".into(), "h264".into(), "".into(), 0),
        ("audio".into(), "aac".into(), "eng".into(), 1),
        ("audio".into(), "aac".into(), "deu".into(), 1),
        ("audio".into(), "ac3".into(), "eng".into(), 6),
    ];
    assert_eq!(media::tracks(src), want);
    assert_eq!(media::tracks(&fa), want);
    assert_eq!(media::tracks(&fb), want);
    assert!(media::starts_with_keyframe(&fa));
    assert_eq!(media::decode_errors(&fa), "");
    let report = ts::assert_clean(&a, "TS relay");
    report.assert_arrives_before_dts("TS relay");
    // Null packets (the source's constant-rate stuffing) are not relayed: the relay is
    // smaller than the source, though it plays all of it.
    let src_bytes = std::fs::read(src).unwrap();
    let nulls = src_bytes
        .chunks_exact(PKT)
        .filter(|p| pid(p) == 0x1fff)
        .count();
    assert!(
        nulls > 100,
        "the source has stuffing ({nulls} null packets)"
    );
    assert!(a.chunks_exact(PKT).all(|p| pid(p) != 0x1fff));
    // The source at its own pace, from its first keyframe.
    let secs = |f: &Path| -> f64 {
        media::probe(f)["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(secs(&fa) > 5.5, "relayed {:.2} s in 7 s", secs(&fa));
    assert!(
        secs(&fa) < 7.5,
        "relayed {:.2} s in 7 s: faster than the source",
        secs(&fa)
    );
}

/// A live upstream that sends PAT + PMT, then the source from `from` at its real-time rate
/// up to `pause_at`, then nothing for `pause`, then the rest.
fn pausing_upstream(data: Vec<u8>, from: usize, pause_at: usize, pause: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rate = data.len() as f64 / 8.0; // bytes per second: the file is 8 s
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let data = data.clone();
            std::thread::spawn(move || {
                let _ = request_target(&conn);
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: video/mp2t\r\n\r\n");
                let tables: Vec<u8> = data
                    .chunks_exact(PKT)
                    .take(50)
                    .filter(|p| pid(p) == 0 || pid(p) == 0x1000)
                    .take(2)
                    .flatten()
                    .copied()
                    .collect();
                let _ = conn.write_all(&tables);
                let t0 = Instant::now();
                let mut pos = from;
                let mut paused = Duration::ZERO;
                while pos < data.len() {
                    if pos >= pause_at && paused.is_zero() {
                        std::thread::sleep(pause);
                        paused = pause;
                    }
                    let due = (t0.elapsed().saturating_sub(paused).as_secs_f64() * rate) as usize;
                    let mut end = (from + due).min(data.len());
                    if pos < pause_at {
                        end = end.min(pause_at);
                    }
                    end -= (end - pos) % PKT;
                    if end > pos {
                        if conn.write_all(&data[pos..end]).is_err() {
                            return;
                        }
                        pos = end;
                    } else {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            });
        }
    });
    port
}

/// What `/stream/<id>` sends within `dur` (the body, if the response began): HTTP/1.0,
/// so the body is the stream itself, and a response that has not begun is no error.
fn read_raw(s: &Server, id: u32, dur: Duration) -> Vec<u8> {
    let url = s.url("/");
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    write!(
        conn,
        "GET /stream/{id}?token={TOKEN} HTTP/1.0\r\nHost: {host}\r\n\r\n"
    )
    .unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (t0, mut got, mut buf) = (Instant::now(), Vec::new(), vec![0u8; 65536]);
    while t0.elapsed() < dur {
        match std::io::Read::read(&mut conn, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    match got.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => got.split_off(i + 4),
        None => Vec::new(),
    }
}

#[test]
fn a_zap_gets_the_keyframe_as_it_arrives_not_once_it_is_complete() {
    let src = broadcast();
    let data = std::fs::read(src).unwrap();
    let video = video_pid(&data).expect("the source's video PID");
    let keys: Vec<usize> = data
        .chunks_exact(PKT)
        .enumerate()
        .filter(|(_, p)| pid(p) == video && key_start(p))
        .map(|(i, _)| i * PKT)
        .collect();
    assert!(keys.len() >= 3, "keyframes at {keys:?}");
    // Join mid-GOP, half a second before the second keyframe; the upstream stops for
    // 6 s after sending the keyframe's first 4 packets on its video PID.
    let from = keys[1] - (data.len() / 16) / PKT * PKT;
    let four_in = data[keys[1]..]
        .chunks_exact(PKT)
        .enumerate()
        .filter(|(_, p)| pid(p) == video)
        .nth(4)
        .map(|(i, _)| keys[1] + i * PKT)
        .unwrap();
    let port = pausing_upstream(data, from, four_in, Duration::from_secs(6));
    let url = format!("http://127.0.0.1:{port}/live.ts");
    let s = Server::start(&config(
        &[stream(1, &url, "relay"), stream(2, &url, "remux")].concat(),
    ));
    let (relay, remux) = std::thread::scope(|t| {
        let a = t.spawn(|| Viewer::open(&s, 1).read_for(Duration::from_millis(2500)));
        let b = read_raw(&s, 2, Duration::from_millis(2500));
        (a.join().unwrap(), b)
    });
    // Within the pause: the relay has sent the tables and the keyframe's first packets...
    assert_eq!(
        video_pid(&relay),
        Some(video),
        "the relay's tables came first"
    );
    let started = relay
        .chunks_exact(PKT)
        .filter(|p| pid(p) == video && key_start(p))
        .count();
    assert_eq!(
        started, 1,
        "the keyframe's first packet reached the viewer during the pause"
    );
    let sent = relay.chunks_exact(PKT).filter(|p| pid(p) == video).count();
    assert_eq!(
        sent, 4,
        "all the keyframe had come of the upstream, and nothing before it"
    );
    // ...while the libav pipeline, which muxes whole frames, has sent no picture yet.
    let remuxed = remux
        .chunks_exact(PKT)
        .filter(|p| p[1] & 0x40 != 0 && pid(p) == 0x100)
        .count();
    assert_eq!(
        remuxed, 0,
        "the remux has a picture before its keyframe was complete"
    );
}

/// The source with every random-access flag cleared, as some upstream muxers send it.
fn without_random_access_flags(src: &Path) -> PathBuf {
    let mut data = std::fs::read(src).unwrap();
    let mut cleared = 0;
    for p in data.chunks_exact_mut(PKT) {
        let afc = (p[3] >> 4) & 3;
        if afc & 2 != 0 && p[4] > 0 && p[5] & 0x40 != 0 {
            p[5] &= !0x40;
            cleared += 1;
        }
    }
    assert!(cleared >= 4, "{cleared} flags cleared");
    let f = dir().join("noflags.ts");
    std::fs::write(&f, data).unwrap();
    f
}

#[test]
fn keyframes_are_found_without_the_random_access_flag_and_late_joiners_start_on_one() {
    without_random_access_flags(broadcast());
    let up = Upstream::start(dir().to_path_buf(), 0);
    let url = up.url("noflags.ts?live=8");
    let s = Server::start(&config(&stream(1, &url, "relay")));
    let mut first = Viewer::open(&s, 1);
    let a = first.read_for(Duration::from_millis(2500));
    let mut late = Viewer::open(&s, 1);
    let (a2, b) = std::thread::scope(|t| {
        let x = t.spawn(|| first.read_for(Duration::from_secs(3)));
        (x.join().unwrap(), late.read_for(Duration::from_secs(3)))
    });
    for (what, bytes) in [("first viewer", [a, a2].concat()), ("late joiner", b)] {
        let f = save(&bytes, "noflags-out.ts");
        assert!(bytes.len() > 100_000, "{what}: {} bytes", bytes.len());
        assert!(media::starts_with_keyframe(&f), "{what}");
        assert_eq!(media::decode_errors(&f), "", "{what}");
    }
    assert_eq!(s.get("/api/streams/1/status").json()["ts_relay"], true);
}

#[test]
fn a_source_that_is_not_mpeg_ts_goes_to_the_libav_pipeline() {
    let flv = dir().join("live.flv");
    #[rustfmt::skip]
    ffmpeg(&[
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine",
        "-t", "6", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-f", "flv", flv.to_str().unwrap(),
    ]);
    let up = Upstream::start(dir().to_path_buf(), 0);
    let s = Server::start(&config(&stream(1, &up.url("live.flv?live=6"), "relay")));
    let bytes = Viewer::open(&s, 1).read_for(Duration::from_secs(3));
    let f = save(&bytes, "from-flv.ts");
    assert_eq!(media::codecs(&f), vec!["h264", "aac"]);
    assert_eq!(media::decode_errors(&f), "");
    let st = s.get("/api/streams/1/status").json();
    assert_eq!(st["ts_relay"], false, "{st}");
    assert_eq!(
        st["output_codecs"],
        serde_json::json!(["h264 (copy)", "aac (copy)"])
    );
    assert!(s.logs().contains("not MPEG-TS"), "{}", s.logs());
}

/// 8 s of 640x360 H.264 (GOP 2 s) whose audio (AAC, 44.1 kHz mono) begins 3 s in: a live
/// upstream sends its first audio 3 s after its first keyframe.
fn late_audio() -> &'static Path {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let f = dir().join("late-audio.ts");
        #[rustfmt::skip]
        ffmpeg(&[
            "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
            "-itsoffset", "3", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
            "-map", "0:v", "-map", "1:a", "-t", "8",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-b:v", "1000k",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1",
            "-f", "mpegts", f.to_str().unwrap(),
        ]);
        f
    })
}

/// A transcode needs a stream's parameters only for what it copies: its audio encoder
/// opens before the source's first audio (48 kHz stereo, the profile saying nothing),
/// so the first keyframe goes out as it comes, and the audio joins when it comes,
/// resampled, on time for the T-STD.
#[test]
fn a_transcode_starts_on_its_first_keyframe_without_waiting_for_late_audio() {
    late_audio();
    let up = Upstream::start(dir().to_path_buf(), 0);
    let url = up.url("late-audio.ts?live=8");
    let cfg = config(&stream(1, &url, "x264")).replace(
        "streams:\n",
        "  x264: {video_codec: libx264, preset: ultrafast, video_bitrate: 800k, audio_codec: aac}\nstreams:\n",
    );
    let s = Server::start(&cfg);
    // Within 2.5 s of the zap (the upstream's audio comes 3 s in): a second of pictures.
    let early = save(&read_raw(&s, 1, Duration::from_millis(2500)), "early.ts");
    assert!(media::starts_with_keyframe(&early), "starts on a keyframe");
    let frames = media::video_csv(&early, "packet=pts", &[]).lines().count();
    assert!(
        frames >= 25,
        "{frames} pictures before the source's first audio"
    );
    // A viewer joining later gets the audio too, in the format the session started with.
    let mut v = Viewer::open(&s, 1);
    let bytes = v.read_for(Duration::from_secs(4));
    let later = save(&bytes, "later.ts");
    let info = media::probe(&later);
    let audio = info["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .cloned()
        .expect("an audio stream");
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["sample_rate"], "48000", "{audio}");
    assert_eq!(audio["channels"], 2, "{audio}");
    assert_eq!(media::decode_errors(&later), "");
    let report = ts::check(&bytes);
    assert!(report.audio().is_some(), "{}", report.summary());
    report.assert_arrives_before_dts("a transcode whose audio came late");
}
