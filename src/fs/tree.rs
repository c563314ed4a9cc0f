//! The shape of the mount: which directory path shows which models, prefixes and files.
//!
//! A directory at display path `P` plays up to three roles at once, because Ollama's short
//! names overlap: `myuser/` holds the models of namespace `myuser` *and* the namespaces
//! of a host called `myuser`. The root also lists the other hosts. `library/` and
//! `registry.ollama.ai/` are hidden aliases that spell the defaults out.

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

    /// Files a freshly made model does not show yet (see `State::fresh`).
    pub(super) fn hidden(&self, model: &Name, file: &str) -> bool {
        self.fresh.get(model).is_some_and(|f| self.clock.since(f.at) < super::FRESH_WINDOW && !f.written.contains(file))
    }

    /// What the mount shows for a model: its work in progress, else its manifest in the store.
    pub(super) fn view(&self, model: &Name) -> Option<&Arc<Model>> {
        self.work.get(model).or_else(|| self.index.get(model))
    }

    pub(super) fn is_published(&self, model: &Name) -> bool {
        self.index.get(model).is_some()
    }

    /// The files of a model folder as the mount names them: pinned names win (see
    /// `State::pins`), and a draft has no `manifest.json` (nothing is in the store) unless
    /// one written into it waits for its blobs.
    pub(super) fn files_of(&self, model: &Name) -> Vec<LayerFile> {
        let mut files = Vec::new();
        if let Some(m) = self.view(model) {
            files = layout::files(&m.manifest);
            if let Some(pins) = self.pins.get(model)
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
            // A manifest.json written into a draft shows as written while it waits for
            // its blobs (copy tools set its mode and times by path after closing it).
            if self.waiting.contains_key(model) {
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
        if name != layout::MANIFEST_FILE || self.is_published(model) {
            return None;
        }
        self.waiting.get(model)
    }

    pub(super) fn model_exists(&self, n: &Name) -> bool {
        self.index.get(n).is_some() || self.pending_models.contains(n)
    }

    /// Does a prefix directory exist at `path` (it holds something, or was made by mkdir)?
    pub(super) fn dir_exists(&self, path: &str) -> bool {
        if path.is_empty() {
            return true;
        }
        if self.pending_dirs.contains(path) {
            return true;
        }
        let Some(s) = scope(path) else { return false };
        if s.models.iter().any(|(h, ns)| {
            self.index.models_in(h, ns).next().is_some()
                || self.pending_models.iter().any(|n| &n.host == h && &n.namespace == ns)
        }) {
            return true;
        }
        if let Some(h) = &s.namespaces_of
            && (self.index.has_host(h) || self.pending_models.iter().any(|n| &n.host == h))
        {
            return true;
        }
        let prefix = format!("{path}/");
        self.pending_dirs.range(prefix.clone()..).next().is_some_and(|p| p.starts_with(&prefix))
    }

    /// Look a name up in a prefix directory, without listing it.
    pub(super) fn lookup_in_dir(&self, path: &str, name: &str) -> Option<Node> {
        let s = scope(path)?;
        let child = join(path, name);
        let is_host_here = s.hosts && name.contains(':') && (self.index.has_host(name) || self.dir_has_pending(&child));
        // A draft with a name that is not a model name (`New Folder`, `x:latest (copy)`).
        for (h, ns) in &s.models {
            let d = Name::draft(h, ns, name);
            if self.pending_models.contains(&d) {
                return Some(Node::Model(d));
            }
        }
        if name.contains(':') && !is_host_here {
            for hn in &s.models {
                if let Some(n) = model_name_in(name, hn)
                    && self.model_exists(&n)
                {
                    return Some(Node::Model(n));
                }
            }
            return None;
        }
        if scope(&child).is_some() && self.dir_exists(&child) {
            return Some(Node::Dir(child));
        }
        // A colon-less name that is not a prefix means NAME:latest.
        for (h, ns) in &s.models {
            if let Ok(n) = Name::from_parts(h, ns, name, crate::name::DEFAULT_TAG)
                && self.model_exists(&n)
            {
                return Some(Node::Model(n));
            }
        }
        None
    }

    fn dir_has_pending(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.pending_dirs.contains(path)
            || self.pending_dirs.range(prefix.clone()..).next().is_some_and(|p| p.starts_with(&prefix))
    }

    /// Every entry of a prefix directory, sorted by name.
    pub(super) fn dir_children(&self, path: &str) -> BTreeMap<String, Node> {
        let mut out = BTreeMap::new();
        let Some(s) = scope(path) else { return out };
        for (h, ns) in &s.models {
            for m in self.index.models_in(h, ns) {
                out.insert(format!("{}:{}", m.name.model, m.name.tag), Node::Model(m.name.clone()));
            }
            for n in self.pending_models.iter().filter(|n| &n.host == h && &n.namespace == ns) {
                out.insert(n.entry(), Node::Model(n.clone()));
            }
        }
        if let Some(h) = &s.namespaces_of {
            let pending_ns = self.pending_models.iter().filter(|n| &n.host == h).map(|n| &n.namespace);
            for ns in self.index.namespaces_of(h).chain(pending_ns) {
                if s.hide_library && ns == DEFAULT_NAMESPACE {
                    continue;
                }
                out.insert(ns.clone(), Node::Dir(join(path, ns)));
            }
        }
        if s.hosts {
            let pending_hosts = self.pending_models.iter().map(|n| &n.host);
            for h in self.index.hosts().chain(pending_hosts) {
                if h != DEFAULT_HOST {
                    out.insert(h.clone(), Node::Dir(h.clone()));
                }
            }
        }
        let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
        for p in self.pending_dirs.range(prefix.clone()..).take_while(|p| p.starts_with(&prefix)) {
            let rest = &p[prefix.len()..];
            let first = rest.split('/').next().unwrap_or(rest);
            if !first.is_empty() {
                out.insert(first.to_string(), Node::Dir(join(path, first)));
            }
        }
        out
    }

    /// Entries of a folder inside a model (`sub` = "" for the model folder itself).
    pub(super) fn model_children(&self, model: &Name, sub: &str) -> Vec<(String, Node)> {
        let mut out: Vec<(String, Node)> = Vec::new();
        let prefix = if sub.is_empty() { String::new() } else { format!("{sub}/") };
        let push = |out: &mut Vec<(String, Node)>, name: String, node: Node| {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, node));
            }
        };
        {
            for f in self.files_of(model) {
                if self.hidden(model, &f.name) {
                    continue;
                }
                let Some(rest) = f.name.strip_prefix(&prefix) else {
                    continue;
                };
                match rest.split_once('/') {
                    Some((dir, _)) => {
                        push(&mut out, dir.to_string(), Node::Sub(model.clone(), format!("{prefix}{dir}")))
                    }
                    None => push(&mut out, rest.to_string(), self.file_node(model, &f)),
                }
            }
        }
        for (m, path) in &self.pending_subs {
            if m != model {
                continue;
            }
            if let Some(rest) = path.strip_prefix(&prefix) {
                let first = rest.split('/').next().unwrap_or(rest);
                if !first.is_empty() {
                    push(&mut out, first.to_string(), Node::Sub(model.clone(), format!("{prefix}{first}")));
                }
            }
        }
        for (m, name) in self.scratch.keys().chain(self.creating.iter()).chain(self.staged.keys()) {
            if m == model
                && let Some(rest) = name.strip_prefix(&prefix)
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
        let key = (model.clone(), full.clone());
        if self.scratch.contains_key(&key) || self.creating.contains(&key) || self.staged.contains_key(&key) {
            return Some(Node::File(model.clone(), full));
        }
        {
            let files = self.files_of(model);
            if let Some(f) = files.iter().find(|f| f.name == full) {
                if self.hidden(model, &full) {
                    return None;
                }
                return Some(self.file_node(model, f));
            }
            let dir_prefix = format!("{full}/");
            if files.iter().any(|f| f.name.starts_with(&dir_prefix)) {
                return Some(Node::Sub(model.clone(), full));
            }
        }
        let dir_prefix = format!("{full}/");
        if self.pending_subs.iter().any(|(m, p)| m == model && (*p == full || p.starts_with(&dir_prefix))) {
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
