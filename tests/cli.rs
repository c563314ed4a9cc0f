//! The `ollamafs` binary against fixture stores: output, exit codes and bytes on disk.

mod common;
use common::*;
use std::fs;

#[test]
fn ls_lists_like_ollama() {
    let (_d, store, _) = fixture_store(8 << 20);
    let o = ollamafs(&store, &["ls"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME")
            && lines[0].contains("ID")
            && lines[0].contains("SIZE")
            && lines[0].contains("MODIFIED")
    );
    assert_eq!(lines.len(), 7, "{out}");
    for name in [fixture::LLAMA, fixture::CUSTOM, fixture::HF, fixture::PORT, fixture::QWEN, fixture::MLX] {
        assert!(out.lines().any(|l| l.starts_with(&format!("{name} "))), "{name} missing in\n{out}");
    }
    // ID is the first 12 hex of the manifest's sha256; size sums the manifest's sizes.
    let bytes = manifest_bytes(&store, "registry.ollama.ai/library/llama3.2/latest");
    let id = ollamafs::store::manifest::model_id(bytes.as_bytes());
    let line = out.lines().find(|l| l.starts_with("llama3.2:latest ")).unwrap();
    assert!(line.contains(&id[..12]), "{line}");
    assert!(line.contains("8.4 MB"), "{line}");
    // Prefix filter, ignoring case.
    let o = ollamafs(&store, &["ls", "MYUSER/"]);
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
}

#[test]
fn cp_copies_the_manifest_only() {
    let (_d, store, _) = fixture_store(8 << 20);
    let before = blobs(&store);
    let o = ollamafs(&store, &["cp", "llama3.2", "myuser/llama3.2:custom2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "copied 'llama3.2' to 'myuser/llama3.2:custom2'\n");
    assert_eq!(
        manifest_bytes(&store, "registry.ollama.ai/library/llama3.2/latest"),
        manifest_bytes(&store, "registry.ollama.ai/myuser/llama3.2/custom2")
    );
    assert_eq!(blobs(&store), before);
    assert_eq!(scratch_leftovers(&store), Vec::<String>::new(), "scratch is empty");
    assert_verifies(&store);
}

#[test]
fn cp_errors_and_exit_codes() {
    let (_d, store, _) = fixture_store(8 << 20);
    let files = manifest_files(&store);
    let o = ollamafs(&store, &["cp", "a b", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("source \"a b\" is invalid"), "{}", stderr(&o));
    let o = ollamafs(&store, &["cp", "llama3.2", "bad/name/x/y"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("destination \"bad/name/x/y\" is invalid"), "{}", stderr(&o));
    let o = ollamafs(&store, &["cp", "ghost", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("model 'ghost' not found"), "{}", stderr(&o));
    let o = ollamafs(&store, &["cp", "llama3.2"]);
    assert_eq!(o.status.code(), Some(2), "usage error");
    assert_eq!(manifest_files(&store), files, "nothing changed");
}

#[test]
fn rm_deletes_and_prunes() {
    let (_d, store, info) = fixture_store(8 << 20);
    let o = ollamafs(&store, &["rm", fixture::CUSTOM]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("deleted '{}'\n", fixture::CUSTOM));
    assert!(!blobs(&store).contains(&info.system_custom.blob_file_name()));
    assert!(blobs(&store).contains(&info.big_model.blob_file_name()));
    let o = ollamafs(&store, &["rm", "ghost"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("model 'ghost' not found"));
    let before = blobs(&store);
    let o = ollamafs(&store, &["rm", "--no-prune", "llama3.2"]);
    assert!(o.status.success());
    assert_eq!(blobs(&store), before);
    // What --no-prune left is reported as orphans (not a problem: exit 0), and
    // `verify --prune` removes exactly those.
    let o = ollamafs(&store, &["verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("orphan blob(s)"), "{}", stderr(&o));
    assert!(blobs(&store).contains(&info.big_model.blob_file_name()));
    let o = ollamafs(&store, &["verify", "--prune"]);
    assert!(stdout(&o).contains("pruned"), "{}", stdout(&o));
    assert!(!blobs(&store).contains(&info.big_model.blob_file_name()), "llama3.2's own weights were orphans");
    assert_verifies(&store);
}

#[test]
fn show_json_lists_layers_with_file_names() {
    let (_d, store, info) = fixture_store(8 << 20);
    let o = ollamafs(&store, &["show", "--json", fixture::CUSTOM]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files: Vec<&str> = v["layers"].as_array().unwrap().iter().map(|l| l["file"].as_str().unwrap()).collect();
    assert_eq!(files, ["model.gguf", "template", "system", "license", "license-2", "params.json", "config.json"]);
    assert_eq!(v["layers"][0]["digest"], info.big_model.prefixed());
    assert_eq!(v["layers"][0]["from"], "llama3.2:latest");
    assert_eq!(v["system"], fixture::SYSTEM_CUSTOM);
    assert_eq!(v["details"]["family"], "llama");
    assert_eq!(v["details"]["quantization_level"], "Q4_K_M");
    assert_eq!(v["license"], format!("{}\n{}", fixture::LICENSE_1, fixture::LICENSE_2));
    let o = ollamafs(&store, &["show", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    let o = ollamafs(&store, &["show", fixture::QWEN]);
    assert!(stdout(&o).contains("projector.gguf"), "{}", stdout(&o));
}

#[test]
fn verify_reports_corruption_and_ls_survives_it() {
    let (_d, store, info) = fixture_store(8 << 20);
    assert_verifies(&store);
    let bad = store.join("manifests/registry.ollama.ai/library/broken/latest");
    fs::create_dir_all(bad.parent().unwrap()).unwrap();
    fs::write(&bad, b"{not json").unwrap();
    fs::remove_file(store.join("blobs").join(info.system_custom.blob_file_name())).unwrap();
    let o = ollamafs(&store, &["verify"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("broken/latest"), "{err}");
    assert!(err.contains("is missing"), "{err}");
    let o = ollamafs(&store, &["ls"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o).lines().count(), 7, "the corrupt one is skipped, the rest listed");
    let o = ollamafs(&store, &["cp", "llama3.2", "still:works"]);
    assert!(o.status.success());
}

#[test]
fn store_from_flag_and_env_with_quotes() {
    let (_d, store, _) = fixture_store(8 << 20);
    let o = std::process::Command::new(bin())
        .args(["ls", "--store"])
        .arg(&store)
        .env_remove("OLLAMA_MODELS")
        .output()
        .unwrap();
    assert_eq!(stdout(&o).lines().count(), 7);
    let quoted = format!("  \"{}\" ", store.display());
    let o = std::process::Command::new(bin()).arg("ls").env("OLLAMA_MODELS", quoted).output().unwrap();
    assert_eq!(stdout(&o).lines().count(), 7, "{}", stderr(&o));
    let o = ollamafs(&store.join("missing"), &["ls"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing"));
}

/// `ollamafs show --json MODEL | head` ends quietly when `head` closes the pipe (it used to
/// panic with "failed printing to stdout: Broken pipe", exit 101, about half the time).
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let (_d, store, _) = fixture_store(8 << 20);
    for _ in 0..20 {
        let o = sh(&format!(
            "{} show --store '{}' --json llama3.2 | true; echo ${{PIPESTATUS[0]}}",
            bin().display(),
            store.display()
        ));
        let status: i32 = stdout(&o).trim().parse().unwrap();
        assert!(status == 0 || status == 141, "exit {status}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

/// `ollamafs show --modelfile` prints a Modelfile that `ollamafs create -f` takes back:
/// the round trip makes a byte-identical manifest and no blob. Modelfile errors use
/// Ollama's words.
#[test]
fn create_from_a_modelfile_round_trips_with_show() {
    let (d, store, _) = fixture_store(8 << 20);
    let before = blobs(&store);
    let o = ollamafs(&store, &["show", "--modelfile", "llama3.2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mf = d.path().join("Modelfile");
    std::fs::write(&mf, stdout(&o)).unwrap();
    let o = ollamafs(&store, &["create", "copy:v1", "-f", &mf.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).ends_with("writing manifest\nsuccess\n"), "{}", stdout(&o));
    assert_eq!(
        manifest_bytes(&store, "registry.ollama.ai/library/copy/v1"),
        manifest_bytes(&store, "registry.ollama.ai/library/llama3.2/latest")
    );
    assert_eq!(blobs(&store), before);
    // FROM a model, with a new prompt and parameters.
    std::fs::write(&mf, "FROM llama3.2\nSYSTEM \"\"\"You are a pirate.\"\"\"\nPARAMETER temperature 0.5\n").unwrap();
    let o = ollamafs(&store, &["create", "pirate:v1", "-f", &mf.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ollamafs(&store, &["show", "--modelfile", "pirate:v1"]);
    assert!(stdout(&o).contains("SYSTEM \"\"\"You are a pirate.\"\"\""), "{}", stdout(&o));
    assert!(stdout(&o).contains("PARAMETER temperature 0.5"), "{}", stdout(&o));
    for (text, words) in [
        ("SYSTEM hi\n", "no FROM line"),
        ("FROM llama3.2\nSAIL away\n", "command must be one of"),
        ("FROM llama3.2\nPARAMETER warp 9\n", "unknown parameter 'warp'"),
        ("FROM nope:1\n", "model 'nope:1' not found"),
        ("FROM ./missing.gguf\n", "FROM ./missing.gguf: no such file"),
        ("FROM ./hf-weights\n", "must be converted to GGUF first"),
    ] {
        std::fs::create_dir_all(d.path().join("hf-weights")).unwrap();
        std::fs::write(&mf, text).unwrap();
        let o = ollamafs(&store, &["create", "bad:v1", "-f", &mf.to_string_lossy()]);
        assert_eq!(o.status.code(), Some(1), "{text}");
        assert!(stderr(&o).contains(words), "{text}: {}", stderr(&o));
    }
    assert!(!manifest_files(&store).iter().any(|f| f.contains("/bad/")));
    assert_verifies(&store);
}
