//! How a manifest's layers become file names inside a model directory (docs/SEMANTICS.md, "layout").
//! Shared by the mount and by `ollamafs show`.

use crate::store::manifest::{Manifest, Role};

pub const CONFIG_FILE: &str = "config.json";
pub const MANIFEST_FILE: &str = "manifest.json";

/// Weights are immutable and shared between models; text is per model and editable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Weights,
    Text,
}

/// Where a file in a model directory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Layer(usize),
    Config,
    Manifest,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerFile {
    pub name: String,
    pub kind: Kind,
    pub source: Source,
}

/// Base file name and kind for a layer media type (before `-2`, `-3` numbering).
pub fn base_name(media_type: &str, layer_name: &str) -> (String, Kind) {
    let role = Role::of(media_type, layer_name);
    let kind = if role.is_weights() { Kind::Weights } else { Kind::Text };
    let name = match role {
        Role::Model => "model.gguf".into(),
        Role::Adapter => "adapter.gguf".into(),
        Role::Projector => "projector.gguf".into(),
        Role::Draft => "draft.gguf".into(),
        Role::Tensor | Role::Json => format!("files/{layer_name}"),
        Role::Template => "template".into(),
        Role::System => "system".into(),
        Role::Params => "params.json".into(),
        Role::Messages => "messages.json".into(),
        Role::License => "license".into(),
        Role::Other(other) => {
            let last = other.rsplit(['.', '/']).next().unwrap_or(&other);
            if last.is_empty() { "layer".into() } else { last.to_string() }
        }
    };
    (name, kind)
}

/// The media type a new file name stands for, when a file of that name is created.
/// Numbered names (`license-2`) map to the same type.
pub fn media_type_for(file_name: &str) -> Option<(String, Kind)> {
    let (stem, ext) = match file_name.rfind('.') {
        Some(i) => (&file_name[..i], &file_name[i..]),
        None => (file_name, ""),
    };
    let stem = strip_number(stem);
    let role = match (stem, ext) {
        ("model", ".gguf") => Role::Model,
        ("adapter", ".gguf") => Role::Adapter,
        ("projector", ".gguf") => Role::Projector,
        ("draft", ".gguf") => Role::Draft,
        ("template", "") => Role::Template,
        ("system", "") => Role::System,
        ("license", "") => Role::License,
        ("params", ".json") => Role::Params,
        ("messages", ".json") => Role::Messages,
        _ => return None,
    };
    let kind = if role.is_weights() { Kind::Weights } else { Kind::Text };
    Some((role.media_type(), kind))
}

/// `license-2` → `license`; `adapter-3` → `adapter`; other names unchanged.
fn strip_number(stem: &str) -> &str {
    if let Some(i) = stem.rfind('-') {
        let n = &stem[i + 1..];
        if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) && n != "0" && n != "1" && !n.starts_with('0') {
            return &stem[..i];
        }
    }
    stem
}

/// Insert `-N` before the extension: `adapter.gguf` → `adapter-2.gguf`.
fn numbered(base: &str, n: usize) -> String {
    if n == 1 {
        return base.to_string();
    }
    match base.rfind('.') {
        Some(i) if !base[..i].contains('/') || base.rfind('/').is_some_and(|s| s < i) => {
            format!("{}-{n}{}", &base[..i], &base[i..])
        }
        _ => format!("{base}-{n}"),
    }
}

/// Every file of a model directory, in listing order: layers in manifest order,
/// then `config.json` (when the manifest has a config) and `manifest.json`.
pub fn files(m: &Manifest) -> Vec<LayerFile> {
    let mut out = Vec::with_capacity(m.layers.len() + 2);
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, l) in m.layers.iter().enumerate() {
        let (base, kind) = base_name(&l.media_type, &l.name);
        let count = seen.entry(base.clone()).or_insert(0);
        *count += 1;
        let name = numbered(&base, *count);
        out.push(LayerFile { name, kind, source: Source::Layer(i) });
    }
    if !m.config.digest.is_empty() {
        out.push(LayerFile { name: CONFIG_FILE.into(), kind: Kind::Text, source: Source::Config });
    }
    out.push(LayerFile { name: MANIFEST_FILE.into(), kind: Kind::Text, source: Source::Manifest });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::manifest::{Digest, LAYER_PREFIX, Layer};

    fn layer(short: &str) -> Layer {
        Layer::new(&format!("{LAYER_PREFIX}{short}"), Digest([0; 32]), 1)
    }

    #[test]
    fn names_follow_the_contract_table() {
        let mut tensor = layer("tensor");
        tensor.name = "text_encoder/model.embed_tokens.weight".into();
        let mut json = layer("json");
        json.name = "config.json".into();
        let m = Manifest::new(
            Layer::new("application/vnd.docker.container.image.v1+json", Digest([1; 32]), 2),
            vec![
                layer("model"),
                layer("template"),
                layer("license"),
                layer("license"),
                layer("params"),
                layer("adapter"),
                layer("adapter"),
                layer("prompt"),
                layer("embed"),
                tensor,
                json,
                layer("system"),
                layer("messages"),
                layer("projector"),
                layer("draft"),
            ],
        );
        let names: Vec<String> = files(&m).into_iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "model.gguf",
                "template",
                "license",
                "license-2",
                "params.json",
                "adapter.gguf",
                "adapter-2.gguf",
                "template-2",
                "embed",
                "files/text_encoder/model.embed_tokens.weight",
                "files/config.json",
                "system",
                "messages.json",
                "projector.gguf",
                "draft.gguf",
                "config.json",
                "manifest.json"
            ]
        );
    }

    #[test]
    fn file_names_map_back_to_media_types() {
        assert_eq!(media_type_for("license-2").unwrap().0, format!("{LAYER_PREFIX}license"));
        assert_eq!(media_type_for("adapter-3.gguf").unwrap(), (format!("{LAYER_PREFIX}adapter"), Kind::Weights));
        assert_eq!(media_type_for("system").unwrap().1, Kind::Text);
        assert!(media_type_for("notes.txt").is_none());
        assert!(media_type_for(".system.swp").is_none());
        assert!(media_type_for("license-02").is_none());
        assert!(media_type_for("config.json").is_none());
    }
}
