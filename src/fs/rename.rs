//! Renames: model folders (the manifest moves, the folder's state with it), prefix
//! folders (every model below), and files between names and folders (a scratch file onto
//! a layer name commits it, a layer onto a scratch name copies it out).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::edit::*;
use super::scratch::{Fd, is_layer_folder};
use super::tree::{join, scope};
use super::txn::Publish;
use super::{Fs, FsError, Node, Result, State, enoent};
use crate::layout::{CONFIG_FILE, MANIFEST_FILE};
use crate::name::Name;
use crate::store::{Digest, hash_file};

impl Fs {
    pub fn rename(&self, parent: u64, name: &str, newparent: u64, newname: &str, flags: u32) -> Result<()> {
        self.refuse_if_read_only()?;
        check_name_length(name)?;
        check_name_length(newname)?;
        // Data work (hashing a scratch file that becomes a layer, copying a layer out to a
        // scratch name) happens before the state lock is taken for the change itself.
        self.prepare_file_rename(parent, name, newparent, newname)?;
        let res = self.rename_locked(parent, name, newparent, newname, flags);
        if res.is_ok() {
            self.publish_renamed(newparent, newname);
        }
        if res.is_ok() {
            let mut st = self.lock();
            let became_weights =
                self.lookup_node(&mut st, newparent, newname).is_ok_and(|n| matches!(n, Node::Blob(_)));
            drop(st);
            if became_weights {
                self.invalidate_entry_later(newparent, newname);
            }
        }
        res
    }

    fn rename_locked(&self, parent: u64, name: &str, newparent: u64, newname: &str, flags: u32) -> Result<()> {
        let mut st = self.lock();
        let src = self.lookup_node(&mut st, parent, name)?;
        let src_parent = self.parent_node(&st, parent)?;
        let dest_parent = self.parent_node(&st, newparent)?;
        let dest_existing = self.lookup_node(&mut st, newparent, newname).ok();
        if let (Node::View(..), Node::Blob(_)) = (&src_parent, &src) {
            return Err(FsError::new(
                libc::EPERM,
                format!("{name:?} is a model's file: rename the model in its folder"),
            ));
        }
        if flags & libc::RENAME_NOREPLACE != 0 && dest_existing.is_some() {
            return Err(FsError::new(libc::EEXIST, newname.to_string()));
        }
        // Between scratch names it is the disk's own rename (any flags).
        let dest_scratch = match &dest_parent {
            Node::Trash(..) => None,
            _ => self.scratch_target(&mut st, &dest_parent, newname)?,
        };
        if let (Node::Scratch(_), Some(to)) = (&src, &dest_scratch) {
            let from = self.scratch_dir(&mut st, &src_parent, false)?.ok_or_else(|| enoent(name))?;
            self.scratch_rename((&from, name), (to, newname), flags)?;
            self.touch_parent(&mut st, &src_parent);
            self.touch_parent(&mut st, &dest_parent);
            return Ok(());
        }
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(einval("RENAME_EXCHANGE is only supported between scratch entries"));
        }
        let res = self.rename_other(&mut st, (&src, &src_parent, name), (&dest_parent, dest_scratch, newname));
        if res.is_ok() {
            self.touch_parent(&mut st, &src_parent);
            self.touch_parent(&mut st, &dest_parent);
        }
        res
    }

    /// Every rename that is not between two scratch names.
    fn rename_other(
        &self,
        st: &mut State,
        (src, src_parent, name): (&Node, &Node, &str),
        (dest_parent, dest_scratch, newname): (&Node, Option<Fd>, &str),
    ) -> Result<()> {
        let parent_model = self.as_model_dir(st, src_parent);
        match (src, dest_parent) {
            (Node::Scratch(_), Node::Trash(uid, p)) if p == "files" => {
                let from = self.scratch_dir(st, src_parent, false)?.ok_or_else(|| enoent(name))?;
                self.trash_scratch(st, src, (&from, name), *uid, newname)
            }
            (Node::Scratch(b), Node::Model(_) | Node::Sub(..)) => {
                let (dm, dsub) = self.as_model_dir(st, dest_parent).ok_or_else(|| einval("not a model folder"))?;
                let dname = join(&dsub, newname);
                if is_layer_folder(&dname) {
                    return Err(einval(format!("{dname:?} holds the model's layers")));
                }
                let from = self.scratch_dir(st, src_parent, false)?.ok_or_else(|| enoent(name))?;
                self.commit_scratch_file(st, *b, (&from, name), &dm, &dname)
            }
            (Node::File(..) | Node::Blob(_), _) if dest_scratch.is_some() => {
                let (pm, psub) = parent_model.ok_or_else(|| einval("source is not in a model folder"))?;
                let to = dest_scratch.ok_or_else(|| enoent(newname))?;
                self.layer_to_scratch(st, &pm, &join(&psub, name), (&to, newname))
            }
            (Node::Scratch(_), _) => {
                Err(FsError::new(libc::EXDEV, format!("{name:?} is a scratch entry; it cannot move there")))
            }
            _ => self.rename_model_or_layer(st, src, src_parent, name, dest_parent, newname),
        }
    }

    fn rename_model_or_layer(
        &self,
        st: &mut State,
        src: &Node,
        src_parent: &Node,
        name: &str,
        dest_parent: &Node,
        newname: &str,
    ) -> Result<()> {
        match (src, dest_parent) {
            // The Trash: in, out, and within.
            (Node::Trash(u1, from), Node::Trash(u2, p)) if u1 == u2 => {
                self.trash_rename(st, *u1, from, &join(p, newname))
            }
            (_, Node::Trash(uid, p)) if p == "files" => {
                let parent_model = self.as_model_dir(st, src_parent);
                let (pm, src_name) = match &parent_model {
                    Some((m, s)) => (Some(m.clone()), join(s, name)),
                    None => (None, name.to_string()),
                };
                self.trash_in(st, src, pm.as_ref(), &src_name, *uid, newname)
            }
            (Node::Trash(uid, from), _) if from.strip_prefix("files/").is_some_and(|n| !n.contains('/')) => {
                let item = from["files/".len()..].to_string();
                self.trash_out(st, *uid, &item, dest_parent, newname)
            }
            (Node::Trash(..), _) | (_, Node::Trash(..)) => {
                Err(FsError::new(libc::EXDEV, format!("{name:?} cannot move there")))
            }
            (Node::Model(from), Node::Dir(p)) => {
                let to = match st.is_published(from) {
                    // A published model needs a model name (a draft may take any folder
                    // name; a published model would leave the store).
                    true => self.model_at(p, newname)?,
                    false => self.model_entry(st, p, newname)?,
                };
                self.rename_model(st, from, &to, newname.to_string())
            }
            (Node::Dir(from), Node::Dir(p)) => self.rename_prefix(st, from, &join(p, newname)),
            (Node::File(..) | Node::Blob(_), Node::Model(_) | Node::Sub(..)) => {
                let (pm, psub) = match self.as_model_dir(st, src_parent) {
                    Some(x) => x,
                    None => return Err(einval("source is not in a model folder")),
                };
                let (dm, dsub) =
                    self.as_model_dir(st, dest_parent).ok_or_else(|| einval("destination is not a model folder"))?;
                self.rename_file(st, (&pm, &join(&psub, name)), (&dm, &join(&dsub, newname)))
            }
            _ => Err(FsError::new(libc::EXDEV, format!("cannot move {name:?} there"))),
        }
    }

    /// A model folder moves to the name `to`, listed as `entry`: the manifest moves (no
    /// blob changes) and the folder's whole state goes with it (see `Folder`).
    pub(super) fn rename_model(&self, st: &mut State, from: &Name, to: &Name, entry: String) -> Result<()> {
        if from == to {
            if let Some(f) = st.folder_mut(from) {
                f.entry = entry;
            }
            return Ok(());
        }
        if st.is_published(to) || (st.model_exists(to) && !self.folder_is_empty(st, to, "")) {
            return Err(FsError::new(libc::ENOTEMPTY, format!("{} exists", to.display_shortest())));
        }
        if !to.is_draft_only() {
            self.check_case_twin(st, to)?;
        }
        if st.folders.contains_key(to) {
            self.forget_model_folder(st, to); // an empty folder is replaced, as rename(2) does
        }
        if !st.is_published(from) {
            if !st.folders.contains_key(from) {
                return Err(enoent(from));
            }
            self.move_model_folder(st, from, to, entry);
            // A complete draft under its new name is published (Nautilus' F2 on a pasted
            // copy); it still shows the files written into it.
            if let Some((m, bytes)) = st.work(to).map(|w| (w.manifest.clone(), w.bytes.to_vec())) {
                self.publish_or_hold(st, to, m, bytes, Publish::IfComplete)?;
            }
            return Ok(());
        }
        let m = st.index.get(from).cloned().ok_or_else(|| enoent(from))?;
        // The new name first, then the old one goes: a failure leaves the model in the store.
        self.install(st, to, m.bytes.to_vec())?;
        self.leave_store(st, from, &format!("moved to {} through the mount", to.display_shortest()))?;
        self.move_model_folder(st, from, to, entry);
        Ok(())
    }

    /// Move every model below prefix `from` to prefix `to`; all or nothing on validation.
    pub(super) fn rename_prefix(&self, st: &mut State, from: &str, to: &str) -> Result<()> {
        if scope(to).is_none() {
            return Err(einval(format!("{to:?} cannot be a prefix folder")));
        }
        if st.dir_exists(to) && !st.dir_children(to).is_empty() {
            return Err(FsError::new(libc::ENOTEMPTY, to.to_string()));
        }
        let prefix = format!("{from}/");
        let mut moves = Vec::new();
        let names: std::collections::BTreeSet<Name> =
            st.index.models().map(|m| m.name.clone()).chain(st.folders.keys().cloned()).collect();
        for name in names {
            let d = format!("{}/{}", super::tree::model_parent(&name), st.entry_of(&name));
            let d = d.trim_start_matches('/');
            if let Some(rest) = d.strip_prefix(&prefix) {
                let target = format!("{to}/{rest}");
                let n = match name.is_draft_only() {
                    false => {
                        Name::parse(&target).map_err(|_| einval(format!("{target:?} is not a valid model name")))?
                    }
                    true => {
                        let (parent, entry) = target.rsplit_once('/').unwrap_or(("", &target));
                        let hn = scope(parent).and_then(|s| s.models.first().cloned());
                        let (h, ns) = hn.ok_or_else(|| einval(format!("{target:?} cannot hold a draft")))?;
                        Name::draft(&h, &ns, entry)
                    }
                };
                let entry = target.rsplit('/').next().unwrap_or(&target).to_string();
                moves.push((name.clone(), n, entry));
            }
        }
        for (_, n, _) in &moves {
            if st.model_exists(n) {
                return Err(FsError::new(libc::ENOTEMPTY, n.display_shortest()));
            }
        }
        for (a, b, entry) in &moves {
            self.rename_model(st, a, b, entry.clone())?;
        }
        let pend: Vec<String> =
            st.pending_dirs.iter().filter(|p| *p == from || p.starts_with(&prefix)).cloned().collect();
        for p in pend {
            st.pending_dirs.remove(&p);
            st.pending_dirs.insert(format!("{to}{}", &p[from.len()..]));
        }
        if moves.is_empty() {
            st.pending_dirs.insert(to.to_string());
        }
        st.inodes.rekey(&Node::Dir(from.to_string()), &Node::Dir(to.to_string()));
        Ok(())
    }

    /// A file moves between names or model folders. On success the kernel keeps the
    /// moved inode under its new name, so its node follows.
    pub(super) fn rename_file(
        &self,
        st: &mut State,
        (sm, sname): (&Name, &str),
        (dm, dname): (&Name, &str),
    ) -> Result<()> {
        let skey = (sm.clone(), sname.to_string());
        let dkey = (dm.clone(), dname.to_string());
        if skey == dkey {
            return Ok(());
        }
        let res = self.move_file(st, &skey, &dkey);
        if res.is_ok() {
            st.mark_gone(sm, sname);
            st.mark_written(dm, dname);
            st.inodes.rekey(&Node::File(sm.clone(), sname.to_string()), &Node::File(dm.clone(), dname.to_string()));
        }
        res
    }

    fn move_file(&self, st: &mut State, skey: &(Name, String), dkey: &(Name, String)) -> Result<()> {
        let (sm, sname, dm, dname) = (&skey.0, skey.1.as_str(), &dkey.0, dkey.1.as_str());
        let skey = skey.clone();
        // A staged temp file (rsync) onto a layer name: its blob becomes that layer.
        if let Some((d, len)) = st.staged_file(sm, sname) {
            if !is_layer_name(dname) {
                return Err(FsError::new(libc::EXDEV, format!("{sname} can only become a layer")));
            }
            if let Some(f) = st.folder_mut(sm) {
                f.staged.remove(sname);
            }
            let res = match dname {
                MANIFEST_FILE => {
                    self.store.read_blob(&d).map_err(Into::into).and_then(|b| self.write_manifest_locked(st, dm, b))
                }
                CONFIG_FILE => self
                    .store
                    .read_blob(&d)
                    .map_err(Into::into)
                    .and_then(|b| check_config_json(dm, &b))
                    .and_then(|()| self.apply_layer(st, dm, dname, d, len)),
                _ => self.apply_layer(st, dm, dname, d, len),
            };
            self.store.release(&d);
            // A manifest.json that went through a temp file is not a blob of any model.
            self.prune_unused(st, vec![d]);
            return res;
        }
        if st.is_creating(sm, sname) {
            return Err(FsError::new(libc::EBUSY, format!("{sname} is still being written")));
        }
        // A layer moving: same blob, other name or other model.
        let src_layer = self.layer_of(st, sm, sname)?;
        if is_layer_name(dname) {
            let (d, len) = src_layer;
            if sm == dm {
                // One manifest change: drop the source layer, then set the destination.
                let mut e = st.edit(sm);
                let at = e.remove(sname);
                e.remove(dname);
                e.set(dname, d, len, at)?;
                return self.commit_edit(st, sm, e, Publish::IfComplete);
            }
            self.apply_layer(st, dm, dname, d, len)?;
            let mut e = st.edit(sm);
            if let Some(i) = e.remove(sname) {
                st.folder_entry(sm).vacated.insert(skey.1, i);
            }
            return self.commit_edit(st, sm, e, Publish::NeverDraft);
        }
        Err(einval(format!("{dname:?} is not a layer name")))
    }

    /// A scratch file moves onto a layer name: committed as that layer, its file renamed
    /// into `blobs/` (no byte copied; a GGUF hashed in one pass before the lock was taken).
    fn commit_scratch_file(
        &self,
        st: &mut State,
        b: u64,
        (dir, name): (&Fd, &str),
        dm: &Name,
        dname: &str,
    ) -> Result<()> {
        let fd = self.scratch_fd(st, b)?;
        let meta = rustix::fs::fstat(&*fd)?;
        match meta.st_mode & libc::S_IFMT {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Err(FsError::new(libc::EISDIR, format!("a folder cannot become layer {dname:?}"))),
            _ => return Err(FsError::new(libc::EINVAL, format!("only a regular file can become layer {dname:?}"))),
        }
        // Its inode becomes the blob's: no other name may change it later (EXDEV makes `mv`
        // copy it instead, through a layer writer).
        if meta.st_nlink > 1 {
            return Err(FsError::new(libc::EXDEV, format!("{name:?} has other links; it is copied, not moved")));
        }
        let path = self.scratch_path(dir, name)?;
        if dname == MANIFEST_FILE {
            // Validated and installed first: on failure the scratch file stays.
            self.install_manifest_locked(st, dm, std::fs::read(&path)?)?;
            let _ = std::fs::remove_file(&path);
        } else {
            if dname == CONFIG_FILE {
                check_config_json(dm, &std::fs::read(&path)?)?;
            }
            // Nor may an open descriptor (GLib renames its temp file before closing it):
            // from now on they read the file but cannot write it. (After the checks, so a
            // refused rename changes nothing.)
            let ino = st.inodes.ino_of(&Node::Scratch(b));
            self.seal_scratch_handles(ino)?;
            let (digest, len) = match (self.known_digest(&*fd), st.prepared.take()) {
                (Some(known), _) => known,
                (None, Some(Prepared::Hashed { path: p, digest, len })) if p == path => (digest, len),
                _ => hash_file(&path)?,
            };
            let file = File::open(&path)?;
            self.store.adopt_blob_held(&path, &file, &digest, len)?;
            st.blob_meta.remove(&digest);
            let res = self.apply_layer(st, dm, dname, digest, len);
            self.store.release(&digest);
            res?;
        }
        st.mark_written(dm, dname);
        // The kernel keeps the moved inode under the layer's name.
        st.inodes.rekey(&Node::Scratch(b), &Node::File(dm.clone(), dname.to_string()));
        st.scratch_fds.remove(&b);
        Ok(())
    }

    /// A layer (or rsync's finished temp file) moves to a scratch name (an editor's backup,
    /// rsync's `--partial-dir`): a private copy of its blob goes there, the layer leaves.
    fn layer_to_scratch(&self, st: &mut State, sm: &Name, sname: &str, (dir, dname): (&Fd, &str)) -> Result<()> {
        if st.is_creating(sm, sname) {
            return Err(FsError::new(libc::EBUSY, format!("{sname} is still being written")));
        }
        let staged = st.staged_file(sm, sname);
        let d = match staged {
            Some((d, _)) => d,
            None => self.layer_of(st, sm, sname)?.0,
        };
        let mut taken = false;
        let path = match st.prepared.take() {
            Some(Prepared::CopiedOut { digest, path }) if digest == d => path,
            other => {
                if let Some(Prepared::CopiedOut { path, .. }) = other {
                    let _ = std::fs::remove_file(path);
                }
                // rsync's finished temp file moved to its partial dir: its blob, which
                // nothing else uses, becomes the scratch file itself.
                let (f, temp) = self.store.temp_file()?;
                drop(f);
                taken = staged.is_some() && self.take_blob(st, &d, &temp);
                match taken {
                    true => temp,
                    false => {
                        let _ = std::fs::remove_file(&temp);
                        self.copy_blob_out(&d)?
                    }
                }
            }
        };
        if let Err(e) = self.scratch_adopt(&path, dir, dname) {
            // A taken blob goes back: it is still the staged file's data (and its hold).
            let len = staged.map_or(0, |s| s.1);
            let back = !taken || File::open(&path).and_then(|f| self.store.adopt_blob_held(&path, &f, &d, len)).is_ok();
            if back {
                let _ = std::fs::remove_file(&path); // a copy; a blob put back is gone from here
            } else {
                log::error!("{sname}: its data stays in {} (it could not go back into blobs/)", path.display());
            }
            return Err(e);
        }
        if let Some((_, len)) = staged
            && let Ok(f) = rustix::fs::openat(
                &**dir,
                dname,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW,
                rustix::fs::Mode::empty(),
            )
        {
            self.remember_digest(&f, d, len);
        }
        st.mark_gone(sm, sname);
        let old = Node::File(sm.clone(), sname.to_string());
        if let Ok(Some(new)) = self.scratch_lookup(st, dir, dname)
            && st.inodes.by_node.contains_key(&old)
        {
            st.inodes.rekey(&old, &new);
        }
        if staged.is_some() {
            if let Some(f) = st.folder_mut(sm) {
                f.staged.remove(sname);
            }
            if !taken {
                self.store.release(&d);
                self.prune_unused(st, vec![d]);
            }
            return Ok(());
        }
        let mut e = st.edit(sm);
        if let Some(i) = e.remove(sname) {
            st.folder_entry(sm).vacated.insert(sname.to_string(), i);
        }
        self.commit_edit(st, sm, e, Publish::NeverDraft)
    }

    /// Before a file rename takes the state lock: hash (and fsync) a scratch file that will
    /// become a layer, or copy out a layer that will become a scratch file, so that the
    /// lock every request needs is not held during data I/O. The result waits in
    /// `State::prepared` for the rename (checked there: same file, same blob).
    fn prepare_file_rename(&self, parent: u64, name: &str, newparent: u64, newname: &str) -> Result<()> {
        let job = {
            let mut st = self.lock();
            let (Ok(src), Ok(sp), Ok(dp)) = (
                self.lookup_node(&mut st, parent, name),
                self.parent_node(&st, parent),
                self.parent_node(&st, newparent),
            ) else {
                return Ok(());
            };
            let dest_layer =
                self.as_model_dir(&st, &dp).map(|(_, dsub)| join(&dsub, newname)).filter(|d| is_layer_name(d));
            let dest_is_scratch = match &dp {
                Node::Scratch(_) => true,
                Node::Model(_) | Node::Sub(..) => dest_layer.is_none(),
                _ => false,
            };
            match (&src, dest_layer) {
                (Node::Scratch(b), Some(dname)) if dname != MANIFEST_FILE && dname != CONFIG_FILE => {
                    let known = self.scratch_fd(&st, *b).ok().and_then(|fd| self.known_digest(&*fd));
                    match self.scratch_dir(&mut st, &sp, false)? {
                        Some(dir) if known.is_none() => Some(Job::Hash(self.scratch_path(&dir, name)?)),
                        _ => None,
                    }
                }
                (Node::File(..) | Node::Blob(_), None) if dest_is_scratch => {
                    let Some((sm, ssub)) = self.as_model_dir(&st, &sp) else { return Ok(()) };
                    let sname = join(&ssub, name);
                    match st.staged_file(&sm, &sname) {
                        // Taken out of blobs/ under the lock when nothing else uses it.
                        Some((d, _)) if st.index.refs(&d).any == 0 => None,
                        Some((d, _)) => Some(Job::CopyOut(d)),
                        None => self.layer_of(&st, &sm, &sname).ok().map(|(d, _)| Job::CopyOut(d)),
                    }
                }
                _ => None,
            }
        };
        let prepared = match job {
            None => return Ok(()),
            Some(Job::Hash(path)) => {
                let (digest, len) = hash_file(&path)?;
                File::open(&path)?.sync_all()?;
                Prepared::Hashed { path, digest, len }
            }
            Some(Job::CopyOut(digest)) => Prepared::CopiedOut { digest, path: self.copy_blob_out(&digest)? },
        };
        if let Some(Prepared::CopiedOut { path, .. }) = self.lock().prepared.replace(prepared) {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// A private, writable copy of a blob in this process's scratch folder.
    fn copy_blob_out(&self, d: &Digest) -> Result<PathBuf> {
        let (f, path) = self.store.temp_file()?;
        drop(f);
        std::io::copy(&mut self.store.open_blob(d)?, &mut OpenOptions::new().write(true).open(&path)?)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(path)
    }
}

enum Job {
    Hash(PathBuf),
    CopyOut(Digest),
}

/// Data work done for a file rename before it took the state lock.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// A scratch file that is becoming a layer: its digest and length, fsynced.
    Hashed { path: PathBuf, digest: Digest, len: u64 },
    /// A layer that is becoming a scratch file: a private copy of its blob.
    CopiedOut { digest: Digest, path: PathBuf },
}
