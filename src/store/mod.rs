//! The Ollama model store on disk: manifests, blobs, ingest, copy, delete, prune.
//! Pure Rust, no FUSE. Every write is atomic (temp file, fsync, rename, parent fsync).

pub mod chat_template;
pub mod complete;
pub mod config;
pub mod create;
mod holds;
mod import;
pub mod index;
mod ingest;
pub use import::{Imported, Way};
pub mod listing;
pub mod manifest;
pub mod prefix_hash;
pub mod verify;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use sha2::{Digest as _, Sha256};

use crate::name::{InvalidName, Name};
pub use manifest::{Digest, Layer, Manifest, ManifestError};

/// Scratch folder inside the store: same filesystem as `blobs/`, so renames are atomic.
pub const SCRATCH_DIR: &str = ".ollamafs";

/// Errors that carry what the user needs to know and the errno the mount answers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("source {0:?} is invalid")]
    InvalidSource(String),
    #[error("destination {0:?} is invalid")]
    InvalidDestination(String),
    #[error("{0}")]
    InvalidName(#[from] InvalidName),
    #[error("model '{0}' not found")]
    NotFound(String),
    #[error("a model named {existing:?} already exists with another spelling")]
    CaseConflict { existing: String },
    #[error("manifest of '{name}' is corrupt: {source}")]
    Corrupt { name: String, source: ManifestError },
    #[error("{0}")]
    Invalid(String),
    #[error("model '{name}' is incomplete: {why}")]
    Incomplete { name: String, why: String },
    #[error("digest mismatch, expected {expected:?}, got {got:?}")]
    DigestMismatch { expected: String, got: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a file's identity was when last read; a change means "read it again".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stamp {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Stamp {
    pub fn of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }
}

/// One manifest file found on disk.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: Name,
    pub path: PathBuf,
    pub stamp: Stamp,
}

/// A manifest file that could not be used.
#[derive(Debug, Clone)]
pub struct Problem {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    manifests: PathBuf,
    blobs: PathBuf,
    scratch: PathBuf,
    /// Owner of the store's root: everything ollamafs creates is given to it.
    owner: (u32, u32),
    temp_counter: AtomicU64,
    /// Weights blobs already found whole (see `complete`).
    whole: std::sync::Mutex<HashSet<Digest>>,
    /// Blobs this process keeps a hard link to (drafts, held changes), with a count of users.
    held: std::sync::Mutex<std::collections::HashMap<Digest, usize>>,
    /// Blobs readable outside the store (the Hugging Face cache's files, named by their
    /// SHA-256): read from there until a model needs them in `blobs/`.
    outside: std::sync::Mutex<std::collections::HashMap<Digest, PathBuf>>,
}

impl Store {
    /// The filesystem the store is on (`statvfs` of its folder).
    pub fn statvfs(&self) -> io::Result<libc::statvfs> {
        let c = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a pointer to a struct of the right type.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s)
    }

    /// Bytes an unprivileged writer may still use on the store's filesystem.
    pub fn free_space(&self) -> io::Result<u64> {
        let s = self.statvfs()?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// Open a store folder. It must exist; `blobs/` and `manifests/` are created as
    /// Ollama would, and leftovers of crashed ollamafs processes are removed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root: PathBuf = root.into();
        let meta = fs::metadata(&root)
            .map_err(|e| io::Error::new(e.kind(), format!("store folder {}: {e}", root.display())))?;
        if !meta.is_dir() {
            return Err(StoreError::Invalid(format!("store {} is not a folder", root.display())));
        }
        let root = root.canonicalize()?;
        let store = Store {
            manifests: root.join("manifests"),
            blobs: root.join("blobs"),
            scratch: root.join(SCRATCH_DIR),
            owner: (meta.uid(), meta.gid()),
            root,
            temp_counter: AtomicU64::new(0),
            whole: Default::default(),
            held: Default::default(),
            outside: Default::default(),
        };
        Ok(store)
    }

    /// Make the folders a writer needs and clear crash leftovers. Read-only users skip this.
    pub fn prepare_for_writes(&self) -> Result<()> {
        for dir in [&self.blobs, &self.manifests, &self.scratch] {
            self.mkdir_owned(dir)?;
        }
        let own = self.process_scratch();
        if own.exists() {
            log::info!("removing leftover scratch {} (an earlier process with this pid)", own.display());
            let _ = fs::remove_dir_all(&own);
        }
        self.clean_scratch()?;
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn manifests_dir(&self) -> &Path {
        &self.manifests
    }
    pub fn blobs_dir(&self) -> &Path {
        &self.blobs
    }
    pub fn scratch_dir(&self) -> &Path {
        &self.scratch
    }
    pub fn owner(&self) -> (u32, u32) {
        self.owner
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.blob_file_name())
    }

    pub fn manifest_path(&self, n: &Name) -> PathBuf {
        self.manifests.join(n.manifest_path())
    }

    /// The file names models came in with through an app view (see `crate::views::FileNames`).
    pub fn file_names_path(&self) -> PathBuf {
        self.scratch.join(FILE_NAMES)
    }

    /// This process's own scratch folder: `.ollamafs/<pid>/`. Other live processes'
    /// folders are left alone; dead ones are removed by `clean_scratch`.
    pub fn process_scratch(&self) -> PathBuf {
        self.scratch.join(std::process::id().to_string())
    }

    /// Remove the scratch folders of processes that are gone (also called by the mount's
    /// periodic rescan, so a daemon killed while another one runs leaves nothing for long).
    pub fn clean_scratch(&self) -> Result<()> {
        let Ok(entries) = fs::read_dir(&self.scratch) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if [LOCK_FILE, TRASH_DIR, PULL_DIR, LOG_FILE, OLD_LOG_FILE, FILE_NAMES].contains(&&*name) {
                continue;
            }
            // Our own folder is live (at start, `prepare_for_writes` removes a stale one
            // left by an earlier process that had our pid).
            let alive = name.parse::<u32>().is_ok_and(|pid| pid == std::process::id() || process_alive(pid));
            if !alive {
                let p = e.path();
                log::info!("removing leftover scratch {}", p.display());
                let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
            }
        }
        Ok(())
    }

    fn mkdir_owned(&self, dir: &Path) -> io::Result<()> {
        match fs::create_dir(dir) {
            Ok(()) => {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
                self.give_to_owner(dir);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = dir.parent() {
                    self.mkdir_owned(parent)?;
                }
                self.mkdir_owned(dir)
            }
            Err(e) => Err(e),
        }
    }

    /// Hand a new file or folder to the store's owner so an Ollama service running as
    /// another user can prune and `utimes` it. Only root can; failures are harmless.
    fn give_to_owner(&self, path: &Path) {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 && self.owner != (0, 0) {
            let _ = std::os::unix::fs::chown(path, Some(self.owner.0), Some(self.owner.1));
        }
    }

    /// Write a manifest atomically: temp file in scratch (never at depth 4, never in
    /// blobs), fsync, rename into place, fsync the folder. Parent folders are created on
    /// demand; if a concurrent Ollama prune removes them between mkdir and rename, retry.
    ///
    /// Only a complete model is ever written (`complete`): anything else is refused with
    /// `StoreError::Incomplete` and the store is left as it was.
    pub fn write_manifest(&self, name: &Name, bytes: &[u8]) -> Result<()> {
        let m = Manifest::parse(bytes)
            .map_err(|e| StoreError::Incomplete { name: name.display_shortest(), why: e.to_string() })?;
        let _lock = self.lock_writes();
        // A blob that Ollama's prune took while a draft held it comes back from the hold.
        for d in m.digests() {
            self.restore_blob(&d);
        }
        self.check_complete(&m).map_err(|why| StoreError::Incomplete { name: name.display_shortest(), why: why.0 })?;
        let (mut f, temp) = self.temp_file()?;
        let res = (|| -> io::Result<()> {
            f.write_all(bytes)?;
            f.sync_all()?;
            self.give_to_owner(&temp);
            let target = self.manifest_path(name);
            let parent = target.parent().unwrap_or(&self.manifests).to_path_buf();
            let mut attempts = 0;
            loop {
                self.mkdir_owned(&parent)?;
                match fs::rename(&temp, &target) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 10 => attempts += 1,
                    Err(e) => return Err(e),
                }
            }
            fsync_dir(&parent)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&temp);
        }
        Ok(res?)
    }

    /// The manifest's bytes, or NotFound.
    pub fn read_manifest_bytes(&self, name: &Name) -> Result<Vec<u8>> {
        fs::read(self.manifest_path(name)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(name.display_shortest()),
            _ => e.into(),
        })
    }

    pub fn read_manifest(&self, name: &Name) -> Result<(Vec<u8>, Manifest)> {
        let bytes = self.read_manifest_bytes(name)?;
        let m =
            Manifest::parse(&bytes).map_err(|source| StoreError::Corrupt { name: name.display_shortest(), source })?;
        Ok((bytes, m))
    }

    /// Every file at depth 4 of `manifests/` (Ollama's `*/*/*/*` glob), with the paths
    /// that are not valid names reported as problems.
    pub fn scan(&self) -> (Vec<Found>, Vec<Problem>) {
        let mut found = Vec::new();
        let mut problems = Vec::new();
        let mut parts: Vec<String> = Vec::with_capacity(4);
        self.scan_level(&self.manifests, &mut parts, &mut found, &mut problems);
        (found, problems)
    }

    fn scan_level(&self, dir: &Path, parts: &mut Vec<String>, found: &mut Vec<Found>, problems: &mut Vec<Problem>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let file_name = e.file_name().to_string_lossy().into_owned();
            // Follow symlinks as Ollama's stat does.
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(err) => {
                    problems.push(Problem { path, reason: format!("cannot stat: {err}") });
                    continue;
                }
            };
            if parts.len() < 3 {
                if meta.is_dir() {
                    parts.push(file_name);
                    self.scan_level(&path, parts, found, problems);
                    parts.pop();
                }
                continue;
            }
            if meta.is_dir() {
                continue; // directories at depth 4 are skipped, as Ollama does
            }
            match Name::from_parts(&parts[0], &parts[1], &parts[2], &file_name) {
                Ok(name) => found.push(Found { name, path, stamp: Stamp::of(&meta) }),
                Err(_) => problems.push(Problem { path, reason: "path is not a valid model name".into() }),
            }
        }
    }

    /// Ollama's `getExistingName`, made deterministic: an exact match wins; otherwise a
    /// model equal ignoring case; otherwise each leading part takes the spelling already
    /// on disk, so `MyUser/x` lands beside `myuser/y` rather than creating a twin folder.
    pub fn existing_spelling(&self, name: &Name, found: &[Found]) -> Name {
        if found.iter().any(|f| &f.name == name) {
            return name.clone();
        }
        if let Some(f) = found.iter().find(|f| f.name.eq_ignore_case(name)) {
            return f.name.clone();
        }
        let mut out = name.clone();
        if let Some(f) = found.iter().find(|f| f.name.host.eq_ignore_ascii_case(&name.host)) {
            out.host = f.name.host.clone();
        }
        if let Some(f) =
            found.iter().find(|f| f.name.host == out.host && f.name.namespace.eq_ignore_ascii_case(&name.namespace))
        {
            out.namespace = f.name.namespace.clone();
        }
        if let Some(f) = found.iter().find(|f| {
            f.name.host == out.host
                && f.name.namespace == out.namespace
                && f.name.model.eq_ignore_ascii_case(&name.model)
        }) {
            out.model = f.name.model.clone();
        }
        out
    }

    /// Copy's name checks, in Ollama's order: both names parse, then each takes the
    /// spelling of what is already on disk.
    pub fn resolve_pair(&self, source: &str, destination: &str) -> Result<(Name, Name)> {
        let src = Name::parse(source).map_err(|_| StoreError::InvalidSource(source.into()))?;
        let dst = Name::parse(destination).map_err(|_| StoreError::InvalidDestination(destination.into()))?;
        let (found, _) = self.scan();
        Ok((self.existing_spelling(&src, &found), self.existing_spelling(&dst, &found)))
    }

    /// A user-given name in the spelling on disk (it need not exist).
    pub fn resolve_spelling(&self, raw: &str) -> Result<Name> {
        let name = Name::parse(raw).map_err(|_| StoreError::InvalidName(InvalidName(raw.into())))?;
        Ok(self.spelling_on_disk(&name))
    }

    /// A parsed name in the spelling on disk (it need not exist).
    pub fn spelling_on_disk(&self, name: &Name) -> Name {
        let (found, _) = self.scan();
        self.existing_spelling(name, &found)
    }

    /// The bytes a copy writes; a missing source is reported as the user spelled it.
    pub fn copy_source(&self, src: &Name, source: &str) -> Result<Vec<u8>> {
        self.read_manifest_bytes(src).map_err(|e| match e {
            StoreError::NotFound(_) => StoreError::NotFound(source.into()),
            e => e,
        })
    }

    /// `ollama cp`: a byte copy of the source manifest; blobs untouched.
    pub fn copy(&self, source: &str, destination: &str) -> Result<(Name, Name)> {
        let (src, dst) = self.resolve_pair(source, destination)?;
        let bytes = self.copy_source(&src, source)?;
        if src != dst {
            self.write_manifest(&dst, &bytes)?;
        }
        Ok((src, dst))
    }

    /// Remove a manifest file and the folders it leaves empty. Returns its parsed form
    /// when it could be read (a corrupt manifest is still removed, its blobs are not pruned).
    pub fn remove_manifest(&self, name: &Name) -> Result<Option<Manifest>> {
        let path = self.manifest_path(name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(name.display_shortest()));
            }
            Err(e) => return Err(e.into()),
        };
        let parsed = Manifest::parse(&bytes).ok();
        fs::remove_file(&path)?;
        if let Some(parent) = path.parent() {
            let _ = fsync_dir(parent);
        }
        self.prune_empty_dirs(&path);
        Ok(parsed)
    }

    /// Remove now-empty folders between a removed manifest and `manifests/` (kept).
    fn prune_empty_dirs(&self, removed: &Path) {
        let mut dir = removed.parent();
        while let Some(d) = dir {
            if d == self.manifests || !d.starts_with(&self.manifests) {
                break;
            }
            if fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// Every digest that a readable manifest references, by Ollama's exact-string rule.
    pub fn digests_in_use(&self) -> HashSet<Digest> {
        let (found, _) = self.scan();
        let mut set = HashSet::new();
        for f in found {
            if let Ok(bytes) = fs::read(&f.path)
                && let Ok(m) = Manifest::parse(&bytes)
            {
                set.extend(m.digests());
            }
        }
        set
    }

    /// Delete the blobs of `candidates` that `in_use` does not hold. Returns the removed ones.
    /// A blob with a second hard link is kept: a draft, a held change or the trash of some
    /// ollamafs process still needs it (see `hold`).
    pub fn prune(&self, candidates: impl IntoIterator<Item = Digest>, in_use: &HashSet<Digest>) -> Vec<Digest> {
        let _lock = self.lock_writes();
        self.prune_locked(candidates, in_use)
    }

    /// `prune` for a caller that already holds `lock_writes`.
    pub fn prune_locked(&self, candidates: impl IntoIterator<Item = Digest>, in_use: &HashSet<Digest>) -> Vec<Digest> {
        let mut removed = Vec::new();
        let mut seen = HashSet::new();
        for d in candidates {
            if in_use.contains(&d) || !seen.insert(d) || self.is_held(&d) {
                continue;
            }
            if fs::metadata(self.blob_path(&d)).is_ok_and(|m| m.nlink() > 1) {
                log::debug!("blob {d} kept: a draft or held change of an ollamafs process uses it");
                continue;
            }
            match fs::remove_file(self.blob_path(&d)) {
                Ok(()) => removed.push(d),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("could not prune blob {d}: {e}"),
            }
        }
        if !removed.is_empty() {
            let _ = fsync_dir(&self.blobs);
        }
        removed
    }

    /// `ollama rm`: remove the manifest, then (unless `no_prune`) every blob of it that
    /// no remaining readable manifest references.
    pub fn delete(&self, raw: &str, no_prune: bool) -> Result<(Name, Vec<Digest>)> {
        let name = self.resolve_spelling(raw.trim())?;
        let removed = self.remove_manifest(&name).map_err(|e| match e {
            StoreError::NotFound(_) => StoreError::NotFound(raw.into()),
            e => e,
        })?;
        let mut pruned = Vec::new();
        if let (Some(m), false) = (removed, no_prune) {
            pruned = self.prune(m.digests(), &self.digests_in_use());
        }
        Ok((name, pruned))
    }

    /// Resolve a user-given name to the model on disk, with Ollama's words on failure.
    pub fn resolve(&self, raw: &str) -> Result<Name> {
        let name = self.resolve_spelling(raw)?;
        if self.manifest_path(&name).is_file() { Ok(name) } else { Err(StoreError::NotFound(raw.into())) }
    }

    /// Read a whole (small) blob.
    pub fn read_blob(&self, d: &Digest) -> io::Result<Vec<u8>> {
        fs::read(self.blob_path(d))
    }
}

/// The lock file in the scratch folder (see `Store::lock_writes`).
pub(crate) const LOCK_FILE: &str = "lock";
/// The Trash of the mount (`fs::trash`): kept across restarts, unlike process scratch.
pub const TRASH_DIR: &str = "trash";
/// Blobs being pulled (`registry`): kept across restarts, so a pull resumes.
pub const PULL_DIR: &str = "pull";
/// A background mount's log where there is no system log (`crate::mount`), and the one
/// before it (rotated).
pub const LOG_FILE: &str = "log";
pub const OLD_LOG_FILE: &str = "log.1";
/// ollamafs' own record of app-view file names (`crate::views::FileNames`).
const FILE_NAMES: &str = "file-names.json";

/// Is process `pid` running? A zombie (killed, not yet reaped) counts as gone.
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: `pid (comm) S ...`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

/// fsync a folder so a rename or unlink in it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Hash a file's contents.
pub fn hash_file(path: &Path) -> io::Result<(Digest, u64)> {
    hash_reader(File::open(path)?)
}

/// SHA-256 and length of everything `r` gives.
pub fn hash_reader(mut r: impl Read) -> io::Result<(Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((Digest(hasher.finalize().into()), len))
}

impl Drop for Store {
    /// This process's scratch folder goes with it (it only ever holds temp files).
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(self.process_scratch());
    }
}

#[cfg(test)]
mod tests;
