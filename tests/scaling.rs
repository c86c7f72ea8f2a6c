//! docs/SCALING.md, run for real: the nginx from Debian, configured with the block in that
//! page, in front of Amps on loopback. Many HLS viewers through nginx; one pipeline and
//! about one request per segment behind it.

mod common;

use common::nginx::{documented_block, Nginx};
use common::{Server, TOKEN};
use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const VIEWERS: usize = 24;

/// The ```nginx block of docs/SCALING.md in front of Amps at `upstream`.
fn start_nginx(upstream: &str) -> Nginx {
    Nginx::start(|port, dir| {
        documented_block(
            "SCALING.md",
            &[
                ("listen 8080;", format!("listen 127.0.0.1:{port};")),
                ("http://127.0.0.1:5000", format!("http://{upstream}")),
                (
                    "/var/cache/nginx/amps",
                    dir.join("cache").display().to_string(),
                ),
            ],
        )
    })
}

/// Requests through nginx.
trait Get {
    fn get(&self, path: &str) -> (u16, String, Vec<u8>);
}

impl Get for Nginx {
    fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        let resp = match ureq::get(&format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(40))
            .call()
        {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("GET {path} through nginx: {e}"),
        };
        let status = resp.status();
        let cache = resp.header("x-cache-status").unwrap_or("").to_owned();
        let mut body = Vec::new();
        resp.into_reader().read_to_end(&mut body).unwrap();
        (status, cache, body)
    }
}

/// `amps_http_requests_total` for a route and status, from /metrics.
fn requests(s: &Server, route: &str, status: u16) -> u64 {
    let text = s.get("/metrics").body;
    text.lines()
        .filter(|l| {
            l.starts_with("amps_http_requests_total{")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("status=\"{status}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn nginx_serves_many_hls_viewers_from_one_pipeline() {
    let s = Server::start(&format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  hls_segment_secs: 1\n  hls_list_size: 4\nffmpeg_profiles:\n  x264: {{video_codec: libx264, video_bitrate: 400k, preset: ultrafast, gop: 25, audio_codec: aac, audio_bitrate: 64k}}\nstreams:\n  - {{id: 1, name: Busy, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]', ffmpeg_profile: x264}}\n"
    ));
    let nginx = Arc::new(start_nginx(&s.addr));
    let playlist = format!("/hls/1/index.m3u8?token={TOKEN}");

    // A wrong token is refused through the cache too.
    let (status, _, _) = nginx.get("/hls/1/index.m3u8?token=wrong");
    assert_eq!(status, 401);

    let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    // (segment requests, cache hits)
    let fetched = Arc::new(Mutex::new((0usize, 0usize)));
    // The channel starts with the first playlist request (about three segments); then
    // 8 s of viewing.
    let (status, _, _) = nginx.get(&playlist);
    assert_eq!(status, 200);
    let until = Instant::now() + Duration::from_secs(8);
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|_| {
            let (nginx, seen, fetched, playlist) = (
                nginx.clone(),
                seen.clone(),
                fetched.clone(),
                playlist.clone(),
            );
            std::thread::spawn(move || {
                // The sequence numbers this viewer got.
                let mut mine = HashSet::new();
                while Instant::now() < until {
                    let (status, _, body) = nginx.get(&playlist);
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                    let text = String::from_utf8(body).unwrap();
                    for uri in text.lines().filter(|l| !l.starts_with('#')) {
                        let seq: u64 = uri
                            .split('.')
                            .next()
                            .and_then(|n| n.rsplit('-').next())
                            .and_then(|n| n.parse().ok())
                            .unwrap_or_else(|| panic!("a sequence number in {uri}"));
                        if !mine.insert(seq) {
                            continue;
                        }
                        let (status, cache, body) = nginx.get(&format!("/hls/1/{uri}"));
                        assert_eq!(status, 200, "{uri}");
                        assert!(body.len() > 10_000 && body.len() % 188 == 0, "{uri}");
                        let mut f = fetched.lock().unwrap();
                        f.0 += 1;
                        f.1 += usize::from(cache == "HIT");
                        seen.lock().unwrap().insert(uri.to_owned());
                    }
                    std::thread::sleep(Duration::from_millis(400));
                }
                mine
            })
        })
        .collect();
    for v in viewers {
        let got = v.join().unwrap();
        // Every viewer played a gap-free run of segments: it never missed one.
        let (lo, hi) = (*got.iter().min().unwrap(), *got.iter().max().unwrap());
        assert_eq!(got.len() as u64, hi - lo + 1, "a gap: {got:?}");
    }
    let distinct = seen.lock().unwrap().len();
    let (segments, hits) = *fetched.lock().unwrap();
    let to_amps = requests(&s, "/hls/{id}/{segment}", 200);
    let playlists_to_amps = requests(&s, "/hls/{id}/index.m3u8", 200);
    eprintln!(
        "viewers {VIEWERS}: {segments} segment fetches ({hits} cache hits) of {distinct} segments; Amps served {to_amps} segments and {playlists_to_amps} playlists"
    );
    assert!(distinct >= 6, "the window moved: {distinct} segments");
    // Viewers start together; the newest segment or two may reach only some of them
    // before the 8 s are up.
    assert!(
        segments >= VIEWERS * (distinct - 2),
        "every viewer got (nearly) every segment"
    );
    assert!(
        to_amps <= distinct as u64 + 2,
        "nginx fetched each segment once: {to_amps} for {distinct}"
    );
    assert!(
        playlists_to_amps <= 3 * 10,
        "playlists come from the cache between refreshes: {playlists_to_amps}"
    );
    let st = s.get("/api/streams/1/status").json();
    assert_eq!(st["starts"], 1, "{st}");
    assert_eq!(st["clients"], 1, "one HLS session behind the cache: {st}");
}

#[test]
fn nginx_caches_each_rendition_of_the_master_playlist_apart() {
    let s = Server::start(&format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  hls_segment_secs: 1\n  hls_list_size: 4\nffmpeg_profiles:\n  x264: {{video_codec: libx264, video_bitrate: 400k, preset: ultrafast, audio_codec: aac, audio_bitrate: 64k}}\n  small: {{video_codec: libx264, resolution: 160x120, video_bitrate: 100k, preset: ultrafast, audio_codec: aac, audio_bitrate: 32k}}\nstreams:\n  - {{id: 1, name: Levels, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]', ffmpeg_profile: x264, profiles: [small]}}\n"
    ));
    let nginx = start_nginx(&s.addr);
    let (status, _, body) = nginx.get(&format!("/hls/1/master.m3u8?token={TOKEN}"));
    assert_eq!(status, 200);
    let master = String::from_utf8(body).unwrap();
    let variants: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("index.m3u8"))
        .collect();
    assert_eq!(variants.len(), 2, "{master}");
    let mut segments = Vec::new();
    for (v, (w, h)) in variants.iter().zip([(320, 240), (160, 120)]) {
        let (status, _, body) = nginx.get(&format!("/hls/1/{v}"));
        assert_eq!(status, 200, "{v}");
        let text = String::from_utf8(body).unwrap();
        let seg = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.is_empty())
            .unwrap_or_else(|| panic!("no segment in {text}"))
            .to_owned();
        // Each rendition's segment is its own entry in the cache: the second fetch is a
        // hit, and it is that rendition's picture.
        let (_, first, data) = nginx.get(&format!("/hls/1/{seg}"));
        let (_, second, again) = nginx.get(&format!("/hls/1/{seg}"));
        assert_eq!((first.as_str(), second.as_str()), ("MISS", "HIT"), "{seg}");
        assert_eq!(data, again);
        let path = common::save(&data, "rendition.ts");
        assert_eq!(common::media::resolution(&path), (w, h), "{seg}");
        segments.push((seg, data.len()));
    }
    // The profile is in the segment's query: two entries, two pictures.
    let (a, b) = (&segments[0], &segments[1]);
    assert_ne!(a.1, b.1, "{a:?} {b:?}");
    assert!(
        !a.0.contains("profile=") && b.0.contains("profile=small"),
        "{a:?} {b:?}"
    );
}
