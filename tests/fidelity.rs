//! Engine fidelity on media like a real broadcast's, next to the ffmpeg CLI on the same
//! input: every track of a multi-language source with its language and disposition,
//! audio track selection and a real downmix, deinterlacing checked on the pictures,
//! frames that change size and layout mid-stream, damaged bytes, and the input formats
//! a NAS receives (H.264, HEVC, MPEG-2; AAC ADTS and LATM, AC-3, E-AC-3, MP2, MP3;
//! 25, 29.97 and 50 fps; 576i, 1080i, 720p, 1080p, 2160p). All media is generated here
//! by the ffmpeg CLI and checked with ffprobe.

mod common;

use common::media::ffmpeg;
use common::{media, save, Server, Viewer, TOKEN};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

fn dir() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().unwrap().keep())
}

fn config(profiles: &str, streams: &[(u32, &Path, &str)]) -> String {
    let mut s = format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  start_timeout_secs: 20\n  idle_grace_secs: 1\nffmpeg_profiles:\n  relay: {{video_codec: copy, audio_codec: copy}}\n{profiles}streams:\n"
    );
    for (id, path, profile) in streams {
        s.push_str(&format!(
            "  - {{id: {id}, name: Ch{id}, source: '{}', ffmpeg_profile: {profile}}}\n",
            path.display()
        ));
    }
    s
}

/// Plays channel `id` to its end (a file source without `loop`), at most `limit`.
fn play(s: &Server, id: u32, limit: Duration) -> PathBuf {
    let mut v = Viewer::open(s, id);
    let bytes = v.read_for(limit);
    save(&bytes, &format!("out{id}.ts"))
}

/// As [`play`], or None when the channel does not start (503).
fn try_play(s: &Server, id: u32, limit: Duration) -> Option<PathBuf> {
    let url = s.url(&format!("/stream/{id}?token={TOKEN}"));
    let agent = ureq::AgentBuilder::new()
        .timeout_read(Duration::from_secs(3))
        .build();
    let resp = match agent.get(&url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(503, _)) => return None,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let mut reader = resp.into_reader();
    let (t0, mut bytes, mut buf) = (std::time::Instant::now(), Vec::new(), vec![0u8; 65536]);
    while t0.elapsed() < limit {
        match std::io::Read::read(&mut reader, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    Some(save(&bytes, &format!("try{id}.ts")))
}

fn streams(p: &Value) -> Vec<Value> {
    p["streams"].as_array().cloned().unwrap_or_default()
}

/// The ffmpeg CLI's own transcode of `src` (libx264 ultrafast + AAC) into `out`: how many
/// seconds it delivers (0 when it fails).
fn cli_transcode(src: &Path, out: &Path) -> f64 {
    let ok = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "quiet", "-y", "-i"])
        .arg(src)
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-f",
            "mpegts",
        ])
        .arg(out)
        .status()
        .expect("ffmpeg is installed (./scripts/setup)")
        .success();
    if ok {
        duration(out)
    } else {
        0.0
    }
}

/// The first value of an ffprobe CSV answer (it repeats per program and stream).
fn first(csv: &str) -> &str {
    csv.lines()
        .map(|l| l.trim().trim_end_matches(','))
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

fn duration(path: &Path) -> f64 {
    media::probe(path)["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0)
}

/// H.264 + AAC (eng, default) + AAC (deu, hearing impaired... as a commentary) + AC-3
/// 5.1 (eng, visually impaired: audio description), 3 s.
fn broadcast() -> &'static Path {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let f = dir().join("broadcast.ts");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=660:sample_rate=48000",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=880:sample_rate=48000",
            "-filter_complex",
            "[3:a]pan=5.1|c2=c0|c0=0.2*c0[surround]",
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-map",
            "2:a",
            "-map",
            "[surround]",
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-c:a:0",
            "aac",
            "-c:a:1",
            "aac",
            "-c:a:2",
            "ac3",
            "-metadata:s:a:0",
            "language=eng",
            "-metadata:s:a:1",
            "language=deu",
            "-metadata:s:a:2",
            "language=eng",
            "-disposition:a:0",
            "default",
            "-disposition:a:1",
            "hearing_impaired",
            "-disposition:a:2",
            "visual_impaired",
            "-f",
            "mpegts",
            f.to_str().unwrap(),
        ]);
        f
    })
}

/// (codec_type, codec_name, language, channels, hearing_impaired, visual_impaired)
fn track_list(path: &Path) -> Vec<(String, String, String, u64, u64, u64)> {
    streams(&media::probe(path))
        .iter()
        .map(|s| {
            let (kind, codec, language, channels) = media::track_of(s);
            (
                kind,
                codec,
                language,
                channels,
                s["disposition"]["hearing_impaired"].as_u64().unwrap_or(0),
                s["disposition"]["visual_impaired"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn a_relay_keeps_every_track_with_its_language_and_disposition() {
    let src = broadcast();
    let s = Server::start(&config("", &[(1, src, "relay")]));
    let out = play(&s, 1, Duration::from_secs(12));
    let got = track_list(&out);
    // The ffmpeg CLI's own relay of every stream, for comparison.
    let cli = dir().join("cli-relay.ts");
    ffmpeg(&[
        "-i",
        src.to_str().unwrap(),
        "-map",
        "0",
        "-c",
        "copy",
        "-f",
        "mpegts",
        cli.to_str().unwrap(),
    ]);
    assert_eq!(got, track_list(&cli), "Amps' relay differs from the CLI's");
    let s2 = |t: &str, c: &str, l: &str, ch: u64, hi: u64, vi: u64| {
        (t.to_owned(), c.to_owned(), l.to_owned(), ch, hi, vi)
    };
    assert_eq!(
        got,
        vec![
            s2("video", "h264", "", 0, 0, 0),
            s2("audio", "aac", "eng", 1, 0, 0),
            s2("audio", "aac", "deu", 1, 1, 0),
            s2("audio", "ac3", "eng", 6, 0, 1),
        ]
    );
    assert_eq!(media::decode_errors(&out), "");
    assert!(duration(&out) > 2.5, "{}", duration(&out));
    let st = s.get("/api/streams/1/status").json();
    assert_eq!(
        st["output_codecs"],
        serde_json::json!([
            "h264 (copy)",
            "aac (copy) [eng]",
            "aac (copy) [deu, hearing_impaired]",
            "ac3 (copy) [eng, visual_impaired]"
        ])
    );
}

/// Mean volume (dB) of the audio stream `index` of `path`.
fn mean_volume(path: &Path, index: usize) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-i"])
        .arg(path)
        .args([
            "-map",
            &format!("0:a:{index}"),
            "-af",
            "volumedetect",
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| l.split("mean_volume:").nth(1))
        .and_then(|v| v.trim().trim_end_matches(" dB").parse().ok())
        .unwrap_or_else(|| panic!("no volume in {text}"))
}

#[test]
fn a_transcode_keeps_the_selected_tracks_in_order_and_downmixes_5_1() {
    let src = broadcast();
    let profiles = "  pick: {video_codec: libx264, preset: ultrafast, resolution: x240, audio_codec: aac, audio_tracks: [deu, eng]}\n  first: {video_codec: libx264, preset: ultrafast, resolution: x240, audio_codec: aac, audio_tracks: first}\n";
    let s = Server::start(&config(profiles, &[(1, src, "pick"), (2, src, "first")]));
    let out = play(&s, 1, Duration::from_secs(12));
    let got = track_list(&out);
    let langs: Vec<(&str, &str, &str, u64)> = got
        .iter()
        .map(|t| (t.0.as_str(), t.1.as_str(), t.2.as_str(), t.3))
        .collect();
    // German first (preference order), then both English tracks; the 5.1 AC-3 track
    // comes out as stereo AAC, each with its language and disposition.
    assert_eq!(
        langs,
        vec![
            ("video", "h264", "", 0),
            ("audio", "aac", "deu", 1),
            ("audio", "aac", "eng", 1),
            ("audio", "aac", "eng", 2),
        ]
    );
    assert_eq!((got[1].4, got[3].5), (1, 1), "dispositions: {got:?}");
    assert_eq!(media::decode_errors(&out), "");
    // The 5.1 source carries its tone in the centre channel (and a little in front
    // left): a downmix that drops channels would leave it near silent.
    let v = mean_volume(&out, 2);
    let cli = dir().join("cli-downmix.ts");
    ffmpeg(&[
        "-i",
        src.to_str().unwrap(),
        "-map",
        "0:a:2",
        "-c:a",
        "aac",
        "-ac",
        "2",
        "-f",
        "mpegts",
        cli.to_str().unwrap(),
    ]);
    let reference = mean_volume(&cli, 0);
    assert!(
        (v - reference).abs() < 3.0 && v > -40.0,
        "downmix mean volume {v} dB, the CLI's {reference} dB"
    );
    let out2 = play(&s, 2, Duration::from_secs(12));
    let t2 = track_list(&out2);
    assert_eq!(t2.len(), 2, "{t2:?}");
    assert_eq!(t2[1].2, "eng");
}

/// `size` at 50 fields per second with a picture that moves 24 px a field, as 25 fps
/// top-field-first interlaced MPEG-2 (broadcast 1080i/576i).
fn interlaced(name: &str, size: &str, secs: &str) -> PathBuf {
    let f = dir().join(name);
    ffmpeg(&[
        "-f", "lavfi", "-i",
        &format!("testsrc2=size={size}:rate=50,scroll=horizontal=0.0125,tinterlace=mode=interleave_top,setfield=tff"),
        "-f", "lavfi", "-i", "sine=sample_rate=48000",
        "-t", secs, "-c:v", "mpeg2video", "-b:v", "15M", "-flags", "+ildct+ilme", "-top", "1",
        "-c:a", "mp2", "-f", "mpegts", f.to_str().unwrap(),
    ]);
    f
}

#[test]
fn interlaced_sources_are_deinterlaced_and_show_no_combing() {
    let src = interlaced("1080i.ts", "1920x1080", "2");
    let fo = media::video_csv(&src, "stream=field_order", &[]);
    assert_eq!(first(&fo), "tt", "the source is interlaced");
    let profiles = "  full: {video_codec: libx264, preset: ultrafast, audio_codec: aac}\n  combed: {video_codec: libx264, preset: ultrafast, audio_codec: aac, deinterlace: 'off'}\n  fields: {video_codec: libx264, preset: ultrafast, audio_codec: aac, resolution: x360, deinterlace_rate: field}\n";
    let s = Server::start(&config(
        profiles,
        &[(1, &src, "full"), (2, &src, "combed"), (3, &src, "fields")],
    ));
    let out = play(&s, 1, Duration::from_secs(15));
    let off = play(&s, 2, Duration::from_secs(15));
    let (d1, d2) = media::combing(&out, 1920, 1080);
    let (o1, o2) = media::combing(&off, 1920, 1080);
    // Without deinterlacing the check sees the combing (so it can fail)...
    assert!(o1 > o2 * 1.2, "not deinterlaced: {o1:.2} vs {o2:.2}");
    // ...and deinterlaced, lines one apart differ no more than lines two apart.
    assert!(
        d1 <= d2,
        "combing left: {d1:.2} vs {d2:.2} (off: {o1:.2} vs {o2:.2})"
    );
    assert_eq!(
        first(&media::video_csv(&out, "stream=field_order", &[])),
        "progressive"
    );
    assert_eq!(
        first(&media::video_csv(&out, "stream=r_frame_rate", &[])),
        "25/1"
    );
    let fields = play(&s, 3, Duration::from_secs(15));
    assert_eq!(
        first(&media::video_csv(&fields, "stream=r_frame_rate", &[])),
        "50/1"
    );
    assert_eq!(media::resolution(&fields), (640, 360));
    assert_eq!(media::decode_errors(&fields), "");
    // Progressive sources are untouched: no deinterlacer in their graph.
    let st = s.get("/api/streams/1/status").json();
    assert_eq!(st["input_codecs"][0], "mpeg2video");
}

#[test]
fn frames_that_change_size_and_layout_mid_stream_keep_the_output_going() {
    // Three parts, one after the other in one TS: 320x240 stereo 48 kHz, 640x360 5.1
    // 44.1 kHz, 320x240 mono 48 kHz (an ad break, a programme in 5.1, a mono news).
    let parts = [
        ("320x240", "stereo", "48000", "0"),
        ("640x360", "5.1", "44100", "2"),
        ("320x240", "mono", "48000", "4"),
    ];
    let mut bytes = Vec::new();
    for (i, (size, layout, rate, offset)) in parts.iter().enumerate() {
        let f = dir().join(format!("part{i}.ts"));
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=25"),
            "-f",
            "lavfi",
            "-i",
            &format!("sine=sample_rate={rate},aformat=channel_layouts={layout}"),
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-output_ts_offset",
            offset,
            "-f",
            "mpegts",
            f.to_str().unwrap(),
        ]);
        bytes.extend(std::fs::read(&f).unwrap());
    }
    let src = dir().join("changing.ts");
    std::fs::write(&src, &bytes).unwrap();
    let profiles =
        "  x264: {video_codec: libx264, preset: ultrafast, resolution: x240, audio_codec: aac}\n";
    let s = Server::start(&config(profiles, &[(1, &src, "x264")]));
    let out = play(&s, 1, Duration::from_secs(20));
    // The CLI transcodes the same file to the end: so must Amps.
    let cli = dir().join("cli-changing.ts");
    let (ours, theirs) = (duration(&out), cli_transcode(&src, &cli));
    assert!(theirs > 5.5, "the CLI's output lasts {theirs} s");
    assert!(
        ours > theirs - 0.7,
        "Amps delivered {ours} s, the CLI {theirs} s"
    );
    // One output size throughout, decodable, one channel the whole way.
    let widths = media::frame_widths(&out);
    assert!(
        widths.iter().all(|w| *w == 320),
        "{:?}",
        &widths[..widths.len().min(10)]
    );
    assert_eq!(media::decode_errors(&out), "");
    let st = s.get("/api/streams/1/status").json();
    assert_eq!(st["restarts"], 0, "{st}");
}

/// An audio track that ends while the video goes on (a programme boundary that drops a
/// language, an upstream that loses its audio): libav's interleaver would hold every
/// picture until 10 s had piled up, freezing the channel and then keeping it 10 s behind.
/// The relay (a file: the libav remux) and a transcode both keep the pictures coming, held
/// back at most the 2 s it takes to see that the audio has gone.
#[test]
fn an_audio_track_that_ends_does_not_hold_the_pictures() {
    let src = dir().join("audio-ends.ts");
    #[rustfmt::skip]
    ffmpeg(&[
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
        "-t", "3", "-f", "lavfi", "-i", "sine=sample_rate=48000",
        "-t", "14", "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-f", "mpegts", src.to_str().unwrap(),
    ]);
    let profiles = "  x264: {video_codec: libx264, preset: ultrafast, audio_codec: aac}\n";
    let s = Server::start(&config(profiles, &[(1, &src, "relay"), (2, &src, "x264")]));
    for (id, what) in [(1, "relay"), (2, "transcode")] {
        // The file is paced at its own rate: 9 s of reading hold about 9 s of it.
        let mut v = Viewer::open(&s, id);
        let out = save(
            &v.read_for(Duration::from_secs(9)),
            &format!("audio-ends{id}.ts"),
        );
        let video = media::video_csv(&out, "packet=pts", &[]);
        let pts: Vec<f64> = video
            .lines()
            .filter_map(|l| l.trim_end_matches(',').parse::<f64>().ok())
            .collect();
        let span = (pts.last().unwrap_or(&0.0) - pts.first().unwrap_or(&0.0)) / 90_000.0;
        assert!(
            span > 5.5,
            "{what}: {span:.2} s of pictures in 9 s (the audio ends 3 s in)"
        );
        let audio = media::probe(&out)["streams"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["codec_type"] == "audio")
            .count();
        assert_eq!(audio, 1, "{what}: the audio stream stays in the programme");
        assert_eq!(media::decode_errors(&out), "", "{what}");
    }
    assert_eq!(s.get("/health").status, 200);
}

/// A live MPEG-TS source joined mid-GOP where its PAT and PMT come only after the
/// probe's bytes (a PMT every few hundred milliseconds, a join just after one): the
/// demuxer makes the video stream from its packets alone and cannot tell what it is (or
/// takes it for MP3).
/// Amps reads on until the PMT names it; it was left out before, and the channel had
/// sound without a picture.
#[test]
fn a_live_source_whose_tables_come_after_the_probe_keeps_its_video() {
    let whole = dir().join("late-tables-src.ts");
    #[rustfmt::skip]
    ffmpeg(&[
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
        "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "10",
        "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "1500k", "-g", "50",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "mpegts", whole.to_str().unwrap(),
    ]);
    // Joined 3 s in (mid-GOP: keyframes at 0, 2, 4 s), and no PAT or PMT in the first
    // 256 KiB after that: eight times the live probe's 32 KiB.
    let data = std::fs::read(&whole).unwrap();
    let from = data.len() * 3 / 10 / 188 * 188;
    let mut cut = Vec::new();
    for p in data[from..].chunks_exact(188) {
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        if cut.len() < 256 * 1024 && (pid == 0 || pid == 0x1000) {
            continue;
        }
        cut.extend_from_slice(p);
    }
    let src = dir().join("late-tables.ts");
    std::fs::write(&src, &cut).unwrap();
    // The case itself: with the live probe's limits, libav does not see the video as
    // video (it comes out unknown, or taken for MP3 audio).
    let probed = Command::new("ffprobe")
        .args([
            "-v",
            "info",
            "-probesize",
            "32768",
            "-analyzeduration",
            "500000",
        ])
        .arg(&src)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&probed.stderr);
    assert!(
        said.contains("[0x100]") && !said.contains("Video: h264"),
        "{said}"
    );

    let up = common::upstream::Upstream::start(dir().to_path_buf(), 0);
    let url = up.url("late-tables.ts");
    let cfg = config(
        "  x264: {video_codec: libx264, preset: ultrafast, audio_codec: aac}
  remux: {video_codec: copy, audio_codec: copy, ts_relay: false}
",
        &[],
    ) + &format!(
        "  - {{id: 1, name: Tx, source: '{url}', ffmpeg_profile: x264}}
  - {{id: 2, name: Remux, source: '{url}', ffmpeg_profile: remux}}
"
    );
    let s = Server::start(&cfg);
    for (id, what) in [(1, "transcode"), (2, "libav remux")] {
        let mut v = Viewer::open(&s, id);
        let out = save(
            &v.read_for(Duration::from_secs(3)),
            &format!("late-tables{id}.ts"),
        );
        let kinds: Vec<(String, String)> = streams(&media::probe(&out))
            .iter()
            .map(|st| {
                (
                    st["codec_type"].as_str().unwrap_or("").to_owned(),
                    st["codec_name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        assert!(
            kinds.contains(&("video".into(), "h264".into()))
                && kinds.iter().any(|k| k.0 == "audio"),
            "{what}: video and audio: {kinds:?}"
        );
        let width = media::video_csv(&out, "stream=width", &[]);
        assert_eq!(first(&width), "640", "{what}");
        assert_eq!(media::decode_errors(&out), "", "{what}");
    }
    let st = s.get("/api/streams/1/status").json();
    assert!(
        st["skipped_streams"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "nothing left out: {st}"
    );
    assert_eq!(
        st["input_codecs"],
        serde_json::json!(["aac", "h264"]),
        "the PMT's codecs, not a guess: {st}"
    );
}

/// Flips bits of `data` at about `ratio` of its bytes (xorshift, seeded), as zzuf does.
fn corrupt(data: &[u8], ratio: f64, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    let mut out = data.to_vec();
    let threshold = (ratio * u32::MAX as f64) as u64;
    for b in out.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (x & 0xffff_ffff) < threshold {
            *b ^= 1 << ((x >> 40) % 8);
        }
    }
    out
}

#[test]
fn damaged_sources_are_delivered_to_the_end_as_far_as_the_cli_gets() {
    let clean = dir().join("clean.ts");
    media::generate(&clean, "640x360", 6, &["-b:v", "1M"], &["-b:a", "96k"]);
    let data = std::fs::read(&clean).unwrap();
    let cases: Vec<(u64, f64)> = vec![(1, 0.0005), (2, 0.0005), (3, 0.001)];
    let mut files = Vec::new();
    for (seed, ratio) in &cases {
        let f = dir().join(format!("bad{seed}.ts"));
        std::fs::write(&f, corrupt(&data, *ratio, *seed)).unwrap();
        files.push(f);
    }
    let profiles = "  x264: {video_codec: libx264, preset: ultrafast, audio_codec: aac}\n";
    let mut chans: Vec<(u32, &Path, &str)> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        chans.push((10 + i as u32, f, "x264"));
        chans.push((20 + i as u32, f, "relay"));
    }
    let s = Server::start(&config(profiles, &chans));
    for (i, f) in files.iter().enumerate() {
        let cli = dir().join(format!("cli-bad{i}.ts"));
        let theirs = cli_transcode(f, &cli);
        for (id, what) in [(10 + i as u32, "transcode"), (20 + i as u32, "relay")] {
            let ours = try_play(&s, id, Duration::from_secs(20)).map_or(0.0, |o| duration(&o));
            assert!(
                ours > theirs - 1.0,
                "{what} of {}: Amps {ours:.2} s, the CLI {theirs:.2} s",
                f.display()
            );
        }
    }
    // The server is still there for everyone.
    assert_eq!(s.get("/health").status, 200);
}

struct Format {
    name: &'static str,
    size: &'static str,
    rate: &'static str,
    video: &'static [&'static str],
    audio: &'static [&'static str],
    /// Extra output options (muxer flags).
    mux: &'static [&'static str],
    vcodec: &'static str,
    acodec: &'static str,
}

const FORMATS: &[Format] = &[
    Format {
        name: "h264-1080p25-aac",
        size: "1920x1080",
        rate: "25",
        video: &["-c:v", "libx264", "-preset", "ultrafast"],
        audio: &["-c:a", "aac"],
        mux: &[],
        vcodec: "h264",
        acodec: "aac",
    },
    Format {
        name: "hevc-720p50-ac3",
        size: "1280x720",
        rate: "50",
        video: &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error",
        ],
        audio: &["-c:a", "ac3"],
        mux: &[],
        vcodec: "hevc",
        acodec: "ac3",
    },
    Format {
        name: "mpeg2-576i-mp2",
        size: "720x576",
        rate: "25",
        video: &[
            "-c:v",
            "mpeg2video",
            "-flags",
            "+ildct+ilme",
            "-top",
            "1",
            "-aspect",
            "16:9",
        ],
        audio: &["-c:a", "mp2"],
        mux: &[],
        vcodec: "mpeg2video",
        acodec: "mp2",
    },
    Format {
        name: "h264-720p2997-eac3",
        size: "1280x720",
        rate: "30000/1001",
        video: &["-c:v", "libx264", "-preset", "ultrafast"],
        audio: &["-c:a", "eac3"],
        mux: &[],
        vcodec: "h264",
        acodec: "eac3",
    },
    Format {
        name: "h264-mp3",
        size: "640x360",
        rate: "25",
        video: &["-c:v", "libx264", "-preset", "ultrafast"],
        audio: &["-c:a", "libmp3lame"],
        mux: &[],
        vcodec: "h264",
        acodec: "mp3",
    },
    Format {
        name: "h264-aac-latm",
        size: "640x360",
        rate: "25",
        video: &["-c:v", "libx264", "-preset", "ultrafast"],
        audio: &["-c:a", "aac"],
        mux: &["-mpegts_flags", "latm"],
        vcodec: "h264",
        acodec: "aac_latm",
    },
    Format {
        name: "h264-2160p25-aac",
        size: "3840x2160",
        rate: "25",
        video: &["-c:v", "libx264", "-preset", "ultrafast"],
        audio: &["-c:a", "aac"],
        mux: &[],
        vcodec: "h264",
        acodec: "aac",
    },
];

#[test]
fn common_input_formats_relay_and_transcode() {
    let mut chans = Vec::new();
    let mut files = Vec::new();
    for f in FORMATS {
        let path = dir().join(format!("{}.ts", f.name));
        let mut args: Vec<&str> = vec!["-f", "lavfi", "-i"];
        let v = format!("testsrc2=size={}:rate={}", f.size, f.rate);
        args.push(&v);
        args.extend([
            "-f",
            "lavfi",
            "-i",
            "sine=sample_rate=48000",
            "-t",
            "2",
            "-pix_fmt",
            "yuv420p",
        ]);
        args.extend(f.video);
        args.extend(f.audio);
        args.extend(f.mux);
        let p = path.to_str().unwrap().to_owned();
        args.extend(["-f", "mpegts", &p]);
        ffmpeg(&args);
        files.push(path);
    }
    for (i, p) in files.iter().enumerate() {
        chans.push((1 + i as u32, p.as_path(), "relay"));
        chans.push((101 + i as u32, p.as_path(), "small"));
    }
    let profiles =
        "  small: {video_codec: libx264, preset: ultrafast, resolution: x360, audio_codec: aac}\n";
    let s = Server::start(&config(profiles, &chans));
    for (i, f) in FORMATS.iter().enumerate() {
        let relay = play(&s, 1 + i as u32, Duration::from_secs(15));
        assert_eq!(
            media::codecs(&relay),
            vec![f.vcodec, f.acodec],
            "relay of {}",
            f.name
        );
        assert_eq!(media::decode_errors(&relay), "", "relay of {}", f.name);
        let tx = play(&s, 101 + i as u32, Duration::from_secs(30));
        assert_eq!(
            media::codecs(&tx),
            vec!["h264", "aac"],
            "transcode of {}",
            f.name
        );
        assert_eq!(media::resolution(&tx).1, 360, "transcode of {}", f.name);
        assert_eq!(media::decode_errors(&tx), "", "transcode of {}", f.name);
        assert!(
            duration(&tx) > 1.5,
            "transcode of {}: {} s",
            f.name,
            duration(&tx)
        );
    }
}

fn active_source(s: &Server, id: u32) -> u64 {
    s.get(&format!("/api/streams/{id}/status")).json()["active_source_index"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn failover_to_a_backup_with_another_codec_and_size_keeps_the_client_and_the_output() {
    // The primary: 320x240 H.264 + AAC from a live (paced) provider; the backup: 576i
    // MPEG-2 + MP2 16:9 from another. A transcode channel's client stays across the
    // switch and keeps one output format and size.
    let backup_dir = tempfile::tempdir().unwrap().keep();
    let b = interlaced("backup576i.ts", "720x576", "30");
    std::fs::copy(&b, backup_dir.join("b.ts")).unwrap();
    let primary = common::upstream::Upstream::start(media::dir().to_path_buf(), 0);
    let backup = common::upstream::Upstream::start(backup_dir, 0);
    let cfg = format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  start_timeout_secs: 10\n  stall_timeout_secs: 3\n  failback_check_secs: 60\nffmpeg_profiles:\n  x264: {{video_codec: libx264, preset: ultrafast, resolution: 640x360, audio_codec: aac, audio_sample_rate: 48000, audio_channels: 2}}\nstreams:\n  - id: 1\n    name: Failover\n    source: '{}'\n    backup_sources: ['{}']\n    ffmpeg_profile: x264\n",
        primary.url("long.ts?live=30"),
        backup.url("b.ts?live=30")
    );
    let s = Server::start(&cfg);
    let mut v = Viewer::open(&s, 1);
    let mut all = v.read_for(Duration::from_secs(2));
    let _ = primary.kill();
    assert!(common::eventually(
        Duration::from_secs(15),
        || active_source(&s, 1) == 1
    ));
    all.extend(v.read_for(Duration::from_secs(4)));
    let f = save(&all, "failover-codec.ts");
    assert_eq!(media::codecs(&f), vec!["h264", "aac"]);
    assert_eq!(media::decode_errors(&f), "");
    let widths = media::frame_widths(&f);
    assert!(widths.len() > 100, "{} frames", widths.len());
    assert!(
        widths.iter().all(|w| *w == 640),
        "one output size: {widths:?}"
    );
    common::ts::assert_clean(&all, "a client kept across a failover to another codec");
    let st = s.get("/api/streams/1/status").json();
    assert!(st["input_codecs"][0] == "mpeg2video", "{st}");
}

#[test]
fn damage_that_starts_in_a_running_stream_is_played_through() {
    // Clean for 2 s, then bit flips and whole packets missing (a failing link), then
    // clean again: the channel runs throughout and delivers to the end, as far as the
    // ffmpeg CLI gets on the same bytes.
    let clean = dir().join("running-clean.ts");
    media::generate(&clean, "640x360", 8, &["-b:v", "1M"], &["-b:a", "96k"]);
    let data = std::fs::read(&clean).unwrap();
    let (a, b) = (data.len() / 4 / 188 * 188, data.len() * 3 / 4 / 188 * 188);
    let mut bad = data[..a].to_vec();
    let middle = corrupt(&data[a..b], 0.0005, 7);
    for (i, p) in middle.chunks(188).enumerate() {
        if i % 50 != 17 {
            bad.extend_from_slice(p); // every 50th packet is lost
        }
    }
    bad.extend_from_slice(&data[b..]);
    let src = dir().join("running-bad.ts");
    std::fs::write(&src, &bad).unwrap();
    let profiles = "  x264: {video_codec: libx264, preset: ultrafast, audio_codec: aac}\n";
    let s = Server::start(&config(profiles, &[(1, &src, "x264"), (2, &src, "relay")]));
    let cli = dir().join("cli-running-bad.ts");
    let theirs = cli_transcode(&src, &cli);
    assert!(theirs > 6.0, "the CLI gets {theirs} s");
    for id in [1, 2] {
        let out = play(&s, id, Duration::from_secs(25));
        let ours = duration(&out);
        assert!(
            ours > theirs - 1.0,
            "channel {id}: Amps {ours:.2} s, the CLI {theirs:.2} s"
        );
        let st = s.get(&format!("/api/streams/{id}/status")).json();
        assert_eq!(st["restarts"], 0, "channel {id} ran throughout: {st}");
    }
    assert_eq!(s.get("/health").status, 200);
}

/// H.264 720x576 + AAC (deu), 4 s, with a DVB subtitle stream (deu, hard of hearing) and a
/// teletext subtitle page (eng) added the way a DVB multiplex carries them
/// (tests/common/subs.rs: the CLI cannot make either).
fn with_subtitles() -> &'static Path {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let plain = dir().join("for-subtitles.ts");
        media::generate(
            &plain,
            "720x576",
            4,
            &[],
            &["-metadata:s:a:0", "language=deu"],
        );
        let f = dir().join("subtitles.ts");
        let sets = common::subs::add_subtitles(&plain, &f, "deu", true, "eng");
        assert!(sets >= 4, "{sets} subtitle display sets");
        f
    })
}

/// (codec_name, language, hearing_impaired) of every subtitle stream.
fn subtitle_tracks(path: &Path) -> Vec<(String, String, u64)> {
    track_list(path)
        .into_iter()
        .filter(|t| t.0 == "subtitle")
        .map(|t| (t.1, t.2, t.4))
        .collect()
}

/// Packets of subtitle stream `n` of `path`.
fn subtitle_packets(path: &Path, n: usize) -> usize {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", &format!("s:{n}")])
        .args(["-show_entries", "packet=pts", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

/// The DVB subtitle drawn over the picture 1.5 s in: the luma of its 64x8 region at
/// (100, 400), (mean, min).
fn subtitle_pixels(path: &Path) -> (f64, u8) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(path)
        .args([
            "-filter_complex",
            "[0:v][0:s:0]overlay,trim=start=1.5,crop=64:8:100:400[v]",
            "-map",
            "[v]",
            "-frames:v",
            "1",
            "-pix_fmt",
            "gray",
            "-f",
            "rawvideo",
            "-",
        ])
        .output()
        .unwrap();
    let px = out.stdout;
    assert_eq!(
        px.len(),
        64 * 8,
        "no picture: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mean = px.iter().map(|&p| p as f64).sum::<f64>() / px.len() as f64;
    (mean, *px.iter().min().unwrap())
}

/// The teletext page's text as libzvbi decodes it (subtitle stream `n`).
fn teletext_text(path: &Path, n: usize) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-txt_format", "text", "-i"])
        .arg(path)
        .args(["-map", &format!("0:s:{n}"), "-c:s", "srt", "-f", "srt", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg could not read the teletext of {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dvb_subtitles_and_teletext_are_relayed_and_copied_through_a_transcode() {
    let src = with_subtitles();
    let want = vec![
        ("dvb_subtitle".to_owned(), "deu".to_owned(), 1),
        ("dvb_teletext".to_owned(), "eng".to_owned(), 0),
    ];
    // The generated source itself, as the CLI reads it.
    assert_eq!(subtitle_tracks(src), want, "the source's subtitle streams");
    let (mean, min) = subtitle_pixels(src);
    assert!(mean > 200.0 && min > 150, "source subtitle: {mean} {min}");
    assert!(teletext_text(src, 1).contains(common::subs::TELETEXT_TEXT));
    let src_packets = (subtitle_packets(src, 0), subtitle_packets(src, 1));

    let profiles = "  x264: {video_codec: libx264, preset: ultrafast, audio_codec: aac}\n  nosubs: {video_codec: libx264, preset: ultrafast, audio_codec: aac, subtitles: none}\n";
    let s = Server::start(&config(
        profiles,
        &[(1, src, "relay"), (2, src, "x264"), (3, src, "nosubs")],
    ));
    for (id, what) in [(1, "relay"), (2, "transcode")] {
        let out = play(&s, id, Duration::from_secs(15));
        assert_eq!(subtitle_tracks(&out), want, "{what}: subtitle streams");
        // Output starts at the first video keyframe, the source's first PES go with it
        // (timed on its picture, a transcode's constant-rate stage may put that picture
        // half a frame later).
        let got = (subtitle_packets(&out, 0), subtitle_packets(&out, 1));
        assert!(
            got.0 >= src_packets.0 && got.1 >= src_packets.1 && got.0 > 2,
            "{what}: subtitle packets {got:?}, source {src_packets:?}"
        );
        let (mean, min) = subtitle_pixels(&out);
        assert!(
            mean > 200.0 && min > 150,
            "{what}: the DVB subtitle is not drawn: mean {mean}, min {min}"
        );
        let text = teletext_text(&out, 1);
        assert!(
            text.contains(common::subs::TELETEXT_TEXT),
            "{what}: teletext page: {text}"
        );
        assert_eq!(media::decode_errors(&out), "", "{what}");
    }
    let out = play(&s, 3, Duration::from_secs(15));
    assert_eq!(subtitle_tracks(&out), vec![], "subtitles: none");
    assert!(media::codecs(&out).contains(&"h264".to_owned()));
}

/// A DVB multiplex keeps its subtitle PIDs through programmes without subtitles: in the
/// PMT, silent for minutes. libav's own interleaver holds every packet until each stream
/// has one queued or 10 s have piled up, so such a channel would start 10 s late and run
/// 10 s behind. Amps waits for no silent stream: both the relay (a file: the libav remux)
/// and a transcode start at once, keep the subtitle streams and the one subtitle.
#[test]
fn a_silent_subtitle_stream_delays_nothing() {
    let plain = dir().join("for-silent-subtitles.ts");
    media::generate(&plain, "720x576", 14, &[], &[]);
    let src = dir().join("silent-subtitles.ts");
    let sets = common::subs::add_subtitles_every(&plain, &src, ("deu", false, "eng"), 1_000);
    assert_eq!(sets, 1, "one subtitle, at the start");
    let s = Server::start(&config(
        "  x264: {video_codec: libx264, preset: ultrafast, audio_codec: aac}\n",
        &[(1, &src, "relay"), (2, &src, "x264")],
    ));
    for (id, what) in [(1, "relay"), (2, "transcode")] {
        let t0 = std::time::Instant::now();
        let mut v = Viewer::open(&s, id);
        let opened = t0.elapsed();
        let out = save(
            &v.read_for(Duration::from_secs(3)),
            &format!("silent{id}.ts"),
        );
        // The file is paced at its own rate: a channel that waited for the subtitle
        // stream would answer after 10 s of media, with 10 s of it at once.
        assert!(
            opened < Duration::from_secs(5),
            "{what}: answered after {opened:?}"
        );
        let got = duration(&out);
        assert!(
            (1.5..8.0).contains(&got),
            "{what}: {got:.2} s of media in the first 3 s"
        );
        let subs: Vec<String> = subtitle_tracks(&out).into_iter().map(|t| t.0).collect();
        assert_eq!(subs, ["dvb_subtitle", "dvb_teletext"], "{what}: streams");
        assert_eq!(subtitle_packets(&out, 0), 1, "{what}: the subtitle");
    }
}
