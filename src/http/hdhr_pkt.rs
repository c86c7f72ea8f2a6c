//! libhdhomerun's packet format (`hdhomerun_pkt.c`), for discovery on UDP 65001 and the
//! control protocol on TCP 65001. Pure: bytes in, bytes out.
//!
//! A packet is a big-endian u16 type, a big-endian u16 payload length, the payload (TLVs:
//! a tag byte, a length of one byte, or two when over 127: the low 7 bits | 0x80 then the
//! rest, and the value), then the CRC32 (zlib's) of all that, little-endian. Integers in
//! values are big-endian; strings of the control protocol end with a NUL that their length
//! counts.

pub const TYPE_DISCOVER_REQ: u16 = 0x0002;
pub const TYPE_DISCOVER_RPY: u16 = 0x0003;
pub const TYPE_GETSET_REQ: u16 = 0x0004;
pub const TYPE_GETSET_RPY: u16 = 0x0005;

pub const TAG_DEVICE_TYPE: u8 = 0x01;
pub const TAG_DEVICE_ID: u8 = 0x02;
pub const TAG_GETSET_NAME: u8 = 0x03;
pub const TAG_GETSET_VALUE: u8 = 0x04;
pub const TAG_ERROR_MESSAGE: u8 = 0x05;
pub const TAG_TUNER_COUNT: u8 = 0x10;
pub const TAG_LINEUP_URL: u8 = 0x27;
pub const TAG_BASE_URL: u8 = 0x2A;

pub const DEVICE_TYPE_TUNER: u32 = 0x0000_0001;
pub const WILDCARD: u32 = 0xFFFF_FFFF;

/// The largest packet either side sends (libhdhomerun's buffers are 3074 bytes).
pub const MAX_PACKET: usize = 3074;

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    c.sum()
}

/// A packet of `kind` carrying `tlvs`.
pub fn encode(kind: u16, tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (tag, value) in tlvs {
        payload.push(*tag);
        let n = value.len().min(0x3FFF);
        if n > 127 {
            payload.push((n & 0x7F) as u8 | 0x80);
            payload.push((n >> 7) as u8);
        } else {
            payload.push(n as u8);
        }
        payload.extend_from_slice(&value[..n]);
    }
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A decoded packet: its type and TLVs.
#[derive(Debug, PartialEq, Eq)]
pub struct Packet {
    pub kind: u16,
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

impl Packet {
    pub fn get(&self, tag: u8) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| v.as_slice())
    }

    pub fn u32(&self, tag: u8) -> Option<u32> {
        let v = self.get(tag)?;
        Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
    }

    /// A NUL-terminated (or plain) string value.
    pub fn string(&self, tag: u8) -> Option<String> {
        let v = self.get(tag)?;
        let v = v.strip_suffix(&[0]).unwrap_or(v);
        std::str::from_utf8(v).ok().map(str::to_owned)
    }
}

/// How many bytes a whole packet at the start of `buf` takes, once its header is there.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let len = u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize;
    Some(4 + len + 4)
}

/// Decodes one whole packet: header, TLVs, a CRC that matches. `None` for anything else.
pub fn decode(buf: &[u8]) -> Option<Packet> {
    let total = frame_len(buf)?;
    if buf.len() != total {
        return None;
    }
    let (body, crc) = buf.split_at(total - 4);
    if crc32(body).to_le_bytes() != crc {
        return None;
    }
    let kind = u16::from_be_bytes([body[0], body[1]]);
    let mut p = &body[4..];
    let mut tlvs = Vec::new();
    while !p.is_empty() {
        let tag = p[0];
        let (n, head) = match *p.get(1)? {
            b if b & 0x80 != 0 => ((b & 0x7F) as usize | (*p.get(2)? as usize) << 7, 3),
            b => (b as usize, 2),
        };
        let value = p.get(head..head + n)?;
        tlvs.push((tag, value.to_vec()));
        p = &p[head + n..];
    }
    Some(Packet { kind, tlvs })
}

/// A NUL-terminated string value.
pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discover_request_as_libhdhomerun_sends_it() {
        // hdhomerun_discover's request: device type and id, both wildcards.
        let req = encode(
            TYPE_DISCOVER_REQ,
            &[
                (TAG_DEVICE_TYPE, WILDCARD.to_be_bytes().to_vec()),
                (TAG_DEVICE_ID, WILDCARD.to_be_bytes().to_vec()),
            ],
        );
        assert_eq!(&req[..4], &[0x00, 0x02, 0x00, 0x0c]);
        assert_eq!(req.len(), 4 + 12 + 4);
        let p = decode(&req).unwrap();
        assert_eq!(p.kind, TYPE_DISCOVER_REQ);
        assert_eq!(p.u32(TAG_DEVICE_ID), Some(WILDCARD));
        // One flipped bit: the CRC refuses it.
        let mut bad = req.clone();
        bad[6] ^= 1;
        assert!(decode(&bad).is_none());
        assert!(decode(&req[..10]).is_none());
    }

    #[test]
    fn long_values_take_two_length_bytes() {
        let url = "http://192.168.1.10:5000/hdhr/".to_owned() + &"t".repeat(200);
        let pkt = encode(
            TYPE_DISCOVER_RPY,
            &[(TAG_BASE_URL, url.clone().into_bytes())],
        );
        // 230 = 0x66 | 0x80, then 1.
        assert_eq!(&pkt[4..7], &[TAG_BASE_URL, 0xE6, 0x01]);
        assert_eq!(decode(&pkt).unwrap().string(TAG_BASE_URL).unwrap(), url);
    }

    #[test]
    fn known_crc() {
        // zlib's crc32("123456789") = 0xCBF43926.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_without_panicking(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode(&data);
            let _ = frame_len(&data);
        }
    }
}
