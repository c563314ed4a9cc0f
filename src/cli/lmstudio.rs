//! `ollamafs import --lmstudio [DIR]`: every GGUF of an LM Studio models folder
//! (`PUBLISHER/MODEL/FILE.gguf`, a projector beside it as `mmproj-*.gguf`) becomes the
//! Ollama model `hf.co/PUBLISHER/MODEL:QUANT`, brought in without a copy where the disk
//! allows (reflink, else a hard link on the same disk; a copy across disks).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::store_exit_code;
use crate::name::Name;
use crate::store::{Store, StoreError, Way};
use crate::views::{self, FileNames};

/// One GGUF of the folder and the model it becomes.
struct Planned {
    shown: String,
    path: PathBuf,
    file: String,
    projector: Option<PathBuf>,
    model: Name,
    len: u64,
}

/// LM Studio's models folders on this machine: the current default, then the older one.
fn default_dirs() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME").map(PathBuf::from) else { return Vec::new() };
    [".lmstudio/models", ".cache/lm-studio/models"].iter().map(|d| home.join(d)).filter(|d| d.is_dir()).collect()
}

fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .filter(|(n, _)| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

/// The quantization of a file: from its name, else from its GGUF header's file type.
fn quant(path: &Path, file: &str) -> Result<String, String> {
    if let Some(q) = views::quant_of_file(file) {
        return Ok(q);
    }
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let h = crate::gguf::read_header(std::io::BufReader::new(f)).map_err(|e| format!("not a GGUF file ({e})"))?;
    Ok(h.file_type_name().to_string())
}

/// What the folder holds, as models. Two files of one folder with the same quantization
/// are told apart by their names (each file's name is its tag).
fn plan(dir: &Path, errors: &mut Vec<String>) -> Vec<Planned> {
    let mut out = Vec::new();
    for (publisher, pdir) in sorted_entries(dir).into_iter().filter(|(_, p)| p.is_dir()) {
        for (folder, fdir) in sorted_entries(&pdir).into_iter().filter(|(_, p)| p.is_dir()) {
            let files: Vec<(String, PathBuf)> = sorted_entries(&fdir)
                .into_iter()
                .filter(|(n, p)| n.to_ascii_lowercase().ends_with(".gguf") && p.is_file())
                .collect();
            let projectors: Vec<&PathBuf> =
                files.iter().filter(|(n, _)| !views::is_model_file(n)).map(|(_, p)| p).collect();
            let projector = match projectors.as_slice() {
                [one] => Some((*one).clone()),
                _ => None, // none, or several: which one goes with which file is not known
            };
            let mut by_quant: BTreeMap<String, Vec<(String, PathBuf)>> = BTreeMap::new();
            for (file, path) in files.into_iter().filter(|(n, _)| views::is_model_file(n)) {
                match quant(&path, &file) {
                    Ok(q) => by_quant.entry(q).or_default().push((file, path)),
                    Err(e) => errors.push(format!("{publisher}/{folder}/{file}: {e}")),
                }
            }
            for (q, files) in by_quant {
                let alone = files.len() == 1;
                for (file, path) in files {
                    let shown = format!("{publisher}/{folder}/{file}");
                    let tag = if alone { q.clone() } else { views::tag_of_stem(&file) };
                    let Some(model) = views::hf_model(&publisher, &folder, &tag) else {
                        errors.push(format!("{shown}: hf.co/{publisher}/{folder}:{tag} is not a valid model name"));
                        continue;
                    };
                    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    out.push(Planned { shown, path, file, projector: projector.clone(), model, len });
                }
            }
        }
    }
    out
}

/// Imported before: the model is there, came from a file of this name and has its size.
fn already_imported(s: &Store, names: &FileNames, p: &Planned) -> bool {
    names.get(&p.model) == Some(p.file.as_str())
        && s.read_manifest(&p.model).is_ok_and(|(_, m)| {
            m.layers.iter().any(|l| l.role() == crate::store::manifest::Role::Model && l.size as u64 == p.len)
        })
}

pub(super) fn import_lmstudio(s: Store, dir: Option<&Path>, dry_run: bool) -> Result<(), StoreError> {
    let dirs = match dir {
        Some(d) => vec![d.to_path_buf()],
        None => default_dirs(),
    };
    if dirs.is_empty() {
        return Err(StoreError::Invalid(
            "no LM Studio models folder (~/.lmstudio/models, ~/.cache/lm-studio/models): give its path".into(),
        ));
    }
    let mut errors = Vec::new();
    let planned: Vec<Planned> = dirs.iter().flat_map(|d| plan(d, &mut errors)).collect();
    let unplanned = errors.len();
    let mut names = FileNames::load(&s.file_names_path());
    let (mut imported, mut skipped, mut written) = (0usize, 0usize, 0u64);
    if !dry_run {
        s.prepare_for_writes()?;
    }
    let s = std::sync::Arc::new(s);
    let catalog = crate::api::StoreCatalog::new(s.clone(), false);
    for p in &planned {
        let model = p.model.display_shortest();
        if already_imported(&s, &names, p) {
            println!("already imported: {} ({model})", p.shown);
            skipped += 1;
            continue;
        }
        if dry_run {
            match super::import::check_gguf(&p.path) {
                Ok(()) => println!("would import {} as {model} ({} bytes)", p.shown, p.len),
                Err(e) => errors.push(format!("{}: {e}", p.shown)),
            }
            continue;
        }
        match import_files(&s, &catalog, p) {
            Ok((ways, bytes)) => {
                println!("imported {} as {model}: {ways}, {bytes} bytes written", p.shown);
                names.set(&p.model, &p.file);
                imported += 1;
                written += bytes;
            }
            Err(e) => errors.push(format!("{}: {e}", p.shown)),
        }
    }
    if !dry_run && imported > 0 {
        names.save(&s.file_names_path())?;
    }
    for e in &errors {
        eprintln!("Error: {e}");
    }
    let verb = if dry_run { "would import" } else { "imported" };
    let done = if dry_run { planned.len() + unplanned - skipped - errors.len() } else { imported };
    println!(
        "{verb} {done} of {} GGUF files ({skipped} already imported, {} failed), {written} bytes written",
        planned.len() + unplanned,
        errors.len()
    );
    if !errors.is_empty() {
        std::process::exit(store_exit_code(&StoreError::Invalid(String::new())));
    }
    Ok(())
}

/// The file (and its projector) into `blobs/`, then the model; on failure the store is as it was.
fn import_files(s: &Store, catalog: &crate::api::StoreCatalog, p: &Planned) -> Result<(String, u64), StoreError> {
    let (mut ways, mut files, mut added, mut written) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for path in std::iter::once(&p.path).chain(p.projector.as_ref()) {
        let res = super::import::check_gguf(path).and_then(|()| s.import_file(path, true));
        let i = match res {
            Ok(i) => i,
            Err(e) => {
                s.prune(added, &s.digests_in_use());
                return Err(e);
            }
        };
        if i.way != Way::Present {
            added.push(i.digest);
        }
        ways.push(i.way.describe());
        files.push(i.digest);
        written += i.written;
    }
    super::import::publish_files(s, catalog, &p.model, files, added)?;
    ways.dedup();
    Ok((ways.join(" + "), written))
}
