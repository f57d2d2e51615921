//! A cache of facts that never change once written: the topic a producer or consumer id
//! belongs to. The SQL stores check ownership on every request; this keeps those checks off
//! the database.
//!
//! Deleting a topic ends its ids. This broker forgets them at once ([`Catalog::forget_topic`]);
//! another broker on the same database may still hold them, which is safe because ids and
//! topic ids are never reused and the stores check, where it matters, that the topic (or the
//! consumer row) still exists: an append to a deleted topic id is answered
//! `producer_not_found`, and every consumer operation reads the consumer's row.

use super::{Result, StoreError};
use std::sync::Arc;

/// Ids whose owners are kept.
const MAX_ENTRIES: usize = 200_000;

/// Who an id belongs to: ids of the two kinds are separate sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Producer,
    Consumer,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }

    pub fn not_found(self, id: u64) -> StoreError {
        match self {
            Role::Producer => StoreError::ProducerNotFound(id),
            Role::Consumer => StoreError::ConsumerNotFound(id),
        }
    }
}

/// The topic an id is registered to.
#[derive(Debug, Clone)]
pub struct Owner {
    pub topic_id: i64,
    pub topic: Arc<str>,
    /// The topic's own size limit (`None`: the broker's default), as read with the owner: a
    /// change made on another broker shows here once the entry is evicted or the topic is.
    pub retention_bytes: Option<u64>,
}

impl Owner {
    /// Refuses the id when `requested` is not its topic.
    pub fn check(&self, role: Role, id: u64, requested: &str) -> Result<()> {
        if &*self.topic == requested {
            Ok(())
        } else {
            Err(StoreError::WrongTopic {
                role: role.name(),
                id,
                registered: self.topic.to_string(),
                requested: requested.to_owned(),
            })
        }
    }
}

/// The owners of recently used ids of both roles, evicted least-recently-used first: bounds
/// the broker's memory however many producers register over its lifetime.
pub struct Catalog(quick_cache::sync::Cache<(Role, u64), Owner>);

impl Default for Catalog {
    fn default() -> Self {
        Catalog(quick_cache::sync::Cache::new(MAX_ENTRIES))
    }
}

impl Catalog {
    pub fn get(&self, role: Role, id: u64) -> Option<Owner> {
        self.0.get(&(role, id))
    }

    pub fn remember(&self, role: Role, id: u64, owner: Owner) {
        self.0.insert((role, id), owner);
    }

    /// Forgets the ids of a deleted topic.
    pub fn forget_topic(&self, topic_id: i64) {
        self.0.retain(|_, owner| owner.topic_id != topic_id);
    }
}
