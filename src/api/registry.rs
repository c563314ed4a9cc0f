//! `POST /api/pull` and `POST /api/push`: the same work as `ollamafs pull`/`push`, with
//! Ollama's progress objects (one JSON object a line, or the last one with `stream: false`).

use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::models::parse_body;
use crate::catalog::Catalog;
use crate::name::Name;
use crate::registry::{self, Progress};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TransferRequest {
    pub model: String,
    /// Deprecated spelling of `model`.
    pub name: String,
    pub insecure: bool,
    pub stream: Option<bool>,
}

/// Pull (`pull` true) or push; returns whether to stream and the status objects.
pub fn transfer(cat: &dyn Catalog, body: &[u8], pull: bool) -> Result<(bool, Vec<Value>), ApiError> {
    let r: TransferRequest = parse_body(body)?;
    let raw = if r.model.is_empty() { r.name.clone() } else { r.model.clone() };
    let name = Name::parse(&raw).map_err(|_| ApiError::bad_request("invalid model name"))?;
    cat.check_writable()?;
    let store = cat.store();
    let mut events = Vec::new();
    let verb = if pull { "pulling" } else { "pushing" };
    let mut progress = |p: Progress| match p {
        Progress::Status(s) => events.push(json!({ "status": s })),
        Progress::Blob(d, completed, total) => events.push(json!({
            "status": format!("{verb} {}", &d.hex()[..12]),
            "digest": d.prefixed(),
            "total": total,
            "completed": completed,
        })),
        Progress::Exists(d, total) => events.push(json!({
            "status": format!("{verb} {}", &d.hex()[..12]),
            "digest": d.prefixed(),
            "total": total,
            "completed": total,
        })),
    };
    let res = if pull {
        registry::pull(store, &name, r.insecure, &mut progress, &mut |n, b| cat.put_manifest(n, b))
    } else {
        let name = store.resolve(&raw).map_err(|_| ApiError::not_found(format!("model '{raw}' not found")))?;
        registry::push(store, &name, r.insecure, &mut progress)
    };
    res.map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((r.stream.unwrap_or(true), events))
}
