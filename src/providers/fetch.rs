//! Fetching providers' playlists and guides: HTTP(S) with timeouts and size limits, or a
//! local file; gzip and xz recognised by their magic bytes and unpacked as a stream, with
//! the limit applied to the unpacked bytes too. Blocking: called on a blocking thread.
//!
//! Errors never carry the URL (it holds the account's credentials): the caller names the
//! source by its configured name.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

/// A reader that fails, rather than silently stopping, once more than `left` bytes came,
/// or once its deadline has passed (a server that trickles a byte now and then).
struct Limited<R> {
    inner: R,
    left: u64,
    what: &'static str,
    limit: u64,
    deadline: Option<std::time::Instant>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.deadline.is_some_and(|d| std::time::Instant::now() > d) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the transfer took longer than its time limit",
            ));
        }
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(format!(
                "larger than {} MiB{} (the limit)",
                self.limit >> 20,
                self.what
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn limited<R: Read>(inner: R, limit: u64, what: &'static str) -> Limited<R> {
    Limited {
        inner,
        left: limit,
        what,
        limit,
        deadline: None,
    }
}

/// How a fetch is made.
#[derive(Clone, Debug)]
pub struct Options {
    pub user_agent: Option<String>,
    /// Most bytes read, compressed and unpacked alike.
    pub max_bytes: u64,
    pub connect_timeout: Duration,
    /// Longest wait for any read.
    pub read_timeout: Duration,
    /// Whether a local file path may be read (config-file sources only).
    pub allow_files: bool,
    /// Longest the whole transfer may take.
    pub total_timeout: Duration,
}

impl Options {
    pub fn new(max_bytes: u64) -> Options {
        Options {
            user_agent: None,
            max_bytes,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            allow_files: true,
            total_timeout: Duration::from_secs(600),
        }
    }
}

fn is_http(url: &str) -> bool {
    let l = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// Opens `url` (http, https, or a file path) as a stream of unpacked bytes.
pub fn open(url: &str, o: &Options) -> Result<Box<dyn BufRead + Send>, String> {
    let raw: Box<dyn Read + Send> = if is_http(url) {
        let mut agent = ureq::AgentBuilder::new()
            .timeout_connect(o.connect_timeout)
            .timeout_read(o.read_timeout)
            .redirects(5);
        if let Some(ua) = &o.user_agent {
            agent = agent.user_agent(ua);
        }
        match agent.build().get(url).call() {
            Ok(r) => r.into_reader(),
            Err(ureq::Error::Status(code, r)) => {
                return Err(format!("the server answered {code} {}", r.status_text()))
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(format!("cannot reach the server: {}", transport(&t)))
            }
        }
    } else if url.contains("://") {
        return Err("only http://, https:// and file paths can be fetched".into());
    } else if !o.allow_files {
        return Err("a file path is only allowed in the config file".into());
    } else {
        Box::new(std::fs::File::open(url).map_err(|e| format!("cannot open the file: {e}"))?)
    };
    let mut raw = limited(raw, o.max_bytes, " as sent");
    raw.deadline = Some(std::time::Instant::now() + o.total_timeout);
    let mut buf = BufReader::with_capacity(64 * 1024, raw);
    let head = buf.fill_buf().map_err(|e| e.to_string())?;
    let out: Box<dyn BufRead + Send> = if head.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::bufread::MultiGzDecoder::new(buf);
        Box::new(BufReader::new(limited(gz, o.max_bytes, " unpacked")))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        let xz = xz2::bufread::XzDecoder::new_multi_decoder(buf);
        Box::new(BufReader::new(limited(xz, o.max_bytes, " unpacked")))
    } else {
        Box::new(buf)
    };
    Ok(out)
}

/// The whole of `url`, unpacked.
pub fn fetch(url: &str, o: &Options) -> Result<Vec<u8>, String> {
    let mut r = open(url, o)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// A transport error in words, without the URL ureq would put in its Display.
fn transport(t: &ureq::Transport) -> String {
    let mut s = format!("{:?}", t.kind());
    if let Some(m) = t.message() {
        s.push_str(": ");
        s.push_str(m);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_transfer_past_its_deadline_fails() {
        let mut r = limited(&b"slow provider"[..], 1 << 20, " as sent");
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf).unwrap(), 4, "no deadline: reads");
        r.deadline = Some(std::time::Instant::now() - Duration::from_millis(1));
        let e = r.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("time limit"), "{e}");
    }

    #[test]
    fn gzip_and_xz_files_are_unpacked_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"#EXTM3U\n".repeat(1000);
        let gz = dir.path().join("a.m3u.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&body).unwrap();
        std::fs::write(&gz, e.finish().unwrap()).unwrap();
        let xz = dir.path().join("a.xml.xz");
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(&body).unwrap();
        std::fs::write(&xz, e.finish().unwrap()).unwrap();
        for p in [&gz, &xz] {
            let path = p.to_str().unwrap();
            assert_eq!(fetch(path, &Options::new(1 << 20)).unwrap(), body);
            // A bomb: small when packed, over the limit when unpacked.
            let e = fetch(path, &Options::new(4000)).unwrap_err();
            assert!(e.contains("unpacked"), "{e}");
        }
        let mut o = Options::new(1 << 20);
        o.allow_files = false;
        assert!(fetch(gz.to_str().unwrap(), &o)
            .unwrap_err()
            .contains("config file"));
        assert!(fetch("ftp://x/y", &o).unwrap_err().contains("only http"));
    }
}
