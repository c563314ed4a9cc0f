//! In-memory index of the store: model → manifest, blob → how many models use it.
//! `refresh` picks up changes another process (a running Ollama) made: it stats every
//! manifest and re-reads only those whose inode, size, mtime or ctime changed.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::manifest::{Digest, Manifest, model_id};
use super::{Stamp, Store};
use crate::name::Name;

#[derive(Debug)]
pub struct Model {
    pub name: Name,
    pub bytes: Arc<[u8]>,
    pub manifest: Manifest,
    /// Ollama's model ID: sha256 of the manifest bytes, 64 hex.
    pub id: String,
    pub stamp: Stamp,
}

impl Model {
    pub fn mtime(&self) -> SystemTime {
        let ns = self.stamp.mtime_ns.max(0) as u128;
        UNIX_EPOCH + Duration::new((ns / 1_000_000_000) as u64, (ns % 1_000_000_000) as u32)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refs {
    /// Model files that show this blob as a shared weights file (its link count).
    pub weights: u32,
    /// References of any kind (layers and configs), for pruning.
    pub any: u32,
}

#[derive(Debug, Default)]
pub struct Index {
    models: BTreeMap<Name, Arc<Model>>,
    refs: HashMap<Digest, Refs>,
    /// The media type a blob is used as (its first use), for the `user.ollama.media_type` xattr.
    media: HashMap<Digest, Arc<str>>,
    hosts: BTreeMap<String, usize>,
    namespaces: BTreeMap<(String, String), usize>,
    /// Manifests that exist but do not parse, with the stamp at which they were read.
    corrupt: BTreeMap<Name, (Stamp, String)>,
    generation: u64,
}

/// What a refresh saw change.
#[derive(Debug, Default)]
pub struct Changes {
    pub added_or_changed: Vec<Name>,
    pub removed: Vec<Name>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added_or_changed.is_empty() && self.removed.is_empty()
    }
}

impl Index {
    pub fn load(store: &Store) -> Index {
        let mut idx = Index::default();
        idx.refresh(store);
        idx
    }

    /// Bumped on every change; lets callers cache derived views.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn refresh(&mut self, store: &Store) -> Changes {
        let (found, _) = store.scan();
        let mut changes = Changes::default();
        let mut seen: std::collections::HashSet<Name> = std::collections::HashSet::with_capacity(found.len());
        for f in found {
            seen.insert(f.name.clone());
            if self.models.get(&f.name).is_some_and(|m| m.stamp == f.stamp) {
                continue;
            }
            if self.corrupt.get(&f.name).is_some_and(|(s, _)| *s == f.stamp) {
                continue;
            }
            let bytes = match fs::read(&f.path) {
                Ok(b) => b,
                Err(e) => {
                    log::warn!("cannot read manifest {}: {e}", f.path.display());
                    continue;
                }
            };
            if self.put(f.name.clone(), bytes, f.stamp) {
                changes.added_or_changed.push(f.name);
            }
        }
        let gone: Vec<Name> = self.models.keys().filter(|n| !seen.contains(*n)).cloned().collect();
        for n in gone {
            self.remove(&n);
            changes.removed.push(n);
        }
        self.corrupt.retain(|n, _| seen.contains(n));
        changes
    }

    /// Record manifest bytes for a name (after our own write, or a re-read). Returns false
    /// when the bytes do not parse; the model is then left out, as Ollama's list does.
    pub fn put(&mut self, name: Name, bytes: Vec<u8>, stamp: Stamp) -> bool {
        let manifest = match Manifest::parse(&bytes) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("skipping model {}: {e}", name.display_shortest());
                self.remove(&name);
                self.corrupt.insert(name, (stamp, e.to_string()));
                return false;
            }
        };
        self.corrupt.remove(&name);
        let id = model_id(&bytes);
        let model = Arc::new(Model { name: name.clone(), bytes: bytes.into(), manifest, id, stamp });
        self.remove(&name);
        self.count(&model.manifest, 1);
        *self.hosts.entry(name.host.clone()).or_default() += 1;
        *self.namespaces.entry((name.host.clone(), name.namespace.clone())).or_default() += 1;
        self.models.insert(name, model);
        self.generation += 1;
        true
    }

    pub fn remove(&mut self, name: &Name) -> Option<Arc<Model>> {
        let m = self.models.remove(name)?;
        self.count(&m.manifest, -1);
        decrement(&mut self.hosts, name.host.clone());
        decrement(&mut self.namespaces, (name.host.clone(), name.namespace.clone()));
        self.generation += 1;
        Some(m)
    }

    fn count(&mut self, m: &Manifest, delta: i32) {
        let mut apply = |d: Digest, weights: bool, media_type: &str| {
            let r = self.refs.entry(d).or_default();
            r.any = r.any.saturating_add_signed(delta);
            if weights {
                r.weights = r.weights.saturating_add_signed(delta);
            }
            if r.any == 0 {
                self.refs.remove(&d);
                self.media.remove(&d);
            } else if delta > 0 {
                self.media.entry(d).or_insert_with(|| Arc::from(media_type));
            }
        };
        if let Some(d) = m.config.digest() {
            apply(d, false, &m.config.media_type);
        }
        for l in &m.layers {
            if let Some(d) = l.digest() {
                apply(d, l.role().is_weights(), &l.media_type);
            }
        }
    }

    /// The stamp at which a manifest was last read, readable or not.
    pub fn known_stamp(&self, name: &Name) -> Option<Stamp> {
        self.models.get(name).map(|m| m.stamp).or_else(|| self.corrupt.get(name).map(|(s, _)| *s))
    }

    pub fn get(&self, name: &Name) -> Option<&Arc<Model>> {
        self.models.get(name)
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    pub fn models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }

    pub fn corrupt(&self) -> impl Iterator<Item = (&Name, &String)> {
        self.corrupt.iter().map(|(n, (_, why))| (n, why))
    }

    pub fn refs(&self, d: &Digest) -> Refs {
        self.refs.get(d).copied().unwrap_or_default()
    }

    pub fn media_type(&self, d: &Digest) -> Option<&str> {
        self.media.get(d).map(|m| &**m)
    }

    pub fn has_host(&self, host: &str) -> bool {
        self.hosts.contains_key(host)
    }

    pub fn has_namespace(&self, host: &str, ns: &str) -> bool {
        self.namespaces.contains_key(&(host.to_string(), ns.to_string()))
    }

    pub fn hosts(&self) -> impl Iterator<Item = &String> {
        self.hosts.keys()
    }

    pub fn namespaces_of<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.namespaces
            .range((host.to_string(), String::new())..)
            .take_while(move |((h, _), _)| h == host)
            .map(|((_, ns), _)| ns)
    }

    /// Models whose host and namespace are exactly these, in name order.
    pub fn models_in<'a>(&'a self, host: &'a str, ns: &'a str) -> impl Iterator<Item = &'a Arc<Model>> + 'a {
        let start = Name { host: host.into(), namespace: ns.into(), model: String::new(), tag: String::new() };
        self.models.range(start..).take_while(move |(n, _)| n.host == host && n.namespace == ns).map(|(_, m)| m)
    }

    /// An existing model whose name equals `name` ignoring case (the exact one first).
    pub fn find_ignore_case(&self, name: &Name) -> Option<&Name> {
        if let Some((n, _)) = self.models.get_key_value(name) {
            return Some(n);
        }
        self.models.keys().find(|n| n.eq_ignore_case(name))
    }
}

fn decrement<K: Ord>(map: &mut BTreeMap<K, usize>, key: K) {
    if let Some(c) = map.get_mut(&key) {
        *c -= 1;
        if *c == 0 {
            map.remove(&key);
        }
    }
}
