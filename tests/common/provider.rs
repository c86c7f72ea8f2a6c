//! A provider on loopback for the import tests: answers from a table of paths the test
//! can change while it runs (a refresh that reorders, a provider that goes down), serves
//! real MPEG-TS at its real-time rate for stream paths, and counts the stream connections
//! open at once (the account's limit).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct Shared {
    /// "path?query" or "path" -> body.
    bodies: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    /// Paths under this prefix are live streams of `ts`.
    stream_prefix: Arc<Mutex<Option<String>>>,
    ts: Arc<Mutex<Option<PathBuf>>>,
    open_streams: Arc<AtomicUsize>,
    max_open_streams: Arc<AtomicUsize>,
    stream_requests: Arc<Mutex<Vec<String>>>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

pub struct Provider {
    pub port: u16,
    shared: Shared,
}

impl Provider {
    pub fn start() -> Provider {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Shared::default();
        let s = shared.clone();
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        if s.down.load(Ordering::SeqCst) {
                            drop(stream); // refused at once, like a dead host
                            continue;
                        }
                        s.conns.lock().unwrap().push(stream.try_clone().unwrap());
                        let s = s.clone();
                        std::thread::spawn(move || serve(stream, s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Provider { port, shared }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answers `key` ("path" or "path?query", without the leading slash) with `body`.
    pub fn set(&self, key: &str, body: Vec<u8>) {
        self.shared
            .bodies
            .lock()
            .unwrap()
            .insert(key.to_owned(), body);
    }

    /// Serves `ts` at its real-time rate (looped) for every path under `prefix`.
    pub fn streams(&self, prefix: &str, ts: PathBuf) {
        *self.shared.stream_prefix.lock().unwrap() = Some(prefix.to_owned());
        *self.shared.ts.lock().unwrap() = Some(ts);
    }

    /// The most stream connections that were open at once.
    pub fn max_open_streams(&self) -> usize {
        self.shared.max_open_streams.load(Ordering::SeqCst)
    }

    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::SeqCst)
    }

    pub fn stream_requests(&self) -> Vec<String> {
        self.shared.stream_requests.lock().unwrap().clone()
    }

    /// Goes down (every connection cut, new ones refused) or comes back.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            for c in self.shared.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.set_down(true);
    }
}

fn serve(mut stream: TcpStream, s: Shared) {
    let Some(target) = super::upstream::request_target(&stream) else {
        return;
    };
    let path = target.split('?').next().unwrap_or("").to_owned();
    let body = {
        let b = s.bodies.lock().unwrap();
        b.get(&target).or_else(|| b.get(&path)).cloned()
    };
    if let Some(body) = body {
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(&body);
        return;
    }
    let prefix = s.stream_prefix.lock().unwrap().clone();
    let ts = s.ts.lock().unwrap().clone();
    match (prefix, ts) {
        (Some(p), Some(ts)) if path.starts_with(&p) => {
            s.stream_requests.lock().unwrap().push(path.clone());
            let open = s.open_streams.fetch_add(1, Ordering::SeqCst) + 1;
            s.max_open_streams.fetch_max(open, Ordering::SeqCst);
            // The connection counts until the client closes it: a thread that waits for
            // that (the writer would notice only at its next write).
            let closed = Arc::new(AtomicBool::new(false));
            let (c, counter, mut r) = (
                closed.clone(),
                s.open_streams.clone(),
                stream.try_clone().unwrap(),
            );
            std::thread::spawn(move || {
                let mut b = [0u8; 256];
                while matches!(r.read(&mut b), Ok(n) if n > 0) {}
                if !c.swap(true, Ordering::SeqCst) {
                    counter.fetch_sub(1, Ordering::SeqCst);
                }
            });
            live(&mut stream, &ts, &s.stop, &closed);
            if !closed.swap(true, Ordering::SeqCst) {
                s.open_streams.fetch_sub(1, Ordering::SeqCst);
            }
            let _ = stream.shutdown(Shutdown::Both);
        }
        _ => {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    }
}

/// Sends `ts` in a loop at 1.5 Mbit/s (about its rate) until the client goes away.
fn live(stream: &mut TcpStream, ts: &std::path::Path, stop: &AtomicBool, closed: &AtomicBool) {
    let data = std::fs::read(ts).unwrap();
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: video/mp2t\r\nconnection: close\r\n\r\n");
    let t0 = Instant::now();
    let mut sent = 0usize;
    let rate = 1_500_000.0 / 8.0;
    // A head start, like a provider's buffer: a player starts at once.
    let burst = 256 * 1024;
    let mut at = 0usize;
    while !stop.load(Ordering::SeqCst) && !closed.load(Ordering::SeqCst) {
        let due = Duration::from_secs_f64(sent.saturating_sub(burst) as f64 / rate);
        if let Some(w) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(w.min(Duration::from_millis(50)));
            continue;
        }
        let n = (16 * 1024).min(data.len() - at);
        if stream.write_all(&data[at..at + n]).is_err() {
            return;
        }
        sent += n;
        at = (at + n) % data.len();
    }
}
