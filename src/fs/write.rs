//! Every change the mount can make: create, write, copy_file_range, commit at close,
//! mkdir, unlink, rmdir, rename, link, symlink, setattr. A change to a model always ends
//! in one atomic manifest write; blob data is only ever added by `Store::adopt_blob`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::tree::{dir_as_model, join, model_parent, scope};
use super::work::Publish;
use super::{Attr, FileKind, Fs, FsError, Handle, Node, Opened, Result, ScratchFile, State, enoent};
use crate::layout::{self, CONFIG_FILE, Kind, MANIFEST_FILE, Source};
use crate::name::{DEFAULT_TAG, Name, Part, is_valid_part};
use crate::store::config::{self, GeneratedConfig};
use crate::store::manifest::{CONFIG_MEDIA_TYPE, LAYER_PREFIX};
use crate::store::{Digest, Layer, Manifest, Stamp, Store, hash_file};

/// How much of a new file's first write identifies a weights blob it may be a copy of.
const PREFIX_LEN: usize = 64 << 10;

/// Largest manifest.json / config.json accepted (they are small JSON files).
const MAX_JSON: u64 = 16 << 20;

/// A manifest.json write whose blobs have not all arrived yet.
#[derive(Debug)]
pub(crate) struct WaitingManifest {
    pub(crate) bytes: Vec<u8>,
    missing: HashSet<Digest>,
}

/// The content so far is exactly the first `covered` bytes of an existing blob, and no
/// byte has been copied: what `cp` through copy_file_range produces.
#[derive(Clone, Copy, Debug)]
struct CloneOf {
    digest: Digest,
    covered: u64,
    source_len: u64,
}

/// SHA-256 of a file written in order. Small files are hashed inline; past
/// `HASH_THREAD_AFTER` bytes the hashing moves to its own thread, so a large import's
/// write requests return as soon as the data is in the temp file (hashing overlaps the
/// next request instead of adding to it).
enum SeqHash {
    Inline(Sha256, u64),
    Thread(std::sync::mpsc::SyncSender<Vec<u8>>, std::thread::JoinHandle<Sha256>),
    /// No thread could be started: the commit hashes the temp file.
    Broken,
}

const HASH_THREAD_AFTER: u64 = 4 << 20;
/// How much written data to collect before starting its writeback.
const WRITEBACK_CHUNK: u64 = 8 << 20;

impl SeqHash {
    fn new() -> SeqHash {
        SeqHash::Inline(Sha256::new(), 0)
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            SeqHash::Inline(h, n) => {
                h.update(data);
                *n += data.len() as u64;
                if *n >= HASH_THREAD_AFTER {
                    let mut h = std::mem::take(h);
                    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
                    let spawned = std::thread::Builder::new().name("hash".into()).spawn(move || {
                        for chunk in rx {
                            h.update(&chunk);
                        }
                        h
                    });
                    *self = match spawned {
                        Ok(handle) => SeqHash::Thread(tx, handle),
                        Err(_) => SeqHash::Broken,
                    };
                }
            }
            SeqHash::Thread(tx, _) => {
                if tx.send(data.to_vec()).is_err() {
                    *self = SeqHash::Broken;
                }
            }
            SeqHash::Broken => {}
        }
    }

    /// The digest, or None when the hashing thread failed.
    fn finish(self) -> Option<Digest> {
        match self {
            SeqHash::Inline(h, _) => Some(Digest(h.finalize().into())),
            SeqHash::Thread(tx, handle) => {
                drop(tx);
                handle.join().ok().map(|h| Digest(h.finalize().into()))
            }
            SeqHash::Broken => None,
        }
    }
}

/// An open, writable layer file. Data goes to a temp file in the store's scratch folder,
/// hashed on the way when writes are sequential; the commit at close names the blob.
pub struct Writer {
    pub(crate) ino: u64,
    model: Name,
    file: String,
    /// Made by create (not yet in the manifest): an unlink before close cancels it.
    created: bool,
    temp: Option<(File, PathBuf)>,
    pub(crate) len: u64,
    seq: Option<SeqHash>,
    hashed: u64,
    /// Up to where writeback was started (see `WRITEBACK_CHUNK`).
    written_back: u64,
    clone: Option<CloneOf>,
    /// The cloned blob, open while writes are compared with it.
    source: Option<File>,
    pub(crate) dirty: bool,
    /// A write failed (ENOSPC, EIO): the content is incomplete and is never committed.
    failed: Option<i32>,
    /// Data arrived through this handle (write, truncate, clone). A close before any
    /// (the shell's `dup2` + close of `>`) commits nothing; the last close does.
    touched: bool,
    /// A copy tool's temp file (rsync's `.model.gguf.XXXXXX`): its content becomes a blob
    /// at close, and a layer when it is renamed onto a layer name (`State::staged`).
    staged: bool,
}

impl Writer {
    fn empty(ino: u64, model: Name, file: String, created: bool) -> Writer {
        Writer {
            ino,
            model,
            file,
            created,
            temp: None,
            len: 0,
            seq: Some(SeqHash::new()),
            hashed: 0,
            written_back: 0,
            clone: None,
            source: None,
            dirty: true,
            failed: None,
            touched: false,
            staged: false,
        }
    }

    fn of_blob(ino: u64, model: Name, file: String, digest: Digest, len: u64) -> Writer {
        Writer {
            ino,
            model,
            file,
            created: false,
            temp: None,
            len,
            seq: None,
            hashed: 0,
            written_back: 0,
            clone: Some(CloneOf { digest, covered: len, source_len: len }),
            source: None,
            dirty: false,
            failed: None,
            touched: false,
            staged: false,
        }
    }

    fn temp(&mut self, store: &Store) -> io::Result<&File> {
        let temp = match self.temp.take() {
            Some(t) => t,
            None => store.temp_file()?,
        };
        Ok(&self.temp.insert(temp).0)
    }

    /// Turn a clone into real bytes before a write that does not continue it. The matched
    /// prefix is copied from the blob inside the kernel (`copy_file_range`), not re-sent.
    fn materialize(&mut self, store: &Store) -> io::Result<()> {
        let Some(c) = self.clone.take() else {
            return Ok(());
        };
        self.source = None;
        let temp = self.temp(store)?.try_clone()?;
        let src = store.open_blob(&c.digest)?;
        use std::os::fd::AsRawFd;
        let (mut off_in, mut off_out): (i64, i64) = (0, 0);
        while (off_in as u64) < c.covered {
            let want = (c.covered - off_in as u64) as usize;
            // SAFETY: valid fds and offset pointers that live across the call.
            let n =
                unsafe { libc::copy_file_range(src.as_raw_fd(), &mut off_in, temp.as_raw_fd(), &mut off_out, want, 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
        }
        self.seq = None;
        Ok(())
    }

    /// Compare a write with the blob this content has matched so far: when it continues
    /// the blob byte for byte, nothing is written (a streamed copy of data the store has).
    fn continues_clone(&mut self, store: &Store, offset: u64, data: &[u8]) -> io::Result<bool> {
        let Some(c) = self.clone else { return Ok(false) };
        let end = offset + data.len() as u64;
        if self.temp.is_some() || offset != c.covered || c.covered != self.len || end > c.source_len {
            return Ok(false);
        }
        if self.source.is_none() {
            self.source = Some(store.open_blob(&c.digest)?);
        }
        let Some(src) = &self.source else { return Ok(false) };
        let mut buf = vec![0u8; data.len()];
        let mut got = 0;
        while got < buf.len() {
            match src.read_at(&mut buf[got..], offset + got as u64)? {
                0 => return Ok(false),
                n => got += n,
            }
        }
        if buf != data {
            return Ok(false);
        }
        if let Some(c) = self.clone.as_mut() {
            c.covered = end;
        }
        self.len = end;
        self.dirty = true;
        self.touched = true;
        Ok(true)
    }

    /// Nothing arrived yet: the content may turn out to be blob `digest`; compare instead
    /// of storing while it does (`continues_clone`).
    fn expect_blob(&mut self, digest: Digest, size: u64) {
        if self.len == 0 && self.temp.is_none() && self.clone.is_none() {
            self.clone = Some(CloneOf { digest, covered: 0, source_len: size });
        }
    }

    fn is_untouched(&self) -> bool {
        self.len == 0 && self.temp.is_none() && self.clone.is_none() && self.failed.is_none()
    }

    fn write(&mut self, store: &Store, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.continues_clone(store, offset, data)? {
            return Ok(());
        }
        self.materialize(store)?;
        let written_back = self.written_back;
        let temp = self.temp(store)?;
        temp.write_all_at(data, offset)?;
        // Start writing back what has arrived while the rest is still coming: the commit
        // must fsync anyway, and this way the disk works during the copy, not after it.
        let end = offset + data.len() as u64;
        if end >= written_back + WRITEBACK_CHUNK {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid fd; SYNC_FILE_RANGE_WRITE only starts I/O. Errors surface at fsync.
            unsafe {
                libc::sync_file_range(
                    temp.as_raw_fd(),
                    written_back as i64,
                    (end - written_back) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            self.written_back = end;
        }
        match &mut self.seq {
            Some(h) if offset == self.hashed && self.hashed == self.len => {
                h.update(data);
                self.hashed += data.len() as u64;
            }
            _ => self.seq = None, // out of order: hash the file at commit instead
        }
        self.len = self.len.max(offset + data.len() as u64);
        self.dirty = true;
        self.touched = true;
        Ok(())
    }

    fn truncate(&mut self, store: &Store, size: u64) -> io::Result<()> {
        if size == self.len {
            return Ok(());
        }
        if size == 0 {
            if let Some((_, p)) = self.temp.take() {
                let _ = std::fs::remove_file(p);
            }
            self.clone = None;
            self.seq = Some(SeqHash::new());
            self.hashed = 0;
            self.written_back = 0;
        } else {
            self.materialize(store)?;
            self.temp(store)?.set_len(size)?;
            if size != self.hashed {
                self.seq = None;
            }
        }
        self.len = size;
        self.dirty = true;
        self.touched = true;
        Ok(())
    }

    /// Continue or start a no-copy clone of `digest`. None means "copy for real".
    fn clone_range(&mut self, digest: Digest, source_len: u64, off_in: u64, off_out: u64, len: u64) -> Option<u64> {
        let fresh = self.len == 0 && self.temp.is_none() && self.clone.is_none();
        if fresh && off_in == 0 && off_out == 0 {
            self.clone = Some(CloneOf { digest, covered: 0, source_len });
            self.seq = None;
        }
        let c = self.clone.as_mut()?;
        if c.digest != digest || c.covered != off_in || off_in != off_out || c.covered != self.len {
            return None;
        }
        let n = len.min(c.source_len - c.covered);
        c.covered += n;
        self.len = c.covered;
        self.dirty = true;
        self.touched = true;
        Some(n)
    }

    pub(crate) fn read(&self, store: &Store, offset: u64, size: u32) -> Result<Vec<u8>> {
        if offset >= self.len {
            return Ok(Vec::new());
        }
        let size = (size as u64).min(self.len - offset) as u32;
        if let Some(c) = &self.clone {
            let f = File::open(store.blob_path(&c.digest))?;
            return super::pread(&f, offset, size);
        }
        match &self.temp {
            Some((f, _)) => super::pread(f, offset, size),
            None => Ok(vec![0; size as usize]),
        }
    }

    fn read_all(&self, store: &Store) -> Result<Vec<u8>> {
        if self.len > MAX_JSON {
            return Err(FsError::new(libc::EFBIG, format!("{} larger than {MAX_JSON} bytes", self.file)));
        }
        self.read(store, 0, self.len as u32)
    }

    /// Name the content: an existing blob (clone, or same bytes) or a new one. A blob
    /// that went through `blobs/` now is held (the caller releases it once a manifest or
    /// the mount's work names it); the third value says so.
    fn finish(&mut self, store: &Store) -> Result<(Digest, u64, bool)> {
        if let Some(c) = self.clone
            && c.covered == c.source_len
        {
            self.dirty = false;
            return Ok((c.digest, c.source_len, false));
        }
        self.materialize(store)?;
        let (digest, len) = match self.temp.take() {
            None => store.ingest_bytes_held(b"")?,
            Some((file, path)) => {
                file.set_len(self.len)?;
                let digest = match self.seq.take().and_then(SeqHash::finish) {
                    Some(d) if self.hashed == self.len => d,
                    _ => hash_file(&path)?.0,
                };
                if let Err(e) = store.adopt_blob_held(&path, &file, &digest, self.len) {
                    let _ = std::fs::remove_file(&path);
                    return Err(e.into());
                }
                (digest, self.len)
            }
        };
        self.clone = Some(CloneOf { digest, covered: len, source_len: len });
        self.seq = None;
        self.dirty = false;
        Ok((digest, len, true))
    }

    fn discard(&mut self) {
        if let Some((_, p)) = self.temp.take() {
            let _ = std::fs::remove_file(p);
        }
        self.dirty = false;
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Is `name` (relative to the model folder) a file that becomes part of the manifest?
pub fn is_layer_name(name: &str) -> bool {
    name == CONFIG_FILE
        || name == MANIFEST_FILE
        || layout::media_type_for(name).is_some()
        || name
            .strip_prefix("files/")
            .is_some_and(|r| !r.is_empty() && !r.split('/').any(|p| p.is_empty() || p.starts_with('.')))
}

/// A copy tool's temp file for a layer: rsync writes `.model.gguf.Ab12Cd` (mkstemp) and
/// renames it onto `model.gguf` when done.
pub(crate) fn is_staging_name(full: &str) -> bool {
    let (dir, last) = full.rsplit_once('/').map(|(d, l)| (format!("{d}/"), l)).unwrap_or((String::new(), full));
    let Some(rest) = last.strip_prefix('.') else { return false };
    let Some((target, suffix)) = rest.rsplit_once('.') else { return false };
    suffix.len() >= 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) && is_layer_name(&format!("{dir}{target}"))
}

/// Is a file of this name a weights layer (`model.gguf`, `adapter-2.gguf`, `files/x.weight`)?
fn is_weights_name(name: &str) -> bool {
    match layout::media_type_for(name) {
        Some((_, kind)) => kind == Kind::Weights,
        None => name.starts_with("files/") && !name.ends_with(".json"),
    }
}

fn erofs() -> FsError {
    FsError::new(libc::EROFS, "read-only mount")
}

fn einval(why: impl Into<String>) -> FsError {
    FsError::new(libc::EINVAL, why)
}

fn empty_config() -> Layer {
    Layer { media_type: String::new(), digest: String::new(), size: 0, from: String::new(), name: String::new() }
}

impl State {
    /// A file written into a model made through the mount: it shows while the model is fresh.
    fn mark_written(&mut self, model: &Name, file: &str) {
        let now = self.clock.now();
        if let Some(f) = self.fresh.get_mut(model) {
            f.at = now;
            f.written.insert(file.to_string());
        }
    }

    fn start_fresh(&mut self, model: &Name) {
        let at = self.clock.now();
        self.fresh.insert(model.clone(), super::Fresh { at, written: HashSet::new() });
    }

    /// Start editing the manifest a model folder shows, with its layers' current names.
    fn edit(&self, model: &Name) -> Edit {
        let m = self.view(model).map(|m| m.manifest.clone()).unwrap_or_else(|| Manifest::new(empty_config(), vec![]));
        let names = self
            .files_of(model)
            .into_iter()
            .filter(|f| matches!(f.source, Source::Layer(_)))
            .map(|f| f.name)
            .collect::<Vec<_>>();
        let names = if names.len() == m.layers.len() {
            names
        } else {
            layout::files(&m).into_iter().filter(|f| matches!(f.source, Source::Layer(_))).map(|f| f.name).collect()
        };
        Edit { m, names }
    }
}

/// A change being made to the manifest a model folder shows, keeping each layer's file
/// name (names are stable while the mount lives; see `State::pins`).
struct Edit {
    m: Manifest,
    names: Vec<String>,
}

impl Edit {
    fn find(&self, file: &str) -> Option<Source> {
        if let Some(i) = self.names.iter().position(|n| n == file) {
            return Some(Source::Layer(i));
        }
        (file == CONFIG_FILE && !self.m.config.digest.is_empty()).then_some(Source::Config)
    }

    /// The blob a file shows.
    fn blob(&self, file: &str) -> Option<(Digest, u64)> {
        let l = match self.find(file)? {
            Source::Layer(i) => &self.m.layers[i],
            Source::Config => &self.m.config,
            Source::Manifest => return None,
        };
        Some((l.digest()?, l.size.max(0) as u64))
    }

    /// Remove a file; returns the layer position it had.
    fn remove(&mut self, file: &str) -> Option<usize> {
        match self.find(file)? {
            Source::Layer(i) => {
                self.m.layers.remove(i);
                self.names.remove(i);
                Some(i)
            }
            Source::Config => {
                self.m.config = empty_config();
                None
            }
            Source::Manifest => None,
        }
    }

    /// Set file `file` to blob `d`: replace the layer of that name, or add one at `at`.
    /// Returns false when the file already was exactly that blob.
    fn set(&mut self, file: &str, d: Digest, len: u64, at: Option<usize>) -> Result<bool> {
        match self.find(file) {
            Some(Source::Layer(i)) => {
                let l = &mut self.m.layers[i];
                if l.digest() == Some(d) && l.size == len as i64 {
                    return Ok(false);
                }
                l.digest = d.prefixed();
                l.size = len as i64;
            }
            _ if file == CONFIG_FILE => {
                if self.m.config.digest() == Some(d) && self.m.config.size == len as i64 {
                    return Ok(false);
                }
                self.m.config = Layer::new(CONFIG_MEDIA_TYPE, d, len);
            }
            _ => {
                let layer = match (layout::media_type_for(file), file.strip_prefix("files/")) {
                    (Some((mt, _)), _) => Layer::new(&mt, d, len),
                    (None, Some(rest)) => {
                        let short = if rest.ends_with(".json") { "json" } else { "tensor" };
                        let mut l = Layer::new(&format!("{LAYER_PREFIX}{short}"), d, len);
                        l.name = rest.to_string();
                        l
                    }
                    _ => return Err(einval(format!("{file:?} is not a layer name"))),
                };
                let at = at.unwrap_or(self.m.layers.len()).min(self.m.layers.len());
                self.m.layers.insert(at, layer);
                self.names.insert(at, file.to_string());
            }
        }
        Ok(true)
    }
}

impl Fs {
    pub(super) fn refuse_if_read_only(&self) -> Result<()> {
        if self.opts.read_only { Err(erofs()) } else { Ok(()) }
    }

    /// A folder node as the model it is, when it is one (a colon-less folder that became NAME:latest).
    fn as_model_dir(&self, st: &State, node: &Node) -> Option<(Name, String)> {
        match node {
            Node::Model(m) => Some((m.clone(), String::new())),
            Node::Sub(m, s) => Some((m.clone(), s.clone())),
            Node::Dir(p) if !p.is_empty() => {
                let n = dir_as_model(p)?;
                (st.model_exists(&n) && !st.dir_exists(p)).then_some((n, String::new()))
            }
            _ => None,
        }
    }

    fn parent_node(&self, st: &State, parent: u64) -> Result<Node> {
        let node = self.node_of(st, parent)?;
        if let Some((m, s)) = self.as_model_dir(st, &node) {
            return Ok(if s.is_empty() { Node::Model(m) } else { Node::Sub(m, s) });
        }
        Ok(node)
    }

    /// The model named `entry` inside prefix folder `path`, as mkdir/rename/symlink target.
    fn model_at(&self, path: &str, entry: &str) -> Result<Name> {
        let s = scope(path).ok_or_else(|| einval(format!("{path:?} cannot hold models")))?;
        let (h, ns) =
            s.models.first().ok_or_else(|| einval(format!("{path:?} is a host folder; models go one level down")))?;
        let (model, tag) = entry.rsplit_once(':').unwrap_or((entry, DEFAULT_TAG));
        Name::from_parts(h, ns, model, tag).map_err(|e| einval(e.to_string()))
    }

    /// The model folder `entry` in prefix folder `path`: a model name, or else a draft.
    pub(super) fn model_entry(&self, _st: &State, path: &str, entry: &str) -> Result<Name> {
        match self.model_at(path, entry) {
            Ok(n) => Ok(n),
            Err(why) => {
                let s = scope(path).ok_or(why)?;
                let (h, ns) = s.models.first().ok_or_else(|| einval(format!("{path:?} cannot hold models")))?;
                Ok(Name::draft(h, ns, entry))
            }
        }
    }

    fn check_case_twin(&self, st: &State, n: &Name) -> Result<()> {
        let twin = st
            .index
            .find_ignore_case(n)
            .cloned()
            .or_else(|| st.pending_models.iter().find(|p| p.eq_ignore_case(n)).cloned());
        match twin {
            Some(t) if &t != n => Err(FsError::new(
                libc::EEXIST,
                format!("{} differs only in case from existing {}", n.display_shortest(), t.display_shortest()),
            )),
            _ => Ok(()),
        }
    }

    // ----- folders -----

    pub fn mkdir(&self, parent: u64, name: &str, mode: u32) -> Result<Attr> {
        self.refuse_if_read_only()?;
        check_name_length(name)?;
        let mut st = self.lock();
        let parent_node = self.parent_node(&st, parent)?;
        let node = match &parent_node {
            Node::Dir(p) if p.is_empty() && super::trash::trash_uid(name).is_some() => {
                self.trash_make(super::trash::trash_uid(name).unwrap_or_default())?
            }
            Node::Trash(uid, rel) => {
                let child = join(rel, name);
                self.trash_mkdir(*uid, &child, mode)?;
                Node::Trash(*uid, child)
            }
            Node::Dir(p) => self.mkdir_in_prefix(&mut st, p, name)?,
            Node::Model(m)
                if st.index.get(m).is_none() && model_parent(m).is_empty() && m.display_shortest().contains(':') =>
            {
                // `mkdir -p localhost:5000/team/...`: the first mkdir looked like a model
                // (`localhost` tag `5000`); a folder inside it makes it a host prefix.
                let as_host = format!("{}:{}", m.model, m.tag);
                if !is_valid_part(Part::Host, &as_host) || !is_valid_part(Part::Namespace, name) {
                    return Err(einval(format!("{name:?} cannot go inside model folder {}", m.display_shortest())));
                }
                st.pending_models.remove(m);
                st.pending_dirs.insert(as_host.clone());
                let child = join(&as_host, name);
                st.pending_dirs.insert(child.clone());
                let old = Node::Model(m.clone());
                st.inodes.rekey(&old, &Node::Dir(as_host));
                Node::Dir(child)
            }
            Node::Model(m) | Node::Sub(m, _) => {
                let sub = match &parent_node {
                    Node::Sub(_, s) => join(s, name),
                    _ => name.to_string(),
                };
                if !(sub == "files" || sub.starts_with("files/")) || name.starts_with('.') {
                    return Err(einval(format!("only a files/ folder can be made inside a model, not {sub:?}")));
                }
                if st.lookup_in_model(m, "", &sub).is_some() {
                    return Err(FsError::new(libc::EEXIST, sub));
                }
                st.pending_subs.insert((m.clone(), sub.clone()));
                Node::Sub(m.clone(), sub)
            }
            _ => return Err(FsError::new(libc::ENOTDIR, "not a folder")),
        };
        let attr = self.attr_of(&mut st, &node)?;
        st.inodes.remember(&node);
        Ok(attr)
    }

    fn mkdir_in_prefix(&self, st: &mut State, p: &str, name: &str) -> Result<Node> {
        if st.lookup_in_dir(p, name).is_some() {
            return Err(FsError::new(libc::EEXIST, name.to_string()));
        }
        let child = join(p, name);
        let model_position = name.contains(':') || scope(&child).is_none();
        if !model_position {
            // A prefix: valid as a namespace or host, and no case-only twin beside it.
            if !is_valid_part(Part::Host, name) && !is_valid_part(Part::Namespace, name) {
                return Err(einval(format!("{name:?} is not a valid namespace or host name")));
            }
            if let Some(twin) = st.dir_children(p).keys().find(|k| k.eq_ignore_ascii_case(name) && *k != name) {
                return Err(FsError::new(libc::EEXIST, format!("{name:?} differs only in case from {twin:?}")));
            }
            st.pending_dirs.insert(child.clone());
            return Ok(Node::Dir(child));
        }
        let n = match self.model_at(p, name) {
            Ok(n) => {
                self.check_case_twin(st, &n)?;
                n
            }
            // Any other folder name is a draft (a file manager's "New Folder" or
            // "NAME (copy)"): it holds files, is never published, and becomes a model when
            // renamed to a valid name.
            Err(why) => {
                let s = scope(p).ok_or(why)?;
                let (h, ns) = s
                    .models
                    .first()
                    .ok_or_else(|| einval(format!("{p:?} is a host folder; models go one level down, not {name:?}")))?;
                log::info!("{name:?} is not a valid model name: a draft until renamed to one");
                Name::draft(h, ns, name)
            }
        };
        if st.model_exists(&n) {
            return Err(FsError::new(libc::EEXIST, n.display_shortest()));
        }
        st.pending_models.insert(n.clone());
        st.start_fresh(&n);
        Ok(Node::Model(n))
    }

    pub fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        self.refuse_if_read_only()?;
        let mut st = self.lock();
        let node = self.lookup_node(&st, parent, name)?;
        match &node {
            Node::Trash(uid, rel) => self.trash_rmdir(&mut st, *uid, rel),
            Node::Dir(p) => {
                if !st.dir_children(p).is_empty() {
                    return Err(FsError::new(libc::ENOTEMPTY, p.clone()));
                }
                st.pending_dirs.remove(p);
                Ok(())
            }
            Node::Model(m) => {
                if st.is_published(m) || !st.model_children(m, "").is_empty() {
                    return Err(FsError::new(libc::ENOTEMPTY, m.display_shortest()));
                }
                // An empty draft: nothing of it was ever in the store.
                self.forget_model_folder(&mut st, m);
                let released = self.sync_holds(&mut st);
                self.prune_unused(&mut st, released);
                Ok(())
            }
            Node::Sub(m, s) => {
                if !st.model_children(m, s).is_empty() {
                    return Err(FsError::new(libc::ENOTEMPTY, s.clone()));
                }
                st.pending_subs.remove(&(m.clone(), s.clone()));
                Ok(())
            }
            _ => Err(FsError::new(libc::ENOTDIR, name.to_string())),
        }
    }

    // ----- files -----

    /// Create a file in a model folder: a layer writer, or a scratch file for other names.
    pub fn create(&self, parent: u64, name: &str, mode: u32, flags: i32) -> Result<(Attr, Opened)> {
        self.refuse_if_read_only()?;
        check_name_length(name)?;
        let mut st = self.lock();
        let mut parent_node = self.node_of(&st, parent)?;
        if let Node::Trash(uid, rel) = &parent_node {
            return self.trash_create(&mut st, *uid, &join(rel, name), mode, flags);
        }
        // A colon-less prefix folder with a layer file created in it becomes NAME:latest.
        if let Node::Dir(p) = &parent_node
            && !p.is_empty()
            && is_layer_name(name)
            && let Some(n) = dir_as_model(p)
            && st.dir_children(p).is_empty()
        {
            self.check_case_twin(&st, &n)?;
            st.pending_dirs.remove(p);
            st.pending_models.insert(n.clone());
            st.start_fresh(&n);
            parent_node = Node::Model(n);
        }
        let (model, sub) = match self.as_model_dir(&st, &parent_node) {
            Some(ms) => ms,
            None => {
                return Err(einval(format!("{name:?}: files can only be created inside a model folder")));
            }
        };
        let full = join(&sub, name);
        if st.lookup_in_model(&model, "", &full).is_some() || st.creating.contains(&(model.clone(), full.clone())) {
            return Err(FsError::new(libc::EEXIST, full));
        }
        let staging = is_staging_name(&full);
        if !is_layer_name(&full) && !staging {
            return self.create_scratch(&mut st, model, full, mode, flags);
        }
        if !st.is_published(&model) && st.pending_models.insert(model.clone()) {
            st.start_fresh(&model);
        }
        st.mark_written(&model, &full);
        let node = Node::File(model.clone(), full.clone());
        let ino = st.inodes.remember(&node);
        st.creating.insert((model.clone(), full.clone()));
        let mut attr = self.base_attr(ino, FileKind::File, 0, std::time::SystemTime::now());
        // A temporary inode: at close a weights file becomes its blob's shared inode, so
        // the kernel must not keep this one (`stat` after `cp` shows the final inode).
        attr.transient = true;
        drop(st);
        let mut w = Writer::empty(ino, model, full, true);
        w.staged = staging;
        let fh = self.add_handle(Handle::Write(Arc::new(Mutex::new(w))));
        Ok((attr, Opened { fh, keep_cache: false, passthrough: None }))
    }

    fn create_scratch(
        &self,
        st: &mut State,
        model: Name,
        full: String,
        mode: u32,
        flags: i32,
    ) -> Result<(Attr, Opened)> {
        let (f, path) = self.store.temp_file()?;
        drop(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        st.scratch.insert((model.clone(), full.clone()), ScratchFile { path: path.clone() });
        let node = Node::File(model, full);
        let attr = self.attr_of(st, &node)?;
        let ino = st.inodes.remember(&node);
        let opened = self.open_scratch(&path, flags & !(libc::O_CREAT | libc::O_EXCL), ino)?;
        Ok((attr, opened))
    }

    pub(super) fn open_scratch(&self, path: &PathBuf, flags: i32, ino: u64) -> Result<Opened> {
        let acc = flags & libc::O_ACCMODE;
        let mut oo = OpenOptions::new();
        oo.read(true);
        if acc != libc::O_RDONLY {
            oo.write(true);
        }
        oo.truncate(flags & libc::O_TRUNC != 0 && acc != libc::O_RDONLY);
        oo.custom_flags(flags & libc::O_APPEND);
        let f = oo.open(path)?;
        let fh = self.add_handle(Handle::Scratch(Arc::new(f), ino));
        Ok(Opened { fh, keep_cache: false, passthrough: None })
    }

    /// Open an existing per-model file for writing (text layers, config, manifest).
    pub(super) fn open_writer(&self, st: &mut State, ino: u64, model: &Name, name: &str, flags: i32) -> Result<Opened> {
        let m = st.view(model).cloned().ok_or_else(|| enoent(name))?;
        let f = st.files_of(model).into_iter().find(|f| f.name == name).ok_or_else(|| enoent(name))?;
        if f.kind == Kind::Weights {
            return Err(FsError::new(libc::EPERM, "weights are immutable: rm it or cp -f to replace the layer"));
        }
        let truncate = flags & libc::O_TRUNC != 0;
        let w = match (f.source, truncate) {
            (_, true) => Writer::empty(ino, model.clone(), name.to_string(), false),
            (Source::Manifest, false) => {
                // Start from the current bytes: a small in-place edit of the manifest.
                let mut w = Writer::empty(ino, model.clone(), name.to_string(), false);
                let bytes = st.index.get(model).map(|p| p.bytes.clone()).unwrap_or_else(|| m.bytes.clone());
                w.write(&self.store, 0, &bytes)?;
                w.dirty = false;
                w
            }
            (Source::Config, false) | (Source::Layer(_), false) => {
                let l = match f.source {
                    Source::Layer(i) => &m.manifest.layers[i],
                    _ => &m.manifest.config,
                };
                let d = l.digest().ok_or_else(|| FsError::new(libc::EIO, format!("invalid digest {:?}", l.digest)))?;
                let len = self.blob_meta(st, &d).map(|b| b.size).unwrap_or(l.size.max(0) as u64);
                Writer::of_blob(ino, model.clone(), name.to_string(), d, len)
            }
        };
        let fh = self.add_handle(Handle::Write(Arc::new(Mutex::new(w))));
        Ok(Opened { fh, keep_cache: false, passthrough: None })
    }

    fn handle(&self, fh: u64) -> Result<HandleRef> {
        match self.handles().get(&fh) {
            Some(Handle::Write(w)) => Ok(HandleRef::Writer(w.clone())),
            Some(Handle::Scratch(f, _)) => Ok(HandleRef::Scratch(f.clone())),
            Some(Handle::Blob(..)) | Some(Handle::Bytes(_)) => Err(FsError::new(libc::EBADF, "opened read-only")),
            Some(Handle::Dir(_)) => Err(FsError::new(libc::EISDIR, "folder")),
            None => Err(FsError::new(libc::EBADF, "unknown handle")),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        match self.handle(fh)? {
            HandleRef::Writer(w) => {
                let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(errno) = w.failed {
                    return Err(FsError::new(errno, "an earlier write to this file failed"));
                }
                if offset == 0
                    && w.is_untouched()
                    && !data.is_empty()
                    && let Some((d, size)) = self.blob_starting_with(&w.model, &w.file, data)
                {
                    log::debug!("{} of {} starts as blob {d}: comparing, not storing", w.file, w.model);
                    w.expect_blob(d, size);
                }
                if let Err(e) = w.write(&self.store, offset, data) {
                    // Give the space back now and never commit a partial file.
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    w.failed = Some(errno);
                    w.discard();
                    return Err(e.into());
                }
            }
            HandleRef::Scratch(f) => f.write_all_at(data, offset)?,
        }
        Ok(data.len() as u32)
    }

    /// copy_file_range: a destination that receives a whole source file in order, from
    /// offset 0, becomes that blob with no byte read or written. Anything else copies.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_file_range(
        &self,
        ino_in: u64,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> Result<u64> {
        let source = self.clone_source(ino_in, fh_in);
        if let (Some((d, src_len)), HandleRef::Writer(w)) = (source, self.handle(fh_out)?) {
            let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
            if off_in >= src_len {
                return Ok(0);
            }
            if let Some(n) = w.clone_range(d, src_len, off_in, off_out, len) {
                return Ok(n);
            }
        }
        // Real copy, in bounded chunks.
        let chunk = len.min(8 << 20) as u32;
        let data = self.read(fh_in, off_in, chunk)?;
        if data.is_empty() {
            return Ok(0);
        }
        self.write(fh_out, off_out, &data)?;
        Ok(data.len() as u64)
    }

    /// A blob that the first bytes of a new file match: one a process has open for reading
    /// (GLib's splice copy, mc, rsync, Python copying inside the mount), the blob the file
    /// showed before, or a weights blob with the same first 64 KiB (a re-import).
    fn blob_starting_with(&self, model: &Name, file: &str, data: &[u8]) -> Option<(Digest, u64)> {
        let mut candidates: Vec<Digest> = self
            .handles()
            .values()
            .filter_map(|h| match h {
                Handle::Blob(_, _, d) => Some(*d),
                _ => None,
            })
            .collect();
        {
            let st = self.lock();
            if let Some((d, _)) = st.edit(model).blob(file) {
                candidates.push(d);
            }
        }
        if data.len() >= PREFIX_LEN {
            candidates.extend(self.blobs_with_prefix(&data[..PREFIX_LEN]));
        }
        let mut seen = HashSet::new();
        for d in candidates {
            if !seen.insert(d) {
                continue;
            }
            let Ok(f) = self.store.open_blob(&d) else { continue };
            let Ok(meta) = f.metadata() else { continue };
            if meta.len() < data.len() as u64 {
                continue;
            }
            let mut head = vec![0u8; data.len()];
            if f.read_exact_at(&mut head, 0).is_ok() && head == data {
                return Some((d, meta.len()));
            }
        }
        None
    }

    /// Weights blobs (of at least `PREFIX_LEN` bytes) whose first `PREFIX_LEN` bytes hash
    /// like `head`. Each blob's prefix hash is computed once (blobs never change).
    fn blobs_with_prefix(&self, head: &[u8]) -> Vec<Digest> {
        let want: [u8; 32] = Sha256::digest(head).into();
        let weights: Vec<Digest> = {
            let st = self.lock();
            st.index
                .models()
                .chain(st.work.values())
                .flat_map(|m| m.manifest.layers.iter())
                .filter(|l| l.size >= PREFIX_LEN as i64 && layout::base_name(&l.media_type, &l.name).1 == Kind::Weights)
                .filter_map(Layer::digest)
                .collect()
        };
        let mut known = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for d in weights {
            let p = *known.entry(d).or_insert_with(|| {
                let mut buf = vec![0u8; PREFIX_LEN];
                let f = self.store.open_blob(&d).ok()?;
                f.read_exact_at(&mut buf, 0).ok()?;
                Some(Sha256::digest(&buf).into())
            });
            if p == Some(want) && !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }

    /// The blob an open source file shows, when it is an unchanged blob.
    fn clone_source(&self, ino: u64, fh: u64) -> Option<(Digest, u64)> {
        if !matches!(self.handles().get(&fh), Some(Handle::Blob(..))) {
            return None;
        }
        let mut st = self.lock();
        let node = st.inodes.node(ino)?;
        let d = match &node {
            Node::Blob(d) => *d,
            Node::File(m, name) => {
                let model = st.view(m)?.clone();
                let f = st.files_of(m).into_iter().find(|f| f.name == *name)?;
                match f.source {
                    Source::Layer(i) => model.manifest.layers[i].digest()?,
                    Source::Config => model.manifest.config.digest()?,
                    Source::Manifest => return None,
                }
            }
            _ => return None,
        };
        let meta = self.blob_meta(&mut st, &d)?;
        Some((d, meta.size))
    }

    /// flush (every close): commit what the handle changed, durably, before close returns.
    pub fn flush(&self, fh: u64) -> Result<()> {
        self.flush_handle(fh, false)
    }

    fn flush_handle(&self, fh: u64, last_close: bool) -> Result<()> {
        let w = match self.handles().get(&fh) {
            Some(Handle::Write(w)) => w.clone(),
            Some(Handle::Scratch(f, _)) => {
                let f = f.clone();
                return f.sync_data().map_err(Into::into);
            }
            _ => return Ok(()),
        };
        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(errno) = w.failed {
            return Err(FsError::new(
                errno,
                format!("{} of {} was not saved: a write failed", w.file, w.model.display_shortest()),
            ));
        }
        if !w.dirty || !(w.touched || last_close) {
            return Ok(());
        }
        let res = self.commit(&mut w);
        if res.is_err() {
            w.discard();
        }
        res
    }

    /// release: commit if anything is still pending, then drop the handle.
    pub fn release(&self, fh: u64) -> Result<()> {
        let res = self.flush_handle(fh, true);
        let h = self.handles().remove(&fh);
        if let Some(Handle::Scratch(_, ino)) = h {
            let still_open = self.handles().values().any(|h| matches!(h, Handle::Scratch(_, i) if *i == ino));
            if !still_open {
                self.lock().orphans.remove(&ino);
            }
        }
        if let Some(Handle::Write(w)) = h {
            let w = w.lock().unwrap_or_else(|e| e.into_inner());
            if w.created {
                self.lock().creating.remove(&(w.model.clone(), w.file.clone()));
            }
        }
        res
    }

    fn commit(&self, w: &mut Writer) -> Result<()> {
        let key = (w.model.clone(), w.file.clone());
        if w.created && !self.lock().creating.contains(&key) {
            w.discard(); // unlinked before close
            return Ok(());
        }
        if w.file == MANIFEST_FILE {
            let bytes = w.read_all(&self.store)?;
            w.discard();
            return self.write_manifest_file(&w.model, bytes);
        }
        if w.file == CONFIG_FILE {
            check_config_json(&w.model, &w.read_all(&self.store)?)?;
        }
        if w.len == 0 && is_weights_name(&w.file) {
            // An empty weights file is no layer (and no blob): nothing to commit yet.
            log::debug!("{} of {} is empty; not a layer", w.file, w.model.display_shortest());
            return Ok(());
        }
        let (d, len, held) = w.finish(&self.store)?;
        let mut st = self.lock();
        st.blob_meta.remove(&d);
        let (model, file) = key;
        if w.staged {
            // rsync's temp file: named and kept (held) until it is renamed onto a layer.
            if !held {
                self.store.hold(&d)?;
            }
            if let Some((old, _)) = st.staged.insert((model, file), (d, len)) {
                self.store.release(&old);
            }
            return Ok(());
        }
        let res = self.apply_layer(&mut st, &model, &file, d, len);
        if held {
            self.store.release(&d);
        }
        res
    }

    /// Put blob `d` into `model` as file `file`: replace the layer of that name, or add one.
    fn apply_layer(&self, st: &mut State, model: &Name, file: &str, d: Digest, len: u64) -> Result<()> {
        if let Some(wait) = st.waiting.get_mut(model) {
            // A manifest.json is waiting for its blobs: files arriving now only supply blobs.
            wait.missing.remove(&d);
            return self.try_waiting(st, model);
        }
        let mut e = st.edit(model);
        if e.find(file).is_none() && !(file == CONFIG_FILE || is_layer_name(file)) {
            return Err(einval(format!("{file:?} is not a layer name")));
        }
        let at = st.vacated.remove(&(model.clone(), file.to_string()));
        if !e.set(file, d, len, at)? && !st.work.contains_key(model) && st.is_published(model) {
            return Ok(()); // same content: the manifest keeps its bytes and its ID
        }
        self.commit_edit(st, model, e, Publish::IfComplete)
    }

    /// Commit an edit: the names become the folder's stable names, then publish or hold.
    fn commit_edit(&self, st: &mut State, model: &Name, e: Edit, publish: Publish) -> Result<()> {
        let now = st.clock.now();
        if let Some(f) = st.fresh.get_mut(model) {
            f.at = now;
        }
        st.pins.insert(model.clone(), e.names);
        self.commit_view(st, model, e.m, publish)
    }

    /// A model needs a config for Ollama to list it: generate one from the GGUF header
    /// (as `ollama create` does) when there is none, or when ours was made before the
    /// weights arrived.
    /// Returns the generated config blob, held (see `Store::ingest_bytes_held`): the caller
    /// releases it once the manifest or the mount's work names it.
    pub(super) fn fill_config(&self, m: &mut Manifest) -> Result<Option<Digest>> {
        let weights = m.layers.iter().find(|l| l.media_type == format!("{LAYER_PREFIX}model")).and_then(Layer::digest);
        // No weights yet (a copy that writes text files first): leave the config empty
        // rather than store a blob that the next file replaces.
        if weights.is_none() {
            return Ok(None);
        }
        let regenerate = match m.config.digest() {
            None => true,
            Some(cd) => {
                weights.is_some()
                    && self
                        .store
                        .read_blob(&cd)
                        .ok()
                        .and_then(|b| config::details(&b).ok())
                        .is_some_and(|d| d.format.is_empty())
            }
        };
        if !regenerate {
            return Ok(None);
        }
        let generated = weights
            .and_then(|d| self.store.open_blob(&d).ok())
            .and_then(|f| crate::gguf::read_header(BufReader::new(f)).ok())
            .map(|h| GeneratedConfig::from_gguf(&h))
            .unwrap_or_else(GeneratedConfig::empty);
        let (d, len) = self.store.ingest_bytes_held(&generated.to_bytes())?;
        m.config = Layer::new(CONFIG_MEDIA_TYPE, d, len);
        Ok(Some(d))
    }

    /// Write a model's manifest (only a complete model passes `Store::write_manifest`),
    /// update the index, end any work on it, prune what the old version alone used.
    pub(super) fn install(&self, st: &mut State, model: &Name, bytes: Vec<u8>) -> Result<()> {
        let old = st.index.get(model).cloned();
        if old.as_ref().is_some_and(|o| *o.bytes == *bytes) && !st.work.contains_key(model) {
            return Ok(());
        }
        self.store.write_manifest(model, &bytes)?;
        let stamp = std::fs::metadata(self.store.manifest_path(model)).map(|m| Stamp::of(&m)).unwrap_or_default();
        st.index.put(model.clone(), bytes, stamp);
        st.pending_models.remove(model);
        let mut candidates: Vec<Digest> =
            st.work.remove(model).map(|w| w.manifest.digests().collect()).unwrap_or_default();
        candidates.extend(self.sync_holds(st));
        if let Some(old) = old {
            candidates.extend(old.manifest.digests());
        }
        self.prune_unused(st, candidates);
        Ok(())
    }

    /// Ollama's rule: remove blobs that no readable manifest references any more. Blobs
    /// that work in progress holds are kept; so are blobs a manifest written by another
    /// process uses that this mount has not read yet (checked on disk, under the store's
    /// write lock, so two ollamafs processes never prune each other's blobs).
    pub(super) fn prune_unused(&self, st: &mut State, candidates: Vec<Digest>) {
        if self.opts.no_prune {
            return;
        }
        let mut unused: Vec<Digest> =
            candidates.into_iter().filter(|d| st.index.refs(d).any == 0 && !st.holding.contains(d)).collect();
        unused.sort();
        unused.dedup();
        if unused.is_empty() {
            return;
        }
        let _lock = self.store.lock_writes();
        let (found, _) = self.store.scan();
        let mut elsewhere = HashSet::new();
        for f in found {
            if st.index.known_stamp(&f.name) != Some(f.stamp)
                && let Ok(bytes) = std::fs::read(&f.path)
                && let Ok(m) = Manifest::parse(&bytes)
            {
                elsewhere.extend(m.digests());
            }
        }
        for d in self.store.prune_locked(unused, &elsewhere) {
            st.blob_meta.remove(&d);
            log::info!("pruned unused blob {d}");
        }
    }

    /// A written manifest.json: validated, then installed byte for byte (a copy keeps the
    /// source's ID), or parked until its missing blobs arrive in the same folder.
    fn write_manifest_file(&self, model: &Name, bytes: Vec<u8>) -> Result<()> {
        let mut st = self.lock();
        self.write_manifest_locked(&mut st, model, bytes)
    }

    fn write_manifest_locked(&self, st: &mut State, model: &Name, bytes: Vec<u8>) -> Result<()> {
        let missing = self.check_manifest(model, &bytes)?;
        let now = st.clock.now();
        if let Some(f) = st.fresh.get_mut(model) {
            f.at = now;
        }
        if model.is_draft_only() {
            // A draft that can never be published takes the manifest as its view, byte for
            // byte, so that renaming it to a model name publishes exactly these bytes.
            let m = Manifest::parse(&bytes).map_err(|e| einval(e.to_string()))?;
            st.pins.remove(model);
            return self.publish_or_hold(st, model, m, bytes, Publish::NeverDraft);
        }
        if missing.is_empty() {
            st.waiting.remove(model);
            self.install(st, model, bytes)?;
            // The whole manifest was replaced: its layers get their natural names.
            st.pins.remove(model);
            return Ok(());
        }
        log::info!("manifest.json of {} waits for {} blob(s)", model.display_shortest(), missing.len());
        if st.index.get(model).is_none() {
            st.pending_models.insert(model.clone());
        }
        st.waiting.insert(model.clone(), WaitingManifest { bytes, missing });
        let released = self.sync_holds(st);
        self.prune_unused(st, released);
        Ok(())
    }

    fn try_waiting(&self, st: &mut State, model: &Name) -> Result<()> {
        let ready = st.waiting.get(model).is_some_and(|w| w.missing.is_empty());
        if !ready {
            return Ok(());
        }
        let Some(w) = st.waiting.remove(model) else {
            return Ok(());
        };
        self.install(st, model, w.bytes)?;
        st.pins.remove(model);
        Ok(())
    }

    pub fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        self.refuse_if_read_only()?;
        let mut st = self.lock();
        let parent_node = self.parent_node(&st, parent)?;
        let (model, sub) = match &parent_node {
            Node::Model(m) => (m.clone(), String::new()),
            Node::Sub(m, s) => (m.clone(), s.clone()),
            Node::Trash(uid, rel) => return self.trash_unlink(&mut st, *uid, &join(rel, name)),
            Node::Dir(p) => {
                return Err(match st.lookup_in_dir(p, name) {
                    Some(_) => FsError::new(libc::EISDIR, name.to_string()),
                    None => enoent(name),
                });
            }
            _ => return Err(FsError::new(libc::ENOTDIR, "not a folder")),
        };
        let full = join(&sub, name);
        let key = (model.clone(), full.clone());
        if let Some(s) = st.scratch.remove(&key) {
            // Open descriptors keep working on the unlinked file, as on any filesystem.
            let _ = std::fs::remove_file(&s.path);
            if let Some(&ino) = st.inodes.by_node.get(&Node::File(model.clone(), full.clone())) {
                let open = self.handles().values().find_map(|h| match h {
                    Handle::Scratch(f, i) if *i == ino => Some(f.clone()),
                    _ => None,
                });
                if let Some(f) = open {
                    st.orphans.insert(ino, f);
                }
            }
            return Ok(());
        }
        if st.creating.remove(&key) {
            return Ok(()); // the writer's commit sees this and drops its data
        }
        if let Some((d, _)) = st.staged.remove(&key) {
            self.store.release(&d);
            self.prune_unused(&mut st, vec![d]);
            return Ok(());
        }
        if full == MANIFEST_FILE && st.is_published(&model) {
            return self.unpublish(&mut st, &model);
        }
        self.remove_layer(&mut st, &model, &full)
    }

    /// A layer file leaves a model folder (unlink, trash): the model is published without
    /// it, or the change is held when that would leave it incomplete.
    pub(super) fn remove_layer(&self, st: &mut State, model: &Name, file: &str) -> Result<()> {
        let mut e = st.edit(model);
        if e.find(file).is_none() {
            return Err(enoent(file));
        }
        if let Some(i) = e.remove(file) {
            st.vacated.insert((model.clone(), file.to_string()), i);
        }
        self.commit_edit(st, model, e, Publish::NeverDraft)
    }

    /// The API deletes a model: it leaves the store and its folder leaves the mount.
    pub(super) fn delete_model(&self, st: &mut State, model: &Name) -> Result<()> {
        if st.index.get(model).is_none() {
            return Err(enoent(model));
        }
        let removed = self.store.remove_manifest(model)?;
        let old = st.index.remove(model);
        self.forget_model_folder(st, model);
        let mut candidates = self.sync_holds(st);
        candidates.extend(old.iter().flat_map(|m| m.manifest.digests()));
        candidates.extend(removed.iter().flat_map(|m| m.digests()));
        self.prune_unused(st, candidates);
        Ok(())
    }

    // ----- rename, link, symlink -----

    pub fn rename(&self, parent: u64, name: &str, newparent: u64, newname: &str, flags: u32) -> Result<()> {
        self.refuse_if_read_only()?;
        check_name_length(newname)?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(einval("RENAME_EXCHANGE is not supported"));
        }
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
                self.rename_model(&mut st, from, &to)
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

    fn rename_model(&self, st: &mut State, from: &Name, to: &Name) -> Result<()> {
        if from == to {
            return Ok(());
        }
        if st.is_published(to) || (st.model_exists(to) && !st.model_children(to, "").is_empty()) {
            return Err(FsError::new(libc::ENOTEMPTY, format!("{} exists", to.display_shortest())));
        }
        if !to.is_draft_only() {
            self.check_case_twin(st, to)?;
        }
        if st.pending_models.contains(to) {
            self.forget_model_folder(st, to); // an empty folder is replaced, as rename(2) does
        }
        if !st.is_published(from) {
            if !st.pending_models.remove(from) {
                return Err(enoent(from));
            }
            st.pending_models.insert(to.clone());
            self.move_model_folder(st, from, to);
            st.inodes.rekey(&Node::Model(from.clone()), &Node::Model(to.clone()));
            // A complete draft under its new name is published.
            if let Some((m, bytes)) = st.work.get(to).map(|w| (w.manifest.clone(), w.bytes.to_vec())) {
                self.publish_or_hold(st, to, m, bytes, Publish::IfComplete)?;
            }
            return Ok(());
        }
        let m = st.index.get(from).cloned().ok_or_else(|| enoent(from))?;
        self.store.write_manifest(to, &m.bytes)?;
        let stamp = std::fs::metadata(self.store.manifest_path(to)).map(|m| Stamp::of(&m)).unwrap_or_default();
        st.index.put(to.clone(), m.bytes.to_vec(), stamp);
        st.pending_models.remove(to);
        self.store.remove_manifest(from)?;
        st.index.remove(from);
        self.move_model_folder(st, from, to);
        st.inodes.rekey(&Node::Model(from.clone()), &Node::Model(to.clone()));
        Ok(())
    }

    /// Move every model below prefix `from` to prefix `to`; all or nothing on validation.
    fn rename_prefix(&self, st: &mut State, from: &str, to: &str) -> Result<()> {
        if scope(to).is_none() {
            return Err(einval(format!("{to:?} cannot be a prefix folder")));
        }
        if st.dir_exists(to) && !st.dir_children(to).is_empty() {
            return Err(FsError::new(libc::ENOTEMPTY, to.to_string()));
        }
        let prefix = format!("{from}/");
        let mut moves = Vec::new();
        let names: Vec<Name> =
            st.index.models().map(|m| m.name.clone()).chain(st.pending_models.iter().cloned()).collect();
        for name in names {
            let d = name.display_shortest();
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
                moves.push((name.clone(), n));
            }
        }
        for (_, n) in &moves {
            if st.model_exists(n) {
                return Err(FsError::new(libc::ENOTEMPTY, n.display_shortest()));
            }
        }
        for (a, b) in &moves {
            self.rename_model(st, a, b)?;
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

    fn rename_file(&self, st: &mut State, (sm, sname): (&Name, &str), (dm, dname): (&Name, &str)) -> Result<()> {
        let skey = (sm.clone(), sname.to_string());
        let dkey = (dm.clone(), dname.to_string());
        if skey == dkey {
            return Ok(());
        }
        st.mark_written(dm, dname);
        let res = self.rename_file_inner(st, (sm, sname), (dm, dname));
        if res.is_ok() {
            st.inodes.rekey(&Node::File(sm.clone(), sname.to_string()), &Node::File(dm.clone(), dname.to_string()));
        }
        res
    }

    fn rename_file_inner(&self, st: &mut State, (sm, sname): (&Name, &str), (dm, dname): (&Name, &str)) -> Result<()> {
        let skey = (sm.clone(), sname.to_string());
        let dkey = (dm.clone(), dname.to_string());
        // A staged temp file (rsync) onto a layer name: its blob becomes that layer.
        if let Some((d, len)) = st.staged.get(&skey).copied() {
            if !is_layer_name(dname) {
                return Err(FsError::new(libc::EXDEV, format!("{sname} can only become a layer")));
            }
            st.staged.remove(&skey);
            let res = match dname {
                MANIFEST_FILE => self.store.read_blob(&d).map_err(Into::into).and_then(|b| {
                    if !st.is_published(dm) {
                        st.pending_models.insert(dm.clone());
                    }
                    self.write_manifest_locked(st, dm, b)
                }),
                CONFIG_FILE => self
                    .store
                    .read_blob(&d)
                    .map_err(Into::into)
                    .and_then(|b| check_config_json(dm, &b))
                    .and_then(|()| self.replace_or_add(st, dm, dname, d, len)),
                _ => self.replace_or_add(st, dm, dname, d, len),
            };
            self.store.release(&d);
            // A manifest.json that went through a temp file is not a blob of any model.
            self.prune_unused(st, vec![d]);
            return res;
        }
        if st.creating.contains(&skey) {
            return Err(FsError::new(libc::EBUSY, format!("{sname} is still being written")));
        }
        // A scratch file moving onto a layer name is committed as that layer: its file
        // is renamed into blobs/, no byte copied.
        if let Some(s) = st.scratch.get(&skey).cloned() {
            if !is_layer_name(dname) {
                if let Some(old) = st.scratch.remove(&dkey) {
                    let _ = std::fs::remove_file(old.path);
                }
                st.scratch.remove(&skey);
                st.scratch.insert(dkey, s);
                return Ok(());
            }
            if dname == MANIFEST_FILE {
                // Validated and installed first: on failure the scratch file stays.
                self.install_manifest_locked(st, dm, std::fs::read(&s.path)?)?;
                st.scratch.remove(&skey);
                let _ = std::fs::remove_file(&s.path);
                return Ok(());
            }
            if dname == CONFIG_FILE {
                check_config_json(dm, &std::fs::read(&s.path)?)?;
            }
            let (digest, len) = hash_file(&s.path)?;
            let file = File::open(&s.path)?;
            self.store.adopt_blob_held(&s.path, &file, &digest, len)?;
            st.scratch.remove(&skey);
            st.blob_meta.remove(&digest);
            let res = self.replace_or_add(st, dm, dname, digest, len);
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
            self.replace_or_add(st, dm, dname, d, len)?;
            let mut e = st.edit(sm);
            if let Some(i) = e.remove(sname) {
                st.vacated.insert(skey, i);
            }
            return self.commit_edit(st, sm, e, Publish::NeverDraft);
        }
        // A layer moving to a scratch name (an editor's backup): copy it out, detach it.
        let (d, _) = src_layer;
        let (f, path) = self.store.temp_file()?;
        drop(f);
        std::io::copy(&mut self.store.open_blob(&d)?, &mut OpenOptions::new().write(true).open(&path)?)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        st.scratch.insert(dkey, ScratchFile { path });
        let mut e = st.edit(sm);
        if let Some(i) = e.remove(sname) {
            st.vacated.insert(skey, i);
        }
        self.commit_edit(st, sm, e, Publish::NeverDraft)
    }

    fn install_manifest_locked(&self, st: &mut State, model: &Name, bytes: Vec<u8>) -> Result<()> {
        if let Some(d) = self.check_manifest(model, &bytes)?.into_iter().next() {
            return Err(einval(format!("manifest.json references missing blob {d}")));
        }
        self.install(st, model, bytes)
    }

    /// A `manifest.json` given to the mount: strict JSON shape and digests, and every blob
    /// it names that exists has the size it says. Returns the blobs that do not exist yet.
    fn check_manifest(&self, model: &Name, bytes: &[u8]) -> Result<HashSet<Digest>> {
        let m = Manifest::parse_strict(bytes)
            .map_err(|e| einval(format!("manifest.json of {}: {e}", model.display_shortest())))?;
        let mut missing = HashSet::new();
        for l in std::iter::once(&m.config).chain(m.layers.iter()) {
            let Some(d) = l.digest() else { continue };
            match std::fs::metadata(self.store.blob_path(&d)) {
                Ok(meta) if meta.len() as i64 == l.size => {}
                Ok(meta) => {
                    return Err(einval(format!(
                        "manifest.json of {}: blob {d} is {} bytes, the manifest says {}",
                        model.display_shortest(),
                        meta.len(),
                        l.size
                    )));
                }
                Err(_) => {
                    missing.insert(d);
                }
            }
        }
        Ok(missing)
    }

    pub(super) fn replace_or_add(&self, st: &mut State, model: &Name, file: &str, d: Digest, len: u64) -> Result<()> {
        if !st.is_published(model) {
            st.pending_models.insert(model.clone());
        }
        self.apply_layer(st, model, file, d, len)
    }

    pub(super) fn layer_of(&self, st: &State, model: &Name, file: &str) -> Result<(Digest, u64)> {
        if file == MANIFEST_FILE {
            return Err(einval("manifest.json can only be copied, not moved"));
        }
        let e = st.edit(model);
        if e.find(file).is_none() {
            return Err(enoent(file));
        }
        e.blob(file).ok_or_else(|| FsError::new(libc::EIO, "invalid digest"))
    }

    /// `ln A/model.gguf B/model.gguf`: B gains that layer, same blob, same inode.
    pub fn link(&self, ino: u64, newparent: u64, newname: &str) -> Result<Attr> {
        self.refuse_if_read_only()?;
        check_name_length(newname)?;
        let mut st = self.lock();
        let node = self.node_of(&st, ino)?;
        let dest_parent = self.parent_node(&st, newparent)?;
        let (dm, dsub) = self.as_model_dir(&st, &dest_parent).ok_or_else(|| einval("links go into model folders"))?;
        let dname = join(&dsub, newname);
        if !is_layer_name(&dname) {
            return Err(einval(format!("{dname:?} is not a layer name")));
        }
        let (d, len) = match &node {
            Node::Blob(d) => (*d, self.blob_meta(&mut st, d).map(|m| m.size).ok_or_else(|| enoent(d))?),
            Node::File(m, f) => self.layer_of(&st, m, f)?,
            _ => return Err(FsError::new(libc::EPERM, "only layer files can be linked")),
        };
        st.mark_written(&dm, &dname);
        self.replace_or_add(&mut st, &dm, &dname, d, len)?;
        let new_node = st.lookup_in_model(&dm, "", &dname).ok_or_else(|| enoent(&dname))?;
        let attr = self.attr_of(&mut st, &new_node)?;
        st.inodes.remember(&new_node);
        Ok(attr)
    }

    /// `ln -s A B` on model folders: B becomes a manifest copy of A, shown as a folder.
    /// The kernel requires the reply to be a symlink, so it gets a short-lived link entry.
    pub fn symlink(&self, parent: u64, name: &str, target: &str) -> Result<Attr> {
        self.refuse_if_read_only()?;
        check_name_length(name)?;
        let mut st = self.lock();
        let parent_node = self.node_of(&st, parent)?;
        let Node::Dir(p) = &parent_node else {
            return Err(einval("symlinks can only make models, in prefix folders"));
        };
        let rel = self.symlink_target_path(p, target)?;
        let src = self
            .resolve_model_path(&st, &rel)
            .ok_or_else(|| einval(format!("symlink target {target:?} is not a model in this mount")))?;
        let dest = self.model_at(p, name)?;
        if st.lookup_in_dir(p, name).is_some() {
            return Err(FsError::new(libc::EEXIST, name.to_string()));
        }
        self.check_case_twin(&st, &dest)?;
        let bytes = st.index.get(&src).map(|m| m.bytes.to_vec()).ok_or_else(|| enoent(&src))?;
        self.install(&mut st, &dest, bytes)?;
        let node = Node::Link(target.to_string());
        let attr = self.attr_of(&mut st, &node)?;
        st.inodes.remember(&node);
        Ok(attr)
    }

    /// A symlink target as a path relative to the mount root, `..` resolved.
    fn symlink_target_path(&self, dir: &str, target: &str) -> Result<Vec<String>> {
        let (base, rest): (Vec<String>, &str) = if let Some(abs) = target.strip_prefix('/') {
            let mp = self.opts.mountpoint.as_ref().ok_or_else(|| einval("absolute target and unknown mount point"))?;
            let mp = mp.to_string_lossy();
            let mp = mp.trim_start_matches('/').trim_end_matches('/');
            let inside = abs.strip_prefix(mp).filter(|r| r.is_empty() || r.starts_with('/'));
            let inside = inside.ok_or_else(|| einval(format!("symlink target {target:?} is outside the mount")))?;
            (Vec::new(), inside)
        } else {
            (super::split(dir).into_iter().map(String::from).collect(), target)
        };
        let mut parts = base;
        for c in rest.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        return Err(einval(format!("symlink target {target:?} leaves the mount")));
                    }
                }
                c => parts.push(c.to_string()),
            }
        }
        Ok(parts)
    }

    fn resolve_model_path(&self, st: &State, parts: &[String]) -> Option<Name> {
        let mut dir = String::new();
        for (i, c) in parts.iter().enumerate() {
            match st.lookup_in_dir(&dir, c)? {
                Node::Dir(p) => dir = p,
                Node::Model(n) if i + 1 == parts.len() => return Some(n),
                _ => return None,
            }
        }
        None
    }

    // ----- attributes -----

    /// chmod/chown/utimens succeed without effect on layers and models (blobs keep their
    /// metadata); truncation goes through a writer; scratch files are ordinary files.
    #[allow(clippy::too_many_arguments)]
    pub fn setattr(&self, ino: u64, fh: Option<u64>, set: SetAttr) -> Result<Attr> {
        let SetAttr { mode, size, mtime, .. } = set;
        if set.changes_anything() && self.opts.read_only {
            return Err(erofs());
        }
        // A scratch file is an ordinary file: every change applies, through the open
        // descriptor when there is one (it may be unlinked already).
        if let Some(f) = fh.and_then(|fh| self.scratch_handle(fh)) {
            apply_to_file(&f, &set)?;
            return self.getattr_open(ino, fh);
        }
        let node = {
            let st = self.lock();
            self.node_of(&st, ino)?
        };
        if let Node::Trash(uid, rel) = &node {
            self.trash_setattr(*uid, rel, &set)?;
            return self.getattr(ino);
        }
        if let Node::File(m, name) = &node {
            let (scratch, orphan) = {
                let st = self.lock();
                (st.scratch.get(&(m.clone(), name.clone())).cloned(), st.orphans.get(&ino).cloned())
            };
            if let Some(s) = scratch {
                let f = OpenOptions::new().read(true).open(&s.path)?;
                apply_to_file(&f, &set)?;
                return self.getattr(ino);
            }
            if let Some(f) = orphan {
                apply_to_file(&f, &set)?;
                return self.getattr(ino);
            }
        }
        let _ = (mode, mtime); // layers and models keep the blob's metadata
        if let Some(size) = size {
            match &node {
                Node::Blob(_) => return Err(FsError::new(libc::EPERM, "weights are immutable")),
                Node::File(m, name) => {
                    let writer = fh.and_then(|fh| match self.handles().get(&fh) {
                        Some(Handle::Write(w)) => Some(w.clone()),
                        _ => None,
                    });
                    match writer {
                        Some(w) => w.lock().unwrap_or_else(|e| e.into_inner()).truncate(&self.store, size)?,
                        None => {
                            // truncate(1) on a path: a one-shot writer, committed now.
                            let opened = {
                                let mut st = self.lock();
                                self.open_writer(&mut st, ino, m, name, 0)?
                            };
                            let w = match self.handles().get(&opened.fh) {
                                Some(Handle::Write(w)) => w.clone(),
                                _ => return Err(FsError::new(libc::EIO, "writer vanished")),
                            };
                            w.lock().unwrap_or_else(|e| e.into_inner()).truncate(&self.store, size)?;
                            self.release(opened.fh)?;
                        }
                    }
                }
                _ => return Err(FsError::new(libc::EISDIR, "is a folder")),
            }
        }
        self.getattr(ino)
    }
}

enum HandleRef {
    Writer(Arc<Mutex<Writer>>),
    Scratch(Arc<File>),
}

/// What a `setattr` asks to change.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<std::time::SystemTime>,
    pub mtime: Option<std::time::SystemTime>,
}

impl SetAttr {
    fn changes_anything(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.size.is_some()
            || self.atime.is_some()
            || self.mtime.is_some()
    }
}

/// chmod, chown, truncate and utimens on an open file (a scratch file).
pub(super) fn apply_to_file(f: &File, set: &SetAttr) -> Result<()> {
    use std::os::fd::AsRawFd;
    if let Some(mode) = set.mode {
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if set.uid.is_some() || set.gid.is_some() {
        std::os::unix::fs::fchown(f, set.uid, set.gid)?;
    }
    if let Some(size) = set.size {
        // The descriptor may be read-only; ftruncate through a writable reopen of it.
        let w = OpenOptions::new().write(true).open(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
        w.set_len(size)?;
    }
    if set.atime.is_some() || set.mtime.is_some() {
        let mut times = std::fs::FileTimes::new();
        if let Some(t) = set.atime {
            times = times.set_accessed(t);
        }
        if let Some(t) = set.mtime {
            times = times.set_modified(t);
        }
        f.set_times(times)?;
    }
    Ok(())
}

/// Ollama hides a model whose config does not decode: only a JSON object is accepted.
fn check_config_json(model: &Name, bytes: &[u8]) -> Result<()> {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
        .map(|_| ())
        .map_err(|e| einval(format!("config.json of {} is not a JSON object: {e}", model.display_shortest())))
}

/// Names longer than ext4 allows are refused as ext4 refuses them.
fn check_name_length(name: &str) -> Result<()> {
    if name.len() > 255 {
        return Err(FsError::new(libc::ENAMETOOLONG, format!("name of {} bytes (at most 255)", name.len())));
    }
    Ok(())
}
