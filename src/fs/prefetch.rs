//! Sequential prefetch for weights served by the daemon (no passthrough).

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How far ahead of a daemon-served weights read the blob is prefetched.
const PREFETCH_AHEAD: u64 = 64 << 20;
/// A prefetch thread stops when its reader has not moved for this long (a later read restarts it).
const PREFETCH_IDLE: Duration = Duration::from_millis(300);

/// Sequential prefetch for a weights handle served by the daemon (no passthrough). The
/// kernel sends readahead requests in parallel and out of order, which defeats the disk's
/// own readahead, so each request would wait for the disk. A helper thread reads the blob
/// front to back through its own open file (so the disk readahead sees one sequential
/// stream, as `dd` does) and stays up to `PREFETCH_AHEAD` ahead of the reader: the
/// requests then find the data in the page cache.
#[derive(Default)]
pub(crate) struct Prefetch {
    /// The furthest end of a read so far.
    reader: AtomicU64,
    running: std::sync::atomic::AtomicBool,
}

impl Prefetch {
    pub(super) fn reader_at(self: &Arc<Self>, file: &File, end: u64) {
        // Only a reader moving forward needs a prefetch; a read behind the furthest one
        // (random access through mmap) must not restart a stopped thread.
        if self.reader.fetch_max(end, Ordering::Relaxed) >= end || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        // A new open file description: its own readahead state, its own offset.
        let own = std::os::fd::AsRawFd::as_raw_fd(file);
        let Ok(own) = File::open(format!("/proc/self/fd/{own}")) else {
            self.running.store(false, Ordering::Release);
            return;
        };
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("prefetch".into()).spawn(move || me.run(own));
        if spawned.is_err() {
            self.running.store(false, Ordering::Release);
        }
    }

    fn run(self: Arc<Self>, file: File) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut at = self.reader.load(Ordering::Relaxed);
        // Spliced into /dev/null: the pages come through the file's own (sequential)
        // readahead into the page cache, and nothing is copied to us.
        let Ok(null) = File::options().write(true).open("/dev/null") else {
            self.running.store(false, Ordering::Release);
            return;
        };
        let mut idle_since = std::time::Instant::now();
        // Stop at the end, when the reader pauses, or when the handle is gone (only we hold it).
        while at < len && Arc::strong_count(&self) > 1 {
            let reader = self.reader.load(Ordering::Relaxed);
            at = at.max(reader);
            if at < reader + PREFETCH_AHEAD {
                let mut off = at as libc::off_t;
                // SAFETY: valid fds and a valid offset pointer.
                let n = unsafe {
                    libc::sendfile(
                        std::os::fd::AsRawFd::as_raw_fd(&null),
                        std::os::fd::AsRawFd::as_raw_fd(&file),
                        &mut off,
                        1 << 20,
                    )
                };
                if n <= 0 {
                    break;
                }
                at += n as u64;
                idle_since = std::time::Instant::now();
            } else if idle_since.elapsed() > PREFETCH_IDLE {
                break;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.running.store(false, Ordering::Release);
    }
}
