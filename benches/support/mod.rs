//! What the benchmarks and the load tool share: generated media, the in-process pipeline
//! run unpaced, and the ffmpeg CLI doing the same job.
#![allow(dead_code)]

use amps::config::{Profile, StreamConfig};
use amps::engine::hub::Hub;
use amps::engine::pipeline::{self, Ctx, End};
use amps::engine::status::Status;
use amps::engine::timeline::Timeline;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

#[path = "../../tests/common/media.rs"]
pub mod test_media;
use std::time::Duration;

/// Generated media: `hd.ts` (1080p25 H.264 6 Mbit/s + AAC, 10 s), made with the same
/// generator as the tests' media.
pub fn media() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("amps-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        test_media::generate(
            &dir.join("hd.ts"),
            "1920x1080",
            10,
            &["-b:v", "6M"],
            &["-b:a", "128k"],
        );
        dir
    })
}

/// `tracks2.ts` or `tracks5.ts` in [`media`] (made on first use), 30 s each: the same
/// 1080p25 6 Mbit/s video with one AAC track, or with a broadcast's audio (AAC eng, AAC
/// deu, AC-3 5.1 eng 384k, MP2 fra).
pub fn tracks(n: u32) -> PathBuf {
    let f = media().join(format!("tracks{n}.ts"));
    if !f.exists() {
        match n {
            2 => test_media::generate(&f, "1920x1080", 30, &["-b:v", "6M"], &["-b:a", "128k"]),
            _ => multi_track(&f, 30),
        }
    }
    f
}

fn multi_track(out: &Path, secs: u32) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-v", "error", "-y"]).args([
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1920x1080:rate=25",
    ]);
    for f in [440, 550, 660, 770] {
        cmd.args(["-f", "lavfi", "-i"])
            .arg(format!("sine=frequency={f}:sample_rate=48000"));
    }
    cmd.args(["-filter_complex", "[3:a]pan=5.1|c0=c0|c1=c0|c2=c0[s]"])
        .args([
            "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "[s]", "-map", "4:a",
        ])
        .args(["-t", &secs.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(["-b:v", "6M", "-pix_fmt", "yuv420p"])
        .args([
            "-c:a:0", "aac", "-c:a:1", "aac", "-c:a:2", "ac3", "-c:a:3", "mp2",
        ])
        .args([
            "-b:a:0", "128k", "-b:a:1", "128k", "-b:a:2", "384k", "-b:a:3", "192k",
        ])
        .args([
            "-metadata:s:a:0",
            "language=eng",
            "-metadata:s:a:1",
            "language=deu",
        ])
        .args([
            "-metadata:s:a:2",
            "language=eng",
            "-metadata:s:a:3",
            "language=fra",
        ])
        .args(["-f", "mpegts"])
        .arg(out);
    let st = cmd.status().expect("ffmpeg");
    assert!(st.success(), "ffmpeg could not make {}", out.display());
}

pub fn stream(id: u32, source: &str) -> StreamConfig {
    serde_json::from_value(serde_json::json!({
        "id": id,
        "name": format!("Channel {id} – News & Sport"),
        "source": source,
        "ffmpeg_profile": "p",
        "logo": format!("http://logos.example/{id}.png"),
        "group": "Bench",
        "channel_number": id,
        "description": "A channel with a description, a logo and two programs",
        "next_programs": [
            {"title": "Morning show", "start": "2099-01-01T08:00:00Z", "description": "News, weather, sport"},
            {"title": "Film"}
        ]
    }))
    .unwrap()
}

pub fn profile(yaml: &str) -> Profile {
    serde_yaml::from_str(yaml).unwrap()
}

/// Copy (remux) profile and the bundled config's transcode profile.
pub const COPY: &str = "{video_codec: copy, audio_codec: copy}";
pub const X264: &str = "{video_codec: libx264, video_bitrate: 2500k, maxrate: 3000k, bufsize: 5000k, resolution: 1280x720, framerate: '25', preset: veryfast, tune: zerolatency, gop: 50, audio_codec: aac, audio_bitrate: 128k, audio_channels: 2}";
/// The same jobs for the ffmpeg CLI.
pub const CLI_COPY: &[&str] = &["-map", "0:v:0", "-map", "0:a:0", "-c", "copy"];
/// A relay of every stream (what Amps' copy profile does).
pub const CLI_COPY_ALL: &[&str] = &["-map", "0", "-c", "copy"];
pub const CLI_X264: &[&str] = &[
    "-map",
    "0:v:0",
    "-map",
    "0:a:0",
    "-vf",
    "scale=1280:720,format=yuv420p,fps=25",
    "-c:v",
    "libx264",
    "-b:v",
    "2500k",
    "-maxrate",
    "3000k",
    "-bufsize",
    "5000k",
    "-preset",
    "veryfast",
    "-tune",
    "zerolatency",
    "-g",
    "50",
    "-c:a",
    "aac",
    "-b:a",
    "128k",
    "-ac",
    "2",
];

/// One unpaced run of the in-process pipeline over `source`; returns the bytes produced.
pub fn run_pipeline(source: &str, profile: &Profile) -> u64 {
    let s = stream(1, source);
    let hub = Arc::new(Hub::new(16 * 1024 * 1024, 10));
    let status = Arc::new(Mutex::new(Status::default()));
    let ctx = Ctx {
        stream: &s,
        profile,
        hub: hub.clone(),
        status: &status,
        keep_going: Arc::new(|| true),
        on_running: &|| {},
        stall_timeout: Duration::from_secs(30),
        open_timeout: Duration::from_secs(30),
        renditions: None,
    };
    let end = pipeline::run(&ctx, &mut Timeline::unpaced()).expect("pipeline");
    assert_eq!(end, End::Eof);
    hub.stats
        .bytes_in
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// The ffmpeg CLI doing the same job, writing MPEG-TS to a pipe that is read to the end.
pub fn run_cli(source: &str, args: &[&str]) -> u64 {
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i", source])
        .args(args)
        .args(["-f", "mpegts", "pipe:1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    while let Ok(k) = out.read(&mut buf) {
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    assert!(child.wait().unwrap().success());
    n
}

/// A provider's m3u_plus playlist of `n` entries, as panels write them.
pub fn provider_m3u(n: usize) -> Vec<u8> {
    // (No url-tvg: nothing may make Amps reach a host that is not loopback.)
    let mut out = String::from("#EXTM3U\r\n");
    for i in 0..n {
        out.push_str(&format!(
            "#EXTINF:-1 tvg-id=\"ch{i}.uk\" tvg-name=\"UK: Channel {i} FHD\" tvg-logo=\"http://provider.example/logos/{i}.png\" group-title=\"UK | Group {}\",UK: Channel {i} FHD\r\nhttp://provider.example:8080/user123/pass456/{}\r\n",
            i % 40,
            100_000 + i
        ));
    }
    out.into_bytes()
}

/// An XMLTV guide: `channels` channels, `per` programmes each from now on.
pub fn provider_xmltv(channels: usize, per: usize) -> Vec<u8> {
    let mut x = Vec::new();
    write_xmltv(&mut x, channels, per);
    x
}

/// [`provider_xmltv`] written to `w` (for guides too big to hold twice).
pub fn write_xmltv(w: &mut impl std::io::Write, channels: usize, per: usize) {
    let t0 = chrono::Utc::now();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tv>\n");
    for c in 0..channels {
        x.push_str(&format!(
            "<channel id=\"ch{c}.uk\"><display-name>UK: Channel {c} FHD</display-name></channel>\n"
        ));
    }
    w.write_all(x.as_bytes()).unwrap();
    for c in 0..channels {
        x.clear();
        for p in 0..per {
            let a = t0 + chrono::Duration::minutes(30 * p as i64);
            let b = a + chrono::Duration::minutes(30);
            x.push_str(&format!(
                "<programme start=\"{}\" stop=\"{}\" channel=\"ch{c}.uk\"><title lang=\"en\">Programme {p} of channel {c}</title><desc lang=\"en\">What happens in programme {p}: news, weather &amp; sport.</desc><category lang=\"en\">News</category></programme>\n",
                a.format("%Y%m%d%H%M%S +0000"),
                b.format("%Y%m%d%H%M%S +0000")
            ));
        }
        w.write_all(x.as_bytes()).unwrap();
    }
    w.write_all(b"</tv>\n").unwrap();
}
