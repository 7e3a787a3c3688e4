//! The checkpointer thread: copies the write-ahead log back into the database file, beside the
//! writer instead of in its commits.
//!
//! SQLite's default checkpoints in the connection that commits, once the log passes 1,000 pages:
//! that commit then copies the log back and syncs the database file, for milliseconds, and every
//! publish waiting for the writer waits for it too. A retry backlog's results fill the log fast
//! (several checkpoints a second), so the writer's own threshold is raised to
//! [`WRITER_CHECKPOINT_PAGES`] and this thread checkpoints after commits, at most every
//! [`CHECKPOINT_GAP`], in `PASSIVE` mode, which takes no lock the writer needs. The writer's
//! own checkpoint is left as a soft bound on the log: SQLite starts the log over only after a
//! checkpoint has copied all of it, which one running beside a busy writer rarely manages, and
//! the writer's then copies only what came since this thread's last (its fsyncs still share
//! the disk with the writer's commits).

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Shortest time between two checkpoints of this thread.
const CHECKPOINT_GAP: Duration = Duration::from_millis(20);

/// The log's size, in pages, past which the writer checkpoints in its own commit.
pub(super) const WRITER_CHECKPOINT_PAGES: u32 = 4000;

/// The writer's side: tells the checkpointer that a commit added to the log.
pub(super) struct Checkpoints {
    /// Taken at drop: the thread stops once it is gone.
    committed: Option<mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpoints {
    /// Starts the checkpointer on `path`, with a connection of its own. None if that cannot be
    /// opened: the writer then checkpoints in its commits, as SQLite does by default.
    pub fn start(path: &Path) -> Option<Self> {
        let conn = match rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the SQLite checkpointer's connection");
                return None;
            }
        };
        // Durable checkpoints whatever SQLite's build defaults to: the log is synced before it is
        // copied, and the database file after.
        let set_up = conn
            .busy_timeout(Duration::from_secs(1))
            .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"));
        if let Err(e) = set_up {
            tracing::warn!(error = %e, "cannot set up the SQLite checkpointer's connection");
            return None;
        }
        let (committed, commits) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("herald-sqlite-checkpointer".into())
            .spawn(move || run(&conn, &commits))
            .inspect_err(|e| tracing::warn!(error = %e, "cannot start the SQLite checkpointer"))
            .ok()?;
        Some(Self {
            committed: Some(committed),
            thread: Some(thread),
        })
    }

    /// After a commit: the checkpointer runs soon, unless it is already due to.
    pub fn committed(&self) {
        if let Some(committed) = &self.committed {
            let _ = committed.try_send(());
        }
    }
}

impl Drop for Checkpoints {
    /// Stops the thread and waits for it: nothing of the store may run once it is closed.
    fn drop(&mut self) {
        drop(self.committed.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Checkpoints after each signal of a commit, then waits the gap, until the writer has gone.
/// A checkpoint that could not copy the whole log (another held it, or a reader's snapshot
/// stopped it short) leaves the rest to the next commit's.
fn run(conn: &rusqlite::Connection, commits: &mpsc::Receiver<()>) {
    while commits.recv().is_ok() {
        // SQLite answers a checkpoint it could not take with a row (`busy` = 1), not an error.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "checkpointing the SQLite log failed");
        }
        std::thread::sleep(CHECKPOINT_GAP);
    }
}
