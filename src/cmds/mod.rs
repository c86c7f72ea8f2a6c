//! The command line: one module per subcommand. `main.rs` parses and dispatches here.

pub mod check;
pub mod common;
pub mod health;
pub mod list;
pub mod probe;
pub mod serve;

use argh::FromArgs;

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
