//! Blocking the way Python programs expect: the GIL is released while waiting (other Python
//! threads run), and Ctrl-C is noticed within one slice (KeyboardInterrupt is raised).

use crate::client::runtime;
use pyo3::prelude::*;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often a wait wakes to check for signals.
pub const SLICE: Duration = Duration::from_millis(50);

/// A deadline from a Python `timeout` in seconds (`None`: wait forever).
pub fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => {
            Ok(Some(Instant::now() + Duration::from_secs_f64(t)))
        }
        Some(t) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds, not {t}"
        ))),
    }
}

/// The next slice to wait, or `None` once `deadline` has passed.
pub fn next_slice(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(SLICE),
        Some(at) => {
            let left = at.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| left.min(SLICE))
        }
    }
}

/// Calls `ready` until it returns a value; between calls, waits a slice with `wait` (GIL
/// released) and checks for signals. `Ok(None)` when the deadline passes first.
pub fn wait_for<T>(
    py: Python<'_>,
    deadline: Option<Instant>,
    mut ready: impl FnMut(Python<'_>) -> PyResult<Option<T>>,
    wait: impl Fn(Duration) + Sync,
) -> PyResult<Option<T>> {
    loop {
        if let Some(value) = ready(py)? {
            return Ok(Some(value));
        }
        let Some(slice) = next_slice(deadline) else {
            return Ok(None);
        };
        py.detach(|| wait(slice));
        py.check_signals()?;
    }
}

/// Runs `future` on the client runtime and waits for it; a signal (Ctrl-C) cancels it.
pub fn run<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let slot = Arc::new((Mutex::new(None), Condvar::new()));
    let filler = slot.clone();
    let task = runtime::handle().spawn(async move {
        let output = future.await;
        *filler.0.lock().expect("slot lock") = Some(output);
        filler.1.notify_all();
    });
    let taken = wait_for(
        py,
        None,
        |_| Ok(slot.0.lock().expect("slot lock").take()),
        |slice| {
            let guard = slot.0.lock().expect("slot lock");
            let _ = slot.1.wait_timeout_while(guard, slice, |v| v.is_none());
        },
    );
    match taken {
        Ok(Some(output)) => Ok(output),
        Ok(None) => unreachable!("no deadline"),
        Err(err) => {
            task.abort();
            Err(err)
        }
    }
}
