//! Process-wide SQLite settings, made once before the first connection opens.
//!
//! A fetch copies every value of every row it reads out of SQLite (sqlx's rows own their
//! values), on the connection's own thread; the broker's async side frees them. With the
//! library's defaults that cost a drain of 200,000 messages most of its time:
//! - SQLite counts every allocation under one global mutex (`SQLITE_DEFAULT_MEMSTATUS`, on in
//!   the library sqlx bundles), on which the readers and the writer serialise. Nothing here
//!   reads those counters (`sqlite3_memory_used`): they are turned off;
//! - glibc's malloc frees a block on the arena of the thread that allocated it, under that
//!   arena's lock: SQLite's threads and the runtime's contend for it. SQLite allocates from
//!   mimalloc instead, whose frees from another thread do not lock. (Only SQLite: the broker's
//!   own allocations stay on glibc, whose peak memory under `MyProducer` was half mimalloc's.)
//!   mimalloc commits its arenas' memory as it hands it out, not all at once: otherwise the
//!   broker's resident memory after a drain grew by a third (74 → 101 MB), for no speed.
//!
//! Measured in `docs/BENCHMARKS.md` ("a drain bound by SQLite's allocation counters").

use libmimalloc_sys::{
    mi_free, mi_good_size, mi_malloc, mi_option_set, mi_option_t, mi_realloc, mi_usable_size,
};
use libsqlite3_sys as ffi;
use std::ffi::{c_int, c_void};
use std::sync::Once;

static CONFIGURED: Once = Once::new();

/// `mi_option_arena_eager_commit` of `mimalloc.h` (v2 and v3; the crate has no name for it):
/// 2, its default, commits a whole arena when it is made, on Linux.
const ARENA_EAGER_COMMIT: mi_option_t = 4;

/// Applies the settings; every call after the first does nothing. It must run before this
/// process opens any SQLite connection, and never while another thread uses SQLite:
/// `SqliteStore::open` calls it first, and so must code (tests) that opens a connection of its
/// own. Once SQLite has initialised it refuses the settings and its defaults stay (slower, not
/// less correct).
pub fn configure_once() {
    CONFIGURED.call_once(|| {
        let mimalloc = ffi::sqlite3_mem_methods {
            xMalloc: Some(sqlite_malloc),
            xFree: Some(sqlite_free),
            xRealloc: Some(sqlite_realloc),
            xSize: Some(sqlite_size),
            xRoundup: Some(sqlite_roundup),
            xInit: Some(sqlite_init),
            xShutdown: Some(sqlite_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: an option that mimalloc reads when it makes an arena (SQLite's first
        // allocation comes later).
        unsafe { mi_option_set(ARENA_EAGER_COMMIT, 0) };
        // SAFETY: `sqlite3_config` must not run concurrently with any other SQLite call: the
        // first SQLite call of this process comes after it (`Once` makes concurrent openers
        // wait). SQLITE_CONFIG_MEMSTATUS takes one `int`; SQLITE_CONFIG_MALLOC a pointer to
        // methods that SQLite copies, each of which keeps SQLite's contract (below).
        let applied = unsafe {
            [
                ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int),
                ffi::sqlite3_config(
                    ffi::SQLITE_CONFIG_MALLOC,
                    &mimalloc as *const ffi::sqlite3_mem_methods,
                ),
            ]
        };
        if applied.iter().any(|&code| code != ffi::SQLITE_OK) {
            tracing::warn!(
                ?applied,
                "SQLite was initialised before its settings: its allocations stay on the defaults"
            );
        }
    });
}

// SQLite calls these with sizes above zero and pointers it got from them; mimalloc aligns to
// 16 bytes (SQLite needs 8) and its sizes fit in an `int` since SQLite asks for no more.

unsafe extern "C" fn sqlite_malloc(size: c_int) -> *mut c_void {
    unsafe { mi_malloc(size.max(0) as usize) }
}

unsafe extern "C" fn sqlite_free(block: *mut c_void) {
    unsafe { mi_free(block) }
}

unsafe extern "C" fn sqlite_realloc(block: *mut c_void, size: c_int) -> *mut c_void {
    unsafe { mi_realloc(block, size.max(0) as usize) }
}

unsafe extern "C" fn sqlite_size(block: *mut c_void) -> c_int {
    let size = unsafe { mi_usable_size(block) };
    c_int::try_from(size).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn sqlite_roundup(size: c_int) -> c_int {
    let rounded = unsafe { mi_good_size(size.max(0) as usize) };
    c_int::try_from(rounded).unwrap_or(size)
}

unsafe extern "C" fn sqlite_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn sqlite_shutdown(_: *mut c_void) {}

#[cfg(test)]
mod tests {
    use super::*;
    use libmimalloc_sys::mi_option_get;

    #[test]
    fn sqlite_allocates_from_mimalloc_without_counting() {
        configure_once();
        // SAFETY: a block from sqlite3_malloc, sized by SQLite and mimalloc, then freed once.
        unsafe {
            assert_eq!(ffi::sqlite3_initialize(), ffi::SQLITE_OK);
            let block = ffi::sqlite3_malloc(1000);
            assert!(!block.is_null());
            // SQLite's size of the block is mimalloc's: its methods are in use.
            let size = ffi::sqlite3_msize(block);
            assert_eq!(size, mi_usable_size(block) as u64);
            assert!(size >= 1000);
            // The counters are off: the live block is not counted.
            assert_eq!(ffi::sqlite3_memory_used(), 0);
            ffi::sqlite3_free(block);
            assert_eq!(mi_option_get(ARENA_EAGER_COMMIT), 0);
        }
    }
}
