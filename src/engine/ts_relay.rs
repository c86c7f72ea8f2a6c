//! The TS relay: a copy channel whose source is live MPEG-TS (HTTP, UDP, SRT) forwards
//! the source's own packets as they arrive, instead of demuxing them into whole PES
//! packets and muxing those again.
//!
//! Why: a demuxer hands a packet over only once its PES is complete, so a zap waits for
//! the keyframe's whole transmission (a 150 KB keyframe at 4.5 Mbit/s is 270 ms) before the
//! first byte reaches the viewer; here the keyframe's first TS packet goes out at once. A
//! relay of every track also costs the same per byte whatever the number of tracks.
//!
//! The source is read through libav's I/O layer (`avio_open2`), with the same protocol
//! whitelist, options (`user_agent`, `headers`, timeouts) and interrupt callback as the
//! libav pipeline. Output is paced to real time by the source's PCR. Its first bytes decide: not MPEG-TS (an HLS playlist, MP4, FLV...) and
//! the session hands over to the libav pipeline, which the channel then keeps using for
//! that source. Timestamps and continuity counters move onto the channel's timeline
//! ([`super::ts_rewrite`]); keyframes are found by their random-access flag or their
//! bitstream ([`super::ts::Inspector`]).

use super::error::{Error, Stage};
use super::hub::HubWriter;
use super::pipeline::{Ctx, End, Watchdog};
use super::source;
use super::timeline::Timeline;
use super::ts::{EsInfo, PACKET};
use super::ts_rewrite::Rewriter;
use crate::auth::redact_source;
use crate::config::model::{AudioTracks, Subtitles};
use crate::config::source::SourceKind;
use crate::config::{Profile, StreamConfig};
use ff::Dictionary;
use ffmpeg_next as ff;
use std::ffi::CString;
use std::io::Write;
use std::time::Instant;

/// How much of the source decides whether it is MPEG-TS.
const SNIFF_MAX: usize = 64 * 1024;
/// Bytes asked of the source per read (a read returns what has arrived).
const READ_SIZE: usize = 64 * 1024;

/// Whether `stream` with `profile` may be relayed at the TS level: a live network source
/// that may carry MPEG-TS, and a profile that copies every stream as it is. Whether the
/// source really is MPEG-TS is decided by its first bytes ([`run`]).
pub fn eligible(stream: &StreamConfig, profile: &Profile) -> bool {
    stream.custom_ffmpeg.is_none()
        // Extra output profiles need the demuxer and decoders of the libav pipeline.
        && stream.profiles.is_empty()
        && profile.ts_relay != Some(false)
        && profile.video_codec.as_deref().unwrap_or("copy") == "copy"
        && profile.audio_codec.as_deref().unwrap_or("copy") == "copy"
        && matches!(profile.audio_tracks, None | Some(AudioTracks::All))
        && !matches!(profile.subtitles, Some(Subtitles::None))
        && profile.format.as_deref().is_none_or(|f| f == "mpegts")
        && live_ts_url(&stream.source)
}

/// HTTP(S) other than an HLS playlist, UDP and SRT.
fn live_ts_url(source: &str) -> bool {
    let lower = source.trim().to_ascii_lowercase();
    match SourceKind::classify(source) {
        SourceKind::Http => {
            let path = lower.split(['?', '#']).next().unwrap_or("");
            !(path.ends_with(".m3u8") || path.ends_with(".m3u"))
        }
        SourceKind::Network(_) => lower.starts_with("udp://") || lower.starts_with("srt://"),
        _ => false,
    }
}

/// Where packet sync is, if `data` starts (within one packet) a run of three TS packets.
fn ts_sync(data: &[u8]) -> Option<usize> {
    (0..PACKET.min(data.len()))
        .find(|&k| data.len() > k + 2 * PACKET && (0..3).all(|n| data[k + n * PACKET] == 0x47))
}

/// A libav I/O context open for reading; closed on drop.
struct Io {
    ctx: *mut ff::ffi::AVIOContext,
    /// The interrupt callback's closure; must outlive the context.
    _interrupt: Option<ff::util::interrupt::InterruptGuard>,
}

impl Io {
    fn open(ctx: &Ctx, watch: &Watchdog) -> Result<Io, String> {
        let kind = SourceKind::classify(&ctx.stream.source);
        let options = source::input_options(&kind, &ctx.profile.input_options);
        let interrupt = ff::util::interrupt::new(Box::new(
            watch.interrupt(ctx.open_timeout, ctx.keep_going.clone()),
        ));
        Io::open_with(&ctx.stream.source, &options, Some(interrupt))
    }

    /// Opens `url` with libav options (`protocol_whitelist` among them) and an interrupt
    /// callback.
    fn open_with(
        url: &str,
        options: &[(String, String)],
        interrupt: Option<ff::util::interrupt::Interrupt>,
    ) -> Result<Io, String> {
        let mut dict = Dictionary::new();
        for (k, v) in options {
            dict.set(k, v);
        }
        let url =
            CString::new(url.trim()).map_err(|_| "the source contains a NUL byte".to_owned())?;
        let (cb, guard) = match interrupt {
            Some(i) => (Some(i.interrupt), Some(i.guard)),
            None => (None, None),
        };
        let mut io = std::ptr::null_mut();
        // SAFETY: avio_open2 writes the new context into `io` on success; the options
        // dictionary is handed back (what no protocol took) and freed by `own`. The
        // interrupt callback's opaque pointer lives in `guard`, kept with the context.
        let res = unsafe {
            let mut opts = dict.disown();
            let r = ff::ffi::avio_open2(
                &mut io,
                url.as_ptr(),
                ff::ffi::AVIO_FLAG_READ,
                cb.as_ref().map_or(std::ptr::null(), |c| c as *const _),
                &mut opts,
            );
            Dictionary::own(opts);
            r
        };
        if res < 0 {
            return Err(ff::Error::from(res).to_string());
        }
        Ok(Io {
            ctx: io,
            _interrupt: guard,
        })
    }

    /// What has arrived (at least one byte, waiting for it); Ok(0) at the end.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ff::Error> {
        let len = buf.len().min(i32::MAX as usize) as i32;
        // SAFETY: `buf` is valid for `len` bytes; the context is open.
        let n = unsafe { ff::ffi::avio_read_partial(self.ctx, buf.as_mut_ptr(), len) };
        match n {
            n if n > 0 => Ok(n as usize),
            0 => Ok(0),
            e if e == ff::ffi::AVERROR_EOF => Ok(0),
            e => Err(ff::Error::from(e)),
        }
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        // SAFETY: the context was opened by avio_open2 and is closed once.
        unsafe { ff::ffi::avio_closep(&mut self.ctx) };
    }
}

/// Runs one relay session. `Ok(None)`: the source is not MPEG-TS (nothing was written);
/// the caller runs the libav pipeline instead.
pub fn run(ctx: &Ctx, timeline: &mut Timeline) -> Result<Option<End>, Error> {
    session(ctx, timeline)
        .map_err(|(stage, detail)| Error::new(ctx.stream.id, &ctx.stream.source, stage, detail))
}

fn session(ctx: &Ctx, timeline: &mut Timeline) -> Result<Option<End>, (Stage, String)> {
    let watch = Watchdog::new(ctx.stall_timeout);
    let mut io = Io::open(ctx, &watch).map_err(|e| {
        let e = if !(ctx.keep_going)() {
            "stopped".to_owned()
        } else {
            format!("cannot open {}: {e}", redact_source(&ctx.stream.source))
        };
        (Stage::Open, e)
    })?;
    if !(ctx.keep_going)() {
        return Ok(Some(End::Stopped));
    }
    watch.opened();
    let mut buf = vec![0u8; READ_SIZE];
    let mut first = Vec::new();
    let read = |io: &mut Io, buf: &mut [u8]| -> Result<usize, (Stage, String)> {
        match io.read(buf) {
            Ok(n) => Ok(n),
            Err(_) if !(ctx.keep_going)() => Ok(0),
            Err(e) if matches!(e, ff::Error::Exit) || watch.stalled() => {
                let secs = ctx.stall_timeout.as_secs();
                Err((Stage::Read, format!("no data from the source for {secs} s")))
            }
            Err(e) => Err((Stage::Read, format!("reading the source: {e}"))),
        }
    };
    // The first bytes decide.
    while ts_sync(&first).is_none() && first.len() < SNIFF_MAX {
        let n = read(&mut io, &mut buf)?;
        if n == 0 {
            break;
        }
        watch.active();
        first.extend_from_slice(&buf[..n]);
    }
    if !(ctx.keep_going)() {
        return Ok(Some(End::Stopped));
    }
    if ts_sync(&first).is_none() {
        return Ok(None);
    }
    timeline.begin_session();
    // Nobody has output of this run yet: the first keyframe goes out as it arrives.
    let fresh = !ctx.hub.has_keyframe();
    let cc = std::mem::take(&mut timeline.relay_cc);
    let mut rw = Rewriter::new(timeline.next_start, cc, fresh);
    let mut writer = HubWriter::new(ctx.hub.clone()).relaying();
    let started = Instant::now();
    let mut out = Vec::with_capacity(READ_SIZE);
    let mut described = Vec::new();
    let mut speed = Speed::default();
    let mut first = Some(first);
    let result = loop {
        if !(ctx.keep_going)() {
            break Ok(End::Stopped);
        }
        let head;
        let data: &[u8] = match first.take() {
            Some(f) => {
                head = f;
                &head
            }
            None => match read(&mut io, &mut buf) {
                Ok(0) if (ctx.keep_going)() => break Ok(End::Eof),
                Ok(0) => break Ok(End::Stopped),
                Ok(n) => {
                    watch.active();
                    &buf[..n]
                }
                Err(e) => break Err(e),
            },
        };
        rw.feed(data, started.elapsed(), &mut out);
        // Never fails (see HubWriter).
        let _ = writer.write_all(&out);
        out.clear();
        if ctx.hub.has_keyframe() {
            (ctx.on_running)();
        }
        // An HTTP server may send a recorded stream as fast as it can, or a burst at the
        // start: output keeps to real time (at most a second ahead), as in the pipeline.
        if let Some(t) = rw.clock() {
            timeline.pacer.wait(t, &*ctx.keep_going);
            watch.active();
            speed.note(ctx, t);
        }
        if writer.streams() != described.as_slice() {
            described = writer.streams().to_vec();
            describe(ctx, &described, &rw);
        }
    };
    drop(writer);
    timeline.relay_cc = rw.counters();
    timeline.relayed_until(rw.end());
    if rw.dropped > 0 || rw.jumps > 0 {
        tracing::debug!(
            channel = ctx.stream.id,
            skipped_bytes = rw.dropped,
            clock_jumps = rw.jumps,
            "relay session ended"
        );
    }
    result.map(Some)
}

/// Media seconds relayed per wall second, from the PCR, for the status (a source that
/// trickles shows below 1).
#[derive(Default)]
struct Speed {
    first: Option<(i64, Instant)>,
    shown: Option<Instant>,
}

impl Speed {
    fn note(&mut self, ctx: &Ctx, clock: i64) {
        let now = Instant::now();
        let (c0, t0) = *self.first.get_or_insert((clock, now));
        let wall = now.duration_since(t0).as_secs_f64();
        if wall < 0.5
            || self
                .shown
                .is_some_and(|s| now.duration_since(s).as_millis() < 250)
        {
            return;
        }
        self.shown = Some(now);
        let media = (clock - c0) as f64 / 90_000.0;
        ctx.status.lock().unwrap_or_else(|p| p.into_inner()).speed = Some(media / wall);
    }
}

/// Puts the relayed streams in the status, labelled as the pipeline labels them
/// (`aac [deu]`, `aac (copy) [deu]`).
fn describe(ctx: &Ctx, streams: &[EsInfo], rw: &Rewriter) {
    // As the pipeline labels streams: language, then dispositions (video: codec alone).
    let label = |s: &EsInfo, codec: String| {
        let mut tags: Vec<String> = s.language().into_iter().collect();
        if !super::ts::VIDEO_TYPES.contains(&s.stream_type) {
            tags.extend(s.dispositions().into_iter().map(str::to_owned));
        }
        if tags.is_empty() {
            codec
        } else {
            format!("{codec} [{}]", tags.join(", "))
        }
    };
    let input: Vec<String> = streams.iter().map(|s| label(s, s.codec().into())).collect();
    let output: Vec<String> = streams
        .iter()
        .map(|s| label(s, format!("{} (copy)", s.codec())))
        .collect();
    tracing::debug!(channel = ctx.stream.id, streams = ?input, nulls = rw.nulls, "relaying the source's MPEG-TS as it arrives");
    let mut st = ctx.status.lock().unwrap_or_else(|p| p.into_inner());
    st.input_codecs = input;
    st.output_codecs = output;
    st.skipped_streams.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_sources_and_profiles_relay_at_the_ts_level() {
        let stream = |source: &str| {
            let mut s: StreamConfig = serde_yaml::from_str("{id: 7, name: x, source: y}").unwrap();
            s.source = source.into();
            s
        };
        let copy = Profile {
            video_codec: Some("copy".into()),
            audio_codec: Some("copy".into()),
            ..Profile::default()
        };
        for s in [
            "http://p/live.ts",
            "HTTPS://p/live?x=1",
            "udp://@239.0.0.1:1234",
            "srt://h:9000",
        ] {
            assert!(eligible(&stream(s), &copy), "{s}");
        }
        for s in [
            "http://p/index.m3u8",
            "https://p/list.m3u8?token=x",
            "/media/a.ts",
            "rtsp://cam/1",
            "rtmp://h/live",
            "lavfi:testsrc2",
        ] {
            assert!(!eligible(&stream(s), &copy), "{s}");
        }
        let ts = stream("http://p/live.ts");
        let x264 = Profile {
            video_codec: Some("libx264".into()),
            ..copy.clone()
        };
        let first_audio = Profile {
            audio_tracks: Some(AudioTracks::First),
            ..copy.clone()
        };
        let no_subs = Profile {
            subtitles: Some(Subtitles::None),
            ..copy.clone()
        };
        let off = Profile {
            ts_relay: Some(false),
            ..copy.clone()
        };
        for p in [&x264, &first_audio, &no_subs, &off] {
            assert!(!eligible(&ts, p), "{p:?}");
        }
        assert!(eligible(&ts, &Profile::default()), "copy is the default");
    }

    #[test]
    fn sync_needs_three_packets() {
        let mut d = vec![0u8; 5];
        for _ in 0..2 {
            let mut p = vec![0x47];
            p.resize(PACKET, 0);
            d.extend(p);
        }
        assert_eq!(ts_sync(&d), None, "two packets and no third sync byte");
        d.push(0x47);
        assert_eq!(ts_sync(&d), Some(5));
        assert_eq!(ts_sync(b"#EXTM3U\n#EXT-X-VERSION:3\n"), None);
    }

    #[test]
    fn the_source_is_opened_under_its_whitelist() {
        crate::libav::init();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.ts");
        std::fs::write(&file, [0x47u8; 1000]).unwrap();
        let options = source::input_options(&SourceKind::Http, &Default::default());
        // A file URL under the HTTP whitelist is refused by libav's I/O layer too...
        let url = format!("file:{}", file.display());
        let refused = Io::open_with(&url, &options, None).err();
        assert_eq!(refused.as_deref(), Some("Invalid argument"));
        // ...while the file whitelist opens it.
        let options = source::input_options(&SourceKind::File, &Default::default());
        assert!(Io::open_with(&url, &options, None).is_ok());
    }
}
