//! Files being written: create, open for writing, write, copy_file_range, flush and
//! release (commit at close), setattr; scratch files; streamed copies compared with known
//! blobs instead of stored.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::edit::*;
use super::scratch::Caller;
use super::tree::{dir_as_model, join};
use super::writer::*;
use super::{Attr, FileKind, Fs, FsError, Handle, Node, Opened, Result, State, enoent};
use crate::layout::{self, Kind, Source};
use crate::name::Name;
use crate::store::{Digest, Layer};

impl Fs {
    /// Create a file in a model folder: a layer writer, or a scratch file for other names.
    pub fn create(&self, parent: u64, name: &str, mode: u32, flags: i32) -> Result<(Attr, Opened)> {
        self.create_as(Caller::daemon(), parent, name, mode, flags)
    }

    /// create(2) by `who`: a layer writer for the model's names, a scratch file for others.
    pub fn create_as(&self, who: Caller, parent: u64, name: &str, mode: u32, flags: i32) -> Result<(Attr, Opened)> {
        self.refuse_if_read_only()?;
        check_name_length(name)?;
        let mut st = self.lock();
        let mut parent_node = self.node_of(&st, parent)?;
        if let Node::Trash(uid, rel) = &parent_node {
            return self.trash_create(&mut st, *uid, &join(rel, name), mode, flags);
        }
        let scratch_parent = self.parent_node(&st, parent)?;
        if let Some(dir) = self.scratch_target(&mut st, &scratch_parent, name)? {
            let made = self.scratch_create(&mut st, &dir, name, mode, flags, who)?;
            self.touch_parent(&mut st, &scratch_parent);
            return Ok(made);
        }
        // A colon-less prefix folder with a layer file created in it becomes NAME:latest,
        // still listed under the name it was made with.
        if let Node::Dir(p) = &parent_node
            && !p.is_empty()
            && is_layer_name(name)
            && let Some(n) = dir_as_model(p)
            && st.dir_children(p).is_empty()
            && !st.model_exists(&n)
        {
            self.check_case_twin(&st, &n)?;
            let entry = p.rsplit('/').next().unwrap_or(p).to_string();
            st.pending_dirs.remove(p);
            st.make_folder(&n, entry);
            st.inodes.rekey(&parent_node, &Node::Model(n.clone()));
            parent_node = Node::Model(n);
        }
        let (model, sub) = match self.as_model_dir(&st, &parent_node) {
            Some(ms) => ms,
            None => {
                return Err(einval(format!("{name:?}: files can only be created inside a model folder")));
            }
        };
        let full = join(&sub, name);
        if st.lookup_in_model(&model, "", &full).is_some() || st.is_creating(&model, &full) {
            return Err(FsError::new(libc::EEXIST, full));
        }
        let staging = is_staging_name(&full);
        if !is_layer_name(&full) && !staging {
            return Err(einval(format!("{full:?} is a layer folder's name")));
        }
        let entry = st.entry_of(&model);
        st.make_folder(&model, entry).creating.insert(full.clone());
        st.mark_written(&model, &full);
        let node = Node::File(model.clone(), full.clone());
        let ino = st.inodes.remember(&node);
        let mut attr = self.base_attr(ino, FileKind::File, 0, st.clock.system_now());
        // A temporary inode: at close a weights file becomes its blob's shared inode, so
        // the kernel must not keep this one (`stat` after `cp` shows the final inode).
        attr.transient = true;
        drop(st);
        let mut w = Writer::empty(ino, model, full, true);
        w.staged = staging;
        let fh = self.add_handle(Handle::Write(Arc::new(Mutex::new(w))));
        Ok((attr, Opened { fh, keep_cache: false, passthrough: None, direct_io: true, shares_blob_inode: None }))
    }

    pub(super) fn open_scratch(&self, path: &std::path::Path, flags: i32, ino: u64) -> Result<Opened> {
        let acc = flags & libc::O_ACCMODE;
        let mut oo = OpenOptions::new();
        oo.read(true);
        if acc != libc::O_RDONLY {
            oo.write(true);
        }
        oo.truncate(flags & libc::O_TRUNC != 0 && acc != libc::O_RDONLY);
        oo.custom_flags(flags & libc::O_APPEND);
        let f = oo.open(path)?;
        if acc != libc::O_RDONLY {
            self.forget_digest(&f);
        }
        let fh = self.add_handle(Handle::Scratch(Arc::new(f), ino));
        self.track_download(fh);
        Ok(Opened { fh, keep_cache: false, passthrough: None, direct_io: false, shares_blob_inode: None })
    }

    /// Open an existing per-model file for writing (text layers, config, manifest).
    pub(super) fn open_writer(&self, st: &mut State, ino: u64, model: &Name, name: &str, flags: i32) -> Result<Opened> {
        if let Some(waiting) = st.waiting_manifest_json(model, name) {
            // A draft's waiting manifest.json, rewritten: start from its bytes unless truncated.
            let mut w = Writer::empty(ino, model.clone(), name.to_string(), false);
            if flags & libc::O_TRUNC == 0 {
                let bytes = waiting.bytes.clone();
                w.write(&self.store, 0, &bytes)?;
                w.dirty = false;
            }
            let fh = self.add_handle(Handle::Write(Arc::new(Mutex::new(w))));
            return Ok(Opened { fh, keep_cache: false, passthrough: None, direct_io: true, shares_blob_inode: None });
        }
        let m = st.view(model).cloned().ok_or_else(|| enoent(name))?;
        let f = st.files_of(model).into_iter().find(|f| f.name == name).ok_or_else(|| enoent(name))?;
        let truncate = flags & libc::O_TRUNC != 0;
        if f.kind == Kind::Weights {
            // Replace is a replace: O_TRUNC starts a new version of this layer, committed
            // in the same position at close (the store keeps the old one until then, and
            // for other models and open readers). Without O_TRUNC the file opens (GLib
            // opens O_RDWR, then truncates) but writing into weights is refused.
            let Source::Layer(i) = f.source else { return Err(enoent(name)) };
            let l = &m.manifest.layers[i];
            let d = l.digest().ok_or_else(|| FsError::new(libc::EIO, format!("invalid digest {:?}", l.digest)))?;
            let len = self.blob_meta(st, &d).map(|b| b.size).unwrap_or(l.size.max(0) as u64);
            let mut w = match truncate {
                true => Writer::empty(ino, model.clone(), name.to_string(), false),
                false => Writer::of_blob(ino, model.clone(), name.to_string(), d, len),
            };
            w.sealed = !truncate;
            w.replaces_shared = true;
            log::debug!("{name} of {} opened to be replaced", model.display_shortest());
            let fh = self.add_handle(Handle::Write(Arc::new(Mutex::new(w))));
            let blob = self.store.open_blob(&d).ok().map(|f| (d, Arc::new(f)));
            return Ok(Opened { fh, keep_cache: false, passthrough: None, direct_io: true, shares_blob_inode: blob });
        }
        let w = match (f.source, truncate) {
            (_, true) => Writer::empty(ino, model.clone(), name.to_string(), false),
            (Source::Manifest, false) => {
                // Start from the current bytes: a small in-place edit of the manifest.
                let mut w = Writer::empty(ino, model.clone(), name.to_string(), false);
                let bytes = st.index.get(model).map(|p| p.bytes.clone()).unwrap_or_else(|| m.bytes.clone());
                w.write(&self.store, 0, &bytes)?;
                w.dirty = false;
                w
            }
            (Source::Config, false) | (Source::Layer(_), false) => {
                let l = match f.source {
                    Source::Layer(i) => &m.manifest.layers[i],
                    _ => &m.manifest.config,
                };
                let d = l.digest().ok_or_else(|| FsError::new(libc::EIO, format!("invalid digest {:?}", l.digest)))?;
                let len = self.blob_meta(st, &d).map(|b| b.size).unwrap_or(l.size.max(0) as u64);
                Writer::of_blob(ino, model.clone(), name.to_string(), d, len)
            }
        };
        let fh = self.add_handle(Handle::Write(Arc::new(Mutex::new(w))));
        Ok(Opened { fh, keep_cache: false, passthrough: None, direct_io: true, shares_blob_inode: None })
    }

    fn handle(&self, fh: u64) -> Result<HandleRef> {
        match self.handles().get(&fh) {
            Some(Handle::Write(w)) => Ok(HandleRef::Writer(w.clone())),
            Some(Handle::Scratch(f, _)) => Ok(HandleRef::Scratch(f.clone())),
            Some(Handle::Blob(..)) | Some(Handle::Bytes(_)) => Err(FsError::new(libc::EBADF, "opened read-only")),
            Some(Handle::Dir(_)) => Err(FsError::new(libc::EISDIR, "folder")),
            None => Err(FsError::new(libc::EBADF, "unknown handle")),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        match self.handle(fh)? {
            HandleRef::Writer(w) => {
                let mut w = crate::sync::lock(&w);
                if let Some(errno) = w.failed {
                    return Err(FsError::new(errno, "an earlier write to this file failed"));
                }
                if w.sealed {
                    return Err(FsError::new(libc::EPERM, "weights are written whole: open with O_TRUNC to replace"));
                }
                if offset == 0
                    && w.is_untouched()
                    && !data.is_empty()
                    && let Some((d, size)) = self.blob_starting_with(&w.model, &w.file, data)
                {
                    log::debug!("{} of {} starts as blob {d}: comparing, not storing", w.file, w.model);
                    w.expect_blob(d, size);
                }
                if let Err(e) = w.write(&self.store, offset, data) {
                    // Give the space back now and never commit a partial file.
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    w.failed = Some(errno);
                    w.discard();
                    return Err(e.into());
                }
            }
            HandleRef::Scratch(f) => {
                f.write_all_at(data, offset)?;
                self.download_wrote(fh, &f, offset, data);
            }
        }
        Ok(data.len() as u32)
    }

    /// copy_file_range: a destination that receives a whole source file in order, from
    /// offset 0, becomes that blob with no byte read or written. Anything else copies.
    pub fn copy_file_range(
        &self,
        ino_in: u64,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> Result<u64> {
        let source = self.clone_source(ino_in, fh_in);
        if let (Some((d, src_len)), HandleRef::Writer(w)) = (source, self.handle(fh_out)?) {
            let mut w = crate::sync::lock(&w);
            if off_in >= src_len {
                return Ok(0);
            }
            if let Some(n) = w.clone_range(d, src_len, off_in, off_out, len) {
                return Ok(n);
            }
        }
        // Real copy, in bounded chunks.
        let chunk = len.min(8 << 20) as u32;
        let data = self.read(fh_in, off_in, chunk)?;
        if data.is_empty() {
            return Ok(0);
        }
        self.write(fh_out, off_out, &data)?;
        Ok(data.len() as u64)
    }

    /// A blob that the first bytes of a new file match: one a process has open for reading
    /// (GLib's splice copy, mc, rsync, Python copying inside the mount), the blob the file
    /// showed before, or a weights blob with the same first 64 KiB (a re-import).
    pub(super) fn blob_starting_with(&self, model: &Name, file: &str, data: &[u8]) -> Option<(Digest, u64)> {
        let mut candidates: Vec<Digest> = self
            .handles()
            .values()
            .filter_map(|h| match h {
                Handle::Blob(_, _, d) => Some(*d),
                _ => None,
            })
            .collect();
        {
            let st = self.lock();
            if let Some((d, _)) = st.edit(model).blob(file) {
                candidates.push(d);
            }
        }
        if data.len() >= PREFIX_LEN {
            candidates.extend(self.blobs_with_prefix(&data[..PREFIX_LEN]));
        }
        let mut seen = HashSet::new();
        for d in candidates {
            if !seen.insert(d) {
                continue;
            }
            let Ok(f) = self.store.open_blob(&d) else { continue };
            let Ok(meta) = f.metadata() else { continue };
            if meta.len() < data.len() as u64 {
                continue;
            }
            let mut head = vec![0u8; data.len()];
            if f.read_exact_at(&mut head, 0).is_ok() && head == data {
                return Some((d, meta.len()));
            }
        }
        None
    }

    /// Weights blobs (of at least `PREFIX_LEN` bytes) whose first `PREFIX_LEN` bytes hash
    /// like `head`. Each blob's prefix hash is computed once (blobs never change).
    pub(super) fn blobs_with_prefix(&self, head: &[u8]) -> Vec<Digest> {
        let want: [u8; 32] = Sha256::digest(head).into();
        let weights: Vec<Digest> = {
            let st = self.lock();
            st.index
                .models()
                .chain(st.folders.values().filter_map(|f| f.work.as_ref()))
                .flat_map(|m| m.manifest.layers.iter())
                .filter(|l| l.size >= PREFIX_LEN as i64 && layout::base_name(&l.media_type, &l.name).1 == Kind::Weights)
                .filter_map(Layer::digest)
                .collect()
        };
        let mut known = crate::sync::lock(&self.prefixes);
        let mut out = Vec::new();
        for d in weights {
            let p = *known.entry(d).or_insert_with(|| {
                let mut buf = vec![0u8; PREFIX_LEN];
                let f = self.store.open_blob(&d).ok()?;
                f.read_exact_at(&mut buf, 0).ok()?;
                Some(Sha256::digest(&buf).into())
            });
            if p == Some(want) && !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }

    /// The folder and file a write-open of weights inode `ino` (blob `d`) came through:
    /// the one this process just looked up, else the only folder showing the blob.
    pub(super) fn weights_opened_through(&self, st: &State, pid: u32, ino: u64, d: &Digest) -> Result<(Name, String)> {
        let shows = |m: &Name, file: &str| st.lookup_in_model(m, "", file) == Some(Node::Blob(*d));
        if let Some((i, m, file)) = crate::sync::lock(&self.weights_lookups).get(&pid).cloned()
            && i == ino
            && shows(&m, &file)
        {
            return Ok((m, file));
        }
        let mut showing = Vec::new();
        let names: std::collections::BTreeSet<Name> =
            st.index.models().map(|m| m.name.clone()).chain(st.folders.keys().cloned()).collect();
        for n in names {
            for f in st.files_of(&n) {
                if st.file_node(&n, &f) == Node::Blob(*d) {
                    showing.push((n.clone(), f.name));
                }
            }
        }
        match showing.len() {
            1 => Ok(showing.remove(0)),
            0 => Err(enoent(d)),
            n => Err(FsError::new(libc::EPERM, format!("blob {d} is shown by {n} model files; open it by its path"))),
        }
    }

    /// The blob an open source file shows, when it is an unchanged blob.
    pub(super) fn clone_source(&self, ino: u64, fh: u64) -> Option<(Digest, u64)> {
        if !matches!(self.handles().get(&fh), Some(Handle::Blob(..))) {
            return None;
        }
        let mut st = self.lock();
        let node = st.inodes.node(ino)?;
        let d = match &node {
            Node::Blob(d) => *d,
            Node::File(m, name) => {
                let model = st.view(m)?.clone();
                let f = st.files_of(m).into_iter().find(|f| f.name == *name)?;
                match f.source {
                    Source::Layer(i) => model.manifest.layers[i].digest()?,
                    Source::Config => model.manifest.config.digest()?,
                    Source::Manifest => return None,
                }
            }
            _ => return None,
        };
        let meta = self.blob_meta(&mut st, &d)?;
        Some((d, meta.size))
    }

    /// flush (every close): commit what the handle changed, durably, before close returns.
    pub fn flush(&self, fh: u64) -> Result<()> {
        self.flush_handle(fh, false)
    }

    pub(super) fn flush_handle(&self, fh: u64, last_close: bool) -> Result<()> {
        let handle = match self.handles().get(&fh) {
            Some(Handle::Write(w)) => Ok(w.clone()),
            Some(Handle::Scratch(f, ino)) => Err((f.clone(), *ino)),
            _ => return Ok(()),
        };
        let w = match handle {
            Ok(w) => w,
            Err((f, ino)) => {
                f.sync_data()?;
                // A download into LM Studio's view may be finished (close returns after).
                if !last_close && super::views::opened_for_writing(&f) {
                    self.publish_download(&f, ino, fh);
                }
                return Ok(());
            }
        };
        let mut w = crate::sync::lock(&w);
        if let Some(errno) = w.failed {
            return Err(FsError::new(
                errno,
                format!("{} of {} was not saved: a write failed", w.file, w.model.display_shortest()),
            ));
        }
        if !w.dirty || !(w.touched || last_close) {
            return Ok(());
        }
        let res = self.commit(&mut w);
        if res.is_err() {
            w.discard();
        }
        res
    }

    /// release: commit if anything is still pending, then drop the handle.
    pub fn release(&self, fh: u64) -> Result<()> {
        let res = self.flush_handle(fh, true);
        let h = self.handles().remove(&fh);
        self.untrack_download(fh);
        if let Some(Handle::Write(w)) = h {
            let w = crate::sync::lock(&w);
            if w.created
                && let Some(f) = self.lock().folder_mut(&w.model)
            {
                f.creating.remove(&w.file);
            }
        }
        res
    }

    /// chmod/chown/utimens succeed without effect on layers and models (blobs keep their
    /// metadata); truncation goes through a writer; scratch files are ordinary files.
    pub fn setattr(&self, ino: u64, fh: Option<u64>, set: SetAttr) -> Result<Attr> {
        let SetAttr { mode, size, mtime, .. } = set;
        if set.changes_anything() && self.opts.read_only {
            return Err(erofs());
        }
        // A scratch file is an ordinary file: every change applies, through the open
        // descriptor when there is one (it may be unlinked already).
        if let Some(fh) = fh
            && let Some(f) = self.scratch_handle(fh)
        {
            if set.size.is_some() {
                self.forget_digest(&*f);
                self.untrack_download(fh);
            }
            apply_to_file(&f, &set)?;
            return self.getattr_open(ino, Some(fh));
        }
        let node = {
            let st = self.lock();
            self.node_of(&st, ino)?
        };
        if let Node::Trash(uid, rel) = &node {
            self.trash_setattr(*uid, rel, &set)?;
            return self.getattr(ino);
        }
        if let Node::Scratch(b) = &node {
            let fd = self.scratch_fd(&self.lock(), *b)?;
            self.scratch_setattr(&fd, &set)?;
            return self.getattr(ino);
        }
        // A folder made in a view is a real folder: chmod and times apply (rsync -a sets them).
        if let Node::View(k, p) = &node
            && !p.is_empty()
            && let Some(dir) = self.view_tree_dir(*k, p, false)?
        {
            let fd = rustix::fs::open(
                &dir,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )?;
            self.scratch_setattr(&fd, &set)?;
            return self.getattr(ino);
        }
        let _ = (mode, mtime); // layers and models keep the blob's metadata
        if let Some(size) = size {
            let writer = fh.and_then(|fh| match self.handles().get(&fh) {
                Some(Handle::Write(w)) => Some(w.clone()),
                _ => None,
            });
            match &node {
                // A replacement being written (or GLib's truncate to 0 that starts one).
                Node::Blob(_) if writer.is_some() => {
                    if let Some(w) = writer {
                        crate::sync::lock(&w).truncate(&self.store, size)?;
                    }
                }
                Node::Blob(_) => return Err(FsError::new(libc::EPERM, "weights are immutable")),
                Node::File(m, name) => {
                    let writer = fh.and_then(|fh| match self.handles().get(&fh) {
                        Some(Handle::Write(w)) => Some(w.clone()),
                        _ => None,
                    });
                    match writer {
                        Some(w) => crate::sync::lock(&w).truncate(&self.store, size)?,
                        None => {
                            // truncate(1) on a path: a one-shot writer, committed now.
                            let opened = {
                                let mut st = self.lock();
                                self.open_writer(&mut st, ino, m, name, 0)?
                            };
                            let w = match self.handles().get(&opened.fh) {
                                Some(Handle::Write(w)) => w.clone(),
                                _ => return Err(FsError::new(libc::EIO, "writer vanished")),
                            };
                            crate::sync::lock(&w).truncate(&self.store, size)?;
                            self.release(opened.fh)?;
                        }
                    }
                }
                _ => return Err(FsError::new(libc::EISDIR, "is a folder")),
            }
        }
        self.getattr(ino)
    }
}

enum HandleRef {
    Writer(Arc<Mutex<Writer>>),
    Scratch(Arc<File>),
}

/// What a `setattr` asks to change.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<std::time::SystemTime>,
    pub mtime: Option<std::time::SystemTime>,
}

impl SetAttr {
    fn changes_anything(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.size.is_some()
            || self.atime.is_some()
            || self.mtime.is_some()
    }
}

/// chmod, chown, truncate and utimens on an open file (a scratch file).
pub(super) fn apply_to_file(f: &File, set: &SetAttr) -> Result<()> {
    use std::os::fd::AsRawFd;
    if let Some(mode) = set.mode {
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if set.uid.is_some() || set.gid.is_some() {
        std::os::unix::fs::fchown(f, set.uid, set.gid)?;
    }
    if let Some(size) = set.size {
        // The descriptor may be read-only; ftruncate through a writable reopen of it.
        let w = OpenOptions::new().write(true).open(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
        w.set_len(size)?;
    }
    if set.atime.is_some() || set.mtime.is_some() {
        let mut times = std::fs::FileTimes::new();
        if let Some(t) = set.atime {
            times = times.set_accessed(t);
        }
        if let Some(t) = set.mtime {
            times = times.set_modified(t);
        }
        f.set_times(times)?;
    }
    Ok(())
}
