//! The writer of one open layer file: data into a temp file, hashed on the way (on a
//! thread for large files), a clone of an existing blob when the data is one
//! (copy_file_range, or a stream compared byte for byte), named at commit.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use super::{FsError, Result};
use crate::name::Name;
use crate::store::prefix_hash::PrefixHasher;
use crate::store::{Digest, Store, hash_file};

/// How much of a new file's first write identifies a weights blob it may be a copy of.
pub(super) const PREFIX_LEN: usize = 64 << 10;

/// Largest manifest.json / config.json accepted (they are small JSON files).
pub(super) const MAX_JSON: u64 = 16 << 20;

/// A manifest.json write whose blobs have not all arrived yet.
#[derive(Debug)]
pub(crate) struct WaitingManifest {
    pub(crate) bytes: Vec<u8>,
    pub(super) missing: HashSet<Digest>,
    /// When it was written (its mtime while a draft shows it).
    pub(super) at: std::time::SystemTime,
}

/// The content so far is exactly the first `covered` bytes of an existing blob, and no
/// byte has been copied: what `cp` through copy_file_range produces.
#[derive(Clone, Copy, Debug)]
pub(super) struct CloneOf {
    digest: Digest,
    covered: u64,
    source_len: u64,
}

/// SHA-256 of a file written in order. Small files are hashed inline; past
/// `HASH_THREAD_AFTER` bytes a `PrefixHasher` follows the written prefix in the temp file,
/// so a large import's write requests return as soon as the data is in the temp file.
pub(super) enum SeqHash {
    Inline(Sha256, u64),
    Follow(PrefixHasher),
    /// No thread could be started, or it failed: the commit hashes the temp file.
    Broken,
}

pub(super) const HASH_THREAD_AFTER: u64 = 4 << 20;
/// How much written data to collect before starting its writeback.
pub(super) const WRITEBACK_CHUNK: u64 = 8 << 20;

impl SeqHash {
    pub(super) fn new() -> SeqHash {
        SeqHash::Inline(Sha256::new(), 0)
    }

    /// `data` was just written at the end of the hashed prefix of `file`.
    pub(super) fn update(&mut self, data: &[u8], file: &File) {
        match self {
            SeqHash::Inline(h, n) => {
                h.update(data);
                *n += data.len() as u64;
                if *n >= HASH_THREAD_AFTER {
                    let (h, n) = (std::mem::take(h), *n);
                    *self = match file.try_clone().and_then(|f| PrefixHasher::start(h, n, f)) {
                        Ok(f) => SeqHash::Follow(f),
                        Err(_) => SeqHash::Broken,
                    };
                }
            }
            SeqHash::Follow(f) => f.advance(f.written() + data.len() as u64),
            SeqHash::Broken => {}
        }
    }

    /// The digest, or None when the hashing thread failed.
    pub(super) fn finish(self) -> Option<Digest> {
        match self {
            SeqHash::Inline(h, _) => Some(Digest(h.finalize().into())),
            SeqHash::Follow(f) => f.finish().ok(),
            SeqHash::Broken => None,
        }
    }
}

/// Starts writeback of a temp file up to where data has arrived, from its own thread
/// (`sync_file_range` can block while the disk is busy; a write request must not).
pub(super) struct Writeback {
    dirty: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    /// Joined on drop: the thread holds a descriptor of the temp file, whose space must be
    /// given back as soon as the file is discarded.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writeback {
    fn start(file: File) -> Option<Writeback> {
        let (dirty, done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (d, stop) = (dirty.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name("writeback".into())
            .spawn(move || {
                use std::os::fd::AsRawFd;
                let mut started = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let end = d.load(Ordering::Acquire);
                    if end > started {
                        // SAFETY: a valid fd; SYNC_FILE_RANGE_WRITE only starts I/O. Errors surface at fsync.
                        unsafe {
                            libc::sync_file_range(
                                file.as_raw_fd(),
                                started as i64,
                                (end - started) as i64,
                                libc::SYNC_FILE_RANGE_WRITE,
                            )
                        };
                        started = end;
                    } else {
                        std::thread::park_timeout(std::time::Duration::from_millis(20));
                    }
                }
            })
            .ok()?;
        Some(Writeback { dirty, done, thread: Some(thread) })
    }

    fn dirty_to(&self, end: u64) {
        self.dirty.fetch_max(end, Ordering::Release);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// An open, writable layer file. Data goes to a temp file in the store's scratch folder,
/// hashed on the way when writes are sequential; the commit at close names the blob.
pub struct Writer {
    pub(crate) ino: u64,
    pub(super) model: Name,
    pub(super) file: String,
    /// Made by create (not yet in the manifest): an unlink before close cancels it.
    pub(super) created: bool,
    pub(super) temp: Option<(File, PathBuf)>,
    pub(crate) len: u64,
    pub(super) seq: Option<SeqHash>,
    pub(super) hashed: u64,
    /// Up to where writeback was started (see `WRITEBACK_CHUNK`).
    pub(super) written_back: u64,
    /// The thread that starts writeback of the temp file as data arrives (large files).
    writeback: Option<Writeback>,
    pub(super) clone: Option<CloneOf>,
    /// The cloned blob, open while writes are compared with it.
    pub(super) source: Option<File>,
    pub(crate) dirty: bool,
    /// A write failed (ENOSPC, EIO): the content is incomplete and is never committed.
    pub(super) failed: Option<i32>,
    /// Data arrived through this handle (write, truncate, clone). A close before any
    /// (the shell's `dup2` + close of `>`) commits nothing; the last close does.
    pub(super) touched: bool,
    /// A copy tool's temp file (rsync's `.model.gguf.XXXXXX`): its content becomes a blob
    /// at close, and a layer when it is renamed onto a layer name (`State::staged`).
    pub(super) staged: bool,
    /// Weights opened without O_TRUNC: nothing may be written until truncated to 0.
    pub(super) sealed: bool,
    /// Opened through a weights inode that other models share: its growing length is not
    /// the shared inode's (see `Fs::writer_len`).
    pub(crate) replaces_shared: bool,
}

impl Writer {
    pub(super) fn empty(ino: u64, model: Name, file: String, created: bool) -> Writer {
        Writer {
            ino,
            model,
            file,
            created,
            temp: None,
            len: 0,
            seq: Some(SeqHash::new()),
            hashed: 0,
            written_back: 0,
            writeback: None,
            clone: None,
            source: None,
            dirty: true,
            failed: None,
            touched: false,
            staged: false,
            sealed: false,
            replaces_shared: false,
        }
    }

    pub(super) fn of_blob(ino: u64, model: Name, file: String, digest: Digest, len: u64) -> Writer {
        Writer {
            ino,
            model,
            file,
            created: false,
            temp: None,
            len,
            seq: None,
            hashed: 0,
            written_back: 0,
            writeback: None,
            clone: Some(CloneOf { digest, covered: len, source_len: len }),
            source: None,
            dirty: false,
            failed: None,
            touched: false,
            staged: false,
            sealed: false,
            replaces_shared: false,
        }
    }

    pub(super) fn temp(&mut self, store: &Store) -> io::Result<&File> {
        let temp = match self.temp.take() {
            Some(t) => t,
            None => store.temp_file()?,
        };
        Ok(&self.temp.insert(temp).0)
    }

    /// Turn a clone into real bytes before a write that does not continue it. The matched
    /// prefix is copied from the blob inside the kernel (`copy_file_range`), not re-sent.
    pub(super) fn materialize(&mut self, store: &Store) -> io::Result<()> {
        let Some(c) = self.clone.take() else {
            return Ok(());
        };
        self.source = None;
        let temp = self.temp(store)?.try_clone()?;
        let src = store.open_blob(&c.digest)?;
        use std::os::fd::AsRawFd;
        let (mut off_in, mut off_out): (i64, i64) = (0, 0);
        while (off_in as u64) < c.covered {
            let want = (c.covered - off_in as u64) as usize;
            // SAFETY: valid fds and offset pointers that live across the call.
            let n =
                unsafe { libc::copy_file_range(src.as_raw_fd(), &mut off_in, temp.as_raw_fd(), &mut off_out, want, 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
        }
        self.seq = None;
        Ok(())
    }

    /// Compare a write with the blob this content has matched so far: when it continues
    /// the blob byte for byte, nothing is written (a streamed copy of data the store has).
    pub(super) fn continues_clone(&mut self, store: &Store, offset: u64, data: &[u8]) -> io::Result<bool> {
        let Some(c) = self.clone else { return Ok(false) };
        let end = offset + data.len() as u64;
        if self.temp.is_some() || offset != c.covered || c.covered != self.len || end > c.source_len {
            return Ok(false);
        }
        if self.source.is_none() {
            self.source = Some(store.open_blob(&c.digest)?);
        }
        let Some(src) = &self.source else { return Ok(false) };
        let mut buf = vec![0u8; data.len()];
        let mut got = 0;
        while got < buf.len() {
            match src.read_at(&mut buf[got..], offset + got as u64)? {
                0 => return Ok(false),
                n => got += n,
            }
        }
        if buf != data {
            return Ok(false);
        }
        if let Some(c) = self.clone.as_mut() {
            c.covered = end;
        }
        self.len = end;
        self.dirty = true;
        self.touched = true;
        Ok(true)
    }

    /// Nothing arrived yet: the content may turn out to be blob `digest`; compare instead
    /// of storing while it does (`continues_clone`).
    pub(super) fn expect_blob(&mut self, digest: Digest, size: u64) {
        if self.len == 0 && self.temp.is_none() && self.clone.is_none() {
            self.clone = Some(CloneOf { digest, covered: 0, source_len: size });
        }
    }

    pub(super) fn is_untouched(&self) -> bool {
        self.len == 0 && self.temp.is_none() && self.clone.is_none() && self.failed.is_none()
    }

    pub(super) fn write(&mut self, store: &Store, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.continues_clone(store, offset, data)? {
            return Ok(());
        }
        self.materialize(store)?;
        // Start writing back what has arrived while the rest is still coming: the commit
        // must fsync anyway, and this way the disk works during the copy, not after it.
        // A thread of its own asks for it, so a busy disk never stalls a write request.
        let end = offset + data.len() as u64;
        let chunk_done = end >= self.written_back + WRITEBACK_CHUNK;
        let first = chunk_done && self.writeback.is_none();
        let temp = self.temp(store)?;
        temp.write_all_at(data, offset)?;
        let clone = first.then(|| temp.try_clone());
        if chunk_done {
            self.written_back = end;
            if let Some(Ok(f)) = clone {
                self.writeback = Writeback::start(f);
            }
            if let Some(wb) = &self.writeback {
                wb.dirty_to(end);
            }
        }
        match (&mut self.seq, &self.temp) {
            (Some(h), Some((file, _))) if offset == self.hashed && self.hashed == self.len => {
                h.update(data, file);
                self.hashed += data.len() as u64;
            }
            _ => self.seq = None, // out of order: hash the file at commit instead
        }
        self.len = self.len.max(offset + data.len() as u64);
        self.dirty = true;
        self.touched = true;
        Ok(())
    }

    pub(super) fn truncate(&mut self, store: &Store, size: u64) -> io::Result<()> {
        if size == self.len {
            return Ok(());
        }
        if self.sealed {
            if size != 0 {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            self.sealed = false; // truncated to nothing: a replacement starts
        }
        if size == 0 {
            if let Some((_, p)) = self.temp.take() {
                let _ = std::fs::remove_file(p);
            }
            self.clone = None;
            self.seq = Some(SeqHash::new());
            self.hashed = 0;
            self.written_back = 0;
        } else {
            self.materialize(store)?;
            self.temp(store)?.set_len(size)?;
            if size != self.hashed {
                self.seq = None;
            }
        }
        self.len = size;
        self.dirty = true;
        self.touched = true;
        Ok(())
    }

    /// Continue or start a no-copy clone of `digest`. None means "copy for real".
    pub(super) fn clone_range(
        &mut self,
        digest: Digest,
        source_len: u64,
        off_in: u64,
        off_out: u64,
        len: u64,
    ) -> Option<u64> {
        let fresh = self.len == 0 && self.temp.is_none() && self.clone.is_none();
        if fresh && off_in == 0 && off_out == 0 {
            self.clone = Some(CloneOf { digest, covered: 0, source_len });
            self.seq = None;
        }
        let c = self.clone.as_mut()?;
        if c.digest != digest || c.covered != off_in || off_in != off_out || c.covered != self.len {
            return None;
        }
        let n = len.min(c.source_len - c.covered);
        c.covered += n;
        self.len = c.covered;
        self.dirty = true;
        self.touched = true;
        Some(n)
    }

    pub(crate) fn read(&self, store: &Store, offset: u64, size: u32) -> Result<Vec<u8>> {
        if offset >= self.len {
            return Ok(Vec::new());
        }
        let size = (size as u64).min(self.len - offset) as u32;
        if let Some(c) = &self.clone {
            let f = store.open_blob(&c.digest)?;
            return super::read::pread(&f, offset, size);
        }
        match &self.temp {
            Some((f, _)) => super::read::pread(f, offset, size),
            None => Ok(vec![0; size as usize]),
        }
    }

    pub(super) fn read_all(&self, store: &Store) -> Result<Vec<u8>> {
        if self.len > MAX_JSON {
            return Err(FsError::new(libc::EFBIG, format!("{} larger than {MAX_JSON} bytes", self.file)));
        }
        self.read(store, 0, self.len as u32)
    }

    /// Name the content: an existing blob (clone, or same bytes) or a new one. A blob
    /// that went through `blobs/` now is held (the caller releases it once a manifest or
    /// the mount's work names it); the third value says so.
    pub(super) fn finish(&mut self, store: &Store) -> Result<(Digest, u64, bool)> {
        if let Some(c) = self.clone
            && c.covered == c.source_len
        {
            self.dirty = false;
            return Ok((c.digest, c.source_len, false));
        }
        self.materialize(store)?;
        self.writeback = None; // the commit's fsync writes the rest
        let (digest, len) = match self.temp.take() {
            None => store.ingest_bytes_held(b"")?,
            Some((file, path)) => {
                file.set_len(self.len)?;
                let digest = match self.seq.take().and_then(SeqHash::finish) {
                    Some(d) if self.hashed == self.len => d,
                    _ => hash_file(&path)?.0,
                };
                if let Err(e) = store.adopt_blob_held(&path, &file, &digest, self.len) {
                    let _ = std::fs::remove_file(&path);
                    return Err(e.into());
                }
                (digest, self.len)
            }
        };
        self.clone = Some(CloneOf { digest, covered: len, source_len: len });
        self.seq = None;
        self.dirty = false;
        Ok((digest, len, true))
    }

    pub(super) fn discard(&mut self) {
        self.writeback = None;
        self.seq = None; // its thread holds the temp file open
        if let Some((_, p)) = self.temp.take() {
            let _ = std::fs::remove_file(p);
        }
        self.dirty = false;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.discard();
    }
}
