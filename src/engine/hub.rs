//! The fan-out hub of one channel: one producer, any number of clients.
//!
//! The producer (a pipeline thread, never a tokio task) pushes aligned TS pieces. The hub
//! keeps a bounded backlog that always starts at a keyframe, so a client joining a running
//! channel gets PAT + PMT + the latest keyframe at once, without any libav work. Pieces are
//! `Bytes`: every client reads the same reference-counted buffers, nothing is copied per
//! client. A client that falls behind the backlog skips forward to the newest keyframe
//! (counted); after too many skips it is dropped. The producer never waits for a client.

use super::ts::{Inspector, Piece};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

/// The most a client takes from the backlog in one read (more waits for the next read).
const MAX_READ: usize = 1024 * 1024;

#[derive(Debug)]
struct Chunk {
    seq: u64,
    data: Bytes,
    key: bool,
    pts: Option<u64>,
    /// For a keyframe chunk: PAT + PMT as they stood before it (see [`Piece::header`]).
    header: Option<Bytes>,
    /// The first frame that starts in it (see [`Piece::frame`]).
    frame: Option<super::ts::Frame>,
}

/// What a piece of a read is, for readers that cut it up (the HLS segmenter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// PAT + PMT: the reader (re)starts here (first read, after a skip or a restart).
    Header,
    /// PAT + PMT as they stand before the keyframe that follows (a reader that cuts the
    /// output into files, like the HLS segmenter, starts each with these).
    Tables,
    /// Starts with a keyframe, with its PTS and DTS (90 kHz) when known.
    Key {
        pts: Option<u64>,
        dts: Option<u64>,
    },
    /// Starts with the first packet of a video frame that is no keyframe (decode
    /// timestamp when known): every PES before it is complete, so a reader may cut here.
    Frame(Option<u64>),
    Delta,
}

#[derive(Debug, Default)]
struct State {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    next_seq: u64,
    last_key: Option<u64>,
    header: Option<Bytes>,
    closed: bool,
    /// Bumped by `reset`: cursors of an older epoch wait for the next keyframe.
    epoch: u64,
}

/// Counters a channel reports.
#[derive(Debug, Default)]
pub struct HubStats {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub skips: AtomicU64,
    pub drops: AtomicU64,
}

#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    notify: Notify,
    /// Backlog bound in bytes (beyond the latest keyframe, pieces are dropped oldest first).
    max_bytes: usize,
    /// Skips after which a lagging client is disconnected.
    max_skips: u32,
    pub stats: HubStats,
    /// The tables' continuity counters where the last producer session left them.
    table_cc: Mutex<std::collections::HashMap<u16, u8>>,
}

/// A client's position in the hub.
#[derive(Debug, Default)]
pub struct Cursor {
    /// Next sequence number to read; None: waiting for the next keyframe.
    next: Option<u64>,
    /// Send PAT + PMT before the next piece.
    need_header: bool,
    joined: bool,
    epoch: u64,
    skips: u32,
    /// Join at the oldest keyframe of the backlog instead of the newest (a reader that
    /// wants history at once: the HLS segmenter fills its window from it).
    oldest: bool,
}

impl Cursor {
    /// A cursor that joins at the oldest buffered keyframe.
    pub fn from_oldest() -> Cursor {
        Cursor {
            oldest: true,
            ..Cursor::default()
        }
    }
}

/// What a read gives a client.
#[derive(Debug)]
pub enum Read<T = Bytes> {
    Data(Vec<T>),
    Pending,
    /// The channel ended (stopped, deleted, shut down), or the client was too slow.
    Closed,
}

impl Hub {
    pub fn new(max_bytes: usize, max_skips: u32) -> Hub {
        Hub {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            max_bytes: max_bytes.max(64 * 1024),
            max_skips,
            stats: HubStats::default(),
            table_cc: Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends pieces from the producer and wakes waiting clients.
    pub fn push(&self, pieces: Vec<Piece>, header: Option<Bytes>) {
        if pieces.is_empty() {
            return;
        }
        let mut st = self.lock();
        if header.is_some() {
            st.header = header;
        }
        for p in pieces {
            self.stats
                .bytes_in
                .fetch_add(p.data.len() as u64, Ordering::Relaxed);
            let seq = st.next_seq;
            st.next_seq += 1;
            if p.key {
                st.last_key = Some(seq);
            }
            st.bytes += p.data.len();
            st.chunks.push_back(Chunk {
                seq,
                data: p.data,
                key: p.key,
                pts: p.pts,
                header: p.header,
                frame: p.frame,
            });
        }
        // Trim: keep at most max_bytes, but never the latest keyframe onwards unless the
        // backlog is four times over (a source with no keyframes at all).
        while st.bytes > self.max_bytes {
            let front = st.chunks.front().map(|c| (c.seq, c.data.len()));
            let Some((seq, len)) = front else { break };
            let protected = st.last_key.is_some_and(|k| seq >= k);
            if protected && st.bytes <= 4 * self.max_bytes {
                break;
            }
            st.chunks.pop_front();
            st.bytes -= len;
        }
        // A keyframe trimmed away (a GOP longer than the hard bound) is no start point.
        let front = st.chunks.front().map(|c| c.seq).unwrap_or(st.next_seq);
        if st.last_key.is_some_and(|k| k < front) {
            st.last_key = None;
        }
        drop(st);
        self.notify.notify_waiters();
    }

    /// Ends the hub: clients get what is buffered, then `Closed`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// Whether a client joining now could start at once (a keyframe is buffered).
    pub fn has_keyframe(&self) -> bool {
        self.lock().last_key.is_some()
    }

    /// Forgets the backlog (a new pipeline generation starts). Clients keep their place
    /// and continue with the next keyframe.
    pub fn reset(&self) {
        let mut st = self.lock();
        st.chunks.clear();
        st.bytes = 0;
        st.last_key = None;
        st.closed = false;
        st.epoch += 1;
    }

    /// PAT + PMT + the latest keyframe's pieces up to the next keyframe (beyond the first
    /// piece, at most `max` bytes): enough to decode one picture. None before the first
    /// keyframe.
    pub fn keyframe(&self, max: usize) -> Option<Bytes> {
        let st = self.lock();
        let key = st.last_key?;
        let front = st.chunks.front()?.seq;
        let at = st
            .chunks
            .get((key - front) as usize)
            .and_then(|c| c.header.as_ref());
        let header = at.or(st.header.as_ref())?;
        let mut out = bytes::BytesMut::from(&header[..]);
        for c in st.chunks.iter().skip((key - front) as usize) {
            if c.seq != key && (c.key || out.len() + c.data.len() > max) {
                break;
            }
            out.extend_from_slice(&c.data);
        }
        Some(out.freeze())
    }

    pub fn buffered_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Reads what is available for `cur`.
    pub fn read(&self, cur: &mut Cursor) -> Read {
        self.read_as(cur, false, |b, _| b.clone())
    }

    /// Reads what is available for `cur`, each piece with what it is.
    pub fn read_parts(&self, cur: &mut Cursor) -> Read<(Bytes, PartKind)> {
        self.read_as(cur, true, |b, k| (b.clone(), k))
    }

    /// `tables`: also give each keyframe's [`PartKind::Tables`] before it.
    fn read_as<T>(
        &self,
        cur: &mut Cursor,
        tables: bool,
        each: impl Fn(&Bytes, PartKind) -> T,
    ) -> Read<T> {
        let st = self.lock();
        if !cur.joined || cur.epoch != st.epoch {
            cur.joined = true;
            cur.epoch = st.epoch;
            cur.next = if cur.oldest {
                st.chunks.iter().find(|c| c.key).map(|c| c.seq)
            } else {
                st.last_key
            };
            cur.need_header = true;
        }
        let front = st.chunks.front().map(|c| c.seq).unwrap_or(st.next_seq);
        match cur.next {
            Some(n) if n < front => {
                // Fell behind the backlog: jump to the newest keyframe.
                cur.skips += 1;
                self.stats.skips.fetch_add(1, Ordering::Relaxed);
                if cur.skips > self.max_skips {
                    self.stats.drops.fetch_add(1, Ordering::Relaxed);
                    return Read::Closed;
                }
                cur.next = st.last_key.filter(|k| *k >= front);
                cur.need_header = true;
            }
            None => {
                cur.next = st.last_key;
            }
            _ => {}
        }
        let Some(n) = cur.next else {
            return if st.closed {
                Read::Closed
            } else {
                Read::Pending
            };
        };
        let first = (n - front) as usize;
        if first >= st.chunks.len() {
            return if st.closed {
                Read::Closed
            } else {
                Read::Pending
            };
        }
        let mut out = Vec::with_capacity(st.chunks.len() - first + 1);
        let mut head = 0;
        if cur.need_header {
            // The tables as they stood at the reader's first chunk, so their counters run
            // on into the ones the reader gets next; the latest ones otherwise.
            let at = st.chunks.get(first).and_then(|c| c.header.as_ref());
            if let Some(h) = at.or(st.header.as_ref()) {
                head = h.len();
                out.push(each(h, PartKind::Header));
            }
            cur.need_header = false;
        }
        // At most MAX_READ bytes per read, so one slow client's write cannot pin a large
        // part of the backlog after it has been trimmed.
        let mut taken = 0usize;
        let mut next = st.next_seq;
        for c in st.chunks.iter().skip(first) {
            if taken >= MAX_READ {
                next = c.seq;
                break;
            }
            taken += c.data.len();
            if let (true, true, Some(h)) = (tables, c.key, &c.header) {
                out.push(each(h, PartKind::Tables));
            }
            match (c.key, c.frame.filter(|_| tables)) {
                (true, f) => out.push(each(
                    &c.data,
                    PartKind::Key {
                        pts: c.pts,
                        dts: f.and_then(|f| f.dts),
                    },
                )),
                // A reader of parts gets the frame's start as a piece of its own.
                (false, Some(f)) if f.offset < c.data.len() => {
                    if f.offset > 0 {
                        out.push(each(&c.data.slice(..f.offset), PartKind::Delta));
                    }
                    out.push(each(&c.data.slice(f.offset..), PartKind::Frame(f.dts)));
                }
                _ => out.push(each(&c.data, PartKind::Delta)),
            }
        }
        cur.next = Some(next);
        self.stats
            .bytes_out
            .fetch_add((head + taken) as u64, Ordering::Relaxed);
        Read::Data(out)
    }

    /// Waits until `cur` has data or the hub closes.
    pub async fn next(&self, cur: &mut Cursor) -> Option<Vec<Bytes>> {
        self.next_as(cur, Hub::read).await
    }

    /// Like [`Hub::next`], each piece with what it is.
    pub async fn next_parts(&self, cur: &mut Cursor) -> Option<Vec<(Bytes, PartKind)>> {
        self.next_as(cur, Hub::read_parts).await
    }

    async fn next_as<T>(
        &self,
        cur: &mut Cursor,
        read: impl Fn(&Hub, &mut Cursor) -> Read<T>,
    ) -> Option<Vec<T>> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match read(self, cur) {
                Read::Data(d) => return Some(d),
                Read::Closed => return None,
                Read::Pending => notified.await,
            }
        }
    }
}

/// The producer side: aligns TS bytes and finds keyframes before pushing to the hub.
/// Implements `Write` so libav's custom I/O and a child's stdout feed it the same way.
/// It never fails and never blocks: a muxer must not be poisoned by a slow client.
#[derive(Debug)]
pub struct HubWriter {
    hub: std::sync::Arc<Hub>,
    inspector: Inspector,
    /// Pieces not handed to the hub yet: audio, subtitles and tables wait for the next
    /// video data (at most [`COALESCE_WAIT`]), so that the packets between two video
    /// frames reach the viewers in one push, one wake-up each, whatever the number of
    /// tracks.
    pending: Vec<Piece>,
    pending_bytes: usize,
    pending_since: Option<std::time::Instant>,
}

/// Joins each run of pieces into one, a keyframe piece with the pieces after it: a viewer
/// then sends one chunk per push, not one per packet the muxer wrote (with five tracks,
/// three times as many). Readers still start at every keyframe.
fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<(Piece, Option<bytes::BytesMut>)> = Vec::with_capacity(2);
    for p in pieces {
        match out.last_mut() {
            Some((first, buf)) if !p.key => {
                let buf = buf.get_or_insert_with(|| {
                    let mut b = bytes::BytesMut::with_capacity(first.data.len() + p.data.len());
                    b.extend_from_slice(&first.data);
                    b
                });
                if first.frame.is_none() {
                    first.frame = p.frame.map(|f| super::ts::Frame {
                        offset: buf.len() + f.offset,
                        ..f
                    });
                }
                buf.extend_from_slice(&p.data);
            }
            _ => out.push((p, None)),
        }
    }
    out.into_iter()
        .map(|(mut p, buf)| {
            if let Some(b) = buf {
                p.data = b.freeze();
            }
            p
        })
        .collect()
}

/// How long non-video output may wait for video data before it goes to the hub alone.
const COALESCE_WAIT: std::time::Duration = std::time::Duration::from_millis(40);
/// How much may wait.
const COALESCE_BYTES: usize = 256 * 1024;

impl HubWriter {
    /// A writer for a new producer session; the tables' continuity counters continue from
    /// the last session's.
    pub fn new(hub: std::sync::Arc<Hub>) -> HubWriter {
        let cc = std::mem::take(&mut *hub.table_cc.lock().unwrap_or_else(|p| p.into_inner()));
        // After a reset every reader starts anew, at a keyframe with its tables; a session
        // that continues the output (a loop, a reconnect) is read straight on.
        let fresh = hub.lock().chunks.is_empty();
        HubWriter {
            hub,
            inspector: Inspector::continue_tables(cc, fresh),
            pending: Vec::new(),
            pending_bytes: 0,
            pending_since: None,
        }
    }

    /// For a session that relays a source's own TS packets: keyframes are also found by
    /// their bitstream (upstream muxers do not all flag them).
    pub fn relaying(mut self) -> HubWriter {
        self.inspector = std::mem::take(&mut self.inspector).with_content_keys();
        self
    }

    /// The elementary streams of the latest PMT written.
    pub fn streams(&self) -> &[super::ts::EsInfo] {
        self.inspector.streams()
    }

    fn push_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.pending_bytes = 0;
        self.pending_since = None;
        let pieces = merge(std::mem::take(&mut self.pending));
        self.hub.push(pieces, self.inspector.header());
    }
}

impl Drop for HubWriter {
    fn drop(&mut self) {
        self.push_pending();
        *self.hub.table_cc.lock().unwrap_or_else(|p| p.into_inner()) =
            self.inspector.table_counters();
    }
}

impl std::io::Write for HubWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let video_before = self.inspector.video_packets;
        let pieces = self.inspector.feed(buf);
        let now = std::time::Instant::now();
        self.pending_bytes += pieces.iter().map(|p| p.data.len()).sum::<usize>();
        self.pending.extend(pieces);
        let since = *self.pending_since.get_or_insert(now);
        if self.inspector.video_packets != video_before
            || !self.inspector.has_video()
            || self.pending_bytes >= COALESCE_BYTES
            || now.duration_since(since) >= COALESCE_WAIT
        {
            self.push_pending();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.push_pending();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ts::tests::{packet, psi};
    use super::*;
    use std::io::Write;
    use std::sync::Arc;

    fn gop(w: &mut HubWriter, n: usize) {
        let mut d = packet(0x100, true, true, b"key");
        for _ in 1..n {
            d.extend(packet(0x100, false, false, b"delta"));
        }
        w.write_all(&d).unwrap();
    }

    fn setup(max: usize, skips: u32) -> (Arc<Hub>, HubWriter) {
        let hub = Arc::new(Hub::new(max, skips));
        let mut w = HubWriter::new(hub.clone());
        let (pat, pmt) = psi();
        w.write_all(&[pat, pmt].concat()).unwrap();
        (hub, w)
    }

    fn bytes(r: Read) -> Vec<u8> {
        match r {
            Read::Data(d) => d.concat(),
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn audio_between_video_frames_reaches_readers_in_one_push() {
        let (hub, mut w) = setup(1 << 20, 3);
        gop(&mut w, 1);
        let mut c = Cursor::default();
        let _ = bytes(hub.read(&mut c));
        // Four audio packets (one per track, as a muxer writes them): nothing yet.
        for _ in 0..4 {
            w.write_all(&packet(0x101, true, false, b"audio")).unwrap();
        }
        assert!(matches!(hub.read(&mut c), Read::Pending));
        // The next video frame takes them along, in order, as one chunk.
        w.write_all(&packet(0x100, true, false, b"delta")).unwrap();
        let Read::Data(chunks) = hub.read(&mut c) else {
            panic!("no data after a video packet");
        };
        assert_eq!(chunks.len(), 1);
        let got = chunks.concat();
        assert_eq!(got.len(), 5 * 188);
        assert!(got.chunks(188).take(4).all(|p| p[2] == 0x01));
        assert_eq!(got[4 * 188 + 2], 0x00);
        // Without video, audio waits at most COALESCE_WAIT.
        w.write_all(&packet(0x101, true, false, b"audio")).unwrap();
        assert!(matches!(hub.read(&mut c), Read::Pending));
        std::thread::sleep(COALESCE_WAIT);
        w.write_all(&packet(0x101, true, false, b"audio")).unwrap();
        assert_eq!(bytes(hub.read(&mut c)).len(), 2 * 188);
        // And nothing is lost when the writer goes (a session's end).
        w.write_all(&packet(0x101, true, false, b"last")).unwrap();
        drop(w);
        assert_eq!(bytes(hub.read(&mut c)).len(), 188);
    }

    #[test]
    fn a_reader_of_parts_gets_each_video_frame_start_as_a_piece() {
        let (hub, mut w) = setup(1 << 20, 3);
        let mut c = Cursor::default();
        // A keyframe, audio, then the next frame's first packet and its continuation:
        // the audio waits for the video, so it all arrives in one push.
        let mut d = packet(0x100, true, true, b"key");
        d.extend(packet(0x101, true, false, b"audio"));
        w.write_all(&d).unwrap();
        let mut d = packet(0x100, true, false, b"frame");
        d.extend(packet(0x100, false, false, b"more"));
        w.write_all(&d).unwrap();
        let Read::Data(parts) = hub.read_parts(&mut c) else {
            panic!("no data");
        };
        let kinds: Vec<PartKind> = parts.iter().map(|(_, k)| *k).collect();
        assert_eq!(
            kinds,
            [
                PartKind::Header,
                PartKind::Tables,
                PartKind::Key {
                    pts: None,
                    dts: None
                },
                PartKind::Frame(None),
            ],
            "{parts:?}"
        );
        assert_eq!(
            parts[3].0.len(),
            2 * 188,
            "from the frame's first packet on"
        );
        // A plain reader gets the same bytes, without the split.
        let mut plain = Cursor::default();
        let Read::Data(bytes) = hub.read(&mut plain) else {
            panic!("no data");
        };
        let joined: Vec<u8> = parts[2..].iter().flat_map(|(b, _)| b.to_vec()).collect();
        assert_eq!(bytes[1..].concat(), joined);
    }

    #[test]
    fn a_push_keeps_a_piece_boundary_at_each_keyframe_only() {
        let piece = |key: bool, d: &'static [u8]| Piece {
            data: Bytes::from_static(d),
            key,
            pts: None,
            header: None,
            frame: None,
        };
        let got = merge(vec![
            piece(false, b"a"),
            piece(false, b"b"),
            piece(true, b"K"),
            piece(false, b"c"),
            piece(true, b"L"),
        ]);
        let got: Vec<(bool, &[u8])> = got.iter().map(|p| (p.key, &p.data[..])).collect();
        assert_eq!(
            got,
            vec![(false, &b"ab"[..]), (true, &b"Kc"[..]), (true, &b"L"[..])]
        );
    }

    #[test]
    fn joiners_start_with_psi_then_the_latest_keyframe() {
        let (hub, mut w) = setup(1 << 20, 3);
        let mut early = Cursor::default();
        assert!(
            matches!(hub.read(&mut early), Read::Pending),
            "nothing before a keyframe"
        );
        gop(&mut w, 3);
        gop(&mut w, 2);
        let mut late = Cursor::default();
        let got = bytes(hub.read(&mut late));
        let (pat, pmt) = psi();
        assert_eq!(&got[..188], &pat[..]);
        assert_eq!(&got[188..376], &pmt[..]);
        assert_eq!(got.len(), 4 * 188, "PSI + the second GOP (2 packets)");
        let early_got = bytes(hub.read(&mut early));
        assert_eq!(
            early_got, got,
            "a client that waited also starts at the newest keyframe"
        );
        assert!(matches!(hub.read(&mut late), Read::Pending));
        gop(&mut w, 1);
        assert_eq!(
            bytes(hub.read(&mut late)),
            bytes(hub.read(&mut early)),
            "same bytes for all"
        );
    }

    #[test]
    fn the_backlog_is_bounded_and_slow_clients_skip_then_drop() {
        let (hub, mut w) = setup(64 * 1024, 2);
        let mut slow = Cursor::default();
        gop(&mut w, 10);
        let _ = bytes(hub.read(&mut slow));
        for _ in 0..200 {
            gop(&mut w, 10); // 1880 bytes a GOP
        }
        assert!(
            hub.buffered_bytes() <= 64 * 1024,
            "{}",
            hub.buffered_bytes()
        );
        let got = bytes(hub.read(&mut slow));
        assert_eq!(got.len() % 188, 0);
        assert_eq!(hub.stats.skips.load(Ordering::Relaxed), 1);
        for _ in 0..200 {
            gop(&mut w, 10);
        }
        assert!(
            matches!(hub.read(&mut slow), Read::Data(_)),
            "second skip is still allowed"
        );
        assert_eq!(hub.stats.skips.load(Ordering::Relaxed), 2);
        for _ in 0..200 {
            gop(&mut w, 10);
        }
        assert!(
            matches!(hub.read(&mut slow), Read::Closed),
            "dropped after 3 skips > 2"
        );
        assert_eq!(hub.stats.drops.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_reader_at_an_older_keyframe_gets_the_tables_as_they_stood_there() {
        let (hub, mut w) = setup(1 << 20, 3);
        gop(&mut w, 2);
        // The muxer repeats its tables in the middle of the backlog.
        let (pat, pmt) = psi();
        w.write_all(&[pat, pmt].concat()).unwrap();
        gop(&mut w, 2);
        let mut c = Cursor::from_oldest();
        let got = bytes(hub.read(&mut c));
        let pat_ccs: Vec<u8> = got
            .chunks(188)
            .filter(|p| ((p[1] & 0x1f) as u16) << 8 | p[2] as u16 == 0)
            .map(|p| p[3] & 0x0f)
            .collect();
        // The tables this reader starts with, then the backlog's: counters run on.
        assert_eq!(pat_ccs.len(), 2, "{pat_ccs:?}");
        assert_eq!(pat_ccs[1], (pat_ccs[0] + 1) & 0x0f, "{pat_ccs:?}");
        // A second writer (the next producer session) continues the counters.
        drop(w);
        let mut w2 = HubWriter::new(hub.clone());
        let (pat, pmt) = psi();
        w2.write_all(&[pat, pmt].concat()).unwrap();
        // Tables alone wait for video data (or a flush) before they reach readers.
        assert!(matches!(hub.read(&mut c), Read::Pending));
        w2.flush().unwrap();
        let more = bytes(hub.read(&mut c));
        let next: Vec<u8> = more
            .chunks(188)
            .filter(|p| ((p[1] & 0x1f) as u16) << 8 | p[2] as u16 == 0)
            .map(|p| p[3] & 0x0f)
            .collect();
        assert_eq!(next, [(pat_ccs[1] + 1) & 0x0f]);
    }

    #[test]
    fn after_a_reset_clients_resume_at_the_next_keyframe() {
        let (hub, mut w) = setup(1 << 20, 3);
        gop(&mut w, 2);
        let mut c = Cursor::default();
        let _ = bytes(hub.read(&mut c));
        hub.reset();
        w.write_all(&packet(0x100, false, false, b"tail of nothing"))
            .unwrap();
        assert!(matches!(hub.read(&mut c), Read::Pending), "no keyframe yet");
        gop(&mut w, 2);
        assert_eq!(bytes(hub.read(&mut c)).len(), 4 * 188, "PSI + the new GOP");
    }

    #[test]
    fn a_history_reader_joins_at_the_oldest_keyframe() {
        let (hub, mut w) = setup(1 << 20, 3);
        w.write_all(&packet(0x100, false, false, b"before any key"))
            .unwrap();
        gop(&mut w, 3);
        gop(&mut w, 2);
        let mut c = Cursor::from_oldest();
        assert_eq!(
            bytes(hub.read(&mut c)).len(),
            7 * 188,
            "PSI + both GOPs, not the packet before the first keyframe"
        );
    }

    #[test]
    fn the_latest_keyframe_is_psi_plus_its_gop() {
        let (hub, mut w) = setup(1 << 20, 3);
        assert!(hub.keyframe(1 << 20).is_none());
        gop(&mut w, 3);
        // The newest GOP arrives in separate writes: a key piece, then three pieces.
        w.write_all(&packet(0x100, true, true, b"key")).unwrap();
        for _ in 0..3 {
            w.write_all(&packet(0x100, false, false, b"delta")).unwrap();
        }
        let k = hub.keyframe(1 << 20).unwrap();
        let (pat, pmt) = psi();
        assert_eq!(&k[..188], &pat[..]);
        assert_eq!(&k[188..376], &pmt[..]);
        assert_eq!(k.len(), 6 * 188, "PSI + the 4 packets of the newest GOP");
        assert_eq!(&k[376 + 6..376 + 9], b"key", "the keyframe follows the PSI");
        assert_eq!(
            hub.keyframe(4 * 188).unwrap().len(),
            4 * 188,
            "bounded, but never without the keyframe"
        );
        assert_eq!(hub.keyframe(1).unwrap().len(), 3 * 188);
    }

    #[test]
    fn close_ends_every_client_after_the_buffer() {
        let (hub, mut w) = setup(1 << 20, 3);
        gop(&mut w, 2);
        let mut c = Cursor::default();
        hub.close();
        assert!(matches!(hub.read(&mut c), Read::Data(_)));
        assert!(matches!(hub.read(&mut c), Read::Closed));
    }

    #[tokio::test]
    async fn waiting_clients_wake_up_when_the_producer_pushes_from_a_thread() {
        let (hub, mut w) = setup(1 << 20, 3);
        let h = hub.clone();
        let reader = tokio::spawn(async move {
            let mut c = Cursor::default();
            h.next(&mut c).await.map(|d| d.concat().len())
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        std::thread::spawn(move || gop(&mut w, 2)).join().unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, Some(4 * 188));
    }
}
