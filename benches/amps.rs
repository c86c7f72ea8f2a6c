//! Criterion benchmarks (`cargo bench`): playlist rendering, hub fan-out, the TS relay, and
//! the in-process pipeline's remux and transcode throughput next to the ffmpeg CLI doing the same job in
//! the same run. Media is generated with the ffmpeg CLI (lavfi testsrc2 + sine) at start.
//! CI only builds these (`cargo bench --no-run`); results and method: docs/PERFORMANCE.md.

mod support;

use amps::config::StreamConfig;
use amps::engine::hub::{Cursor, Hub, HubWriter, Read};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;
use support::{
    media, profile, run_cli, run_pipeline, stream, tracks, CLI_COPY, CLI_COPY_ALL, CLI_X264, COPY,
    X264,
};

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
            profile: None,
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

/// Relays `data` as the TS relay does a live source's bytes, into a hub.
fn relay_bytes(data: &[u8]) -> usize {
    let hub = Arc::new(Hub::new(16 * 1024 * 1024, 1_000_000));
    let mut writer = HubWriter::new(hub.clone()).relaying();
    let mut rw = amps::engine::ts_rewrite::Rewriter::new(90_000, Default::default(), false);
    let mut out = Vec::with_capacity(1 << 17);
    for chunk in data.chunks(64 * 1024) {
        rw.feed(chunk, Duration::ZERO, &mut out);
        writer.write_all(&out).unwrap();
        out.clear();
    }
    drop(writer);
    hub.buffered_bytes()
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

    // Per megabyte, a relay of five tracks (AAC x2, AC-3 5.1, MP2 next to the video) should
    // cost what a relay of two does: 30 s files, so that opening (probing) weighs little.
    let mut g = c.benchmark_group("remux_30s_1080p_tracks");
    g.sample_size(10);
    for n in [2, 5] {
        let src = tracks(n).display().to_string();
        g.throughput(Throughput::Bytes(std::fs::metadata(&src).unwrap().len()));
        g.bench_function(format!("amps_in_process/{n}"), |b| {
            b.iter(|| run_pipeline(&src, &copy))
        });
        g.bench_function(format!("ffmpeg_cli/{n}"), |b| {
            b.iter(|| run_cli(&src, CLI_COPY_ALL))
        });
    }
    g.finish();
    // The TS relay of a live MPEG-TS source does no demuxing: its cost per megabyte
    // (timestamps moved, whole-PES output, keyframe index, hub) should not depend on the
    // number of tracks. In memory, 64 KiB reads as a socket gives them.
    let mut g = c.benchmark_group("ts_relay_30s_1080p_tracks");
    g.sample_size(10);
    for n in [2, 5] {
        let data = std::fs::read(tracks(n)).unwrap();
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(n.to_string(), |b| b.iter(|| relay_bytes(&data)));
    }
    g.finish();
    // What of that is opening and probing, paid once per session, not per megabyte.
    let mut g = c.benchmark_group("open_and_probe_1080p_tracks");
    g.sample_size(20);
    for n in [2, 5] {
        let src = tracks(n).display().to_string();
        let kind = amps::config::source::SourceKind::classify(&src);
        let opts = amps::engine::source::input_options(&kind, &Default::default());
        g.bench_function(n.to_string(), |b| {
            b.iter(|| amps::engine::source::open(&src, &opts, || false).expect("open"))
        });
    }
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

/// Importing providers: parsing and importing a 20,000-entry M3U, rendering the
/// playlist of the imported channels, and reading an XMLTV guide.
fn providers(c: &mut Criterion) {
    use amps::providers::{import, m3u, xmltv};
    let mut g = c.benchmark_group("providers");
    let n = 20_000;
    let data = support::provider_m3u(n);
    let cfg: amps::config::PlaylistConfig = serde_yaml::from_str(
        "{name: p, url: 'http://provider.example/get.php', ffmpeg_profile: p, include_groups: ['UK*']}",
    )
    .unwrap();
    let filter = import::Filter::new(&cfg).unwrap();
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("m3u_parse_and_import/20000", |b| {
        b.iter(|| {
            let parsed = m3u::parse(&data, 100_000);
            import::import(
                &cfg,
                &filter,
                &parsed.entries,
                &Default::default(),
                &mut Default::default(),
            )
        })
    });
    let parsed = m3u::parse(&data, 100_000);
    let imported: Vec<Arc<StreamConfig>> = import::import(
        &cfg,
        &filter,
        &parsed.entries,
        &Default::default(),
        &mut Default::default(),
    )
    .channels
    .into_iter()
    .map(Arc::new)
    .collect();
    let opts = amps::playlist::Options {
        base_url: "http://nas.local:5000",
        token: Some("a-token-of-some-length-0123456789"),
        epg_url: None,
        now: chrono::Utc::now(),
        profile: None,
    };
    g.bench_function("playlist_render_imported/20000", |b| {
        b.iter(|| amps::playlist::render(&imported, &opts))
    });
    // 2,000 channels of a 4,000-channel guide, 48 programmes each (about 13 MB).
    let guide = support::provider_xmltv(4000, 48);
    let wants: Vec<xmltv::Want> = (0..2000)
        .map(|c| xmltv::Want {
            id: c as u32 + 1,
            tvg_id: format!("ch{c}.uk"),
            names: vec![],
            shift_secs: 0,
        })
        .collect();
    let now = chrono::Utc::now();
    let window = (
        now - chrono::Duration::hours(2),
        now + chrono::Duration::days(8),
    );
    g.throughput(Throughput::Bytes(guide.len() as u64));
    g.sample_size(10);
    g.bench_function("xmltv_read", |b| {
        b.iter(|| xmltv::read(&guide[..], &wants, window, 2000).unwrap())
    });
    g.finish();
}

criterion_group!(benches, playlist, hub_fanout, throughput, providers);
criterion_main!(benches);
