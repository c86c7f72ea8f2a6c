//! HLS output: `/hls/<id>/index.m3u8` and its segments, cut from the same pipeline as
//! `/stream/<id>`. Playlists are checked with a real HLS parser (Debian's python3-m3u8),
//! segments with ffprobe, and the whole thing is played by the ffmpeg CLI.

mod common;

use common::{eventually, media, ts, Server, Viewer, TOKEN};
use std::process::Command;
use std::time::Duration;

fn config() -> String {
    format!(
        "server:\n  auth_token: {TOKEN}\n  allow_api_local_sources: true\nengine:\n  idle_grace_secs: 1\n  hls_segment_secs: 1\n  hls_list_size: 4\nffmpeg_profiles:\n  x264:\n    video_codec: libx264\n    video_bitrate: 600k\n    preset: ultrafast\n    gop: 25\n    audio_codec: aac\n    audio_bitrate: 64k\nstreams:\n  - {{id: 1, name: H264, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine=frequency=500[out1]', ffmpeg_profile: x264}}\n  - {{id: 2, name: Other, source: 'lavfi:testsrc2=size=160x120:rate=25[out0];sine[out1]', ffmpeg_profile: x264}}\n"
    )
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or("", |(_, v)| v.as_str())
}

/// Parses a playlist with the `m3u8` package: (media sequence, target duration,
/// [(uri, duration, discontinuity)]) of its whole segments (the parts of the one being
/// made, which the package lists as a segment without a URI, are left out).
fn parse(text: &str) -> (u64, u64, Vec<(String, f64, bool)>) {
    let script = r#"
import json, sys, m3u8
p = m3u8.loads(sys.stdin.read())
assert not p.is_variant, "a media playlist"
assert not p.is_endlist, "a live playlist has no ENDLIST"
print(json.dumps({"seq": p.media_sequence, "target": p.target_duration,
  "segments": [[s.uri, s.duration, bool(s.discontinuity)] for s in p.segments if s.uri]}))
"#;
    let out = common::pipe(
        Command::new("/usr/bin/python3").args(["-c", script]),
        text.as_bytes(),
    );
    assert!(
        out.status.success(),
        "m3u8 refused the playlist: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let segs = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s[0].as_str().unwrap().to_owned(),
                s[1].as_f64().unwrap(),
                s[2].as_bool().unwrap(),
            )
        })
        .collect();
    (
        v["seq"].as_u64().unwrap(),
        v["target"].as_f64().unwrap() as u64,
        segs,
    )
}

fn playlist(s: &Server) -> String {
    let (status, h, body) = s.get_bytes(&format!("/hls/1/index.m3u8?token={TOKEN}"), &[]);
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(header(&h, "content-type"), "application/vnd.apple.mpegurl");
    text
}

#[test]
fn hls_is_cut_from_the_same_pipeline_on_keyframes_and_plays() {
    let s = Server::start(&config());
    // A TS viewer first: HLS must join its pipeline, not start another.
    let mut viewer = Viewer::open(&s, 1);
    assert!(!viewer.read_for(Duration::from_millis(500)).is_empty());
    playlist(&s);
    let status = s.get("/api/streams/1/status").json();
    assert_eq!(status["starts"], 1, "one pipeline run: {status}");
    assert_eq!(
        status["clients"], 2,
        "the TS viewer and the HLS session: {status}"
    );
    assert_eq!(status["hls"], true);
    let metrics = s.get("/metrics").body;
    assert!(
        metrics.contains("amps_channel_hls{channel=\"1\",producer=\"libav\"} 1"),
        "{metrics}"
    );

    // Wait for a full window, then check every listed segment.
    assert!(eventually(Duration::from_secs(15), || parse(&playlist(&s))
        .2
        .len()
        >= 4));
    let text2 = playlist(&s);
    let (seq, target, segs) = parse(&text2);
    assert_eq!(segs.len(), 4, "hls_list_size: {text2}");
    assert_eq!(target, 1, "{text2}");
    let dir = tempfile::tempdir().unwrap();
    for (i, (uri, dur, disc)) in segs.iter().enumerate() {
        assert!(!disc);
        assert!(
            uri.ends_with(&format!(".ts?token={TOKEN}")) && !uri.contains('/'),
            "relative URIs that carry the token: {uri}"
        );
        assert!(
            (0.95..=1.25).contains(dur),
            "segment {i}: {dur} s (GOP 1 s)"
        );
        let (status, h, body) = s.get_bytes(&format!("/hls/1/{uri}"), &[]);
        assert_eq!(status, 200, "{uri}");
        assert_eq!(header(&h, "content-type"), "video/mp2t");
        assert!(header(&h, "cache-control").starts_with("public, max-age="));
        assert_eq!(body.len() % 188, 0);
        let path = dir.path().join(format!("{i}.ts"));
        std::fs::write(&path, &body).unwrap();
        assert_eq!(media::codecs(&path), ["h264", "aac"], "{uri}");
        assert_eq!(media::resolution(&path), (320, 240));
        assert!(
            media::starts_with_keyframe(&path),
            "{uri} starts on a keyframe"
        );
        assert_eq!(media::decode_errors(&path), "", "{uri} decodes on its own");
        ts::assert_clean(&body, uri);
        let frames = media::video_csv(&path, "frame=key_frame", &[])
            .lines()
            .count();
        assert!(
            (frames as f64 - dur * 25.0).abs() <= 1.0,
            "{uri}: {frames} frames for EXTINF {dur}"
        );
    }
    // The window slides: a later playlist starts further on, and the segments both list
    // kept their sequence numbers (segment k of the first is segment k - shift now).
    let mut later = (seq, segs.clone());
    assert!(
        eventually(Duration::from_secs(10), || {
            let (q, _, l) = parse(&playlist(&s));
            later = (q, l);
            later.0 > seq
        }),
        "the media sequence stayed at {seq}"
    );
    let shift = (later.0 - seq) as usize;
    for (k, seg) in segs.iter().enumerate().skip(shift) {
        assert_eq!(
            later.1[k - shift].0,
            seg.0,
            "segment {k} of sequence {seq} is segment {} of {}",
            k - shift,
            later.0
        );
    }
    // The TS viewer was never disturbed.
    assert!(viewer.read_for(Duration::from_millis(500)).len() > 10_000);

    // The ffmpeg CLI plays the live playlist end to end.
    let out_path = dir.path().join("played.ts");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(s.url(&format!("/hls/1/index.m3u8?token={TOKEN}")))
        .args(["-t", "4", "-c", "copy", "-y"])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(media::decode_errors(&out_path), "");
    let (_, secs) = media::video_bitrate(&out_path);
    assert!(secs > 3.0, "played {secs} s");
    assert_eq!(s.get("/api/streams/1/status").json()["starts"], 1);
}

#[test]
fn segments_need_the_token_and_caching_follows_how_it_was_sent() {
    let s = Server::start(&config());
    let (status, _, body) = s.get_bytes("/hls/2/index.m3u8", &[]);
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    // Authorised by a header: the URL is no cache key for the token, so private.
    let (status, h, body) = s.get_bytes("/hls/2/index.m3u8", &[("X-Amps-Token", TOKEN)]);
    assert_eq!(status, 200);
    assert!(header(&h, "cache-control").starts_with("private"), "{h:?}");
    let text = String::from_utf8(body).unwrap();
    let uri = text
        .lines()
        .find(|l| l.ends_with(&format!("?token={TOKEN}")))
        .unwrap();
    let bare = uri.split('?').next().unwrap();
    let (status, _, _) = s.get_bytes(&format!("/hls/2/{bare}"), &[]);
    assert_eq!(status, 401, "a segment without the token");
    let (status, _, _) = s.get_bytes(&format!("/hls/2/{bare}?token=wrong"), &[]);
    assert_eq!(status, 401);
    let (status, h, _) = s.get_bytes(&format!("/hls/2/{uri}"), &[]);
    assert_eq!(status, 200);
    assert!(header(&h, "cache-control").contains("immutable"));
    // Unknown names, old sessions and unknown channels are JSON 404s.
    for path in [
        format!("/hls/2/0-0.ts?token={TOKEN}"),
        format!("/hls/2/{}?token={TOKEN}", bare.replace("-", "-9999")),
        format!("/hls/2/index.m3u9?token={TOKEN}"),
        format!("/hls/77/index.m3u8?token={TOKEN}"),
    ] {
        let (status, h, body) = s.get_bytes(&path, &[]);
        assert_eq!(status, 404, "{path}");
        assert_eq!(header(&h, "content-type"), "application/json", "{path}");
        assert!(!body.is_empty());
    }
}

#[test]
fn a_producer_restart_is_a_discontinuity_and_a_deleted_channel_ends_its_session() {
    let s = Server::start(&config());
    let first = parse(&playlist(&s));
    assert!(first.2.iter().all(|x| !x.2));
    // A new source restarts the producer; the session carries on with a discontinuity.
    let r = s.send_json(
        "PATCH",
        "/api/streams/1",
        r#"{"source": "lavfi:testsrc2=size=320x240:rate=25[out0];sine=frequency=900[out1]"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        eventually(Duration::from_secs(15), || {
            let (_, _, segs) = parse(&playlist(&s));
            let at = segs.iter().position(|x| x.2);
            at.is_some_and(|i| i + 1 < segs.len())
        }),
        "{}",
        playlist(&s)
    );
    let text = playlist(&s);
    assert!(text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"), "{text}");
    // The segment after the discontinuity starts cleanly on a keyframe.
    let (_, _, segs) = parse(&text);
    let after = &segs[segs.iter().position(|x| x.2).unwrap()].0;
    let (_, _, body) = s.get_bytes(&format!("/hls/1/{after}"), &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("after.ts");
    std::fs::write(&path, body).unwrap();
    assert!(media::starts_with_keyframe(&path));
    assert_eq!(media::decode_errors(&path), "");
    ts::assert_clean(
        &std::fs::read(&path).unwrap(),
        "the segment after a discontinuity",
    );

    let r = s.request("DELETE", "/api/streams/1", &[("X-Amps-Token", TOKEN)], None);
    assert_eq!(r.status, 204);
    let uri = &segs[0].0;
    assert!(
        eventually(Duration::from_secs(5), || s
            .get_bytes(&format!("/hls/1/{uri}"), &[])
            .0
            == 404),
        "segments of a deleted channel are gone"
    );
    assert_eq!(
        s.get_bytes(&format!("/hls/1/index.m3u8?token={TOKEN}"), &[])
            .0,
        404
    );
}

#[test]
fn an_hls_session_nobody_asks_for_ends_and_frees_the_channel() {
    let s = Server::start(&config());
    let first = parse(&playlist(&s));
    let uri = first.2[0].0.clone();
    let st = s.get("/api/streams/2/status").json();
    assert_eq!(st["state"], "idle", "other channels are untouched: {st}");
    // No requests from now on: hls_list_size 4 x 1 s is under 10 s, so the session ends
    // 20 s after the last request, then the channel after its 1 s grace period.
    let t0 = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || s
            .get("/api/streams/1/status")
            .json()["hls"]
            == false),
        "the session never ended"
    );
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(18), "ended too early: {took:?}");
    assert!(
        eventually(Duration::from_secs(10), || s
            .get("/api/streams/1/status")
            .json()["state"]
            == "idle"),
        "{}",
        s.get("/api/streams/1/status").body
    );
    assert_eq!(s.get("/api/streams/1/status").json()["clients"], 0);
    // Its segments are gone; a new request starts a new session with new names.
    let (status, _, _) = s.get_bytes(&format!("/hls/1/{uri}"), &[]);
    assert_eq!(status, 404);
    let again = parse(&playlist(&s));
    assert_ne!(
        again.2[0].0.split('-').next(),
        uri.split('-').next(),
        "a new session id"
    );
}

/// The parts (URI, duration, independent) a playlist lists, in order.
fn parts(text: &str) -> Vec<(String, f64, bool)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .map(|a| {
            let dur = a
                .split(',')
                .find_map(|kv| kv.strip_prefix("DURATION="))
                .unwrap()
                .parse()
                .unwrap();
            let uri = a.split('"').nth(1).unwrap().to_owned();
            (uri, dur, a.contains("INDEPENDENT=YES"))
        })
        .collect()
}

#[test]
fn low_latency_hls_starts_on_a_short_first_segment_and_follows_parts() {
    // 2 s segments of a 2 s GOP, 0.5 s parts (the default).
    let cfg = format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  idle_grace_secs: 1\n  hls_segment_secs: 2\nffmpeg_profiles:\n  x264: {{video_codec: libx264, video_bitrate: 600k, preset: ultrafast, gop: 50, audio_codec: aac, audio_bitrate: 64k}}\nstreams:\n  - {{id: 1, name: Live, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine=frequency=500[out1]', ffmpeg_profile: x264}}\n  - {{id: 2, name: Strict, source: 'lavfi:testsrc2=size=160x120:rate=25[out0];sine[out1]', ffmpeg_profile: x264}}\n  - {{id: 3, name: App, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine=frequency=700[out1]', ffmpeg_profile: x264}}\n  - {{id: 4, name: Browser, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine=frequency=900[out1]', ffmpeg_profile: x264}}\n"
    );
    let s = Server::start(&cfg);
    let script = [("Sec-Fetch-Dest", "empty")];
    let get = |path: &str, h: &[(&str, &str)]| {
        let (status, _, body) = s.get_bytes(path, h);
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    // A script player's first playlist of a cold channel: one short segment, ended at a
    // frame after two parts, then the parts being made and a hint for the next one.
    let (status, h, body) = s.get_bytes(&format!("/hls/1/index.m3u8?token={TOKEN}"), &script);
    let first = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        header(&h, "vary"),
        "Sec-Fetch-Dest",
        "a cache keeps the answers for script and strict players apart"
    );
    let (_, target, segs) = parse(&first);
    assert_eq!(target, 2);
    assert_eq!(segs.len(), 1, "answered on the first segment: {first}");
    assert!((0.9..1.0).contains(&segs[0].1), "{first}");
    assert!(first.contains("#EXT-X-PART-INF:PART-TARGET=0.500\n"));
    assert!(first.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500\n"));
    let hint = first
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .map(|u| u.trim_end_matches('"').to_owned())
        .expect(&first);
    assert!(
        hint.contains("-1.") && hint.ends_with(&format!(".ts?token={TOKEN}")),
        "{hint}"
    );

    // The hinted part is answered once it is complete; a blocking reload waits for the
    // part it names.
    let (status, _, part) = s.get_bytes(&format!("/hls/1/{hint}"), &[]);
    assert_eq!(status, 200);
    assert!(!part.is_empty() && part.len() % 188 == 0);
    let (status, reload) = get(
        &format!("/hls/1/index.m3u8?token={TOKEN}&_HLS_msn=2&_HLS_part=1"),
        &script,
    );
    assert_eq!(status, 200, "{reload}");
    let listed = parts(&reload);
    assert!(
        listed.iter().any(|(u, _, _)| u.contains("-2.1.ts")),
        "{reload}"
    );
    assert!(listed.iter().all(|(_, d, _)| *d <= 0.5), "{reload}");
    // Segment 2 starts on a keyframe (its first part says so); segment 1 follows the
    // short first one mid-GOP, so none of its parts does.
    let of = |n: u64| -> Vec<(String, f64, bool)> {
        let tag = format!("-{n}.");
        listed
            .iter()
            .filter(|(u, _, _)| u.contains(&tag))
            .cloned()
            .collect()
    };
    assert!(of(2)[0].2 && of(2)[1..].iter().all(|p| !p.2), "{reload}");
    assert!(of(1).iter().all(|p| !p.2), "{reload}");
    let seg1 = parse(&reload).2[1].clone();
    let sum: f64 = of(1).iter().map(|p| p.1).sum();
    assert!(
        (sum - seg1.1).abs() < 0.01,
        "parts add up to the segment: {reload}"
    );

    // The first segment, then segment 1's parts in order: one stream that decodes.
    let dir = tempfile::tempdir().unwrap();
    let mut joined = s.get_bytes(&format!("/hls/1/{}", segs[0].0), &[]).2;
    let mut whole = joined.clone();
    for (uri, _, _) in of(1) {
        let (status, _, b) = s.get_bytes(&format!("/hls/1/{uri}"), &[]);
        assert_eq!(status, 200, "{uri}");
        joined.extend(b);
    }
    whole.extend(s.get_bytes(&format!("/hls/1/{}", seg1.0), &[]).2);
    assert_eq!(joined, whole, "the parts are the segment");
    let path = dir.path().join("parts.ts");
    std::fs::write(&path, &joined).unwrap();
    assert_eq!(media::codecs(&path), ["h264", "aac"]);
    assert!(media::starts_with_keyframe(&path));
    assert_eq!(media::decode_errors(&path), "");
    ts::assert_clean(&joined, "segments 0 and 1");

    // Directives that cannot be met are refused.
    for q in ["_HLS_msn=99", "_HLS_msn=x", "_HLS_part=1"] {
        let r = s.request(
            "GET",
            &format!("/hls/1/index.m3u8?token={TOKEN}&{q}"),
            &script,
            None,
        );
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(r.json()["error"], "bad_request", "{q}");
    }
    let gone = s.get_bytes(&format!("/hls/1/{}", hint.replace("-1.", "-9.")), &[]);
    assert_eq!(
        gone.0, 404,
        "a part further ahead than the next is not waited for"
    );

    // A browser's own player and apps get their first playlist after three segments.
    for (id, h) in [(2, vec![("Sec-Fetch-Dest", "video")]), (3, vec![])] {
        let (status, text) = get(&format!("/hls/{id}/index.m3u8?token={TOKEN}"), &h);
        assert_eq!(status, 200);
        assert!(parse(&text).2.len() >= 3, "channel {id}: {text}");
    }
    // The master playlist does not claim every segment starts on a keyframe.
    let master = get(&format!("/hls/1/master.m3u8?token={TOKEN}"), &script).1;
    assert!(master.contains("#EXT-X-STREAM-INF:") && !master.contains("INDEPENDENT-SEGMENTS"));

    // hls.js (the dashboard's player) plays a cold channel from its parts.
    let b = common::browser::Browser::start();
    b.go(&s.url("/health"));
    let hls_js = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/vendor/hls.light.min.js"
    ))
    .unwrap();
    b.js(&format!("{hls_js}; window.H = Hls; return 1"));
    // Set up as the player page does: an element with id `player`, a data flag when
    // it plays (what `wait_playing` looks for).
    b.js(&format!(
        "const v = document.createElement('video'); v.id = 'player'; v.muted = true;\
         v.autoplay = true; document.body.appendChild(v);\
         v.addEventListener('playing', () => document.body.dataset.player = 'playing');\
         const h = new H(); window.h = h; h.loadSource({}); h.attachMedia(v); return 1",
        serde_json::json!(s.url(&format!("/hls/4/index.m3u8?token={TOKEN}")))
    ));
    b.wait_playing(Duration::from_secs(30), "v.currentTime > 3");
    let fetched_parts = b.js(
        "return performance.getEntriesByType('resource').filter(e => /-\\d+\\.\\d+\\.ts/.test(e.name)).length",
    );
    assert!(
        fetched_parts.as_u64().unwrap() >= 3,
        "hls.js loaded parts: {fetched_parts}"
    );
    let t1 = b.current_time();
    std::thread::sleep(Duration::from_secs(2));
    assert!(b.current_time() - t1 > 1.0, "playback advances");
}
