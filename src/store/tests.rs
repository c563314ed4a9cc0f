use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::index::Index;
use super::*;
use crate::fixture;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn blob_names(root: &Path) -> BTreeSet<String> {
    fs::read_dir(root.join("blobs")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

fn small_fixture() -> (tempfile::TempDir, Store, fixture::Info) {
    let dir = tmp();
    let info = fixture::build(dir.path(), 8 << 20).unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.prepare_for_writes().unwrap();
    (dir, store, info)
}

#[test]
fn ingest_stores_content_once_and_atomically() {
    let dir = tmp();
    let s = Store::open(dir.path()).unwrap();
    s.prepare_for_writes().unwrap();
    let (d, len, new) = s.ingest_bytes(b"hello").unwrap();
    assert!(new);
    assert_eq!(len, 5);
    assert_eq!(d.hex(), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    assert_eq!(fs::read(s.blob_path(&d)).unwrap(), b"hello");
    let (d2, _, new2) = s.ingest_bytes(b"hello").unwrap();
    assert_eq!(d, d2);
    assert!(!new2, "same content is not stored twice");
    // Nothing temporary left anywhere.
    assert_eq!(blob_names(dir.path()).len(), 1);
    assert_eq!(fs::read_dir(s.process_scratch()).unwrap().count(), 0);
    let mode = fs::metadata(s.blob_path(&d)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

#[test]
fn damaged_blob_of_wrong_length_is_replaced() {
    let dir = tmp();
    let s = Store::open(dir.path()).unwrap();
    s.prepare_for_writes().unwrap();
    let d = Digest::of_bytes(b"payload");
    fs::write(s.blob_path(&d), b"pay").unwrap();
    s.ingest_bytes(b"payload").unwrap();
    assert_eq!(fs::read(s.blob_path(&d)).unwrap(), b"payload");
}

#[test]
fn ingest_failure_leaves_nothing() {
    struct Failing(usize);
    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk on fire"));
            }
            self.0 -= 1;
            buf[..4].copy_from_slice(b"data");
            Ok(4)
        }
    }
    let dir = tmp();
    let s = Store::open(dir.path()).unwrap();
    s.prepare_for_writes().unwrap();
    assert!(s.ingest(Failing(3)).is_err());
    assert!(blob_names(dir.path()).is_empty());
    assert_eq!(fs::read_dir(s.process_scratch()).unwrap().count(), 0);
}

#[test]
fn copy_is_a_byte_copy_and_overwrites() {
    let (dir, s, _) = small_fixture();
    let before = blob_names(dir.path());
    let (src, dst) = s.copy("llama3.2", "myuser/llama3.2:copy").unwrap();
    assert_eq!(src.display_shortest(), "llama3.2:latest");
    assert_eq!(dst.to_string(), "registry.ollama.ai/myuser/llama3.2:copy");
    let a = fs::read(s.manifest_path(&src)).unwrap();
    let b = fs::read(s.manifest_path(&dst)).unwrap();
    assert_eq!(a, b);
    assert_eq!(blob_names(dir.path()), before, "no blob is created by a copy");
    // Overwrite an existing destination without warning.
    s.copy(fixture::QWEN, "myuser/llama3.2:copy").unwrap();
    let q = fs::read(s.manifest_path(&Name::parse(fixture::QWEN).unwrap())).unwrap();
    assert_eq!(fs::read(s.manifest_path(&dst)).unwrap(), q);
    // Same source and destination: nothing changes.
    s.copy("llama3.2", "llama3.2:latest").unwrap();
    assert_eq!(fs::read(s.manifest_path(&src)).unwrap(), a);
    // No temp file anywhere in manifests at depth 4.
    let (found, problems) = s.scan();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(found.len(), 7);
}

#[test]
fn copy_errors_use_ollamas_words_and_change_nothing() {
    let (dir, s, _) = small_fixture();
    let before = blob_names(dir.path());
    let (found_before, _) = s.scan();
    let e = s.copy("bad name", "x").unwrap_err();
    assert_eq!(e.to_string(), "source \"bad name\" is invalid");
    assert_eq!(crate::cli::store_exit_code(&e), 2);
    let e = s.copy("llama3.2", "x:").unwrap_err();
    assert_eq!(e.to_string(), "destination \"x:\" is invalid");
    let e = s.copy("nope", "x").unwrap_err();
    assert_eq!(e.to_string(), "model 'nope' not found");
    assert_eq!(crate::cli::store_exit_code(&e), 1);
    assert!(matches!(e, StoreError::NotFound(_)), "the mount answers it with ENOENT");
    assert_eq!(blob_names(dir.path()), before);
    assert_eq!(s.scan().0.len(), found_before.len());
}

#[test]
fn case_variants_reuse_the_existing_spelling() {
    let (_dir, s, _) = small_fixture();
    let (_, dst) = s.copy("LLAMA3.2", "MyUser/New:tag").unwrap();
    assert_eq!(dst.namespace, "myuser", "namespace folder is reused, not twinned");
    assert_eq!(dst.model, "New");
    let (_, dst2) = s.copy("llama3.2", "myuser/new:TAG").unwrap();
    assert_eq!(dst2, dst, "whole-name case variant overwrites the existing model");
}

#[test]
fn delete_prunes_only_unshared_blobs() {
    let (dir, s, info) = small_fixture();
    let before = blob_names(dir.path());
    // The custom model shares weights, template, licenses with llama3.2; only its system
    // prompt is its own.
    let (_, pruned) = s.delete(fixture::CUSTOM, false).unwrap();
    assert_eq!(pruned, vec![info.system_custom]);
    let after = blob_names(dir.path());
    assert_eq!(before.difference(&after).cloned().collect::<Vec<_>>(), vec![info.system_custom.blob_file_name()]);
    assert!(s.blob_path(&info.big_model).exists());
    // The now-empty namespace folder is gone, as Ollama's PruneDirectory does.
    assert!(!dir.path().join("manifests/registry.ollama.ai/myuser").exists());
    // Deleting the last user removes the weights.
    s.delete("llama3.2", false).unwrap();
    assert!(!s.blob_path(&info.big_model).exists());
    assert!(s.blob_path(&info.template).exists(), "the hf model still uses the template");
    assert_eq!(s.delete("llama3.2", false).unwrap_err().to_string(), "model 'llama3.2' not found");
}

#[test]
fn delete_no_prune_keeps_blobs() {
    let (dir, s, _) = small_fixture();
    let before = blob_names(dir.path());
    s.delete(fixture::CUSTOM, true).unwrap();
    assert_eq!(blob_names(dir.path()), before);
}

#[test]
fn corrupt_manifests_never_stop_other_models() {
    let (dir, s, info) = small_fixture();
    let bad = dir.path().join("manifests/registry.ollama.ai/library/broken/latest");
    fs::create_dir_all(bad.parent().unwrap()).unwrap();
    fs::write(&bad, b"{\"layers\":[").unwrap();
    fs::write(dir.path().join("manifests/registry.ollama.ai/library/llama3.2/.DS_Store"), b"x").unwrap();
    let idx = Index::load(&s);
    assert_eq!(idx.len(), 6);
    assert_eq!(idx.corrupt().count(), 1);
    s.copy("llama3.2", "again").unwrap();
    // A corrupt manifest's blobs are unknown: deleting another model keeps the shared
    // ones that readable manifests use and prunes by the readable set only.
    s.delete("again", false).unwrap();
    assert!(s.blob_path(&info.big_model).exists());
    // Deleting the corrupt one removes the file and prunes nothing.
    let before = blob_names(dir.path());
    s.delete("broken", false).unwrap();
    assert_eq!(blob_names(dir.path()), before);
    let report = verify::verify(&s, |_| {});
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems); // the .DS_Store path
}

#[test]
fn index_counts_links_and_follows_changes() {
    let (_dir, s, info) = small_fixture();
    let mut idx = Index::load(&s);
    assert_eq!(idx.len(), 6);
    assert_eq!(idx.refs(&info.big_model).weights, 2);
    assert_eq!(idx.refs(&info.template).weights, 0, "text layers are not shared inodes");
    assert_eq!(idx.refs(&info.template).any, 3);
    let ns: Vec<&String> = idx.namespaces_of("registry.ollama.ai").collect();
    assert_eq!(ns, ["library", "mlx-community", "myuser"]);
    assert!(idx.has_host("localhost:5000"));
    // Another process copies and deletes.
    s.copy("llama3.2", "x:1").unwrap();
    s.delete(fixture::CUSTOM, false).unwrap();
    let ch = idx.refresh(&s);
    assert_eq!(ch.added_or_changed.len(), 1);
    assert_eq!(ch.removed.len(), 1);
    assert_eq!(idx.refs(&info.big_model).weights, 2);
    // An in-place rewrite with different bytes is noticed (Ollama writes in place).
    let p = s.manifest_path(&Name::parse("x:1").unwrap());
    let q = fs::read(s.manifest_path(&Name::parse(fixture::QWEN).unwrap())).unwrap();
    fs::write(&p, &q).unwrap();
    let ch = idx.refresh(&s);
    assert_eq!(ch.added_or_changed.len(), 1);
    assert_eq!(idx.refs(&info.big_model).weights, 1);
    assert!(idx.refresh(&s).is_empty(), "no change, no work");
}

#[test]
fn verify_finds_damage() {
    let (dir, s, info) = small_fixture();
    assert!(verify::verify(&s, |_| {}).is_clean());
    // Flip a byte of a blob and drop another.
    let p = s.blob_path(&info.template);
    let mut b = fs::read(&p).unwrap();
    b[0] ^= 1;
    fs::write(&p, b).unwrap();
    fs::remove_file(s.blob_path(&info.system_custom)).unwrap();
    fs::write(dir.path().join("blobs/sha256-abc-partial"), b"x").unwrap();
    let r = verify::verify(&s, |_| {});
    assert!(!r.is_clean());
    assert!(r.problems.iter().any(|p| p.contains("hashes to")), "{:?}", r.problems);
    assert!(r.problems.iter().any(|p| p.contains("is missing")), "{:?}", r.problems);
    assert_eq!(r.warnings.len(), 1);
}

#[test]
fn manifests_are_written_atomically_with_ollama_modes() {
    let (dir, s, _) = small_fixture();
    let n = Name::parse("fresh/model:one").unwrap();
    // An incomplete model is refused and nothing is written.
    let err = s.write_manifest(&n, b"{}\n").unwrap_err();
    assert!(err.to_string().contains("is incomplete"), "{err}");
    assert!(!s.manifest_path(&n).exists());
    let bytes = s.read_manifest_bytes(&Name::parse(crate::fixture::LLAMA).unwrap()).unwrap();
    s.write_manifest(&n, &bytes).unwrap();
    let p = s.manifest_path(&n);
    assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(fs::metadata(p.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o755);
    // Only the manifest itself at depth 4, the temp file went to scratch and is gone.
    let entries: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(fs::read_dir(s.process_scratch()).unwrap().count(), 0);
    let _ = dir;
}

#[test]
fn scratch_leftovers_of_dead_processes_are_removed() {
    let (dir, s, _) = small_fixture();
    let dead = dir.path().join(".ollamafs/999999999");
    fs::create_dir_all(&dead).unwrap();
    fs::write(dead.join("tmp-0"), b"half a blob").unwrap();
    s.prepare_for_writes().unwrap();
    assert!(!dead.exists());
}

#[test]
fn missing_store_gives_a_clear_error() {
    let dir = tmp();
    let e = Store::open(dir.path().join("missing")).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    assert_eq!(crate::cli::store_exit_code(&e), 1);
}

#[test]
fn unwritable_manifests_folder_fails_cleanly() {
    // A file where a manifest folder must go: the write fails and leaves nothing behind,
    // whatever the user's privileges.
    let (dir, s, _) = small_fixture();
    fs::write(dir.path().join("manifests/registry.ollama.ai/blocked"), b"not a folder").unwrap();
    let before = blob_names(dir.path());
    assert!(s.copy("llama3.2", "blocked/x:y").is_err());
    assert_eq!(blob_names(dir.path()), before);
    assert_eq!(fs::read_dir(s.process_scratch()).unwrap().count(), 0, "temp manifest removed");
}

#[test]
fn cleaning_scratch_keeps_live_folders_and_removes_dead_ones() {
    let (_dir, s, _) = small_fixture();
    let (_f, mine) = s.temp_file().unwrap();
    // A folder of a process that is gone (pid numbers beyond pid_max never run).
    let dead = s.scratch_dir().join("4194305");
    fs::create_dir_all(&dead).unwrap();
    fs::write(dead.join("tmp-0"), b"x").unwrap();
    s.clean_scratch().unwrap();
    assert!(mine.exists(), "the periodic clean must not remove this process's own temp files");
    assert!(!dead.exists());
}
