//! The registry the registry tests run against: the real CNCF Distribution server
//! (Debian's `docker-registry`) on a free loopback port, and the helpers they share.
#![allow(dead_code)]

use super::common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A registry on loopback; stopped (and its folder removed) when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    pub data: PathBuf,
}

impl Registry {
    pub fn start(htpasswd: Option<&str>) -> Option<Registry> {
        let dir = tempfile::tempdir().unwrap();
        let auth = match htpasswd {
            Some(line) => {
                fs::write(dir.path().join("htpasswd"), format!("{line}\n")).unwrap();
                format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", dir.path().join("htpasswd").display())
            }
            None => String::new(),
        };
        Registry::start_with(dir, &auth)
    }

    /// A registry with `auth` (a YAML `auth:` section, or nothing) in its config.
    pub fn start_with(dir: tempfile::TempDir, auth: &str) -> Option<Registry> {
        if !have_tool("docker-registry", "docker-registry") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = dir.path().join("data");
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

    pub fn name(&self, rest: &str) -> String {
        format!("127.0.0.1:{}/{rest}", self.port)
    }

    /// The registry's copy of a blob.
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.data.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `cmd` is here; outside CI a missing tool skips the test loudly, under CI it fails.
pub fn have_tool(cmd: &str, package: &str) -> bool {
    let have = Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(std::env::var("CI").is_err(), "CI=true but no {cmd}: the registry tests must run");
        super::skip(&format!("registry test: no {cmd} (apt-get install {package})"));
    }
    have
}

/// A fixture store (weights of `big` bytes) whose `model`, copied to `repo` on `reg`, is
/// pushed there anonymously: `(guard, store, fixture info, full name)`.
pub fn pushed(
    reg: &Registry,
    big: u64,
    model: &str,
    repo: &str,
) -> (tempfile::TempDir, PathBuf, ollamafs::fixture::Info, String) {
    let (d, src, info) = fixture_store(big);
    let name = reg.name(repo);
    assert!(ollamafs(&src, &["cp", model, &name]).status.success());
    let o = ollamafs(&src, &["push", "--insecure", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    (d, src, info, name)
}

/// `ollamafs ARGS --store STORE NAME` with alice's credentials in the environment.
pub fn as_alice(args: &[&str], store: &Path, name: &str) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--store")
        .arg(store)
        .arg(name)
        .env("OLLAMAFS_REGISTRY_USER", "alice")
        .env("OLLAMAFS_REGISTRY_PASSWORD", "s3cret")
        .output()
        .unwrap()
}

pub fn manifest_path_of(store: &Path, name: &str) -> PathBuf {
    let n = ollamafs::name::Name::parse(name).unwrap();
    store.join("manifests").join(n.manifest_path())
}

/// (downloaded, uploaded) from the command's last stderr line.
pub fn moved(o: &std::process::Output) -> (u64, u64) {
    let e = stderr(o);
    let line = e.lines().rev().find(|l| l.contains("bytes downloaded")).unwrap_or_else(|| panic!("{e}"));
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (nums[0], nums[1])
}

/// A new, empty store folder `models` in a temp folder (kept while the guard lives).
pub fn empty_store() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("models");
    fs::create_dir_all(&store).unwrap();
    (d, store)
}
