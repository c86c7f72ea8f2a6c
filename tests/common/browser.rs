//! A headless Chromium driven over WebDriver (Debian's chromium and chromium-driver), for
//! tests that play Amps' pages and HLS in a real browser.

use super::{eventually, free_port};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A chromedriver process and one headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (./scripts/setup installs chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        assert!(
            eventually(Duration::from_secs(20), || ureq::get(&format!(
                "{base}/status"
            ))
            .call()
            .is_ok()),
            "chromedriver did not start"
        );
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--autoplay-policy=no-user-gesture-required"]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let resp: Value = ureq::post(&format!("{base}/session"))
            .timeout(Duration::from_secs(60))
            .send_json(caps)
            .expect("a Chromium session")
            .into_json()
            .unwrap();
        let session = resp["value"]["sessionId"].as_str().unwrap().to_owned();
        Browser {
            driver,
            base,
            session,
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = ureq::request(method, &url).timeout(Duration::from_secs(60));
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let v: Value = resp.into_json().unwrap();
        assert!(
            v["value"].get("error").is_none(),
            "{method} {path}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    pub fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    pub fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.call("POST", &format!("/element/{el}/clear"), Some(json!({})));
        self.call(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.call("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    pub fn wait_js(&self, limit: Duration, script: &str) -> bool {
        eventually(limit, || self.js(script).as_bool() == Some(true))
    }

    /// Waits until the page's player is playing and `condition` (JS, `v` is the video)
    /// holds; fails with what the page and its console show.
    pub fn wait_playing(&self, limit: Duration, condition: &str) {
        let ok = self.wait_js(
            limit,
            &format!("const v = document.getElementById('player'); return document.body.dataset.player === 'playing' && {condition}"),
        );
        assert!(
            ok,
            "the video never played ({}): {} / {}\n{:?}",
            self.js("return document.body.dataset.engine"),
            self.js("return document.getElementById('player-status').textContent"),
            self.js("const v = document.getElementById('player'); return [v.currentTime, v.videoWidth, v.readyState, v.error && v.error.message]"),
            self.console()
        );
    }

    pub fn current_time(&self) -> f64 {
        self.js("return document.getElementById('player').currentTime")
            .as_f64()
            .unwrap()
    }

    pub fn screenshot(&self, path: &std::path::Path) {
        use base64_png::decode;
        let b64 = self.call("GET", "/screenshot", None);
        std::fs::write(path, decode(b64.as_str().unwrap())).unwrap();
    }

    /// The browser console so far (CSP violations and script errors show up here).
    pub fn console(&self) -> Vec<String> {
        self.call("POST", "/se/log", Some(json!({"type": "browser"})))
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session))
            .timeout(Duration::from_secs(10))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Base64 (standard alphabet) for the screenshot; small enough to keep here.
mod base64_png {
    pub fn decode(s: &str) -> Vec<u8> {
        let val = |c: u8| -> Option<u32> {
            Some(match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            } as u32)
        };
        let mut out = Vec::with_capacity(s.len() * 3 / 4);
        let (mut acc, mut bits) = (0u32, 0u32);
        for v in s.bytes().filter_map(val) {
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }
}
