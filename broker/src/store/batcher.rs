//! Group commit: requests that arrive while a transaction is being committed wait in a queue
//! and are all handled by the next transaction, so N concurrent requests cost one fsync
//! instead of N. There is no timer: a lone request is committed at once, and batches grow by
//! themselves exactly when commits are the bottleneck.

use super::{Result, StoreError};
use futures_util::FutureExt;
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How many requests may wait for the batcher before submitters wait too.
const QUEUE_CAPACITY: usize = 16 * 1024;

type Job<Req, T> = (Req, oneshot::Sender<Result<T>>);

/// Hands requests to one background task that handles them in groups.
pub struct Batcher<Req, T> {
    queue: mpsc::Sender<Job<Req, T>>,
}

/// How large a group may grow: in requests, and in a weight (bytes) the caller defines.
#[derive(Clone, Copy)]
pub struct GroupLimits<Req> {
    /// The batcher's name in metrics (`appends`, `positions`).
    pub name: &'static str,
    pub requests: usize,
    pub weight: usize,
    /// A request's weight; a request heavier than the limit still forms a group of its own.
    pub weigh: fn(&Req) -> usize,
    pub overlap: Overlap<Req>,
}

/// Whether a group may start while others are being handled: at most `in_flight` at once,
/// and a group that would start beside another must reach `from` in `size` (a smaller one
/// waits and grows meanwhile: started at once it would only split the commits in two).
/// Groups finish in the order they were formed: a group's answers go out after those of
/// every group formed before it.
#[derive(Clone, Copy)]
pub struct Overlap<Req> {
    pub in_flight: usize,
    pub size: fn(&Req) -> usize,
    pub from: usize,
}

impl<Req> Overlap<Req> {
    /// One group at a time.
    pub fn none() -> Self {
        Overlap {
            in_flight: 1,
            size: |_| 0,
            from: usize::MAX,
        }
    }

    /// Whether `group` may start beside `handling` groups in flight.
    fn allows<T>(&self, group: &[Job<Req, T>], handling: usize) -> bool {
        handling == 0
            || (handling < self.in_flight
                && group.iter().map(|(req, _)| (self.size)(req)).sum::<usize>() >= self.from)
    }
}

/// What handling a group gives: one answer per request, in order, and what must happen once
/// the group's turn to finish comes, before its answers go out (long polls are woken in the
/// order the groups were formed).
pub struct Handled<T> {
    pub answers: Vec<Result<T>>,
    pub then: Option<Box<dyn FnOnce() + Send>>,
}

impl<T> From<Vec<Result<T>>> for Handled<T> {
    fn from(answers: Vec<Result<T>>) -> Self {
        Handled {
            answers,
            then: None,
        }
    }
}

/// A group being handled: its requests' reply channels, then its answers and how long it took.
type InFlight<T> = Pin<Box<dyn Future<Output = Finished<T>> + Send>>;

struct Finished<T> {
    replies: Vec<oneshot::Sender<Result<T>>>,
    handled: Handled<T>,
    took: Duration,
}

impl<T> Finished<T> {
    /// Runs the group's last step and answers its requests.
    fn deliver(self, name: &'static str) {
        if let Some(then) = self.handled.then
            && let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(then))
        {
            tracing::error!("a group's last step panicked: {}", panic_text(&panic));
        }
        crate::metrics::group_commit(name, self.replies.len(), self.took);
        for (reply, answer) in self.replies.into_iter().zip(self.handled.answers) {
            // The requester may have gone (client disconnected); the work is done.
            let _ = reply.send(answer);
        }
    }
}

impl<Req: Send + 'static, T: Send + 'static> Batcher<Req, T> {
    /// Starts the task on `tasks`. `handle` gets a group within `limits` and must answer each
    /// request, in order (one answer per request); it is called in the order groups are
    /// formed, and what it does before its future first waits is done in that order too.
    /// Once `stop` is cancelled the batcher takes no new request, handles the ones already
    /// queued, and ends.
    pub fn spawn<F, Fut, Out>(
        limits: GroupLimits<Req>,
        tasks: &TaskTracker,
        stop: CancellationToken,
        mut handle: F,
    ) -> Self
    where
        F: FnMut(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Out> + Send + 'static,
        Out: Into<Handled<T>>,
    {
        let (queue, mut jobs) = mpsc::channel::<Job<Req, T>>(QUEUE_CAPACITY);
        tasks.spawn(async move {
            // The group being formed, its weight, and a request that did not fit in it (it
            // opens the next one).
            let mut forming: Vec<Job<Req, T>> = Vec::new();
            let mut weight = 0;
            let mut carried: Option<Job<Req, T>> = None;
            let (mut stopping, mut closed) = (false, false);
            let mut handling: FuturesOrdered<InFlight<T>> = FuturesOrdered::new();
            loop {
                while forming.len() < limits.requests {
                    let job = match carried.take() {
                        Some(job) => job,
                        None => match jobs.try_recv() {
                            Ok(job) => job,
                            Err(_) => break,
                        },
                    };
                    let more = (limits.weigh)(&job.0);
                    if !forming.is_empty() && weight + more > limits.weight {
                        carried = Some(job);
                        break;
                    }
                    weight += more;
                    forming.push(job);
                }
                if !forming.is_empty() && limits.overlap.allows(&forming, handling.len()) {
                    weight = 0;
                    let group = std::mem::take(&mut forming);
                    handling.push_back(start(group, &mut handle));
                    continue;
                }
                if closed && forming.is_empty() && handling.is_empty() {
                    return;
                }
                let full = forming.len() >= limits.requests || carried.is_some();
                tokio::select! {
                    biased;
                    Some(finished) = handling.next(), if !handling.is_empty() => {
                        finished.deliver(limits.name);
                    }
                    job = jobs.recv(), if !full && !closed => match job {
                        Some(job) => carried = Some(job),
                        None => closed = true,
                    },
                    _ = stop.cancelled(), if !stopping => {
                        // Queued requests are still received, then `recv` ends the loop.
                        jobs.close();
                        stopping = true;
                    }
                }
            }
        });
        Batcher { queue }
    }

    /// Queues `request` and waits for its group to be handled.
    pub async fn submit(&self, request: Req) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((request, reply))
            .await
            .map_err(|_| StoreError::ShuttingDown)?;
        answer.await.unwrap_or(Err(StoreError::ShuttingDown))
    }
}

/// Starts handling `group`: calls `handle` now (in the order groups are formed), and answers
/// the group once its future is done.
fn start<Req, T, F, Fut, Out>(group: Vec<Job<Req, T>>, handle: &mut F) -> InFlight<T>
where
    T: Send + 'static,
    F: FnMut(Vec<Req>) -> Fut,
    Fut: Future<Output = Out> + Send + 'static,
    Out: Into<Handled<T>>,
{
    let (requests, replies): (Vec<Req>, Vec<_>) = group.into_iter().unzip();
    let n = replies.len();
    let began = std::time::Instant::now();
    // A bug that panics in one group must not stop every later one: that group's requests
    // fail as internal errors, the task goes on. `handle` may panic before its future starts.
    let work = std::panic::catch_unwind(AssertUnwindSafe(|| handle(requests)))
        .map(|future| AssertUnwindSafe(future).catch_unwind());
    Box::pin(async move {
        let outcome = match work {
            Ok(future) => future.await,
            Err(panic) => Err(panic),
        };
        let handled = match outcome.map(Into::into) {
            Ok(handled) if handled.answers.len() == n => handled,
            Ok(handled) => failed(
                n,
                format!("a group of {n} got {} answers", handled.answers.len()),
            )
            .into(),
            Err(panic) => failed(
                n,
                format!("a group commit panicked: {}", panic_text(&panic)),
            )
            .into(),
        };
        Finished {
            replies,
            handled,
            took: began.elapsed(),
        }
    })
}

/// The same internal error for every request of a group, logged once.
fn failed<T>(n: usize, why: String) -> Vec<Result<T>> {
    tracing::error!("{why}; its {n} requests failed");
    (0..n)
        .map(|_| Err(StoreError::Internal(why.clone())))
        .collect()
}

/// What a panic said, when it said it with a string.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn spawn<Req: Send + 'static, T: Send + 'static, Fut, Out>(
        limits: GroupLimits<Req>,
        handle: impl FnMut(Vec<Req>) -> Fut + Send + 'static,
    ) -> (Arc<Batcher<Req, T>>, TaskTracker, CancellationToken)
    where
        Fut: Future<Output = Out> + Send + 'static,
        Out: Into<Handled<T>>,
    {
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let batcher = Batcher::spawn(limits, &tasks, stop.clone(), handle);
        (Arc::new(batcher), tasks, stop)
    }

    #[tokio::test]
    async fn concurrent_requests_share_groups_and_each_gets_its_own_answer() {
        let groups = Arc::new(AtomicUsize::new(0));
        let counter = groups.clone();
        let limits = GroupLimits {
            name: "test",
            requests: 64,
            weight: usize::MAX,
            weigh: |_: &u32| 1,
            overlap: Overlap::none(),
        };
        let (batcher, _, _) = spawn(limits, move |requests: Vec<u32>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                requests.into_iter().map(|r| Ok(r * 2)).collect::<Vec<_>>()
            }
        });
        let tasks: Vec<_> = (0..100u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.submit(i).await) })
            })
            .collect();
        for task in tasks {
            let (i, answer) = task.await.unwrap();
            assert_eq!(answer, Ok(i * 2));
        }
        let groups = groups.load(Ordering::SeqCst);
        assert!(groups < 100, "100 concurrent requests took {groups} groups");
    }

    #[tokio::test]
    async fn a_group_stops_at_its_weight_and_the_rest_waits_for_the_next() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let limits = GroupLimits {
            name: "test",
            requests: 100,
            weight: 10,
            weigh: |r: &usize| *r,
            overlap: Overlap::none(),
        };
        let (batcher, _, _) = spawn(limits, move |requests: Vec<usize>| {
            seen.lock().unwrap().push(requests.iter().sum::<usize>());
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                requests.into_iter().map(Ok).collect::<Vec<_>>()
            }
        });
        let tasks: Vec<_> = [4usize, 4, 4, 4, 25, 1]
            .into_iter()
            .map(|w| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(w).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_ok());
        }
        let sizes = sizes.lock().unwrap();
        // Each group weighs at most 10, except a single request that is heavier on its own.
        assert!(sizes.iter().all(|&w| w <= 10 || w == 25), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 42);
    }

    #[tokio::test]
    async fn groups_in_flight_at_once_finish_in_the_order_they_were_formed() {
        let limits = GroupLimits {
            name: "test",
            requests: 1,
            weight: usize::MAX,
            weigh: |_: &u64| 1,
            overlap: Overlap {
                in_flight: 2,
                size: |_| 1,
                from: 1,
            },
        };
        let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (batcher, _, _) = spawn(limits, {
            let (finished, running, most) = (finished.clone(), running.clone(), most.clone());
            move |requests: Vec<u64>| {
                let (finished, running, most) = (finished.clone(), running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Earlier groups take longer: they would finish last if nothing ordered them.
                    tokio::time::sleep(Duration::from_millis(40 - 3 * requests[0])).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    let answers = requests.iter().map(|&r| Ok(r)).collect();
                    let then: Box<dyn FnOnce() + Send> =
                        Box::new(move || finished.lock().unwrap().push(requests[0]));
                    Handled {
                        answers,
                        then: Some(then),
                    }
                }
            }
        });
        let submitted: Vec<_> = (0..10u64)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(i).await })
            })
            .collect();
        for (i, task) in submitted.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), Ok(i as u64));
        }
        let finished = finished.lock().unwrap().clone();
        let mut sorted = finished.clone();
        sorted.sort_unstable();
        assert_eq!(
            finished, sorted,
            "each group's last step in the order groups were formed"
        );
        assert_eq!(finished.len(), 10);
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "two groups at once, never more"
        );
    }

    #[tokio::test]
    async fn a_small_group_waits_and_grows_until_it_is_worth_starting_beside_another() {
        let limits = GroupLimits {
            name: "test",
            requests: 64,
            weight: usize::MAX,
            weigh: |_: &usize| 1,
            overlap: Overlap {
                in_flight: 2,
                size: |r: &usize| *r,
                from: 10,
            },
        };
        // Each group, and how many were being handled when it started (itself included).
        let groups = Arc::new(std::sync::Mutex::new(Vec::new()));
        let running = Arc::new(AtomicUsize::new(0));
        let (batcher, _, _) = spawn(limits, {
            let (groups, running) = (groups.clone(), running.clone());
            move |requests: Vec<usize>| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                groups.lock().unwrap().push((requests.clone(), now));
                let running = running.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    requests.into_iter().map(Ok).collect::<Vec<_>>()
                }
            }
        });
        let submit = |r: usize| {
            let b = batcher.clone();
            tokio::spawn(async move { b.submit(r).await })
        };
        let first = submit(1);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let small = submit(2);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(groups.lock().unwrap().len(), 1, "the small group waits");
        let large = submit(30);
        for task in [first, small, large] {
            assert!(task.await.unwrap().is_ok());
        }
        assert_eq!(*groups.lock().unwrap(), [(vec![1], 1), (vec![2, 30], 2)]);
    }

    #[tokio::test]
    async fn a_panicking_group_fails_as_internal_and_later_groups_still_run() {
        let limits = GroupLimits {
            name: "test",
            requests: 1,
            weight: usize::MAX,
            weigh: |_: &u32| 1,
            overlap: Overlap::none(),
        };
        let (batcher, _, _) = spawn(limits, |requests: Vec<u32>| async move {
            assert!(requests[0] != 13, "unlucky request");
            requests.into_iter().map(Ok).collect::<Vec<_>>()
        });
        let err = batcher.submit(13).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Internal(why) if why.contains("unlucky request")),
            "{err:?}"
        );
        assert_eq!(batcher.submit(7).await, Ok(7));
    }

    #[tokio::test]
    async fn stopping_answers_every_queued_request_then_refuses_new_ones() {
        let limits = GroupLimits {
            name: "test",
            requests: 2,
            weight: usize::MAX,
            weigh: |_: &u32| 1,
            overlap: Overlap::none(),
        };
        let (batcher, tasks, stop) = spawn(limits, |requests: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            requests.into_iter().map(Ok).collect::<Vec<_>>()
        });
        let queued: Vec<_> = (0..10u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { b.submit(i).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        for (i, task) in queued.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), Ok(i as u32));
        }
        assert_eq!(batcher.submit(99).await, Err(StoreError::ShuttingDown));
    }
}
