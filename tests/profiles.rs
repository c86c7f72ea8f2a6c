//! Output profiles per viewer (`streams[].profiles`, `?profile=<name>`): one channel reads
//! and decodes its source once and encodes each profile a viewer watches. Real server,
//! real libav, generated media, checked with ffprobe and a full decode.

mod common;

use common::browser::Browser;
use common::{media, run_cli, save, Server, Viewer, TOKEN};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// 12 s of 640x360 25 fps H.264 (GOP 1 s) + AAC, looped by the channels.
fn source() -> &'static Path {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let d = tempfile::tempdir().unwrap().keep();
        let f = d.join("src.ts");
        media::generate(&f, "640x360", 12, &["-b:v", "1200k"], &["-b:a", "96k"]);
        f
    })
}

fn config(streams: &str) -> String {
    let profiles = [
        "copy: {video_codec: copy, audio_codec: copy}",
        "mid: {video_codec: libx264, preset: ultrafast, resolution: 480x270, video_bitrate: 400k, maxrate: 400k, bufsize: 400k, audio_codec: copy}",
        "low: {video_codec: libx264, preset: ultrafast, resolution: 256x144, video_bitrate: 150k, maxrate: 150k, bufsize: 150k, audio_codec: copy}",
        "mobile: {video_codec: libx264, preset: ultrafast, resolution: 320x180, video_bitrate: 250k, audio_codec: aac, audio_bitrate: 64k, audio_channels: 1}",
        "slow: {video_codec: libx264, preset: veryslow, tune: zerolatency, threads: 1, resolution: 1920x1080, video_bitrate: 4M}",
        "tx: {video_codec: libx264, preset: ultrafast, resolution: 480x270, video_bitrate: 400k, audio_codec: aac}",
    ]
    .map(|p| format!("  {p}\n"))
    .concat();
    format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  start_timeout_secs: 20\n  idle_grace_secs: 1\nffmpeg_profiles:\n{profiles}streams:\n{streams}"
    )
}

fn stream(id: u32, profile: &str, profiles: &str) -> String {
    let src = source().display();
    format!("  - {{id: {id}, name: Ch{id}, source: '{src}', loop: true, ffmpeg_profile: {profile}, profiles: [{profiles}]}}\n")
}

fn status(s: &Server, id: u32) -> Value {
    s.get(&format!("/api/streams/{id}/status?token={TOKEN}"))
        .json()
}

fn rendition<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["renditions"]
        .as_array()
        .unwrap_or_else(|| panic!("no renditions in {st}"))
        .iter()
        .find(|r| r["profile"] == name)
        .unwrap_or_else(|| panic!("no rendition {name} in {st}"))
}

fn open(s: &Server, id: u32, profile: &str) -> Viewer {
    let url = s.url(&format!("/stream/{id}?token={TOKEN}&profile={profile}"));
    Viewer::open_url(&url).unwrap_or_else(|code| panic!("GET {url}: {code}"))
}

/// Checks one capture: H.264 at `size` + audio `audio`, starting on a keyframe, decoding
/// without an error.
fn check(path: &Path, size: (u64, u64), audio: &str, what: &str) {
    assert_eq!(media::codecs(path), ["h264", audio], "{what}");
    assert_eq!(media::resolution(path), size, "{what}");
    assert!(
        media::starts_with_keyframe(path),
        "{what}: no keyframe first"
    );
    let errors = media::decode_errors(path);
    assert!(errors.is_empty(), "{what}: {errors}");
}

#[test]
fn one_decode_feeds_every_profile_its_viewers_ask_for() {
    let s = Server::start(&config(&stream(1, "copy", "mid, low")));
    let reads: Vec<_> = ["", "mid", "low"]
        .into_iter()
        .map(|p| {
            let url = if p.is_empty() {
                s.url(&format!("/stream/1?token={TOKEN}"))
            } else {
                s.url(&format!("/stream/1?token={TOKEN}&profile={p}"))
            };
            std::thread::spawn(move || {
                let mut v = Viewer::open_url(&url).unwrap_or_else(|c| panic!("{url}: {c}"));
                v.read_for(Duration::from_secs(8))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(6));
    let st = status(&s, 1);
    let outputs: Vec<Vec<u8>> = reads.into_iter().map(|t| t.join().unwrap()).collect();
    let own = save(&outputs[0], "own.ts");
    let mid = save(&outputs[1], "mid.ts");
    let low = save(&outputs[2], "low.ts");
    check(&own, (640, 360), "aac", "the channel's own output");
    check(&mid, (480, 270), "aac", "profile mid");
    check(&low, (256, 144), "aac", "profile low");
    for (path, target, what) in [(&mid, 400_000.0, "mid"), (&low, 150_000.0, "low")] {
        let (bps, secs) = media::video_bitrate(path);
        assert!(secs > 5.0, "{what}: only {secs} s of video");
        assert!(
            (bps - target).abs() <= 0.25 * target,
            "{what}: {bps:.0} bit/s for a {target} target"
        );
    }
    // Each profile's output is the source's picture sequence: as many frames as the copy.
    let frames = |p: &Path| media::video_csv(p, "frame=key_frame", &[]).lines().count() as f64;
    let (n_own, n_mid, n_low) = (frames(&own), frames(&mid), frames(&low));
    for (n, what) in [(n_mid, "mid"), (n_low, "low")] {
        assert!(
            (n - n_own).abs() <= 0.1 * n_own,
            "{what}: {n} frames, the copy {n_own}"
        );
    }
    // One decode for both encoders: both profiles copy the audio, so the channel decodes
    // only video, each frame once, while two encoders each encode every frame.
    for name in ["mid", "low"] {
        let r = rendition(&st, name);
        assert_eq!(r["state"], "running", "{st}");
        assert_eq!(r["clients"], 1, "{st}");
        assert_eq!(r["frames_dropped"], 0, "{st}");
    }
    assert_eq!(rendition(&st, "mid")["output_resolution"], "480x270");
    // low scales mid's 480x270 pictures, not the decoded 640x360 ones.
    assert_eq!(rendition(&st, "low")["scaled_from"], "mid", "{st}");
    assert!(rendition(&st, "mid").get("scaled_from").is_none(), "{st}");
    assert_eq!(
        rendition(&st, "low")["output_codecs"],
        serde_json::json!(["libx264", "aac (copy)"])
    );
    let decoded = st["frames_decoded"].as_f64().unwrap();
    let encoded = rendition(&st, "mid")["frames_encoded"].as_f64().unwrap()
        + rendition(&st, "low")["frames_encoded"].as_f64().unwrap();
    assert!(encoded > 200.0, "{st}");
    assert!(
        decoded <= 0.6 * encoded && decoded >= 0.4 * encoded,
        "{decoded} frames decoded for {encoded} encoded by two profiles: {st}"
    );
    assert_eq!(
        st["clients"], 3,
        "every profile's viewer counts for the channel"
    );
    // The same per profile in the metrics.
    let metrics = s.get(&format!("/metrics?token={TOKEN}")).body;
    let value = |name: &str, profile: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("{name}{{")) && l.contains(&format!("profile=\"{profile}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} for {profile}: {metrics}"))
    };
    for p in ["mid", "low"] {
        assert!(value("amps_profile_frames_encoded_total", p) > 100.0);
        assert_eq!(value("amps_profile_frames_dropped_total", p), 0.0);
        assert!(value("amps_profile_bytes_sent_total", p) > 10_000.0);
    }
}

/// Consecutive decoded pictures of `path` that repeat the one before (by MD5).
fn repeated_pictures(path: &Path) -> usize {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let sums: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next())
        .collect();
    assert!(sums.len() > 50, "{text}");
    sums.windows(2)
        .filter(|w| w[0].trim() == w[1].trim())
        .count()
}

#[test]
fn a_profile_scales_from_a_larger_ones_pictures_and_goes_on_alone_when_it_stops() {
    let s = Server::start(&config(&stream(1, "copy", "mid, low")));
    let (mid_url, low_url) = (
        s.url(&format!("/stream/1?token={TOKEN}&profile=mid")),
        s.url(&format!("/stream/1?token={TOKEN}&profile=low")),
    );
    let mid = std::thread::spawn(move || {
        let mut v = Viewer::open_url(&mid_url).unwrap_or_else(|c| panic!("mid: {c}"));
        v.read_for(Duration::from_secs(5))
    });
    let low = std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut v = Viewer::open_url(&low_url).unwrap_or_else(|c| panic!("low: {c}"));
        let opened = t0.elapsed();
        (v.read_for(Duration::from_secs(10)), opened)
    });
    // Paired once mid has run for 2 s (not in the burst of the start).
    std::thread::sleep(Duration::from_secs(4));
    let st = status(&s, 1);
    assert_eq!(rendition(&st, "low")["scaled_from"], "mid", "{st}");
    // mid's viewer leaves: after the grace mid stops, and low scales the decoded frames
    // again, without a gap or a repeated picture in its stream.
    let mid = save(&mid.join().unwrap(), "cascade-mid.ts");
    check(&mid, (480, 270), "aac", "mid, scaled from the source");
    let alone = common::eventually(Duration::from_secs(5), || {
        let st = status(&s, 1);
        rendition(&st, "mid")["state"] == "idle"
            && rendition(&st, "low").get("scaled_from").is_none()
    });
    assert!(alone, "{}", status(&s, 1));
    let (data, opened) = low.join().unwrap();
    let st = status(&s, 1);
    let low = save(&data, "cascade-low.ts");
    check(
        &low,
        (256, 144),
        "aac",
        "low, across the change of what it scales from",
    );
    assert_eq!(rendition(&st, "low")["frames_dropped"], 0, "{st}");
    let (_, secs) = media::video_bitrate(&low);
    let wall = 10.0 - opened.as_secs_f64();
    assert!(secs > 0.8 * wall - 1.0, "{secs} s of video in {wall} s");
    // Every picture 40 ms after the one before, and each a new one (the source moves
    // in every frame): nothing lost or repeated when low changed what it scales from.
    let pts: Vec<f64> = media::video_csv(&low, "packet=pts_time", &[])
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    let steps: Vec<f64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        steps.iter().all(|d| (d - 0.04).abs() < 0.002),
        "uneven steps: {:?}",
        steps
            .iter()
            .filter(|d| (**d - 0.04).abs() >= 0.002)
            .collect::<Vec<_>>()
    );
    let repeats = repeated_pictures(&low);
    assert!(repeats <= 1, "{repeats} pictures repeated the one before");
}

#[test]
fn a_profile_paired_with_a_larger_one_still_deinterlaces_an_interlaced_source() {
    // 576i: 25 fps top-field-first MPEG-2 of a picture that moves 24 px a field.
    let d = tempfile::tempdir().unwrap().keep();
    let src = d.join("576i.ts");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=720x576:rate=50,scroll=horizontal=0.0125,tinterlace=mode=interleave_top,setfield=tff")
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "12"])
        .args(["-c:v", "mpeg2video", "-b:v", "8M", "-flags", "+ildct+ilme", "-top", "1"])
        .args(["-c:a", "mp2", "-f", "mpegts"])
        .arg(&src)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // Near the source's size, so combing stays measurable after the scale: big (not
    // deinterlaced) and small (deinterlaced, as by default) below it.
    let cfg = format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  idle_grace_secs: 1\nffmpeg_profiles:\n  copy: {{video_codec: copy, audio_codec: copy}}\n  big: {{video_codec: libx264, preset: ultrafast, resolution: 712x568, deinterlace: 'off', audio_codec: copy}}\n  small: {{video_codec: libx264, preset: ultrafast, resolution: 704x560, audio_codec: copy}}\nstreams:\n  - {{id: 1, name: I, source: '{}', loop: true, ffmpeg_profile: copy, profiles: [big, small]}}\n",
        src.display()
    );
    let s = Server::start(&cfg);
    let reads: Vec<_> = ["big", "small"]
        .into_iter()
        .map(|p| {
            let url = s.url(&format!("/stream/1?token={TOKEN}&profile={p}"));
            std::thread::spawn(move || {
                let mut v = Viewer::open_url(&url).unwrap_or_else(|c| panic!("{url}: {c}"));
                v.read_for(Duration::from_secs(8))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(5));
    let st = status(&s, 1);
    assert_eq!(rendition(&st, "small")["scaled_from"], "big", "{st}");
    let outs: Vec<Vec<u8>> = reads.into_iter().map(|t| t.join().unwrap()).collect();
    let big = save(&outs[0], "interlaced-big.ts");
    let small = save(&outs[1], "interlaced-small.ts");
    check(&big, (712, 568), "mp2", "big");
    check(&small, (704, 560), "mp2", "small");
    // big's pictures are combed (so the check can fail); small, paired with big, got
    // the decoded fields from it (not big's combed pictures) and deinterlaced them.
    let (b1, b2) = media::combing(&big, 712, 568);
    assert!(b1 > b2 * 1.2, "big not combed: {b1:.2} vs {b2:.2}");
    let (s1, s2) = media::combing(&small, 704, 560);
    assert!(
        s1 <= s2,
        "small combed: {s1:.2} vs {s2:.2} (big {b1:.2} vs {b2:.2})"
    );
    // The frames small took from big were the decoded 720x576 fields all along: its
    // filters never had to be rebuilt for big's 712x568 pictures.
    let logs = s.logs();
    assert!(
        !logs.contains("rebuilding the filters"),
        "small was handed big's pictures: {logs}"
    );
}

#[test]
fn a_profile_runs_only_while_it_has_viewers_and_the_copy_decodes_nothing() {
    let s = Server::start(&config(&stream(1, "copy", "mobile")));
    let mut own = Viewer::open(&s, 1);
    own.read_for(Duration::from_secs(2));
    let st = status(&s, 1);
    assert_eq!(
        st["frames_decoded"], 0,
        "a copy channel decodes nothing: {st}"
    );
    assert_eq!(rendition(&st, "mobile")["state"], "idle", "{st}");

    // A viewer of the profile joins the running channel (mid-GOP, mid-file).
    let t0 = Instant::now();
    let mut v = open(&s, 1, "mobile");
    let data = v.read_for(Duration::from_secs(5));
    let waited = t0.elapsed();
    let path = save(&data, "mobile.ts");
    check(&path, (320, 180), "aac", "profile mobile, joined late");
    let tracks = media::tracks(&path);
    assert_eq!(tracks[1].3, 1, "mono audio as the profile asks: {tracks:?}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    let st = status(&s, 1);
    assert_eq!(rendition(&st, "mobile")["state"], "running", "{st}");
    let decoded = st["frames_decoded"].as_u64().unwrap();
    assert!(decoded > 100, "{st}");

    // Its viewer leaves: after the idle grace (1 s) the encoder and the decoders stop,
    // and the channel's own viewer goes on undisturbed.
    drop(v);
    let stopped = common::eventually(Duration::from_secs(6), || {
        rendition(&status(&s, 1), "mobile")["state"] == "idle"
    });
    assert!(stopped, "{}", status(&s, 1));
    let before = status(&s, 1)["frames_decoded"].as_u64().unwrap();
    let later = own.read_for(Duration::from_secs(3));
    assert!(
        later.len() > 200_000,
        "the own viewer got {} bytes",
        later.len()
    );
    let after = status(&s, 1)["frames_decoded"].as_u64().unwrap();
    assert_eq!(before, after, "decoding went on with no profile watched");
    let st = status(&s, 1);
    assert_eq!(st["state"], "running");
    assert_eq!(rendition(&st, "mobile")["clients"], 0);

    // And comes back: a new viewer gets the profile again.
    let mut again = open(&s, 1, "mobile");
    let path = save(&again.read_for(Duration::from_secs(3)), "again.ts");
    check(&path, (320, 180), "aac", "profile mobile, second start");
}

#[test]
fn a_transcoding_channel_shares_its_decoder_and_a_slow_profile_drops_only_its_own_frames() {
    let s = Server::start(&config(&stream(1, "tx", "low, slow")));
    let urls: Vec<String> = ["", "&profile=low", "&profile=slow"]
        .iter()
        .map(|q| s.url(&format!("/stream/1?token={TOKEN}{q}")))
        .collect();
    let reads: Vec<_> = urls
        .into_iter()
        .map(|url| {
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let mut v = Viewer::open_url(&url).unwrap_or_else(|c| panic!("{url}: {c}"));
                let opened = t0.elapsed();
                (v.read_for(Duration::from_secs(10)), opened)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(9));
    let st = status(&s, 1);
    let outputs: Vec<(Vec<u8>, Duration)> = reads.into_iter().map(|t| t.join().unwrap()).collect();
    let own = save(&outputs[0].0, "tx-own.ts");
    let low = save(&outputs[1].0, "tx-low.ts");
    check(&own, (480, 270), "aac", "the channel's own transcode");
    check(&low, (256, 144), "aac", "profile low beside it");
    // The slow profile (x264 veryslow at 1080p on one thread, no lookahead) cannot keep
    // up: it drops frames and says so, and what it sends still decodes; the channel and
    // the other profile keep the source's pace.
    let slow_path = save(&outputs[2].0, "tx-slow.ts");
    check(&slow_path, (1920, 1080), "aac", "the slow profile");
    let slow = rendition(&st, "slow");
    assert!(slow["frames_dropped"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(rendition(&st, "low")["frames_dropped"], 0, "{st}");
    // low scales the channel's own 480x270 pictures (its own transcode), not the
    // decoded 640x360 ones; slow (an upscale) takes the decoded frames.
    assert_eq!(rendition(&st, "low")["scaled_from"], "tx", "{st}");
    assert!(rendition(&st, "slow").get("scaled_from").is_none(), "{st}");
    for (path, what) in [(&own, "own"), (&low, "low")] {
        let (_, secs) = media::video_bitrate(path);
        let wall = 10.0 - outputs[0].1.as_secs_f64();
        assert!(
            secs > 0.8 * wall - 1.0,
            "{what}: {secs} s of media in {wall} s"
        );
    }
    let speed = st["speed"].as_f64().unwrap();
    assert!(speed > 0.9, "the channel fell behind: {st}");
    // One decode: the channel's own encoder and low's take the same decoded frames.
    let decoded = st["frames_decoded"].as_u64().unwrap();
    let own_frames = st["frames_encoded"].as_u64().unwrap();
    assert!(decoded > 0 && own_frames > 0, "{st}");
    assert!(
        (decoded as f64) < 1.2 * own_frames as f64,
        "{decoded} decoded for {own_frames} encoded by the channel alone: {st}"
    );
}

/// `path?query` answers 404 JSON whose detail says `says`.
fn refused(s: &Server, path: &str, query: &str, says: &str) {
    let r = s.get(&format!("{path}?token={TOKEN}&{query}"));
    assert_eq!(r.status, 404, "{path}?{query}");
    let detail = r.json()["detail"].as_str().unwrap_or("").to_owned();
    assert!(detail.contains(says), "{path}?{query}: {detail}");
}

#[test]
fn profiles_are_asked_for_by_name_and_unknown_ones_refused() {
    let s = Server::start(&config(&format!(
        "{}{}",
        stream(1, "copy", "mid, low"),
        stream(2, "copy", "")
    )));
    let r = s.get(&format!("/stream/1?token={TOKEN}&profile=nope"));
    assert_eq!(r.status, 404);
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("\"nope\"") && detail.contains("copy, mid, low"),
        "{detail}"
    );
    let r = s.request(
        "HEAD",
        &format!("/stream/1?token={TOKEN}&profile=nope"),
        &[],
        None,
    );
    assert_eq!(r.status, 404);
    refused(&s, "/stream/2", "profile=mid", "it offers: copy");
    // The stream's own profile by name is its own output.
    let mut v = open(&s, 2, "copy");
    let path = save(&v.read_for(Duration::from_secs(2)), "own-by-name.ts");
    check(&path, (640, 360), "aac", "?profile= naming the own profile");
    drop(v);

    // The playlist variant: channels that offer the profile ask for it, others not.
    let p = s.get(&format!("/playlist.m3u?token={TOKEN}&profile=low"));
    assert_eq!(p.status, 200);
    let urls: Vec<&str> = p.body.lines().filter(|l| l.starts_with("http")).collect();
    assert_eq!(urls.len(), 2, "{}", p.body);
    assert!(
        urls[0].ends_with(&format!("/stream/1?token={TOKEN}&profile=low")),
        "{urls:?}"
    );
    assert!(
        urls[1].ends_with(&format!("/stream/2?token={TOKEN}")),
        "{urls:?}"
    );
    refused(&s, "/playlist.m3u", "profile=nope", "offered: low, mid");
    // A player following the variant's URL gets the profile.
    let mut v = Viewer::open_url(urls[0]).unwrap();
    let path = save(&v.read_for(Duration::from_secs(3)), "variant.ts");
    check(&path, (256, 144), "aac", "the variant playlist's URL");
}

#[test]
fn profiles_are_validated_with_their_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "hdhomerun:\n  transcode_profiles: {mobil: low, heavy: nope}\nffmpeg_profiles:\n  copy: {}\n  low: {video_codec: libx264}\nstreams:\n  - id: 1\n    name: A\n    source: s\n    ffmpeg_profile: copy\n    profiles: [low, nope, copy, low]\n  - id: 2\n    name: B\n    source: s\n    custom_ffmpeg: 'ffmpeg -i {source} -f mpegts pipe:1'\n    profiles: [low]\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let (code, _, err) = run_cli(&["check", "--config", path]);
    assert_eq!(code, 1, "{err}");
    for want in [
        "streams[0].profiles[1]: unknown profile \"nope\" (known: copy, low)",
        "streams[0].profiles[2]: \"copy\" is the stream's own ffmpeg_profile",
        "streams[0].profiles[3]: \"low\" is listed twice",
        "streams[1].profiles: needs the in-process engine",
        "hdhomerun.transcode_profiles.mobil: not an HDHomeRun transcode value",
        "hdhomerun.transcode_profiles.heavy: unknown profile \"nope\" (known: copy, low)",
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(want))
            .unwrap_or_else(|| panic!("no {want:?} in\n{err}"));
        assert!(line.trim_start().starts_with(&format!("{path}:")), "{line}");
        let at: Vec<&str> = line.trim_start()[path.len() + 1..].splitn(3, ':').collect();
        assert!(
            at[0].parse::<u32>().is_ok_and(|n| n >= 2),
            "no line in {line}"
        );
    }
}

#[test]
fn hdhomerun_transcode_values_reach_the_mapped_profiles() {
    let cfg = config(&format!(
        "{}{}",
        stream(1, "copy", "mobile"),
        stream(2, "copy", "")
    ))
    .replace(
        "engine:\n",
        "hdhomerun:\n  transcode_profiles: {mobile: mobile, internet240: low}\nengine:\n",
    );
    let s = Server::start(&cfg);
    let d = s.get(&format!("/hdhr/{TOKEN}/discover.json")).json();
    assert_eq!(d["ModelNumber"], "HDTC-2US", "{d}");
    let xml = s.get(&format!("/hdhr/{TOKEN}/device.xml")).body;
    assert!(xml.contains("<modelNumber>HDTC-2US</modelNumber>"), "{xml}");
    let capture = |path: &str, name: &str| {
        let mut v = Viewer::open_url(&s.url(path)).unwrap_or_else(|c| panic!("{path}: {c}"));
        save(&v.read_for(Duration::from_secs(3)), name)
    };
    // Mapped and offered: the profile.
    let p = capture(
        &format!("/hdhr/{TOKEN}/auto/v1?transcode=mobile"),
        "hdhr-mobile.ts",
    );
    check(&p, (320, 180), "aac", "transcode=mobile");
    // Mapped but not offered by channel 2, or not mapped at all: the channel's own.
    let p = capture(
        &format!("/hdhr/{TOKEN}/auto/v2?transcode=internet240"),
        "hdhr-240.ts",
    );
    check(
        &p,
        (640, 360),
        "aac",
        "transcode=internet240 on a channel without it",
    );
    let p = capture(
        &format!("/hdhr/{TOKEN}/auto/v1?transcode=heavy"),
        "hdhr-heavy.ts",
    );
    check(&p, (640, 360), "aac", "transcode=heavy, not mapped");
}

/// The segments of one rendition's live playlist: (sequence number, URI).
fn listed(s: &Server, query: &str) -> Vec<(u64, String)> {
    let text = s
        .get(&format!("/hls/1/index.m3u8?token={TOKEN}{query}"))
        .body;
    let first: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no media sequence in {text}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .enumerate()
        .map(|(i, uri)| (first + i as u64, uri.to_owned()))
        .collect()
}

/// The first video PTS of a segment (90 kHz).
fn first_pts(s: &Server, uri: &str, name: &str) -> i64 {
    let (status, _, body) = s.get_bytes(&format!("/hls/1/{uri}"), &[]);
    assert_eq!(status, 200, "{uri}");
    let path = save(&body, name);
    media::video_csv(&path, "packet=pts", &["-read_intervals", "%+#1"])
        .trim()
        .trim_end_matches(',')
        .parse()
        .unwrap_or_else(|_| panic!("no PTS in {uri}"))
}

#[test]
fn adaptive_hls_lists_aligned_renditions_and_hls_js_switches_between_them() {
    let s = Server::start(&config(&stream(1, "copy", "mid, low")));
    let t0 = Instant::now();
    let master = s.get(&format!("/hls/1/master.m3u8?token={TOKEN}"));
    let waited = t0.elapsed();
    assert_eq!(master.status, 200, "{}", master.body);
    assert_eq!(
        master.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let text = master.body.clone();
    let inf: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .collect();
    assert_eq!(inf.len(), 3, "{text}");
    let attr = |line: &str, key: &str| -> String {
        let rest = line
            .split_once(&format!("{key}="))
            .map(|(_, r)| r)
            .unwrap_or("");
        if let Some(q) = rest.strip_prefix('"') {
            q.split('"').next().unwrap_or("").to_owned()
        } else {
            rest.split(',').next().unwrap_or("").to_owned()
        }
    };
    for (line, res) in inf.iter().zip(["640x360", "480x270", "256x144"]) {
        assert_eq!(attr(line, "RESOLUTION"), res, "{line}");
        assert_eq!(attr(line, "FRAME-RATE"), "25.000", "{line}");
        let codecs = attr(line, "CODECS");
        assert!(
            codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"),
            "{line}"
        );
    }
    // Bandwidths are measured on the segments: each at least its average, in the order
    // of the renditions' sizes.
    let bw =
        |key: &str| -> Vec<f64> { inf.iter().map(|l| attr(l, key).parse().unwrap()).collect() };
    let (peak, avg) = (bw("BANDWIDTH"), bw("AVERAGE-BANDWIDTH"));
    assert!(
        peak.iter().zip(&avg).all(|(p, a)| p >= a && *a > 100_000.0),
        "{text}"
    );
    assert!(avg[0] > avg[1] && avg[1] > avg[2], "{text}");
    let uris: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("index.m3u8"))
        .collect();
    assert_eq!(
        uris,
        [
            format!("index.m3u8?token={TOKEN}"),
            format!("index.m3u8?profile=mid&token={TOKEN}"),
            format!("index.m3u8?profile=low&token={TOKEN}"),
        ]
    );
    assert!(waited < Duration::from_secs(20), "{waited:?}");

    // Aligned: the same sequence numbers start at the same picture in every rendition.
    std::thread::sleep(Duration::from_secs(2));
    let own = listed(&s, "");
    let mid = listed(&s, "&profile=mid");
    let low = listed(&s, "&profile=low");
    let mut compared = 0;
    for (seq, uri) in &own {
        let (Some(m), Some(l)) = (
            mid.iter().find(|(n, _)| n == seq),
            low.iter().find(|(n, _)| n == seq),
        ) else {
            continue;
        };
        let p0 = first_pts(&s, uri, "al-own.ts");
        let p1 = first_pts(&s, &m.1, "al-mid.ts");
        let p2 = first_pts(&s, &l.1, "al-low.ts");
        // Within one 25 fps frame (the encoders' frame grid rounds by up to half one).
        assert!(
            (p0 - p1).abs() < 3_600 && (p0 - p2).abs() < 3_600,
            "{seq}: {p0} {p1} {p2}"
        );
        compared += 1;
    }
    assert!(compared >= 2, "no common segments: {own:?} {mid:?} {low:?}");
    let check_seg = |uri: &str, size, name: &str| {
        let (_, _, body) = s.get_bytes(&format!("/hls/1/{uri}"), &[]);
        let path = save(&body, name);
        check(&path, size, "aac", name);
    };
    check_seg(&mid.last().unwrap().1, (480, 270), "seg-mid.ts");
    check_seg(&low.last().unwrap().1, (256, 144), "seg-low.ts");
    // What the master says a rendition takes is what its segments take (the playlists'
    // windows have moved on a little since), and the encoders meet their targets.
    for (list, i, target, name) in [(&mid, 1, 400_000.0, "mid"), (&low, 2, 150_000.0, "low")] {
        let mut all = Vec::new();
        for (_, uri) in list.iter() {
            all.extend(s.get_bytes(&format!("/hls/1/{uri}"), &[]).2);
        }
        let path = save(&all, &format!("window-{name}.ts"));
        let secs = media::probe(&path)["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse::<f64>().ok())
            .unwrap();
        let rate = all.len() as f64 * 8.0 / secs;
        assert!(
            (rate - avg[i]).abs() <= 0.25 * avg[i],
            "{name}: {rate} vs {}",
            avg[i]
        );
        let (video, _) = media::video_bitrate(&path);
        assert!(
            (video - target).abs() <= 0.25 * target,
            "{name}: video {video}"
        );
    }

    // hls.js (the dashboard's player) plays the master playlist and switches levels.
    let b = Browser::start();
    b.go(&s.url("/login"));
    b.type_into("#token", TOKEN);
    b.click("button[type=submit]");
    assert!(b.wait_js(Duration::from_secs(5), "return document.title === 'Amps'"));
    b.go(&s.url("/watch/1"));
    b.wait_playing(Duration::from_secs(30), "v.currentTime > 1");
    assert_eq!(b.js("return window.amps.hls.levels.length"), 3);
    let heights = b.js("return window.amps.hls.levels.map(l => l.height).sort((a, b) => a - b)");
    assert_eq!(heights, serde_json::json!([144, 270, 360]));
    for target in [144, 360] {
        let level = b.js(&format!(
            "return window.amps.hls.levels.findIndex(l => l.height === {target})"
        ));
        b.js(&format!(
            "window.amps.hls.currentLevel = {level}; return true"
        ));
        assert!(
            b.wait_js(
                Duration::from_secs(20),
                &format!("const v = document.getElementById('player'); return v.videoHeight === {target} && !v.paused")
            ),
            "no switch to {target}: level {}, video {}x{}",
            b.js("return window.amps.hls.currentLevel"),
            b.js("return document.getElementById('player').videoWidth"),
            b.js("return document.getElementById('player').videoHeight"),
        );
        let t1 = b.current_time();
        std::thread::sleep(Duration::from_secs(2));
        let t2 = b.current_time();
        assert!(t2 - t1 > 1.0, "playback advances at {target}: {t1} -> {t2}");
    }
    let errors: Vec<String> = b
        .console()
        .into_iter()
        .filter(|l| l.contains("SEVERE"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}
