//! Where the API finds models and makes changes. `ollamafs serve` uses a [`StoreCatalog`]
//! over the store alone; `ollamafs mount --api` uses the mount's own [`crate::fs::Fs`], so
//! a change made through either side is in the other's index before the call returns.

use std::sync::{Arc, Mutex, MutexGuard};

pub use crate::catalog::Catalog;
use crate::store::index::{Index, Model};
use crate::store::{Result, Store, StoreError};

/// The store on its own, for `ollamafs serve`. Changes made through the API are
/// serialised, so a prune never races a copy that is about to reference a blob.
pub struct StoreCatalog {
    store: Arc<Store>,
    index: Mutex<Index>,
    changes: Mutex<()>,
    no_prune: bool,
}

impl StoreCatalog {
    pub fn new(store: Arc<Store>, no_prune: bool) -> StoreCatalog {
        let index = Index::load(&store);
        StoreCatalog { store, index: Mutex::new(index), changes: Mutex::new(()), no_prune }
    }

    fn changing(&self) -> MutexGuard<'_, ()> {
        crate::sync::lock(&self.changes)
    }
}

impl Catalog for StoreCatalog {
    fn store(&self) -> &Store {
        &self.store
    }

    fn models(&self) -> Vec<Arc<Model>> {
        let mut index = crate::sync::lock(&self.index);
        index.refresh(&self.store);
        index.models().cloned().collect()
    }

    fn copy(&self, source: &str, destination: &str) -> Result<()> {
        let _changing = self.changing();
        let (src, dst) = self.store.resolve_pair(source, destination)?;
        if src == dst {
            return Ok(()); // Ollama: copying a model onto itself is a no-op, even a missing one
        }
        let bytes = self.store.copy_source(&src, source)?;
        let replaced = self.store.read_manifest(&dst).ok().map(|(_, m)| m);
        self.store.write_manifest(&dst, &bytes)?;
        if let (Some(old), false) = (replaced, self.no_prune) {
            self.store.prune(old.digests(), &self.store.digests_in_use());
        }
        Ok(())
    }

    fn put_manifest(&self, name: &crate::name::Name, bytes: Vec<u8>) -> Result<()> {
        let _changing = self.changing();
        let replaced = self.store.read_manifest(name).ok().map(|(_, m)| m);
        self.store.write_manifest(name, &bytes)?;
        if let (Some(old), false) = (replaced, self.no_prune) {
            self.store.prune(old.digests(), &self.store.digests_in_use());
        }
        Ok(())
    }

    fn delete(&self, name: &str) -> Result<()> {
        let _changing = self.changing();
        self.store.delete(name, self.no_prune).map(|_| ())
    }
}

impl From<StoreError> for super::ApiError {
    fn from(e: StoreError) -> Self {
        use StoreError::*;
        let status = match &e {
            InvalidSource(_) | InvalidDestination(_) | InvalidName(_) | Invalid(_) | DigestMismatch { .. } => 400,
            CaseConflict { .. } => 400,
            NotFound(_) => 404,
            Corrupt { .. } | Incomplete { .. } | Io(_) => 500,
        };
        super::ApiError { status, message: e.to_string() }
    }
}
