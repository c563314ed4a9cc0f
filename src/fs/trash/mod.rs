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

mod keep;
mod restore;

use super::tree::join;
use super::{Attr, FileKind, Fs, FsError, Node, Opened, Result, State, enoent};
use crate::store::Digest;

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

pub(super) fn einval(why: impl Into<String>) -> FsError {
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
        let stat = rustix::fs::lstat(self.trash_path(uid, rel)).map_err(|_| enoent(rel))?;
        let mut a = super::scratch::stat_attr(ino, &stat);
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

    /// Something left the trash for good. A top-level item of `files/` (deleted there), or
    /// an item GVFS moved out of `files/` to empty it (see `trash_rename`) once its last
    /// entry is gone: the blobs it alone kept are pruned.
    fn forget_trash_item(&self, st: &mut State, uid: u32, rel: &str) {
        let key = (uid, rel.to_string());
        if let Some(digests) = st.expunging.remove(&key) {
            log::info!("{rel} emptied from the trash of user {uid}");
            self.prune_unused(st, digests);
            return;
        }
        let Some(name) = top_item(rel) else { return };
        let mut ledger = self.ledger(uid);
        let Some(item) = ledger.remove(name) else { return };
        if let Err(e) = self.save_ledger(uid, &ledger) {
            log::warn!("trash ledger of user {uid}: {e}");
        }
        log::info!("{} ({}) emptied from the trash", name, item.model);
        self.prune_unused(st, item.blobs());
    }

    /// A rename inside the trash: GLib writes `info/X.trashinfo` through a temp file, and
    /// GVFS empties the trash by moving each item from `files/` to `expunged/` and deleting
    /// it there. An item that leaves `files/` leaves the ledger; its blobs are pruned when
    /// it is deleted wherever it went.
    pub(super) fn trash_rename(&self, st: &mut State, uid: u32, from: &str, to: &str) -> Result<()> {
        fs::rename(self.trash_path(uid, from), self.trash_path(uid, to))?;
        st.inodes.rekey(&Node::Trash(uid, from.to_string()), &Node::Trash(uid, to.to_string()));
        if let Some(digests) = st.expunging.remove(&(uid, from.to_string())) {
            st.expunging.insert((uid, to.to_string()), digests);
        }
        let Some(a) = top_item(from) else { return Ok(()) };
        let mut ledger = self.ledger(uid);
        let Some(item) = ledger.remove(a) else { return Ok(()) };
        match top_item(to) {
            Some(b) => {
                ledger.insert(b.to_string(), item);
            }
            None => {
                log::debug!("{a} ({}) leaves the trash's files/ for {to}", item.model);
                st.expunging.insert((uid, to.to_string()), item.blobs());
            }
        }
        self.save_ledger(uid, &ledger)?;
        Ok(())
    }
}

/// The top-level item of `files/` that `rel` is, if it is one.
fn top_item(rel: &str) -> Option<&str> {
    rel.strip_prefix("files/").filter(|n| !n.is_empty() && !n.contains('/'))
}

impl Item {
    fn blobs(&self) -> Vec<Digest> {
        self.digests.iter().filter_map(|h| Digest::from_hex(h)).collect()
    }
}

/// The folders between a prefix folder and its models: `team` for `team/m:v1`.
pub(super) fn folders_between<'a>(members: impl Iterator<Item = &'a str>) -> std::collections::BTreeSet<String> {
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
pub(super) fn undo_moves(moved: &[(PathBuf, PathBuf)]) {
    for (original, now) in moved.iter().rev() {
        if let Err(e) = fs::rename(now, original) {
            log::warn!("{} could not be moved back from {}: {e}", original.display(), now.display());
        }
    }
}

/// Every file below `dir`, as (path relative to `dir`, full path).
pub(super) fn walk_files(dir: &Path) -> Vec<(String, PathBuf)> {
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
