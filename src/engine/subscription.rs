//! A client's place on a channel: a stream of the hub's TS chunks from its cursor.

use super::channel::Channel;
use super::hub::{self, Cursor, Hub};
use super::rendition::Rendition;
use bytes::Bytes;
use std::sync::Arc;

/// A client's subscription to a channel: a stream of TS chunks. Dropping it leaves.
pub struct Subscription {
    channel: Arc<Channel>,
    /// The extra output profile watched, if not the channel's own.
    rendition: Option<Arc<Rendition>>,
    cursor: Cursor,
}

impl Subscription {
    /// A client's place on `channel`, or None when the channel is at `limit` clients
    /// (0: no limit). Counting and checking are one atomic step.
    /// With `rendition`, the client watches that profile's output (and counts as one of
    /// the channel's clients too: it keeps the channel running).
    pub(super) fn join(
        channel: Arc<Channel>,
        limit: usize,
        rendition: Option<Arc<Rendition>>,
    ) -> Option<Subscription> {
        if !channel.try_join(limit) {
            return None;
        }
        if let Some(r) = &rendition {
            r.joined();
        }
        Some(Subscription {
            channel,
            rendition,
            cursor: Cursor::default(),
        })
    }

    fn hub(&self) -> &Hub {
        match &self.rendition {
            Some(r) => &r.hub,
            None => &self.channel.hub,
        }
    }

    /// The next chunks, or None when the channel ends (or this client was too slow).
    pub async fn next(&mut self) -> Option<Vec<Bytes>> {
        let hub = match &self.rendition {
            Some(r) => &r.hub,
            None => &self.channel.hub,
        };
        hub.next(&mut self.cursor).await
    }

    /// Starts this (not yet read) subscription at the oldest keyframe of the channel's
    /// backlog rather than the newest.
    pub fn from_oldest(mut self) -> Subscription {
        self.cursor = Cursor::from_oldest();
        self
    }

    /// Like [`Subscription::next`], each chunk with what it is (for the HLS segmenter).
    pub async fn next_parts(&mut self) -> Option<Vec<(Bytes, hub::PartKind)>> {
        let hub = match &self.rendition {
            Some(r) => &r.hub,
            None => &self.channel.hub,
        };
        hub.next_parts(&mut self.cursor).await
    }

    /// Whether the output watched holds a keyframe (a joining client can start at once).
    pub(super) fn has_keyframe(&self) -> bool {
        self.hub().has_keyframe()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(r) = &self.rendition {
            r.left();
        }
        self.channel.client_left();
    }
}
