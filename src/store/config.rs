//! The config blob (Ollama's `ConfigV2`): reading the details `ollama list` shows and
//! generating one from a GGUF header the way `ollama create` does.

use serde::{Deserialize, Serialize};

use crate::gguf;

/// The details block of `ollama list` / `ollama show`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    #[serde(default)]
    pub parent_model: String,
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub family: String,
    #[serde(default)]
    pub families: Option<Vec<String>>,
    #[serde(default)]
    pub parameter_size: String,
    #[serde(default)]
    pub quantization_level: String,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigRead {
    #[serde(default)]
    model_format: String,
    #[serde(default)]
    model_family: String,
    #[serde(default)]
    model_families: Option<Vec<String>>,
    #[serde(default)]
    model_type: String,
    #[serde(default)]
    file_type: String,
}

/// Parse a config blob's details. Ollama hides a model whose config does not decode.
pub fn details(config_bytes: &[u8]) -> Result<Details, serde_json::Error> {
    let c: ConfigRead = serde_json::from_slice(config_bytes)?;
    Ok(Details {
        parent_model: String::new(),
        format: c.model_format,
        family: c.model_family,
        families: c.model_families,
        parameter_size: c.model_type,
        quantization_level: c.file_type,
    })
}

/// What `ollama create` writes for a GGUF (v0.32.7+, no `rootfs`), in Go's key order.
#[derive(Debug, Serialize)]
pub struct GeneratedConfig {
    pub model_format: String,
    pub model_family: String,
    pub model_families: Option<Vec<String>>,
    pub model_type: String,
    pub file_type: String,
    pub architecture: String,
    pub os: String,
}

impl GeneratedConfig {
    pub fn from_gguf(h: &gguf::Header) -> GeneratedConfig {
        let arch = h.architecture().to_string();
        GeneratedConfig {
            model_format: "gguf".into(),
            model_family: arch.clone(),
            model_families: Some(vec![arch]),
            model_type: crate::format::human_number(h.parameter_count),
            file_type: h.file_type_name().into(),
            architecture: "amd64".into(),
            os: "linux".into(),
        }
    }

    /// A config for a model with no GGUF weights at all (only text layers).
    pub fn empty() -> GeneratedConfig {
        GeneratedConfig {
            model_format: String::new(),
            model_family: String::new(),
            model_families: None,
            model_type: String::new(),
            file_type: String::new(),
            architecture: "amd64".into(),
            os: "linux".into(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        super::manifest::go_json(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{Value, write};

    #[test]
    fn generated_config_from_gguf() {
        let bytes = write::header(
            &[("general.architecture", Value::Str("qwen2".into())), ("general.file_type", Value::Int(7))],
            &[("w", vec![1000, 1500], 8)],
        );
        let h = gguf::read_header(&bytes[..]).unwrap();
        let c = GeneratedConfig::from_gguf(&h).to_bytes();
        assert_eq!(
            String::from_utf8(c.clone()).unwrap(),
            "{\"model_format\":\"gguf\",\"model_family\":\"qwen2\",\"model_families\":[\"qwen2\"],\"model_type\":\"1.50M\",\"file_type\":\"Q8_0\",\"architecture\":\"amd64\",\"os\":\"linux\"}\n"
        );
        let d = details(&c).unwrap();
        assert_eq!(
            (d.family.as_str(), d.parameter_size.as_str(), d.quantization_level.as_str()),
            ("qwen2", "1.50M", "Q8_0")
        );
    }

    #[test]
    fn bad_config_is_an_error() {
        assert!(details(b"not json").is_err());
        assert!(details(b"{}").is_ok());
    }
}
