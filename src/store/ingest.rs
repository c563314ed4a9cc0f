//! New blobs: temp files in the scratch folder, hashed, fsynced and renamed into `blobs/`
//! only when whole (a blob's bytes never change once it has its name).

use super::*;
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

impl Store {
    /// A new empty temp file in this process's scratch folder.
    pub fn temp_file(&self) -> io::Result<(File, PathBuf)> {
        let dir = self.process_scratch();
        self.mkdir_owned(&dir)?;
        loop {
            let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("tmp-{n}"));
            match OpenOptions::new().read(true).write(true).create_new(true).mode(0o644).open(&path) {
                Ok(f) => return Ok((f, path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                // The folder went away (removed by hand): make it again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.mkdir_owned(&dir)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Make a fully written temp file the blob `digest`. The caller computed the digest
    /// from the bytes. Returns true when the blob is new. If a blob of that name already
    /// exists with the right length it is kept (content-addressed, immutable) and the
    /// temp file is dropped; a blob of the wrong length is damaged and is replaced.
    pub fn adopt_blob(&self, temp: &Path, file: &File, digest: &Digest, len: u64) -> io::Result<bool> {
        let target = self.blob_path(digest);
        if let Ok(meta) = fs::metadata(&target)
            && meta.len() == len
        {
            let _ = fs::remove_file(temp);
            return Ok(false);
        }
        file.sync_all()?;
        fs::set_permissions(temp, fs::Permissions::from_mode(0o644))?;
        self.give_to_owner(temp);
        self.mkdir_owned(&self.blobs)?;
        fs::rename(temp, &target)?;
        fsync_dir(&self.blobs)?;
        Ok(true)
    }

    /// `adopt_blob`, and a `hold` on the result taken under the write lock, so no other
    /// ollamafs process can prune the blob (new, or found already there) before the caller's
    /// manifest names it. The caller `release`s it when done.
    pub fn adopt_blob_held(&self, temp: &Path, file: &File, digest: &Digest, len: u64) -> io::Result<bool> {
        let _lock = self.lock_writes();
        let new = self.adopt_blob(temp, file, digest, len)?;
        self.hold(digest)?;
        Ok(new)
    }

    /// `ingest_bytes` with a hold on the blob (see `adopt_blob_held`).
    pub fn ingest_bytes_held(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
        let (mut f, path) = self.temp_file()?;
        let res = (|| -> Result<(Digest, u64)> {
            f.write_all(bytes)?;
            let d = Digest::of_bytes(bytes);
            self.adopt_blob_held(&path, &f, &d, bytes.len() as u64)?;
            Ok((d, bytes.len() as u64))
        })();
        if res.is_err() {
            let _ = fs::remove_file(&path);
        }
        res
    }

    /// Stream any reader into the store as a blob.
    pub fn ingest(&self, r: impl Read) -> Result<(Digest, u64, bool)> {
        self.ingest_checked(r, None)
    }

    /// Stream a reader into the store as the blob `expected`. Bytes that hash to anything
    /// else are thrown away: nothing lands in `blobs/` and the temp file is gone.
    pub fn ingest_expecting(&self, r: impl Read, expected: &Digest) -> Result<(u64, bool)> {
        self.ingest_checked(r, Some(expected)).map(|(_, len, new)| (len, new))
    }

    fn ingest_checked(&self, mut r: impl Read, expected: Option<&Digest>) -> Result<(Digest, u64, bool)> {
        let (mut f, path) = self.temp_file()?;
        let res = (|| -> Result<(Digest, u64, bool)> {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut len = 0u64;
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                hasher.update(&buf[..n]);
                f.write_all(&buf[..n])?;
                len += n as u64;
            }
            let digest = Digest(hasher.finalize().into());
            if let Some(want) = expected
                && *want != digest
            {
                return Err(StoreError::DigestMismatch { expected: want.prefixed(), got: digest.prefixed() });
            }
            let new = self.adopt_blob(&path, &f, &digest, len)?;
            Ok((digest, len, new))
        })();
        if res.is_err() {
            let _ = fs::remove_file(&path);
        }
        res
    }

    pub fn ingest_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64, bool)> {
        self.ingest(bytes)
    }
}
