//! The thumbnail cache: one JPEG per running channel, made from the hub's latest keyframe
//! by [`thumb::jpeg`], reused for a few seconds, one made at a time.

use super::thumb;
use crate::error::{Error, ErrorKind};
use crate::sync::lock;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a thumbnail is reused before a new one is made.
const THUMB_FRESH: Duration = Duration::from_secs(5);
/// Thumbnail width in pixels.
const THUMB_WIDTH: u32 = 320;

/// The latest thumbnail of each channel and when it was made.
#[derive(Debug)]
pub struct Thumbnails {
    cache: Mutex<HashMap<u32, (Instant, Bytes)>>,
    /// One thumbnail is made at a time (they are decodes; the machine may have 2 cores).
    gate: Arc<tokio::sync::Semaphore>,
}

impl Default for Thumbnails {
    fn default() -> Self {
        Thumbnails {
            cache: Mutex::new(HashMap::new()),
            gate: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

impl Thumbnails {
    /// A JPEG of channel `id`'s picture, at most [`THUMB_FRESH`] old. `keyframe` gives
    /// the channel's latest keyframe as TS (None when it is not running); `live` the
    /// channels whose thumbnails may stay cached. One is made at a time, in a task that
    /// caches its result even when the request that asked for it has gone (a refreshing
    /// dashboard drops image requests), so requests never pile up decodes.
    pub async fn get(
        self: Arc<Self>,
        id: u32,
        keyframe: impl FnOnce() -> Option<Bytes> + Send + 'static,
        live: impl FnOnce() -> Vec<u32> + Send + 'static,
    ) -> Result<Bytes, Error> {
        if let Some(b) = self.fresh(id) {
            return Ok(b);
        }
        let made = tokio::spawn(async move {
            let _gate =
                self.gate.clone().acquire_owned().await.map_err(|_| {
                    Error::new(ErrorKind::Unavailable, "the server is shutting down")
                })?;
            if let Some(b) = self.fresh(id) {
                return Ok(b); // made while this one waited
            }
            let ts = keyframe().ok_or_else(|| {
                Error::not_found(format!(
                    "stream {id} is not running: there is no picture to show"
                ))
            })?;
            let jpeg = tokio::task::spawn_blocking(move || thumb::jpeg(ts, THUMB_WIDTH))
                .await
                .map_err(|e| Error::new(ErrorKind::Internal, format!("thumbnail: {e}")))?
                .map_err(|e| Error::new(ErrorKind::Unavailable, e))?;
            let jpeg = Bytes::from(jpeg);
            let live = live();
            let mut cache = lock(&self.cache);
            cache.retain(|k, _| live.contains(k));
            cache.insert(id, (Instant::now(), jpeg.clone()));
            Ok(jpeg)
        });
        made.await
            .map_err(|e| Error::new(ErrorKind::Internal, format!("thumbnail: {e}")))?
    }

    fn fresh(&self, id: u32) -> Option<Bytes> {
        lock(&self.cache)
            .get(&id)
            .filter(|(at, _)| at.elapsed() < THUMB_FRESH)
            .map(|(_, b)| b.clone())
    }
}
