//! The Dockerfile, checked as far as a machine without a Docker engine can: its runtime
//! package list resolves with apt, those packages (and what they pull in) provide every
//! library the built binary links, and the image runs amps the way the docs say.

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
fn the_image_is_multi_stage_non_root_and_healthchecked() {
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
