//! The command line: one module per subcommand. `main.rs` parses and dispatches here.

pub mod check;
pub mod health;
pub mod list;
pub mod probe;
pub mod serve;

use argh::FromArgs;
use std::path::{Path, PathBuf};

/// Amps: an M3U playlist server that relays and transcodes channels as MPEG-TS over HTTP.
#[derive(FromArgs, Debug)]
pub struct Args {
    /// print the Amps version and the libav libraries it was built against, then exit
    #[argh(switch, short = 'V')]
    pub version: bool,
    #[argh(subcommand)]
    pub command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Serve(serve::Args),
    List(list::Args),
    Check(check::Args),
    Probe(probe::Args),
    Health(health::Args),
}

/// The `--version` text.
pub fn version_text() -> String {
    format!(
        "amps {}\nbuilt against: {}\nrunning with:  {}",
        env!("CARGO_PKG_VERSION"),
        crate::libav::BUILT_AGAINST,
        crate::libav::runtime_versions()
    )
}

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
