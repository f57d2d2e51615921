//! One broker per SQLite data directory: an advisory lock on `myqueue.lock` inside it.
//!
//! Two brokers writing one SQLite file would each keep their own idea of topics' ends and
//! producers' sequences in memory (the catalog), and so could hand out the same offsets. The
//! lock is the operating system's (`flock`, through `std::fs::File::try_lock`): it goes away
//! with the process however it ends, `kill -9` included, so a crash never leaves a stale lock
//! behind. The file also holds the PID of the broker that has it, for the refusal's message;
//! the file itself stays (an empty or old file is no lock).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file inside `--data-dir`.
pub const LOCK_FILE: &str = "myqueue.lock";

/// The held lock: released when dropped, or when the process ends.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it; its PID as it wrote it (`None` if it has not written it yet).
    #[error("{} is in use by another myqueue-broker ({})", dir.display(), describe_pid(*pid))]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("cannot use the lock file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn describe_pid(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("PID {pid}"),
        None => "PID not written yet".to_owned(),
    }
}

impl DirLock {
    /// Takes the lock of `dir` (which exists) without waiting, and writes this process's PID
    /// into it.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Not truncated on open: the holder's PID must stay readable for the refusal.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    pid: read_pid(&mut file),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts
        // exactly as a second broker would.
        match DirLock::acquire(dir.path()) {
            Err(LockError::Held { dir: named, pid }) => {
                assert_eq!(named, dir.path());
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(held);
        DirLock::acquire(dir.path()).expect("free again once the holder let go");
    }
}
