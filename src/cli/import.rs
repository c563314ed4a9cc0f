//! Bringing models in from files on this machine: `create -f Modelfile` (FROM a model or a
//! GGUF file) and `import` (GGUF files, or a Hugging Face cache's), over `store::import`.

use std::path::{Path, PathBuf};

use super::store_exit_code;
use crate::name::Name;
use crate::store::{Store, StoreError};

/// `ollamafs create NAME -f Modelfile`, over the same engine as `/api/create`.
pub(super) fn create(s: Store, raw: &str, file: &Path) -> Result<(), StoreError> {
    use crate::modelfile::Command as M;
    let name = Name::parse(raw).map_err(|_| StoreError::InvalidDestination(raw.to_string()))?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| std::io::Error::new(e.kind(), format!("Modelfile {}: {e}", file.display())))?;
    let cmds = crate::modelfile::parse(&text).map_err(StoreError::Invalid)?;
    s.prepare_for_writes()?;
    let dir =
        file.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p }).unwrap_or(Path::new("."));
    let mut spec = crate::store::create::CreateSpec::default();
    let mut params = serde_json::Map::new();
    let mut messages = Vec::new();
    println!("gathering model components");
    for c in cmds {
        match c {
            M::From(f) => match local_file(dir, &f) {
                Some(path) => spec.files.push(blob_of_file(&s, &path)?),
                None => {
                    refuse_missing_or_folder(dir, &f)?;
                    spec.from = Some(f)
                }
            },
            M::Adapter(f) if local_file(dir, &f).is_some() => {
                let path = local_file(dir, &f).unwrap_or_default();
                spec.adapters.push(blob_of_file(&s, &path)?);
            }
            M::Adapter(f) => return Err(StoreError::Invalid(format!("adapter file {f}: no such file"))),
            M::System(t) => spec.system = Some(t),
            M::Template(t) => spec.template = Some(t),
            M::License(t) => spec.license.get_or_insert_with(Vec::new).push(t),
            M::Parameter(k, v) => {
                let value = crate::store::create::parameter_value(&k, &v).map_err(StoreError::Invalid)?;
                match (k.as_str(), params.get_mut(&k)) {
                    ("stop", Some(serde_json::Value::Array(list))) => list.push(value),
                    ("stop", _) => {
                        params.insert(k, serde_json::Value::Array(vec![value]));
                    }
                    _ => {
                        params.insert(k, value);
                    }
                }
            }
            M::Message(role, content) => messages.push(serde_json::json!({ "role": role, "content": content })),
        }
    }
    if !params.is_empty() {
        spec.parameters = Some(params);
    }
    if !messages.is_empty() {
        spec.messages = Some(messages);
    }
    let bytes = s.create_manifest(&spec, &mut |line| println!("{line}"))?;
    println!("writing manifest");
    let name = s.spelling_on_disk(&name);
    crate::catalog::Catalog::put_manifest(&crate::api::StoreCatalog::new(std::sync::Arc::new(s), false), &name, bytes)?;
    println!("success");
    Ok(())
}

/// A FROM/ADAPTER argument that names a file (relative to the Modelfile, `~/`, or absolute).
fn local_file(dir: &Path, arg: &str) -> Option<PathBuf> {
    let p = match arg.strip_prefix("~/") {
        Some(rest) => PathBuf::from(std::env::var_os("HOME")?).join(rest),
        None => dir.join(arg),
    };
    p.is_file().then_some(p)
}

/// A FROM that names a path but no file: a folder (safetensors weights, which only a
/// conversion to GGUF could use) or nothing at all. Anything else is a model name.
fn refuse_missing_or_folder(dir: &Path, arg: &str) -> Result<(), StoreError> {
    let p = match arg.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(rest)),
        None => Some(dir.join(arg)),
    };
    if p.as_ref().is_some_and(|p| p.is_dir()) {
        return Err(StoreError::Invalid(format!(
            "FROM {arg}: a folder (safetensors weights) must be converted to GGUF first, which ollamafs does not do \
             (it runs no models); convert it, for example with llama.cpp's convert_hf_to_gguf.py, and FROM the .gguf"
        )));
    }
    let path_like = ["./", "../", "/", "~/"].iter().any(|p| arg.starts_with(p))
        || [".gguf", ".safetensors", ".bin"].iter().any(|e| arg.to_ascii_lowercase().ends_with(e));
    if path_like {
        return Err(StoreError::Invalid(format!("FROM {arg}: no such file")));
    }
    Ok(())
}

/// The blob of a local file: a blob of this store as it is (its name is its digest, as
/// `show --modelfile` prints them), anything else streamed in through the ingest path.
fn blob_of_file(s: &Store, path: &Path) -> Result<crate::store::Digest, StoreError> {
    if let (Ok(canon), Some(name)) = (path.canonicalize(), path.file_name().and_then(|n| n.to_str()))
        && canon.parent() == Some(s.blobs_dir())
        && let Some(d) = name.strip_prefix("sha256-").and_then(crate::store::Digest::from_hex)
    {
        return Ok(d);
    }
    check_gguf(path).map_err(|e| StoreError::Invalid(format!("{}: {e}", path.display())))?;
    let i = s.import_file(path, false)?;
    println!("importing file {}: {}, {} bytes written", path.display(), i.way.describe(), i.written);
    Ok(i.digest)
}

/// `ollamafs import PATH…`: each GGUF file becomes a model, its data brought in without a
/// copy where the disk allows (see `store::import`).
pub(super) fn import(s: Store, name: Option<&str>, link: bool, paths: &[PathBuf]) -> Result<(), StoreError> {
    if name.is_some() && paths.len() > 1 {
        eprintln!("Error: --name names one model; import the files one by one to name each");
        std::process::exit(2);
    }
    s.prepare_for_writes()?;
    let s = std::sync::Arc::new(s);
    let catalog = crate::api::StoreCatalog::new(s.clone(), false);
    let (mut done, mut written, mut first_err) = (0usize, 0u64, None);
    for path in paths {
        let res = (|| -> Result<(Name, crate::store::Imported), StoreError> {
            let raw = match name {
                Some(n) => n.to_string(),
                None => {
                    name_for_file(path).ok_or_else(|| StoreError::InvalidDestination(path.display().to_string()))?
                }
            };
            let model = Name::parse(&raw).map_err(|_| StoreError::InvalidDestination(raw.clone()))?;
            import_one(&s, &catalog, path, &model, link, None)
        })();
        match res {
            Ok((model, i)) => {
                println!(
                    "imported {} as {}: {}, {} bytes written",
                    path.display(),
                    model.display_shortest(),
                    i.way.describe(),
                    i.written
                );
                done += 1;
                written += i.written;
            }
            Err(e) => {
                eprintln!("Error: {}: {e}", path.display());
                first_err.get_or_insert(e);
            }
        }
    }
    if paths.len() > 1 {
        println!("imported {done} of {} files, {written} bytes written", paths.len());
    }
    match first_err {
        Some(e) => std::process::exit(store_exit_code(&e)),
        None => Ok(()),
    }
}

/// Only GGUF files come in: anything else is refused before a byte of it is stored.
pub(super) fn check_gguf(path: &Path) -> Result<(), StoreError> {
    match crate::gguf::read_header(std::io::BufReader::new(std::fs::File::open(path)?)) {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().starts_with("not a GGUF") => {
            Err(StoreError::Invalid(format!("{e}; only GGUF models can be imported")))
        }
        Err(e) => Err(StoreError::Invalid(format!("not a GGUF file ({e}); only GGUF models can be imported"))),
    }
}

/// One GGUF file becomes model `model`; on failure the store is as it was.
fn import_one(
    s: &Store,
    catalog: &crate::api::StoreCatalog,
    path: &Path,
    model: &Name,
    link: bool,
    expected: Option<crate::store::Digest>,
) -> Result<(Name, crate::store::Imported), StoreError> {
    check_gguf(path)?;
    let imported = s.import_file(path, link)?;
    let added: Vec<_> = (imported.way != crate::store::Way::Present).then_some(imported.digest).into_iter().collect();
    if let Some(want) = expected.filter(|d| *d != imported.digest) {
        s.prune(added, &s.digests_in_use());
        return Err(StoreError::DigestMismatch { expected: want.prefixed(), got: imported.digest.prefixed() });
    }
    let model = publish_files(s, catalog, model, vec![imported.digest], added)?;
    Ok((model, imported))
}

/// Model `model` of GGUF blobs in the store (`added`: those this import brought in). On
/// failure those and the text blobs the manifest would have used go again: the store is
/// as it was.
pub(super) fn publish_files(
    s: &Store,
    catalog: &crate::api::StoreCatalog,
    model: &Name,
    files: Vec<crate::store::Digest>,
    added: Vec<crate::store::Digest>,
) -> Result<Name, StoreError> {
    let mut made = Vec::new();
    let res = (|| -> Result<Name, StoreError> {
        let spec = crate::store::create::CreateSpec { files: files.clone(), ..Default::default() };
        let bytes = s.create_manifest(&spec, &mut |_| {})?;
        made = crate::store::Manifest::parse(&bytes).map(|m| m.digests().collect()).unwrap_or_default();
        let model = s.spelling_on_disk(model);
        crate::catalog::Catalog::put_manifest(catalog, &model, bytes)?;
        Ok(model)
    })();
    if res.is_err() {
        made.retain(|d| !files.contains(d));
        s.prune(added.into_iter().chain(made), &s.digests_in_use());
    }
    res
}

/// `pull hf.co/ORG/REPO[:QUANT]` when the Hugging Face cache holds that file: the
/// `import --hf` spec and the model name to make (no download).
pub(super) fn hf_cache_source(raw: &str, cache: Option<&Path>) -> Option<(String, String)> {
    let name = Name::parse(raw).ok()?;
    if !crate::views::is_hf_host(&name.host) {
        return None;
    }
    let cache = crate::hf_cache::cache_dir(cache)?;
    let repo = format!("{}/{}", name.namespace, name.model);
    let files = crate::hf_cache::ggufs(&cache, &repo).ok()?;
    let tag = (!name.tag.eq_ignore_ascii_case(crate::name::DEFAULT_TAG)).then_some(name.tag.as_str());
    crate::hf_cache::pick(&files, tag).ok()?;
    println!("{} is in the Hugging Face cache {}: no download", name.display_shortest(), cache.display());
    let spec = match tag {
        Some(t) => format!("{repo}:{t}"),
        None => repo,
    };
    Some((spec, name.display_shortest()))
}

/// `ollamafs import --hf ORG/REPO[:QUANT]`: a GGUF of the Hugging Face cache becomes
/// `hf.co/ORG/REPO:QUANT`, its blob hard-linked from the cache (whose blobs never change).
pub(super) fn import_from_hf_cache(
    s: Store,
    spec: &str,
    name: Option<&str>,
    cache: Option<&Path>,
) -> Result<(), StoreError> {
    let cache = crate::hf_cache::cache_dir(cache)
        .ok_or_else(|| StoreError::Invalid("no Hugging Face cache: give --hf-cache DIR".into()))?;
    let (repo, tag) = match spec.split_once(':') {
        Some((r, t)) => (r, Some(t)),
        None => (spec, None),
    };
    let files = crate::hf_cache::ggufs(&cache, repo).map_err(StoreError::Invalid)?;
    let (file, tag) = crate::hf_cache::pick(&files, tag).map_err(StoreError::Invalid)?;
    let raw = name.map(String::from).unwrap_or_else(|| format!("hf.co/{repo}:{tag}"));
    let model = Name::parse(&raw).map_err(|_| StoreError::InvalidDestination(raw.clone()))?;
    s.prepare_for_writes()?;
    let s = std::sync::Arc::new(s);
    let catalog = crate::api::StoreCatalog::new(s.clone(), false);
    // The cache names its blobs by their SHA-256: one that no longer hashes to its name
    // was changed, and is refused.
    let expected = file.blob.file_name().and_then(|n| n.to_str()).and_then(crate::store::Digest::from_hex);
    let (model, i) = import_one(&s, &catalog, &file.blob, &model, true, expected)?;
    println!(
        "imported {} ({}) as {}: {}, {} bytes written",
        file.file,
        repo,
        model.display_shortest(),
        i.way.describe(),
        i.written
    );
    Ok(())
}

/// A model name for a GGUF file: its name without `.gguf`, with a quantization suffix as
/// the tag as Hugging Face names them (`Qwen3-8B-Q4_K_M.gguf` is `qwen3-8b:q4_k_m`), else
/// `:latest`; characters a name cannot hold become `-`.
fn name_for_file(path: &Path) -> Option<String> {
    let stem = path.file_name()?.to_str()?;
    let stem = stem.strip_suffix(".gguf").or_else(|| stem.strip_suffix(".GGUF")).unwrap_or(stem).to_ascii_lowercase();
    let clean = |s: &str| -> String {
        let c: String =
            s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect();
        c.trim_matches(|c: char| !c.is_ascii_alphanumeric()).chars().take(80).collect()
    };
    // q4_k_m, q8_0, iq4_xs, f16, bf16, f32, mxfp4: a letter prefix, then a digit.
    let quant = |t: &str| {
        ["q", "iq", "f", "bf", "mxfp"]
            .iter()
            .any(|p| t.strip_prefix(p).is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit())))
    };
    let split = stem.rfind(['-', '.']).filter(|&i| quant(&stem[i + 1..]));
    let (model, tag) = match split {
        Some(i) => (clean(&stem[..i]), clean(&stem[i + 1..])),
        None => (clean(&stem), "latest".to_string()),
    };
    (!model.is_empty() && !tag.is_empty()).then(|| format!("{model}:{tag}"))
}

#[cfg(test)]
mod import_names {
    use super::name_for_file;
    use std::path::Path;

    #[test]
    fn a_files_name_becomes_a_model_name() {
        let n = |f: &str| name_for_file(Path::new(f));
        assert_eq!(n("/x/Qwen3-8B-Q4_K_M.gguf").as_deref(), Some("qwen3-8b:q4_k_m"));
        assert_eq!(n("gemma-3-270m-q4_k_m.gguf").as_deref(), Some("gemma-3-270m:q4_k_m"));
        assert_eq!(n("Llama-3.2-1B-Instruct.IQ4_XS.gguf").as_deref(), Some("llama-3.2-1b-instruct:iq4_xs"));
        assert_eq!(n("phi-4-bf16.gguf").as_deref(), Some("phi-4:bf16"));
        assert_eq!(n("my model (final).gguf").as_deref(), Some("my-model--final:latest"));
        assert_eq!(n("mistral-7b.gguf").as_deref(), Some("mistral-7b:latest"), "7b is no quantization");
        assert_eq!(n("(((.gguf"), None);
    }
}
