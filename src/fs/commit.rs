//! Commit: a closed file becomes a blob and a layer; a manifest is installed (only a
//! complete model reaches `Store::write_manifest`) or kept as work; prune.

use std::collections::HashSet;
use std::io::BufReader;

use super::edit::*;
use super::txn::Publish;
use super::writer::*;
use super::{Fs, Result, State};
use crate::layout::{CONFIG_FILE, MANIFEST_FILE};
use crate::name::Name;
use crate::store::config;
use crate::store::config::GeneratedConfig;
use crate::store::manifest::{CONFIG_MEDIA_TYPE, LAYER_PREFIX};
use crate::store::{Digest, Layer, Manifest};

impl Fs {
    pub(super) fn commit(&self, w: &mut Writer) -> Result<()> {
        let key = (w.model.clone(), w.file.clone());
        if w.created && !self.lock().is_creating(&w.model, &w.file) {
            w.discard(); // unlinked before close
            return Ok(());
        }
        if w.file == MANIFEST_FILE {
            let bytes = w.read_all(&self.store)?;
            w.discard();
            return self.write_manifest_file(&w.model, bytes);
        }
        if w.file == CONFIG_FILE {
            check_config_json(&w.model, &w.read_all(&self.store)?)?;
        }
        if w.len == 0 && is_weights_name(&w.file) {
            // An empty weights file is no layer (and no blob): nothing to commit yet.
            log::debug!("{} of {} is empty; not a layer", w.file, w.model.display_shortest());
            return Ok(());
        }
        let (d, len, held) = w.finish(&self.store)?;
        if !held {
            // A copy of a file the store only reads from elsewhere (the `.hf` view) brings
            // that file in now, without copying it.
            self.store.bring_in_outside_blob(&d)?;
        }
        let mut st = self.lock();
        st.blob_meta.remove(&d);
        let (model, file) = key;
        if w.staged {
            // rsync's temp file: named and kept (held) until it is renamed onto a layer.
            if !held {
                self.store.hold(&d)?;
            }
            if let Some((old, _)) = st.folder_entry(&model).staged.insert(file, (d, len)) {
                self.store.release(&old);
            }
            return Ok(());
        }
        let res = self.apply_layer(&mut st, &model, &file, d, len);
        if held {
            self.store.release(&d);
        }
        res
    }

    /// Put blob `d` into `model` as file `file`: replace the layer of that name, or add one.
    pub(super) fn apply_layer(&self, st: &mut State, model: &Name, file: &str, d: Digest, len: u64) -> Result<()> {
        if let Some(wait) = st.folder_mut(model).and_then(|f| f.waiting.as_mut()) {
            // A manifest.json is waiting for its blobs: a file arriving supplies one. The
            // last one installs the manifest; until then each file also shows in the folder
            // under its name (copy tools set its mode and times right after closing it).
            wait.missing.remove(&d);
            if wait.missing.is_empty() {
                return self.try_waiting(st, model);
            }
        }
        let mut e = st.edit(model);
        if e.find(file).is_none() && !(file == CONFIG_FILE || is_layer_name(file)) {
            return Err(einval(format!("{file:?} is not a layer name")));
        }
        let at = st.folder_mut(model).and_then(|f| f.vacated.remove(file));
        if !e.set(file, d, len, at)? && st.work(model).is_none() && st.is_published(model) {
            return Ok(()); // same content: the manifest keeps its bytes and its ID
        }
        self.commit_edit(st, model, e, Publish::IfComplete)
    }

    /// Commit an edit: the names become the folder's stable names, then publish or hold.
    pub(super) fn commit_edit(&self, st: &mut State, model: &Name, e: Edit, publish: Publish) -> Result<()> {
        st.touch(model);
        st.folder_entry(model).pins = Some(e.names);
        self.commit_view(st, model, e.m, publish)
    }

    /// A model needs a config for Ollama to list it: generate one from the GGUF header
    /// (as `ollama create` does) when there is none, or when ours was made before the
    /// weights arrived.
    /// Returns the generated config blob, held (see `Store::ingest_bytes_held`): the caller
    /// releases it once the manifest or the mount's work names it.
    pub(super) fn fill_config(&self, m: &mut Manifest) -> Result<Option<Digest>> {
        let weights = m.layers.iter().find(|l| l.media_type == format!("{LAYER_PREFIX}model")).and_then(Layer::digest);
        // No weights yet (a copy that writes text files first): leave the config empty
        // rather than store a blob that the next file replaces.
        if weights.is_none() {
            return Ok(None);
        }
        let regenerate = match m.config.digest() {
            None => true,
            Some(cd) => {
                weights.is_some()
                    && self
                        .store
                        .read_blob(&cd)
                        .ok()
                        .and_then(|b| config::details(&b).ok())
                        .is_some_and(|d| d.format.is_empty())
            }
        };
        if !regenerate {
            return Ok(None);
        }
        let generated = weights
            .and_then(|d| self.store.open_blob(&d).ok())
            .and_then(|f| crate::gguf::read_header(BufReader::new(f)).ok())
            .map(|h| GeneratedConfig::from_gguf(&h))
            .unwrap_or_else(GeneratedConfig::empty);
        let (d, len) = self.store.ingest_bytes_held(&generated.to_bytes())?;
        m.config = Layer::new(CONFIG_MEDIA_TYPE, d, len);
        Ok(Some(d))
    }

    /// A written manifest.json: validated, then installed byte for byte (a copy keeps the
    /// source's ID), or parked until its missing blobs arrive in the same folder.
    pub(super) fn write_manifest_file(&self, model: &Name, bytes: Vec<u8>) -> Result<()> {
        let mut st = self.lock();
        self.write_manifest_locked(&mut st, model, bytes)
    }

    pub(super) fn write_manifest_locked(&self, st: &mut State, model: &Name, bytes: Vec<u8>) -> Result<()> {
        let missing = self.check_manifest(model, &bytes)?;
        if model.is_draft_only() {
            // A draft that can never be published takes the manifest as its view, byte for
            // byte, so that renaming it to a model name publishes exactly these bytes.
            let m = Manifest::parse(&bytes).map_err(|e| einval(e.to_string()))?;
            st.folder_entry(model).pins = None;
            self.publish_or_hold(st, model, m, bytes, Publish::NeverDraft)?;
            st.now_exactly_its_manifest(model);
            return Ok(());
        }
        if missing.is_empty() {
            st.take_waiting(model);
            self.install(st, model, bytes)?;
            // The whole manifest was replaced: its layers get their natural names.
            if let Some(f) = st.folder_mut(model) {
                f.pins = None;
            }
            st.now_exactly_its_manifest(model);
            return Ok(());
        }
        st.mark_written(model, MANIFEST_FILE);
        log::debug!("manifest.json of {} waits for {} blob(s)", model.display_shortest(), missing.len());
        let at = st.clock.system_now();
        st.folder_entry(model).waiting = Some(WaitingManifest { bytes, missing, at });
        let released = self.sync_holds(st);
        self.prune_unused(st, released);
        Ok(())
    }

    pub(super) fn try_waiting(&self, st: &mut State, model: &Name) -> Result<()> {
        let ready = st.waiting(model).is_some_and(|w| w.missing.is_empty());
        if !ready {
            return Ok(());
        }
        let Some(w) = st.take_waiting(model) else {
            return Ok(());
        };
        self.install(st, model, w.bytes)?;
        if let Some(f) = st.folder_mut(model) {
            f.pins = None;
        }
        Ok(())
    }

    pub(super) fn install_manifest_locked(&self, st: &mut State, model: &Name, bytes: Vec<u8>) -> Result<()> {
        if let Some(d) = self.check_manifest(model, &bytes)?.into_iter().next() {
            return Err(einval(format!("manifest.json references missing blob {d}")));
        }
        self.install(st, model, bytes)
    }

    /// A `manifest.json` given to the mount: strict JSON shape and digests, and every blob
    /// it names that exists has the size it says. Returns the blobs that do not exist yet.
    pub(super) fn check_manifest(&self, model: &Name, bytes: &[u8]) -> Result<HashSet<Digest>> {
        let m = Manifest::parse_strict(bytes)
            .map_err(|e| einval(format!("manifest.json of {}: {e}", model.display_shortest())))?;
        let mut missing = HashSet::new();
        for l in std::iter::once(&m.config).chain(m.layers.iter()) {
            let Some(d) = l.digest() else { continue };
            match std::fs::metadata(self.store.blob_path(&d)) {
                Ok(meta) if meta.len() as i64 == l.size => {}
                Ok(meta) => {
                    return Err(einval(format!(
                        "manifest.json of {}: blob {d} is {} bytes, the manifest says {}",
                        model.display_shortest(),
                        meta.len(),
                        l.size
                    )));
                }
                Err(_) => {
                    missing.insert(d);
                }
            }
        }
        Ok(missing)
    }
}
