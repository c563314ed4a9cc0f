//! The filesystem's meaning, independent of FUSE: inodes, lookup, attributes, listing,
//! opening and reading, and (in `write`) every change. Plain values in and out, errors
//! carry their errno; `crate::fuse` only translates.

mod attrs;
mod catalog;
mod clock;
mod commit;
mod edit;
mod files;
mod folder;
mod inodes;
mod namespace;
mod prefetch;
mod read;
mod refresh;
mod rename;
mod scratch;
mod trash;
mod tree;
mod txn;
mod views;
pub mod watch;
mod writer;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::name::Name;
use crate::store::index::Index;
use crate::store::{Digest, Store, StoreError};

pub use clock::Clock;
pub use files::SetAttr;
use inodes::Inodes;
use prefetch::Prefetch;
pub use scratch::Caller;
pub use tree::{join, scope, split};
pub use writer::Writer;

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
    /// A scratch entry (file, folder, link, fifo, socket) by its inode on the disk below;
    /// see `scratch`.
    Scratch(u64),
    /// A folder of an app view (`.lmstudio`, `.gguf`) by its path inside the view ("" is
    /// the view's own folder); see `views`.
    View(crate::views::ViewKind, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
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
    /// The device a device node stands for (scratch entries only).
    pub rdev: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    /// Not to be cached by the kernel at all: a layer file being written is a temporary
    /// inode that becomes the blob's shared inode at close.
    pub transient: bool,
    /// A weights inode, shared by every model showing the blob: its entries are looked up
    /// again on every path walk, so a write-open is known to come through one folder
    /// (see `Fs::lookup_from`).
    pub shared: bool,
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

/// Everything the metadata operations share; one lock, never held during data I/O.
/// Lock order: a writer's lock, then this state lock, then the handle table. The handle
/// table is never held while another lock is taken.
pub(crate) struct State {
    index: Index,
    inodes: Inodes,
    blob_meta: HashMap<Digest, BlobMeta>,
    /// Prefix folders made by mkdir that hold no model yet, by display path.
    pending_dirs: BTreeSet<String>,
    /// When prefix folders' entries last changed through the mount (their mtime).
    dir_times: HashMap<String, SystemTime>,
    /// Every model folder the mount knows more about than the store (see `folder`).
    folders: BTreeMap<Name, folder::Folder>,
    /// Blobs this mount holds (hard links, see `Store::hold`) for the work above.
    holding: HashSet<Digest>,
    clock: Clock,
    /// Data work a file rename did before taking this lock (see `prepare_file_rename`).
    prepared: Option<rename::Prepared>,
    /// Scratch inodes the kernel knows, held open (`O_PATH`) by their inode on the disk.
    scratch_fds: HashMap<u64, scratch::Fd>,
    /// The last scratch tree number handed out (`<pid>/folders/<n>`).
    next_tree: u64,
    /// Who makes the change under way (set by the API's catalog while it holds the lock).
    origin: Origin,
    /// Trash items moved out of `files/` to be deleted (GVFS' `expunged/`), by (uid, path
    /// in the trash): the blobs to prune once they are gone.
    expunging: HashMap<(u32, String), Vec<Digest>>,
    /// The file names models came in with through a view (see `crate::views::FileNames`).
    file_names: crate::views::FileNames,
    /// Bumped at every change of `file_names` (the views' cache key).
    file_names_version: u64,
    /// The mtime of the file `file_names` was read from.
    file_names_stamp: Option<SystemTime>,
}

/// Who is changing the store, for the log line each change gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Origin {
    #[default]
    Mount,
    Api,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Mount => "through the mount",
            Origin::Api => "over the API",
        })
    }
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
    /// Writes skip the kernel's page cache of this file (FOPEN_DIRECT_IO): the daemon
    /// stores the data anyway, and copying it into pages nobody reads again made an
    /// import cost two page-cache writes instead of one.
    pub direct_io: bool,
    /// A writer on the shared inode of this blob. The kernel keeps one I/O mode per inode,
    /// so while readers have it open in passthrough mode, the writer must be opened the same
    /// way (on the blob, read-only): GLib's Replace only checks the file it opens and writes
    /// a temp file it renames over it, so it works; writes through it fail (EBADF).
    pub shares_blob_inode: Option<(Digest, Arc<File>)>,
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub read_only: bool,
    pub no_prune: bool,
    pub passthrough: bool,
    /// The mount point, to resolve absolute symlink targets.
    pub mountpoint: Option<PathBuf>,
    /// The one source of time (tests step it).
    pub clock: Clock,
    /// App views shown at the root (`--view`; `.hf` with `hf_cache`).
    pub views: Vec<crate::views::ViewKind>,
    /// The Hugging Face cache the `.hf` view shows (`--hf-cache`).
    pub hf_cache: Option<PathBuf>,
}

/// Tells the kernel to forget a cached directory entry `(parent inode, name)`.
pub type EntryInvalidator = Box<dyn Fn(u64, &str) + Send + Sync>;
type SharedInvalidator = Arc<dyn Fn(u64, &str) + Send + Sync>;

pub struct Fs {
    pub(crate) store: Arc<Store>,
    /// Set by the FUSE adapter; used for changes the kernel did not make itself (the API).
    invalidator: std::sync::OnceLock<SharedInvalidator>,
    state: Mutex<State>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    pub(crate) opts: Options,
    started: SystemTime,
    /// SHA-256 of the first 64 KiB of weights blobs (None: unreadable), for re-imports.
    prefixes: Mutex<HashMap<Digest, Option<[u8; 32]>>>,
    /// The last weights file each process looked up: (inode, model, file name).
    weights_lookups: Mutex<HashMap<u32, (u64, Name, String)>>,
    /// Digests of scratch files whose content is known (see `scratch::KnownDigest`).
    known_digests: Mutex<HashMap<u64, scratch::KnownDigest>>,
    /// Each view's files, for (index generation, file names version).
    view_cache: ViewCache,
    /// Downloads into LM Studio's view being hashed as they are written, by handle.
    download_hashes: Mutex<HashMap<u64, views::DownloadHash>>,
}

type ViewCache = Mutex<HashMap<crate::views::ViewKind, ((u64, u64), Arc<BTreeMap<String, crate::views::ViewFile>>)>>;

pub const TTL: Duration = Duration::from_millis(500);

impl Fs {
    pub fn new(store: Arc<Store>, opts: Options) -> Fs {
        let index = Index::load(&store);
        let file_names = crate::views::FileNames::load(&store.file_names_path());
        let file_names_stamp = std::fs::metadata(store.file_names_path()).and_then(|m| m.modified()).ok();
        Fs {
            store,
            invalidator: std::sync::OnceLock::new(),
            state: Mutex::new(State {
                index,
                inodes: Inodes { next: ROOT_INO, ..Default::default() },
                blob_meta: HashMap::new(),
                pending_dirs: BTreeSet::new(),
                dir_times: HashMap::new(),
                folders: BTreeMap::new(),
                holding: HashSet::new(),
                clock: opts.clock.clone(),
                scratch_fds: HashMap::new(),
                next_tree: 0,
                origin: Origin::Mount,
                expunging: HashMap::new(),
                prepared: None,
                file_names,
                file_names_version: 0,
                file_names_stamp,
            }),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            started: opts.clock.system_now(),
            opts,
            prefixes: Mutex::new(HashMap::new()),
            weights_lookups: Mutex::new(HashMap::new()),
            known_digests: Mutex::new(HashMap::new()),
            view_cache: Mutex::new(HashMap::new()),
            download_hashes: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another request must not wedge the whole mount.
        crate::sync::lock(&self.state)
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<u64, Handle>> {
        crate::sync::lock(&self.handles)
    }

    pub fn set_entry_invalidator(&self, f: EntryInvalidator) {
        let _ = self.invalidator.set(Arc::from(f));
    }

    pub fn model_count(&self) -> usize {
        self.lock().index.len()
    }

    /// Unmount: scratch files are gone (they never were part of the store), and so is
    /// work that never became a complete model (logged by name).
    pub fn shutdown(&self) {
        let mut st = self.lock();
        let mut waiting = 0;
        if let Ok(Some(views)) = self.view_tree_dir(crate::views::ViewKind::LmStudio, "", false) {
            let _ = std::fs::remove_dir_all(views);
        }
        for (name, f) in &st.folders {
            if let Some(t) = &f.tree {
                let _ = std::fs::remove_dir_all(t);
            }
            waiting += f.waiting.is_some() as usize;
            if f.work.is_none() {
                continue;
            }
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
        if waiting > 0 {
            log::warn!("unmounting with {waiting} manifest.json write(s) still waiting for blobs; they are dropped");
        }
        // What only the dropped work used goes, as the store would have it without us.
        let staged: Vec<Digest> = st.folders.values().flat_map(|f| f.staged_digests()).collect();
        st.folders.clear();
        for d in &staged {
            self.store.release(d);
        }
        let mut released = self.sync_holds(&mut st);
        released.extend(staged);
        self.prune_unused(&mut st, released);
    }

    pub fn store_root(&self) -> &Path {
        self.store.root()
    }
}

#[cfg(test)]
mod tests;
