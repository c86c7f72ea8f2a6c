//! MPEG-TS inspection, just enough for fan-out: packet alignment, the latest PAT and PMT,
//! and where video keyframes start. Pure code, no I/O.
//!
//! Both producers (the in-process muxer and a `custom_ffmpeg` child's stdout) go through
//! [`Inspector`], so late joiners of either kind start on PAT + PMT + a keyframe.

use bytes::{Bytes, BytesMut};

pub const PACKET: usize = 188;
const SYNC: u8 = 0x47;
/// The DVB service description table's PID.
const SDT_PID: u16 = 0x11;

/// Stream types (ISO 13818-1 table 2-34 and registrations) that carry video.
pub const VIDEO_TYPES: &[u8] = &[0x01, 0x02, 0x10, 0x1B, 0x24, 0x42, 0xD1, 0xEA];

/// How many bytes from `i` (not a sync byte) to the next plausible packet start in `buf`
/// (all the rest when there is none).
pub fn resync(buf: &[u8], i: usize) -> usize {
    buf[i + 1..]
        .iter()
        .position(|&b| b == SYNC)
        .map_or(buf.len() - i, |n| n + 1)
}

fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2])
}

fn unit_start(p: &[u8]) -> bool {
    p[1] & 0x40 != 0
}

fn random_access(p: &[u8]) -> bool {
    let afc = (p[3] >> 4) & 3;
    (afc == 2 || afc == 3) && p[4] > 0 && p[5] & 0x40 != 0
}

fn payload(p: &[u8]) -> Option<&[u8]> {
    let afc = (p[3] >> 4) & 3;
    if afc & 1 == 0 {
        return None;
    }
    let start = if afc == 3 { 5 + usize::from(p[4]) } else { 4 };
    p.get(start..)
}

/// The section of a PSI packet that starts in it: (table_id, section bytes after the
/// 3-byte header, bounded by section_length minus CRC).
fn section(p: &[u8]) -> Option<(u8, &[u8])> {
    if !unit_start(p) {
        return None;
    }
    let pl = payload(p)?;
    let pointer = usize::from(*pl.first()?);
    let t = pl.get(1 + pointer..)?;
    if t.len() < 3 {
        return None;
    }
    let len = (usize::from(t[1] & 0x0f) << 8) | usize::from(t[2]);
    let body = t.get(3..(3 + len).checked_sub(4)?)?;
    Some((t[0], body))
}

/// The PTS (90 kHz, 33 bits) of the PES that starts in packet `p`, if it carries one.
fn pes_pts(p: &[u8]) -> Option<u64> {
    let pl = payload(p)?;
    if pl.len() < 14 || pl[..3] != [0, 0, 1] || pl[7] & 0x80 == 0 {
        return None;
    }
    Some(timestamp(&pl[9..14]))
}

/// The decode timestamp of the PES that starts in packet `p`: its DTS, or its PTS where
/// it has none (they are equal then).
fn pes_dts(p: &[u8]) -> Option<u64> {
    let pl = payload(p)?;
    if pl.len() >= 19 && pl[..3] == [0, 0, 1] && pl[7] & 0xc0 == 0xc0 {
        return Some(timestamp(&pl[14..19]));
    }
    pes_pts(p)
}

/// A PES header's 33-bit timestamp field (5 bytes).
fn timestamp(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1) & 0x07) << 30
        | u64::from(b[1]) << 22
        | u64::from(b[2] >> 1) << 15
        | u64::from(b[3]) << 7
        | u64::from(b[4] >> 1)
}

/// Whether the video PES that starts in packet `p` (stream type `st`) begins a random
/// access point, judged from the bitstream in this packet: H.264 an IDR slice, or an SPS
/// with no non-IDR slice after it; HEVC an IRAP picture, or a VPS/SPS with no other
/// picture after it; MPEG-2 a sequence header. Anything undecided is not a keyframe.
fn starts_random_access(st: u8, p: &[u8]) -> bool {
    let Some(pl) = payload(p) else {
        return false;
    };
    if pl.len() < 9 || pl[..3] != [0, 0, 1] {
        return false;
    }
    let Some(es) = pl.get(9 + usize::from(pl[8])..) else {
        return false;
    };
    let mut sets = false;
    let mut i = 0;
    while i + 3 < es.len() {
        if es[i..i + 3] != [0, 0, 1] {
            i += 1;
            continue;
        }
        let code = es[i + 3];
        match st {
            0x1B => match code & 0x1f {
                5 => return true,
                1 => return false,
                7 => sets = true,
                _ => {}
            },
            0x24 => match (code >> 1) & 0x3f {
                16..=21 => return true,
                0..=9 => return false,
                32 | 33 => sets = true,
                _ => {}
            },
            0x01 | 0x02 => match code {
                0xB3 => return true,
                0x00 => return false,
                _ => {}
            },
            _ => return false,
        }
        i += 3;
    }
    sets
}

/// One elementary stream of a PMT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsInfo {
    pub pid: u16,
    pub stream_type: u8,
    /// Its ES-info descriptors, raw.
    pub descriptors: Vec<u8>,
}

impl EsInfo {
    fn descriptor(&self, tag: u8) -> Option<&[u8]> {
        let mut d = self.descriptors.as_slice();
        while d.len() >= 2 {
            let len = usize::from(d[1]);
            let body = d.get(2..2 + len)?;
            if d[0] == tag {
                return Some(body);
            }
            d = &d[2 + len..];
        }
        None
    }

    /// The codec, as libav names it, from the stream type and (for DVB's private data)
    /// the descriptors.
    pub fn codec(&self) -> &'static str {
        match self.stream_type {
            0x01 => "mpeg1video",
            0x02 => "mpeg2video",
            0x03 => "mp2",
            0x04 => "mp3",
            0x0f => "aac",
            0x10 => "mpeg4",
            0x11 => "aac_latm",
            0x15 => "timed_id3",
            0x1b => "h264",
            0x24 => "hevc",
            0x81 => "ac3",
            0x86 => "scte_35",
            0x87 => "eac3",
            0x06 if self.descriptor(0x6a).is_some() => "ac3",
            0x06 if self.descriptor(0x7a).is_some() => "eac3",
            0x06 if self.descriptor(0x56).is_some() => "dvb_teletext",
            0x06 if self.descriptor(0x59).is_some() => "dvb_subtitle",
            0x06 => "private data",
            _ => "unknown",
        }
    }

    /// The ISO 639 language descriptor's (first) language, or the subtitling or
    /// teletext descriptor's.
    pub fn language(&self) -> Option<String> {
        let code = [0x0a, 0x59, 0x56]
            .iter()
            .find_map(|t| self.descriptor(*t).filter(|b| b.len() >= 3))?;
        let l = String::from_utf8_lossy(&code[..3]).trim().to_owned();
        (!l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric())).then_some(l)
    }

    /// The dispositions the descriptors carry, named as libav names them: the ISO 639
    /// audio type (clean effects, hearing or visual impaired), a DVB subtitling type or a
    /// teletext page type for the hard of hearing.
    pub fn dispositions(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if let Some(b) = self.descriptor(0x0a).filter(|b| b.len() >= 4) {
            match b[3] {
                1 => out.push("clean_effects"),
                2 => out.push("hearing_impaired"),
                3 => out.push("visual_impaired"),
                _ => {}
            }
        }
        let hard_of_hearing = self
            .descriptor(0x59)
            .filter(|b| b.len() >= 4)
            .is_some_and(|b| (0x20..=0x25).contains(&b[3]))
            || self
                .descriptor(0x56)
                .filter(|b| b.len() >= 4)
                .is_some_and(|b| b[3] >> 3 == 0x05);
        if hard_of_hearing {
            out.push("hearing_impaired");
        }
        out
    }
}

/// Whether the video PES starting in packet `p` (stream type `st`) is a keyframe: its
/// random-access flag, or its bitstream.
pub fn random_access_start(st: u8, p: &[u8]) -> bool {
    unit_start(p) && (random_access(p) || starts_random_access(st, p))
}

/// Tracks PSI and keyframes across a stream of TS bytes.
#[derive(Debug, Default)]
pub struct Inspector {
    rest: BytesMut,
    pmt_pid: Option<u16>,
    video_pids: Vec<u16>,
    /// The PMT's elementary streams, in PMT order.
    streams: Vec<EsInfo>,
    /// Also take a video PES whose first packet starts a random access point in its
    /// bitstream (an IDR, or parameter sets before an intra picture) as a keyframe when
    /// the packet lacks the random-access flag: upstream muxers do not all set it. Our
    /// own muxer and the ffmpeg CLI always do.
    content_keys: bool,
    pat: Option<Bytes>,
    pmt: Option<Bytes>,
    /// Table packets seen before this output's first keyframe piece (see
    /// [`Inspector::renumber_table`]).
    early_tables: u32,
    seen_key: bool,
    /// The continuity counters of the tables (PAT, PMT, SDT) as last written, carried
    /// from one muxer to the next (see [`Inspector::continue_tables`]).
    table_cc: std::collections::HashMap<u16, u8>,
    /// Bytes dropped while looking for packet sync (garbage from a broken source).
    pub dropped: u64,
    /// Packets seen on the program's video PIDs.
    pub video_packets: u64,
}

/// A piece of aligned TS output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub data: Bytes,
    /// The piece starts with the first packet of a video keyframe (or of any random
    /// access point when the program has no video).
    pub key: bool,
    /// For a keyframe piece: the keyframe's PTS (90 kHz), when its PES header has one.
    pub pts: Option<u64>,
    /// For a keyframe piece: the PAT + PMT as they stood just before it. A reader that
    /// starts here gets these first, so their continuity counters run on into the ones
    /// that follow in the stream.
    pub header: Option<Bytes>,
    /// The first video frame that starts in this piece (a keyframe piece: its own): its
    /// offset in `data` and its decode timestamp (90 kHz). A reader that cuts the output
    /// finer than keyframes (HLS partial segments) cuts there: every PES before it is
    /// complete.
    pub frame: Option<Frame>,
}

/// Where a video frame starts in a piece (see [`Piece::frame`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub offset: usize,
    pub dts: Option<u64>,
}

/// The piece [`Inspector::feed`] is building.
#[derive(Default)]
struct Open {
    start: usize,
    key: bool,
    pts: Option<u64>,
    header: Option<Bytes>,
    frame: Option<Frame>,
}

impl Open {
    fn at(start: usize) -> Open {
        Open {
            start,
            ..Open::default()
        }
    }

    fn piece(&mut self, data: &[u8]) -> Piece {
        Piece {
            data: Bytes::copy_from_slice(data),
            key: self.key,
            pts: self.pts.filter(|_| self.key),
            header: self.header.take().filter(|_| self.key),
            frame: self.frame.take(),
        }
    }
}

impl Inspector {
    /// An inspector whose table counters continue from `cc` (a previous muxer's).
    /// `fresh`: the output starts anew (every reader starts at a keyframe with the tables
    /// as they stand there), so tables before the first keyframe reach nobody; otherwise
    /// readers go straight on into this output and get every table.
    pub fn continue_tables(cc: std::collections::HashMap<u16, u8>, fresh: bool) -> Inspector {
        Inspector {
            table_cc: cc,
            seen_key: !fresh,
            ..Inspector::default()
        }
    }

    /// The tables' continuity counters as last written.
    pub fn table_counters(&self) -> std::collections::HashMap<u16, u8> {
        self.table_cc.clone()
    }

    /// Renumbers a table packet (PAT, PMT, SDT: each section repeats whole, so the
    /// numbers carry no data) to continue from the last one, also across muxers: a new
    /// session's muxer starts them at 0, which a client kept across it would see as lost
    /// packets.
    fn renumber_table(&mut self, p: &mut [u8]) {
        let pid = pid(p);
        if p[3] & 0x10 == 0 {
            return; // no payload: the counter does not advance
        }
        let cc = self.next_cc(p);
        p[3] = (p[3] & 0xf0) | cc;
        self.table_cc.insert(pid, cc);
    }

    /// The counter a table packet gets next.
    fn next_cc(&self, p: &[u8]) -> u8 {
        self.table_cc
            .get(&pid(p))
            .map_or(p[3] & 0x0f, |c| (c + 1) & 0x0f)
    }

    /// A table packet a new muxer writes before its first keyframe reaches nobody (every
    /// reader starts at a keyframe, with the tables as they stand there): it becomes a
    /// null packet and does not count. PAT and PMT are kept for that header, numbered as
    /// the next to go out, so a reader kept across a restart sees the counters run on.
    fn early_table(&mut self, p: &mut [u8], is_psi: bool) {
        if is_psi {
            let mut copy = p.to_vec();
            let cc = self.next_cc(&copy);
            copy[3] = (copy[3] & 0xf0) | cc;
            self.learn(&copy);
        }
        p[1] = 0x1f;
        p[2] = 0xff;
        p[3] = 0x10;
        p[4..].fill(0xff);
    }

    /// The first keyframe of this output: the tables in its header are the first to go
    /// out, so the counters go on from theirs.
    fn commit_header(&mut self) {
        for t in [&self.pat, &self.pmt].into_iter().flatten() {
            self.table_cc.insert(pid(t), t[3] & 0x0f);
        }
    }

    /// PAT followed by PMT, once both have been seen: what a joining client needs first.
    pub fn header(&self) -> Option<Bytes> {
        let (pat, pmt) = (self.pat.as_ref()?, self.pmt.as_ref()?);
        let mut h = BytesMut::with_capacity(2 * PACKET);
        h.extend_from_slice(pat);
        h.extend_from_slice(pmt);
        Some(h.freeze())
    }

    /// The program has a video stream (its PMT has been seen and lists one).
    pub fn has_video(&self) -> bool {
        !self.video_pids.is_empty()
    }

    /// Keyframes are also recognised by their bitstream (see `content_keys`).
    pub fn with_content_keys(mut self) -> Inspector {
        self.content_keys = true;
        self
    }

    /// The elementary streams of the latest PMT.
    pub fn streams(&self) -> &[EsInfo] {
        &self.streams
    }

    fn is_key(&self, p: &[u8]) -> bool {
        if !unit_start(p) {
            return false;
        }
        let pid = pid(p);
        if self.video_pids.is_empty() {
            return random_access(p) && Some(pid) != self.pmt_pid && pid != 0;
        }
        if !self.video_pids.contains(&pid) {
            return false;
        }
        random_access(p)
            || (self.content_keys
                && self
                    .streams
                    .iter()
                    .find(|s| s.pid == pid)
                    .is_some_and(|s| starts_random_access(s.stream_type, p)))
    }

    fn learn(&mut self, p: &[u8]) {
        let pid = pid(p);
        if pid == 0 {
            if let Some((0x00, body)) = section(p) {
                // program loop starts after transport_stream_id, version, section numbers
                let programs = body.get(5..).unwrap_or(&[]);
                for e in programs.chunks_exact(4) {
                    let program = u16::from_be_bytes([e[0], e[1]]);
                    if program != 0 {
                        self.pmt_pid = Some((u16::from(e[2] & 0x1f) << 8) | u16::from(e[3]));
                        break;
                    }
                }
                self.pat = Some(Bytes::copy_from_slice(p));
            }
        } else if Some(pid) == self.pmt_pid {
            if let Some((0x02, body)) = section(p) {
                let info_len = body
                    .get(7..9)
                    .map(|b| (usize::from(b[0] & 0x0f) << 8) | usize::from(b[1]))
                    .unwrap_or(0);
                let mut es = body.get(9 + info_len..).unwrap_or(&[]);
                self.video_pids.clear();
                self.streams.clear();
                while es.len() >= 5 {
                    let es_pid = (u16::from(es[1] & 0x1f) << 8) | u16::from(es[2]);
                    if VIDEO_TYPES.contains(&es[0]) {
                        self.video_pids.push(es_pid);
                    }
                    let info_len = (usize::from(es[3] & 0x0f) << 8) | usize::from(es[4]);
                    self.streams.push(EsInfo {
                        pid: es_pid,
                        stream_type: es[0],
                        descriptors: es.get(5..5 + info_len).unwrap_or(&[]).to_vec(),
                    });
                    let skip = 5 + info_len;
                    es = es.get(skip..).unwrap_or(&[]);
                }
                self.pmt = Some(Bytes::copy_from_slice(p));
            }
        }
    }

    /// Feeds bytes in; returns aligned pieces, split so that every keyframe starts a piece.
    /// Partial packets are kept for the next call; bytes out of sync are skipped.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Piece> {
        self.rest.extend_from_slice(data);
        let mut pieces = Vec::new();
        let mut cur = Open::default(); // the current piece, from `cur.start` in `rest`
        let mut i = 0;
        while i + PACKET <= self.rest.len() {
            if self.rest[i] != SYNC {
                // Lost sync: cut what we have, skip to the next plausible packet start.
                if i > cur.start {
                    pieces.push(cur.piece(&self.rest[cur.start..i]));
                }
                let skip = resync(&self.rest, i);
                self.dropped += skip as u64;
                i += skip;
                cur = Open::at(i);
                continue;
            }
            let p = &self.rest[i..i + PACKET];
            let video = self.video_pids.contains(&pid(p));
            if video {
                self.video_packets += 1;
            }
            let (is_key, is_psi) = (self.is_key(p), pid(p) == 0 || Some(pid(p)) == self.pmt_pid);
            let key_pts = if is_key { pes_pts(p) } else { None };
            // Where a frame starts: a video PES, or (no video) a random access point.
            let frame_dts = (is_key || (video && unit_start(p))).then(|| pes_dts(p));
            if is_psi || pid(p) == SDT_PID {
                let mut copy = p.to_vec();
                if !self.seen_key && self.early_tables < 8 {
                    self.early_tables += 1;
                    self.early_table(&mut copy, is_psi);
                } else {
                    self.renumber_table(&mut copy);
                    if is_psi {
                        self.learn(&copy);
                    }
                }
                self.rest[i..i + PACKET].copy_from_slice(&copy);
            }
            if is_key && !self.seen_key {
                self.seen_key = true;
                self.commit_header();
            }
            if is_key && i > cur.start {
                pieces.push(cur.piece(&self.rest[cur.start..i]));
                cur = Open::at(i);
            }
            if is_key {
                cur.key = i == cur.start;
                cur.pts = key_pts;
                cur.header = self.header();
            }
            if let (Some(dts), None) = (frame_dts, cur.frame) {
                cur.frame = Some(Frame {
                    offset: i - cur.start,
                    dts,
                });
            }
            i += PACKET;
        }
        if i > cur.start {
            pieces.push(cur.piece(&self.rest[cur.start..i]));
        }
        let _ = self.rest.split_to(i.min(self.rest.len()));
        pieces
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn stream_labels_come_from_the_pmt_descriptors() {
        let es = |stream_type: u8, descriptors: &[u8]| EsInfo {
            pid: 0x100,
            stream_type,
            descriptors: descriptors.to_vec(),
        };
        let aac = es(0x0f, &[0x0a, 4, b'd', b'e', b'u', 2]);
        assert_eq!(
            (aac.codec(), aac.language().as_deref()),
            ("aac", Some("deu"))
        );
        assert_eq!(aac.dispositions(), ["hearing_impaired"]);
        let ac3 = es(0x06, &[0x6a, 1, 0, 0x0a, 4, b'e', b'n', b'g', 3]);
        assert_eq!(
            (ac3.codec(), ac3.dispositions()),
            ("ac3", vec!["visual_impaired"])
        );
        let sub = es(0x06, &[0x59, 8, b'd', b'e', b'u', 0x20, 0, 1, 0, 1]);
        assert_eq!(sub.codec(), "dvb_subtitle");
        assert_eq!(sub.dispositions(), ["hearing_impaired"]);
        let ttx = es(0x06, &[0x56, 5, b'e', b'n', b'g', (0x05 << 3) | 0x01, 0x88]);
        assert_eq!(
            (ttx.codec(), ttx.dispositions()),
            ("dvb_teletext", vec!["hearing_impaired"])
        );
        assert!(es(0x0f, &[0x0a, 4, b'e', b'n', b'g', 0])
            .dispositions()
            .is_empty());
    }

    /// A TS packet with the given PID, flags and payload (padded with 0xff).
    pub fn packet(pid: u16, pusi: bool, rai: bool, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            SYNC,
            ((pid >> 8) as u8 & 0x1f) | if pusi { 0x40 } else { 0 },
            pid as u8,
        ];
        if rai {
            p.push(0x30);
            p.push(1);
            p.push(0x40);
        } else {
            p.push(0x10);
        }
        p.extend_from_slice(payload);
        p.resize(PACKET, 0xff);
        p
    }

    /// PAT pointing at PMT PID 0x1000, and a PMT with H.264 on 0x100 and AAC on 0x101.
    pub fn psi() -> (Vec<u8>, Vec<u8>) {
        let pat_section = [
            0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00, 0, 0, 0, 0,
        ];
        let mut pat = vec![0];
        pat.extend_from_slice(&pat_section);
        let pmt_section = [
            0x02, 0xb0, 0x17, 0x00, 0x01, 0xc1, 0x00, 0x00, 0xe1, 0x00, 0xf0, 0x00, 0x1b, 0xe1,
            0x00, 0xf0, 0x00, 0x0f, 0xe1, 0x01, 0xf0, 0x00, 0, 0, 0, 0,
        ];
        let mut pmt = vec![0];
        pmt.extend_from_slice(&pmt_section);
        (
            packet(0, true, false, &pat),
            packet(0x1000, true, false, &pmt),
        )
    }

    /// A video PES start (PTS 0) whose elementary stream begins with `es`.
    fn pes(es: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 1, 0xe0, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1];
        v.extend_from_slice(es);
        v
    }

    #[test]
    fn keyframes_without_the_flag_are_found_in_the_bitstream_when_asked() {
        let (pat, pmt) = psi();
        let aud = [0, 0, 0, 1, 0x09, 0xf0];
        let sps_pps = [0, 0, 0, 1, 0x67, 0x64, 0, 0x28, 0, 0, 0, 1, 0x68, 0xee];
        let mut idr = aud.to_vec();
        idr.extend(sps_pps);
        idr.extend([0, 0, 1, 0x65, 0x88]);
        // Parameter sets repeated before every picture: a P picture is not a keyframe.
        let mut p_with_sps = aud.to_vec();
        p_with_sps.extend(sps_pps);
        p_with_sps.extend([0, 0, 1, 0x41, 0x9a]);
        // A long SEI before the IDR: the SPS alone decides.
        let mut sps_then_sei = aud.to_vec();
        sps_then_sei.extend(sps_pps);
        sps_then_sei.extend([0, 0, 1, 0x06, 5]);
        let frames = [
            (idr, true),
            (p_with_sps, false),
            (aud.iter().chain(&[0, 0, 1, 0x41]).copied().collect(), false),
            (sps_then_sei, true),
        ];
        for content in [false, true] {
            let mut ins = Inspector::default();
            if content {
                ins = ins.with_content_keys();
            }
            let mut data = [pat.clone(), pmt.clone()].concat();
            for (es, _) in &frames {
                data.extend(packet(0x100, true, false, &pes(es)));
                data.extend(packet(0x100, false, false, b"rest"));
            }
            let keys: Vec<bool> = ins.feed(&data).iter().map(|p| p.key).collect();
            let want: Vec<bool> = if content {
                // the first piece (tables) is not a key; one piece per keyframe after it
                std::iter::once(false)
                    .chain(frames.iter().filter(|f| f.1).map(|_| true))
                    .collect()
            } else {
                vec![false]
            };
            assert_eq!(keys, want, "content keys: {content}");
        }
        // MPEG-2: a sequence header starts a keyframe; a picture header alone does not.
        let mpeg2 = |es: &[u8]| {
            let mut p = packet(0x100, true, false, &pes(es));
            p[3] = 0x10;
            p
        };
        assert!(starts_random_access(0x02, &mpeg2(&[0, 0, 1, 0xb3, 0x2d])));
        assert!(!starts_random_access(
            0x02,
            &mpeg2(&[0, 0, 1, 0x00, 0x00, 0x0f])
        ));
        // HEVC: an IDR_W_RADL (19) after VPS/SPS/PPS is; a TRAIL_R (1) is not.
        assert!(starts_random_access(
            0x24,
            &mpeg2(&[0, 0, 1, 0x40, 1, 0, 0, 1, 0x26, 1])
        ));
        assert!(!starts_random_access(0x24, &mpeg2(&[0, 0, 1, 0x02, 1])));
    }

    #[test]
    fn learns_psi_and_splits_at_video_keyframes_only() {
        let (pat, pmt) = psi();
        let mut ins = Inspector::default();
        let mut data = Vec::new();
        data.extend(&pat);
        data.extend(&pmt);
        data.extend(packet(0x101, true, true, b"audio")); // audio RAI: not a video keyframe
        data.extend(packet(0x100, true, true, b"key"));
        data.extend(packet(0x100, false, false, b"more"));
        data.extend(packet(0x100, true, false, b"delta"));
        data.extend(packet(0x100, true, true, b"key2"));
        let pieces = ins.feed(&data);
        assert_eq!(pieces.len(), 3);
        assert_eq!((pieces[0].key, pieces[0].data.len()), (false, 3 * PACKET));
        assert_eq!((pieces[1].key, pieces[1].data.len()), (true, 3 * PACKET));
        assert_eq!((pieces[2].key, pieces[2].data.len()), (true, PACKET));
        let h = ins.header().unwrap();
        assert_eq!(&h[..PACKET], &pat[..]);
        assert_eq!(&h[PACKET..], &pmt[..]);
    }

    /// A PES header (video stream id) carrying `pts`, marker bits set as muxers do.
    fn pes_with_pts(pts: u64) -> Vec<u8> {
        vec![
            0,
            0,
            1,
            0xe0,
            0,
            0,
            0x80,
            0x80,
            5,
            0x21 | (((pts >> 30) as u8 & 0x07) << 1),
            (pts >> 22) as u8,
            0x01 | ((pts >> 14) as u8 & 0xfe),
            (pts >> 7) as u8,
            0x01 | ((pts << 1) as u8 & 0xfe),
        ]
    }

    #[test]
    fn keyframe_pieces_carry_their_pts() {
        let (pat, pmt) = psi();
        let mut ins = Inspector::default();
        let big = (1u64 << 33) - 12_345; // near the 33-bit wrap: every bit is used
        let mut data = [pat, pmt].concat();
        data.extend(packet(0x100, true, true, &pes_with_pts(big)));
        data.extend(packet(0x100, false, false, b"more"));
        data.extend(packet(0x100, true, true, &pes_with_pts(900_000)));
        data.extend(packet(0x100, true, true, b"no PES header"));
        let pieces = ins.feed(&data);
        let pts: Vec<Option<u64>> = pieces.iter().map(|p| p.pts).collect();
        assert_eq!(pts, vec![None, Some(big), Some(900_000), None]);
        assert!(pieces[1..].iter().all(|p| p.key));
    }

    #[test]
    fn keeps_partial_packets_and_resyncs_after_garbage() {
        let (pat, pmt) = psi();
        let mut ins = Inspector::default();
        let mut data = Vec::new();
        data.extend(&pat);
        data.extend(&pmt);
        data.extend(packet(0x100, true, true, b"key"));
        let (a, b) = data.split_at(200);
        assert_eq!(
            ins.feed(a).iter().map(|p| p.data.len()).sum::<usize>(),
            PACKET
        );
        let pieces = ins.feed(b);
        assert_eq!(
            pieces.iter().map(|p| p.data.len()).sum::<usize>(),
            2 * PACKET
        );
        assert!(pieces.last().unwrap().key);
        let mut junk = b"garbage!".to_vec();
        junk.extend(packet(0x100, true, true, b"k"));
        let pieces = ins.feed(&junk);
        assert_eq!(ins.dropped, 8);
        assert_eq!(
            pieces,
            vec![Piece {
                data: Bytes::from(packet(0x100, true, true, b"k")),
                key: true,
                pts: None,
                header: ins.header(),
                frame: Some(Frame {
                    offset: 0,
                    dts: None
                }),
            }]
        );
    }
}
