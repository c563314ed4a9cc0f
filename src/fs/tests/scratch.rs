//! Scratch folders and files: real entries of the folder's tree, one inode per file.

use std::os::unix::fs::MetadataExt;

use super::*;

fn mkdir_p(t: &T, path: &str) -> u64 {
    let (parent, name) = path.rsplit_once('/').unwrap();
    let p = walk(t, parent).unwrap().ino;
    t.fs.mkdir(p, name, 0o755).unwrap().ino
}

fn write_at(t: &T, dir: &str, name: &str, data: &[u8]) -> u64 {
    let parent = walk(t, dir).unwrap().ino;
    let (a, w) = t.fs.create(parent, name, 0o644, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL).unwrap();
    t.fs.write(w.fh, 0, data).unwrap();
    t.fs.release(w.fh).unwrap();
    a.ino
}

fn read_all(t: &T, path: &str) -> Vec<u8> {
    let a = walk(t, path).unwrap();
    let o = t.fs.open(a.ino, libc::O_RDONLY).unwrap();
    let data = t.fs.read(o.fh, 0, 1 << 30).unwrap();
    t.fs.release(o.fh).unwrap();
    data
}

fn tree_of(t: &T, model: &str) -> Option<std::path::PathBuf> {
    t.fs.lock().folders.get(&Name::parse(model).unwrap()).and_then(|f| f.tree.clone())
}

#[test]
fn a_folder_inside_a_model_folder_is_plain_posix_below() {
    let t = setup(Options::default());
    let before = manifest(&t, fixture::LLAMA);
    let tmp = mkdir_p(&t, "llama3.2:latest/.~tmp~");
    mkdir_p(&t, "llama3.2:latest/.~tmp~/deep");
    // Layer names are just names there.
    let a = write_at(&t, "llama3.2:latest/.~tmp~", "model.gguf", b"not a layer");
    assert_eq!(read_all(&t, "llama3.2:latest/.~tmp~/model.gguf"), b"not a layer");
    let l = t.fs.link(a, walk(&t, "llama3.2:latest/.~tmp~/deep").unwrap().ino, "again").unwrap();
    assert_eq!((l.ino, l.nlink), (a, 2), "a hard link is the same inode");
    let s = t.fs.symlink(tmp, "lnk", "model.gguf").unwrap();
    assert_eq!((s.kind, t.fs.readlink(s.ino).unwrap().as_str()), (FileKind::Symlink, "model.gguf"));
    let f = t.fs.mknod_as(Caller::daemon(), tmp, "fifo", libc::S_IFIFO | 0o600, 0).unwrap();
    assert_eq!(f.kind, FileKind::Fifo);
    let mut listed = names(&t, "llama3.2:latest/.~tmp~");
    listed.sort();
    assert_eq!(listed, ["deep", "fifo", "lnk", "model.gguf"]);
    assert!(names(&t, "llama3.2:latest").contains(&".~tmp~".to_string()));
    assert_eq!(manifest(&t, fixture::LLAMA), before, "nothing of it is part of the model");
    // The tree is real, beside the store's own folders.
    let tree = tree_of(&t, fixture::LLAMA).expect("a tree");
    assert!(tree.starts_with(t.fs.store.process_scratch()));
    assert_eq!(std::fs::read(tree.join(".~tmp~/deep/again")).unwrap(), b"not a layer");
    // A model folder holding scratch entries is not empty; its layer names stay the model's.
    let model = walk(&t, "llama3.2:latest").unwrap().ino;
    assert_eq!(t.fs.mkdir(model, "template", 0o755).unwrap_err().errno, libc::EINVAL);
    assert_eq!(t.fs.mkdir(model, "x:y", 0o755).unwrap_err().errno, libc::EINVAL, "a model folder holds no models");
    assert_eq!(t.fs.mkdir(tmp, "x:y", 0o755).unwrap().kind, FileKind::Dir, "any name below a scratch folder");
    assert_eq!(t.fs.rmdir(model, ".~tmp~").unwrap_err().errno, libc::ENOTEMPTY);
}

#[test]
fn one_inode_per_file_not_per_name() {
    let t = setup(Options::default());
    let dir = walk(&t, fixture::QWEN).unwrap().ino;
    let (a, ha) = t.fs.create(dir, "f", 0o600, libc::O_RDWR | libc::O_CREAT).unwrap();
    t.fs.write(ha.fh, 0, b"old_content").unwrap();
    t.fs.unlink(dir, "f").unwrap();
    let (b, hb) = t.fs.create(dir, "f", 0o644, libc::O_RDWR | libc::O_CREAT).unwrap();
    t.fs.write(hb.fh, 0, b"NEW").unwrap();
    assert_ne!(a.ino, b.ino, "a new file of the same name is a new inode");
    let old = t.fs.getattr_open(a.ino, Some(ha.fh)).unwrap();
    assert_eq!((old.size, old.nlink), (11, 0), "the unlinked file keeps its data, nlink 0");
    assert_eq!(t.fs.read(ha.fh, 0, 100).unwrap(), b"old_content");
    assert_eq!(t.fs.getattr(a.ino).unwrap().nlink, 0, "also without the descriptor");
    t.fs.setattr(a.ino, Some(ha.fh), SetAttr { size: Some(2), ..Default::default() }).unwrap();
    assert_eq!(t.fs.getattr(b.ino).unwrap().size, 3, "truncating the old file leaves the new one");
    // Renaming over an open file leaves the open one intact.
    let (g, hg) = t.fs.create(dir, "g", 0o644, libc::O_RDWR | libc::O_CREAT).unwrap();
    t.fs.write(hg.fh, 0, b"ggg").unwrap();
    t.fs.rename(dir, "f", dir, "g", 0).unwrap();
    let open_g = t.fs.getattr_open(g.ino, Some(hg.fh)).unwrap();
    assert_eq!((open_g.size, open_g.nlink), (3, 0));
    assert_eq!(walk(&t, "qwen2.5:0.5b/g").unwrap().ino, b.ino, "the name is the moved file's");
    for h in [ha.fh, hb.fh, hg.fh] {
        t.fs.release(h).unwrap();
    }
}

#[test]
fn a_file_renamed_from_a_scratch_folder_onto_a_layer_name_is_committed_without_a_copy() {
    let t = setup(Options::default());
    let gguf = read_all(&t, "llama3.2:latest/model.gguf");
    t.fs.mkdir(ROOT_INO, "new:v1", 0o755).unwrap();
    let tmp = mkdir_p(&t, "new:v1/.~tmp~");
    write_at(&t, "new:v1/.~tmp~", "model.gguf", &gguf);
    let blobs_before = blobs(&t);
    let folder = walk(&t, "new:v1").unwrap().ino;
    t.fs.rename(tmp, "model.gguf", folder, "model.gguf", 0).unwrap();
    assert!(on_disk(&t, "new:v1"), "whole weights publish the draft");
    assert_eq!(blobs(&t), blobs_before, "the content was a known blob: nothing new stored");
    t.fs.rmdir(folder, ".~tmp~").unwrap();
    // A new blob is the scratch file itself, renamed into blobs/.
    let mut other = gguf.clone();
    other.extend_from_slice(b"tail");
    let tmp = mkdir_p(&t, "new:v1/.rsync-partial");
    write_at(&t, "new:v1/.rsync-partial", "model.gguf", &other);
    let disk_ino2 = std::fs::metadata(tree_of(&t, "new:v1").unwrap().join(".rsync-partial/model.gguf")).unwrap().ino();
    t.fs.rename(tmp, "model.gguf", folder, "model.gguf", 0).unwrap();
    let d = crate::store::Digest::of_bytes(&other);
    assert_eq!(std::fs::metadata(t.fs.store.blob_path(&d)).unwrap().ino(), disk_ino2, "renamed, not copied");
    assert_eq!(read_all(&t, "new:v1/model.gguf"), other);
    // And back: a layer renamed into a scratch folder is a private copy there.
    t.fs.rename(folder, "model.gguf", tmp, "backup.gguf", 0).unwrap();
    assert_eq!(read_all(&t, "new:v1/.rsync-partial/backup.gguf"), other);
    assert!(!names(&t, "new:v1").contains(&"model.gguf".to_string()));
}

#[test]
fn a_scratch_tree_moves_with_its_folder_and_goes_with_it() {
    let t = setup(Options::default());
    mkdir_p(&t, "qwen2.5:0.5b/work");
    write_at(&t, "qwen2.5:0.5b/work", "notes", b"mine");
    let tree = tree_of(&t, fixture::QWEN).unwrap();
    t.fs.rename(ROOT_INO, "qwen2.5:0.5b", ROOT_INO, "moved:v1", 0).unwrap();
    assert_eq!(read_all(&t, "moved:v1/work/notes"), b"mine");
    assert_eq!(tree_of(&t, "moved:v1").as_ref(), Some(&tree), "the same tree: nothing copied");
    assert_eq!(t.fs.rmdir(ROOT_INO, "moved:v1").unwrap_err().errno, libc::ENOTEMPTY);
    // rm -r: children first, then the folder; the tree goes with it.
    let work = walk(&t, "moved:v1/work").unwrap().ino;
    t.fs.unlink(work, "notes").unwrap();
    let dir = walk(&t, "moved:v1").unwrap().ino;
    t.fs.rmdir(dir, "work").unwrap();
    for f in names(&t, "moved:v1") {
        t.fs.unlink(dir, &f).unwrap();
    }
    t.fs.rmdir(ROOT_INO, "moved:v1").unwrap();
    assert!(!tree.exists(), "the tree is removed with its folder");
    t.fs.mkdir(ROOT_INO, "moved:v1", 0o755).unwrap();
    assert_eq!(names(&t, "moved:v1"), Vec::<String>::new(), "a later folder of that name starts empty");
}

#[test]
fn a_trashed_model_keeps_its_scratch_folders_and_restores_them() {
    let t = setup(Options::default());
    mkdir_p(&t, "qwen2.5:0.5b/.partial");
    write_at(&t, "qwen2.5:0.5b/.partial", "half.gguf", b"half");
    t.fs.mkdir(ROOT_INO, ".Trash-0", 0o700).unwrap();
    let files = walk(&t, ".Trash-0/files").unwrap().ino;
    t.fs.rename(ROOT_INO, fixture::QWEN, files, fixture::QWEN, 0).unwrap();
    assert!(!on_disk(&t, fixture::QWEN));
    assert_eq!(read_all(&t, ".Trash-0/files/qwen2.5:0.5b/.partial/half.gguf"), b"half");
    t.fs.rename(files, fixture::QWEN, ROOT_INO, fixture::QWEN, 0).unwrap();
    assert!(on_disk(&t, fixture::QWEN));
    assert_eq!(read_all(&t, "qwen2.5:0.5b/.partial/half.gguf"), b"half");
    assert!(!names(&t, fixture::QWEN).contains(&"manifest.json (copy)".to_string()));
}

#[test]
fn scratch_files_in_a_layer_folder_and_names_too_long() {
    let t = setup(Options::default());
    t.fs.mkdir(ROOT_INO, "st:v1", 0o755).unwrap();
    let files = mkdir_p(&t, "st:v1/files");
    mkdir_p(&t, "st:v1/files/.tmp");
    write_at(&t, "st:v1/files/.tmp", "x", b"1");
    assert_eq!(names(&t, "st:v1/files"), [".tmp"]);
    assert_eq!(t.fs.rmdir(walk(&t, "st:v1").unwrap().ino, "files").unwrap_err().errno, libc::ENOTEMPTY);
    let long = "x".repeat(256);
    assert_eq!(t.fs.lookup(files, &long).unwrap_err().errno, libc::ENAMETOOLONG);
    assert_eq!(t.fs.lookup(ROOT_INO, &long).unwrap_err().errno, libc::ENAMETOOLONG);
    assert_eq!(t.fs.unlink(files, &long).unwrap_err().errno, libc::ENAMETOOLONG);
    assert_eq!(t.fs.rename(files, ".tmp", files, &long, 0).unwrap_err().errno, libc::ENAMETOOLONG);
}

#[test]
fn forgetting_a_scratch_inode_closes_it() {
    let t = setup(Options::default());
    let a = write_at(&t, fixture::QWEN, "note", b"x");
    assert_eq!(t.fs.lock().scratch_fds.len(), 1);
    let n = t.fs.lock().inodes.by_ino.get(&a).unwrap().1;
    t.fs.forget(a, n);
    assert_eq!(t.fs.lock().scratch_fds.len(), 0, "no descriptor kept for an inode the kernel forgot");
    assert_ne!(walk(&t, "qwen2.5:0.5b/note").unwrap().ino, 0);
}

#[test]
fn folder_times_follow_their_entries() {
    let t = setup(Options::default());
    let step = |t: &T| t.fs.opts.clock.advance(std::time::Duration::from_secs(100));
    let ns = walk(&t, "myuser").unwrap();
    step(&t);
    t.fs.mkdir(ns.ino, "new:v1", 0o755).unwrap();
    let after_mkdir = walk(&t, "myuser").unwrap();
    assert!(after_mkdir.mtime > ns.mtime, "a namespace folder's mtime moves when a model folder is made in it");
    assert_eq!(after_mkdir.ctime, after_mkdir.mtime);
    step(&t);
    t.fs.rmdir(ns.ino, "new:v1").unwrap();
    assert!(walk(&t, "myuser").unwrap().mtime > after_mkdir.mtime, "and when one is removed");
    // A model folder's times move with its scratch entries too.
    let model = walk(&t, fixture::QWEN).unwrap();
    step(&t);
    t.fs.mkdir(model.ino, "work", 0o755).unwrap();
    let with_work = walk(&t, fixture::QWEN).unwrap();
    assert!(with_work.mtime > model.mtime);
    step(&t);
    t.fs.rmdir(model.ino, "work").unwrap();
    assert!(walk(&t, fixture::QWEN).unwrap().mtime > with_work.mtime);
}

#[test]
fn a_file_still_open_becomes_a_layer_and_its_descriptor_can_no_longer_write() {
    // GLib's Replace: write `.goutputstream-XXXXXX`, rename it over the file, then close.
    let t = setup(Options::default());
    let dir = walk(&t, fixture::LLAMA).unwrap().ino;
    let (_, h) = t.fs.create(dir, ".goutputstream-AB12CD", 0o644, libc::O_RDWR | libc::O_CREAT).unwrap();
    t.fs.write(h.fh, 0, b"{{ .Prompt }}").unwrap();
    t.fs.rename(dir, ".goutputstream-AB12CD", dir, "template", 0).unwrap();
    assert!(t.fs.write(h.fh, 0, b"XX").is_err(), "the blob cannot change through the old descriptor");
    assert_eq!(t.fs.read(h.fh, 0, 100).unwrap(), b"{{ .Prompt }}", "it still reads");
    t.fs.release(h.fh).unwrap();
    assert_eq!(read_all(&t, "llama3.2:latest/template"), b"{{ .Prompt }}");
    let d = crate::store::Digest::of_bytes(b"{{ .Prompt }}");
    assert_eq!(std::fs::read(t.fs.store.blob_path(&d)).unwrap(), b"{{ .Prompt }}");
}

#[test]
fn a_scratch_file_in_a_folder_named_like_a_host_stays_a_scratch_file() {
    // `qwen:7` could be host `qwen` port 7 (`mkdir -p qwen:7/team/...` makes it one), but a
    // file made in it is just a file of that draft.
    let t = setup(Options::default());
    let dir = t.fs.mkdir(ROOT_INO, "qwen:7", 0o755).unwrap().ino;
    let (_, h) = t.fs.create(dir, "notes", 0o644, libc::O_RDWR | libc::O_CREAT).unwrap();
    t.fs.release(h.fh).unwrap();
    assert_eq!(names(&t, "qwen:7"), ["notes"]);
    // A namespace made in an empty one still turns it into a host folder.
    let other = t.fs.mkdir(ROOT_INO, "myhost:8080", 0o755).unwrap().ino;
    assert_eq!(t.fs.mkdir(other, "team", 0o755).unwrap().kind, FileKind::Dir);
    assert!(walk(&t, "myhost:8080/team").is_ok());
    assert!(t.fs.lock().folders.keys().all(|n| n.model != "myhost"), "no model folder left behind");
}

#[test]
fn a_refused_commit_changes_nothing_of_the_scratch_file() {
    let t = setup(Options::default());
    let dir = walk(&t, fixture::LLAMA).unwrap().ino;
    let (_, h) = t.fs.create(dir, ".cfg-tmp", 0o644, libc::O_RDWR | libc::O_CREAT).unwrap();
    t.fs.write(h.fh, 0, b"not json").unwrap();
    assert_eq!(t.fs.rename(dir, ".cfg-tmp", dir, "config.json", 0).unwrap_err().errno, libc::EINVAL);
    t.fs.write(h.fh, 8, b"!").expect("its descriptor still writes");
    t.fs.release(h.fh).unwrap();
    assert_eq!(read_all(&t, "llama3.2:latest/.cfg-tmp"), b"not json!");
}
