//! Group commit: requests that arrive while a transaction is being committed wait in a queue
//! and are all handled by the next transaction, so N concurrent requests cost one fsync
//! instead of N. There is no timer: a lone request is committed at once, and batches grow by
//! themselves exactly when commits are the bottleneck.

use std::future::Future;
use tokio::sync::{mpsc, oneshot};

/// How many requests may wait for the batcher before submitters wait too.
const QUEUE_CAPACITY: usize = 16 * 1024;

type Job<Req, Resp> = (Req, oneshot::Sender<Resp>);

/// Hands requests to one background task that handles them in groups.
pub struct Batcher<Req, Resp> {
    queue: mpsc::Sender<Job<Req, Resp>>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Starts the task. `handle` gets up to `max_group` requests and must answer each one, in
    /// order (one response per request).
    pub fn spawn<F, Fut>(max_group: usize, mut handle: F) -> Self
    where
        F: FnMut(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        let (queue, mut jobs) = mpsc::channel::<Job<Req, Resp>>(QUEUE_CAPACITY);
        tokio::spawn(async move {
            let mut group = Vec::with_capacity(max_group);
            while jobs.recv_many(&mut group, max_group).await > 0 {
                let (requests, replies): (Vec<Req>, Vec<_>) = group.drain(..).unzip();
                let responses = handle(requests).await;
                debug_assert_eq!(responses.len(), replies.len());
                for (reply, response) in replies.into_iter().zip(responses) {
                    // The requester may have gone (client disconnected); the work is done.
                    let _ = reply.send(response);
                }
            }
        });
        Batcher { queue }
    }

    /// Queues `request` and waits for its group to be handled. `None` if the task is gone
    /// (the store is closing).
    pub async fn submit(&self, request: Req) -> Option<Resp> {
        let (reply, response) = oneshot::channel();
        self.queue.send((request, reply)).await.ok()?;
        response.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_requests_share_groups_and_each_gets_its_own_answer() {
        let groups = Arc::new(AtomicUsize::new(0));
        let counter = groups.clone();
        let batcher = Arc::new(Batcher::spawn(64, move |requests: Vec<u32>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                requests.into_iter().map(|r| r * 2).collect::<Vec<_>>()
            }
        }));
        let tasks: Vec<_> = (0..100u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.submit(i).await) })
            })
            .collect();
        for task in tasks {
            let (i, answer) = task.await.unwrap();
            assert_eq!(answer, Some(i * 2));
        }
        let groups = groups.load(Ordering::SeqCst);
        assert!(groups < 100, "100 concurrent requests took {groups} groups");
    }
}
