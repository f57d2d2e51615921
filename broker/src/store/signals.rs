//! Wake-ups for long-polling fetches: one `watch` channel per topic whose value is bumped
//! whenever messages are appended to the topic (by this broker, or by another broker sharing
//! the PostgreSQL database, through LISTEN/NOTIFY).

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;

#[derive(Default)]
pub struct TopicSignals {
    topics: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl TopicSignals {
    /// A receiver that resolves `changed()` at the next append to `topic`. Subscribe
    /// *before* reading, so that an append between the read and the wait is not missed.
    pub fn subscribe(&self, topic: &str) -> watch::Receiver<u64> {
        let mut topics = self.topics.lock().expect("signals lock");
        match topics.get(topic) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(0);
                topics.insert(topic.to_owned(), sender);
                receiver
            }
        }
    }

    /// Wakes everything waiting on `topic`.
    pub fn notify(&self, topic: &str) {
        let topics = self.topics.lock().expect("signals lock");
        if let Some(sender) = topics.get(topic) {
            sender.send_modify(|version| *version = version.wrapping_add(1));
        }
    }

    /// Wakes every waiter, e.g. after the cross-broker notification channel reconnected and
    /// notifications may have been missed.
    pub fn notify_all(&self) {
        let topics = self.topics.lock().expect("signals lock");
        for sender in topics.values() {
            sender.send_modify(|version| *version = version.wrapping_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_wakes_on_its_topic_only() {
        let signals = TopicSignals::default();
        let mut a = signals.subscribe("a");
        let mut b = signals.subscribe("b");
        signals.notify("a");
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        a.changed().await.unwrap();
        signals.notify_all();
        b.changed().await.unwrap();
    }
}
