//! Catch-up and timeshift from Amps' own archive, end to end: a channel whose picture
//! shows the seconds since its source opened runs for a minute with `catchup_hours`;
//! then a 20 s window from 40 s ago is fetched the way Kodi's IPTV Simple builds the URL,
//! as MPEG-TS (ffprobe, the TS checker, the decoded picture's clock), by byte range, and as
//! HLS (ffprobe, and hls.js in Chromium, seeking); a window open to live follows the
//! archive; wrong requests get JSON errors; after `kill -9` the index is rebuilt from the
//! files and the same window comes back byte for byte.

mod common;

use common::browser::Browser;
use common::{media, Server, Viewer, TOKEN};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SEGMENT_SECS: u64 = 4;

/// Channel 1: 160x120 H.264 at 25 fps, a keyframe each second, whose picture encodes the
/// whole seconds since its source opened (left half: seconds mod 12, right half: seconds
/// / 12 mod 12, as luma 16 + 18 n). Channel 2 has no archive; its guide has "Soon Show"
/// from `soon` for 8 s. Channel 3's upstream refuses connections.
fn config(archive: &Path, soon: chrono::DateTime<chrono::Utc>) -> String {
    let at = |secs: i64| (soon + chrono::Duration::seconds(secs)).format("%Y-%m-%dT%H:%M:%SZ");
    let programs = format!(
        "[{{title: Soon Show, start: '{}'}}, {{title: After, start: '{}'}}]",
        at(0),
        at(8)
    );
    // Channel 1's guide: "Clock News" from 5 s after the start for 30 s.
    let past = format!(
        "[{{title: Clock News, start: '{}'}}, {{title: Later, start: '{}'}}]",
        at(-20),
        at(10)
    );
    let clock = "color=c=black:s=160x120:r=25,format=yuv420p,geq=lum='16+18*if(lt(X,W/2),mod(floor(T),12),mod(floor(T/12),12))':cb=128:cr=128[out0];sine=frequency=440:sample_rate=48000[out1]";
    format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  archive_dir: {}\n  recordings_dir: {}\n  archive_segment_secs: {SEGMENT_SECS}\nffmpeg_profiles:\n  x264: {{video_codec: libx264, video_bitrate: 300k, preset: ultrafast, gop: 25, audio_codec: aac, audio_bitrate: 64k}}\nstreams:\n  - {{id: 1, name: Clock, source: \"lavfi:{clock}\", ffmpeg_profile: x264, catchup_hours: 1, next_programs: {past}}}\n  - {{id: 2, name: Plain, source: 'lavfi:testsrc2=size=160x120:rate=25[out0];sine[out1]', ffmpeg_profile: x264, next_programs: {programs}}}\n  - {{id: 3, name: Gone, source: 'http://127.0.0.1:9/gone.ts', ffmpeg_profile: x264}}\n",
        archive.display(),
        archive.with_extension("recordings").display()
    )
}

/// The clock each decoded frame shows (seconds since the source opened).
fn clock_seconds(path: &Path) -> Vec<i64> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .output()
        .unwrap();
    let (w, h) = (160, 120);
    let digit = |y: u8| ((f64::from(y) - 16.0) / 18.0).round() as i64;
    out.stdout
        .chunks_exact(w * h * 3 / 2)
        .map(|f| digit(f[60 * w + 120]) * 12 + digit(f[60 * w + 40]))
        .collect()
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn unix(v: &serde_json::Value) -> f64 {
    let t =
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("{v}"))).unwrap();
    t.timestamp_millis() as f64 / 1000.0
}

fn duration(path: &Path) -> f64 {
    media::probe(path)["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// GET with the token in the header: (status, headers, body).
fn fetch(s: &Server, path: &str, extra: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut h = vec![("X-Amps-Token", TOKEN)];
    h.extend_from_slice(extra);
    s.get_bytes(path, &h)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_past_window_of_the_archive_plays_as_ts_and_hls_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let soon = chrono::Utc::now() + chrono::Duration::seconds(25);
    let cfg = config(&archive, soon);
    let mut s = Server::start(&cfg);
    // Record the next airing of a programme of channel 2's guide (it has no archive: the
    // recording reads its hub, and starts the channel for it).
    let r = s.send_json(
        "POST",
        "/api/recordings",
        r#"{"stream_id": 2, "program": "soon show"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let show = r.json();
    assert_eq!(show["state"], "scheduled");
    assert_eq!(show["title"], "Soon Show");
    assert_eq!(
        unix(&show["end"]) - unix(&show["start"]),
        8.0,
        "until the next programme: {show}"
    );
    assert_eq!(
        r.header("location"),
        Some(format!("/api/recordings/{}", show["id"]).as_str())
    );

    // Archived channels run with no viewer; wait for a minute of archive.
    let mut started = None;
    let mut span = (0.0, 0.0);
    assert!(
        common::eventually(Duration::from_secs(90), || {
            let st = s.get("/api/streams/1/status").json();
            started = st["started_at"].as_str().map(|_| unix(&st["started_at"]));
            let a = &st["archive"];
            if a["oldest"].is_null() || a["newest"].is_null() {
                return false;
            }
            span = (unix(&a["oldest"]), unix(&a["newest"]));
            span.1 - span.0 >= 62.0
        }),
        "a minute of archive: {}",
        s.get("/api/streams/1/status").body
    );
    let started = started.unwrap();
    let st = s.get("/api/streams/1/status").json();
    assert_eq!(st["archive"]["state"], "recording", "{st}");
    assert_eq!(
        st["always_on"], true,
        "an archived channel runs without viewers"
    );
    assert_eq!(
        st["clients"], 1,
        "the archive is one reader of the hub: {st}"
    );
    assert_eq!(st["starts"], 1, "no second upstream connection: {st}");

    // Kodi's catch-up URL for a programme 40 s to 20 s ago.
    let now = unix_now();
    let (start, end) = (now - 40, now - 20);
    let m3u = s.get("/playlist.m3u").body;
    let line = m3u
        .lines()
        .find(|l| l.contains("tvg-id=\"1.amps\""))
        .unwrap();
    assert!(
        line.contains("catchup=\"default\" catchup-days=\"1\""),
        "{line}"
    );
    let source = line
        .split("catchup-source=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    assert!(
        !m3u.lines()
            .find(|l| l.contains("tvg-id=\"2.amps\""))
            .unwrap()
            .contains("catchup"),
        "{m3u}"
    );
    let url = source
        .replace("{utc}", &start.to_string())
        .replace("{utcend}", &end.to_string());
    let path = url.strip_prefix(&format!("http://{}", s.addr)).unwrap();
    assert!(path.contains(&format!("token={TOKEN}")), "{path}");
    let (status, h, body) = s.get_bytes(path, &[]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "content-type"), Some("video/mp2t"));
    assert_eq!(
        header(&h, "content-length").map(|l| l.parse::<usize>().unwrap()),
        Some(body.len()),
        "a closed window has its length"
    );
    let file = common::save(&body, "window.ts");
    assert_eq!(media::codecs(&file), ["h264", "aac"]);
    let dur = duration(&file);
    assert!((dur - 20.0).abs() <= 1.2, "20 s ± 1 GOP: {dur}");
    assert!(media::starts_with_keyframe(&file));
    assert_eq!(media::decode_errors(&file), "");
    common::ts::assert_clean(&body, "catch-up window");
    // The pictures are those of that time: the source's clock started with the channel.
    let clock = clock_seconds(&file);
    assert!(clock.len() >= 490, "frames: {}", clock.len());
    let want = start as f64 - started;
    let first = clock[0] as f64;
    eprintln!(
        "measured: window {start}..{end}: first picture shows {first} s, expected {want:.2} s, {} frames, {dur:.2} s",
        clock.len()
    );
    assert!(
        first <= want + 0.5 && first >= want - 2.5,
        "the window starts at the keyframe at or before its start: shows {first}, expected {want:.2}"
    );
    let last = *clock.last().unwrap() as f64;
    assert!(
        (last - first - 20.0).abs() <= 1.5,
        "20 s of pictures: {first}..{last}"
    );
    assert!(
        clock.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1),
        "no second is missing or repeated: {clock:?}"
    );

    // Byte ranges of a closed window, and HEAD.
    let total = body.len();
    let (status, h, part) = fetch(&s, path, &[("Range", "bytes=1000-1999")]);
    assert_eq!(status, 206);
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes 1000-1999/{total}").as_str())
    );
    assert_eq!(part, body[1000..2000]);
    let (status, _, tail) = fetch(&s, path, &[("Range", "bytes=-500")]);
    assert_eq!((status, &tail[..]), (206, &body[total - 500..]));
    let (status, h, _) = fetch(&s, path, &[("Range", &format!("bytes={total}-"))]);
    assert_eq!(status, 416);
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes */{total}").as_str())
    );
    let r = s.request("HEAD", path, &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(total.to_string().as_str()));
    assert!(r.body.is_empty());

    // The same window as HLS: VOD, whole archive segments, playable by ffprobe.
    let q = format!("start={start}&end={end}&token={TOKEN}");
    let r = s.get(&format!("/catchup/1/index.m3u8?{q}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert!(r.body.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{}", r.body);
    assert!(r.body.ends_with("#EXT-X-ENDLIST\n"), "{}", r.body);
    let segments: Vec<&str> = r.body.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        (5..=7).contains(&segments.len()),
        "20 s of {SEGMENT_SECS} s segments: {}",
        r.body
    );
    for seg in &segments {
        let (status, h, data) = s.get_bytes(&format!("/catchup/1/{seg}"), &[]);
        assert_eq!(status, 200, "{seg}");
        assert_eq!(
            header(&h, "content-length"),
            Some(data.len().to_string().as_str())
        );
        assert_eq!(&data[..1], &[0x47], "{seg} is MPEG-TS");
    }
    let hls = s.url(&format!("/catchup/1/index.m3u8?{q}"));
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(&hls)
        .output()
        .unwrap();
    let hls_dur: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        hls_dur >= 19.0 && hls_dur <= 20.0 + 2.0 * SEGMENT_SECS as f64 + 1.0,
        "HLS window: {hls_dur} s ({})",
        String::from_utf8_lossy(&out.stderr)
    );

    // Wrong requests: JSON errors with a 4xx status.
    let r = s.get(&format!(
        "/catchup/1.ts?start={}&end={}",
        now - 7200,
        now - 7100
    ));
    assert_eq!(r.status, 404);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("the archive holds"),
        "{}",
        r.body
    );
    for (q, code) in [
        ("start=soon", 400),
        ("end=5", 400),
        (&*format!("start={start}&end={start}"), 400),
    ] {
        let r = s.get(&format!("/catchup/1.ts?{q}"));
        assert_eq!(r.status, code, "{q}: {}", r.body);
        assert_eq!(r.json()["error"], "bad_request");
    }
    let r = s.get(&format!("/catchup/2.ts?start={start}"));
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("no catch-up"), "{}", r.body);
    assert_eq!(s.get("/catchup/1/../../etc/passwd.ts").status, 404);
    assert_eq!(s.get("/catchup/1/123.ts").status, 404);
    let r = s.request(
        "GET",
        &format!("/catchup/1.ts?start={start}&end={end}"),
        &[],
        None,
    );
    assert_eq!(r.status, 401);

    // Timeshift: a window without an end reads the archive, then follows it live.
    let from = unix_now() - 6;
    let mut v = Viewer::open_url(&s.url(&format!("/catchup/1.ts?start={from}&token={TOKEN}")))
        .expect("a window open to live");
    let t0 = Instant::now();
    let live = v.read_for(Duration::from_secs(12));
    let read_secs = t0.elapsed().as_secs_f64();
    let file = common::save(&live, "timeshift.ts");
    let got = duration(&file);
    eprintln!("measured: timeshift from now-6 s, read {read_secs:.1} s: {got:.2} s of media");
    assert!(
        got >= 6.0 + read_secs - 2.0 * SEGMENT_SECS as f64 - 1.0,
        "it went on past what was archived when it started: {got} s"
    );
    drop(v);

    // The dashboard plays the window with hls.js, seeks in it, and plays the archive on
    // into live.
    let b = Browser::start();
    b.go(&s.url("/login"));
    b.type_into("#token", TOKEN);
    b.click("button[type=submit]");
    assert!(b.wait_js(Duration::from_secs(5), "return document.title === 'Amps'"));
    // The channel's card links its past programmes to their catch-up.
    b.go(&s.url("/"));
    let find = "[...document.querySelectorAll('.channel[data-id=\"1\"] a.past')].find(a => a.textContent === 'Clock News')";
    let link = b.js(&format!(
        "const a = {find}; return a ? [a.textContent, a.getAttribute('href')] : null"
    ));
    let news = soon - chrono::Duration::seconds(20);
    assert_eq!(link[0], "Clock News", "{link}");
    assert_eq!(
        link[1],
        format!(
            "/watch/1?start={}&end={}",
            news.timestamp(),
            news.timestamp() + 30
        )
        .as_str()
    );
    b.js(&format!("{find}.click(); return true"));
    b.wait_playing(Duration::from_secs(30), "v.currentTime > 1");
    assert_eq!(b.js("return document.body.dataset.engine"), "hls.js");
    b.js("document.getElementById('player').currentTime = 12; return true");
    b.wait_playing(Duration::from_secs(15), "v.currentTime > 13");
    let total_secs = b.js("return document.getElementById('player').duration");
    assert!(
        total_secs.as_f64().is_some_and(|d| d >= 29.0),
        "a VOD of the 30 s programme: {total_secs}"
    );
    b.go(&s.url("/watch/1"));
    assert!(b.wait_js(
        Duration::from_secs(10),
        "return !!document.querySelector('.catchup a')"
    ));
    b.click(".catchup a");
    b.wait_playing(Duration::from_secs(30), "v.currentTime > 1");
    let t1 = b.current_time();
    assert!(
        t1 < 30.0,
        "the archive plays from its start, not the live edge: {t1}"
    );
    drop(b);

    // The programme's recording was made while the archive filled.
    let show = recording(&s, show["id"].as_u64().unwrap());
    assert_eq!(show["state"], "completed", "{show}");
    assert_eq!(show["from"], "live");
    let file = download(&s, &show);
    let got = duration(&file);
    assert!((got - 8.0).abs() <= 1.5, "an 8 s programme: {got} s");
    assert_eq!(media::decode_errors(&file), "");
    assert!(
        (show["duration_secs"].as_f64().unwrap() - got).abs() <= 1.5,
        "{show}"
    );

    // Recordings that a kill -9 interrupts or that wait for their start: from the archive
    // (it starts 20 s in the past), from the hub (it starts in 6 s), and one whose
    // upstream is gone.
    let now = chrono::Utc::now();
    let iso = |secs: i64| (now + chrono::Duration::seconds(secs)).to_rfc3339();
    let post = |body: String| {
        let r = s.send_json("POST", "/api/recordings", &body);
        assert_eq!(r.status, 201, "{body}: {}", r.body);
        r.json()["id"].as_u64().unwrap()
    };
    let from_archive = post(format!(
        r#"{{"stream_id": 1, "start": "{}", "end": "{}", "title": "Archive"}}"#,
        iso(-20),
        iso(12)
    ));
    let later = post(format!(
        r#"{{"stream_id": 2, "start": "{}", "end": "{}"}}"#,
        iso(6),
        iso(12)
    ));
    let gone = post(format!(
        r#"{{"stream_id": 3, "start": "{}", "end": "{}"}}"#,
        iso(0),
        iso(5)
    ));
    for (body, code) in [
        (
            format!(
                r#"{{"stream_id": 2, "start": "{}", "end": "{}"}}"#,
                iso(-60),
                iso(5)
            ),
            422,
        ),
        (
            format!(
                r#"{{"stream_id": 1, "start": "{}", "end": "{}"}}"#,
                iso(5),
                iso(1)
            ),
            422,
        ),
        (
            format!(
                r#"{{"stream_id": 1, "start": "{}", "end": "{}"}}"#,
                iso(0),
                iso(90_000)
            ),
            422,
        ),
        (r#"{"stream_id": 9, "program": "x"}"#.to_owned(), 422),
        (
            r#"{"stream_id": 2, "program": "Never Aired"}"#.to_owned(),
            422,
        ),
        (r#"{"stream_id": 2}"#.to_owned(), 422),
        (r#"{"stream_id": 2, "path": "/etc"}"#.to_owned(), 422),
    ] {
        let r = s.send_json("POST", "/api/recordings", &body);
        assert_eq!(r.status, code, "{body}: {}", r.body);
        assert!(r.json()["detail"].is_string());
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(recording(&s, from_archive)["state"], "recording");

    // kill -9: the index comes back from the files; only the segment being written is
    // lost, and the window is the same bytes.
    let before = s.get("/api/streams/1/status").json()["archive"].clone();
    s.signal("KILL");
    let _ = s.terminate(Duration::from_secs(5));
    let t0 = Instant::now();
    let s2 = Server::start(&cfg);
    let ready = t0.elapsed();
    let after = s2.get("/api/streams/1/status").json()["archive"].clone();
    eprintln!(
        "measured: restart with {} segments ready in {ready:?}",
        after["segments"]
    );
    assert_eq!(after["oldest"], before["oldest"], "{before} / {after}");
    assert!(
        after["segments"].as_u64() >= before["segments"].as_u64(),
        "{before} / {after}"
    );
    assert!(unix(&after["newest"]) >= unix(&before["newest"]));
    let parts = std::fs::read_dir(archive.join("1"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".part")
        })
        .count();
    assert!(
        parts <= 1,
        "only the new run's segment in the writing: {parts}"
    );
    let (status, _, again) = s2.get_bytes(path, &[]);
    assert_eq!(status, 200);
    assert!(
        again == body,
        "the same window, byte for byte, after kill -9"
    );
    // The recordings: taken up again after the restart, or made after it.
    let mut states = Vec::new();
    assert!(
        common::eventually(Duration::from_secs(60), || {
            states = [from_archive, later, gone]
                .iter()
                .map(|id| recording(&s2, *id)["state"].as_str().unwrap().to_owned())
                .collect();
            states.iter().all(|st| st == "completed" || st == "failed")
        }),
        "{states:?}"
    );
    let r = recording(&s2, gone);
    assert_eq!(r["state"], "failed", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("unavailable"),
        "the reason: {r}"
    );
    let r = recording(&s2, later);
    assert_eq!(
        r["state"], "completed",
        "scheduled before kill -9, made after: {r}"
    );
    let got = duration(&download(&s2, &r));
    assert!((got - 6.0).abs() <= 1.5, "6 s: {got}");
    let r = recording(&s2, from_archive);
    assert_eq!(
        (&r["state"], &r["from"]),
        (&"completed".into(), &"archive".into()),
        "{r}"
    );
    let file = download(&s2, &r);
    // Two runs of the channel (the timestamps start again after the restart, marked as a
    // discontinuity): count its pictures.
    let clock = clock_seconds(&file);
    let got = clock.len() as f64 / 25.0;
    let lost = SEGMENT_SECS as f64 + ready.as_secs_f64() + 2.0;
    eprintln!(
        "measured: a 32 s recording from the archive across kill -9: {got:.2} s of pictures ({r})"
    );
    assert!(
        got >= 32.0 - lost && got <= 32.0 + 1.5,
        "32 s less at most one segment: {got}"
    );
    assert!(
        (r["duration_secs"].as_f64().unwrap() - got).abs() <= 1.5,
        "{r}"
    );
    assert_eq!(media::decode_errors(&file), "");
    let want = (unix(&r["start"]) - started).round();
    assert!(
        (clock[0] as f64 - want).abs() <= 2.5,
        "it starts with the pictures of its start: {} vs {want}",
        clock[0]
    );
    let (status, h, part) = s2.get_bytes(
        &format!("/recordings/{from_archive}.ts"),
        &[("X-Amps-Token", TOKEN), ("Range", "bytes=188-375")],
    );
    assert_eq!((status, part.len()), (206, 188));
    assert!(header(&h, "content-range")
        .unwrap()
        .starts_with("bytes 188-375/"));
    let m3u = s2.get("/recordings.m3u").body;
    assert!(
        m3u.contains(&format!("/recordings/{from_archive}.ts?token={TOKEN}"))
            && !m3u.contains(&format!("/recordings/{gone}.ts")),
        "{m3u}"
    );
    assert_eq!(
        s2.request(
            "DELETE",
            &format!("/api/recordings/{gone}"),
            &[("X-Amps-Token", TOKEN)],
            None
        )
        .status,
        204
    );
    assert_eq!(s2.get(&format!("/api/recordings/{gone}")).status, 404);
    assert_eq!(s2.get("/recordings/../config.yaml").status, 404);
}

/// Recording `id` as the API shows it.
fn recording(s: &Server, id: u64) -> serde_json::Value {
    let r = s.get(&format!("/api/recordings/{id}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Downloads a recording's file (its length announced) into a file.
fn download(s: &Server, r: &serde_json::Value) -> std::path::PathBuf {
    let (status, h, body) = fetch(s, &format!("/recordings/{}.ts", r["id"]), &[]);
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(r["bytes"].as_u64(), Some(body.len() as u64), "{r}");
    common::save(&body, "recording.ts")
}

/// An archive that cannot write (its channel's folder is a file, as a broken or full disk
/// would refuse it) says so in the status and the metrics, while viewers of the channel
/// notice nothing; once the folder can be written again, the archive resumes by itself.
#[test]
fn a_failing_archive_says_why_and_never_stops_the_channel() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::write(archive.join("1"), b"not a folder").unwrap();
    let s = Server::start(&format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  archive_dir: {}\n  archive_segment_secs: 1\nffmpeg_profiles:\n  light: {{video_codec: mpeg2video, audio_codec: mp2, gop: 25}}\nstreams:\n  - {{id: 1, name: Broken disk, source: 'lavfi:testsrc2=size=160x120:rate=25[out0];sine[out1]', ffmpeg_profile: light, catchup_hours: 1}}\n",
        archive.display()
    ));
    let mut st = serde_json::Value::Null;
    assert!(
        common::eventually(Duration::from_secs(20), || {
            st = s.get("/api/streams/1/status").json();
            st["archive"]["state"] == "failed"
        }),
        "{st}"
    );
    let why = st["archive"]["error"].as_str().unwrap();
    assert!(why.contains("cannot write"), "{why}");
    assert!(st["archive"]["write_errors"].as_u64() >= Some(1), "{st}");
    let m = s.get("/metrics").body;
    assert!(
        m.contains("amps_channel_archive_failed{channel=\"1\",producer=\"libav\"} 1"),
        "{m}"
    );
    // The channel plays on for its viewers.
    let mut v = Viewer::open(&s, 1);
    let live = v.read_for(Duration::from_secs(3));
    let file = common::save(&live, "live.ts");
    assert!(duration(&file) >= 2.0, "the live channel plays on");
    assert_eq!(s.get("/api/streams/1/status").json()["state"], "running");
    // The disk comes back: the archive resumes within a few seconds.
    std::fs::remove_file(archive.join("1")).unwrap();
    assert!(
        common::eventually(Duration::from_secs(20), || {
            st = s.get("/api/streams/1/status").json();
            st["archive"]["state"] == "recording" && st["archive"]["segments"].as_u64() >= Some(2)
        }),
        "{st}"
    );
    assert!(st["archive"]["error"].is_null(), "{st}");
    assert!(
        st["archive"]["dropped_bytes"].as_u64() > Some(0),
        "what it lost is counted: {st}"
    );
}
