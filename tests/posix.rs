//! POSIX conformance of scratch folders: the pjdfstest suite (its Rust port, `cargo install
//! pjdfstest`) runs in a folder on the disk below and in a scratch folder of a model folder
//! on a real mount; every test the disk passes must pass on the mount, unless it is listed
//! with its reason in `tests/pjdfstest/exceptions.txt`.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn pjdfstest() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("PJDFSTEST") {
        candidates.push(p.into());
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/pjdfstest"));
    }
    candidates.push("pjdfstest".into());
    for c in candidates {
        if Command::new(&c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some(c);
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but pjdfstest is missing (.ci/run installs it with `cargo install pjdfstest`)");
    }
    skip("POSIX TEST: `cargo install pjdfstest` (or run .ci/run)");
    None
}

/// Each test's result: `ok`, `FAILED` or `skipped`.
fn run_suite(bin: &Path, dir: &Path) -> BTreeMap<String, String> {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pjdfstest/pjdfstest.toml");
    let out = Command::new(bin).arg("-c").arg(&config).arg("-p").arg(dir).current_dir(dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut results = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some(name), Some(result), None) = (words.next(), words.next(), words.next())
            && name.contains("::")
            && matches!(result, "ok" | "FAILED" | "skipped")
        {
            results.insert(name.to_string(), result.to_string());
        }
    }
    assert!(results.len() > 300, "pjdfstest ran only {} tests in {}:\n{text}", results.len(), dir.display());
    results
}

/// Tests that may fail on the mount although the disk passes them, with the reason.
fn exceptions() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pjdfstest/exceptions.txt");
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once('#') {
            Some((name, why)) => (name.trim().to_string(), why.trim().to_string()),
            None => (l.trim().to_string(), String::new()),
        })
        .collect()
}

#[test]
fn pjdfstest_in_a_scratch_folder_fails_nothing_the_disk_passes() {
    let Some(bin) = pjdfstest() else { return };
    let Some((dir, m, _)) = mounted_fixture(&["--allow-other"]) else { return };
    // The suite switches to two other users: they must reach both folders.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let disk = dir.path().join("disk");
    fs::create_dir(&disk).unwrap();
    let scratch = m.p("llama3.2:latest/posix");
    fs::create_dir(&scratch).unwrap();

    let on_disk = run_suite(&bin, &disk);
    let in_mount = run_suite(&bin, &scratch);
    let allowed = exceptions();
    let mut regressions = Vec::new();
    for (name, result) in &on_disk {
        let ours = in_mount.get(name).map(String::as_str).unwrap_or("missing");
        if result == "ok" && ours != "ok" && !allowed.contains_key(name) {
            regressions.push(format!("{name}: {ours} on the mount, ok on the disk"));
        }
    }
    let count = |r: &BTreeMap<String, String>, what: &str| r.values().filter(|v| *v == what).count();
    eprintln!(
        "pjdfstest: disk {} ok / {} failed / {} skipped; mount {} ok / {} failed / {} skipped",
        count(&on_disk, "ok"),
        count(&on_disk, "FAILED"),
        count(&on_disk, "skipped"),
        count(&in_mount, "ok"),
        count(&in_mount, "FAILED"),
        count(&in_mount, "skipped"),
    );
    assert!(regressions.is_empty(), "the mount fails what the disk passes:\n{}", regressions.join("\n"));
    for name in allowed.keys() {
        assert!(on_disk.contains_key(name), "exception {name} names no test of the suite");
    }

    // The suite's leftovers go with the folder; the model never changed.
    let before = manifest_bytes(&m.store, "registry.ollama.ai/library/llama3.2/latest");
    sh_ok(&format!("rm -rf {}", q(&scratch)));
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/llama3.2/latest"), before);
    let store = m.store.clone();
    drop(m);
    assert_store_clean(&store);
    assert_eq!(scratch_leftovers(&store), Vec::<String>::new());
}
