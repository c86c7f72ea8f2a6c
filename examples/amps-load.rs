//! The load tool: drives a real `amps serve` over loopback and measures what a home server
//! cares about, each next to the ffmpeg CLI doing the same job in the same run.
//!
//!   cargo build --release && cargo run --release --example amps-load -- [--quick]
//!
//! Prints a table and writes JSON (`--json PATH`, default `target/amps-load.json`):
//! - cold start: request to first byte and to first keyframe, copy and transcode, from a
//!   local HTTP TS source and from a file, vs the ffmpeg CLI spawned for the same job;
//! - warm join: a new client of a running channel to its first keyframe;
//! - fan-out: N clients of one 8 Mbit/s channel: delivered rate per client, stalls, server
//!   CPU per GB sent (vs one ffmpeg per client), resident memory per client;
//! - transcode efficiency: CPU and wall time of the same transcode in-process vs the CLI
//!   writing to a pipe read by a relay;
//! - memory: idle server, per idle channel, per running relay and transcode channel;
//! - `--zap-only`: zap on a live upstream (bytes at the stream's own rate), mid-GOP and on
//!   a keyframe (tables after it, or first), next to the floor (the upstream read
//!   directly) and the CLI with its fastest and its default probe.
//!
//! Method and last results: docs/PERFORMANCE.md.

#[path = "../tests/common/certs.rs"]
mod certs;
#[path = "../benches/support/mod.rs"]
mod support;
#[path = "../tests/common/upstream.rs"]
mod upstream;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "load-test-token-0123456789";

struct Args {
    amps: PathBuf,
    json: PathBuf,
    quick: bool,
    /// Only the HTTPS-vs-HTTP section.
    tls_only: bool,
    /// Only the fan-out of a two-track against a five-track relay.
    tracks_only: bool,
    /// Only the archive: its CPU cost, catch-up first bytes, a restart with a day of it.
    archive_only: bool,
    /// Only the provider import: a 20,000-entry M3U and 100/200 MB XMLTV guides.
    providers_only: bool,
    /// Only the zap on a live (paced) upstream, next to the floor and the CLI.
    zap_only: bool,
    /// Only the memory soak: busy and idle seconds per cycle, and cycles.
    soak: Option<(f64, f64, u32)>,
    clients: Vec<usize>,
    seconds: f64,
    reps: usize,
    /// Rounds of the alternating comparisons (HTTPS/HTTP, 5/2 tracks); their median is
    /// the verdict.
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        amps: PathBuf::from("target/release/amps"),
        json: PathBuf::from("target/amps-load.json"),
        quick: false,
        tls_only: false,
        tracks_only: false,
        archive_only: false,
        providers_only: false,
        zap_only: false,
        soak: None,
        clients: vec![10, 100, 500, 1000],
        seconds: 10.0,
        reps: 5,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--amps" => a.amps = PathBuf::from(v()),
            "--json" => a.json = PathBuf::from(v()),
            "--clients" => a.clients = v().split(',').map(|n| n.parse().unwrap()).collect(),
            "--seconds" => a.seconds = v().parse().unwrap(),
            "--reps" => a.reps = v().parse().unwrap(),
            "--rounds" => a.rounds = v().parse::<usize>().unwrap().max(1),
            "--tls-only" => a.tls_only = true,
            "--tracks-only" => a.tracks_only = true,
            "--archive-only" => a.archive_only = true,
            "--providers-only" => a.providers_only = true,
            "--zap-only" => a.zap_only = true,
            "--soak" => {
                let v = v();
                let parts: Vec<&str> = v.split(',').collect();
                let [b, i, rest @ ..] = parts.as_slice() else {
                    panic!("--soak BUSY,IDLE[,CYCLES] (seconds, seconds, default 3 cycles)");
                };
                let cycles = rest.first().map_or(3, |c| c.parse().expect("CYCLES"));
                a.soak = Some((b.parse().unwrap(), i.parse().unwrap(), cycles));
            }
            "--quick" => {
                a.quick = true;
                a.clients = vec![10, 100];
                a.seconds = 4.0;
                a.reps = 3;
            }
            "-h" | "--help" => {
                println!("amps-load [--amps PATH] [--json PATH] [--quick] [--tls-only] [--tracks-only] [--archive-only] [--providers-only] [--zap-only] [--soak BUSY,IDLE[,CYCLES]] [--clients 10,100,500] [--seconds S] [--reps N] [--rounds N]");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

// ---- measurements of processes -----------------------------------------------------------

/// utime + stime of a process in seconds (and its reaped children's when `children`).
fn cpu_secs(pid: u32, children: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields after the command: state=0, ..., utime=11, stime=12, cutime=13, cstime=14.
    let ticks = if f.len() > 14 {
        f[11] + f[12] + if children { f[13] + f[14] } else { 0 }
    } else {
        0
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// A `/proc/<pid>/status` field in MiB (`VmRSS`, `RssAnon`, `RssFile`).
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Resident memory in MiB.
fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS")
}

/// Private (anonymous) resident memory in MiB: what this process alone costs.
fn anon_mib(pid: u32) -> f64 {
    status_mib(pid, "RssAnon")
}

/// Direct children of `pid` (custom_ffmpeg processes), whichever thread started them.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

// ---- the server ---------------------------------------------------------------------------

struct Server {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(amps: &Path, config: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(amps)
            .args(["serve", "--port", "0", "--config"])
            .arg(&path)
            .env("AMPS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (cargo build --release first)", amps.display()));
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("listening on ") {
                        break a.to_owned();
                    }
                }
                _ => panic!("amps did not start"),
            }
        };
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn get_json(&self, path: &str) -> Value {
        let mut s = TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nX-Amps-Token: {TOKEN}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    fn state(&self, id: u32) -> String {
        self.get_json(&format!("/api/streams/{id}/status"))["state"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    fn wait_idle(&self, id: u32) {
        let t0 = Instant::now();
        while self.state(id) != "idle" && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

// ---- reading MPEG-TS ----------------------------------------------------------------------

/// Finds the first TS packet that starts a keyframe (random access indicator set).
#[derive(Default)]
struct KeyframeSpotter {
    carry: Vec<u8>,
    found: bool,
}

impl KeyframeSpotter {
    fn feed(&mut self, data: &[u8]) -> bool {
        if self.found {
            return true;
        }
        self.carry.extend_from_slice(data);
        let mut i = 0;
        while i + 188 <= self.carry.len() {
            let p = &self.carry[i..i + 188];
            if p[0] != 0x47 {
                i += 1;
                continue;
            }
            let has_af = p[3] & 0x20 != 0;
            if has_af && p[4] > 0 && p[5] & 0x40 != 0 {
                self.found = true;
                return true;
            }
            i += 188;
        }
        self.carry.drain(..i);
        false
    }
}

/// (first byte, first keyframe) after `t0`, reading `r` (at most `limit`).
fn first_byte_and_key(r: &mut dyn Read, t0: Instant, limit: Duration) -> (f64, f64) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = f64::NAN;
    let mut spot = KeyframeSpotter::default();
    while t0.elapsed() < limit {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if first.is_nan() {
                    first = t0.elapsed().as_secs_f64() * 1000.0;
                }
                if spot.feed(&buf[..n]) {
                    return (first, t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
    }
    (first, f64::NAN)
}

/// Opens `/stream/<id>`; returns the socket positioned at the body.
fn open_stream(addr: &str, id: u32) -> std::io::Result<BufReader<TcpStream>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET /stream/{id}?token={TOKEN} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )?;
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    Ok(r)
}

/// The ffmpeg CLI reading `file` at real time, looped, quietly (its output arguments
/// follow).
fn ffmpeg_paced(file: &str) -> Command {
    let mut c = Command::new("ffmpeg");
    c.args([
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-re",
        "-stream_loop",
        "-1",
        "-i",
        file,
    ]);
    c
}

// ---- the measurements ---------------------------------------------------------------------

fn config(http_src: &str, file_src: &str, extra_idle: usize) -> String {
    let mut c = format!(
        "server:\n  auth_token: {TOKEN}\n  max_connections: 4096\nengine:\n  idle_grace_secs: 1\nffmpeg_profiles:\n  copy: {}\n  x264: {}\nstreams:\n",
        support::COPY,
        support::X264
    );
    let x264_cli = support::CLI_X264.join(" ");
    let rows = [
        (1, "copy http", http_src, "copy", false),
        (2, "copy file", file_src, "copy", false),
        (3, "x264 http", http_src, "x264", false),
        (4, "x264 file", file_src, "x264", true),
        (5, "fan-out", file_src, "copy", true),
    ];
    for (id, name, src, p, lp) in rows {
        c.push_str(&format!(
            "  - {{id: {id}, name: '{name}', source: '{src}', ffmpeg_profile: {p}, loop: {lp}}}\n"
        ));
    }
    c.push_str(&format!(
        "  - {{id: 6, name: 'x264 cli', source: '{file_src}', custom_ffmpeg: 'ffmpeg -hide_banner -nostdin -v error -re -stream_loop -1 -i {{source}} {x264_cli} -f mpegts pipe:1'}}\n"
    ));
    for i in 0..extra_idle {
        let id = 1000 + i;
        c.push_str(&format!(
            "  - {{id: {id}, name: 'Idle {id}', source: 'http://127.0.0.1:9/{id}.ts', ffmpeg_profile: copy}}\n"
        ));
    }
    c
}

fn cli_first(src: &str, args: &[&str]) -> (f64, f64) {
    let t0 = Instant::now();
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i", src])
        .args(args)
        .args(["-f", "mpegts", "pipe:1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let r = first_byte_and_key(&mut out, t0, Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    r
}

fn cold_start(a: &Args, s: &Server, http: &str, file: &str) -> Value {
    let mut rows = Vec::new();
    let cases = [
        ("copy", "http", 1, http, support::CLI_COPY),
        ("copy", "file", 2, file, support::CLI_COPY),
        ("transcode", "http", 3, http, support::CLI_X264),
        ("transcode", "file", 4, file, support::CLI_X264),
    ];
    for (job, from, id, src, cli_args) in cases {
        let (mut ab, mut ak, mut cb, mut ck) = (vec![], vec![], vec![], vec![]);
        for _ in 0..a.reps {
            s.wait_idle(id);
            let t0 = Instant::now();
            let mut r = open_stream(&s.addr, id).unwrap();
            let (b, k) = first_byte_and_key(&mut r, t0, Duration::from_secs(20));
            drop(r);
            ab.push(b);
            ak.push(k);
            let (b, k) = cli_first(src, cli_args);
            cb.push(b);
            ck.push(k);
        }
        s.wait_idle(id);
        let row = json!({
            "job": job, "source": from,
            "amps_first_byte_ms": median(ab), "amps_first_keyframe_ms": median(ak),
            "cli_first_byte_ms": median(cb), "cli_first_keyframe_ms": median(ck),
        });
        println!(
            "cold start  {job:9} {from:4}  amps {:7.1} ms byte {:7.1} ms key   ffmpeg CLI {:7.1} ms byte {:7.1} ms key   ratio {:.2}",
            row["amps_first_byte_ms"].as_f64().unwrap(),
            row["amps_first_keyframe_ms"].as_f64().unwrap(),
            row["cli_first_byte_ms"].as_f64().unwrap(),
            row["cli_first_keyframe_ms"].as_f64().unwrap(),
            row["amps_first_byte_ms"].as_f64().unwrap() / row["cli_first_byte_ms"].as_f64().unwrap(),
        );
        rows.push(row);
    }
    Value::Array(rows)
}

fn warm_join(a: &Args, s: &Server) -> Value {
    let keeper = open_stream(&s.addr, 5).unwrap();
    let mut times = Vec::new();
    for _ in 0..(a.reps * 4) {
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        let mut r = open_stream(&s.addr, 5).unwrap();
        let (_, k) = first_byte_and_key(&mut r, t0, Duration::from_secs(5));
        times.push(k);
    }
    drop(keeper);
    let m = median(times.clone());
    let max = times.iter().cloned().fold(0.0, f64::max);
    println!("warm join   first keyframe median {m:.2} ms, max {max:.2} ms");
    json!({"first_keyframe_ms_median": m, "first_keyframe_ms_max": max, "joins": times.len()})
}

/// N clients read channel 5 for 1 + `secs` s; returns per client the bytes of the last
/// `secs` s, all bytes, and the largest gap between reads. With `tls`, over HTTPS.
fn read_clients(addr: &str, n: usize, secs: f64) -> Vec<(u64, u64, f64)> {
    read_clients_over(addr, n, secs, None)
}

fn read_clients_over(
    addr: &str,
    n: usize,
    secs: f64,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Vec<(u64, u64, f64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let addr = addr.to_owned();
            let tls = tls.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(s) = tokio::net::TcpStream::connect(&addr).await else {
                    return (0u64, 0u64, f64::INFINITY);
                };
                match tls {
                    None => read_one(s, &addr, secs).await,
                    Some(c) => {
                        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                        match c.connect(name, s).await {
                            Ok(t) => read_one(t, &addr, secs).await,
                            Err(_) => (0, 0, f64::INFINITY),
                        }
                    }
                }
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or((0, 0, f64::INFINITY)));
        }
        out
    })
}

/// One client of `/stream/5` on an open connection (plain or TLS).
async fn read_one<S>(mut s: S, addr: &str, secs: f64) -> (u64, u64, f64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /stream/5?token={TOKEN} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, 0, f64::INFINITY);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let start = tokio::time::Instant::now();
    // The first second holds the join burst (backlog from the last keyframe): the rate
    // is counted after it.
    let steady = start + Duration::from_secs(1);
    let deadline = start + Duration::from_secs_f64(secs + 1.0);
    let (mut bytes, mut all, mut gap, mut last) = (0u64, 0u64, 0f64, None::<Instant>);
    loop {
        let r = tokio::time::timeout_at(deadline, s.read(&mut buf)).await;
        match r {
            Ok(Ok(k)) if k > 0 => {
                let now = Instant::now();
                if let Some(l) = last {
                    gap = gap.max(now.duration_since(l).as_secs_f64());
                }
                last = Some(now);
                all += k as u64;
                if tokio::time::Instant::now() >= steady {
                    bytes += k as u64;
                }
            }
            Ok(_) => return (bytes, all, f64::INFINITY),
            Err(_) => break,
        }
    }
    (bytes, all, gap)
}

/// A TLS client that trusts `cert` only.
fn connector(cert: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
}

/// HTTPS next to plain HTTP, same channel, same run: server CPU per GB for 100 clients
/// of the 8 Mbit/s channel, and a warm join's time to the first keyframe including the
/// TCP connect and the TLS handshake.
fn tls_cost(a: &Args, http: &str, file: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certs::self_signed(dir.path(), "load");
    let plain_cfg = config(http, file, 0);
    let tls_cfg = plain_cfg.replacen(
        "server:\n",
        &format!(
            "server:\n  tls: {{cert_file: {:?}, key_file: {:?}}}\n",
            cert.display(),
            key.display()
        ),
        1,
    );
    let clients = if a.quick { 50 } else { 100 };
    let tls = connector(&cert);
    // HTTP and HTTPS alternate, `rounds` times each: on two shared cores one pair is
    // noisy (+-10 %), so the verdict is the median of the rounds' ratios.
    let rounds = if a.quick { 1 } else { a.rounds };
    let mut runs = Vec::new();
    for round in 1..=rounds {
        let mut rows = serde_json::Map::new();
        for (name, cfg, conn) in [
            ("http", &plain_cfg, None),
            ("https", &tls_cfg, Some(tls.clone())),
        ] {
            rows.insert(name.into(), tls_round(a, name, cfg, conn, clients));
        }
        let ratio = rows["https"]["server_cpu_secs_per_gb"]
            .as_f64()
            .unwrap_or(0.0)
            / rows["http"]["server_cpu_secs_per_gb"]
                .as_f64()
                .unwrap_or(1.0)
                .max(1e-9);
        println!("https/http  CPU per GB {ratio:.2}x (round {round} of {rounds})");
        rows.insert("https_over_http_cpu_per_gb".into(), json!(ratio));
        runs.push(Value::Object(rows));
    }
    let ratios: Vec<f64> = runs
        .iter()
        .filter_map(|r| r["https_over_http_cpu_per_gb"].as_f64())
        .collect();
    let med = median(ratios.clone());
    println!("https/http  CPU per GB median {med:.2}x of {ratios:.2?}");
    json!({"rounds": runs, "https_over_http_cpu_per_gb_median": med})
}

/// Fan-out of a relay of 1080p video with one audio track against one with four (AAC x2,
/// AC-3 5.1, MP2), alternating, three rounds: server CPU per GB sent.
fn tracks_cost(a: &Args, http: &str) -> Value {
    let clients = if a.quick { 50 } else { 100 };
    let rounds = if a.quick { 1 } else { a.rounds };
    let cfgs: Vec<(String, String)> = [2, 5]
        .iter()
        .map(|n| {
            let f = support::tracks(*n).display().to_string();
            (format!("{n} tracks"), config(http, &f, 0))
        })
        .collect();
    let mut runs = Vec::new();
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let mut rows = serde_json::Map::new();
        for (name, cfg) in &cfgs {
            rows.insert(name.clone(), tls_round(a, name, cfg, None, clients));
        }
        let per_gb = |k: &str| {
            rows[k]["server_cpu_secs_per_gb"]
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        let ratio = per_gb("5 tracks") / per_gb("2 tracks");
        println!("5/2 tracks  CPU per GB {ratio:.2}x (round {round} of {rounds})");
        ratios.push(ratio);
        runs.push(Value::Object(rows));
    }
    let med = median(ratios.clone());
    println!("5/2 tracks  CPU per GB median {med:.2}x of {ratios:.2?}");
    json!({"rounds": runs, "five_over_two_tracks_cpu_per_gb_median": med})
}

/// A running relay channel of the 8 Mbit/s file with and without its archive: the
/// archive's CPU cost (alternating rounds), next to the ffmpeg CLI segmenting the same
/// source into files (what a per-channel recorder process costs); catch-up first bytes;
/// and a restart with a day of archive (14,400 segment files of an 8 Mbit/s channel,
/// sparse) to the first answer, with the index's memory.
fn archive_cost(a: &Args, file: &str) -> Value {
    let rounds = if a.quick { 1 } else { 3 };
    let secs = a.seconds * 3.0;
    let archive = tempfile::tempdir().unwrap();
    let cfg = |hours: u32, dir: &Path| {
        format!(
            "server:\n  auth_token: {TOKEN}\nengine:\n  archive_dir: {}\nffmpeg_profiles:\n  copy: {}\nstreams:\n  - {{id: 1, name: relay, source: '{file}', ffmpeg_profile: copy, loop: true, always_on: true, catchup_hours: {hours}}}\n",
            dir.display(),
            support::COPY
        )
    };
    let cores = |cfg: &str| {
        let s = Server::start(&a.amps, cfg);
        std::thread::sleep(Duration::from_secs(3));
        let cpu0 = cpu_secs(s.pid(), false);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        (cpu_secs(s.pid(), false) - cpu0) / t0.elapsed().as_secs_f64()
    };
    let mut costs = Vec::new();
    for round in 1..=rounds {
        let dir = archive.path().join(format!("round{round}"));
        let plain = cores(&cfg(0, &dir));
        let archived = cores(&cfg(24, &dir));
        let cost = (archived - plain) * 100.0;
        println!(
            "archive     relay {plain:.4} cores, with its archive {archived:.4}: +{cost:.2} % of a core (round {round} of {rounds})"
        );
        costs.push(cost);
    }
    // The CLI's recorder: a second reader of the source, segmenting it into files.
    let out = archive.path().join("cli");
    std::fs::create_dir_all(&out).unwrap();
    let mut cli = ffmpeg_paced(file)
        .args([
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            "segment",
            "-segment_time",
            "6",
        ])
        .arg(out.join("%06d.ts"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let cpu0 = cpu_secs(cli.id(), false);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let cli_cores = (cpu_secs(cli.id(), false) - cpu0) / t0.elapsed().as_secs_f64();
    let _ = cli.kill();
    let _ = cli.wait();
    let med = median(costs.clone());
    println!(
        "archive     median +{med:.2} % of a core; ffmpeg CLI segmenting the same source: {:.2} % of a core ({:.2}x)",
        cli_cores * 100.0,
        med / (cli_cores * 100.0)
    );

    // Catch-up first bytes: 10 s windows of a running archive.
    let dir = archive.path().join("catchup");
    let s = Server::start(&a.amps, &cfg(24, &dir));
    std::thread::sleep(Duration::from_secs(35));
    let now = chrono::Utc::now().timestamp();
    let mut first = Vec::new();
    let mut whole = Vec::new();
    for i in 0..50 {
        let start = now - 30 + (i % 15);
        let t0 = Instant::now();
        let mut sock = TcpStream::connect(&s.addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            sock,
            "GET /catchup/1.ts?start={start}&end={}&token={TOKEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            start + 10
        )
        .unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = Vec::new();
        let mut fb = f64::NAN;
        loop {
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if fb.is_nan() {
                        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            if got.len() > p + 4 {
                                fb = t0.elapsed().as_secs_f64() * 1000.0;
                            }
                        }
                    }
                }
            }
        }
        first.push(fb);
        whole.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let mut sorted = first.clone();
    sorted.sort_by(f64::total_cmp);
    let p95 = sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)];
    println!(
        "catch-up    10 s windows: first byte median {:.1} ms, p95 {p95:.1} ms; whole window median {:.1} ms",
        median(first.clone()),
        median(whole.clone())
    );
    drop(s);

    // A day of archive: 14,400 six-second segments of 6 MB (sparse files).
    let dir = archive.path().join("day");
    let ch = dir.join("1");
    std::fs::create_dir_all(&ch).unwrap();
    let day_start = chrono::Utc::now().timestamp_millis() - 86_400_000 + 60_000;
    for i in 0..14_400i64 {
        let f =
            std::fs::File::create(ch.join(format!("{}-6000.ts", day_start + i * 6000))).unwrap();
        f.set_len(6_000_000).unwrap();
    }
    let empty = archive.path().join("empty");
    let mut ready = Vec::new();
    let mut rss = Vec::new();
    for d in [&empty, &dir] {
        let t0 = Instant::now();
        let s = Server::start(&a.amps, &cfg(24, d));
        let st = s.get_json("/api/streams/1/status");
        ready.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_secs(2));
        rss.push(anon_mib(s.pid()));
        if d == &dir {
            println!(
                "restart     a day of archive ({} segments, {:.1} GB): first answer after {:.0} ms (empty archive: {:.0} ms); private memory {:.1} MiB vs {:.1} MiB empty",
                st["archive"]["segments"],
                st["archive"]["bytes"].as_f64().unwrap_or(0.0) / 1e9,
                ready[1],
                ready[0],
                rss[1],
                rss[0]
            );
        }
    }
    json!({
        "archive_cpu_percent_of_a_core": costs,
        "archive_cpu_percent_median": med,
        "cli_segmenter_cpu_percent": cli_cores * 100.0,
        "catchup_first_byte_ms_median": median(first),
        "catchup_first_byte_ms_p95": p95,
        "catchup_10s_window_ms_median": median(whole),
        "restart_ready_ms": {"empty": ready[0], "day": ready[1]},
        "private_mib": {"empty": rss[0], "day": rss[1]},
    })
}

/// One server (plain or TLS): `clients` readers of the 8.2 Mbit/s channel, server CPU per
/// GB sent, then warm joins.
fn tls_round(
    a: &Args,
    name: &str,
    cfg: &str,
    conn: Option<tokio_rustls::TlsConnector>,
    clients: usize,
) -> Value {
    let s = Server::start(&a.amps, cfg);
    // One reader keeps the channel running through the fan-out and the joins.
    let keep_secs = 2.0 + a.seconds + 1.0 + (a.reps * 4) as f64 * 0.3 + 2.0;
    let keeper = std::thread::spawn({
        let (addr, conn) = (s.addr.clone(), conn.clone());
        move || read_clients_over(&addr, 1, keep_secs, conn)
    });
    std::thread::sleep(Duration::from_secs(2));
    let cpu0 = cpu_secs(s.pid(), false);
    let t0 = Instant::now();
    let res = read_clients_over(&s.addr, clients, a.seconds, conn.clone());
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(s.pid(), false) - cpu0;
    let total: u64 = res.iter().map(|r| r.1).sum();
    let stalls = res.iter().filter(|r| r.2 > 1.0).count();
    // Warm joins: connect (+ handshake) + request to the first keyframe.
    let joins = warm_joins(&s.addr, a.reps * 4, conn.as_ref());
    let per_gb = cpu / (total as f64 / 1e9).max(1e-9);
    println!(
        "{name:5}       {clients} clients  {:.2} cores, {per_gb:5.2} CPU s/GB, stalls {stalls}; warm join (connect{} + first keyframe) median {:.1} ms",
        cpu / wall,
        if name == "https" { " + TLS handshake" } else { "" },
        median(joins.clone())
    );
    let _ = keeper.join();
    json!({"clients": clients, "server_cpu_cores": cpu / wall, "server_cpu_secs_per_gb": per_gb,
           "stalled_clients": stalls, "warm_join_ms_median": median(joins.clone()),
           "warm_join_ms_max": joins.iter().cloned().fold(0.0, f64::max)})
}

/// `n` joins of the running channel 5: ms from connect to the first keyframe.
fn warm_joins(addr: &str, n: usize, tls: Option<&tokio_rustls::TlsConnector>) -> Vec<f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut out = Vec::new();
        for _ in 0..n {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let t0 = Instant::now();
            let Ok(s) = tokio::net::TcpStream::connect(addr).await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let ms = match tls {
                None => first_key_async(s, addr, t0).await,
                Some(c) => {
                    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                    match c.connect(name, s).await {
                        Ok(t) => first_key_async(t, addr, t0).await,
                        Err(e) => {
                            eprintln!("TLS: {e}");
                            f64::NAN
                        }
                    }
                }
            };
            out.push(ms);
        }
        out
    })
}

async fn first_key_async<S>(mut s: S, addr: &str, t0: Instant) -> f64
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /stream/5?token={TOKEN} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return f64::NAN;
    }
    let mut spot = KeyframeSpotter::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = true;
    while t0.elapsed() < Duration::from_secs(5) {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(k)) if k > 0 => {
                let mut data = &buf[..k];
                if head {
                    // Skip the response head.
                    match data.windows(4).position(|w| w == b"\r\n\r\n") {
                        Some(p) => {
                            data = &data[p + 4..];
                            head = false;
                        }
                        None => continue,
                    }
                }
                if spot.feed(data) {
                    return t0.elapsed().as_secs_f64() * 1000.0;
                }
            }
            _ => break,
        }
    }
    f64::NAN
}

fn fan_out(a: &Args, s: &Server, file: &str, rate_bps: f64) -> Value {
    let mut rows = Vec::new();
    // Warm the channel so every N measures steady state, not its start.
    let keeper = open_stream(&s.addr, 5).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    for &n in &a.clients {
        let rss0 = rss_mib(s.pid());
        let cpu0 = cpu_secs(s.pid(), false);
        let t0 = Instant::now();
        let res = read_clients(&s.addr, n, a.seconds);
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs(s.pid(), false) - cpu0;
        let rss1 = rss_mib(s.pid());
        // Bytes counted over the steady `seconds`; all clients' bytes for CPU per GB.
        let total: u64 = res.iter().map(|r| r.1).sum();
        let rates: Vec<f64> = res.iter().map(|r| r.0 as f64 * 8.0 / a.seconds).collect();
        let min_rate = rates.iter().cloned().fold(f64::INFINITY, f64::min);
        let med_rate = median(rates.clone());
        // A stall: a client that went more than 1 s without data, or was cut off.
        let stalls = res.iter().filter(|r| r.2 > 1.0).count();
        let gb = total as f64 / 1e9;
        let row = json!({
            "clients": n,
            "channel_kbps": rate_bps / 1000.0,
            "per_client_kbps_median": med_rate / 1000.0,
            "per_client_kbps_min": min_rate / 1000.0,
            "stalled_clients": stalls,
            "server_cpu_cores": cpu / wall,
            "server_cpu_secs_per_gb": cpu / gb.max(1e-9),
            "rss_mib_before": rss0,
            "rss_mib_during": rss1,
            "rss_kib_per_client": (rss1 - rss0) * 1024.0 / n as f64,
        });
        println!(
            "fan-out     {n:5} clients  median {:6.0} kbit/s (min {:6.0}, channel {:5.0})  stalls {stalls:3}  server {:.2} cores, {:5.2} CPU s/GB  +{:.0} KiB/client",
            med_rate / 1000.0,
            min_rate / 1000.0,
            rate_bps / 1000.0,
            cpu / wall,
            cpu / gb.max(1e-9),
            (rss1 - rss0) * 1024.0 / n as f64
        );
        rows.push(row);
    }
    drop(keeper);
    // The ffmpeg-per-client design: one `ffmpeg -re -c copy` per viewer.
    let t0 = Instant::now();
    let mut child = ffmpeg_paced(file)
        .args(support::CLI_COPY)
        .args(["-f", "mpegts", "pipe:1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    let mut cpu = 0.0;
    while t0.elapsed().as_secs_f64() < a.seconds {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => bytes += k as u64,
        }
        cpu = cpu_secs(pid, false);
    }
    let _ = child.kill();
    let _ = child.wait();
    let per_gb = cpu / (bytes as f64 / 1e9).max(1e-9);
    println!("fan-out     ffmpeg per client: {per_gb:.2} CPU s/GB (one process per viewer, {:.3} cores each)", cpu / a.seconds);
    json!({"amps": rows, "ffmpeg_per_client_cpu_secs_per_gb": per_gb, "ffmpeg_per_client_cores": cpu / a.seconds})
}

/// CPU of the same transcode, unpaced: in this process (libav, as amps runs it) and the CLI.
fn transcode_efficiency(file: &str) -> Value {
    amps::libav::init();
    let profile = support::profile(support::X264);
    let usage = || {
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage fills the struct it is given.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        u.ru_utime.tv_sec as f64
            + u.ru_utime.tv_usec as f64 / 1e6
            + u.ru_stime.tv_sec as f64
            + u.ru_stime.tv_usec as f64 / 1e6
    };
    let children = || {
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
        u.ru_utime.tv_sec as f64
            + u.ru_utime.tv_usec as f64 / 1e6
            + u.ru_stime.tv_sec as f64
            + u.ru_stime.tv_usec as f64 / 1e6
    };
    let (mut ac, mut aw, mut cc, mut cw) = (vec![], vec![], vec![], vec![]);
    for _ in 0..3 {
        let (c0, t0) = (usage(), Instant::now());
        support::run_pipeline(file, &profile);
        aw.push(t0.elapsed().as_secs_f64());
        ac.push(usage() - c0);
        let (c0, t0) = (children(), Instant::now());
        support::run_cli(file, support::CLI_X264);
        cw.push(t0.elapsed().as_secs_f64());
        cc.push(children() - c0);
    }
    let (ac, aw, cc, cw) = (median(ac), median(aw), median(cc), median(cw));
    println!(
        "transcode   10 s 1080p -> 720p x264 veryfast: amps {ac:.2} CPU s / {aw:.2} s wall, ffmpeg CLI {cc:.2} CPU s / {cw:.2} s wall, CPU ratio {:.3}",
        ac / cc
    );
    json!({"amps_cpu_secs": ac, "amps_wall_secs": aw, "cli_cpu_secs": cc, "cli_wall_secs": cw, "cpu_ratio": ac / cc})
}

/// CPU per media second of a paced channel: in-process transcode (4) vs custom_ffmpeg (6).
fn paced_transcode(a: &Args, s: &Server) -> Value {
    let mut out = json!({});
    for (id, key) in [(4u32, "in_process"), (6, "custom_ffmpeg")] {
        let mut r = open_stream(&s.addr, id).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        // Skip the start, then measure a steady window.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            let _ = r.read(&mut buf);
        }
        let kids = |pid: u32| -> f64 { children(pid).iter().map(|c| cpu_secs(*c, true)).sum() };
        let (c0, k0, t0) = (cpu_secs(s.pid(), false), kids(s.pid()), Instant::now());
        while t0.elapsed().as_secs_f64() < a.seconds {
            let _ = r.read(&mut buf);
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs(s.pid(), false) - c0 + kids(s.pid()) - k0;
        drop(r);
        out[key] = json!(cpu / wall);
        s.wait_idle(id);
    }
    println!(
        "transcode   paced 25 fps: in-process {:.2} cores, custom_ffmpeg {:.2} cores",
        out["in_process"].as_f64().unwrap(),
        out["custom_ffmpeg"].as_f64().unwrap()
    );
    out
}

fn memory(a: &Args, http: &str, file: &str) -> Value {
    let s = Server::start(&a.amps, &config(http, file, 0));
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_mib(s.pid());
    let idle_private = anon_mib(s.pid());
    let relay = {
        let mut r = open_stream(&s.addr, 5).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(4) {
            let _ = r.read(&mut buf);
        }
        let m = rss_mib(s.pid());
        let buffered = s.get_json("/api/streams/5/status")["buffered_bytes"].as_u64();
        drop(r);
        (m, buffered)
    };
    s.wait_idle(5);
    let transcode = {
        let mut r = open_stream(&s.addr, 4).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(4) {
            let _ = r.read(&mut buf);
        }
        let m = rss_mib(s.pid());
        drop(r);
        m
    };
    drop(s);
    let n = 1000;
    let many = Server::start(&a.amps, &config(http, file, n));
    std::thread::sleep(Duration::from_millis(500));
    let with_many = rss_mib(many.pid());
    drop(many);
    let per_idle_kib = (with_many - idle) * 1024.0 / n as f64;
    // One ffmpeg CLI relaying the same source (the ffmpeg-per-viewer design pays this each).
    let (cli_rss, cli_private) = {
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-v", "error", "-re", "-i", file])
            .args(support::CLI_COPY)
            .args(["-f", "mpegts", "pipe:1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            let _ = out.read(&mut buf);
        }
        let m = (rss_mib(child.id()), anon_mib(child.id()));
        let _ = child.kill();
        let _ = child.wait();
        m
    };
    println!(
        "memory      idle server {idle:.1} MiB ({idle_private:.1} MiB private); +{per_idle_kib:.1} KiB per idle channel; running relay +{:.1} MiB (backlog {} KiB); running transcode +{:.1} MiB; one ffmpeg CLI relay {cli_rss:.1} MiB ({cli_private:.1} MiB private)",
        relay.0 - idle,
        relay.1.unwrap_or(0) / 1024,
        transcode - idle
    );
    json!({
        "idle_server_mib": idle,
        "idle_server_private_mib": idle_private,
        "ffmpeg_cli_relay_mib": cli_rss,
        "ffmpeg_cli_relay_private_mib": cli_private,
        "per_idle_channel_kib": per_idle_kib,
        "running_relay_mib": relay.0 - idle,
        "relay_backlog_bytes": relay.1,
        "running_transcode_mib": transcode - idle,
    })
}

/// `cycles` cycles of `busy` seconds of churn (12 viewers hopping between a relay and a
/// transcode channel, 3 HLS pollers) and `idle` seconds with nobody: private memory
/// (RssAnon) of the server when fresh, at each busy peak, its median over the busy
/// spell (less at the mercy of when a sample falls than the peak), and after each idle
/// spell.
fn soak(a: &Args, http: &str, file: &str, (busy, idle, cycles): (f64, f64, u32)) -> Value {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let s = Server::start(&a.amps, &config(http, file, 0));
    std::thread::sleep(Duration::from_millis(500));
    let fresh = anon_mib(s.pid());
    println!(
        "soak        fresh server: {fresh:.1} MiB private ({:.1} MiB resident)",
        rss_mib(s.pid())
    );
    let mut results = Vec::new();
    for cycle in 1..=cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for v in 0..12u64 {
            let (addr, stop, bytes) = (s.addr.clone(), stop.clone(), bytes.clone());
            threads.push(std::thread::spawn(move || {
                // A cheap deterministic spread of channels and watch times per viewer.
                let mut x = v * 7919 + 13;
                while !stop.load(Ordering::SeqCst) {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let id = if x >> 63 == 0 { 4 } else { 5 };
                    let watch = Duration::from_millis(500 + (x >> 33) % 3500);
                    let Ok(mut r) = open_stream(&addr, id) else {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    };
                    let mut buf = vec![0u8; 64 * 1024];
                    let t = Instant::now();
                    while t.elapsed() < watch && !stop.load(Ordering::SeqCst) {
                        match r.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => {
                                bytes.fetch_add(k as u64, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }));
        }
        for p in 0..3u32 {
            let (addr, stop, bytes) = (s.addr.clone(), stop.clone(), bytes.clone());
            threads.push(std::thread::spawn(move || {
                let id = if p == 0 { 4 } else { 5 };
                while !stop.load(Ordering::SeqCst) {
                    let pl = http_get(&addr, &format!("/hls/{id}/index.m3u8?token={TOKEN}"));
                    let text = String::from_utf8_lossy(&pl).into_owned();
                    if let Some(seg) = text
                        .lines()
                        .rev()
                        .find(|l| !l.starts_with('#') && !l.is_empty())
                    {
                        let body = http_get(&addr, &format!("/hls/{id}/{seg}"));
                        bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }));
        }
        let t0 = Instant::now();
        let mut samples = Vec::new();
        while t0.elapsed().as_secs_f64() < busy {
            samples.push(anon_mib(s.pid()));
            std::thread::sleep(Duration::from_millis(500));
        }
        let peak = samples.iter().copied().fold(0f64, f64::max);
        samples.sort_by(f64::total_cmp);
        let median = samples.get(samples.len() / 2).copied().unwrap_or(0.0);
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            let _ = t.join();
        }
        s.wait_idle(4);
        s.wait_idle(5);
        std::thread::sleep(Duration::from_secs_f64(idle));
        let after = anon_mib(s.pid());
        let states: Vec<String> = [4, 5].iter().map(|id| s.state(*id)).collect();
        assert!(
            states.iter().all(|st| st == "idle"),
            "channels not idle: {states:?}"
        );
        let gb = bytes.load(Ordering::Relaxed) as f64 / 1e9;
        println!(
            "soak        cycle {cycle}: {gb:.2} GB served, busy peak {peak:.1} MiB private (median {median:.1}), after {idle:.0} s idle {after:.1} MiB private (+{:.1} over fresh)",
            after - fresh
        );
        results.push(json!({"cycle": cycle, "served_gb": gb, "busy_peak_private_mib": peak, "busy_median_private_mib": median, "idle_private_mib": after}));
    }
    json!({"fresh_private_mib": fresh, "busy_secs": busy, "idle_secs": idle, "cycles": results})
}

/// A GET with the token header; the body (empty on any error).
/// Importing a provider: a 20,000-entry M3U, then XMLTV guides of 100 MB and 200 MB (the
/// second has twice the channels, half of them not served), each next to the time to
/// download the same file over the same loopback (the floor). Memory: resident size of a
/// server without providers, after the import, and the peak (VmHWM) while each guide is
/// read.
fn providers_cost(a: &Args) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000;
    std::fs::write(dir.path().join("get.php"), support::provider_m3u(n)).unwrap();
    // About 330 bytes per programme: 40,000 channels x 8 is 100 MB; 80,000 x 8, 200 MB.
    for (name, channels) in [("guide100.xml", 40_000), ("guide200.xml", 80_000)] {
        let f = std::fs::File::create(dir.path().join(name)).unwrap();
        let mut w = std::io::BufWriter::new(f);
        support::write_xmltv(&mut w, channels, 8);
    }
    let up = upstream::Upstream::start(dir.path().to_path_buf(), 0);
    let addr = format!("127.0.0.1:{}", up.port);
    // The floor: the same file fetched over the same loopback, read to its length.
    let floor = |file: &str| {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(s, "GET /{file} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut r = BufReader::new(s);
        let mut len = 0usize;
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            if l == "\r\n" {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).unwrap();
        (t0.elapsed().as_secs_f64() * 1000.0, body.len())
    };
    let cfg = |server: String, rest: String| {
        format!("server:\n  auth_token: {TOKEN}\n{server}ffmpeg_profiles:\n  relay: {{video_codec: copy, audio_codec: copy}}\n{rest}")
    };
    let base = cfg(String::new(), String::new());
    // A fresh cache each time: the import below is a first one, from the provider.
    let with = |guide: Option<&str>, cache: &Path| {
        let mut rest = format!(
            "playlists:\n  - {{name: p, url: 'http://{addr}/get.php', ffmpeg_profile: relay, import_guide: false, refresh_minutes: 0}}\n"
        );
        if let Some(g) = guide {
            rest.push_str(&format!("guides:\n  - url: 'http://{addr}/{g}'\n"));
        }
        cfg(format!("  cache_dir: {}\n", cache.display()), rest)
    };
    let wait = |s: &Server, what: &dyn Fn(&Server) -> bool| {
        let t0 = Instant::now();
        while !what(s) && t0.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(20));
        }
        t0.elapsed().as_secs_f64() * 1000.0
    };
    let reps = a.reps.clamp(1, 3);
    let mut rows = Vec::new();
    for _ in 0..reps {
        let bare = Server::start(&a.amps, &base);
        std::thread::sleep(Duration::from_millis(500));
        let idle = rss_mib(bare.pid());
        drop(bare);
        let (m3u_floor, m3u_bytes) = floor("get.php");
        let cache = tempfile::tempdir().unwrap();
        let s = Server::start(&a.amps, &with(None, cache.path()));
        let imported =
            |s: &Server| s.get_json("/api/playlists/p")["channels"].as_u64() == Some(n as u64);
        wait(&s, &imported);
        let st = s.get_json("/api/playlists/p");
        std::thread::sleep(Duration::from_millis(300));
        let after = rss_mib(s.pid());
        let t0 = Instant::now();
        let pl = http_get(&s.addr, "/playlist.m3u");
        let playlist_ms = t0.elapsed().as_secs_f64() * 1000.0;
        drop(s);
        let mut guides = Vec::new();
        for g in ["guide100.xml", "guide200.xml"] {
            let (g_floor, g_bytes) = floor(g);
            let cache = tempfile::tempdir().unwrap();
            let s = Server::start(&a.amps, &with(Some(g), cache.path()));
            wait(&s, &imported);
            let before_peak = status_mib(s.pid(), "VmHWM");
            let read = |s: &Server| {
                s.get_json("/api/guides")[0]["last_read_ms"]
                    .as_u64()
                    .is_some()
            };
            let guide_total_ms = wait(&s, &read);
            let gs = s.get_json("/api/guides")[0].clone();
            let t0 = Instant::now();
            let epg = http_get(&s.addr, "/epg.xml");
            let epg_ms = t0.elapsed().as_secs_f64() * 1000.0;
            guides.push(json!({
                "file": g,
                "bytes": g_bytes,
                "download_floor_ms": g_floor,
                "read_ms": gs["last_read_ms"],
                "read_and_applied_ms": guide_total_ms,
                "programmes_read": gs["programmes_read"],
                "programmes_kept": gs["programmes_kept"],
                "channels_filled": gs["channels_filled"],
                "peak_mib_before_guide": before_peak,
                "peak_mib_after_guide": status_mib(s.pid(), "VmHWM"),
                "rss_mib_after": rss_mib(s.pid()),
                "epg_xml_bytes": epg.len(),
                "epg_xml_ms": epg_ms,
            }));
        }
        rows.push(json!({
            "m3u_entries": n,
            "m3u_bytes": m3u_bytes,
            "m3u_download_floor_ms": m3u_floor,
            "m3u_fetch_and_parse_ms": st["last_fetch_ms"],
            "channels": st["channels"],
            "idle_rss_mib": idle,
            "rss_mib_after_import": after,
            "extra_mib": after - idle,
            "playlist_bytes": pl.len(),
            "playlist_ms": playlist_ms,
            "guides": guides,
        }));
    }
    json!({ "providers": rows })
}

// ---- zap on a live upstream --------------------------------------------------------------

/// When a reader of TS could start decoding: it has a video keyframe's first packet and
/// the PAT/PMT that say it is video, in either order (a keyframe before its tables counts
/// when they come).
#[derive(Default)]
struct DecodableStart {
    carry: Vec<u8>,
    pmt: Option<u16>,
    video: Vec<u16>,
    /// PIDs that started a random access point before the PMT was known.
    early: Vec<u16>,
}

impl DecodableStart {
    fn feed(&mut self, data: &[u8]) -> bool {
        self.carry.extend_from_slice(data);
        let mut i = 0;
        let mut found = false;
        while i + 188 <= self.carry.len() && !found {
            let p = &self.carry[i..i + 188];
            if p[0] != 0x47 {
                i += 1;
                continue;
            }
            i += 188;
            let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
            let pusi = p[1] & 0x40 != 0;
            let start = if p[3] & 0x20 != 0 {
                5 + usize::from(p[4])
            } else {
                4
            };
            if !pusi || start >= 188 {
                continue;
            }
            let t = &p[(start + 1 + usize::from(p[start])).min(188)..];
            if pid == 0 && t.len() >= 12 && t[0] == 0 {
                self.pmt = Some((u16::from(t[10] & 0x1f) << 8) | u16::from(t[11]));
            } else if Some(pid) == self.pmt && t.len() >= 12 && t[0] == 2 {
                let end =
                    (3 + ((usize::from(t[1] & 0x0f) << 8) | usize::from(t[2]))).min(t.len()) - 4;
                let mut j = 12 + ((usize::from(t[10] & 0x0f) << 8) | usize::from(t[11]));
                self.video.clear();
                while j + 5 <= end {
                    if matches!(t[j], 0x01 | 0x02 | 0x1b | 0x24) {
                        self.video
                            .push((u16::from(t[j + 1] & 0x1f) << 8) | u16::from(t[j + 2]));
                    }
                    j += 5 + ((usize::from(t[j + 3] & 0x0f) << 8) | usize::from(t[j + 4]));
                }
                found = self.video.iter().any(|v| self.early.contains(v));
            } else if p[3] & 0x20 != 0 && p[4] > 0 && p[5] & 0x40 != 0 {
                if self.video.contains(&pid) {
                    found = true;
                } else if self.video.is_empty() {
                    self.early.push(pid);
                }
            }
        }
        self.carry.drain(..i.min(self.carry.len()));
        found
    }
}

/// The body of a chunked HTTP/1.1 response.
struct Dechunk<R: BufRead> {
    r: R,
    left: usize,
}

impl<R: BufRead> Read for Dechunk<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let mut line = String::new();
            while line.trim().is_empty() {
                line.clear();
                if self.r.read_line(&mut line)? == 0 {
                    return Ok(0);
                }
            }
            let size = line.trim().split(';').next().unwrap_or("0");
            self.left = usize::from_str_radix(size, 16)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if self.left == 0 {
                return Ok(0);
            }
        }
        let want = self.left.min(buf.len());
        let n = self.r.read(&mut buf[..want])?;
        self.left -= n;
        Ok(n)
    }
}

/// Milliseconds from `t0` until `r` can be decoded (see [`DecodableStart`]).
fn decodable_at(r: &mut dyn Read, t0: Instant) -> f64 {
    let mut spot = DecodableStart::default();
    let mut buf = vec![0u8; 16 * 1024];
    while t0.elapsed() < Duration::from_secs(15) {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if spot.feed(&buf[..n]) => return t0.elapsed().as_secs_f64() * 1000.0,
            Ok(_) => {}
        }
    }
    f64::NAN
}

/// Serves `data` (a looped live stream) at `rate` bytes/s over loopback: `/mid.ts` starts
/// at the live position, `/key.ts` at the next keyframe, `/keytables.ts` at the next
/// keyframe after a PAT and PMT. Returns the port.
fn live_upstream(data: Vec<u8>, keys: Vec<usize>, tables: Vec<u8>, rate: f64) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let epoch = Instant::now();
    let data = std::sync::Arc::new(data);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (data, keys, tables) = (data.clone(), keys.clone(), tables.clone());
            std::thread::spawn(move || {
                let mut conn = conn;
                let path = upstream::request_target(&conn).unwrap_or_default();
                let live = (epoch.elapsed().as_secs_f64() * rate) as usize % data.len();
                let mut pos = if path.starts_with("mid") {
                    live
                } else {
                    *keys.iter().find(|&&k| k >= live).unwrap_or(&keys[0])
                };
                pos -= pos % 188;
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: video/mp2t\r\n\r\n");
                if path.starts_with("keytables") && conn.write_all(&tables).is_err() {
                    return;
                }
                let (t0, mut sent) = (Instant::now(), 0usize);
                loop {
                    let due = (t0.elapsed().as_secs_f64() * rate) as usize - sent;
                    if due < 188 * 7 {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    let n = due - due % 188;
                    let mut chunk = Vec::with_capacity(n);
                    while chunk.len() < n {
                        let take = (n - chunk.len()).min(data.len() - pos);
                        chunk.extend_from_slice(&data[pos..pos + take]);
                        pos = (pos + take) % data.len();
                    }
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                    sent += n;
                }
            });
        }
    });
    port
}

/// Zap on a live source: a 1080p25 H.264 4 Mbit/s + AAC stream (GOP 2 s, mux rate
/// 4.5 Mbit/s) served at its own rate; per trial, at the same moment: the upstream read
/// directly (the floor), a cold Amps relay channel, and the ffmpeg CLI with
/// `-probesize 32768 -analyzeduration 0` and with its defaults.
fn live_zap(a: &Args) -> Value {
    let src = support::media().join("live1080.ts");
    if !src.exists() {
        support::test_media::generate(
            &src,
            "1920x1080",
            30,
            &["-g", "50", "-b:v", "4M", "-maxrate", "4M", "-bufsize", "4M"],
            &["-muxrate", "4500k"],
        );
    }
    let data = std::fs::read(&src).unwrap();
    let pkt = |i: usize| &data[i * 188..i * 188 + 188];
    let pid = |p: &[u8]| (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
    let keys: Vec<usize> = (0..data.len() / 188)
        .filter(|&i| pid(pkt(i)) == 0x100 && pkt(i)[3] & 0x20 != 0 && pkt(i)[5] & 0x40 != 0)
        .map(|i| i * 188)
        .collect();
    let pat = (0..).map(pkt).find(|p| pid(p) == 0).unwrap().to_vec();
    let pmt = (0..).map(pkt).find(|p| pid(p) == 0x1000).unwrap().to_vec();
    let rate = data.len() as f64 / 30.0;
    let port = live_upstream(data.clone(), keys, [pat, pmt].concat(), rate);
    let trials = if a.quick { 4 } else { 8 };
    const MODES: [(&str, &str); 3] = [
        ("mid", "mid-GOP (the live position)"),
        ("key", "on a keyframe, tables after it"),
        ("keytables", "on a keyframe, PAT/PMT first"),
    ];
    let modes = MODES;
    let streams: String = (1..=trials * modes.len())
        .map(|i| format!("  - {{id: {i}, name: Z{i}, source: 'http://127.0.0.1:{port}/{}.ts', ffmpeg_profile: relay}}\n", modes[(i - 1) / trials].0))
        .collect();
    let s = Server::start(
        &a.amps,
        &format!("server:\n  auth_token: {TOKEN}\nengine:\n  idle_grace_secs: 1\nffmpeg_profiles:\n  relay: {{video_codec: copy, audio_codec: copy}}\nstreams:\n{streams}"),
    );
    let mut rows = Vec::new();
    for (m, &(mode, label)) in MODES.iter().enumerate() {
        let url = format!("http://127.0.0.1:{port}/{mode}.ts");
        let mut got: Vec<[f64; 4]> = Vec::new();
        for t in 0..trials {
            std::thread::sleep(Duration::from_millis(370 * t as u64 % 1900));
            let t0 = Instant::now();
            let id = (m * trials + t + 1) as u32;
            let cli = |fast: bool| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let mut c = Command::new("ffmpeg");
                    c.args(["-hide_banner", "-nostdin", "-v", "quiet"]);
                    if fast {
                        c.args(["-probesize", "32768", "-analyzeduration", "0"]);
                    }
                    let mut child = c
                        .args(["-i", &url, "-c", "copy", "-f", "mpegts", "pipe:1"])
                        .stdout(Stdio::piped())
                        .spawn()
                        .unwrap();
                    let r = decodable_at(&mut child.stdout.take().unwrap(), t0);
                    let _ = child.kill();
                    let _ = child.wait();
                    r
                })
            };
            let (up_url, addr) = (url.clone(), s.addr.clone());
            let floor = std::thread::spawn(move || {
                let mut c = TcpStream::connect(
                    up_url
                        .trim_start_matches("http://")
                        .split('/')
                        .next()
                        .unwrap(),
                )
                .unwrap();
                write!(c, "GET /{mode}.ts HTTP/1.0\r\n\r\n").unwrap();
                // The body only: a header byte could pass for a sync byte.
                let mut r = BufReader::new(c);
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                decodable_at(&mut r, t0)
            });
            let amps = std::thread::spawn(move || match open_stream(&addr, id) {
                Ok(r) => decodable_at(&mut Dechunk { r, left: 0 }, t0),
                Err(_) => f64::NAN,
            });
            let (fast, default) = (cli(true), cli(false));
            let row = [floor, amps, fast, default].map(|h| h.join().unwrap());
            println!(
                "zap {label}, trial {}: floor {:.0} ms, amps {:.0}, cli fast {:.0}, cli default {:.0}",
                t + 1,
                row[0],
                row[1],
                row[2],
                row[3]
            );
            got.push(row);
        }
        let med = |k: usize| median(got.iter().map(|r| r[k]).collect());
        let added = |k: usize| median(got.iter().map(|r| r[k] - r[0]).collect());
        println!(
            "zap {label}: floor {:.0} ms; added to it: amps {:+.0} ms, cli fast {:+.0} ms, cli default {:+.0} ms",
            med(0),
            added(1),
            added(2),
            added(3)
        );
        rows.push(json!({
            "upstream_starts": label,
            "trials": trials,
            "floor_ms": med(0),
            "amps_ms": med(1), "amps_added_ms": added(1),
            "cli_fast_ms": med(2), "cli_fast_added_ms": added(2),
            "cli_default_ms": med(3), "cli_default_added_ms": added(3),
        }));
    }
    json!({ "live_zap": rows })
}

fn http_get(addr: &str, path: &str) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Amps-Token: {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => out.split_off(p + 4),
        None => Vec::new(),
    }
}

fn main() {
    let a = args();
    let dir = support::media();
    // The fan-out source: 8 Mbit/s constant-rate H.264 1080p + AAC.
    let cbr = dir.join("cbr8.ts");
    if !cbr.exists() {
        support::test_media::generate(
            &cbr,
            "1920x1080",
            20,
            &[
                "-b:v",
                "7800k",
                "-minrate",
                "7800k",
                "-maxrate",
                "7800k",
                "-bufsize",
                "2M",
                "-x264-params",
                "nal-hrd=cbr",
            ],
            &["-b:a", "128k", "-muxrate", "8M"],
        );
    }
    let rate_bps = std::fs::metadata(&cbr).unwrap().len() as f64 * 8.0 / 20.0;
    let up = upstream::Upstream::start(dir.to_path_buf(), 0);
    let http = up.url("hd.ts");
    let hd = dir.join("hd.ts").display().to_string();
    let file = cbr.display().to_string();
    println!(
        "amps-load: {} ({}), {} cores, source {:.1} Mbit/s",
        a.amps.display(),
        String::from_utf8_lossy(
            &Command::new(&a.amps)
                .arg("--version")
                .output()
                .unwrap()
                .stdout
        )
        .lines()
        .next()
        .unwrap_or(""),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        rate_bps / 1e6
    );
    if let Some(spec) = a.soak {
        let r = soak(&a, &http, &file, spec);
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
        return;
    }
    if a.providers_only {
        let r = providers_cost(&a);
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
        return;
    }
    if a.archive_only {
        let r = archive_cost(&a, &file);
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
        return;
    }
    if a.zap_only {
        let r = live_zap(&a);
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
        return;
    }
    if a.tracks_only {
        let r = tracks_cost(&a, &http);
        println!("{}", serde_json::to_string_pretty(&r).unwrap());
        return;
    }
    if a.tls_only {
        let tls = tls_cost(&a, &http, &file);
        println!("{}", serde_json::to_string_pretty(&tls).unwrap());
        return;
    }
    let s = Server::start(&a.amps, &config(&http, &file, 0));
    // Cold start copies and transcodes `hd.ts` (1080p H.264) from HTTP and from the file.
    let cs = {
        let s2 = Server::start(&a.amps, &config(&http, &hd, 0));
        cold_start(&a, &s2, &http, &hd)
    };
    let wj = warm_join(&a, &s);
    let fo = fan_out(&a, &s, &file, rate_bps);
    let pt = paced_transcode(&a, &s);
    drop(s);
    let tls = tls_cost(&a, &http, &file);
    let te = transcode_efficiency(&hd);
    let mem = memory(&a, &http, &file);
    let report = json!({
        "machine": {
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "amps": a.amps.display().to_string(),
            "quick": a.quick,
            "seconds_per_window": a.seconds,
        },
        "cold_start": cs,
        "warm_join": wj,
        "fan_out": fo,
        "transcode_paced_cores": pt,
        "tls": tls,
        "transcode_unpaced": te,
        "memory": mem,
    });
    if let Some(p) = a.json.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    std::fs::write(&a.json, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("JSON: {}", a.json.display());
}
