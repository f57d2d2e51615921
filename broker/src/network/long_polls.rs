//! `--max-long-polls-per-client`: how many fetches one client address may have waiting at
//! once. Each waiting fetch holds a [`Slot`]; dropping it frees the slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct LongPolls {
    most: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One open long poll; freed on drop.
pub struct Slot {
    polls: LongPolls,
    client: IpAddr,
}

impl LongPolls {
    pub fn new(most_per_client: usize) -> Self {
        LongPolls {
            most: most_per_client,
            open: Arc::default(),
        }
    }

    /// A slot for `client`, or `None` when it has the most it may have.
    pub fn open(&self, client: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(client).or_insert(0);
        if *count >= self.most {
            return None;
        }
        *count += 1;
        Some(Slot {
            polls: self.clone(),
            client,
        })
    }

    pub fn most_per_client(&self) -> usize {
        self.most
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.polls.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_gets_its_own_slots() {
        let polls = LongPolls::new(2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = polls.open(a).unwrap();
        let _second = polls.open(a).unwrap();
        assert!(polls.open(a).is_none());
        assert!(polls.open(b).is_some());
        drop(first);
        assert!(polls.open(a).is_some());
        assert!(polls.open.lock().unwrap().get(&b).is_none());
    }
}
