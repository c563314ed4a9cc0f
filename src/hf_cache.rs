//! The Hugging Face hub cache as a source of GGUF files (what `huggingface-cli download`,
//! `huggingface_hub` and llama.cpp's `-hf` fill): `models--ORG--REPO/snapshots/REV/FILE`
//! are links to `models--ORG--REPO/blobs/<sha256>`, named by the same digest Ollama uses,
//! and never changed in place, so a blob of the cache can be hard-linked into the store.

use std::path::{Path, PathBuf};

/// Where the cache is: `--hf-cache DIR`, else `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (as `huggingface_hub` decides).
pub fn cache_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// One GGUF file of a cached repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedGguf {
    /// The file's name in the repository (`Qwen3-8B-Q4_K_M.gguf`).
    pub file: String,
    /// The blob it links to in the cache.
    pub blob: PathBuf,
}

/// The repository's folder in the cache: `models--ORG--REPO`.
fn repo_dir(cache: &Path, repo: &str) -> Option<PathBuf> {
    let (org, name) = repo.split_once('/')?;
    Some(cache.join(format!("models--{org}--{name}")))
}

/// The GGUF files (not vision projectors) of the revision `refs/main` names, else of the
/// newest snapshot, sorted by name.
pub fn ggufs(cache: &Path, repo: &str) -> Result<Vec<CachedGguf>, String> {
    let dir = repo_dir(cache, repo).ok_or_else(|| format!("{repo:?} is not ORG/REPO"))?;
    if !dir.is_dir() {
        return Err(format!("{repo} is not in the Hugging Face cache {}", cache.display()));
    }
    let snapshots = dir.join("snapshots");
    let rev = std::fs::read_to_string(dir.join("refs/main")).ok().map(|r| r.trim().to_string());
    let snapshot = match rev.map(|r| snapshots.join(r)).filter(|p| p.is_dir()) {
        Some(p) => p,
        None => std::fs::read_dir(&snapshots)
            .map_err(|e| format!("{}: {e}", snapshots.display()))?
            .flatten()
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
            .ok_or_else(|| format!("{repo} has no snapshot in the cache"))?,
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(&snapshot).map_err(|e| format!("{}: {e}", snapshot.display()))?.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let lower = file.to_ascii_lowercase();
        if !lower.ends_with(".gguf") || lower.starts_with("mmproj") {
            continue;
        }
        // The snapshot entry is a link into blobs/ (a copy on systems without symlinks).
        let blob = std::fs::canonicalize(e.path()).map_err(|e| format!("{file}: {e}"))?;
        out.push(CachedGguf { file, blob });
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

/// The file a tag asks for, as Ollama's `hf.co/ORG/REPO:QUANT` picks it: the one whose
/// name holds the tag (any case); without a tag, `Q4_K_M` if there is one, else the only
/// file. Returns the file and the tag the model gets.
pub fn pick<'a>(files: &'a [CachedGguf], tag: Option<&str>) -> Result<(&'a CachedGguf, String), String> {
    let holds = |f: &CachedGguf, t: &str| f.file.to_ascii_lowercase().contains(&t.to_ascii_lowercase());
    match tag {
        Some(t) => {
            let found: Vec<&CachedGguf> = files.iter().filter(|f| holds(f, t)).collect();
            match found.as_slice() {
                [one] => Ok((one, t.to_string())),
                [] => Err(format!("no GGUF file for {t:?} in the cache: {}", names(files))),
                _ => Err(format!(
                    "{t:?} matches several files: {}",
                    names(&found.into_iter().cloned().collect::<Vec<_>>())
                )),
            }
        }
        None => match (files.iter().find(|f| holds(f, "q4_k_m")), files) {
            (Some(f), _) => Ok((f, "Q4_K_M".to_string())),
            (None, [one]) => Ok((one, "latest".to_string())),
            (None, []) => Err("no GGUF file in the cache for it".to_string()),
            (None, _) => Err(format!("several GGUF files; name one with :QUANT: {}", names(files))),
        },
    }
}

/// The `.hf` view of a cache: `ORG/REPO:TAG/model.gguf` for every GGUF of every cached
/// repository (TAG the file's quantization, or its name when two files share one), with
/// the blob file each is read from and the model `hf.co/ORG/REPO:TAG` it is. Files whose
/// blob is not named by a SHA-256 are left out.
pub fn view_files(cache: &Path) -> Vec<(String, crate::store::Digest, PathBuf, crate::name::Name)> {
    let mut out = Vec::new();
    let mut repos: Vec<String> = std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("models--").and_then(|r| r.split_once("--")).map(|(o, r)| format!("{o}/{r}")))
        .collect();
    repos.sort();
    for repo in repos {
        let Ok(files) = ggufs(cache, &repo) else { continue };
        let tags: Vec<String> = files
            .iter()
            .map(|f| crate::views::quant_of_file(&f.file).unwrap_or_else(|| crate::views::tag_of_stem(&f.file)))
            .collect();
        for (f, tag) in files.iter().zip(&tags) {
            let shared = tags.iter().filter(|t| t.eq_ignore_ascii_case(tag)).count() > 1;
            let tag = if shared { crate::views::tag_of_stem(&f.file) } else { tag.clone() };
            let (Some((org, name)), Some(d)) = (
                repo.split_once('/'),
                f.blob.file_name().and_then(|n| n.to_str()).and_then(crate::store::Digest::from_hex),
            ) else {
                continue;
            };
            if let Some(model) = crate::views::hf_model(org, name, &tag) {
                out.push((format!("{repo}:{tag}/model.gguf"), d, f.blob.clone(), model));
            }
        }
    }
    out
}

fn names(files: &[CachedGguf]) -> String {
    files.iter().map(|f| f.file.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> CachedGguf {
        CachedGguf { file: name.into(), blob: PathBuf::from("/b") }
    }

    #[test]
    fn a_tag_picks_the_file_as_ollama_does() {
        let files = vec![f("Qwen3-8B-Q4_K_M.gguf"), f("Qwen3-8B-Q8_0.gguf")];
        assert_eq!(pick(&files, Some("q8_0")).unwrap().0.file, "Qwen3-8B-Q8_0.gguf");
        assert_eq!(pick(&files, Some("Q8_0")).unwrap().1, "Q8_0");
        assert_eq!(pick(&files, None).unwrap(), (&files[0], "Q4_K_M".to_string()));
        assert!(pick(&files, Some("IQ2_XS")).unwrap_err().contains("Qwen3-8B-Q8_0.gguf"));
        assert!(pick(&files, Some("Q")).unwrap_err().contains("several"));
        let one = vec![f("model.gguf")];
        assert_eq!(pick(&one, None).unwrap().1, "latest");
    }
}
