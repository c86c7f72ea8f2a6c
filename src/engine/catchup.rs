//! Catch-up windows: which bytes of a channel's archive make up the MPEG-TS of a
//! wall-clock window. A window starts at the keyframe at or before its start (with the
//! PAT + PMT as they stood there, so the continuity counters run on), runs through whole
//! segments, and ends at the first keyframe at or after its end. Only the first and the
//! last segment are read to find those keyframes; everything else is whole files.
//! Blocking file I/O: call it off the async runtime.

use super::archive::Archives;
use super::archive_index::Entry;
use super::ts::Inspector;
use crate::error::{Error, ErrorKind};
use bytes::Bytes;
use std::path::PathBuf;

/// PTS are 33-bit, 90 kHz.
const PTS_WRAP: u64 = 1 << 33;

/// One run of bytes of a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Bytes made for this window (the tables before a keyframe inside a segment).
    Data(Bytes),
    /// `from..to` of an archive file.
    File { path: PathBuf, from: u64, to: u64 },
}

impl Piece {
    pub fn len(&self) -> u64 {
        match self {
            Piece::Data(b) => b.len() as u64,
            Piece::File { from, to, .. } => to - from,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A whole archive segment.
    pub fn whole(archives: &Archives, id: u32, e: &Entry) -> Piece {
        Piece::File {
            path: archives.path(id, e),
            from: 0,
            to: e.bytes,
        }
    }
}

/// The bytes of a window, as far as the archive holds it now.
#[derive(Debug)]
pub struct Window {
    pub pieces: Vec<Piece>,
    /// Where the content starts, Unix ms (the keyframe at or before the asked start).
    pub start_ms: i64,
    /// The last segment it reads (a window that reaches live continues after it).
    pub last: Entry,
    /// Milliseconds of the channel it holds (gaps in the archive do not count).
    pub covered_ms: i64,
    /// The archive holds the whole window: its length is known.
    pub complete: bool,
}

impl Window {
    pub fn len(&self) -> u64 {
        self.pieces.iter().map(Piece::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A keyframe in a segment file.
struct Key {
    offset: u64,
    /// Milliseconds after the segment's first keyframe.
    at_ms: i64,
    /// PAT + PMT as they stood before it.
    tables: Option<Bytes>,
}

/// The keyframes of a segment file's bytes.
fn keyframes(data: &[u8]) -> Vec<Key> {
    let mut ins = Inspector::continue_tables(Default::default(), false);
    let mut offset = 0u64;
    let mut first = None;
    let mut keys = Vec::new();
    for p in ins.feed(data) {
        if p.key {
            let pts = p.pts;
            let base = *first.get_or_insert(pts);
            let at_ms = match (base, pts) {
                (Some(a), Some(z)) => ((z.wrapping_sub(a) % PTS_WRAP) / 90) as i64,
                _ => 0,
            };
            keys.push(Key {
                offset,
                at_ms,
                tables: p.header,
            });
        }
        offset += p.data.len() as u64;
    }
    keys
}

fn read(path: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::NotFound,
            format!("the archive segment is gone ({e}); ask again"),
        )
    })
}

/// "2026-12-02T10:00:00Z to 2026-12-02T12:00:00Z", for errors that name the archive.
pub fn describe_span(span: Option<(i64, i64)>) -> String {
    let fmt = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(
            || ms.to_string(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
    };
    match span {
        Some((a, b)) => format!(
            "the archive holds {} to {} (Unix {} to {})",
            fmt(a),
            fmt(b),
            a / 1000,
            b / 1000
        ),
        None => "the archive is empty".into(),
    }
}

/// The segments the window `[start_ms, end_ms)` touches (never empty), and whether the
/// archive holds the whole window; no file is read. `Ok(None)` and the errors as for
/// [`window`].
pub fn segments(
    archives: &Archives,
    id: u32,
    start_ms: i64,
    end_ms: Option<i64>,
) -> Result<Option<(Vec<Entry>, bool)>, Error> {
    let span = archives.span(id);
    let outside = || Error::not_found(format!("stream {id}: {}", describe_span(span)));
    let Some((first, last)) = span else {
        return Err(outside());
    };
    if end_ms.is_some_and(|e| e <= first) {
        return Err(outside());
    }
    if start_ms >= last {
        // Later than what is finished: the segment being written holds it, or nothing does.
        return if start_ms <= super::archive::now_ms() && end_ms.is_none_or(|e| e > last) {
            Ok(None)
        } else {
            Err(outside())
        };
    }
    let entries = archives.window(id, start_ms, end_ms.unwrap_or(i64::MAX));
    if entries.is_empty() {
        return Err(outside()); // the window lies in a gap of the archive
    }
    Ok(Some((entries, end_ms.is_some_and(|e| e <= last))))
}

/// The window `[start_ms, end_ms)` of channel `id`'s archive (`end_ms` None: up to now and
/// on into live). `Ok(None)`: the start is archived only once the segment being written
/// now is finished. A window that lies wholly outside the archive is a 404 naming what it
/// holds.
pub fn window(
    archives: &Archives,
    id: u32,
    start_ms: i64,
    end_ms: Option<i64>,
) -> Result<Option<Window>, Error> {
    let Some((entries, complete)) = segments(archives, id, start_ms, end_ms)? else {
        return Ok(None);
    };
    let (head, tail) = (entries[0], entries[entries.len() - 1]);
    let mut pieces: Vec<Piece> = entries
        .iter()
        .map(|e| Piece::whole(archives, id, e))
        .collect();
    let mut content_start = head.start_ms;
    if start_ms > head.start_ms {
        let path = archives.path(id, &head);
        let keys = keyframes(&read(&path)?);
        let at = keys
            .iter()
            .rposition(|k| head.start_ms + k.at_ms <= start_ms)
            .unwrap_or(0);
        if let Some(k) = keys.get(at).filter(|_| at > 0) {
            content_start = head.start_ms + k.at_ms;
            let tables = k.tables.clone().unwrap_or_default();
            pieces[0] = Piece::File {
                path,
                from: k.offset,
                to: head.bytes,
            };
            if !tables.is_empty() {
                pieces.insert(0, Piece::Data(tables));
            }
        }
    }
    if let Some(end) = end_ms.filter(|e| *e < tail.end_ms()) {
        let path = archives.path(id, &tail);
        let keys = keyframes(&read(&path)?);
        let from = match pieces.last() {
            Some(Piece::File { from, .. }) => *from,
            _ => 0,
        };
        if let Some(k) = keys
            .iter()
            .find(|k| k.offset > from && tail.start_ms + k.at_ms >= end)
        {
            if let Some(Piece::File { to, .. }) = pieces.last_mut() {
                *to = k.offset;
            }
        }
    }
    let covered_ms = entries.iter().map(|e| i64::from(e.dur_ms)).sum::<i64>()
        - (content_start - head.start_ms)
        - end_ms.map_or(0, |e| (tail.end_ms() - e).max(0));
    Ok(Some(Window {
        pieces,
        start_ms: content_start,
        last: tail,
        covered_ms: covered_ms.max(0),
        complete,
    }))
}

/// Segment `e` of channel `id` whole, or up to its first keyframe at or after `end_ms`
/// when the window ends inside it (the next segment a reader that follows the archive
/// takes).
pub fn segment_until(
    archives: &Archives,
    id: u32,
    e: &Entry,
    end_ms: Option<i64>,
) -> Result<Piece, Error> {
    let mut piece = Piece::whole(archives, id, e);
    if let Some(end) = end_ms.filter(|end| *end < e.end_ms()) {
        let path = archives.path(id, e);
        let keys = keyframes(&read(&path)?);
        if let Some(k) = keys
            .iter()
            .find(|k| k.offset > 0 && e.start_ms + k.at_ms >= end)
        {
            piece = Piece::File {
                path,
                from: 0,
                to: k.offset,
            };
        }
    }
    Ok(piece)
}

/// The pieces that cover bytes `from..to` of `pieces` (for an HTTP range).
pub fn slice(pieces: &[Piece], from: u64, to: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for p in pieces {
        let (a, b) = (at, at + p.len());
        at = b;
        let (lo, hi) = (from.max(a), to.min(b));
        if lo >= hi {
            continue;
        }
        out.push(match p {
            Piece::Data(d) => Piece::Data(d.slice((lo - a) as usize..(hi - a) as usize)),
            Piece::File { path, from, .. } => Piece::File {
                path: path.clone(),
                from: from + (lo - a),
                to: from + (hi - a),
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_maps_a_byte_range_onto_tables_and_files() {
        let f = |from, to| Piece::File {
            path: PathBuf::from("x"),
            from,
            to,
        };
        let pieces = vec![
            Piece::Data(Bytes::from_static(b"0123")),
            f(100, 110),
            f(0, 5),
        ];
        assert_eq!(slice(&pieces, 0, 19), pieces);
        assert_eq!(
            slice(&pieces, 2, 16),
            vec![Piece::Data(Bytes::from_static(b"23")), f(100, 110), f(0, 2)]
        );
        assert_eq!(slice(&pieces, 5, 6), vec![f(101, 102)]);
        assert!(slice(&pieces, 19, 30).is_empty());
    }
}
