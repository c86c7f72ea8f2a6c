//! An MPEG-TS checker for "clean output" claims, below what a decoder reports: `ffmpeg -v
//! error` says nothing about a lost packet, a late PES or a missing PCR (measured: a file
//! with two TS packets cut out decodes with no line at that level). ISO/IEC 13818-1 rules:
//!
//! - every packet starts with the sync byte 0x47;
//! - continuity counters (2.4.3.3): per PID, +1 (mod 16) on every packet that carries a
//!   payload; packets with an adaptation field only do not count; one duplicate packet is
//!   allowed; a packet whose adaptation field sets `discontinuity_indicator` may jump;
//! - PCR (2.4.2.2): on the PMT's PCR PID at most 100 ms apart (PCR time), never backwards
//!   except at a discontinuity;
//! - per elementary stream, DTS (PTS where there is no DTS) increases in the order packets
//!   arrive, and PTS >= DTS;
//! - T-STD (2.4.2.3): a PES must arrive before its DTS, so its DTS must not be below the
//!   last PCR received before it;
//! - audio/video sync: at any point of the stream the last video and audio PTS are close.
//!
//! Pure code over the bytes a client received; no tool needed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

const TS: usize = 188;
/// 33-bit timestamps wrap here.
const WRAP: i64 = 1 << 33;

/// What the checker found for one elementary stream (a PID of the PMT).
#[derive(Debug, Default, Clone)]
pub struct Stream {
    pub stream_type: u8,
    pub video: bool,
    pub audio: bool,
    /// PES headers seen (with a PTS).
    pub pes: usize,
    /// DTS (or PTS) in arrival order, 90 kHz, unwrapped.
    pub dts: Vec<i64>,
    pub pts: Vec<i64>,
    /// PES whose DTS was not above the previous one's.
    pub backwards: usize,
    /// PES with PTS < DTS.
    pub pts_below_dts: usize,
    /// The largest forward DTS step, seconds.
    pub max_step: f64,
    /// PES whose DTS was below the last PCR (T-STD: it arrived late), and the smallest
    /// DTS - PCR seen, seconds (negative: late).
    pub late: usize,
    pub min_lead: f64,
}

impl Stream {
    /// First and last DTS, seconds.
    pub fn span(&self) -> f64 {
        match (self.dts.first(), self.dts.last()) {
            (Some(a), Some(b)) => (b - a) as f64 / 90_000.0,
            _ => 0.0,
        }
    }
}

/// The result of [`check`].
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub packets: usize,
    /// Packets that did not start with 0x47.
    pub sync_errors: usize,
    /// Bytes after the last whole packet (a read that ended mid-packet: not a fault).
    pub trailing: usize,
    pub cc_errors: usize,
    /// The part of `cc_errors` on PSI PIDs (PAT, PMT, SDT: PIDs that are no elementary
    /// stream of the PMT).
    pub psi_cc_errors: usize,
    pub duplicates: usize,
    /// Packets with `discontinuity_indicator` set.
    pub discontinuities: usize,
    pub pcr_pid: Option<u16>,
    pub pcrs: usize,
    /// The largest PCR step (PCR time, seconds) between two PCRs of one timeline.
    pub max_pcr_interval: f64,
    /// PCR steps over 100 ms, and PCRs that went backwards without a discontinuity.
    pub pcr_gaps: usize,
    pub pcr_backwards: usize,
    /// Per elementary PID.
    pub streams: BTreeMap<u16, Stream>,
    /// A/V sync: per timeline (the stretch between two PCR discontinuities), how far the
    /// audio's first and last PTS are from the video's, seconds (the largest of all).
    pub max_av_drift: f64,
    /// Interleaving: the largest |last video PTS - last audio PTS| at any PES start,
    /// seconds (how far one stream runs ahead of the other in the bytes).
    pub max_av_interleave: f64,
    /// The first problems found, for messages.
    pub notes: Vec<String>,
}

impl Report {
    pub fn video(&self) -> Option<&Stream> {
        self.streams.values().find(|s| s.video)
    }

    pub fn audio(&self) -> Option<&Stream> {
        self.streams.values().find(|s| s.audio)
    }

    /// PES that arrived after their DTS (all streams).
    pub fn late(&self) -> usize {
        self.streams.values().map(|s| s.late).sum()
    }

    pub fn backwards(&self) -> usize {
        self.streams
            .values()
            .map(|s| s.backwards + s.pts_below_dts)
            .sum()
    }

    fn note(&mut self, text: String) {
        if self.notes.len() < 12 {
            self.notes.push(text);
        }
    }

    /// One line of figures for test logs.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} packets, {} sync errors, {} CC errors ({} on PSI), {} duplicates, {} discontinuities, {} PCRs (max interval {:.0} ms, {} over 100 ms, {} backwards), A/V drift max {:.0} ms, interleave max {:.0} ms",
            self.packets,
            self.sync_errors,
            self.cc_errors,
            self.psi_cc_errors,
            self.duplicates,
            self.discontinuities,
            self.pcrs,
            self.max_pcr_interval * 1000.0,
            self.pcr_gaps,
            self.pcr_backwards,
            self.max_av_drift * 1000.0,
            self.max_av_interleave * 1000.0
        );
        for (pid, st) in &self.streams {
            let _ = write!(
                s,
                "; PID {pid} type 0x{:02x}: {} PES over {:.2} s, {} backwards, {} PTS<DTS, max step {:.0} ms, {} late (DTS<PCR), min DTS-PCR {:.0} ms",
                st.stream_type,
                st.pes,
                st.span(),
                st.backwards,
                st.pts_below_dts,
                st.max_step * 1000.0,
                st.late,
                st.min_lead * 1000.0
            );
        }
        if !self.notes.is_empty() {
            let _ = write!(s, "; first problems: {}", self.notes.join(" | "));
        }
        s
    }

    /// Everything a clean stream must meet except the T-STD timing (see
    /// [`Report::assert_arrives_before_dts`]): sync, continuity counters, a PCR at most
    /// 100 ms apart, timestamps that only go forward (steps under `max_step` seconds), and
    /// audio within `max_drift` seconds of video.
    pub fn assert_clean(&self, what: &str, max_step: f64, max_drift: f64) {
        let summary = self.summary();
        assert!(self.packets > 0, "{what}: no TS packets");
        assert_eq!(self.sync_errors, 0, "{what}: sync errors: {summary}");
        assert_eq!(self.cc_errors, 0, "{what}: continuity errors: {summary}");
        assert!(self.pcrs >= 2, "{what}: no PCR timeline: {summary}");
        assert_eq!(self.pcr_gaps, 0, "{what}: PCR over 100 ms apart: {summary}");
        assert_eq!(self.pcr_backwards, 0, "{what}: PCR went back: {summary}");
        assert!(
            self.video().is_some() && self.audio().is_some(),
            "{what}: video and audio PES: {summary}"
        );
        assert_eq!(
            self.backwards(),
            0,
            "{what}: timestamps went back: {summary}"
        );
        for (pid, st) in &self.streams {
            assert!(
                st.max_step < max_step,
                "{what}: PID {pid} jumps {:.3} s: {summary}",
                st.max_step
            );
        }
        assert!(
            self.max_av_drift < max_drift,
            "{what}: audio and video timelines {:.3} s apart: {summary}",
            self.max_av_drift
        );
        assert!(
            self.max_av_interleave < max_drift,
            "{what}: audio and video interleaved {:.3} s apart: {summary}",
            self.max_av_interleave
        );
    }

    /// T-STD: no PES arrives after its decoding time (DTS >= the PCR before it).
    pub fn assert_arrives_before_dts(&self, what: &str) {
        assert_eq!(
            self.late(),
            0,
            "{what}: PES after their DTS: {}",
            self.summary()
        );
    }
}

/// Brings a 33-bit timestamp next to `prev` (unwrapped).
fn unwrap(raw: i64, prev: Option<i64>) -> i64 {
    match prev {
        None => raw,
        Some(p) => {
            let base = p - p.rem_euclid(WRAP);
            [base - WRAP, base, base + WRAP]
                .into_iter()
                .map(|b| b + raw)
                .min_by_key(|c| (c - p).abs())
                .unwrap()
        }
    }
}

fn ts33(b: &[u8]) -> i64 {
    (i64::from(b[0] >> 1) & 0x07) << 30
        | i64::from(b[1]) << 22
        | i64::from(b[2] >> 1) << 15
        | i64::from(b[3]) << 7
        | i64::from(b[4] >> 1)
}

/// Stream types (ISO 13818-1 table 2-34 and common registrations).
fn is_video(t: u8) -> bool {
    matches!(t, 0x01 | 0x02 | 0x10 | 0x1B | 0x24 | 0x42 | 0xD1 | 0xEA)
}

fn is_audio(t: u8) -> bool {
    matches!(t, 0x03 | 0x04 | 0x0F | 0x11 | 0x81 | 0x87)
}

/// Per-PID state while walking the packets.
#[derive(Default)]
struct Pid {
    cc: Option<u8>,
    last: Option<[u8; TS]>,
    dup_ok: bool,
}

/// The PSI section starting in a payload (after its pointer field): table id and the
/// bytes up to the CRC.
fn section(pl: &[u8]) -> Option<(u8, &[u8])> {
    let ptr = usize::from(*pl.first()?);
    let t = pl.get(1 + ptr..)?;
    if t.len() < 3 {
        return None;
    }
    let len = (usize::from(t[1] & 0x0f) << 8) | usize::from(t[2]);
    Some((t[0], t.get(3..(3 + len).checked_sub(4)?)?))
}

/// Checks TS bytes as a client received them.
pub fn check(bytes: &[u8]) -> Report {
    let mut r = Report {
        trailing: bytes.len() % TS,
        ..Report::default()
    };
    let mut pids: BTreeMap<u16, Pid> = BTreeMap::new();
    let mut pmt_pids: Vec<u16> = Vec::new();
    let mut last_pcr: Option<i64> = None;
    let mut last_vpts: Option<i64> = None;
    let mut last_apts: Option<i64> = None;
    // (first, last) video and audio PTS of the current timeline.
    let mut epoch: [Option<(i64, i64)>; 2] = [None, None];
    let close = |epoch: &mut [Option<(i64, i64)>; 2], r: &mut Report| {
        if let [Some(v), Some(a)] = *epoch {
            let d = (v.0 - a.0).abs().max((v.1 - a.1).abs()) as f64 / 90_000.0;
            r.max_av_drift = r.max_av_drift.max(d);
        }
        *epoch = [None, None];
    };
    for (i, p) in bytes.chunks_exact(TS).enumerate() {
        r.packets += 1;
        if p[0] != 0x47 {
            r.sync_errors += 1;
            r.note(format!("packet {i}: sync byte 0x{:02x}", p[0]));
            continue;
        }
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        if pid == 0x1fff {
            continue;
        }
        let pusi = p[1] & 0x40 != 0;
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0f;
        let (mut disc, mut pcr) = (false, None);
        let mut start = 4;
        if afc & 2 != 0 {
            let len = usize::from(p[4]);
            if len > 0 {
                let flags = p[5];
                disc = flags & 0x80 != 0;
                if flags & 0x10 != 0 && len >= 7 {
                    let b = &p[6..12];
                    let base = (i64::from(b[0]) << 25)
                        | (i64::from(b[1]) << 17)
                        | (i64::from(b[2]) << 9)
                        | (i64::from(b[3]) << 1)
                        | (i64::from(b[4]) >> 7);
                    let ext = (i64::from(b[4] & 1) << 8) | i64::from(b[5]);
                    pcr = Some((base, ext));
                }
            }
            start = 5 + len;
        }
        if disc {
            r.discontinuities += 1;
        }
        let has_payload = afc & 1 != 0;
        // Continuity counters.
        let psi = pid < 0x20 || pmt_pids.contains(&pid);
        let st = pids.entry(pid).or_default();
        if has_payload {
            match st.cc {
                Some(prev) if !disc => {
                    if cc == prev {
                        let same = st.last.is_some_and(|l| l[..] == p[..]);
                        if same && st.dup_ok {
                            r.duplicates += 1;
                            st.dup_ok = false;
                            continue;
                        }
                        r.cc_errors += 1;
                        r.psi_cc_errors += usize::from(psi);
                        r.note(format!("packet {i} PID {pid}: CC {cc} repeated"));
                    } else if cc != (prev + 1) & 0x0f {
                        r.cc_errors += 1;
                        r.psi_cc_errors += usize::from(psi);
                        r.note(format!("packet {i} PID {pid}: CC {prev} -> {cc}"));
                    }
                }
                _ => {}
            }
            st.cc = Some(cc);
            st.dup_ok = true;
            let mut copy = [0u8; TS];
            copy.copy_from_slice(p);
            st.last = Some(copy);
        }
        // PCR on the PCR PID.
        if let Some((base, ext)) = pcr {
            if r.pcr_pid.is_none_or(|pp| pp == pid) {
                let t = unwrap(base, last_pcr) * 300 + ext;
                let t90 = t / 300;
                r.pcrs += 1;
                if disc {
                    last_vpts = None;
                    last_apts = None;
                    close(&mut epoch, &mut r);
                } else if let Some(prev) = last_pcr {
                    let step = (t90 - prev) as f64 / 90_000.0;
                    if step < 0.0 {
                        r.pcr_backwards += 1;
                        r.note(format!("packet {i}: PCR back {step:.3} s"));
                    } else {
                        r.max_pcr_interval = r.max_pcr_interval.max(step);
                        if step > 0.1 {
                            r.pcr_gaps += 1;
                            r.note(format!("packet {i}: PCR step {:.0} ms", step * 1000.0));
                        }
                    }
                }
                last_pcr = Some(t90);
            }
        }
        if !has_payload || start >= TS {
            continue;
        }
        let pl = &p[start..];
        // PSI.
        if pid == 0 && pusi {
            if let Some((0x00, body)) = section(pl) {
                pmt_pids = body
                    .get(5..)
                    .unwrap_or(&[])
                    .chunks_exact(4)
                    .filter(|e| e[0] != 0 || e[1] != 0)
                    .map(|e| (u16::from(e[2] & 0x1f) << 8) | u16::from(e[3]))
                    .collect();
            }
            continue;
        }
        if pmt_pids.contains(&pid) && pusi {
            if let Some((0x02, body)) = section(pl) {
                if body.len() >= 9 {
                    r.pcr_pid = Some((u16::from(body[5] & 0x1f) << 8) | u16::from(body[6]));
                    let info = (usize::from(body[7] & 0x0f) << 8) | usize::from(body[8]);
                    let mut es = body.get(9 + info..).unwrap_or(&[]);
                    while es.len() >= 5 {
                        let t = es[0];
                        let epid = (u16::from(es[1] & 0x1f) << 8) | u16::from(es[2]);
                        let elen = (usize::from(es[3] & 0x0f) << 8) | usize::from(es[4]);
                        let s = r.streams.entry(epid).or_default();
                        s.stream_type = t;
                        s.video = is_video(t);
                        s.audio = is_audio(t);
                        es = es.get(5 + elen..).unwrap_or(&[]);
                    }
                }
            }
            continue;
        }
        // PES headers of the elementary streams.
        if !pusi || pl.len() < 14 || pl[..3] != [0, 0, 1] {
            continue;
        }
        let Some(s) = r.streams.get(&pid).cloned() else {
            continue;
        };
        let flags = pl[7] >> 6;
        if flags & 2 == 0 {
            continue;
        }
        let mut s = s;
        let pts = unwrap(ts33(&pl[9..14]), s.pts.last().copied());
        let dts = if flags == 3 && pl.len() >= 19 {
            unwrap(ts33(&pl[14..19]), s.dts.last().copied())
        } else {
            pts
        };
        s.pes += 1;
        if pts < dts {
            s.pts_below_dts += 1;
            r.note(format!("packet {i} PID {pid}: PTS {pts} < DTS {dts}"));
        }
        if let Some(&prev) = s.dts.last() {
            if dts <= prev {
                s.backwards += 1;
                r.note(format!(
                    "packet {i} PID {pid}: DTS {:.3} after {:.3}",
                    dts as f64 / 9e4,
                    prev as f64 / 9e4
                ));
            } else {
                s.max_step = s.max_step.max((dts - prev) as f64 / 90_000.0);
            }
        }
        if let Some(pcr) = last_pcr {
            let lead = (dts - pcr) as f64 / 90_000.0;
            if s.pes == 1 || lead < s.min_lead {
                s.min_lead = lead;
            }
            if dts < pcr {
                s.late += 1;
            }
        }
        s.dts.push(dts);
        s.pts.push(pts);
        if s.video || s.audio {
            let k = usize::from(s.audio);
            let e = epoch[k].get_or_insert((pts, pts));
            e.1 = pts;
            *if s.video {
                &mut last_vpts
            } else {
                &mut last_apts
            } = Some(pts);
        }
        if let (Some(v), Some(a)) = (last_vpts, last_apts) {
            r.max_av_interleave = r.max_av_interleave.max((v - a).abs() as f64 / 90_000.0);
        }
        r.streams.insert(pid, s);
    }
    close(&mut epoch, &mut r);
    r
}

/// [`check`] and [`Report::assert_clean`] with the bounds every channel here meets: no
/// timestamp step of 1 s or more, audio within 1 s of video.
pub fn assert_clean(bytes: &[u8], what: &str) -> Report {
    let r = check(bytes);
    eprintln!("measured: {what}: {}", r.summary());
    r.assert_clean(what, 1.0, 1.0);
    r
}

/// `tsreport -cnt 1` (Debian's tstools) on a file: the count of continuity errors and of
/// PES whose DTS is below the PCR, as it reports them (`### CC error * N`,
/// `### DTS < PCR * N`), and its whole output.
pub fn tsreport(path: &std::path::Path) -> (usize, usize, String) {
    // `-cnt` also writes continuity_counter.txt into the working directory: keep it next
    // to the file, out of the source tree.
    let out = std::process::Command::new("tsreport")
        .args(["-cnt", "1"])
        .arg(path)
        .current_dir(path.parent().unwrap_or(std::path::Path::new("/tmp")))
        .output()
        .expect("tsreport (Debian package tstools; ./scripts/setup installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |what: &str| -> usize {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(what))
            .filter_map(|rest| rest.trim().strip_prefix('*'))
            .filter_map(|n| n.trim().parse::<usize>().ok())
            .sum()
    };
    (count("### CC error"), count("### DTS < PCR"), text)
}
