//! One model folder's life in the mount, in one place (docs/SEMANTICS.md, "Folders").
//!
//! Every model folder the mount knows more about than the store does has one `Folder`:
//! the name it is listed under, its work in progress (a draft's or a held change's
//! manifest, a `manifest.json` waiting for blobs), its stable layer names, the files
//! written into it, its scratch files and folders, the layer files being created, rsync's
//! finished temp files, and its times. A move re-keys one entry; a removal drops one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::writer::WaitingManifest;
use super::{Fs, Node, State};
use crate::name::Name;
use crate::store::Digest;
use crate::store::index::Model;

#[derive(Debug)]
pub(crate) struct Folder {
    /// The name the folder is listed under in its prefix folder: `model:tag`, a draft's
    /// whole name, or the colon-less name it was made with (`foo`, the model `foo:latest`).
    pub(super) entry: String,
    /// What the folder shows when it differs from the store: a draft's manifest (nothing
    /// in the store) or a held change (the store keeps the last complete manifest).
    pub(super) work: Option<Arc<Model>>,
    /// A folder made in the mount shows only the files written into it (so `cp -r`, whose
    /// `O_EXCL` creates come in any order, never meets a generated `config.json`).
    /// `None`: it shows every file of its manifest.
    pub(super) written: Option<BTreeSet<String>>,
    /// Stable layer file names, by layer position: a name never shifts while the mount
    /// lives (`license-2` stays `license-2` when `license` goes).
    pub(super) pins: Option<Vec<String>>,
    /// Positions of removed layers, so that `rm` + `cp` (or `cp -f`) puts the
    /// replacement back where the old layer was.
    pub(super) vacated: HashMap<String, usize>,
    /// A `manifest.json` written into the folder, waiting for its blobs.
    pub(super) waiting: Option<WaitingManifest>,
    /// Folders made inside it (`files/…`) that hold nothing yet.
    pub(super) subs: BTreeSet<String>,
    /// Its scratch tree: the real folder holding every entry that is not part of the
    /// model (see `scratch`). It belongs to the folder, whatever its name becomes.
    pub(super) tree: Option<PathBuf>,
    /// Layer files made by create and not closed yet (shown while being written).
    pub(super) creating: BTreeSet<String>,
    /// Copy tools' temp files for layers (rsync), closed: their blob (held) and length.
    pub(super) staged: BTreeMap<String, (Digest, u64)>,
    /// When it was made in the mount, or last changed through it (its mtime and ctime).
    pub(super) changed: SystemTime,
}

impl Folder {
    pub(super) fn new(entry: String, written: bool, now: SystemTime) -> Folder {
        Folder {
            entry,
            work: None,
            written: written.then(BTreeSet::new),
            pins: None,
            vacated: HashMap::new(),
            waiting: None,
            subs: BTreeSet::new(),
            tree: None,
            creating: BTreeSet::new(),
            staged: BTreeMap::new(),
            changed: now,
        }
    }

    /// Does the folder show file `name` (the files written into a folder made here)?
    pub(super) fn shows(&self, name: &str) -> bool {
        self.written.as_ref().is_none_or(|w| w.contains(name))
    }

    /// Blobs the folder's own state keeps (staged temp files).
    pub(super) fn staged_digests(&self) -> impl Iterator<Item = Digest> + '_ {
        self.staged.values().map(|(d, _)| *d)
    }
}

impl State {
    pub(super) fn folder(&self, n: &Name) -> Option<&Folder> {
        self.folders.get(n)
    }

    pub(super) fn folder_mut(&mut self, n: &Name) -> Option<&mut Folder> {
        self.folders.get_mut(n)
    }

    /// The folder of `n`, made when the mount knows nothing of it yet (a published model
    /// changed through the mount for the first time is listed under its own entry).
    pub(super) fn folder_entry(&mut self, n: &Name) -> &mut Folder {
        let now = self.clock.system_now();
        self.folders.entry(n.clone()).or_insert_with(|| Folder::new(n.entry(), false, now))
    }

    /// A folder made in the mount (mkdir, a copy's first file): it shows what is written into it.
    pub(super) fn make_folder(&mut self, n: &Name, entry: String) -> &mut Folder {
        let now = self.clock.system_now();
        self.folders.entry(n.clone()).or_insert_with(|| Folder::new(entry, true, now))
    }

    /// A prefix folder's entries changed (its mtime and ctime).
    pub(super) fn touch_dir(&mut self, path: &str) {
        let now = self.clock.system_now();
        self.dir_times.insert(path.to_string(), now);
    }

    /// The folder changed (a file came, went or was renamed).
    pub(super) fn touch(&mut self, n: &Name) {
        let now = self.clock.system_now();
        if let Some(f) = self.folders.get_mut(n) {
            f.changed = now;
        }
    }

    /// A file was written into a folder: it shows from now on.
    pub(super) fn mark_written(&mut self, n: &Name, file: &str) {
        let now = self.clock.system_now();
        if let Some(f) = self.folders.get_mut(n) {
            f.changed = now;
            if let Some(w) = &mut f.written {
                w.insert(file.to_string());
            }
        }
    }

    /// A `manifest.json` was written into the folder: it shows exactly that manifest from
    /// now on, so files written before that it does not name leave the listing.
    pub(super) fn now_exactly_its_manifest(&mut self, n: &Name) {
        let names: std::collections::BTreeSet<String> = match self.view(n) {
            Some(m) => crate::layout::files(&m.manifest).into_iter().map(|f| f.name).collect(),
            None => Default::default(),
        };
        self.mark_written(n, crate::layout::MANIFEST_FILE);
        if let Some(w) = self.folders.get_mut(n).and_then(|f| f.written.as_mut()) {
            w.retain(|f| names.contains(f) || f == crate::layout::MANIFEST_FILE);
        }
    }

    /// A file left a folder: a folder made here no longer lists it.
    pub(super) fn mark_gone(&mut self, n: &Name, file: &str) {
        let now = self.clock.system_now();
        if let Some(f) = self.folders.get_mut(n) {
            f.changed = now;
            if let Some(w) = &mut f.written {
                w.remove(file);
            }
        }
    }

    /// The work in progress of a folder (draft or held change).
    pub(super) fn work(&self, n: &Name) -> Option<&Arc<Model>> {
        self.folders.get(n).and_then(|f| f.work.as_ref())
    }

    pub(super) fn set_work(&mut self, n: &Name, m: Option<Arc<Model>>) {
        match m {
            Some(m) => self.folder_entry(n).work = Some(m),
            None => {
                if let Some(f) = self.folders.get_mut(n) {
                    f.work = None;
                }
            }
        }
    }

    pub(super) fn waiting(&self, n: &Name) -> Option<&WaitingManifest> {
        self.folders.get(n).and_then(|f| f.waiting.as_ref())
    }

    pub(super) fn take_waiting(&mut self, n: &Name) -> Option<WaitingManifest> {
        self.folders.get_mut(n).and_then(|f| f.waiting.take())
    }

    pub(super) fn staged_file(&self, n: &Name, file: &str) -> Option<(Digest, u64)> {
        self.folders.get(n).and_then(|f| f.staged.get(file).copied())
    }

    pub(super) fn is_creating(&self, n: &Name, file: &str) -> bool {
        self.folders.get(n).is_some_and(|f| f.creating.contains(file))
    }
}

impl Fs {
    /// A model folder is gone for good (rmdir, deleted by another process or over the
    /// API, trashed): its scratch files, work and names go with it.
    pub(super) fn forget_model_folder(&self, st: &mut State, model: &Name) {
        let Some(f) = st.folders.remove(model) else { return };
        // Open descriptors keep working on what was in it, as on any filesystem.
        if let Some(t) = &f.tree {
            let _ = std::fs::remove_dir_all(t);
        }
        for d in f.staged_digests() {
            self.store.release(&d);
        }
    }

    /// Move a model folder to a new name (`mv`): one entry re-keyed, with everything in it
    /// (waiting manifest, held change, scratch files, names). Its inodes follow.
    pub(super) fn move_model_folder(&self, st: &mut State, from: &Name, to: &Name, entry: String) {
        // Every inode the kernel may hold below the folder follows it.
        let mut names: Vec<String> = st.all_files_of(from).into_iter().map(|f| f.name).collect();
        let mut subs: Vec<String> = Vec::new();
        if let Some(f) = st.folders.get(from) {
            names.extend(f.staged.keys().chain(f.creating.iter()).cloned());
            subs.extend(f.subs.iter().cloned());
        }
        for n in &names {
            let mut dir = n.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                subs.push(parent.to_string());
                dir = parent;
            }
        }
        for f in names {
            st.inodes.rekey(&Node::File(from.clone(), f.clone()), &Node::File(to.clone(), f));
        }
        for s in subs {
            st.inodes.rekey(&Node::Sub(from.clone(), s.clone()), &Node::Sub(to.clone(), s));
        }
        let now = st.clock.system_now();
        let mut folder = st.folders.remove(from).unwrap_or_else(|| Folder::new(entry.clone(), false, now));
        folder.entry = entry;
        folder.vacated.clear();
        folder.changed = now;
        if let Some(w) = folder.work.take() {
            let moved = Model {
                name: to.clone(),
                bytes: w.bytes.clone(),
                manifest: w.manifest.clone(),
                id: w.id.clone(),
                stamp: w.stamp,
            };
            folder.work = Some(Arc::new(moved));
        }
        st.folders.insert(to.clone(), folder);
        st.inodes.rekey(&Node::Model(from.clone()), &Node::Model(to.clone()));
        st.keep_parent_of(from);
    }
}
