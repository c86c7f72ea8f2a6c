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
/// [(uri, duration, discontinuity)]).
fn parse(text: &str) -> (u64, u64, Vec<(String, f64, bool)>) {
    let script = r#"
import json, sys, m3u8
p = m3u8.loads(sys.stdin.read())
assert not p.is_variant, "a media playlist"
assert not p.is_endlist, "a live playlist has no ENDLIST"
print(json.dumps({"seq": p.media_sequence, "target": p.target_duration,
  "segments": [[s.uri, s.duration, bool(s.discontinuity)] for s in p.segments]}))
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
