//! `amps probe <source>`: what a source holds, measured by reading a few seconds of it,
//! and which profile suits it. Progress goes to stderr while the source opens and plays.

use crate::auth::redact_source;
use crate::config::source::SourceKind;
use crate::engine::source;
use argh::FromArgs;
use ff::format::context::Input;
use ffmpeg_next as ff;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// open a source, read a few seconds of it and report its streams, bitrate and keyframe interval
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "probe")]
pub struct Args {
    /// the source, as in a stream's `source` (URL, file path or lavfi:graph)
    #[argh(positional)]
    pub source: String,
    /// seconds of media to read for the measurements (default 3)
    #[argh(option, default = "3.0")]
    pub seconds: f64,
    /// seconds allowed for opening and reading (default 20)
    #[argh(option, default = "20")]
    pub timeout: u64,
    /// print JSON instead of text
    #[argh(switch)]
    pub json: bool,
}

/// One elementary stream, as measured.
#[derive(Debug, Default, Serialize)]
pub struct StreamReport {
    pub index: usize,
    pub kind: String,
    pub codec: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    pub kbps: Option<u64>,
    /// Seconds between keyframes (video): a channel starts no faster than this when copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyframe_interval: Option<f64>,
    pub packets: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub source: String,
    pub kind: String,
    pub format: String,
    pub duration_secs: Option<f64>,
    pub open_ms: u64,
    pub media_secs_read: f64,
    pub streams: Vec<StreamReport>,
    /// What to put in the stream's profile, and why.
    pub advice: String,
}

/// Codecs MPEG-TS carries and players (Kodi, VLC, Plex) decode without help.
fn copy_friendly(codec: &str) -> bool {
    matches!(
        codec,
        "h264" | "hevc" | "mpeg2video" | "aac" | "mp2" | "mp3" | "ac3" | "eac3"
    )
}

fn advice(streams: &[StreamReport]) -> String {
    let video = streams.iter().find(|s| s.kind == "video");
    let odd: Vec<&str> = streams
        .iter()
        .filter(|s| s.kind == "video" || s.kind == "audio")
        .filter(|s| !copy_friendly(&s.codec))
        .map(|s| s.codec.as_str())
        .collect();
    if video.is_none() {
        return "no video stream: players will show nothing; check the source".into();
    }
    if !odd.is_empty() {
        return format!(
            "transcode: {} cannot be relayed as is; use a profile with video_codec: libx264 / audio_codec: aac",
            odd.join(", ")
        );
    }
    match video.and_then(|v| v.keyframe_interval) {
        Some(k) if k > 4.0 => format!(
            "copy works, but keyframes are {k:.1} s apart: channel starts wait that long; transcode with a short GOP for faster zapping"
        ),
        _ => "copy: the codecs play everywhere; a relay profile (video_codec: copy, audio_codec: copy) costs almost no CPU".into(),
    }
}

/// Opens the source, telling `progress` while libav blocks (DNS, connect, probing);
/// also how long the open took (ms).
fn open_with_progress(
    src: &str,
    timeout: Duration,
    progress: &(dyn Fn(&str, Duration) + Sync),
) -> Result<(Input, u64), String> {
    let kind = SourceKind::classify(src);
    let options = source::input_options(&kind, &Default::default());
    let t0 = Instant::now();
    let deadline_hit = Arc::new(AtomicBool::new(false));
    let hit = deadline_hit.clone();
    let opened = Arc::new(AtomicBool::new(false));
    let done = opened.clone();
    let r = std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            let mut shown = Duration::ZERO;
            while !done.load(Ordering::Relaxed) {
                if t0.elapsed() >= shown {
                    progress("opening", t0.elapsed());
                    shown += Duration::from_millis(250);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let r = source::open(src, &options, move || {
            let over = t0.elapsed() > timeout;
            if over {
                hit.store(true, Ordering::Relaxed);
            }
            over
        });
        let open_ms = t0.elapsed().as_millis() as u64;
        opened.store(true, Ordering::Relaxed);
        let _ = handle.join();
        r.map(|i| (i, open_ms))
    });
    r.map_err(|e| {
        if deadline_hit.load(Ordering::Relaxed) {
            format!(
                "cannot open {} within {} s",
                redact_source(src),
                timeout.as_secs()
            )
        } else {
            format!("cannot open {}: {e}", redact_source(src))
        }
    })
}

/// What the demuxer says of each stream, before reading; also their time bases.
fn stream_reports(ictx: &Input) -> (Vec<StreamReport>, Vec<f64>) {
    let mut streams: Vec<StreamReport> = Vec::new();
    let mut time_bases = Vec::new();
    for st in ictx.streams() {
        let par = st.parameters();
        let medium = par.medium();
        // SAFETY: reading plain fields of valid codec parameters.
        let (w, h, rate, ch) = unsafe {
            let p = par.as_ptr();
            (
                (*p).width,
                (*p).height,
                (*p).sample_rate,
                (*p).ch_layout.nb_channels,
            )
        };
        let fr = match st.avg_frame_rate() {
            r if r.numerator() > 0 && r.denominator() > 0 => r,
            _ => st.rate(),
        };
        let video = medium == ff::media::Type::Video;
        let audio = medium == ff::media::Type::Audio;
        streams.push(StreamReport {
            index: st.index(),
            kind: format!("{medium:?}").to_lowercase(),
            codec: ff::codec::decoder::find(par.id())
                .map(|c| c.name().to_owned())
                .unwrap_or_else(|| format!("{:?}", par.id()).to_lowercase()),
            resolution: (video && w > 0).then(|| format!("{w}x{h}")),
            frame_rate: (video && fr.denominator() > 0 && fr.numerator() > 0)
                .then(|| (f64::from(fr) * 100.0).round() / 100.0),
            sample_rate: (audio && rate > 0).then_some(rate as u32),
            channels: (audio && ch > 0).then_some(ch as u32),
            ..Default::default()
        });
        time_bases.push(f64::from(st.time_base()));
    }
    (streams, time_bases)
}

/// Per-stream counts of the packets read: bytes, time span, keyframe times. Pure.
#[derive(Debug, Default)]
struct Tally {
    bytes: Vec<u64>,
    first: Vec<Option<f64>>,
    last: Vec<f64>,
    keys: Vec<Vec<f64>>,
    /// The longest span of media read on any stream (seconds).
    media_read: f64,
}

impl Tally {
    fn new(n: usize) -> Tally {
        Tally {
            bytes: vec![0; n],
            first: vec![None; n],
            last: vec![0.0; n],
            keys: vec![Vec::new(); n],
            media_read: 0.0,
        }
    }

    /// A packet of stream `i` at `t` seconds; `key`: a video keyframe.
    fn add(&mut self, i: usize, t: f64, size: u64, key: bool) {
        let f = *self.first[i].get_or_insert(t);
        self.last[i] = t;
        self.bytes[i] += size;
        if key {
            self.keys[i].push(t);
        }
        self.media_read = (t - f).max(self.media_read);
    }

    /// Bitrates (over at least 0.2 s) and mean keyframe intervals into the reports.
    fn finish(&self, streams: &mut [StreamReport]) {
        for (i, s) in streams.iter_mut().enumerate() {
            let span = self.first[i].map(|f| self.last[i] - f).unwrap_or(0.0);
            s.kbps =
                (span > 0.2).then(|| (self.bytes[i] as f64 * 8.0 / span / 1000.0).round() as u64);
            let k = &self.keys[i];
            if k.len() >= 2 {
                s.keyframe_interval =
                    Some(((k[k.len() - 1] - k[0]) / (k.len() - 1) as f64 * 100.0).round() / 100.0);
            }
        }
    }
}

/// Opens and reads the source; `progress` is told the phase and elapsed time.
pub fn probe(
    src: &str,
    seconds: f64,
    timeout: Duration,
    progress: &(dyn Fn(&str, Duration) + Sync),
) -> Result<Report, String> {
    crate::libav::init();
    let t0 = Instant::now();
    let (mut ictx, open_ms) = open_with_progress(src, timeout, progress)?;
    let format = ictx.format().name().to_owned();
    let duration_secs = (ictx.duration() > 0).then(|| ictx.duration() as f64 / 1e6);
    let (mut streams, time_bases) = stream_reports(&ictx);
    // Read `seconds` of media (by timestamps), bounded by the wall-clock timeout.
    let n = streams.len();
    let mut tally = Tally::new(n);
    let read_start = Instant::now();
    let mut tick = 0;
    for (st, packet) in ictx.packets() {
        let i = st.index();
        let Some(ts) = packet.dts().or(packet.pts()).filter(|_| i < n) else {
            continue;
        };
        streams[i].packets += 1;
        let key = packet.is_key() && streams[i].kind == "video";
        tally.add(i, ts as f64 * time_bases[i], packet.size() as u64, key);
        let ms = read_start.elapsed().as_millis() as u64;
        if ms / 250 != tick {
            tick = ms / 250;
            let read = tally.media_read;
            progress(
                &format!("reading {read:.1}/{seconds:.1} s of media"),
                t0.elapsed(),
            );
        }
        if tally.media_read >= seconds || t0.elapsed() > timeout {
            break;
        }
    }
    tally.finish(&mut streams);
    let advice = advice(&streams);
    let kind = format!("{:?}", SourceKind::classify(src));
    Ok(Report {
        source: redact_source(src),
        kind: kind.split('(').next().unwrap_or("").to_lowercase(),
        format,
        duration_secs,
        open_ms,
        media_secs_read: (tally.media_read * 100.0).round() / 100.0,
        streams,
        advice,
    })
}

fn print_text(r: &Report) {
    println!("source:   {} ({}, {})", r.source, r.kind, r.format);
    println!("opened:   {} ms", r.open_ms);
    if let Some(d) = r.duration_secs {
        println!("duration: {d:.1} s");
    }
    println!("read:     {:.1} s of media", r.media_secs_read);
    for s in &r.streams {
        let mut parts = vec![format!("#{} {} {}", s.index, s.kind, s.codec)];
        if let Some(v) = &s.resolution {
            parts.push(v.clone());
        }
        if let Some(v) = s.frame_rate {
            parts.push(format!("{v} fps"));
        }
        if let Some(v) = s.sample_rate {
            parts.push(format!("{v} Hz"));
        }
        if let Some(v) = s.channels {
            parts.push(format!("{v} ch"));
        }
        if let Some(v) = s.kbps {
            parts.push(format!("{v} kbit/s"));
        }
        if let Some(v) = s.keyframe_interval {
            parts.push(format!("keyframe every {v} s"));
        }
        println!("stream:   {}", parts.join(", "));
    }
    println!("advice:   {}", r.advice);
}

/// Returns the process exit code.
pub fn run(args: Args) -> i32 {
    let tty = std::io::stderr().is_terminal();
    let last_line = std::sync::Mutex::new(
        Instant::now()
            .checked_sub(Duration::from_secs(10))
            .unwrap_or_else(Instant::now),
    );
    let progress = |phase: &str, elapsed: Duration| {
        let mut e = std::io::stderr();
        if tty {
            let _ = write!(e, "\r\x1b[2K{phase}... {:.1} s", elapsed.as_secs_f64());
            let _ = e.flush();
        } else {
            // A log, not a terminal: one line every 2 s.
            let mut l = last_line.lock().unwrap_or_else(|p| p.into_inner());
            if l.elapsed() >= Duration::from_secs(2) {
                *l = Instant::now();
                let _ = writeln!(e, "{phase}... {:.1} s", elapsed.as_secs_f64());
            }
        }
    };
    let result = probe(
        &args.source,
        args.seconds.clamp(0.1, 60.0),
        Duration::from_secs(args.timeout.max(1)),
        &progress,
    );
    if tty {
        eprint!("\r\x1b[2K");
    }
    match result {
        Ok(r) if args.json => {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            0
        }
        Ok(r) => {
            print_text(&r);
            0
        }
        Err(e) => {
            eprintln!("amps probe: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_gives_bitrates_and_keyframe_intervals() {
        let mut t = Tally::new(2);
        // Video: 25 fps for 4 s, 5 kB a frame, a keyframe every 2 s.
        for f in 0..100 {
            t.add(0, 10.0 + f as f64 * 0.04, 5_000, f % 50 == 0);
        }
        // Audio: one packet only: no bitrate from a span under 0.2 s.
        t.add(1, 10.0, 400, false);
        let mut streams = vec![StreamReport::default(), StreamReport::default()];
        t.finish(&mut streams);
        assert!((t.media_read - 3.96).abs() < 1e-9);
        // 99 frames' bytes over 3.96 s: 100 * 5000 * 8 / 3.96 / 1000.
        assert_eq!(streams[0].kbps, Some(1010));
        assert_eq!(streams[0].keyframe_interval, Some(2.0));
        assert_eq!(streams[1].kbps, None);
        assert_eq!(streams[1].keyframe_interval, None);
    }
}
