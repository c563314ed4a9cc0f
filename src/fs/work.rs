//! Models are transactions: the mount shows work in progress, the store only ever holds
//! complete models (docs/SEMANTICS.md, "Transactions").
//!
//! Every change to a model folder produces the manifest the folder should now show. If that
//! manifest is a complete model (`Store::check_complete`) it is published by one atomic
//! manifest write; otherwise it stays in the mount as *work*: a draft (nothing in the store)
//! or a held change (the store keeps the last complete manifest, and its blobs). Blobs that
//! only work uses are held by hard links (`Store::hold`), so no prune can take them.

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
        for (name, view) in &self.work {
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
        if self.pins.contains_key(model) {
            return;
        }
        let names: Vec<String> = self
            .files_of(model)
            .into_iter()
            .filter_map(|f| match f.source {
                crate::layout::Source::Layer(_) => Some(f.name),
                _ => None,
            })
            .collect();
        if self.view(model).is_some_and(|m| m.manifest.layers.len() == names.len()) {
            self.pins.insert(model.clone(), names);
        }
    }

    /// Every blob work in progress needs: drafts, held changes, manifest.json writes
    /// waiting for their blobs.
    fn work_digests(&self) -> HashSet<Digest> {
        let mut out: HashSet<Digest> = self.work.values().flat_map(|m| m.manifest.digests()).collect();
        for w in self.waiting.values() {
            if let Ok(m) = Manifest::parse(&w.bytes) {
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
                    st.work.remove(model);
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
        st.work.insert(model.clone(), Arc::new(view));
        if !published {
            st.pending_models.insert(model.clone());
        }
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
        if !st.is_published(model) && st.waiting.remove(model).is_some() {
            // A draft's waiting manifest.json: removing it stops the wait.
            let released = self.sync_holds(st);
            self.prune_unused(st, released);
            return Ok(());
        }
        let Some(view) = st.view(model).cloned() else {
            return Err(super::enoent(model));
        };
        st.waiting.remove(model);
        st.fresh.remove(model);
        let Some(published) = st.index.get(model).cloned() else {
            return Err(super::enoent(model)); // a draft has no manifest.json to remove
        };
        // Hold the folder's remaining files before the prune below can see them unused.
        st.work.insert(model.clone(), view);
        st.pending_models.insert(model.clone());
        st.pin_names(model);
        self.sync_holds(st);
        let removed = self.store.remove_manifest(model)?;
        st.index.remove(model);
        let mut candidates: Vec<Digest> = published.manifest.digests().collect();
        if let Some(m) = removed {
            candidates.extend(m.digests());
        }
        self.prune_unused(st, candidates);
        Ok(())
    }

    /// A model folder is gone for good (rmdir of a draft, deleted by another process or
    /// over the API): its scratch files, work and names go with it.
    pub(super) fn forget_model_folder(&self, st: &mut State, model: &Name) {
        let scratch: Vec<(Name, String)> = st.scratch.keys().filter(|(m, _)| m == model).cloned().collect();
        for key in scratch {
            if let Some(s) = st.scratch.remove(&key) {
                let _ = std::fs::remove_file(&s.path);
            }
        }
        let staged: Vec<(Name, String)> = st.staged.keys().filter(|(m, _)| m == model).cloned().collect();
        for key in staged {
            if let Some((d, _)) = st.staged.remove(&key) {
                self.store.release(&d);
            }
        }
        st.work.remove(model);
        st.pins.remove(model);
        st.fresh.remove(model);
        st.waiting.remove(model);
        st.pending_models.remove(model);
        st.pending_subs.retain(|(m, _)| m != model);
        st.vacated.retain(|(m, _), _| m != model);
    }

    /// Move everything the mount keeps about a model folder to a new name (`mv`).
    pub(super) fn move_model_folder(&self, st: &mut State, from: &Name, to: &Name) {
        let scratch: Vec<(Name, String)> = st.scratch.keys().filter(|(m, _)| m == from).cloned().collect();
        for (m, f) in scratch {
            if let Some(s) = st.scratch.remove(&(m.clone(), f.clone())) {
                st.inodes.rekey(&super::Node::File(m, f.clone()), &super::Node::File(to.clone(), f.clone()));
                st.scratch.insert((to.clone(), f), s);
            }
        }
        if let Some(w) = st.work.remove(from) {
            let moved = Model {
                name: to.clone(),
                bytes: w.bytes.clone(),
                manifest: w.manifest.clone(),
                id: w.id.clone(),
                stamp: w.stamp,
            };
            st.work.insert(to.clone(), Arc::new(moved));
        }
        if let Some(p) = st.pins.remove(from) {
            st.pins.insert(to.clone(), p);
        }
        let subs: Vec<(Name, String)> = st.pending_subs.iter().filter(|(m, _)| m == from).cloned().collect();
        for (m, sub) in subs {
            st.pending_subs.remove(&(m, sub.clone()));
            st.pending_subs.insert((to.clone(), sub));
        }
        st.fresh.remove(from);
        st.vacated.retain(|(m, _), _| m != from);
        st.keep_parent_of(from);
    }
}
