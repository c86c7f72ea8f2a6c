//! Recordings (DVR): a channel's output between two times, saved as one `.ts` file with a
//! JSON sidecar in `engine.recordings_dir`.
//!
//! A recording of a channel with an archive is read from the archive (it can start in the
//! past, and needs no reader of its own); any other is one more reader of the channel's
//! hub, started at `start` even with no viewer (the engine's always-on task runs the
//! schedule). The sidecars are the state: scheduled recordings survive restarts, and one
//! that a restart interrupted is taken up again (from the archive: whole again; from the
//! hub: appended to, after the gap). Each recording checks the free space for its
//! expected size before it starts and never writes more than the space it checked for.

use super::archive::{self, Archives};
use super::catchup::{self, Piece};
use crate::error::{Error, ErrorKind};
use crate::sync::lock;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest recording.
pub const MAX_HOURS: i64 = 24;
/// Space left free beside recordings.
const MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;
/// The bit rate assumed for a channel whose rate is not known yet.
const DEFAULT_KBPS: u64 = 8_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Scheduled,
    Recording,
    Completed,
    Failed,
}

/// One recording, as the API shows it and its sidecar keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    pub id: u32,
    pub stream_id: u32,
    pub title: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where it is read from: `archive` or `live` (set when it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default)]
    pub bytes: u64,
    /// Seconds of the channel it holds.
    #[serde(default)]
    pub duration_secs: f64,
    pub created: DateTime<Utc>,
}

/// The recordings whose sidecars are in `dir`, by id (read only: `amps list` uses it
/// without a running server). Sidecars that are not valid are skipped with a warning.
pub fn read_all(dir: &Path) -> Vec<Recording> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_suffix(".json")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        match serde_json::from_str::<Recording>(&text) {
            Ok(r) if r.id == id => out.push(r),
            Ok(_) | Err(_) => {
                tracing::warn!(file = %name, "ignoring a recording sidecar that is not valid")
            }
        }
    }
    out.sort_by_key(|r| r.id);
    out
}

/// Every recording of `engine.recordings_dir`.
#[derive(Debug)]
pub struct Recordings {
    dir: PathBuf,
    list: Mutex<BTreeMap<u32, Recording>>,
    /// Stop flags of the recordings being made.
    active: Mutex<HashMap<u32, Arc<AtomicBool>>>,
    /// Bytes written so far by the recordings being made.
    written: Mutex<HashMap<u32, Arc<AtomicU64>>>,
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Internal, format!("{what}: {e}"))
}

impl Recordings {
    /// The recordings of `dir` (created if missing), from their sidecars. One that was
    /// being made when Amps stopped is scheduled again: it is taken up at once.
    pub fn open(dir: &Path) -> Result<Arc<Recordings>, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io(&format!("engine.recordings_dir {}", dir.display()), e))?;
        std::fs::read_dir(dir)
            .map_err(|e| io(&format!("engine.recordings_dir {}", dir.display()), e))?;
        let list: BTreeMap<u32, Recording> = read_all(dir)
            .into_iter()
            .map(|mut r| {
                if r.state == State::Recording {
                    r.state = State::Scheduled;
                }
                (r.id, r)
            })
            .collect();
        tracing::info!(dir = %dir.display(), recordings = list.len(), "recordings ready");
        Ok(Arc::new(Recordings {
            dir: dir.to_path_buf(),
            list: Mutex::new(list),
            active: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
        }))
    }

    /// The media file of recording `id`.
    pub fn path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("{id}.ts"))
    }

    fn save(&self, r: &Recording) -> Result<(), Error> {
        let path = self.dir.join(format!("{}.json", r.id));
        let tmp = self.dir.join(format!("{}.json.tmp", r.id));
        let text = serde_json::to_vec_pretty(r)
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| io(&format!("cannot save {}", path.display()), e))
    }

    /// Every recording, newest first, with the bytes written so far.
    pub fn list(&self) -> Vec<Recording> {
        let written = lock(&self.written);
        let mut v: Vec<Recording> = lock(&self.list)
            .values()
            .cloned()
            .map(|mut r| {
                if let Some(n) = written.get(&r.id) {
                    r.bytes = n.load(Ordering::Relaxed);
                }
                r
            })
            .collect();
        v.sort_by(|a, b| b.start.cmp(&a.start).then(b.id.cmp(&a.id)));
        v
    }

    pub fn get(&self, id: u32) -> Option<Recording> {
        self.list().into_iter().find(|r| r.id == id)
    }

    /// Adds a scheduled recording (the caller checked the stream and the times).
    pub fn create(
        &self,
        stream_id: u32,
        title: String,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Recording, Error> {
        let mut list = lock(&self.list);
        let id = list.keys().next_back().map_or(1, |n| n + 1);
        let r = Recording {
            id,
            stream_id,
            title,
            start,
            end,
            state: State::Scheduled,
            error: None,
            from: None,
            bytes: 0,
            duration_secs: 0.0,
            created: Utc::now(),
        };
        self.save(&r)?;
        list.insert(id, r.clone());
        Ok(r)
    }

    /// Removes recording `id` (stopping it if it is being made) and its files.
    pub fn delete(&self, id: u32) -> Result<Recording, Error> {
        let r = lock(&self.list)
            .remove(&id)
            .ok_or_else(|| Error::not_found(format!("no recording {id}")))?;
        if let Some(stop) = lock(&self.active).remove(&id) {
            stop.store(true, Ordering::SeqCst);
        }
        for p in [self.path(id), self.dir.join(format!("{id}.json"))] {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(io(&format!("cannot remove {}", p.display()), e));
                }
            }
        }
        Ok(r)
    }

    /// Applies `f` to recording `id` and saves it (nothing when it was deleted).
    fn update(&self, id: u32, f: impl FnOnce(&mut Recording)) {
        let mut list = lock(&self.list);
        if let Some(r) = list.get_mut(&id) {
            f(r);
            let r = r.clone();
            drop(list);
            if let Err(e) = self.save(&r) {
                tracing::warn!(recording = id, "{}", e.message());
            }
        }
    }

    /// Scheduled recordings whose start has come, marked as being made: the caller makes
    /// each (see [`Recordings::begin`]).
    pub fn due(&self, now: DateTime<Utc>) -> Vec<Recording> {
        let ids: Vec<u32> = lock(&self.list)
            .values()
            .filter(|r| r.state == State::Scheduled && r.start <= now)
            .map(|r| r.id)
            .collect();
        let mut out = Vec::new();
        for id in ids {
            self.update(id, |r| r.state = State::Recording);
            if let Some(r) = lock(&self.list).get(&id).cloned() {
                out.push(r);
            }
        }
        out
    }

    /// Starts making recording `r`: its stop flag and byte counter. None when it is being
    /// made already.
    pub fn begin(&self, r: &Recording, from: &str) -> Option<Job> {
        let mut active = lock(&self.active);
        if active.contains_key(&r.id) {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        active.insert(r.id, stop.clone());
        let written = Arc::new(AtomicU64::new(0));
        lock(&self.written).insert(r.id, written.clone());
        let from = from.to_owned();
        self.update(r.id, |x| x.from = Some(from));
        Some(Job {
            id: r.id,
            stream_id: r.stream_id,
            start_ms: r.start.timestamp_millis(),
            end_ms: r.end.timestamp_millis(),
            path: self.path(r.id),
            stop,
            written,
        })
    }

    /// Ends a job: completed with its duration, or failed with why.
    pub fn finish(&self, job: &Job, result: Result<f64, String>) {
        lock(&self.active).remove(&job.id);
        let bytes = lock(&self.written)
            .remove(&job.id)
            .map_or(0, |w| w.load(Ordering::Relaxed));
        self.update(job.id, |r| {
            r.bytes = bytes;
            match result {
                Ok(secs) => {
                    r.state = State::Completed;
                    r.duration_secs = (secs * 1000.0).round() / 1000.0;
                    r.error = None;
                }
                Err(why) => {
                    r.state = State::Failed;
                    r.error = Some(why);
                }
            }
        });
        match self.get(job.id) {
            Some(r) if r.state == State::Failed => tracing::warn!(
                recording = job.id,
                channel = job.stream_id,
                "recording failed: {}",
                r.error.unwrap_or_default()
            ),
            Some(r) => tracing::info!(
                recording = job.id,
                channel = job.stream_id,
                bytes = r.bytes,
                secs = r.duration_secs,
                "recording completed"
            ),
            None => {}
        }
    }

    /// The space a recording of `secs` seconds at `kbps` may use, checked against the
    /// free space of the folder: Err naming both when it does not fit.
    pub fn reserve(&self, secs: f64, kbps: Option<u64>) -> Result<u64, String> {
        let kbps = kbps.filter(|k| *k > 0).unwrap_or(DEFAULT_KBPS);
        let need = (secs.max(1.0) * kbps as f64 * 1000.0 / 8.0 * 1.25) as u64;
        let free = archive::free_bytes(&self.dir)
            .unwrap_or(u64::MAX)
            .saturating_sub(MIN_FREE_BYTES);
        if free < need {
            return Err(format!(
                "not enough disk space: the recording needs about {} MiB, {} MiB are free",
                need >> 20,
                free >> 20
            ));
        }
        // It may use what it checked for: the disk's free space then.
        Ok(free)
    }
}

/// A recording being made.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: u32,
    pub stream_id: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub path: PathBuf,
    pub stop: Arc<AtomicBool>,
    pub written: Arc<AtomicU64>,
}

impl Job {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Appends `data` to the file, within `limit` bytes in all.
    pub fn write(&self, file: &mut std::fs::File, data: &[u8], limit: u64) -> Result<(), String> {
        let n = self.written.load(Ordering::Relaxed);
        if n + data.len() as u64 > limit {
            return Err(format!(
                "stopped at {} MiB: the disk space the recording checked for is used up",
                n >> 20
            ));
        }
        file.write_all(data)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// The media seconds a hub reader received: from keyframe to keyframe by their PTS (the
/// wall clock where a PTS is missing or jumps), plus the wall time after the last one;
/// a gap (the reader joined again) adds nothing.
#[derive(Debug, Default)]
pub struct MediaTime {
    total: f64,
    /// The last keyframe's PTS and arrival (Unix ms), and the latest arrival.
    key: Option<(Option<u64>, i64)>,
    last_ms: i64,
    any: bool,
}

impl MediaTime {
    pub fn key(&mut self, pts: Option<u64>, at_ms: i64) {
        if let Some((prev, prev_ms)) = self.key {
            let wall = (at_ms - prev_ms).max(0) as f64 / 1000.0;
            self.total += super::hls::span(prev, pts, wall, 1.0);
        }
        self.key = Some((pts, at_ms));
        self.any = true;
    }

    pub fn seen(&mut self, at_ms: i64) {
        self.last_ms = at_ms;
    }

    pub fn gap(&mut self) {
        if let Some((_, k)) = self.key.take() {
            self.total += (self.last_ms - k).max(0) as f64 / 1000.0;
        }
    }

    /// None when no keyframe came at all.
    pub fn secs(mut self) -> Option<f64> {
        self.gap();
        self.any.then_some(self.total)
    }
}

/// Makes a recording from channel `job.stream_id`'s archive (blocking): the window from
/// the keyframe at or before its start to the first keyframe at or after its end,
/// following the archive while the end is still to come. The file is written anew (a
/// recording taken up after a restart is made whole again). Ok: seconds recorded.
pub fn from_archive(archives: &Archives, job: &Job, limit: u64) -> Result<f64, String> {
    let id = job.stream_id;
    let mut file = std::fs::File::create(&job.path)
        .map_err(|e| format!("cannot write {}: {e}", job.path.display()))?;
    job.written.store(0, Ordering::Relaxed);
    let late = || archive::now_ms() > job.end_ms + 2 * 60_000;
    // The start may be in the segment being written: wait for it.
    let window = loop {
        if job.stopped() {
            return Err("cancelled".into());
        }
        match catchup::window(archives, id, job.start_ms, Some(job.end_ms)) {
            Ok(Some(w)) => break w,
            Ok(None) if !late() => std::thread::sleep(Duration::from_millis(500)),
            Ok(None) => {
                return Err("the channel's archive stopped before the recording's start".into())
            }
            Err(e) => return Err(e.message().to_owned()),
        }
    };
    let mut covered = window.covered_ms;
    let mut last = window.last;
    for p in &window.pieces {
        copy(job, &mut file, p, limit)?;
    }
    if !window.complete {
        loop {
            if job.stopped() {
                return Err("cancelled".into());
            }
            match archives.after(id, last.start_ms) {
                Some(e) if e.start_ms >= job.end_ms => break,
                Some(e) => {
                    let p = catchup::segment_until(archives, id, &e, Some(job.end_ms))
                        .map_err(|e| e.message().to_owned())?;
                    copy(job, &mut file, &p, limit)?;
                    covered += e.end_ms().min(job.end_ms) - e.start_ms;
                    last = e;
                    if e.end_ms() >= job.end_ms {
                        break;
                    }
                }
                None if late() => {
                    return Err(format!(
                        "the channel's archive stopped at {} (the upstream is gone?)",
                        chrono::DateTime::from_timestamp_millis(last.end_ms())
                            .map_or_else(String::new, |t| t.to_rfc3339())
                    ))
                }
                None => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }
    file.sync_data()
        .map_err(|e| format!("cannot write {}: {e}", job.path.display()))?;
    Ok(covered.max(0) as f64 / 1000.0)
}

fn copy(job: &Job, file: &mut std::fs::File, p: &Piece, limit: u64) -> Result<(), String> {
    match p {
        Piece::Data(d) => job.write(file, d, limit),
        Piece::File { path, from, to } => {
            let mut src = std::fs::File::open(path)
                .map_err(|e| format!("the archive segment {} is gone: {e}", path.display()))?;
            src.seek(SeekFrom::Start(*from))
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut left = to - from;
            let mut buf = vec![0u8; 1024 * 1024];
            while left > 0 {
                let n = src
                    .read(&mut buf[..left.min(1024 * 1024) as usize])
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if n == 0 {
                    return Err(format!("{} ended early", path.display()));
                }
                job.write(file, &buf[..n], limit)?;
                left -= n as u64;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn sidecars_keep_recordings_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recordings::open(dir.path()).unwrap();
        let a = r
            .create(
                1,
                "News".into(),
                t("2026-12-02T20:00:00Z"),
                t("2026-12-02T21:00:00Z"),
            )
            .unwrap();
        let b = r
            .create(
                2,
                "Film".into(),
                t("2026-12-02T18:00:00Z"),
                t("2026-12-02T19:00:00Z"),
            )
            .unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        assert_eq!(
            r.due(t("2026-12-02T18:30:00Z"))
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            [2]
        );
        let job = r.begin(&r.get(2).unwrap(), "live").unwrap();
        assert!(r.begin(&r.get(2).unwrap(), "live").is_none(), "made once");
        job.written.store(1234, Ordering::Relaxed);
        assert_eq!(r.get(2).unwrap().bytes, 1234, "the size while it is made");
        std::fs::write(dir.path().join("junk.json"), b"{").unwrap();
        std::fs::write(dir.path().join("9.json"), b"{\"id\": 3}").unwrap();

        // A restart while recording 2 is being made: it is scheduled again, to be taken up.
        let again = Recordings::open(dir.path()).unwrap();
        let list = again.list();
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(again.get(2).unwrap().state, State::Scheduled);
        assert_eq!(again.get(2).unwrap().from.as_deref(), Some("live"));
        assert_eq!(again.get(1).unwrap(), a);

        r.finish(&job, Err("the upstream is gone".into()));
        let failed = r.get(2).unwrap();
        assert_eq!(
            (failed.state, failed.error.as_deref()),
            (State::Failed, Some("the upstream is gone"))
        );
        assert_eq!(failed.bytes, 1234);
        std::fs::write(r.path(1), b"x").unwrap();
        r.delete(1).unwrap();
        assert!(!r.path(1).exists() && !dir.path().join("1.json").exists());
        assert_eq!(r.delete(1).unwrap_err().kind(), ErrorKind::NotFound);
    }

    #[test]
    fn media_time_follows_the_keyframes_and_skips_gaps() {
        let mut m = MediaTime::default();
        // A backlog read at once (PTS 0 s, 1 s, 2 s all at t = 0), then live.
        m.key(Some(0), 0);
        m.key(Some(90_000), 0);
        m.key(Some(180_000), 0);
        m.seen(500);
        m.gap(); // 0.5 s after the last keyframe, then the channel restarted
        m.key(None, 10_000);
        m.key(None, 11_000);
        m.seen(11_250);
        let secs = m.secs().unwrap();
        assert!((secs - (2.0 + 0.5 + 1.0 + 0.25)).abs() < 1e-9, "{secs}");
        assert_eq!(MediaTime::default().secs(), None);
    }

    #[test]
    fn a_recording_never_writes_more_than_it_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recordings::open(dir.path()).unwrap();
        let err = r
            .reserve(3600.0 * 24.0 * 365.0 * 100.0, Some(1_000_000))
            .unwrap_err();
        assert!(err.starts_with("not enough disk space"), "{err}");
        let rec = r
            .create(
                1,
                "x".into(),
                t("2026-12-02T20:00:00Z"),
                t("2026-12-02T21:00:00Z"),
            )
            .unwrap();
        let job = r.begin(&rec, "live").unwrap();
        let mut f = std::fs::File::create(&job.path).unwrap();
        job.write(&mut f, &[0x47; 100], 150).unwrap();
        let err = job.write(&mut f, &[0x47; 100], 150).unwrap_err();
        assert!(err.contains("checked for is used up"), "{err}");
        assert_eq!(std::fs::metadata(&job.path).unwrap().len(), 100);
    }
}
