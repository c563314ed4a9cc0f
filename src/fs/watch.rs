//! Freshness: notice what other processes (a running Ollama) change in `manifests/`.
//!
//! inotify watches every folder down to the model folders, so a change costs one `stat`
//! and one read of the manifest it touched, whatever the store's size, and an idle store
//! costs nothing. A full rescan (stat only) still runs every `SAFETY_RESCAN` in case an
//! event was lost; without inotify (no support, watch limit reached) it runs every second.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use super::Fs;
use crate::name::Name;

const SAFETY_RESCAN: Duration = Duration::from_secs(30);
const POLL_RESCAN: Duration = Duration::from_secs(1);

struct Watcher {
    inotify: Inotify,
    /// Watched folder → its path parts below `manifests/` (empty for `manifests/` itself).
    dirs: HashMap<WatchDescriptor, Vec<String>>,
    root_wd: Option<WatchDescriptor>,
    manifests: PathBuf,
}

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::CLOSE_WRITE
        | WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::ONLYDIR
}

impl Watcher {
    /// Watch a folder and everything below it down to the model folders; return the
    /// names of the manifests found, so the caller can pick them up.
    fn watch_tree(&mut self, parts: Vec<String>, found: &mut Vec<Name>) -> std::io::Result<()> {
        let dir = parts.iter().fold(self.manifests.clone(), |p, c| p.join(c));
        let wd = self.inotify.watches().add(&dir, mask())?;
        self.dirs.insert(wd, parts.clone());
        let Ok(rd) = std::fs::read_dir(&dir) else { return Ok(()) };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if parts.len() < 3 && is_dir {
                let mut sub = parts.clone();
                sub.push(name);
                self.watch_tree(sub, found)?;
            } else if parts.len() == 3
                && !is_dir
                && let Ok(n) = Name::from_parts(&parts[0], &parts[1], &parts[2], &name)
            {
                found.push(n);
            }
        }
        Ok(())
    }
}

/// Run until `running` is cleared. Meant for its own thread.
pub fn run(fs: Arc<Fs>, running: Arc<AtomicBool>) {
    let manifests = fs.store.manifests_dir().to_path_buf();
    let store_root = fs.store.root().to_path_buf();
    let mut watcher = match Inotify::init() {
        Ok(i) => Some(Watcher { inotify: i, dirs: HashMap::new(), root_wd: None, manifests: manifests.clone() }),
        Err(e) => {
            log::warn!("inotify unavailable ({e}); polling the store every second");
            None
        }
    };
    if let Some(w) = watcher.as_mut()
        && let Err(e) = start(w, &store_root)
    {
        log::warn!("cannot watch {} ({e}); polling the store every second", manifests.display());
        watcher = None;
    }
    // Whatever changed between the index load and the watches being in place was not
    // seen by either: one full rescan now closes that gap.
    fs.refresh();
    let mut last_full = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    while running.load(Ordering::Relaxed) {
        let interval = if watcher.is_some() { SAFETY_RESCAN } else { POLL_RESCAN };
        match watcher.as_mut() {
            Some(w) => {
                if wait_readable(w.inotify.as_raw_fd(), 300) {
                    let mut names = Vec::new();
                    let mut gone = Vec::new();
                    let mut full = false;
                    drain(w, &mut buf, &mut names, &mut gone, &mut full);
                    if full {
                        fs.refresh();
                    } else {
                        names.extend(gone.iter().flat_map(|p| fs.models_under(p)));
                        if !names.is_empty() {
                            fs.refresh_names(names);
                        }
                    }
                }
            }
            None => std::thread::sleep(Duration::from_millis(300)),
        }
        if last_full.elapsed() >= interval {
            fs.refresh();
            // Daemons killed since (another mount of this store) leave scratch folders.
            if !fs.opts.read_only {
                let _ = fs.store.clean_scratch();
            }
            last_full = Instant::now();
        }
    }
}

fn start(w: &mut Watcher, store_root: &Path) -> std::io::Result<()> {
    // The store root tells us when Ollama's prune removed and re-created `manifests/`.
    w.root_wd =
        Some(w.inotify.watches().add(store_root, WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::ONLYDIR)?);
    if w.manifests.is_dir() {
        let mut found = Vec::new();
        w.watch_tree(Vec::new(), &mut found)?;
    }
    Ok(())
}

fn wait_readable(fd: i32, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout_ms) > 0 }
}

/// Turn queued events into the manifests to look at again.
fn drain(
    w: &mut Watcher,
    buf: &mut [u8],
    names: &mut Vec<Name>,
    gone_prefixes: &mut Vec<Vec<String>>,
    full: &mut bool,
) {
    loop {
        let events: Vec<_> = match w.inotify.read_events(buf) {
            Ok(ev) => ev.map(|e| e.to_owned()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                log::warn!("inotify read failed: {e}");
                *full = true;
                return;
            }
        };
        if events.is_empty() {
            return;
        }
        let mut new_dirs: Vec<Vec<String>> = Vec::new();
        let mut gone_dirs: HashSet<WatchDescriptor> = HashSet::new();
        for e in events {
            if e.mask.contains(EventMask::Q_OVERFLOW) {
                *full = true;
                continue;
            }
            if Some(&e.wd) == w.root_wd.as_ref() {
                if e.name.as_deref().is_some_and(|n| n == "manifests") {
                    new_dirs.push(Vec::new());
                }
                continue;
            }
            if e.mask.contains(EventMask::IGNORED) {
                gone_dirs.insert(e.wd.clone());
                continue;
            }
            let Some(parts) = w.dirs.get(&e.wd).cloned() else { continue };
            let Some(name) = e.name.as_ref().map(|n| n.to_string_lossy().into_owned()) else {
                if e.mask.contains(EventMask::DELETE_SELF) {
                    gone_prefixes.push(parts.clone());
                }
                continue;
            };
            let is_dir = e.mask.contains(EventMask::ISDIR);
            if parts.len() < 3 {
                let mut sub = parts.clone();
                sub.push(name);
                if is_dir && (e.mask.contains(EventMask::CREATE) || e.mask.contains(EventMask::MOVED_TO)) {
                    new_dirs.push(sub);
                } else if is_dir && (e.mask.contains(EventMask::DELETE) || e.mask.contains(EventMask::MOVED_FROM)) {
                    gone_prefixes.push(sub); // every model below it is gone (or moved)
                }
                // ATTRIB on a folder (a chmod/chown) changes nothing we show.
            } else if let Ok(n) = Name::from_parts(&parts[0], &parts[1], &parts[2], &name) {
                names.push(n);
            }
        }
        for wd in gone_dirs {
            w.dirs.remove(&wd);
        }
        for parts in new_dirs {
            let mut found = Vec::new();
            if let Err(e) = w.watch_tree(parts, &mut found) {
                log::warn!("cannot watch a new folder ({e}); falling back to a rescan");
                *full = true;
            }
            names.extend(found);
        }
    }
}
