//! The fuzz entry points (src/fuzz.rs) under proptest: arbitrary bytes and YAML/JSON-shaped
//! inputs, a bounded number of cases per `cargo test`. cargo-fuzz drives the same entry
//! points for as long as one likes (fuzz/).

mod common;

use proptest::prelude::*;

/// YAML-ish text: real keys and values of the config in random arrangements.
fn yamlish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "server",
        "engine",
        "streams",
        "scheduled_streams",
        "ffmpeg_profiles",
        "hdhomerun",
        "id",
        "name",
        "source",
        "ffmpeg_profile",
        "port",
        "host",
        "auth_token",
        "loop",
        "custom_ffmpeg",
        "command",
        "shell",
        "schedule",
        "start",
        "end",
        "video_codec",
        "resolution",
        "tuner_count",
        "device_id",
        "next_programs",
        "title",
        "- id",
    ]);
    let value = prop::sample::select(vec![
        "1",
        "0",
        "-1",
        "99999999999999999999",
        "true",
        "\"x\"",
        "[]",
        "{}",
        "null",
        "copy",
        "libx264",
        "1280x720",
        "2500k",
        "'lavfi:testsrc2'",
        "http://h/x.ts",
        "2024-05-04T16:30:00Z",
        "[{id: 1}]",
        "{a: {b: {c: {d: 1}}}}",
        "&a 1",
        "*a",
        "!!binary x",
        "\"\\u0000\"",
        "~",
    ]);
    let indent = prop::sample::select(vec!["", "  ", "    ", "- ", "  - "]);
    prop::collection::vec((indent, key, value), 0..24).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(i, k, v)| format!("{i}{k}: {v}\n"))
            .collect()
    })
}

/// JSON-shaped bodies: nested values with the API's field names.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null)),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    let keys = prop::sample::select(vec![
        "id",
        "name",
        "source",
        "ffmpeg_profile",
        "custom_ffmpeg",
        "loop",
        "logo",
        "group",
        "channel_number",
        "next_programs",
        "title",
        "start",
        "schedule",
        "tvg_id",
        "x",
    ]);
    let value = leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    });
    value.prop_map(|v| serde_json::to_vec(&v).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn config_loader_never_panics_on_bytes(data in prop::collection::vec(any::<u8>(), 0..400)) {
        amps::fuzz::config_text(&data);
    }

    #[test]
    fn config_loader_never_panics_on_yamlish_text(text in yamlish()) {
        amps::fuzz::config_text(text.as_bytes());
    }

    #[test]
    fn stream_bodies_never_panic_or_5xx(data in prop::collection::vec(any::<u8>(), 0..300)) {
        amps::fuzz::stream_json(&data);
    }

    #[test]
    fn json_shaped_stream_bodies_never_panic_or_5xx(data in jsonish()) {
        amps::fuzz::stream_json(&data);
    }

    #[test]
    fn templating_never_changes_the_argument_count(
        template in "(ffmpeg|-i|\\{source\\}|\\{name\\}|\\{id\\}|'a b'|\"c\"|\\{|\\}| ){0,12}",
        source in ".{0,30}",
        name in ".{0,30}",
    ) {
        amps::fuzz::command_template(format!("{template}\u{0}{source}\u{0}{name}").as_bytes());
    }
}

#[test]
fn deep_nesting_and_huge_numbers_are_refused_cleanly() {
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    amps::fuzz::stream_json(deep.as_bytes());
    let deep_yaml = format!("streams: {}1{}", "[".repeat(100_000), "]".repeat(100_000));
    amps::fuzz::config_text(deep_yaml.as_bytes());
    amps::fuzz::stream_json(br#"{"id": 1e400, "name": "x", "source": "y"}"#);
    amps::fuzz::config_text(b"server:\n  port: 999999999999999999999999\n");
}

/// Damaged MPEG-TS through the inspector, libav's demuxer and the decoders: a generated
/// clip, then many copies of it with bytes flipped, cut or repeated (what cargo-fuzz's
/// `ts_stream` target does for as long as one likes).
#[test]
fn damaged_transport_streams_never_panic_the_inspector_demuxer_or_decoders() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.ts");
    common::media::generate(&clip, "160x120", 1, &[], &[]);
    let data = std::fs::read(&clip).unwrap();
    amps::fuzz::ts_stream(&data);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for case in 0..150 {
        let mut d = data.clone();
        match case % 3 {
            0 => {
                for _ in 0..(1 + next() % 64) {
                    let i = (next() as usize) % d.len();
                    d[i] ^= 1 << (next() % 8);
                }
            }
            1 => {
                let a = (next() as usize) % d.len();
                let b = (a + (next() as usize) % 4096).min(d.len());
                d.drain(a..b);
            }
            _ => {
                let a = (next() as usize) % d.len();
                let b = (a + (next() as usize) % 2048).min(d.len());
                let piece = d[a..b].to_vec();
                d.splice(a..a, piece);
            }
        }
        amps::fuzz::ts_stream(&d);
    }
}
