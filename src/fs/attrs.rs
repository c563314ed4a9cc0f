//! Lookup, attributes and listings: what a path is, what `stat` and `ls` show.

use std::fs::File;
use std::sync::Arc;
use std::time::SystemTime;

use super::*;
use crate::layout::{Kind, Source};

impl Fs {
    pub(super) fn node_of(&self, st: &State, ino: u64) -> Result<Node> {
        st.inodes.node(ino).ok_or_else(|| FsError::new(libc::ESTALE, format!("unknown inode {ino}")))
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr> {
        self.lookup_from(0, parent, name)
    }

    /// A lookup made by process `pid`. A weights inode is shared by every model showing
    /// its blob, so `open` cannot tell from the inode which folder a write-open came
    /// through: the lookup just before it (the kernel revalidates weights entries on
    /// every path walk) says so.
    pub fn lookup_from(&self, pid: u32, parent: u64, name: &str) -> Result<Attr> {
        let mut st = self.lock();
        let node = self.lookup_node(&mut st, parent, name)?;
        let attr = self.remembered_attr(&mut st, &node)?;
        if let Node::Blob(_) = node
            && let Ok(parent_node) = self.parent_node(&st, parent)
            && let Some((model, sub)) = self.as_model_dir(&st, &parent_node)
        {
            let mut hints = crate::sync::lock(&self.weights_lookups);
            if hints.len() > 4096 {
                hints.clear();
            }
            hints.insert(pid, (attr.ino, model, tree::join(&sub, name)));
        }
        Ok(attr)
    }

    pub(super) fn lookup_node(&self, st: &mut State, parent: u64, name: &str) -> Result<Node> {
        edit::check_name_length(name)?;
        let parent_node = self.node_of(st, parent)?;
        let found = match &parent_node {
            Node::Dir(p) if p.is_empty() && self.view_at_root(name).is_some() => {
                self.view_at_root(name).map(|k| Node::View(k, String::new()))
            }
            Node::View(k, p) => self.view_lookup(st, *k, p, name)?,
            Node::Dir(p) if p.is_empty() && trash::trash_uid(name).is_some() => trash::trash_uid(name)
                .and_then(|uid| self.trash_lookup(uid, "", "").map(|_| Node::Trash(uid, String::new()))),
            Node::Dir(p) => st.lookup_in_dir(p, name),
            Node::Model(m) | Node::Sub(m, _) => {
                let sub = match &parent_node {
                    Node::Sub(_, s) => s.as_str(),
                    _ => "",
                };
                match st.lookup_in_model(m, sub, name) {
                    Some(n) => Some(n),
                    None if scratch::is_reserved(&tree::join(sub, name)) => None,
                    None => match self.scratch_dir(st, &parent_node, false)? {
                        Some(dir) => self.scratch_lookup(st, &dir, name)?,
                        None => None,
                    },
                }
            }
            Node::Scratch(_) => match self.scratch_dir(st, &parent_node, false)? {
                Some(dir) => self.scratch_lookup(st, &dir, name)?,
                None => None,
            },
            Node::Trash(uid, rel) => self.trash_lookup(*uid, rel, name),
            _ => return Err(FsError::new(libc::ENOTDIR, "not a folder")),
        };
        found.ok_or_else(|| enoent(name))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        let mut st = self.lock();
        // A scratch inode the kernel no longer knows is not held open any more.
        if let Some(Node::Scratch(b)) = st.inodes.forget(ino, n) {
            st.scratch_fds.remove(&b);
        }
    }

    /// `fstat`: a scratch file answers from its open descriptor, so a file unlinked while
    /// open keeps working until closed (POSIX).
    pub fn getattr_open(&self, ino: u64, fh: Option<u64>) -> Result<Attr> {
        if let Some(f) = fh.and_then(|fh| self.scratch_handle(fh)) {
            return Ok(scratch::stat_attr(ino, &rustix::fs::fstat(&*f)?));
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

    pub(super) fn writer_len(&self, ino: u64) -> Option<u64> {
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
            let w = crate::sync::lock(&w);
            (w.ino == ino && w.dirty && !w.replaces_shared).then_some(w.len)
        })
    }

    pub(super) fn blob_meta(&self, st: &mut State, d: &Digest) -> Option<BlobMeta> {
        if let Some(m) = st.blob_meta.get(d) {
            return Some(*m);
        }
        let meta = std::fs::metadata(self.store.blob_path(d))
            .or_else(|e| self.store.outside_blob(d).ok_or(e).and_then(std::fs::metadata))
            .ok()?;
        let m = BlobMeta { size: meta.len(), mtime: meta.modified().unwrap_or(self.started) };
        st.blob_meta.insert(*d, m);
        Some(m)
    }

    pub(super) fn base_attr(&self, ino: u64, kind: FileKind, size: u64, mtime: SystemTime) -> Attr {
        let (uid, gid) = self.store.owner();
        Attr {
            ino,
            kind,
            size,
            blocks: size.div_ceil(512),
            perm: match kind {
                FileKind::Dir => 0o755,
                FileKind::Symlink => 0o777,
                _ => 0o644,
            },
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            uid,
            gid,
            rdev: 0,
            atime: mtime,
            mtime,
            ctime: mtime,
            transient: false,
            shared: false,
        }
    }

    pub(crate) fn attr_of(&self, st: &mut State, node: &Node) -> Result<Attr> {
        let ino = st.inodes.ino_of(node);
        match node {
            Node::Dir(p) => {
                if !st.dir_exists(p) {
                    return Err(enoent(p));
                }
                let mtime = st.dir_times.get(p).copied().unwrap_or(self.started);
                Ok(self.base_attr(ino, FileKind::Dir, 0, mtime))
            }
            Node::Model(n) => {
                // A folder the mount changed dates from its last change here (or a later
                // write of its manifest by another process); one it only shows, from its
                // manifest.
                let published = st.index.get(n).map(|m| m.mtime());
                let mtime = match st.folder(n) {
                    Some(f) if f.work.is_none() => published.map_or(f.changed, |p| p.max(f.changed)),
                    Some(f) => f.changed,
                    None => published.ok_or_else(|| enoent(n))?,
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
                a.shared = true;
                Ok(a)
            }
            Node::Scratch(b) => self.scratch_node_attr(st, ino, *b),
            Node::File(model, name) => {
                if let Some((_, len)) = st.staged_file(model, name) {
                    let mut a = self.base_attr(ino, FileKind::File, len, self.started);
                    a.perm = 0o600;
                    return Ok(a);
                }
                if let Some(w) = st.waiting_manifest_json(model, name) {
                    return Ok(self.base_attr(ino, FileKind::File, w.bytes.len() as u64, w.at));
                }
                let in_manifest = st
                    .view(model)
                    .cloned()
                    .and_then(|m| st.files_of(model).into_iter().find(|f| f.name == *name).map(|f| (m, f)));
                let Some((m, f)) = in_manifest else {
                    if st.is_creating(model, name) {
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
                let mut a = self.base_attr(ino, FileKind::Symlink, 0, self.opts.clock.system_now());
                a.nlink = 1;
                Ok(a)
            }
            Node::Trash(uid, rel) => self.trash_attr(ino, *uid, rel),
            Node::View(k, p) => self.view_attr(st, ino, *k, p),
        }
    }

    pub(super) fn declared_size(&self, st: &State, d: &Digest) -> u64 {
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
                    for k in &self.opts.views {
                        children.push((k.folder().to_string(), Node::View(*k, String::new())));
                    }
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
            Node::Scratch(b) => {
                let parent = self.scratch_parent(&st, *b).unwrap_or_else(|| node.clone());
                (Vec::new(), parent)
            }
            Node::View(k, p) => {
                self.view_attr(&st, ino, *k, p)?;
                (self.view_children(&st, *k, p), Self::view_parent(*k, p))
            }
            _ => return Err(FsError::new(libc::ENOTDIR, "not a folder")),
        };
        // Scratch entries are real: their kinds come from the disk.
        let scratch = match &node {
            Node::Model(m) => self.tree_children(&st, m, ""),
            Node::Sub(m, sub) => self.tree_children(&st, m, sub),
            Node::Scratch(b) => self.scratch_children(&st, *b)?,
            Node::View(k, p) => self.view_scratch_children(&st, *k, p),
            _ => Vec::new(),
        };
        let mut out = Vec::with_capacity(children.len() + scratch.len() + 2);
        out.push(DirEntry { ino, kind: FileKind::Dir, name: ".".into() });
        let parent_ino = st.inodes.ino_of(&parent);
        out.push(DirEntry { ino: parent_ino, kind: FileKind::Dir, name: "..".into() });
        for (name, child) in children {
            let kind = match &child {
                Node::Dir(_) | Node::Model(_) | Node::Sub(..) | Node::View(..) => FileKind::Dir,
                Node::Trash(uid, rel) if self.trash_path(*uid, rel).is_dir() => FileKind::Dir,
                _ => FileKind::File,
            };
            let ino = st.inodes.ino_of(&child);
            out.push(DirEntry { ino, kind, name });
        }
        for (name, b, kind) in scratch {
            let ino = st.inodes.ino_of(&Node::Scratch(b));
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

    pub fn statfs(&self) -> Result<libc::statvfs> {
        Ok(self.store.statvfs()?)
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
            Node::Scratch(b) => {
                let fd = self.scratch_fd(&st, b)?;
                drop(st);
                self.scratch_readlink(&fd)
            }
            _ => Err(FsError::new(libc::EINVAL, "not a symlink")),
        }
    }

    /// readdirplus: each entry from `offset` on, with its attributes, handed to `add`
    /// (which returns true when the reply is full). Every entry but `.` and `..` counts as
    /// a lookup the kernel will `forget`; one that did not fit is not counted.
    pub fn readdirplus(
        &self,
        dir: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &str, &Attr) -> bool,
    ) -> Result<()> {
        let entries = self.dir_entries(fh).ok_or_else(|| FsError::new(libc::EBADF, "unknown folder handle"))?;
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let dot = e.name == "." || e.name == "..";
            let attr = if dot { self.getattr(e.ino) } else { self.lookup(dir, &e.name) };
            let Ok(attr) = attr else { continue }; // gone since the listing was taken
            if add((i + 1) as u64, &e.name, &attr) {
                if !dot {
                    self.forget(attr.ino, 1);
                }
                break;
            }
        }
        Ok(())
    }
}
