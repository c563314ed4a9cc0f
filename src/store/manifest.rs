//! Manifests: the JSON Ollama keeps per model, read leniently and written the way Go's
//! `encoding/json` writes it, so the model ID (sha256 of the bytes) matches Ollama's.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
pub const LAYER_PREFIX: &str = "application/vnd.ollama.image.";

/// A blob digest, always kept as 64 lower-case hex characters (no `sha256:`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Parse Ollama's strict written form `sha256:<64 lower hex>`.
    pub fn parse(s: &str) -> Option<Digest> {
        let hex = s.strip_prefix("sha256:")?;
        Digest::from_hex(hex)
    }

    /// 64 lower-case hex characters only: upper case would not protect the blob from
    /// Ollama's prune (it compares exact strings).
    pub fn from_hex(hex: &str) -> Option<Digest> {
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).ok()?;
        Some(Digest(out))
    }

    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `sha256:<hex>`, the form manifests use.
    pub fn prefixed(&self) -> String {
        format!("sha256:{}", self.hex())
    }

    /// File name under `blobs/`.
    pub fn blob_file_name(&self) -> String {
        format!("sha256-{}", self.hex())
    }

    /// A stable 64-bit number for inode derivation.
    pub fn short(&self) -> u64 {
        u64::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3], self.0[4], self.0[5], self.0[6], self.0[7]])
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// A layer or config reference. Field order is Go's: mediaType, digest, size, from, name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl Layer {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Layer {
        Layer {
            media_type: media_type.into(),
            digest: digest.prefixed(),
            size: size as i64,
            from: String::new(),
            name: String::new(),
        }
    }

    /// The digest, when it is written in the exact form Ollama writes.
    pub fn digest(&self) -> Option<Digest> {
        Digest::parse(&self.digest)
    }

    /// What this layer is, parsed once from its media type.
    pub fn role(&self) -> Role {
        Role::of(&self.media_type, &self.name)
    }
}

/// What a layer is for (`application/vnd.ollama.image.<short>`). The one place that knows
/// media types; `crate::layout` maps roles to file names and back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The main weights (GGUF).
    Model,
    Adapter,
    Projector,
    Draft,
    /// A named safetensors tensor (weights) or JSON file (text) of an MLX/safetensors model.
    Tensor,
    Json,
    /// `template`, and the legacy `prompt`.
    Template,
    System,
    Params,
    Messages,
    License,
    /// Any other media type: treated as weights, shown under the last segment of its type.
    Other(String),
}

impl Role {
    pub fn of(media_type: &str, layer_name: &str) -> Role {
        let short = media_type.strip_prefix(LAYER_PREFIX).unwrap_or(media_type);
        match short {
            "model" => Role::Model,
            "adapter" => Role::Adapter,
            "projector" => Role::Projector,
            "draft" => Role::Draft,
            "tensor" if !layer_name.is_empty() => Role::Tensor,
            "json" if !layer_name.is_empty() => Role::Json,
            "template" | "prompt" => Role::Template,
            "system" => Role::System,
            "params" => Role::Params,
            "messages" => Role::Messages,
            "license" => Role::License,
            other => Role::Other(other.to_string()),
        }
    }

    /// Weights are immutable and shared between models; everything else is per-model text.
    pub fn is_weights(&self) -> bool {
        matches!(self, Role::Model | Role::Adapter | Role::Projector | Role::Draft | Role::Tensor | Role::Other(_))
    }

    /// The weights a model runs from (a GGUF model layer or safetensors tensors).
    pub fn is_main_weights(&self) -> bool {
        matches!(self, Role::Model | Role::Tensor)
    }

    /// The media type a new layer of this role gets.
    pub fn media_type(&self) -> String {
        let short = match self {
            Role::Model => "model",
            Role::Adapter => "adapter",
            Role::Projector => "projector",
            Role::Draft => "draft",
            Role::Tensor => "tensor",
            Role::Json => "json",
            Role::Template => "template",
            Role::System => "system",
            Role::Params => "params",
            Role::Messages => "messages",
            Role::License => "license",
            Role::Other(s) => s,
        };
        format!("{LAYER_PREFIX}{short}")
    }
}

/// Docker v2 style manifest. Unknown keys are ignored on read (as Go does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: i64,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(default = "empty_config")]
    pub config: Layer,
    #[serde(default)]
    pub layers: Vec<Layer>,
}

fn empty_config() -> Layer {
    Layer { media_type: String::new(), digest: String::new(), size: 0, from: String::new(), name: String::new() }
}

/// Why manifest bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("layer {index} has an invalid digest {digest:?} (need sha256:<64 lower-case hex>)")]
    BadDigest { index: usize, digest: String },
    #[error("layer {index} has a negative size")]
    BadSize { index: usize },
}

impl Manifest {
    pub fn new(config: Layer, layers: Vec<Layer>) -> Manifest {
        Manifest { schema_version: 2, media_type: MANIFEST_MEDIA_TYPE.into(), config, layers }
    }

    /// Decode leniently, like Ollama's reader: unknown keys ignored, digests not checked.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        // Go's decoder stops after the first value; trailing bytes are ignored there too.
        let mut de = serde_json::Deserializer::from_slice(bytes).into_iter::<Manifest>();
        match de.next() {
            Some(Ok(m)) => Ok(m),
            Some(Err(e)) => Err(e.into()),
            None => Err(ManifestError::Json(serde::de::Error::custom("empty manifest"))),
        }
    }

    /// Decode and insist on what ollamafs writes: exact digests and sane sizes.
    pub fn parse_strict(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m = Manifest::parse(bytes)?;
        m.check_digests()?;
        Ok(m)
    }

    pub fn check_digests(&self) -> Result<(), ManifestError> {
        let all = std::iter::once(&self.config).chain(self.layers.iter());
        for (index, l) in all.enumerate() {
            if index == 0 && l.digest.is_empty() {
                continue; // Ollama allows an empty config digest
            }
            if l.digest().is_none() {
                return Err(ManifestError::BadDigest { index, digest: l.digest.clone() });
            }
            if l.size < 0 {
                return Err(ManifestError::BadSize { index });
            }
        }
        Ok(())
    }

    /// Compact Go `json.Encoder` output with trailing newline.
    pub fn to_go_json(&self) -> Vec<u8> {
        go_json(self)
    }

    /// Every digest the manifest references (config first), as Ollama's prune sees them.
    pub fn digests(&self) -> impl Iterator<Item = Digest> + '_ {
        std::iter::once(&self.config).chain(self.layers.iter()).filter_map(Layer::digest)
    }

    /// Ollama's list size: the manifest's own numbers, config included.
    pub fn total_size(&self) -> i64 {
        self.config.size + self.layers.iter().map(|l| l.size).sum::<i64>()
    }
}

/// Serialise like Go's `json.Encoder` with default settings: compact, `<>&` and U+2028/9
/// escaped, trailing newline. Structural JSON never contains those characters, so
/// escaping them after serde is exact.
pub fn go_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serialising plain data structs into a Vec cannot fail.
    let plain = serde_json::to_vec(value).unwrap_or_default();
    let mut out = Vec::with_capacity(plain.len() + 16);
    let text = String::from_utf8_lossy(&plain);
    for ch in text.chars() {
        match ch {
            '<' => out.extend_from_slice(b"\\u003c"),
            '>' => out.extend_from_slice(b"\\u003e"),
            '&' => out.extend_from_slice(b"\\u0026"),
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'\n');
    out
}

/// A number as Go's `encoding/json` writes a `float64`: the shortest digits that read back
/// as the same value, in plain decimal, except below 1e-6 and from 1e21 on, where it uses an
/// exponent (`1e-7`, `1.5e-10`, `1e+21`). Whole numbers have no fraction (`0`, `100`).
/// Ollama stores model parameters this way, whatever their type in `api.Options`.
pub fn go_float(v: f64) -> String {
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust's `{:e}` gives the same shortest digits: "1.5e-10", "1e21".
        let sci = format!("{v:e}");
        let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        return match exp.strip_prefix('-') {
            Some(neg) => format!("{mantissa}e-{neg}"),
            None => format!("{mantissa}e+{exp:0>2}"),
        };
    }
    // Rust's `{}` of an f64 is the shortest round-trip decimal, never an exponent.
    format!("{v}")
}

/// The model ID Ollama shows: sha256 of the manifest bytes its decoder consumed.
/// Go's decoder reads in growing chunks (512, then doubling the extra space); when the
/// JSON value ends exactly at a chunk boundary, the bytes after it are not hashed.
pub fn model_id(bytes: &[u8]) -> String {
    let end = json_value_end(bytes).unwrap_or(bytes.len());
    let mut boundary = 512usize;
    while boundary < end {
        boundary = 2 * boundary + 512;
    }
    let consumed = if boundary == end { end } else { boundary.min(bytes.len()) };
    hex::encode(Sha256::digest(&bytes[..consumed]))
}

/// Offset just past the first top-level JSON value.
fn json_value_end(bytes: &[u8]) -> Option<usize> {
    let mut de = serde_json::Deserializer::from_slice(bytes).into_iter::<serde::de::IgnoredAny>();
    match de.next() {
        Some(Ok(_)) => Some(de.byte_offset()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The manifest of a real install of `llama3.2:latest` (as pulled from ollama.com), written compactly.
    pub(super) fn llama32_manifest() -> Manifest {
        let l = |mt: &str, d: &str, s: i64| Layer {
            media_type: mt.into(),
            digest: format!("sha256:{d}"),
            size: s,
            from: String::new(),
            name: String::new(),
        };
        Manifest::new(
            l(CONFIG_MEDIA_TYPE, "34bb5ab01051a11372a91f95f3fbbc51173eed8e7f13ec395b9ae9b8bd0e242b", 561),
            vec![
                l(
                    "application/vnd.ollama.image.model",
                    "dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff",
                    2019377376,
                ),
                l(
                    "application/vnd.ollama.image.template",
                    "966de95ca8a62200913e3f8bfbf84c8494536f1b94b49166851e76644e966396",
                    1429,
                ),
                l(
                    "application/vnd.ollama.image.license",
                    "fcc5a6bec9daf9b561a68827b67ab6088e1dba9d1fa2a50d7bbcc8384e0a265d",
                    7711,
                ),
                l(
                    "application/vnd.ollama.image.license",
                    "a70ff7e570d97baaf4e62ac6e6ad9975e04caa6d900d3742d37698494479e0cd",
                    6016,
                ),
                l(
                    "application/vnd.ollama.image.params",
                    "56bb8bd477a519ffa694fc449c2413c6f0e1d3b1c88fa7e3c9d88d3ae49d4dcb",
                    96,
                ),
            ],
        )
    }

    #[test]
    fn params_blob_is_byte_exact() {
        // Ollama writes params as a JSON map through json.Encoder: <> escaped, newline.
        let params = serde_json::json!({"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]});
        let bytes = go_json(&params);
        assert_eq!(bytes.len(), 96);
        assert_eq!(Digest::of_bytes(&bytes).hex(), "56bb8bd477a519ffa694fc449c2413c6f0e1d3b1c88fa7e3c9d88d3ae49d4dcb");
    }

    #[test]
    fn config_blob_is_byte_exact() {
        let m = llama32_manifest();
        let diff_ids: Vec<String> = m.layers.iter().map(|l| l.digest.clone()).collect();
        // Go writes struct fields in declaration order; a struct keeps that order here.
        #[derive(Serialize)]
        struct RootFs {
            r#type: &'static str,
            diff_ids: Vec<String>,
        }
        #[derive(Serialize)]
        struct ConfigV2 {
            model_format: &'static str,
            model_family: &'static str,
            model_families: Vec<&'static str>,
            model_type: &'static str,
            file_type: &'static str,
            architecture: &'static str,
            os: &'static str,
            rootfs: RootFs,
        }
        let config = ConfigV2 {
            model_format: "gguf",
            model_family: "llama",
            model_families: vec!["llama"],
            model_type: "3.2B",
            file_type: "Q4_K_M",
            architecture: "amd64",
            os: "linux",
            rootfs: RootFs { r#type: "layers", diff_ids },
        };
        let bytes = go_json(&config);
        assert_eq!(bytes.len(), 561);
        assert_eq!(Digest::of_bytes(&bytes).hex(), "34bb5ab01051a11372a91f95f3fbbc51173eed8e7f13ec395b9ae9b8bd0e242b");
    }

    #[test]
    fn manifest_id_matches_ollama_list() {
        // A pulled manifest is the registry's bytes: compact, same key order, no newline.
        let written = llama32_manifest().to_go_json();
        let bytes = &written[..written.len() - 1];
        assert_eq!(model_id(bytes), "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72");
        assert_ne!(model_id(&written), model_id(bytes), "the newline is hashed when it is read");
        assert_eq!(llama32_manifest().total_size(), 2019393189);
        // Round trip keeps every byte.
        assert_eq!(Manifest::parse(bytes).unwrap().to_go_json(), written);
    }

    #[test]
    fn model_id_boundary_quirk() {
        // A value that ends exactly at 512 bytes: the trailing newline is not hashed.
        let mut v = b"{\"a\":\"".to_vec();
        v.resize(510, b'x');
        v.extend_from_slice(b"\"}");
        assert_eq!(v.len(), 512);
        let mut with_nl = v.clone();
        with_nl.push(b'\n');
        assert_eq!(model_id(&with_nl), hex::encode(Sha256::digest(&v)));
        // One byte shorter: the newline falls inside the first read and is hashed.
        let mut short = b"{\"a\":\"".to_vec();
        short.resize(509, b'x');
        short.extend_from_slice(b"\"}\n");
        assert_eq!(model_id(&short), hex::encode(Sha256::digest(&short)));
    }

    #[test]
    fn lenient_read_and_strict_checks() {
        let odd = br#"{"schemaVersion":2,"extra":1,"config":{"digest":"","size":0},"layers":[{"mediaType":"x","digest":"sha256:ABC","size":1}]}"#;
        let m = Manifest::parse(odd).unwrap();
        assert_eq!(m.layers.len(), 1);
        assert!(matches!(m.check_digests(), Err(ManifestError::BadDigest { index: 1, .. })));
        assert!(Manifest::parse(b"{\"layers\":[").is_err());
        assert!(Manifest::parse(b"").is_err());
        assert!(Manifest::parse(br#"{"layers":[{"size":"x"}]}"#).is_err());
        let upper = format!("sha256:{}", "A".repeat(64));
        assert!(Digest::parse(&upper).is_none());
        assert!(Digest::parse(&format!("sha256-{}", "a".repeat(64))).is_none());
    }

    #[test]
    fn optional_fields_are_omitted_and_escaped() {
        let mut l = Layer::new("application/vnd.ollama.image.model", Digest([1; 32]), 5);
        l.from = "a<b>&c".into();
        let json = String::from_utf8(go_json(&l)).unwrap();
        assert!(json.contains(r#""from":"a\u003cb\u003e\u0026c""#), "{json}");
        assert!(!json.contains("\"name\""));
        assert!(json.ends_with("}\n"));
    }

    #[test]
    fn numbers_as_go_writes_a_float64() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (1.0, "1"),
            (100.0, "100"),
            (-3.0, "-3"),
            (0.7, "0.7"),
            (-0.5, "-0.5"),
            (0.95, "0.95"),
            (1e-6, "0.000001"),
            (5e-6, "0.000005"),
            (1e-7, "1e-7"),
            (1.5e-10, "1.5e-10"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e22, "1.5e+22"),
            (2.5e-300, "2.5e-300"),
            (9007199254740993.0, "9007199254740992"),
        ];
        for (v, want) in cases {
            assert_eq!(go_float(*v), *want, "{v}");
        }
    }
}
