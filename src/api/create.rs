//! `POST /api/create`: a model from an existing one, uploaded blobs or both, with new text
//! layers and parameters (Ollama's request and status objects). Quantizing needs a runtime
//! and is refused.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::ApiError;
use super::models::parse_body;
use crate::catalog::Catalog;
use crate::name::Name;
use crate::store::create::CreateSpec;
use crate::store::{Digest, StoreError};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateRequest {
    pub model: String,
    /// Deprecated spelling of `model`.
    pub name: String,
    pub from: String,
    pub files: BTreeMap<String, String>,
    pub adapters: BTreeMap<String, String>,
    pub template: Option<String>,
    pub system: Option<String>,
    /// A string or a list of strings.
    pub license: Option<Value>,
    pub parameters: Option<serde_json::Map<String, Value>>,
    pub messages: Option<Vec<Value>>,
    pub stream: Option<bool>,
    pub quantize: Option<String>,
    /// Pre-0.5 clients sent a Modelfile here; that form is gone from Ollama too.
    pub modelfile: Option<String>,
}

impl CreateRequest {
    pub fn streams(&self) -> bool {
        self.stream.unwrap_or(true)
    }
}

fn digest(s: &str) -> Result<Digest, ApiError> {
    Digest::parse(s).ok_or_else(|| ApiError::bad_request(format!("invalid digest format: {s:?}")))
}

/// Do the work; returns the status objects in order (the last is `success`).
pub fn create(cat: &dyn Catalog, body: &[u8]) -> Result<(bool, Vec<Value>), ApiError> {
    let r: CreateRequest = parse_body(body)?;
    let raw = if r.model.is_empty() { r.name.clone() } else { r.model.clone() };
    let name = Name::parse(&raw).map_err(|_| ApiError::bad_request("invalid model name"))?;
    if r.quantize.as_deref().is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::bad_request(
            "quantization is not supported: ollamafs manages models and does not run them (quantize with Ollama)",
        ));
    }
    if r.modelfile.is_some() && r.from.is_empty() && r.files.is_empty() {
        return Err(ApiError::bad_request(
            "the 'modelfile' field is not supported; send 'from', 'files', 'system', … (as Ollama 0.5+)",
        ));
    }
    cat.check_writable()?;
    let streams = r.streams();
    let license = match r.license.clone() {
        None => None,
        Some(Value::String(s)) => Some(vec![s]),
        Some(Value::Array(a)) => Some(
            a.into_iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| ApiError::bad_request("license must be a string or a list of strings"))
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(ApiError::bad_request("license must be a string or a list of strings")),
    };
    let store = cat.store();
    let mut files = Vec::new();
    for d in r.files.values() {
        let d = digest(d)?;
        if !store.blob_path(&d).exists() {
            return Err(ApiError::bad_request(format!(
                "blob {} not found: upload it with /api/blobs first",
                d.prefixed()
            )));
        }
        files.push(d);
    }
    let adapters = r.adapters.values().map(|d| digest(d)).collect::<Result<Vec<_>, _>>()?;
    let spec = CreateSpec {
        from: (!r.from.is_empty()).then(|| r.from.clone()),
        files,
        adapters,
        template: r.template.clone(),
        system: r.system.clone(),
        license,
        parameters: r.parameters.clone(),
        messages: r.messages.clone(),
    };
    let mut events = vec![serde_json::json!({"status": "gathering model components"})];
    let bytes = store.create_manifest(&spec, &mut |s| events.push(serde_json::json!({ "status": s }))).map_err(
        |e| match e {
            StoreError::NotFound(m) => ApiError::not_found(format!("model '{m}' not found")),
            e => ApiError::bad_request(e.to_string()),
        },
    )?;
    events.push(serde_json::json!({"status": "writing manifest"}));
    cat.put_manifest(&store.spelling_on_disk(&name), bytes)?;
    events.push(serde_json::json!({"status": "success"}));
    Ok((streams, events))
}
