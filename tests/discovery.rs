//! HDHomeRun discovery and control on loopback: a unicast discovery client written here
//! (its own encoder, decoder and CRC, independent of Amps' code), the control protocol
//! over TCP, and libhdhomerun's own `hdhomerun_config 127.0.0.1 get /sys/model`.
//! Everything is sent to 127.0.0.1 only: never a broadcast (`hdhomerun_config discover`
//! broadcasts onto the network and is never run).

mod common;

use common::{Server, TOKEN};
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

const TUNER_SECRET: &str = "tuner-secret-7f3a";

fn crc(bytes: &[u8]) -> [u8; 4] {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    c.sum().to_le_bytes()
}

fn packet(kind: u16, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (tag, v) in tlvs {
        payload.push(*tag);
        payload.push(v.len() as u8);
        payload.extend_from_slice(v);
    }
    let mut p = kind.to_be_bytes().to_vec();
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&payload);
    let c = crc(&p);
    p.extend_from_slice(&c);
    p
}

/// (type, [(tag, value)]) of a packet whose CRC is right.
fn parse(p: &[u8]) -> (u16, Vec<(u8, Vec<u8>)>) {
    let len = u16::from_be_bytes([p[2], p[3]]) as usize;
    assert_eq!(p.len(), 4 + len + 4, "length field");
    assert_eq!(crc(&p[..4 + len]), p[4 + len..], "CRC");
    let mut tlvs = Vec::new();
    let mut i = 4;
    while i < 4 + len {
        let tag = p[i];
        let (n, head) = if p[i + 1] & 0x80 != 0 {
            (((p[i + 1] & 0x7f) as usize) | (p[i + 2] as usize) << 7, 3)
        } else {
            (p[i + 1] as usize, 2)
        };
        tlvs.push((tag, p[i + head..i + head + n].to_vec()));
        i += head + n;
    }
    (u16::from_be_bytes([p[0], p[1]]), tlvs)
}

fn value(tlvs: &[(u8, Vec<u8>)], tag: u8) -> Vec<u8> {
    tlvs.iter()
        .find(|(t, _)| *t == tag)
        .unwrap_or_else(|| panic!("tag {tag:#x} in {tlvs:?}"))
        .1
        .clone()
}

fn text(v: Vec<u8>) -> String {
    String::from_utf8(v)
        .unwrap()
        .trim_end_matches('\0')
        .to_owned()
}

fn config(port: u16) -> String {
    format!(
        "server:\n  auth_token: {TOKEN}\n  tokens:\n    - {{name: tuner, token: {TUNER_SECRET}, role: viewer}}\nhdhomerun:\n  discovery: true\n  discovery_port: {port}\n  discovery_token: tuner\nffmpeg_profiles:\n  relay: {{video_codec: copy, audio_codec: copy}}\nstreams:\n  - {{id: 1, name: One, source: 'lavfi:testsrc2=size=160x120:rate=10[out0];sine[out1]', ffmpeg_profile: relay, channel_number: 4}}\n"
    )
}

#[test]
fn unicast_discovery_and_control_answer_with_the_tuner_token_only() {
    let port = common::free_port();
    let s = Server::start(&config(port));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let wild = 0xFFFF_FFFFu32.to_be_bytes();
    let ask = |device_id: &[u8]| {
        let req = packet(0x0002, &[(0x01, &wild), (0x02, device_id)]);
        client.send_to(&req, ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 3074];
        client
            .recv_from(&mut buf)
            .ok()
            .map(|(n, _)| buf[..n].to_vec())
    };
    let mut reply = None;
    assert!(common::eventually(Duration::from_secs(5), || {
        reply = ask(&wild);
        reply.is_some()
    }));
    let (kind, tlvs) = parse(&reply.unwrap());
    assert_eq!(kind, 0x0003);
    assert_eq!(value(&tlvs, 0x01), 1u32.to_be_bytes(), "a tuner");
    assert_eq!(value(&tlvs, 0x10), [4], "tuner count");
    let port_http = s.addr.rsplit(':').next().unwrap();
    let base = text(value(&tlvs, 0x2A));
    assert_eq!(
        base,
        format!("http://127.0.0.1:{port_http}/hdhr/{TUNER_SECRET}")
    );
    assert_eq!(text(value(&tlvs, 0x27)), format!("{base}/lineup.json"));
    let id = value(&tlvs, 0x02);
    // The device id is the one discover.json gives; the base URL works as it is.
    let d: serde_json::Value = ureq::get(&format!("{base}/discover.json"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(
        d["DeviceID"].as_str().unwrap(),
        format!("{:08X}", u32::from_be_bytes(id.clone().try_into().unwrap()))
    );
    let lineup: serde_json::Value = ureq::get(&format!("{base}/lineup.json"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(lineup[0]["GuideNumber"], "4");
    assert!(lineup[0]["URL"].as_str().unwrap().contains(TUNER_SECRET));
    // The admin token is never handed out.
    assert!(!base.contains(TOKEN));
    // Asked for another device: no answer. Junk: no answer, and the server goes on.
    assert!(ask(&0x1234_5678u32.to_be_bytes()).is_none());
    client
        .send_to(b"\x00\x02\x00\x04junkjunk", ("127.0.0.1", port))
        .unwrap();
    assert!(ask(&id).is_some(), "asked by its own id");

    // The control protocol: reads answered, writes and unknown names refused.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut get = |name: &str, set: Option<&str>| {
        let n = format!("{name}\0");
        let mut tlvs: Vec<(u8, &[u8])> = vec![(0x03, n.as_bytes())];
        let v = set.map(|v| format!("{v}\0"));
        if let Some(v) = &v {
            tlvs.push((0x04, v.as_bytes()));
        }
        tcp.write_all(&packet(0x0004, &tlvs)).unwrap();
        let mut head = [0u8; 4];
        tcp.read_exact(&mut head).unwrap();
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let mut rest = vec![0u8; len + 4];
        tcp.read_exact(&mut rest).unwrap();
        let mut all = head.to_vec();
        all.extend(rest);
        let (kind, tlvs) = parse(&all);
        assert_eq!(kind, 0x0005);
        tlvs
    };
    assert_eq!(
        text(value(&get("/sys/model", None), 0x04)),
        "hdhomerun5_atsc"
    );
    assert_eq!(text(value(&get("/sys/hwmodel", None), 0x04)), "HDHR5-4US");
    assert_eq!(
        text(value(&get("/lineup/scan", None), 0x04)),
        "state=complete progress=100% found=1"
    );
    assert!(text(value(&get("/sys/model", Some("x")), 0x05)).starts_with("ERROR"));
    assert!(text(value(&get("/tuner0/channel", None), 0x05)).starts_with("ERROR"));
    assert_eq!(s.get("/health").status, 200);
}

#[test]
fn discovery_stays_off_without_a_tuner_token_and_on_loopback() {
    // A token is needed and none is named for tuners: `discovery: true` is refused.
    let port = common::free_port();
    let bad = config(port).replace("  discovery_token: tuner\n", "");
    let path = common::save(bad.as_bytes(), "config.yaml");
    let (code, _, err) = common::run_cli(&["check", "-c", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("hdhomerun.discovery: needs hdhomerun.discovery_token"),
        "{err}"
    );
    let admin = config(port).replace("role: viewer", "role: admin");
    let path = common::save(admin.as_bytes(), "config.yaml");
    let (_, _, err) = common::run_cli(&["check", "-c", path.to_str().unwrap()]);
    assert!(err.contains("is an admin token"), "{err}");
    // Left to its default on a loopback server: nothing listens.
    let quiet = config(port).replace("  discovery: true\n", "");
    let _s = Server::start(&quiet);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let wild = 0xFFFF_FFFFu32.to_be_bytes();
    client
        .send_to(
            &packet(0x0002, &[(0x01, &wild), (0x02, &wild)]),
            ("127.0.0.1", port),
        )
        .unwrap();
    assert!(
        client.recv_from(&mut [0u8; 64]).is_err(),
        "no discovery on a loopback server by default"
    );
}

/// libhdhomerun itself, on the protocol's own port: `hdhomerun_config 127.0.0.1 get
/// /sys/model` (it finds the device by unicast discovery to that address, then asks over
/// TCP).
#[test]
fn hdhomerun_config_reads_the_model_over_loopback() {
    let s = Server::start(&config(65001));
    assert!(
        common::eventually(Duration::from_secs(5), || s
            .logs()
            .contains("answering HDHomeRun discovery")),
        "{}",
        s.logs()
    );
    for (var, want) in [
        ("/sys/model", "hdhomerun5_atsc"),
        ("/sys/hwmodel", "HDHR5-4US"),
        ("/sys/version", "20200101"),
    ] {
        let out = std::process::Command::new("hdhomerun_config")
            .args(["127.0.0.1", "get", var])
            .output()
            .expect(
                "hdhomerun_config (Debian package hdhomerun-config; scripts/setup installs it)",
            );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.trim() == want,
            "{var}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
