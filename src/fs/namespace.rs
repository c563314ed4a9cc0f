//! Changes to the tree: mkdir, rmdir, unlink, rename, link, symlink. Each one ends in
//! an edit of the manifest a model folder shows (`edit`), committed by `commit`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::edit::*;
use super::tree::{dir_as_model, join, model_parent, scope};
use super::txn::Publish;
use super::{Attr, Fs, FsError, Handle, Node, Result, ScratchFile, State, enoent};
use crate::layout::{CONFIG_FILE, MANIFEST_FILE};
use crate::name::{DEFAULT_TAG, Name, Part, is_valid_part};
use crate::store::{Digest, Stamp, hash_file};

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
        let twin = st
            .index
            .find_ignore_case(n)
            .cloned()
            .or_else(|| st.folders.keys().find(|p| p.eq_ignore_case(n)).cloned());
        match twin {
            Some(t) if &t != n => Err(FsError::new(
                libc::EEXIST,
                format!("{} differs only in case from existing {}", n.display_shortest(), t.display_shortest()),
            )),
            _ => Ok(()),
        }
    }

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
                if !(sub == "files" || sub.starts_with("files/")) || name.starts_with('.') {
                    return Err(einval(format!("only a files/ folder can be made inside a model, not {sub:?}")));
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
        Ok(attr)
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
                log::info!("{name:?} is not a valid model name: a draft until renamed to one");
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
                if !st.model_children(m, "").is_empty() {
                    return Err(FsError::new(libc::ENOTEMPTY, m.display_shortest()));
                }
                // What the folder listed was all there was to remove: a published model
                // whose files were all removed (a folder made here never listed its
                // generated config.json) leaves the store with it.
                self.delete_model(&mut st, m)?;
                st.keep_parent_of(m);
                Ok(())
            }
            Node::Sub(m, s) => {
                if !st.model_children(m, s).is_empty() {
                    return Err(FsError::new(libc::ENOTEMPTY, s.clone()));
                }
                if let Some(f) = st.folder_mut(m) {
                    f.subs.remove(s);
                }
                st.touch(m);
                Ok(())
            }
            _ => Err(FsError::new(libc::ENOTDIR, name.to_string())),
        }
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
        if let Some(s) = st.folder_mut(&model).and_then(|f| f.scratch.remove(&full)) {
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

    pub fn rename(&self, parent: u64, name: &str, newparent: u64, newname: &str, flags: u32) -> Result<()> {
        self.refuse_if_read_only()?;
        check_name_length(newname)?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(einval("RENAME_EXCHANGE is not supported"));
        }
        // Data work (hashing a scratch file that becomes a layer, copying a layer out to a
        // scratch name) happens before the state lock is taken for the change itself.
        self.prepare_file_rename(parent, name, newparent, newname)?;
        let res = self.rename_locked(parent, name, newparent, newname, flags);
        if res.is_ok() {
            let st = self.lock();
            let became_weights = self.lookup_node(&st, newparent, newname).is_ok_and(|n| matches!(n, Node::Blob(_)));
            drop(st);
            if became_weights {
                self.invalidate_entry_later(newparent, newname);
            }
        }
        res
    }

    fn rename_locked(&self, parent: u64, name: &str, newparent: u64, newname: &str, flags: u32) -> Result<()> {
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
                self.rename_model(&mut st, from, &to, newname.to_string())
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

    /// A model folder moves to the name `to`, listed as `entry`: the manifest moves (no
    /// blob changes) and the folder's whole state goes with it (see `Folder`).
    pub(super) fn rename_model(&self, st: &mut State, from: &Name, to: &Name, entry: String) -> Result<()> {
        if from == to {
            if let Some(f) = st.folder_mut(from) {
                f.entry = entry;
            }
            return Ok(());
        }
        if st.is_published(to) || (st.model_exists(to) && !st.model_children(to, "").is_empty()) {
            return Err(FsError::new(libc::ENOTEMPTY, format!("{} exists", to.display_shortest())));
        }
        if !to.is_draft_only() {
            self.check_case_twin(st, to)?;
        }
        if st.folders.contains_key(to) {
            self.forget_model_folder(st, to); // an empty folder is replaced, as rename(2) does
        }
        if !st.is_published(from) {
            if !st.folders.contains_key(from) {
                return Err(enoent(from));
            }
            self.move_model_folder(st, from, to, entry);
            // A complete draft under its new name is published (Nautilus' F2 on a pasted
            // copy); it still shows the files written into it.
            if let Some((m, bytes)) = st.work(to).map(|w| (w.manifest.clone(), w.bytes.to_vec())) {
                self.publish_or_hold(st, to, m, bytes, Publish::IfComplete)?;
            }
            return Ok(());
        }
        let m = st.index.get(from).cloned().ok_or_else(|| enoent(from))?;
        self.store.write_manifest(to, &m.bytes)?;
        let stamp = std::fs::metadata(self.store.manifest_path(to)).map(|m| Stamp::of(&m)).unwrap_or_default();
        st.index.put(to.clone(), m.bytes.to_vec(), stamp);
        self.store.remove_manifest(from)?;
        st.index.remove(from);
        self.move_model_folder(st, from, to, entry);
        log::info!("moved {} to {} through the mount", from.display_shortest(), to.display_shortest());
        Ok(())
    }

    /// Move every model below prefix `from` to prefix `to`; all or nothing on validation.
    pub(super) fn rename_prefix(&self, st: &mut State, from: &str, to: &str) -> Result<()> {
        if scope(to).is_none() {
            return Err(einval(format!("{to:?} cannot be a prefix folder")));
        }
        if st.dir_exists(to) && !st.dir_children(to).is_empty() {
            return Err(FsError::new(libc::ENOTEMPTY, to.to_string()));
        }
        let prefix = format!("{from}/");
        let mut moves = Vec::new();
        let names: std::collections::BTreeSet<Name> =
            st.index.models().map(|m| m.name.clone()).chain(st.folders.keys().cloned()).collect();
        for name in names {
            let d = format!("{}/{}", super::tree::model_parent(&name), st.entry_of(&name));
            let d = d.trim_start_matches('/');
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
                let entry = target.rsplit('/').next().unwrap_or(&target).to_string();
                moves.push((name.clone(), n, entry));
            }
        }
        for (_, n, _) in &moves {
            if st.model_exists(n) {
                return Err(FsError::new(libc::ENOTEMPTY, n.display_shortest()));
            }
        }
        for (a, b, entry) in &moves {
            self.rename_model(st, a, b, entry.clone())?;
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

    /// A file moves between names or model folders. On success the kernel keeps the
    /// moved inode under its new name, so its node follows.
    pub(super) fn rename_file(
        &self,
        st: &mut State,
        (sm, sname): (&Name, &str),
        (dm, dname): (&Name, &str),
    ) -> Result<()> {
        let skey = (sm.clone(), sname.to_string());
        let dkey = (dm.clone(), dname.to_string());
        if skey == dkey {
            return Ok(());
        }
        st.folder_entry(dm);
        let res = self.move_file(st, &skey, &dkey);
        if res.is_ok() {
            st.mark_gone(sm, sname);
            st.mark_written(dm, dname);
            st.inodes.rekey(&Node::File(sm.clone(), sname.to_string()), &Node::File(dm.clone(), dname.to_string()));
        }
        res
    }

    fn move_file(&self, st: &mut State, skey: &(Name, String), dkey: &(Name, String)) -> Result<()> {
        let (sm, sname, dm, dname) = (&skey.0, skey.1.as_str(), &dkey.0, dkey.1.as_str());
        let (skey, dkey) = (skey.clone(), dkey.clone());
        // A staged temp file (rsync) onto a layer name: its blob becomes that layer.
        if let Some((d, len)) = st.staged_file(sm, sname) {
            if !is_layer_name(dname) {
                return Err(FsError::new(libc::EXDEV, format!("{sname} can only become a layer")));
            }
            st.folder_entry(sm).staged.remove(sname);
            let res = match dname {
                MANIFEST_FILE => {
                    self.store.read_blob(&d).map_err(Into::into).and_then(|b| self.write_manifest_locked(st, dm, b))
                }
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
        if st.is_creating(sm, sname) {
            return Err(FsError::new(libc::EBUSY, format!("{sname} is still being written")));
        }
        // A scratch file moving onto a layer name is committed as that layer: its file
        // is renamed into blobs/, no byte copied.
        if let Some(s) = st.scratch_file(sm, sname).cloned() {
            if !is_layer_name(dname) {
                if let Some(old) = st.folder_entry(dm).scratch.remove(dname) {
                    let _ = std::fs::remove_file(old.path);
                }
                st.folder_entry(sm).scratch.remove(sname);
                st.folder_entry(dm).scratch.insert(dname.to_string(), s);
                return Ok(());
            }
            if dname == MANIFEST_FILE {
                // Validated and installed first: on failure the scratch file stays.
                self.install_manifest_locked(st, dm, std::fs::read(&s.path)?)?;
                st.folder_entry(sm).scratch.remove(sname);
                let _ = std::fs::remove_file(&s.path);
                return Ok(());
            }
            if dname == CONFIG_FILE {
                check_config_json(dm, &std::fs::read(&s.path)?)?;
            }
            let (digest, len) = match st.prepared.take() {
                Some(Prepared::Hashed { path, digest, len }) if path == s.path => (digest, len),
                _ => hash_file(&s.path)?,
            };
            let file = File::open(&s.path)?;
            self.store.adopt_blob_held(&s.path, &file, &digest, len)?;
            st.folder_entry(sm).scratch.remove(sname);
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
                st.folder_entry(sm).vacated.insert(skey.1, i);
            }
            return self.commit_edit(st, sm, e, Publish::NeverDraft);
        }
        // A layer moving to a scratch name (an editor's backup): copy it out, detach it.
        let (d, _) = src_layer;
        let path = match st.prepared.take() {
            Some(Prepared::CopiedOut { digest, path }) if digest == d => path,
            other => {
                if let Some(Prepared::CopiedOut { path, .. }) = other {
                    let _ = std::fs::remove_file(path);
                }
                self.copy_blob_out(&d)?
            }
        };
        st.folder_entry(dm).scratch.insert(dkey.1, ScratchFile { path });
        let mut e = st.edit(sm);
        if let Some(i) = e.remove(sname) {
            st.folder_entry(sm).vacated.insert(skey.1, i);
        }
        self.commit_edit(st, sm, e, Publish::NeverDraft)
    }

    /// Before a file rename takes the state lock: hash (and fsync) a scratch file that will
    /// become a layer, or copy out a layer that will become a scratch file, so that the
    /// lock every request needs is not held during data I/O. The result waits in
    /// `State::prepared` for the rename (checked there: same file, same blob).
    fn prepare_file_rename(&self, parent: u64, name: &str, newparent: u64, newname: &str) -> Result<()> {
        let job = {
            let st = self.lock();
            let (Some((sm, ssub)), Some((_, dsub))) = (
                self.parent_node(&st, parent).ok().and_then(|n| self.as_model_dir(&st, &n)),
                self.parent_node(&st, newparent).ok().and_then(|n| self.as_model_dir(&st, &n)),
            ) else {
                return Ok(());
            };
            let (sname, dname) = (join(&ssub, name), join(&dsub, newname));
            if let Some(s) = st.scratch_file(&sm, &sname) {
                let big = is_layer_name(&dname) && dname != MANIFEST_FILE && dname != CONFIG_FILE;
                big.then(|| Job::Hash(s.path.clone()))
            } else if !is_layer_name(&dname) && st.staged_file(&sm, &sname).is_none() {
                self.layer_of(&st, &sm, &sname).ok().map(|(d, _)| Job::CopyOut(d))
            } else {
                None
            }
        };
        let prepared = match job {
            None => return Ok(()),
            Some(Job::Hash(path)) => {
                let (digest, len) = hash_file(&path)?;
                File::open(&path)?.sync_all()?;
                Prepared::Hashed { path, digest, len }
            }
            Some(Job::CopyOut(digest)) => Prepared::CopiedOut { digest, path: self.copy_blob_out(&digest)? },
        };
        if let Some(Prepared::CopiedOut { path, .. }) = self.lock().prepared.replace(prepared) {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// A private, writable copy of a blob in this process's scratch folder.
    fn copy_blob_out(&self, d: &Digest) -> Result<PathBuf> {
        let (f, path) = self.store.temp_file()?;
        drop(f);
        std::io::copy(&mut self.store.open_blob(d)?, &mut OpenOptions::new().write(true).open(&path)?)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(path)
    }

    pub(super) fn replace_or_add(&self, st: &mut State, model: &Name, file: &str, d: Digest, len: u64) -> Result<()> {
        st.folder_entry(model);
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

enum Job {
    Hash(PathBuf),
    CopyOut(Digest),
}

/// Data work done for a file rename before it took the state lock.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// A scratch file that is becoming a layer: its digest and length, fsynced.
    Hashed { path: PathBuf, digest: Digest, len: u64 },
    /// A layer that is becoming a scratch file: a private copy of its blob.
    CopiedOut { digest: Digest, path: PathBuf },
}
