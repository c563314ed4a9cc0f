//! Renames: model folders (the manifest moves, the folder's state with it), prefix
//! folders (every model below), and files between names and folders (a scratch file onto
//! a layer name commits it, a layer onto a scratch name copies it out).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::edit::*;
use super::tree::{join, scope};
use super::txn::Publish;
use super::{Fs, FsError, Node, Result, ScratchFile, State, enoent};
use crate::layout::{CONFIG_FILE, MANIFEST_FILE};
use crate::name::Name;
use crate::store::{Digest, hash_file};

impl Fs {
    pub fn rename(&self, parent: u64, name: &str, newparent: u64, newname: &str, flags: u32) -> Result<()> {
        self.refuse_if_read_only()?;
        check_name_length(newname)?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(einval("RENAME_EXCHANGE is not supported"));
        }
        // Data work (hashing a scratch file that becomes a layer, copying a layer out to a
        // scratch name) happens before the state lock is taken for the change itself.
        self.prepare_file_rename(parent, name, newparent, newname)?;
        let res = self.rename_locked(parent, name, newparent, newname, flags);
        if res.is_ok() {
            let st = self.lock();
            let became_weights = self.lookup_node(&st, newparent, newname).is_ok_and(|n| matches!(n, Node::Blob(_)));
            drop(st);
            if became_weights {
                self.invalidate_entry_later(newparent, newname);
            }
        }
        res
    }

    fn rename_locked(&self, parent: u64, name: &str, newparent: u64, newname: &str, flags: u32) -> Result<()> {
        let mut st = self.lock();
        let src = self.lookup_node(&st, parent, name)?;
        let dest_parent = self.parent_node(&st, newparent)?;
        let dest_existing = self.lookup_node(&st, newparent, newname).ok();
        if flags & libc::RENAME_NOREPLACE != 0 && dest_existing.is_some() {
            return Err(FsError::new(libc::EEXIST, newname.to_string()));
        }
        match (&src, &dest_parent) {
            // The Trash: in, out, and within.
            (Node::Trash(u1, from), Node::Trash(u2, p)) if u1 == u2 => {
                self.trash_rename(&mut st, *u1, from, &join(p, newname))
            }
            (_, Node::Trash(uid, p)) if p == "files" => {
                let parent_model = self.as_model_dir(&st, &self.parent_node(&st, parent)?);
                let (pm, src_name) = match &parent_model {
                    Some((m, s)) => (Some(m.clone()), join(s, name)),
                    None => (None, name.to_string()),
                };
                self.trash_in(&mut st, &src, pm.as_ref(), &src_name, *uid, newname)
            }
            (Node::Trash(uid, from), _) if from.strip_prefix("files/").is_some_and(|n| !n.contains('/')) => {
                let item = from["files/".len()..].to_string();
                self.trash_out(&mut st, *uid, &item, &dest_parent, newname)
            }
            (Node::Trash(..), _) | (_, Node::Trash(..)) => {
                Err(FsError::new(libc::EXDEV, format!("{name:?} cannot move there")))
            }
            (Node::Model(from), Node::Dir(p)) => {
                let to = match st.is_published(from) {
                    // A published model needs a model name (a draft may take any folder
                    // name; a published model would leave the store).
                    true => self.model_at(p, newname)?,
                    false => self.model_entry(&st, p, newname)?,
                };
                self.rename_model(&mut st, from, &to, newname.to_string())
            }
            (Node::Dir(from), Node::Dir(p)) => self.rename_prefix(&mut st, from, &join(p, newname)),
            (Node::File(..) | Node::Blob(_), Node::Model(_) | Node::Sub(..)) => {
                let (pm, psub) = match self.as_model_dir(&st, &self.parent_node(&st, parent)?) {
                    Some(x) => x,
                    None => return Err(einval("source is not in a model folder")),
                };
                let (dm, dsub) =
                    self.as_model_dir(&st, &dest_parent).ok_or_else(|| einval("destination is not a model folder"))?;
                self.rename_file(&mut st, (&pm, &join(&psub, name)), (&dm, &join(&dsub, newname)))
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
        if st.is_published(to) || (st.model_exists(to) && !st.model_children(to, "").is_empty()) {
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
        let (skey, dkey) = (skey.clone(), dkey.clone());
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
        // A scratch file moving onto a layer name is committed as that layer: its file
        // is renamed into blobs/, no byte copied.
        if let Some(s) = st.scratch_file(sm, sname).cloned() {
            if !is_layer_name(dname) {
                if let Some(old) = st.folder_entry(dm).scratch.remove(dname) {
                    let _ = std::fs::remove_file(old.path);
                }
                st.folder_entry(sm).scratch.remove(sname);
                st.folder_entry(dm).scratch.insert(dname.to_string(), s);
                return Ok(());
            }
            if dname == MANIFEST_FILE {
                // Validated and installed first: on failure the scratch file stays.
                self.install_manifest_locked(st, dm, std::fs::read(&s.path)?)?;
                st.folder_entry(sm).scratch.remove(sname);
                let _ = std::fs::remove_file(&s.path);
                return Ok(());
            }
            if dname == CONFIG_FILE {
                check_config_json(dm, &std::fs::read(&s.path)?)?;
            }
            let (digest, len) = match st.prepared.take() {
                Some(Prepared::Hashed { path, digest, len }) if path == s.path => (digest, len),
                _ => hash_file(&s.path)?,
            };
            let file = File::open(&s.path)?;
            self.store.adopt_blob_held(&s.path, &file, &digest, len)?;
            st.folder_entry(sm).scratch.remove(sname);
            st.blob_meta.remove(&digest);
            let res = self.apply_layer(st, dm, dname, digest, len);
            self.store.release(&digest);
            return res;
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
        // A layer moving to a scratch name (an editor's backup): copy it out, detach it.
        let (d, _) = src_layer;
        let path = match st.prepared.take() {
            Some(Prepared::CopiedOut { digest, path }) if digest == d => path,
            other => {
                if let Some(Prepared::CopiedOut { path, .. }) = other {
                    let _ = std::fs::remove_file(path);
                }
                self.copy_blob_out(&d)?
            }
        };
        st.folder_entry(dm).scratch.insert(dkey.1, ScratchFile { path });
        let mut e = st.edit(sm);
        if let Some(i) = e.remove(sname) {
            st.folder_entry(sm).vacated.insert(skey.1, i);
        }
        self.commit_edit(st, sm, e, Publish::NeverDraft)
    }

    /// Before a file rename takes the state lock: hash (and fsync) a scratch file that will
    /// become a layer, or copy out a layer that will become a scratch file, so that the
    /// lock every request needs is not held during data I/O. The result waits in
    /// `State::prepared` for the rename (checked there: same file, same blob).
    fn prepare_file_rename(&self, parent: u64, name: &str, newparent: u64, newname: &str) -> Result<()> {
        let job = {
            let st = self.lock();
            let (Some((sm, ssub)), Some((_, dsub))) = (
                self.parent_node(&st, parent).ok().and_then(|n| self.as_model_dir(&st, &n)),
                self.parent_node(&st, newparent).ok().and_then(|n| self.as_model_dir(&st, &n)),
            ) else {
                return Ok(());
            };
            let (sname, dname) = (join(&ssub, name), join(&dsub, newname));
            if let Some(s) = st.scratch_file(&sm, &sname) {
                let big = is_layer_name(&dname) && dname != MANIFEST_FILE && dname != CONFIG_FILE;
                big.then(|| Job::Hash(s.path.clone()))
            } else if !is_layer_name(&dname) && st.staged_file(&sm, &sname).is_none() {
                self.layer_of(&st, &sm, &sname).ok().map(|(d, _)| Job::CopyOut(d))
            } else {
                None
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
