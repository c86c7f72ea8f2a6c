//! Black-box test harness: runs the real `amps` binary on 127.0.0.1:0 with a config written
//! by the test, and talks to it over real HTTP.
#![allow(dead_code)]

pub mod browser;
pub mod certs;
pub mod media;
pub mod nginx;
pub mod provider;
pub mod subs;
pub mod ts;
pub mod upstream;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-0123456789";

/// A config with three profiles and three channels (a generated one, an unreachable one,
/// a custom command), token [`TOKEN`].
pub fn basic_config() -> String {
    format!(
        "server:\n  auth_token: {TOKEN}\nffmpeg_profiles:\n  relay: {{video_codec: copy, audio_codec: copy}}\n  x264: {{video_codec: libx264, video_bitrate: 1000k, audio_codec: aac}}\n  light: {{video_codec: mpeg2video, audio_codec: mp2}}\nstreams:\n  - {{id: 1, name: One, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]', ffmpeg_profile: light, channel_number: 2}}\n  - {{id: 2, name: Two, source: 'http://127.0.0.1:9/two.ts', ffmpeg_profile: x264, channel_number: 1}}\n  - {{id: 3, name: Cmd, source: 'x', custom_ffmpeg: 'ffmpeg -i {{source}} -f mpegts pipe:1'}}\n"
    )
}

pub struct Server {
    child: Child,
    pub addr: String,
    pub stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Server {
    pub fn start(config: &str) -> Server {
        Server::start_with(config, &[], &[])
    }

    /// Starts `amps serve` and waits for its "listening on" line.
    pub fn start_with(config: &str, env: &[(&str, &str)], args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_amps"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&path)
            .arg("--port")
            .arg("0")
            .args(args)
            .env_remove("AMPS_TOKEN")
            .env_remove("AMPS_HOST")
            .env_remove("AMPS_PORT")
            .env_remove("AMPS_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn amps");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("listening on ") {
                    let _ = tx.send(a.to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("amps did not start: {}", stderr.lock().unwrap());
            }
        };
        Server {
            child,
            addr,
            stderr,
            _dir: dir,
        }
    }

    /// The config file the server was started with (tests rewrite it to test reloads).
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("config.yaml")
    }

    /// Sends a signal (`HUP`, `TERM`, `KILL`...) to the server.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Any request; `token` goes in the X-Amps-Token header when given.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        let (status, headers, body) =
            self.request_bytes(method, path, headers, body, Duration::from_secs(10));
        Resp {
            status,
            headers,
            body: String::from_utf8(body).unwrap_or_default(),
        }
    }

    /// A GET whose body may be binary (segments, images): status, headers, body.
    pub fn get_bytes(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        self.request_bytes("GET", path, headers, None, Duration::from_secs(30))
    }

    fn request_bytes(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
        timeout: Duration,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut req = ureq::request(method, &self.url(path)).timeout(timeout);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let r = match body {
            Some(b) => req.send_string(b),
            None => req.call(),
        };
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .map(|n| {
                let v = resp.header(&n).unwrap_or("").to_owned();
                (n, v)
            })
            .collect();
        // At most 10 MB (a live stream never ends; the read timeout ends it too).
        let mut body = Vec::new();
        let _ = resp
            .into_reader()
            .take(10 * 1024 * 1024)
            .read_to_end(&mut body);
        (status, headers, body)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[("X-Amps-Token", TOKEN)], None)
    }

    pub fn send_json(&self, method: &str, path: &str, body: &str) -> Resp {
        self.request(
            method,
            path,
            &[
                ("X-Amps-Token", TOKEN),
                ("Content-Type", "application/json"),
            ],
            Some(body),
        )
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of `/stream/<id>` that reads for a while.
pub struct Viewer {
    reader: Box<dyn Read + Send>,
    pub status: u16,
}

impl Viewer {
    /// Opens any stream URL; Err(status) when it is refused.
    pub fn open_url(url: &str) -> Result<Viewer, u16> {
        let agent = ureq::AgentBuilder::new()
            .timeout_read(Duration::from_secs(3))
            .build();
        match agent.get(url).call() {
            Ok(resp) => Ok(Viewer {
                status: resp.status(),
                reader: Box::new(resp.into_reader()),
            }),
            Err(ureq::Error::Status(code, _)) => Err(code),
            Err(e) => panic!("GET {url}: {e}"),
        }
    }

    pub fn open(server: &Server, id: u32) -> Viewer {
        let url = server.url(&format!("/stream/{id}?token={TOKEN}"));
        let agent = ureq::AgentBuilder::new()
            .timeout_read(Duration::from_secs(3))
            .build();
        let resp = agent
            .get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status();
        assert_eq!(resp.content_type(), "video/mp2t");
        Viewer {
            reader: Box::new(resp.into_reader()),
            status,
        }
    }

    /// Reads for `dur` (or until the stream ends); returns the bytes.
    pub fn read_for(&mut self, dur: Duration) -> Vec<u8> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while t0.elapsed() < dur {
            match self.reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::TimedOut
                        || e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        out
    }

    /// Whether the stream has ended within `dur` (reads and discards until then).
    pub fn ends_within(&mut self, dur: Duration) -> bool {
        let t0 = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        while t0.elapsed() < dur {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::TimedOut
                        || e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// Writes bytes to a file in a fresh temp dir and returns its path (the dir is leaked).
pub fn save(bytes: &[u8], name: &str) -> std::path::PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Threads of process `pid` whose name starts with `prefix`.
pub fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Number of threads and open file descriptors of `pid`.
pub fn threads_and_fds(pid: u32) -> (usize, usize) {
    let count = |p: String| std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
    (
        count(format!("/proc/{pid}/task")),
        count(format!("/proc/{pid}/fd")),
    )
}

/// PIDs of live (non-zombie) processes whose parent is `ppid` and whose name is `name`.
pub fn children_named(ppid: u32, name: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let comm = &stat[stat.find('(').unwrap() + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        if comm == name && fields[0] != "Z" && fields[1].parse::<u32>().ok() == Some(ppid) {
            v.push(pid);
        }
    }
    v
}

/// Runs `cmd` with `input` on its standard input; its output.
pub fn pipe(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (./scripts/setup installs the test tools)"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A TCP port free on loopback right now (for helper servers the tests start).
/// A loopback TCP port that is free now and that the kernel will not hand to a program
/// binding port 0 meanwhile: it is taken below the ephemeral range (a port from port 0,
/// freed and bound again later, raced with the server's own port-0 listener). Each call
/// in this process gets another one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (base, span) = (10_000u16, low.saturating_sub(10_000).max(1000));
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % u32::from(span)) as u16 + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {low}");
}

/// Whether process `pid` is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rfind(')')
                .map(|c| &s[c + 2..c + 3] != "Z")
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Polls `f` every 50 ms until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Runs `amps <args>` to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_amps"))
        .args(args)
        .env_remove("AMPS_TOKEN")
        .env_remove("AMPS_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
