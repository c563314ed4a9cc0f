//! Create a model from existing layers, uploaded blobs or GGUF files: what Ollama's
//! `/api/create` and `ollama create -f Modelfile` do, minus quantization (that needs a
//! runtime). Pure store work: text blobs, a config, one manifest. The caller writes the
//! manifest (only a complete model passes `Store::write_manifest`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;

use serde_json::Value;

use super::config::GeneratedConfig;
use super::manifest::{CONFIG_MEDIA_TYPE, Layer, Manifest, Role};
use super::{Digest, Store, StoreError};
use crate::gguf;

/// What a new model is made of (from `/api/create`'s JSON or a Modelfile).
#[derive(Debug, Default, Clone)]
pub struct CreateSpec {
    /// An existing model to start from (its layers and config).
    pub from: Option<String>,
    /// GGUF blobs already in the store: the model, projector or adapter weights.
    pub files: Vec<Digest>,
    pub adapters: Vec<Digest>,
    pub template: Option<String>,
    pub system: Option<String>,
    pub license: Option<Vec<String>>,
    pub parameters: Option<serde_json::Map<String, Value>>,
    pub messages: Option<Vec<Value>>,
}

/// Parameters Ollama knows, with the JSON type each is stored as (`api.Options`).
const PARAMETERS: &[(&str, char)] = &[
    ("num_keep", 'i'),
    ("seed", 'i'),
    ("num_predict", 'i'),
    ("top_k", 'i'),
    ("top_p", 'f'),
    ("min_p", 'f'),
    ("typical_p", 'f'),
    ("repeat_last_n", 'i'),
    ("temperature", 'f'),
    ("repeat_penalty", 'f'),
    ("presence_penalty", 'f'),
    ("frequency_penalty", 'f'),
    ("penalize_newline", 'b'),
    ("stop", 's'),
    ("numa", 'b'),
    ("num_ctx", 'i'),
    ("num_batch", 'i'),
    ("num_gpu", 'i'),
    ("main_gpu", 'i'),
    ("use_mmap", 'b'),
    ("num_thread", 'i'),
    ("mirostat", 'i'),
    ("mirostat_tau", 'f'),
    ("mirostat_eta", 'f'),
    ("tfs_z", 'f'),
];

/// A Modelfile's `PARAMETER key value` as the JSON value Ollama stores; `stop` collects a list.
/// Typed as Ollama's `api.Options` types it: an integer field takes only an integer
/// (`8.0` is refused, as Ollama refuses it), a float field is read as a float32 and keeps
/// the float32's shortest digits (`0.95`, not 0.949999988079071).
pub fn parameter_value(key: &str, raw: &str) -> Result<Value, String> {
    let kind =
        PARAMETERS.iter().find(|(k, _)| *k == key).map(|(_, t)| *t).ok_or(format!("unknown parameter '{key}'"))?;
    let bad = || format!("invalid value for parameter '{key}': {raw:?}");
    Ok(match kind {
        'i' => Value::from(raw.trim().parse::<i64>().map_err(|_| bad())?),
        'f' => {
            let f: f32 = raw.trim().parse().map_err(|_| bad())?;
            let shortest: f64 = format!("{f:e}").parse().map_err(|_| bad())?;
            serde_json::Number::from_f64(shortest).map(Value::Number).ok_or_else(bad)?
        }
        'b' => Value::Bool(raw.trim().parse::<bool>().map_err(|_| bad())?),
        _ => Value::String(raw.to_string()),
    })
}

/// Normalise `/api/create` parameters: known keys, values of their type (`stop` a list).
/// Numbers are taken as JSON gives them (Ollama reads them as float64: `8.0` for an integer
/// field is 8).
fn check_parameters(p: &serde_json::Map<String, Value>) -> Result<serde_json::Map<String, Value>, String> {
    let mut out = serde_json::Map::new();
    for (k, v) in p {
        let kind =
            PARAMETERS.iter().find(|(name, _)| name == k).map(|(_, t)| *t).ok_or(format!("unknown parameter '{k}'"))?;
        let v = match (kind, v) {
            ('s', Value::String(s)) => Value::Array(vec![Value::String(s.clone())]),
            ('s', Value::Array(a)) if a.iter().all(Value::is_string) => v.clone(),
            ('i' | 'f', Value::Number(_)) => v.clone(),
            ('b', Value::Bool(_)) => v.clone(),
            _ => return Err(format!("invalid value for parameter '{k}': {v}")),
        };
        out.insert(k.clone(), v);
    }
    Ok(out)
}

/// The params layer as Ollama writes it: the object's keys sorted, every number as Go
/// writes a float64 (Ollama's server holds them as such), the rest as `go_json`.
pub fn params_json(params: &BTreeMap<String, Value>) -> Vec<u8> {
    let mut out = b"{".to_vec();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&go_json_bare(&Value::String(k.clone())));
        out.push(b':');
        match v.as_f64() {
            Some(n) if v.is_number() => out.extend_from_slice(super::manifest::go_float(n).as_bytes()),
            _ => out.extend_from_slice(&go_json_bare(v)),
        }
    }
    out.extend_from_slice(b"}\n");
    out
}

/// `go_json` without its trailing newline.
fn go_json_bare(v: &Value) -> Vec<u8> {
    let mut b = super::manifest::go_json(v);
    b.pop();
    b
}

/// What a GGUF blob is, from its header (as Ollama's create tells them apart).
fn gguf_role(store: &Store, d: &Digest) -> Result<(Role, gguf::Header), StoreError> {
    let f = File::open(store.blob_path(d)).map_err(|_| StoreError::NotFound(d.prefixed()))?;
    let h = gguf::read_header(BufReader::new(f))
        .map_err(|e| StoreError::Invalid(format!("{d} is not a GGUF file ({e}); only GGUF models can be imported")))?;
    let general = h.str("general.type").unwrap_or("");
    let role = if general == "adapter" {
        Role::Adapter
    } else if general == "projector" || general == "mmproj" || h.architecture() == "clip" {
        Role::Projector
    } else {
        Role::Model
    };
    Ok((role, h))
}

impl Store {
    /// Build the manifest of a new model. `progress` gets Ollama's status lines
    /// (`using existing layer sha256:…`, `creating new layer sha256:…`).
    pub fn create_manifest(&self, spec: &CreateSpec, progress: &mut dyn FnMut(String)) -> Result<Vec<u8>, StoreError> {
        if spec.from.is_none() && spec.files.is_empty() {
            return Err(StoreError::Invalid("neither 'from' or 'files' was specified".into()));
        }
        let mut layers: Vec<Layer> = Vec::new();
        let mut config: Option<Layer> = None;
        let mut base_params = serde_json::Map::new();
        if let Some(from) = &spec.from {
            let name = self.resolve(from)?;
            let (_, base) = self.read_manifest(&name)?;
            config = Some(base.config.clone());
            for mut l in base.layers {
                if l.role() == Role::Params
                    && let Some(d) = l.digest()
                    && let Ok(Value::Object(p)) = serde_json::from_slice(&self.read_blob(&d)?)
                {
                    base_params = p;
                    continue;
                }
                if l.role() == Role::Model && l.from.is_empty() {
                    l.from = name.display_shortest();
                }
                layers.push(l);
            }
        }
        // GGUF weights: a new model layer replaces the base's, and brings its own config.
        let mut new_model = None;
        for d in &spec.files {
            let (role, header) = gguf_role(self, d)?;
            let len = std::fs::metadata(self.blob_path(d))?.len();
            if role == Role::Model {
                layers.retain(|l| l.role() != Role::Model);
                new_model = Some(header);
            }
            layers.push(Layer::new(&role.media_type(), *d, len));
        }
        for d in &spec.adapters {
            let len = std::fs::metadata(self.blob_path(d)).map_err(|_| StoreError::NotFound(d.prefixed()))?.len();
            layers.push(Layer::new(&Role::Adapter.media_type(), *d, len));
        }
        // A GGUF with a chat template and no template given or inherited: one in Ollama's
        // language, with its stop words, as `ollama create` adds (see `chat_template`).
        let detected = match &new_model {
            Some(h) if spec.template.is_none() && !layers.iter().any(|l| l.role() == Role::Template) => {
                h.str("tokenizer.chat_template").and_then(super::chat_template::detect)
            }
            _ => None,
        };
        if let Some(t) = &detected {
            progress(format!("using autodetected template {}", t.name));
        }
        let mut text = |role: Role, bytes: &[u8], layers: &mut Vec<Layer>| -> Result<(), StoreError> {
            let existed = self.blob_path(&Digest::of_bytes(bytes)).exists();
            let (d, len, _) = self.ingest_bytes(bytes)?;
            progress(format!("{} layer {}", if existed { "using existing" } else { "creating new" }, d.prefixed()));
            layers.push(Layer::new(&role.media_type(), d, len));
            Ok(())
        };
        if let Some(t) = &spec.template {
            layers.retain(|l| l.role() != Role::Template);
            text(Role::Template, t.as_bytes(), &mut layers)?;
        }
        if let Some(t) = &detected {
            text(Role::Template, t.template.as_bytes(), &mut layers)?;
            let stop = t.stop.iter().map(|s| Value::String(s.to_string())).collect();
            base_params.entry("stop").or_insert(Value::Array(stop));
        }
        if let Some(s) = &spec.system {
            layers.retain(|l| l.role() != Role::System);
            text(Role::System, s.as_bytes(), &mut layers)?;
        }
        if let Some(licenses) = &spec.license {
            layers.retain(|l| l.role() != Role::License);
            for l in licenses {
                text(Role::License, l.as_bytes(), &mut layers)?;
            }
        }
        if let Some(p) = &spec.parameters {
            for (k, v) in check_parameters(p).map_err(StoreError::Invalid)? {
                base_params.insert(k, v);
            }
        }
        if !base_params.is_empty() {
            let sorted: BTreeMap<String, Value> = base_params.into_iter().collect();
            text(Role::Params, &params_json(&sorted), &mut layers)?;
        }
        if let Some(msgs) = &spec.messages {
            layers.retain(|l| l.role() != Role::Messages);
            for m in msgs {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("");
                if !["system", "user", "assistant", "tool"].contains(&role) {
                    return Err(StoreError::Invalid(
                        "message role must be one of \"system\", \"user\", or \"assistant\"".into(),
                    ));
                }
            }
            if !msgs.is_empty() {
                text(Role::Messages, &super::manifest::go_json(msgs), &mut layers)?;
            }
        }
        // The config: the base model's, or one made from the new weights' header.
        let config = match (new_model, config) {
            (Some(h), _) => {
                let (d, len, _) = self.ingest_bytes(&GeneratedConfig::from_gguf(&h).to_bytes())?;
                Layer::new(CONFIG_MEDIA_TYPE, d, len)
            }
            (None, Some(c)) => c,
            (None, None) => {
                return Err(StoreError::Invalid("no model weights: give FROM a model or a GGUF file".into()));
            }
        };
        for l in &layers {
            if !matches!(l.role(), Role::Template | Role::System | Role::License | Role::Params | Role::Messages) {
                progress(format!("using existing layer {}", l.digest));
            }
        }
        Ok(Manifest::new(config, layers).to_go_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::Name;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        crate::fixture::build(dir.path(), 4 << 20).unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.prepare_for_writes().unwrap();
        (dir, s)
    }

    #[test]
    fn from_a_model_with_a_new_system_prompt_keeps_every_other_layer() {
        let (_d, s) = store();
        let spec = CreateSpec {
            from: Some("llama3.2".into()),
            system: Some("New system prompt".into()),
            ..Default::default()
        };
        let mut events = Vec::new();
        let bytes = s.create_manifest(&spec, &mut |e| events.push(e)).unwrap();
        let m = Manifest::parse(&bytes).unwrap();
        let (_, base) = s.read_manifest(&Name::parse("llama3.2").unwrap()).unwrap();
        assert_eq!(m.config, base.config);
        assert_eq!(m.layers[0].digest, base.layers[0].digest, "same weights blob");
        assert_eq!(m.layers[0].from, "llama3.2:latest");
        let sys: Vec<_> = m.layers.iter().filter(|l| l.role() == Role::System).collect();
        assert_eq!(sys.len(), 1);
        assert_eq!(s.read_blob(&sys[0].digest().unwrap()).unwrap(), b"New system prompt");
        assert!(events.iter().any(|e| e.starts_with("creating new layer sha256:")), "{events:?}");
        assert!(s.check_complete(&m).is_ok());
    }

    #[test]
    fn parameters_merge_with_the_base_and_are_typed() {
        let (_d, s) = store();
        let mut p = serde_json::Map::new();
        p.insert("temperature".into(), Value::from(0.2));
        p.insert("stop".into(), Value::from("<|end|>"));
        let spec = CreateSpec { from: Some("llama3.2".into()), parameters: Some(p), ..Default::default() };
        let bytes = s.create_manifest(&spec, &mut |_| {}).unwrap();
        let m = Manifest::parse(&bytes).unwrap();
        let params = m.layers.iter().find(|l| l.role() == Role::Params).unwrap();
        let v: Value = serde_json::from_slice(&s.read_blob(&params.digest().unwrap()).unwrap()).unwrap();
        assert_eq!(v["temperature"], 0.2);
        assert_eq!(v["stop"], serde_json::json!(["<|end|>"]), "replaced, as Ollama's merge does per key");
        let mut bad = serde_json::Map::new();
        bad.insert("warp_speed".into(), Value::from(9));
        let spec = CreateSpec { from: Some("llama3.2".into()), parameters: Some(bad), ..Default::default() };
        assert_eq!(s.create_manifest(&spec, &mut |_| {}).unwrap_err().to_string(), "unknown parameter 'warp_speed'");
    }

    #[test]
    fn nothing_to_start_from_is_an_error() {
        let (_d, s) = store();
        let err = s.create_manifest(&CreateSpec::default(), &mut |_| {}).unwrap_err();
        assert_eq!(err.to_string(), "neither 'from' or 'files' was specified");
        let spec = CreateSpec { from: Some("nope".into()), ..Default::default() };
        assert_eq!(s.create_manifest(&spec, &mut |_| {}).unwrap_err().to_string(), "model 'nope' not found");
    }

    /// The same Modelfile parameters give the same params blob bytes as Ollama (and so the
    /// same model ID): typed as `api.Options`, written as Go writes them.
    #[test]
    fn parameters_are_written_as_ollama_writes_them() {
        let from_modelfile = |pairs: &[(&str, &str)]| {
            let mut m = BTreeMap::new();
            for (k, v) in pairs {
                m.insert(k.to_string(), parameter_value(k, v).unwrap());
            }
            String::from_utf8(params_json(&m)).unwrap()
        };
        assert_eq!(from_modelfile(&[("temperature", "0")]), "{\"temperature\":0}\n");
        assert_eq!(from_modelfile(&[("temperature", "1")]), "{\"temperature\":1}\n");
        assert_eq!(from_modelfile(&[("num_ctx", "100")]), "{\"num_ctx\":100}\n");
        assert_eq!(
            from_modelfile(&[("top_p", "0.95"), ("temperature", "0.7"), ("min_p", "1e-7"), ("seed", "-1")]),
            "{\"min_p\":1e-7,\"seed\":-1,\"temperature\":0.7,\"top_p\":0.95}\n",
            "sorted keys; float32 values keep their shortest digits"
        );
        assert_eq!(from_modelfile(&[("top_p", "0.123456789")]), "{\"top_p\":0.12345679}\n", "float32 rounding");
        assert_eq!(from_modelfile(&[("repeat_penalty", "-1.5")]), "{\"repeat_penalty\":-1.5}\n");
        assert_eq!(from_modelfile(&[("use_mmap", "false")]), "{\"use_mmap\":false}\n");
        assert!(parameter_value("num_ctx", "8.0").is_err(), "an integer field takes an integer, as in Ollama");
        assert!(parameter_value("temperature", "warm").is_err());
        // Over the API numbers come as JSON numbers: 1.0 is 1, 8.0 for an integer field is 8.
        let mut p = serde_json::Map::new();
        p.insert("temperature".into(), serde_json::json!(1.0));
        p.insert("num_ctx".into(), serde_json::json!(8.0));
        p.insert("stop".into(), serde_json::json!("<|end|>"));
        let checked: BTreeMap<String, Value> = check_parameters(&p).unwrap().into_iter().collect();
        assert_eq!(
            String::from_utf8(params_json(&checked)).unwrap(),
            "{\"num_ctx\":8,\"stop\":[\"\\u003c|end|\\u003e\"],\"temperature\":1}\n"
        );
    }
}
