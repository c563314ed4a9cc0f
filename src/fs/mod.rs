//! The filesystem's meaning, independent of FUSE: inodes, lookup, attributes, listing,
//! opening and reading, and (in `write`) every change. Plain values in and out, errors
//! carry their errno; `crate::fuse` only translates.

mod catalog;
mod clock;
mod trash;
mod tree;
pub mod watch;
mod work;
mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::layout::{self, Kind, Source};
use crate::name::Name;
use crate::store::index::{Index, Model};
use crate::store::{Digest, Store, StoreError};

pub use clock::Clock;
pub use tree::{join, scope, split};
pub use write::{SetAttr, Writer};

pub const ROOT_INO: u64 = 1;
/// Inode numbers come in ranges so that sorting by inode (what `cp -r` does before
/// copying a folder) gives: folders and text files, then weights, then `config.json`,
/// then `manifest.json`. So `manifest.json` is copied last and makes the copy exact.
/// Weights: `10` + 62 bits of the digest, stable across mounts.
const BLOB_INO_BASE: u64 = 0b10 << 62;
const BLOB_INO_MASK: u64 = (1 << 62) - 1;
const CONFIG_INO_BASE: u64 = 0b110 << 61;
const MANIFEST_INO_BASE: u64 = 0b111 << 61;

/// An error with the errno the kernel gets and the reason the log gets.
#[derive(Debug)]
pub struct FsError {
    pub errno: i32,
    pub why: String,
}

impl FsError {
    pub fn new(errno: i32, why: impl Into<String>) -> FsError {
        FsError { errno, why: why.into() }
    }
}

impl From<io::Error> for FsError {
    fn from(e: io::Error) -> FsError {
        FsError { errno: e.raw_os_error().unwrap_or(libc::EIO), why: e.to_string() }
    }
}

impl From<StoreError> for FsError {
    /// The errno a store error answers in the mount.
    fn from(e: StoreError) -> FsError {
        let errno = match &e {
            StoreError::InvalidSource(_)
            | StoreError::InvalidDestination(_)
            | StoreError::InvalidName(_)
            | StoreError::Invalid(_)
            | StoreError::DigestMismatch { .. }
            | StoreError::Incomplete { .. }
            | StoreError::Corrupt { .. } => libc::EINVAL,
            StoreError::NotFound(_) => libc::ENOENT,
            StoreError::CaseConflict { .. } => libc::EEXIST,
            StoreError::Io(io) => io.raw_os_error().unwrap_or(libc::EIO),
        };
        FsError { errno, why: e.to_string() }
    }
}

pub type Result<T> = std::result::Result<T, FsError>;

fn enoent(what: impl std::fmt::Display) -> FsError {
    FsError::new(libc::ENOENT, format!("{what}: no such entry"))
}

/// What an inode stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// A prefix folder, by display path ("" is the root).
    Dir(String),
    /// A model folder.
    Model(Name),
    /// A folder inside a model (`files`, `files/text_encoder`).
    Sub(Name, String),
    /// A per-model file: text layer, config.json, manifest.json or a scratch file.
    File(Name, String),
    /// A weights blob, shared by every model that uses it.
    Blob(Digest),
    /// The short-lived entry answering `symlink` (the kernel insists on a link type).
    Link(String),
    /// A path inside `.Trash-$UID` ("" is that folder itself); see `trash`.
    Trash(u32, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
}

/// Attributes as the kernel needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub size: u64,
    pub blocks: u64,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Not to be cached by the kernel at all: a layer file being written is a temporary
    /// inode that becomes the blob's shared inode at close.
    pub transient: bool,
}

#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileKind,
    pub name: String,
}

/// Immutable facts about a blob file, cached (blobs never change once named).
#[derive(Clone, Copy, Debug)]
struct BlobMeta {
    size: u64,
    mtime: SystemTime,
}

#[derive(Default)]
struct Inodes {
    by_node: HashMap<Node, u64>,
    by_ino: HashMap<u64, (Node, u64)>,
    next: u64,
    next_config: u64,
    next_manifest: u64,
}

impl Inodes {
    fn ino_of(&mut self, node: &Node) -> u64 {
        if let Node::Dir(p) = node
            && p.is_empty()
        {
            return ROOT_INO;
        }
        if let Some(&ino) = self.by_node.get(node) {
            return ino;
        }
        let counter = |c: &mut u64, base: u64| {
            *c += 1;
            base + *c
        };
        let ino = match node {
            Node::Blob(d) => BLOB_INO_BASE | (d.short() & BLOB_INO_MASK),
            Node::File(_, f) if f == layout::CONFIG_FILE => counter(&mut self.next_config, CONFIG_INO_BASE),
            Node::File(_, f) if f == layout::MANIFEST_FILE => counter(&mut self.next_manifest, MANIFEST_INO_BASE),
            _ => counter(&mut self.next, 0),
        };
        self.by_node.insert(node.clone(), ino);
        self.by_ino.insert(ino, (node.clone(), 0));
        ino
    }

    /// Count a lookup the kernel will later `forget`.
    fn remember(&mut self, node: &Node) -> u64 {
        let ino = self.ino_of(node);
        if let Some(e) = self.by_ino.get_mut(&ino) {
            e.1 += 1;
        }
        ino
    }

    fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let drop_it = match self.by_ino.get_mut(&ino) {
            Some(e) => {
                e.1 = e.1.saturating_sub(n);
                e.1 == 0
            }
            None => false,
        };
        if drop_it && let Some((node, _)) = self.by_ino.remove(&ino) {
            // A rename may have handed this node's name to another inode meanwhile.
            if self.by_node.get(&node) == Some(&ino) {
                self.by_node.remove(&node);
            }
        }
    }

    fn node(&self, ino: u64) -> Option<Node> {
        if ino == ROOT_INO {
            return Some(Node::Dir(String::new()));
        }
        self.by_ino.get(&ino).map(|(n, _)| n.clone())
    }

    /// A node changed identity (rename): keep its inode under the new node.
    /// The kernel keeps the renamed inode under the new name, so the new name's node
    /// must now be this inode (any inode the new name had is left to be forgotten).
    pub(crate) fn rekey(&mut self, old: &Node, new: &Node) {
        if let Some(ino) = self.by_node.remove(old) {
            self.by_node.insert(new.clone(), ino);
            if let Some(e) = self.by_ino.get_mut(&ino) {
                e.0 = new.clone();
            }
        }
    }
}

/// A model being filled: when it last changed, and which files were written into it.
#[derive(Debug)]
pub(crate) struct Fresh {
    at: std::time::Instant,
    written: HashSet<String>,
}

/// A file created in a model folder under a name that is not a layer.
#[derive(Debug, Clone)]
pub(crate) struct ScratchFile {
    path: PathBuf,
}

/// Everything the metadata operations share; one lock, never held during data I/O.
/// Lock order: a writer's lock, then this state lock, then the handle table. The handle
/// table is never held while another lock is taken.
pub(crate) struct State {
    index: Index,
    inodes: Inodes,
    blob_meta: HashMap<Digest, BlobMeta>,
    /// Prefix folders made by mkdir that hold no model yet, by display path.
    pending_dirs: BTreeSet<String>,
    /// Model folders made by mkdir that have no manifest yet.
    pending_models: BTreeSet<Name>,
    /// Folders made inside models (`files/...`) that hold nothing yet.
    pending_subs: BTreeSet<(Name, String)>,
    scratch: BTreeMap<(Name, String), ScratchFile>,
    /// Layer files made by create and not yet committed (visible while being written).
    creating: BTreeSet<(Name, String)>,
    /// Models being filled through the mount (made by mkdir): while fresh, they show only
    /// the files written into them, so that `cp -r` (which creates every file with O_EXCL,
    /// in any order) can write `config.json` and `manifest.json` and the layers a copied
    /// manifest already brought. See `FRESH_WINDOW`.
    fresh: HashMap<Name, Fresh>,
    /// Model folders whose view in the mount differs from the store: drafts (no manifest
    /// on disk yet, or unpublished by `rm manifest.json`) and held changes (the store keeps
    /// the last complete manifest). The view's manifest is what the folder shows.
    work: HashMap<Name, Arc<Model>>,
    /// Blobs this mount holds (hard links, see `Store::hold`) for the work above.
    holding: HashSet<Digest>,
    /// Stable layer file names, by layer position, for models changed through the mount:
    /// a name never shifts while the mount lives (`license-2` stays `license-2` when
    /// `license` goes). Renumbered only at the next mount.
    pins: HashMap<Name, Vec<String>>,
    /// Positions of removed layers, so that `cp -f` (unlink + create) or `rm` + `cp` puts
    /// the replacement back where the old layer was.
    vacated: HashMap<(Name, String), usize>,
    clock: Clock,
    /// Copy tools' temp files for layers (rsync), closed: their blob and length (held).
    staged: BTreeMap<(Name, String), (Digest, u64)>,
    /// Scratch files unlinked while open, by inode: they keep working through their
    /// descriptors (fstat, fchmod, ftruncate) until the last one closes.
    orphans: HashMap<u64, Arc<File>>,
    /// `manifest.json` writes waiting for their blobs to arrive.
    waiting: HashMap<Name, write::WaitingManifest>,
}

/// What an open file reads from.
pub(crate) enum Handle {
    Dir(Arc<Vec<DirEntry>>),
    /// A blob, and the prefetch that keeps its page cache ahead of a daemon-served reader.
    /// The digest lets a stream of the same bytes written elsewhere be compared, not stored.
    Blob(Arc<File>, Arc<Prefetch>, Digest),
    Bytes(Arc<[u8]>),
    Write(Arc<Mutex<Writer>>),
    /// A scratch file and its inode.
    Scratch(Arc<File>, u64),
}

/// The result of `open`: the handle number and how the kernel should treat it.
#[derive(Debug)]
pub struct Opened {
    pub fh: u64,
    /// Keep the kernel page cache across opens (immutable weights).
    pub keep_cache: bool,
    /// Serve reads straight from this blob file in the kernel (FUSE passthrough).
    pub passthrough: Option<(Digest, Arc<File>)>,
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub read_only: bool,
    pub no_prune: bool,
    pub passthrough: bool,
    /// The mount point, to resolve absolute symlink targets.
    pub mountpoint: Option<PathBuf>,
    /// The one source of time for the core's time windows (tests step it).
    pub clock: Clock,
}

/// Tells the kernel to forget a cached directory entry `(parent inode, name)`.
pub type EntryInvalidator = Box<dyn Fn(u64, &str) + Send + Sync>;

pub struct Fs {
    pub(crate) store: Arc<Store>,
    /// Set by the FUSE adapter; used for changes the kernel did not make itself (the API).
    invalidator: std::sync::OnceLock<EntryInvalidator>,
    state: Mutex<State>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    pub(crate) opts: Options,
    started: SystemTime,
    /// SHA-256 of the first 64 KiB of weights blobs (None: unreadable), for re-imports.
    prefixes: Mutex<HashMap<Digest, Option<[u8; 32]>>>,
}

/// How far ahead of a daemon-served weights read the blob is prefetched.
const PREFETCH_AHEAD: u64 = 64 << 20;
/// A prefetch thread stops when its reader has not moved for this long (a later read restarts it).
const PREFETCH_IDLE: Duration = Duration::from_millis(300);

/// Sequential prefetch for a weights handle served by the daemon (no passthrough). The
/// kernel sends readahead requests in parallel and out of order, which defeats the disk's
/// own readahead, so each request would wait for the disk. A helper thread reads the blob
/// front to back through its own open file (so the disk readahead sees one sequential
/// stream, as `dd` does) and stays up to `PREFETCH_AHEAD` ahead of the reader: the
/// requests then find the data in the page cache.
#[derive(Default)]
pub(crate) struct Prefetch {
    /// The furthest end of a read so far.
    reader: AtomicU64,
    running: std::sync::atomic::AtomicBool,
}

impl Prefetch {
    fn reader_at(self: &Arc<Self>, file: &File, end: u64) {
        // Only a reader moving forward needs a prefetch; a read behind the furthest one
        // (random access through mmap) must not restart a stopped thread.
        if self.reader.fetch_max(end, Ordering::Relaxed) >= end || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        // A new open file description: its own readahead state, its own offset.
        let own = std::os::fd::AsRawFd::as_raw_fd(file);
        let Ok(own) = File::open(format!("/proc/self/fd/{own}")) else {
            self.running.store(false, Ordering::Release);
            return;
        };
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("prefetch".into()).spawn(move || me.run(own));
        if spawned.is_err() {
            self.running.store(false, Ordering::Release);
        }
    }

    fn run(self: Arc<Self>, file: File) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut at = self.reader.load(Ordering::Relaxed);
        // Spliced into /dev/null: the pages come through the file's own (sequential)
        // readahead into the page cache, and nothing is copied to us.
        let Ok(null) = File::options().write(true).open("/dev/null") else {
            self.running.store(false, Ordering::Release);
            return;
        };
        let mut idle_since = std::time::Instant::now();
        // Stop at the end, when the reader pauses, or when the handle is gone (only we hold it).
        while at < len && Arc::strong_count(&self) > 1 {
            let reader = self.reader.load(Ordering::Relaxed);
            at = at.max(reader);
            if at < reader + PREFETCH_AHEAD {
                let mut off = at as libc::off_t;
                // SAFETY: valid fds and a valid offset pointer.
                let n = unsafe {
                    libc::sendfile(
                        std::os::fd::AsRawFd::as_raw_fd(&null),
                        std::os::fd::AsRawFd::as_raw_fd(&file),
                        &mut off,
                        1 << 20,
                    )
                };
                if n <= 0 {
                    break;
                }
                at += n as u64;
                idle_since = std::time::Instant::now();
            } else if idle_since.elapsed() > PREFETCH_IDLE {
                break;
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.running.store(false, Ordering::Release);
    }
}

pub const TTL: Duration = Duration::from_millis(500);

/// How long after its last change through the mount a model made by mkdir still hides
/// its automatic `manifest.json`/`config.json` (a copy tool writes them within this time).
pub const FRESH_WINDOW: Duration = Duration::from_secs(3);

impl Fs {
    pub fn new(store: Arc<Store>, opts: Options) -> Fs {
        let index = Index::load(&store);
        Fs {
            store,
            invalidator: std::sync::OnceLock::new(),
            state: Mutex::new(State {
                index,
                inodes: Inodes { next: ROOT_INO, ..Default::default() },
                blob_meta: HashMap::new(),
                pending_dirs: BTreeSet::new(),
                pending_models: BTreeSet::new(),
                pending_subs: BTreeSet::new(),
                scratch: BTreeMap::new(),
                creating: BTreeSet::new(),
                fresh: HashMap::new(),
                work: HashMap::new(),
                holding: HashSet::new(),
                pins: HashMap::new(),
                vacated: HashMap::new(),
                clock: opts.clock.clone(),
                orphans: HashMap::new(),
                staged: BTreeMap::new(),
                waiting: HashMap::new(),
            }),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            opts,
            started: SystemTime::now(),
            prefixes: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another request must not wedge the whole mount.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<u64, Handle>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_entry_invalidator(&self, f: EntryInvalidator) {
        let _ = self.invalidator.set(f);
    }

    /// The kernel entries that showed a model now gone: its folder, and each prefix folder
    /// it left empty. Only entries whose parent the kernel knows can be cached.
    pub(crate) fn entries_of_removed(&self, st: &State, model: &Name) -> Vec<(u64, String)> {
        let display = model.display_shortest();
        let mut out = Vec::new();
        let mut path = display.as_str();
        loop {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            let parent_ino = match parent {
                "" => Some(ROOT_INO),
                p => st.inodes.by_node.get(&Node::Dir(p.to_string())).copied(),
            };
            if let Some(ino) = parent_ino {
                out.push((ino, name.to_string()));
            }
            if parent.is_empty() || st.dir_exists(parent) {
                break;
            }
            path = parent;
        }
        out
    }

    /// Drop kernel entries; never called with a lock held (the kernel may need a folder
    /// lock that a request waiting for us holds).
    pub(crate) fn invalidate_entries(&self, entries: &[(u64, String)]) {
        if let Some(f) = self.invalidator.get() {
            for (parent, name) in entries {
                f(*parent, name);
            }
        }
    }

    pub fn model_count(&self) -> usize {
        self.lock().index.len()
    }

    /// Pick up every change made on disk by other processes (a full stat-only scan).
    pub fn refresh(&self) -> bool {
        let (found, _) = self.store.scan();
        let seen: std::collections::HashSet<&Name> = found.iter().map(|f| &f.name).collect();
        let gone: Vec<Name> =
            self.lock().index.models().map(|m| m.name.clone()).filter(|n| !seen.contains(n)).collect();
        self.apply_found(found, gone)
    }

    /// Models whose manifest path starts with these parts (host, namespace, model).
    pub fn models_under(&self, parts: &[String]) -> Vec<Name> {
        let st = self.lock();
        st.index
            .models()
            .map(|m| &m.name)
            .filter(|n| {
                let p = [&n.host, &n.namespace, &n.model];
                parts.iter().zip(p).all(|(a, b)| a == b)
            })
            .cloned()
            .collect()
    }

    /// Look again at these manifests only (what inotify reported).
    pub fn refresh_names(&self, mut names: Vec<Name>) -> bool {
        names.sort();
        names.dedup();
        let mut found = Vec::new();
        let mut gone = Vec::new();
        for name in names {
            let path = self.store.manifest_path(&name);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {
                    found.push(crate::store::Found { name, path, stamp: crate::store::Stamp::of(&m) })
                }
                _ => gone.push(name),
            }
        }
        self.apply_found(found, gone)
    }

    /// Re-read what changed and drop what is gone. Disk work happens outside the lock; an
    /// entry our own operations changed in the meantime is left alone.
    fn apply_found(&self, found: Vec<crate::store::Found>, gone: Vec<Name>) -> bool {
        let (stale, gone) = {
            let st = self.lock();
            let stale: Vec<_> = found
                .into_iter()
                .filter_map(|f| {
                    let known = st.index.known_stamp(&f.name);
                    let before = st.index.get(&f.name).map(|m| m.stamp);
                    (known != Some(f.stamp)).then_some((f, before))
                })
                .collect();
            let gone: Vec<_> = gone.into_iter().filter_map(|n| st.index.get(&n).map(|m| (n, m.stamp))).collect();
            (stale, gone)
        };
        if stale.is_empty() && gone.is_empty() {
            return false;
        }
        let read: Vec<_> =
            stale.into_iter().filter_map(|(f, before)| std::fs::read(&f.path).ok().map(|b| (f, before, b))).collect();
        let mut st = self.lock();
        let mut changed = false;
        let mut released = Vec::new();
        for (f, before, bytes) in read {
            if st.index.get(&f.name).map(|m| m.stamp) == before {
                // Our own write seen late (inotify lags behind): same bytes, nothing to do
                // but remember the stamp.
                if st.index.get(&f.name).is_some_and(|m| *m.bytes == *bytes) {
                    let stamp = std::fs::metadata(&f.path).map(|m| crate::store::Stamp::of(&m)).unwrap_or(f.stamp);
                    st.index.put(f.name.clone(), bytes, stamp);
                    continue;
                }
                st.index.put(f.name.clone(), bytes, f.stamp);
                st.pending_models.remove(&f.name);
                // Another process wrote this model: the store's version replaces any work
                // in progress on it here.
                if st.work.remove(&f.name).is_some() {
                    log::warn!(
                        "{} changed in the store; its unfinished change in the mount is dropped",
                        f.name.display_shortest()
                    );
                }
                st.pins.remove(&f.name);
                changed = true;
            }
        }
        let mut vanished = Vec::new();
        for (name, stamp) in gone {
            let still_same = st.index.get(&name).is_some_and(|m| m.stamp == stamp);
            if still_same && !self.store.manifest_path(&name).exists() {
                st.index.remove(&name);
                self.forget_model_folder(&mut st, &name);
                changed = true;
                vanished.extend(self.entries_of_removed(&st, &name));
            }
        }
        released.extend(self.sync_holds(&mut st));
        self.prune_unused(&mut st, released);
        // Another process removed these models: the kernel forgets their folders now, not
        // when its entry cache expires. (Only the watcher calls this, never a FUSE request.)
        drop(st);
        self.invalidate_entries(&vanished);
        changed
    }

    fn node_of(&self, st: &State, ino: u64) -> Result<Node> {
        let node = st.inodes.node(ino).ok_or_else(|| FsError::new(libc::ESTALE, format!("unknown inode {ino}")))?;
        // A colon-less folder made by mkdir that a layer file turned into NAME:latest.
        if let Node::Dir(p) = &node
            && !p.is_empty()
            && !st.dir_exists(p)
            && let Some(n) = tree::dir_as_model(p)
            && st.model_exists(&n)
        {
            return Ok(Node::Model(n));
        }
        Ok(node)
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr> {
        let mut st = self.lock();
        let node = self.lookup_node(&st, parent, name)?;
        let attr = self.attr_of(&mut st, &node)?;
        st.inodes.remember(&node);
        Ok(attr)
    }

    fn lookup_node(&self, st: &State, parent: u64, name: &str) -> Result<Node> {
        let parent_node = self.node_of(st, parent)?;
        let found = match &parent_node {
            Node::Dir(p) if p.is_empty() && trash::trash_uid(name).is_some() => trash::trash_uid(name)
                .and_then(|uid| self.trash_lookup(uid, "", "").map(|_| Node::Trash(uid, String::new()))),
            Node::Dir(p) => st.lookup_in_dir(p, name),
            Node::Model(m) => st.lookup_in_model(m, "", name),
            Node::Sub(m, sub) => st.lookup_in_model(m, sub, name),
            Node::Trash(uid, rel) => self.trash_lookup(*uid, rel, name),
            _ => return Err(FsError::new(libc::ENOTDIR, "not a folder")),
        };
        found.ok_or_else(|| enoent(name))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        self.lock().inodes.forget(ino, n);
    }

    /// `fstat`: a scratch file answers from its open descriptor, so a file unlinked while
    /// open keeps working until closed (POSIX).
    pub fn getattr_open(&self, ino: u64, fh: Option<u64>) -> Result<Attr> {
        if let Some(f) = fh.and_then(|fh| self.scratch_handle(fh)) {
            return Ok(scratch_attr(ino, &f.metadata()?));
        }
        self.getattr(ino)
    }

    pub(crate) fn scratch_handle(&self, fh: u64) -> Option<Arc<File>> {
        match self.handles().get(&fh) {
            Some(Handle::Scratch(f, _)) => Some(f.clone()),
            _ => None,
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let mut st = self.lock();
        let node = self.node_of(&st, ino)?;
        let mut attr = self.attr_of(&mut st, &node)?;
        drop(st);
        // An open writer knows the size the file is growing to.
        if let Some(len) = self.writer_len(ino) {
            attr.size = len;
            attr.blocks = len.div_ceil(512);
        }
        Ok(attr)
    }

    fn writer_len(&self, ino: u64) -> Option<u64> {
        // Never hold the handle table while taking a writer's lock: a committing writer
        // holds its lock and waits for the state lock, whose holders may need the table.
        let writers: Vec<Arc<Mutex<Writer>>> = self
            .handles()
            .values()
            .filter_map(|h| match h {
                Handle::Write(w) => Some(w.clone()),
                _ => None,
            })
            .collect();
        writers.into_iter().find_map(|w| {
            let w = w.lock().unwrap_or_else(|e| e.into_inner());
            (w.ino == ino && w.dirty).then_some(w.len)
        })
    }

    fn blob_meta(&self, st: &mut State, d: &Digest) -> Option<BlobMeta> {
        if let Some(m) = st.blob_meta.get(d) {
            return Some(*m);
        }
        let meta = std::fs::metadata(self.store.blob_path(d)).ok()?;
        let m = BlobMeta { size: meta.len(), mtime: meta.modified().unwrap_or(self.started) };
        st.blob_meta.insert(*d, m);
        Some(m)
    }

    fn base_attr(&self, ino: u64, kind: FileKind, size: u64, mtime: SystemTime) -> Attr {
        let (uid, gid) = self.store.owner();
        Attr {
            ino,
            kind,
            size,
            blocks: size.div_ceil(512),
            perm: match kind {
                FileKind::Dir => 0o755,
                FileKind::File => 0o644,
                FileKind::Symlink => 0o777,
            },
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            uid,
            gid,
            atime: mtime,
            mtime,
            ctime: mtime,
            transient: false,
        }
    }

    pub(crate) fn attr_of(&self, st: &mut State, node: &Node) -> Result<Attr> {
        let ino = st.inodes.ino_of(node);
        match node {
            Node::Dir(p) => {
                if !st.dir_exists(p) {
                    return Err(enoent(p));
                }
                Ok(self.base_attr(ino, FileKind::Dir, 0, self.started))
            }
            Node::Model(n) => {
                let mtime = match st.index.get(n) {
                    Some(m) => m.mtime(),
                    None if st.pending_models.contains(n) => st.view(n).map(|m| m.mtime()).unwrap_or(self.started),
                    None => return Err(enoent(n)),
                };
                Ok(self.base_attr(ino, FileKind::Dir, 0, mtime))
            }
            Node::Sub(n, sub) => {
                if !st.model_exists(n) {
                    return Err(enoent(sub));
                }
                Ok(self.base_attr(ino, FileKind::Dir, 0, self.started))
            }
            Node::Blob(d) => {
                let refs = st.index.refs(d);
                let links = st.weights_links(d);
                let meta = self.blob_meta(st, d);
                let (size, mtime) = match meta {
                    Some(m) => (m.size, m.mtime),
                    None => {
                        if refs.any == 0 && links == 0 {
                            return Err(enoent(d));
                        }
                        // Missing blob: show the manifest's size, reads fail with EIO.
                        (self.declared_size(st, d), self.started)
                    }
                };
                let mut a = self.base_attr(ino, FileKind::File, size, mtime);
                a.perm = 0o444;
                a.nlink = links.max(1);
                Ok(a)
            }
            Node::File(model, name) => {
                if let Some(s) = st.scratch.get(&(model.clone(), name.clone())) {
                    let meta = std::fs::metadata(&s.path)?;
                    return Ok(scratch_attr(ino, &meta));
                }
                if let Some(f) = st.orphans.get(&ino) {
                    return Ok(scratch_attr(ino, &f.metadata()?));
                }
                if let Some((_, len)) = st.staged.get(&(model.clone(), name.clone())) {
                    let mut a = self.base_attr(ino, FileKind::File, *len, self.started);
                    a.perm = 0o600;
                    return Ok(a);
                }
                let in_manifest = st
                    .view(model)
                    .cloned()
                    .and_then(|m| st.files_of(model).into_iter().find(|f| f.name == *name).map(|f| (m, f)));
                let Some((m, f)) = in_manifest else {
                    if st.creating.contains(&(model.clone(), name.clone())) {
                        return Ok(self.base_attr(ino, FileKind::File, 0, self.started));
                    }
                    return Err(enoent(name));
                };
                match f.source {
                    Source::Manifest => {
                        let published = st.index.get(model).cloned().unwrap_or(m);
                        Ok(self.base_attr(ino, FileKind::File, published.bytes.len() as u64, published.mtime()))
                    }
                    Source::Config | Source::Layer(_) => {
                        let layer = match f.source {
                            Source::Layer(i) => &m.manifest.layers[i],
                            _ => &m.manifest.config,
                        };
                        let (size, mtime) = match layer.digest().and_then(|d| self.blob_meta(st, &d)) {
                            Some(bm) => (bm.size, bm.mtime),
                            None => (layer.size.max(0) as u64, m.mtime()),
                        };
                        let mut a = self.base_attr(ino, FileKind::File, size, mtime);
                        if f.kind == Kind::Weights {
                            a.perm = 0o444; // a weights layer with an unusable digest
                        }
                        Ok(a)
                    }
                }
            }
            Node::Link(_) => {
                let mut a = self.base_attr(ino, FileKind::Symlink, 0, SystemTime::now());
                a.nlink = 1;
                Ok(a)
            }
            Node::Trash(uid, rel) => self.trash_attr(ino, *uid, rel),
        }
    }

    fn declared_size(&self, st: &State, d: &Digest) -> u64 {
        let ds = d.prefixed();
        st.index
            .models()
            .flat_map(|m| m.manifest.layers.iter())
            .find(|l| l.digest == ds)
            .map(|l| l.size.max(0) as u64)
            .unwrap_or(0)
    }

    /// Directory listing, including `.` and `..`.
    pub fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let mut st = self.lock();
        let node = self.node_of(&st, ino)?;
        let (children, parent): (Vec<(String, Node)>, Node) = match &node {
            Node::Dir(p) => {
                if !st.dir_exists(p) {
                    return Err(enoent(p));
                }
                let parent = Node::Dir(p.rsplit_once('/').map(|(a, _)| a.to_string()).unwrap_or_default());
                let mut children: Vec<(String, Node)> = st.dir_children(p).into_iter().collect();
                if p.is_empty() {
                    for uid in self.trash_dirs() {
                        children.push((format!("{}{uid}", trash::TRASH_PREFIX), Node::Trash(uid, String::new())));
                    }
                }
                (children, parent)
            }
            Node::Trash(uid, rel) => {
                let parent = match rel.rsplit_once('/') {
                    Some((p, _)) => Node::Trash(*uid, p.to_string()),
                    None if rel.is_empty() => Node::Dir(String::new()),
                    None => Node::Trash(*uid, String::new()),
                };
                (self.trash_children(*uid, rel)?, parent)
            }
            Node::Model(m) => {
                if !st.model_exists(m) {
                    return Err(enoent(m));
                }
                (st.model_children(m, ""), Node::Dir(tree::model_parent(m)))
            }
            Node::Sub(m, sub) => {
                let parent = match sub.rsplit_once('/') {
                    Some((p, _)) => Node::Sub(m.clone(), p.to_string()),
                    None => Node::Model(m.clone()),
                };
                (st.model_children(m, sub), parent)
            }
            _ => return Err(FsError::new(libc::ENOTDIR, "not a folder")),
        };
        let mut out = Vec::with_capacity(children.len() + 2);
        out.push(DirEntry { ino, kind: FileKind::Dir, name: ".".into() });
        let parent_ino = st.inodes.ino_of(&parent);
        out.push(DirEntry { ino: parent_ino, kind: FileKind::Dir, name: "..".into() });
        for (name, child) in children {
            let kind = match &child {
                Node::Dir(_) | Node::Model(_) | Node::Sub(..) => FileKind::Dir,
                Node::Trash(uid, rel) if self.trash_path(*uid, rel).is_dir() => FileKind::Dir,
                _ => FileKind::File,
            };
            let ino = st.inodes.ino_of(&child);
            out.push(DirEntry { ino, kind, name });
        }
        Ok(out)
    }

    /// Snapshot a listing for a directory handle, so paging through it is cheap and stable.
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let entries = self.readdir(ino)?;
        Ok(self.add_handle(Handle::Dir(Arc::new(entries))))
    }

    pub fn dir_entries(&self, fh: u64) -> Option<Arc<Vec<DirEntry>>> {
        match self.handles().get(&fh) {
            Some(Handle::Dir(e)) => Some(e.clone()),
            _ => None,
        }
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles().insert(fh, h);
        fh
    }

    pub fn release_handle(&self, fh: u64) {
        self.handles().remove(&fh);
    }

    /// Open a file. Writes are handled in `write.rs`; here reads and the dispatch.
    pub fn open(&self, ino: u64, flags: i32) -> Result<Opened> {
        let acc = flags & libc::O_ACCMODE;
        let writing = acc == libc::O_WRONLY || acc == libc::O_RDWR;
        let mut st = self.lock();
        let node = self.node_of(&st, ino)?;
        match &node {
            Node::Blob(d) => {
                if writing {
                    return Err(FsError::new(
                        libc::EPERM,
                        "weights are immutable: rm it or cp -f to replace the layer",
                    ));
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
                Ok(Opened { fh, keep_cache: true, passthrough })
            }
            Node::File(model, name) => {
                if let Some(s) = st.scratch.get(&(model.clone(), name.clone())).cloned() {
                    drop(st);
                    return self.open_scratch(&s.path, flags, ino);
                }
                if let Some((d, _)) = st.staged.get(&(model.clone(), name.clone())).copied() {
                    drop(st);
                    if writing {
                        return Err(FsError::new(libc::EBUSY, "a finished temp file: rename it onto its layer"));
                    }
                    let f = self.store.open_blob(&d)?;
                    let fh = self.add_handle(Handle::Blob(Arc::new(f), Arc::default(), d));
                    return Ok(Opened { fh, keep_cache: false, passthrough: None });
                }
                if writing {
                    if self.opts.read_only {
                        return Err(FsError::new(libc::EROFS, "read-only mount"));
                    }
                    return self.open_writer(&mut st, ino, model, name, flags);
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
                Ok(Opened { fh: self.add_handle(handle), keep_cache: false, passthrough: None })
            }
            Node::Dir(_) | Node::Model(_) | Node::Sub(..) => Err(FsError::new(libc::EISDIR, "is a folder")),
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

    fn layer_handle(&self, l: &crate::store::Layer) -> Result<Handle> {
        let d = l.digest().ok_or_else(|| FsError::new(libc::EIO, format!("invalid digest {:?}", l.digest)))?;
        let f = self.store.open_blob(&d).map_err(|e| FsError::new(libc::EIO, format!("blob {d}: {e}")))?;
        Ok(Handle::Blob(Arc::new(f), Arc::default(), d))
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
                let w = w.lock().unwrap_or_else(|e| e.into_inner());
                Ok(copy_into(&w.read(&self.store, offset, size)?, buf))
            }
        }
    }

    pub fn statfs(&self) -> Result<libc::statvfs> {
        let c = std::ffi::CString::new(self.store.root().as_os_str().as_encoded_bytes())
            .map_err(|_| FsError::new(libc::EINVAL, "store path"))?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and a zeroed out-struct of the right type.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(s)
    }

    /// Extended attributes: digest and media type on layer files, name and ID on models.
    pub fn xattrs(&self, ino: u64) -> Result<Vec<(String, Vec<u8>)>> {
        let st = self.lock();
        let node = self.node_of(&st, ino)?;
        let mut out = Vec::new();
        match &node {
            Node::Model(n) => {
                out.push(("user.ollama.name".into(), n.to_string().into_bytes()));
                if let Some(m) = st.index.get(n) {
                    out.push(("user.ollama.id".into(), m.id.clone().into_bytes()));
                }
            }
            Node::Blob(d) => {
                out.push(("user.ollama.digest".into(), d.prefixed().into_bytes()));
                if let Some(mt) = st.index.media_type(d) {
                    out.push(("user.ollama.media_type".into(), mt.as_bytes().to_vec()));
                }
            }
            Node::File(model, name) => {
                if let Some(m) = st.view(model) {
                    let files = st.files_of(model);
                    if let Some(f) = files.iter().find(|f| f.name == *name) {
                        let layer = match f.source {
                            Source::Layer(i) => Some(&m.manifest.layers[i]),
                            Source::Config => Some(&m.manifest.config),
                            Source::Manifest => None,
                        };
                        match layer {
                            Some(l) => {
                                out.push(("user.ollama.digest".into(), l.digest.clone().into_bytes()));
                                out.push(("user.ollama.media_type".into(), l.media_type.clone().into_bytes()));
                            }
                            None => {
                                out.push(("user.ollama.digest".into(), format!("sha256:{}", m.id).into_bytes()));
                                out.push(("user.ollama.media_type".into(), m.manifest.media_type.clone().into_bytes()));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }

    pub fn readlink(&self, ino: u64) -> Result<String> {
        let st = self.lock();
        match self.node_of(&st, ino)? {
            Node::Link(t) => Ok(t),
            _ => Err(FsError::new(libc::EINVAL, "not a symlink")),
        }
    }

    /// Unmount: scratch files are gone (they never were part of the store).
    pub fn shutdown(&self) {
        let mut st = self.lock();
        for s in st.scratch.values() {
            let _ = std::fs::remove_file(&s.path);
        }
        for (name, _) in st.work.iter() {
            match st.is_published(name) {
                true => log::warn!(
                    "unmounting: the unfinished change to {} is dropped; the store keeps its last complete version",
                    name.display_shortest()
                ),
                false => {
                    log::warn!("unmounting: draft {} never became a complete model; dropped", name.display_shortest())
                }
            }
        }
        if !st.waiting.is_empty() {
            log::warn!(
                "unmounting with {} manifest.json write(s) still waiting for blobs; they are dropped",
                st.waiting.len()
            );
        }
        // What only the dropped work used goes, as the store would have it without us.
        st.work.clear();
        st.waiting.clear();
        let released = self.sync_holds(&mut st);
        self.prune_unused(&mut st, released);
    }

    pub fn store_root(&self) -> &Path {
        self.store.root()
    }
}

/// A scratch file's attributes are its own (it is an ordinary file).
pub(super) fn scratch_attr(ino: u64, meta: &std::fs::Metadata) -> Attr {
    let time = |s: i64, ns: i64| {
        let d = Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32);
        std::time::UNIX_EPOCH + d
    };
    Attr {
        ino,
        kind: FileKind::File,
        size: meta.len(),
        blocks: meta.blocks(),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: 1,
        uid: meta.uid(),
        gid: meta.gid(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        transient: false,
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
fn pread_into(f: &File, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<usize> {
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

fn copy_into(data: &[u8], buf: &mut Vec<u8>) -> usize {
    if buf.len() < data.len() {
        buf.resize(data.len(), 0);
    }
    buf[..data.len()].copy_from_slice(data);
    data.len()
}

#[cfg(test)]
mod tests;
