//! Shared helpers for the integration tests: fixture stores, the built binary, store
//! inspection and a mount guard that always unmounts.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use ollamafs::fixture;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ollamafs"))
}

pub fn ollamafs(store: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("OLLAMA_MODELS", store)
        .output()
        .expect("run ollamafs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Names of every file in `blobs/`.
pub fn blobs(store: &Path) -> BTreeSet<String> {
    fs::read_dir(store.join("blobs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every file path at any depth under `manifests/`, relative.
pub fn manifest_files(store: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.insert(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    let base = store.join("manifests");
    walk(&base, &base, &mut out);
    out
}

pub fn manifest_bytes(store: &Path, rel: &str) -> Vec<u8> {
    fs::read(store.join("manifests").join(rel)).unwrap_or_else(|e| panic!("manifest {rel}: {e}"))
}

/// Bytes actually allocated on disk under a folder (st_blocks × 512).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(m) = fs::symlink_metadata(e.path()) {
                total += m.blocks() * 512;
                if m.is_dir() {
                    total += disk_usage(&e.path());
                }
            }
        }
    }
    total
}

pub fn fixture_store(big: u64) -> (tempfile::TempDir, PathBuf, fixture::Info) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("models");
    let info = fixture::build(&root, big).unwrap();
    (dir, root, info)
}

/// `ollamafs verify` must pass.
pub fn assert_verifies(store: &Path) {
    let o = ollamafs(store, &["verify"]);
    assert!(
        o.status.success(),
        "verify failed:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
}
