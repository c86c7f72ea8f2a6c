//! A client's place on a channel: a stream of the hub's TS chunks from its cursor.

use super::channel::Channel;
use super::hub::{self, Cursor};
use bytes::Bytes;
use std::sync::Arc;

/// A client's subscription to a channel: a stream of TS chunks. Dropping it leaves.
pub struct Subscription {
    channel: Arc<Channel>,
    cursor: Cursor,
}

impl Subscription {
    /// A client's place on `channel`, or None when the channel is at `limit` clients
    /// (0: no limit). Counting and checking are one atomic step.
    pub(super) fn join(channel: Arc<Channel>, limit: usize) -> Option<Subscription> {
        channel.try_join(limit).then(|| Subscription {
            channel,
            cursor: Cursor::default(),
        })
    }

    /// The next chunks, or None when the channel ends (or this client was too slow).
    pub async fn next(&mut self) -> Option<Vec<Bytes>> {
        self.channel.hub.next(&mut self.cursor).await
    }

    /// Starts this (not yet read) subscription at the oldest keyframe of the channel's
    /// backlog rather than the newest.
    pub fn from_oldest(mut self) -> Subscription {
        self.cursor = Cursor::from_oldest();
        self
    }

    /// Like [`Subscription::next`], each chunk with what it is (for the HLS segmenter).
    pub async fn next_parts(&mut self) -> Option<Vec<(Bytes, hub::PartKind)>> {
        self.channel.hub.next_parts(&mut self.cursor).await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.channel.client_left();
    }
}
