//! One folder, one state: what a folder shows, replace, moves with work in progress, the
//! trash emptied the GVFS way, folder times.

use super::*;
use std::time::{Duration, SystemTime};

/// `cp -r A B` (files in inode order, manifest.json last) then `rm -r B` in listing order.
#[test]
fn a_copy_made_a_moment_ago_can_be_removed_file_by_file() {
    let t = setup(Options::default());
    let before = blobs(&t);
    t.fs.mkdir(ROOT_INO, "soak:v1", 0o755).unwrap();
    let mut files: Vec<(u64, String)> = names(&t, "llama3.2:latest")
        .into_iter()
        .map(|n| (walk(&t, &format!("llama3.2:latest/{n}")).unwrap().ino, n))
        .collect();
    files.sort();
    for (_, n) in &files {
        cp_file(&t, &format!("llama3.2:latest/{n}"), "soak:v1", n).unwrap();
    }
    assert_eq!(manifest(&t, "soak:v1"), manifest(&t, fixture::LLAMA));
    let dir = walk(&t, "soak:v1").unwrap().ino;
    for n in names(&t, "soak:v1") {
        t.fs.unlink(dir, &n).unwrap_or_else(|e| panic!("rm {n}: {e:?}"));
    }
    t.fs.rmdir(ROOT_INO, "soak:v1").unwrap();
    assert!(!on_disk(&t, "soak:v1"));
    assert_eq!(blobs(&t), before);
    assert_eq!(walk(&t, "soak:v1").unwrap_err().errno, libc::ENOENT);
}

/// A GGUF of `size` bytes (header, then zeros) other than the fixture's weights.
pub(super) fn other_gguf(arch: &str, size: u64) -> Vec<u8> {
    let header = fixture::gguf_header(arch, 15, &[("token_embd.weight", vec![2048, 1024])], None);
    let mut data = header.clone();
    data.resize(size.max(fixture::data_end(&header)) as usize, 0);
    data
}

/// Write `data` into an existing file opened by path (lookup, then open with `flags`).
pub(super) fn rewrite(t: &T, path: &str, flags: i32, data: &[u8]) -> Result<()> {
    let ino = walk(t, path)?.ino;
    let o = t.fs.open(ino, libc::O_WRONLY | flags)?;
    if !data.is_empty() {
        t.fs.write(o.fh, 0, data)?;
    }
    t.fs.flush(o.fh)?;
    t.fs.release(o.fh)
}

#[test]
fn o_trunc_onto_weights_replaces_the_layer_in_that_model_only() {
    let t = setup(Options::default());
    let custom_before = manifest(&t, fixture::CUSTOM);
    let old = manifest(&t, fixture::LLAMA);
    let old_m = crate::store::Manifest::parse(&old).unwrap();
    // The same content: nothing changes, not even the manifest's bytes.
    let same = std::fs::read(t.fs.store.blob_path(&t.info.big_model)).unwrap();
    rewrite(&t, "llama3.2:latest/model.gguf", libc::O_TRUNC, &same).unwrap();
    assert_eq!(manifest(&t, fixture::LLAMA), old);
    // A truncated GGUF is held: the store keeps the whole old layer.
    let new = other_gguf("qwen2", 1 << 20);
    rewrite(&t, "llama3.2:latest/model.gguf", libc::O_TRUNC, &new[..new.len() / 2]).unwrap();
    assert_eq!(manifest(&t, fixture::LLAMA), old, "an incomplete replacement never reaches the store");
    // A whole one replaces the layer in the same position.
    rewrite(&t, "llama3.2:latest/model.gguf", libc::O_TRUNC, &new).unwrap();
    let m = crate::store::Manifest::parse(&manifest(&t, fixture::LLAMA)).unwrap();
    let pos = |m: &crate::store::Manifest| m.layers.iter().position(|l| l.media_type.ends_with(".model")).unwrap();
    assert_eq!(pos(&m), pos(&old_m));
    assert_eq!(m.layers.len(), old_m.layers.len());
    let d = m.layers[pos(&m)].digest().unwrap();
    assert_eq!(std::fs::read(t.fs.store.blob_path(&d)).unwrap(), new);
    assert_eq!(manifest(&t, fixture::CUSTOM), custom_before, "the other model keeps the shared blob");
    assert!(t.fs.store.blob_path(&t.info.big_model).exists());
    assert_ne!(
        walk(&t, "llama3.2:latest/model.gguf").unwrap().ino,
        walk(&t, "myuser/llama3.2:custom/model.gguf").unwrap().ino
    );
    // Through the other folder (the shared inode, told apart by the lookup before the open).
    rewrite(&t, "myuser/llama3.2:custom/model.gguf", libc::O_TRUNC, &new).unwrap();
    assert!(!t.fs.store.blob_path(&t.info.big_model).exists(), "no model uses the old weights: pruned");
}

/// Copy every file of model folder `src` into folder `dst` in listing order (what GIO,
/// Nautilus and KIO do), each with create + copy_file_range + close.
fn copy_folder(t: &T, src: &str, dst: &str) {
    for n in names(t, src) {
        cp_file(t, &format!("{src}/{n}"), dst, &n).unwrap_or_else(|e| panic!("{n}: {e:?}"));
    }
}

#[test]
fn a_pasted_copy_shows_what_was_written_and_f2_publishes_it() {
    let t = setup(Options::default());
    let src = manifest(&t, fixture::LLAMA);
    // Nautilus' same-folder paste: "NAME (copy)", manifest.json copied alone first here.
    t.fs.mkdir(ROOT_INO, "r (copy)", 0o755).unwrap();
    cp_file(&t, "llama3.2:latest/manifest.json", "r (copy)", "manifest.json").unwrap();
    let shown = walk(&t, "r (copy)/manifest.json").unwrap();
    assert_eq!(shown.size, src.len() as u64, "stat right after the copy finds it");
    t.fs.opts.clock.advance(Duration::from_secs(10));
    assert_eq!(names(&t, "r (copy)"), ["manifest.json"], "nothing appears on its own");
    // The whole paste, in listing order.
    t.fs.mkdir(ROOT_INO, "llama3.2:latest (copy)", 0o755).unwrap();
    copy_folder(&t, "llama3.2:latest", "llama3.2:latest (copy)");
    assert_eq!(names(&t, "llama3.2:latest (copy)"), names(&t, "llama3.2:latest"));
    // F2 to a model name publishes it byte for byte.
    t.fs.rename(ROOT_INO, "llama3.2:latest (copy)", ROOT_INO, "r:latest", 0).unwrap();
    assert_eq!(manifest(&t, "r:latest"), src);
    assert_eq!(names(&t, "r:latest"), names(&t, "llama3.2:latest"));
}

#[test]
fn a_moved_folder_keeps_its_waiting_manifest() {
    let t = setup(Options::default());
    let text = b"a system prompt that is not in the store yet\n";
    let mut m = crate::store::Manifest::parse(&manifest(&t, fixture::HF)).unwrap();
    m.layers.push(crate::store::Layer::new(
        "application/vnd.ollama.image.system",
        Digest::of_bytes(text),
        text.len() as u64,
    ));
    let bytes = m.to_go_json();
    t.fs.mkdir(ROOT_INO, "wait:v1", 0o755).unwrap();
    super::write_new(&t, "wait:v1", "manifest.json", &bytes).unwrap();
    t.fs.rename(ROOT_INO, "wait:v1", ROOT_INO, "moved:v1", 0).unwrap();
    assert_eq!(names(&t, "moved:v1"), ["manifest.json"]);
    super::write_new(&t, "moved:v1", "system", text).unwrap();
    assert_eq!(manifest(&t, "moved:v1"), bytes, "the manifest that was written, not a generated one");
    assert!(!super::on_disk(&t, "wait:v1"));
}

#[test]
fn a_colon_less_folder_keeps_its_name_and_a_second_paste_replaces_all() {
    let t = setup(Options::default());
    let src = manifest(&t, fixture::LLAMA);
    // Thunar's first paste: `llama3.2_latest` (it turns `:` into `_`).
    t.fs.mkdir(ROOT_INO, "llama3.2_latest", 0o755).unwrap();
    copy_folder(&t, "llama3.2:latest", "llama3.2_latest");
    assert_eq!(manifest(&t, "llama3.2_latest:latest"), src);
    let root = names(&t, "");
    assert!(root.contains(&"llama3.2_latest".to_string()) && !root.contains(&"llama3.2_latest:latest".to_string()));
    assert_eq!(walk(&t, "llama3.2_latest:latest").unwrap_err().errno, libc::ENOENT, "lookup = listing");
    // The second paste merges, Replace All: every file opened with O_TRUNC and rewritten.
    for n in names(&t, "llama3.2:latest") {
        let data = {
            let a = walk(&t, &format!("llama3.2:latest/{n}")).unwrap();
            let o = t.fs.open(a.ino, libc::O_RDONLY).unwrap();
            let d = t.fs.read(o.fh, 0, 64 << 20).unwrap();
            t.fs.release(o.fh).unwrap();
            d
        };
        rewrite(&t, &format!("llama3.2_latest/{n}"), libc::O_TRUNC, &data).unwrap_or_else(|e| panic!("{n}: {e:?}"));
    }
    assert_eq!(manifest(&t, "llama3.2_latest:latest"), src, "the same content changes nothing");
    assert_eq!(manifest(&t, fixture::LLAMA), src);
}

#[test]
fn a_draft_folder_dates_from_its_last_change() {
    let t = setup(Options::default());
    t.fs.mkdir(ROOT_INO, "New Folder", 0o755).unwrap();
    let made = walk(&t, "New Folder").unwrap();
    let now = SystemTime::now();
    assert!(made.mtime <= now && now.duration_since(made.mtime).unwrap() < Duration::from_secs(60), "{made:?}");
    t.fs.opts.clock.advance(Duration::from_secs(100));
    super::write_new(&t, "New Folder", "notes.txt", b"x").unwrap();
    let changed = walk(&t, "New Folder").unwrap();
    assert!(changed.mtime >= made.mtime + Duration::from_secs(100));
    assert_eq!(changed.ctime, changed.mtime);
}

#[test]
fn emptying_the_trash_the_gvfs_way_prunes_and_leaves_no_ledger_entry() {
    let t = setup(Options::default());
    let before = blobs(&t);
    // A model with a blob of its own, trashed.
    t.fs.mkdir(ROOT_INO, "mine:v1", 0o755).unwrap();
    copy_folder(&t, "llama3.2:latest", "mine:v1");
    super::write_new(&t, "mine:v1", "system", b"only this model has this\n").unwrap();
    assert_eq!(blobs(&t).len(), before.len() + 1);
    t.fs.mkdir(ROOT_INO, ".Trash-0", 0o700).unwrap();
    let files = walk(&t, ".Trash-0/files").unwrap().ino;
    t.fs.rename(ROOT_INO, "mine:v1", files, "mine:v1", 0).unwrap();
    // gvfsd-trash: move the item into expunged/, then delete it there, depth first.
    let trash = walk(&t, ".Trash-0").unwrap().ino;
    t.fs.mkdir(trash, "expunged", 0o700).unwrap();
    let expunged = walk(&t, ".Trash-0/expunged").unwrap().ino;
    t.fs.rename(files, "mine:v1", expunged, "1234", 0).unwrap();
    let ledger = std::fs::read_to_string(t.fs.store.scratch_dir().join("trash/0.json")).unwrap();
    assert!(!ledger.contains("mine"), "the ledger lists only what is in files/: {ledger}");
    assert_eq!(blobs(&t).len(), before.len() + 1, "still there while the item exists");
    let item = walk(&t, ".Trash-0/expunged/1234").unwrap().ino;
    for n in names(&t, ".Trash-0/expunged/1234") {
        t.fs.unlink(item, &n).unwrap();
    }
    t.fs.rmdir(expunged, "1234").unwrap();
    assert_eq!(blobs(&t), before, "its own blob is pruned, shared ones stay");
    let report = crate::store::verify::verify(&t.fs.store, |_| {});
    assert!(report.is_clean() && report.orphans.is_empty(), "{:?}", report);
}

#[test]
fn verify_reports_orphans_and_prune_removes_only_them() {
    let t = setup(Options::default());
    let before = blobs(&t);
    let (d, _, _) = t.fs.store.ingest_bytes(b"nobody uses this blob\n").unwrap();
    let report = crate::store::verify::verify(&t.fs.store, |_| {});
    assert_eq!(report.orphans.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [d]);
    // A held blob (a running mount's work, or the trash) is no orphan.
    t.fs.store.hold(&d).unwrap();
    assert!(crate::store::verify::verify(&t.fs.store, |_| {}).orphans.is_empty());
    t.fs.store.release(&d);
    assert_eq!(crate::store::verify::prune_orphans(&t.fs.store, &report.orphans), [d]);
    assert_eq!(blobs(&t), before);
}

/// A model made in the mount (its generated config.json never listed) goes to the trash
/// and comes back whole: the config blob is kept in the trash like every other layer.
#[test]
fn a_model_made_here_survives_the_trash_with_its_unlisted_config() {
    let t = setup(Options::default());
    t.fs.mkdir(ROOT_INO, "made:v1", 0o755).unwrap();
    super::write_new(&t, "made:v1", "model.gguf", &other_gguf("qwen2", 0)).unwrap();
    let before = manifest(&t, "made:v1");
    assert_eq!(names(&t, "made:v1"), ["model.gguf"], "the generated config.json is not listed");
    t.fs.mkdir(ROOT_INO, ".Trash-0", 0o700).unwrap();
    let files = walk(&t, ".Trash-0/files").unwrap().ino;
    t.fs.rename(ROOT_INO, "made:v1", files, "made:v1", 0).unwrap();
    assert!(!super::on_disk(&t, "made:v1"));
    t.fs.rename(files, "made:v1", ROOT_INO, "made:v1", 0).unwrap();
    assert_eq!(manifest(&t, "made:v1"), before, "restored byte for byte, config included");
    let report = crate::store::verify::verify(&t.fs.store, |_| {});
    assert!(report.is_clean(), "{:?}", report.problems);
}
