//! The shape of the mount: which directory path shows which models, prefixes and files.
//!
//! A directory at display path `P` plays up to three roles at once, because Ollama's short
//! names overlap: `myuser/` holds the models of namespace `myuser` *and* the namespaces
//! of a host called `myuser`. The root also lists the other hosts. Lookup and listing
//! agree: a name exists exactly when its folder lists it (no `library/`,
//! `registry.ollama.ai/` or tagless aliases; the CLI and API keep Ollama's short names).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Node, State};
use crate::layout::{self, Kind, LayerFile, Source};
use crate::name::{DEFAULT_HOST, DEFAULT_NAMESPACE, Name, Part, is_valid_part};
use crate::store::index::Model;

/// What a prefix directory contains.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scope {
    /// (host, namespace) pairs whose models are listed here.
    pub models: Vec<(String, String)>,
    /// The host whose namespaces are listed here as folders.
    pub namespaces_of: Option<String>,
    /// The root also lists every non-default host.
    pub hosts: bool,
    /// At the root, `library` is implied and not listed.
    pub hide_library: bool,
}

pub fn split(path: &str) -> Vec<&str> {
    if path.is_empty() { Vec::new() } else { path.split('/').collect() }
}

pub fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { format!("{path}/{name}") }
}

/// The roles of the directory at display path `path`; None when no directory can be there.
pub fn scope(path: &str) -> Option<Scope> {
    let parts = split(path);
    match parts.as_slice() {
        [] => Some(Scope {
            models: vec![(DEFAULT_HOST.into(), DEFAULT_NAMESPACE.into())],
            namespaces_of: Some(DEFAULT_HOST.into()),
            hosts: true,
            hide_library: true,
        }),
        [a] => {
            let mut s = Scope::default();
            if *a == DEFAULT_HOST {
                s.namespaces_of = Some(DEFAULT_HOST.into());
                return Some(s);
            }
            if is_valid_part(Part::Namespace, a) {
                s.models.push((DEFAULT_HOST.into(), a.to_string()));
            }
            if is_valid_part(Part::Host, a) {
                s.namespaces_of = Some(a.to_string());
            }
            (s != Scope::default()).then_some(s)
        }
        [h, ns] if is_valid_part(Part::Host, h) && is_valid_part(Part::Namespace, ns) => {
            Some(Scope { models: vec![(h.to_string(), ns.to_string())], ..Default::default() })
        }
        _ => None,
    }
}

/// The model a colon-less prefix folder turns into once a layer file is created in it.
pub fn dir_as_model(path: &str) -> Option<Name> {
    let (parent, last) = match path.rsplit_once('/') {
        Some((p, l)) => (p, l),
        None => ("", path),
    };
    let s = scope(parent)?;
    let (h, ns) = s.models.first()?;
    Name::from_parts(h, ns, last, crate::name::DEFAULT_TAG).ok()
}

/// The display path of the directory that holds a model.
pub fn model_parent(name: &Name) -> String {
    let d = name.display_shortest();
    match d.rsplit_once('/') {
        Some((p, _)) => p.to_string(),
        None => String::new(),
    }
}

/// The model a `model:tag` entry in a prefix directory stands for.
pub fn model_name_in(entry: &str, h_ns: &(String, String)) -> Option<Name> {
    let (model, tag) = entry.rsplit_once(':')?;
    Name::from_parts(&h_ns.0, &h_ns.1, model, tag).ok()
}

impl State {
    /// A model folder left its parent through the mount (rmdir, mv, trash): the parent
    /// stays, even empty, as on any filesystem, until it is removed itself. (A file
    /// manager restores a trashed model into its old folder and gives up if it is gone.)
    pub(super) fn keep_parent_of(&mut self, model: &Name) {
        let parent = model_parent(model);
        if !parent.is_empty() {
            self.pending_dirs.insert(parent);
        }
    }

    /// What the mount shows for a model: its work in progress, else its manifest in the store.
    pub(super) fn view(&self, model: &Name) -> Option<&Arc<Model>> {
        self.work(model).or_else(|| self.index.get(model))
    }

    pub(super) fn is_published(&self, model: &Name) -> bool {
        self.index.get(model).is_some()
    }

    /// The files a model folder lists: of `all_files_of`, those a folder made in the
    /// mount had written into it.
    pub(super) fn files_of(&self, model: &Name) -> Vec<LayerFile> {
        let mut files = self.all_files_of(model);
        if let Some(f) = self.folder(model) {
            files.retain(|file| f.shows(&file.name));
        }
        files
    }

    /// Every file of a model folder's manifest as the mount names them, listed or not
    /// (what a change, a move or the trash must account for): pinned names win (see
    /// `Folder::pins`); a draft has a `manifest.json` only when one was written into it
    /// (waiting for its blobs, or taken as its view).
    pub(super) fn all_files_of(&self, model: &Name) -> Vec<LayerFile> {
        let folder = self.folder(model);
        let mut files = Vec::new();
        if let Some(m) = self.view(model) {
            files = layout::files(&m.manifest);
            if let Some(pins) = folder.and_then(|f| f.pins.as_ref())
                && pins.len() == m.manifest.layers.len()
            {
                for f in &mut files {
                    if let Source::Layer(i) = f.source {
                        f.name = pins[i].clone();
                    }
                }
            }
        }
        if !self.is_published(model) {
            files.retain(|f| f.source != Source::Manifest);
            // Copy tools set a waiting manifest.json's mode and times by path right after
            // closing it, so it is there as written.
            let written = |f: &super::folder::Folder| {
                f.waiting.is_some() || f.written.as_ref().is_some_and(|w| w.contains(layout::MANIFEST_FILE))
            };
            if folder.is_some_and(written) {
                files.push(LayerFile {
                    name: layout::MANIFEST_FILE.to_string(),
                    kind: Kind::Text,
                    source: Source::Manifest,
                });
            }
        }
        files
    }

    /// The `manifest.json` a draft shows while it waits for its blobs.
    pub(super) fn waiting_manifest_json(&self, model: &Name, name: &str) -> Option<&super::writer::WaitingManifest> {
        if name != layout::MANIFEST_FILE {
            return None;
        }
        self.waiting(model)
    }

    pub(super) fn model_exists(&self, n: &Name) -> bool {
        self.index.get(n).is_some() || self.folders.contains_key(n)
    }

    /// The name model `n` is listed under (its folder's, or `model:tag`).
    pub(super) fn entry_of(&self, n: &Name) -> String {
        self.folder(n).map(|f| f.entry.clone()).unwrap_or_else(|| n.entry())
    }

    /// Does a prefix directory exist at `path`? Exactly when its parent lists it.
    pub(super) fn dir_exists(&self, path: &str) -> bool {
        if path.is_empty() {
            return true;
        }
        let (parent, last) = path.rsplit_once('/').unwrap_or(("", path));
        self.dir_exists(parent) && matches!(self.lookup_in_dir(parent, last), Some(Node::Dir(p)) if p == path)
    }

    /// Does any model of host `h` (namespace `ns`, when given) exist, in the store or as a
    /// folder of the mount?
    fn has_models(&self, h: &str, ns: Option<&str>) -> bool {
        let in_store = match ns {
            Some(ns) => self.index.models_in(h, ns).next().is_some(),
            None => self.index.has_host(h),
        };
        in_store || self.folders.keys().any(|n| n.host == h && ns.is_none_or(|ns| n.namespace == ns))
    }

    /// Look a name up in a prefix directory, without listing it: exactly what
    /// `dir_children` would list under that name, and nothing else (no aliases).
    pub(super) fn lookup_in_dir(&self, path: &str, name: &str) -> Option<Node> {
        let s = scope(path)?;
        // Model folders the mount keeps are listed under their own entries.
        for (h, ns) in &s.models {
            if let Some(n) = self.folders.iter().find(|(n, f)| &n.host == h && &n.namespace == ns && f.entry == name) {
                return Some(Node::Model(n.0.clone()));
            }
        }
        // Published models are listed as `model:tag` unless their folder has another entry.
        for hn in &s.models {
            if let Some(n) = model_name_in(name, hn)
                && self.index.get(&n).is_some()
                && !self.folders.contains_key(&n)
            {
                return Some(Node::Model(n));
            }
        }
        let child = join(path, name);
        if self.pending_dirs.contains(&child) || self.dir_has_pending(&child) {
            return Some(Node::Dir(child));
        }
        if let Some(h) = &s.namespaces_of
            && !(s.hide_library && name == DEFAULT_NAMESPACE)
            && self.has_models(h, Some(name))
        {
            return Some(Node::Dir(child));
        }
        if s.hosts && name != DEFAULT_HOST && self.has_models(name, None) {
            return Some(Node::Dir(child));
        }
        None
    }

    fn dir_has_pending(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.pending_dirs.range(prefix.clone()..).next().is_some_and(|p| p.starts_with(&prefix))
    }

    /// Every entry of a prefix directory, sorted by name.
    pub(super) fn dir_children(&self, path: &str) -> BTreeMap<String, Node> {
        let mut out = BTreeMap::new();
        let Some(s) = scope(path) else { return out };
        let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
        for p in self.pending_dirs.range(prefix.clone()..).take_while(|p| p.starts_with(&prefix)) {
            let rest = &p[prefix.len()..];
            let first = rest.split('/').next().unwrap_or(rest);
            if !first.is_empty() {
                out.insert(first.to_string(), Node::Dir(join(path, first)));
            }
        }
        if let Some(h) = &s.namespaces_of {
            let mount_ns = self.folders.keys().filter(|n| &n.host == h).map(|n| &n.namespace);
            for ns in self.index.namespaces_of(h).chain(mount_ns) {
                if s.hide_library && ns == DEFAULT_NAMESPACE {
                    continue;
                }
                out.insert(ns.clone(), Node::Dir(join(path, ns)));
            }
        }
        if s.hosts {
            let mount_hosts = self.folders.keys().map(|n| &n.host);
            for h in self.index.hosts().chain(mount_hosts) {
                if h != DEFAULT_HOST {
                    out.insert(h.clone(), Node::Dir(h.clone()));
                }
            }
        }
        // Models last: a model entry wins over a folder of the same name (as lookup does).
        for (h, ns) in &s.models {
            for m in self.index.models_in(h, ns) {
                if !self.folders.contains_key(&m.name) {
                    out.insert(m.name.entry(), Node::Model(m.name.clone()));
                }
            }
            for (n, f) in self.folders.iter().filter(|(n, _)| &n.host == h && &n.namespace == ns) {
                out.insert(f.entry.clone(), Node::Model(n.clone()));
            }
        }
        out
    }

    /// The model's entries of a folder inside a model (`sub` = "" for the model folder
    /// itself): layer files and layer folders. Its scratch entries are `Fs::tree_children`.
    pub(super) fn model_children(&self, model: &Name, sub: &str) -> Vec<(String, Node)> {
        let mut out: Vec<(String, Node)> = Vec::new();
        let prefix = if sub.is_empty() { String::new() } else { format!("{sub}/") };
        let push = |out: &mut Vec<(String, Node)>, name: String, node: Node| {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, node));
            }
        };
        for f in self.files_of(model) {
            let Some(rest) = f.name.strip_prefix(&prefix) else {
                continue;
            };
            match rest.split_once('/') {
                Some((dir, _)) => push(&mut out, dir.to_string(), Node::Sub(model.clone(), format!("{prefix}{dir}"))),
                None => push(&mut out, rest.to_string(), self.file_node(model, &f)),
            }
        }
        let Some(folder) = self.folder(model) else { return out };
        for path in &folder.subs {
            if let Some(rest) = path.strip_prefix(&prefix) {
                let first = rest.split('/').next().unwrap_or(rest);
                if !first.is_empty() {
                    push(&mut out, first.to_string(), Node::Sub(model.clone(), format!("{prefix}{first}")));
                }
            }
        }
        for name in folder.creating.iter().chain(folder.staged.keys()) {
            if let Some(rest) = name.strip_prefix(&prefix)
                && !rest.contains('/')
            {
                push(&mut out, rest.to_string(), Node::File(model.clone(), name.clone()));
            }
        }
        out
    }

    /// The node of one file of a model: weights share the blob's node.
    pub(super) fn file_node(&self, model: &Name, f: &layout::LayerFile) -> Node {
        if f.kind == Kind::Weights
            && let Source::Layer(i) = f.source
            && let Some(m) = self.view(model)
            && let Some(d) = m.manifest.layers.get(i).and_then(|l| l.digest())
        {
            return Node::Blob(d);
        }
        Node::File(model.clone(), f.name.clone())
    }

    /// Look up `name` inside a model folder (`sub` = "" for the model folder itself).
    pub(super) fn lookup_in_model(&self, model: &Name, sub: &str, name: &str) -> Option<Node> {
        let full = if sub.is_empty() { name.to_string() } else { format!("{sub}/{name}") };
        if let Some(f) = self.folder(model)
            && (f.creating.contains(&full) || f.staged.contains_key(&full))
        {
            return Some(Node::File(model.clone(), full));
        }
        let files = self.files_of(model);
        if let Some(f) = files.iter().find(|f| f.name == full) {
            return Some(self.file_node(model, f));
        }
        let dir_prefix = format!("{full}/");
        if files.iter().any(|f| f.name.starts_with(&dir_prefix)) {
            return Some(Node::Sub(model.clone(), full));
        }
        let folder = self.folder(model)?;
        let below = |p: &String| *p == full || p.starts_with(&dir_prefix);
        if folder.subs.iter().any(below) || folder.creating.iter().any(|p| p.starts_with(&dir_prefix)) {
            return Some(Node::Sub(model.clone(), full));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let root = scope("").unwrap();
        assert!(root.hosts && root.hide_library);
        let myuser = scope("myuser").unwrap();
        assert_eq!(myuser.models, [(DEFAULT_HOST.to_string(), "myuser".to_string())]);
        assert_eq!(myuser.namespaces_of.as_deref(), Some("myuser"));
        let hf = scope("hf.co").unwrap();
        assert!(hf.models.is_empty(), "a dotted name cannot be a namespace");
        assert_eq!(scope("hf.co/bartowski").unwrap().models, [("hf.co".to_string(), "bartowski".to_string())]);
        assert_eq!(
            scope("registry.ollama.ai/library").unwrap().models,
            [(DEFAULT_HOST.to_string(), "library".to_string())]
        );
        assert!(scope("a/b/c").is_none());
        assert!(scope("a b").is_none());
        assert_eq!(model_parent(&Name::parse("hf.co/b/m:t").unwrap()), "hf.co/b");
        assert_eq!(model_parent(&Name::parse("m").unwrap()), "");
    }
}
