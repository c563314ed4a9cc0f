//! Models are transactions (docs/SEMANTICS.md, "Transactions"): whatever happens in the
//! mount, the store only ever holds complete models. Each test here is one way a model used
//! to reach the store half-made, driven with the real tools on a real mount, and asserted on
//! the store itself (manifest files, blobs, `ollamafs verify`).

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

const LLAMA: &str = "registry.ollama.ai/library/llama3.2/latest";
const QWEN: &str = "registry.ollama.ai/library/qwen2.5/0.5b";

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Every manifest on disk is a complete model (verify applies the one definition).
fn assert_all_complete(store: &Path) {
    let o = ollamafs(store, &["verify"]);
    assert!(o.status.success(), "verify found an incomplete model:\n{}{}", stdout(&o), stderr(&o));
    for m in manifest_files(store) {
        let v: serde_json::Value = serde_json::from_str(&manifest_bytes(store, &m)).unwrap();
        assert_ne!(v["config"]["digest"], "", "{m} has an empty config");
    }
}

fn listed(store: &Path) -> String {
    stdout(&ollamafs(store, &["ls"]))
}

/// Item 2: a writer killed part-way (its descriptor closed by the kernel) never publishes
/// the prefix it wrote, neither as a new model nor as a replacement of published weights.
#[test]
fn a_killed_writer_never_publishes_a_truncated_gguf() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    let blobs_before = blobs(&m.store);
    // A real GGUF header declaring ~38 MB of tensor data; the writer dies after 10 MiB.
    let header = ollamafs::fixture::gguf_header("llama", 15, &[("token_embd.weight", vec![4096, 16384])], None);
    let hdr = d.path().join("header.bin");
    fs::write(&hdr, &header).unwrap();
    let writer = d.path().join("writer.py");
    fs::write(
        &writer,
        "import os, sys\nf = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n\
         os.write(f, open(sys.argv[1], 'rb').read())\nchunk = os.urandom(1 << 20)\n\
         for _ in range(10):\n    os.write(f, chunk)\nos.kill(os.getpid(), 9)\n",
    )
    .unwrap();
    sh_ok(&format!("mkdir {}", q(&m.p("new:x"))));
    let o = sh(&format!("python3 {} {} {}", q(&writer), q(&hdr), q(&m.p("new:x/model.gguf"))));
    assert!(!o.status.success(), "the writer was meant to die");
    assert!(!manifest_files(&m.store).iter().any(|f| f.contains("/new/")), "a truncated model reached the store");
    assert!(!listed(&m.store).contains("new:x"), "ollamafs ls lists it:\n{}", listed(&m.store));
    // The mount still shows the draft and what was written into it.
    assert_eq!(fs::metadata(m.p("new:x/model.gguf")).unwrap().len(), header.len() as u64 + (10 << 20));
    assert!(m.log_text().contains("new:x is a draft"), "the log says why it is not published");
    assert_all_complete(&m.store);

    // A published model whose weights are replaced by a killed writer keeps its old weights.
    let qwen_before = manifest_bytes(&m.store, QWEN);
    sh_ok(&format!("rm {}", q(&m.p("qwen2.5:0.5b/model.gguf"))));
    assert_eq!(manifest_bytes(&m.store, QWEN), qwen_before, "removing the weights is held");
    let _ = sh(&format!("python3 {} {} {}", q(&writer), q(&hdr), q(&m.p("qwen2.5:0.5b/model.gguf"))));
    assert_eq!(manifest_bytes(&m.store, QWEN), qwen_before, "a truncated replacement is held");
    assert_all_complete(&m.store);
    // Unmounting drops the draft and the held change, and what only they used.
    let mut m = m;
    m.unmount();
    assert!(m.log_text().contains("draft new:x never became a complete model"));
    assert_eq!(blobs(&m.store), blobs_before, "the truncated prefixes are pruned");
    assert_eq!(manifest_bytes(&m.store, QWEN), qwen_before);
    assert_eq!(scratch_leftovers(&m.store), Vec::<String>::new());
}

/// Item 3: a full disk. `head > model.gguf` fails with ENOSPC and leaves no model, no empty
/// weights blob, no generated config.
#[test]
fn a_full_disk_leaves_no_model_behind() {
    let Some((_d, _disk, store, m)) = mounted_on_small_disk(48) else { return };
    let (manifests, blobs_before) = (manifest_files(&store), blobs(&store));
    sh_ok(&format!("mkdir {}", q(&m.p("huge:latest"))));
    let o = sh(&format!("head -c 200000000 /dev/urandom > {}", q(&m.p("huge:latest/model.gguf"))));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("No space left on device"), "{}", stderr(&o));
    assert_eq!(manifest_files(&store), manifests, "no model was published");
    assert_eq!(blobs(&store), blobs_before, "no blob: not the empty file, not a generated config");
    let empty = "sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert!(!store.join("blobs").join(empty).exists());
    assert_all_complete(&store);
    drop(m);
}

/// Item 4: removing config.json or the weights is held (the store keeps the last complete
/// manifest and its blobs); moving a model out file by file (copy, then unlink, as KIO and
/// some file managers do) never leaves a broken manifest and never prunes what is still
/// referenced.
#[test]
fn removing_config_or_weights_is_held_and_a_move_out_is_safe() {
    let Some((d, m, info)) = mounted_fixture(&[]) else { return };
    let before = manifest_bytes(&m.store, LLAMA);
    sh_ok(&format!("rm {}", q(&m.p("llama3.2:latest/config.json"))));
    assert!(!m.p("llama3.2:latest/config.json").exists(), "the mount shows the change at once");
    assert_eq!(manifest_bytes(&m.store, LLAMA), before, "the store keeps the complete model");
    // Writing a config back completes the model again: one publish.
    let config = b"{\"model_format\":\"gguf\",\"model_family\":\"llama\"}\n";
    fs::write(m.p("llama3.2:latest/config.json"), config).unwrap();
    let after: serde_json::Value = serde_json::from_str(&manifest_bytes(&m.store, LLAMA)).unwrap();
    assert_eq!(after["config"]["size"], config.len());
    assert_all_complete(&m.store);

    // Move myuser/llama3.2:custom out of the mount file by file, checking the store each step.
    let out = d.path().join("moved-out");
    fs::create_dir_all(&out).unwrap();
    let dir = m.p("myuser/llama3.2:custom");
    let names: Vec<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    for n in &names {
        sh_ok(&format!("cp {} {}", q(&dir.join(n)), q(&out.join(n))));
        sh_ok(&format!("rm {}", q(&dir.join(n))));
        assert_all_complete(&m.store);
        assert!(blobs(&m.store).contains(&info.big_model.blob_file_name()), "weights pruned while in use ({n})");
    }
    sh_ok(&format!("rmdir {}", q(&dir)));
    assert!(!manifest_files(&m.store).iter().any(|f| f.contains("/myuser/")));
    assert!(!blobs(&m.store).contains(&info.system_custom.blob_file_name()), "its own prompt is pruned at the end");
    assert_eq!(fs::read(out.join("system")).unwrap(), ollamafs::fixture::SYSTEM_CUSTOM.as_bytes());
    assert_store_clean(&m.store);
}

/// Item 5: GLib (Nautilus, Thunar) deletes a folder's files in the order its enumerator
/// gives, which on this mount puts config.json and manifest.json first. Driven through GLib
/// itself: every delete succeeds, then the folder's.
#[test]
fn deleting_in_glib_order_succeeds_at_every_step() {
    let Some((d, m, info)) = mounted_fixture(&[]) else { return };
    let Some(py) = python_with_gi() else { return };
    let script = d.path().join("glib_delete.py");
    fs::write(
        &script,
        "import gi, sys\ngi.require_version('Gio', '2.0')\nfrom gi.repository import Gio\n\
         d = Gio.File.new_for_path(sys.argv[1])\n\
         e = d.enumerate_children('standard::name', Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, None)\n\
         names = [i.get_name() for i in e]\nprint(' '.join(names))\n\
         for n in names:\n    d.get_child(n).delete(None)\nd.delete(None)\n",
    )
    .unwrap();
    let order = sh_ok(&format!("{py} {} {}", q(&script), q(&m.p("myuser/llama3.2:custom"))));
    let order: Vec<&str> = order.split_whitespace().collect();
    let pos = |n: &str| order.iter().position(|x| *x == n).unwrap();
    assert!(pos("manifest.json") < pos("template"), "GLib's order has manifest.json before the text: {order:?}");
    assert!(!m.p("myuser/llama3.2:custom").exists());
    assert!(!manifest_files(&m.store).iter().any(|f| f.contains("/myuser/")));
    assert!(blobs(&m.store).contains(&info.big_model.blob_file_name()), "still used by llama3.2");
    assert!(!blobs(&m.store).contains(&info.system_custom.blob_file_name()));
    assert_store_clean(&m.store);
}

/// Item 6: scratch files belong to their model folder: removed with it, moved with it,
/// never seen in a later model of the same name, space given back at once.
#[test]
fn scratch_files_belong_to_their_folder() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    sh_ok(&format!("cp -r {} {}", q(&m.p("qwen2.5:0.5b")), q(&m.p("ghost:v1"))));
    sh_ok(&format!("echo OLD > {}", q(&m.p("ghost:v1/secret.txt"))));
    sh_ok(&format!("rm -rf {}", q(&m.p("ghost:v1"))));
    sh_ok(&format!("cp -r {} {}", q(&m.p("qwen2.5:0.5b")), q(&m.p("ghost:v1"))));
    assert!(!m.p("ghost:v1/secret.txt").exists(), "a later model of the same name shows the old scratch file");
    // rm -r without -f of a model holding scratch files succeeds.
    sh_ok(&format!("head -c 3000000 /dev/urandom > {}", q(&m.p("ghost:v1/notes.bin"))));
    sh_ok(&format!("rm -r {}", q(&m.p("ghost:v1"))));
    assert!(!m.p("ghost:v1").exists());
    assert_eq!(scratch_leftovers(&m.store), Vec::<String>::new(), "scratch space is given back at once");
    // mv of a model takes its scratch files along.
    sh_ok(&format!("echo keep > {}", q(&m.p("qwen2.5:0.5b/todo.txt"))));
    sh_ok(&format!("mv {} {}", q(&m.p("qwen2.5:0.5b")), q(&m.p("moved:v1"))));
    assert_eq!(fs::read_to_string(m.p("moved:v1/todo.txt")).unwrap(), "keep\n");
    assert!(!m.p("qwen2.5:0.5b").exists());
    assert_store_clean(&m.store);
}

/// Item 7: right after `cp -r`, `stat` shows the final inode and link count of the shared
/// weights, so `du` counts them once and `find -samefile` finds every copy.
#[test]
fn stat_right_after_cp_shows_the_shared_inode() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let src = fs::metadata(m.p("llama3.2:latest/model.gguf")).unwrap();
    for i in 0..5 {
        let dst = m.p(&format!("copy{i}:v1"));
        let out = sh_ok(&format!(
            "cp -r {} {} && stat -c '%i %h' {}",
            q(&m.p("llama3.2:latest")),
            q(&dst),
            q(&dst.join("model.gguf"))
        ));
        let (ino, links) = out.trim().split_once(' ').unwrap();
        assert_eq!(ino.parse::<u64>().unwrap(), src.ino(), "copy {i}: a temporary inode");
        assert_eq!(links.parse::<u64>().unwrap(), src.nlink() + i + 1, "copy {i}: link count");
    }
    let same = sh_ok(&format!("find {} -samefile {} | wc -l", q(&m.mp), q(&m.p("llama3.2:latest/model.gguf"))));
    assert_eq!(same.trim(), (src.nlink() + 5).to_string());
}

/// Item 8: a restart right after `kill -9`, before the dead daemon is even reaped, removes
/// its scratch folder (temp files of an import under way included).
#[test]
fn restart_right_after_kill_9_cleans_the_dead_daemons_scratch() {
    let Some((d, mut m, _)) = mounted_fixture(&[]) else { return };
    let src = d.path().join("big.gguf");
    ollamafs::fixture::write_gguf_file(&src, "llama", 15, 96 << 20).unwrap();
    sh_ok(&format!("mkdir {} && echo note > {}", q(&m.p("in:v1")), q(&m.p("in:v1/notes.txt"))));
    let mut cp = std::process::Command::new("cp").arg(&src).arg(m.p("in:v1/model.gguf")).spawn().unwrap();
    let dead = m.store.join(".ollamafs").join(m.pid().to_string());
    let t0 = Instant::now();
    while fs::read_dir(&dead).map(|r| r.count()).unwrap_or(0) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(20), "the import never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // kill -9 and do not reap: the dead daemon stays a zombie in /proc.
    unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
    let zombie = m.child.take();
    let _ = sh(&format!("umount -l {}", q(&m.mp)));
    let _ = cp.wait();
    assert!(dead.exists());
    let m2 = Mount::start(&m.store, &m.mp, &[]);
    assert!(!dead.exists(), "the dead daemon's scratch folder survived the restart");
    assert_all_complete(&m2.store);
    drop(m2);
    if let Some(mut z) = zombie {
        let _ = z.wait();
    }
}

/// Item 9: scratch files are POSIX files: chown applies, atime is kept, ctime advances,
/// names over 255 bytes are refused, and an unlinked open file works through its descriptor.
#[test]
fn scratch_files_behave_as_posix_files() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    let f = m.p("llama3.2:latest/notes.txt");
    sh_ok(&format!("echo hi > {}", q(&f)));
    sh_ok(&format!("chown 1234:4321 {}", q(&f)));
    let meta = fs::metadata(&f).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 4321), "chown applies");
    sh_ok(&format!("touch -a -d '2001-02-03 04:05:06' {}", q(&f)));
    assert_eq!(sh_ok(&format!("stat -c %X {}", q(&f))).trim(), sh_ok("date -d '2001-02-03 04:05:06' +%s").trim());
    let c0 = fs::metadata(&f).unwrap().ctime_nsec() + fs::metadata(&f).unwrap().ctime() * 1_000_000_000;
    std::thread::sleep(Duration::from_millis(20));
    sh_ok(&format!("chmod 600 {}", q(&f)));
    let c1 = fs::metadata(&f).unwrap().ctime_nsec() + fs::metadata(&f).unwrap().ctime() * 1_000_000_000;
    assert!(c1 > c0, "ctime advances on chmod");
    let long = m.p(&format!("llama3.2:latest/{}", "n".repeat(256)));
    let o = sh(&format!("touch {}", q(&long)));
    assert!(stderr(&o).contains("File name too long"), "{}", stderr(&o));
    let script = d.path().join("unlinked.py");
    fs::write(
        &script,
        "import os, sys\np = sys.argv[1]\nfd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)\nos.write(fd, b'0123456789')\n\
         os.unlink(p)\nassert not os.path.exists(p)\nassert os.fstat(fd).st_size == 10\n\
         assert os.pread(fd, 4, 2) == b'2345'\nos.ftruncate(fd, 3)\nassert os.fstat(fd).st_size == 3\n\
         os.fchmod(fd, 0o600)\nassert os.fstat(fd).st_mode & 0o777 == 0o600\nos.close(fd)\nprint('ok')\n",
    )
    .unwrap();
    assert_eq!(sh_ok(&format!("python3 {} {}", q(&script), q(&m.p("llama3.2:latest/tmp.bin")))).trim(), "ok");
}

/// Item 10: layer names are stable while the mount lives. A tool that lists a folder and
/// then works through it slowly (KIO: copy each file out, then unlink it) never finds a
/// name gone; names are renumbered at the next mount.
#[test]
fn layer_names_are_stable_while_mounted() {
    let Some((d, mut m, _)) = mounted_fixture(&[]) else { return };
    let dir = m.p("llama3.2:latest");
    sh_ok(&format!("rm {}", q(&dir.join("license"))));
    std::thread::sleep(Duration::from_millis(3500)); // longer than any old alias window
    assert!(dir.join("license-2").exists(), "license-2 kept its name");
    assert!(!dir.join("license").exists());
    let out = d.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let names: Vec<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    for n in names.iter().filter(|n| *n != "manifest.json") {
        sh_ok(&format!("cp {} {} && rm {}", q(&dir.join(n)), q(&out.join(n)), q(&dir.join(n))));
    }
    assert_eq!(fs::read(out.join("license-2")).unwrap(), ollamafs::fixture::LICENSE_2.as_bytes());
    // The same model, remounted: renumbered.
    sh_ok(&format!("rm {}", q(&m.p("myuser/llama3.2:custom/license"))));
    assert!(m.p("myuser/llama3.2:custom/license-2").exists());
    m.unmount();
    let m = Mount::start(&m.store.clone(), &m.mp.clone(), &[]);
    assert!(m.p("myuser/llama3.2:custom/license").exists());
    assert!(!m.p("myuser/llama3.2:custom/license-2").exists());
    assert_store_clean(&m.store);
}

/// Item 11: two ollamafs processes writing one store never remove what the other uses.
#[test]
fn two_mounts_of_one_store_never_prune_each_others_blobs() {
    let Some((d, m1, _)) = mounted_fixture(&[]) else { return };
    let m2 = Mount::start(&m1.store, &d.path().join("mnt2"), &[]);
    let run = |mp: &Path, base: &str, prefix: &str, n: usize| {
        let mp = q(mp);
        format!(
            "set -e; for i in $(seq 1 {n}); do cp -r {mp}/{base} {mp}/{prefix}$i:v1; echo {prefix}$i > {mp}/{prefix}$i:v1/system; \
             if [ $((i%3)) = 0 ]; then rm -r {mp}/{prefix}$((i-1)):v1; fi; done"
        )
    };
    let a = run(&m1.mp, "llama3.2:latest", "a", 30);
    let b = run(&m2.mp, "qwen2.5:0.5b", "b", 30);
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| sh(&a));
        let hb = s.spawn(|| sh(&b));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert!(ra.status.success(), "mount 1: {}", stderr(&ra));
    assert!(rb.status.success(), "mount 2: {}", stderr(&rb));
    for i in [1, 4, 30] {
        assert_eq!(fs::read_to_string(m1.p(&format!("a{i}:v1/system"))).unwrap(), format!("a{i}\n"));
        assert_eq!(fs::read_to_string(m2.p(&format!("b{i}:v1/system"))).unwrap(), format!("b{i}\n"));
    }
    assert_store_clean(&m1.store);
    drop(m2);
}

/// Item 1 (the burst form): kill -9 during a burst of `cp -r` leaves only complete models.
#[test]
fn kill_9_during_a_burst_of_copies_leaves_only_complete_models() {
    let Some((_d, mut m, _)) = mounted_fixture(&[]) else { return };
    // Deterministic first: a copy stopped after its text files (as Ctrl-C or kill -9 stop
    // `cp -r`, which copies text before weights), then the daemon killed.
    let src = m.p("myuser/llama3.2:custom");
    sh_ok(&format!(
        "mkdir {dst} && cp {s}/template {s}/system {s}/license {dst}/",
        s = q(&src),
        dst = q(&m.p("half:v1"))
    ));
    unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
    if let Some(mut c) = m.child.take() {
        let _ = c.wait();
    }
    let _ = sh(&format!("umount -l {}", q(&m.mp)));
    assert!(!manifest_files(&m.store).iter().any(|f| f.contains("/half/")), "a half copy reached the store");
    assert_all_complete(&m.store);
    m = Mount::start(&m.store.clone(), &m.mp.clone(), &[]);
    for round in 0..8 {
        let mp = q(&m.mp);
        let mut burst = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "for i in $(seq 1 200); do cp -r {mp}/myuser/llama3.2:custom {mp}/k{round}x$i:latest 2>/dev/null; done"
            ))
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200 + 37 * round as u64));
        let pid = m.pid() as i32;
        unsafe { libc::kill(pid, libc::SIGKILL) };
        if let Some(mut c) = m.child.take() {
            let _ = c.wait();
        }
        let _ = sh(&format!("umount -l {}", q(&m.mp)));
        let _ = burst.kill();
        let _ = burst.wait();
        assert_all_complete(&m.store);
        m = Mount::start(&m.store.clone(), &m.mp.clone(), &[]);
    }
    assert_store_clean(&m.store);
}
