//! The Dockerfile, checked as far as a machine without a Docker engine can. The image
//! itself is never built here (no Docker engine, no registry for the base images), so
//! these tests check what can be checked: what the Dockerfile declares (stages, user,
//! health check, entrypoint, copied paths), that its runtime package list resolves with apt
//! and, with what it pulls in, provides every library the built binary links, and that
//! its entrypoint command line (tini, `amps serve` with the image's environment, then the
//! health check command) works on this machine.

use std::collections::BTreeSet;
use std::process::Command;

fn dockerfile() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap()
}

/// The packages the runtime stage installs (the line after its `apt-get install`).
fn runtime_packages(text: &str) -> Vec<String> {
    let runtime = text
        .rsplit_once("\nFROM ")
        .map(|(_, r)| r)
        .expect("a multi-stage Dockerfile");
    let mut lines = runtime
        .lines()
        .skip_while(|l| !l.contains("apt-get install"));
    lines.next().expect("the runtime stage installs packages");
    let list = lines.next().expect("a package line");
    list.split_whitespace()
        .take_while(|w| *w != "\\")
        .map(str::to_owned)
        .collect()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dockerfile_declares_a_multi_stage_non_root_healthchecked_image() {
    let d = dockerfile();
    assert!(
        d.contains("FROM rust:1-bookworm AS build"),
        "builder on bookworm"
    );
    assert!(d.contains("\nFROM debian:bookworm-slim\n"), "slim runtime");
    assert!(d.contains("\nUSER amps\n"), "runs as a non-root user");
    assert!(d.contains("\nEXPOSE 5000\n"));
    assert!(
        d.contains("AMPS_CONFIG=/app/config.yaml"),
        "config where the seed mounts it"
    );
    assert!(
        d.contains("CMD [\"amps\", \"health\"]"),
        "HEALTHCHECK on /health"
    );
    assert!(
        d.contains("ENTRYPOINT [\"/usr/bin/tini\", \"--\", \"amps\"]"),
        "a tiny init forwards SIGTERM and reaps orphans"
    );
    let ignore =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/"), "{ignore}");
    // What the builder copies exists (a missing path fails `docker build`).
    for line in d
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        for p in line
            .split_whitespace()
            .skip(1)
            .filter(|w| !w.starts_with("--"))
        {
            if p.ends_with('/') || p.starts_with("/app") || p == "./" || p.starts_with("./") {
                continue;
            }
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
            assert!(path.exists(), "COPY {p}: missing");
        }
    }
}

#[test]
fn the_runtime_packages_resolve_and_cover_every_linked_library() {
    let pkgs = runtime_packages(&dockerfile());
    assert!(
        pkgs.iter().any(|p| p == "ffmpeg"),
        "custom commands need the CLI: {pkgs:?}"
    );
    assert!(pkgs.iter().any(|p| p == "tini"), "{pkgs:?}");
    // 1. apt can install exactly this list on Debian 12.
    run(Command::new("apt-get")
        .args(["install", "--simulate", "--no-install-recommends", "-qq"])
        .args(&pkgs));
    // 2. Everything they bring (recursively), plus what a slim image always has.
    let deps = run(Command::new("apt-cache")
        .args([
            "depends",
            "--recurse",
            "--no-recommends",
            "--no-suggests",
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ])
        .args(&pkgs));
    let mut have: BTreeSet<String> = deps
        .lines()
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.trim().split(':').next().unwrap_or("").to_owned())
        .collect();
    have.extend(["libc6", "libgcc-s1", "libstdc++6"].map(String::from));
    // 3. The package owning each library the binary links is among them.
    let ldd = run(Command::new("ldd").arg(env!("CARGO_BIN_EXE_amps")));
    let mut checked = 0;
    for lib in ldd.lines().filter_map(|l| l.split("=> ").nth(1)) {
        let path = lib.split_whitespace().next().unwrap_or("");
        if !path.starts_with('/') {
            continue;
        }
        // usrmerge registers some files under /lib, some under /usr/lib; alternatives
        // (libblas.so.3) are symlinks to the real file.
        let real = std::fs::canonicalize(path)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let candidates = [
            path.to_owned(),
            format!("/usr{path}"),
            path.trim_start_matches("/usr").to_owned(),
            real.clone(),
            real.trim_start_matches("/usr").to_owned(),
        ];
        let owner = candidates.iter().find_map(|p| {
            let out = Command::new("dpkg").args(["-S", p]).output().ok()?;
            out.status.success().then(|| {
                String::from_utf8_lossy(&out.stdout)
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
        });
        let owner = owner.unwrap_or_else(|| panic!("no Debian package owns {path}"));
        assert!(
            have.contains(&owner),
            "{path} comes from {owner}, which the runtime image would not have"
        );
        checked += 1;
    }
    assert!(checked >= 7, "the seven libav libraries at least: {ldd}");
}

/// `ENV` keys and values of the runtime stage (`ENV A=1 \ B=2` lines).
fn runtime_env(text: &str) -> Vec<(String, String)> {
    let runtime = text.rsplit_once("\nFROM ").unwrap().1;
    let mut out = Vec::new();
    let mut in_env = false;
    for line in runtime.lines() {
        let l = line.trim();
        let body = if let Some(b) = l.strip_prefix("ENV ") {
            b
        } else if in_env {
            l
        } else {
            continue;
        };
        for kv in body.trim_end_matches('\\').split_whitespace() {
            if let Some((k, v)) = kv.split_once('=') {
                out.push((k.to_owned(), v.to_owned()));
            }
        }
        in_env = l.ends_with('\\');
    }
    out
}

/// The JSON-array words of `INSTRUCTION [...]` (ENTRYPOINT, CMD) in the runtime stage.
fn exec_form(text: &str, instruction: &str) -> Vec<String> {
    let runtime = text.rsplit_once("\nFROM ").unwrap().1;
    let line = runtime
        .lines()
        .find(|l| l.starts_with(&format!("{instruction} [")))
        .unwrap_or_else(|| panic!("no {instruction} in exec form"));
    serde_json::from_str(line[instruction.len()..].trim()).unwrap()
}

#[test]
fn the_entrypoint_command_line_serves_and_passes_its_health_check_here() {
    let d = dockerfile();
    let entry = exec_form(&d, "ENTRYPOINT");
    let cmd = exec_form(&d, "CMD");
    assert_eq!(entry.last().map(String::as_str), Some("amps"), "{entry:?}");
    let env = runtime_env(&d);
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("ENV {k}: {env:?}"))
    };
    assert_eq!(get("AMPS_HOST"), "0.0.0.0");
    // The image's config, where the image's AMPS_CONFIG says, is the bundled one.
    assert_eq!(get("AMPS_CONFIG"), "/app/config.yaml");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml"), &config).unwrap();
    let bin = env!("CARGO_BIN_EXE_amps");
    // ENTRYPOINT + CMD with the built binary for `amps` (tini from Debian's package).
    let argv: Vec<String> = entry[..entry.len() - 1]
        .iter()
        .cloned()
        .chain([bin.to_owned()])
        .chain(cmd.iter().cloned())
        .collect();
    assert!(
        std::path::Path::new(&argv[0]).exists(),
        "{} (Debian package tini; ./scripts/setup installs it)",
        argv[0]
    );
    let run = |args: &[String], env: &[(&str, String)]| {
        let mut c = std::process::Command::new(&args[0]);
        c.args(&args[1..])
            .env_remove("AMPS_TOKEN")
            .env("AMPS_CONFIG", &config)
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c
    };
    // As the image sets it (0.0.0.0) and with the bundled config's sample token, amps
    // refuses to start: the container insists on a real token.
    let out = run(&argv, &[("AMPS_HOST", get("AMPS_HOST"))])
        .env("AMPS_PORT", "0")
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "served on 0.0.0.0 with the sample token"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token"), "{err}");
    // With a real token it serves; here on loopback (tests only listen on 127.0.0.1) at
    // a free port, the rest as the image has it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let env = [
        ("AMPS_HOST", "127.0.0.1".to_owned()),
        ("AMPS_PORT", port.clone()),
        (
            "AMPS_TOKEN",
            "a-real-token-for-the-docker-test-0123".to_owned(),
        ),
    ];
    let mut server = run(&argv, &env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Read its first line, then keep draining its output as a container runtime would.
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    assert_eq!(line.trim(), format!("listening on 127.0.0.1:{port}"));
    // The HEALTHCHECK command, with the same environment.
    let health = exec_form(&d, "  CMD");
    assert_eq!(
        health.first().map(String::as_str),
        Some("amps"),
        "{health:?}"
    );
    let health: Vec<String> = [bin.to_owned()]
        .into_iter()
        .chain(health[1..].iter().cloned())
        .collect();
    let ok = run(&health, &env).status().unwrap();
    // tini forwards SIGTERM: the server exits 0.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > std::time::Duration::from_secs(10) {
            let _ = server.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        ok.success(),
        "the health check failed against a running server"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM through tini: {status:?}"
    );
    // And fails when nothing runs.
    assert!(!run(&health, &env).status().unwrap().success());
}
