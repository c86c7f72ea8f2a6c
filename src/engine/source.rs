//! Opening a channel's source with libav: the fast-start probing defaults and protocol
//! whitelist of its kind ([`SourceKind`], decided in `config`), and an interrupt callback installed before
//! `avformat_open_input` so probing and every later read can be aborted.

use crate::config::source::SourceKind;
use ff::format::context::Input;
use ff::Dictionary;
use ffmpeg_next as ff;
use std::collections::BTreeMap;
use std::ffi::CString;

/// The libav options used to open a source: fast-start probing, timeouts for network
/// sources, the protocol whitelist, then the profile's `input_options` on top.
pub fn input_options(
    kind: &SourceKind,
    profile: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut o: BTreeMap<String, String> = BTreeMap::new();
    // Live sources start at the pace of their own bytes: a small probe, the rest learnt
    // from the first packets (see `prime`). Files and generated sources cost nothing to
    // probe further, and their details (frame rate, duration) are worth it.
    let live = matches!(kind, SourceKind::Http | SourceKind::Network(_));
    o.insert(
        "probesize".into(),
        if live { "32768" } else { "1000000" }.into(),
    );
    o.insert(
        "analyzeduration".into(),
        if live { "500000" } else { "1500000" }.into(),
    );
    if !matches!(kind, SourceKind::Lavfi(_)) {
        o.insert("protocol_whitelist".into(), kind.protocols().into());
    }
    if matches!(kind, SourceKind::Http) {
        o.insert("rw_timeout".into(), "10000000".into());
        o.insert(
            "user_agent".into(),
            format!("Amps/{}", env!("CARGO_PKG_VERSION")),
        );
        // A live HLS source starts at its newest complete segment (which begins with a
        // keyframe), not three segments back: a zap shows what is on now. Only the HLS
        // demuxer reads this option; other inputs leave it unused.
        o.insert("live_start_index".into(), "-1".into());
    }
    for (k, v) in profile {
        o.insert(k.clone(), v.clone());
    }
    o.into_iter().collect()
}

/// Opens `source` with an interrupt callback (return true to abort any blocking call).
pub fn open<F>(source: &str, options: &[(String, String)], interrupt: F) -> Result<Input, String>
where
    F: FnMut() -> bool + Send + 'static,
{
    let kind = SourceKind::classify(source);
    let (url, format) = match &kind {
        SourceKind::Lavfi(graph) => (graph.clone(), Some("lavfi")),
        SourceKind::File => (
            source.strip_prefix("file:").unwrap_or(source).to_owned(),
            None,
        ),
        _ => (source.to_owned(), None),
    };
    let mut dict = Dictionary::new();
    for (k, v) in options {
        dict.set(k, v);
    }
    let c_url = CString::new(url).map_err(|_| "the source contains a NUL byte".to_owned())?;
    // SAFETY: the same sequence as ffmpeg-next's `input_with_interrupt_and_dictionary`,
    // plus an explicit input format (needed for lavfi). On failure avformat_open_input
    // frees the context; after it succeeds, ownership moves into `Input`.
    unsafe {
        let mut ps = ff::ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err("out of memory".into());
        }
        let interrupt = ff::util::interrupt::new(Box::new(interrupt));
        (*ps).interrupt_callback = interrupt.interrupt;
        let fmt = match format {
            Some(f) => {
                let name = CString::new(f).expect("static name");
                let found = ff::ffi::av_find_input_format(name.as_ptr());
                if found.is_null() {
                    ff::ffi::avformat_free_context(ps);
                    return Err(format!("this libav has no {f} input"));
                }
                found
            }
            None => std::ptr::null(),
        };
        let mut opts = dict.disown();
        let res = ff::ffi::avformat_open_input(&mut ps, c_url.as_ptr(), fmt as _, &mut opts);
        Dictionary::own(opts);
        if res < 0 {
            return Err(ff::Error::from(res).to_string());
        }
        let res = ff::ffi::avformat_find_stream_info(ps, std::ptr::null_mut());
        if res < 0 {
            ff::ffi::avformat_close_input(&mut ps);
            return Err(format!("cannot read stream info: {}", ff::Error::from(res)));
        }
        Ok(Input::wrap_with_interrupt(ps, interrupt.guard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_whitelists() {
        assert_eq!(
            SourceKind::classify("lavfi:testsrc2"),
            SourceKind::Lavfi("testsrc2".into())
        );
        assert_eq!(
            SourceKind::classify("HTTPS://cdn/x.m3u8").protocols(),
            "http,https,tcp,tls,crypto"
        );
        assert_eq!(SourceKind::classify("/media/a.ts"), SourceKind::File);
        assert!(SourceKind::classify("rtsp://cam/1")
            .protocols()
            .contains("rtp"));
        assert!(!SourceKind::classify("http://x")
            .protocols()
            .contains("file"));
    }

    #[test]
    fn profile_options_override_defaults() {
        let mut p = BTreeMap::new();
        p.insert("analyzeduration".to_string(), "5000000".to_string());
        let o = input_options(&SourceKind::Http, &p);
        assert!(o.contains(&("analyzeduration".into(), "5000000".into())));
        assert!(o.contains(&("live_start_index".into(), "-1".into())));
        assert!(o.contains(&(
            "protocol_whitelist".into(),
            "http,https,tcp,tls,crypto".into()
        )));
    }

    #[test]
    fn the_http_whitelist_refuses_local_files() {
        crate::libav::init();
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.ts");
        std::fs::write(&secret, b"not for you").unwrap();
        // A playlist that points at a local file, opened under the HTTP whitelist.
        let m3u8 = dir.path().join("evil.m3u8");
        std::fs::write(
            &m3u8,
            format!(
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nfile:{}\n#EXT-X-ENDLIST\n",
                secret.display()
            ),
        )
        .unwrap();
        let opts = input_options(&SourceKind::Http, &BTreeMap::new());
        let path = m3u8.display().to_string();
        let refused = match open(&path, &opts, || false) {
            Ok(_) => panic!("a local file opened under the HTTP whitelist"),
            Err(e) => e,
        };
        // libav refuses a protocol outside the whitelist with EINVAL...
        assert_eq!(refused, "Invalid argument");
        // ...while the file whitelist gets as far as the HLS demuxer.
        let file_opts = input_options(&SourceKind::File, &BTreeMap::new());
        let other = match open(&path, &file_opts, || false) {
            Ok(_) => String::new(),
            Err(e) => e,
        };
        assert_ne!(other, refused);
    }
}
