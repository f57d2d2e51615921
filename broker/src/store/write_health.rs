//! Whether the store can write, as its appends last found: `GET /healthz` says so.
//!
//! A full disk leaves the database readable, so a read (the health check's ping) succeeds
//! while every append fails. The append path records each group's outcome here: a failure
//! of the disk (full, or an I/O error) marks the store unwritable, and the next group that
//! commits clears the mark. Clients retry their 503s, so under load the mark clears within
//! one retry of space being freed; an idle broker keeps it until its next append.

use super::StoreError;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct WriteHealth {
    /// The disk failure of the last append group, if it failed so.
    failure: Mutex<Option<Arc<sqlx::Error>>>,
}

impl WriteHealth {
    /// Records an append group's outcome; other failures (the database down, a conflict)
    /// leave the mark as it is: they say nothing about the disk.
    pub fn record(&self, outcome: Result<(), &StoreError>) {
        let mut failure = self
            .failure
            .lock()
            .expect("never poisoned: no panics inside");
        match outcome {
            Ok(()) => {
                if failure.take().is_some() {
                    tracing::info!("the store can write again");
                }
            }
            Err(err) => {
                if let Some(cause) = err.disk_failure() {
                    if failure.is_none() {
                        tracing::error!(error = %cause, "the store cannot write (disk full or failing)");
                    }
                    *failure = Some(cause);
                }
            }
        }
    }

    /// `Err(StoreError::Unwritable)` while the last append group failed for the disk.
    pub fn check(&self) -> Result<(), StoreError> {
        match &*self
            .failure
            .lock()
            .expect("never poisoned: no panics inside")
        {
            Some(cause) => Err(StoreError::Unwritable(cause.clone())),
            None => Ok(()),
        }
    }
}
