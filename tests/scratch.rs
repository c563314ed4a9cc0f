//! Scratch files and folders on a real mount, driven by rsync and by Python's `os` calls,
//! each compared with the same steps on the disk below (docs/SEMANTICS.md, "Scratch files
//! and folders").

mod common;
use common::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

const LLAMA: &str = "registry.ollama.ai/library/llama3.2/latest";

fn sorted_listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// A model folder exported to the disk (as a user's backup would be).
fn export(m: &Mount, dir: &Path) -> std::path::PathBuf {
    let out = dir.join("export");
    sh_ok(&format!("cp -r {} {}", q(&m.p("llama3.2:latest")), q(&out)));
    out
}

/// rsync's `--delay-updates` (`.~tmp~/`) and `--partial-dir` put each finished file in a
/// folder inside the destination and rename it out: both publish the model byte for byte,
/// store no new blob and leave no folder behind.
#[test]
fn rsync_delay_updates_and_partial_dir_publish_byte_for_byte() {
    let Some((dir, m, _)) = mounted_fixture(&[]) else { return };
    let src = export(&m, dir.path());
    let blobs_before = blobs(&m.store);
    for (opt, name) in [("--delay-updates", "delayed"), ("--partial-dir=.rsync-partial", "partial")] {
        let out = sh(&format!("rsync -a {opt} {}/ {}/", q(&src), q(&m.p(&format!("{name}:v1")))));
        assert!(out.status.success(), "rsync {opt}: {}", stderr(&out));
        assert!(!stderr(&out).contains("discarding"), "rsync {opt} discarded files: {}", stderr(&out));
        let published = format!("registry.ollama.ai/library/{name}/v1");
        assert_eq!(manifest_bytes(&m.store, &published), manifest_bytes(&m.store, LLAMA), "{opt}");
        assert_eq!(sorted_listing(&m.p(&format!("{name}:v1"))), sorted_listing(&src), "{opt}: no temp folder left");
    }
    assert_eq!(blobs(&m.store), blobs_before, "no blob stored twice");
    let store = m.store.clone();
    drop(m);
    assert_store_clean(&store);
    assert_eq!(scratch_leftovers(&store), Vec::<String>::new());
}

fn literal_bytes(stats: &str) -> u64 {
    let line = stats.lines().find(|l| l.starts_with("Literal data:")).expect("rsync --stats prints literal data");
    line.split_whitespace().nth(2).unwrap().replace(',', "").parse().unwrap()
}

/// An rsync of a large GGUF stopped halfway keeps what it had in `--partial-dir` (a
/// scratch folder of the model folder); the next run sends only the rest and publishes.
#[test]
fn an_interrupted_rsync_resumes_from_its_partial_dir() {
    let Some((dir, m, _)) = mounted_fixture(&[]) else { return };
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let size = 96u64 << 20;
    noisy_gguf(&src.join("model.gguf"), size);
    let dest = m.p("resumed:v1");
    let rsync = |extra: &str| {
        format!("rsync -a --no-whole-file --partial-dir=.rsync-partial --stats {extra} {}/ {}/", q(&src), q(&dest))
    };
    // Slowed down, then interrupted as Ctrl-C would: rsync moves its temp file into the
    // partial dir.
    let mut child = std::process::Command::new("sh")
        .args(["-c", &format!("exec {}", rsync("--bwlimit=24m"))])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1800));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    // rsync's receiver, a process of its own, saves the partial file as it exits.
    let partial = dest.join(".rsync-partial/model.gguf");
    let t0 = std::time::Instant::now();
    let temp_left = || sorted_listing(&dest).iter().any(|n| n.starts_with(".model.gguf."));
    while (!partial.exists() || temp_left()) && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let kept = fs::metadata(&partial).map(|md| md.len()).unwrap_or(0);
    assert!(kept > 0 && kept < size, "the partial file is kept in the partial dir ({kept} of {size} bytes)");
    assert!(!m.store.join("manifests/registry.ollama.ai/library/resumed").exists(), "nothing published yet");

    let out = sh(&rsync(""));
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = literal_bytes(&stdout(&out));
    assert!(sent < size - kept / 2, "the second run sent {sent} of {size} bytes (kept {kept})");
    sh_ok(&format!("cmp {} {}", q(&src.join("model.gguf")), q(&dest.join("model.gguf"))));
    assert!(m.store.join("manifests/registry.ollama.ai/library/resumed/v1").exists(), "published");
    assert!(!dest.join(".rsync-partial").exists(), "rsync removed its partial dir");
    let store = m.store.clone();
    drop(m);
    assert_store_clean(&store);
    assert_eq!(scratch_leftovers(&store), Vec::<String>::new());
}

/// The two cases where a name-based inode mixed up files: a new file with the name of an
/// unlinked but open one, and a rename over an open file. The mount answers as the disk.
const INODE_CASES: &str = r#"
import os, sys
d = sys.argv[1]
f, g, h = (os.path.join(d, n) for n in ("f", "g", "h"))
a = os.open(f, os.O_CREAT | os.O_RDWR, 0o600); os.write(a, b"old_content"); os.unlink(f)
b = os.open(f, os.O_CREAT | os.O_RDWR, 0o644); os.write(b, b"NEW")
sa, sb = os.fstat(a), os.fstat(b)
print("distinct inodes", sa.st_ino != sb.st_ino)
print("unlinked", sa.st_size, sa.st_nlink, os.pread(a, 100, 0))
print("new", sb.st_size, sb.st_nlink, os.pread(b, 100, 0), open(f, "rb").read())
os.ftruncate(a, 2)
print("after ftruncate", os.fstat(a).st_size, os.fstat(b).st_size, open(f, "rb").read())
c = os.open(g, os.O_CREAT | os.O_RDWR, 0o644); os.write(c, b"ggg")
open(h, "wb").write(b"hhhhh"); os.rename(h, g)
sc = os.fstat(c)
print("renamed over", sc.st_size, sc.st_nlink, os.pread(c, 10, 0), open(g, "rb").read(), os.stat(g).st_ino != sc.st_ino)
for x in (a, b, c): os.close(x)
os.unlink(f); os.unlink(g)
print("left", sorted(n for n in os.listdir(d) if n in ("f", "g", "h")))
"#;

#[test]
fn scratch_files_have_one_inode_per_file_as_on_the_disk() {
    let Some((dir, m, _)) = mounted_fixture(&[]) else { return };
    let script = dir.path().join("inodes.py");
    fs::write(&script, INODE_CASES).unwrap();
    let disk = dir.path().join("disk");
    fs::create_dir(&disk).unwrap();
    let on_disk = sh_ok(&format!("python3 {} {}", q(&script), q(&disk)));
    for place in ["qwen2.5:0.5b", "qwen2.5:0.5b/.work"] {
        if place.ends_with(".work") {
            fs::create_dir(m.p(place)).unwrap();
        }
        let in_mount = sh_ok(&format!("python3 {} {}", q(&script), q(&m.p(place))));
        assert_eq!(in_mount, on_disk, "{place}");
    }
    assert!(on_disk.contains("unlinked 11 0 b'old_content'"), "{on_disk}");
}

/// A model folder's scratch tree lives in the daemon's own folder: a killed daemon's trees
/// are removed at the next start, and a model folder removed with `rm -r` takes its tree.
#[test]
fn scratch_trees_never_outlive_their_folder_or_daemon() {
    let Some((dir, mut m, _)) = mounted_fixture(&[]) else { return };
    let store = m.store.clone();
    sh_ok(&format!(
        "mkdir -p {0}/a/b && echo x > {0}/a/b/f && ln -s f {0}/a/b/l && mkfifo {0}/a/p",
        q(&m.p("qwen2.5:0.5b/.tmp"))
    ));
    sh_ok(&format!("cp -r {} {}", q(&m.p("qwen2.5:0.5b")), q(&m.p("copy:v1"))));
    assert_eq!(fs::read_to_string(m.p("copy:v1/.tmp/a/b/f")).unwrap(), "x\n", "copied as plain files");
    sh_ok(&format!("rm -r {}", q(&m.p("copy:v1"))));
    assert!(!store.join("manifests/registry.ollama.ai/library/copy").exists());
    let trees = |pid: u32| store.join(format!(".ollamafs/{pid}/folders"));
    let tree_count = |pid: u32| fs::read_dir(trees(pid)).map(|r| r.count()).unwrap_or(0);
    assert_eq!(tree_count(m.pid()), 1, "the copy's tree went with it; the original's stays");
    let old = m.pid();
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    m.unmount();
    let m2 = Mount::start(&store, &dir.path().join("mnt"), &[]);
    assert!(!trees(old).exists(), "the killed daemon's trees are removed at the next start");
    assert!(!m2.p("qwen2.5:0.5b/.tmp").exists(), "scratch entries are not part of the model");
    drop(m2);
    assert_store_clean(&store);
    assert_eq!(scratch_leftovers(&store), Vec::<String>::new());
}

/// `rsync --delay-updates` of a new GGUF (data the store does not have): the temp file's
/// blob is moved into `.~tmp~/` and back onto `model.gguf` without a copy and without a
/// second hashing pass, so the daemon writes the data once, as for a plain `cp`.
#[test]
fn rsync_delay_updates_of_new_data_writes_it_once() {
    let Some((dir, m, _)) = mounted_fixture(&[]) else { return };
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let size = 64u64 << 20;
    noisy_gguf(&src.join("model.gguf"), size);
    let (read0, _) = m.daemon_io();
    let written0 = m.daemon_disk_writes();
    let out = sh(&format!("rsync -a --delay-updates {}/ {}/", q(&src), q(&m.p("fresh:v1"))));
    assert!(out.status.success(), "{}", stderr(&out));
    let (read1, _) = m.daemon_io();
    let written = m.daemon_disk_writes() - written0;
    let read = read1 - read0;
    eprintln!("rsync --delay-updates of {size} bytes: daemon wrote {written}, read {read}");
    sh_ok(&format!("cmp {} {}", q(&src.join("model.gguf")), q(&m.p("fresh:v1/model.gguf"))));
    assert!(m.store.join("manifests/registry.ollama.ai/library/fresh/v1").exists());
    // Once through FUSE and once for the hash; a copy out and back would add two more.
    assert!(written < size * 3 / 2, "the daemon wrote {written} bytes for {size}");
    assert!(read < size * 5 / 2, "the daemon read {read} bytes for {size}");
    let store = m.store.clone();
    drop(m);
    assert_store_clean(&store);
}
