//! Upstream connection limits per provider (`playlists[].max_connections`).
//!
//! A channel imported from a provider holds one of the provider's connections while its
//! producer runs. Before a channel of a limited provider starts, [`Limits::admit`] checks
//! how many of the provider's channels run; when all connections are taken it frees one
//! that nobody watches (a channel in its idle grace, or kept warm) and otherwise refuses
//! with a 503 naming the channels that hold them. Viewers of a running channel share its
//! connection as always: joining one never needs admission. Admissions are serialised, so
//! two viewers starting two channels at once cannot both take the last connection.

use super::channel::Channel;
use crate::error::{Error, ErrorKind};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
pub struct Limits {
    /// origin (`playlist:<name>`) -> most simultaneous connections.
    max: RwLock<BTreeMap<String, u32>>,
    /// Held from the check until the producer has started.
    admitting: tokio::sync::Mutex<()>,
}

/// Proof of admission: hold it until the channel's producer has been started.
pub struct Admitted<'a>(#[allow(dead_code)] Option<tokio::sync::MutexGuard<'a, ()>>);

impl Limits {
    /// Replaces the limits (at start and on every reload).
    pub fn set(&self, max: BTreeMap<String, u32>) {
        *self.max.write().unwrap_or_else(|p| p.into_inner()) = max;
    }

    /// The limit of `origin`, if it has one.
    pub fn of(&self, origin: &str) -> Option<u32> {
        self.max
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(origin)
            .copied()
    }

    /// Lets `ch` start, freeing an unwatched channel of the same provider if need be.
    /// `all`: every channel runtime now.
    pub async fn admit<'a>(
        &'a self,
        ch: &Arc<Channel>,
        all: impl Fn() -> Vec<Arc<Channel>>,
    ) -> Result<Admitted<'a>, Error> {
        let stream = ch.stream();
        let Some(origin) = stream.origin.as_deref() else {
            return Ok(Admitted(None));
        };
        let Some(limit) = self.of(origin) else {
            return Ok(Admitted(None));
        };
        let guard = self.admitting.lock().await;
        // Each round frees at most one channel; bounded so a stuck stop cannot spin.
        for _ in 0..=limit {
            let holders: Vec<Arc<Channel>> = all()
                .into_iter()
                .filter(|c| c.id != ch.id && c.is_running())
                .filter(|c| c.stream().origin.as_deref() == Some(origin))
                .collect();
            if (holders.len() as u64) < u64::from(limit) {
                return Ok(Admitted(Some(guard)));
            }
            let idle = holders
                .iter()
                .find(|c| c.clients() == 0 && !c.stream().runs_always());
            let Some(idle) = idle else {
                let mut numbers: Vec<String> = holders
                    .iter()
                    .map(|c| {
                        let s = c.stream();
                        s.channel_number.unwrap_or(s.id).to_string()
                    })
                    .collect();
                numbers.sort();
                let name = origin.strip_prefix("playlist:").unwrap_or(origin);
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{name}: all {limit} connections in use by channels {} (playlists[].max_connections)",
                        numbers.join(", ")
                    ),
                ));
            };
            tracing::info!(
                channel = idle.id,
                for_channel = ch.id,
                provider = origin,
                "stopping an unwatched channel to free a provider connection"
            );
            if let Some(h) = idle.stop() {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            format!("{origin}: no provider connection could be freed"),
        ))
    }
}
