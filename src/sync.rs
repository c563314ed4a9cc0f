//! Locks that outlive a panic. A panic in one FUSE request or API call must not wedge the
//! whole mount: the data behind these locks is only changed in steps that each leave it
//! valid, so a poisoned lock is taken over as it is.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, taking it over if a panicking thread poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
