//! App views in the mount (`mount --view lmstudio|gguf`): folders at the root that show the
//! store's GGUF files as LM Studio (`.lmstudio/PUBLISHER/FOLDER/FILE.gguf`) and flat-folder
//! apps (`.gguf/NAME-TAG.gguf`) expect them. Names come from `crate::views`.
//!
//! A view's files are the blobs themselves (`Node::Blob`: the inode the model folders
//! show, passthrough reads). `.gguf` is read-only. `.lmstudio` takes downloads: its
//! folders are backed by a real tree (`<store>/.ollamafs/<pid>/views/lmstudio/`) and
//! everything written there is a scratch entry, until a whole GGUF file sits at
//! `ORG/REPO/FILE.gguf` with no writer left: then it is hashed, its file is renamed into
//! `blobs/` (no byte copied) and it becomes the model `hf.co/ORG/REPO:QUANT`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::store::Stamp;
use crate::views::{self, ViewFile, ViewKind};

/// How deep the folders of a view go: LM Studio's `PUBLISHER/FOLDER`, flat: none.
fn depth(kind: ViewKind) -> usize {
    match kind {
        ViewKind::LmStudio | ViewKind::HfCache => 2,
        ViewKind::Flat => 0,
    }
}

/// Is `path` (inside a view) one of its folder levels (LM Studio's publisher and model folders)?
pub(super) fn holds_folders(kind: ViewKind, path: &str) -> bool {
    levels(path) <= depth(kind)
}

fn levels(p: &str) -> usize {
    if p.is_empty() { 0 } else { p.split('/').count() }
}

impl Fs {
    /// The view a root entry names (`.lmstudio`), when this mount shows it.
    pub(super) fn view_at_root(&self, name: &str) -> Option<ViewKind> {
        self.opts.views.iter().copied().find(|k| k.folder() == name)
    }

    /// Every file of a view, by path (published models only: a draft is not an app's).
    pub(super) fn view_files(&self, st: &State, kind: ViewKind) -> Arc<BTreeMap<String, ViewFile>> {
        if kind == ViewKind::HfCache {
            return Arc::new(self.hf_cache_files());
        }
        let key = (st.index.generation(), st.file_names_version);
        let mut cache = crate::sync::lock(&self.view_cache);
        if let Some((k, files)) = cache.get(&kind)
            && *k == key
        {
            return files.clone();
        }
        let models = st.index.models().map(|m| (&m.name, &m.manifest));
        let files = Arc::new(views::files(kind, models, &st.file_names));
        cache.insert(kind, (key, files.clone()));
        files
    }

    /// The `.hf` view, read from the cache each time (it changes under us); its blobs
    /// become readable through the store (`Store::add_outside_blob`).
    fn hf_cache_files(&self) -> BTreeMap<String, ViewFile> {
        let Some(cache) = &self.opts.hf_cache else { return BTreeMap::new() };
        let mut out = BTreeMap::new();
        for (path, digest, blob, model) in crate::hf_cache::view_files(cache) {
            self.store.add_outside_blob(digest, blob);
            out.insert(path.clone(), ViewFile { path, digest, model, projector: false });
        }
        out
    }

    /// Take in file names another process recorded (`ollamafs import --lmstudio`).
    pub(super) fn reload_file_names(&self, st: &mut State) {
        let path = self.store.file_names_path();
        let stamp = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if stamp != st.file_names_stamp {
            st.file_names = views::FileNames::load(&path);
            st.file_names_stamp = stamp;
            st.file_names_version += 1;
        }
    }

    /// The real folder behind view folder `p` (LM Studio's only), made when `make`.
    pub(super) fn view_tree_dir(&self, kind: ViewKind, p: &str, make: bool) -> Result<Option<PathBuf>> {
        if kind != ViewKind::LmStudio {
            return Ok(None);
        }
        let root = self.store.process_scratch().join("views").join("lmstudio");
        let dir = if p.is_empty() { root } else { root.join(p) };
        if make {
            std::fs::create_dir_all(&dir)?;
        }
        Ok(dir.is_dir().then_some(dir))
    }

    /// Look `name` up in view folder `p`: a model's file, a folder of the view, or a
    /// scratch entry of its tree.
    pub(super) fn view_lookup(&self, st: &mut State, kind: ViewKind, p: &str, name: &str) -> Result<Option<Node>> {
        let child = tree::join(p, name);
        let files = self.view_files(st, kind);
        if let Some(f) = files.get(&child) {
            return Ok(Some(Node::Blob(f.digest)));
        }
        if self.view_folder_exists(&files, kind, &child) {
            return Ok(Some(Node::View(kind, child)));
        }
        match self.scratch_dir(st, &Node::View(kind, p.to_string()), false)? {
            Some(dir) => self.scratch_lookup(st, &dir, name),
            None => Ok(None),
        }
    }

    /// Is `p` a folder of the view: one of its levels, holding a model's file or made there?
    fn view_folder_exists(&self, files: &BTreeMap<String, ViewFile>, kind: ViewKind, p: &str) -> bool {
        if p.is_empty() {
            return true;
        }
        let prefix = format!("{p}/");
        levels(p) <= depth(kind)
            && (files.range(prefix.clone()..).next().is_some_and(|(k, _)| k.starts_with(&prefix))
                || matches!(self.view_tree_dir(kind, p, false), Ok(Some(_))))
    }

    /// The entries of view folder `p`: model files and view folders, then scratch entries.
    pub(super) fn view_children(&self, st: &State, kind: ViewKind, p: &str) -> Vec<(String, Node)> {
        let files = self.view_files(st, kind);
        let prefix = if p.is_empty() { String::new() } else { format!("{p}/") };
        let mut out: BTreeMap<String, Node> = BTreeMap::new();
        for (path, f) in files.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)) {
            let rest = &path[prefix.len()..];
            match rest.split_once('/') {
                Some((dir, _)) => out.insert(dir.to_string(), Node::View(kind, format!("{prefix}{dir}"))),
                None => out.insert(rest.to_string(), Node::Blob(f.digest)),
            };
        }
        if levels(p) < depth(kind)
            && let Ok(Some(dir)) = self.view_tree_dir(kind, p, false)
        {
            for (name, _, k) in scratch::list_dir(&dir, |_| false) {
                if k == FileKind::Dir && !out.contains_key(&name) {
                    out.insert(name.clone(), Node::View(kind, format!("{prefix}{name}")));
                }
            }
        }
        out.into_iter().collect()
    }

    /// Scratch entries of view folder `p` (its tree's, minus what the view shows itself).
    pub(super) fn view_scratch_children(&self, st: &State, kind: ViewKind, p: &str) -> Vec<(String, u64, FileKind)> {
        let Ok(Some(dir)) = self.view_tree_dir(kind, p, false) else { return Vec::new() };
        let files = self.view_files(st, kind);
        let folders_here = levels(p) < depth(kind);
        scratch::list_dir(&dir, |name| {
            let child = tree::join(p, name);
            files.contains_key(&child) || (folders_here && dir.join(name).is_dir())
        })
    }

    pub(super) fn view_attr(&self, st: &State, ino: u64, kind: ViewKind, p: &str) -> Result<Attr> {
        if !self.view_folder_exists(&self.view_files(st, kind), kind, p) {
            return Err(enoent(p));
        }
        // A folder made in the view is the disk's (its owner and mode); the others are
        // open to every user for LM Studio's downloads (sticky, as /tmp), read-only for `.gguf`.
        if let Ok(Some(dir)) = self.view_tree_dir(kind, p, false)
            && !p.is_empty()
        {
            let s = rustix::fs::stat(&dir)?;
            let mut a = scratch::stat_attr(ino, &s);
            a.nlink = 2;
            return Ok(a);
        }
        let mut a = self.base_attr(ino, FileKind::Dir, 0, self.started);
        a.perm = match kind {
            ViewKind::LmStudio if !self.opts.read_only => 0o1777,
            _ => 0o555,
        };
        Ok(a)
    }

    /// The view folder that real folder `fd`'s parent is, when it is one (for `..`).
    pub(super) fn view_folder_of(&self, fd: &std::os::fd::OwnedFd) -> Option<Node> {
        let root = self.view_tree_dir(ViewKind::LmStudio, "", false).ok()??;
        let path = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd))).ok()?;
        let rel = path.parent()?.strip_prefix(&root).ok()?.to_str()?.to_string();
        (levels(&rel) <= depth(ViewKind::LmStudio)).then_some(Node::View(ViewKind::LmStudio, rel))
    }

    /// The parent folder node of view folder `p`.
    pub(super) fn view_parent(kind: ViewKind, p: &str) -> Node {
        match p.rsplit_once('/') {
            Some((up, _)) => Node::View(kind, up.to_string()),
            None if p.is_empty() => Node::Dir(String::new()),
            None => Node::View(kind, String::new()),
        }
    }

    /// mkdir in a view: LM Studio's publisher and model folders are real folders of its tree.
    pub(super) fn view_mkdir(
        &self,
        st: &mut State,
        (kind, p): (ViewKind, &str),
        name: &str,
        mode: u32,
        who: Caller,
    ) -> Result<Node> {
        if kind != ViewKind::LmStudio {
            return Err(FsError::new(libc::EROFS, format!("{} is read-only", kind.folder())));
        }
        let child = tree::join(p, name);
        if self.view_lookup(st, kind, p, name)?.is_some() {
            return Err(FsError::new(libc::EEXIST, child));
        }
        // A real folder, the caller's (LM Studio runs as a user; a root daemon makes it).
        let up = self.scratch_dir(st, &Node::View(kind, p.to_string()), true)?.ok_or_else(|| enoent(p))?;
        self.make_entry(&up, name, scratch::Make::Dir { mode }, who)?;
        Ok(Node::View(kind, child))
    }

    /// rmdir of a view folder: only one that shows no model's file; its tree's folder goes.
    pub(super) fn view_rmdir(&self, st: &mut State, kind: ViewKind, p: &str) -> Result<()> {
        if p.is_empty() {
            return Err(FsError::new(libc::EBUSY, format!("{} is a view of the store", kind.folder())));
        }
        if !self.view_children(st, kind, p).is_empty() || !self.view_scratch_children(st, kind, p).is_empty() {
            return Err(FsError::new(libc::ENOTEMPTY, p.to_string()));
        }
        if let Some(dir) = self.view_tree_dir(kind, p, false)? {
            std::fs::remove_dir(dir)?;
        }
        Ok(())
    }

    /// unlink of a model's file in a view: its weights mean the model, which is deleted (as
    /// LM Studio's "delete" means); a projector alone cannot go.
    pub(super) fn view_unlink(&self, st: &mut State, kind: ViewKind, p: &str, name: &str) -> Result<()> {
        if kind != ViewKind::LmStudio {
            return Err(FsError::new(libc::EROFS, format!("{} is read-only", kind.folder())));
        }
        let child = tree::join(p, name);
        let files = self.view_files(st, kind);
        let f = files.get(&child).ok_or_else(|| enoent(&child))?;
        if f.projector {
            return Err(FsError::new(libc::EPERM, format!("{child} is {}'s projector", f.model.display_shortest())));
        }
        let model = f.model.clone();
        self.delete_model(st, &model, &format!("deleted ({}/{child} removed in the mount)", kind.folder()))
    }
}

/// The SHA-256 of a download written in order through one handle, so the close that
/// publishes it need not read it again (see `Fs::download_digest`).
pub(crate) struct DownloadHash {
    hasher: sha2::Sha256,
    next: u64,
    /// The file's ctime right after this handle's last write: any other change moves it.
    ctime: (i64, u64),
}

fn ctime_of(f: &File) -> Option<(i64, u64)> {
    rustix::fs::fstat(f).ok().map(|s| scratch::ctime_of(&s))
}

/// Can this open file write?
pub(super) fn opened_for_writing(f: &File) -> bool {
    rustix::fs::fcntl_getfl(f)
        .is_ok_and(|fl| fl.contains(rustix::fs::OFlags::WRONLY) || fl.contains(rustix::fs::OFlags::RDWR))
}

/// What a finished download in LM Studio's view is, before the lock is taken.
struct Download {
    path: PathBuf,
    org: String,
    repo: String,
    file: String,
    quant: String,
    digest: Digest,
    len: u64,
    stamp: crate::store::Stamp,
}

impl Fs {
    /// Where file `f` (an open scratch file) is in LM Studio's view tree, as
    /// (`ORG`, `REPO`, `FILE`), when that is where a download publishes.
    fn download_place(&self, f: &File) -> Option<(PathBuf, String, String, String)> {
        let path = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(f))).ok()?;
        let root = self.view_tree_dir(ViewKind::LmStudio, "", false).ok()??;
        let rel = path.strip_prefix(&root).ok()?.to_str()?.to_string();
        let mut parts = rel.split('/');
        let (org, repo, file) = (parts.next()?, parts.next()?, parts.next()?);
        (parts.next().is_none() && views::is_model_file(file))
            .then(|| (path.clone(), org.to_string(), repo.to_string(), file.to_string()))
    }

    /// A scratch file of LM Studio's view was closed or renamed: when it is a whole GGUF
    /// at `ORG/REPO/FILE.gguf` that nobody writes any more, it becomes `hf.co/ORG/REPO:QUANT`
    /// (its file renamed into `blobs/`). Anything else stays a scratch file, as it is.
    pub(crate) fn publish_download(&self, f: &File, fuse_ino: u64, closing: u64) {
        if !self.opts.views.contains(&ViewKind::LmStudio) || self.opts.read_only {
            return;
        }
        let Some((path, org, repo, file)) = self.download_place(f) else { return };
        if self.has_writer(fuse_ino, closing) {
            return; // the last close publishes
        }
        let known = self.download_digest(closing, f);
        log::debug!("{org}/{repo}/{file}: {}", if known.is_some() { "hashed as written" } else { "hashing it now" });
        let d = match self.check_download(path, org, repo, file, known) {
            Ok(d) => d,
            Err(why) => {
                log::debug!("{why}; it stays a file of the view");
                return;
            }
        };
        let mut st = self.lock();
        if let Err(e) = self.publish_checked(&mut st, &d, fuse_ino) {
            log::warn!("{}/{}/{}: not published: {}", d.org, d.repo, d.file, e.why);
        }
    }

    /// A handle just opened for writing an empty file where downloads publish: hash what it
    /// writes, in order, as it arrives.
    pub(super) fn track_download(&self, fh: u64) {
        if !self.opts.views.contains(&ViewKind::LmStudio) {
            return;
        }
        let Some(f) = self.scratch_handle(fh) else { return };
        if !opened_for_writing(&f) || !f.metadata().is_ok_and(|m| m.len() == 0) || self.download_place(&f).is_none() {
            return;
        }
        let Some(ctime) = ctime_of(&f) else { return };
        let h = DownloadHash { hasher: sha2::Sha256::default(), next: 0, ctime };
        crate::sync::lock(&self.download_hashes).insert(fh, h);
    }

    /// `data` was written at `offset` through handle `fh`.
    pub(super) fn download_wrote(&self, fh: u64, f: &File, offset: u64, data: &[u8]) {
        let mut hashes = crate::sync::lock(&self.download_hashes);
        if hashes.is_empty() {
            return;
        }
        let in_order = hashes.get(&fh).map(|h| h.next == offset);
        match (in_order, ctime_of(f)) {
            (Some(true), Some(ctime)) => {
                if let Some(h) = hashes.get_mut(&fh) {
                    sha2::Digest::update(&mut h.hasher, data);
                    h.next += data.len() as u64;
                    h.ctime = ctime;
                }
            }
            (Some(_), _) => {
                hashes.remove(&fh); // out of order: the close hashes the file
            }
            (None, _) => {}
        }
    }

    /// Handle `fh` wrote no more (truncated through it, or closed).
    pub(super) fn untrack_download(&self, fh: u64) {
        let mut hashes = crate::sync::lock(&self.download_hashes);
        if !hashes.is_empty() {
            hashes.remove(&fh);
        }
    }

    /// The digest of file `f` from handle `fh`'s in-order writes, when they are all of it and
    /// nothing changed it since.
    fn download_digest(&self, fh: u64, f: &File) -> Option<(Digest, u64)> {
        let hashes = crate::sync::lock(&self.download_hashes);
        let h = hashes.get(&fh)?;
        let len = f.metadata().ok()?.len();
        (h.next == len && ctime_of(f) == Some(h.ctime))
            .then(|| (Digest(sha2::Digest::finalize(h.hasher.clone()).into()), len))
    }

    /// A rename put a scratch file at `name` in folder `parent`: a download renamed from its
    /// partial name onto `FILE.gguf` may be finished.
    pub(super) fn publish_renamed(&self, parent: u64, name: &str) {
        if !self.opts.views.contains(&ViewKind::LmStudio) {
            return;
        }
        let mut st = self.lock();
        if !matches!(self.node_of(&st, parent), Ok(Node::View(..))) {
            return;
        }
        let Ok(node @ Node::Scratch(b)) = self.lookup_node(&mut st, parent, name) else { return };
        let ino = st.inodes.ino_of(&node);
        let Ok(fd) = self.scratch_fd(&st, b) else { return };
        drop(st);
        // Only a regular file (opening a fifo would wait for a writer).
        if !rustix::fs::fstat(&*fd).is_ok_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFREG) {
            return;
        }
        if let Ok(f) = File::open(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&*fd))) {
            self.publish_download(&f, ino, 0);
        }
    }

    /// Another open handle may still write scratch inode `fuse_ino`.
    fn has_writer(&self, fuse_ino: u64, except: u64) -> bool {
        self.handles().iter().any(|(fh, h)| match h {
            Handle::Scratch(f, i) if *i == fuse_ino && *fh != except => opened_for_writing(f),
            _ => false,
        })
    }

    /// Outside the lock: is it a whole GGUF, what is it called, what is its digest.
    fn check_download(
        &self,
        path: PathBuf,
        org: String,
        repo: String,
        file: String,
        known: Option<(Digest, u64)>,
    ) -> std::result::Result<Download, String> {
        let what = format!("{org}/{repo}/{file}");
        let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{what}: {e}"))?;
        if !meta.is_file() || std::os::unix::fs::MetadataExt::nlink(&meta) != 1 {
            return Err(format!("{what} is not a file with one name"));
        }
        let header = File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| crate::gguf::read_header(std::io::BufReader::new(f)).map_err(|e| e.to_string()))
            .map_err(|e| format!("{what} is not a GGUF file ({e})"))?;
        crate::store::complete::weights_whole(&path, meta.len()).map_err(|why| format!("{what}: {why}"))?;
        let quant = views::quant_of_file(&file).unwrap_or_else(|| header.file_type_name().to_string());
        if views::hf_model(&org, &repo, &quant).is_none() {
            return Err(format!("{what}: hf.co/{org}/{repo}:{quant} is not a model name Ollama accepts"));
        }
        // Hashed as it was written (one handle, in order), else read once now.
        let (digest, len) = match known {
            Some(k) if k.1 == meta.len() => k,
            _ => crate::store::hash_file(&path).map_err(|e| format!("{what}: {e}"))?,
        };
        let after = std::fs::symlink_metadata(&path).map_err(|e| format!("{what}: {e}"))?;
        if Stamp::of(&after) != Stamp::of(&meta) {
            return Err(format!("{what} changed while it was hashed"));
        }
        Ok(Download { path, org, repo, file, quant, digest, len, stamp: Stamp::of(&meta) })
    }

    /// Under the lock: name the model, move the file into `blobs/`, publish.
    fn publish_checked(&self, st: &mut State, d: &Download, fuse_ino: u64) -> Result<()> {
        let now = std::fs::symlink_metadata(&d.path)?;
        if Stamp::of(&now) != d.stamp {
            return Err(FsError::new(libc::EAGAIN, "changed since it was hashed"));
        }
        let einval = |why: String| FsError::new(libc::EINVAL, why);
        let quant_model = views::hf_model(&d.org, &d.repo, &d.quant).ok_or_else(|| einval(d.quant.clone()))?;
        let weights_of = |st: &State, n: &Name| {
            st.index.get(n).and_then(|m| {
                m.manifest
                    .layers
                    .iter()
                    .find(|l| l.role() == crate::store::manifest::Role::Model)
                    .and_then(|l| l.digest())
            })
        };
        // The quantization's tag, unless a model of other weights that did not come from a
        // file of this name has it: then this file's own name is its tag (a download never
        // replaces another model).
        let taken = weights_of(st, &quant_model)
            .is_some_and(|w| w != d.digest && st.file_names.get(&quant_model) != Some(d.file.as_str()));
        let model = match taken {
            true => views::hf_model(&d.org, &d.repo, &views::tag_of_stem(&d.file))
                .ok_or_else(|| einval(format!("{}: no tag can be made of its name", d.file)))?,
            false => quant_model,
        };
        let parent_ino = st.inodes.ino_of(&Node::View(ViewKind::LmStudio, format!("{}/{}", d.org, d.repo)));
        if weights_of(st, &model) == Some(d.digest) {
            // The store has it already (Ollama pulled the same file): the download goes.
            std::fs::remove_file(&d.path)?;
        } else {
            self.seal_scratch_handles(fuse_ino)?;
            let f = File::open(&d.path)?;
            self.store.adopt_blob_held(&d.path, &f, &d.digest, d.len)?;
            let spec = crate::store::create::CreateSpec { files: vec![d.digest], ..Default::default() };
            let mut made = Vec::new();
            let res = self.store.create_manifest(&spec, &mut |_| {}).map_err(FsError::from).and_then(|bytes| {
                // The text blobs it made (config, template, params) go again if it fails.
                made = crate::store::Manifest::parse(&bytes).map(|m| m.digests().collect()).unwrap_or_default();
                self.install(st, &model, bytes)
            });
            if let Err(e) = res {
                made.retain(|x| *x != d.digest);
                self.prune_unused(st, made);
                // The download goes back where it was, as it was (taking it back needs this
                // call's hold, and ends it).
                if !self.take_blob(st, &d.digest, &d.path) {
                    self.store.release(&d.digest);
                    log::error!("{}: its data stays in blobs/ (it could not go back)", d.file);
                }
                return Err(e);
            }
            self.store.release(&d.digest);
            st.blob_meta.remove(&d.digest);
        }
        log::info!(
            "{}/{}/{} downloaded into {} is model {}",
            d.org,
            d.repo,
            d.file,
            ViewKind::LmStudio.folder(),
            model.display_shortest()
        );
        self.reload_file_names(st);
        st.file_names.set(&model, &d.file);
        st.file_names_version += 1;
        if let Err(e) = st.file_names.save(&self.store.file_names_path()) {
            log::warn!("cannot save the view's file names: {e}");
        }
        st.file_names_stamp = std::fs::metadata(self.store.file_names_path()).and_then(|m| m.modified()).ok();
        if let Some(b) = st.inodes.node(fuse_ino).and_then(|n| if let Node::Scratch(b) = n { Some(b) } else { None }) {
            st.scratch_fds.remove(&b);
        }
        self.invalidate_entry_later(parent_ino, &d.file);
        Ok(())
    }
}
