//! The mount, read side: real kernel mount, real tools (ls, stat, find, du, getfattr, cmp,
//! Python mmap), asserting against the store on disk.

mod common;
use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

#[test]
fn tree_names_and_file_layout() {
    let Some((_d, m, _info)) = mounted_fixture(&[]) else {
        return;
    };
    let root = sh_ok(&format!("ls -1 {}", m.mp.display()));
    let root: Vec<&str> = root.lines().collect();
    assert_eq!(root, ["hf.co", "llama3.2:latest", "localhost:5000", "mlx-community", "myuser", "qwen2.5:0.5b"]);
    assert_eq!(sh_ok(&format!("ls -1 {}", m.p("myuser").display())).trim(), "llama3.2:custom");
    assert_eq!(
        sh_ok(&format!("ls -1 {}", m.p("hf.co/bartowski").display())).trim(),
        "Llama-3.2-1B-Instruct-GGUF:Q4_K_M"
    );
    assert_eq!(sh_ok(&format!("ls -1 {}", m.p("localhost:5000/team").display())).trim(), "tiny:v1");
    // Directory order is manifest order, config.json and manifest.json last (ls -f keeps it).
    let files = sh_ok(&format!("ls -f1 {}", m.p("llama3.2:latest").display()));
    let files: Vec<&str> = files.lines().filter(|l| !l.starts_with('.')).collect();
    assert_eq!(
        files,
        ["model.gguf", "template", "license", "license-2", "params.json", "config.json", "manifest.json"]
    );
    let tiny = sh_ok(&format!("ls -f1 {}", m.p("localhost:5000/team/tiny:v1").display()));
    assert!(tiny.contains("adapter-2.gguf"), "{tiny}");
    let qwen = sh_ok(&format!("ls -f1 {}", m.p("qwen2.5:0.5b").display()));
    assert!(qwen.contains("projector.gguf") && qwen.contains("messages.json"), "{qwen}");
    assert_eq!(
        sh_ok(&format!("find {} -type f | sort", m.p("mlx-community/flux:latest").display()))
            .lines()
            .map(|l| l.rsplit("flux:latest/").next().unwrap().to_string())
            .collect::<Vec<_>>(),
        ["config.json", "files/config.json", "files/transformer/blocks.0.weight", "manifest.json"]
    );
    // Lookup and listing agree: no tagless, `library/` or `registry.ollama.ai/` aliases
    // (`stat` finds only what `ls` lists; the CLI and API keep Ollama's short names).
    for alias in [
        "llama3.2",
        "library",
        "registry.ollama.ai",
        "library/llama3.2:latest",
        "registry.ollama.ai/library/llama3.2:latest",
        "registry.ollama.ai/myuser/llama3.2:custom",
    ] {
        let e = fs::metadata(m.p(alias)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{alias}");
    }
    assert!(!m.p("nope:latest").exists());
    assert!(!m.p("myuser/nothing").exists());
}

#[test]
fn weights_are_shared_inodes_and_text_is_per_model() {
    let Some((_d, m, info)) = mounted_fixture(&[]) else {
        return;
    };
    let a = fs::metadata(m.p("llama3.2:latest/model.gguf")).unwrap();
    let b = fs::metadata(m.p("myuser/llama3.2:custom/model.gguf")).unwrap();
    assert_eq!(a.ino(), b.ino(), "one inode per blob");
    assert_eq!(a.nlink(), 2, "link count = models showing the blob");
    assert_eq!(a.mode() & 0o777, 0o444);
    assert_eq!(a.len(), info.big_size);
    assert_eq!(a.blocks(), info.big_size / 512, "st_blocks = size in 512-byte blocks (not sparse)");
    let blob = fs::metadata(m.store.join("blobs").join(info.big_model.blob_file_name())).unwrap();
    assert_eq!(a.mtime(), blob.mtime(), "file mtime = blob mtime");
    assert_eq!(a.uid(), fs::metadata(&m.store).unwrap().uid());
    let ta = fs::metadata(m.p("llama3.2:latest/template")).unwrap();
    let tb = fs::metadata(m.p("myuser/llama3.2:custom/template")).unwrap();
    assert_ne!(ta.ino(), tb.ino(), "text files are per model");
    assert_eq!(ta.mode() & 0o777, 0o644);
    // find -samefile sees the sharing; du counts a shared inode once.
    let same =
        sh_ok(&format!("find {} -samefile {} | sort", m.mp.display(), m.p("llama3.2:latest/model.gguf").display()));
    assert_eq!(same.lines().count(), 2, "{same}");
    let du_all: u64 = sh_ok(&format!("du -sb {}", m.mp.display())).split_whitespace().next().unwrap().parse().unwrap();
    assert!(du_all < info.big_size + (16 << 20), "du counted the shared weights twice: {du_all}");
    assert!(du_all > info.big_size, "{du_all}");
    // ls -li shows the same number on both lines.
    let li = sh_ok(&format!(
        "ls -li {} {}",
        m.p("llama3.2:latest/model.gguf").display(),
        m.p("myuser/llama3.2:custom/model.gguf").display()
    ));
    let inos: Vec<&str> = li.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(inos[0], inos[1]);
    // Model dir mtime = manifest mtime.
    let md = fs::metadata(m.p("llama3.2:latest")).unwrap();
    let mf = fs::metadata(m.store.join("manifests/registry.ollama.ai/library/llama3.2/latest")).unwrap();
    assert_eq!(md.mtime(), mf.mtime());
    assert!(md.is_dir() && md.mode() & 0o777 == 0o755);
}

#[test]
fn every_layer_reads_back_as_its_blob() {
    let Some((_d, m, _)) = mounted_fixture(&["--xattr"]) else {
        return;
    };
    let mut checked = 0;
    for model in [fixture::LLAMA, fixture::CUSTOM, fixture::HF, fixture::PORT, fixture::QWEN, fixture::MLX] {
        let o = ollamafs(&m.store, &["show", "--json", model]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for l in v["layers"].as_array().unwrap() {
            let file = l["file"].as_str().unwrap();
            let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
            let path = m.p(model).join(file);
            sh_ok(&format!(
                "cmp '{}' '{}'",
                path.display(),
                m.store.join("blobs").join(format!("sha256-{hex}")).display()
            ));
            let x = sh_ok(&format!("getfattr --only-values -n user.ollama.digest '{}'", path.display()));
            assert_eq!(x, l["digest"].as_str().unwrap());
            let mt = sh_ok(&format!("getfattr --only-values -n user.ollama.media_type '{}'", path.display()));
            assert_eq!(mt, l["media_type"].as_str().unwrap());
            checked += 1;
        }
        // manifest.json is the manifest's bytes.
        let rel = ollamafs::name::Name::parse(model).unwrap().manifest_path();
        assert_eq!(fs::read_to_string(m.p(model).join("manifest.json")).unwrap(), manifest_bytes(&m.store, &rel));
    }
    assert!(checked >= 20, "{checked}");
    let name = sh_ok(&format!("getfattr --only-values -n user.ollama.name '{}'", m.p(fixture::CUSTOM).display()));
    assert_eq!(name, "registry.ollama.ai/myuser/llama3.2:custom");
    let id = sh_ok(&format!("getfattr --only-values -n user.ollama.id '{}'", m.p(fixture::CUSTOM).display()));
    let bytes = manifest_bytes(&m.store, "registry.ollama.ai/myuser/llama3.2/custom");
    assert_eq!(id, ollamafs::store::manifest::model_id(bytes.as_bytes()));
}

#[test]
fn without_xattr_the_kernel_stops_asking() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else {
        return;
    };
    let o = sh(&format!("getfattr -n user.ollama.digest '{}'", m.p("llama3.2:latest/model.gguf").display()));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Operation not supported"), "{}", stderr(&o));
    // `ls -l` and `cp -a` are unaffected.
    let ls = sh_ok(&format!("ls -l '{}'", m.p("llama3.2:latest").display()));
    assert!(ls.contains("model.gguf") && ls.contains("manifest.json"), "{ls}");
    sh_ok(&format!("cp -a '{}' '{}'", m.p("llama3.2:latest").display(), m.p("withattrs:v1").display()));
    assert_eq!(
        manifest_bytes(&m.store, "registry.ollama.ai/library/withattrs/v1"),
        manifest_bytes(&m.store, "registry.ollama.ai/library/llama3.2/latest")
    );
}

#[test]
fn mmap_reads_weights_like_llama_cpp() {
    let Some((_d, m, info)) = mounted_fixture(&[]) else {
        return;
    };
    let blob = m.store.join("blobs").join(info.big_model.blob_file_name());
    let script = format!(
        r#"
import mmap, random, struct
with open('{mnt}', 'rb') as a, open('{blob}', 'rb') as b:
    ma = mmap.mmap(a.fileno(), 0, access=mmap.ACCESS_READ)
    mb = mmap.mmap(b.fileno(), 0, access=mmap.ACCESS_READ)
    assert ma[:4] == b'GGUF', ma[:4]
    assert struct.unpack('<I', ma[4:8])[0] == 3
    assert len(ma) == len(mb) == {size}
    rnd = random.Random(7)
    for _ in range(2000):
        o = rnd.randrange(0, len(ma) - 4096)
        assert ma[o:o+4096] == mb[o:o+4096], o
    assert ma[:65536] == mb[:65536]
print('ok')
"#,
        mnt = m.p("llama3.2:latest/model.gguf").display(),
        blob = blob.display(),
        size = info.big_size
    );
    assert_eq!(sh_ok(&format!("python3 -c \"{}\"", script.replace('"', "\\\""))).trim(), "ok");
}

/// Without passthrough the daemon serves every read (reused buffers, a prefetch thread per
/// handle): dense, cold, from two readers at once, and through mmap, it must be the blob.
#[test]
fn daemon_served_reads_match_the_blob() {
    if !fuse_available() {
        return;
    }
    let (dir, store, _) = fixture_store(1 << 20);
    let noise = dir.path().join("noise.gguf");
    {
        let mut f = fs::File::create(&noise).unwrap();
        f.write_all(&fixture::gguf_header("llama", 15, &[("w", vec![64, 64])], None)).unwrap();
        fixture::write_noise(&mut f, 96 << 20).unwrap();
    }
    let hex = sh_ok(&format!("sha256sum '{}'", noise.display())).split_whitespace().next().unwrap().to_string();
    let blob = store.join("blobs").join(format!("sha256-{hex}"));
    {
        let m = Mount::start(&store, &dir.path().join("mnt"), &[]);
        sh_ok(&format!("mkdir '{0}' && cp '{1}' '{0}/model.gguf'", m.p("dense:v1").display(), noise.display()));
    }
    assert!(blob.exists());
    let m = Mount::start(&store, &dir.path().join("mnt"), &["--no-passthrough"]);
    let file = m.p("dense:v1/model.gguf");
    sh_ok("sync; echo 3 > /proc/sys/vm/drop_caches");
    // Two readers at once: one from the start, one from the middle.
    let out = sh_ok(&format!(
        "sha256sum '{f}' > {d}/a.sum & tail -c 50331648 '{f}' | sha256sum > {d}/b.sum; wait; cat {d}/a.sum {d}/b.sum",
        f = file.display(),
        d = dir.path().display()
    ));
    let sums: Vec<&str> = out.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(sums[0], hex);
    let tail = sh_ok(&format!("tail -c 50331648 '{}' | sha256sum", blob.display()));
    assert_eq!(sums[1], tail.split_whitespace().next().unwrap());
    sh_ok(&format!("cmp '{}' '{}'", file.display(), blob.display()));
    let script = format!(
        "import mmap, random\nwith open('{}', 'rb') as a, open('{}', 'rb') as b:\n    ma = mmap.mmap(a.fileno(), 0, access=mmap.ACCESS_READ)\n    mb = mmap.mmap(b.fileno(), 0, access=mmap.ACCESS_READ)\n    r = random.Random(3)\n    for _ in range(3000):\n        o = r.randrange(0, len(mb) - 4096)\n        assert ma[o:o+4096] == mb[o:o+4096], o\nprint('ok')",
        file.display(),
        blob.display()
    );
    let py = dir.path().join("mmap_check.py");
    fs::write(&py, script).unwrap();
    assert_eq!(sh_ok(&format!("python3 '{}'", py.display())).trim(), "ok");
}

#[test]
fn changes_made_by_another_process_show_within_a_second() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else {
        return;
    };
    // Like a running Ollama: copy, rewrite in place, delete, directly in the store.
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let t0 = Instant::now();
        while !cond() {
            assert!(t0.elapsed() < Duration::from_millis(1500), "{what} not visible after {:?}", t0.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        t0.elapsed()
    };
    let src = m.store.join("manifests/registry.ollama.ai/library/llama3.2/latest");
    let dst_dir = m.store.join("manifests/registry.ollama.ai/library/ext");
    fs::create_dir_all(&dst_dir).unwrap();
    fs::copy(&src, dst_dir.join("v1")).unwrap();
    let seen = wait_for("new model", &|| m.p("ext:v1/model.gguf").exists());
    assert!(seen < Duration::from_secs(1), "{seen:?}");
    // In-place rewrite (Ollama truncates and writes) with another model's manifest.
    let qwen = fs::read(m.store.join("manifests/registry.ollama.ai/library/qwen2.5/0.5b")).unwrap();
    fs::write(dst_dir.join("v1"), &qwen).unwrap();
    wait_for("rewrite", &|| m.p("ext:v1/projector.gguf").exists());
    fs::remove_file(dst_dir.join("v1")).unwrap();
    wait_for("removal", &|| !m.p("ext:v1").exists());
    // The mount itself never wrote anything.
    assert_store_clean(&m.store);
}

#[test]
fn inodes_are_stable_across_remounts() {
    if !fuse_available() {
        return;
    }
    let (dir, store, _) = fixture_store(256 << 20);
    let mp = dir.path().join("mnt");
    let first = {
        let m = Mount::start(&store, &mp, &[]);
        fs::metadata(m.p("llama3.2:latest/model.gguf")).unwrap().ino()
    };
    assert!(!is_mounted(&mp), "guard unmounted");
    let m = Mount::start(&store, &mp, &[]);
    assert_eq!(fs::metadata(m.p("myuser/llama3.2:custom/model.gguf")).unwrap().ino(), first);
}

#[test]
fn read_only_mount_refuses_every_change() {
    let Some((_d, m, _)) = mounted_fixture(&["--read-only"]) else {
        return;
    };
    let before = manifest_files(&m.store);
    for cmd in [
        format!("mkdir '{}'", m.p("new:tag").display()),
        format!("cp -r '{}' '{}'", m.p("llama3.2:latest").display(), m.p("copy:x").display()),
        format!("rm '{}'", m.p("llama3.2:latest/manifest.json").display()),
        format!("echo hi > '{}'", m.p("llama3.2:latest/template").display()),
        format!("mv '{}' '{}'", m.p("llama3.2:latest").display(), m.p("moved:x").display()),
    ] {
        let o = sh(&cmd);
        assert!(!o.status.success(), "{cmd} succeeded on a read-only mount");
        assert!(stderr(&o).contains("Read-only file system"), "{cmd}: {}", stderr(&o));
    }
    assert_eq!(manifest_files(&m.store), before);
    assert!(fs::read(m.p("llama3.2:latest/params.json")).is_ok(), "reads still work");
}

#[test]
fn foreground_mount_unmounts_on_sigterm() {
    let Some((_d, mut m, _)) = mounted_fixture(&[]) else {
        return;
    };
    let pid = m.pid() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let c = m.child.as_mut().unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "daemon ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&m.mp));
    m.child = None;
}

#[test]
fn background_mount_returns_when_ready_and_umount_stops_it() {
    if !fuse_available() {
        return;
    }
    let (dir, store, _) = fixture_store(8 << 20);
    let mp = dir.path().join("mnt");
    fs::create_dir_all(&mp).unwrap();
    let o = std::process::Command::new(bin()).args(["mount", "--store"]).arg(&store).arg(&mp).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Ready on return: no waiting needed.
    let guard = MountedPath(mp.canonicalize().unwrap());
    assert!(mp.join("llama3.2:latest/model.gguf").exists());
    sh_ok(&format!("umount '{}'", mp.display()));
    let t0 = Instant::now();
    while sh("pgrep -f 'ollamafs mount --store'").status.success() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_mounted(&mp));
    drop(guard);
    // The daemon cleaned its scratch folder on the way out (a log stays where there is
    // no system log).
    let left: Vec<String> = fs::read_dir(store.join(".ollamafs"))
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(left.iter().all(|n| n == "log"), "{left:?}");
}

/// Unmounts a background mount if a test fails before doing so.
struct MountedPath(std::path::PathBuf);
impl Drop for MountedPath {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn mount_point_inside_the_store_is_refused() {
    let (_d, store, _) = fixture_store(1 << 20);
    let inside = store.join("manifests/mnt");
    fs::create_dir_all(&inside).unwrap();
    let o = std::process::Command::new(bin())
        .args(["mount", "--foreground", "--store"])
        .arg(&store)
        .arg(&inside)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("inside the store"), "{}", stderr(&o));
    let o = std::process::Command::new(bin())
        .args(["mount", "-o", "bogus", "--store"])
        .arg(&store)
        .arg("/tmp")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown mount option"), "{}", stderr(&o));
}

#[test]
fn df_reports_the_store_disk() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else {
        return;
    };
    let a = sh_ok(&format!("stat -f -c '%b %S' '{}'", m.mp.display()));
    let b = sh_ok(&format!("stat -f -c '%b %S' '{}'", m.store.display()));
    assert_eq!(a, b);
}

#[test]
fn fstab_style_options_work() {
    if !fuse_available() {
        return;
    }
    let (dir, store, _) = fixture_store(1 << 20);
    let mp = dir.path().join("mnt");
    let m = Mount::start(&store, &mp, &["-o", &format!("ro,noatime,store={}", store.display())]);
    let o = sh(&format!("mkdir '{}'", m.p("x:y").display()));
    assert!(stderr(&o).contains("Read-only"), "{}", stderr(&o));
}

#[test]
fn fstab_helper_starts_a_mount() {
    if !fuse_available() {
        return;
    }
    let (dir, store, _) = fixture_store(1 << 20);
    let mp = dir.path().join("mnt");
    fs::create_dir_all(&mp).unwrap();
    let helper = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mount.fuse.ollamafs");
    let o = std::process::Command::new(helper)
        .arg(&store)
        .arg(&mp)
        .args(["-o", "ro,noatime,nofail"])
        .env("OLLAMAFS_BIN", bin())
        .output()
        .unwrap();
    let guard = MountedPath(mp.canonicalize().unwrap());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(mp.join("llama3.2:latest/template").exists());
    assert!(stderr(&sh(&format!("mkdir '{}/x:y'", mp.display()))).contains("Read-only"));
    sh_ok(&format!("umount '{}'", mp.display()));
    drop(guard);
}
