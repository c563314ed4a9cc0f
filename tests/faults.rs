//! Fault tests: kill -9 of the daemon mid-import and mid-copy, a full disk, and a bounded
//! concurrency soak against a "running Ollama" writing the store directly. Each ends with
//! the store checked by `ollamafs verify` and by byte comparison of what must not change.
//! `OLLAMAFS_LONG_FAULTS=1` runs longer variants.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

fn long() -> bool {
    std::env::var("OLLAMAFS_LONG_FAULTS").is_ok_and(|v| v == "1")
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Every manifest file with its bytes.
fn snapshot(store: &Path) -> BTreeMap<String, String> {
    manifest_files(store).into_iter().map(|m| (m.clone(), manifest_bytes(store, &m))).collect()
}

fn noise_file(path: &Path, size: u64) {
    let mut f = fs::File::create(path).unwrap();
    use std::io::Write;
    f.write_all(b"GGUF\x03\0\0\0").unwrap();
    ollamafs::fixture::write_noise(&mut f, size - 8).unwrap();
}

/// After a crash: the dead mount is detached, a new daemon starts (and cleans up).
fn crash_and_restart(m: &mut Mount) -> Mount {
    let pid = m.pid() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    if let Some(mut c) = m.child.take() {
        let _ = c.wait();
    }
    // The kernel keeps a dead FUSE mount until it is detached.
    let _ = std::process::Command::new("umount").arg("-l").arg(&m.mp).status();
    assert!(!is_mounted(&m.mp));
    let (store, mp) = (m.store.clone(), m.mp.clone());
    Mount::start(&store, &mp, &[])
}

fn assert_recovered(store: &Path, before: &BTreeMap<String, String>) {
    let after = snapshot(store);
    for (k, v) in before {
        assert_eq!(after.get(k), Some(v), "{k} changed or vanished after the crash");
    }
    assert_store_clean(store);
    // Only the live daemon's scratch folder may exist, and it holds nothing from before.
    let scratch: Vec<_> = fs::read_dir(store.join(".ollamafs")).map(|r| r.flatten().collect()).unwrap_or_default();
    for e in scratch {
        let n = fs::read_dir(e.path()).map(|r| r.count()).unwrap_or(0);
        assert_eq!(n, 0, "leftover in {}", e.path().display());
    }
}

#[test]
fn kill_9_during_a_large_import_loses_nothing() {
    let Some((d, mut m, _)) = mounted_fixture(&[]) else { return };
    let before = snapshot(&m.store);
    let src = d.path().join("big.gguf");
    noise_file(&src, if long() { 1 << 30 } else { 192 << 20 });
    sh_ok(&format!("mkdir {}", q(&m.p("incoming:v1"))));
    let mut cp = std::process::Command::new("cp").arg(&src).arg(m.p("incoming:v1/model.gguf")).spawn().unwrap();
    // Wait until the import is well under way: a temp file in the daemon's scratch grows.
    let scratch = m.store.join(".ollamafs").join(m.pid().to_string());
    let t0 = Instant::now();
    loop {
        let grown = fs::read_dir(&scratch)
            .map(|r| r.flatten().any(|e| e.metadata().map(|md| md.len() > (16 << 20)).unwrap_or(false)))
            .unwrap_or(false);
        if grown {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "import never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let m2 = crash_and_restart(&mut m);
    let _ = cp.wait();
    assert_recovered(&m2.store, &before);
    assert!(!manifest_files(&m2.store).iter().any(|f| f.contains("incoming")), "a partial import became a model");
    // The mount works after the restart.
    sh_ok(&format!("cp -r {} {}", q(&m2.p("llama3.2:latest")), q(&m2.p("after:crash"))));
    assert_store_clean(&m2.store);
}

#[test]
fn kill_9_during_a_burst_of_copies_loses_nothing() {
    let Some((_d, mut m, _)) = mounted_fixture(&[]) else { return };
    let before = snapshot(&m.store);
    let sources = [fixture::LLAMA, fixture::CUSTOM, fixture::HF, fixture::QWEN];
    let n = if long() { 64 } else { 16 };
    let mut cmds = String::new();
    for i in 0..n {
        cmds += &format!("cp -r {} {} 2>/dev/null & ", q(&m.p(sources[i % 4])), q(&m.p(&format!("burst{i}:v1"))));
    }
    let mut burst = std::process::Command::new("bash").arg("-c").arg(format!("{cmds} wait")).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(40));
    let m2 = crash_and_restart(&mut m);
    let _ = burst.wait();
    assert_recovered(&m2.store, &before);
    // Each copy is either absent or complete; partial models (fewer layers) may exist,
    // but every manifest present references only blobs that exist (checked by verify).
    let after = snapshot(&m2.store);
    let done = after.keys().filter(|k| k.contains("/burst")).count();
    eprintln!("{done} of {n} copies had landed before the crash");
}

fn free_bytes(p: &Path) -> u64 {
    sh_ok(&format!("stat -f -c '%a %S' {}", q(p))).split_whitespace().map(|x| x.parse::<u64>().unwrap()).product()
}

#[test]
fn full_disk_gives_enospc_and_gives_the_space_back() {
    let Some((d, disk, store, m)) = mounted_on_small_disk(40) else { return };
    let small = &disk.0;
    let before = snapshot(&store);
    let blobs_before = blobs(&store);
    let free_before = free_bytes(small);
    let src = d.path().join("too-big.gguf");
    noise_file(&src, 64 << 20);
    sh_ok(&format!("mkdir {}", q(&m.p("toobig:v1"))));
    let o = sh(&format!("cp {} {}", q(&src), q(&m.p("toobig:v1/model.gguf"))));
    assert!(!o.status.success(), "an import larger than the disk succeeded");
    assert!(stderr(&o).contains("No space left on device"), "{}", stderr(&o));
    assert_eq!(blobs(&store), blobs_before, "no partial blob");
    assert_eq!(snapshot(&store), before, "no manifest changed");
    let free_after = free_bytes(small);
    assert!(free_after + (1 << 20) >= free_before, "space not given back: {free_before} → {free_after}");
    // The mount keeps working.
    sh_ok(&format!("cp -r {} {}", q(&m.p("llama3.2:latest")), q(&m.p("still:works"))));
    sh_ok(&format!("echo ok > {}", q(&m.p("still:works/system"))));
    assert_store_clean(&store);
    drop(m);
}

#[test]
fn concurrency_soak_with_an_outside_writer() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let secs = if long() { 60 } else { 4 };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mp = m.mp.clone();
    let store = m.store.clone();
    let base = manifest_bytes(&store, "registry.ollama.ai/library/llama3.2/latest");
    let hf = manifest_bytes(&store, "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF/Q4_K_M");
    std::thread::scope(|s| {
        // Copy and delete models through the mount.
        for t in 0..2 {
            let mp = mp.clone();
            s.spawn(move || {
                let mut i = 0;
                while Instant::now() < deadline {
                    let dst = mp.join(format!("soak{t}-{i}:v1"));
                    sh_ok(&format!("cp -r {} {}", q(&mp.join("llama3.2:latest")), q(&dst)));
                    sh_ok(&format!("cmp {} {}", q(&dst.join("template")), q(&mp.join("llama3.2:latest/template"))));
                    sh_ok(&format!("rm -r {}", q(&dst)));
                    i += 1;
                }
            });
        }
        // Read weights and edit a prompt.
        let mp2 = mp.clone();
        s.spawn(move || {
            let mut i = 0;
            while Instant::now() < deadline {
                sh_ok(&format!("head -c 1048576 {} > /dev/null", q(&mp2.join("llama3.2:latest/model.gguf"))));
                sh_ok(&format!("echo 'edit {i}' > {}", q(&mp2.join("myuser/llama3.2:custom/system"))));
                i += 1;
            }
            fs::write(mp2.join("myuser/llama3.2:custom/system"), "final\n").unwrap();
        });
        // A running Ollama: copies and deletes manifests directly (in place, not atomic).
        let store2 = store.clone();
        let hf2 = hf.clone();
        s.spawn(move || {
            let dir = store2.join("manifests/registry.ollama.ai/outside/m");
            let mut i = 0;
            while Instant::now() < deadline {
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join(format!("t{}", i % 5)), &hf2).unwrap();
                if i % 3 == 0 {
                    let _ = fs::remove_file(dir.join(format!("t{}", (i + 2) % 5)));
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
        });
    });
    // Let the mount catch up with the outside writer.
    std::thread::sleep(Duration::from_millis(300));
    let files = manifest_files(&store);
    assert!(!files.iter().any(|f| f.contains("/soak")), "a deleted copy survived: {files:?}");
    assert_eq!(manifest_bytes(&store, "registry.ollama.ai/library/llama3.2/latest"), base);
    assert_eq!(fs::read_to_string(mp.join("myuser/llama3.2:custom/system")).unwrap(), "final\n");
    for f in files.iter().filter(|f| f.contains("/outside/")) {
        assert_eq!(manifest_bytes(&store, f), hf, "{f}");
        let tag = f.rsplit('/').next().unwrap();
        assert!(mp.join(format!("outside/m:{tag}/model.gguf")).exists(), "{f} not visible in the mount");
    }
    assert_store_clean(&store);
}
