//! SHA-256 of a file while it is being written: a thread follows the written prefix and
//! reads it back (from the page cache), so the writer never waits for the hash and hands
//! it no copy of its data. Used by imports through the mount and by registry pulls.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use super::Digest;

pub struct PrefixHasher {
    written: Arc<AtomicU64>,
    /// The writer is done: hash up to `written`, then stop.
    done: Arc<AtomicBool>,
    /// Stop now (the content is discarded).
    abort: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<Sha256>>>,
}

impl PrefixHasher {
    /// Hash `file` from byte `from` on, continuing `h` (the first `from` bytes, already
    /// hashed by the caller).
    pub fn start(mut h: Sha256, from: u64, file: File) -> io::Result<PrefixHasher> {
        let (written, done, abort) =
            (Arc::new(AtomicU64::new(from)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (w, d, x) = (written.clone(), done.clone(), abort.clone());
        let thread = std::thread::Builder::new().name("hash".into()).spawn(move || -> io::Result<Sha256> {
            let mut buf = vec![0u8; 1 << 20];
            let mut at = from;
            loop {
                if x.load(Ordering::Acquire) {
                    return Err(io::Error::other("discarded"));
                }
                // `done` before `written`: once the writer says done, `written` is final.
                let finished = d.load(Ordering::Acquire);
                let end = w.load(Ordering::Acquire);
                if at < end {
                    let n = ((end - at) as usize).min(buf.len());
                    file.read_exact_at(&mut buf[..n], at)?;
                    h.update(&buf[..n]);
                    at += n as u64;
                } else if finished {
                    return Ok(h);
                } else {
                    std::thread::park_timeout(std::time::Duration::from_millis(5));
                }
            }
        })?;
        Ok(PrefixHasher { written, done, abort, thread: Some(thread) })
    }

    /// The file is whole up to `end` (never moves back).
    pub fn advance(&self, end: u64) {
        self.written.fetch_max(end, Ordering::AcqRel);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// How far the file is known to be whole.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// The digest of the first `written()` bytes, once the thread has read them.
    pub fn finish(mut self) -> io::Result<Digest> {
        self.done.store(true, Ordering::Release);
        let t = self.thread.take().ok_or_else(|| io::Error::other("no hashing thread"))?;
        t.thread().unpark();
        let h = t.join().map_err(|_| io::Error::other("the hashing thread panicked"))??;
        Ok(Digest(h.finalize().into()))
    }
}

impl Drop for PrefixHasher {
    fn drop(&mut self) {
        // Joined: the thread holds a descriptor of the file, whose space must be given back
        // as soon as the file is discarded.
        if let Some(t) = self.thread.take() {
            self.abort.store(true, Ordering::Release);
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn follows_a_growing_file_and_continues_a_given_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut f = File::create(&path).unwrap();
        // The first 1000 bytes are hashed by the caller; the rest arrives in pieces.
        let mut h = Sha256::new();
        h.update(&data[..1000]);
        f.write_all(&data[..1000]).unwrap();
        let hasher = PrefixHasher::start(h, 1000, File::open(&path).unwrap()).unwrap();
        for chunk in data[1000..].chunks(777_777) {
            f.write_all(chunk).unwrap();
            hasher.advance(hasher.written() + chunk.len() as u64);
        }
        assert_eq!(hasher.finish().unwrap(), Digest::of_bytes(&data));
    }
}
