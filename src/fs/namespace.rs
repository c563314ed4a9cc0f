//! Changes to the tree: mkdir, rmdir, unlink, link, symlink (renames: `rename`). Each one ends in
//! an edit of the manifest a model folder shows (`edit`), committed by `commit`.

use super::edit::*;
use super::scratch::{Caller, Fd, Make, is_layer_folder, is_reserved};
use super::tree::{dir_as_model, join, model_parent, scope};
use super::txn::Publish;
use super::{Attr, Fs, FsError, Node, Result, State, enoent};
use crate::layout::MANIFEST_FILE;
use crate::name::{DEFAULT_TAG, Name, Part, is_valid_part};
use crate::store::Digest;

impl Fs {
    pub(super) fn refuse_if_read_only(&self) -> Result<()> {
        if self.opts.read_only { Err(erofs()) } else { Ok(()) }
    }

    /// A folder node as the model it is, when it is one (a colon-less folder that became NAME:latest).
    pub(super) fn as_model_dir(&self, st: &State, node: &Node) -> Option<(Name, String)> {
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

    pub(super) fn parent_node(&self, st: &State, parent: u64) -> Result<Node> {
        let node = self.node_of(st, parent)?;
        if let Some((m, s)) = self.as_model_dir(st, &node) {
            return Ok(if s.is_empty() { Node::Model(m) } else { Node::Sub(m, s) });
        }
        Ok(node)
    }

    /// The model named `entry` inside prefix folder `path`, as mkdir/rename/symlink target.
    pub(super) fn model_at(&self, path: &str, entry: &str) -> Result<Name> {
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

    pub(super) fn check_case_twin(&self, st: &State, n: &Name) -> Result<()> {
        let twin =
            st.index.find_ignore_case(n).cloned().or_else(|| st.folders.keys().find(|p| p.eq_ignore_case(n)).cloned());
        match twin {
            Some(t) if &t != n => Err(FsError::new(
                libc::EEXIST,
                format!("{} differs only in case from existing {}", n.display_shortest(), t.display_shortest()),
            )),
            _ => Ok(()),
        }
    }

    pub fn mkdir(&self, parent: u64, name: &str, mode: u32) -> Result<Attr> {
        self.mkdir_as(Caller::daemon(), parent, name, mode)
    }

    /// mkdir by `who`: a prefix folder, a model folder (or draft), a layer folder inside a
    /// model (`files/`), or a scratch folder (any other name inside a model folder).
    pub fn mkdir_as(&self, who: Caller, parent: u64, name: &str, mode: u32) -> Result<Attr> {
        self.refuse_if_read_only()?;
        check_name_length(name)?;
        let mut st = self.lock();
        let parent_node = self.parent_node(&st, parent)?;
        let host = matches!(&parent_node, Node::Model(m) if self.becomes_host(&st, m, name));
        if let Node::Model(_) | Node::Sub(..) = &parent_node
            && name.contains(':')
        {
            // `mkdir -p ns/na.me/x:y` meant a model, but `na.me` is a model folder: say so
            // rather than make a scratch folder that unmount would drop with what went in.
            return Err(einval(format!("{name:?} looks like a model; a model folder cannot hold models")));
        }
        if let Node::View(k, p) = &parent_node
            && super::views::holds_folders(*k, &join(p, name))
        {
            let node = self.view_mkdir(&mut st, (*k, p), name, mode, who)?;
            return self.remembered_attr(&mut st, &node);
        }
        if !host && let Some(dir) = self.scratch_target(&mut st, &parent_node, name)? {
            let attr = self.scratch_make(&mut st, &dir, name, Make::Dir { mode }, who)?;
            self.touch_parent(&mut st, &parent_node);
            return Ok(attr);
        }
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
            Node::Model(m) if host => {
                // `mkdir -p localhost:5000/team/...`: the first mkdir looked like a model
                // (`localhost` tag `5000`); a folder inside it makes it a host prefix.
                let as_host = format!("{}:{}", m.model, m.tag);
                st.folders.remove(m);
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
                if !is_layer_folder(&sub) {
                    return Err(einval(format!("{sub:?} is a layer's name in a model folder")));
                }
                if st.lookup_in_model(m, "", &sub).is_some() {
                    return Err(FsError::new(libc::EEXIST, sub));
                }
                st.folder_entry(m).subs.insert(sub.clone());
                st.touch(m);
                Node::Sub(m.clone(), sub)
            }
            _ => return Err(FsError::new(libc::ENOTDIR, "not a folder")),
        };
        let attr = self.attr_of(&mut st, &node)?;
        st.inodes.remember(&node);
        self.touch_parent(&mut st, &parent_node);
        Ok(attr)
    }

    /// `mkdir -p localhost:5000/team/...`: the first mkdir looked like a model (`localhost`
    /// tag `5000`); a namespace made inside it while it is empty makes it a host prefix.
    fn becomes_host(&self, st: &State, m: &Name, name: &str) -> bool {
        st.index.get(m).is_none()
            && model_parent(m).is_empty()
            && m.display_shortest().contains(':')
            && is_valid_part(Part::Host, &format!("{}:{}", m.model, m.tag))
            && is_valid_part(Part::Namespace, name)
            && self.folder_is_empty(st, m, "")
    }

    /// The real folder a new entry `name` of folder `parent` goes into when it is a scratch
    /// entry: any name in a scratch folder; in a model folder, a name that is not the
    /// model's (layers, their temp files, layer folders).
    pub(super) fn scratch_target(&self, st: &mut State, parent: &Node, name: &str) -> Result<Option<Fd>> {
        let sub = match parent {
            Node::Scratch(_) => return self.scratch_dir(st, parent, true),
            Node::View(k, p) => {
                if *k != crate::views::ViewKind::LmStudio {
                    return Err(FsError::new(libc::EROFS, format!("{} is read-only", k.folder())));
                }
                if self.view_files(st, *k).contains_key(&join(p, name)) {
                    return Ok(None);
                }
                return self.scratch_dir(st, parent, true);
            }
            Node::Model(_) => "",
            Node::Sub(_, s) => s.as_str(),
            _ => return Ok(None),
        };
        if is_reserved(&join(sub, name)) {
            return Ok(None);
        }
        self.scratch_dir(st, parent, true)
    }

    /// An entry of folder `parent` came or went: its times move (a scratch folder's are the disk's).
    pub(super) fn touch_parent(&self, st: &mut State, parent: &Node) {
        match parent {
            Node::Model(m) | Node::Sub(m, _) => st.touch(m),
            Node::Dir(p) => st.touch_dir(p),
            _ => {}
        }
    }

    pub(super) fn mkdir_in_prefix(&self, st: &mut State, p: &str, name: &str) -> Result<Node> {
        if st.lookup_in_dir(p, name).is_some() {
            return Err(FsError::new(libc::EEXIST, name.to_string()));
        }
        let child = join(p, name);
        if p.is_empty() && (name == crate::name::DEFAULT_HOST || name == crate::name::DEFAULT_NAMESPACE) {
            // The root is the default host's default namespace: no second spelling of it.
            return Err(einval(format!("{name:?} is the mount root itself; make models and namespaces there")));
        }
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
                log::debug!("{name:?} is not a valid model name: a draft until renamed to one");
                Name::draft(h, ns, name)
            }
        };
        if st.model_exists(&n) {
            return Err(FsError::new(libc::EEXIST, n.display_shortest()));
        }
        st.make_folder(&n, name.to_string());
        Ok(Node::Model(n))
    }

    pub fn rmdir(&self, parent: u64, name: &str) -> Result<()> {
        self.refuse_if_read_only()?;
        let mut st = self.lock();
        let res = self.rmdir_locked(&mut st, parent, name);
        if res.is_ok()
            && let Ok(p) = self.parent_node(&st, parent)
        {
            self.touch_parent(&mut st, &p);
        }
        res
    }

    fn rmdir_locked(&self, st: &mut State, parent: u64, name: &str) -> Result<()> {
        let node = self.lookup_node(st, parent, name)?;
        match &node {
            Node::View(k, p) => self.view_rmdir(st, *k, p),
            Node::Scratch(_) => {
                let parent_node = self.parent_node(st, parent)?;
                let dir = self.scratch_dir(st, &parent_node, false)?.ok_or_else(|| enoent(name))?;
                self.scratch_remove(&dir, name, true)
            }
            Node::Trash(uid, rel) => self.trash_rmdir(st, *uid, rel),
            Node::Dir(p) => {
                if !st.dir_children(p).is_empty() {
                    return Err(FsError::new(libc::ENOTEMPTY, p.clone()));
                }
                st.pending_dirs.remove(p);
                Ok(())
            }
            Node::Model(m) => {
                if !self.folder_is_empty(st, m, "") {
                    return Err(FsError::new(libc::ENOTEMPTY, m.display_shortest()));
                }
                // What the folder listed was all there was to remove: a published model
                // whose files were all removed (a folder made here never listed its
                // generated config.json) leaves the store with it.
                self.delete_model(st, m, "deleted (rmdir in the mount)")?;
                st.keep_parent_of(m);
                Ok(())
            }
            Node::Sub(m, s) => {
                if !self.folder_is_empty(st, m, s) {
                    return Err(FsError::new(libc::ENOTEMPTY, s.clone()));
                }
                if let Some(f) = st.folder_mut(m) {
                    f.subs.remove(s);
                    if let Some(t) = &f.tree {
                        let _ = std::fs::remove_dir(t.join(s));
                    }
                }
                st.touch(m);
                Ok(())
            }
            _ => Err(FsError::new(libc::ENOTDIR, name.to_string())),
        }
    }

    pub fn unlink(&self, parent: u64, name: &str) -> Result<()> {
        self.refuse_if_read_only()?;
        check_name_length(name)?;
        let mut st = self.lock();
        let parent_node = self.parent_node(&st, parent)?;
        if let Node::Scratch(_) | Node::Model(_) | Node::Sub(..) | Node::View(..) = &parent_node
            && let Ok(Node::Scratch(_)) = self.lookup_node(&mut st, parent, name)
        {
            let dir = self.scratch_dir(&mut st, &parent_node, false)?.ok_or_else(|| enoent(name))?;
            self.scratch_remove(&dir, name, false)?;
            self.touch_parent(&mut st, &parent_node);
            return Ok(());
        }
        let (model, sub) = match &parent_node {
            Node::Model(m) => (m.clone(), String::new()),
            Node::Sub(m, s) => (m.clone(), s.clone()),
            Node::Trash(uid, rel) => return self.trash_unlink(&mut st, *uid, &join(rel, name)),
            Node::View(k, p) => return self.view_unlink(&mut st, *k, p, name),
            Node::Dir(p) => {
                return Err(match st.lookup_in_dir(p, name) {
                    Some(_) => FsError::new(libc::EISDIR, name.to_string()),
                    None => enoent(name),
                });
            }
            _ => return Err(FsError::new(libc::ENOTDIR, "not a folder")),
        };
        let full = join(&sub, name);
        let res = self.unlink_file(&mut st, &model, &full);
        if res.is_ok() {
            st.mark_gone(&model, &full);
        }
        res
    }

    fn unlink_file(&self, st: &mut State, model: &Name, full: &str) -> Result<()> {
        let (model, full) = (model.clone(), full.to_string());
        // Only what the folder lists can be removed (a folder made here never listed its
        // generated config.json).
        if st.lookup_in_model(&model, "", &full).is_none() {
            return Err(enoent(&full));
        }
        if st.folder_mut(&model).is_some_and(|f| f.creating.remove(&full)) {
            return Ok(()); // the writer's commit sees this and drops its data
        }
        if let Some((d, _)) = st.folder_mut(&model).and_then(|f| f.staged.remove(&full)) {
            self.store.release(&d);
            self.prune_unused(st, vec![d]);
            return Ok(());
        }
        if full == MANIFEST_FILE && (st.is_published(&model) || st.waiting(&model).is_some()) {
            return self.unpublish(st, &model);
        }
        if full == MANIFEST_FILE {
            // A draft's manifest.json, taken as its view: the file goes, its layers stay.
            return Ok(());
        }
        self.remove_layer(st, &model, &full)
    }

    /// A layer file leaves a model folder (unlink, trash): the model is published without
    /// it, or the change is held when that would leave it incomplete.
    pub(super) fn remove_layer(&self, st: &mut State, model: &Name, file: &str) -> Result<()> {
        let mut e = st.edit(model);
        if e.find(file).is_none() {
            return Err(enoent(file));
        }
        if let Some(i) = e.remove(file) {
            st.folder_entry(model).vacated.insert(file.to_string(), i);
        }
        st.mark_gone(model, file);
        self.commit_edit(st, model, e, Publish::NeverDraft)
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
        if let Node::Scratch(b) = &node {
            let fd = self.scratch_fd(&st, *b)?;
            let dir = self.scratch_target(&mut st, &dest_parent, newname)?.ok_or_else(|| {
                FsError::new(libc::EXDEV, "a scratch file becomes a layer by a rename, not by a link")
            })?;
            let attr = self.scratch_link(&mut st, &fd, &dir, newname)?;
            self.touch_parent(&mut st, &dest_parent);
            return Ok(attr);
        }
        if let Node::Scratch(_) = &dest_parent {
            return Err(FsError::new(libc::EXDEV, "a layer cannot be linked into a scratch folder: copy it"));
        }
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
        self.apply_layer(&mut st, &dm, &dname, d, len)?;
        let new_node = st.lookup_in_model(&dm, "", &dname).ok_or_else(|| enoent(&dname))?;
        let attr = self.attr_of(&mut st, &new_node)?;
        st.inodes.remember(&new_node);
        Ok(attr)
    }

    /// `ln -s A B` on model folders: B becomes a manifest copy of A, shown as a folder.
    /// The kernel requires the reply to be a symlink, so it gets a short-lived link entry.
    pub fn symlink(&self, parent: u64, name: &str, target: &str) -> Result<Attr> {
        self.symlink_as(Caller::daemon(), parent, name, target)
    }

    /// symlink by `who`: in a prefix folder a model copy; in a model or scratch folder
    /// under a scratch name, a real symlink.
    pub fn symlink_as(&self, who: Caller, parent: u64, name: &str, target: &str) -> Result<Attr> {
        self.refuse_if_read_only()?;
        check_name_length(name)?;
        let mut st = self.lock();
        let parent_node = self.parent_node(&st, parent)?;
        if let Some(dir) = self.scratch_target(&mut st, &parent_node, name)? {
            let attr = self.scratch_make(&mut st, &dir, name, Make::Symlink { target }, who)?;
            self.touch_parent(&mut st, &parent_node);
            return Ok(attr);
        }
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
        st.touch_dir(p);
        let node = Node::Link(target.to_string());
        let attr = self.attr_of(&mut st, &node)?;
        st.inodes.remember(&node);
        Ok(attr)
    }

    /// mknod (fifos, sockets, device nodes, plain files) by `who`: scratch entries only.
    pub fn mknod_as(&self, who: Caller, parent: u64, name: &str, mode: u32, rdev: u64) -> Result<Attr> {
        self.refuse_if_read_only()?;
        check_name_length(name)?;
        let mut st = self.lock();
        let parent_node = self.parent_node(&st, parent)?;
        let Some(dir) = self.scratch_target(&mut st, &parent_node, name)? else {
            return Err(einval(format!("{name:?}: special files can only be scratch entries of a model folder")));
        };
        let attr = self.scratch_make(&mut st, &dir, name, Make::Node { mode, rdev }, who)?;
        self.touch_parent(&mut st, &parent_node);
        Ok(attr)
    }

    /// A symlink target as a path relative to the mount root, `..` resolved.
    pub(super) fn symlink_target_path(&self, dir: &str, target: &str) -> Result<Vec<String>> {
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

    pub(super) fn resolve_model_path(&self, st: &State, parts: &[String]) -> Option<Name> {
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
}
