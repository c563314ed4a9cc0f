//! The one definition of a complete model. Every manifest write (mount, CLI, API) passes
//! this check first, and `ollamafs verify` applies it to every manifest on disk, so Ollama
//! never sees a half-made, truncated or emptied model (docs/SEMANTICS.md, "Transactions").
//!
//! Complete means: the config blob exists, has a valid digest and is a JSON object; every
//! layer's blob exists with the size the manifest gives; every weights layer is non-empty
//! and whole (a GGUF at least as long as the end of the tensor data its header declares, a
//! safetensors file as long as its header says).

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::Path;

use super::manifest::{Layer, Manifest};
use super::{Digest, Store};

/// Why a manifest is not a complete model (one sentence for logs and `verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete(pub String);

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn no(why: impl Into<String>) -> Incomplete {
    Incomplete(why.into())
}

impl Store {
    /// Is `m` a complete model over the blobs in this store?
    pub fn check_complete(&self, m: &Manifest) -> Result<(), Incomplete> {
        let cd = m.config.digest().ok_or_else(|| no(format!("config digest {:?} is not valid", m.config.digest)))?;
        let cfg = self.read_blob(&cd).map_err(|e| no(format!("config blob {cd} cannot be read: {e}")))?;
        if cfg.len() as i64 != m.config.size {
            return Err(no(format!("config blob {cd} is {} bytes, the manifest says {}", cfg.len(), m.config.size)));
        }
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&cfg)
            .map_err(|e| no(format!("config blob {cd} is not a JSON object: {e}")))?;
        for l in &m.layers {
            self.check_layer(l)?;
        }
        // A model runs from its main weights: a GGUF model layer or safetensors tensors.
        // Adapters, projectors and drafts need one beside them.
        if !m.layers.iter().any(|l| l.role().is_main_weights()) {
            return Err(no("it has no weights (no model or tensor layer)"));
        }
        Ok(())
    }

    fn check_layer(&self, l: &Layer) -> Result<(), Incomplete> {
        let d = l.digest().ok_or_else(|| no(format!("layer digest {:?} is not valid", l.digest)))?;
        let path = self.blob_path(&d);
        let len = fs::metadata(&path).map_err(|e| no(format!("blob {d} is missing: {e}")))?.len();
        if len as i64 != l.size {
            return Err(no(format!("blob {d} is {len} bytes, the manifest says {}", l.size)));
        }
        if !l.role().is_weights() {
            return Ok(());
        }
        if len == 0 {
            return Err(no(format!("weights layer {d} ({}) is empty", l.media_type)));
        }
        if self.known_whole(&d) {
            return Ok(());
        }
        weights_whole(&path, len).map_err(|why| no(format!("weights layer {d}: {why}")))?;
        self.remember_whole(d);
        Ok(())
    }

    fn known_whole(&self, d: &Digest) -> bool {
        crate::sync::lock(&self.whole).contains(d)
    }

    /// Blobs never change once named, so a blob found whole stays whole.
    fn remember_whole(&self, d: Digest) {
        let mut w = crate::sync::lock(&self.whole);
        if w.len() > 100_000 {
            w.clear();
        }
        w.insert(d);
    }
}

/// Is the weights file at `path` (of length `len`) whole, judged by its own header?
/// GGUF and safetensors are checked; other formats cannot be judged and pass when non-empty.
pub fn weights_whole(path: &Path, len: u64) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mut head = [0u8; 8];
    let n = read_up_to(&mut f, &mut head).map_err(|e| format!("cannot be read: {e}"))?;
    if n >= 4 && &head[..4] == crate::gguf::MAGIC {
        let f = File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
        let h = crate::gguf::read_header(BufReader::with_capacity(1 << 16, f))
            .map_err(|e| format!("GGUF header is cut short or invalid ({e})"))?;
        if len < h.data_end {
            return Err(format!(
                "GGUF is truncated: {len} bytes, its header declares tensor data up to {}",
                h.data_end
            ));
        }
        return Ok(());
    }
    if n == 8 {
        let header_len = u64::from_le_bytes(head);
        if let Some(end) = safetensors_end(&mut f, header_len)
            && len < end
        {
            return Err(format!("safetensors file is truncated: {len} bytes, its header declares {end}"));
        }
    }
    Ok(())
}

/// The length a safetensors file declares (8 + header + the furthest `data_offsets` end),
/// or None when the file does not look like safetensors at all.
fn safetensors_end(f: &mut File, header_len: u64) -> Option<u64> {
    if !(2..=100 << 20).contains(&header_len) {
        return None;
    }
    let mut header = vec![0u8; header_len as usize];
    if read_up_to(f, &mut header).ok()? != header.len() || header[0] != b'{' {
        return None;
    }
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header).ok()?;
    let mut end = 0u64;
    for (k, t) in &v {
        if k == "__metadata__" {
            continue;
        }
        let offs = t.get("data_offsets")?.as_array()?;
        end = end.max(offs.get(1)?.as_u64()?);
    }
    Some(8 + header_len + end)
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gguf_prefix_is_not_whole() {
        let dir = tempfile::tempdir().unwrap();
        let header = crate::fixture::gguf_header("llama", 15, &[("token_embd.weight", vec![2048, 1024])], None);
        let h = crate::gguf::read_header(&header[..]).unwrap();
        let path = dir.path().join("m.gguf");
        let mut f = File::create(&path).unwrap();
        f.write_all(&header).unwrap();
        f.set_len(h.data_end).unwrap();
        assert_eq!(weights_whole(&path, h.data_end), Ok(()));
        f.set_len(h.data_end - 1).unwrap();
        let err = weights_whole(&path, h.data_end - 1).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        // A header cut in the middle.
        f.set_len(20).unwrap();
        assert!(weights_whole(&path, 20).unwrap_err().contains("GGUF header"));
    }

    #[test]
    fn safetensors_length_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let header = br#"{"w":{"dtype":"F16","shape":[4,4],"data_offsets":[0,32]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[1u8; 32]);
        let path = dir.path().join("t.safetensors");
        fs::write(&path, &bytes).unwrap();
        assert_eq!(weights_whole(&path, bytes.len() as u64), Ok(()));
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(weights_whole(&path, bytes.len() as u64 - 1).is_err());
        // Not safetensors, not GGUF: cannot be judged, passes.
        fs::write(&path, [7u8; 64]).unwrap();
        assert_eq!(weights_whole(&path, 64), Ok(()));
    }
}
