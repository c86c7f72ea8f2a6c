//! libav's own log lines, through Amps' logger: an `av_log` callback that formats each
//! line, finds the channel it belongs to, maps its level, rate-limits it per channel and
//! keeps the last lines for the channel's status (`libav_log`), as `custom_ffmpeg` stderr
//! is kept. Without it, libav writes unrated lines such as
//! `[h264 @ 0x7f21…] error while decoding MB …` straight to stderr.
//!
//! The callback is global and called from any thread. The channel comes from a
//! thread-local set by the channel's worker ([`enter`]), or, for lines from libav's own
//! decoder threads, from the `opaque` field of the codec or format context that logs
//! ([`tag`] puts the channel there).

use crate::sync::lock;
use ffmpeg_next::ffi;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Lines logged per channel per [`WINDOW`]; the rest are counted, not written.
const BURST: u32 = 20;
const WINDOW: Duration = Duration::from_secs(10);
/// Lines kept for a channel's status.
const TAIL: usize = 20;

thread_local! {
    static CHANNEL: Cell<Option<u32>> = const { Cell::new(None) };
}

/// While held, libav lines from this thread belong to a channel.
pub struct Scope(Option<u32>);

/// Marks this thread's libav lines as channel `id`'s until the scope is dropped.
pub fn enter(id: u32) -> Scope {
    Scope(CHANNEL.with(|c| c.replace(Some(id))))
}

impl Drop for Scope {
    fn drop(&mut self) {
        CHANNEL.with(|c| c.set(self.0));
    }
}

/// The `opaque` value that marks a libav context as channel `id`'s.
pub fn tag(id: u32) -> *mut c_void {
    (id as usize + 1) as *mut c_void
}

#[derive(Debug)]
struct ChannelLog {
    tail: VecDeque<String>,
    window: Instant,
    written: u32,
    suppressed: u64,
}

fn logs() -> &'static Mutex<HashMap<Option<u32>, ChannelLog>> {
    static LOGS: OnceLock<Mutex<HashMap<Option<u32>, ChannelLog>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The last libav lines of channel `id`, oldest first.
pub fn tail(id: u32) -> Vec<String> {
    lock(logs())
        .get(&Some(id))
        .map(|l| l.tail.iter().cloned().collect())
        .unwrap_or_default()
}

/// Forgets a channel's lines (it was removed).
pub fn forget(id: u32) {
    lock(logs()).remove(&Some(id));
}

/// Installs the callback. libav's level stays `warning`: informational lines cost a
/// format each and say nothing an operator needs.
pub fn install() {
    // SAFETY: setting libav's global log callback and level; `callback` is thread-safe.
    unsafe {
        ffi::av_log_set_level(ffi::AV_LOG_WARNING);
        ffi::av_log_set_callback(Some(callback));
    }
}

/// What a line does to the log: whether it is written, and how many were suppressed
/// before it (reported once a new window starts). Pure, for the tests.
fn admit(log: &mut ChannelLog, now: Instant) -> (bool, u64) {
    let mut reported = 0;
    if now.duration_since(log.window) >= WINDOW {
        reported = std::mem::take(&mut log.suppressed);
        log.window = now;
        log.written = 0;
    }
    if log.written < BURST {
        log.written += 1;
        (true, reported)
    } else {
        log.suppressed += 1;
        (false, reported)
    }
}

/// The name of the libav component behind a log context, and the channel its `opaque`
/// names (codec and format contexts only).
///
/// # Safety
/// `avcl` is null or points to a struct whose first field is an `AVClass` pointer, as
/// every `av_log` context does.
unsafe fn context(avcl: *mut c_void) -> (String, Option<u32>) {
    if avcl.is_null() {
        return (String::new(), None);
    }
    let class = *(avcl as *const *const ffi::AVClass);
    if class.is_null() {
        return (String::new(), None);
    }
    let class_name = CStr::from_ptr((*class).class_name).to_string_lossy();
    let name = match (*class).item_name {
        Some(f) => {
            let n = f(avcl);
            if n.is_null() {
                class_name.to_string()
            } else {
                CStr::from_ptr(n).to_string_lossy().into_owned()
            }
        }
        None => class_name.to_string(),
    };
    let opaque = match class_name.as_ref() {
        "AVCodecContext" => (*(avcl as *mut ffi::AVCodecContext)).opaque,
        "AVFormatContext" => (*(avcl as *mut ffi::AVFormatContext)).opaque,
        _ => std::ptr::null_mut(),
    };
    let channel = (opaque as usize)
        .checked_sub(1)
        .and_then(|v| u32::try_from(v).ok());
    (name, channel)
}

unsafe extern "C" fn callback(
    avcl: *mut c_void,
    level: c_int,
    fmt: *const c_char,
    vl: *mut ffi::__va_list_tag,
) {
    if level > ffi::av_log_get_level() {
        return;
    }
    let mut buf = [0 as c_char; 1024];
    let mut prefix: c_int = 0;
    ffi::av_log_format_line2(avcl, level, fmt, vl, buf.as_mut_ptr(), 1024, &mut prefix);
    let line = CStr::from_ptr(buf.as_ptr()).to_string_lossy();
    let line = line.trim_end();
    if line.is_empty() {
        return;
    }
    let (component, from_context) = context(avcl);
    let channel = CHANNEL.with(Cell::get).or(from_context);
    record(channel, level, &component, line);
}

fn record(channel: Option<u32>, level: c_int, component: &str, line: &str) {
    // libav names URLs in some lines ("Opening '...' for reading"): providers' carry
    // their account.
    let line = &*crate::auth::redact_text(line);
    let now = Instant::now();
    let (write, suppressed) = {
        let mut logs = lock(logs());
        let log = logs.entry(channel).or_insert_with(|| ChannelLog {
            tail: VecDeque::new(),
            window: now,
            written: 0,
            suppressed: 0,
        });
        if log.tail.len() == TAIL {
            log.tail.pop_front();
        }
        log.tail.push_back(format!("[{component}] {line}"));
        admit(log, now)
    };
    let ch = channel.map_or_else(|| "-".to_owned(), |c| c.to_string());
    if suppressed > 0 {
        tracing::warn!(channel = %ch, suppressed, "libav lines were not logged (rate limit)");
    }
    if !write {
        return;
    }
    match level {
        l if l <= ffi::AV_LOG_FATAL => {
            tracing::error!(target: "amps::libav", channel = %ch, component, "{line}")
        }
        l if l <= ffi::AV_LOG_ERROR => {
            tracing::warn!(target: "amps::libav", channel = %ch, component, "{line}")
        }
        l if l <= ffi::AV_LOG_WARNING => {
            tracing::info!(target: "amps::libav", channel = %ch, component, "{line}")
        }
        _ => tracing::debug!(target: "amps::libav", channel = %ch, component, "{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_rate_limited_per_window_and_counted() {
        let t0 = Instant::now();
        let mut log = ChannelLog {
            tail: VecDeque::new(),
            window: t0,
            written: 0,
            suppressed: 0,
        };
        let written = (0..100).filter(|_| admit(&mut log, t0).0).count();
        assert_eq!(written, BURST as usize);
        assert_eq!(log.suppressed, 80);
        // The next window writes again and reports what was held back, once.
        assert_eq!(admit(&mut log, t0 + WINDOW), (true, 80));
        assert_eq!(admit(&mut log, t0 + WINDOW), (true, 0));
    }

    #[test]
    fn libav_lines_reach_the_channel_tail() {
        crate::libav::init();
        let _scope = enter(4_000_001);
        let msg = c"bad thing %d";
        // SAFETY: a plain av_log call with a matching argument.
        unsafe {
            ffi::av_log(
                std::ptr::null_mut(),
                ffi::AV_LOG_ERROR,
                msg.as_ptr(),
                42 as c_int,
            )
        };
        let tail = tail(4_000_001);
        assert_eq!(tail.last().map(String::as_str), Some("[] bad thing 42"));
        forget(4_000_001);
        assert!(super::tail(4_000_001).is_empty());
    }
}
