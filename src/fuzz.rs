//! Fuzz entry points: each takes arbitrary bytes, runs one untrusted-input path, and
//! panics only if an invariant breaks. `fuzz/` (cargo-fuzz, nightly) drives them with
//! libFuzzer; `tests/fuzz.rs` drives them with proptest for a bounded number of cases in
//! every `cargo test`, so the invariants are checked on stable too.

use crate::config::{CustomFfmpeg, StreamConfig};
use crate::error::ErrorKind;

/// The config loader: any text loads or fails with a config error that names the file;
/// it never panics.
pub fn config_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let catalog = crate::libav::Catalog::new();
    match crate::config::load_str(&text, "fuzz.yaml", &|_| None, &catalog) {
        Ok(loaded) => {
            // What loads must also validate when written back and read again.
            let again = serde_yaml::to_string(&loaded.config).expect("a loaded config serializes");
            if let Err(e) = crate::config::load_str(&again, "again.yaml", &|_| None, &catalog) {
                panic!("a loaded config did not load again: {e}\n{again}");
            }
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(e.to_string().contains("fuzz.yaml"), "{e}");
        }
    }
}

/// An API body for a stream: any bytes parse or fail with a 4xx error; what parses is
/// checked by the same rules as the config file, never panicking.
pub fn stream_json(data: &[u8]) {
    let profiles =
        std::collections::BTreeMap::from([("relay".to_owned(), crate::config::Profile::default())]);
    match crate::http::reply::parse_json::<StreamConfig>(Some("application/json"), data) {
        Ok(s) => {
            let issues = crate::config::validate::validate_stream(&s, &profiles, "");
            let _kind = crate::config::source::SourceKind::classify(&s.source);
            // What the API does with it (validation, source and command rules): a 4xx or
            // success, never a 5xx; a body that validation refuses is never accepted.
            let config = crate::config::Config {
                ffmpeg_profiles: profiles,
                ..Default::default()
            };
            let registry = crate::registry::Registry::from_config(&config);
            match registry.create(s, crate::registry::Origin::Api) {
                Ok(_) => assert!(issues.is_empty(), "accepted despite {issues:?}"),
                Err(e) => {
                    let status = e.kind().http_status();
                    assert!((400..500).contains(&status), "{status}: {e}");
                }
            }
        }
        Err(e) => {
            let status = e.kind().http_status();
            assert!((400..500).contains(&status), "{status}: {e}");
        }
    }
}

/// Command templating: whatever the stream's source, name and the template, substitution
/// never adds or removes an argument (without a shell), and never panics.
pub fn command_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{0}');
    let template = parts.next().unwrap_or("");
    let source = parts.next().unwrap_or("");
    let name = parts.next().unwrap_or("");
    let stream: StreamConfig = match serde_json::from_value(serde_json::json!({
        "id": 7, "name": name, "source": source, "custom_ffmpeg": template
    })) {
        Ok(s) => s,
        Err(_) => return,
    };
    let cmd = CustomFfmpeg {
        command: template.to_owned(),
        shell: false,
        cwd: None,
        env: Default::default(),
    };
    // A template that splits must give an argv of the same length (an empty one is
    // refused); one that does not split must be refused, not run some other way.
    match (
        shell_words::split(template),
        crate::engine::command::argv(&cmd, &stream, None),
    ) {
        (Ok(words), Ok(argv)) => assert_eq!(
            words.len(),
            argv.len(),
            "substitution changed the argument count"
        ),
        (Ok(words), Err(e)) => assert!(words.is_empty(), "{template:?} refused: {e}"),
        (Err(_), Ok(argv)) => panic!("{template:?} does not split but gave {argv:?}"),
        (Err(_), Err(_)) => {}
    }
}

/// MPEG-TS bytes (a damaged or hostile source) through what a channel does with them: the
/// TS inspector the hub relies on, and libav's MPEG-TS demuxer and the decoders of every
/// audio and video stream it finds. Never panics; the inspector's pieces are whole
/// packets and never more than the input.
/// The TS relay's path (rewriter, then the hub writer with content keyframes), fed in
/// uneven reads, as a fresh and as a continuing session: whole packets out, never more
/// than went in, counters and end that the next session can use.
fn ts_relay(data: &[u8]) {
    use crate::engine::hub::{Hub, HubWriter};
    use crate::engine::ts_rewrite::Rewriter;
    use std::io::Write;
    for fresh in [true, false] {
        let hub = std::sync::Arc::new(Hub::new(1 << 20, 1_000));
        let mut writer = HubWriter::new(hub.clone()).relaying();
        let cc = std::collections::HashMap::from([(0x100, 7)]);
        let mut rw = Rewriter::new(90_000, if fresh { Default::default() } else { cc }, fresh);
        let (mut out, mut total) = (Vec::new(), 0);
        for (i, chunk) in data.chunks(1 + data.len() % 997).enumerate() {
            rw.feed(
                chunk,
                std::time::Duration::from_millis(i as u64 * 7),
                &mut out,
            );
            assert_eq!(out.len() % 188, 0, "a partial packet out of the relay");
            total += out.len();
            let _ = writer.write_all(&out);
            out.clear();
        }
        assert!(total <= data.len(), "the relay wrote more than it read");
        assert!(rw.end() >= 90_000, "the output ends before it started");
        assert!(rw.counters().values().all(|&c| c < 16));
    }
}

pub fn ts_stream(data: &[u8]) {
    use ffmpeg_next as ff;
    let mut ins = crate::engine::ts::Inspector::default();
    let pieces = ins.feed(data);
    let out: usize = pieces.iter().map(|p| p.data.len()).sum();
    assert!(
        out + ins.dropped as usize <= data.len(),
        "pieces exceed the input"
    );
    assert!(
        pieces.iter().all(|p| p.data.len() % 188 == 0),
        "a piece of a partial packet"
    );
    ts_relay(data);
    crate::libav::init();
    let Ok(io) = ff::format::context::StreamIo::from_read(std::io::Cursor::new(data.to_vec()))
    else {
        return;
    };
    let mut opts = ff::Dictionary::new();
    opts.set("format_whitelist", "mpegts");
    opts.set("protocol_whitelist", "none");
    opts.set("probesize", "65536");
    let Ok(mut ictx) = ff::format::input_from_stream(io, None, Some(opts)) else {
        return;
    };
    let mut decoders: Vec<Option<ff::decoder::Opened>> = ictx
        .streams()
        .map(|st| {
            let medium = st.parameters().medium();
            if medium != ff::media::Type::Video && medium != ff::media::Type::Audio {
                return None;
            }
            ff::codec::context::Context::from_parameters(st.parameters())
                .ok()?
                .decoder()
                .open()
                .ok()
        })
        .collect();
    // SAFETY: allocates an empty AVFrame; decoders fill it.
    let mut frame = unsafe { ff::frame::Frame::empty() };
    for _ in 0..2_000 {
        let mut pkt = ff::Packet::empty();
        match pkt.read(&mut ictx) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(_) => continue,
        }
        if let Some(Some(dec)) = decoders.get_mut(pkt.stream()) {
            if dec.send_packet(&pkt).is_ok() {
                while dec.receive_frame(&mut frame).is_ok() {}
            }
        }
    }
}
