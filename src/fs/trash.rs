//! The freedesktop.org Trash inside the mount, so that GIO (Nautilus, Thunar) trashes a
//! model by `rename` instead of failing (docs/SEMANTICS.md, "Trash").
//!
//! `MOUNT/.Trash-$UID/` shows the real folder `<store>/.ollamafs/trash/$UID/` (owned by that
//! user, mode 0700, with `files/` and `info/`), so `info/*.trashinfo` files are ordinary
//! files. What is renamed into `files/` leaves the store and is kept there without copying
//! any data:
//! * a model folder becomes a real folder whose layer files are hard links to their blobs
//!   (plus a copy of `manifest.json`, and the model's scratch files), so neither ollamafs'
//!   prune nor Ollama's start-up prune can take its data;
//! * a layer file becomes a hard link to its blob; a scratch file is moved;
//! * a namespace folder (`myuser/`) becomes a folder of such model folders, all or nothing.
//!
//! Renaming an item back out (the file managers' Restore) publishes it again byte for byte
//! (a blob name Ollama pruned meanwhile is linked back from the trash). Removing an item
//! from `files/` (emptying the trash) prunes the blobs no manifest uses any more.
//! A ledger per user (`<store>/.ollamafs/trash/$UID.json`) remembers what each item was.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::tree::{join, scope};
use super::txn::Publish;
use super::{Attr, FileKind, Fs, FsError, Node, Opened, Result, ScratchFile, State, enoent, scratch_attr};
use crate::layout::{self, Source};
use crate::name::Name;
use crate::store::{Digest, Manifest};

/// Folder names at the mount root: `.Trash-1000`.
pub const TRASH_PREFIX: &str = ".Trash-";

/// The uid a root entry `.Trash-$UID` stands for.
pub fn trash_uid(name: &str) -> Option<u32> {
    let n = name.strip_prefix(TRASH_PREFIX)?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok()
}

/// What a top-level item of `files/` was.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Item {
    /// "model", "layer", "file" or "folder" (a prefix folder such as `myuser/`).
    kind: String,
    /// The model it was (or came from), fully qualified; for a folder, its path.
    model: String,
    /// Blobs it keeps (hex), for the prune when it is removed.
    digests: Vec<String>,
    /// A folder's models, as paths inside it (`llama3.2:custom`, `team/m:v1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    members: Vec<String>,
}

type Ledger = BTreeMap<String, Item>;

fn einval(why: impl Into<String>) -> FsError {
    FsError::new(libc::EINVAL, why)
}

impl Fs {
    fn trash_root(&self) -> PathBuf {
        self.store.scratch_dir().join("trash")
    }

    /// The real path behind `.Trash-$UID/rel`.
    pub(super) fn trash_path(&self, uid: u32, rel: &str) -> PathBuf {
        let base = self.trash_root().join(uid.to_string());
        if rel.is_empty() { base } else { base.join(rel) }
    }

    fn ledger_path(&self, uid: u32) -> PathBuf {
        self.trash_root().join(format!("{uid}.json"))
    }

    fn ledger(&self, uid: u32) -> Ledger {
        fs::read(self.ledger_path(uid)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn save_ledger(&self, uid: u32, ledger: &Ledger) -> io::Result<()> {
        let path = self.ledger_path(uid);
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec(ledger).map_err(io::Error::other)?)?;
        fs::rename(tmp, path)
    }

    /// The `.Trash-$UID` folders that exist, for the root listing.
    pub(super) fn trash_dirs(&self) -> Vec<u32> {
        let mut out: Vec<u32> = fs::read_dir(self.trash_root())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        out.sort();
        out
    }

    /// Look up `name` in trash folder `rel`, or `.Trash-$UID` at the root.
    pub(super) fn trash_lookup(&self, uid: u32, rel: &str, name: &str) -> Option<Node> {
        let child = join(rel, name);
        fs::symlink_metadata(self.trash_path(uid, &child)).ok().map(|_| Node::Trash(uid, child))
    }

    pub(super) fn trash_attr(&self, ino: u64, uid: u32, rel: &str) -> Result<Attr> {
        let meta = fs::symlink_metadata(self.trash_path(uid, rel)).map_err(|_| enoent(rel))?;
        let mut a = scratch_attr(ino, &meta);
        a.nlink = meta.nlink() as u32;
        a.kind = if meta.is_dir() {
            FileKind::Dir
        } else if meta.file_type().is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::File
        };
        Ok(a)
    }

    pub(super) fn trash_children(&self, uid: u32, rel: &str) -> Result<Vec<(String, Node)>> {
        let rd = fs::read_dir(self.trash_path(uid, rel)).map_err(|_| enoent(rel))?;
        let mut out: Vec<(String, Node)> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|n| (n.clone(), Node::Trash(uid, join(rel, &n))))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// `mkdir .Trash-$UID` (GLib makes it when it first trashes): the folder with `files/`
    /// and `info/`, owned by that user, mode 0700, as the Trash specification requires.
    pub(super) fn trash_make(&self, uid: u32) -> Result<Node> {
        let base = self.trash_path(uid, "");
        if base.exists() {
            return Err(FsError::new(libc::EEXIST, format!("{TRASH_PREFIX}{uid}")));
        }
        for dir in [base.clone(), base.join("files"), base.join("info")] {
            fs::create_dir_all(&dir)?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
            // The Trash belongs to its user (only root can give it; a user's own mount
            // makes its own trash, which it already owns).
            let _ = std::os::unix::fs::chown(&dir, Some(uid), None);
        }
        Ok(Node::Trash(uid, String::new()))
    }

    pub(super) fn trash_mkdir(&self, uid: u32, rel: &str, mode: u32) -> Result<()> {
        let p = self.trash_path(uid, rel);
        fs::create_dir(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777))?;
        Ok(())
    }

    pub(super) fn trash_open(&self, ino: u64, uid: u32, rel: &str, flags: i32) -> Result<Opened> {
        self.open_scratch(&self.trash_path(uid, rel), flags, ino)
    }

    pub(super) fn trash_create(
        &self,
        st: &mut State,
        uid: u32,
        rel: &str,
        mode: u32,
        flags: i32,
    ) -> Result<(Attr, Opened)> {
        let path = self.trash_path(uid, rel);
        OpenOptions::new().write(true).create_new(true).mode(mode & 0o7777).open(&path)?;
        let node = Node::Trash(uid, rel.to_string());
        let ino = st.inodes.remember(&node);
        let attr = self.trash_attr(ino, uid, rel)?;
        let opened = self.open_scratch(&path, flags & !(libc::O_CREAT | libc::O_EXCL), ino)?;
        Ok((attr, opened))
    }

    pub(super) fn trash_setattr(&self, uid: u32, rel: &str, set: &super::SetAttr) -> Result<()> {
        let f = File::open(self.trash_path(uid, rel))?;
        super::files::apply_to_file(&f, set)
    }

    /// unlink inside the trash; removing a top-level item of `files/` (emptying the
    /// trash) prunes what it alone kept.
    pub(super) fn trash_unlink(&self, st: &mut State, uid: u32, rel: &str) -> Result<()> {
        let path = self.trash_path(uid, rel);
        if fs::symlink_metadata(&path).map_err(|_| enoent(rel))?.is_dir() {
            return Err(FsError::new(libc::EISDIR, rel.to_string()));
        }
        fs::remove_file(&path)?;
        self.forget_trash_item(st, uid, rel);
        Ok(())
    }

    pub(super) fn trash_rmdir(&self, st: &mut State, uid: u32, rel: &str) -> Result<()> {
        fs::remove_dir(self.trash_path(uid, rel))?;
        self.forget_trash_item(st, uid, rel);
        Ok(())
    }

    fn forget_trash_item(&self, st: &mut State, uid: u32, rel: &str) {
        let Some(name) = rel.strip_prefix("files/").filter(|n| !n.contains('/')) else { return };
        let mut ledger = self.ledger(uid);
        let Some(item) = ledger.remove(name) else { return };
        if let Err(e) = self.save_ledger(uid, &ledger) {
            log::warn!("trash ledger of user {uid}: {e}");
        }
        let candidates: Vec<Digest> = item.digests.iter().filter_map(|h| Digest::from_hex(h)).collect();
        log::info!("{} ({}) emptied from the trash", name, item.model);
        self.prune_unused(st, candidates);
    }

    /// A rename inside the trash (GLib writes `info/X.trashinfo` through a temp file).
    pub(super) fn trash_rename(&self, st: &mut State, uid: u32, from: &str, to: &str) -> Result<()> {
        fs::rename(self.trash_path(uid, from), self.trash_path(uid, to))?;
        st.inodes.rekey(&Node::Trash(uid, from.to_string()), &Node::Trash(uid, to.to_string()));
        let (Some(a), Some(b)) = (from.strip_prefix("files/"), to.strip_prefix("files/")) else { return Ok(()) };
        let mut ledger = self.ledger(uid);
        if let Some(item) = ledger.remove(a) {
            ledger.insert(b.to_string(), item);
            self.save_ledger(uid, &ledger)?;
        }
        Ok(())
    }

    /// Move `src` (a model folder, a layer file or a scratch file) into `.Trash-$UID/files/NAME`.
    pub(super) fn trash_in(
        &self,
        st: &mut State,
        src: &Node,
        parent_model: Option<&Name>,
        src_name: &str,
        uid: u32,
        name: &str,
    ) -> Result<()> {
        let rel = format!("files/{name}");
        let dest = self.trash_path(uid, &rel);
        if fs::symlink_metadata(&dest).is_ok() {
            return Err(FsError::new(libc::EEXIST, rel));
        }
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
    fn trash_model(&self, st: &mut State, model: &Name, dest: &Path, uid: u32, rel: &str) -> Result<Item> {
        let mut moved = Vec::new();
        let built = self.build_trash_folder(st, model, dest, &mut moved);
        let published = st.index.get(model).cloned();
        let left_store = match (&built, &published) {
            (Ok(_), Some(_)) => self.store.remove_manifest(model).map(|_| ()).map_err(FsError::from),
            _ => Ok(()),
        };
        let digests = match built.and_then(|d| left_store.map(|()| d)) {
            Ok(d) => d,
            Err(e) => {
                undo_moves(&moved);
                let _ = fs::remove_dir_all(dest);
                return Err(e);
            }
        };
        // The kernel keeps the folder's cached entries: its files' inodes now stand for
        // their place in the trash (a weights inode stays the blob's: same bytes).
        let mut names: Vec<String> = st.files_of(model).into_iter().map(|f| f.name).collect();
        if let Some(f) = st.folder_mut(model) {
            // Moved into the trash folder already: not to be removed with the folder.
            names.extend(std::mem::take(&mut f.scratch).into_keys());
        }
        for name in names {
            st.inodes.rekey(&Node::File(model.clone(), name.clone()), &Node::Trash(uid, join(rel, &name)));
        }
        if published.is_some() {
            st.index.remove(model);
        }
        self.forget_model_folder(st, model);
        st.keep_parent_of(model);
        let mut candidates = self.sync_holds(st);
        candidates.extend(published.iter().flat_map(|m| m.manifest.digests()));
        self.prune_unused(st, candidates);
        log::info!("{} moved to the trash", model.display_shortest());
        Ok(Item { kind: "model".into(), model: model.to_string(), digests, members: vec![] })
    }

    /// The trash folder of a model, built beside the store (which does not change here).
    /// Scratch files moved into it are recorded in `moved` so a failure can put them back.
    fn build_trash_folder(
        &self,
        st: &State,
        model: &Name,
        dest: &Path,
        moved: &mut Vec<(PathBuf, PathBuf)>,
    ) -> Result<Vec<String>> {
        fs::create_dir(dest)?;
        let mut digests = Vec::new();
        if let Some(view) = st.view(model) {
            for f in st.files_of(model) {
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
        for (name, s) in st.folder(model).map(|f| &f.scratch).into_iter().flatten() {
            let target = dest.join(name);
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::rename(&s.path, &target)?;
            moved.push((s.path.clone(), target));
        }
        Ok(digests)
    }

    /// The models below prefix folder `prefix` (published and drafts), with their paths
    /// inside it.
    fn models_below(&self, st: &State, prefix: &str) -> Vec<(Name, String)> {
        let below = format!("{prefix}/");
        let names: Vec<Name> =
            st.index.models().map(|m| m.name.clone()).chain(st.folders.keys().cloned()).collect();
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
    fn trash_folder(&self, st: &mut State, prefix: &str, dest: &Path, uid: u32, rel: &str) -> Result<Item> {
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

    /// A layer file into the trash (a hard link to its blob), or a scratch file (moved).
    fn trash_file(&self, st: &mut State, model: &Name, file: &str, dest: &Path) -> Result<Item> {
        if let Some(s) = st.folder_mut(model).and_then(|f| f.scratch.remove(file)) {
            fs::rename(&s.path, dest)?;
            return Ok(Item { kind: "file".into(), model: model.to_string(), ..Default::default() });
        }
        if file == layout::MANIFEST_FILE {
            return Err(einval("manifest.json cannot go to the trash alone: trash the model"));
        }
        let (d, _) = self.layer_of(st, model, file)?;
        self.link_blob_to(&d, dest)?;
        self.remove_layer(st, model, file)?;
        Ok(Item { kind: "layer".into(), model: model.to_string(), digests: vec![d.hex()], members: vec![] })
    }

    /// A hard link to blob `d` (from `blobs/`, or this process's hold when Ollama pruned the name).
    fn link_blob_to(&self, d: &Digest, target: &Path) -> Result<()> {
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

    /// A blob whose name left `blobs/` (Ollama's start-up prune) comes back from `from`.
    fn relink_blob(&self, d: &Digest, from: &Path) {
        let target = self.store.blob_path(d);
        if !target.exists() && fs::hard_link(from, &target).is_ok() {
            log::info!("blob {d} restored from the trash");
        }
    }

    /// Restore: `.Trash-$UID/files/NAME` renamed to `dest` (a model folder entry in a
    /// prefix folder, or a file in a model folder).
    pub(super) fn trash_out(
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
                self.replace_or_add(st, m, &full, d, len)?;
                fs::remove_file(&path)?;
                st.inodes.rekey(&Node::Trash(uid, rel), &Node::File(m.clone(), full));
            }
            ("file", Node::Model(m) | Node::Sub(m, _)) => {
                let full = match dest_parent {
                    Node::Sub(_, s) => join(s, newname),
                    _ => newname.to_string(),
                };
                let (f, temp) = self.store.temp_file()?;
                drop(f);
                fs::rename(&path, &temp)?;
                st.folder_entry(m).scratch.insert(full.clone(), ScratchFile { path: temp });
                st.mark_written(m, &full);
                st.inodes.rekey(&Node::Trash(uid, rel), &Node::File(m.clone(), full));
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
    fn restore_model(&self, st: &mut State, dir: &Path, to: &Name, uid: u32, item_rel: &str) -> Result<()> {
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
        // Everything in the folder that is not a layer file goes back as scratch.
        let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut scratch: Vec<(String, PathBuf)> = Vec::new();
        for (rel, path) in &files {
            if layer_names.contains(rel) || rel == layout::MANIFEST_FILE {
                continue;
            }
            let step = self.store.temp_file().and_then(|(f, temp)| {
                drop(f);
                fs::rename(path, &temp).inspect_err(|_| {
                    let _ = fs::remove_file(&temp);
                })?;
                Ok(temp)
            });
            match step {
                Ok(temp) => {
                    moved.push((path.clone(), temp.clone()));
                    scratch.push((rel.clone(), temp));
                }
                Err(e) => {
                    undo_moves(&moved);
                    return Err(e.into());
                }
            }
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
        let was_pending = st.folders.contains_key(to);
        for (rel, temp) in &scratch {
            st.folder_entry(to).scratch.insert(rel.clone(), ScratchFile { path: temp.clone() });
        }
        if let Some(m) = m
            && let Err(e) = self.publish_or_hold(st, to, m, bytes, Publish::IfComplete)
        {
            if let Some(f) = st.folder_mut(to) {
                for (rel, _) in &scratch {
                    f.scratch.remove(rel);
                }
            }
            if !was_pending {
                st.folders.remove(to);
            }
            undo_moves(&moved);
            return Err(e);
        }
        for (rel, _) in &files {
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
    fn restore_folder(
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

/// The folders between a prefix folder and its models: `team` for `team/m:v1`.
fn folders_between<'a>(members: impl Iterator<Item = &'a str>) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for rest in members {
        let mut sub = rest;
        while let Some((parent, _)) = sub.rsplit_once('/') {
            out.insert(parent.to_string());
            sub = parent;
        }
    }
    out
}

/// Put moved files back where they were (`(original, moved to)`), last first.
fn undo_moves(moved: &[(PathBuf, PathBuf)]) {
    for (original, now) in moved.iter().rev() {
        if let Err(e) = fs::rename(now, original) {
            log::warn!("{} could not be moved back from {}: {e}", original.display(), now.display());
        }
    }
}

/// Every file below `dir`, as (path relative to `dir`, full path).
fn walk_files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(dir) {
                out.push((rel.to_string_lossy().into_owned(), p.clone()));
            }
        }
    }
    out
}
