//! A killable HTTP file server on loopback: the "provider" in reconnect tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Upstream {
    pub port: u16,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    pub requests: Arc<AtomicUsize>,
    /// Every path asked for, in order.
    pub paths: Arc<Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    /// Serves files of `dir` on 127.0.0.1:`port` (0: any free port).
    pub fn start(dir: PathBuf, port: u16) -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind upstream");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (s, c, r, log) = (stop.clone(), conns.clone(), requests.clone(), paths.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        c.lock().unwrap().push(stream.try_clone().unwrap());
                        r.fetch_add(1, Ordering::SeqCst);
                        let dir = dir.clone();
                        let s = s.clone();
                        let log = log.clone();
                        std::thread::spawn(move || serve(stream, dir, s, log));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Upstream {
            port,
            stop,
            conns,
            requests,
            paths,
            handle: Some(handle),
        }
    }

    pub fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }

    /// Closes the listener and every open connection (a provider going away).
    pub fn kill(mut self) -> u16 {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.port
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// Reads a request's line and headers; its target without the leading `/`.
pub fn request_target(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    Some(
        line.split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .trim_start_matches('/')
            .to_owned(),
    )
}

fn serve(mut stream: TcpStream, dir: PathBuf, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<String>>>) {
    let Some(target) = request_target(&stream) else {
        return;
    };
    let (path, query) = target
        .split_once('?')
        .map(|(p, q)| (p.to_owned(), q.to_owned()))
        .unwrap_or((target.clone(), String::new()));
    log.lock().unwrap().push(path.clone());
    // `?live=SECONDS`: send the file spread over that many seconds, like a live provider.
    let live: Option<f64> = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("live="))
        .and_then(|v| v.parse().ok());
    // `?stall_after=BYTES`: after that many bytes, go silent but keep the connection open.
    let stall_after: Option<u64> = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("stall_after="))
        .and_then(|v| v.parse().ok());
    let file = dir.join(&path);
    let Ok(mut f) = std::fs::File::open(&file).map_err(|_| ()).and_then(|f| {
        if path.contains("..") {
            Err(())
        } else {
            Ok(f)
        }
    }) else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
    };
    let len = f.metadata().unwrap().len();
    let ct = if path.ends_with(".m3u8") {
        "application/vnd.apple.mpegurl"
    } else {
        "video/mp2t"
    };
    let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n");
    let mut buf = vec![0u8; if live.is_some() { 16 * 1024 } else { 64 * 1024 }];
    let t0 = std::time::Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if stall_after.is_some_and(|n| sent >= n) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if let Some(secs) = live {
            let due = Duration::from_secs_f64(sent as f64 / len as f64 * secs);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
                sent += n as u64;
            }
        }
    }
}
