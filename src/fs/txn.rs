//! The one transaction path: every change to the store made through the mount (a file's
//! close, a link, a rename, `rm`, the trash, the API in the mount) ends here. A folder's
//! new manifest is checked complete → written atomically → indexed → holds synced →
//! unused blobs pruned → logged; an incomplete one stays in the mount as work (a draft, or
//! a held change while the store keeps the last complete manifest) (docs/SEMANTICS.md,
//! "Transactions"). Blobs that only work uses are held by hard links (`Store::hold`), so
//! no prune can take them.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Fs, Result, State};
use crate::layout::Kind;
use crate::name::Name;
use crate::store::index::Model;
use crate::store::{Digest, Manifest, Stamp, StoreError};

/// What a change may do to a draft.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Publish {
    /// A file was closed, linked or renamed in: a complete draft is published.
    IfComplete,
    /// A file was removed: a draft stays a draft (so `rm` of a model's files in any order
    /// never brings it back into the store).
    NeverDraft,
}

impl State {
    /// How many model folders show blob `d` as a weights file (its link count).
    pub(super) fn weights_links(&self, d: &Digest) -> u32 {
        let ds = d.prefixed();
        let count = |m: &Model| {
            m.manifest
                .layers
                .iter()
                .filter(|l| l.digest == ds && crate::layout::base_name(&l.media_type, &l.name).1 == Kind::Weights)
                .count() as u32
        };
        let mut n = self.index.refs(d).weights;
        for (name, f) in &self.folders {
            let Some(view) = &f.work else { continue };
            if let Some(published) = self.index.get(name) {
                n = n.saturating_sub(count(published));
            }
            n += count(view);
        }
        n
    }

    /// Give a model's layers fixed names (their current ones) before a change that would
    /// renumber them.
    pub(super) fn pin_names(&mut self, model: &Name) {
        if self.folder(model).is_some_and(|f| f.pins.is_some()) {
            return;
        }
        let names: Vec<String> = self
            .all_files_of(model)
            .into_iter()
            .filter_map(|f| match f.source {
                crate::layout::Source::Layer(_) => Some(f.name),
                _ => None,
            })
            .collect();
        if self.view(model).is_some_and(|m| m.manifest.layers.len() == names.len()) {
            self.folder_entry(model).pins = Some(names);
        }
    }

    /// Every blob work in progress needs: drafts, held changes, manifest.json writes
    /// waiting for their blobs.
    fn work_digests(&self) -> HashSet<Digest> {
        let mut out = HashSet::new();
        for f in self.folders.values() {
            out.extend(f.work.iter().flat_map(|m| m.manifest.digests()));
            if let Some(m) = f.waiting.as_ref().and_then(|w| Manifest::parse(&w.bytes).ok()) {
                out.extend(m.digests());
            }
        }
        out
    }
}

impl Fs {
    /// The folder of `model` should now show manifest `m`: publish it when it is a
    /// complete model, else keep it in the mount as work (draft or held change).
    pub(super) fn commit_view(&self, st: &mut State, model: &Name, mut m: Manifest, publish: Publish) -> Result<()> {
        let published = st.is_published(model);
        // A config is generated (from the GGUF header) for a draft being filled, never
        // for a folder being emptied, and to replace one made before the weights arrived.
        let fill = (!published && publish == Publish::IfComplete) || self.config_is_placeholder(&m);
        let generated = match fill {
            true => self.fill_config(&mut m)?,
            false => None,
        };
        let bytes = m.to_go_json();
        let res = self.publish_or_hold(st, model, m, bytes, publish);
        if let Some(d) = generated {
            self.store.release(&d);
        }
        res
    }

    /// Publish manifest `m` (as exactly `bytes`) when it is complete and may be, else keep
    /// it as the folder's work.
    pub(super) fn publish_or_hold(
        &self,
        st: &mut State,
        model: &Name,
        m: Manifest,
        bytes: Vec<u8>,
        publish: Publish,
    ) -> Result<()> {
        let published = st.is_published(model);
        let may_publish = (published || publish == Publish::IfComplete) && !model.is_draft_only();
        if may_publish {
            let unchanged = st.index.get(model).is_some_and(|o| *o.bytes == *bytes);
            // The store checks completeness itself, under its write lock, as it writes: one
            // check, and an incomplete manifest is kept here as work instead of failing.
            let outcome = if unchanged {
                self.store.check_complete(&m).map_err(|why| why.0)
            } else {
                match self.store.write_manifest(model, &bytes) {
                    Ok(()) => Ok(()),
                    Err(StoreError::Incomplete { why, .. }) => Err(why),
                    Err(e) => return Err(e.into()),
                }
            };
            match outcome {
                // Back to exactly what the store has: the held change is over.
                Ok(()) if unchanged => {
                    st.set_work(model, None);
                    let released = self.sync_holds(st);
                    self.prune_unused(st, released);
                    return Ok(());
                }
                Ok(()) => return self.installed(st, model, bytes),
                Err(why) => {
                    let what = if published { "held; the store keeps its last complete version" } else { "a draft" };
                    log::debug!("{} is {what}: {why}", model.display_shortest());
                }
            }
        }
        let view = Model {
            name: model.clone(),
            id: crate::store::manifest::model_id(&bytes),
            manifest: m,
            bytes: bytes.into(),
            stamp: Stamp::default(),
        };
        st.set_work(model, Some(Arc::new(view)));
        let released = self.sync_holds(st);
        self.prune_unused(st, released);
        Ok(())
    }

    /// A config made before the weights arrived (empty format) is regenerated.
    fn config_is_placeholder(&self, m: &Manifest) -> bool {
        m.config
            .digest()
            .and_then(|cd| self.store.read_blob(&cd).ok())
            .and_then(|b| crate::store::config::details(&b).ok())
            .is_some_and(|d| d.format.is_empty())
    }

    /// Make the hard-link holds match what work in progress uses. Returns the blobs no
    /// longer held, as prune candidates.
    pub(super) fn sync_holds(&self, st: &mut State) -> Vec<Digest> {
        let want = st.work_digests();
        for d in want.difference(&st.holding.clone()) {
            match self.store.hold(d) {
                Ok(()) => {
                    st.holding.insert(*d);
                }
                Err(e) => log::debug!("blob {d} not held ({e}); it is not in the store yet"),
            }
        }
        let gone: Vec<Digest> = st.holding.difference(&want).copied().collect();
        for d in &gone {
            st.holding.remove(d);
            self.store.release(d);
        }
        gone
    }

    /// `rm manifest.json`: the model leaves the store; its folder stays as a draft with
    /// its remaining files (held), so deleting them in any order succeeds.
    pub(super) fn unpublish(&self, st: &mut State, model: &Name) -> Result<()> {
        if !st.is_published(model) && st.take_waiting(model).is_some() {
            // A draft's waiting manifest.json: removing it stops the wait.
            st.mark_gone(model, crate::layout::MANIFEST_FILE);
            let released = self.sync_holds(st);
            self.prune_unused(st, released);
            return Ok(());
        }
        let Some(view) = st.view(model).cloned() else {
            return Err(super::enoent(model));
        };
        st.take_waiting(model);
        if !st.is_published(model) {
            return Err(super::enoent(model)); // a draft has no manifest.json to remove
        }
        // Hold the folder's remaining files before the prune below can see them unused.
        st.pin_names(model);
        st.set_work(model, Some(view));
        st.mark_gone(model, crate::layout::MANIFEST_FILE);
        self.sync_holds(st);
        let candidates = self.leave_store(st, model, "left the store (manifest.json removed in the mount)")?;
        self.prune_unused(st, candidates);
        Ok(())
    }

    /// A model's manifest leaves the store and the index (logged `what`). Returns the
    /// blobs the old manifest used, as prune candidates. The folder is left to the caller.
    pub(super) fn leave_store(&self, st: &mut State, model: &Name, what: &str) -> Result<Vec<Digest>> {
        let Some(old) = st.index.get(model).cloned() else { return Ok(Vec::new()) };
        let removed = self.store.remove_manifest(model)?;
        st.index.remove(model);
        log::info!("{} {what}", model.display_shortest());
        let mut candidates: Vec<Digest> = old.manifest.digests().collect();
        candidates.extend(removed.iter().flat_map(|m| m.digests()));
        Ok(candidates)
    }

    /// Write a model's manifest (only a complete model passes `Store::write_manifest`),
    /// update the index, end any work on it, prune what the old version alone used.
    pub(super) fn install(&self, st: &mut State, model: &Name, bytes: Vec<u8>) -> Result<()> {
        let old = st.index.get(model).cloned();
        if old.as_ref().is_some_and(|o| *o.bytes == *bytes) && st.work(model).is_none() {
            return Ok(());
        }
        self.store.write_manifest(model, &bytes)?;
        self.installed(st, model, bytes)
    }

    /// The index and holds after the store took `bytes` as `model`'s manifest.
    pub(super) fn installed(&self, st: &mut State, model: &Name, bytes: Vec<u8>) -> Result<()> {
        let old = st.index.get(model).cloned();
        let stamp = std::fs::metadata(self.store.manifest_path(model)).map(|m| Stamp::of(&m)).unwrap_or_default();
        let id = crate::store::manifest::model_id(&bytes);
        st.index.put(model.clone(), bytes, stamp);
        st.touch(model);
        let mut candidates: Vec<Digest> = st
            .folder_mut(model)
            .and_then(|f| f.work.take())
            .map(|w| w.manifest.digests().collect())
            .unwrap_or_default();
        candidates.extend(self.sync_holds(st));
        let what = if old.is_some() { "replaced" } else { "published" };
        log::info!("{what} {} (id {}) {}", model.display_shortest(), &id[..12.min(id.len())], st.origin);
        if let Some(old) = old {
            candidates.extend(old.manifest.digests());
        }
        self.prune_unused(st, candidates);
        Ok(())
    }

    /// Ollama's rule: remove blobs that no readable manifest references any more. Blobs
    /// that work in progress holds are kept; so are blobs a manifest written by another
    /// process uses that this mount has not read yet (checked on disk, under the store's
    /// write lock, so two ollamafs processes never prune each other's blobs).
    /// Blobs that manifests on disk this mount has not read yet use (another process wrote
    /// them). Called under the store's write lock.
    fn digests_of_unseen_manifests(&self, st: &State) -> HashSet<Digest> {
        let (found, _) = self.store.scan();
        let mut elsewhere = HashSet::new();
        for f in found {
            if st.index.known_stamp(&f.name) != Some(f.stamp)
                && let Ok(bytes) = std::fs::read(&f.path)
                && let Ok(m) = Manifest::parse(&bytes)
            {
                elsewhere.extend(m.digests());
            }
        }
        elsewhere
    }

    /// Blob `d`, which only this mount's one hold keeps (rsync's finished temp file), leaves
    /// `blobs/` for `to`, where it becomes a private file: no data copied. False, and
    /// nothing done, when anything else may use it (the caller then copies it).
    pub(super) fn take_blob(&self, st: &mut State, d: &Digest, to: &std::path::Path) -> bool {
        if st.index.refs(d).any > 0 || st.holding.contains(d) {
            return false;
        }
        let _lock = self.store.lock_writes();
        let elsewhere = self.digests_of_unseen_manifests(st);
        match self.store.take_blob_locked(d, to, &elsewhere) {
            Ok(taken) => {
                st.blob_meta.remove(d);
                taken
            }
            Err(e) => {
                log::debug!("blob {d} stays a blob ({e}); copied instead");
                false
            }
        }
    }

    pub(super) fn prune_unused(&self, st: &mut State, candidates: Vec<Digest>) {
        if self.opts.no_prune {
            return;
        }
        let mut unused: Vec<Digest> =
            candidates.into_iter().filter(|d| st.index.refs(d).any == 0 && !st.holding.contains(d)).collect();
        unused.sort();
        unused.dedup();
        if unused.is_empty() {
            return;
        }
        let _lock = self.store.lock_writes();
        let elsewhere = self.digests_of_unseen_manifests(st);
        for d in self.store.prune_locked(unused, &elsewhere) {
            st.blob_meta.remove(&d);
            log::info!("pruned unused blob {d}");
        }
    }

    /// A model leaves the store and its folder leaves the mount (the API's delete, `rmdir`
    /// of a folder whose files are all gone, the trash once its folder is built there).
    pub(super) fn delete_model(&self, st: &mut State, model: &Name, what: &str) -> Result<()> {
        let mut candidates = self.leave_store(st, model, what)?;
        self.forget_model_folder(st, model);
        candidates.extend(self.sync_holds(st));
        self.prune_unused(st, candidates);
        Ok(())
    }
}
