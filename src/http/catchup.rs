//! Catch-up and timeshift from a channel's archive:
//!
//! - `/catchup/<id>.ts?start=&end=` (Unix seconds): MPEG-TS from the keyframe at or before
//!   `start` to `end`, as fast as the client reads. A window the archive holds whole has a
//!   `Content-Length` and answers `Range` requests; one whose `end` is missing or not yet
//!   archived goes on into live, one segment behind it.
//! - `/catchup/<id>/index.m3u8?start=&end=`: the same window as HLS (`VOD` when the archive
//!   holds it whole, `EVENT` while it reaches live), its segments the archive's own files
//!   at `/catchup/<id>/<start ms>.ts`.
//!
//! A request reaches a file only through the archive's index (ids and times are parsed,
//! never joined into paths). File reads run on blocking threads.

use super::reply;
use super::state::{AppState, View};
use crate::engine::archive::Archives;
use crate::engine::archive_index::Entry;
use crate::engine::catchup::{self, Piece, Window};
use crate::error::{Error, ErrorKind};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

const MPEG_TS: &str = "video/mp2t";
/// The most bytes one read of an archive file takes.
const CHUNK: usize = 256 * 1024;
/// A reader that follows the archive into live ends when no segment came for this long.
const FOLLOW_LIMIT: Duration = Duration::from_secs(60);

/// `start` and `end` of a catch-up query, Unix milliseconds.
pub fn window_query(query: &str) -> Result<(i64, Option<i64>), Error> {
    let mut start = None;
    let mut end = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k {
            "start" => &mut start,
            "end" => &mut end,
            _ => continue,
        };
        let secs: i64 = v
            .parse()
            .ok()
            .filter(|s| (0..=253_402_300_799).contains(s))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::BadRequest,
                    format!("{k}: {v:?} is not a time in Unix seconds"),
                )
            })?;
        *slot = Some(secs * 1000);
    }
    let start = start.ok_or_else(|| {
        Error::new(
            ErrorKind::BadRequest,
            "start is required: the window's start in Unix seconds (?start=<utc>&end=<utcend>)",
        )
    })?;
    if end.is_some_and(|e| e <= start) {
        return Err(Error::new(ErrorKind::BadRequest, "end must be after start"));
    }
    Ok((start, end))
}

/// Channel `id`'s archive and the query's window (Unix ms).
fn archive_and_window(
    st: &AppState,
    id: u32,
    query: &str,
) -> Result<(Arc<Archives>, i64, Option<i64>), Error> {
    let archives = st.engine.archive_of(id)?;
    let (start, end) = window_query(query)?;
    Ok((archives, start, end))
}

/// The window, waiting (bounded) when its start is in the segment being written now.
async fn wait_for_window(
    archives: &Arc<Archives>,
    id: u32,
    start: i64,
    end: Option<i64>,
) -> Result<Window, Error> {
    wait_for(archives, id, move |a| catchup::window(a, id, start, end)).await
}

/// `look` (on a blocking thread) until it finds the window: at most two segment lengths
/// and 10 s, as long as it says the start is in the segment being written.
async fn wait_for<T: Send + 'static>(
    archives: &Arc<Archives>,
    id: u32,
    look: impl Fn(&Archives) -> Result<Option<T>, Error> + Send + Sync + Clone + 'static,
) -> Result<T, Error> {
    let limit = Duration::from_secs_f64(archives.segment_secs() * 2.0 + 10.0);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (a, look) = (archives.clone(), look.clone());
        let w = tokio::task::spawn_blocking(move || look(&a))
            .await
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))??;
        if let Some(w) = w {
            return Ok(w);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("stream {id}: that time is not archived yet; ask again shortly"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A catch-up body: the window's pieces, then (for one that reaches live) each segment
/// the archive finishes after them, until `end`.
struct Body {
    id: u32,
    pieces: VecDeque<Piece>,
    /// The open file of the piece being read, and where it is.
    file: Option<(std::fs::File, u64)>,
    follow: Option<Follow>,
    /// The token's stream count, held while the body lives.
    _lease: Option<crate::tokens::Lease>,
}

struct Follow {
    archives: Arc<Archives>,
    last: Entry,
    end_ms: Option<i64>,
}

impl Body {
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            let Some(piece) = self.pieces.front_mut() else {
                if !self.follow_on().await {
                    return None;
                }
                continue;
            };
            match piece {
                Piece::Data(d) => {
                    let d = std::mem::take(d);
                    self.pieces.pop_front();
                    if d.is_empty() {
                        continue;
                    }
                    return Some(Ok(d));
                }
                Piece::File { path, from, to } => {
                    if *from >= *to {
                        self.pieces.pop_front();
                        self.file = None;
                        continue;
                    }
                    let (path, at, to) = (path.clone(), *from, *to);
                    let file = self.file.take();
                    let len = ((to - at) as usize).min(CHUNK);
                    let read = tokio::task::spawn_blocking(move || read_at(file, &path, at, len))
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                    match read {
                        Ok((f, data)) => {
                            *from = at + data.len() as u64;
                            self.file = Some((f, *from));
                            return Some(Ok(data));
                        }
                        Err(e) => {
                            tracing::warn!(channel = self.id, "catch-up read failed: {e}");
                            return Some(Err(e));
                        }
                    }
                }
            }
        }
    }

    /// Queues the next finished segment of a window that reaches live; false when the
    /// window is over (its end reached, or no segment came for [`FOLLOW_LIMIT`]).
    async fn follow_on(&mut self) -> bool {
        let Some(f) = &mut self.follow else {
            return false;
        };
        let since = tokio::time::Instant::now();
        while since.elapsed() < FOLLOW_LIMIT {
            if let Some(e) = f.archives.after(self.id, f.last.start_ms) {
                if f.end_ms.is_some_and(|end| e.start_ms >= end) {
                    return false;
                }
                f.last = e;
                let (a, id, end) = (f.archives.clone(), self.id, f.end_ms);
                let piece =
                    tokio::task::spawn_blocking(move || catchup::segment_until(&a, id, &e, end))
                        .await;
                match piece {
                    Ok(Ok(p)) => self.pieces.push_back(p),
                    _ => return false,
                }
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }
}

/// Reads up to `len` bytes at `at` of `path`, reusing `file` when it is already there.
fn read_at(
    file: Option<(std::fs::File, u64)>,
    path: &std::path::Path,
    at: u64,
    len: usize,
) -> std::io::Result<(std::fs::File, Bytes)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match file {
        Some((f, pos)) if pos == at => f,
        _ => {
            let mut f = std::fs::File::open(path)?;
            f.seek(SeekFrom::Start(at))?;
            f
        }
    };
    let mut buf = vec![0; len];
    let mut n = 0;
    while n < len {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} ended early", path.display()),
        ));
    }
    buf.truncate(n);
    Ok((f, Bytes::from(buf)))
}

fn stream_response(
    body: Body,
    ended: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Response {
    use futures_util::StreamExt;
    let chunks = futures_util::stream::unfold(body, |mut b| async move {
        let next = b.next().await?;
        Some((next, b))
    })
    .take_until(ended);
    warp::reply::stream(chunks).into_response()
}

/// One `bytes=` range of a body of `len` bytes: Ok(None) without a usable header,
/// Err(()) for a range that cannot be satisfied.
fn range(header: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: the whole body is a valid answer
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let r = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        (len.saturating_sub(n), len)
    } else {
        let a: u64 = a.parse().map_err(|_| ())?;
        let b = if b.is_empty() {
            len
        } else {
            b.parse::<u64>().map_err(|_| ())?.saturating_add(1).min(len)
        };
        (a, b)
    };
    if r.0 >= r.1 {
        return Err(());
    }
    Ok(Some(r))
}

fn ts_response(mut resp: Response, status: StatusCode, len: Option<u64>) -> Response {
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(MPEG_TS));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(n) = len {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    } else {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    }
    resp
}

/// A response without a body.
fn empty() -> Response {
    StatusCode::OK.into_response()
}

/// `/catchup/<id>.ts`: GET streams the window, HEAD answers its headers only.
pub async fn ts(
    st: &AppState,
    id: u32,
    query: &str,
    range_header: Option<&str>,
    view: &View,
    head: bool,
) -> Response {
    let (archives, start, end) = match archive_and_window(st, id, query) {
        Ok(w) => w,
        Err(e) => return reply::error(&e),
    };
    let window = match wait_for_window(&archives, id, start, end).await {
        Ok(w) => w,
        Err(e) => return reply::error(&e),
    };
    let len = window.complete.then(|| window.len());
    let follow = (!window.complete).then_some(Follow {
        archives,
        last: window.last,
        end_ms: end,
    });
    let lease = match view.who.open_stream(st.hls_lease()) {
        Ok(l) => l,
        Err(limit) => {
            return reply::error(&Error::new(ErrorKind::TooManyRequests, limit.to_string()))
        }
    };
    let body = Body {
        id,
        pieces: window.pieces.into(),
        file: None,
        follow,
        _lease: Some(lease),
    };
    respond_body(body, len, range_header, view, head)
}

/// A file served whole or by byte range (a recording's download).
pub fn file_response(
    path: std::path::PathBuf,
    len: u64,
    range_header: Option<&str>,
    lease: crate::tokens::Lease,
    view: &View,
    head: bool,
) -> Response {
    let body = Body {
        id: 0,
        pieces: VecDeque::from([Piece::File {
            path,
            from: 0,
            to: len,
        }]),
        file: None,
        follow: None,
        _lease: Some(lease),
    };
    respond_body(body, Some(len), range_header, view, head)
}

/// The response for a body: with `Content-Length` and byte ranges when its length `len`
/// is known, streamed (on into live) when not; headers only for HEAD.
fn respond_body(
    mut body: Body,
    len: Option<u64>,
    range_header: Option<&str>,
    view: &View,
    head: bool,
) -> Response {
    let mut status = StatusCode::OK;
    let mut content_range = None;
    if let Some(total) = len {
        match range(range_header, total) {
            Ok(Some((a, b))) => {
                let pieces: Vec<Piece> = body.pieces.drain(..).collect();
                body.pieces = catchup::slice(&pieces, a, b).into();
                status = StatusCode::PARTIAL_CONTENT;
                content_range = Some((format!("bytes {a}-{}/{total}", b - 1), b - a));
            }
            Ok(None) => {}
            Err(()) => {
                let mut resp = ts_response(empty(), StatusCode::RANGE_NOT_SATISFIABLE, None);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return resp;
            }
        }
    }
    let body_len = content_range.as_ref().map(|c| c.1).or(len);
    let mut resp = if head {
        ts_response(empty(), status, body_len)
    } else {
        ts_response(stream_response(body, view.who.ended()), status, body_len)
    };
    if let Some((cr, _)) = content_range {
        if let Ok(v) = HeaderValue::from_str(&cr) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// `/catchup/<id>/index.m3u8`: the window as an HLS playlist.
pub async fn playlist(st: &AppState, id: u32, query: &str, view: &View) -> Response {
    let (archives, start, end) = match archive_and_window(st, id, query) {
        Ok(w) => w,
        Err(e) => return reply::error(&e),
    };
    if let Err(limit) = view.who.touch_hls(id, st.hls_lease()) {
        return reply::error(&Error::new(ErrorKind::TooManyRequests, limit.to_string()));
    }
    // The playlist lists whole segments: no file is read (players reload it often).
    let look = move |a: &Archives| catchup::segments(a, id, start, end);
    let (entries, complete) = match wait_for(&archives, id, look).await {
        Ok(w) => w,
        Err(e) => return reply::error(&e),
    };
    let text = render_playlist(&entries, complete, &view.token_query());
    let mut resp = text.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apple.mpegurl"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// An HLS playlist of archive segments: `VOD` with `EXT-X-ENDLIST` when `complete`, else
/// `EVENT` (players reload it and find the segments written since).
fn render_playlist(entries: &[Entry], complete: bool, token_query: &str) -> String {
    use std::fmt::Write;
    let target = entries
        .iter()
        .map(|e| (f64::from(e.dur_ms) / 1000.0).ceil() as u64)
        .max()
        .unwrap_or(1)
        .max(1);
    let kind = if complete { "VOD" } else { "EVENT" };
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:{kind}\n"
    );
    let mut prev_end = None;
    for e in entries {
        let gap = prev_end.is_some_and(|p: i64| (e.start_ms - p).abs() > 1000);
        if prev_end.is_some() && (e.discontinuity || gap) {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if prev_end.is_none() || e.discontinuity || gap {
            if let Some(t) = chrono::DateTime::from_timestamp_millis(e.start_ms) {
                let _ = writeln!(
                    out,
                    "#EXT-X-PROGRAM-DATE-TIME:{}",
                    t.format("%Y-%m-%dT%H:%M:%S%.3fZ")
                );
            }
        }
        let _ = write!(
            out,
            "#EXTINF:{:.3},\n{}.ts{token_query}\n",
            f64::from(e.dur_ms) / 1000.0,
            e.start_ms
        );
        prev_end = Some(e.end_ms());
    }
    if complete {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// `/catchup/<id>/<start ms>.ts`: one archive segment, whole.
pub async fn segment(st: &AppState, id: u32, file: &str, view: &View) -> Response {
    let archives = match st.engine.archive_of(id) {
        Ok(a) => a,
        Err(e) => return reply::error(&e),
    };
    let found = file
        .strip_suffix(".ts")
        .filter(|s| !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|ms| archives.find(id, ms));
    let Some(e) = found else {
        return reply::error(&Error::not_found(format!(
            "no catch-up segment {file} for stream {id} ({})",
            catchup::describe_span(archives.span(id))
        )));
    };
    if let Err(limit) = view.who.touch_hls(id, st.hls_lease()) {
        return reply::error(&Error::new(ErrorKind::TooManyRequests, limit.to_string()));
    }
    let body = Body {
        id,
        pieces: VecDeque::from([Piece::whole(&archives, id, &e)]),
        file: None,
        follow: None,
        _lease: None,
    };
    let mut resp = ts_response(
        stream_response(body, view.who.ended()),
        StatusCode::OK,
        Some(e.bytes),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_unix_seconds_and_end_follows_start() {
        assert_eq!(
            window_query("start=100&end=160&token=x").unwrap(),
            (100_000, Some(160_000))
        );
        assert_eq!(window_query("start=5").unwrap(), (5_000, None));
        for bad in [
            "",
            "end=5",
            "start=x",
            "start=-1",
            "start=10&end=10",
            "start=1e3",
        ] {
            let e = window_query(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BadRequest, "{bad}");
        }
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(range(None, 100), Ok(None));
        assert_eq!(range(Some("bytes=0-9"), 100), Ok(Some((0, 10))));
        assert_eq!(range(Some("bytes=90-"), 100), Ok(Some((90, 100))));
        assert_eq!(range(Some("bytes=-10"), 100), Ok(Some((90, 100))));
        assert_eq!(range(Some("bytes=50-500"), 100), Ok(Some((50, 100))));
        assert_eq!(range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(range(Some("items=0-1"), 100), Ok(None));
        assert_eq!(range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(range(Some("bytes=x-"), 100), Err(()));
    }

    #[test]
    fn playlists_are_vod_when_whole_and_mark_gaps() {
        let e = |start_ms, discontinuity| Entry {
            start_ms,
            dur_ms: 6000,
            bytes: 1,
            discontinuity,
        };
        let entries = [
            e(1_764_000_000_000, true),
            e(1_764_000_006_000, false),
            e(1_764_000_060_000, false),
        ];
        let vod = render_playlist(&entries, true, "?token=t");
        assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"), "{vod}");
        assert!(vod.ends_with("#EXT-X-ENDLIST\n"), "{vod}");
        assert!(
            vod.contains("#EXTINF:6.000,\n1764000006000.ts?token=t\n"),
            "{vod}"
        );
        assert_eq!(vod.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{vod}");
        assert_eq!(vod.matches("#EXT-X-PROGRAM-DATE-TIME:").count(), 2, "{vod}");
        assert!(
            vod.contains("#EXT-X-PROGRAM-DATE-TIME:2025-11-24T16:00:00.000Z\n"),
            "{vod}"
        );
        let event = render_playlist(&entries[..1], false, "");
        assert!(event.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"), "{event}");
        assert!(!event.contains("ENDLIST"));
        assert!(
            !event.contains("DISCONTINUITY\n"),
            "not before the first: {event}"
        );
    }
}
