//! Into the trash: a model, a prefix folder or a file becomes a real folder or file
//! under `.ollamafs/trash/$UID/files/`, kept by hard links to its blobs.

use std::fs;
use std::path::{Path, PathBuf};

use super::super::scratch::{Fd, is_layer_folder};
use super::super::tree::join;
use super::super::{Fs, FsError, Node, Result, State};
use super::{Item, einval, folders_between, undo_moves};
use crate::layout::{self, Source};
use crate::name::Name;
use crate::store::Digest;

impl Fs {
    /// Move `src` (a model folder, a layer file or a scratch file) into `.Trash-$UID/files/NAME`.
    pub(in crate::fs) fn trash_in(
        &self,
        st: &mut State,
        src: &Node,
        parent_model: Option<&Name>,
        src_name: &str,
        uid: u32,
        name: &str,
    ) -> Result<()> {
        let (rel, dest) = self.free_trash_item(uid, name)?;
        let item = match src {
            Node::Model(m) => self.trash_model(st, m, &dest, uid, &rel)?,
            Node::Dir(prefix) if !prefix.is_empty() => self.trash_folder(st, prefix, &dest, uid, &rel)?,
            Node::File(..) | Node::Blob(_) => {
                let model = parent_model.ok_or_else(|| einval("not in a model folder"))?;
                self.trash_file(st, model, src_name, &dest)?
            }
            _ => {
                return Err(FsError::new(
                    libc::EXDEV,
                    "only models, their folders and their files can go to the trash",
                ));
            }
        };
        let mut ledger = self.ledger(uid);
        ledger.insert(name.to_string(), item);
        // The item has moved: report success even if the ledger cannot be written (Restore
        // then tells a model from a file by its shape).
        if let Err(e) = self.save_ledger(uid, &ledger) {
            log::warn!("trash ledger of user {uid}: {e}");
        }
        // The kernel keeps the moved inode under its new name. A weights inode is shared
        // by every model showing the blob, so it keeps its identity.
        if !matches!(src, Node::Blob(_)) {
            st.inodes.rekey(src, &Node::Trash(uid, rel));
        }
        Ok(())
    }

    /// A model into the trash: a real folder of hard links to its blobs, its manifest,
    /// its scratch files. Then it leaves the store; its blobs stay (they have links).
    /// All or nothing: the folder is built before the store changes, and taken apart
    /// again (scratch files moved back) if any step fails.
    pub(in crate::fs) fn trash_model(
        &self,
        st: &mut State,
        model: &Name,
        dest: &Path,
        uid: u32,
        rel: &str,
    ) -> Result<Item> {
        let mut moved = Vec::new();
        // The folder's names, before the model leaves: the kernel keeps the folder's cached
        // entries, whose inodes then stand for their place in the trash (a weights inode
        // stays the blob's: same bytes).
        let names: Vec<String> = st.all_files_of(model).into_iter().map(|f| f.name).collect();
        let built = self.build_trash_folder(st, model, dest, &mut moved);
        let digests = match built {
            Ok(d) => d,
            Err(e) => {
                undo_moves(&moved);
                let _ = fs::remove_dir_all(dest);
                return Err(e);
            }
        };
        if !st.is_published(model) {
            log::info!("draft {} moved to the trash", model.display_shortest());
        }
        if let Err(e) = self.delete_model(st, model, "moved to the trash") {
            undo_moves(&moved);
            let _ = fs::remove_dir_all(dest);
            return Err(e);
        }
        for name in names {
            st.inodes.rekey(&Node::File(model.clone(), name.clone()), &Node::Trash(uid, join(rel, &name)));
        }
        st.keep_parent_of(model);
        Ok(Item { kind: "model".into(), model: model.to_string(), digests, members: vec![] })
    }

    /// The trash folder of a model, built beside the store (which does not change here):
    /// its scratch entries first (moved, recorded in `moved` so a failure can put them
    /// back), then links to its blobs and its manifest.
    pub(in crate::fs) fn build_trash_folder(
        &self,
        st: &State,
        model: &Name,
        dest: &Path,
        moved: &mut Vec<(PathBuf, PathBuf)>,
    ) -> Result<Vec<String>> {
        fs::create_dir(dest)?;
        let mut digests = Vec::new();
        if let Some(view) = st.view(model) {
            for f in st.all_files_of(model) {
                let layer = match f.source {
                    Source::Layer(i) => &view.manifest.layers[i],
                    Source::Config => &view.manifest.config,
                    Source::Manifest => continue,
                };
                let Some(d) = layer.digest() else { continue };
                let target = dest.join(&f.name);
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                self.link_blob_to(&d, &target)?;
                digests.push(d.hex());
            }
            // A draft has no manifest.json in the mount, but its view is kept for Restore.
            fs::write(dest.join(layout::MANIFEST_FILE), &view.bytes)?;
        }
        if let Some(tree) = st.folder(model).and_then(|f| f.tree.as_ref()) {
            move_scratch_entries(tree, dest, "", &|_| false, moved)?;
        }
        Ok(digests)
    }

    /// The models below prefix folder `prefix` (published and drafts), with their paths
    /// inside it.
    pub(in crate::fs) fn models_below(&self, st: &State, prefix: &str) -> Vec<(Name, String)> {
        let below = format!("{prefix}/");
        let names: Vec<Name> = st.index.models().map(|m| m.name.clone()).chain(st.folders.keys().cloned()).collect();
        let mut out: Vec<(Name, String)> = names
            .into_iter()
            .filter_map(|n| n.display_shortest().strip_prefix(&below).map(|rest| (n.clone(), rest.to_string())))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out.dedup_by(|a, b| a.1 == b.1);
        out
    }

    /// A prefix folder (`myuser/`) into the trash: each of its models as `trash_model`
    /// moves one, below one folder. All or nothing: if one model cannot go, the ones
    /// already moved are restored.
    pub(in crate::fs) fn trash_folder(
        &self,
        st: &mut State,
        prefix: &str,
        dest: &Path,
        uid: u32,
        rel: &str,
    ) -> Result<Item> {
        let models = self.models_below(st, prefix);
        let dirs_before = st.pending_dirs.clone();
        fs::create_dir(dest)?;
        let mut done: Vec<(Name, String)> = Vec::new();
        let mut digests = Vec::new();
        for (name, rest) in &models {
            let target = dest.join(rest);
            let step = match target.parent().map(fs::create_dir_all) {
                Some(Err(e)) => Err(e.into()),
                _ => self.trash_model(st, name, &target, uid, &join(rel, rest)),
            };
            match step {
                Ok(item) => {
                    digests.extend(item.digests);
                    st.inodes.rekey(&Node::Model(name.clone()), &Node::Trash(uid, join(rel, rest)));
                    done.push((name.clone(), rest.clone()));
                }
                Err(e) => {
                    let mut whole = true;
                    for (n, r) in done.iter().rev() {
                        match self.restore_model(st, &dest.join(r), n, uid, &join(rel, r)) {
                            Ok(()) => st.inodes.rekey(&Node::Trash(uid, join(rel, r)), &Node::Model(n.clone())),
                            Err(back) => {
                                log::error!(
                                    "{} stays in the trash ({}) after {prefix} could not go: {}",
                                    n.display_shortest(),
                                    back.why,
                                    e.why
                                );
                                whole = false;
                            }
                        }
                    }
                    if whole {
                        let _ = fs::remove_dir_all(dest);
                    }
                    st.pending_dirs = dirs_before;
                    return Err(e);
                }
            }
        }
        // Empty folders made with mkdir below it go too (nothing to keep).
        let below = format!("{prefix}/");
        st.pending_dirs.retain(|d| d != prefix && !d.starts_with(&below));
        for sub in folders_between(models.iter().map(|(_, rest)| rest.as_str())) {
            st.inodes.rekey(&Node::Dir(join(prefix, &sub)), &Node::Trash(uid, join(rel, &sub)));
        }
        digests.sort();
        digests.dedup();
        log::info!("{prefix}/ moved to the trash ({} models)", models.len());
        Ok(Item {
            kind: "folder".into(),
            model: prefix.to_string(),
            digests,
            members: models.into_iter().map(|(_, rest)| rest).collect(),
        })
    }

    /// The place of a new item `name` in `.Trash-$UID/files/`: its path in the trash and on
    /// disk; `EEXIST` when taken.
    fn free_trash_item(&self, uid: u32, name: &str) -> Result<(String, PathBuf)> {
        let rel = format!("files/{name}");
        let dest = self.trash_path(uid, &rel);
        if fs::symlink_metadata(&dest).is_ok() {
            return Err(FsError::new(libc::EEXIST, rel));
        }
        Ok((rel, dest))
    }

    /// A scratch entry (file or folder) into the trash: moved there as it is.
    pub(in crate::fs) fn trash_scratch(
        &self,
        st: &mut State,
        src: &Node,
        (dir, name): (&Fd, &str),
        uid: u32,
        item: &str,
    ) -> Result<()> {
        let (rel, dest) = self.free_trash_item(uid, item)?;
        rustix::fs::renameat(&**dir, name, rustix::fs::CWD, &dest)?;
        let mut ledger = self.ledger(uid);
        ledger.insert(item.to_string(), Item { kind: "file".into(), ..Default::default() });
        if let Err(e) = self.save_ledger(uid, &ledger) {
            log::warn!("trash ledger of user {uid}: {e}");
        }
        st.inodes.rekey(src, &Node::Trash(uid, rel));
        if let Node::Scratch(b) = src {
            st.scratch_fds.remove(b);
        }
        Ok(())
    }

    /// A layer file into the trash (a hard link to its blob).
    pub(in crate::fs) fn trash_file(&self, st: &mut State, model: &Name, file: &str, dest: &Path) -> Result<Item> {
        if file == layout::MANIFEST_FILE {
            return Err(einval("manifest.json cannot go to the trash alone: trash the model"));
        }
        let (d, _) = self.layer_of(st, model, file)?;
        self.link_blob_to(&d, dest)?;
        self.remove_layer(st, model, file)?;
        Ok(Item { kind: "layer".into(), model: model.to_string(), digests: vec![d.hex()], members: vec![] })
    }

    /// A hard link to blob `d` (from `blobs/`, or this process's hold when Ollama pruned the name).
    pub(in crate::fs) fn link_blob_to(&self, d: &Digest, target: &Path) -> Result<()> {
        match fs::hard_link(self.store.blob_path(d), target) {
            Ok(()) => Ok(()),
            Err(_) if self.store.is_held(d) => fs::hard_link(
                self.store.scratch_dir().join(std::process::id().to_string()).join("held").join(d.blob_file_name()),
                target,
            )
            .map_err(Into::into),
            Err(e) => Err(FsError::new(libc::EIO, format!("blob {d} cannot be kept in the trash: {e}"))),
        }
    }
}

/// Move the scratch entries of a model folder's tree `from` into folder `to` (layer folders
/// such as `files/` are merged, not moved: `to` may hold layers there), recording each move.
/// Names for which `skip` says so (a trash folder's layer files) stay.
pub(in crate::fs) fn move_scratch_entries(
    from: &Path,
    to: &Path,
    sub: &str,
    skip: &dyn Fn(&str) -> bool,
    moved: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<()> {
    let Ok(entries) = fs::read_dir(from) else { return Ok(()) };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let full = join(sub, &name);
        let target = to.join(&name);
        if skip(&full) {
            continue;
        }
        if is_layer_folder(&full) && e.file_type()?.is_dir() {
            fs::create_dir_all(&target)?;
            move_scratch_entries(&e.path(), &target, &full, skip, moved)?;
        } else {
            fs::rename(e.path(), &target)?;
            moved.push((e.path(), target));
        }
    }
    Ok(())
}
