//! The mount as the API's catalog (`ollamafs mount --api`): copies and deletes made over
//! HTTP go through the same index, locks and prune rule as changes made with `cp` and
//! `rm` in the mount, so each side sees the other's change before the call returns.

use std::io;
use std::sync::Arc;

use super::{Fs, FsError};
use crate::catalog::Catalog;
use crate::store::index::Model;
use crate::store::{self, Digest, Store, StoreError};

fn to_store(e: FsError) -> StoreError {
    if e.errno == libc::ENOENT {
        return StoreError::NotFound(e.why);
    }
    StoreError::Io(io::Error::new(io::Error::from_raw_os_error(e.errno).kind(), e.why))
}

impl Catalog for Fs {
    fn store(&self) -> &Store {
        &self.store
    }

    /// The mount's index is kept current by inotify and by its own changes.
    fn models(&self) -> Vec<Arc<Model>> {
        self.lock().index.models().cloned().collect()
    }

    fn copy(&self, source: &str, destination: &str) -> store::Result<()> {
        self.check_writable()?;
        let (src, dst) = self.store.resolve_pair(source, destination)?;
        if src == dst {
            return Ok(());
        }
        let bytes = self.store.copy_source(&src, source)?;
        let mut st = self.lock();
        // A folder being filled under that name gives way to the API's copy.
        if let Some(f) = st.folder_mut(&dst) {
            f.waiting = None;
            f.written = None;
        }
        st.origin = super::Origin::Api;
        let res = self.install(&mut st, &dst, bytes).map_err(to_store);
        st.origin = super::Origin::Mount;
        res
    }

    fn put_manifest(&self, name: &crate::name::Name, bytes: Vec<u8>) -> store::Result<()> {
        self.check_writable()?;
        let mut st = self.lock();
        if let Some(f) = st.folder_mut(name) {
            f.waiting = None;
            f.written = None;
        }
        st.origin = super::Origin::Api;
        let res = self.install(&mut st, name, bytes).map_err(to_store);
        st.origin = super::Origin::Mount;
        res?;
        if let Some(f) = st.folder_mut(name) {
            f.pins = None;
        }
        Ok(())
    }

    fn delete(&self, raw: &str) -> store::Result<()> {
        self.check_writable()?;
        let name = self.store.resolve_spelling(raw)?;
        let mut st = self.lock();
        let res = if st.index.get(&name).is_some() {
            self.delete_model(&mut st, &name, "deleted over the API").map_err(to_store)
        } else {
            // A manifest the index does not hold (it does not parse): removed, its blobs kept.
            match self.store.remove_manifest(&name) {
                Ok(_) => Ok(()),
                Err(StoreError::NotFound(_)) => Err(StoreError::NotFound(raw.into())),
                Err(e) => Err(e),
            }
        };
        // The kernel did not make this change: tell it to forget the model's folder now
        // rather than when its entry cache expires.
        let gone = if res.is_ok() { self.entries_of_removed(&st, &name) } else { Vec::new() };
        drop(st);
        self.invalidate_entries(&gone);
        res
    }

    fn check_writable(&self) -> store::Result<()> {
        self.refuse_if_read_only().map_err(to_store)
    }

    fn blob_added(&self, digest: &Digest) {
        self.lock().blob_meta.remove(digest);
    }
}
