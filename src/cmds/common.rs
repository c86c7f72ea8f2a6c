//! What several subcommands share: loading the configuration they name, and checking the
//! programs its `custom_ffmpeg` channels need.

use std::path::{Path, PathBuf};

/// Loads the configuration a subcommand names (or the default search order).
pub fn load_config(flag: Option<&Path>) -> Result<crate::config::Loaded, crate::Error> {
    let path: Option<PathBuf> = crate::config::resolve_path(flag, &crate::config::process_env);
    crate::config::load(
        path.as_deref(),
        &crate::config::process_env,
        &crate::libav::Catalog::new(),
    )
}

/// Programs that `custom_ffmpeg` channels need but this machine lacks, one line each.
pub fn missing_programs(c: &crate::config::Config) -> Vec<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    crate::engine::command::missing_programs(
        c.streams.iter().chain(&c.scheduled_streams),
        c.engine.ffmpeg_path.as_deref(),
        &path,
    )
}
