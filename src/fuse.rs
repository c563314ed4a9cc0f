//! The thin `fuser` adapter: translate requests to `crate::fs`, errors to errno, and run
//! the mount (background or foreground). No filesystem meaning lives here.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use clap::Args;
use fuser::{
    AccessFlags, BackingId, BsdFileFlags, Config, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionACL, TimeOrNow, WriteFlags,
};

use crate::cli::{StoreArg, store_dir};
use crate::fs::{Attr, FileKind, Fs, FsError, Opened, Options, SetAttr, TTL};
use crate::store::{Digest, Store, StoreError};

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Stay attached; unmount on SIGINT/SIGTERM
    #[arg(short, long)]
    pub foreground: bool,
    /// Refuse every change with EROFS
    #[arg(long)]
    pub read_only: bool,
    /// Let other users (e.g. the `ollama` service user) use the mount
    #[arg(long)]
    pub allow_other: bool,
    /// Keep blobs that no model uses any more
    #[arg(long)]
    pub no_prune: bool,
    /// Serve reads through the daemon even where FUSE passthrough is available
    #[arg(long)]
    pub no_passthrough: bool,
    /// fstab-style options: ro, allow_other, store=DIR, no_prune, no_passthrough, log=FILE, ...
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
    /// More log output (repeat for debug)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors in the log
    #[arg(short, long)]
    pub quiet: bool,
    /// Serve read-only extended attributes (user.ollama.digest, …); costs `ls -l` speed
    #[arg(long)]
    pub xattr: bool,
    /// Also serve Ollama's model-management API on this address (as `ollamafs serve`),
    /// sharing the mount's index
    #[arg(long, value_name = "ADDR")]
    pub api: Option<String>,
    /// Write the log to this file (a background mount logs nowhere otherwise)
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    pub mountpoint: PathBuf,
}

/// Fold `-o` options into the flags, as `mount -t fuse.ollamafs` and fstab pass them.
fn apply_options(a: &mut MountArgs) -> Result<(), StoreError> {
    for o in a.options.clone() {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        match (k, v) {
            ("ro", None) | ("read_only", None) => a.read_only = true,
            ("rw", None) => a.read_only = false,
            ("allow_other", None) => a.allow_other = true,
            ("no_prune", None) => a.no_prune = true,
            ("no_passthrough", None) => a.no_passthrough = true,
            ("store", Some(dir)) => a.store.store = Some(PathBuf::from(dir)),
            ("log", Some(f)) => a.log_file = Some(PathBuf::from(f)),
            ("api", Some(addr)) => a.api = Some(addr.to_string()),
            ("xattr", None) => a.xattr = true,
            ("foreground", None) => a.foreground = true,
            // Options mount(8) and fstab add that mean nothing here.
            (
                "defaults" | "auto" | "noauto" | "user" | "nouser" | "nofail" | "_netdev" | "dev" | "nodev" | "suid"
                | "nosuid" | "exec" | "noexec" | "atime" | "noatime" | "relatime",
                _,
            ) => {}
            (k, _) if k.starts_with("x-") => {}
            _ => return Err(StoreError::Invalid(format!("unknown mount option {o:?}"))),
        }
    }
    Ok(())
}

fn init_logging(a: &MountArgs) {
    let level = if a.quiet {
        log::LevelFilter::Error
    } else {
        match a.verbose {
            0 => log::LevelFilter::Warn,
            1 => log::LevelFilter::Info,
            _ => log::LevelFilter::Debug,
        }
    };
    // -vvv also shows every FUSE request (fuser's own log).
    let cfg = if a.verbose >= 3 {
        simplelog::ConfigBuilder::new().build()
    } else {
        simplelog::ConfigBuilder::new().add_filter_ignore_str("fuser").build()
    };
    let _ = match &a.log_file {
        Some(p) => match std::fs::OpenOptions::new().create(true).append(true).open(p) {
            Ok(f) => simplelog::WriteLogger::init(level, cfg, f),
            Err(e) => {
                eprintln!("cannot open log file {}: {e}", p.display());
                simplelog::TermLogger::init(level, cfg, simplelog::TerminalMode::Stderr, simplelog::ColorChoice::Never)
            }
        },
        None => simplelog::TermLogger::init(level, cfg, simplelog::TerminalMode::Stderr, simplelog::ColorChoice::Never),
    };
}

/// Check the mount point: a folder, and not inside the store (Ollama prunes and walks it).
fn check_mountpoint(store: &Store, mp: &Path) -> Result<PathBuf, StoreError> {
    let canon = mp.canonicalize().map_err(|e| StoreError::Invalid(format!("mount point {}: {e}", mp.display())))?;
    if !canon.is_dir() {
        return Err(StoreError::Invalid(format!("mount point {} is not a folder", mp.display())));
    }
    if canon.starts_with(store.root()) {
        return Err(StoreError::Invalid(format!(
            "mount point {} is inside the store {}: Ollama walks and prunes that folder, so the mount must live outside it",
            canon.display(),
            store.root().display()
        )));
    }
    Ok(canon)
}

pub fn mount_command(mut a: MountArgs) -> Result<(), StoreError> {
    apply_options(&mut a)?;
    if !a.foreground && std::env::var_os("OLLAMAFS_DAEMON").is_none() {
        return spawn_background(&a);
    }
    let res = serve(a);
    if let Err(e) = &res {
        signal_ready(Err(e.to_string())); // the waiting parent prints it
    }
    res
}

fn serve(a: MountArgs) -> Result<(), StoreError> {
    // Every FUSE thread would otherwise get its own malloc arena, each keeping its freed
    // memory: with 10,000 models that was 153 MiB RSS after `ls -lR`, 122 MiB with two.
    #[cfg(target_env = "gnu")]
    // SAFETY: a plain tuning call before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // Catch SIGINT/SIGTERM before the mount appears, so a signal always unmounts cleanly.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = tx.send(());
        }
    });
    init_logging(&a);
    let store = Arc::new(Store::open(store_dir(&a.store.store))?);
    let mountpoint = check_mountpoint(&store, &a.mountpoint)?;
    if !a.read_only {
        store.prepare_for_writes()?;
    }
    let opts = Options {
        read_only: a.read_only,
        no_prune: a.no_prune,
        passthrough: !a.no_passthrough,
        mountpoint: Some(mountpoint.clone()),
        clock: Default::default(),
    };
    // Bind before mounting, so a busy port fails the mount with a clear message.
    let api_listener = a.api.as_deref().map(|addr| crate::api::bind(&crate::api::host_to_addr(addr))).transpose()?;
    let fs = Arc::new(Fs::new(store.clone(), opts));
    log::info!("serving {} models from {} at {}", fs.model_count(), store.root().display(), mountpoint.display());

    let mut mount_options = vec![
        MountOption::FSName(format!("ollamafs:{}", store.root().display())),
        MountOption::Subtype("ollamafs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if a.read_only {
        mount_options.push(MountOption::RO);
    }
    let mut config = Config::default();
    config.mount_options = mount_options;
    config.acl = if a.allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(4);
    let adapter = FuseFs {
        fs: fs.clone(),
        xattrs: a.xattr,
        passthrough: AtomicBool::new(!a.no_passthrough),
        backing: Mutex::default(),
    };
    let session = fuser::Session::new(adapter, &mountpoint, &config)
        .map_err(|e| StoreError::Invalid(format!("cannot mount at {}: {e}", mountpoint.display())))?;
    let bg = session.spawn().map_err(StoreError::Io)?;
    let notifier = bg.notifier();
    fs.set_entry_invalidator(Box::new(move |parent, name| {
        // ENOENT just means the kernel had nothing cached.
        let _ = notifier.inval_entry(INodeNo(parent), OsStr::new(name));
    }));
    tune_readahead(&mountpoint);
    signal_ready(Ok(()));

    // Freshness: pick up what a running Ollama changes on disk (inotify, rescan as a net).
    let running = Arc::new(AtomicBool::new(true));
    let refresher = {
        let (fs, running) = (fs.clone(), running.clone());
        std::thread::Builder::new().name("watch".into()).spawn(move || crate::fs::watch::run(fs, running))?
    };

    let api = match api_listener {
        Some(listener) => {
            if let Ok(addr) = listener.local_addr() {
                log::info!("API listening on {addr}");
            }
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let catalog: Arc<dyn crate::api::Catalog> = fs.clone();
            let thread = std::thread::Builder::new().name("api".into()).spawn(move || {
                if let Err(e) = crate::api::run(listener, catalog, async move {
                    let _ = stop_rx.await;
                }) {
                    log::error!("API server failed: {e}");
                }
            })?;
            Some((stop_tx, thread))
        }
        None => None,
    };

    // Wait for a signal or for an external umount (the session thread then ends).
    let signalled = loop {
        if bg.guard.is_finished() {
            break false;
        }
        if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            break true;
        }
    };
    log::info!("stopping ({})", if signalled { "signal" } else { "unmounted" });
    running.store(false, Ordering::Relaxed);
    if let Some((stop, thread)) = api {
        let _ = stop.send(());
        let _ = thread.join();
    }
    let res = if signalled { bg.umount_and_join() } else { bg.join() };
    let _ = refresher.join();
    fs.shutdown();
    if let Err(e) = res {
        log::warn!("session ended with {e}");
    }
    Ok(())
}

/// Reads that go through the daemon come as readahead requests; the kernel caps the
/// window of a FUSE mount at 128 KiB. A larger window (what the mount's bdi allows root
/// to set) keeps a cold sequential read of weights streaming.
fn tune_readahead(mp: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mp) else { return };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&knob, "4096") {
        log::debug!("could not raise readahead ({knob}: {e})");
    }
}

/// Tell a waiting parent (background mount) that the mount is ready, or why it failed.
fn signal_ready(res: Result<(), String>) {
    if std::env::var_os("OLLAMAFS_DAEMON").is_none() {
        return;
    }
    let mut out = std::io::stdout();
    let _ = match res {
        Ok(()) => writeln!(out, "ready"),
        Err(e) => writeln!(out, "error: {e}"),
    };
    let _ = out.flush();
    // Detach stdout from the parent's pipe so it sees EOF.
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto stdout with a valid fd.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}

/// Run the daemon as a detached child and return when its mount is ready.
fn spawn_background(a: &MountArgs) -> Result<(), StoreError> {
    let exe = std::env::current_exe()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (reader, writer) = std::io::pipe()?;
    let log_target: std::process::Stdio = match &a.log_file {
        Some(p) => std::fs::OpenOptions::new().create(true).append(true).open(p)?.into(),
        None => std::process::Stdio::null(),
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&args).env("OLLAMAFS_DAEMON", "1").stdin(std::process::Stdio::null()).stdout(writer).stderr(log_target);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from the terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(cmd);
    let mut line = String::new();
    let _ = BufReader::new(reader).read_line(&mut line);
    if line.trim() == "ready" {
        return Ok(());
    }
    let status = child.wait()?;
    let msg = line.trim().strip_prefix("error: ").unwrap_or(line.trim()).to_string();
    Err(StoreError::Invalid(if msg.is_empty() {
        format!("mount failed ({status}); run with --foreground to see why")
    } else {
        msg
    }))
}

/// One kernel backing file per blob, shared by every open of it (fuser's passthrough example).
#[derive(Default)]
struct Backing {
    by_blob: HashMap<Digest, Weak<BackingId>>,
    by_fh: HashMap<u64, Arc<BackingId>>,
}

struct FuseFs {
    fs: Arc<Fs>,
    /// Serve the `user.ollama.*` attributes. Off by default: any xattr answer costs a
    /// round trip per file on every `ls -l` (it asks for `security.selinux` and ACLs),
    /// while ENOSYS makes the kernel stop asking for the whole mount.
    xattrs: bool,
    passthrough: AtomicBool,
    backing: Mutex<Backing>,
}

/// Every refusal gets a log line that says why (ENOENT is routine, so only at debug).
fn errno(e: FsError) -> Errno {
    let name = match e.errno {
        libc::ENOENT => "ENOENT",
        libc::EINVAL => "EINVAL",
        libc::EEXIST => "EEXIST",
        libc::EPERM => "EPERM",
        libc::EROFS => "EROFS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENOSPC => "ENOSPC",
        libc::EIO => "EIO",
        libc::EBUSY => "EBUSY",
        libc::EXDEV => "EXDEV",
        _ => "errno",
    };
    match e.errno {
        libc::ENOENT => log::debug!("{name}: {}", e.why),
        libc::EIO | libc::ENOSPC => log::error!("{name}: {}", e.why),
        n => log::warn!("{name} ({n}): {}", e.why),
    }
    Errno::from_i32(e.errno)
}

fn reply_empty(reply: ReplyEmpty, r: crate::fs::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn to_file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.mtime,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::Dir => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
    }
}

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

fn ttl_for(a: &Attr) -> Duration {
    if a.kind == FileKind::Symlink || a.transient { Duration::ZERO } else { TTL }
}

impl FuseFs {
    fn reply_opened(&self, o: Opened, reply: ReplyOpen) {
        let mut flags = FopenFlags::empty();
        if o.keep_cache {
            flags |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        if let Some((digest, file)) = o.passthrough
            && self.passthrough.load(Ordering::Relaxed)
        {
            let mut b = self.backing.lock().unwrap_or_else(|e| e.into_inner());
            let id = match b.by_blob.get(&digest).and_then(Weak::upgrade) {
                Some(id) => Ok(id),
                None => reply.open_backing(file.as_ref()).map(Arc::new),
            };
            match id {
                Ok(id) => {
                    b.by_blob.insert(digest, Arc::downgrade(&id));
                    b.by_fh.insert(o.fh, id.clone());
                    // The backing file's page cache serves these reads; no FUSE cache flags.
                    reply.opened_passthrough(FileHandle(o.fh), FopenFlags::empty(), &id);
                    return;
                }
                Err(e) => {
                    log::warn!("FUSE passthrough unavailable ({e}); reads go through the daemon");
                    self.passthrough.store(false, Ordering::Relaxed);
                }
            }
        }
        reply.opened(FileHandle(o.fh), flags);
    }

    fn drop_backing(&self, fh: u64) {
        let mut b = self.backing.lock().unwrap_or_else(|e| e.into_inner());
        b.by_fh.remove(&fh);
        b.by_blob.retain(|_, w| w.strong_count() > 0);
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // With POSIX ACL support the kernel asks once per inode for ACLs and caches the
        // answer (none) instead of asking on every `ls -l`.
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
        // readdirplus: a listing brings every entry's attributes, so `ls -l` and `du` need
        // no lookup per entry. (With xattrs served it makes the kernel forget the cached
        // ACLs at every listing, which tripled the requests of a warm `ls -l`.)
        if !self.xattrs {
            let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        }
        let _ = config.set_max_readahead(4 << 20);
        let _ = config.set_max_write(1 << 20);
        if self.passthrough.load(Ordering::Relaxed) {
            if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() && config.set_max_stack_depth(1).is_ok() {
                log::info!("FUSE passthrough enabled for weights");
            } else {
                log::info!("kernel has no FUSE passthrough; reads go through the daemon");
                self.passthrough.store(false, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.fs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&ttl_for(&a), &to_file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr_open(ino.0, fh.map(|f| f.0)) {
            Ok(a) => reply.attr(&ttl_for(&a), &to_file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let time = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => SystemTime::now(),
        };
        let set = SetAttr { mode, uid, gid, size, atime: atime.map(time), mtime: mtime.map(time) };
        match self.fs.setattr(ino.0, fh.map(|f| f.0), set) {
            Ok(a) => reply.attr(&ttl_for(&a), &to_file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.fs.mkdir(parent.0, name, mode & !umask) {
            Ok(a) => reply.entry(&TTL, &to_file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        reply_empty(reply, self.fs.unlink(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        reply_empty(reply, self.fs.rmdir(parent.0, name));
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let (name, target) = match (name_str(link_name), target.to_str()) {
            (Ok(n), Some(t)) => (n, t),
            _ => return reply.error(Errno::EINVAL),
        };
        match self.fs.symlink(parent.0, name, target) {
            Ok(a) => reply.entry(&Duration::ZERO, &to_file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_str(name), name_str(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            _ => return reply.error(Errno::EINVAL),
        };
        reply_empty(reply, self.fs.rename(parent.0, name, newparent.0, newname, flags.bits()));
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let newname = match name_str(newname) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.fs.link(ino.0, newparent.0, newname) {
            Ok(a) => reply.entry(&TTL, &to_file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ino.0, flags.0) {
            Ok(o) => self.reply_opened(o, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| match self.fs.read_into(fh.0, offset, size, buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.flush(fh.0));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.drop_backing(fh.0);
        reply_empty(reply, self.fs.release(fh.0));
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.flush(fh.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(entries) = self.fs.dir_entries(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), (i + 1) as u64, kind(e.kind), &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let Some(entries) = self.fs.dir_entries(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            // Each entry but `.` and `..` is a lookup the kernel will forget later.
            let dot = e.name == "." || e.name == "..";
            let attr = if dot { self.fs.getattr(e.ino) } else { self.fs.lookup(ino.0, &e.name) };
            let Ok(attr) = attr else { continue }; // gone since the listing was taken
            let full = reply.add(
                INodeNo(attr.ino),
                (i + 1) as u64,
                &e.name,
                &ttl_for(&attr),
                &to_file_attr(&attr),
                Generation(0),
            );
            if full {
                if !dot {
                    self.fs.forget(attr.ino, 1); // not sent, so the kernel never counts it
                }
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.fs.release_handle(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        // Read-only attributes; `cp -a` and rsync -X treat ENOTSUP as "not supported here".
        reply.error(Errno::ENOTSUP);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS); // the kernel stops asking for the whole mount
        }
        // `ls -l` asks every file for security.selinux: answer without any work.
        if !name.as_encoded_bytes().starts_with(b"user.ollama.") {
            return reply.error(Errno::NO_XATTR);
        }
        let attrs = match self.fs.xattrs(ino.0) {
            Ok(a) => a,
            Err(e) => return reply.error(errno(e)),
        };
        let Some((_, v)) = attrs.iter().find(|(k, _)| OsStr::new(k) == name) else {
            return reply.error(Errno::NO_XATTR);
        };
        if size == 0 {
            reply.size(v.len() as u32);
        } else if (size as usize) < v.len() {
            reply.error(Errno::ERANGE);
        } else {
            reply.data(v);
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        let attrs = match self.fs.xattrs(ino.0) {
            Ok(a) => a,
            Err(e) => return reply.error(errno(e)),
        };
        let mut buf = Vec::new();
        for (k, _) in &attrs {
            buf.extend_from_slice(k.as_bytes());
            buf.push(0);
        }
        if size == 0 {
            reply.size(buf.len() as u32);
        } else if (size as usize) < buf.len() {
            reply.error(Errno::ERANGE);
        } else {
            reply.data(&buf);
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOTSUP);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        // With POSIX ACLs on, the kernel leaves the umask to us.
        match self.fs.create(parent.0, name, mode & !umask, flags) {
            Ok((a, o)) => {
                reply.created(&ttl_for(&a), &to_file_attr(&a), Generation(0), FileHandle(o.fh), FopenFlags::empty())
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // The reply carries a u32; ask for no more than fits.
        let len = len.min(0xFFFF_F000);
        match self.fs.copy_file_range(ino_in.0, fh_in.0, offset_in, fh_out.0, offset_out, len) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }
}
