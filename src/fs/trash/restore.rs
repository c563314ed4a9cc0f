//! Out of the trash (the file managers' Restore): a model or folder is published again
//! byte for byte, all or nothing.

use std::fs;
use std::path::{Path, PathBuf};

use super::super::tree::{join, scope};
use super::super::txn::Publish;
use super::super::{Fs, FsError, Node, Result, State, enoent};
use super::keep::move_scratch_entries;
use super::{Item, einval, folders_between, undo_moves, walk_files};
use crate::layout::{self, Source};
use crate::name::Name;
use crate::store::{Digest, Manifest};

impl Fs {
    /// A blob whose name left `blobs/` (Ollama's start-up prune) comes back from `from`.
    pub(in crate::fs) fn relink_blob(&self, d: &Digest, from: &Path) {
        let target = self.store.blob_path(d);
        if !target.exists() && fs::hard_link(from, &target).is_ok() {
            log::info!("blob {d} restored from the trash");
        }
    }

    /// Restore: `.Trash-$UID/files/NAME` renamed to `dest` (a model folder entry in a
    /// prefix folder, or a file in a model folder).
    pub(in crate::fs) fn trash_out(
        &self,
        st: &mut State,
        uid: u32,
        name: &str,
        dest_parent: &Node,
        newname: &str,
    ) -> Result<()> {
        let rel = format!("files/{name}");
        let path = self.trash_path(uid, &rel);
        let mut ledger = self.ledger(uid);
        // Without a ledger entry (it could not be saved), a folder is a model (a trashed
        // prefix folder then restores model by model).
        let item = ledger.get(name).cloned().unwrap_or_else(|| {
            let kind = if path.is_dir() { "model" } else { "file" };
            Item { kind: kind.into(), ..Default::default() }
        });
        match (item.kind.as_str(), dest_parent) {
            ("model", Node::Dir(p)) => {
                let to = self.model_entry(st, p, newname)?;
                self.restore_model(st, &path, &to, uid, &rel)?;
                st.inodes.rekey(&Node::Trash(uid, rel), &Node::Model(to));
            }
            ("folder", Node::Dir(p)) => {
                let to = join(p, newname);
                self.restore_folder(st, &path, &to, &item, uid, &rel)?;
                st.inodes.rekey(&Node::Trash(uid, rel), &Node::Dir(to));
            }
            ("layer", Node::Model(m) | Node::Sub(m, _)) => {
                let full = match dest_parent {
                    Node::Sub(_, s) => join(s, newname),
                    _ => newname.to_string(),
                };
                let d = item
                    .digests
                    .first()
                    .and_then(|h| Digest::from_hex(h))
                    .ok_or_else(|| einval("trash item without a blob"))?;
                self.relink_blob(&d, &path);
                let len = fs::metadata(&path)?.len();
                self.apply_layer(st, m, &full, d, len)?;
                fs::remove_file(&path)?;
                st.inodes.rekey(&Node::Trash(uid, rel), &Node::File(m.clone(), full));
            }
            ("file", Node::Model(_) | Node::Sub(..)) => {
                let full = match dest_parent {
                    Node::Sub(_, s) => join(s, newname),
                    _ => newname.to_string(),
                };
                let to = self
                    .scratch_target(st, dest_parent, newname)?
                    .ok_or_else(|| einval(format!("{full:?} is a layer's name; restore it under another")))?;
                rustix::fs::renameat(rustix::fs::CWD, &path, &*to, newname)?;
                if let Some(node) = self.scratch_lookup(st, &to, newname)? {
                    st.inodes.rekey(&Node::Trash(uid, rel.clone()), &node);
                }
            }
            ("file", Node::Scratch(_)) => {
                let to = self.scratch_dir(st, dest_parent, false)?.ok_or_else(|| enoent(newname))?;
                rustix::fs::renameat(rustix::fs::CWD, &path, &*to, newname)?;
                if let Some(node) = self.scratch_lookup(st, &to, newname)? {
                    st.inodes.rekey(&Node::Trash(uid, rel.clone()), &node);
                }
            }
            _ => return Err(FsError::new(libc::EXDEV, format!("{name} cannot be restored there"))),
        }
        ledger.remove(name);
        self.save_ledger(uid, &ledger)?;
        Ok(())
    }

    /// Publish a trashed model folder again under `to`, byte for byte. All or nothing: if
    /// a file cannot be moved or the manifest cannot be written, everything moved goes
    /// back and the item stays whole in the trash.
    pub(in crate::fs) fn restore_model(
        &self,
        st: &mut State,
        dir: &Path,
        to: &Name,
        uid: u32,
        item_rel: &str,
    ) -> Result<()> {
        if st.model_exists(to) {
            return Err(FsError::new(libc::EEXIST, to.display_shortest()));
        }
        // Only a missing manifest means "not a model": any other read error stops the restore
        // before anything moves.
        let bytes = match fs::read(dir.join(layout::MANIFEST_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let m = if bytes.is_empty() { None } else { Some(Manifest::parse(&bytes).map_err(|e| einval(e.to_string()))?) };
        let layer_names: Vec<String> =
            m.as_ref().map(|m| layout::files(m).into_iter().map(|f| f.name).collect()).unwrap_or_default();
        let files = walk_files(dir);
        // Everything in the folder that is not a layer file goes back as scratch, into the
        // folder's tree.
        let was_pending = st.folders.contains_key(to);
        let (tree, new_tree) = match st.folder(to).and_then(|f| f.tree.clone()) {
            Some(t) => (t, false),
            None => (self.new_tree_path(st), true),
        };
        let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
        let is_layer = |rel: &str| layer_names.iter().any(|l| l == rel) || rel == layout::MANIFEST_FILE;
        let step = fs::create_dir_all(&tree)
            .map_err(Into::into)
            .and_then(|()| move_scratch_entries(dir, &tree, "", &is_layer, &mut moved));
        let undo = |moved: &[(PathBuf, PathBuf)]| {
            undo_moves(moved);
            if new_tree {
                let _ = fs::remove_dir_all(&tree);
            }
        };
        if let Err(e) = step {
            undo(&moved);
            return Err(e);
        }
        if let Some(m) = &m {
            for f in layout::files(m) {
                let layer = match f.source {
                    Source::Layer(i) => &m.layers[i],
                    Source::Config => &m.config,
                    Source::Manifest => continue,
                };
                if let Some(d) = layer.digest() {
                    self.relink_blob(&d, &dir.join(&f.name));
                }
            }
        }
        // The folder comes back even when it held nothing (an empty draft), listing what its
        // trash folder held; a model published again lists all its files.
        st.make_folder(to, to.entry()).tree = Some(tree.clone());
        for (rel, _) in &files {
            st.mark_written(to, rel);
        }
        if let Some(m) = m
            && let Err(e) = self.publish_or_hold(st, to, m, bytes, Publish::IfComplete)
        {
            if let Some(f) = st.folder_mut(to)
                && new_tree
            {
                f.tree = None;
            }
            if !was_pending {
                st.folders.remove(to);
            }
            undo(&moved);
            return Err(e);
        }
        if st.is_published(to)
            && let Some(f) = st.folder_mut(to)
        {
            f.written = None;
        }
        for (rel, _) in files.iter().filter(|(rel, _)| layer_names.contains(rel)) {
            st.inodes.rekey(&Node::Trash(uid, join(item_rel, rel)), &Node::File(to.clone(), rel.clone()));
        }
        if let Err(e) = fs::remove_dir_all(dir) {
            log::warn!("{}: restored, but its trash folder stays: {e}", to.display_shortest());
        }
        log::info!("{} restored from the trash", to.display_shortest());
        Ok(())
    }

    /// Restore a trashed prefix folder as `to`: every model in it, all or nothing (models
    /// already restored go back to the trash if one cannot).
    pub(in crate::fs) fn restore_folder(
        &self,
        st: &mut State,
        dir: &Path,
        to: &str,
        item: &Item,
        uid: u32,
        item_rel: &str,
    ) -> Result<()> {
        if scope(to).is_none() {
            return Err(einval(format!("{to:?} cannot be a prefix folder")));
        }
        if st.dir_exists(to) && !st.dir_children(to).is_empty() {
            return Err(FsError::new(libc::ENOTEMPTY, to.to_string()));
        }
        let mut plan = Vec::new();
        for rest in &item.members {
            let (sub, entry) = match rest.rsplit_once('/') {
                Some((sub, entry)) => (join(to, sub), entry),
                None => (to.to_string(), rest.as_str()),
            };
            let name = self.model_entry(st, &sub, entry)?;
            if st.model_exists(&name) {
                return Err(FsError::new(libc::EEXIST, name.display_shortest()));
            }
            plan.push((name, rest.clone()));
        }
        let dirs_before = st.pending_dirs.clone();
        let mut done: Vec<&(Name, String)> = Vec::new();
        for step in &plan {
            let (name, rest) = step;
            let model_rel = join(item_rel, rest);
            if let Err(e) = self.restore_model(st, &dir.join(rest), name, uid, &model_rel) {
                for (n, r) in done.iter().rev().map(|x| (&x.0, &x.1)) {
                    match self.trash_model(st, n, &dir.join(r), uid, &join(item_rel, r)) {
                        Ok(_) => st.inodes.rekey(&Node::Model(n.clone()), &Node::Trash(uid, join(item_rel, r))),
                        Err(again) => log::error!(
                            "{} stays restored ({}) after {to}/ could not come back: {}",
                            n.display_shortest(),
                            again.why,
                            e.why
                        ),
                    }
                }
                st.pending_dirs = dirs_before;
                return Err(e);
            }
            st.inodes.rekey(&Node::Trash(uid, model_rel), &Node::Model(name.clone()));
            done.push(step);
        }
        // Folders between it and its models (`team/` in `localhost:5000/team/m:v1`) may be
        // in the kernel's cache under their trash names.
        for sub in folders_between(plan.iter().map(|(_, rest)| rest.as_str())) {
            st.inodes.rekey(&Node::Trash(uid, join(item_rel, &sub)), &Node::Dir(join(to, &sub)));
        }
        if plan.is_empty() {
            st.pending_dirs.insert(to.to_string());
        }
        if let Err(e) = fs::remove_dir_all(dir) {
            log::warn!("{to}/: restored, but its trash folder stays: {e}");
        }
        log::info!("{to}/ restored from the trash ({} models)", plan.len());
        Ok(())
    }
}
