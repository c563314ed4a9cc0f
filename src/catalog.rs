//! What model management needs from a store, whoever keeps it: `ollamafs serve` (the store
//! alone, `api::StoreCatalog`) or the mount (`fs::Fs`, sharing its index). The API is
//! written against this trait, so neither side depends on the other.

use std::sync::Arc;

use crate::store::index::Model;
use crate::store::{Digest, Result, Store};

pub trait Catalog: Send + Sync {
    fn store(&self) -> &Store;
    /// Every readable model, current with the disk.
    fn models(&self) -> Vec<Arc<Model>>;
    /// `ollama cp`: names are checked and resolved as Ollama does; the source missing is
    /// `NotFound(source)`. An existing destination is replaced, and blobs only it used are
    /// pruned (unless pruning is off).
    fn copy(&self, source: &str, destination: &str) -> Result<()>;
    /// `ollama rm`: the manifest goes, then every blob no remaining model uses (unless
    /// pruning is off). A missing model is `NotFound`.
    fn delete(&self, name: &str) -> Result<()>;
    /// Write a complete model's manifest under `name` (created, replacing any), and prune
    /// what the replaced one alone used (unless pruning is off).
    fn put_manifest(&self, name: &crate::name::Name, bytes: Vec<u8>) -> Result<()>;
    /// Refuse changes (a read-only mount).
    fn check_writable(&self) -> Result<()> {
        Ok(())
    }
    /// A blob was just added to `blobs/` (the mount forgets what it knew about it).
    fn blob_added(&self, _digest: &Digest) {}
}
