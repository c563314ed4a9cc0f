//! File names and the edit of a model folder's manifest: which names are layers, and
//! `Edit`, the change being made to what a folder shows, keeping each layer's name.

use super::{FsError, Result, State};
use crate::layout::{self, CONFIG_FILE, Kind, MANIFEST_FILE, Source};
use crate::name::Name;
use crate::store::manifest::{CONFIG_MEDIA_TYPE, LAYER_PREFIX};
use crate::store::{Digest, Layer, Manifest};

/// Is `name` (relative to the model folder) a file that becomes part of the manifest?
pub fn is_layer_name(name: &str) -> bool {
    name == CONFIG_FILE
        || name == MANIFEST_FILE
        || layout::media_type_for(name).is_some()
        || name
            .strip_prefix("files/")
            .is_some_and(|r| !r.is_empty() && !r.split('/').any(|p| p.is_empty() || p.starts_with('.')))
}

/// A copy tool's temp file for a layer: rsync writes `.model.gguf.Ab12Cd` (mkstemp) and
/// renames it onto `model.gguf` when done.
pub(crate) fn is_staging_name(full: &str) -> bool {
    let (dir, last) = full.rsplit_once('/').map(|(d, l)| (format!("{d}/"), l)).unwrap_or((String::new(), full));
    let Some(rest) = last.strip_prefix('.') else { return false };
    let Some((target, suffix)) = rest.rsplit_once('.') else { return false };
    suffix.len() >= 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) && is_layer_name(&format!("{dir}{target}"))
}

/// Is a file of this name a weights layer (`model.gguf`, `adapter-2.gguf`, `files/x.weight`)?
pub(super) fn is_weights_name(name: &str) -> bool {
    match layout::media_type_for(name) {
        Some((_, kind)) => kind == Kind::Weights,
        None => name.starts_with("files/") && !name.ends_with(".json"),
    }
}

pub(super) fn erofs() -> FsError {
    FsError::new(libc::EROFS, "read-only mount")
}

pub(super) fn einval(why: impl Into<String>) -> FsError {
    FsError::new(libc::EINVAL, why)
}

pub(super) fn empty_config() -> Layer {
    Layer { media_type: String::new(), digest: String::new(), size: 0, from: String::new(), name: String::new() }
}

impl State {
    /// Start editing the manifest a model folder shows, with its layers' current names.
    pub(super) fn edit(&self, model: &Name) -> Edit {
        let m = self.view(model).map(|m| m.manifest.clone()).unwrap_or_else(|| Manifest::new(empty_config(), vec![]));
        let names = self
            .all_files_of(model)
            .into_iter()
            .filter(|f| matches!(f.source, Source::Layer(_)))
            .map(|f| f.name)
            .collect::<Vec<_>>();
        let names = if names.len() == m.layers.len() {
            names
        } else {
            layout::files(&m).into_iter().filter(|f| matches!(f.source, Source::Layer(_))).map(|f| f.name).collect()
        };
        Edit { m, names }
    }
}

/// A change being made to the manifest a model folder shows, keeping each layer's file
/// name (names are stable while the mount lives; see `Folder::pins`).
pub(super) struct Edit {
    pub(super) m: Manifest,
    pub(super) names: Vec<String>,
}

impl Edit {
    pub(super) fn find(&self, file: &str) -> Option<Source> {
        if let Some(i) = self.names.iter().position(|n| n == file) {
            return Some(Source::Layer(i));
        }
        (file == CONFIG_FILE && !self.m.config.digest.is_empty()).then_some(Source::Config)
    }

    /// The blob a file shows.
    pub(super) fn blob(&self, file: &str) -> Option<(Digest, u64)> {
        let l = match self.find(file)? {
            Source::Layer(i) => &self.m.layers[i],
            Source::Config => &self.m.config,
            Source::Manifest => return None,
        };
        Some((l.digest()?, l.size.max(0) as u64))
    }

    /// Remove a file; returns the layer position it had.
    pub(super) fn remove(&mut self, file: &str) -> Option<usize> {
        match self.find(file)? {
            Source::Layer(i) => {
                self.m.layers.remove(i);
                self.names.remove(i);
                Some(i)
            }
            Source::Config => {
                self.m.config = empty_config();
                None
            }
            Source::Manifest => None,
        }
    }

    /// Set file `file` to blob `d`: replace the layer of that name, or add one at `at`.
    /// Returns false when the file already was exactly that blob.
    pub(super) fn set(&mut self, file: &str, d: Digest, len: u64, at: Option<usize>) -> Result<bool> {
        match self.find(file) {
            Some(Source::Layer(i)) => {
                let l = &mut self.m.layers[i];
                if l.digest() == Some(d) && l.size == len as i64 {
                    return Ok(false);
                }
                l.digest = d.prefixed();
                l.size = len as i64;
            }
            _ if file == CONFIG_FILE => {
                if self.m.config.digest() == Some(d) && self.m.config.size == len as i64 {
                    return Ok(false);
                }
                self.m.config = Layer::new(CONFIG_MEDIA_TYPE, d, len);
            }
            _ => {
                let layer = match (layout::media_type_for(file), file.strip_prefix("files/")) {
                    (Some((mt, _)), _) => Layer::new(&mt, d, len),
                    (None, Some(rest)) => {
                        let short = if rest.ends_with(".json") { "json" } else { "tensor" };
                        let mut l = Layer::new(&format!("{LAYER_PREFIX}{short}"), d, len);
                        l.name = rest.to_string();
                        l
                    }
                    _ => return Err(einval(format!("{file:?} is not a layer name"))),
                };
                let at = at.unwrap_or(self.m.layers.len()).min(self.m.layers.len());
                self.m.layers.insert(at, layer);
                self.names.insert(at, file.to_string());
            }
        }
        Ok(true)
    }
}

/// Ollama hides a model whose config does not decode: only a JSON object is accepted.
pub(super) fn check_config_json(model: &Name, bytes: &[u8]) -> Result<()> {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
        .map(|_| ())
        .map_err(|e| einval(format!("config.json of {} is not a JSON object: {e}", model.display_shortest())))
}

/// Names longer than ext4 allows are refused as ext4 refuses them.
pub(super) fn check_name_length(name: &str) -> Result<()> {
    if name.len() > 255 {
        return Err(FsError::new(libc::ENAMETOOLONG, format!("name of {} bytes (at most 255)", name.len())));
    }
    Ok(())
}
