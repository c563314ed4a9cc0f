//! Freshness: changes other processes (a running Ollama, another mount) make on disk
//! come into the index; the kernel forgets entries the kernel itself did not remove.

use super::*;

impl Fs {
    /// The kernel entries that showed a model now gone: its folder, and each prefix folder
    /// it left empty. Only entries whose parent the kernel knows can be cached.
    pub(crate) fn entries_of_removed(&self, st: &State, model: &Name) -> Vec<(u64, String)> {
        let display = model.display_shortest();
        let mut out = Vec::new();
        let mut path = display.as_str();
        loop {
            let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
            let parent_ino = match parent {
                "" => Some(ROOT_INO),
                p => st.inodes.by_node.get(&Node::Dir(p.to_string())).copied(),
            };
            if let Some(ino) = parent_ino {
                out.push((ino, name.to_string()));
            }
            if parent.is_empty() || st.dir_exists(parent) {
                break;
            }
            path = parent;
        }
        out
    }

    /// Drop kernel entries; never called with a lock held (the kernel may need a folder
    /// lock that a request waiting for us holds).
    pub(crate) fn invalidate_entries(&self, entries: &[(u64, String)]) {
        if let Some(f) = self.invalidator.get() {
            for (parent, name) in entries {
                f(*parent, name);
            }
        }
    }

    /// Drop a kernel entry once the request that changed it has finished (the kernel holds
    /// the folder's lock until then): a file renamed onto a weights name must come back as
    /// the blob's shared inode, not as the renamed one the kernel kept.
    pub(crate) fn invalidate_entry_later(&self, parent: u64, name: &str) {
        let Some(f) = self.invalidator.get().cloned() else { return };
        let name = name.to_string();
        let spawned = std::thread::Builder::new().name("invalidate".into()).spawn(move || f(parent, &name));
        if let Err(e) = spawned {
            log::debug!("an entry was not invalidated: {e}");
        }
    }

    /// Pick up every change made on disk by other processes (a full stat-only scan).
    pub fn refresh(&self) -> bool {
        let (found, _) = self.store.scan();
        let seen: std::collections::HashSet<&Name> = found.iter().map(|f| &f.name).collect();
        let gone: Vec<Name> =
            self.lock().index.models().map(|m| m.name.clone()).filter(|n| !seen.contains(n)).collect();
        self.apply_found(found, gone)
    }

    /// Models whose manifest path starts with these parts (host, namespace, model).
    pub fn models_under(&self, parts: &[String]) -> Vec<Name> {
        let st = self.lock();
        st.index
            .models()
            .map(|m| &m.name)
            .filter(|n| {
                let p = [&n.host, &n.namespace, &n.model];
                parts.iter().zip(p).all(|(a, b)| a == b)
            })
            .cloned()
            .collect()
    }

    /// Look again at these manifests only (what inotify reported).
    pub fn refresh_names(&self, mut names: Vec<Name>) -> bool {
        names.sort();
        names.dedup();
        let mut found = Vec::new();
        let mut gone = Vec::new();
        for name in names {
            let path = self.store.manifest_path(&name);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {
                    found.push(crate::store::Found { name, path, stamp: crate::store::Stamp::of(&m) })
                }
                _ => gone.push(name),
            }
        }
        self.apply_found(found, gone)
    }

    /// Re-read what changed and drop what is gone. Disk work happens outside the lock; an
    /// entry our own operations changed in the meantime is left alone.
    pub(super) fn apply_found(&self, found: Vec<crate::store::Found>, gone: Vec<Name>) -> bool {
        self.reload_file_names(&mut self.lock());
        let (stale, gone) = {
            let st = self.lock();
            let stale: Vec<_> = found
                .into_iter()
                .filter_map(|f| {
                    let known = st.index.known_stamp(&f.name);
                    let before = st.index.get(&f.name).map(|m| m.stamp);
                    (known != Some(f.stamp)).then_some((f, before))
                })
                .collect();
            let gone: Vec<_> = gone.into_iter().filter_map(|n| st.index.get(&n).map(|m| (n, m.stamp))).collect();
            (stale, gone)
        };
        if stale.is_empty() && gone.is_empty() {
            return false;
        }
        let read: Vec<_> =
            stale.into_iter().filter_map(|(f, before)| std::fs::read(&f.path).ok().map(|b| (f, before, b))).collect();
        let mut st = self.lock();
        let mut changed = false;
        let mut released = Vec::new();
        for (f, before, bytes) in read {
            if st.index.get(&f.name).map(|m| m.stamp) == before {
                // Our own write seen late (inotify lags behind): same bytes, nothing to do
                // but remember the stamp.
                if st.index.get(&f.name).is_some_and(|m| *m.bytes == *bytes) {
                    let stamp = std::fs::metadata(&f.path).map(|m| crate::store::Stamp::of(&m)).unwrap_or(f.stamp);
                    st.index.put(f.name.clone(), bytes, stamp);
                    continue;
                }
                st.index.put(f.name.clone(), bytes, f.stamp);
                // Another process wrote this model: the store's version replaces any work
                // in progress on it here, and the folder shows all of its files.
                if let Some(folder) = st.folder_mut(&f.name) {
                    if folder.work.take().is_some() {
                        log::warn!(
                            "{} changed in the store; its unfinished change in the mount is dropped",
                            f.name.display_shortest()
                        );
                    }
                    folder.pins = None;
                    folder.written = None;
                    folder.waiting = None;
                }
                changed = true;
            }
        }
        let mut vanished = Vec::new();
        for (name, stamp) in gone {
            let still_same = st.index.get(&name).is_some_and(|m| m.stamp == stamp);
            if still_same && !self.store.manifest_path(&name).exists() {
                st.index.remove(&name);
                self.forget_model_folder(&mut st, &name);
                changed = true;
                vanished.extend(self.entries_of_removed(&st, &name));
            }
        }
        released.extend(self.sync_holds(&mut st));
        self.prune_unused(&mut st, released);
        // Another process removed these models: the kernel forgets their folders now, not
        // when its entry cache expires. (Only the watcher calls this, never a FUSE request.)
        drop(st);
        self.invalidate_entries(&vanished);
        changed
    }
}
