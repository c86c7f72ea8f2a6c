//! HDHomeRun discovery and control on port 65001, so Plex, Jellyfin, Emby and Channels
//! find Amps by themselves and libhdhomerun's own `hdhomerun_config <ip> get /sys/model`
//! works.
//!
//! - UDP: a discover request (0x0002) whose device type and id match (or are wildcards)
//!   gets a reply (0x0003) to its sender only: device type, device id, tuner count, base
//!   URL and lineup URL. Amps never sends a broadcast or multicast; it only answers.
//! - TCP: getset requests (0x0004) for `/sys/model`, `/sys/hwmodel`, `/sys/version` and
//!   `/lineup/scan` are answered (0x0005); anything else, and any set, with an error
//!   message. At most 16 connections, 10 s of silence ends one.
//!
//! The base URL is the tuner's URL with a token in its path, and discovery answers anyone
//! on the network, so it carries only `hdhomerun.discovery_token` (a viewer token meant
//! for tuners), never the admin token; without a token to carry, discovery is off when the
//! server needs one.

use super::hdhr_pkt::{self as pkt, Packet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What discovery and control tell.
#[derive(Clone)]
pub struct Device {
    pub device_id: u32,
    pub tuner_count: u8,
    /// `http://` or `https://`.
    pub scheme: &'static str,
    /// The HTTP port players reach Amps on.
    pub http_port: u16,
    /// `server.public_url`, when set: used as the base instead of the address asked.
    pub public_url: Option<String>,
    /// The token segment (`/<token>`, percent-encoded) or "".
    pub token_segment: String,
    pub model: &'static str,
    pub hwmodel: &'static str,
    pub version: &'static str,
    /// Channels in the lineup now.
    pub channels: Arc<dyn Fn() -> usize + Send + Sync>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("device_id", &format_args!("{:08X}", self.device_id))
            .finish_non_exhaustive()
    }
}

impl Device {
    /// The tuner's base URL as seen from a client whose packets arrived at `local`.
    pub fn base_url(&self, local: IpAddr) -> String {
        let root = match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => match local {
                IpAddr::V6(v6) => format!("{}://[{v6}]:{}", self.scheme, self.http_port),
                v4 => format!("{}://{v4}:{}", self.scheme, self.http_port),
            },
        };
        format!("{root}/hdhr{}", self.token_segment)
    }

    /// The reply to a discover request from `local`'s side, or None when it asks for
    /// another device (or is not a discover request).
    pub fn discover_reply(&self, req: &Packet, local: IpAddr) -> Option<Vec<u8>> {
        if req.kind != pkt::TYPE_DISCOVER_REQ {
            return None;
        }
        let kind = req.u32(pkt::TAG_DEVICE_TYPE).unwrap_or(pkt::WILDCARD);
        let id = req.u32(pkt::TAG_DEVICE_ID).unwrap_or(pkt::WILDCARD);
        if (kind != pkt::WILDCARD && kind != pkt::DEVICE_TYPE_TUNER)
            || (id != pkt::WILDCARD && id != self.device_id)
        {
            return None;
        }
        let base = self.base_url(local);
        Some(pkt::encode(
            pkt::TYPE_DISCOVER_RPY,
            &[
                (
                    pkt::TAG_DEVICE_TYPE,
                    pkt::DEVICE_TYPE_TUNER.to_be_bytes().to_vec(),
                ),
                (pkt::TAG_DEVICE_ID, self.device_id.to_be_bytes().to_vec()),
                (pkt::TAG_TUNER_COUNT, vec![self.tuner_count]),
                (pkt::TAG_BASE_URL, base.clone().into_bytes()),
                (
                    pkt::TAG_LINEUP_URL,
                    format!("{base}/lineup.json").into_bytes(),
                ),
            ],
        ))
    }

    /// The reply to a getset request.
    pub fn getset_reply(&self, req: &Packet) -> Option<Vec<u8>> {
        if req.kind != pkt::TYPE_GETSET_REQ {
            return None;
        }
        let name = req.string(pkt::TAG_GETSET_NAME).unwrap_or_default();
        let value = if req.get(pkt::TAG_GETSET_VALUE).is_some() {
            Err("ERROR: this tuner is read-only".to_owned())
        } else {
            match name.as_str() {
                "/sys/model" => Ok(self.model.to_owned()),
                "/sys/hwmodel" => Ok(self.hwmodel.to_owned()),
                "/sys/version" => Ok(self.version.to_owned()),
                "/lineup/scan" => Ok(format!(
                    "state=complete progress=100% found={}",
                    (self.channels)()
                )),
                _ => Err(format!("ERROR: unknown getset variable {name}")),
            }
        };
        let mut tlvs = vec![(pkt::TAG_GETSET_NAME, pkt::cstr(&name))];
        match value {
            Ok(v) => tlvs.push((pkt::TAG_GETSET_VALUE, pkt::cstr(&v))),
            Err(e) => tlvs.push((pkt::TAG_ERROR_MESSAGE, pkt::cstr(&e))),
        }
        Some(pkt::encode(pkt::TYPE_GETSET_RPY, &tlvs))
    }
}

/// The local address packets from `peer` arrive at (the route back to it): a connected
/// UDP socket learns it without sending anything.
fn local_for(peer: SocketAddr, bound: IpAddr) -> IpAddr {
    if !bound.is_unspecified() {
        return bound;
    }
    let any: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(peer)?;
            s.local_addr()
        })
        .map_or(bound, |a| a.ip())
}

/// Answers discover requests on `udp` until the task is dropped.
pub async fn serve_udp(udp: tokio::net::UdpSocket, device: Arc<Device>) {
    let bound = udp
        .local_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let mut buf = vec![0u8; pkt::MAX_PACKET];
    loop {
        let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
            continue;
        };
        let Some(req) = pkt::decode(&buf[..n]) else {
            continue;
        };
        let local = local_for(peer, bound);
        if let Some(reply) = device.discover_reply(&req, local) {
            // Only ever to the asker: never a broadcast.
            let _ = udp.send_to(&reply, peer).await;
            tracing::debug!(client = %peer.ip(), "answered an HDHomeRun discovery");
        }
    }
}

/// Answers control connections on `tcp` until the task is dropped.
pub async fn serve_tcp(tcp: tokio::net::TcpListener, device: Arc<Device>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let Ok((mut conn, _)) = tcp.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // too many: dropped
        };
        let device = device.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut buf = Vec::with_capacity(256);
            loop {
                let mut chunk = [0u8; 1024];
                let read =
                    tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk)).await;
                let n = match read {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => return,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(len) = pkt::frame_len(&buf) {
                    if len > pkt::MAX_PACKET {
                        return;
                    }
                    if buf.len() < len {
                        break;
                    }
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    let Some(reply) = pkt::decode(&frame).and_then(|p| device.getset_reply(&p))
                    else {
                        return;
                    };
                    if conn.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device {
            device_id: 0x1234_5678,
            tuner_count: 4,
            scheme: "http",
            http_port: 5000,
            public_url: None,
            token_segment: "/tuner-secret".into(),
            model: "hdhomerun5_atsc",
            hwmodel: "HDHR5-4US",
            version: "20200101",
            channels: Arc::new(|| 12),
        }
    }

    fn discover(kind: u32, id: u32) -> Packet {
        pkt::decode(&pkt::encode(
            pkt::TYPE_DISCOVER_REQ,
            &[
                (pkt::TAG_DEVICE_TYPE, kind.to_be_bytes().to_vec()),
                (pkt::TAG_DEVICE_ID, id.to_be_bytes().to_vec()),
            ],
        ))
        .unwrap()
    }

    #[test]
    fn discovery_answers_wildcards_and_its_own_id_only() {
        let d = device();
        let ip: IpAddr = "192.168.1.10".parse().unwrap();
        let r = pkt::decode(
            &d.discover_reply(&discover(pkt::WILDCARD, pkt::WILDCARD), ip)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(r.kind, pkt::TYPE_DISCOVER_RPY);
        assert_eq!(r.u32(pkt::TAG_DEVICE_ID), Some(0x1234_5678));
        assert_eq!(r.get(pkt::TAG_TUNER_COUNT), Some(&[4u8][..]));
        assert_eq!(
            r.string(pkt::TAG_BASE_URL).unwrap(),
            "http://192.168.1.10:5000/hdhr/tuner-secret"
        );
        assert_eq!(
            r.string(pkt::TAG_LINEUP_URL).unwrap(),
            "http://192.168.1.10:5000/hdhr/tuner-secret/lineup.json"
        );
        assert!(d
            .discover_reply(&discover(pkt::DEVICE_TYPE_TUNER, 0x1234_5678), ip)
            .is_some());
        assert!(d
            .discover_reply(&discover(pkt::WILDCARD, 0x1111_1111), ip)
            .is_none());
        assert!(
            d.discover_reply(&discover(0x0000_0005, pkt::WILDCARD), ip)
                .is_none(),
            "a storage device"
        );
    }

    #[test]
    fn control_answers_reads_and_refuses_the_rest() {
        let d = device();
        let get = |name: &str, value: Option<&str>| {
            let mut tlvs = vec![(pkt::TAG_GETSET_NAME, pkt::cstr(name))];
            if let Some(v) = value {
                tlvs.push((pkt::TAG_GETSET_VALUE, pkt::cstr(v)));
            }
            let req = pkt::decode(&pkt::encode(pkt::TYPE_GETSET_REQ, &tlvs)).unwrap();
            pkt::decode(&d.getset_reply(&req).unwrap()).unwrap()
        };
        assert_eq!(
            get("/sys/model", None)
                .string(pkt::TAG_GETSET_VALUE)
                .unwrap(),
            "hdhomerun5_atsc"
        );
        assert_eq!(
            get("/lineup/scan", None)
                .string(pkt::TAG_GETSET_VALUE)
                .unwrap(),
            "state=complete progress=100% found=12"
        );
        assert!(get("/sys/restart", None)
            .string(pkt::TAG_ERROR_MESSAGE)
            .unwrap()
            .starts_with("ERROR: unknown"));
        assert!(get("/sys/model", Some("x"))
            .string(pkt::TAG_ERROR_MESSAGE)
            .unwrap()
            .contains("read-only"));
    }
}
