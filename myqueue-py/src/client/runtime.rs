//! The one tokio runtime that every producer and consumer of a process shares.
//!
//! Fork safety: a forked child inherits the runtime's memory but not its threads, so using it
//! would hang. The runtime is tagged with the process id; in a child a new one is built (the
//! parent's is leaked, never touched), and producers and consumers rebuild their own state
//! the same way (see `Forkable`).

use std::sync::{Arc, Mutex};
use tokio::runtime::{Builder, Handle};

static RUNTIME: Mutex<Option<(u32, Handle)>> = Mutex::new(None);

/// Worker threads: the client's work is I/O and JSON, and the process has Python to run.
const WORKER_THREADS: usize = 2;

/// The runtime of this process, started on first use.
pub fn handle() -> Handle {
    let pid = std::process::id();
    let mut slot = RUNTIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((owner, handle)) = slot.as_ref()
        && *owner == pid
    {
        return handle.clone();
    }
    let runtime = Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("myqueue-io")
        .enable_all()
        .build()
        .expect("cannot start the myqueue I/O runtime");
    let handle = runtime.handle().clone();
    // The runtime lives as long as the process: dropping it would block on its tasks.
    std::mem::forget(runtime);
    if let Some(parent) = slot.take() {
        // The parent's runtime has no threads in this process; leave it alone.
        std::mem::forget(parent);
    }
    *slot = Some((pid, handle.clone()));
    handle
}

/// A value built for one process, built again in a forked child instead of being used there.
pub struct Forkable<T> {
    slot: Mutex<(u32, Arc<T>)>,
}

impl<T> Forkable<T> {
    pub fn new(value: Arc<T>) -> Self {
        Forkable {
            slot: Mutex::new((std::process::id(), value)),
        }
    }

    /// The value for this process; in a forked child, `rebuild` makes a new one from the
    /// parent's (which must not be used, only read for its configuration).
    pub fn get(&self, rebuild: impl FnOnce(&T) -> Arc<T>) -> Arc<T> {
        let pid = std::process::id();
        let mut slot = self
            .slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.0 != pid {
            let fresh = rebuild(&slot.1);
            let parent = std::mem::replace(&mut *slot, (pid, fresh));
            // Dropping the parent's state could touch locks held by threads that do not
            // exist here.
            std::mem::forget(parent);
        }
        slot.1.clone()
    }

    /// The value if it was built in this process (not inherited through a fork).
    pub fn current(&self) -> Option<Arc<T>> {
        let slot = self
            .slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (slot.0 == std::process::id()).then(|| slot.1.clone())
    }
}
