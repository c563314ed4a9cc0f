//! Every shell block of the README runs as written (the `sh` blocks; `text` blocks are
//! synopses and config lines, and the Test section is what CI itself runs).
//!
//! The README talks about a system-wide setup: `/usr/local/bin/ollamafs`, the store of a
//! system-wide Ollama in `/usr/share/ollama/.ollama/models` and a mount at `/srv/models`. So
//! this test runs only where that is allowed: under `CI=true` (a disposable machine) or with
//! `OLLAMAFS_README_TEST=1`. It puts the project's example store (the test fixture) where
//! the README expects Ollama's, and a GGUF in `~/Downloads/x.gguf` of a scratch home.

mod common;
use common::*;
use std::fs;
use std::path::Path;

const STORE: &str = "/usr/share/ollama/.ollama/models";
const MOUNT: &str = "/srv/models";

/// The `sh` blocks of README.md, in order, outside the "Test" section.
fn shell_blocks(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut block: Option<String> = None;
    for line in readme.lines() {
        if let Some(b) = block.as_mut() {
            if line.starts_with("```") {
                if section != "Test" {
                    out.push(std::mem::take(b));
                }
                block = None;
            } else {
                b.push_str(line);
                b.push('\n');
            }
        } else if let Some(h) = line.strip_prefix("## ") {
            section = h.trim().to_string();
        } else if line.trim() == "```sh" {
            block = Some(String::new());
        }
    }
    out
}

#[test]
fn readme_blocks_run_as_written() {
    let allowed = std::env::var("CI").is_ok_and(|v| v == "true") || std::env::var("OLLAMAFS_README_TEST").is_ok();
    if !allowed || !fuse_available() {
        skip("README test: it installs to /usr/local and mounts /srv/models (CI=true or OLLAMAFS_README_TEST=1)");
        return;
    }
    assert!(!is_mounted(Path::new(MOUNT)), "{MOUNT} is already a mount");
    assert!(!Path::new(STORE).exists(), "{STORE} exists: this machine has a real Ollama store there");
    let root = env!("CARGO_MANIFEST_DIR");
    let blocks = shell_blocks(&fs::read_to_string(Path::new(root).join("README.md")).unwrap());
    assert!(blocks.len() >= 3, "README shell blocks: {blocks:?}");
    ollamafs::fixture::build(Path::new(STORE), 256 << 20).unwrap();
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(MOUNT).status();
            let _ = fs::remove_dir_all("/usr/share/ollama");
        }
    }
    let _cleanup = Cleanup;
    let home = tempfile::tempdir().unwrap();
    fs::create_dir_all(home.path().join("Downloads")).unwrap();
    ollamafs::fixture::write_gguf_file(&home.path().join("Downloads/x.gguf"), "gemma3", 2, 8 << 20).unwrap();
    // What LM Studio downloaded into its default folder.
    let lms = home.path().join(".lmstudio/models/lmstudio-community/Qwen3-0.6B-GGUF");
    fs::create_dir_all(&lms).unwrap();
    ollamafs::fixture::write_gguf_file(&lms.join("Qwen3-0.6B-Q8_0.gguf"), "qwen3", 7, 8 << 20).unwrap();
    // cargo and the Ollama Python client (the API tests' venv) as a user would have them.
    let cargo_home =
        std::env::var("CARGO_HOME").unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap()));
    let path = format!(
        "/usr/local/bin:{root}/target/pyvenv/bin:{cargo_home}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let script = blocks.join("\n");
    let o = std::process::Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", &script])
        .current_dir(root)
        .env("HOME", home.path())
        .env("CARGO_HOME", &cargo_home)
        .env("CARGO_TARGET_DIR", format!("{root}/target"))
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "README blocks failed:\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        stdout(&o),
        stderr(&o)
    );
    let store = Path::new(STORE);
    let files = manifest_files(store);
    for m in ["myuser/llama3.2/pirate", "library/mine/q4", "myuser/llama3.2/api"] {
        assert!(files.contains(&format!("registry.ollama.ai/{m}")), "{m} missing: {files:?}");
    }
    assert!(!files.iter().any(|f| f.starts_with("registry.ollama.ai/team/")), "removed again by the README");
    // The views' block listed them, and what LM Studio had downloaded became a model.
    let out = stdout(&o);
    assert!(out.contains("llama3.2-latest.gguf"), "{out}");
    assert!(
        out.contains("imported lmstudio-community/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q8_0.gguf as hf.co/lmstudio-community/Qwen3-0.6B-GGUF:Q8_0"),
        "{out}"
    );
    assert!(files.contains("hf.co/lmstudio-community/Qwen3-0.6B-GGUF/Q8_0"), "{files:?}");
    assert_eq!(
        manifest_bytes(store, "registry.ollama.ai/myuser/llama3.2/api"),
        manifest_bytes(store, "registry.ollama.ai/library/llama3.2/latest")
    );
    assert_store_clean(store);
}
