//! Test media made by the real ffmpeg CLI, checked by the real ffprobe.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("ffmpeg is installed (./scripts/setup)");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the ffmpeg CLI quietly with `args` (overwriting outputs); fails the test with
/// its error output if it fails.
pub fn ffmpeg(args: &[&str]) {
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y"])
        .args(args));
}

/// Writes `secs` seconds of generated MPEG-TS to `out`: lavfi `testsrc2` at `size` and
/// 25 fps as H.264 (ultrafast, a keyframe every second) with `video` options, plus a
/// `sine` as AAC; `extra` goes before the output (e.g. `-output_ts_offset`).
pub fn generate(out: &Path, size: &str, secs: u32, video: &[&str], extra: &[&str]) {
    run(Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=25"))
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
        ])
        .arg(secs.to_string())
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(video)
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac"])
        .args(extra)
        .args(["-f", "mpegts"])
        .arg(out));
}

/// A folder, made once per test binary, holding:
/// - `hd.ts`: 4 s of 1920x1080 25 fps H.264 (6 Mbit/s, GOP 25) + AAC, MPEG-TS;
/// - `hd.m3u8` + segments: the same as a VOD HLS playlist (1 s segments);
/// - `long.ts`: 30 s of 320x240 H.264 + AAC (for reconnect and lifecycle tests).
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap().keep();
        generate(
            &d.join("hd.ts"),
            "1920x1080",
            4,
            &["-b:v", "6M"],
            &["-b:a", "128k"],
        );
        run(Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-i"])
            .arg(d.join("hd.ts"))
            .args([
                "-c",
                "copy",
                "-f",
                "hls",
                "-hls_time",
                "1",
                "-hls_list_size",
                "0",
            ])
            .args(["-hls_playlist_type", "vod", "-hls_segment_filename"])
            .arg(d.join("hd%03d.ts"))
            .arg(d.join("hd.m3u8")));
        generate(
            &d.join("long.ts"),
            "320x240",
            30,
            &["-b:v", "500k"],
            &["-b:a", "64k"],
        );
        d
    })
}

/// `ffprobe -show_streams -show_format` as JSON.
pub fn probe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("ffprobe: {}", String::from_utf8_lossy(&out.stderr)))
}

/// (codec_type, codec_name, language, channels) of one ffprobe stream.
pub fn track_of(s: &serde_json::Value) -> (String, String, String, u64) {
    (
        s["codec_type"].as_str().unwrap_or("").to_owned(),
        s["codec_name"].as_str().unwrap_or("").to_owned(),
        s["tags"]["language"].as_str().unwrap_or("").to_owned(),
        s["channels"].as_u64().unwrap_or(0),
    )
}

/// [`track_of`] every stream of `path`, in order.
pub fn tracks(path: &Path) -> Vec<(String, String, String, u64)> {
    probe(path)["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(track_of)
        .collect()
}

/// The codec names of the streams of `path`, video first.
pub fn codecs(path: &Path) -> Vec<String> {
    let mut v = tracks(path);
    // A stable sort: the other streams keep their order.
    v.sort_by_key(|t| if t.0 == "video" { 0 } else { 1 });
    v.into_iter().map(|t| t.1).collect()
}

/// (width, height) of the first video stream.
pub fn resolution(path: &Path) -> (u64, u64) {
    let p = probe(path);
    let v = p["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream");
    (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap())
}

/// Everything `ffmpeg -v error` says while decoding the file (empty: clean). An MPEG-TS
/// capture that a client's clock cut ends inside a picture (and often inside a packet);
/// that last, incomplete picture is not judged: the file is decoded up to the start of
/// its last video PES.
pub fn decode_errors(path: &Path) -> String {
    let data = std::fs::read(path).unwrap();
    let whole = whole_pictures(&data);
    let cut;
    let input = if whole.len() < data.len() {
        cut = path.with_extension("whole.ts");
        std::fs::write(&cut, whole).unwrap();
        cut.as_path()
    } else {
        path
    };
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(input)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `ts` up to the first packet of its last video PES (all of it when it is not MPEG-TS
/// or has no video): the pictures a capture holds whole.
fn whole_pictures(ts: &[u8]) -> &[u8] {
    const P: usize = 188;
    if ts.len() < P || ts[0] != 0x47 {
        return ts;
    }
    let pid = |p: &[u8]| (usize::from(p[1] & 0x1f) << 8) | usize::from(p[2]);
    // Payload after any adaptation field and the pointer field.
    let section = |p: &[u8]| -> Option<Vec<u8>> {
        let start = match (p[3] >> 4) & 3 {
            1 => 4,
            3 => 5 + usize::from(p[4]),
            _ => return None,
        };
        let pointer = usize::from(*p.get(start)?);
        p.get(start + 1 + pointer..).map(<[u8]>::to_vec)
    };
    let (mut pmt, mut video) = (None, None);
    let mut last_start = None;
    for (i, p) in ts.chunks_exact(P).enumerate() {
        if p[0] != 0x47 {
            return ts;
        }
        let unit_start = p[1] & 0x40 != 0;
        match (pid(p), unit_start) {
            (0, true) => {
                if let Some(s) = section(p).filter(|s| s.len() >= 12) {
                    pmt = Some((usize::from(s[10] & 0x1f) << 8) | usize::from(s[11]));
                }
            }
            (x, true) if Some(x) == pmt && video.is_none() => {
                if let Some(s) = section(p).filter(|s| s.len() >= 12) {
                    let info = (usize::from(s[10] & 0x0f) << 8) | usize::from(s[11]);
                    let mut es = s.get(12 + info..).unwrap_or(&[]);
                    while es.len() >= 5 {
                        if [0x01, 0x02, 0x1b, 0x24].contains(&es[0]) {
                            video = Some((usize::from(es[1] & 0x1f) << 8) | usize::from(es[2]));
                            break;
                        }
                        let skip = 5 + ((usize::from(es[3] & 0x0f) << 8) | usize::from(es[4]));
                        es = es.get(skip..).unwrap_or(&[]);
                    }
                }
            }
            (x, true) if Some(x) == video => last_start = Some(i),
            _ => {}
        }
    }
    match last_start {
        Some(i) => &ts[..i * P],
        None => ts,
    }
}

/// `ffprobe` CSV rows of `entries` for the first video stream (extra args before `-of`).
pub fn video_csv(path: &Path, entries: &str, extra: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            entries,
        ])
        .args(extra)
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (video bits per second, media seconds) from the video packets' sizes and timestamps.
pub fn video_bitrate(path: &Path) -> (f64, f64) {
    let text = video_csv(path, "packet=size,dts_time", &[]);
    let rows: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split(',');
            let a = it.next()?.parse::<f64>().ok()?;
            let b = it.next()?.parse::<f64>().ok()?;
            Some((a, b))
        })
        .collect();
    // Whichever column order ffprobe uses, size is the integer column in the thousands.
    let (sizes, times): (Vec<f64>, Vec<f64>) = if rows.iter().all(|(a, _)| a.fract() == 0.0)
        && rows.iter().any(|(_, b)| b.fract() != 0.0)
    {
        rows.iter().map(|(a, b)| (*a, *b)).unzip()
    } else {
        rows.iter().map(|(a, b)| (*b, *a)).unzip()
    };
    let dur = times.iter().cloned().fold(f64::MIN, f64::max)
        - times.iter().cloned().fold(f64::MAX, f64::min);
    let bits: f64 = sizes.iter().sum::<f64>() * 8.0;
    (bits / dur.max(0.001), dur)
}

/// Whether the first video frame of `path` is a keyframe.
pub fn starts_with_keyframe(path: &Path) -> bool {
    video_csv(path, "frame=key_frame", &["-read_intervals", "%+#1"])
        .trim()
        .starts_with('1')
}

/// The width of every decoded video frame, in order.
pub fn frame_widths(path: &Path) -> Vec<u64> {
    // Frames with side data (MPEG-2 panscan, ...) print extra CSV fields after the width.
    video_csv(path, "frame=width", &[])
        .lines()
        .filter_map(|l| l.split(',').next()?.trim().parse().ok())
        .collect()
}

/// (mean |row y - row y+1|, mean |row y - row y+2|) over a few decoded frames: combing
/// makes lines one apart (the two fields) differ more than lines two apart.
pub fn combing(path: &Path, width: usize, height: usize) -> (f64, f64) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(path)
        .args([
            // Decode and skip the first frames (an input-side seek before the file's
            // start time gives nothing).
            "-ss",
            "0.6",
            "-frames:v",
            "6",
            "-vf",
            "format=gray",
            "-f",
            "rawvideo",
            "-",
        ])
        .output()
        .unwrap();
    let px = &out.stdout;
    let frame = width * height;
    assert!(px.len() >= frame * 3, "{} bytes of frames", px.len());
    let (mut d1, mut d2, mut n) = (0f64, 0f64, 0f64);
    for f in px.chunks_exact(frame) {
        for y in 0..height - 2 {
            for x in (0..width).step_by(2) {
                let a = f[y * width + x] as f64;
                d1 += (a - f[(y + 1) * width + x] as f64).abs();
                d2 += (a - f[(y + 2) * width + x] as f64).abs();
                n += 1.0;
            }
        }
    }
    (d1 / n, d2 / n)
}
