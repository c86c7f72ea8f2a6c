//! What a `source` string names, and which libav protocols each kind may use. Pure: the
//! registry's API rules and the engine's input options both decide on it.

/// What a `source` string names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// `lavfi:<filtergraph>`: a generated source (test patterns).
    Lavfi(String),
    /// `http://` or `https://` (MPEG-TS, HLS playlists, anything libav demuxes).
    Http,
    /// `rtmp://`, `rtsp://`, `udp://`, `rtp://`, `srt://`.
    Network(&'static str),
    /// A local file path (or `file:` URL).
    File,
}

impl SourceKind {
    pub fn classify(source: &str) -> SourceKind {
        let lower = source.trim().to_ascii_lowercase();
        if let Some(graph) = source.trim().strip_prefix("lavfi:") {
            return SourceKind::Lavfi(graph.to_owned());
        }
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return SourceKind::Http;
        }
        for (prefix, protocols) in [
            ("rtmp://", "rtmp,rtmps,tcp,tls"),
            ("rtmps://", "rtmp,rtmps,tcp,tls"),
            ("rtsp://", "rtsp,rtp,udp,tcp,tls"),
            ("udp://", "udp,rtp"),
            ("rtp://", "rtp,udp"),
            ("srt://", "srt,udp"),
        ] {
            if lower.starts_with(prefix) {
                return SourceKind::Network(protocols);
            }
        }
        SourceKind::File
    }

    /// libav's `protocol_whitelist` for this kind: an HTTP source (and the HLS child
    /// playlists and segments it names) can never reach `file:`, `concat:`, `subfile:` or
    /// `data:`.
    pub fn protocols(&self) -> &'static str {
        match self {
            SourceKind::Lavfi(_) => "none",
            SourceKind::Http => "http,https,tcp,tls,crypto",
            SourceKind::Network(p) => p,
            SourceKind::File => "file,crypto",
        }
    }
}
