//! Opening and reading: weights (passthrough or served with a prefetch), text, manifests.

use std::fs::File;
use std::sync::Arc;

use super::*;
use crate::layout::Source;

impl Fs {
    pub(super) fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles().insert(fh, h);
        fh
    }

    pub fn release_handle(&self, fh: u64) {
        self.handles().remove(&fh);
    }

    /// Open a file. Writes are handled in `write.rs`; here reads and the dispatch.
    pub fn open(&self, ino: u64, flags: i32) -> Result<Opened> {
        self.open_from(0, ino, flags)
    }

    /// An open by process `pid` (see `lookup_from`).
    pub fn open_from(&self, pid: u32, ino: u64, flags: i32) -> Result<Opened> {
        let acc = flags & libc::O_ACCMODE;
        let writing = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let mut st = self.lock();
        let node = self.node_of(&st, ino)?;
        match &node {
            Node::Blob(d) => {
                if writing {
                    if self.opts.read_only {
                        return Err(FsError::new(libc::EROFS, "read-only mount"));
                    }
                    let (model, file) = self.weights_opened_through(&st, pid, ino, d)?;
                    return self.open_writer(&mut st, ino, &model, &file, flags);
                }
                drop(st);
                let file = self
                    .store
                    .open_blob(d)
                    .map_err(|e| FsError::new(libc::EIO, format!("blob {d} cannot be opened: {e}")))?;
                // Weights are loaded front to back: ask for the larger readahead window.
                // SAFETY: a valid open fd; advice only.
                unsafe {
                    libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(&file), 0, 0, libc::POSIX_FADV_SEQUENTIAL)
                };
                let file = Arc::new(file);
                let fh = self.add_handle(Handle::Blob(file.clone(), Arc::default(), *d));
                let passthrough = self.opts.passthrough.then_some((*d, file));
                Ok(Opened { fh, keep_cache: true, passthrough, direct_io: false, shares_blob_inode: None })
            }
            Node::Scratch(b) => {
                let fd = self.scratch_fd(&st, *b)?;
                drop(st);
                if writing && self.opts.read_only {
                    return Err(FsError::new(libc::EROFS, "read-only mount"));
                }
                self.scratch_open(&fd, flags, ino)
            }
            Node::File(model, name) => {
                if let Some((d, _)) = st.staged_file(model, name) {
                    drop(st);
                    if writing {
                        return Err(FsError::new(libc::EBUSY, "a finished temp file: rename it onto its layer"));
                    }
                    let fh = self.add_handle(self.blob_handle(&d)?);
                    return Ok(Opened {
                        fh,
                        keep_cache: false,
                        passthrough: None,
                        direct_io: false,
                        shares_blob_inode: None,
                    });
                }
                if writing {
                    if self.opts.read_only {
                        return Err(FsError::new(libc::EROFS, "read-only mount"));
                    }
                    return self.open_writer(&mut st, ino, model, name, flags);
                }
                if let Some(w) = st.waiting_manifest_json(model, name) {
                    let handle = Handle::Bytes(w.bytes.clone().into());
                    return Ok(Opened {
                        fh: self.add_handle(handle),
                        keep_cache: false,
                        passthrough: None,
                        direct_io: false,
                        shares_blob_inode: None,
                    });
                }
                let m = st.view(model).cloned().ok_or_else(|| enoent(name))?;
                let f = st.files_of(model).into_iter().find(|f| f.name == *name).ok_or_else(|| enoent(name))?;
                // manifest.json is the store's manifest: a held change does not alter it
                // (a tool copying a folder out file by file gets the size it listed).
                let published = st.index.get(model).cloned();
                drop(st);
                let handle = match f.source {
                    Source::Manifest => Handle::Bytes(published.unwrap_or(m).bytes.clone()),
                    Source::Config => self.layer_handle(&m.manifest.config)?,
                    Source::Layer(i) => self.layer_handle(&m.manifest.layers[i])?,
                };
                // Text is per model and may change under the same inode: no keep-cache.
                Ok(Opened {
                    fh: self.add_handle(handle),
                    keep_cache: false,
                    passthrough: None,
                    direct_io: false,
                    shares_blob_inode: None,
                })
            }
            Node::Dir(_) | Node::Model(_) | Node::Sub(..) | Node::View(..) => {
                Err(FsError::new(libc::EISDIR, "is a folder"))
            }
            Node::Link(_) => Err(FsError::new(libc::ELOOP, "symlink")),
            Node::Trash(uid, rel) => {
                let (uid, rel) = (*uid, rel.clone());
                drop(st);
                if writing && self.opts.read_only {
                    return Err(FsError::new(libc::EROFS, "read-only mount"));
                }
                self.trash_open(ino, uid, &rel, flags)
            }
        }
    }

    pub(super) fn layer_handle(&self, l: &crate::store::Layer) -> Result<Handle> {
        let d = l.digest().ok_or_else(|| FsError::new(libc::EIO, format!("invalid digest {:?}", l.digest)))?;
        self.blob_handle(&d)
    }

    /// A read handle on one blob, with its own prefetch state.
    fn blob_handle(&self, d: &Digest) -> Result<Handle> {
        let f = self.store.open_blob(d).map_err(|e| FsError::new(libc::EIO, format!("blob {d}: {e}")))?;
        Ok(Handle::Blob(Arc::new(f), Arc::default(), *d))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let n = self.read_into(fh, offset, size, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Read into a caller's buffer, which is grown but never shrunk: a daemon thread reuses
    /// one buffer for every request instead of allocating (and zeroing) 1 MiB each time.
    /// Returns how many bytes at the start of `buf` are the answer.
    pub fn read_into(&self, fh: u64, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<usize> {
        let h = {
            let handles = self.handles();
            match handles.get(&fh) {
                Some(Handle::Blob(f, ahead, _)) => ReadFrom::Blob(f.clone(), ahead.clone()),
                Some(Handle::Scratch(f, _)) => ReadFrom::File(f.clone()),
                Some(Handle::Bytes(b)) => ReadFrom::Bytes(b.clone()),
                Some(Handle::Write(w)) => ReadFrom::Writer(w.clone()),
                Some(Handle::Dir(_)) => return Err(FsError::new(libc::EISDIR, "is a folder")),
                None => return Err(FsError::new(libc::EBADF, "unknown handle")),
            }
        };
        match h {
            ReadFrom::Blob(f, prefetch) => {
                if size >= 128 << 10 {
                    prefetch.reader_at(&f, offset + size as u64);
                }
                pread_into(&f, offset, size, buf)
            }
            ReadFrom::File(f) => pread_into(&f, offset, size, buf),
            ReadFrom::Bytes(b) => {
                let start = (offset as usize).min(b.len());
                let end = (start + size as usize).min(b.len());
                Ok(copy_into(&b[start..end], buf))
            }
            ReadFrom::Writer(w) => {
                let w = crate::sync::lock(&w);
                Ok(copy_into(&w.read(&self.store, offset, size)?, buf))
            }
        }
    }
}

enum ReadFrom {
    Blob(Arc<File>, Arc<Prefetch>),
    File(Arc<File>),
    Bytes(Arc<[u8]>),
    Writer(Arc<Mutex<Writer>>),
}

pub(crate) fn pread(f: &File, offset: u64, size: u32) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let n = pread_into(f, offset, size, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// pread up to `size` bytes into the start of `buf` (grown, never shrunk); returns the count.
pub(super) fn pread_into(f: &File, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<usize> {
    let size = size as usize;
    if buf.len() < size {
        buf.resize(size, 0);
    }
    let mut done = 0usize;
    while done < size {
        match f.read_at(&mut buf[done..size], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

pub(super) fn copy_into(data: &[u8], buf: &mut Vec<u8>) -> usize {
    if buf.len() < data.len() {
        buf.resize(data.len(), 0);
    }
    buf[..data.len()].copy_from_slice(data);
    data.len()
}
