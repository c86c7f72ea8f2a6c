//! Criterion benchmarks (`cargo bench`): playlist rendering, hub fan-out, and the in-process
//! pipeline's remux and transcode throughput next to the ffmpeg CLI doing the same job in
//! the same run. Media is generated with the ffmpeg CLI (lavfi testsrc2 + sine) at start.
//! CI only builds these (`cargo bench --no-run`); results and method: docs/PERFORMANCE.md.

use amps::config::{Profile, StreamConfig};
use amps::engine::hub::{Cursor, Hub, HubWriter, Read};
use amps::engine::pipeline::{self, Ctx, End, Timeline};
use amps::engine::status::Status;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Generated media: `hd.ts` (1080p25 H.264 6 Mbit/s + AAC, 10 s).
fn media() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("amps-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1920x1080:rate=25",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "10",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "25",
                "-b:v",
                "6M",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "128k",
                "-f",
                "mpegts",
            ])
            .arg(dir.join("hd.ts"))
            .status()
            .expect("ffmpeg (./scripts/setup installs it)")
            .success();
        assert!(ok, "generating bench media failed");
        dir
    })
}

fn stream(id: u32, source: &str) -> StreamConfig {
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

fn playlist(c: &mut Criterion) {
    let mut g = c.benchmark_group("playlist_render");
    let now = chrono::Utc::now();
    for n in [10u32, 1_000, 10_000] {
        let channels: Vec<Arc<StreamConfig>> = (1..=n)
            .map(|i| Arc::new(stream(i, &format!("http://upstream.example/{i}.ts"))))
            .collect();
        let opts = amps::playlist::Options {
            base_url: "http://nas.local:5000",
            token: Some("a-token-of-some-length-0123456789"),
            epg_url: Some("http://nas.local:5000/epg.xml?token=a-token-of-some-length-0123456789"),
            now,
        };
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_with_input(BenchmarkId::from_parameter(n), &channels, |b, ch| {
            b.iter(|| amps::playlist::render(ch, &opts))
        });
    }
    g.finish();
}

/// The TS bytes of the generated file, cut as the muxer writes them (64 packets).
fn ts_chunks() -> Vec<Vec<u8>> {
    let data = std::fs::read(media().join("hd.ts")).unwrap();
    data.chunks(188 * 64).map(<[u8]>::to_vec).collect()
}

fn hub_fanout(c: &mut Criterion) {
    let chunks = ts_chunks();
    let mut g = c.benchmark_group("hub_fanout");
    for subs in [1usize, 100, 1_000] {
        let hub = Arc::new(Hub::new(16 * 1024 * 1024, 1_000_000));
        let mut writer = HubWriter::new(hub.clone());
        // Prime it so every cursor has a keyframe to start from.
        for c in chunks.iter().take(50) {
            writer.write_all(c).unwrap();
        }
        let mut cursors: Vec<Cursor> = (0..subs).map(|_| Cursor::default()).collect();
        for cur in &mut cursors {
            let _ = hub.read(cur);
        }
        let mut i = 50;
        g.throughput(Throughput::Bytes((188 * 64 * subs) as u64));
        g.bench_function(BenchmarkId::from_parameter(subs), |b| {
            b.iter(|| {
                writer.write_all(&chunks[i % chunks.len()]).unwrap();
                i += 1;
                let mut got = 0usize;
                for cur in &mut cursors {
                    if let Read::Data(d) = hub.read(cur) {
                        got += d.len();
                    }
                }
                got
            })
        });
    }
    g.finish();
}

fn profile(yaml: &str) -> Profile {
    serde_yaml::from_str(yaml).unwrap()
}

/// Copy (remux) profile and the bundled config's transcode profile.
const COPY: &str = "{video_codec: copy, audio_codec: copy}";
const X264: &str = "{video_codec: libx264, video_bitrate: 2500k, maxrate: 3000k, bufsize: 5000k, resolution: 1280x720, framerate: '25', preset: veryfast, tune: zerolatency, gop: 50, audio_codec: aac, audio_bitrate: 128k, audio_channels: 2}";
/// The same jobs for the ffmpeg CLI.
const CLI_COPY: &[&str] = &["-map", "0:v:0", "-map", "0:a:0", "-c", "copy"];
const CLI_X264: &[&str] = &[
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

fn throughput(c: &mut Criterion) {
    amps::libav::init();
    let src = media().join("hd.ts").display().to_string();
    let size = std::fs::metadata(&src).unwrap().len();
    let mut g = c.benchmark_group("remux_10s_1080p");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(size));
    let copy = profile(COPY);
    g.bench_function("amps_in_process", |b| b.iter(|| run_pipeline(&src, &copy)));
    g.bench_function("ffmpeg_cli", |b| b.iter(|| run_cli(&src, CLI_COPY)));
    g.finish();

    let mut g = c.benchmark_group("transcode_10s_1080p_to_720p_x264");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(250)); // frames
    let x264 = profile(X264);
    g.bench_function("amps_in_process", |b| b.iter(|| run_pipeline(&src, &x264)));
    g.bench_function("ffmpeg_cli", |b| b.iter(|| run_cli(&src, CLI_X264)));
    g.finish();
}

criterion_group!(benches, playlist, hub_fanout, throughput);
criterion_main!(benches);
