//! What `ollama list` and `/api/tags` show: the models whose config blob decodes, with
//! the details taken from it, newest first.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Manifest;
use super::Store;
use super::config::{self, Details};
use super::index::Model;

/// A model as the list shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub model: Arc<Model>,
    pub details: Details,
}

/// Ollama leaves a model out of the list when its config blob is missing, unreadable or
/// not JSON. Returns the listable models (newest first by whole seconds, then by name, so
/// the order is stable) and one warning per model left out.
pub fn listable(store: &Store, models: impl IntoIterator<Item = Arc<Model>>) -> (Vec<Listed>, Vec<String>) {
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for m in models {
        match details_of(store, &m.manifest) {
            Ok(details) => out.push(Listed { model: m, details }),
            Err(e) => warnings.push(format!("skipping {}: {e}", m.name.display_shortest())),
        }
    }
    out.sort_by(|a, b| {
        let (a, b) = (&a.model, &b.model);
        whole_secs(b.mtime())
            .cmp(&whole_secs(a.mtime()))
            .then_with(|| a.name.display_shortest().cmp(&b.name.display_shortest()))
    });
    (out, warnings)
}

/// The details block: the config blob's fields plus `parent_model` (the `from` of the
/// model layer).
pub fn details_of(store: &Store, m: &Manifest) -> Result<Details, String> {
    let d = m.config.digest().ok_or_else(|| "config digest is invalid".to_string())?;
    let bytes = store.read_blob(&d).map_err(|e| format!("config blob: {e}"))?;
    let mut details = config::details(&bytes).map_err(|e| format!("config blob: {e}"))?;
    details.parent_model =
        m.layers.iter().find(|l| l.media_type.ends_with(".model")).map(|l| l.from.clone()).unwrap_or_default();
    Ok(details)
}

fn whole_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A time as Go's JSON writes it (RFC 3339 with nanoseconds, local offset).
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Local>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
