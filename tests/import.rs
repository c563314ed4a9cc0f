//! `ollamafs import` and `create` with `FROM /path/x.gguf`: GGUF files on the same disk come
//! into the store without their data being copied where the disk allows (a reflink on
//! XFS, tested on a loop-mounted XFS image; a hard link when asked), else as a copy, and the
//! command says which. Assertions on the store: blob inodes, bytes on disk, `verify`.

mod common;
use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn blob_path(store: &Path, file: &Path) -> PathBuf {
    let (d, _) = ollamafs::store::hash_file(file).unwrap();
    store.join("blobs").join(d.blob_file_name())
}

#[test]
fn import_copies_or_links_and_says_which() {
    let (dir, store, _) = fixture_store(4 << 20);
    let size = 16u64 << 20;
    let a = dir.path().join("Mistral-Nemo-Q4_K_M.gguf");
    noisy_gguf(&a, size);
    // This disk (ext4) has no reflinks: a copy, hashed as it streams.
    let o = ollamafs(&store, &["import", &a.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        format!("imported {} as mistral-nemo:q4_k_m: copy, {size} bytes written", a.display())
    );
    let blob = blob_path(&store, &a);
    assert_ne!(fs::metadata(&blob).unwrap().ino(), fs::metadata(&a).unwrap().ino());
    assert_eq!(fs::read(&blob).unwrap(), fs::read(&a).unwrap());
    // Again: nothing to bring in.
    let o = ollamafs(&store, &["import", "--name", "again:v1", &a.to_string_lossy()]);
    assert!(stdout(&o).contains("as again:v1: already in the store, 0 bytes written"), "{}", stdout(&o));

    // --link: the blob is the file itself.
    let b = dir.path().join("other.gguf");
    noisy_gguf(&b, size + 4096);
    let o = ollamafs(&store, &["import", "--link", &b.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("as other:latest: hard link (no data copied), 0 bytes written"), "{}", stdout(&o));
    let blob_b = blob_path(&store, &b);
    assert_eq!(fs::metadata(&blob_b).unwrap().ino(), fs::metadata(&b).unwrap().ino(), "one inode");
    assert_verifies(&store);
    // The risk of a link, caught: another tool changes the file in place.
    let f = fs::OpenOptions::new().write(true).open(&b).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"changed", size).unwrap();
    drop(f);
    let o = ollamafs(&store, &["verify"]);
    assert!(!o.status.success(), "verify must notice the changed blob: {}", stdout(&o));

    // Bad input changes nothing: not a GGUF, a missing file, --name for two files.
    let before = manifest_files(&store);
    let blobs_before = blobs(&store);
    let text = dir.path().join("notes.gguf");
    fs::write(&text, "not a model").unwrap();
    let o = ollamafs(&store, &["import", &text.to_string_lossy(), "/nonexistent/x.gguf"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a GGUF file"), "{}", stderr(&o));
    assert!(stderr(&o).contains("No such file"), "{}", stderr(&o));
    let o = ollamafs(&store, &["import", "--name", "x:y", &a.to_string_lossy(), &b.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(2));
    let modelfile = dir.path().join("Modelfile");
    fs::write(&modelfile, format!("FROM {}\n", text.display())).unwrap();
    let o = ollamafs(&store, &["create", "notes:v1", "-f", &modelfile.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("not a GGUF file"), "{}", stderr(&o));
    assert_eq!(manifest_files(&store), before);
    assert_eq!(blobs(&store), blobs_before, "no blob left behind");
}

/// A loop-mounted XFS image (reflinks), removed when dropped.
struct Xfs {
    mp: PathBuf,
    _dir: tempfile::TempDir,
}

impl Xfs {
    fn make() -> Option<Xfs> {
        let have = sh("command -v mkfs.xfs").status.success();
        if !have || unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var("CI").is_err(), "CI=true but no mkfs.xfs or root: the reflink test must run");
            skip("REFLINK TEST: needs root and mkfs.xfs (apt-get install xfsprogs)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("xfs.img");
        let mp = dir.path().join("mnt");
        fs::create_dir(&mp).unwrap();
        sh_ok(&format!(
            "truncate -s 512M {0} && mkfs.xfs -q -m reflink=1 {0} && mount -o loop {0} {1}",
            q(&img),
            q(&mp)
        ));
        Some(Xfs { mp, _dir: dir })
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mp).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let out = sh_ok(&format!("df -B1 --output=avail {} | tail -1", q(dir)));
    out.trim().parse().unwrap()
}

/// On a disk with reflinks the blob shares the file's data: no bytes written, and a change
/// to the file afterwards never reaches the blob (copy on write).
#[test]
fn on_xfs_an_import_is_a_reflink() {
    let Some(xfs) = Xfs::make() else { return };
    let store = xfs.mp.join("models");
    ollamafs::fixture::build(&store, 4 << 20).unwrap();
    let file = xfs.mp.join("big-Q8_0.gguf");
    let size = 96u64 << 20;
    noisy_gguf(&file, size);
    sh_ok("sync");
    let free = free_bytes(&xfs.mp);
    let o = ollamafs(&store, &["import", &file.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("as big:q8_0: reflink (copy-on-write, no data copied), 0 bytes written"),
        "{}",
        stdout(&o)
    );
    sh_ok("sync");
    let used = free.saturating_sub(free_bytes(&xfs.mp));
    assert!(used < size / 8, "a reflink takes no room for the data: {used} bytes used for {size}");
    let blob = blob_path(&store, &file);
    assert_ne!(fs::metadata(&blob).unwrap().ino(), fs::metadata(&file).unwrap().ino(), "its own inode");
    // Changing the file leaves the blob as it was.
    let f = fs::OpenOptions::new().write(true).open(&file).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"changed", 4096).unwrap();
    drop(f);
    assert_verifies(&store);
    // create with FROM a file on the same disk goes the same way.
    let copy = xfs.mp.join("second.gguf");
    noisy_gguf(&copy, (32 << 20) + 512);
    let modelfile = xfs.mp.join("Modelfile");
    fs::write(&modelfile, format!("FROM {}\nPARAMETER temperature 0\n", copy.display())).unwrap();
    let o = ollamafs(&store, &["create", "second:v1", "-f", &modelfile.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("reflink (copy-on-write, no data copied), 0 bytes written"), "{}", stdout(&o));
    assert_verifies(&store);
}
