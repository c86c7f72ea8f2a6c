//! Broadcast subtitle streams for the tests: the ffmpeg CLI can decode DVB subtitles and
//! teletext but cannot make either from nothing (dvbsub encodes bitmaps only, and there is
//! no teletext encoder), so this writes them itself into an MPEG-TS the CLI made:
//!
//! - a DVB subtitle stream (EN 300 743): one display set per second, a 64x8 region in one
//!   opaque colour, coded as 2-bit/pixel run lengths;
//! - a teletext stream (EN 300 472 PES carrying EN 300 706 packets): page 888, a subtitle
//!   page whose row 20 says [`TELETEXT_TEXT`] in a boxed double-height line, once a second,
//!   each ended by a time-filling header.
//!
//! Both are added to the PMT with their descriptors (subtitling descriptor with language
//! and type; teletext descriptor with language, type "subtitle page", magazine and page),
//! and their PES are timed on the video's own PTS, so the result is what a DVB multiplex
//! carries. Pure code over the bytes.
#![allow(dead_code)]

use std::path::Path;

const TS: usize = 188;
pub const SUB_PID: u16 = 0x0102;
pub const TXT_PID: u16 = 0x0103;
/// The text of the teletext subtitle page.
pub const TELETEXT_TEXT: &str = "AMPS TELETEXT";

/// CRC-32/MPEG-2 of a PSI section.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= (b as u32) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn pid(p: &[u8]) -> u16 {
    (((p[1] & 0x1F) as u16) << 8) | p[2] as u16
}

/// The payload of a TS packet (after any adaptation field).
fn payload(p: &[u8]) -> &[u8] {
    match (p[3] >> 4) & 0x3 {
        1 => &p[4..],
        3 => {
            let n = p[4] as usize;
            if 5 + n >= TS {
                &[]
            } else {
                &p[5 + n..]
            }
        }
        _ => &[],
    }
}

fn pes_pts(pes: &[u8]) -> Option<u64> {
    if pes.len() < 14 || pes[0..3] != [0, 0, 1] || pes[7] & 0x80 == 0 {
        return None;
    }
    let b = &pes[9..14];
    Some(
        (((b[0] >> 1) & 0x07) as u64) << 30
            | (b[1] as u64) << 22
            | ((b[2] >> 1) as u64) << 15
            | (b[3] as u64) << 7
            | (b[4] >> 1) as u64,
    )
}

fn pts_bytes(pts: u64) -> [u8; 5] {
    [
        0x21 | (((pts >> 30) & 0x07) as u8) << 1,
        (pts >> 22) as u8,
        0x01 | ((pts >> 14) as u8 & 0xFE),
        (pts >> 7) as u8,
        0x01 | ((pts << 1) as u8 & 0xFE),
    ]
}

/// Splits one PES into TS packets on `pid` (stuffing the last one with an adaptation field).
fn packetize(pid: u16, pes: &[u8], cc: &mut u8, out: &mut Vec<u8>) {
    let mut first = true;
    for chunk in pes.chunks(184) {
        let mut p = vec![0x47, ((first as u8) << 6) | (pid >> 8) as u8, pid as u8];
        if chunk.len() == 184 {
            p.push(0x10 | *cc);
        } else {
            p.push(0x30 | *cc);
            let af = 183 - chunk.len();
            p.push(af as u8);
            if af > 0 {
                p.push(0x00);
                p.resize(p.len() + af - 1, 0xFF);
            }
        }
        p.extend_from_slice(chunk);
        debug_assert_eq!(p.len(), TS);
        out.extend_from_slice(&p);
        *cc = (*cc + 1) & 0x0F;
        first = false;
    }
}

/// A private_stream_1 PES with a PTS, its header padded to `header_len` bytes of
/// optional fields (teletext wants 0x24).
fn private_pes(pts: u64, header_len: usize, data: &[u8]) -> Vec<u8> {
    let mut pes = vec![0, 0, 1, 0xBD, 0, 0, 0x80, 0x80, header_len as u8];
    pes.extend_from_slice(&pts_bytes(pts));
    pes.resize(9 + header_len, 0xFF);
    pes.extend_from_slice(data);
    let len = pes.len() - 6;
    pes[4] = (len >> 8) as u8;
    pes[5] = len as u8;
    pes
}

/// One DVB subtitle segment.
fn segment(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut s = vec![
        0x0F,
        kind,
        0x00,
        0x01,
        (data.len() >> 8) as u8,
        data.len() as u8,
    ];
    s.extend_from_slice(data);
    s
}

/// One display set: page, region, CLUT, object (64x8, colour 1), end.
fn dvb_display_set(version: u8) -> Vec<u8> {
    let v = (version & 0x0F) << 4;
    // Page composition: time-out 3 s, mode change, region 0 at (100, 400).
    let page = segment(0x10, &[3, v | (2 << 2) | 0x03, 0, 0, 0, 100, 0x01, 0x90]);
    // Region composition: 64x8, 2-bit depth, CLUT 0, background 0, object 0 at (0, 0).
    let region = segment(
        0x11,
        &[
            0,
            v | 0x08 | 0x07,
            0,
            64,
            0,
            8,
            (1 << 5) | (1 << 2) | 0x03,
            0,
            0,
            0x03,
            0,
            0,
            0x00,
            0x00,
            0xF0,
            0x00,
        ],
    );
    // CLUT: full-range entries for 2-bit codes 0 (transparent) and 1 (opaque white).
    let clut = segment(
        0x12,
        &[
            0,
            v | 0x0F,
            0,
            0x9F,
            0x00,
            0x80,
            0x80,
            0xFF,
            1,
            0x9F,
            0xEB,
            0x80,
            0x80,
            0x00,
        ],
    );
    // Each line: 2-bit string "64 pixels of code 1" (00 0 0 11, run-29 = 35, 01), end of
    // string (000000) and two stuff bits, end of line.
    let line = [0x10, 0x0C, 0x8D, 0x00, 0xF0];
    let field: Vec<u8> = line.iter().cycle().take(line.len() * 4).copied().collect();
    let mut object = vec![0, 0, v | 0x01, 0, field.len() as u8, 0, field.len() as u8];
    object.extend_from_slice(&field);
    object.extend_from_slice(&field);
    let object = segment(0x13, &object);
    let end = segment(0x80, &[]);
    let mut data = vec![0x20, 0x00];
    for s in [page, region, clut, object, end] {
        data.extend_from_slice(&s);
    }
    data.push(0xFF);
    data
}

/// Hamming 8/4 code words (EN 300 706 8.2), in transmission bit order.
const HAM84: [u8; 16] = [
    0x15, 0x02, 0x49, 0x5E, 0x64, 0x73, 0x38, 0x2F, 0xD0, 0xC7, 0x8C, 0x9B, 0xA1, 0xB6, 0xFD, 0xEA,
];

/// A 7-bit character with odd parity.
fn odd(c: u8) -> u8 {
    let c = c & 0x7F;
    if c.count_ones() % 2 == 0 {
        c | 0x80
    } else {
        c
    }
}

/// One EBU teletext data unit (EN 300 472): magazine 8, packet `row` with 40 bytes. The
/// PES carries each byte with its bits reversed (the order they are sent on the line).
fn teletext_unit(row: u8, data: &[u8; 40]) -> Vec<u8> {
    let mut u = vec![0x03, 0x2C, 0xC0 | 0x20 | 0x15, 0xE4];
    let address = [HAM84[((row & 1) << 3) as usize], HAM84[(row >> 1) as usize]];
    u.extend(address.iter().chain(data.iter()).map(|b| b.reverse_bits()));
    u
}

fn teletext_page() -> Vec<u8> {
    // Packet 0: page 88 of magazine 8, subcode 0, C4 erase, C6 subtitle, C7 suppress
    // header; then 32 header characters.
    let mut header = [0u8; 40];
    let control = [8u8, 8, 0, 0x8, 0, 0x8, 0x1, 0];
    for (i, n) in control.iter().enumerate() {
        header[i] = HAM84[*n as usize];
    }
    for (i, c) in b"AMPS 888                        ".iter().enumerate() {
        header[8 + i] = odd(*c);
    }
    // Row 20: double height, start box twice, the text, end box twice.
    let mut row = [odd(b' '); 40];
    let mut line = vec![0x0D, 0x0B, 0x0B];
    line.extend_from_slice(TELETEXT_TEXT.as_bytes());
    line.extend_from_slice(&[0x0A, 0x0A]);
    for (i, c) in line.iter().enumerate() {
        row[2 + i] = odd(*c);
    }
    // A header of page FF (time filling) ends page 888: a decoder stores a page when the
    // next header of its magazine names another page (a repeat of 888 would continue it).
    let mut filler = [HAM84[0]; 40];
    filler[0] = HAM84[0xF];
    filler[1] = HAM84[0xF];
    for b in &mut filler[8..] {
        *b = odd(b' ');
    }
    let mut data = vec![0x10];
    data.extend(teletext_unit(0, &header));
    data.extend(teletext_unit(20, &row));
    data.extend(teletext_unit(0, &filler));
    // Stuffing data units to a whole number of TS packets (EN 300 472: N x 184 bytes).
    while (data.len() + 45) % 184 != 0 {
        data.extend_from_slice(&[0xFF, 0x2C]);
        data.extend_from_slice(&[0xFF; 44]);
    }
    data
}

/// The PMT in `section` with two more elementary streams: DVB subtitles (`sub_lang`,
/// subtitling type 0x20 "for the hard of hearing" if `hard_of_hearing`, else 0x10) and
/// teletext (`txt_lang`, subtitle page 888).
fn extend_pmt(section: &[u8], sub_lang: &str, hard_of_hearing: bool, txt_lang: &str) -> Vec<u8> {
    let len = (((section[1] & 0x0F) as usize) << 8) | section[2] as usize;
    let body = &section[..3 + len - 4];
    let mut s = body.to_vec();
    let sub_desc = {
        let mut d = vec![0x59, 8];
        d.extend_from_slice(sub_lang.as_bytes());
        d.extend_from_slice(&[if hard_of_hearing { 0x20 } else { 0x10 }, 0, 1, 0, 1]);
        d
    };
    let txt_desc = {
        let mut d = vec![0x56, 5];
        d.extend_from_slice(txt_lang.as_bytes());
        // Type 2 (subtitle page) in the top five bits, magazine 8 coded as 0; page 88.
        d.extend_from_slice(&[0x02 << 3, 0x88]);
        d
    };
    for (pid, desc) in [(SUB_PID, sub_desc), (TXT_PID, txt_desc)] {
        s.extend_from_slice(&[
            0x06,
            0xE0 | (pid >> 8) as u8,
            pid as u8,
            0xF0,
            desc.len() as u8,
        ]);
        s.extend_from_slice(&desc);
    }
    let new_len = s.len() - 3 + 4;
    s[1] = (s[1] & 0xF0) | ((new_len >> 8) as u8 & 0x0F);
    s[2] = new_len as u8;
    let crc = crc32(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

/// Writes `out`: the MPEG-TS `src` (made by the ffmpeg CLI: one program, PMT in one
/// packet, video on PID 0x100) with a DVB subtitle stream and a teletext stream added,
/// one subtitle and one teletext page per second of video. Returns how many of each.
pub fn add_subtitles(
    src: &Path,
    out: &Path,
    sub_lang: &str,
    hard_of_hearing: bool,
    txt_lang: &str,
) -> usize {
    add_subtitles_every(src, out, (sub_lang, hard_of_hearing, txt_lang), 1)
}

/// As [`add_subtitles`], one subtitle and one teletext page every `secs` seconds (a
/// programme without subtitles: the streams are in the PMT, their PES come seldom).
pub fn add_subtitles_every(
    src: &Path,
    out: &Path,
    (sub_lang, hard_of_hearing, txt_lang): (&str, bool, &str),
    secs: u64,
) -> usize {
    let data = std::fs::read(src).unwrap();
    assert_eq!(
        data.len() % TS,
        0,
        "{} is not whole TS packets",
        src.display()
    );
    let mut pmt_pid = None;
    let mut video_pid = None;
    let mut res = Vec::with_capacity(data.len() * 11 / 10);
    let (mut sub_cc, mut txt_cc, mut version) = (0u8, 0u8, 0u8);
    let mut next_pts: Option<u64> = None;
    let mut sets = 0;
    for p in data.chunks(TS) {
        let id = pid(p);
        let pl = payload(p);
        let pusi = p[1] & 0x40 != 0;
        if id == 0 && pusi {
            let sec = &pl[1 + pl[0] as usize..];
            // First program's PMT PID.
            pmt_pid = Some((((sec[10] & 0x1F) as u16) << 8) | sec[11] as u16);
        } else if Some(id) == pmt_pid && pusi {
            let sec = &pl[1 + pl[0] as usize..];
            let pcr = (((sec[8] & 0x1F) as u16) << 8) | sec[9] as u16;
            video_pid = Some(pcr);
            let new = extend_pmt(sec, sub_lang, hard_of_hearing, txt_lang);
            let mut q = p[..4].to_vec();
            q[3] = (q[3] & 0x0F) | 0x10;
            q.push(0);
            q.extend_from_slice(&new);
            assert!(q.len() <= TS, "the PMT does not fit one packet");
            q.resize(TS, 0xFF);
            res.extend_from_slice(&q);
            continue;
        } else if Some(id) == video_pid && pusi {
            if let Some(pts) = pes_pts(pl) {
                if next_pts.is_none_or(|n| pts >= n) {
                    let mut buf = Vec::new();
                    packetize(
                        SUB_PID,
                        &private_pes(pts, 5, &dvb_display_set(version)),
                        &mut sub_cc,
                        &mut buf,
                    );
                    packetize(
                        TXT_PID,
                        &private_pes(pts, 0x24, &teletext_page()),
                        &mut txt_cc,
                        &mut buf,
                    );
                    res.extend_from_slice(&buf);
                    version = version.wrapping_add(1);
                    sets += 1;
                    next_pts = Some(pts + 90_000 * secs);
                }
            }
        }
        res.extend_from_slice(p);
    }
    assert!(sets > 0, "no video PES with a PTS in {}", src.display());
    std::fs::write(out, res).unwrap();
    sets
}
