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
