//! The nginx from Debian, run by a test in front of Amps on loopback with a site block the
//! test gives (from the docs), and stopped when dropped.

use super::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with the `server` block `site(port, dir)` returns (it must listen on
    /// 127.0.0.1:`port`; `dir` is nginx's own scratch directory) and waits until it
    /// accepts connections.
    pub fn start(site: impl FnOnce(u16, &Path) -> String) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let site = site(port, dir.path());
        // The part of nginx.conf Debian provides; everything else is the given block.
        let p = dir.path().display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n{site}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        // Workers may run as another user when the tests run as root.
        let _ = Command::new("chmod").arg("777").arg(dir.path()).status();
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (./scripts/setup installs nginx-light)");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child, port, dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first ```nginx block of a page under docs/, with each `(from, to)` replaced (each
/// `from` must be there: the docs and the test must not drift apart).
pub fn documented_block(page: &str, replace: &[(&str, String)]) -> String {
    let doc =
        std::fs::read_to_string(format!("{}/docs/{page}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let start = doc.find("```nginx\n").expect("an nginx block") + "```nginx\n".len();
    let len = doc[start..].find("```").unwrap();
    let mut site = doc[start..start + len].to_owned();
    for (from, to) in replace {
        assert!(site.contains(from), "docs/{page} no longer has {from}");
        site = site.replace(from, to);
    }
    site
}
