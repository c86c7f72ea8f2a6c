//! The dashboard in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver) with plain HTTP from this test. It logs in through the form, checks the
//! channel cards and their live thumbnails, takes a screenshot, refreshes, watches a
//! channel in the page until the video element plays, and logs out.

mod common;

use common::browser::Browser;
use common::{Server, Viewer, TOKEN};
use std::process::Command;
use std::time::{Duration, Instant};

fn config() -> String {
    format!(
        "server:\n  auth_token: {TOKEN}\nengine:\n  hls_segment_secs: 1\n  hls_list_size: 4\nffmpeg_profiles:\n  x264: {{video_codec: libx264, video_bitrate: 800k, preset: ultrafast, gop: 25, audio_codec: aac, audio_bitrate: 96k}}\n  light: {{video_codec: mpeg2video, audio_codec: mp2}}\nstreams:\n  - {{id: 1, name: Browser Channel, source: 'lavfi:testsrc2=size=640x360:rate=25[out0];sine=frequency=500[out1]', ffmpeg_profile: x264, channel_number: 7, next_programs: [{{title: Evening News, start: '2099-01-01T20:00:00Z'}}]}}\n  - {{id: 2, name: MPEG-2 Channel, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine[out1]', ffmpeg_profile: light, channel_number: 8}}\n  - {{id: 3, name: Cold Channel, source: 'lavfi:testsrc2=size=320x240:rate=25[out0];sine=frequency=700[out1]', ffmpeg_profile: x264, channel_number: 9}}\nscheduled_streams:\n  - {{id: 900, name: Later Show, source: 'lavfi:testsrc2[out0];sine[out1]', ffmpeg_profile: light, schedule: {{start: '2099-06-01T18:00:00Z', end: '2099-06-01T20:00:00Z'}}}}\n"
    )
}

fn out_dir() -> std::path::PathBuf {
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_dashboard_works_in_headless_chromium() {
    let s = Server::start(&config());
    // Channel 1 runs (someone watches it), channel 2 stays idle.
    let mut viewer = Viewer::open(&s, 1);
    assert!(!viewer.read_for(Duration::from_millis(300)).is_empty());
    let b = Browser::start();
    let home = s.url("/");

    // Not logged in: the login form, and a wrong token is refused.
    b.go(&home);
    assert_eq!(b.js("return document.title"), "Amps: log in");
    b.type_into("#token", "not-the-token");
    b.click("button[type=submit]");
    assert!(b.wait_js(
        Duration::from_secs(5),
        "return !!document.querySelector('.error')"
    ));
    assert_eq!(b.js("return document.title"), "Amps: log in");

    // The right token: the dashboard, with an HttpOnly cookie scripts cannot read.
    b.type_into("#token", TOKEN);
    b.click("button[type=submit]");
    assert!(b.wait_js(Duration::from_secs(5), "return document.title === 'Amps'"));
    assert_eq!(
        b.js("return document.cookie"),
        "",
        "the session cookie is HttpOnly"
    );
    assert_eq!(b.js("return location.pathname"), "/");

    let card = |id: u32, what: &str| {
        b.js(&format!(
            "const c = document.querySelector('.channel[data-id=\"{id}\"]'); return c ? {what} : null"
        ))
    };
    assert_eq!(card(1, "c.dataset.state"), "running");
    assert_eq!(card(2, "c.dataset.state"), "idle");
    assert_eq!(card(900, "c.dataset.state"), "scheduled");
    let text1 = card(1, "c.innerText").as_str().unwrap().to_owned();
    for want in [
        "Browser Channel",
        "running",
        "profile x264",
        "Evening News",
        "always on",
        "kbit/s",
        "×",
    ] {
        assert!(text1.contains(want), "card 1 lacks {want:?}: {text1}");
    }
    let text900 = card(900, "c.innerText").as_str().unwrap().to_owned();
    assert!(
        text900.contains("01 Jun 2099 18:00 UTC to Mon 01 Jun 2099 20:00 UTC")
            && text900.contains("scheduled"),
        "{text900}"
    );
    // The thumbnail is a real picture of the live channel.
    assert!(
        b.wait_js(
            Duration::from_secs(10),
            "const i = document.querySelector('.channel[data-id=\"1\"] img'); return !!i && i.complete && i.naturalWidth === 320 && i.naturalHeight === 180"
        ),
        "thumbnail: {}",
        card(1, "c.querySelector('img') && c.querySelector('img').naturalWidth")
    );
    let dir = out_dir();
    let shot = dir.join("dashboard.png");
    b.screenshot(&shot);
    let p = common::media::probe(&shot);
    assert_eq!(p["streams"][0]["codec_name"], "png");
    assert_eq!(p["streams"][0]["width"], 1280);
    eprintln!("dashboard screenshot: {}", shot.display());

    // The page refreshes itself.
    assert!(b.wait_js(
        Duration::from_secs(12),
        "return !!document.body.dataset.refreshed"
    ));
    assert_eq!(card(1, "c.dataset.state"), "running");

    // Watch channel 1 in the page: hls.js (bundled) plays it in the video element.
    b.go(&s.url("/watch/1"));
    b.wait_playing(
        Duration::from_secs(30),
        "v.currentTime > 1.5 && v.videoWidth === 640",
    );
    let t1 = b.current_time();
    std::thread::sleep(Duration::from_secs(2));
    let t2 = b.current_time();
    assert!(t2 - t1 > 1.0, "playback advances: {t1} -> {t2}");
    assert_eq!(
        b.js("return document.querySelector('.warn') === null"),
        true,
        "H.264 + AAC needs no warning"
    );
    b.screenshot(&dir.join("watch.png"));
    let st = s.get("/api/streams/1/status").json();
    assert_eq!(st["hls"], true);
    assert_eq!(
        st["starts"], 1,
        "the page joined the running pipeline: {st}"
    );

    assert_eq!(b.js("return document.body.dataset.engine"), "hls.js");

    // Chromium's own HLS player plays it too: it needs three target durations of live
    // playlist to start (RFC 8216 6.3.3), which Amps holds back the first playlist for.
    // Channel 1 is already running; this checks a cold start, on channel 3.
    b.go(&s.url("/watch/3?player=native"));
    b.wait_playing(Duration::from_secs(40), "v.currentTime > 2.5");
    assert_eq!(b.js("return document.body.dataset.engine"), "native");

    // An MPEG-2 channel says why a browser cannot play it (once its codecs are known).
    let mut v2 = Viewer::open(&s, 2);
    assert!(!v2.read_for(Duration::from_millis(300)).is_empty());
    b.go(&s.url("/watch/2"));
    // The warning appears once the page has the codecs: wait for it, do not read once.
    assert!(
        b.wait_js(
            Duration::from_secs(20),
            "const w = document.querySelector('.warn'); return w !== null && w.textContent.includes('mpeg2video')"
        ),
        "{}",
        b.js("const w = document.querySelector('.warn'); return w ? w.textContent : ''")
    );

    // Nothing was refused by the pages' Content-Security-Policy, no script failed, and
    // every file a page needed loaded (the only refusals are the login form's own 401s).
    let console = b.console();
    let bad = |l: &&String| {
        l.contains("Content Security Policy")
            || l.contains("Uncaught")
            || (l.contains("SEVERE")
                && !(l.contains(&format!("{home} -")) || l.contains("/login -")))
    };
    assert!(!console.iter().any(|l| bad(&l)), "{console:#?}");

    // Log out: back to the login form, and the pages are closed again.
    b.go(&home);
    b.click("header form button");
    assert!(b.wait_js(
        Duration::from_secs(5),
        "return document.title === 'Amps: log in'"
    ));
    b.go(&home);
    assert_eq!(b.js("return document.title"), "Amps: log in");
    let t0 = Instant::now();
    drop(b);
    assert!(t0.elapsed() < Duration::from_secs(20));
}

#[test]
fn pages_need_a_session_and_the_cookie_never_authorises_changes() {
    let s = Server::start(&config());
    // A browser asking for a page gets the login form; an API client gets JSON.
    let html = s.request("GET", "/", &[("Accept", "text/html")], None);
    assert_eq!(html.status, 401);
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(html
        .body
        .contains("<form method=\"post\" action=\"/login\">"));
    let csp = html.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let api = s.request("GET", "/", &[], None);
    assert_eq!(api.status, 401);
    assert_eq!(api.json()["error"], "unauthorized");

    // Log in with the form body; the cookie is not the token.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let resp = agent
        .post(&s.url("/login"))
        .set(form[0].0, form[0].1)
        .send_string(&format!("token={TOKEN}"))
        .unwrap();
    assert_eq!(resp.status(), 303);
    let set = resp.header("set-cookie").unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(TOKEN));
    let cookie = set.split(';').next().unwrap().to_owned();
    // A GET carrying only the cookie `c`.
    let read = |c: &str, p: &str| s.request("GET", p, &[("Cookie", c)], None);
    let with = |m: &str, p: &str| {
        s.request(
            m,
            p,
            &[("Cookie", &cookie), ("Content-Type", "application/json")],
            Some("{}"),
        )
    };
    let page = read(&cookie, "/");
    assert_eq!(page.status, 200);
    // The cookie never reveals the token (which also authorises changes); the token in
    // the request does.
    assert!(!page.body.contains(TOKEN), "{}", page.body);
    assert!(page.body.contains("playlist.m3u?token=YOUR_TOKEN"));
    let with_token = s.get(&format!("/?token={TOKEN}"));
    assert!(with_token
        .body
        .contains(&format!("playlist.m3u?token={TOKEN}")));
    let hls = read(&cookie, "/hls/1/index.m3u8");
    assert_eq!(hls.status, 200, "{}", hls.body);
    assert!(!hls.body.contains(TOKEN), "{}", hls.body);
    assert!(hls.header("cache-control").unwrap().starts_with("private"));
    let seg = hls.body.lines().find(|l| !l.starts_with('#')).unwrap();
    assert!(seg.ends_with(".ts"), "{seg}");
    assert_eq!(
        read(&cookie, &format!("/hls/1/{seg}")).status,
        200,
        "the browser fetches segments with its cookie"
    );
    // A stale token in the URL next to a valid header: never cached as public.
    let stale = s.request(
        "GET",
        "/hls/1/index.m3u8?token=stale",
        &[("X-Amps-Token", TOKEN)],
        None,
    );
    assert_eq!(stale.status, 200);
    assert!(stale
        .header("cache-control")
        .unwrap()
        .starts_with("private"));
    assert_eq!(read(&cookie, "/api/streams").status, 200);
    // Changes need the token itself: a cookie rides along on cross-site requests.
    assert_eq!(with("POST", "/api/streams").status, 401);
    assert_eq!(with("DELETE", "/api/streams/1").status, 401);
    assert_eq!(with("POST", "/api/reload").status, 401);
    assert_eq!(s.get("/api/streams/1").status, 200, "nothing was deleted");
    // Logging out ends the session on the server: the same cookie is refused after.
    let second = ureq::AgentBuilder::new()
        .redirects(0)
        .build()
        .post(&s.url("/login"))
        .set(form[0].0, form[0].1)
        .send_string(&format!("token={TOKEN}"))
        .unwrap();
    let other = second
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(other, cookie, "every login is a new random session");
    let out = s.request("POST", "/logout", &[("Cookie", &other)], None);
    assert_eq!(out.status, 200, "redirected to the login form");
    assert_eq!(read(&other, "/api/streams").status, 401);
    assert_eq!(read(&cookie, "/api/streams").status, 200);
    // A forged or stale cookie is nothing.
    let forged = format!("amps_session={}", "0".repeat(64));
    assert_eq!(read(&forged, "/api/streams").status, 401);
    assert_eq!(
        read(&format!("amps_session={TOKEN}"), "/api/streams").status,
        401
    );

    // The bundled player is the pinned hls.js (assets/vendor/README.md).
    let resp = ureq::get(&s.url("/ui/hls.light.min.js"))
        .set("Cookie", &cookie)
        .call()
        .unwrap();
    assert!(resp.content_type().contains("javascript"));
    let mut js = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut js).unwrap();
    let out = common::pipe(&mut Command::new("sha256sum"), &js);
    assert!(out.status.success(), "sha256sum failed");
    assert!(
        js.len() > 10_000,
        "the player was served: {} bytes",
        js.len()
    );
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/vendor/README.md"
    ))
    .unwrap();
    let sum = String::from_utf8_lossy(&out.stdout);
    let hash = sum.split(' ').next().unwrap();
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a SHA-256: {sum:?}"
    );
    assert!(readme.contains(hash), "hash {hash} not in the README");

    // Thumbnails never start a channel.
    let r = read(&cookie, "/thumb/2.jpg");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(s.get("/api/streams/2/status").json()["state"], "idle");
    assert_eq!(read(&cookie, "/thumb/99.jpg").status, 404);

    // Wrong logins count towards the address block like wrong tokens (loopback is exempt
    // by default, so this only checks they are answered with the form and a 401).
    let bad = ureq::post(&s.url("/login"))
        .set(form[0].0, form[0].1)
        .send_string("token=nope");
    match bad {
        Err(ureq::Error::Status(401, r)) => {
            assert!(r
                .into_string()
                .unwrap()
                .contains("That token is not right."))
        }
        other => panic!("{other:?}"),
    }
}
