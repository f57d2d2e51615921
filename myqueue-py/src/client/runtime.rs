//! The one tokio runtime that every producer and consumer of a process shares.
//!
//! Fork safety: a forked child inherits the runtime's memory but not its threads, so using it
//! would hang. The runtime is tagged with the process id; in a child a new one is built (the
//! parent's is leaked, never touched), and producers and consumers rebuild their own state
//! the same way (see `Forkable`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::runtime::{Builder, Handle};

/// This process's id as last looked up; 0: look it up again (a forked child clears it).
static PROCESS_ID: AtomicU32 = AtomicU32::new(0);

/// This process's id. `std::process::id()` is a system call every time (glibc no longer
/// caches it), and `Forkable::get` runs for every message handed out or sent: on a VM the
/// call was about a quarter of a consumer's CPU. So the id is kept, and forgotten by a
/// `pthread_atfork` handler in every forked child, registered before the first id is kept.
pub fn process_id() -> u32 {
    static KEEPS: OnceLock<bool> = OnceLock::new();
    if !*KEEPS.get_or_init(forget_in_forked_children) {
        return std::process::id();
    }
    match PROCESS_ID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PROCESS_ID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// Registers the child handler; false if it could not be (the id is then looked up each time).
#[cfg(unix)]
fn forget_in_forked_children() -> bool {
    extern "C" fn forget_process_id() {
        PROCESS_ID.store(0, Ordering::Relaxed);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::pthread_atfork(None, None, Some(forget_process_id)) == 0 }
}

/// Without `fork`, a process keeps its id.
#[cfg(not(unix))]
fn forget_in_forked_children() -> bool {
    true
}

static RUNTIME: Mutex<Option<(u32, Handle)>> = Mutex::new(None);

/// Worker threads: the client's work is I/O and JSON, and the process has Python to run.
const WORKER_THREADS: usize = 2;

/// The runtime of this process, started on first use.
pub fn handle() -> Handle {
    let pid = process_id();
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
            slot: Mutex::new((process_id(), value)),
        }
    }

    /// The value for this process; in a forked child, `rebuild` makes a new one from the
    /// parent's (which must not be used, only read for its configuration).
    pub fn get(&self, rebuild: impl FnOnce(&T) -> Arc<T>) -> Arc<T> {
        let pid = process_id();
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
        (slot.0 == process_id()).then(|| slot.1.clone())
    }
}
