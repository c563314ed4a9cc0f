//! A realistic Ollama store for tests and benchmarks: GGUF headers with real metadata,
//! models sharing a base, two licenses, a namespace, another host, a host with a port,
//! a safetensors-style model with named layers, and a large sparse weights blob.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::gguf::{Value, write};
use crate::name::Name;
use crate::store::config::GeneratedConfig;
use crate::store::manifest::{CONFIG_MEDIA_TYPE, Digest, LAYER_PREFIX, Layer, Manifest, go_json};
use crate::store::{Store, hash_file};

pub const LLAMA: &str = "llama3.2:latest";
pub const CUSTOM: &str = "myuser/llama3.2:custom";
pub const HF: &str = "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M";
pub const PORT: &str = "localhost:5000/team/tiny:v1";
pub const QWEN: &str = "qwen2.5:0.5b";
pub const MLX: &str = "mlx-community/flux:latest";

pub const TEMPLATE: &str = "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>";
pub const LICENSE_1: &str =
    "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\nLlama 3.2 Version Release Date: September 25, 2024\n";
pub const LICENSE_2: &str =
    "Llama 3.2 Acceptable Use Policy\nMeta is committed to promoting safe and fair use of its tools.\n";
pub const APACHE: &str = "Apache License\nVersion 2.0, January 2004\nhttp://www.apache.org/licenses/\n";
pub const SYSTEM_CUSTOM: &str = "You are a pirate. Answer like one.\n";

/// What the fixture made, for assertions.
#[derive(Debug, Clone)]
pub struct Info {
    pub big_model: Digest,
    pub big_size: u64,
    pub small_model: Digest,
    pub template: Digest,
    pub system_custom: Digest,
    pub models: Vec<Name>,
}

/// A GGUF file: real header plus zero padding up to `size` (sparse when written with set_len).
pub fn gguf_header(arch: &str, file_type: u32, tensors: &[(&str, Vec<u64>)], general_type: Option<&str>) -> Vec<u8> {
    gguf_header_with(arch, file_type, tensors, general_type, None)
}

/// `gguf_header`, with a Jinja chat template (`tokenizer.chat_template`) when given.
pub fn gguf_header_with(
    arch: &str,
    file_type: u32,
    tensors: &[(&str, Vec<u64>)],
    general_type: Option<&str>,
    chat_template: Option<&str>,
) -> Vec<u8> {
    let mut meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::Str(arch.into())),
        ("general.name", Value::Str(format!("{arch} fixture"))),
        ("general.file_type", Value::Int(file_type as i128)),
        ("tokenizer.ggml.tokens", Value::Array(8)),
    ];
    if let Some(t) = general_type {
        meta.push(("general.type", Value::Str(t.into())));
    }
    if let Some(t) = chat_template {
        meta.push(("tokenizer.chat_template", Value::Str(t.into())));
    }
    let ctx_key = format!("{arch}.context_length");
    meta.push((Box::leak(ctx_key.into_boxed_str()), Value::Int(131072)));
    let t: Vec<(&str, Vec<u64>, u32)> = tensors.iter().map(|(n, d)| (*n, d.clone(), 12)).collect();
    write::header(&meta, &t)
}

/// Where the tensor data a GGUF header declares ends: a whole file is at least this long.
pub fn data_end(header: &[u8]) -> u64 {
    crate::gguf::read_header(header).map(|h| h.data_end).unwrap_or(header.len() as u64)
}

fn blob_from_bytes(store: &Store, bytes: &[u8]) -> io::Result<(Digest, u64)> {
    let (d, len, _) = store.ingest_bytes(bytes).map_err(io::Error::other)?;
    Ok((d, len))
}

/// Write a GGUF blob of `size` bytes: header then a hole (or pseudo-random data when dense).
fn sparse_gguf_blob(store: &Store, header: &[u8], size: u64, dense: bool) -> io::Result<(Digest, u64)> {
    let size = size.max(data_end(header));
    let (mut f, path) = store.temp_file()?;
    f.write_all(header)?;
    if dense && size > 32 << 20 {
        write_noise(&mut f, size - header.len() as u64)?;
    }
    f.set_len(size.max(header.len() as u64))?;
    let (d, len) = hash_file(&path)?;
    store.adopt_blob(&path, &f, &d, len)?;
    Ok((d, len))
}

fn layer(short: &str, d: Digest, size: u64) -> Layer {
    Layer::new(&format!("{LAYER_PREFIX}{short}"), d, size)
}

fn config_for(store: &Store, header: &[u8]) -> io::Result<Layer> {
    let h = crate::gguf::read_header(header)?;
    let (d, s) = blob_from_bytes(store, &GeneratedConfig::from_gguf(&h).to_bytes())?;
    Ok(Layer::new(CONFIG_MEDIA_TYPE, d, s))
}

fn put(store: &Store, name: &str, m: &Manifest) -> io::Result<Name> {
    let n = Name::parse(name).map_err(io::Error::other)?;
    store.write_manifest(&n, &m.to_go_json()).map_err(io::Error::other)?;
    Ok(n)
}

/// Build the fixture store in `root` (created if missing). `big_size` is the length of the
/// shared llama weights (≥ 256 MiB in the mount tests; sparse, so it costs no disk).
pub fn build(root: &Path, big_size: u64) -> io::Result<Info> {
    build_with(root, big_size, false)
}

/// `build`, with the big weights filled with data (real disk blocks) instead of a hole
/// when `dense` (for benchmarks).
pub fn build_with(root: &Path, big_size: u64, dense: bool) -> io::Result<Info> {
    fs::create_dir_all(root)?;
    let store = Store::open(root).map_err(io::Error::other)?;
    store.prepare_for_writes().map_err(io::Error::other)?;

    let llama_header = gguf_header(
        "llama",
        15,
        &[
            // Scaled down so the declared tensor data fits the 4 MiB weights of unit tests.
            ("token_embd.weight", vec![2048, 2048]),
            ("blk.0.attn_q.weight", vec![2048, 1024]),
            ("output_norm.weight", vec![2048]),
        ],
        None,
    );
    let (big, big_len) = sparse_gguf_blob(&store, &llama_header, big_size, dense)?;
    let llama_config = config_for(&store, &llama_header)?;
    let (tpl, tpl_len) = blob_from_bytes(&store, TEMPLATE.as_bytes())?;
    let (lic1, lic1_len) = blob_from_bytes(&store, LICENSE_1.as_bytes())?;
    let (lic2, lic2_len) = blob_from_bytes(&store, LICENSE_2.as_bytes())?;
    let params = serde_json::json!({"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]});
    let (par, par_len) = blob_from_bytes(&store, &go_json(&params))?;
    let base_layers = vec![
        layer("model", big, big_len),
        layer("template", tpl, tpl_len),
        layer("license", lic1, lic1_len),
        layer("license", lic2, lic2_len),
        layer("params", par, par_len),
    ];
    let mut models = vec![put(&store, LLAMA, &Manifest::new(llama_config.clone(), base_layers.clone()))?];

    // A derived model over the same weights with its own system prompt.
    let (sys, sys_len) = blob_from_bytes(&store, SYSTEM_CUSTOM.as_bytes())?;
    let mut custom_layers = base_layers.clone();
    custom_layers[0].from = LLAMA.into();
    custom_layers.insert(2, layer("system", sys, sys_len));
    models.push(put(&store, CUSTOM, &Manifest::new(llama_config.clone(), custom_layers))?);

    // Another host, its own small weights (a real header, 4 MiB).
    let small_header = gguf_header(
        "llama",
        15,
        &[("token_embd.weight", vec![2048, 512]), ("blk.0.ffn_up.weight", vec![2048, 2048])],
        None,
    );
    let (small, small_len) = sparse_gguf_blob(&store, &small_header, 4 << 20, false)?;
    let hf_config = config_for(&store, &small_header)?;
    models.push(put(
        &store,
        HF,
        &Manifest::new(hf_config, vec![layer("model", small, small_len), layer("template", tpl, tpl_len)]),
    )?);

    // A host with a port, weights plus two LoRA adapters.
    let tiny_header = gguf_header("qwen2", 7, &[("token_embd.weight", vec![896, 1000])], None);
    let (tiny, tiny_len) = sparse_gguf_blob(&store, &tiny_header, 1 << 20, false)?;
    let ad1_header = gguf_header("qwen2", 1, &[("blk.0.attn_q.lora_a", vec![896, 16])], Some("adapter"));
    let (ad1, ad1_len) = sparse_gguf_blob(&store, &ad1_header, 64 << 10, false)?;
    let ad2_header = gguf_header("qwen2", 1, &[("blk.0.attn_k.lora_a", vec![896, 16])], Some("adapter"));
    let (ad2, ad2_len) = sparse_gguf_blob(&store, &ad2_header, 96 << 10, false)?;
    let tiny_config = config_for(&store, &tiny_header)?;
    models.push(put(
        &store,
        PORT,
        &Manifest::new(
            tiny_config.clone(),
            vec![layer("model", tiny, tiny_len), layer("adapter", ad1, ad1_len), layer("adapter", ad2, ad2_len)],
        ),
    )?);

    // A vision model with a projector and an Apache license, sharing the tiny weights.
    let proj_header = gguf_header("clip", 1, &[("v.patch_embd.weight", vec![14, 14, 3, 128])], None);
    let (proj, proj_len) = sparse_gguf_blob(&store, &proj_header, 256 << 10, false)?;
    let (apache, apache_len) = blob_from_bytes(&store, APACHE.as_bytes())?;
    let msgs =
        serde_json::json!([{"role": "user", "content": "Hi & welcome"}, {"role": "assistant", "content": "Hello!"}]);
    let (msg, msg_len) = blob_from_bytes(&store, &go_json(&msgs))?;
    models.push(put(
        &store,
        QWEN,
        &Manifest::new(
            tiny_config,
            vec![
                layer("model", tiny, tiny_len),
                layer("projector", proj, proj_len),
                layer("license", apache, apache_len),
                layer("messages", msg, msg_len),
            ],
        ),
    )?);

    // A safetensors-style model: named tensor and json layers.
    let (t1, t1_len) = blob_from_bytes(&store, &[7u8; 4096])?;
    let (j1, j1_len) = blob_from_bytes(&store, b"{\"architectures\":[\"FluxModel\"]}\n")?;
    let st_config = serde_json::json!({"model_format":"safetensors","model_family":"flux","model_families":["flux"],"model_type":"12B","file_type":"BF16","architecture":"amd64","os":"linux"});
    let (stc, stc_len) = blob_from_bytes(&store, &go_json(&st_config))?;
    let mut tensor = layer("tensor", t1, t1_len);
    tensor.name = "transformer/blocks.0.weight".into();
    let mut json = layer("json", j1, j1_len);
    json.name = "config.json".into();
    models.push(put(&store, MLX, &Manifest::new(Layer::new(CONFIG_MEDIA_TYPE, stc, stc_len), vec![tensor, json]))?);

    // Leave no scratch folder behind: the fixture is a plain Ollama store.
    let _ = fs::remove_dir_all(store.scratch_dir());
    Ok(Info { big_model: big, big_size: big_len, small_model: small, template: tpl, system_custom: sys, models })
}

/// Write a standalone GGUF file (header + hole) outside any store, for import tests.
pub fn write_gguf_file(path: &Path, arch: &str, file_type: u32, size: u64) -> io::Result<()> {
    write_chat_gguf_file(path, arch, file_type, size, None)
}

/// `write_gguf_file` with a Jinja chat template in its header.
pub fn write_chat_gguf_file(
    path: &Path,
    arch: &str,
    file_type: u32,
    size: u64,
    chat_template: Option<&str>,
) -> io::Result<()> {
    let tensors = [("token_embd.weight", vec![1024, 1024]), ("blk.0.attn_v.weight", vec![1024, 512])];
    let header = gguf_header_with(arch, file_type, &tensors, None, chat_template);
    let mut f: File = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    f.write_all(&header)?;
    f.set_len(size.max(data_end(&header)))?;
    f.sync_all()
}

/// Pseudo-random bytes (xorshift), fast and incompressible enough to defeat any dedupe.
pub fn write_noise(w: &mut impl Write, mut len: u64) -> io::Result<()> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ len;
    let mut buf = vec![0u8; 1 << 20];
    while len > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let n = (len as usize).min(buf.len());
        w.write_all(&buf[..n])?;
        len -= n as u64;
    }
    Ok(())
}

/// Add `n` small models (`bulkN:v1`, all at the mount root) with `per_model` blobs each (weights, template, system,
/// params, config), written directly without fsync: a large store for benchmarks.
pub fn add_many(root: &Path, n: usize, per_model: usize) -> io::Result<()> {
    let blobs = root.join("blobs");
    fs::create_dir_all(&blobs)?;
    let put = |bytes: &[u8]| -> io::Result<(Digest, u64)> {
        let d = Digest::of_bytes(bytes);
        fs::write(blobs.join(d.blob_file_name()), bytes)?;
        Ok((d, bytes.len() as u64))
    };
    let kinds = ["template", "system", "params", "license", "messages"];
    for i in 0..n {
        let header = gguf_header("llama", 15, &[("token_embd.weight", vec![64, 100 + i as u64])], None);
        let mut weights = header.clone();
        weights.resize(data_end(&header) as usize, 0);
        let (wd, wl) = put(&weights)?;
        let h = crate::gguf::read_header(&header[..])?;
        let (cd, cl) = put(&GeneratedConfig::from_gguf(&h).to_bytes())?;
        let mut layers = vec![layer("model", wd, wl)];
        for k in kinds.iter().take(per_model.saturating_sub(2)) {
            let (d, l) = put(format!("{k} of model {i}\n").as_bytes())?;
            layers.push(layer(k, d, l));
        }
        let m = Manifest::new(Layer::new(CONFIG_MEDIA_TYPE, cd, cl), layers);
        let name = Name::parse(&format!("bulk{i}:v1")).map_err(io::Error::other)?;
        let path = root.join("manifests").join(name.manifest_path());
        fs::create_dir_all(path.parent().unwrap_or(root))?;
        fs::write(path, m.to_go_json())?;
    }
    Ok(())
}
