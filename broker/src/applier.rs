//! The applier: the one path from a committed batch of metadata records to the served image and
//! the subscribers that act on it. The single node's file log and the Raft state machine both
//! apply through it, so a batch has the same effect however it was committed.
//!
//! Invariants: batches are applied one at a time, in the order they are handed over; a batch is
//! applied whole or not at all (a refused batch changes nothing, and every node refuses it alike,
//! since each applies it to the same image); the image is swapped only after `durable` has
//! returned, and the subscribers see it only after the swap.

use std::sync::{Arc, Mutex};

use crate::image::{ApplyError, Change, MetadataImage};
use crate::metadata::Metadata;
use crate::metadata_log::record::MetadataRecord;
use crate::publisher::Publisher;

pub struct Applier {
    metadata: Arc<Metadata>,
    publisher: Publisher,
    /// Held from the copy of the image to the end of the publish.
    order: Mutex<()>,
}

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyFailure {
    /// The batch does not apply to the current image; nothing changed.
    #[error(transparent)]
    Refused(#[from] ApplyError),
    /// The batch could not be made durable; nothing changed.
    #[error("metadata log: {0}")]
    Io(#[from] std::io::Error),
}

impl Applier {
    pub fn new(metadata: Arc<Metadata>, publisher: Publisher) -> Self {
        Self {
            metadata,
            publisher,
            order: Mutex::new(()),
        }
    }

    pub fn metadata(&self) -> &Arc<Metadata> {
        &self.metadata
    }

    /// Applies `records` to a copy of the image; if they apply, runs `durable` (which writes
    /// them to the log), then swaps the image and publishes what changed.
    pub fn apply(
        &self,
        records: &[MetadataRecord],
        durable: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<(), ApplyFailure> {
        let _order = self.order.lock().expect("applier lock");
        let mut next = (*self.metadata.image()).clone();
        let changes = next.apply_all(records)?;
        durable()?;
        self.swap(next, &changes);
        Ok(())
    }

    /// Replaces the whole image by `next` (a snapshot installed), publishing the difference:
    /// topics gone or replaced are deleted, every topic of `next` is served anew.
    pub fn replace(&self, next: MetadataImage) {
        let _order = self.order.lock().expect("applier lock");
        let current = self.metadata.image();
        let mut changes: Vec<Change> = current
            .topics()
            .filter(|t| next.topic(&t.name).is_none_or(|n| n.id != t.id))
            .map(|t| Change::TopicDeleted(t.clone()))
            .collect();
        changes.extend(
            next.topics()
                .map(|t| Change::TopicCreated(t.name.to_string())),
        );
        changes.extend(next.brokers().map(|b| Change::Broker(b.node_id)));
        changes.push(Change::ProducerIds);
        self.swap(next, &changes);
    }

    fn swap(&self, next: MetadataImage, changes: &[Change]) {
        let next = Arc::new(next);
        self.metadata.swap_image(next.clone());
        self.publisher.publish(&next, changes);
    }
}
