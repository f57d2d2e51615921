//! Group commit: requests that arrive while a transaction is being committed wait in a queue
//! and are all handled by the next transaction, so N concurrent requests cost one fsync
//! instead of N. There is no timer: a lone request is committed at once, and batches grow by
//! themselves exactly when commits are the bottleneck.

use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use tokio::sync::{mpsc, oneshot};

/// How many requests may wait for the batcher before submitters wait too.
const QUEUE_CAPACITY: usize = 16 * 1024;

type Job<Req, Resp> = (Req, oneshot::Sender<Resp>);

/// Hands requests to one background task that handles them in groups.
pub struct Batcher<Req, Resp> {
    queue: mpsc::Sender<Job<Req, Resp>>,
}

/// How large a group may grow: in requests, and in a weight (bytes) the caller defines.
#[derive(Clone, Copy)]
pub struct GroupLimits<Req> {
    pub requests: usize,
    pub weight: usize,
    /// A request's weight; a request heavier than the limit still forms a group of its own.
    pub weigh: fn(&Req) -> usize,
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Starts the task. `handle` gets a group within `limits` and must answer each request,
    /// in order (one response per request).
    pub fn spawn<F, Fut>(limits: GroupLimits<Req>, mut handle: F) -> Self
    where
        F: FnMut(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        let (queue, mut jobs) = mpsc::channel::<Job<Req, Resp>>(QUEUE_CAPACITY);
        tokio::spawn(async move {
            // A request that did not fit in the last group opens the next one.
            let mut carried: Option<Job<Req, Resp>> = None;
            loop {
                let first = match carried.take() {
                    Some(job) => job,
                    None => match jobs.recv().await {
                        Some(job) => job,
                        None => return,
                    },
                };
                let mut weight = (limits.weigh)(&first.0);
                let mut group = vec![first];
                while group.len() < limits.requests {
                    let Ok(job) = jobs.try_recv() else { break };
                    let more = (limits.weigh)(&job.0);
                    if weight + more > limits.weight {
                        carried = Some(job);
                        break;
                    }
                    weight += more;
                    group.push(job);
                }
                let (requests, replies): (Vec<Req>, Vec<_>) = group.into_iter().unzip();
                // A bug that panics in one group must not stop every later one: that group's
                // requesters see their reply dropped (an error), the task goes on.
                let responses = match AssertUnwindSafe(handle(requests)).catch_unwind().await {
                    Ok(responses) => responses,
                    Err(_) => {
                        tracing::error!("a group commit panicked; its requests failed");
                        continue;
                    }
                };
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
    /// (the store is closing) or the group failed with a panic.
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
        let limits = GroupLimits {
            requests: 64,
            weight: usize::MAX,
            weigh: |_: &u32| 1,
        };
        let batcher = Arc::new(Batcher::spawn(limits, move |requests: Vec<u32>| {
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

    #[tokio::test]
    async fn a_group_stops_at_its_weight_and_the_rest_waits_for_the_next() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let limits = GroupLimits {
            requests: 100,
            weight: 10,
            weigh: |r: &usize| *r,
        };
        let batcher = Arc::new(Batcher::spawn(limits, move |requests: Vec<usize>| {
            seen.lock().unwrap().push(requests.iter().sum::<usize>());
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                requests
            }
        }));
        let tasks: Vec<_> = [4usize, 4, 4, 4, 25, 1]
            .into_iter()
            .map(|w| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(w).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_some());
        }
        let sizes = sizes.lock().unwrap();
        // Each group weighs at most 10, except a single request that is heavier on its own.
        assert!(sizes.iter().all(|&w| w <= 10 || w == 25), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 42);
    }
}
