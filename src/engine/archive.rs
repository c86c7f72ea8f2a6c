//! Channel archives: the TS output of channels with `catchup_hours`, kept on disk for
//! catch-up, timeshift and recordings.
//!
//! An archive is one more reader of a channel's hub (no second upstream connection, no
//! second encode). The engine's feeding task hands the hub's pieces to a [`Queue`]; a
//! writer thread per channel (`amps-ar-<id>`) takes them off it and writes keyframe-aligned
//! segment files, each PAT + PMT + whole GOPs, named after their wall-clock start and
//! duration (`<archive_dir>/<id>/<start ms>-<duration ms>.ts`). A segment being written is
//! a `.part` file, renamed when it is finished, so a crash (`kill -9`) loses at most that
//! one; at start the index is rebuilt from the file names.
//!
//! The live channel never waits for the disk: the queue is bounded, and a writer that
//! falls behind loses data up to the next keyframe (counted, and the next segment is
//! marked as a discontinuity). A write error (a full disk) stops the archive with the
//! error in its status until a later segment can be written. Archives are bounded by age
//! (each channel's `catchup_hours`) and by `engine.archive_max_bytes` and the disk's free
//! space, oldest segments first across channels, checked before each segment is started.

use super::archive_index::{Entry, Index};
use super::hls;
use super::hub::PartKind;
pub use super::status::ArchiveStatus;
use crate::config::EngineConfig;
use crate::sync::lock;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the queue between a channel's hub and its writer holds at most.
const QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Free space the archives leave on their disk.
const MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;
/// A segment that never sees a keyframe ends at this size.
const MAX_SEGMENT_BYTES: u64 = 512 * 1024 * 1024;
/// After a write error, the writer tries again with a later segment after this long.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// A segment is named after the previous one's end when that is this close to its
/// arrival (durations come from the timestamps, so contiguous segments stay contiguous).
const CONTIGUOUS_MS: i64 = 2_000;

/// A size for people: "512.0 MiB", "1.2 GiB".
pub fn human_size(bytes: u64) -> String {
    let mib = bytes as f64 / 1048576.0;
    if mib < 1024.0 {
        format!("{mib:.1} MiB")
    } else {
        format!("{:.1} GiB", mib / 1024.0)
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn time(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

#[derive(Debug, Default)]
struct ChannelArchive {
    index: Index,
    error: Option<String>,
    dropped_bytes: u64,
    write_errors: u64,
}

struct WriterHandle {
    queue: Arc<Queue>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Every channel's archive under `engine.archive_dir`.
pub struct Archives {
    dir: PathBuf,
    max_bytes: Option<u64>,
    segment_secs: f64,
    channels: Mutex<BTreeMap<u32, ChannelArchive>>,
    writers: Mutex<HashMap<u32, WriterHandle>>,
    /// The folder could not be created or read: nothing is archived.
    broken: Option<String>,
}

impl std::fmt::Debug for Archives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archives")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Archives {
    /// The archives of `settings.archive_dir` (None when it is not set), their indexes
    /// rebuilt from the files; `.part` files (segments a crash cut short) are removed.
    pub fn open(settings: &EngineConfig) -> Option<Arc<Archives>> {
        let dir = settings.archive_dir.clone()?;
        let mut archives = Archives {
            dir,
            max_bytes: settings.archive_max_bytes,
            segment_secs: settings.archive_segment_secs,
            channels: Mutex::new(BTreeMap::new()),
            writers: Mutex::new(HashMap::new()),
            broken: None,
        };
        match archives.rebuild() {
            Ok(n) => tracing::info!(
                dir = %archives.dir.display(),
                channels = n.0,
                segments = n.1,
                "archive index ready"
            ),
            Err(e) => {
                let why = format!("engine.archive_dir {}: {e}", archives.dir.display());
                tracing::error!("{why}; nothing is archived");
                archives.broken = Some(why);
            }
        }
        Some(Arc::new(archives))
    }

    fn rebuild(&mut self) -> std::io::Result<(usize, usize)> {
        std::fs::create_dir_all(&self.dir)?;
        let mut channels = BTreeMap::new();
        let mut segments = 0;
        for d in std::fs::read_dir(&self.dir)? {
            let d = d?;
            let Some(id) = d.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if !d.file_type()?.is_dir() {
                continue;
            }
            let entries = scan(&d.path(), true)?;
            segments += entries.len();
            channels.insert(
                id,
                ChannelArchive {
                    index: Index::from_entries(entries),
                    ..ChannelArchive::default()
                },
            );
        }
        let n = channels.len();
        *lock(&self.channels) = channels;
        Ok((n, segments))
    }

    fn channel_dir(&self, id: u32) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// The file of one of channel `id`'s entries (an entry from this index only).
    pub fn path(&self, id: u32, e: &Entry) -> PathBuf {
        self.channel_dir(id).join(e.file_name())
    }

    pub fn segment_secs(&self) -> f64 {
        self.segment_secs
    }

    /// What channel `id`'s archive holds: (first start, last end), Unix ms.
    pub fn span(&self, id: u32) -> Option<(i64, i64)> {
        lock(&self.channels).get(&id)?.index.span()
    }

    /// The segments of channel `id` that the window `[start, end)` touches.
    pub fn window(&self, id: u32, start_ms: i64, end_ms: i64) -> Vec<Entry> {
        lock(&self.channels)
            .get(&id)
            .map(|c| c.index.window(start_ms, end_ms))
            .unwrap_or_default()
    }

    /// Channel `id`'s segment that follows the one starting at `start_ms`.
    pub fn after(&self, id: u32, start_ms: i64) -> Option<Entry> {
        lock(&self.channels).get(&id)?.index.after(start_ms)
    }

    /// Channel `id`'s segment starting at `start_ms`.
    pub fn find(&self, id: u32, start_ms: i64) -> Option<Entry> {
        lock(&self.channels).get(&id)?.index.find(start_ms)
    }

    /// Whether a writer runs for channel `id`.
    pub fn recording(&self, id: u32) -> bool {
        lock(&self.writers).contains_key(&id)
    }

    /// The channels whose writers run.
    pub fn writer_ids(&self) -> Vec<u32> {
        lock(&self.writers).keys().copied().collect()
    }

    /// The status of channel `id`'s archive (None: it has none and writes none).
    pub fn status(&self, id: u32, hours: u32) -> Option<ArchiveStatus> {
        let recording = self.recording(id);
        let chans = lock(&self.channels);
        let c = chans.get(&id);
        if c.is_none() && !recording && hours == 0 {
            return None;
        }
        let error = self
            .broken
            .clone()
            .or_else(|| c.and_then(|c| c.error.clone()));
        let state = match (&error, recording) {
            (Some(_), _) => "failed",
            (None, true) => "recording",
            (None, false) => "stopped",
        };
        Some(ArchiveStatus {
            state,
            error,
            hours,
            segments: c.map_or(0, |c| c.index.len()),
            bytes: c.map_or(0, |c| c.index.bytes()),
            oldest: c
                .and_then(|c| c.index.first())
                .and_then(|e| time(e.start_ms)),
            newest: c
                .and_then(|c| c.index.last())
                .and_then(|e| time(e.end_ms())),
            dropped_bytes: c.map_or(0, |c| c.dropped_bytes),
            write_errors: c.map_or(0, |c| c.write_errors),
        })
    }

    /// Bytes all archives hold.
    pub fn total_bytes(&self) -> u64 {
        lock(&self.channels).values().map(|c| c.index.bytes()).sum()
    }

    /// Starts channel `id`'s writer thread; None when one runs or the folder is unusable.
    /// The caller feeds the queue it gets (see [`feed`]) and closes it to stop the writer.
    pub fn start_writer(self: &Arc<Self>, id: u32) -> Option<Arc<Queue>> {
        if self.broken.is_some() {
            return None;
        }
        let mut writers = lock(&self.writers);
        if writers.contains_key(&id) {
            return None;
        }
        let queue = Arc::new(Queue::default());
        let (archives, q) = (self.clone(), queue.clone());
        let thread = std::thread::Builder::new()
            .name(format!("amps-ar-{id}"))
            .spawn(move || {
                let mut w = SegmentWriter::new(archives, id);
                while let Some(item) = q.pop() {
                    w.handle(item);
                }
                w.close();
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(channel = id, "cannot start the archive writer: {e}");
                return None;
            }
        };
        tracing::info!(channel = id, "archive started");
        writers.insert(
            id,
            WriterHandle {
                queue: queue.clone(),
                thread: Some(thread),
            },
        );
        Some(queue)
    }

    /// Stops the writers of channels `keep` rejects; their last segment is finished.
    pub fn stop_writers(&self, keep: impl Fn(u32) -> bool) {
        let stopped: Vec<(u32, WriterHandle)> = {
            let mut writers = lock(&self.writers);
            let ids: Vec<u32> = writers.keys().copied().filter(|id| !keep(*id)).collect();
            ids.into_iter()
                .filter_map(|id| writers.remove(&id).map(|w| (id, w)))
                .collect()
        };
        for (id, mut w) in stopped {
            w.queue.close();
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
            tracing::info!(channel = id, "archive stopped");
        }
    }

    /// Removes segments older than their channel's window: `hours(id)` gives a channel's
    /// `catchup_hours` (None for a channel that no longer archives: its segments are kept
    /// for the longest window of the others, at least a day, unless the budget needs the
    /// room first).
    pub fn expire(&self, now_ms: i64, hours: impl Fn(u32) -> Option<u32>) {
        let mut chans = lock(&self.channels);
        let longest = chans.keys().filter_map(|id| hours(*id)).max().unwrap_or(0);
        for (id, c) in chans.iter_mut() {
            let h = hours(*id).filter(|h| *h > 0).unwrap_or(longest.max(24));
            let oldest_kept = now_ms - i64::from(h) * 3_600_000;
            while c.index.first().is_some_and(|e| e.end_ms() < oldest_kept) {
                if let Some(e) = c.index.pop_oldest() {
                    remove(&self.dir.join(id.to_string()).join(e.file_name()));
                }
            }
        }
    }

    /// Makes room for a segment of about `need` bytes: oldest segments go first, across
    /// channels, until the total stays within `archive_max_bytes` and the disk keeps
    /// [`MIN_FREE_BYTES`] free. An error when the room cannot be made.
    fn make_room(&self, need: u64) -> Result<(), String> {
        let mut chans = lock(&self.channels);
        loop {
            let total: u64 = chans.values().map(|c| c.index.bytes()).sum();
            let over = self.max_bytes.is_some_and(|m| total + need > m);
            let free = free_bytes(&self.dir);
            let low = free.is_some_and(|f| f < need + MIN_FREE_BYTES);
            if !over && !low {
                return Ok(());
            }
            let oldest = chans
                .iter()
                .filter_map(|(id, c)| c.index.first().map(|e| (e.start_ms, *id)))
                .min();
            let Some((_, id)) = oldest else {
                return Err(match free {
                    Some(f) if low => format!(
                        "the disk is full: {} MiB free, the archives keep {} MiB free",
                        f >> 20,
                        MIN_FREE_BYTES >> 20
                    ),
                    _ => format!(
                        "engine.archive_max_bytes ({}) is smaller than one segment",
                        self.max_bytes.unwrap_or(0)
                    ),
                });
            };
            if let Some(e) = chans.get_mut(&id).and_then(|c| c.index.pop_oldest()) {
                remove(&self.dir.join(id.to_string()).join(e.file_name()));
            }
        }
    }

    fn add(&self, id: u32, e: Entry) -> bool {
        let mut chans = lock(&self.channels);
        let c = chans.entry(id).or_default();
        c.error = None;
        c.index.push(e)
    }

    fn failed(&self, id: u32, why: String, lost: u64) {
        let mut chans = lock(&self.channels);
        let c = chans.entry(id).or_default();
        if c.error.as_deref() != Some(why.as_str()) {
            tracing::warn!(channel = id, "archive: {why}");
        }
        c.error = Some(why);
        c.write_errors += 1;
        c.dropped_bytes += lost;
    }

    fn dropped(&self, id: u32, bytes: u64) {
        lock(&self.channels).entry(id).or_default().dropped_bytes += bytes;
    }

    /// Where the last segment of channel `id` ends, Unix ms.
    fn last_end(&self, id: u32) -> Option<i64> {
        lock(&self.channels)
            .get(&id)?
            .index
            .last()
            .map(Entry::end_ms)
    }
}

/// The segments in one channel's folder; `tidy`: remove `.part` files (segments a crash
/// cut short; only while no writer runs).
fn scan(dir: &Path, tidy: bool) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for f in std::fs::read_dir(dir)? {
        let f = f?;
        let name = f.file_name();
        let name = name.to_string_lossy();
        if tidy && name.ends_with(".part") {
            tracing::info!(file = %name, "removing an archive segment cut short");
            let _ = std::fs::remove_file(f.path());
            continue;
        }
        if let Some(mut e) = Entry::parse(&name) {
            e.bytes = f.metadata()?.len();
            entries.push(e);
        }
    }
    Ok(entries)
}

/// What channel `id`'s archive under `dir` holds (for `amps list`, which reads the
/// folder without a running server): its index.
pub fn read_index(dir: &Path, id: u32) -> Index {
    Index::from_entries(scan(&dir.join(id.to_string()), false).unwrap_or_default())
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), "cannot remove an archive segment: {e}");
        }
    }
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `statvfs` is plain old data; all zeros is a valid value to be overwritten.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `s` is a valid, writable `statvfs`.
    if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
        return None;
    }
    // u64 on 64-bit Linux, narrower on 32-bit ARM boards (NAS): convert for both.
    #[allow(clippy::useless_conversion)]
    let (avail, frsize) = (u64::from(s.f_bavail), u64::from(s.f_frsize));
    Some(avail.saturating_mul(frsize))
}

/// One piece of a channel's output on its way to the writer.
#[derive(Debug)]
pub enum Item {
    /// The hub's pieces, with the Unix ms they arrived at.
    Part(Bytes, PartKind, i64),
    /// Output was lost here (the queue overflowed, the feed restarted).
    Gap,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Item>,
    bytes: usize,
    closed: bool,
    /// Dropping until the next keyframe.
    overflow: bool,
}

/// The bounded hand-over from a channel's hub (a tokio task) to its writer thread.
#[derive(Debug, Default)]
pub struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

impl Queue {
    /// Queues the hub's pieces; never waits. Past [`QUEUE_BYTES`] pieces are dropped up to
    /// the next keyframe. Returns the bytes dropped.
    pub fn push(&self, parts: Vec<(Bytes, PartKind)>, at_ms: i64) -> u64 {
        let mut st = lock(&self.state);
        let mut dropped = 0;
        for (data, kind) in parts {
            let key = matches!(kind, PartKind::Key { .. } | PartKind::Header);
            if st.overflow && key && st.bytes + data.len() <= QUEUE_BYTES / 2 {
                st.overflow = false;
                st.items.push_back(Item::Gap);
            }
            if st.overflow || st.bytes + data.len() > QUEUE_BYTES {
                st.overflow = true;
                dropped += data.len() as u64;
                continue;
            }
            st.bytes += data.len();
            st.items.push_back(Item::Part(data, kind, at_ms));
        }
        drop(st);
        self.ready.notify_one();
        dropped
    }

    /// Marks lost output (the feed had to join the channel again).
    pub fn gap(&self) {
        lock(&self.state).items.push_back(Item::Gap);
        self.ready.notify_one();
    }

    /// Ends the queue: the writer writes what it holds, then stops.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }

    pub fn closed(&self) -> bool {
        lock(&self.state).closed
    }

    /// The next item; None once closed and empty.
    fn pop(&self) -> Option<Item> {
        let mut st = lock(&self.state);
        loop {
            if let Some(item) = st.items.pop_front() {
                if let Item::Part(d, ..) = &item {
                    st.bytes -= d.len();
                }
                return Some(item);
            }
            if st.closed {
                return None;
            }
            st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Feeds a queue from a channel subscription until it ends or the queue is closed;
/// bytes the queue had to drop are counted in channel `id`'s archive status.
pub async fn feed(
    archives: &Archives,
    id: u32,
    queue: &Queue,
    sub: &mut super::subscription::Subscription,
) {
    loop {
        tokio::select! {
            parts = sub.next_parts() => match parts {
                Some(parts) => {
                    let lost = queue.push(parts, now_ms());
                    if lost > 0 {
                        archives.dropped(id, lost);
                    }
                }
                None => return,
            },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if queue.closed() {
            return;
        }
    }
}

/// The segment being written.
struct Open {
    file: std::io::BufWriter<std::fs::File>,
    part: PathBuf,
    start_ms: i64,
    /// When its first keyframe arrived, and the latest piece (Unix ms).
    arrived_ms: i64,
    last_ms: i64,
    start_pts: Option<u64>,
    bytes: u64,
    discontinuity: bool,
}

/// Cuts one channel's output into segment files (on the writer thread).
struct SegmentWriter {
    archives: Arc<Archives>,
    id: u32,
    header: Option<Bytes>,
    open: Option<Open>,
    /// The next segment follows lost or restarted output.
    discontinuity: bool,
    retry_at: Option<Instant>,
    last_bytes: u64,
}

impl SegmentWriter {
    fn new(archives: Arc<Archives>, id: u32) -> SegmentWriter {
        SegmentWriter {
            archives,
            id,
            header: None,
            open: None,
            // What follows a restart of Amps (or of the archive) is a new run.
            discontinuity: true,
            retry_at: None,
            last_bytes: 0,
        }
    }

    fn handle(&mut self, item: Item) {
        match item {
            Item::Gap => {
                self.finish_here();
                self.discontinuity = true;
            }
            Item::Part(data, kind, at) => match kind {
                PartKind::Header => {
                    self.finish_here();
                    if self.header.is_some() {
                        self.discontinuity = true;
                    }
                    self.header = Some(data);
                }
                PartKind::Tables => self.header = Some(data),
                PartKind::Key { pts, .. } => self.key(data, pts, at),
                PartKind::Delta | PartKind::Frame(_) => self.append(&data, at),
            },
        }
    }

    fn key(&mut self, data: Bytes, pts: Option<u64>, at: i64) {
        let target = self.archives.segment_secs;
        if let Some(o) = &self.open {
            let wall = (at - o.arrived_ms).max(0) as f64 / 1000.0;
            let secs = hls::span(o.start_pts, pts, wall, target);
            if secs + 0.001 < target {
                self.append(&data, at);
                return;
            }
            let o = self.open.take().expect("checked above");
            self.finish(o, secs);
        }
        self.start(data, pts, at);
    }

    fn start(&mut self, data: Bytes, pts: Option<u64>, at: i64) {
        let Some(header) = self.header.clone() else {
            return;
        };
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            self.archives.dropped(self.id, data.len() as u64);
            return;
        }
        self.retry_at = None;
        let need = self.last_bytes.max(data.len() as u64) * 2;
        if let Err(why) = self.archives.make_room(need) {
            self.fail(why, data.len() as u64);
            return;
        }
        // Contiguous segments are named end to end (their durations come from the
        // timestamps); after a gap, or if that drifted from the clock, from the clock. A
        // start never goes back before the last segment's end.
        let last_end = self.archives.last_end(self.id);
        let start_ms = match last_end {
            Some(end) if !self.discontinuity && (at - end).abs() <= CONTIGUOUS_MS => end,
            Some(end) => at.max(end),
            None => at,
        };
        let dir = self.archives.channel_dir(self.id);
        let part = dir.join(format!("{start_ms}.part"));
        let opened = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::File::create(&part))
            .map(|f| std::io::BufWriter::with_capacity(1024 * 1024, f))
            .and_then(|mut f| {
                f.write_all(&header)?;
                f.write_all(&data)?;
                Ok(f)
            });
        match opened {
            Ok(file) => {
                self.open = Some(Open {
                    file,
                    part,
                    start_ms,
                    arrived_ms: at,
                    last_ms: at,
                    start_pts: pts,
                    bytes: (header.len() + data.len()) as u64,
                    discontinuity: std::mem::take(&mut self.discontinuity),
                });
            }
            Err(e) => {
                remove(&part);
                let lost = (header.len() + data.len()) as u64;
                self.fail(format!("cannot write {}: {e}", part.display()), lost);
            }
        }
    }

    fn append(&mut self, data: &[u8], at: i64) {
        let Some(o) = &mut self.open else {
            // Waiting for a keyframe; after a failed write, this output is lost.
            if self.retry_at.is_some() {
                self.archives.dropped(self.id, data.len() as u64);
            }
            return;
        };
        o.last_ms = at;
        o.bytes += data.len() as u64;
        if let Err(e) = o.file.write_all(data) {
            let o = self.open.take().expect("checked above");
            remove(&o.part);
            let why = format!("cannot write {}: {e}", o.part.display());
            self.fail(why, o.bytes);
            return;
        }
        if o.bytes > MAX_SEGMENT_BYTES {
            // No keyframe for far too long: keep what came, start again at the next one.
            self.finish_here();
            self.discontinuity = true;
        }
    }

    /// Finishes the open segment where its last piece arrived (the output stopped).
    fn finish_here(&mut self) {
        if let Some(o) = self.open.take() {
            let secs = (o.last_ms - o.arrived_ms).max(0) as f64 / 1000.0;
            if secs > 0.0 {
                self.finish(o, secs);
            } else {
                remove(&o.part);
            }
        }
    }

    fn finish(&mut self, mut o: Open, secs: f64) {
        if let Err(e) = o.file.flush() {
            remove(&o.part);
            self.fail(format!("cannot write {}: {e}", o.part.display()), o.bytes);
            return;
        }
        drop(o.file);
        let e = Entry {
            start_ms: o.start_ms,
            dur_ms: (secs * 1000.0).round().clamp(1.0, f64::from(u32::MAX)) as u32,
            bytes: o.bytes,
            discontinuity: o.discontinuity,
        };
        let path = self.archives.path(self.id, &e);
        if let Err(err) = std::fs::rename(&o.part, &path) {
            remove(&o.part);
            self.fail(format!("cannot write {}: {err}", path.display()), o.bytes);
            return;
        }
        if !self.archives.add(self.id, e) {
            remove(&path);
        }
        self.last_bytes = o.bytes;
    }

    fn fail(&mut self, why: String, lost: u64) {
        self.archives.failed(self.id, why, lost);
        self.discontinuity = true;
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
    }

    /// The queue ended (the channel stopped archiving, or shutdown): keep what came.
    fn close(mut self) {
        self.finish_here();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, max: Option<u64>) -> EngineConfig {
        EngineConfig {
            archive_dir: Some(dir.to_path_buf()),
            archive_max_bytes: max,
            archive_segment_secs: 1.0,
            ..EngineConfig::default()
        }
    }

    fn fake(dir: &Path, id: u32, start_ms: i64, bytes: usize) {
        let d = dir.join(id.to_string());
        std::fs::create_dir_all(&d).unwrap();
        let e = Entry {
            start_ms,
            dur_ms: 1000,
            bytes: 0,
            discontinuity: false,
        };
        std::fs::write(d.join(e.file_name()), vec![0x47; bytes]).unwrap();
    }

    fn starts(a: &Archives, id: u32) -> Vec<i64> {
        a.window(id, i64::MIN, i64::MAX)
            .iter()
            .map(|e| e.start_ms)
            .collect()
    }

    #[test]
    fn the_writer_cuts_at_keyframes_and_a_restart_finds_its_segments() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archives::open(&settings(dir.path(), None)).unwrap();
        let q = a.start_writer(7).unwrap();
        assert!(a.start_writer(7).is_none(), "one writer per channel");
        let b = |s: &'static [u8]| Bytes::from_static(s);
        let t0 = 1_800_000_000_000;
        q.push(vec![(b(b"delta before the header"), PartKind::Delta)], t0);
        q.push(vec![(b(b"HH"), PartKind::Header)], t0);
        // Keyframes every 0.5 s of PTS: segments of 1 s (the target), contiguous names.
        for i in 0..5u64 {
            let pts = 90_000 + i * 45_000;
            let at = t0 + i as i64 * 500;
            q.push(
                vec![
                    (b(b"TT"), PartKind::Tables),
                    (
                        b(b"K"),
                        PartKind::Key {
                            pts: Some(pts),
                            dts: None,
                        },
                    ),
                ],
                at,
            );
            q.push(vec![(b(b"dd"), PartKind::Delta)], at + 400);
        }
        a.stop_writers(|_| false);
        assert!(!a.recording(7));
        assert_eq!(starts(&a, 7), [t0, t0 + 1000, t0 + 2000]);
        let first = a.find(7, t0).unwrap();
        assert_eq!(first.dur_ms, 1000);
        assert!(first.discontinuity, "the first after a start");
        assert!(!a.find(7, t0 + 1000).unwrap().discontinuity);
        let data = std::fs::read(a.path(7, &first)).unwrap();
        assert_eq!(
            &data[..],
            b"TTKddKdd",
            "the tables before its keyframe, then whole GOPs"
        );
        let second = std::fs::read(a.path(7, &a.find(7, t0 + 1000).unwrap())).unwrap();
        assert_eq!(
            &second[..],
            b"TTKddKdd",
            "each segment starts with its tables"
        );
        // The writer stopped: its open segment ends with its last piece.
        assert_eq!(a.find(7, t0 + 2000).map(|e| e.dur_ms), Some(400));

        // A crash leaves a .part: the rebuilt index ignores and removes it.
        let part = dir.path().join("7").join(format!("{}.part", t0 + 9000));
        std::fs::write(&part, b"half").unwrap();
        std::fs::write(dir.path().join("7").join("notes.txt"), b"x").unwrap();
        let again = Archives::open(&settings(dir.path(), None)).unwrap();
        assert_eq!(starts(&again, 7), starts(&a, 7));
        assert_eq!(again.total_bytes(), a.total_bytes());
        assert!(!part.exists());
        let st = again.status(7, 1).unwrap();
        assert_eq!((st.state, st.segments), ("stopped", 3));
    }

    #[test]
    fn the_budget_removes_the_oldest_segments_across_channels_first() {
        let dir = tempfile::tempdir().unwrap();
        fake(dir.path(), 1, 1000, 10);
        fake(dir.path(), 1, 3000, 10);
        fake(dir.path(), 2, 2000, 10);
        let a = Archives::open(&settings(dir.path(), Some(25))).unwrap();
        assert_eq!(a.total_bytes(), 30);
        a.make_room(10).unwrap();
        assert_eq!(starts(&a, 1), [3000], "channel 1's oldest went first");
        assert!(starts(&a, 2).is_empty(), "then channel 2's");
        assert!(!dir.path().join("1").join("1000-1000.ts").exists());
        assert!(!dir.path().join("2").join("2000-1000.ts").exists());
        assert!(dir.path().join("1").join("3000-1000.ts").exists());
        let err = a.make_room(100).unwrap_err();
        assert!(err.contains("archive_max_bytes"), "{err}");
        assert_eq!(a.total_bytes(), 0, "it emptied what it could first");
    }

    #[test]
    fn segments_older_than_their_channels_window_expire() {
        let dir = tempfile::tempdir().unwrap();
        let hour = 3_600_000;
        let now = 100 * hour;
        for h in [97, 98, 99] {
            fake(dir.path(), 1, h * hour, 1);
            fake(dir.path(), 2, h * hour, 1);
        }
        fake(dir.path(), 3, 60 * hour, 1);
        fake(dir.path(), 3, 90 * hour, 1);
        let a = Archives::open(&settings(dir.path(), None)).unwrap();
        // Channel 1 keeps 2 h; channel 2 keeps 1 h; channel 3 no longer archives: it keeps
        // a day (the longest window here is shorter).
        a.expire(now, |id| match id {
            1 => Some(2),
            2 => Some(1),
            _ => None,
        });
        assert_eq!(starts(&a, 1), [98 * hour, 99 * hour]);
        assert_eq!(starts(&a, 2), [99 * hour]);
        assert_eq!(starts(&a, 3), [90 * hour]);
    }

    #[test]
    fn a_full_queue_drops_up_to_the_next_keyframe_and_marks_the_gap() {
        let q = Queue::default();
        let mib = Bytes::from(vec![0u8; 1 << 20]);
        let parts = |n: usize| vec![(mib.clone(), PartKind::Delta); n];
        assert_eq!(q.push(parts(64), 0), 0);
        assert_eq!(q.push(parts(1), 0), 1 << 20, "over the bound");
        // The writer catches up; a delta still waits for the next keyframe.
        for _ in 0..40 {
            q.pop();
        }
        assert_eq!(q.push(parts(1), 0), 1 << 20);
        assert_eq!(
            q.push(
                vec![(
                    mib.clone(),
                    PartKind::Key {
                        pts: None,
                        dts: None,
                    }
                )],
                0
            ),
            0
        );
        q.close();
        let mut kinds = Vec::new();
        while let Some(item) = q.pop() {
            kinds.push(match item {
                Item::Gap => "gap",
                Item::Part(_, PartKind::Key { .. }, _) => "key",
                Item::Part(..) => "delta",
            });
        }
        assert_eq!(kinds.len(), 24 + 2, "{kinds:?}");
        assert_eq!(&kinds[kinds.len() - 2..], ["gap", "key"], "{kinds:?}");
    }
}
