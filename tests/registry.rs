//! `ollamafs pull` / `push` against the real CNCF Distribution registry (Debian's
//! `docker-registry`), started here on a free loopback port over a temporary folder (and
//! once with htpasswd Basic auth, once with Bearer tokens from a token server of the test's
//! own). Everything is checked on disk: manifest bytes, blobs,
//! bytes moved, `ollamafs verify`.

mod common;
#[path = "common/registry.rs"]
mod registry;
use common::*;
use registry::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn push_then_pull_gives_the_same_bytes_and_a_second_pull_downloads_nothing() {
    let Some(reg) = Registry::start(None) else { return };
    let (_d1, src, info) = fixture_store(64 << 20);
    let name = reg.name("team/llama3.2:v1");
    assert!(ollamafs(&src, &["cp", "llama3.2", &name]).status.success());
    let o = ollamafs(&src, &["push", "--insecure", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).ends_with("pushing manifest\nsuccess\n"), "{}", stdout(&o));
    assert!(moved(&o).1 >= info.big_size, "the weights were uploaded");

    let (_d2, empty) = empty_store();
    let o = ollamafs(&empty, &["pull", "--insecure", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(manifest_path_of(&empty, &name)).unwrap(), fs::read(manifest_path_of(&src, &name)).unwrap());
    for b in blobs(&empty) {
        assert_eq!(
            fs::read(empty.join("blobs").join(&b)).unwrap(),
            fs::read(src.join("blobs").join(&b)).unwrap(),
            "{b}"
        );
    }
    assert_verifies(&empty);
    let o = ollamafs(&empty, &["pull", "--insecure", &name]);
    assert!(o.status.success());
    assert_eq!(moved(&o).0, 0, "a second pull downloads no blob byte");

    // A model whose blobs the registry holds in another repository: nothing is uploaded.
    let other = reg.name("other/copy:v2");
    assert!(ollamafs(&src, &["cp", "llama3.2", &other]).status.success());
    let o = ollamafs(&src, &["push", "--insecure", &other]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(moved(&o).1, 0, "cross-repository mount: {}", stdout(&o));
    // A re-push says that each blob exists, as Ollama does, rather than "pushed".
    let o = ollamafs(&src, &["push", "--insecure", &other]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("pushed"), "{}", stdout(&o));
    assert!(stdout(&o).lines().filter(|l| l.starts_with("exists ")).count() >= 2, "{}", stdout(&o));

    // A missing model: Ollama's words.
    let o = ollamafs(&empty, &["pull", "--insecure", &reg.name("team/nope:v1")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("pull model manifest: file does not exist"), "{}", stderr(&o));
}

/// A blob damaged on the registry's disk fails the pull, names the digest and leaves
/// nothing behind (no manifest, no blob the pull added, no partial file).
#[test]
fn a_corrupted_blob_fails_the_pull_and_leaves_nothing() {
    let Some(reg) = Registry::start(None) else { return };
    let (_d1, src, _, name) = pushed(&reg, 8 << 20, "qwen2.5:0.5b", "team/qwen:bad");
    let m: serde_json::Value = serde_json::from_slice(&fs::read(manifest_path_of(&src, &name)).unwrap()).unwrap();
    let victim = m["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let f = reg.blob_file(&victim);
    let mut bytes = fs::read(&f).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&f, bytes).unwrap();
    let (_d, empty) = empty_store();
    let o = ollamafs(&empty, &["pull", "--insecure", &name]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&victim), "names the digest: {}", stderr(&o));
    assert!(manifest_files(&empty).is_empty(), "no manifest");
    assert!(blobs(&empty).is_empty(), "no blob: {:?}", blobs(&empty));
    let partial: Vec<_> = fs::read_dir(empty.join(".ollamafs/pull")).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(partial.is_empty(), "no partial file");
}

/// An interrupted pull resumes where it stopped: a partial download is continued with a
/// Range request (only the rest is downloaded), and a pull killed with -9 completes.
#[test]
fn an_interrupted_pull_resumes() {
    let Some(reg) = Registry::start(None) else { return };
    let (_d1, src, info, name) = pushed(&reg, 256 << 20, "llama3.2", "team/big:v1");
    let (_d, dest) = empty_store();
    fs::create_dir_all(dest.join(".ollamafs/pull")).unwrap();
    // Half the weights already here, as a pull stopped half-way leaves them.
    let half = info.big_size / 2;
    let blob = fs::read(src.join("blobs").join(info.big_model.blob_file_name())).unwrap();
    fs::write(dest.join(format!(".ollamafs/pull/{}.partial", info.big_model.hex())), &blob[..half as usize]).unwrap();
    drop(blob);
    let o = ollamafs(&dest, &["pull", "--insecure", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (down, _) = moved(&o);
    assert!(down < info.big_size - half + (1 << 20), "downloaded {down}: the half it had was not fetched again");
    assert_verifies(&dest);

    // kill -9 in the middle, then again: complete, verify clean.
    let (_d, dest) = empty_store();
    let mut child = Command::new(bin())
        .args(["pull", "--insecure", "--store"])
        .arg(&dest)
        .arg(&name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A large blob comes in parallel Range parts whose progress is saved beside it: wait
    // until some of it is saved, then kill.
    let state = dest.join(format!(".ollamafs/pull/{}.parts", info.big_model.hex()));
    // (start, end, done) of each part, as the pull saves them.
    let parts = || -> Vec<(u64, u64, u64)> {
        fs::read(&state).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    };
    let saved = || -> u64 { parts().iter().map(|p| p.2).sum() };
    let t0 = Instant::now();
    let mut seen_parts = 0;
    while saved() == 0 && t0.elapsed() < Duration::from_secs(10) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        seen_parts = seen_parts.max(parts().len());
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let had = saved();
    assert!(seen_parts > 1 || (had == 0 && !state.exists()), "a large blob is fetched in parallel parts");
    assert!(manifest_files(&dest).is_empty() || had == 0, "no manifest before the pull is whole");
    let o = ollamafs(&dest, &["pull", "--insecure", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(moved(&o).0 <= info.big_size + (1 << 20) - had, "the parts saved before the kill were not fetched again");
    assert_eq!(fs::read(manifest_path_of(&dest, &name)).unwrap(), fs::read(manifest_path_of(&src, &name)).unwrap());
    assert_verifies(&dest);
}

/// A registry with htpasswd Basic auth: refused without credentials, works with them
/// (from the environment).
#[test]
fn basic_auth_from_the_environment() {
    if !have_tool("htpasswd", "apache2-utils") {
        return;
    }
    let line = sh_ok("htpasswd -Bbn alice s3cret");
    let Some(reg) = Registry::start(Some(line.trim())) else { return };
    let (_d, src, _) = fixture_store(8 << 20);
    let name = reg.name("team/tiny:auth");
    assert!(ollamafs(&src, &["cp", "qwen2.5:0.5b", &name]).status.success());
    let o = ollamafs(&src, &["push", "--insecure", &name]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    let o = as_alice(&["push", "--insecure"], &src, &name);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_d, dest) = empty_store();
    let o = as_alice(&["pull", "--insecure"], &dest, &name);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_verifies(&dest);
}

/// The official Python client's `push(…, insecure=True)` and `pull(…, insecure=True,
/// stream=True)` through `ollamafs serve`, against the registry.
#[test]
fn python_client_pushes_and_pulls_through_serve() {
    let python = [Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python"), PathBuf::from("python3")]
        .into_iter()
        .find(|p| Command::new(p).args(["-c", "import ollama"]).output().is_ok_and(|o| o.status.success()));
    let Some(python) = python else {
        assert!(std::env::var("CI").is_err(), "CI=true but no Python with the ollama client");
        skip("no Python with the ollama client");
        return;
    };
    let Some(reg) = Registry::start(None) else { return };
    let serve = |store: &Path| -> (Child, String) {
        let mut child = Command::new(bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(store)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let addr = line.strip_prefix("Listening on ").and_then(|r| r.split_whitespace().next()).unwrap().to_string();
        (child, addr)
    };
    let py = |addr: &str, code: &str| -> String {
        let script = format!("import ollama\nc = ollama.Client(host='http://{addr}')\n{code}");
        let o = Command::new(&python).arg("-c").arg(&script).output().unwrap();
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        stdout(&o).trim().to_string()
    };
    let (_d1, src, _) = fixture_store(8 << 20);
    let name = reg.name("py/qwen:v1");
    assert!(ollamafs(&src, &["cp", "qwen2.5:0.5b", &name]).status.success());
    let (mut s1, a1) = serve(&src);
    assert_eq!(py(&a1, &format!("print(c.push('{name}', insecure=True).status)")), "success");
    let _ = s1.kill();
    let _ = s1.wait();
    let (_d, dest) = empty_store();
    let (mut s2, a2) = serve(&dest);
    let out = py(&a2, &format!("print([p.status for p in c.pull('{name}', insecure=True, stream=True)][-1])"));
    let _ = s2.kill();
    let _ = s2.wait();
    assert_eq!(out, "success");
    assert_eq!(fs::read(manifest_path_of(&dest, &name)).unwrap(), fs::read(manifest_path_of(&src, &name)).unwrap());
    assert_verifies(&dest);
}

/// A pull into a store whose disk cannot hold the model stops before downloading anything
/// and says how much is missing; a store folder that does not exist yet is made on the
/// first pull (as Ollama makes `~/.ollama/models`).
#[test]
fn a_pull_the_disk_cannot_hold_is_refused_before_it_starts() {
    let Some(reg) = Registry::start(None) else { return };
    let (_d1, src, _) = fixture_store(64 << 20);
    let (big, small) = (reg.name("team/big:v1"), reg.name("team/small:v1"));
    assert!(ollamafs(&src, &["cp", "llama3.2", &big]).status.success());
    assert!(ollamafs(&src, &["cp", "qwen2.5:0.5b", &small]).status.success());
    for name in [&big, &small] {
        let o = ollamafs(&src, &["push", "--insecure", name]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let d = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&d.path().join("small"), 40);
    let store = disk.0.join("models");
    let o = ollamafs(&store, &["pull", "--insecure", &big]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not enough space to pull") && stderr(&o).contains("free in"), "{}", stderr(&o));
    assert_eq!(disk_usage(&disk.0), 0, "nothing was downloaded");
    let o = ollamafs(&store, &["pull", "--insecure", &small]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(manifest_path_of(&store, &small)).unwrap(), fs::read(manifest_path_of(&src, &small)).unwrap());
    assert_verifies(&store);
}

/// What other OCI tools make of a model pushed by ollamafs. Its manifest has the bytes
/// Ollama pushes (a Docker v2 schema 2 manifest whose layers are `application/vnd.ollama.
/// image.*`), so they answer the same for Ollama's own models: skopeo reads the raw manifest
/// and the tags, but `skopeo inspect` and `skopeo copy` refuse the layer media types; a
/// pull-through mirror (the Distribution registry in proxy mode) serves the model whole.
#[test]
fn oci_tools_and_mirrors_see_a_pushed_model() {
    let Some(reg) = Registry::start(None) else { return };
    let (_d1, src, _, name) = pushed(&reg, 8 << 20, "qwen2.5:0.5b", "team/qwen:v1");
    let manifest = fs::read(manifest_path_of(&src, &name)).unwrap();
    if have_tool("skopeo", "skopeo") {
        let image = format!("docker://{name}");
        let raw = std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", &image])
            .output()
            .unwrap();
        assert!(raw.status.success(), "{}", stderr(&raw));
        assert_eq!(raw.stdout, manifest, "skopeo inspect --raw gives the manifest byte for byte");
        let tags = sh_ok(&format!("skopeo list-tags --tls-verify=false docker://{}", reg.name("team/qwen")));
        assert!(tags.contains("\"v1\""), "{tags}");
        let o = sh(&format!("skopeo inspect --tls-verify=false {image}"));
        assert!(!o.status.success(), "skopeo inspect now accepts Ollama's layers: update the README");
        assert!(stderr(&o).contains("unsupported docker v2s2 media type"), "{}", stderr(&o));
    }
    // A pull-through mirror of the registry.
    let mirror_cfg = format!("proxy:\n  remoteurl: http://127.0.0.1:{}\n", reg.port);
    let Some(mirror) = Registry::start_with(tempfile::tempdir().unwrap(), &mirror_cfg) else { return };
    let (_d2, empty) = empty_store();
    let via_mirror = mirror.name("team/qwen:v1");
    let o = ollamafs(&empty, &["pull", "--insecure", &via_mirror]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read(manifest_path_of(&empty, &via_mirror)).unwrap(),
        manifest,
        "the mirror serves it byte for byte"
    );
    assert!(blobs(&empty).is_subset(&blobs(&src)), "only the model's blobs, with their digests");
    assert_verifies(&empty);
}
