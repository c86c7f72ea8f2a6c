//! `amps health`: asks a running server's `/health` (the container's HEALTHCHECK; no curl
//! needed in the image).

use argh::FromArgs;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// check that the server answers on /health (exit status 0 if it does)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "health")]
pub struct Args {
    /// host:port to ask (default: from the configuration, 127.0.0.1 for a wildcard host)
    #[argh(option)]
    pub addr: Option<String>,
    /// configuration file (default: $AMPS_CONFIG, ./config.yaml, or the bundled default)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
    /// seconds to wait for the answer (default 3)
    #[argh(option, default = "3")]
    pub timeout: u64,
}

fn target(args: &Args) -> Result<String, String> {
    if let Some(a) = &args.addr {
        return Ok(a.clone());
    }
    let loaded = super::common::load_config(args.config.as_deref()).map_err(|e| e.to_string())?;
    let s = loaded.config.server;
    let host = match s.host.as_str() {
        "0.0.0.0" | "" => "127.0.0.1".to_owned(),
        "::" | "[::]" => "[::1]".to_owned(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_owned(),
    };
    Ok(format!("{host}:{}", s.port))
}

fn ask(addr: &str, timeout: Duration) -> Result<(), String> {
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).map_err(|e| format!("{addr}: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    if line.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "{addr}: unexpected answer {:?}",
            line.lines().next().unwrap_or("")
        ))
    }
}

/// Returns the process exit code.
pub fn run(args: Args) -> i32 {
    let result = target(&args).and_then(|a| ask(&a, Duration::from_secs(args.timeout.max(1))));
    match result {
        Ok(()) => {
            println!("ok");
            0
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            1
        }
    }
}
