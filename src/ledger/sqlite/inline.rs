//! Lookups on the caller's thread. A trip to the ledger thread and back costs two wake-ups,
//! more than the lookup itself (a few index pages, in memory), and a lookup sits on every
//! message's path. So each thread that asks keeps a read connection of its own to the file
//! (WAL mode: readers never wait for the writer) and adds what the ledger thread has not
//! committed yet ([`Mem`]), which no other connection can see.
//!
//! Never waits: the reader's `busy_timeout` is zero, so a file another process holds in a
//! way that blocks readers gives `None` at once, and the caller asks the ledger thread,
//! which waits at most the ledger timeout.
//!
//! Must not: write, or keep a read transaction open between lookups (that would hold back
//! the WAL checkpoints).

use std::cell::RefCell;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{Found, Query, Shared, read_lookup};
use crate::ledger::Entry;

thread_local! {
    /// This thread's reader: the store it belongs to and the connection.
    static READER: RefCell<Option<(u64, Connection)>> = const { RefCell::new(None) };
}

/// The query's answer from memory and file, or `None` when the file cannot be read now.
pub(super) fn lookup(store: u64, path: &Path, shared: &Shared, q: &Query) -> Option<Found> {
    // Memory first: an entry leaves it only after its commit, so whatever is taken from
    // memory here and missed in the file below was still uncommitted when memory was read.
    let mut found = shared.mem().find(q);
    let file = READER.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        if slot.as_ref().is_none_or(|(id, _)| *id != store) {
            *slot = Some((store, open_reader(path).ok()?));
        }
        let (_, conn) = slot.as_ref()?;
        match read_lookup(conn, q) {
            Ok(f) => Some(f),
            Err(_) => {
                // Opened again next time: the file may have been replaced or repaired.
                *slot = None;
                None
            }
        }
    })?;
    merge(&mut found.by_id, file.by_id);
    merge(&mut found.by_thread_index, file.by_thread_index);
    merge(&mut found.by_text, file.by_text);
    Some(found)
}

pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::ZERO)?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.execute_batch("PRAGMA query_only = 1; PRAGMA cache_size = -8192;")?;
    Ok(conn)
}

/// Add the file's entries to memory's, each once (an entry committed between the two reads
/// is in both), newest first.
fn merge(into: &mut Vec<Entry>, file: Vec<Entry>) {
    for e in file {
        if !into.contains(&e) {
            into.push(e);
        }
    }
    into.sort_by_key(|e| std::cmp::Reverse(e.time));
}
