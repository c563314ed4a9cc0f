//! Share models through an OCI registry (the CNCF Distribution registry, Debian's
//! `docker-registry`), as Ollama does: `host/namespace/model:tag` is
//! `http(s)://host/v2/namespace/model/manifests/tag`; blobs by digest.
//!
//! Pull: every blob is streamed into `<store>/.ollamafs/pull/<hex>.partial` (never into
//! `blobs/`), hashed, and renamed into `blobs/` only when the digest matches; blobs already
//! present are not downloaded; an interrupted pull resumes with a Range request; the
//! manifest is written last, byte for byte, and only when the model is complete.
//! Push: `HEAD` each blob (present: skipped), then a cross-repository mount from another
//! repository of the same registry that has it, then an upload (`POST`, `PATCH`, `PUT
//! ?digest=`); the manifest last.
//! Auth: anonymous, HTTP Basic (`OLLAMAFS_REGISTRY_USER`/`_PASSWORD`, else
//! `~/.docker/config.json`), and the Bearer token flow a `401` announces.

mod client;
pub use client::Client;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use crate::name::Name;
use crate::store::manifest::MANIFEST_MEDIA_TYPE;
use crate::store::prefix_hash::PrefixHasher;
use crate::store::{Digest, Manifest, Store, StoreError};

/// Writes a pulled model's manifest (the store, or the mount's catalog).
pub type Publish<'a> = dyn FnMut(&Name, Vec<u8>) -> Result<(), StoreError> + 'a;

/// What a transfer reports as it goes (Ollama's status words).
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Status(String),
    /// A blob: digest, bytes done, total.
    Blob(Digest, u64, u64),
    /// A blob that needs no transfer (the store or the registry has it): digest, size.
    Exists(Digest, u64),
}

/// Bytes moved over the network by one pull or push (for the user, and for tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub downloaded: u64,
    pub uploaded: u64,
}

fn err(why: impl Into<String>) -> StoreError {
    StoreError::Invalid(why.into())
}

/// Where a blob being pulled waits until it is whole and verified (kept across restarts,
/// so an interrupted pull resumes).
fn partial_path(store: &Store, d: &Digest) -> PathBuf {
    store.scratch_dir().join(crate::store::PULL_DIR).join(format!("{}.partial", d.hex()))
}

/// `partial_path`, with its folder made so a download can open it.
fn partial_path_ready(store: &Store, d: &Digest) -> Result<PathBuf, StoreError> {
    let part = partial_path(store, d);
    if let Some(dir) = part.parent() {
        fs::create_dir_all(dir)?;
    }
    Ok(part)
}

/// `ollamafs pull`: the model `name` from its registry into the store.
/// `publish` writes the manifest (the store's `write_manifest`, or the mount's catalog so
/// a running mount shows the model at once).
pub fn pull(
    store: &Store,
    name: &Name,
    insecure: bool,
    progress: &mut dyn FnMut(Progress),
    publish: &mut Publish<'_>,
) -> Result<Moved, StoreError> {
    let mut c = Client::new(name, insecure);
    let mut moved = Moved::default();
    progress(Progress::Status("pulling manifest".into()));
    let url = c.url(&format!("manifests/{}", name.tag));
    let res = c.send("GET", &url, &[("Accept", MANIFEST_MEDIA_TYPE)], None).map_err(|e| match e {
        StoreError::Invalid(m) if m.contains(": 404 ") => err("pull model manifest: file does not exist"),
        e => e,
    })?;
    let mut bytes = Vec::new();
    res.into_reader().take(16 << 20).read_to_end(&mut bytes)?;
    let m = Manifest::parse_strict(&bytes).map_err(|e| err(format!("the registry's manifest: {e}")))?;
    // (digest, size, already here): what is here is neither downloaded nor counted
    // against the free space.
    let mut blobs = Vec::new();
    for l in std::iter::once(&m.config).chain(m.layers.iter()) {
        let d = l.digest().ok_or_else(|| err(format!("the registry's manifest names {:?}", l.digest)))?;
        let size = l.size.max(0) as u64;
        blobs.push((d, size, fs::metadata(store.blob_path(&d)).is_ok_and(|meta| meta.len() == size)));
    }
    check_space(store, name, blobs.iter().filter(|b| !b.2).map(|b| (b.0, b.1)))?;
    let mut added = Vec::new();
    let res = (|| -> Result<(), StoreError> {
        for &(d, size, here) in &blobs {
            if here {
                progress(Progress::Exists(d, size));
                continue;
            }
            moved.downloaded +=
                download(store, &mut c, &d, size, progress).map_err(|e| give_space_back(store, &d, e))?;
            added.push(d);
        }
        progress(Progress::Status("verifying sha256 digest".into()));
        progress(Progress::Status("writing manifest".into()));
        publish(name, bytes.clone())
    })();
    if let Err(e) = res {
        // A pull that fails leaves nothing: the blobs it added that no model uses go.
        store.prune(added, &store.digests_in_use());
        return Err(e);
    }
    progress(Progress::Status("success".into()));
    Ok(moved)
}

/// Refuse a pull the store's disk cannot hold before anything is downloaded: the blobs
/// `wanted`, less what their partial downloads already hold.
fn check_space(store: &Store, name: &Name, wanted: impl Iterator<Item = (Digest, u64)>) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let mut need = 0u64;
    for (d, size) in wanted {
        let held = fs::metadata(partial_path(store, &d)).map(|meta| meta.blocks() * 512).unwrap_or(0);
        need += size.saturating_sub(held);
    }
    let free = store.free_space()?;
    if need > free {
        return Err(err(format!(
            "not enough space to pull {}: {} more needed, {} free in {}",
            name.display_shortest(),
            crate::format::human_bytes(need as i64),
            crate::format::human_bytes(free as i64),
            store.root().display()
        )));
    }
    Ok(())
}

/// A download that ran out of space gives it back: its partial file goes (a retry starts
/// over), and the error says so.
fn give_space_back(store: &Store, d: &Digest, e: StoreError) -> StoreError {
    let full = matches!(&e, StoreError::Io(io) if io.raw_os_error() == Some(libc::ENOSPC));
    if !full {
        return e;
    }
    let part = partial_path(store, d);
    for p in [part.with_extension("parts.tmp"), part.with_extension("parts"), part] {
        let _ = fs::remove_file(p);
    }
    err(format!("no space left on the store's disk while pulling {d}; its partial download was removed"))
}

/// Blobs at least this large are fetched in parallel `Range` parts.
const PARTS_FROM: u64 = 64 << 20;
/// At most this many parts, each at least `PARTS_FROM / 2`.
const MAX_PARTS: u64 = 4;

/// One blob into `blobs/`. Large blobs come in parallel parts whose progress is kept in
/// `<hex>.parts` beside the partial file, so a restart resumes every part; a partial file
/// without that state (a single stream) is resumed as one part.
fn download(
    store: &Store,
    c: &mut Client,
    d: &Digest,
    size: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<u64, StoreError> {
    let part = partial_path(store, d);
    let state = part.with_extension("parts");
    let single_stream_partial = part.exists() && !state.exists();
    if size < PARTS_FROM || single_stream_partial {
        return download_stream(store, c, d, size, progress);
    }
    match download_parts(store, c, d, size, progress)? {
        Some(n) => Ok(n),
        // A server (or the storage it redirects to) that ignores Range: one stream.
        None => {
            log::debug!("{d}: byte ranges not served; downloading it as one stream");
            download_stream(store, c, d, size, progress)
        }
    }
}

/// `(start, end, done)` of each part, as saved in `<hex>.parts`.
type Parts = Vec<(u64, u64, u64)>;

/// None when the server answers a range with the whole blob (nothing is kept then).
fn download_parts(
    store: &Store,
    c: &mut Client,
    d: &Digest,
    size: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<u64>, StoreError> {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    let part = partial_path_ready(store, d)?;
    let state = part.with_extension("parts");
    let saved: Option<Parts> = fs::read(&state).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let parts: Parts = match saved {
        Some(p) if p.last().is_some_and(|l| l.1 == size) && fs::metadata(&part).is_ok_and(|m| m.len() == size) => p,
        _ => {
            let n = (size / (PARTS_FROM / 2)).clamp(1, MAX_PARTS);
            let step = size.div_ceil(n);
            let fresh: Parts = (0..n).map(|i| (i * step, ((i + 1) * step).min(size), 0)).collect();
            // The state first: a pre-sized partial file must never exist without it (it
            // would look like a whole single-stream download).
            fs::write(&state, serde_json::to_vec(&fresh).map_err(io::Error::other)?)?;
            let f = OpenOptions::new().create(true).write(true).truncate(true).open(&part)?;
            f.set_len(size)?;
            fresh
        }
    };
    let file = OpenOptions::new().write(true).open(&part)?;
    let done: Vec<AtomicU64> = parts.iter().map(|p| AtomicU64::new(p.2)).collect();
    let before: u64 = parts.iter().map(|p| p.2).sum();
    let save = std::sync::Mutex::new(());
    let write_state = |done: &[AtomicU64]| {
        let _g = crate::sync::lock(&save);
        let now: Parts = parts.iter().zip(done).map(|(p, d)| (p.0, p.1, d.load(Ordering::Acquire))).collect();
        let tmp = state.with_extension("parts.tmp");
        if fs::write(&tmp, serde_json::to_vec(&now).unwrap_or_default()).is_ok() {
            let _ = fs::rename(&tmp, &state);
        }
    };
    let url = c.url(&format!("blobs/{}", d.prefixed()));
    let no_ranges = std::sync::atomic::AtomicBool::new(false);
    // The hash follows the downloaded prefix (part 0, then part 1 once part 0 is whole, …),
    // reading it back from the page cache, so it overlaps the download.
    let frontier = |done: &[AtomicU64]| {
        parts
            .iter()
            .zip(done)
            .map(|(p, d)| p.0 + d.load(Ordering::Acquire))
            .zip(&parts)
            .find(|(r, p)| *r < p.1)
            .map_or(size, |(r, _)| r)
    };
    let hasher = PrefixHasher::start(Sha256::new(), 0, File::open(&part)?)?;
    hasher.advance(frontier(&done));
    let results: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .enumerate()
            .map(|(i, &(start, end, _))| {
                let (mut c, url, file, done, write_state, no_ranges, hasher, frontier) =
                    (c.clone(), url.clone(), &file, &done, &write_state, &no_ranges, &hasher, &frontier);
                scope.spawn(move || -> Result<(), StoreError> {
                    let mut at = start + done[i].load(Ordering::Acquire);
                    if at >= end {
                        return Ok(());
                    }
                    let range = format!("bytes={at}-{}", end - 1);
                    let res = c.send("GET", &url, &[("Range", range.as_str())], None)?;
                    if res.status() != 206 && !(at == 0 && end == size) {
                        no_ranges.store(true, Ordering::Release);
                        return Err(err("the registry does not serve byte ranges"));
                    }
                    let mut r = res.into_reader();
                    let mut buf = vec![0u8; 1 << 20];
                    let mut since_save = 0u64;
                    while at < end {
                        let want = ((end - at) as usize).min(buf.len());
                        let n = r.read(&mut buf[..want])?;
                        if n == 0 {
                            return Err(err(format!("the registry closed the connection at byte {at} of part {i}")));
                        }
                        file.write_all_at(&buf[..n], at)?;
                        at += n as u64;
                        since_save += n as u64;
                        done[i].store(at - start, Ordering::Release);
                        hasher.advance(frontier(done));
                        if since_save >= 8 << 20 {
                            // The data must be on disk before the state says it is.
                            file.sync_data()?;
                            write_state(done);
                            since_save = 0;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        // Progress from this thread while the parts download.
        while !handles.iter().all(|h| h.is_finished()) {
            let total: u64 = done.iter().map(|d| d.load(Ordering::Acquire)).sum();
            progress(Progress::Blob(*d, total, size));
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(err("a download thread panicked")))).collect()
    });
    if no_ranges.load(Ordering::Acquire) {
        drop(file);
        let _ = fs::remove_file(&state);
        let _ = fs::remove_file(&part);
        return Ok(None);
    }
    file.sync_data()?;
    write_state(&done);
    results.into_iter().collect::<Result<Vec<()>, StoreError>>()?;
    let got = hasher.finish()?;
    let _ = fs::remove_file(&state);
    adopt_verified(store, &part, d, got, size, progress)?;
    Ok(Some(size - before))
}

/// A downloaded file whose content hashed to `got` becomes blob `d`, or is deleted:
/// nothing reaches `blobs/` unverified.
fn adopt_verified(
    store: &Store,
    part: &std::path::Path,
    d: &Digest,
    got: Digest,
    size: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), StoreError> {
    let len = fs::metadata(part)?.len();
    if got != *d || len != size {
        let _ = fs::remove_file(part);
        return Err(StoreError::DigestMismatch { expected: d.prefixed(), got: got.prefixed() });
    }
    let f = File::open(part)?;
    store.adopt_blob(part, &f, d, len)?;
    progress(Progress::Blob(*d, size, size));
    Ok(())
}

/// One blob as a single stream (small blobs, and a partial left by a single stream).
fn download_stream(
    store: &Store,
    c: &mut Client,
    d: &Digest,
    size: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<u64, StoreError> {
    let part = partial_path_ready(store, d)?;
    let mut have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if have > size {
        fs::remove_file(&part)?;
        have = 0;
    }
    let url = c.url(&format!("blobs/{}", d.prefixed()));
    let range = format!("bytes={have}-");
    let headers: Vec<(&str, &str)> = if have > 0 && have < size { vec![("Range", range.as_str())] } else { vec![] };
    let mut got = 0u64;
    let digest = if have < size || size == 0 {
        let res = c.send("GET", &url, &headers, None)?;
        if have > 0 && res.status() != 206 {
            have = 0; // the registry sent the whole blob again
        }
        let mut f = OpenOptions::new().create(true).write(true).truncate(have == 0).append(have > 0).open(&part)?;
        // Hashed as it arrives, by a thread that follows the file (a resumed download's
        // first part included), overlapping the download.
        let hasher = PrefixHasher::start(Sha256::new(), 0, File::open(&part)?)?;
        hasher.advance(have);
        let mut r = res.into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut last = std::time::Instant::now();
        loop {
            let mut n = 0;
            // Fill the chunk (the network gives a few KiB per read).
            while n < buf.len() {
                match r.read(&mut buf[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n])?;
            got += n as u64;
            hasher.advance(have + got);
            if last.elapsed().as_millis() >= 200 {
                progress(Progress::Blob(*d, have + got, size));
                last = std::time::Instant::now();
            }
            if have + got > size {
                break;
            }
        }
        f.sync_all()?;
        hasher.finish()?
    } else {
        // Whole already (an earlier run stopped before adopting it): hash all of it.
        crate::store::hash_file(&part)?.0
    };
    adopt_verified(store, &part, d, digest, size, progress)?;
    Ok(got)
}

/// `ollamafs push`: the model `name` to its registry.
pub fn push(
    store: &Store,
    name: &Name,
    insecure: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Moved, StoreError> {
    let mut c = Client::new(name, insecure);
    let mut moved = Moved::default();
    progress(Progress::Status("retrieving manifest".into()));
    let (bytes, m) = store.read_manifest(name)?;
    // Other repositories of this registry we know of, for cross-repository mounts.
    let (found, _) = store.scan();
    let others: Vec<(String, Manifest)> = found
        .into_iter()
        .filter(|f| f.name.host == name.host && (f.name.namespace != name.namespace || f.name.model != name.model))
        .filter_map(|f| {
            store.read_manifest(&f.name).ok().map(|(_, m)| (format!("{}/{}", f.name.namespace, f.name.model), m))
        })
        .collect();
    for l in std::iter::once(&m.config).chain(m.layers.iter()) {
        let d = l.digest().ok_or_else(|| err(format!("invalid digest {:?}", l.digest)))?;
        let size = l.size.max(0) as u64;
        progress(Progress::Status(format!("pushing {}", &d.hex()[..12])));
        let head = c.url(&format!("blobs/{}", d.prefixed()));
        if c.send("HEAD", &head, &[], None).is_ok() {
            progress(Progress::Exists(d, size));
            continue;
        }
        // A registry that has the blob in another repository links it: nothing to send.
        let mut location = None;
        for (repo, om) in &others {
            if !om.digests().any(|x| x == d) {
                continue;
            }
            let url = c.url(&format!("blobs/uploads/?mount={}&from={repo}", d.prefixed()));
            let r = c.send("POST", &url, &[("Content-Length", "0")], None)?;
            if r.status() == 201 {
                break;
            }
            location = r.header("Location").map(String::from);
        }
        if c.send("HEAD", &head, &[], None).is_ok() {
            progress(Progress::Exists(d, size));
            continue;
        }
        let location = match location {
            Some(l) => l,
            None => {
                let r = c.send("POST", &c.url("blobs/uploads/"), &[("Content-Length", "0")], None)?;
                r.header("Location").map(String::from).ok_or_else(|| err("the registry gave no upload location"))?
            }
        };
        let path = store.blob_path(&d);
        let len = size.to_string();
        let patch = c.url(&location);
        let r = c.send(
            "PATCH",
            &patch,
            &[("Content-Type", "application/octet-stream"), ("Content-Length", &len)],
            Some(&mut || Ok(Box::new(File::open(&path)?) as Box<dyn Read + Send>)),
        )?;
        let next = r.header("Location").map(String::from).unwrap_or(location);
        let sep = if next.contains('?') { '&' } else { '?' };
        let put = c.url(&format!("{next}{sep}digest={}", d.prefixed()));
        c.send("PUT", &put, &[("Content-Length", "0")], None)?;
        moved.uploaded += size;
        progress(Progress::Blob(d, size, size));
    }
    progress(Progress::Status("pushing manifest".into()));
    let url = c.url(&format!("manifests/{}", name.tag));
    let len = bytes.len().to_string();
    let body = bytes.clone();
    c.send(
        "PUT",
        &url,
        &[("Content-Type", MANIFEST_MEDIA_TYPE), ("Content-Length", &len)],
        Some(&mut || Ok(Box::new(io::Cursor::new(body.clone())) as Box<dyn Read + Send>)),
    )?;
    progress(Progress::Status("success".into()));
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::client::challenge_params;
    use super::*;

    #[test]
    fn running_out_of_space_removes_the_partial_download() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = Digest([7; 32]);
        let part = partial_path_ready(&store, &d).unwrap();
        for p in [part.clone(), part.with_extension("parts"), part.with_extension("parts.tmp")] {
            fs::write(p, b"x").unwrap();
        }
        let other = give_space_back(&store, &d, StoreError::Io(io::Error::from_raw_os_error(libc::EIO)));
        assert!(matches!(other, StoreError::Io(_)) && part.exists(), "other errors keep it for a resume");
        let full = give_space_back(&store, &d, StoreError::Io(io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(full.to_string().contains("no space left"), "{full}");
        assert_eq!(fs::read_dir(part.parent().unwrap()).unwrap().count(), 0, "partial and its state removed");
    }

    #[test]
    fn bearer_challenges_parse() {
        let p = challenge_params(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/m:pull,push""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2], ("scope".into(), "repository:team/m:pull,push".into()));
    }

    #[test]
    fn names_map_to_registry_urls() {
        let n = Name::parse("localhost:5000/team/llama3.2:v1").unwrap();
        let c = Client::new(&n, true);
        assert_eq!(c.url("manifests/v1"), "http://localhost:5000/v2/team/llama3.2/manifests/v1");
        assert_eq!(
            c.url("/v2/team/llama3.2/blobs/uploads/x"),
            "http://localhost:5000/v2/team/llama3.2/blobs/uploads/x"
        );
        assert_eq!(Client::new(&n, false).url("manifests/v1"), "https://localhost:5000/v2/team/llama3.2/manifests/v1");
    }
}
