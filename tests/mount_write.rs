//! The mount, write side: every change a user makes, driven by the real tools, asserting on
//! manifest bytes, blob sets, inode sharing and the daemon's own I/O counters.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const LLAMA_MANIFEST: &str = "registry.ollama.ai/library/llama3.2/latest";

/// The daemon may read or write at most this much while "copying" a 256 MiB model.
const NO_DATA: u64 = 8 << 20;

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[test]
fn cp_r_is_a_manifest_copy_with_no_data_moved() {
    let Some((_d, m, info)) = mounted_fixture(&[]) else { return };
    let before = blobs(&m.store);
    let (r0, w0) = m.daemon_io();
    // Into a namespace, to a new tag, to a colon-less name.
    sh_ok(&format!("cp -r {} {}", q(&m.p("llama3.2:latest")), q(&m.p("myuser/llama3.2:copy"))));
    sh_ok(&format!("cp -r {} {}", q(&m.p("llama3.2:latest")), q(&m.p("llama3.2:v2"))));
    sh_ok(&format!("cp -r {} {}", q(&m.p("llama3.2:latest")), q(&m.p("plain"))));
    let (r1, w1) = m.daemon_io();
    assert!(r1 - r0 < NO_DATA && w1 - w0 < NO_DATA, "daemon moved data: read {} wrote {}", r1 - r0, w1 - w0);
    assert_eq!(blobs(&m.store), before, "no blob created or removed");
    let src = manifest_bytes(&m.store, LLAMA_MANIFEST);
    for rel in [
        "registry.ollama.ai/myuser/llama3.2/copy",
        "registry.ollama.ai/library/llama3.2/v2",
        "registry.ollama.ai/library/plain/latest",
    ] {
        assert_eq!(manifest_bytes(&m.store, rel), src, "{rel} is not a byte copy");
    }
    let a = fs::metadata(m.p("llama3.2:latest/model.gguf")).unwrap();
    // A colon-less folder made by the copy keeps its name; the model is plain:latest.
    let b = fs::metadata(m.p("plain/model.gguf")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(b.nlink(), 5);
    assert!(!m.p("plain:latest").exists(), "listed as plain, so no plain:latest beside it");
    let o = ollamafs(&m.store, &["ls"]);
    assert!(stdout(&o).contains("plain:latest"));
    let _ = info;
    assert_store_clean(&m.store);
}

#[test]
fn cp_a_and_cp_rft_overwrite() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let before = blobs(&m.store);
    sh_ok(&format!("cp -a {} {}", q(&m.p("llama3.2:latest")), q(&m.p("myuser/archived:v1"))));
    assert_eq!(
        manifest_bytes(&m.store, "registry.ollama.ai/myuser/archived/v1"),
        manifest_bytes(&m.store, LLAMA_MANIFEST)
    );
    // Overwrite an existing model with another one, as Ollama's copy does.
    sh_ok(&format!("cp -rfT {} {}", q(&m.p("qwen2.5:0.5b")), q(&m.p("myuser/archived:v1"))));
    let qwen = manifest_bytes(&m.store, "registry.ollama.ai/library/qwen2.5/0.5b");
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/myuser/archived/v1"), qwen);
    assert_eq!(blobs(&m.store), before);
    assert_store_clean(&m.store);
}

#[test]
fn ln_s_makes_a_copy_shown_as_a_folder() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let before = blobs(&m.store);
    sh_ok(&format!("cd {} && ln -s llama3.2:latest rel:v1", q(&m.mp)));
    sh_ok(&format!("ln -s {} {}", q(&m.p("llama3.2:latest")), q(&m.p("myuser/abs:v1"))));
    sh_ok(&format!("cd {} && ln -s ../hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M hfcopy:v1", q(&m.p("myuser"))));
    let src = manifest_bytes(&m.store, LLAMA_MANIFEST);
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/rel/v1"), src);
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/myuser/abs/v1"), src);
    assert!(manifest_files(&m.store).contains("registry.ollama.ai/myuser/hfcopy/v1"));
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(fs::symlink_metadata(m.p("rel:v1")).unwrap().is_dir(), "shown as a folder");
    assert_eq!(blobs(&m.store), before);
    // Targets outside the mount, or that are not models: EINVAL, nothing written.
    let files = manifest_files(&m.store);
    for cmd in [
        format!("ln -s /etc {}", q(&m.p("bad:one"))),
        format!("cd {} && ln -s nothing:here bad:two", q(&m.mp)),
        format!("cd {} && ln -s myuser bad:three", q(&m.mp)),
    ] {
        let o = sh(&cmd);
        assert!(!o.status.success(), "{cmd}");
        assert!(stderr(&o).contains("Invalid argument"), "{cmd}: {}", stderr(&o));
    }
    assert_eq!(manifest_files(&m.store), files);
    assert_store_clean(&m.store);
}

#[test]
fn ln_adds_a_layer_with_the_same_inode() {
    let Some((_d, m, info)) = mounted_fixture(&[]) else { return };
    sh_ok(&format!("mkdir {}", q(&m.p("linked:v1"))));
    sh_ok(&format!("ln {} {}", q(&m.p("llama3.2:latest/model.gguf")), q(&m.p("linked:v1/model.gguf"))));
    let a = fs::metadata(m.p("llama3.2:latest/model.gguf")).unwrap();
    let b = fs::metadata(m.p("linked:v1/model.gguf")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(b.nlink(), 3);
    let v: serde_json::Value =
        serde_json::from_str(&manifest_bytes(&m.store, "registry.ollama.ai/library/linked/v1")).unwrap();
    assert_eq!(v["layers"][0]["digest"], info.big_model.prefixed());
    // A config was generated from the GGUF header, as `ollama create` does.
    let o = ollamafs(&m.store, &["show", "--json", "linked:v1"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["details"]["family"], "llama");
    assert_eq!(s["details"]["quantization_level"], "Q4_K_M");
    assert_store_clean(&m.store);
}

#[test]
fn imports_from_another_disk_with_rsync_and_tar_in_any_order() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    // A model folder on an ordinary disk (exported from the mount: a real user flow).
    let export = d.path().join("export/hfmodel");
    fs::create_dir_all(export.parent().unwrap()).unwrap();
    sh_ok(&format!("cp -r {} {}", q(&m.p(fixture::HF)), q(&export)));
    let before = blobs(&m.store);
    sh_ok(&format!("rsync -a {}/ {}/", q(&export), q(&m.p("imported:rsync"))));
    let src = manifest_bytes(&m.store, "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF/Q4_K_M");
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/imported/rsync"), src);
    // tar with manifest.json first: it waits for its blobs.
    sh_ok(&format!("cd {} && tar cf ../m.tar manifest.json config.json template model.gguf", q(&export)));
    sh_ok(&format!(
        "mkdir {} && tar xf {} -C {}",
        q(&m.p("imported:tar")),
        q(&d.path().join("export/m.tar")),
        q(&m.p("imported:tar"))
    ));
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/imported/tar"), src);
    assert_eq!(blobs(&m.store), before, "content already in the store: zero new blobs");
    assert_store_clean(&m.store);
}

#[test]
fn import_of_new_weights_makes_one_blob_and_a_generated_config() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    let gguf = d.path().join("new.gguf");
    ollamafs::fixture::write_gguf_file(&gguf, "gemma3", 2, 12 << 20).unwrap();
    let before = blobs(&m.store);
    sh_ok(&format!(
        "mkdir {} && cp {} {}",
        q(&m.p("myuser/gemma:new")),
        q(&gguf),
        q(&m.p("myuser/gemma:new/model.gguf"))
    ));
    let after = blobs(&m.store);
    assert_eq!(after.len(), before.len() + 2, "the weights and the generated config");
    let o = ollamafs(&m.store, &["show", "--json", "myuser/gemma:new"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["details"]["family"], "gemma3");
    assert_eq!(s["details"]["quantization_level"], "Q4_0");
    assert_eq!(s["details"]["parameter_size"], "1.57M");
    sh_ok(&format!("cmp {} {}", q(&gguf), q(&m.p("myuser/gemma:new/model.gguf"))));
    // Python shutil.copytree inside the mount (plain read/write path).
    sh_ok(&format!(
        "python3 -c \"import shutil; shutil.copytree('{}', '{}')\"",
        m.p("myuser/gemma:new").display(),
        m.p("myuser/gemma:copied").display()
    ));
    assert_eq!(
        manifest_bytes(&m.store, "registry.ollama.ai/myuser/gemma/copied"),
        manifest_bytes(&m.store, "registry.ollama.ai/myuser/gemma/new")
    );
    assert_eq!(blobs(&m.store).len(), after.len(), "copytree stored nothing new");
    assert_store_clean(&m.store);
}

#[test]
fn a_new_file_can_be_written_through_a_shared_mapping() {
    // New files are opened with FOPEN_DIRECT_IO (an import is one page-cache copy, not
    // two); a tool that maps the file it writes must still work.
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let path = m.p("myuser/llama3.2:custom/system");
    let script = format!(
        "import mmap, os\n\
         fd = os.open({path:?}, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)\n\
         os.ftruncate(fd, 14)\n\
         m = mmap.mmap(fd, 14, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)\n\
         m[:] = b\"mapped system\\n\"\n\
         m.flush(); m.close(); os.close(fd)\n",
        path = path.display().to_string()
    );
    sh_ok(&format!("python3 -c {}", q(std::path::Path::new(&script))));
    assert_eq!(fs::read_to_string(&path).unwrap(), "mapped system\n");
    let stored = manifest_bytes(&m.store, "registry.ollama.ai/myuser/llama3.2/custom");
    let man: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let system =
        man["layers"].as_array().unwrap().iter().find(|l| l["mediaType"] == "application/vnd.ollama.image.system");
    assert_eq!(system.unwrap()["size"], 14, "the mapped write was published");
    assert_store_clean(&m.store);
}

#[test]
fn editing_text_changes_only_that_model() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    sh_ok(&format!("cp -r {} {}", q(&m.p("myuser/llama3.2:custom")), q(&m.p("myuser/llama3.2:backup"))));
    let backup = manifest_bytes(&m.store, "registry.ollama.ai/myuser/llama3.2/backup");
    sh_ok(&format!("echo 'You are a helpful assistant.' > {}", q(&m.p("myuser/llama3.2:custom/system"))));
    assert_eq!(fs::read_to_string(m.p("myuser/llama3.2:custom/system")).unwrap(), "You are a helpful assistant.\n");
    assert_eq!(fs::read_to_string(m.p("myuser/llama3.2:backup/system")).unwrap(), fixture::SYSTEM_CUSTOM);
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/myuser/llama3.2/backup"), backup);
    // sed -i: temp file + rename onto the layer.
    sh_ok(&format!("sed -i 's/helpful/grumpy/' {}", q(&m.p("myuser/llama3.2:custom/system"))));
    assert_eq!(fs::read_to_string(m.p("myuser/llama3.2:custom/system")).unwrap(), "You are a grumpy assistant.\n");
    assert!(!sh_ok(&format!("ls -a {}", q(&m.p("myuser/llama3.2:custom")))).contains("sed"), "no scratch left");
    // Appending (O_APPEND through a direct-I/O handle) extends the layer.
    sh_ok(&format!("echo 'Be brief.' >> {}", q(&m.p("myuser/llama3.2:custom/system"))));
    assert_eq!(
        fs::read_to_string(m.p("myuser/llama3.2:custom/system")).unwrap(),
        "You are a grumpy assistant.\nBe brief.\n"
    );
    sh_ok(&format!("printf 'You are a grumpy assistant.\\n' > {}", q(&m.p("myuser/llama3.2:custom/system"))));
    // Writing the content a layer already has changes nothing.
    let now = manifest_bytes(&m.store, "registry.ollama.ai/myuser/llama3.2/custom");
    sh_ok(&format!("printf 'You are a grumpy assistant.\\n' > {}", q(&m.p("myuser/llama3.2:custom/system"))));
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/myuser/llama3.2/custom"), now);
    // The template of the base model is untouched by an edit of the copy's template.
    let base = manifest_bytes(&m.store, LLAMA_MANIFEST);
    sh_ok(&format!("echo '{{{{ .Prompt }}}}' > {}", q(&m.p("myuser/llama3.2:custom/template"))));
    assert_eq!(manifest_bytes(&m.store, LLAMA_MANIFEST), base);
    assert_eq!(fs::read_to_string(m.p("llama3.2:latest/template")).unwrap(), fixture::TEMPLATE);
    assert_store_clean(&m.store);
}

#[test]
fn weights_are_immutable_but_replaceable() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    let gguf = d.path().join("other.gguf");
    ollamafs::fixture::write_gguf_file(&gguf, "phi3", 15, 2 << 20).unwrap();
    sh_ok(&format!("cp -r {} {}", q(&m.p("llama3.2:latest")), q(&m.p("swap:v1"))));
    let before = manifest_bytes(&m.store, "registry.ollama.ai/library/swap/v1");
    // Writing into weights without O_TRUNC is refused and changes nothing.
    let o = sh(&format!("printf x | dd of={} conv=notrunc status=none", q(&m.p("swap:v1/model.gguf"))));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Operation not permitted"), "{}", stderr(&o));
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/swap/v1"), before);
    // A copy onto the file replaces the layer (cp opens it with O_TRUNC).
    sh_ok(&format!("cp {} {}", q(&gguf), q(&m.p("swap:v1/model.gguf"))));
    sh_ok(&format!("cmp {} {}", q(&gguf), q(&m.p("swap:v1/model.gguf"))));
    assert_ne!(manifest_bytes(&m.store, "registry.ollama.ai/library/swap/v1"), before);
    let replaced = manifest_bytes(&m.store, "registry.ollama.ai/library/swap/v1");
    sh_ok(&format!("cp -f {} {}", q(&gguf), q(&m.p("swap:v1/model.gguf"))));
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/swap/v1"), replaced, "same content: no change");
    // The original still has its weights; same position in the layer list.
    let v: serde_json::Value =
        serde_json::from_str(&manifest_bytes(&m.store, "registry.ollama.ai/library/swap/v1")).unwrap();
    assert_eq!(v["layers"][0]["mediaType"], "application/vnd.ollama.image.model");
    assert_eq!(v["layers"].as_array().unwrap().len(), 5);
    sh_ok(&format!("cmp {} {}", q(&m.p("llama3.2:latest/model.gguf")), q(&m.p("myuser/llama3.2:custom/model.gguf"))));
    assert_store_clean(&m.store);
}

/// A backup copied back by tools that set each file's mode and times by path right after
/// closing it (Python's `shutil.copytree`, KIO), in an order that puts `manifest.json`
/// first, while the store no longer has the model's own blobs: the manifest waits for them,
/// every file stays visible meanwhile, and the model comes back byte for byte.
#[test]
fn a_backup_copied_back_in_any_order_restores_the_model() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    let name = "qwen2.5:0.5b";
    let original = manifest_bytes(&m.store, "registry.ollama.ai/library/qwen2.5/0.5b");
    // A tmpfs lists the newest file first: made last, manifest.json is copied first.
    let disk = Tmpfs::mount(&d.path().join("backup"), 64);
    let backup = disk.0.join(name);
    fs::create_dir(&backup).unwrap();
    let mut files: Vec<String> =
        fs::read_dir(m.p(name)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort_by_key(|f| f == "manifest.json");
    for f in &files {
        sh_ok(&format!("cp -p {} {}", q(&m.p(&format!("{name}/{f}"))), q(&backup)));
    }
    assert_eq!(fs::read_dir(&backup).unwrap().next().unwrap().unwrap().file_name(), "manifest.json");
    sh_ok(&format!("rm -r {}", q(&m.p(name))));
    sh_ok(&format!(
        "python3 -c 'import shutil, sys; shutil.copytree(sys.argv[1], sys.argv[2])' {} {}",
        q(&backup),
        q(&m.p(name))
    ));
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/qwen2.5/0.5b"), original);
    assert_store_clean(&m.store);
}

#[test]
fn rm_r_deletes_and_prunes_only_unshared_blobs() {
    let Some((_d, m, info)) = mounted_fixture(&[]) else { return };
    sh_ok(&format!("rm -r {}", q(&m.p("myuser/llama3.2:custom"))));
    assert!(!manifest_files(&m.store).contains("registry.ollama.ai/myuser/llama3.2/custom"));
    let b = blobs(&m.store);
    assert!(!b.contains(&info.system_custom.blob_file_name()), "its own system prompt is pruned");
    assert!(b.contains(&info.big_model.blob_file_name()), "shared weights stay");
    // The namespace folder stays, empty, as on any filesystem (a file manager restores a
    // trashed model into it), until it is removed itself.
    assert_eq!(fs::read_dir(m.p("myuser")).unwrap().count(), 0, "the emptied namespace folder stays");
    sh_ok(&format!("rmdir {}", q(&m.p("myuser"))));
    assert!(!m.p("myuser").exists());
    // rm manifest.json takes the model out of the store (as `ollama rm`); the folder stays
    // as a draft with its other files until they are removed too.
    sh_ok(&format!("rm {}", q(&m.p("llama3.2:latest/manifest.json"))));
    assert!(!manifest_files(&m.store).contains(LLAMA_MANIFEST));
    assert!(m.p("llama3.2:latest/model.gguf").exists(), "the draft keeps its files");
    assert!(!m.p("llama3.2:latest/manifest.json").exists());
    assert!(blobs(&m.store).contains(&info.big_model.blob_file_name()), "held while the draft shows it");
    sh_ok(&format!("rm -r {}", q(&m.p("llama3.2:latest"))));
    assert!(!m.p("llama3.2:latest").exists());
    assert!(!blobs(&m.store).contains(&info.big_model.blob_file_name()), "last user gone: weights pruned");
    assert!(blobs(&m.store).contains(&info.template.blob_file_name()), "still used by the hf model");
    // rm of one layer removes it from the manifest only.
    sh_ok(&format!("rm {}", q(&m.p("qwen2.5:0.5b/license"))));
    let v: serde_json::Value =
        serde_json::from_str(&manifest_bytes(&m.store, "registry.ollama.ai/library/qwen2.5/0.5b")).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 3);
    assert_store_clean(&m.store);
}

/// `rm -r` looks the folder up first, empties it, then removes it. Emptying may take
/// longer than the kernel's entry cache lives (0.5 s): removing `manifest.json` leaves the
/// folder as a draft, so the final `rmdir` still finds it, and every process sees the same
/// thing (the folder until it is removed, then nothing).
#[test]
fn slow_rm_r_still_removes_the_folder() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    sh_ok(&format!("cp -r {} {}", q(&m.p("qwen2.5:0.5b")), q(&m.p("slow:v1"))));
    let script = d.path().join("slow_rm.py");
    fs::write(
        &script,
        format!(
            "import os, subprocess, time\nd = {dir:?}\nos.stat(d)\nnames = os.listdir(d)\nassert names[-1] == 'manifest.json', names\n\
             time.sleep(0.7)\nfor n in names:\n    os.unlink(os.path.join(d, n))\ntime.sleep(0.7)\n\
             other = subprocess.run(['test', '-d', d]).returncode\nos.rmdir(d)\nprint(other)\n",
            dir = m.p("slow:v1").display().to_string()
        ),
    )
    .unwrap();
    let out = sh_ok(&format!("python3 {}", q(&script)));
    assert_eq!(out.trim(), "0", "the emptied folder is there for everyone until rmdir");
    assert!(!m.p("slow:v1").exists());
    assert!(!manifest_files(&m.store).iter().any(|f| f.contains("/slow/")));
    // The same name can be made again at once, by anyone.
    sh_ok(&format!("mkdir {} && rmdir {}", q(&m.p("slow:v1")), q(&m.p("slow:v1"))));
    assert_store_clean(&m.store);
}

#[test]
fn mv_moves_manifests_not_blobs() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let before = blobs(&m.store);
    let bytes = manifest_bytes(&m.store, LLAMA_MANIFEST);
    sh_ok(&format!("mv {} {}", q(&m.p("llama3.2:latest")), q(&m.p("myuser/moved:v1"))));
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/myuser/moved/v1"), bytes);
    assert!(!manifest_files(&m.store).contains(LLAMA_MANIFEST));
    assert_eq!(blobs(&m.store), before);
    // Onto an existing model: ENOTEMPTY (POSIX rename of a folder onto a non-empty one).
    let o = sh(&format!("mv -T {} {}", q(&m.p("myuser/moved:v1")), q(&m.p("qwen2.5:0.5b"))));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not empty") || stderr(&o).contains("Directory not empty"), "{}", stderr(&o));
    // A prefix folder: every model below it moves.
    sh_ok(&format!("mv {} {}", q(&m.p("myuser")), q(&m.p("team"))));
    let files = manifest_files(&m.store);
    assert!(files.contains("registry.ollama.ai/team/moved/v1"), "{files:?}");
    assert!(files.contains("registry.ollama.ai/team/llama3.2/custom"), "{files:?}");
    assert!(!files.iter().any(|f| f.contains("/myuser/")));
    assert_eq!(blobs(&m.store), before);
    assert_store_clean(&m.store);
}

#[test]
fn invalid_names_are_refused_and_change_nothing() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let files = manifest_files(&m.store);
    let blobs_before = blobs(&m.store);
    let long = "x".repeat(81);
    // Folder names that are not model names are drafts (file managers make them): they
    // can hold a whole copy, and are never published under that name.
    for cmd in [
        format!("mkdir {}", q(&m.p("a b:c"))),
        format!("mkdir {}", q(&m.p("-bad:tag"))),
        format!("mkdir {}", q(&m.p(&format!("{long}:t")))),
        format!("mkdir {}", q(&m.p("ok:bad@tag"))),
        format!("cp -r {} {}", q(&m.p("llama3.2:latest")), q(&m.p("bad name:x"))),
    ] {
        sh_ok(&cmd);
    }
    assert!(m.p("bad name:x/model.gguf").exists());
    assert!(m.log_text().contains("not a valid model name"), "the log says why it stays a draft");
    for cmd in [
        format!("mkdir -p {}", q(&m.p("myuser/na.me/x:y"))),
        format!("mv {} {}", q(&m.p("llama3.2:latest")), q(&m.p("nö:x"))),
        format!("cd {} && ln -s llama3.2:latest 'sp ace:x'", q(&m.mp)),
    ] {
        let o = sh(&cmd);
        assert!(!o.status.success(), "{cmd} succeeded");
        // mv reports EINVAL from rename(2) as "cannot move ... to a subdirectory of itself".
        assert!(
            stderr(&o).contains("Invalid argument") || stderr(&o).contains("subdirectory of itself"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    // Case-only twin of an existing model.
    let o = sh(&format!("mkdir {}", q(&m.p("LLAMA3.2:latest"))));
    assert!(stderr(&o).contains("File exists"), "{}", stderr(&o));
    assert_eq!(manifest_files(&m.store), files);
    assert_eq!(blobs(&m.store), blobs_before);
    assert!(m.log_text().contains("EINVAL"), "refusals are logged with a reason");
}

#[test]
fn scratch_files_live_outside_the_manifest() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let bytes = manifest_bytes(&m.store, LLAMA_MANIFEST);
    let dir = m.p("llama3.2:latest");
    sh_ok(&format!(
        "echo draft > {}/.notes.swp && chmod 600 {}/.notes.swp && touch -d 2020-01-01 {}/.notes.swp",
        q(&dir),
        q(&dir),
        q(&dir)
    ));
    assert_eq!(fs::read_to_string(dir.join(".notes.swp")).unwrap(), "draft\n");
    assert_eq!(fs::metadata(dir.join(".notes.swp")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(manifest_bytes(&m.store, LLAMA_MANIFEST), bytes, "scratch is not part of the model");
    // rename onto a layer name commits it.
    sh_ok(&format!("mv {}/.notes.swp {}/system", q(&dir), q(&dir)));
    assert_eq!(fs::read_to_string(dir.join("system")).unwrap(), "draft\n");
    let v: serde_json::Value = serde_json::from_str(&manifest_bytes(&m.store, LLAMA_MANIFEST)).unwrap();
    assert!(v["layers"].as_array().unwrap().iter().any(|l| l["mediaType"] == "application/vnd.ollama.image.system"));
    sh_ok(&format!("echo x > {}/scratch.tmp", q(&dir)));
    drop(m);
    // Unmounted: scratch files are gone, the store is clean.
    assert_eq!(scratch_leftovers(&_d.path().join("models")), Vec::<String>::new());
    assert_store_clean(&_d.path().join("models"));
}

#[test]
fn chmod_chown_touch_succeed_without_effect() {
    let Some((_d, m, info)) = mounted_fixture(&[]) else { return };
    let blob = m.store.join("blobs").join(info.big_model.blob_file_name());
    let before = fs::metadata(&blob).unwrap();
    sh_ok(&format!(
        "chmod 600 {} && chown 1:1 {} && touch {}",
        q(&m.p("llama3.2:latest/model.gguf")),
        q(&m.p("llama3.2:latest/model.gguf")),
        q(&m.p("llama3.2:latest"))
    ));
    let after = fs::metadata(&blob).unwrap();
    assert_eq!((before.mode(), before.uid(), before.mtime()), (after.mode(), after.uid(), after.mtime()));
    assert_eq!(fs::metadata(m.p("llama3.2:latest/model.gguf")).unwrap().mode() & 0o777, 0o444);
}

#[test]
fn parallel_cp_r_never_loses_or_mixes_models() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let before = blobs(&m.store);
    let mut cmds = Vec::new();
    for i in 0..16 {
        let src = [fixture::LLAMA, fixture::CUSTOM, fixture::HF, fixture::QWEN][i % 4];
        cmds.push(format!("cp -r {} {} &", q(&m.p(src)), q(&m.p(&format!("par/m{i}:v1")))));
    }
    sh_ok(&format!("mkdir {} && {{ {} wait; }}", q(&m.p("par")), cmds.join(" ")));
    for i in 0..16 {
        let src = [fixture::LLAMA, fixture::CUSTOM, fixture::HF, fixture::QWEN][i % 4];
        let rel = ollamafs::name::Name::parse(src).unwrap().manifest_path();
        assert_eq!(
            manifest_bytes(&m.store, &format!("registry.ollama.ai/par/m{i}/v1")),
            manifest_bytes(&m.store, &rel),
            "m{i}"
        );
    }
    assert_eq!(blobs(&m.store), before);
    assert_store_clean(&m.store);
}

#[test]
fn writing_manifest_json_replaces_the_model_after_validation() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let before = manifest_bytes(&m.store, "registry.ollama.ai/library/qwen2.5/0.5b");
    // Python reports the error close(2) returns (a shell's `echo >` ignores it).
    let o = sh(&format!(
        "python3 -c \"f = open('{}', 'w'); f.write('{{\\\"layers\\\": ['); f.close()\"",
        m.p("qwen2.5:0.5b/manifest.json").display()
    ));
    assert!(!o.status.success(), "invalid JSON refused at close");
    assert!(stderr(&o).contains("Invalid argument"), "{}", stderr(&o));
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/qwen2.5/0.5b"), before);
    sh_ok(&format!("cat {} > {}", q(&m.p("llama3.2:latest/manifest.json")), q(&m.p("qwen2.5:0.5b/manifest.json"))));
    assert_eq!(
        manifest_bytes(&m.store, "registry.ollama.ai/library/qwen2.5/0.5b"),
        manifest_bytes(&m.store, LLAMA_MANIFEST)
    );
    assert_store_clean(&m.store);
}
