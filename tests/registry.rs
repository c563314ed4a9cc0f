//! `ollamafs pull` / `push` against the real CNCF Distribution registry (Debian's
//! `docker-registry`), started here on a free loopback port over a temporary folder (and
//! once with htpasswd Basic auth). Everything is checked on disk: manifest bytes, blobs,
//! bytes moved, `ollamafs verify`.

mod common;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A registry on loopback; stopped (and its folder removed) when dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    data: PathBuf,
}

impl Registry {
    fn start(htpasswd: Option<&str>) -> Option<Registry> {
        let have =
            Command::new("sh").args(["-c", "command -v docker-registry"]).output().is_ok_and(|o| o.status.success());
        if !have {
            assert!(std::env::var("CI").is_err(), "CI=true but no docker-registry: the registry tests must run");
            eprintln!("\n*** SKIPPING registry test: no docker-registry (apt-get install docker-registry) ***\n");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = dir.path().join("data");
        let auth = match htpasswd {
            Some(line) => {
                fs::write(dir.path().join("htpasswd"), format!("{line}\n")).unwrap();
                format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", dir.path().join("htpasswd").display())
            }
            None => String::new(),
        };
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                data.display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let r = Registry { child, port, _dir: dir, data };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(15), "the registry did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(r)
    }

    fn name(&self, rest: &str) -> String {
        format!("127.0.0.1:{}/{rest}", self.port)
    }

    /// The registry's copy of a blob.
    fn blob_file(&self, hex: &str) -> PathBuf {
        self.data.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manifest_path_of(store: &Path, name: &str) -> PathBuf {
    let n = ollamafs::name::Name::parse(name).unwrap();
    store.join("manifests").join(n.manifest_path())
}

/// (downloaded, uploaded) from the command's last stderr line.
fn moved(o: &std::process::Output) -> (u64, u64) {
    let e = stderr(o);
    let line = e.lines().rev().find(|l| l.contains("bytes downloaded")).unwrap_or_else(|| panic!("{e}"));
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1])
}

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
    let (_d1, src, _) = fixture_store(8 << 20);
    let name = reg.name("team/qwen:bad");
    assert!(ollamafs(&src, &["cp", "qwen2.5:0.5b", &name]).status.success());
    assert!(ollamafs(&src, &["push", "--insecure", &name]).status.success());
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
    let (_d1, src, info) = fixture_store(256 << 20);
    let name = reg.name("team/big:v1");
    assert!(ollamafs(&src, &["cp", "llama3.2", &name]).status.success());
    assert!(ollamafs(&src, &["push", "--insecure", &name]).status.success());
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
    let saved = || -> u64 {
        let parts: Vec<(u64, u64, u64)> =
            fs::read(&state).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        parts.iter().map(|p| p.2).sum()
    };
    let t0 = Instant::now();
    let mut seen_parts = 0;
    while saved() == 0 && t0.elapsed() < Duration::from_secs(10) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let parts: Vec<(u64, u64, u64)> =
            fs::read(&state).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        seen_parts = seen_parts.max(parts.len());
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
    let have = Command::new("sh").args(["-c", "command -v htpasswd"]).output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(std::env::var("CI").is_err(), "CI=true but no htpasswd (apache2-utils)");
        eprintln!("\n*** SKIPPING: no htpasswd (apt-get install apache2-utils) ***\n");
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
    let as_alice = |args: &[&str], store: &Path| {
        Command::new(bin())
            .args(args)
            .arg("--store")
            .arg(store)
            .arg(&name)
            .env("OLLAMAFS_REGISTRY_USER", "alice")
            .env("OLLAMAFS_REGISTRY_PASSWORD", "s3cret")
            .output()
            .unwrap()
    };
    let o = as_alice(&["push", "--insecure"], &src);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_d, dest) = empty_store();
    let o = as_alice(&["pull", "--insecure"], &dest);
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
        eprintln!("\n*** SKIPPING: no Python with the ollama client ***\n");
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

/// A new, empty store folder `models` in a temp folder (kept while the guard lives).
fn empty_store() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("models");
    fs::create_dir_all(&store).unwrap();
    (d, store)
}
