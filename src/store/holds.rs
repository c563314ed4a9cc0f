//! Keeping blobs alive for work in progress, and the lock that serialises prune and publish
//! between ollamafs processes sharing a store.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Digest, LOCK_FILE, Store};

impl Store {
    /// Serialise the decisions "is this blob still used?" + delete, and "are the blobs
    /// there?" + publish, between ollamafs processes sharing this store. Without the lock
    /// one process could prune a blob another has just referenced. (Best effort: a store
    /// where the lock file cannot be made still works, unserialised.)
    pub fn lock_writes(&self) -> Option<File> {
        let path = self.scratch.join(LOCK_FILE);
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o644).open(&path).ok()?;
        use std::os::fd::AsRawFd;
        // SAFETY: a valid fd; flock has no memory effects. Released when the file closes.
        while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return None;
            }
        }
        Some(f)
    }

    fn held_dir(&self) -> PathBuf {
        self.process_scratch().join("held")
    }

    /// Keep blob `d` alive for work in progress: a hard link under this process's scratch
    /// folder, so neither ollamafs' prune nor Ollama's start-up prune can take its data.
    /// Counted: every `hold` needs one `release`.
    pub fn hold(&self, d: &Digest) -> io::Result<()> {
        let mut held = crate::sync::lock(&self.held);
        if let Some(n) = held.get_mut(d) {
            *n += 1;
            return Ok(());
        }
        let dir = self.held_dir();
        self.mkdir_owned(&dir)?;
        let link = dir.join(d.blob_file_name());
        match fs::hard_link(self.blob_path(d), &link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        held.insert(*d, 1);
        Ok(())
    }

    /// Move blob `d` out of `blobs/` to `to` (a private file from then on) when nothing else
    /// can use it: this process holds it once, its hold is its only other name, and no
    /// manifest in `in_use` names it. For a caller holding `lock_writes`. Ok(false): untouched.
    pub fn take_blob_locked(
        &self,
        d: &Digest,
        to: &Path,
        in_use: &std::collections::HashSet<Digest>,
    ) -> io::Result<bool> {
        if in_use.contains(d) || crate::sync::lock(&self.held).get(d) != Some(&1) {
            return Ok(false);
        }
        let path = self.blob_path(d);
        if fs::metadata(&path)?.nlink() != 2 {
            return Ok(false); // another process holds it too, or the trash keeps it
        }
        fs::rename(&path, to)?;
        self.release(d);
        super::fsync_dir(&self.blobs)?;
        Ok(true)
    }

    /// Drop one `hold` of `d`; returns true when this process no longer holds it.
    pub fn release(&self, d: &Digest) -> bool {
        let mut held = crate::sync::lock(&self.held);
        match held.get_mut(d) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                held.remove(d);
                let _ = fs::remove_file(self.held_dir().join(d.blob_file_name()));
                true
            }
            None => true,
        }
    }

    pub fn is_held(&self, d: &Digest) -> bool {
        crate::sync::lock(&self.held).contains_key(d)
    }

    /// A held blob whose name vanished from `blobs/` (Ollama's start-up prune) gets it back.
    pub fn restore_blob(&self, d: &Digest) -> bool {
        let target = self.blob_path(d);
        if target.exists() || !self.is_held(d) {
            return false;
        }
        let restored = fs::hard_link(self.held_dir().join(d.blob_file_name()), &target).is_ok();
        if restored {
            log::info!("blob {d} was removed from blobs/ while held; restored");
        }
        restored
    }

    /// The file to read blob `d` from: its place in `blobs/`, or this process's hold.
    pub fn open_blob(&self, d: &Digest) -> io::Result<File> {
        match File::open(self.blob_path(d)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.is_held(d) => {
                File::open(self.held_dir().join(d.blob_file_name()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match self.outside_blob(d) {
                Some(p) => File::open(p),
                None => Err(e),
            },
            r => r,
        }
    }

    /// Blob `d` can be read from `path`, outside the store (see `Store::outside`).
    pub fn add_outside_blob(&self, d: Digest, path: PathBuf) {
        crate::sync::lock(&self.outside).insert(d, path);
    }

    pub fn outside_blob(&self, d: &Digest) -> Option<PathBuf> {
        crate::sync::lock(&self.outside).get(d).cloned()
    }

    /// A blob a model is about to use that lives outside the store comes in: hard-linked
    /// (reflinked where the disk can), after its content is checked against its name.
    /// Nothing to do when `blobs/` has it. Returns whether it came in now.
    pub fn bring_in_outside_blob(&self, d: &Digest) -> super::Result<bool> {
        if self.blob_path(d).exists() {
            return Ok(false);
        }
        let Some(path) = self.outside_blob(d) else { return Ok(false) };
        let i = self.import_file(&path, true)?;
        if i.digest != *d {
            self.prune([i.digest], &self.digests_in_use());
            return Err(super::StoreError::DigestMismatch { expected: d.prefixed(), got: i.digest.prefixed() });
        }
        log::info!("blob {d} came in from {}: {}, {} bytes written", path.display(), i.way.describe(), i.written);
        Ok(true)
    }
}
