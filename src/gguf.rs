//! A small, bounded GGUF header reader: metadata scalars and the tensor table, enough to
//! fill an Ollama config (family, parameter count, quantization) the way `ollama create`
//! does. Every length is checked before anything is allocated, so hostile input fails
//! with an error instead of exhausting memory.

use std::collections::BTreeMap;
use std::io::{self, Read};

pub const MAGIC: &[u8; 4] = b"GGUF";

/// Hard limits for hostile headers.
const MAX_STRING: u64 = 1 << 20;
const MAX_KV: u64 = 1 << 20;
const MAX_TENSORS: u64 = 1 << 24;
const MAX_DIMS: u32 = 8;
const MAX_ARRAY: u64 = 1 << 28;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
    /// Arrays are skipped; only their element count is kept.
    Array(u64),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    /// Sum over tensors of the product of their dimensions.
    pub parameter_count: u64,
    pub tensor_count: u64,
    /// Where the declared tensor data ends (file offset): a file shorter than this is
    /// truncated. Tensors of a ggml type this reader does not know count from their offset only.
    pub data_end: u64,
}

impl Header {
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }
    pub fn int(&self, key: &str) -> Option<i128> {
        match self.metadata.get(key) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }
    pub fn architecture(&self) -> &str {
        self.str("general.architecture").unwrap_or("unknown")
    }
    /// `general.file_type` as Ollama names it.
    pub fn file_type_name(&self) -> &'static str {
        self.int("general.file_type").map(file_type_name).unwrap_or("unknown")
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

struct Reader<R> {
    inner: R,
    /// Bytes consumed so far: where the tensor data starts is computed from it.
    pos: u64,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn string(&mut self) -> io::Result<String> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(bad(format!("GGUF string of {len} bytes is too long")));
        }
        let mut buf = vec![0u8; len as usize];
        self.inner.read_exact(&mut buf)?;
        self.pos += len;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        if copied != n {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n;
        Ok(())
    }
    fn value(&mut self, ty: u32, depth: u32) -> io::Result<Value> {
        Ok(match ty {
            0 => Value::Int(self.u8()? as i128),
            1 => Value::Int(self.u8()? as i8 as i128),
            2 => Value::Int(u16::from_le_bytes(self.bytes()?) as i128),
            3 => Value::Int(i16::from_le_bytes(self.bytes()?) as i128),
            4 => Value::Int(self.u32()? as i128),
            5 => Value::Int(i32::from_le_bytes(self.bytes()?) as i128),
            6 => Value::Float(f32::from_le_bytes(self.bytes()?) as f64),
            7 => Value::Bool(self.u8()? != 0),
            8 => Value::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(bad("GGUF arrays nested too deeply"));
                }
                let elem = self.u32()?;
                let count = self.u64()?;
                if count > MAX_ARRAY {
                    return Err(bad(format!("GGUF array of {count} elements is too long")));
                }
                let fixed = match elem {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    _ => None,
                };
                match fixed {
                    Some(size) => self.skip(count * size)?,
                    None => {
                        for _ in 0..count {
                            self.value(elem, depth + 1)?;
                        }
                    }
                }
                Value::Array(count)
            }
            10 => Value::Int(self.u64()? as i128),
            11 => Value::Int(i64::from_le_bytes(self.bytes()?) as i128),
            12 => Value::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(bad(format!("unknown GGUF value type {other}"))),
        })
    }
}

/// Read the header of a GGUF file (metadata and tensor table; no tensor data).
pub fn read_header(r: impl Read) -> io::Result<Header> {
    let mut r = Reader { inner: r, pos: 0 };
    if &r.bytes::<4>()? != MAGIC {
        return Err(bad("not a GGUF file (no GGUF magic)"));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(bad(format!("unsupported GGUF version {version}")));
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    if tensor_count > MAX_TENSORS || kv_count > MAX_KV {
        return Err(bad("GGUF header counts are implausible"));
    }
    let mut h = Header { version, tensor_count, ..Default::default() };
    for _ in 0..kv_count {
        let key = r.string()?;
        let ty = r.u32()?;
        let v = r.value(ty, 0)?;
        h.metadata.insert(key, v);
    }
    let mut params: u64 = 0;
    let mut tensors_end: u64 = 0;
    for _ in 0..tensor_count {
        let _name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims > MAX_DIMS {
            return Err(bad(format!("GGUF tensor with {n_dims} dimensions")));
        }
        let mut elems: u64 = 1;
        for _ in 0..n_dims {
            elems = elems.saturating_mul(r.u64()?);
        }
        let ty = r.u32()?;
        let offset = r.u64()?;
        params = params.saturating_add(elems);
        tensors_end = tensors_end.max(offset.saturating_add(tensor_bytes(ty, elems).unwrap_or(0)));
    }
    h.parameter_count = params;
    let alignment = match h.int("general.alignment") {
        Some(a) if a > 0 && a <= 1 << 20 => a as u64,
        _ => DEFAULT_ALIGNMENT,
    };
    h.data_end = r.pos.div_ceil(alignment).saturating_mul(alignment).saturating_add(tensors_end);
    Ok(h)
}

/// GGUF's default alignment of the tensor data section.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Bytes a tensor of ggml type `ty` with `elems` elements takes: (block size, block bytes)
/// from ggml's type traits. None for a type this table does not know.
pub fn tensor_bytes(ty: u32, elems: u64) -> Option<u64> {
    let (block, size): (u64, u64) = match ty {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        _ => return None,
    };
    Some(elems.div_ceil(block).saturating_mul(size))
}

/// Ollama's `FileType.String()` for llama.cpp's `general.file_type`.
pub fn file_type_name(v: i128) -> &'static str {
    match v {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => "unknown",
    }
}

/// Writes GGUF headers; used by fixtures and tests to make realistic model files.
pub mod write {
    use super::Value;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// A GGUF v3 header with the given metadata and tensors (`name`, dims, ggml type).
    /// Tensor data is not included; callers pad the file to the size they want.
    pub fn header(metadata: &[(&str, Value)], tensors: &[(&str, Vec<u64>, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(super::MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            string(&mut out, k);
            match v {
                Value::Int(i) => {
                    out.extend_from_slice(&4u32.to_le_bytes());
                    out.extend_from_slice(&(*i as u32).to_le_bytes());
                }
                Value::Float(f) => {
                    out.extend_from_slice(&6u32.to_le_bytes());
                    out.extend_from_slice(&(*f as f32).to_le_bytes());
                }
                Value::Bool(b) => {
                    out.extend_from_slice(&7u32.to_le_bytes());
                    out.push(*b as u8);
                }
                Value::Str(s) => {
                    out.extend_from_slice(&8u32.to_le_bytes());
                    string(&mut out, s);
                }
                Value::Array(n) => {
                    // An array of n strings "t0", "t1", … (like a tokenizer vocabulary).
                    out.extend_from_slice(&9u32.to_le_bytes());
                    out.extend_from_slice(&8u32.to_le_bytes());
                    out.extend_from_slice(&n.to_le_bytes());
                    for i in 0..*n {
                        string(&mut out, &format!("t{i}"));
                    }
                }
            }
        }
        let mut offset = 0u64;
        for (name, dims, ty) in tensors {
            string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            // Each tensor starts aligned, as llama.cpp writes them.
            let bytes = super::tensor_bytes(*ty, dims.iter().product::<u64>()).unwrap_or(0);
            offset += bytes.div_ceil(super::DEFAULT_ALIGNMENT) * super::DEFAULT_ALIGNMENT;
        }
        // Alignment padding to 32 bytes, as real files have.
        while out.len() % 32 != 0 {
            out.push(0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_header() {
        let bytes = write::header(
            &[
                ("general.architecture", Value::Str("llama".into())),
                ("general.file_type", Value::Int(15)),
                ("llama.context_length", Value::Int(131072)),
                ("tokenizer.ggml.tokens", Value::Array(5)),
            ],
            &[("token_embd.weight", vec![2048, 1000], 12), ("blk.0.attn_q.weight", vec![2048, 2048], 12)],
        );
        let h = read_header(&bytes[..]).unwrap();
        assert_eq!(h.architecture(), "llama");
        assert_eq!(h.file_type_name(), "Q4_K_M");
        assert_eq!(h.parameter_count, 2048 * 1000 + 2048 * 2048);
        assert_eq!(h.metadata.get("tokenizer.ggml.tokens"), Some(&Value::Array(5)));
        assert_eq!(h.int("llama.context_length"), Some(131072));
        // Data starts at the aligned end of the header; the second tensor ends the data.
        let first = (2048 * 1000 / 256 * 144u64).div_ceil(32) * 32;
        assert_eq!(h.data_end, bytes.len() as u64 + first + 2048 * 2048 / 256 * 144);
    }

    #[test]
    fn tensor_sizes_follow_ggml() {
        assert_eq!(tensor_bytes(0, 10), Some(40));
        assert_eq!(tensor_bytes(12, 512), Some(288));
        assert_eq!(tensor_bytes(8, 64), Some(68));
        assert_eq!(tensor_bytes(999, 64), None);
    }

    #[test]
    fn hostile_headers_fail_cleanly() {
        assert!(read_header(&b"GGUX"[..]).is_err());
        assert!(read_header(&b""[..]).is_err());
        let mut huge = b"GGUF".to_vec();
        huge.extend_from_slice(&3u32.to_le_bytes());
        huge.extend_from_slice(&0u64.to_le_bytes());
        huge.extend_from_slice(&1u64.to_le_bytes());
        huge.extend_from_slice(&u64::MAX.to_le_bytes()); // key length
        assert!(read_header(&huge[..]).is_err());
        // Every truncation of a valid header is an error, never a panic.
        let good = write::header(&[("general.architecture", Value::Str("x".into()))], &[("t", vec![4, 4], 0)]);
        for cut in 0..good.len() - 8 {
            let _ = read_header(&good[..cut]);
        }
    }
}
