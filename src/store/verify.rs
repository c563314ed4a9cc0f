//! `ollamafs verify`: hash every blob, check every manifest against the blobs.

use std::collections::HashMap;
use std::fs;

use super::manifest::{Digest, Manifest};
use super::{Store, hash_file};

#[derive(Debug, Default)]
pub struct Report {
    pub blobs: usize,
    pub bytes: u64,
    pub manifests: usize,
    /// Things that make the store wrong for Ollama (exit status 1).
    pub problems: Vec<String>,
    /// Things worth knowing that do not break anything.
    pub warnings: Vec<String>,
    /// Blobs that no manifest, trash item or running mount uses (digest, length): space
    /// that nothing will ever read. `prune_orphans` removes them.
    pub orphans: Vec<(Digest, u64)>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Total bytes `verify` will hash, for a progress bar.
pub fn blob_bytes(store: &Store) -> u64 {
    fs::read_dir(store.blobs_dir())
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

pub fn verify(store: &Store, mut progress: impl FnMut(u64)) -> Report {
    let mut r = Report::default();
    // 1. Blobs: the name must be the sha256 of the content.
    let mut sizes: HashMap<Digest, u64> = HashMap::new(); // name -> length of every blob hashed
    let mut single: Vec<Digest> = Vec::new(); // blobs with no second hard link (trash, holds)
    if let Ok(rd) = fs::read_dir(store.blobs_dir()) {
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(d) = name.strip_prefix("sha256-").and_then(Digest::from_hex) else {
                r.warnings.push(format!("blobs/{name}: not a blob name; Ollama's startup prune deletes it"));
                continue;
            };
            match hash_file(&e.path()) {
                Ok((got, len)) => {
                    r.blobs += 1;
                    r.bytes += len;
                    progress(len);
                    if got != d {
                        r.problems.push(format!("blobs/{name}: content hashes to {got}, not its name"));
                    }
                    sizes.insert(d, len);
                    if e.metadata().is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) == 1) {
                        single.push(d);
                    }
                }
                Err(err) => r.problems.push(format!("blobs/{name}: cannot read: {err}")),
            }
        }
    }
    // 2. Manifests: parse, exact digests, blobs present with the written size.
    let (found, scan_problems) = store.scan();
    let mut referenced = std::collections::HashSet::new();
    let mut unreadable = !scan_problems.is_empty();
    for p in scan_problems {
        r.problems.push(format!("{}: {}", rel(store, &p.path), p.reason));
    }
    for f in found {
        r.manifests += 1;
        let at = rel(store, &f.path);
        let bytes = match fs::read(&f.path) {
            Ok(b) => b,
            Err(e) => {
                r.problems.push(format!("{at}: cannot read: {e}"));
                unreadable = true;
                continue;
            }
        };
        let m = match Manifest::parse(&bytes) {
            Ok(m) => m,
            Err(e) => {
                r.problems.push(format!("{at}: {e}"));
                unreadable = true;
                continue;
            }
        };
        referenced.extend(m.digests());
        if let Err(e) = m.check_digests() {
            r.problems.push(format!("{at}: {e}"));
        }
        // Blobs whose content does not match their name were reported above; here the
        // model as a whole: the same check every manifest write passes.
        if let Err(why) = store.check_complete(&m) {
            r.problems.push(format!("{at}: incomplete model: {why}"));
        }
    }
    // 3. Orphans: only when every manifest could be read (an unreadable one may use them).
    if !unreadable {
        for d in single.into_iter().filter(|d| !referenced.contains(d)) {
            r.orphans.push((d, sizes.get(&d).copied().unwrap_or(0)));
        }
    }
    r
}

/// Remove the orphans `verify` found that are orphans still: checked again under the
/// store's write lock against the manifests on disk, blobs with a second link (trash,
/// a running mount's holds) kept. Returns the removed blobs.
pub fn prune_orphans(store: &Store, orphans: &[(Digest, u64)]) -> Vec<Digest> {
    let _lock = store.lock_writes();
    let in_use = store.digests_in_use();
    store.prune_locked(orphans.iter().map(|(d, _)| *d), &in_use)
}

fn rel(store: &Store, p: &std::path::Path) -> String {
    p.strip_prefix(store.root()).unwrap_or(p).display().to_string()
}
