//! Finds the system libav with pkg-config, records the versions built against (for
//! `amps --version`), and fails with one clear message when a build prerequisite is missing.
//! Linking itself is done by ffmpeg-sys-next; this script only checks and records.

use std::path::{Path, PathBuf};

const LIBS: &[(&str, &str)] = &[
    ("libavcodec", "libavcodec-dev"),
    ("libavformat", "libavformat-dev"),
    ("libavutil", "libavutil-dev"),
    ("libavfilter", "libavfilter-dev"),
    ("libavdevice", "libavdevice-dev"),
    ("libswscale", "libswscale-dev"),
    ("libswresample", "libswresample-dev"),
];

const HINT: &str = "install them with:\n    sudo apt-get install pkg-config clang libclang-dev \
libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev libswscale-dev \
libswresample-dev\n(or run ./scripts/setup)";

fn libclang_present() -> bool {
    if let Ok(dir) = std::env::var("LIBCLANG_PATH") {
        return Path::new(&dir).exists();
    }
    let mut dirs: Vec<PathBuf> = [
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let llvm = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten();
    dirs.extend(
        llvm.filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
            .map(|e| e.path().join("lib")),
    );
    dirs.iter().any(|dir| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("libclang") && n.contains(".so")
            })
    })
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");

    let mut versions = Vec::new();
    let mut missing = Vec::new();
    for (lib, pkg) in LIBS {
        match pkg_config::Config::new()
            .cargo_metadata(false)
            .env_metadata(false)
            .probe(lib)
        {
            Ok(found) => versions.push(format!("{lib} {}", found.version)),
            Err(_) => missing.push(*pkg),
        }
    }
    if !libclang_present() {
        missing.push("libclang-dev");
    }
    if !missing.is_empty() {
        panic!(
            "\n\nAmps needs the system libav development files and libclang to build.\nMissing: {}\n{HINT}\n",
            missing.join(", ")
        );
    }
    println!(
        "cargo:rustc-env=AMPS_LIBAV_VERSIONS={}",
        versions.join(", ")
    );
}
