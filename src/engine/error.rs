//! The engine's error type: what failed (the [`Stage`]), on which channel and source (with
//! credentials removed), and libav's or the OS's own words. Its `Display` is the detail
//! alone, the sentence channel statuses show; logs carry the context as fields.

use std::fmt;

/// Where in a producer session something failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Opening the source (connect, probe).
    Open,
    /// Setting up the output: stream mapping, decoders, filters, encoders, the muxer.
    Setup,
    /// Reading the source (an error, a stall, an end).
    Read,
    /// Decoding, filtering or encoding a stream.
    Transcode,
    /// Writing MPEG-TS.
    Mux,
    /// Running a `custom_ffmpeg` command.
    Process,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Open => "open",
            Stage::Setup => "setup",
            Stage::Read => "read",
            Stage::Transcode => "transcode",
            Stage::Mux => "mux",
            Stage::Process => "process",
        }
    }
}

/// A producer session's failure, with its context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub channel: u32,
    /// The source, credentials and query removed.
    pub source: String,
    pub stage: Stage,
    pub detail: String,
}

impl Error {
    pub fn new(channel: u32, source: &str, stage: Stage, detail: impl Into<String>) -> Error {
        Error {
            channel,
            source: crate::auth::redact_source(source),
            stage,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_their_context_and_show_their_detail() {
        let e = Error::new(
            7,
            "http://u:p@h/x.ts?token=1",
            Stage::Read,
            "no data from the source for 10 s",
        );
        assert_eq!(e.to_string(), "no data from the source for 10 s");
        assert_eq!(e.source, "http://***@h/x.ts?…");
        assert_eq!((e.channel, e.stage.as_str()), (7, "read"));
    }
}
