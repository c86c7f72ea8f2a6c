//! Provider playlists and guides, end to end: a loopback provider the test runs (a
//! 20,000-entry M3U full of real-world quirks, an Xtream Codes API, gzip and xz XMLTV,
//! real MPEG-TS streams at their real-time rate), the real server importing them.
//! Filters, stable ids across a refresh that reorders and renames, connection limits
//! with real streams, the provider down during a refresh and at start (served from the
//! cache), the owner's overrides, hostile inputs, and secrets that never leave Amps.

mod common;

use common::provider::Provider;
use common::{eventually, media, Server, Viewer, TOKEN};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

const USER: &str = "acct-user7";
const PASS: &str = "acct-pass9";
const GROUPS: [&str; 6] = [
    "UK News",
    "UK Sports",
    "Sports",
    "US Movies",
    "Adult XXX",
    "Kids",
];

/// Whether entry `i` passes `include_groups: [UK*, Sports]`, `exclude_groups: [*Adult*]`.
fn kept(i: usize) -> bool {
    i % 6 <= 2
}

fn has_tvg(i: usize) -> bool {
    i % 7 != 0
}

/// A provider's M3U: `ids` in the given order, with the quirks providers send. `renamed`:
/// entries with a tvg-id get another name.
fn m3u(base: &str, ids: &[usize], renamed: bool) -> Vec<u8> {
    let mut out: Vec<u8> = b"\xEF\xBB\xBF#EXTM3U url-tvg=\"".to_vec();
    out.extend_from_slice(format!("{base}/epg.xml\" x-tvg-url=\"\"\r\n").as_bytes());
    for (k, &i) in ids.iter().enumerate() {
        let group = GROUPS[i % 6];
        let name = match (renamed && has_tvg(i), i % 5) {
            (true, _) => format!("Renamed {i}"),
            (false, 0) => format!("Channel {i}, HD"),
            _ => format!("Channel {i}"),
        };
        let tvg = if has_tvg(i) {
            format!("tvg-id=\"ch{i}.prov\"")
        } else {
            String::new()
        };
        let logo = format!("tvg-logo=\"{base}/logo/{i}.png\"");
        let grp = if i % 11 == 0 {
            String::new()
        } else {
            format!("group-title=\"{group}\"")
        };
        let attrs = match k % 3 {
            0 => format!("{tvg} {grp} {logo} tvg-name=\"{name}\""),
            1 => format!("{grp} tvg-chno={} {logo} {tvg}", 5000 + i),
            _ => format!("{logo}   {tvg}\t{grp}"),
        };
        out.extend_from_slice(format!("#EXTINF:-1 {attrs},{name}").as_bytes());
        if i % 19 == 0 {
            out.push(0xff); // invalid UTF-8 in a name
        }
        out.extend_from_slice(b"\r\n");
        if i % 11 == 0 {
            out.extend_from_slice(format!("#EXTGRP:{group}\r\n").as_bytes());
        }
        if i % 13 == 0 {
            out.extend_from_slice(b"#EXTVLCOPT:http-user-agent=ProviderApp/1.0\r\n#KODIPROP:inputstream=inputstream.ffmpegdirect\r\n");
        }
        if i % 17 == 0 {
            out.extend_from_slice(b"\r\n   \r\nsome junk the panel prints\n");
        }
        out.extend_from_slice(format!("{base}/live/{USER}/{PASS}/{i}.ts\r\n").as_bytes());
        if i % 1000 == 999 {
            // Malformed: an entry without a URL, one with a URL that is not one.
            out.extend_from_slice(b"#EXTINF:-1,Broken\r\n#EXTINF:-1,Bad URL\r\nnot a url\r\n");
        }
    }
    out
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn imported(s: &Server) -> Vec<Value> {
    let v = s.get("/api/streams").json();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["origin"] == "playlist:provider1")
        .cloned()
        .collect()
}

/// Imported channels by their tvg-id (or URL-keyed ones by their number in the name).
fn ids_by_key(chans: &[Value]) -> BTreeMap<String, u64> {
    chans
        .iter()
        .map(|c| {
            let key = match c["tvg_id"].as_str() {
                Some(t) => t.to_owned(),
                None => c["name"].as_str().unwrap().to_owned(),
            };
            (key, c["id"].as_u64().unwrap())
        })
        .collect()
}

fn config(provider: &Provider, dir: &std::path::Path) -> String {
    format!(
        "server:\n  auth_token: {TOKEN}\n  state_file: {state}\n  cache_dir: {cache}\nengine:\n  idle_grace_secs: 2\n  start_timeout_secs: 10\nffmpeg_profiles:\n  relay: {{video_codec: copy, audio_codec: copy}}\nstreams:\n  - {{id: 1, name: Own, source: 'lavfi:testsrc2=size=160x120:rate=10[out0];sine[out1]', ffmpeg_profile: relay}}\nplaylists:\n  - name: provider1\n    url: \"{base}/get.php?username={USER}&password={PASS}&type=m3u_plus\"\n    include_groups: [\"UK*\", \"Sports\"]\n    exclude_groups: [\"*Adult*\"]\n    ffmpeg_profile: relay\n    number_start: 1000\n    max_connections: 2\n    refresh_minutes: 0\n",
        state = dir.join("state.json").display(),
        cache = dir.join("cache").display(),
        base = provider.base(),
    )
}

fn assert_no_secrets(what: &str, text: &str) {
    for secret in [USER, PASS] {
        assert!(
            !text.contains(secret),
            "{what} shows the provider's account ({secret})"
        );
    }
}

#[test]
fn an_m3u_provider_is_imported_filtered_limited_refreshed_and_cached() {
    let provider = Provider::start();
    let base = provider.base();
    let n = 20_000;
    let order: Vec<usize> = (0..n).collect();
    provider.set("get.php", gzip(&m3u(&base, &order, false)));
    provider.streams("live/", media::dir().join("long.ts"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&provider, dir.path());
    let mut s = Server::start(&cfg);

    // Imported at start: the filters' channels, each with a stable id in the reserved range.
    let want = (0..n).filter(|i| kept(*i)).count();
    assert!(
        eventually(Duration::from_secs(20), || imported(&s).len() == want),
        "{} imported, {want} expected; {}",
        imported(&s).len(),
        s.get("/api/playlists").body
    );
    let st = s.get("/api/playlists/provider1").json();
    assert_eq!(st["entries"], n as u64, "{st}");
    assert_eq!(
        st["skipped"],
        2 * (n as u64 / 1000),
        "the malformed entries: {st}"
    );
    assert_eq!(st["filtered"], (n - want) as u64, "{st}");
    assert_eq!(st["kind"], "m3u");
    assert_eq!(st["from_cache"], false);
    assert!(st["error"].is_null(), "{st}");
    let fetch_ms = st["last_fetch_ms"].as_u64().unwrap();
    eprintln!("20,000-entry gzip M3U fetched and parsed in {fetch_ms} ms");
    let chans = imported(&s);
    assert!(chans
        .iter()
        .all(|c| c["id"].as_u64().unwrap() >= 2_000_000_000));
    let by = |name: &str| {
        chans
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no channel {name:?}"))
            .clone()
    };
    // A name with a comma, the group from #EXTGRP, the number from tvg-chno, the user
    // agent from #EXTVLCOPT, a name with invalid UTF-8.
    assert_eq!(by("Channel 30, HD")["group"], "UK News");
    assert_eq!(by("Channel 55, HD")["group"], "UK Sports", "#EXTGRP");
    let c13 = by("Channel 13");
    assert_eq!(c13["group"], "UK Sports");
    assert_eq!(c13["input_options"]["user_agent"], "ProviderApp/1.0");
    assert_eq!(by("Channel 1")["channel_number"], 5001);
    assert!(
        chans.iter().any(|c| c["name"] == "Channel 38\u{fffd}"),
        "invalid UTF-8 kept as U+FFFD"
    );
    assert!(!chans
        .iter()
        .any(|c| c["group"] == "Adult XXX" || c["group"] == "US Movies"));

    // The playlist serves them with Amps' own URLs; no provider account anywhere.
    let pl = s.get("/playlist.m3u");
    assert_eq!(pl.status, 200);
    assert_eq!(pl.body.matches("#EXTINF").count(), want + 1);
    // (The playlist writes a name's comma as U+201A, which players cannot mistake for the
    // one before the name.)
    assert!(
        pl.body.contains(",Channel 30\u{201A} HD\r\n")
            || pl.body.contains(",Channel 30\u{201A} HD\n"),
        "names keep their commas"
    );
    assert!(
        !pl.body
            .contains(&format!("127.0.0.1:{}/live", provider.port)),
        "clients get Amps' URLs only"
    );
    let api = s.get("/api/streams").body;
    assert!(api.contains("/live/***/***/"), "sources are shown redacted");
    for (what, path) in [
        ("the playlist", "/playlist.m3u"),
        ("the API", "/api/streams"),
        ("the playlist API", "/api/playlists"),
        ("the channel list", "/api/playlists/provider1/channels"),
        ("the metrics", "/metrics"),
        ("the dashboard", "/"),
    ] {
        assert_no_secrets(what, &s.get(path).body);
    }

    // Connection limits with real streams: two channels take the account's two connections.
    let id_of = |name: &str| by(name)["id"].as_u64().unwrap() as u32;
    let (a, b, c) = (id_of("Channel 1"), id_of("Channel 7"), id_of("Channel 13"));
    let mut va = Viewer::open(&s, a);
    assert!(va.read_for(Duration::from_secs(2)).len() > 10_000);
    let mut vb = Viewer::open(&s, b);
    assert!(vb.read_for(Duration::from_secs(2)).len() > 10_000);
    let url = s.url(&format!("/stream/{c}?token={TOKEN}"));
    let refused = ureq::get(&url)
        .call()
        .map(|r| r.status())
        .expect_err("a third channel is refused");
    let ureq::Error::Status(code, resp) = refused else {
        panic!("{refused}")
    };
    assert_eq!(code, 503);
    let msg = resp.into_string().unwrap();
    assert!(
        msg.contains("provider1: all 2 connections in use by channels 5001, 5007"),
        "{msg}"
    );
    // A second viewer of a running channel shares its connection.
    let mut va2 = Viewer::open(&s, a);
    assert!(va2.read_for(Duration::from_secs(1)).len() > 1000);
    assert_eq!(provider.open_streams(), 2);
    let pst = s.get("/api/playlists/provider1").json();
    assert_eq!(
        pst["connections_in_use"].as_array().unwrap().len(),
        2,
        "{pst}"
    );
    let metrics = s.get("/metrics").body;
    for line in [
        "amps_playlist_connections{playlist=\"provider1\"} 2".to_owned(),
        format!("amps_playlist_channels{{playlist=\"provider1\"}} {want}"),
        "amps_playlist_refresh_failed{playlist=\"provider1\"} 0".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} in /metrics");
    }
    // The viewer of b zaps away: b is unwatched (in its idle grace), so c may take its
    // connection at once instead of a 503.
    drop(vb);
    std::thread::sleep(Duration::from_millis(300));
    let mut vc = Viewer::open(&s, c);
    assert!(vc.read_for(Duration::from_secs(2)).len() > 10_000);
    assert!(
        provider.max_open_streams() <= 2,
        "never more than the account allows"
    );
    drop((va, va2, vc));

    // A refresh that reorders, renames, removes 100 entries and adds 50: ids are stable.
    let before = ids_by_key(&imported(&s));
    let mut order: Vec<usize> = (100..n + 50).collect();
    order.reverse();
    provider.set("get.php", gzip(&m3u(&base, &order, true)));
    let r = s.send_json("POST", "/api/playlists/provider1/refresh", "");
    assert_eq!(r.status, 200, "{}", r.body);
    let changes = &r.json()["changes"];
    let removed = (0..100).filter(|i| kept(*i)).count();
    let added = (n..n + 50).filter(|i| kept(*i)).count();
    assert_eq!(
        changes["removed"].as_array().unwrap().len(),
        removed,
        "{changes}"
    );
    assert_eq!(
        changes["added"].as_array().unwrap().len(),
        added,
        "{changes}"
    );
    let after_chans = imported(&s);
    let after = ids_by_key(&after_chans);
    let mut same = 0;
    for i in (100..n).filter(|i| kept(*i)) {
        let key = if has_tvg(i) {
            format!("ch{i}.prov")
        } else if i % 5 == 0 {
            format!("Channel {i}, HD")
        } else {
            format!("Channel {i}")
        };
        let (Some(x), Some(y)) = (
            before
                .get(&key)
                .or_else(|| before.get(&format!("{key}\u{fffd}"))),
            after
                .get(&key)
                .or_else(|| after.get(&format!("{key}\u{fffd}"))),
        ) else {
            panic!("{key} missing before or after the refresh");
        };
        assert_eq!(x, y, "{key} kept its id");
        same += 1;
    }
    assert_eq!(same, want - removed);
    assert!(
        after_chans.iter().any(|c| c["name"] == "Renamed 145"),
        "renamed"
    );

    // The owner renames one channel and hides another; both survive refreshes.
    let (renamed, hidden) = (after["ch145.prov"], after["ch146.prov"]);
    let r = s.send_json(
        "PUT",
        &format!("/api/playlists/provider1/channels/{renamed}"),
        r#"{"name": "My News", "channel_number": 7}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.send_json(
        "PUT",
        &format!("/api/playlists/provider1/channels/{hidden}"),
        r#"{"hidden": true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.get(&format!("/api/streams/{renamed}")).json()["name"],
        "My News"
    );
    assert_eq!(s.get(&format!("/api/streams/{hidden}")).status, 404);
    assert_eq!(
        s.get(&format!("/stream/{hidden}?token={TOKEN}")).status,
        404
    );
    // API writes to imported channels are refused with the way to do it.
    let r = s.send_json(
        "PATCH",
        &format!("/api/streams/{renamed}"),
        r#"{"name": "x"}"#,
    );
    assert_eq!(r.status, 409);
    assert!(
        r.body.contains("/api/playlists/provider1/channels/"),
        "{}",
        r.body
    );
    let r = s.send_json(
        "POST",
        "/api/streams",
        r#"{"id": 2000000005, "name": "N", "source": "http://h/x.ts", "ffmpeg_profile": "relay"}"#,
    );
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("reserved for channels imported"),
        "{}",
        r.body
    );

    // The provider goes down: a refresh fails with the reason and keeps the last list.
    provider.set_down(true);
    let r = s.send_json("POST", "/api/playlists/provider1/refresh", "");
    assert_eq!(r.status, 502, "{}", r.body);
    let err = r.json()["playlist"]["error"].as_str().unwrap().to_owned();
    assert!(err.contains("cannot reach the server"), "{err}");
    let served = imported(&s).len();
    assert_eq!(
        served,
        want - removed + added - 1,
        "the last good list stays (one hidden)"
    );

    // A restart while the provider is still down serves the cached list, overrides too.
    s.terminate(Duration::from_secs(10));
    let logs = s.logs();
    assert_no_secrets("the log", &logs);
    let s = Server::start(&cfg);
    assert_eq!(imported(&s).len(), served, "served from the cache at once");
    assert_eq!(
        s.get(&format!("/api/streams/{renamed}")).json()["name"],
        "My News"
    );
    assert_eq!(s.get(&format!("/api/streams/{hidden}")).status, 404);
    let after_restart = ids_by_key(&imported(&s));
    assert_eq!(after_restart.get("ch150.prov"), after.get("ch150.prov"));
    let st = s.get("/api/playlists/provider1").json();
    assert_eq!(st["from_cache"], true, "{st}");
    assert!(
        eventually(Duration::from_secs(10), || !s
            .get("/api/playlists/provider1")
            .json()["error"]
            .is_null()),
        "the failed refresh at start is reported"
    );
    assert!(
        s.get("/metrics")
            .body
            .contains("amps_playlist_refresh_failed{playlist=\"provider1\"} 1"),
        "the failed refresh in /metrics"
    );
    // `amps list` shows the imported channels from the cache, overrides applied.
    let cfg_path = dir.path().join("config.yaml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let (code, out, _) = common::run_cli(&["list", "-c", cfg_path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("PLAYLIST provider1 (m3u, {served} channels")),
        "{}",
        &out[..out.len().min(2000)]
    );
    assert!(out.contains("My News"));
    assert_no_secrets("amps list", &out);
    let cache = dir.path().join("cache/playlist-provider1.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_no_secrets("the log after the restart", &s.logs());
}

/// A gzip XMLTV guide with programmes around now for `channels` (id, display name).
fn xmltv(channels: &[(&str, &str)], title: &str) -> Vec<u8> {
    let now = chrono::Utc::now();
    let t = |h: i64| {
        (now + chrono::Duration::hours(h))
            .format("%Y%m%d%H0000 +0000")
            .to_string()
    };
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<tv>\n");
    for (id, name) in channels {
        x.push_str(&format!(
            "<channel id=\"{id}\"><display-name>{name}</display-name></channel>\n"
        ));
    }
    for (id, _) in channels {
        for h in -1..5 {
            x.push_str(&format!(
                "<programme start=\"{}\" stop=\"{}\" channel=\"{id}\"><title>{title} {id} {h}</title><desc>About &amp; more</desc></programme>\n",
                t(h),
                t(h + 1)
            ));
        }
    }
    x.push_str("</tv>\n");
    x.into_bytes()
}

#[test]
fn xtream_accounts_guides_merging_and_hostile_sources() {
    let provider = Provider::start();
    let base = provider.base();
    let (u, p) = ("xtuser42", "xtpass99");
    let api = |action: &str| format!("player_api.php?username={u}&password={p}&action={action}");
    provider.set(
        &api("get_live_categories"),
        br#"[{"category_id":"1","category_name":"News"},{"category_id":2,"category_name":"Kids"}]"#
            .to_vec(),
    );
    let mut streams = Vec::new();
    for k in 0..300u32 {
        streams.push(serde_json::json!({
            "num": k + 1,
            "name": format!("XC {k}"),
            "stream_id": if k % 2 == 0 { Value::from(5000 + k) } else { Value::from((5000 + k).to_string()) },
            "stream_icon": "",
            "epg_channel_id": if k < 10 { Value::from(format!("x{k}.tv")) } else { Value::Null },
            "category_id": if k % 2 == 0 { "1" } else { "2" },
            "tv_archive": 0,
            "tv_archive_duration": 0,
        }));
    }
    streams.push(serde_json::json!({"num": 301, "name": "Xtream Name-Match", "stream_id": 5999, "epg_channel_id": null, "category_id": "1"}));
    streams.push(serde_json::json!({"num": 302, "name": null, "stream_id": 6000}));
    provider.set(
        &api("get_live_streams"),
        serde_json::to_vec(&streams).unwrap(),
    );
    provider.set(
        &format!("xmltv.php?username={u}&password={p}"),
        gzip(&xmltv(
            &[
                ("x0.tv", "XC 0"),
                ("x1.tv", "XC 1"),
                ("nm", "Xtream Name Match"),
            ],
            "XC",
        )),
    );
    // A hostile provider: a 100 MB line before its entries; another with 10^6 entries.
    let mut huge = b"#EXTM3U\n#EXTINF:-1,Swallowed\n".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 100 << 20));
    huge.extend_from_slice(
        format!("\n#EXTINF:-1 tvg-id=\"h1\",After\n{base}/live/h/1.ts\n").as_bytes(),
    );
    provider.set("huge.m3u", huge);
    let mut many = String::from("#EXTM3U\n");
    for i in 0..1_000_000 {
        many.push_str(&format!("#EXTINF:-1,M{i}\nhttp://127.0.0.1:9/{i}\n"));
    }
    provider.set("many.m3u", many.into_bytes());

    let dir = tempfile::tempdir().unwrap();
    // A second provider as a local file: its x1.tv is the Xtream's x1.tv (merged).
    let local = dir.path().join("local.m3u");
    std::fs::write(
        &local,
        format!("#EXTM3U\n#EXTINF:-1 tvg-id=\"x1.tv\" group-title=\"News\",Local One\n{base}/live/l/1.ts\n#EXTINF:-1 tvg-id=\"l2.tv\" group-title=\"News\",Local Two\n{base}/live/l/2.ts\n"),
    )
    .unwrap();
    // Guides: an xz file for the local channel, an entity bomb.
    let xz = dir.path().join("guide.xml.xz");
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(&xmltv(&[("l2.tv", "Local Two")], "LOCAL"))
        .unwrap();
    std::fs::write(&xz, e.finish().unwrap()).unwrap();
    let bomb = dir.path().join("bomb.xml");
    let mut b = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE tv [\n<!ENTITY a \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\">\n<!ENTITY xxe SYSTEM \"file:///etc/passwd\">\n");
    let mut prev = "a".to_owned();
    for level in 0..10 {
        let name = format!("e{level}");
        b.push_str(&format!(
            "<!ENTITY {name} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
        prev = name;
    }
    b.push_str(&format!(
        "]>\n<tv><channel id=\"l2.tv\"><display-name>&{prev};</display-name></channel><programme start=\"20300101000000\" channel=\"l2.tv\"><title>&{prev};&xxe;</title></programme></tv>\n"
    ));
    std::fs::write(&bomb, b).unwrap();

    let cfg = format!(
        "server:\n  auth_token: {TOKEN}\n  cache_dir: {cache}\n  state_file: {state}\nffmpeg_profiles:\n  relay: {{video_codec: copy, audio_codec: copy}}\nplaylists:\n  - name: xc\n    xtream: {{server: '{base}', username: {u}, password: {p}}}\n    ffmpeg_profile: relay\n  - name: local\n    url: {local}\n    ffmpeg_profile: relay\n    import_guide: false\n  - name: huge\n    url: {base}/huge.m3u\n    ffmpeg_profile: relay\n  - name: many\n    url: {base}/many.m3u\n    ffmpeg_profile: relay\n    max_entries: 1000\nguides:\n  - url: {xz}\n  - url: {bomb}\n",
        cache = dir.path().join("cache").display(),
        state = dir.path().join("state.json").display(),
        local = local.display(),
        xz = xz.display(),
        bomb = bomb.display(),
    );
    let mut s = Server::start(&cfg);
    let ready = || {
        let v = s.get("/api/playlists").json();
        v.as_array()
            .unwrap()
            .iter()
            .all(|p| p["last_attempt"].is_string())
    };
    assert!(
        eventually(Duration::from_secs(60), ready),
        "{}",
        s.get("/api/playlists").body
    );
    let sources: BTreeMap<String, Value> = s
        .get("/api/playlists")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p.clone()))
        .collect();
    let xc = &sources["xc"];
    assert_eq!(
        (
            xc["kind"].as_str(),
            xc["entries"].as_u64(),
            xc["skipped"].as_u64()
        ),
        (Some("xtream"), Some(301), Some(1)),
        "{xc}"
    );
    assert_eq!(xc["merged"], 0);
    assert_eq!(
        sources["local"]["merged"], 1,
        "local's x1.tv became a backup of the Xtream channel"
    );
    let huge = &sources["huge"];
    assert_eq!(
        (huge["entries"].as_u64(), huge["skipped"].as_u64()),
        (Some(1), Some(1)),
        "{huge}"
    );
    let many = &sources["many"];
    assert_eq!(many["entries"], 1000);
    assert!(
        many["error"]
            .as_str()
            .unwrap()
            .contains("more than 1000 entries"),
        "{many}"
    );

    let all = s.get("/api/streams").json();
    let all = all.as_array().unwrap();
    let find = |name: &str| {
        all.iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    let x1 = find("XC 1");
    assert_eq!(x1["group"], "Kids", "the category's name");
    assert_eq!(x1["channel_number"], 2, "Xtream's num");
    assert_eq!(
        x1["source"].as_str().unwrap(),
        format!("{base}/live/***/***/5001.ts")
    );
    assert_eq!(x1["backup_sources"].as_array().unwrap().len(), 1);
    assert!(
        !all.iter().any(|c| c["name"] == "Local One"),
        "merged, not a channel of its own"
    );
    assert!(
        all.iter().any(|c| c["name"] == "After"),
        "the entry after the 100 MB line"
    );

    // Guides: the Xtream's own (gzip; by id and by name), the xz file; the bomb is inert.
    assert!(
        eventually(Duration::from_secs(30), || s
            .get("/api/guides")
            .json()
            .as_array()
            .unwrap()
            .len()
            == 3),
        "{}",
        s.get("/api/guides").body
    );
    let epg = s.get("/epg.xml").body;
    for title in ["XC x0.tv 0", "XC x1.tv 1", "XC nm 2", "LOCAL l2.tv 0"] {
        assert!(epg.contains(title), "{title} in the guide");
    }
    assert!(epg.contains("About &amp; more"));
    assert!(
        !epg.contains("root:") && !epg.contains("aaaaaaaaaa"),
        "no entity was expanded"
    );
    let x0 = find("XC 0")["id"].as_u64().unwrap();
    let progs = s.get(&format!("/api/streams/{x0}/programs")).json();
    assert_eq!(progs.as_array().unwrap().len(), 6, "{progs}");
    assert!(progs[0]["stop"].is_string(), "the guide's stop times");
    let guides = s.get("/api/guides").json();
    let nm = guides
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "playlist:xc")
        .unwrap()
        .clone();
    assert_eq!(nm["matched_by_name"], 1, "{nm}");
    assert_eq!(nm["channels_filled"], 3, "{nm}");
    let pl = s.get("/playlist.m3u").body;
    assert!(
        pl.contains("#EXTREM:AMP-NEXT title=\"XC x0.tv"),
        "AMP-NEXT from the guide"
    );

    // The dashboard's page: sources and their state; a channel renamed and hidden there
    // with the login session, which needs the page's csrf value for any change.
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let login = agent
        .post(&s.url("/login"))
        .set("Content-Type", "application/x-www-form-urlencoded")
        .send_string(&format!("token={TOKEN}"))
        .unwrap();
    let cookie = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = agent
        .get(&s.url("/playlists?q=XC%2012"))
        .set("Cookie", &cookie)
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for text in [
        "<h2>xc (xtream)</h2>",
        "<h2>many (m3u)</h2>",
        "more than 1000 entries",
        "value=\"XC 12\"",
        "playlist:xc",
    ] {
        assert!(page.contains(text), "{text} on the page");
    }
    assert!(
        !page.contains(u) && !page.contains(p),
        "the page shows the account"
    );
    let action = page
        .split("action=\"")
        .map(|a| a.split('"').next().unwrap().replace("&amp;", "&"))
        .find(|a| a.starts_with("/playlists/xc/channels/"))
        .unwrap();
    assert!(action.contains("csrf="), "{action}");
    let x12 = find("XC 12")["id"].as_u64().unwrap();
    let post = |url: &str, cookie: &str| match agent
        .post(&s.url(url))
        .set("Cookie", cookie)
        .set("Content-Type", "application/x-www-form-urlencoded")
        .send_string("name=Twelve&hidden=1")
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(c, _)) => c,
        Err(e) => panic!("{e}\nserver log:\n{}", s.logs()),
    };
    let bare = action.split('?').next().unwrap().to_owned();
    assert_eq!(post(&bare, &cookie), 401, "a cookie alone changes nothing");
    assert_eq!(
        post(&action, "amps_session=0123"),
        401,
        "a csrf value belongs to its session"
    );
    assert_eq!(post(&action, &cookie), 303);
    assert_eq!(s.get(&format!("/api/streams/{x12}")).status, 404, "hidden");
    let chans = s.get("/api/playlists/xc/channels").json();
    let c12 = chans
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == x12)
        .unwrap()
        .clone();
    assert_eq!(
        (c12["hidden"].as_bool(), c12["override"]["name"].as_str()),
        (Some(true), Some("Twelve")),
        "{c12}"
    );
    for path in [
        "/playlist.m3u",
        "/epg.xml",
        "/api/streams",
        "/api/playlists",
        "/api/guides",
        "/metrics",
    ] {
        let body = s.get(path).body;
        assert!(
            !body.contains(u) && !body.contains(p),
            "{path} shows the Xtream account"
        );
    }
    assert!(!s.logs().contains(p), "the log shows the Xtream password");

    // Playlists through the API: the same account again, only its Kids category.
    let body = format!(
        r#"{{"name": "added", "xtream": {{"server": "{base}", "username": "{u}", "password": "{p}"}}, "ffmpeg_profile": "relay", "include_groups": ["Kids"], "number_start": 2000}}"#
    );
    let r = s.send_json("POST", "/api/playlists", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(!r.body.contains(p), "{}", r.body);
    assert_eq!(s.send_json("POST", "/api/playlists", &body).status, 409);
    let added = || s.get("/api/playlists/added").json();
    assert!(
        eventually(Duration::from_secs(20), || added()["last_success"]
            .is_string()),
        "{}",
        added()
    );
    let a = added();
    // 150 Kids channels; the five with a tvg-id the first account has are merged into its.
    assert_eq!(
        (a["channels"].as_u64(), a["merged"].as_u64()),
        (Some(145), Some(5)),
        "{a}"
    );
    let r = s.send_json(
        "POST",
        "/api/playlists",
        r#"{"name": "f", "url": "/etc/passwd", "ffmpeg_profile": "relay"}"#,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = s.send_json(
        "POST",
        "/api/playlists",
        r#"{"name": "g", "url": "http://127.0.0.1:9/x", "ffmpeg_profile": "nope"}"#,
    );
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("ffmpeg_profile: unknown profile"),
        "{}",
        r.body
    );
    // It survives a restart (the state file), served from its cache at once.
    s.terminate(Duration::from_secs(10));
    let s = Server::start(&cfg);
    assert_eq!(s.get("/api/playlists/added").json()["channels"], 145);
    let r = s.send_json("DELETE", "/api/playlists/added", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["changes"]["removed"].as_array().unwrap().len(),
        145
    );
    assert_eq!(s.get("/api/playlists/added").status, 404);
    let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    assert!(
        !state.contains("\"added\": {"),
        "deleted from the state file: {state}"
    );
}
