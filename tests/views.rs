//! App views on a real mount (`--view lmstudio --view gguf`): LM Studio's and flat-folder
//! apps' models folders over the same blobs, driven with the tools those apps and users run.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const LMSTUDIO_FILES: &[&str] = &[
    "bartowski/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q4_K_M.gguf",
    "localhost_5000_team/tiny-v1/tiny-v1.gguf",
    "myuser/llama3.2-custom/llama3.2-custom.gguf",
    "ollama/llama3.2-latest/llama3.2-latest.gguf",
    "ollama/qwen2.5-0.5b/mmproj-qwen2.5-0.5b.gguf",
    "ollama/qwen2.5-0.5b/qwen2.5-0.5b.gguf",
];

fn find_files(dir: &Path) -> BTreeSet<String> {
    sh_ok(&format!("cd {} && find . -type f | sed 's|^./||' | sort", q(dir))).lines().map(String::from).collect()
}

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

#[test]
fn views_show_every_gguf_model_as_the_blob_itself() {
    let Some((_dir, m, _)) = mounted_fixture(&["--view", "lmstudio", "-o", "view=gguf"]) else { return };
    let manifests_before = manifest_files(&m.store);
    let lm = m.p(".lmstudio");
    // LM Studio's scan: two levels of folders, then the files.
    let want: BTreeSet<String> = LMSTUDIO_FILES.iter().map(|s| s.to_string()).collect();
    assert_eq!(find_files(&lm), want);
    let glob = sh_ok(&format!(
        "python3 -c 'import pathlib,sys; print(\"\\n\".join(sorted(str(p.relative_to(sys.argv[1])) for p in pathlib.Path(sys.argv[1]).glob(\"*/*/*.gguf\"))))' {}",
        q(&lm)
    ));
    assert_eq!(glob.lines().map(String::from).collect::<BTreeSet<_>>(), want);
    let ls = sh_ok(&format!("ls -R {}", q(&lm)));
    assert!(ls.contains("llama3.2-latest.gguf") && ls.contains("mmproj-qwen2.5-0.5b.gguf"), "{ls}");
    // The same inode, bytes and size as the model folder's file; read-only.
    let in_view = lm.join("ollama/llama3.2-latest/llama3.2-latest.gguf");
    let in_model = m.p("llama3.2:latest/model.gguf");
    assert_eq!(ino(&in_view), ino(&in_model));
    assert_eq!(fs::metadata(&in_view).unwrap().len(), 256 << 20);
    assert_eq!(sh_ok(&format!("stat -c %a {}", q(&in_view))).trim(), "444");
    let qwen = lm.join("ollama/qwen2.5-0.5b/qwen2.5-0.5b.gguf");
    sh_ok(&format!("cmp {} {}", q(&qwen), q(&m.p("qwen2.5:0.5b/model.gguf"))));
    assert_eq!(ino(&lm.join("ollama/qwen2.5-0.5b/mmproj-qwen2.5-0.5b.gguf")), ino(&m.p("qwen2.5:0.5b/projector.gguf")));
    // du counts a blob once, however many names show it.
    let du =
        |args: &str| sh_ok(&format!("du -sc --block-size=1 {args} | tail -1 | cut -f1")).trim().parse::<u64>().unwrap();
    assert_eq!(du(&format!("{} {}", q(&in_model), q(&in_view))), du(&q(&in_model)));
    // The flat view: one folder of files, read-only.
    let flat = m.p(".gguf");
    let flat_files = find_files(&flat);
    assert!(flat_files.contains("llama3.2-latest.gguf") && flat_files.contains("myuser-llama3.2-custom.gguf"));
    assert!(flat_files.contains("hf.co-bartowski-Llama-3.2-1B-Instruct-GGUF-Q4_K_M.gguf"), "{flat_files:?}");
    assert_eq!(flat_files.len(), LMSTUDIO_FILES.len(), "the MLX model has no GGUF and is not shown");
    assert_eq!(ino(&flat.join("llama3.2-latest.gguf")), ino(&in_model));
    let refused = sh(&format!("touch {0}/x.gguf || mkdir {0}/x", q(&flat)));
    assert!(!refused.status.success() && stderr(&refused).contains("Read-only"), "{}", stderr(&refused));
    // A path that maps to no model is ENOENT; moving a model's file in a view is refused.
    assert!(!lm.join("ollama/nothing-latest/nothing-latest.gguf").exists());
    let mv = sh(&format!("mv {} {}", q(&in_view), q(&lm.join("ollama/llama3.2-latest/renamed.gguf"))));
    assert!(!mv.status.success(), "renaming a model's file in a view must be refused");
    assert!(in_view.exists());
    // Browsing the views wrote nothing Ollama would list.
    assert_eq!(manifest_files(&m.store), manifests_before);
    // The views are listed at the root like any other name.
    let root = sh_ok(&format!("ls -A {}", q(&m.p(""))));
    assert!(root.lines().any(|l| l == ".lmstudio") && root.lines().any(|l| l == ".gguf"), "{root}");
}

#[test]
fn without_view_options_there_is_no_view() {
    let Some((_dir, m, _)) = mounted_fixture(&[]) else { return };
    assert!(!m.p(".lmstudio").exists() && !m.p(".gguf").exists());
    let root = sh_ok(&format!("ls -A {}", q(&m.p(""))));
    assert!(!root.contains(".lmstudio"), "{root}");
}

#[test]
fn a_gguf_downloaded_into_the_lmstudio_view_becomes_an_hf_model_with_its_data_written_once() {
    let Some((dir, m, _)) = mounted_fixture(&["--view", "lmstudio"]) else { return };
    let blobs_before = blobs(&m.store);
    let src = dir.path().join("src.gguf");
    noisy_gguf(&src, 48 << 20);
    let size = fs::metadata(&src).unwrap().len();
    let repo = m.p(".lmstudio/lmstudio-community/Qwen3-8B-GGUF");
    // LM Studio makes the folders, then writes the file (here under its final name).
    let (read_before, _) = m.daemon_io();
    sh_ok(&format!("mkdir -p {} && cp {} {}/Qwen3-8B-Q4_K_M.gguf", q(&repo), q(&src), q(&repo)));
    // Hashed as it was written: the data is read once, as it arrives from /dev/fuse (rchar
    // counts that), and not read back from the file at close (that made it 2x).
    let (read_after, _) = m.daemon_io();
    let read = read_after - read_before;
    assert!(read < size + size / 4, "the daemon read {read} bytes for a {size}-byte download");
    let rel = "hf.co/lmstudio-community/Qwen3-8B-GGUF/Q4_K_M";
    let manifest: serde_json::Value = serde_json::from_str(&manifest_bytes(&m.store, rel)).unwrap();
    let digest = manifest["layers"][0]["digest"].as_str().unwrap().replace(':', "-");
    let blob = m.store.join("blobs").join(&digest);
    assert_eq!(fs::metadata(&blob).unwrap().len(), size);
    // Written once: the new blobs take the file's blocks plus a config, nothing more.
    let new_blocks: u64 = blobs(&m.store)
        .difference(&blobs_before)
        .map(|b| fs::metadata(m.store.join("blobs").join(b)).unwrap().blocks() * 512)
        .sum();
    assert!(new_blocks < size + (64 << 10), "{new_blocks} bytes on disk for a {size}-byte file");
    assert!(m.daemon_disk_writes() < size + (8 << 20), "the daemon wrote {} bytes", m.daemon_disk_writes());
    // The view shows it under the name it was written with: the blob's inode and bytes.
    let shown = repo.join("Qwen3-8B-Q4_K_M.gguf");
    sh_ok(&format!("cmp {} {}", q(&src), q(&shown)));
    assert_eq!(ino(&shown), ino(&m.p("hf.co/lmstudio-community/Qwen3-8B-GGUF:Q4_K_M/model.gguf")));

    // A downloader that writes a partial name and renames it at the end: a second tag.
    let py = "import os,shutil,sys\nsrc,dst=sys.argv[1],sys.argv[2]\nwith open(src,'rb') as a, open(dst+'.part','wb') as b:\n    shutil.copyfileobj(a,b,1<<20)\nos.rename(dst+'.part',dst)\n";
    let src2 = dir.path().join("src2.gguf");
    noisy_gguf(&src2, 8 << 20);
    fs::write(dir.path().join("dl.py"), py).unwrap();
    sh_ok(&format!("python3 {} {} {}", q(&dir.path().join("dl.py")), q(&src2), q(&repo.join("Qwen3-8B-Q8_0.gguf"))));
    assert!(manifest_files(&m.store).contains("hf.co/lmstudio-community/Qwen3-8B-GGUF/Q8_0"));
    sh_ok(&format!("cmp {} {}", q(&src2), q(&repo.join("Qwen3-8B-Q8_0.gguf"))));

    // Another file whose quantization (from its GGUF header: its name says none) is taken by
    // a file of the same repository: its own name is its tag, the first model stays.
    let src3 = dir.path().join("src3.gguf");
    noisy_gguf(&src3, 4 << 20);
    sh_ok(&format!("cp {} {}/Qwen3-8B-Q4_K_M-v2.gguf", q(&src3), q(&repo)));
    assert!(manifest_files(&m.store).contains("hf.co/lmstudio-community/Qwen3-8B-GGUF/Qwen3-8B-Q4_K_M-v2"));
    sh_ok(&format!("cmp {} {}", q(&src), q(&repo.join("Qwen3-8B-Q4_K_M.gguf"))));
    sh_ok(&format!("rm {}/Qwen3-8B-Q4_K_M-v2.gguf", q(&repo)));

    // A cut download never publishes; a file that is not a GGUF stays a plain file.
    // (1 MB is inside its tensor data: the header says the file goes on.)
    sh_ok(&format!("head -c 1000000 {} > {}/Qwen3-8B-Q5_K_M.gguf", q(&src2), q(&repo)));
    sh_ok(&format!("echo notes > {}/README.md && echo x > {}/stray.gguf", q(&repo), q(&m.p(".lmstudio"))));
    let listed = sh_ok(&format!("ls {}", q(&repo)));
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        ["Qwen3-8B-Q4_K_M.gguf", "Qwen3-8B-Q5_K_M.gguf", "Qwen3-8B-Q8_0.gguf", "README.md"]
    );
    let names = manifest_files(&m.store);
    assert!(!names.iter().any(|n| n.contains("Q5_K_M")), "a cut file was published: {names:?}");
    assert_eq!(names.iter().filter(|n| n.starts_with("hf.co/lmstudio-community")).count(), 2);

    // Deleting the file in the view deletes the model; its blob goes.
    sh_ok(&format!("rm {}", q(&repo.join("Qwen3-8B-Q8_0.gguf"))));
    assert!(!manifest_files(&m.store).contains("hf.co/lmstudio-community/Qwen3-8B-GGUF/Q8_0"));
    // LM Studio's "delete model": the whole folder.
    sh_ok(&format!("rm -r {}", q(&repo)));
    assert!(!repo.exists());
    assert!(!manifest_files(&m.store).iter().any(|n| n.starts_with("hf.co/lmstudio-community")));
    assert_eq!(blobs(&m.store), blobs_before, "every blob the downloads brought is pruned with them");
    drop(m);
    assert!(scratch_leftovers(&dir.path().join("models")).is_empty());
    assert_store_clean(&dir.path().join("models"));
}

/// A root mount with `--allow-other`: a normal user (as LM Studio runs) makes its folders
/// and downloads into `.lmstudio`; the folders are the user's, the download becomes a model,
/// and the user can delete what it downloaded but not the models others put there.
#[test]
fn a_normal_user_downloads_into_the_lmstudio_view_of_a_root_mount() {
    let Some((dir, m, _)) = mounted_fixture(&["--allow-other", "--view", "lmstudio"]) else { return };
    let user = "ollamafs-test";
    if !sh(&format!("id -u {user}")).status.success() {
        sh_ok(&format!("useradd --no-create-home {user} || adduser --system --no-create-home {user}"));
    }
    let src = dir.path().join("dl.gguf");
    noisy_gguf(&src, 8 << 20);
    sh_ok(&format!("chmod 755 {} && chmod 644 {}", q(dir.path()), q(&src)));
    let repo = m.p(".lmstudio/someone/Small-GGUF");
    let as_user = |cmd: String| sh(&format!("runuser -u {user} -- sh -c \"{cmd}\""));
    let o = as_user(format!("mkdir -p {0} && cp {1} {0}/Small-Q4_K_M.gguf", q(&repo), q(&src)));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sh_ok(&format!("stat -c %U {}", q(&repo))).trim(), user);
    assert!(manifest_files(&m.store).contains("hf.co/someone/Small-GGUF/Q4_K_M"));
    let theirs = m.p(".lmstudio/ollama/llama3.2-latest/llama3.2-latest.gguf");
    let o = as_user(format!("rm -f {}", q(&theirs)));
    assert!(!o.status.success() && theirs.exists(), "a user removed a model it did not download");
    let o = as_user(format!("rm -r {}", q(&repo)));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!manifest_files(&m.store).contains("hf.co/someone/Small-GGUF/Q4_K_M"));
}

/// The other ways a models folder gets filled: `rsync -a` (a temp name, then a rename; the
/// folders' modes and times set afterwards) and `tar -x` publish the same way.
#[test]
fn rsync_and_tar_into_the_lmstudio_view_publish_the_models() {
    let Some((dir, m, _)) = mounted_fixture(&["--view", "lmstudio"]) else { return };
    let src = dir.path().join("lmstudio-folder");
    fs::create_dir_all(src.join("org/A-GGUF")).unwrap();
    fs::create_dir_all(src.join("org/B-GGUF")).unwrap();
    noisy_gguf(&src.join("org/A-GGUF/A-Q8_0.gguf"), 6 << 20);
    noisy_gguf(&src.join("org/B-GGUF/B-Q6_K.gguf"), 6 << 20);
    sh_ok(&format!("chmod 750 {}", q(&src.join("org/A-GGUF"))));
    let lm = m.p(".lmstudio");
    sh_ok(&format!("rsync -a {}/ {}/", q(&src.join("org/..")), q(&lm)));
    assert!(manifest_files(&m.store).contains("hf.co/org/A-GGUF/Q8_0"));
    assert_eq!(
        sh_ok(&format!("stat -c %a {}", q(&lm.join("org/A-GGUF")))).trim(),
        "750",
        "rsync set the folder's mode"
    );
    sh_ok(&format!("cmp {} {}", q(&src.join("org/A-GGUF/A-Q8_0.gguf")), q(&lm.join("org/A-GGUF/A-Q8_0.gguf"))));
    // A second rsync finds everything in place and sends nothing.
    let again = sh_ok(&format!("rsync -ai {}/ {}/", q(&src), q(&lm)));
    assert!(!again.contains(">f"), "rsync sent files again:\n{again}");
    // tar into another publisher's folder.
    sh_ok(&format!("mkdir {0}/other && tar -C {1} -cf - B-GGUF | tar -C {0}/other -xf -", q(&lm), q(&src.join("org"))));
    assert!(manifest_files(&m.store).contains("hf.co/other/B-GGUF/Q6_K"));
    sh_ok(&format!("cmp {} {}", q(&src.join("org/B-GGUF/B-Q6_K.gguf")), q(&lm.join("other/B-GGUF/B-Q6_K.gguf"))));
}
