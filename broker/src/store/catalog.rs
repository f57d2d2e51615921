//! A cache of facts that never change once written: a topic's id, and the topic a producer
//! or consumer id belongs to. The SQL stores check ownership on every request; this keeps
//! those checks off the database. Safe with many brokers on one database because the
//! cached facts are immutable (topics are never deleted, ids never reused).

use super::{Result, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Entries per map before it is emptied and refilled on demand: bounds the broker's memory
/// however many producers register over its lifetime.
const MAX_ENTRIES: usize = 100_000;

/// Who an id belongs to: ids of the two kinds are separate sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A map that empties itself when full.
struct Cache(RwLock<HashMap<u64, Owner>>);

impl Cache {
    fn get(&self, id: u64) -> Option<Owner> {
        self.0.read().expect("catalog lock").get(&id).cloned()
    }

    fn put(&self, id: u64, owner: Owner) {
        let mut map = self.0.write().expect("catalog lock");
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(id, owner);
    }
}

#[derive(Default)]
pub struct Catalog {
    producers: Cache,
    consumers: Cache,
}

impl Default for Cache {
    fn default() -> Self {
        Cache(RwLock::new(HashMap::new()))
    }
}

impl Catalog {
    fn cache(&self, role: Role) -> &Cache {
        match role {
            Role::Producer => &self.producers,
            Role::Consumer => &self.consumers,
        }
    }

    pub fn get(&self, role: Role, id: u64) -> Option<Owner> {
        self.cache(role).get(id)
    }

    pub fn remember(&self, role: Role, id: u64, owner: Owner) {
        self.cache(role).put(id, owner);
    }
}
