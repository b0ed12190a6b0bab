//! The metadata publisher: hands each committed batch's changes, with the image they give, to
//! the parts of the broker that act on metadata, in a fixed order: first the served topics and
//! the replica manager (which has the LogManager make or remove logs), then the group
//! coordinator (which loads or unloads the groups of the `__consumer_offsets` partitions it
//! gains or loses). At start the image replayed from the log is published as one batch in which
//! every topic is new, so start-up and runtime take the same path.
//!
//! Invariants: subscribers see batches in log order, each exactly once, and a subscriber sees a
//! batch only after every subscriber before it has acted on it (a partition is served before the
//! coordinator reads it).

use std::sync::Arc;

use crate::image::{Change, MetadataImage};

/// A part of the broker that acts on committed metadata.
pub trait MetadataSubscriber: Send + Sync {
    /// Acts on `changes`, which took the image to `image`.
    fn on_metadata(&self, image: &MetadataImage, changes: &[Change]);
}

pub struct Publisher {
    subscribers: Vec<Arc<dyn MetadataSubscriber>>,
}

impl Publisher {
    /// Publishes to `subscribers` in the order given.
    pub fn new(subscribers: Vec<Arc<dyn MetadataSubscriber>>) -> Self {
        Self { subscribers }
    }

    pub fn publish(&self, image: &MetadataImage, changes: &[Change]) {
        for subscriber in &self.subscribers {
            subscriber.on_metadata(image, changes);
        }
    }

    /// Publishes a replayed image as a batch in which every topic is new.
    pub fn publish_start(&self, image: &MetadataImage) {
        let changes: Vec<Change> = image
            .topics()
            .map(|t| Change::TopicCreated(t.name.to_string()))
            .collect();
        self.publish(image, &changes);
    }
}
