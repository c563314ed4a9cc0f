//! App views: the store's GGUF files laid out as other apps expect a models folder.
//!
//! * LM Studio scans `PUBLISHER/MODEL-FOLDER/FILE.gguf` (two levels, a vision projector
//!   beside it as `mmproj-*.gguf`) and downloads into the same shape (Hugging Face's
//!   `ORG/REPO/FILE.gguf`).
//! * Flat-folder apps (GPT4All, koboldcpp, text-generation-webui) want one folder of
//!   `*.gguf` files.
//!
//! Pure naming: which path each model's weights get in a view. The mount serves those
//! paths (`fs::views`); `ollamafs import --lmstudio` reads the same shape.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::name::{DEFAULT_HOST, Name};
use crate::store::Digest;
use crate::store::manifest::{Manifest, Role};

/// The views a mount can show, each a folder at the mount's root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViewKind {
    /// `.lmstudio/PUBLISHER/FOLDER/FILE.gguf`
    LmStudio,
    /// `.gguf/NAME-TAG.gguf`
    Flat,
    /// `.hf/ORG/REPO:QUANT/model.gguf`: the Hugging Face cache's GGUF files (`--hf-cache`)
    HfCache,
}

impl ViewKind {
    pub fn folder(self) -> &'static str {
        match self {
            ViewKind::LmStudio => ".lmstudio",
            ViewKind::Flat => ".gguf",
            ViewKind::HfCache => ".hf",
        }
    }

    /// `--view lmstudio|gguf`.
    pub fn parse(s: &str) -> Option<ViewKind> {
        match s {
            "lmstudio" => Some(ViewKind::LmStudio),
            "gguf" => Some(ViewKind::Flat),
            _ => None,
        }
    }
}

/// One file of a view: a model's weights or projector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewFile {
    /// Path inside the view folder (`ollama/llama3.2-latest/llama3.2-latest.gguf`).
    pub path: String,
    pub digest: Digest,
    pub model: Name,
    pub projector: bool,
}

/// Hugging Face hosts: their models keep the repository's own shape.
pub fn is_hf_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("hf.co") || host.eq_ignore_ascii_case("huggingface.co")
}

/// The quantization a GGUF file's name states, as Hugging Face's Ollama integration reads
/// it (`Qwen3-8B-Q4_K_M.gguf` → `Q4_K_M`, `x.IQ4_XS.gguf` → `IQ4_XS`, `phi-4-bf16.gguf` →
/// `BF16`): the last `-`/`.`-separated part that is a letter prefix then a digit.
pub fn quant_of_file(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".gguf").or_else(|| file.strip_suffix(".GGUF")).unwrap_or(file);
    let i = stem.rfind(['-', '.'])?;
    let t = &stem[i + 1..];
    let lower = t.to_ascii_lowercase();
    let quant = ["q", "iq", "f", "bf", "mxfp", "tq"]
        .iter()
        .any(|p| lower.strip_prefix(p).is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit())));
    let clean = t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (quant && clean && !t.is_empty()).then(|| t.to_ascii_uppercase())
}

/// `x.gguf` that is the main weights (not a projector): what a view publishes.
pub fn is_model_file(file: &str) -> bool {
    let lower = file.to_ascii_lowercase();
    lower.ends_with(".gguf") && !lower.starts_with("mmproj") && !file.starts_with('.')
}

/// The model a GGUF file of Hugging Face repository `org/repo` becomes:
/// `hf.co/ORG/REPO:QUANT`, QUANT from the file's name, else `fallback_tag` (the GGUF's file
/// type). When that tag is taken by another file of the repository, the file's name is the
/// tag (see `tag_for_file`).
pub fn hf_model(org: &str, repo: &str, tag: &str) -> Option<Name> {
    Name::from_parts("hf.co", org, repo, tag).ok()
}

/// A tag made of a file's name (without `.gguf`): what a second file of the same
/// quantization gets.
pub fn tag_of_stem(file: &str) -> String {
    let stem = file.strip_suffix(".gguf").or_else(|| file.strip_suffix(".GGUF")).unwrap_or(file);
    let t: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect();
    let t = t.trim_start_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_');
    t.chars().take(128).collect()
}

/// LM Studio's publisher and model folder for a model.
fn lmstudio_folder(n: &Name) -> (String, String) {
    let tagged = |m: &str| format!("{m}-{}", n.tag);
    if is_hf_host(&n.host) {
        return (n.namespace.clone(), n.model.clone());
    }
    if n.host == DEFAULT_HOST {
        let publisher = if n.is_default_namespace() { "ollama".to_string() } else { n.namespace.clone() };
        return (publisher, tagged(&n.model));
    }
    (format!("{}_{}", n.host.replace(':', "_"), n.namespace), tagged(&n.model))
}

/// The file name of a model's weights in its LM Studio folder: the name it came in with
/// (`names`), else for a Hugging Face repository `REPO-QUANT.gguf` without the repo's
/// `-GGUF` ending (how those files are named), else the folder's name.
fn lmstudio_file(n: &Name, folder: &str, names: &FileNames) -> String {
    if let Some(f) = names.get(n) {
        return f.to_string();
    }
    if is_hf_host(&n.host) {
        let base = n.model.strip_suffix("-GGUF").or_else(|| n.model.strip_suffix("-gguf")).unwrap_or(&n.model);
        return format!("{base}-{}.gguf", n.tag);
    }
    format!("{folder}.gguf")
}

fn flat_file(n: &Name) -> String {
    format!("{}.gguf", n.display_shortest().replace(['/', ':'], "-"))
}

/// The weights and projector of a manifest (the first of each).
fn ggufs(m: &Manifest) -> (Option<Digest>, Option<Digest>) {
    let first = |want: fn(&Role) -> bool| {
        m.layers.iter().find(|l| want(&Role::of(&l.media_type, &l.name))).and_then(|l| l.digest())
    };
    (first(|r| *r == Role::Model), first(|r| *r == Role::Projector))
}

/// Who keeps a contested path: the library first, then the default host, then by name.
fn priority(n: &Name) -> (bool, bool, String) {
    (!(n.host == DEFAULT_HOST && n.is_default_namespace()), n.host != DEFAULT_HOST, n.display_shortest())
}

/// `x.gguf` → `x-1a2b3c4d.gguf`, the suffix from the model's full name (stable).
fn suffixed(path: &str, n: &Name) -> String {
    let h = Sha256::digest(format!("{}/{}/{}:{}", n.host, n.namespace, n.model, n.tag).as_bytes());
    let tag = hex::encode(&h[..4]);
    match path.strip_suffix(".gguf") {
        Some(stem) => format!("{stem}-{tag}.gguf"),
        None => format!("{path}-{tag}"),
    }
}

/// Every file of view `kind` for these models, by path. Models without GGUF weights are
/// not shown. Two models that would get the same path: the first by `priority` keeps it,
/// the others get a suffix from their full name.
pub fn files<'a>(
    kind: ViewKind,
    models: impl Iterator<Item = (&'a Name, &'a Manifest)>,
    names: &FileNames,
) -> BTreeMap<String, ViewFile> {
    let mut wanted: BTreeMap<String, Vec<ViewFile>> = BTreeMap::new();
    for (n, m) in models {
        let (Some(weights), projector) = ggufs(m) else { continue };
        let (dir, file) = match kind {
            ViewKind::LmStudio => {
                let (publisher, folder) = lmstudio_folder(n);
                let file = lmstudio_file(n, &folder, names);
                (format!("{publisher}/{folder}/"), file)
            }
            ViewKind::Flat => (String::new(), flat_file(n)),
            ViewKind::HfCache => continue, // not made of models: see `hf_cache::view_files`
        };
        let mut add = |file: String, digest: Digest, projector: bool| {
            let path = format!("{dir}{file}");
            wanted.entry(path.clone()).or_default().push(ViewFile { path, digest, model: n.clone(), projector });
        };
        if let Some(p) = projector {
            let stem = file.strip_suffix(".gguf").unwrap_or(&file);
            add(format!("mmproj-{stem}.gguf"), p, true);
        }
        add(file, weights, false);
    }
    let mut out = BTreeMap::new();
    for (path, mut claims) in wanted {
        claims.sort_by_key(|f| priority(&f.model));
        for (i, mut f) in claims.into_iter().enumerate() {
            if i > 0 {
                f.path = suffixed(&path, &f.model);
            }
            out.insert(f.path.clone(), f);
        }
    }
    out
}

/// The file names models came in with through a view or `import --lmstudio`, so a view
/// shows a downloaded file under the name it was written with. Kept in
/// `<store>/.ollamafs/file-names.json` (ollamafs' own; Ollama never reads it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileNames(BTreeMap<String, String>);

impl FileNames {
    fn key(n: &Name) -> String {
        n.manifest_path()
    }

    pub fn get(&self, n: &Name) -> Option<&str> {
        self.0.get(&Self::key(n)).map(String::as_str)
    }

    pub fn set(&mut self, n: &Name, file: &str) {
        self.0.insert(Self::key(n), file.to_string());
    }

    pub fn load(path: &Path) -> FileNames {
        let map = std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        FileNames(map)
    }

    /// Written whole (temp file, rename), so a crash leaves the old or the new list.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let temp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&temp)?;
        f.write_all(&serde_json::to_vec_pretty(&self.0).unwrap_or_default())?;
        f.sync_all()?;
        std::fs::rename(&temp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::manifest::Layer;

    fn manifest(weights: u8, projector: Option<u8>) -> Manifest {
        let layer = |mt: &str, b: u8| Layer {
            media_type: format!("application/vnd.ollama.image.{mt}"),
            digest: Digest([b; 32]).prefixed(),
            size: 10,
            from: String::new(),
            name: String::new(),
        };
        let mut layers = vec![layer("model", weights), layer("license", 9)];
        if let Some(p) = projector {
            layers.push(layer("projector", p));
        }
        Manifest { schema_version: 2, media_type: String::new(), config: layer("config", 8), layers }
    }

    fn paths(kind: ViewKind, models: &[(&str, Manifest)], names: &FileNames) -> Vec<String> {
        let named: Vec<(Name, Manifest)> = models.iter().map(|(n, m)| (Name::parse(n).unwrap(), m.clone())).collect();
        files(kind, named.iter().map(|(n, m)| (n, m)), names).into_keys().collect()
    }

    #[test]
    fn lmstudio_paths_are_publisher_folder_file() {
        let models = [
            ("llama3.2:latest", manifest(1, None)),
            ("myuser/qwen:7b", manifest(2, None)),
            ("hf.co/lmstudio-community/Qwen3-8B-GGUF:Q4_K_M", manifest(3, None)),
            ("hf.co/lmstudio-community/Qwen3-8B-GGUF:Q8_0", manifest(4, None)),
            ("localhost:5000/team/m:v1", manifest(5, None)),
            ("llava:7b", manifest(6, Some(7))),
        ];
        assert_eq!(
            paths(ViewKind::LmStudio, &models, &FileNames::default()),
            [
                "lmstudio-community/Qwen3-8B-GGUF/Qwen3-8B-Q4_K_M.gguf",
                "lmstudio-community/Qwen3-8B-GGUF/Qwen3-8B-Q8_0.gguf",
                "localhost_5000_team/m-v1/m-v1.gguf",
                "myuser/qwen-7b/qwen-7b.gguf",
                "ollama/llama3.2-latest/llama3.2-latest.gguf",
                "ollama/llava-7b/llava-7b.gguf",
                "ollama/llava-7b/mmproj-llava-7b.gguf",
            ]
        );
        assert_eq!(
            paths(ViewKind::Flat, &models, &FileNames::default()),
            [
                "hf.co-lmstudio-community-Qwen3-8B-GGUF-Q4_K_M.gguf",
                "hf.co-lmstudio-community-Qwen3-8B-GGUF-Q8_0.gguf",
                "llama3.2-latest.gguf",
                "llava-7b.gguf",
                "localhost-5000-team-m-v1.gguf",
                "mmproj-llava-7b.gguf",
                "myuser-qwen-7b.gguf",
            ]
        );
    }

    #[test]
    fn a_remembered_file_name_wins_and_models_without_weights_are_not_shown() {
        let mut names = FileNames::default();
        let n = Name::parse("hf.co/bartowski/Qwen_Qwen3-8B-GGUF:Q4_K_M").unwrap();
        names.set(&n, "Qwen_Qwen3-8B-Q4_K_M.gguf");
        let text_only = Manifest { layers: Vec::new(), ..manifest(1, None) };
        let models = [(n.display_shortest(), manifest(1, None)), ("empty:latest".to_string(), text_only)];
        let models: Vec<(&str, Manifest)> = models.iter().map(|(n, m)| (n.as_str(), m.clone())).collect();
        assert_eq!(
            paths(ViewKind::LmStudio, &models, &names),
            ["bartowski/Qwen_Qwen3-8B-GGUF/Qwen_Qwen3-8B-Q4_K_M.gguf"]
        );
    }

    #[test]
    fn colliding_paths_get_a_stable_suffix_and_the_library_keeps_the_plain_name() {
        // The `ollama` namespace would take the library's publisher folder.
        let models = [("ollama/x:latest", manifest(1, None)), ("x:latest", manifest(2, None))];
        let got = paths(ViewKind::LmStudio, &models, &FileNames::default());
        assert_eq!(got.len(), 2);
        assert!(got.contains(&"ollama/x-latest/x-latest.gguf".to_string()));
        let other = got.iter().find(|p| *p != "ollama/x-latest/x-latest.gguf").unwrap();
        assert!(
            other.starts_with("ollama/x-latest/x-latest-")
                && other.len() == "ollama/x-latest/x-latest-12345678.gguf".len()
        );
        // Same answer whatever the order the models come in.
        let reversed = [models[1].clone(), models[0].clone()];
        assert_eq!(paths(ViewKind::LmStudio, &reversed, &FileNames::default()), got);
        let files = files(
            ViewKind::LmStudio,
            [(&Name::parse("x:latest").unwrap(), &models[1].1)].into_iter(),
            &FileNames::default(),
        );
        assert_eq!(files["ollama/x-latest/x-latest.gguf"].digest, Digest([2; 32]));
    }

    #[test]
    fn quantization_from_a_file_name() {
        assert_eq!(quant_of_file("Qwen3-8B-Q4_K_M.gguf").as_deref(), Some("Q4_K_M"));
        assert_eq!(quant_of_file("gemma-3-270m-it-q8_0.gguf").as_deref(), Some("Q8_0"));
        assert_eq!(quant_of_file("Llama-3.2-1B-Instruct.IQ4_XS.gguf").as_deref(), Some("IQ4_XS"));
        assert_eq!(quant_of_file("phi-4-bf16.gguf").as_deref(), Some("BF16"));
        assert_eq!(quant_of_file("mistral-7b.gguf"), None, "7b is a size");
        assert_eq!(quant_of_file("model.gguf"), None);
        assert_eq!(tag_of_stem("Qwen3 8B (final).gguf"), "Qwen3-8B--final-");
        assert!(is_model_file("x.gguf") && !is_model_file("mmproj-x-f16.gguf") && !is_model_file("x.gguf.part"));
    }
}
