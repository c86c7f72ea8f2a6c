//! The arithmetic of a TS relay session (see [`super::ts_relay`]) on whole packets, with
//! no I/O: the source's own packets go out as they come, moved onto the channel's output
//! timeline.
//!
//! - Timestamps: one offset per session (90 kHz, modulo 2^33) puts the session's first
//!   PCR where the timeline stands, so a client kept across a reconnect or a failover sees
//!   time run on, as with the libav pipeline. PCR, OPCR, PTS and DTS all move by it. A PCR
//!   that jumps (a source's encoder restarting) moves the offset so output time steps one
//!   frame instead.
//! - Continuity counters: per PID, the first packet of a session continues from the last
//!   one written; the source's own gaps after that stay visible to the client's decoder.
//! - Null packets (stuffing of a constant-rate source) are dropped: they carry nothing and
//!   every viewer would receive them.
//!
//! - Whole PES packets only: a packet goes out once every PES that started before it is
//!   complete (its next PES started, or its length is reached), so a session that ends
//!   (the source dropped) leaves no truncated frame for the clients kept across it, and a
//!   session starts each PID at its first PES start. The exception is a zap: on a fresh
//!   output (nobody is watching yet) packets go out as they arrive until the first
//!   keyframe's PES is complete, so a viewer's first picture waits for nothing but its
//!   own bytes.
//!
//! Packets are held at a session's start until its first PCR, PAT and PMT have come (at
//! most [`HOLD_MAX`]), and go out with the PAT and PMT first: a source joined on a
//! keyframe sends that keyframe before its tables, and a client (or our own keyframe
//! index) can use it only once it knows the PIDs. (libav's demuxer does the same by
//! reading its probe buffer twice.)

use super::timeline::{FRAME, JUMP};
use super::ts::PACKET;
use std::collections::HashMap;
use std::time::Duration;

const SYNC: u8 = 0x47;
const NULL_PID: u16 = 0x1fff;
/// TS timestamps count modulo 2^33 (90 kHz).
const WRAP: i64 = 1 << 33;
/// At most this much waits for the first PCR; then the first PES timestamp anchors.
pub const HOLD_MAX: usize = 1 << 20;

fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

/// The adaptation field's flags byte and length, when the packet has one with flags.
fn adaptation(p: &[u8]) -> Option<usize> {
    let afc = (p[3] >> 4) & 3;
    (afc & 2 != 0 && p[4] > 0).then_some(usize::from(p[4]))
}

fn read_pcr_base(b: &[u8]) -> i64 {
    (i64::from(b[0]) << 25)
        | (i64::from(b[1]) << 17)
        | (i64::from(b[2]) << 9)
        | (i64::from(b[3]) << 1)
        | (i64::from(b[4]) >> 7)
}

fn write_pcr_base(b: &mut [u8], v: i64) {
    let v = v.rem_euclid(WRAP);
    b[0] = (v >> 25) as u8;
    b[1] = (v >> 17) as u8;
    b[2] = (v >> 9) as u8;
    b[3] = (v >> 1) as u8;
    b[4] = (b[4] & 0x7f) | (((v & 1) as u8) << 7);
}

/// The PCR base (90 kHz) of a packet that carries one.
fn pcr(p: &[u8]) -> Option<i64> {
    let len = adaptation(p)?;
    (len >= 7 && p[5] & 0x10 != 0).then(|| read_pcr_base(&p[6..11]))
}

fn read_stamp(b: &[u8]) -> i64 {
    (i64::from(b[0] >> 1) & 0x07) << 30
        | i64::from(b[1]) << 22
        | (i64::from(b[2]) >> 1) << 15
        | i64::from(b[3]) << 7
        | i64::from(b[4]) >> 1
}

fn write_stamp(b: &mut [u8], v: i64) {
    let v = v.rem_euclid(WRAP);
    b[0] = (b[0] & 0xf1) | (((v >> 29) & 0x0e) as u8);
    b[1] = (v >> 22) as u8;
    b[2] = (((v >> 14) & 0xfe) as u8) | 1;
    b[3] = (v >> 7) as u8;
    b[4] = (((v << 1) & 0xfe) as u8) | 1;
}

/// Where the PTS (and DTS) of the PES starting in `p` sit: (offset of the PTS, has DTS).
fn pes_stamps(p: &[u8]) -> Option<(usize, bool)> {
    if p[1] & 0x40 == 0 || p[3] & 0x10 == 0 {
        return None;
    }
    let start = match adaptation(p) {
        Some(len) => 5 + len,
        None if (p[3] >> 4) & 3 == 3 => 5,
        None => 4,
    };
    let pl = p.get(start..)?;
    if pl.len() < 14 || pl[..3] != [0, 0, 1] || pl[6] & 0xc0 != 0x80 {
        return None;
    }
    // Streams without the optional PES header (ISO 13818-1 2.4.3.7).
    if matches!(pl[3], 0xbc | 0xbe | 0xbf | 0xf0 | 0xf1 | 0xf2 | 0xf8 | 0xff) {
        return None;
    }
    match pl[7] >> 6 {
        2 => Some((start + 9, false)),
        3 if pl.len() >= 19 => Some((start + 9, true)),
        _ => None,
    }
}

/// `v` moved by whole wraps to lie nearest `reference`.
fn near(v: i64, reference: i64) -> i64 {
    let d = (reference - v).rem_euclid(WRAP);
    let d = if d >= WRAP / 2 { d - WRAP } else { d };
    reference - d
}

/// Rewrites one relay session's packets; see the module comment.
#[derive(Debug)]
pub struct Rewriter {
    /// Where the session starts on the output timeline (90 kHz, unwrapped).
    start: i64,
    offset: Option<i64>,
    /// Nobody watches the output yet: the session anchors on its first PCR and sends the
    /// first keyframe as it arrives.
    fresh: bool,
    /// The PMT's PID once the PAT has named it, and whether the PMT has come.
    pmt_pid: Option<u16>,
    pmt_seen: bool,
    /// Video PIDs (with their stream types) and all audio and video PIDs, from the PMT.
    video: Vec<(u16, u8)>,
    av: Vec<u16>,
    /// While holding: the first PCR, and each audio/video PID's first PES timestamp.
    first_pcr: Option<i64>,
    first_ts: HashMap<u16, i64>,
    hold_since: Option<Duration>,
    held: Vec<u8>,
    rest: Vec<u8>,
    /// What was held at the start has gone out.
    released: bool,
    /// PIDs whose first PES (or section) start this session has seen.
    started: PerPid,
    /// The last PCR written (unwrapped output time) and when it came.
    last_pcr: Option<(i64, Duration)>,
    output: Output,
    /// Bytes skipped while looking for packet sync.
    pub dropped: u64,
    /// Null packets left out.
    pub nulls: u64,
    /// PCR jumps hidden.
    pub jumps: u64,
}

/// A continuing session waits at most this long for every audio and video stream's first
/// timestamp before it anchors on what it has.
const HOLD_TIME: Duration = Duration::from_millis(1000);

/// The output stage: holds packets back until every PES before them is complete (see the
/// module comment), then numbers them on and notes where output ends. What it never
/// releases (a session's incomplete tail) leaves no trace in the counters or the end.
#[derive(Debug, Default)]
struct Output {
    /// Some while packets go out as they arrive; true once the first keyframe started.
    eager: Option<bool>,
    pending: Vec<u8>,
    /// The absolute packet index of `pending`'s first packet, and of the next packet.
    base: u64,
    next: u64,
    /// Per PID, its open PES: where it starts, the bytes it still lacks (None: until the
    /// next start), and when it started.
    open: Vec<(u16, u64, Option<usize>, Duration)>,
    /// Per PID, the last continuity counter sent (carried across sessions)...
    cc: PerPid,
    /// ...and this session's shift of the source's counters.
    delta: PerPid,
    /// Earlier sessions sent output: the first PCR sent is flagged as a discontinuity.
    continuing: bool,
    flagged: bool,
    /// Where the presentation sent so far ends (unwrapped output time).
    end: i64,
}

/// A small value per PID (13 bits), without hashing: the lookups of every packet are the
/// relay's hottest path.
#[derive(Debug, Clone)]
struct PerPid(Vec<u8>);

/// No value (every value kept is below 16).
const NONE: u8 = 0xff;

impl Default for PerPid {
    fn default() -> PerPid {
        PerPid(vec![NONE; 1 << 13])
    }
}

impl PerPid {
    fn from(map: &HashMap<u16, u8>) -> PerPid {
        let mut p = PerPid::default();
        for (&pid, &v) in map {
            p.set(pid, v);
        }
        p
    }

    fn get(&self, pid: u16) -> Option<u8> {
        Some(self.0[usize::from(pid & 0x1fff)]).filter(|&v| v != NONE)
    }

    fn set(&mut self, pid: u16, v: u8) {
        self.0[usize::from(pid & 0x1fff)] = v;
    }

    fn to_map(&self) -> HashMap<u16, u8> {
        (0..1u16 << 13)
            .filter_map(|pid| self.get(pid).map(|v| (pid, v)))
            .collect()
    }
}

/// An open PES is waited for at most this long (a sparse stream without PES lengths).
const OPEN_MAX: Duration = Duration::from_secs(1);
/// At most this much output waits for complete PES packets.
const PENDING_MAX: usize = 8 << 20;

fn payload_start(p: &[u8]) -> Option<usize> {
    let afc = (p[3] >> 4) & 3;
    if afc & 1 == 0 {
        return None;
    }
    let start = if afc == 3 { 5 + usize::from(p[4]) } else { 4 };
    (start < PACKET).then_some(start)
}

/// The first timestamp (DTS, else PTS) of the PES starting in `p`.
fn pes_time(p: &[u8]) -> Option<i64> {
    pes_stamps(p).map(|(at, dts)| read_stamp(&p[if dts { at + 5 } else { at }..]))
}

impl Output {
    /// Takes a rewritten packet; appends what may go out to `out`.
    fn push(&mut self, p: &[u8; PACKET], section: bool, now: Duration, out: &mut Vec<u8>) {
        let idx = self.next;
        self.next += 1;
        if !section {
            self.track(p, idx, now);
        }
        if self.eager.is_some() {
            let mut p = *p;
            self.finish(&mut p);
            out.extend_from_slice(&p);
            self.base = self.next;
            return;
        }
        self.pending.extend_from_slice(p);
        self.open.retain(|o| now.saturating_sub(o.3) < OPEN_MAX);
        let point = if self.pending.len() > PENDING_MAX {
            self.next
        } else {
            let oldest = self.open.iter().map(|o| o.1).min();
            oldest.unwrap_or(self.next).max(self.base)
        };
        let n = ((point - self.base) as usize) * PACKET;
        if n > 0 {
            let mut done = std::mem::take(&mut self.pending);
            self.pending = done.split_off(n);
            for c in done.chunks_exact_mut(PACKET) {
                self.finish(c);
            }
            out.extend_from_slice(&done);
            self.base = point;
        }
    }

    /// Notes where PES packets open and close.
    fn track(&mut self, p: &[u8], idx: u64, now: Duration) {
        let pid = pid(p);
        let Some(start) = payload_start(p) else {
            return;
        };
        let pl = &p[start..];
        let at = self.open.iter().position(|o| o.0 == pid);
        if p[1] & 0x40 != 0 {
            if let Some(i) = at {
                self.open.swap_remove(i);
            }
            let len = if pl.len() >= 6 && pl[..3] == [0, 0, 1] {
                usize::from(u16::from_be_bytes([pl[4], pl[5]]))
            } else {
                0
            };
            if len == 0 {
                self.open.push((pid, idx, None, now));
            } else if len + 6 > pl.len() {
                self.open.push((pid, idx, Some(len + 6 - pl.len()), now));
            }
        } else if let Some(i) = at {
            if let Some(left) = &mut self.open[i].2 {
                *left = left.saturating_sub(pl.len());
                if *left == 0 {
                    self.open.swap_remove(i);
                }
            }
        }
    }

    /// A packet on its way out: its counter continues the last one sent on its PID, the
    /// first PCR of a continuing session is flagged, and its PTS extends the end.
    fn finish(&mut self, p: &mut [u8]) {
        let pid = pid(p);
        let has_payload = p[3] & 0x10 != 0;
        let cc = p[3] & 0x0f;
        let delta = match self.delta.get(pid) {
            Some(d) => d,
            None => {
                let d = self.cc.get(pid).map_or(0, |prev| {
                    let want = if has_payload { (prev + 1) & 0x0f } else { prev };
                    want.wrapping_sub(cc) & 0x0f
                });
                self.delta.set(pid, d);
                d
            }
        };
        let new = (cc + delta) & 0x0f;
        p[3] = (p[3] & 0xf0) | new;
        self.cc.set(pid, new);
        if pcr(p).is_some() {
            if self.continuing && !self.flagged {
                p[5] |= 0x80; // discontinuity_indicator: a new time base
            }
            self.flagged = true;
        }
        if let Some((at, _)) = pes_stamps(p) {
            let pts = near(read_stamp(&p[at..]), self.end);
            self.end = self.end.max(pts + FRAME);
        }
    }
}

impl Rewriter {
    /// A session starting at `start` (output time), continuing the counters `cc` of the
    /// last relay session. `fresh`: nobody watches the output yet (a zap), so the session
    /// anchors on its first PCR and sends the first keyframe as it arrives; otherwise it
    /// anchors on the earliest first timestamp of its audio and video streams, so that
    /// every stream goes on from where the last session ended.
    pub fn new(start: i64, cc: HashMap<u16, u8>, fresh: bool) -> Rewriter {
        Rewriter {
            start,
            offset: None,
            fresh,
            pmt_pid: None,
            pmt_seen: false,
            video: Vec::new(),
            av: Vec::new(),
            first_pcr: None,
            first_ts: HashMap::new(),
            hold_since: None,
            held: Vec::new(),
            rest: Vec::new(),
            released: false,
            started: PerPid::default(),
            last_pcr: None,
            output: Output {
                eager: fresh.then_some(false),
                continuing: !cc.is_empty(),
                cc: PerPid::from(&cc),
                end: start,
                ..Output::default()
            },
            dropped: 0,
            nulls: 0,
            jumps: 0,
        }
    }

    /// The continuity counters as last sent, for the next session.
    pub fn counters(&self) -> HashMap<u16, u8> {
        self.output.cc.to_map()
    }

    /// Where the output sent so far ends (unwrapped 90 kHz): the next session starts
    /// after it.
    pub fn end(&self) -> i64 {
        self.output.end
    }

    /// The output time of the last PCR written (unwrapped 90 kHz): what pacing follows.
    pub fn clock(&self) -> Option<i64> {
        self.last_pcr.map(|l| l.0)
    }

    /// Feeds source bytes in (`now`: time since the session began); appends whole,
    /// rewritten packets to `out`.
    pub fn feed(&mut self, data: &[u8], now: Duration, out: &mut Vec<u8>) {
        self.rest.extend_from_slice(data);
        let mut i = 0;
        while i + PACKET <= self.rest.len() {
            if self.rest[i] != SYNC {
                let skip = super::ts::resync(&self.rest, i);
                self.dropped += skip as u64;
                i += skip;
                continue;
            }
            let mut p = [0u8; PACKET];
            p.copy_from_slice(&self.rest[i..i + PACKET]);
            i += PACKET;
            if pid(&p) == NULL_PID {
                self.nulls += 1;
                continue;
            }
            self.learn(&p);
            if !self.released {
                self.hold(p, now, out);
                continue;
            }
            self.emit(p, now, out);
        }
        self.rest.drain(..i.min(self.rest.len()));
    }

    /// Holds a packet of the session's start until the session can be anchored.
    fn hold(&mut self, p: [u8; PACKET], now: Duration, out: &mut Vec<u8>) {
        if self.first_pcr.is_none() {
            self.first_pcr = pcr(&p);
        }
        if self.av.contains(&pid(&p)) && !self.first_ts.contains_key(&pid(&p)) {
            if let Some(t) = pes_time(&p) {
                self.first_ts.insert(pid(&p), t);
            }
        }
        self.held.extend_from_slice(&p);
        let since = *self.hold_since.get_or_insert(now);
        let ready = self.pmt_seen
            && if self.fresh {
                self.first_pcr.is_some()
            } else {
                !self.av.is_empty() && self.av.iter().all(|p| self.first_ts.contains_key(p))
            };
        let enough = self.held.len() >= HOLD_MAX
            || (self.pmt_seen && now.saturating_sub(since) >= HOLD_TIME);
        if ready || enough {
            self.offset = Some(self.start - self.anchor());
            self.release(now, out);
        }
    }

    /// The source time that goes where the session starts.
    fn anchor(&self) -> i64 {
        let earliest = self.first_ts.values().copied().min();
        let pcr = if self.fresh {
            self.first_pcr.or(earliest)
        } else {
            earliest.or(self.first_pcr)
        };
        pcr.or_else(|| self.held.chunks_exact(PACKET).find_map(pes_time))
            .unwrap_or(0)
    }

    /// Sends one packet on: each PID from its first PES (or section) start, rewritten,
    /// whole PES packets only (see [`Output`]).
    fn emit(&mut self, mut p: [u8; PACKET], now: Duration, out: &mut Vec<u8>) {
        let pid = pid(&p);
        let unit_start = p[1] & 0x40 != 0;
        if self.started.get(pid).is_none() {
            if !unit_start {
                return;
            }
            self.started.set(pid, 1);
        }
        if unit_start {
            if let Some(&(_, st)) = self.video.iter().find(|v| v.0 == pid) {
                match self.output.eager {
                    Some(false) if super::ts::random_access_start(st, &p) => {
                        self.output.eager = Some(true)
                    }
                    Some(true) => {
                        // The first keyframe is complete: whole PES packets from here.
                        self.output.eager = None;
                        self.output.open.clear();
                    }
                    _ => {}
                }
            }
        }
        self.rewrite(&mut p, now);
        let section = pid < 0x20 || Some(pid) == self.pmt_pid;
        self.output.push(&p, section, now, out);
    }

    /// Notes the PAT's PMT PID, the PMT's arrival and its audio and video PIDs.
    fn learn(&mut self, p: &[u8]) {
        let pid = pid(p);
        if p[1] & 0x40 == 0 || p[3] & 0x10 == 0 || (pid != 0 && Some(pid) != self.pmt_pid) {
            return;
        }
        let Some(pl) = payload_start(p).map(|s| &p[s..]) else {
            return;
        };
        let Some(t) = pl.first().and_then(|&ptr| pl.get(1 + usize::from(ptr)..)) else {
            return;
        };
        if t.len() < 12 {
            return;
        }
        let len = (usize::from(t[1] & 0x0f) << 8) | usize::from(t[2]);
        let body = t.get(3..(3 + len).saturating_sub(4)).unwrap_or(&[]);
        if pid == 0 && t[0] == 0 {
            self.pmt_pid = body
                .get(5..)
                .unwrap_or(&[])
                .chunks_exact(4)
                .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
                .map(|e| (u16::from(e[2] & 0x1f) << 8) | u16::from(e[3]));
        } else if Some(pid) == self.pmt_pid && t[0] == 2 {
            self.pmt_seen = true;
            let info = body
                .get(7..9)
                .map_or(0, |b| (usize::from(b[0] & 0x0f) << 8) | usize::from(b[1]));
            let mut es = body.get(9 + info..).unwrap_or(&[]);
            self.video.clear();
            self.av.clear();
            while es.len() >= 5 {
                let es_pid = (u16::from(es[1] & 0x1f) << 8) | u16::from(es[2]);
                let info_len = (usize::from(es[3] & 0x0f) << 8) | usize::from(es[4]);
                let descriptors = es.get(5..5 + info_len).unwrap_or(&[]);
                if super::ts::VIDEO_TYPES.contains(&es[0]) {
                    self.video.push((es_pid, es[0]));
                    self.av.push(es_pid);
                } else if is_audio(es[0], descriptors) {
                    self.av.push(es_pid);
                }
                es = es.get(5 + info_len..).unwrap_or(&[]);
            }
        }
    }

    /// Sends what was held, its PAT and PMT first.
    fn release(&mut self, now: Duration, out: &mut Vec<u8>) {
        self.released = true;
        let held = std::mem::take(&mut self.held);
        let table = |c: &&[u8]| pid(c) == 0 || Some(pid(c)) == self.pmt_pid;
        let (tables, rest): (Vec<&[u8]>, Vec<&[u8]>) = held.chunks_exact(PACKET).partition(table);
        for c in tables.into_iter().chain(rest) {
            let mut p = [0u8; PACKET];
            p.copy_from_slice(c);
            self.emit(p, now, out);
        }
    }

    /// Moves a packet's PCR, OPCR, PTS and DTS by the session's offset.
    fn rewrite(&mut self, p: &mut [u8; PACKET], now: Duration) {
        if let Some(base) = pcr(p) {
            let t = self.place_pcr(base, now);
            write_pcr_base(&mut p[6..11], t);
            if p[5] & 0x08 != 0 && p[4] >= 13 {
                let o = read_pcr_base(&p[12..17]);
                write_pcr_base(&mut p[12..17], o + self.offset.unwrap_or(0));
            }
        }
        if let Some((at, has_dts)) = pes_stamps(p) {
            let off = self.offset.unwrap_or(0);
            let pts = read_stamp(&p[at..]) + off;
            write_stamp(&mut p[at..at + 5], pts);
            if has_dts {
                let dts = read_stamp(&p[at + 5..]) + off;
                write_stamp(&mut p[at + 5..at + 10], dts);
            }
        }
    }

    /// The output time of a PCR; hides a jump in the source's clock.
    fn place_pcr(&mut self, base: i64, now: Duration) -> i64 {
        let off = self.offset.unwrap_or(0);
        let Some((last, at)) = self.last_pcr else {
            let t = near(base + off, self.start);
            self.last_pcr = Some((t, now));
            return t;
        };
        let t = near(base + off, last);
        let wall = (now.saturating_sub(at).as_millis() as i64) * 90;
        let step = t - last;
        let t = if step < -FRAME * 12 || step > wall + JUMP {
            self.jumps += 1;
            let moved = last + FRAME;
            self.offset = Some(off + (moved - t));
            moved
        } else {
            t
        };
        self.last_pcr = Some((t, now));
        t
    }
}

/// Stream types (and, for DVB's private data, descriptors) that carry audio.
fn is_audio(stream_type: u8, descriptors: &[u8]) -> bool {
    match stream_type {
        0x03 | 0x04 | 0x0f | 0x11 | 0x81 | 0x87 => true,
        0x06 => {
            let mut d = descriptors;
            while d.len() >= 2 {
                if matches!(d[0], 0x6a | 0x7a | 0x7b | 0x7c) {
                    return true;
                }
                d = d.get(2 + usize::from(d[1])..).unwrap_or(&[]);
            }
            false
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::ts::tests::psi;
    use super::*;

    fn tables() -> Vec<u8> {
        let (pat, pmt) = psi();
        [pat, pmt].concat()
    }

    /// A packet on `pid` with counter `cc`, an optional PCR and an optional PES start
    /// with PTS (and DTS).
    fn packet(pid: u16, cc: u8, pcr: Option<i64>, pes: Option<(i64, Option<i64>)>) -> Vec<u8> {
        let mut p = vec![SYNC, (pid >> 8) as u8 & 0x1f, pid as u8, cc];
        if pes.is_some() {
            p[1] |= 0x40;
        }
        if let Some(base) = pcr {
            p[3] |= 0x30;
            p.extend([7, 0x10, 0, 0, 0, 0, 0x7e, 0]);
            write_pcr_base(&mut p[6..11], base);
        } else {
            p[3] |= 0x10;
        }
        if let Some((pts, dts)) = pes {
            let flags = if dts.is_some() { 0xc0 } else { 0x80 };
            p.extend([
                0,
                0,
                1,
                0xe0,
                0,
                0,
                0x80,
                flags,
                if dts.is_some() { 10 } else { 5 },
            ]);
            let mut b = [if dts.is_some() { 0x31 } else { 0x21 }, 0, 1, 0, 1];
            write_stamp(&mut b, pts);
            p.extend(b);
            if let Some(d) = dts {
                let mut b = [0x11, 0, 1, 0, 1];
                write_stamp(&mut b, d);
                p.extend(b);
            }
        }
        p.resize(PACKET, 0xff);
        p
    }

    /// Per packet: PID, counter, PCR, and the PES's first timestamp (and whether a DTS).
    type Stamped = (u16, u8, Option<i64>, Option<(i64, bool)>);

    fn stamps_of(data: &[u8]) -> Vec<Stamped> {
        data.chunks_exact(PACKET)
            .map(|p| {
                let pes = pes_stamps(p).map(|(at, dts)| {
                    let t = if dts {
                        read_stamp(&p[at + 5..])
                    } else {
                        read_stamp(&p[at..])
                    };
                    (t, dts)
                });
                (pid(p), p[3] & 0x0f, pcr(p), pes)
            })
            .collect()
    }

    #[test]
    fn stamps_move_onto_the_timeline_from_the_first_pcr() {
        let mut rw = Rewriter::new(90_000, HashMap::new(), true);
        let mut input = packet(0x101, 3, None, Some((500_000, None))); // before any PCR
        input.extend(packet(0x1fff, 0, None, None));
        // A keyframe before the tables (a source joined on a keyframe)...
        input.extend(packet(
            0x100,
            7,
            Some(400_000),
            Some((463_000, Some(460_000))),
        ));
        input.extend(tables());
        input.extend(packet(0x101, 4, None, Some((470_000, None))));
        let mut out = Vec::new();
        // Fed in odd pieces: packets may straddle reads.
        for c in input.chunks(100) {
            rw.feed(c, Duration::ZERO, &mut out);
        }
        let got = stamps_of(&out);
        assert_eq!(rw.nulls, 1);
        assert_eq!(
            got,
            vec![
                // ...goes out after them.
                (0, 0, None, None),
                (0x1000, 0, None, None),
                (0x101, 3, None, Some((190_000, false))),
                (0x100, 7, Some(90_000), Some((150_000, true))),
                (0x101, 4, None, Some((160_000, false))),
            ]
        );
        // The first session's counters are the source's; its output ends after its PTS.
        assert_eq!(rw.end(), 190_000 + FRAME);
        assert!(out
            .chunks_exact(PACKET)
            .all(|p| p[5] & 0x80 == 0 || pcr(p).is_none()));
    }

    #[test]
    fn a_second_session_continues_counters_and_time_and_flags_the_new_clock() {
        let mut first = Rewriter::new(90_000, HashMap::new(), true);
        let mut out = Vec::new();
        let mut input = tables();
        input.extend(packet(0x100, 9, Some(1_000), Some((1_000, None))));
        first.feed(&input, Duration::ZERO, &mut out);
        let end = first.end();
        let mut second = Rewriter::new(end, first.counters(), true);
        out.clear();
        let mut input = tables();
        input.extend(packet(0x100, 2, Some(7_777_777), Some((7_777_777, None))));
        input.extend(packet(0x100, 3, None, None));
        input.extend(packet(0x100, 5, None, None)); // the source lost one: still visible
        second.feed(&input, Duration::ZERO, &mut out);
        let got = stamps_of(&out);
        assert_eq!((got[0].0, got[0].1), (0, 1), "the PAT's counter runs on");
        assert_eq!(got[2].1, 10, "continues from 9");
        assert_eq!(got[2].2, Some(end));
        assert_eq!(got[3].1, 11);
        assert_eq!(got[4].1, 13, "the source's own gap is kept");
        assert_ne!(
            out[2 * PACKET + 5] & 0x80,
            0,
            "the new time base is flagged"
        );
    }

    #[test]
    fn wraps_and_jumps() {
        // The source's clock wraps at 2^33: output time runs on.
        let mut rw = Rewriter::new(90_000, HashMap::new(), true);
        let mut out = Vec::new();
        let near_wrap = WRAP - 9_000;
        let mut input = packet(0x100, 0, Some(near_wrap), Some((near_wrap, None)));
        input.extend(tables());
        rw.feed(&input, Duration::ZERO, &mut out);
        rw.feed(
            &packet(0x100, 1, Some(9_000), Some((12_000, None))),
            Duration::from_millis(200),
            &mut out,
        );
        assert_eq!(rw.jumps, 0);
        assert_eq!(rw.end(), 90_000 + 18_000 + 3_000 + FRAME);
        // A jump of an hour in 40 ms is hidden: output steps one frame.
        let before = rw.last_pcr.unwrap().0;
        out.clear();
        rw.feed(
            &packet(
                0x100,
                2,
                Some(9_000 + 3600 * 90_000),
                Some((3600 * 90_000, None)),
            ),
            Duration::from_millis(240),
            &mut out,
        );
        assert_eq!(rw.jumps, 1);
        assert_eq!(stamps_of(&out)[0].2, Some(before + FRAME));
        // A burst (media faster than the wall clock) is not a jump.
        out.clear();
        for k in 1..100 {
            let t = 9_000 + 3600 * 90_000 + k * 3_600;
            rw.feed(
                &packet(0x100, 3, Some(t), None),
                Duration::from_millis(240),
                &mut out,
            );
        }
        assert_eq!(rw.jumps, 1);
    }

    #[test]
    fn without_any_pcr_the_first_pes_anchors() {
        let mut rw = Rewriter::new(90_000, HashMap::new(), true);
        let mut out = Vec::new();
        let p = packet(0x101, 0, None, Some((5_000, None)));
        for _ in 0..HOLD_MAX / PACKET + 1 {
            rw.feed(&p, Duration::ZERO, &mut out);
        }
        assert!(!out.is_empty(), "held packets are released");
        assert_eq!(stamps_of(&out)[0].3, Some((90_000, false)));
    }

    #[test]
    fn lost_sync_is_skipped() {
        let mut rw = Rewriter::new(90_000, HashMap::new(), true);
        let mut input = vec![1, 2, 3];
        input.extend(packet(0x100, 0, Some(0), Some((0, None))));
        input.extend(tables());
        let mut out = Vec::new();
        rw.feed(&input, Duration::ZERO, &mut out);
        assert_eq!(rw.dropped, 3);
        assert_eq!(out.len(), 3 * PACKET);
    }

    /// A PES start (PTS 0) on `pid` with PES_packet_length `len` (0: unbounded).
    fn pes_start(pid: u16, cc: u8, len: u16, key: bool) -> Vec<u8> {
        let mut p = vec![SYNC, 0x40 | (pid >> 8) as u8 & 0x1f, pid as u8, 0x10 | cc];
        if key {
            p[3] = 0x30 | cc;
            p.extend([1, 0x40]);
        }
        p.extend([0, 0, 1, 0xe0, (len >> 8) as u8, len as u8, 0x80, 0x80, 5]);
        let mut t = [0x21, 0, 1, 0, 1];
        write_stamp(&mut t, 0);
        p.extend(t);
        p.resize(PACKET, 0xff);
        p
    }

    fn more(pid: u16, cc: u8) -> Vec<u8> {
        let mut p = vec![SYNC, (pid >> 8) as u8 & 0x1f, pid as u8, 0x10 | cc];
        p.resize(PACKET, 0xff);
        p
    }

    fn pids(out: &[u8]) -> Vec<(u16, u8)> {
        out.chunks_exact(PACKET)
            .map(|p| (pid(p), p[3] & 0x0f))
            .collect()
    }

    #[test]
    fn only_whole_pes_packets_go_out_once_the_first_keyframe_is_complete() {
        for fresh in [true, false] {
            let mut rw = Rewriter::new(90_000, HashMap::new(), fresh);
            let mut out = Vec::new();
            let mut input = more(0x100, 0); // the source joined mid-PES: dropped
            input.extend(packet(0x100, 1, Some(0), None)); // still no PES start: dropped
            input.extend(tables());
            input.extend(pes_start(0x100, 2, 0, true)); // the keyframe
            input.extend(more(0x100, 3));
            // audio: 6 + 300 bytes, two packets
            input.extend(pes_start(0x101, 0, 300, false));
            input.extend(more(0x101, 1));
            input.extend(more(0x100, 4));
            rw.feed(&input, Duration::ZERO, &mut out);
            // The PCR anchored the session though its packet went nowhere.
            assert!(rw.offset.is_some());
            let head = [(0, 0), (0x1000, 0), (0x100, 2), (0x100, 3)];
            if fresh {
                // A zap: the keyframe goes out as it arrives.
                assert_eq!(
                    pids(&out),
                    [&head[..], &[(0x101, 0), (0x101, 1), (0x100, 4)]].concat()
                );
            } else {
                // Clients kept across sessions: only the tables so far (the video PES is
                // still open).
                assert_eq!(pids(&out), head[..2].to_vec());
            }
            out.clear();
            // The next video PES: the first is complete.
            rw.feed(&pes_start(0x100, 5, 0, false), Duration::ZERO, &mut out);
            if fresh {
                assert_eq!(pids(&out), Vec::<(u16, u8)>::new(), "held from here on");
            } else {
                assert_eq!(
                    pids(&out),
                    [&head[2..], &[(0x101, 0), (0x101, 1), (0x100, 4)]].concat()
                );
            }
            out.clear();
            // An audio PES still open holds back what follows it, even complete video.
            let mut input = more(0x100, 6);
            input.extend(pes_start(0x101, 2, 300, false));
            input.extend(pes_start(0x100, 7, 0, false));
            rw.feed(&input, Duration::ZERO, &mut out);
            assert_eq!(pids(&out), [(0x100, 5), (0x100, 6)]);
            out.clear();
            rw.feed(&more(0x101, 3), Duration::ZERO, &mut out);
            assert_eq!(pids(&out), [(0x101, 2)]);
            // The session ends here: the open video PES (0x100 cc 7) and the audio after
            // it never go out, so no client gets a truncated frame.
        }
    }

    #[test]
    fn an_open_pes_is_not_waited_for_forever() {
        let mut rw = Rewriter::new(90_000, HashMap::new(), false);
        let mut out = Vec::new();
        let mut input = tables();
        input.extend(packet(0x100, 0, Some(0), Some((0, None))));
        input.extend(pes_start(0x101, 0, 10, false)); // audio, complete in its packet
        input.extend(pes_start(0x102, 0, 0, false)); // a sparse stream, unbounded PES
        rw.feed(&input, Duration::ZERO, &mut out);
        assert_eq!(pids(&out), [(0, 0), (0x1000, 0)]);
        rw.feed(
            &pes_start(0x100, 1, 0, false),
            Duration::from_millis(500),
            &mut out,
        );
        rw.feed(
            &pes_start(0x100, 2, 0, false),
            Duration::from_millis(600),
            &mut out,
        );
        // What came before the sparse PES went; complete video after it is held.
        assert_eq!(
            pids(&out)[2..],
            [(0x100, 0), (0x101, 0)],
            "the sparse PES holds the video back"
        );
        rw.feed(
            &more(0x100, 3),
            OPEN_MAX + Duration::from_millis(1),
            &mut out,
        );
        assert_eq!(pids(&out)[4..], [(0x102, 0), (0x100, 1)]);
    }

    #[test]
    fn a_continuing_session_anchors_on_its_earliest_audio_or_video_time() {
        // The source muxes 700 ms ahead of its PCR, audio 200 ms behind video: a session
        // kept by clients puts its earliest stream (audio) where the last one ended,
        // not its PCR, so no stream leaves a gap of the mux delay.
        let mut rw = Rewriter::new(500_000, HashMap::from([(0x100, 3)]), false);
        let mut out = Vec::new();
        let mut input = tables();
        input.extend(packet(0x100, 0, Some(1_000_000), Some((1_063_000, None))));
        input.extend(packet(0x101, 0, None, Some((1_045_000, None))));
        // The next PES of each: the first ones are complete.
        input.extend(packet(0x101, 1, None, Some((1_066_000, None))));
        input.extend(packet(0x100, 1, None, Some((1_066_600, None))));
        rw.feed(&input, Duration::ZERO, &mut out);
        let got = stamps_of(&out);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[2].2,
            Some(500_000 - 45_000),
            "the PCR goes before the start"
        );
        assert_eq!(got[2].3, Some((518_000, false)));
        assert_eq!(
            got[3].3,
            Some((500_000, false)),
            "the earliest stream starts on time"
        );
        // A fresh session anchors on its PCR instead (nobody is kept across it).
        let mut rw = Rewriter::new(500_000, HashMap::new(), true);
        out.clear();
        rw.feed(&input, Duration::ZERO, &mut out);
        assert_eq!(stamps_of(&out)[2].2, Some(500_000));
    }
}
