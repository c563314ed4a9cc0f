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
    Command::new(bin()).args(args).env("OLLAMA_MODELS", store).output().expect("run ollamafs")
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
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
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

/// A manifest's bytes (as text, so a failed comparison prints readably; manifests are JSON).
pub fn manifest_bytes(store: &Path, rel: &str) -> String {
    let b = fs::read(store.join("manifests").join(rel)).unwrap_or_else(|e| panic!("manifest {rel}: {e}"));
    String::from_utf8(b).expect("manifest is UTF-8")
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

/// `ollamafs verify` must pass, with no orphan blob (one that no manifest, trash item or
/// running mount uses).
pub fn assert_verifies(store: &Path) {
    let o = ollamafs(store, &["verify"]);
    assert!(o.status.success(), "verify failed:\n{}{}", stdout(&o), stderr(&o));
    assert!(!stderr(&o).contains("orphan"), "verify found orphans:\n{}", stderr(&o));
}

/// Say loudly that a test skips. The test harness swallows what a passing test prints with
/// `eprintln!`; a write straight to the process's stderr is not captured, so the skip shows
/// in every `cargo test` run, `--nocapture` or not.
pub fn skip(why: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("\n!!!!!!!! SKIPPING: {why} !!!!!!!!\n\n").as_bytes());
}

/// Is real FUSE usable here? Under CI=true it must be; elsewhere the mount tests skip loudly.
pub fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists() && unsafe { libc::geteuid() } == 0;
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but FUSE is not usable (need root and /dev/fuse)");
        }
        skip("MOUNT TEST: /dev/fuse or root is missing");
    }
    ok
}

pub fn is_mounted(mp: &Path) -> bool {
    let want = mp.to_string_lossy().to_string();
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1).is_some_and(|p| p.replace("\\040", " ") == want))
}

/// A real mount of a store, run in the foreground as a child process. Dropping it always
/// unmounts (even when the test panicked) and reaps the daemon.
pub struct Mount {
    pub store: PathBuf,
    pub mp: PathBuf,
    pub log: PathBuf,
    pub child: Option<std::process::Child>,
}

impl Mount {
    pub fn start(store: &Path, mp: &Path, extra: &[&str]) -> Mount {
        fs::create_dir_all(mp).unwrap();
        let log = mp.with_extension("log");
        let child = Command::new(bin())
            .args(["mount", "--foreground", "-vv", "--log-file"])
            .arg(&log)
            .args(["--store"])
            .arg(store)
            .args(extra)
            .arg(mp)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn ollamafs mount");
        let mut m = Mount { store: store.to_path_buf(), mp: mp.canonicalize().unwrap(), log, child: Some(child) };
        let t0 = std::time::Instant::now();
        while !is_mounted(&m.mp) {
            if let Some(c) = m.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!("mount exited early with {st}: {}", fs::read_to_string(&m.log).unwrap_or_default());
            }
            assert!(t0.elapsed() < std::time::Duration::from_secs(20), "mount did not come up");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        m
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.mp.join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Bytes the daemon has read and written through syscalls so far (/proc/PID/io).
    pub fn daemon_io(&self) -> (u64, u64) {
        let text = fs::read_to_string(format!("/proc/{}/io", self.pid())).unwrap_or_default();
        let get = |k: &str| {
            text.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().parse::<u64>().unwrap_or(0))).unwrap_or(0)
        };
        (get("rchar:"), get("wchar:"))
    }

    /// Bytes the daemon caused to be written to storage so far (`write_bytes` of /proc/PID/io).
    pub fn daemon_disk_writes(&self) -> u64 {
        let text = fs::read_to_string(format!("/proc/{}/io", self.pid())).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("write_bytes:").map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn unmount(&mut self) {
        if is_mounted(&self.mp) {
            let ok = Command::new("umount").arg(&self.mp).status().map(|s| s.success()).unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.mp).status();
            }
        }
        if let Some(mut c) = self.child.take() {
            let t0 = std::time::Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if t0.elapsed() > std::time::Duration::from_secs(10) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Every file under the store's scratch folder `.ollamafs/` except the shared lock file and
/// the log of a background mount without a system log:
/// temp files, scratch files and holds of live or dead daemons.
pub fn scratch_leftovers(store: &Path) -> Vec<String> {
    let root = store.join(".ollamafs");
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if !["lock", "log", "log.1", "file-names.json"].iter().any(|f| p == root.join(f)) {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// A Python with GLib's introspection bindings (python3-gi), for tests that drive GLib
/// itself as Nautilus and Thunar do. Under CI it must exist (`.ci/run` installs it);
/// elsewhere the test skips loudly.
pub fn python_with_gi() -> Option<&'static str> {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(py)
            .args(["-c", "import gi; gi.require_version('Gio', '2.0'); from gi.repository import Gio"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    assert!(std::env::var("CI").is_err(), "CI=true but no python3-gi: GLib tests must run");
    skip("GLib test: no python3 with python3-gi (apt-get install python3-gi)");
    None
}

/// A small tmpfs mounted at `dir` (made if missing), unmounted when dropped, even when the
/// test fails: a disk that fills up.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, megabytes: u32) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        sh_ok(&format!("mount -t tmpfs -o size={megabytes}m tmpfs '{}'", dir.display()));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A fixture store on a `megabytes` tmpfs, mounted: `(dir, disk, store, mount)`. Bind all
/// four (`disk` too): they drop mount first, then the tmpfs, then the folder. None without FUSE.
pub fn mounted_on_small_disk(megabytes: u32) -> Option<(tempfile::TempDir, Tmpfs, PathBuf, Mount)> {
    if !fuse_available() {
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&d.path().join("small"), megabytes);
    let store = disk.0.join("models");
    fixture::build(&store, 4 << 20).unwrap();
    let m = Mount::start(&store, &d.path().join("mnt"), &[]);
    Some((d, disk, store, m))
}

/// Run a shell command line, returning its output.
pub fn sh(cmd: &str) -> Output {
    Command::new("bash").arg("-c").arg(cmd).output().expect("bash")
}

/// Run a shell command line that must succeed.
pub fn sh_ok(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(o.status.success(), "`{cmd}` failed ({}):\n{}{}", o.status, stdout(&o), stderr(&o));
    stdout(&o)
}

/// The store is valid for Ollama: verify passes, nothing temporary in blobs/, only
/// valid manifest files at depth 4.
pub fn assert_store_clean(store: &Path) {
    assert_verifies(store);
    for b in blobs(store) {
        assert!(b.starts_with("sha256-") && b.len() == 71, "stray file in blobs/: {b}");
    }
    for m in manifest_files(store) {
        assert_eq!(m.split('/').count(), 4, "file at the wrong depth in manifests/: {m}");
        assert!(ollamafs::name::Name::from_manifest_path(&m).is_some(), "invalid manifest path {m}");
    }
}

/// A fixture store with the big (256 MiB, sparse) weights, and a mount of it.
pub fn mounted_fixture(extra: &[&str]) -> Option<(tempfile::TempDir, Mount, fixture::Info)> {
    if !fuse_available() {
        return None;
    }
    let (dir, store, info) = fixture_store(256 << 20);
    let m = Mount::start(&store, &dir.path().join("mnt"), extra);
    Some((dir, m, info))
}

/// Unmounts (lazily) whatever is mounted at the path when dropped, even after a panic: the
/// guard for tests that start background mounts themselves.
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A GGUF of new data (so a copy or transfer has to move it): a real header, then noise.
pub fn noisy_gguf(path: &Path, size: u64) {
    use std::io::Write;
    let header = fixture::gguf_header("llama", 15, &[("token_embd.weight", vec![2048, 2048])], None);
    let size = size.max(fixture::data_end(&header));
    let mut f = fs::File::create(path).unwrap();
    f.write_all(&header).unwrap();
    fixture::write_noise(&mut f, size - header.len() as u64).unwrap();
    f.sync_all().unwrap();
}

/// A path quoted for `sh`.
pub fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Run a Python snippet with GLib (`gi`); `sys.argv[1:]` are the paths given.
pub fn glib(py: &str, dir: &Path, code: &str, args: &[&Path]) -> String {
    let script = dir.join("glib_snippet.py");
    fs::write(
        &script,
        format!("import gi, sys\ngi.require_version('Gio', '2.0')\nfrom gi.repository import Gio, GLib\n{code}"),
    )
    .unwrap();
    let args: Vec<String> = args.iter().map(|a| q(a)).collect();
    sh_ok(&format!("{py} {} {}", q(&script), args.join(" ")))
}
