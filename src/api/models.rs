//! The model-management endpoints as plain functions: request bytes in, a response value
//! or an [`ApiError`] out. No HTTP here, so every rule is unit-tested without a socket.
//! Wording and status codes follow Ollama's own server (`server/routes.go`).

use std::collections::BTreeMap;
use std::io::Read;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiError;
use super::catalog::Catalog;
use crate::gguf;
use crate::name::{self, Name};
use crate::store::config::Details;
use crate::store::{Digest, Manifest, StoreError, listing};

/// Ollama binds JSON bodies with gin: an empty body and bad JSON are both 400.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("missing request body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))
}

// ----- copy -----

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CopyRequest {
    pub source: String,
    pub destination: String,
}

/// `POST /api/copy`: 200 with an empty body; the destination is replaced.
pub fn copy(cat: &dyn Catalog, body: &[u8]) -> Result<(), ApiError> {
    let r: CopyRequest = parse_body(body)?;
    cat.copy(&r.source, &r.destination).map_err(|e| match e {
        // The raw request string, as the contract words it: model 'x' not found.
        StoreError::NotFound(_) => ApiError::not_found(format!("model '{}' not found", r.source)),
        e => e.into(),
    })
}

// ----- delete -----

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteRequest {
    pub model: String,
    /// Deprecated spelling, used when `model` is empty.
    pub name: String,
}

/// `DELETE /api/delete`: 200 with an empty body; unused blobs are pruned.
pub fn delete(cat: &dyn Catalog, body: &[u8]) -> Result<(), ApiError> {
    let r: DeleteRequest = parse_body(body)?;
    let raw = if r.model.is_empty() { r.name } else { r.model };
    let wanted = name::strip_source_suffix(&raw).map_err(ApiError::bad_request)?;
    if Name::parse(&wanted).is_err() {
        return Err(ApiError::bad_request(format!("name {raw:?} is invalid")));
    }
    cat.delete(&wanted).map_err(|e| match e {
        StoreError::NotFound(_) => ApiError::not_found(format!("model '{raw}' not found")),
        e => e.into(),
    })
}

// ----- tags -----

#[derive(Debug, Serialize, Deserialize)]
pub struct ListResponse {
    pub models: Vec<ListModel>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ListModel {
    pub name: String,
    pub model: String,
    pub modified_at: String,
    pub size: i64,
    pub digest: String,
    pub details: Details,
}

/// `GET /api/tags`: every model whose config decodes, newest first.
pub fn tags(cat: &dyn Catalog) -> ListResponse {
    let (rows, warnings) = listing::listable(cat.store(), cat.models());
    for w in warnings {
        log::warn!("{w}");
    }
    let models = rows
        .into_iter()
        .map(|r| {
            let m = &r.model;
            ListModel {
                name: m.name.display_shortest(),
                model: m.name.display_shortest(),
                modified_at: listing::rfc3339(m.mtime()),
                size: m.manifest.total_size(),
                digest: m.id.clone(),
                details: r.details,
            }
        })
        .collect();
    ListResponse { models }
}

// ----- show -----

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ShowRequest {
    pub model: String,
    pub name: String,
    pub system: String,
    pub template: String,
    pub verbose: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ShowResponse {
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub license: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub modelfile: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub parameters: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub template: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub system: String,
    pub details: Details,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub messages: Option<Value>,
    pub model_info: BTreeMap<String, Value>,
    pub capabilities: Vec<String>,
    pub modified_at: String,
}

/// Ollama's template when a model has none.
pub const DEFAULT_TEMPLATE: &str = "{{ .Prompt }}";

/// `POST /api/show`.
pub fn show(cat: &dyn Catalog, body: &[u8]) -> Result<ShowResponse, ApiError> {
    let r: ShowRequest = parse_body(body)?;
    let raw = if r.model.is_empty() { r.name.clone() } else { r.model.clone() };
    let wanted = name::strip_source_suffix(&raw).map_err(ApiError::bad_request)?;
    let name = Name::parse(&wanted).map_err(|_| ApiError::bad_request("invalid model name"))?;
    let store = cat.store();
    let name = store.spelling_on_disk(&name);
    let not_found = || ApiError::not_found(format!("model '{}' not found", name.display_shortest()));
    let (_, m) = store.read_manifest(&name).map_err(|e| match e {
        StoreError::NotFound(_) => not_found(),
        e => e.into(),
    })?;
    let mtime = std::fs::metadata(store.manifest_path(&name)).and_then(|m| m.modified()).unwrap_or(SystemTime::now());
    // Any missing blob is a 404, as Ollama's ENOENT rule has it.
    let text = |d: Option<Digest>| -> Result<String, ApiError> {
        let d = d.ok_or_else(|| ApiError::internal("invalid digest in manifest"))?;
        match store.read_blob(&d) {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_found()),
            Err(e) => Err(ApiError::internal(e.to_string())),
        }
    };

    let mut out = ShowResponse { modified_at: listing::rfc3339(mtime), ..Default::default() };
    let mut licenses = Vec::new();
    let mut template = None;
    let mut params: Vec<(String, Value)> = Vec::new();
    let mut model_blob = None;
    let mut adapters = Vec::new();
    let mut projector = false;
    for l in &m.layers {
        match l.media_type.rsplit('.').next().unwrap_or("") {
            "model" => model_blob = l.digest(),
            "adapter" => adapters.extend(l.digest()),
            "projector" => projector = true,
            "license" => licenses.push(text(l.digest())?),
            "system" => out.system = text(l.digest())?,
            "template" | "prompt" => template = Some(text(l.digest())?),
            "params" => params = parse_params(&text(l.digest())?)?,
            "messages" => out.messages = serde_json::from_str(&text(l.digest())?).ok(),
            _ => {}
        }
    }
    // Ollama fails show when the config blob is missing (404) or does not decode.
    out.details = listing::details_of(store, &m).map_err(|e| match m.config.digest() {
        Some(d) if !store.blob_path(&d).exists() => not_found(),
        _ => ApiError::internal(e),
    })?;
    if !r.system.is_empty() {
        out.system = r.system.clone();
    }
    out.template = match (r.template.is_empty(), template) {
        (false, _) => r.template.clone(),
        (true, Some(t)) => t,
        (true, None) => DEFAULT_TEMPLATE.to_string(),
    };
    out.license = licenses.join("\n");
    out.parameters = params.iter().map(|(k, v)| format!("{k:<30} {}", go_value(v))).collect::<Vec<_>>().join("\n");
    let header = model_blob.and_then(|d| {
        let f = std::fs::File::open(store.blob_path(&d)).ok()?;
        gguf::read_header(std::io::BufReader::new(f)).ok()
    });
    out.model_info = header.as_ref().map(model_info).unwrap_or_default();
    out.capabilities = capabilities(&m, header.as_ref(), &out.template, projector);
    out.modelfile = modelfile(store, &name, &m, model_blob, &adapters, &out, &licenses, &params);
    Ok(out)
}

/// The params blob: a JSON object; a list value gives one line per element.
fn parse_params(text: &str) -> Result<Vec<(String, Value)>, ApiError> {
    let obj: BTreeMap<String, Value> =
        serde_json::from_str(text).map_err(|e| ApiError::internal(format!("params blob: {e}")))?;
    let mut out = Vec::new();
    for (k, v) in obj {
        match v {
            Value::Array(items) => out.extend(items.into_iter().map(|i| (k.clone(), i))),
            v => out.push((k, v)),
        }
    }
    Ok(out)
}

/// Go's `%#v` for a JSON value: strings quoted, numbers and bools bare (`1` for 1.0).
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e21 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// GGUF metadata without the name and chat template, as Ollama's `model_info`. ollamafs
/// reads headers with bounded memory and keeps only an array's length, so arrays are empty.
fn model_info(h: &gguf::Header) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (k, v) in &h.metadata {
        if k == "general.name" || k == "tokenizer.chat_template" {
            continue;
        }
        let v = match v {
            gguf::Value::Int(i) => i64::try_from(*i).map(Value::from).unwrap_or_else(|_| Value::from(i.to_string())),
            gguf::Value::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
            gguf::Value::Bool(b) => Value::Bool(*b),
            gguf::Value::Str(s) => Value::String(s.clone()),
            gguf::Value::Array(_) => Value::Array(Vec::new()),
        };
        out.insert(k.clone(), v);
    }
    out.insert("general.parameter_count".into(), Value::from(h.parameter_count));
    out
}

/// What the model can do, judged as Ollama does from the weights and the template.
fn capabilities(m: &Manifest, h: Option<&gguf::Header>, template: &str, projector: bool) -> Vec<String> {
    let mut caps = Vec::new();
    if let Some(h) = h {
        let arch = h.architecture();
        if h.metadata.contains_key(&format!("{arch}.pooling_type")) {
            caps.push("embedding");
        } else {
            caps.push("completion");
        }
        if projector || h.metadata.contains_key(&format!("{arch}.vision.block_count")) {
            caps.push("vision");
        }
    } else if m.layers.iter().any(|l| l.media_type.ends_with(".model")) {
        caps.push("completion");
    }
    if template.contains(".Tools") {
        caps.push("tools");
    }
    if template.contains(".Suffix") {
        caps.push("insert");
    }
    if template.contains(".Think") {
        caps.push("thinking");
    }
    caps.into_iter().map(String::from).collect()
}

#[allow(clippy::too_many_arguments)]
fn modelfile(
    store: &crate::store::Store,
    name: &Name,
    m: &Manifest,
    model_blob: Option<Digest>,
    adapters: &[Digest],
    out: &ShowResponse,
    licenses: &[String],
    params: &[(String, Value)],
) -> String {
    let short = name.display_shortest();
    let mut s = String::from("# Modelfile generated by \"ollama show\"\n");
    s += "# To build a new Modelfile based on this, replace FROM with:\n";
    s += &format!("# FROM {short}\n\n");
    match model_blob {
        Some(d) => s += &format!("FROM {}\n", store.blob_path(&d).display()),
        None => s += &format!("FROM {short}\n"),
    }
    for d in adapters {
        s += &format!("ADAPTER {}\n", store.blob_path(d).display());
    }
    for l in m.layers.iter().filter(|l| l.media_type.ends_with(".projector")) {
        if let Some(d) = l.digest() {
            s += &format!("FROM {}\n", store.blob_path(&d).display());
        }
    }
    s += &format!("TEMPLATE \"\"\"{}\"\"\"\n", out.template);
    if !out.system.is_empty() {
        s += &format!("SYSTEM \"\"\"{}\"\"\"\n", out.system);
    }
    for (k, v) in params {
        s += &format!("PARAMETER {k} {}\n", go_value(v));
    }
    for l in licenses {
        s += &format!("LICENSE \"\"\"{l}\"\"\"\n");
    }
    if let Some(Value::Array(msgs)) = &out.messages {
        for msg in msgs {
            let role = msg.get("role").and_then(Value::as_str).unwrap_or("user");
            let content = msg.get("content").and_then(Value::as_str).unwrap_or("");
            s += &format!("MESSAGE {role} {}\n", go_value(&Value::String(content.into())));
        }
    }
    s
}

// ----- unload -----

/// A generate/chat request that only asks to unload a model (`keep_alive` 0, nothing to
/// run), as `ollama rm` sends first. Returns the model name.
pub fn unload_request(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let zero = match v.get("keep_alive")? {
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => matches!(s.trim(), "0" | "0s" | "0m" | "0h"),
        _ => false,
    };
    let empty = |k: &str| match v.get(k) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    (zero && empty("prompt") && empty("messages"))
        .then(|| v.get("model").and_then(Value::as_str).unwrap_or("").to_string())
}

// ----- blobs -----

/// The `:digest` path parameter: `sha256:<64 hex>` (Ollama also takes `sha256-<hex>`).
pub fn blob_digest(param: &str) -> Result<Digest, ApiError> {
    let hex = param.strip_prefix("sha256:").or_else(|| param.strip_prefix("sha256-"));
    hex.and_then(Digest::from_hex).ok_or_else(|| ApiError::bad_request("invalid digest format"))
}

/// `HEAD /api/blobs/:digest`: 200 when the blob is in the store.
pub fn head_blob(cat: &dyn Catalog, param: &str) -> Result<(), ApiError> {
    let d = blob_digest(param)?;
    match std::fs::metadata(cat.store().blob_path(&d)) {
        Ok(_) => Ok(()),
        Err(_) => Err(ApiError::not_found(format!("blob {param:?} not found"))),
    }
}

/// True when `POST /api/blobs/:digest` has nothing to do (Ollama answers 200 at once).
pub fn blob_exists(cat: &dyn Catalog, d: &Digest) -> bool {
    std::fs::metadata(cat.store().blob_path(d)).is_ok()
}

/// `POST /api/blobs/:digest`: the body streams through the store's ingest; it lands in
/// `blobs/` only when it hashes to the digest asked for. 201 when added.
pub fn upload_blob(cat: &dyn Catalog, d: &Digest, body: impl Read) -> Result<u16, ApiError> {
    cat.check_writable()?;
    let (_, new) = cat.store().ingest_expecting(body, d)?;
    cat.blob_added(d);
    Ok(if new { 201 } else { 200 })
}

#[cfg(test)]
mod tests;
