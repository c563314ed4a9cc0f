//! App views in the core, without a kernel: lookup = listing, the blob's inode, read-only
//! where they are, a download published at close.

use super::*;
use crate::views::ViewKind;

fn with_views() -> T {
    setup(Options { views: vec![ViewKind::LmStudio, ViewKind::Flat], ..Default::default() })
}

/// Every name a view folder lists looks up to the inode it was listed with, recursively.
fn assert_lookup_is_listing(t: &T, dir: u64) -> usize {
    let mut files = 0;
    for e in t.fs.readdir(dir).unwrap().into_iter().filter(|e| e.name != "." && e.name != "..") {
        let a = t.fs.lookup(dir, &e.name).unwrap();
        assert_eq!(a.ino, e.ino, "{} listed and looked up as different inodes", e.name);
        match a.kind {
            FileKind::Dir => files += assert_lookup_is_listing(t, a.ino),
            _ => files += 1,
        }
    }
    files
}

#[test]
fn views_list_what_lookup_finds_and_their_files_are_the_blobs() {
    let t = with_views();
    assert!(names(&t, "").contains(&".lmstudio".to_string()) && names(&t, "").contains(&".gguf".to_string()));
    let lm = walk(&t, ".lmstudio").unwrap().ino;
    assert_eq!(assert_lookup_is_listing(&t, lm), 6);
    assert_eq!(assert_lookup_is_listing(&t, walk(&t, ".gguf").unwrap().ino), 6);
    let in_view = walk(&t, ".lmstudio/ollama/llama3.2-latest/llama3.2-latest.gguf").unwrap();
    assert_eq!(in_view.ino, walk(&t, "llama3.2:latest/model.gguf").unwrap().ino);
    assert_eq!(in_view.perm, 0o444);
    assert_eq!(walk(&t, ".lmstudio/ollama/none-latest").unwrap_err().errno, libc::ENOENT);
    // The flat view takes nothing.
    let flat = walk(&t, ".gguf").unwrap().ino;
    assert_eq!(t.fs.create(flat, "x.gguf", 0o644, libc::O_WRONLY).unwrap_err().errno, libc::EROFS);
    assert_eq!(t.fs.mkdir(flat, "x", 0o755).unwrap_err().errno, libc::EROFS);
    assert_eq!(t.fs.unlink(flat, "llama3.2-latest.gguf").unwrap_err().errno, libc::EROFS);
    // A model's projector alone cannot be removed; its weights mean the model.
    let qwen = walk(&t, ".lmstudio/ollama/qwen2.5-0.5b").unwrap().ino;
    assert_eq!(t.fs.unlink(qwen, "mmproj-qwen2.5-0.5b.gguf").unwrap_err().errno, libc::EPERM);
    t.fs.unlink(qwen, "qwen2.5-0.5b.gguf").unwrap();
    assert!(!t.fs.store.manifest_path(&Name::parse(fixture::QWEN).unwrap()).exists());
    assert_eq!(walk(&t, ".lmstudio/ollama/qwen2.5-0.5b").unwrap_err().errno, libc::ENOENT);
}

#[test]
fn a_whole_gguf_closed_in_the_lmstudio_view_is_published_and_a_cut_one_is_not() {
    let t = with_views();
    let lm = walk(&t, ".lmstudio").unwrap().ino;
    let org = t.fs.mkdir(lm, "someorg", 0o755).unwrap();
    let repo = t.fs.mkdir(org.ino, "Tiny-GGUF", 0o755).unwrap();
    assert_eq!(names(&t, ".lmstudio/someorg"), ["Tiny-GGUF"]);
    let header = fixture::gguf_header("llama", 7, &[("t", vec![64, 64])], None);
    let whole = {
        let mut g = header.clone();
        g.resize(fixture::data_end(&header) as usize, 1);
        g
    };
    let write = |name: &str, bytes: &[u8]| {
        let (_, o) = t.fs.create(repo.ino, name, 0o644, libc::O_WRONLY | libc::O_CREAT).unwrap();
        t.fs.write(o.fh, 0, bytes).unwrap();
        t.fs.flush(o.fh).unwrap();
        t.fs.release(o.fh).unwrap();
    };
    write("Tiny-Q4_0.gguf", &whole[..whole.len() - 1]);
    let tag = |t: &str| Name::parse(&format!("hf.co/someorg/Tiny-GGUF:{t}")).unwrap();
    assert!(!t.fs.store.manifest_path(&tag("Q4_0")).exists(), "a cut GGUF is not published");
    write("Tiny.gguf", &whole);
    // No quantization in its name: the GGUF's file type (7 = Q8_0) is the tag.
    assert!(t.fs.store.manifest_path(&tag("Q8_0")).exists());
    let shown = walk(&t, ".lmstudio/someorg/Tiny-GGUF/Tiny.gguf").unwrap();
    assert_eq!(shown.ino, walk(&t, "hf.co/someorg/Tiny-GGUF:Q8_0/model.gguf").unwrap().ino);
    let mut listed = names(&t, ".lmstudio/someorg/Tiny-GGUF");
    listed.sort();
    assert_eq!(listed, ["Tiny-Q4_0.gguf", "Tiny.gguf"]);
    assert!(crate::store::verify::verify(&t.fs.store, |_| {}).problems.is_empty());
}

#[test]
fn a_download_that_cannot_be_published_keeps_its_data_in_the_view() {
    let t = with_views();
    // The store cannot take the model: where its manifest folder goes is a file.
    let manifests = t.fs.store.manifest_path(&Name::parse("hf.co/blocked/X-GGUF:Q8_0").unwrap());
    let host_dir = manifests.ancestors().nth(3).unwrap().to_path_buf();
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("blocked"), b"not a folder").unwrap();
    let lm = walk(&t, ".lmstudio").unwrap().ino;
    let org = t.fs.mkdir(lm, "blocked", 0o755).unwrap();
    let repo = t.fs.mkdir(org.ino, "X-GGUF", 0o755).unwrap();
    let header = fixture::gguf_header("llama", 7, &[("t", vec![64, 64])], None);
    let mut whole = header.clone();
    whole.resize(fixture::data_end(&header) as usize, 3);
    let blobs_before = blobs(&t);
    let (_, o) = t.fs.create(repo.ino, "X-Q8_0.gguf", 0o644, libc::O_WRONLY | libc::O_CREAT).unwrap();
    t.fs.write(o.fh, 0, &whole).unwrap();
    t.fs.flush(o.fh).unwrap();
    t.fs.release(o.fh).unwrap();
    assert!(!manifests.exists());
    // Still there, every byte, and nothing left behind in blobs/.
    let a = walk(&t, ".lmstudio/blocked/X-GGUF/X-Q8_0.gguf").unwrap();
    let r = t.fs.open(a.ino, libc::O_RDONLY).unwrap();
    assert_eq!(t.fs.read(r.fh, 0, whole.len() as u32 + 10).unwrap(), whole);
    t.fs.release(r.fh).unwrap();
    assert_eq!(blobs(&t), blobs_before, "the download's blob went back");
}
