//! The filesystem core without a kernel: the same calls the adapter makes, asserted on the store.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::fixture;

mod folders;
mod model;
mod scratch;
mod views;

struct T {
    _dir: tempfile::TempDir,
    fs: Fs,
    info: fixture::Info,
}

fn setup(opts: Options) -> T {
    let dir = tempfile::tempdir().unwrap();
    let info = fixture::build(dir.path(), 4 << 20).unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    store.prepare_for_writes().unwrap();
    T { _dir: dir, fs: Fs::new(store, opts), info }
}

fn blobs(t: &T) -> BTreeSet<String> {
    std::fs::read_dir(t.fs.store.blobs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn manifest(t: &T, name: &str) -> Vec<u8> {
    std::fs::read(t.fs.store.manifest_path(&Name::parse(name).unwrap())).unwrap()
}

/// Walk a path from the root with lookups, like the kernel does.
fn walk(t: &T, path: &str) -> Result<Attr> {
    let mut attr = t.fs.getattr(ROOT_INO)?;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        attr = t.fs.lookup(attr.ino, c)?;
    }
    Ok(attr)
}

fn names(t: &T, path: &str) -> Vec<String> {
    let ino = walk(t, path).unwrap().ino;
    t.fs.readdir(ino).unwrap().into_iter().map(|e| e.name).filter(|n| n != "." && n != "..").collect()
}

/// Copy one file the way `cp` does inside the mount: create, copy_file_range, close.
fn cp_file(t: &T, src: &str, dst_dir: &str, name: &str) -> Result<()> {
    let src = walk(t, src)?;
    let parent = walk(t, dst_dir)?.ino;
    let o = t.fs.open(src.ino, libc::O_RDONLY)?;
    let (_, w) = t.fs.create(parent, name, 0o644, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)?;
    let mut off = 0;
    loop {
        let n = t.fs.copy_file_range(src.ino, o.fh, off, w.fh, off, 1 << 30)?;
        if n == 0 {
            break;
        }
        off += n;
    }
    t.fs.release(o.fh)?;
    t.fs.flush(w.fh)?;
    t.fs.release(w.fh)
}

/// Files under this process's scratch folder (temp files, holds).
fn scratch_files(t: &T) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![t.fs.store.process_scratch()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[test]
fn tree_matches_display_names() {
    let t = setup(Options::default());
    assert_eq!(
        names(&t, ""),
        ["hf.co", "llama3.2:latest", "localhost:5000", "mlx-community", "myuser", "qwen2.5:0.5b"]
    );
    assert_eq!(names(&t, "localhost:5000/team"), ["tiny:v1"]);
    assert_eq!(
        names(&t, "llama3.2:latest"),
        ["model.gguf", "template", "license", "license-2", "params.json", "config.json", "manifest.json"]
    );
    assert_eq!(names(&t, "mlx-community/flux:latest/files"), ["transformer", "config.json"]);
    // Lookup and listing agree: no tagless, `library/` or `registry.ollama.ai/` aliases.
    for alias in ["llama3.2", "library", "registry.ollama.ai", "library/llama3.2:latest", "myuser/llama3.2"] {
        assert_eq!(walk(&t, alias).unwrap_err().errno, libc::ENOENT, "{alias}");
    }
    assert_eq!(t.fs.mkdir(ROOT_INO, "library", 0o755).unwrap_err().errno, libc::EINVAL);
    assert_eq!(t.fs.mkdir(ROOT_INO, "registry.ollama.ai", 0o755).unwrap_err().errno, libc::EINVAL);
    assert_eq!(walk(&t, "nope:x").unwrap_err().errno, libc::ENOENT);
    assert_eq!(walk(&t, "llama3.2:latest/model.gguf/x").unwrap_err().errno, libc::ENOTDIR);
}

#[test]
fn weights_attrs_and_inode_ranges() {
    let t = setup(Options::default());
    let a = walk(&t, "llama3.2:latest/model.gguf").unwrap();
    let b = walk(&t, "myuser/llama3.2:custom/model.gguf").unwrap();
    assert_eq!(a, b);
    assert_eq!((a.nlink, a.perm, a.blocks), (2, 0o444, (4 << 20) / 512));
    let tpl = walk(&t, "llama3.2:latest/template").unwrap();
    let cfg = walk(&t, "llama3.2:latest/config.json").unwrap();
    let man = walk(&t, "llama3.2:latest/manifest.json").unwrap();
    assert!(tpl.ino < a.ino && a.ino < cfg.ino && cfg.ino < man.ino, "cp copies in inode order: manifest last");
    assert_eq!(man.size, manifest(&t, fixture::LLAMA).len() as u64);
    let x = t.fs.xattrs(a.ino).unwrap();
    assert_eq!(x[0], ("user.ollama.digest".to_string(), t.info.big_model.prefixed().into_bytes()));
}

#[test]
fn cp_via_copy_file_range_moves_no_data() {
    let t = setup(Options::default());
    let before = blobs(&t);
    let root = ROOT_INO;
    t.fs.mkdir(root, "copy:v1", 0o755).unwrap();
    for f in ["template", "license", "license-2", "params.json", "model.gguf", "config.json", "manifest.json"] {
        cp_file(&t, &format!("llama3.2:latest/{f}"), "copy:v1", f).unwrap();
    }
    assert_eq!(manifest(&t, "copy:v1"), manifest(&t, fixture::LLAMA));
    assert_eq!(blobs(&t), before);
    assert_eq!(scratch_files(&t), Vec::<String>::new(), "no temp file and no hold left");
}

#[test]
fn write_path_dedupes_and_stores_new_content() {
    let t = setup(Options::default());
    let before = blobs(&t);
    let model = walk(&t, "myuser/llama3.2:custom").unwrap().ino;
    // Same content as the existing template: nothing new stored, manifest unchanged.
    let m0 = manifest(&t, fixture::CUSTOM);
    let tpl = t.fs.lookup(model, "template").unwrap();
    let o = t.fs.open(tpl.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    t.fs.write(o.fh, 0, fixture::TEMPLATE.as_bytes()).unwrap();
    t.fs.release(o.fh).unwrap();
    assert_eq!(manifest(&t, fixture::CUSTOM), m0);
    assert_eq!(blobs(&t), before);
    // New system prompt in pieces, out of order: one new blob.
    let sys = t.fs.lookup(model, "system").unwrap();
    let o = t.fs.open(sys.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    t.fs.write(o.fh, 5, b" world").unwrap();
    t.fs.write(o.fh, 0, b"hello").unwrap();
    t.fs.release(o.fh).unwrap();
    let after = blobs(&t);
    assert_eq!(after.len(), before.len(), "old system pruned, new one stored");
    let d = Digest::of_bytes(b"hello world");
    assert!(after.contains(&d.blob_file_name()));
    assert!(!after.contains(&t.info.system_custom.blob_file_name()));
    let r = t.fs.open(sys.ino, libc::O_RDONLY).unwrap();
    assert_eq!(t.fs.read(r.fh, 0, 100).unwrap(), b"hello world");
    // The base model never had a system prompt and still has none.
    assert!(walk(&t, "llama3.2:latest/system").is_err());
}

#[test]
fn weights_refuse_writes_and_bad_names_are_einval() {
    let t = setup(Options::default());
    let w = walk(&t, "llama3.2:latest/model.gguf").unwrap();
    let before = manifest(&t, fixture::LLAMA);
    // Opening weights to write without O_TRUNC works (GLib opens O_RDWR, then truncates),
    // but writing into them is refused.
    let o = t.fs.open(w.ino, libc::O_WRONLY).unwrap();
    assert_eq!(t.fs.write(o.fh, 0, b"x").unwrap_err().errno, libc::EPERM);
    let set = SetAttr { size: Some(10), ..Default::default() };
    assert_eq!(t.fs.setattr(w.ino, Some(o.fh), set).unwrap_err().errno, libc::EPERM);
    t.fs.release(o.fh).unwrap();
    assert_eq!(manifest(&t, fixture::LLAMA), before, "a refused write changes nothing");
    assert_eq!(
        t.fs.setattr(w.ino, None, SetAttr { size: Some(0), ..Default::default() }).unwrap_err().errno,
        libc::EPERM
    );
    // Folder names that are not model names are drafts (file managers' "New Folder",
    // "NAME (copy)"): they can hold files and are never published.
    for draft in ["a b:c", "New Folder", "-x:y", "x:y@z", &format!("{}:t", "m".repeat(81))] {
        t.fs.mkdir(ROOT_INO, draft, 0o755).unwrap();
        assert!(names(&t, "").contains(&draft.to_string()), "{draft}");
    }
    let hf = walk(&t, "hf.co").unwrap().ino;
    assert_eq!(t.fs.mkdir(hf, "a b:c", 0o755).unwrap_err().errno, libc::EINVAL, "a host folder holds no models");
    assert_eq!(t.fs.mkdir(ROOT_INO, "Llama3.2:LATEST", 0o755).unwrap_err().errno, libc::EEXIST, "case twin");
    assert_eq!(t.fs.mkdir(ROOT_INO, "llama3.2:latest", 0o755).unwrap_err().errno, libc::EEXIST);
    let model = walk(&t, "llama3.2:latest").unwrap().ino;
    assert_eq!(t.fs.mkdir(model, "model.gguf", 0o755).unwrap_err().errno, libc::EINVAL, "a layer's name");
    assert_eq!(t.fs.mkdir(model, "sub", 0o755).unwrap().kind, FileKind::Dir, "a scratch folder");
    assert_eq!(t.fs.create(ROOT_INO, ".DS_Store", 0o644, 0).unwrap_err().errno, libc::EINVAL);
}

#[test]
fn read_only_refuses_changes() {
    let t = setup(Options { read_only: true, ..Default::default() });
    assert_eq!(t.fs.mkdir(ROOT_INO, "x:y", 0o755).unwrap_err().errno, libc::EROFS);
    let model = walk(&t, "llama3.2:latest").unwrap().ino;
    assert_eq!(t.fs.unlink(model, "manifest.json").unwrap_err().errno, libc::EROFS);
    let tpl = walk(&t, "llama3.2:latest/template").unwrap();
    assert_eq!(t.fs.open(tpl.ino, libc::O_RDWR).unwrap_err().errno, libc::EROFS);
}

#[test]
fn unlink_and_rename() {
    let t = setup(Options::default());
    let custom = walk(&t, "myuser/llama3.2:custom").unwrap().ino;
    t.fs.unlink(custom, "license").unwrap();
    // Stable names: license-2 keeps its name while the mount lives.
    assert!(t.fs.lookup(custom, "license-2").is_ok());
    assert_eq!(t.fs.lookup(custom, "license").unwrap_err().errno, libc::ENOENT);
    t.fs.unlink(custom, "license-2").unwrap();
    let m: serde_json::Value = serde_json::from_slice(&manifest(&t, fixture::CUSTOM)).unwrap();
    assert!(m["layers"].as_array().unwrap().iter().all(|l| l["mediaType"] != "application/vnd.ollama.image.license"));
    // Model rename: onto an existing model is ENOTEMPTY, elsewhere a move.
    let myuser = walk(&t, "myuser").unwrap().ino;
    assert_eq!(
        t.fs.rename(ROOT_INO, "llama3.2:latest", ROOT_INO, "qwen2.5:0.5b", 0).unwrap_err().errno,
        libc::ENOTEMPTY
    );
    let bytes = manifest(&t, fixture::LLAMA);
    t.fs.rename(ROOT_INO, "llama3.2:latest", myuser, "moved:v1", 0).unwrap();
    assert_eq!(manifest(&t, "myuser/moved:v1"), bytes);
    assert!(!t.fs.store.manifest_path(&Name::parse(fixture::LLAMA).unwrap()).exists());
    // rm manifest.json takes the model out of the store; the folder stays as a draft
    // holding its other files (and their blobs), until they are removed too.
    let moved = walk(&t, "myuser/moved:v1").unwrap().ino;
    t.fs.unlink(moved, "manifest.json").unwrap();
    t.fs.unlink(custom, "manifest.json").unwrap();
    assert!(!t.fs.store.manifest_path(&Name::parse(fixture::CUSTOM).unwrap()).exists());
    assert!(names(&t, "myuser/moved:v1").contains(&"model.gguf".to_string()));
    assert!(blobs(&t).contains(&t.info.big_model.blob_file_name()), "a draft's weights are held");
    for (dir, ino) in [("moved:v1", moved), ("llama3.2:custom", custom)] {
        for f in names(&t, &format!("myuser/{dir}")) {
            t.fs.unlink(ino, &f).unwrap();
        }
        t.fs.rmdir(myuser, dir).unwrap();
    }
    assert!(!blobs(&t).contains(&t.info.big_model.blob_file_name()));
    assert!(blobs(&t).contains(&t.info.template.blob_file_name()));
    assert_eq!(scratch_files(&t), Vec::<String>::new());
}

#[test]
fn manifest_json_waits_for_missing_blobs() {
    let t = setup(Options::default());
    // A manifest naming a blob the store does not have yet.
    let content = b"brand new system prompt\n";
    let d = Digest::of_bytes(content);
    let license = b"a license nobody has yet\n";
    let mut m = crate::store::Manifest::parse(&manifest(&t, fixture::HF)).unwrap();
    m.layers.push(crate::store::Layer::new("application/vnd.ollama.image.system", d, content.len() as u64));
    let l = Digest::of_bytes(license);
    m.layers.push(crate::store::Layer::new("application/vnd.ollama.image.license", l, license.len() as u64));
    let bytes = m.to_go_json();
    t.fs.mkdir(ROOT_INO, "late:v1", 0o755).unwrap();
    let dir = walk(&t, "late:v1").unwrap().ino;
    let (_, w) = t.fs.create(dir, "manifest.json", 0o644, libc::O_WRONLY).unwrap();
    t.fs.write(w.fh, 0, &bytes).unwrap();
    t.fs.release(w.fh).unwrap();
    assert!(!t.fs.store.manifest_path(&Name::parse("late:v1").unwrap()).exists(), "waiting");
    // The draft shows the manifest.json as written while it waits.
    let shown = walk(&t, "late:v1/manifest.json").unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(shown.size, bytes.len() as u64);
    let o = t.fs.open(shown.ino, libc::O_RDONLY).unwrap();
    assert_eq!(t.fs.read(o.fh, 0, 1 << 20).unwrap(), bytes);
    t.fs.release(o.fh).unwrap();
    // A blob that arrives while others are still missing shows under its name at once (a
    // copy tool sets its mode right after closing it).
    let license_count = names(&t, "late:v1").iter().filter(|n| n.starts_with("license")).count();
    let name = if license_count == 0 { "license".to_string() } else { format!("license-{}", license_count + 1) };
    let (_, w) = t.fs.create(dir, &name, 0o644, libc::O_WRONLY).unwrap();
    t.fs.write(w.fh, 0, license).unwrap();
    t.fs.release(w.fh).unwrap();
    let shown = walk(&t, &format!("late:v1/{name}")).unwrap_or_else(|e| panic!("{e:?}"));
    t.fs.setattr(shown.ino, None, SetAttr { mode: Some(0o644), ..Default::default() }).unwrap();
    assert!(!t.fs.store.manifest_path(&Name::parse("late:v1").unwrap()).exists(), "still waiting");
    let (_, w) = t.fs.create(dir, "system", 0o644, libc::O_WRONLY).unwrap();
    t.fs.write(w.fh, 0, content).unwrap();
    t.fs.release(w.fh).unwrap();
    assert_eq!(manifest(&t, "late:v1"), bytes, "applied byte for byte once the blob arrived");
    // Removing a waiting manifest.json ends the wait; the draft folder can then go.
    t.fs.mkdir(ROOT_INO, "later:v1", 0o755).unwrap();
    let later = walk(&t, "later:v1").unwrap().ino;
    let mut m2 = crate::store::Manifest::parse(&bytes).unwrap();
    let never = b"never arrives\n";
    m2.layers.push(crate::store::Layer::new("application/vnd.ollama.image.license", Digest::of_bytes(never), 14));
    let (_, w) = t.fs.create(later, "manifest.json", 0o644, libc::O_WRONLY).unwrap();
    t.fs.write(w.fh, 0, &m2.to_go_json()).unwrap();
    t.fs.release(w.fh).unwrap();
    assert_eq!(names(&t, "later:v1"), ["manifest.json"]);
    t.fs.unlink(later, "manifest.json").unwrap();
    t.fs.rmdir(ROOT_INO, "later:v1").unwrap();
    assert!(!t.fs.store.manifest_path(&Name::parse("later:v1").unwrap()).exists());
    // Invalid JSON is refused at close and changes nothing.
    let (_, w) = t.fs.create(dir, "x.tmp", 0o644, libc::O_WRONLY).unwrap();
    t.fs.release(w.fh).unwrap();
    let man = walk(&t, "late:v1/manifest.json").unwrap_or_else(|e| panic!("{e:?}"));
    let o = t.fs.open(man.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    t.fs.write(o.fh, 0, b"{\"layers\": [").unwrap();
    assert_eq!(t.fs.flush(o.fh).unwrap_err().errno, libc::EINVAL);
    t.fs.release(o.fh).unwrap();
    assert_eq!(manifest(&t, "late:v1"), bytes);
}

#[test]
fn refresh_sees_other_writers_and_keeps_ours() {
    let t = setup(Options::default());
    let store = t.fs.store.clone();
    store.copy(fixture::LLAMA, "outside:v1").unwrap();
    assert!(walk(&t, "outside:v1").is_err(), "not yet refreshed");
    assert!(t.fs.refresh());
    assert!(walk(&t, "outside:v1/model.gguf").is_ok());
    assert_eq!(walk(&t, "llama3.2:latest/model.gguf").unwrap().nlink, 3);
    store.delete("outside:v1", true).unwrap();
    assert!(t.fs.refresh());
    assert!(walk(&t, "outside:v1").is_err());
    assert!(!t.fs.refresh(), "nothing changed, nothing done");
}

#[test]
fn symlink_copies_and_rejects_outside_targets() {
    let t = setup(Options { mountpoint: Some("/mnt/models".into()), ..Default::default() });
    let a = t.fs.symlink(ROOT_INO, "ln:v1", "llama3.2:latest").unwrap();
    assert_eq!(a.kind, FileKind::Symlink);
    assert_eq!(manifest(&t, "ln:v1"), manifest(&t, fixture::LLAMA));
    let myuser = walk(&t, "myuser").unwrap().ino;
    t.fs.symlink(myuser, "abs:v1", "/mnt/models/qwen2.5:0.5b").unwrap();
    assert_eq!(manifest(&t, "myuser/abs:v1"), manifest(&t, fixture::QWEN));
    t.fs.symlink(myuser, "rel:v1", "../hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M").unwrap();
    assert_eq!(manifest(&t, "myuser/rel:v1"), manifest(&t, fixture::HF));
    for target in ["/etc/passwd", "/mnt/modelsX/llama3.2:latest", "../../x", "myuser", "nothing:here"] {
        assert_eq!(t.fs.symlink(ROOT_INO, "bad:v1", target).unwrap_err().errno, libc::EINVAL, "{target}");
    }
}

#[test]
fn api_changes_on_a_read_only_mount_are_refused() {
    use crate::api::Catalog;
    let t = setup(Options { read_only: true, ..Default::default() });
    let before = manifest(&t, "llama3.2:latest");
    for e in [t.fs.copy("llama3.2:latest", "x:y").unwrap_err(), t.fs.delete("llama3.2:latest").unwrap_err()] {
        assert!(matches!(&e, StoreError::Io(io) if io.kind() == std::io::ErrorKind::ReadOnlyFilesystem), "{e:?}");
        assert_eq!(e.to_string(), "read-only mount");
    }
    assert_eq!(manifest(&t, "llama3.2:latest"), before);
}

/// Write `data` into a new file of a folder: create, write, close (no FUSE).
fn write_new(t: &T, dir: &str, name: &str, data: &[u8]) -> Result<()> {
    let parent = walk(t, dir)?.ino;
    let (_, w) = t.fs.create(parent, name, 0o644, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)?;
    t.fs.write(w.fh, 0, data)?;
    t.fs.flush(w.fh)?;
    t.fs.release(w.fh)
}

fn on_disk(t: &T, name: &str) -> bool {
    t.fs.store.manifest_path(&Name::parse(name).unwrap()).exists()
}

#[test]
fn a_draft_is_published_when_its_weights_arrive() {
    let t = setup(Options::default());
    t.fs.mkdir(ROOT_INO, "new:v1", 0o755).unwrap();
    write_new(&t, "new:v1", "system", b"be brief\n").unwrap();
    assert!(!on_disk(&t, "new:v1"), "text alone is a draft");
    assert_eq!(names(&t, "new:v1"), ["system"], "a draft shows its files, and no manifest.json");
    assert!(t.fs.lock().index.get(&Name::parse("new:v1").unwrap()).is_none(), "the API does not list drafts");
    cp_file(&t, "llama3.2:latest/model.gguf", "new:v1", "model.gguf").unwrap();
    assert!(on_disk(&t, "new:v1"), "whole weights publish it");
    let m = crate::store::Manifest::parse(&manifest(&t, "new:v1")).unwrap();
    assert!(t.fs.store.check_complete(&m).is_ok());
    // A folder made in the mount shows what was written into it, however long one waits:
    // the generated config.json never meets a copy tool's O_EXCL create.
    t.fs.opts.clock.advance(Duration::from_secs(3600));
    assert_eq!(walk(&t, "new:v1/config.json").unwrap_err().errno, libc::ENOENT);
    assert_eq!(names(&t, "new:v1"), ["system", "model.gguf"]);
    // A copy that writes the config and manifest last makes the folder exact.
    write_new(&t, "new:v1", "config.json", &std::fs::read(t.fs.store.blob_path(&m.config.digest().unwrap())).unwrap())
        .unwrap();
    write_new(&t, "new:v1", "manifest.json", &manifest(&t, "new:v1")).unwrap();
    assert_eq!(names(&t, "new:v1"), ["system", "model.gguf", "config.json", "manifest.json"]);
}

#[test]
fn removing_weights_is_held_until_the_model_is_whole_again() {
    let t = setup(Options::default());
    let before = manifest(&t, fixture::LLAMA);
    let llama = walk(&t, "llama3.2:latest").unwrap().ino;
    t.fs.unlink(llama, "model.gguf").unwrap();
    assert_eq!(manifest(&t, fixture::LLAMA), before, "the store keeps the complete model");
    assert_eq!(walk(&t, "llama3.2:latest/model.gguf").unwrap_err().errno, libc::ENOENT, "the mount shows the change");
    // `rm` then `ln`: the layer returns to its old place and the manifest is what it was.
    let weights = walk(&t, "myuser/llama3.2:custom/model.gguf").unwrap().ino;
    t.fs.link(weights, llama, "model.gguf").unwrap();
    assert_eq!(manifest(&t, fixture::LLAMA), before);
    assert!(t.fs.lock().folders.values().all(|f| f.work.is_none()), "nothing held any more");
}

#[test]
fn rm_manifest_json_unpublishes_and_the_folder_empties_in_any_order() {
    let t = setup(Options::default());
    let before = blobs(&t);
    let custom = walk(&t, "myuser/llama3.2:custom").unwrap().ino;
    // Removing the config first is held; removing manifest.json then unpublishes.
    t.fs.unlink(custom, "config.json").unwrap();
    t.fs.unlink(custom, "manifest.json").unwrap();
    assert!(!on_disk(&t, fixture::CUSTOM));
    assert_eq!(
        names(&t, "myuser/llama3.2:custom"),
        ["model.gguf", "template", "system", "license", "license-2", "params.json"]
    );
    assert_eq!(blobs(&t), before, "the draft's files are held");
    // A later change that removes a file never republishes the draft.
    t.fs.unlink(custom, "license").unwrap();
    assert!(!on_disk(&t, fixture::CUSTOM));
    for f in ["params.json", "license-2", "template", "model.gguf", "system"] {
        t.fs.unlink(custom, f).unwrap();
    }
    let myuser = walk(&t, "myuser").unwrap().ino;
    assert_eq!(t.fs.rmdir(myuser, "llama3.2:custom").map_err(|e| e.errno), Ok(()));
    let gone: Vec<_> = before.difference(&blobs(&t)).cloned().collect();
    assert_eq!(gone, [t.info.system_custom.blob_file_name()], "only its own system prompt was its alone");
    assert_eq!(scratch_files(&t), Vec::<String>::new());
}

#[test]
fn scratch_files_go_with_their_folder() {
    let t = setup(Options::default());
    write_new(&t, "qwen2.5:0.5b", "notes.txt", b"mine\n").unwrap();
    t.fs.rename(ROOT_INO, "qwen2.5:0.5b", ROOT_INO, "renamed:v1", 0).unwrap();
    assert!(names(&t, "renamed:v1").contains(&"notes.txt".to_string()), "moved with the model");
    let dir = walk(&t, "renamed:v1").unwrap().ino;
    for f in names(&t, "renamed:v1") {
        t.fs.unlink(dir, &f).unwrap();
    }
    t.fs.rmdir(ROOT_INO, "renamed:v1").unwrap();
    t.fs.mkdir(ROOT_INO, "renamed:v1", 0o755).unwrap();
    assert_eq!(names(&t, "renamed:v1"), Vec::<String>::new(), "a new folder of the same name starts empty");
    assert_eq!(t.fs.create(dir, &"x".repeat(256), 0o644, 0).unwrap_err().errno, libc::ENAMETOOLONG);
}

#[test]
fn a_draft_with_any_name_is_published_when_renamed_to_a_model_name() {
    let t = setup(Options::default());
    let before = std::fs::read_dir(t.fs.store.manifests_dir()).unwrap().count();
    t.fs.mkdir(ROOT_INO, "llama3.2:latest (copy)", 0o755).unwrap();
    for f in ["template", "license", "license-2", "params.json", "model.gguf", "config.json", "manifest.json"] {
        cp_file(&t, &format!("llama3.2:latest/{f}"), "llama3.2:latest (copy)", f).unwrap();
    }
    assert_eq!(std::fs::read_dir(t.fs.store.manifests_dir()).unwrap().count(), before);
    assert!(!t.fs.store.manifest_path(&Name::parse("llama3.2:latest").unwrap()).with_extension("x").exists());
    assert!(t.fs.lock().index.models().all(|m| !m.name.model.contains("copy")), "never published under that name");
    t.fs.rename(ROOT_INO, "llama3.2:latest (copy)", ROOT_INO, "llama3.2:copy", 0).unwrap();
    assert_eq!(manifest(&t, "llama3.2:copy"), manifest(&t, fixture::LLAMA), "renamed to a valid name: published");
    assert_eq!(walk(&t, "llama3.2:latest (copy)").unwrap_err().errno, libc::ENOENT);
}

#[test]
fn readdirplus_counts_a_lookup_for_each_entry_sent_and_none_for_the_rest() {
    let t = setup(Options::default());
    let dir = walk(&t, "llama3.2:latest").unwrap().ino;
    let fh = t.fs.opendir(dir).unwrap();
    let count = |ino: u64| t.fs.lock().inodes.by_ino.get(&ino).map(|e| e.1).unwrap_or(0);
    let mut sent = Vec::new();
    // The reply fills up at the fourth entry (`.`, `..`, model.gguf, template).
    t.fs.readdirplus(dir, fh, 0, |_, name, attr| {
        if sent.len() == 3 {
            return true;
        }
        sent.push((name.to_string(), attr.ino));
        false
    })
    .unwrap();
    assert_eq!(sent.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), [".", "..", "model.gguf"]);
    assert_eq!(count(sent[2].1), 1, "a sent entry is a lookup the kernel will forget");
    let template = walk(&t, "llama3.2:latest/template").unwrap().ino;
    assert_eq!(count(template), 1, "only our walk counted; the entry that did not fit was not");
    // Going on from the offset the kernel got back.
    let mut rest = Vec::new();
    t.fs.readdirplus(dir, fh, 3, |_, name, _| {
        rest.push(name.to_string());
        false
    })
    .unwrap();
    assert_eq!(rest, ["template", "license", "license-2", "params.json", "config.json", "manifest.json"]);
}

#[test]
fn a_restore_that_cannot_publish_leaves_the_trash_item_whole() {
    let t = setup(Options::default());
    let name = "qwen2.5:0.5b";
    let original = manifest(&t, name);
    write_new(&t, name, "notes.txt", b"mine\n").unwrap();
    t.fs.mkdir(ROOT_INO, ".Trash-0", 0o700).unwrap();
    let files = walk(&t, ".Trash-0/files").unwrap().ino;
    t.fs.rename(ROOT_INO, name, files, name, 0).unwrap();
    assert!(!on_disk(&t, name), "trashed: out of the store");
    let in_trash = names(&t, &format!(".Trash-0/files/{name}"));
    assert!(in_trash.contains(&"notes.txt".to_string()) && in_trash.contains(&"manifest.json".to_string()));

    // The store cannot take the manifest (a file where its folder must go): the restore
    // fails and moves nothing.
    let blocker = t.fs.store.manifest_path(&Name::parse(name).unwrap()).parent().unwrap().to_path_buf();
    let _ = std::fs::remove_dir_all(&blocker);
    std::fs::write(&blocker, b"in the way").unwrap();
    assert!(t.fs.rename(files, name, ROOT_INO, name, 0).is_err());
    assert_eq!(names(&t, &format!(".Trash-0/files/{name}")), in_trash, "the trash item is whole");
    let notes = t.fs.store.scratch_dir().join("trash/0/files").join(name).join("notes.txt");
    assert_eq!(std::fs::read(&notes).unwrap(), b"mine\n");
    assert_eq!(walk(&t, name).unwrap_err().errno, libc::ENOENT, "nothing of it in the mount");

    std::fs::remove_file(&blocker).unwrap();
    t.fs.rename(files, name, ROOT_INO, name, 0).unwrap();
    assert_eq!(manifest(&t, name), original, "restored byte for byte");
    assert!(names(&t, name).contains(&"notes.txt".to_string()));
    assert_eq!(names(&t, ".Trash-0/files"), Vec::<String>::new());
}

#[test]
fn a_namespace_folder_restores_all_its_models_or_none() {
    let t = setup(Options::default());
    t.fs.store.copy(fixture::LLAMA, "myuser/second:v1").unwrap();
    assert!(t.fs.refresh());
    let (custom, second) = ("myuser/llama3.2:custom", "myuser/second:v1");
    let before = (manifest(&t, custom), manifest(&t, second));
    t.fs.mkdir(ROOT_INO, ".Trash-0", 0o700).unwrap();
    let files = walk(&t, ".Trash-0/files").unwrap().ino;
    t.fs.rename(ROOT_INO, "myuser", files, "myuser", 0).unwrap();
    assert!(!on_disk(&t, custom) && !on_disk(&t, second), "both left the store");
    let in_trash = names(&t, ".Trash-0/files/myuser");
    assert_eq!(in_trash, ["llama3.2:custom", "second:v1"]);

    // The second model cannot be written back: the first, already restored, goes back
    // to the trash, and the folder stays whole there.
    let blocker = t.fs.store.manifest_path(&Name::parse(second).unwrap()).parent().unwrap().to_path_buf();
    let _ = std::fs::remove_dir_all(&blocker);
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"in the way").unwrap();
    assert!(t.fs.rename(files, "myuser", ROOT_INO, "myuser", 0).is_err());
    assert!(!on_disk(&t, custom), "none of it restored");
    assert_eq!(walk(&t, "myuser").unwrap_err().errno, libc::ENOENT);
    assert_eq!(names(&t, ".Trash-0/files/myuser"), in_trash);
    assert_eq!(names(&t, ".Trash-0/files/myuser/llama3.2:custom").len(), names(&t, "llama3.2:latest").len() + 1);

    std::fs::remove_file(&blocker).unwrap();
    t.fs.rename(files, "myuser", ROOT_INO, "myuser", 0).unwrap();
    assert_eq!((manifest(&t, custom), manifest(&t, second)), before, "restored byte for byte");
    assert_eq!(names(&t, ".Trash-0/files"), Vec::<String>::new());
}

#[test]
fn large_writes_are_hashed_on_their_thread_and_a_truncate_starts_over() {
    let t = setup(Options::default());
    let system = walk(&t, "myuser/llama3.2:custom/system").unwrap();
    let w = t.fs.open(system.ino, libc::O_WRONLY | libc::O_TRUNC).unwrap();
    let chunk = |i: u8| vec![i; 1 << 20];
    // Past the inline limit: a thread follows the written prefix and hashes it.
    for i in 0..6u8 {
        t.fs.write(w.fh, i as u64 * (1 << 20), &chunk(i)).unwrap();
    }
    // Truncated to nothing and written again: the hash starts over.
    t.fs.setattr(system.ino, Some(w.fh), SetAttr { size: Some(0), ..Default::default() }).unwrap();
    let mut content = Vec::new();
    for i in 0..5u8 {
        let c = chunk(100 + i);
        t.fs.write(w.fh, content.len() as u64, &c).unwrap();
        content.extend_from_slice(&c);
    }
    t.fs.flush(w.fh).unwrap();
    t.fs.release(w.fh).unwrap();
    let d = Digest::of_bytes(&content);
    assert!(t.fs.store.blob_path(&d).exists(), "the blob is named by the hash of what the file holds");
    assert_eq!(std::fs::read(t.fs.store.blob_path(&d)).unwrap(), content);
    let m = crate::store::Manifest::parse(&manifest(&t, "myuser/llama3.2:custom")).unwrap();
    assert!(m.layers.iter().any(|l| l.digest() == Some(d)), "and the model shows it");
}
