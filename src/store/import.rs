//! Files from elsewhere on the machine into `blobs/` without copying their data where the
//! disk allows it (`ollamafs import`, `create` with `FROM /path/x.gguf`):
//! * a reflink (`FICLONE`: btrfs, XFS, bcachefs): the blob shares the file's extents,
//!   copy-on-write, so a later change to either never reaches the other;
//! * a hard link, only when asked (`--link`) or for files that never change by design (the
//!   Hugging Face cache's content-addressed blobs): the blob *is* the file, so another tool
//!   writing into it in place would change the blob (`ollamafs verify` reports that);
//! * otherwise a streamed copy, hashed as it goes.
//!
//! Every way hashes the file first, and refuses a file that changed while it was read.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Digest, Result, Store, StoreError, fsync_dir, hash_reader};

/// How a file came into `blobs/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// The store had the blob already.
    Present,
    Reflink,
    HardLink,
    Copy,
}

impl Way {
    pub fn describe(self) -> &'static str {
        match self {
            Way::Present => "already in the store",
            Way::Reflink => "reflink (copy-on-write, no data copied)",
            Way::HardLink => "hard link (no data copied)",
            Way::Copy => "copy",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Imported {
    pub digest: Digest,
    pub len: u64,
    pub way: Way,
    /// Data bytes written to the disk for it.
    pub written: u64,
}

/// What identifies a file's content without reading it: a change moves one of these
/// (the ctime too, unless `link`: making a hard link moves the ctime itself).
fn same_content(a: &fs::Metadata, b: &fs::Metadata, link: bool) -> bool {
    let key = |m: &fs::Metadata| (m.ino(), m.len(), m.mtime(), m.mtime_nsec());
    key(a) == key(b) && (link || (a.ctime(), a.ctime_nsec()) == (b.ctime(), b.ctime_nsec()))
}

impl Store {
    /// Bring the file at `path` into `blobs/`: reflink where the disk has it, else a hard
    /// link when `link` (the caller vouches that the file never changes in place), else a
    /// copy. The file is hashed first; one that changes meanwhile is refused.
    pub fn import_file(&self, path: &Path, link: bool) -> Result<Imported> {
        let src = File::open(path)?;
        let before = src.metadata()?;
        if !before.is_file() {
            return Err(StoreError::Invalid(format!("{}: not a file", path.display())));
        }
        let (digest, len) = hash_reader(&src)?;
        let unchanged = |what: &str| -> Result<()> {
            match fs::metadata(path) {
                Ok(now) if same_content(&now, &before, what == "linked") => Ok(()),
                _ => Err(StoreError::Invalid(format!(
                    "{} changed while it was {what}; nothing was imported",
                    path.display()
                ))),
            }
        };
        unchanged("hashed")?;
        let target = self.blob_path(&digest);
        if fs::metadata(&target).is_ok_and(|m| m.len() == len) {
            return Ok(Imported { digest, len, way: Way::Present, written: 0 });
        }
        self.prepare_for_writes()?;
        // A reflink: a new file sharing the source's extents.
        let (temp_file, temp) = self.temp_file()?;
        if rustix::fs::ioctl_ficlone(&temp_file, &src).is_ok() {
            let res = unchanged("cloned").and_then(|()| {
                self.adopt_blob(&temp, &temp_file, &digest, len)?;
                Ok(Imported { digest, len, way: Way::Reflink, written: 0 })
            });
            if res.is_err() {
                let _ = fs::remove_file(&temp);
            }
            return res;
        }
        drop(temp_file);
        let _ = fs::remove_file(&temp);
        if link {
            let _lock = self.lock_writes();
            match fs::hard_link(path, &target) {
                Ok(()) => {
                    fsync_dir(&self.blobs)?;
                    if let Err(e) = unchanged("linked") {
                        let _ = fs::remove_file(&target);
                        return Err(e);
                    }
                    return Ok(Imported { digest, len, way: Way::HardLink, written: 0 });
                }
                // Another disk: a copy instead.
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // A copy, checked against the digest as it streams (a change since is caught).
        let (written, _) = self.ingest_expecting(File::open(path)?, &digest)?;
        Ok(Imported { digest, len, way: Way::Copy, written })
    }
}
