//! The mount's lifecycle: arguments and `-o` options, logging, the mount point checks,
//! background start, the FUSE session, the watcher and API threads, signals and unmount.
//! The request translation is `crate::fuse`; the filesystem's meaning is `crate::fs`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use fuser::{Config, INodeNo, MountOption, SessionACL};

use crate::fs::{Fs, Options};
use crate::fuse::FuseFs;
use crate::store::{Store, StoreError};

/// Why a mount did not start (or ended badly). Its own type: the CLI turns it into an exit
/// status, the filesystem never sees it.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A bad `-o` option or argument (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The mount point cannot be used, or the kernel refused the mount.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
use crate::store_arg::{StoreArg, store_dir};

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
    /// Show the store as an app expects a models folder, at the mount's root:
    /// `lmstudio` (`.lmstudio/PUBLISHER/MODEL/FILE.gguf`, takes LM Studio's downloads) or
    /// `gguf` (`.gguf/NAME-TAG.gguf`, read-only). Repeatable
    #[arg(long = "view", value_name = "lmstudio|gguf", value_parser = parse_view)]
    pub views: Vec<crate::views::ViewKind>,
    /// Show a Hugging Face hub cache's GGUF files read-only at `.hf/ORG/REPO:QUANT/`
    /// (`cp -r` from there publishes the model with the cache's file linked, not copied)
    #[arg(long, value_name = "DIR")]
    pub hf_cache: Option<PathBuf>,
    /// fstab-style options: ro, allow_other, view=lmstudio, hf_cache=DIR, store=DIR, no_prune, no_passthrough, log=FILE, ...
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
    /// More log output: -v refusals and details, -vv lookups that miss, -vvv FUSE requests
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
    /// Write the log to this file (a background mount logs to the system log otherwise)
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    pub mountpoint: PathBuf,
}

fn parse_view(s: &str) -> Result<crate::views::ViewKind, String> {
    crate::views::ViewKind::parse(s).ok_or_else(|| format!("unknown view {s:?}: lmstudio or gguf"))
}

/// Fold `-o` options into the flags, as `mount -t fuse.ollamafs` and fstab pass them.
fn apply_options(a: &mut MountArgs) -> Result<(), MountError> {
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
            ("view", Some(v)) => a.views.push(parse_view(v).map_err(MountError::Usage)?),
            ("hf_cache", Some(dir)) => a.hf_cache = Some(PathBuf::from(dir)),
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
            _ => return Err(MountError::Usage(format!("unknown mount option {o:?}"))),
        }
    }
    Ok(())
}

/// The log: at the default level one line at start, one line per change of the store,
/// warnings and errors; `-v` adds refusals (with their reasons) and details, `-vv` routine
/// misses (ENOENT), `-vvv` every FUSE request.
fn init_logging(a: &MountArgs) {
    let level = if a.quiet {
        log::LevelFilter::Error
    } else {
        match a.verbose {
            0 => log::LevelFilter::Info,
            1 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        }
    };
    let cfg = if a.verbose >= 3 {
        simplelog::ConfigBuilder::new().build()
    } else {
        simplelog::ConfigBuilder::new().add_filter_ignore_str("fuser").build()
    };
    // The background parent chose a file when the system log is out of reach.
    let log_file = a.log_file.clone().or_else(|| std::env::var_os(LOG_FILE_ENV).map(PathBuf::from));
    // In the background there is no terminal: without a log file the system log (syslog,
    // or the journal through /dev/log) gets the messages, tagged `ollamafs`.
    if log_file.is_none() && std::env::var_os("OLLAMAFS_DAEMON").is_some() {
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_DAEMON,
            hostname: None,
            process: "ollamafs".into(),
            pid: std::process::id(),
        };
        if let Ok(logger) = syslog::unix(formatter).map(never_blocking)
            && log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger))).is_ok()
        {
            log::set_max_level(level);
            return;
        }
    }
    let _ = match &log_file {
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

/// A store folder that does not exist yet is made (as Ollama makes `~/.ollama/models` on
/// first use, and `pull` does), and the user is told, in case the path was a typo.
fn make_missing_store(a: &MountArgs) -> Result<(), MountError> {
    let dir = store_dir(&a.store.store);
    if a.read_only || dir.exists() || std::env::var_os("OLLAMAFS_DAEMON").is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| MountError::Refused(format!("no store at {} and cannot make one: {e}", dir.display())))?;
    eprintln!("ollamafs: no store at {}: made an empty one (copy models in, or `ollamafs pull NAME`)", dir.display());
    Ok(())
}

/// A system log that stops reading (a stuck syslog daemon, a full socket) must never stall
/// the filesystem, whose requests log while they hold its lock: lines are dropped instead.
fn never_blocking<F>(logger: syslog::Logger<syslog::LoggerBackend, F>) -> syslog::Logger<syslog::LoggerBackend, F> {
    let _ = match &logger.backend {
        syslog::LoggerBackend::Unix(socket) => socket.set_nonblocking(true),
        syslog::LoggerBackend::UnixStream(stream) => stream.get_ref().set_nonblocking(true),
        _ => Ok(()),
    };
    logger
}

/// Set by a background mount's parent for the daemon: the log file to use because the
/// system log cannot be reached.
const LOG_FILE_ENV: &str = "OLLAMAFS_LOG_FILE";
/// The fallback log is rotated (one old copy kept) when it has grown past this at start.
const LOG_ROTATE_BYTES: u64 = 8 << 20;

/// Without `--log-file`, a background mount logs to the system log; where there is none
/// (containers, minimal systems), say so now, while a terminal can still see it, and log to
/// `<store>/.ollamafs/log` instead.
fn fallback_log_file(a: &MountArgs) -> Option<PathBuf> {
    if a.log_file.is_some() {
        return None;
    }
    let reachable = std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.connect("/dev/log"));
    let why = match reachable {
        Ok(()) => return None,
        Err(e) => e,
    };
    let dir = store_dir(&a.store.store).join(crate::store::SCRATCH_DIR);
    let path = dir.join(crate::store::LOG_FILE);
    let _ = std::fs::create_dir_all(&dir);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let _ = std::fs::rename(&path, dir.join(crate::store::OLD_LOG_FILE));
    }
    eprintln!("ollamafs: no system log here (/dev/log: {why}); this mount logs to {}", path.display());
    Some(path)
}

/// Check the mount point: a folder, and not inside the store (Ollama prunes and walks it).
fn check_mountpoint(store: &Store, mp: &Path) -> Result<PathBuf, MountError> {
    let canon = mp.canonicalize().map_err(|e| MountError::Refused(format!("mount point {}: {e}", mp.display())))?;
    if !canon.is_dir() {
        return Err(MountError::Refused(format!("mount point {} is not a folder", mp.display())));
    }
    if let Some(source) = ollamafs_mount_at(&canon) {
        return Err(MountError::Refused(format!(
            "{} is already an ollamafs mount ({source}); unmount it first: umount {}",
            canon.display(),
            canon.display()
        )));
    }
    if canon.starts_with(store.root()) {
        return Err(MountError::Refused(format!(
            "mount point {} is inside the store {}: Ollama walks and prunes that folder, so the mount must live outside it",
            canon.display(),
            store.root().display()
        )));
    }
    Ok(canon)
}

/// The source of an ollamafs mount at `mp`, if there is one (`/proc/self/mountinfo`).
fn ollamafs_mount_at(mp: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mp.to_string_lossy().replace(' ', "\\040");
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        let (point, fstype, source) = (fields.get(4)?, fields.get(sep + 1)?, fields.get(sep + 2)?);
        (*point == want
            && (*fstype == "fuse.ollamafs" || (fstype.starts_with("fuse") && source.starts_with("ollamafs:"))))
        .then(|| source.to_string())
    })
}

pub fn mount_command(mut a: MountArgs) -> Result<(), MountError> {
    apply_options(&mut a)?;
    make_missing_store(&a)?;
    if !a.foreground && std::env::var_os("OLLAMAFS_DAEMON").is_none() {
        return spawn_background(&a);
    }
    let res = run_daemon(a);
    if let Err(e) = &res {
        signal_ready(Err(e.to_string())); // the waiting parent prints it
    }
    res
}

fn run_daemon(a: MountArgs) -> Result<(), MountError> {
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
    raise_open_file_limit();
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
        hf_cache: a.hf_cache.clone(),
        views: {
            let mut v = a.views.clone();
            if a.hf_cache.is_some() {
                v.push(crate::views::ViewKind::HfCache);
            }
            v.sort();
            v.dedup();
            v
        },
    };
    // Bind before mounting, so a busy port fails the mount with a clear message.
    let api_listener = a.api.as_deref().map(|addr| crate::api::bind(&crate::api::host_to_addr(addr))).transpose()?;
    let fs = Arc::new(Fs::new(store.clone(), opts));

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
    let passthrough = Arc::new(AtomicBool::new(!a.no_passthrough));
    let adapter = FuseFs::new(fs.clone(), a.xattr, passthrough.clone());
    let (session, own_mount) = start_session(adapter, &mountpoint, &store, &a, config)
        .map_err(|e| MountError::Refused(format!("cannot mount at {}: {e}", mountpoint.display())))?;
    let reads = report_passthrough(&session, &store, &passthrough, a.no_passthrough);
    log::info!(
        "serving {} models from {} at {}{}; {reads}",
        fs.model_count(),
        store.root().display(),
        mountpoint.display(),
        if a.read_only { " (read-only)" } else { "" },
    );
    let bg = session.spawn()?;
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
            let catalog: Arc<dyn crate::catalog::Catalog> = fs.clone();
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
    let res = match (signalled, own_mount) {
        (true, true) => {
            unmount(&mountpoint);
            bg.join()
        }
        (true, false) => bg.umount_and_join(),
        // Unmounted from outside: the mount point may already hold the next mount (`fusermount3
        // -u M && ollamafs mount M`). fuser 0.18 would unmount "again" when the session is
        // dropped (its check reads the device's POLLERR as "still mounted") and take the new
        // mount down: the finished session is forgotten instead (its thread is done; the
        // process ends soon).
        (false, _) => {
            std::mem::forget(bg);
            Ok(())
        }
    };
    let _ = refresher.join();
    fs.shutdown();
    if let Err(e) = res {
        log::warn!("session ended with {e}");
    }
    Ok(())
}

/// The mount holds every scratch inode the kernel knows open (see `fs::scratch`), and a
/// service's default soft limit (often 1,024) would run out on a folder of many small files:
/// take the hard limit, as FUSE file systems that serve real files do.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => log::debug!("open files: limit raised to {:?}", limit.maximum),
            Err(e) => log::debug!("open files: limit stays {:?} ({e})", limit.current),
        }
    }
}

/// Mount, and start the FUSE session. As root the mount is made here, with the type
/// `fuse.ollamafs` (fuser's own mount says plain `fuse`, which `findmnt -t fuse.ollamafs`,
/// `df -t`, systemd and fstab tooling do not recognise); otherwise fuser mounts through
/// `fusermount3`, which sets the same subtype. Returns whether the mount is ours to undo.
fn start_session(
    adapter: FuseFs,
    mp: &Path,
    store: &Store,
    a: &MountArgs,
    config: Config,
) -> std::io::Result<(fuser::Session<FuseFs>, bool)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok((fuser::Session::new(adapter, mp, &config)?, false));
    }
    use std::os::fd::{AsRawFd, OwnedFd};
    let dev = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse")?;
    let mut data = format!("fd={},rootmode=40000,user_id=0,group_id=0,default_permissions", dev.as_raw_fd());
    if a.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if a.read_only {
        flags |= libc::MS_RDONLY;
    }
    let c = |s: &str| std::ffi::CString::new(s).map_err(std::io::Error::other);
    let (source, target) = (c(&format!("ollamafs:{}", store.root().display()))?, c(&mp.to_string_lossy())?);
    let (fstype, data) = (c("fuse.ollamafs")?, c(&data)?);
    // SAFETY: valid C strings; mount(2) reads them during the call only.
    let rc = unsafe {
        libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, data.as_ptr() as *const libc::c_void)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    match fuser::Session::from_fd(adapter, OwnedFd::from(dev), config.acl, config) {
        Ok(session) => Ok((session, true)),
        Err(e) => {
            unmount(mp);
            Err(e)
        }
    }
}

fn unmount(mp: &Path) {
    if let Ok(target) = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes()) {
        // SAFETY: a valid C string. Detach: open files keep working until closed.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Passthrough needs kernel support (negotiated at init) and CAP_SYS_ADMIN at the first
/// backing open: try one now, on a scratch file; says what reads will use.
fn report_passthrough(session: &fuser::Session<FuseFs>, store: &Store, on: &AtomicBool, disabled: bool) -> String {
    if disabled {
        return "FUSE passthrough off (--no-passthrough): reads of weights go through the daemon".into();
    }
    if !on.load(Ordering::Relaxed) {
        return "FUSE passthrough unavailable (the kernel does not offer it): reads of weights go through the daemon"
            .into();
    }
    let probe = store.temp_file().and_then(|(f, path)| {
        let id = fuser::BackingId::create_raw(session, &f);
        let _ = std::fs::remove_file(path);
        id
    });
    match probe {
        Ok(id) => {
            use std::os::fd::{AsFd, AsRawFd};
            // FUSE_DEV_IOC_BACKING_CLOSE = _IOW(229, 2, u32)
            const BACKING_CLOSE: libc::c_ulong = 0x4004_e502;
            // SAFETY: the session's /dev/fuse fd and a pointer to the id for the call's duration.
            unsafe { libc::ioctl(session.as_fd().as_raw_fd(), BACKING_CLOSE, &id) };
            "FUSE passthrough enabled: the kernel reads weights straight from their blobs".into()
        }
        Err(e) => {
            on.store(false, Ordering::Relaxed);
            format!("FUSE passthrough unavailable ({e}): reads of weights go through the daemon")
        }
    }
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
fn spawn_background(a: &MountArgs) -> Result<(), MountError> {
    let exe = std::env::current_exe()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (reader, writer) = std::io::pipe()?;
    let fallback = fallback_log_file(a);
    let log_target: std::process::Stdio = match a.log_file.as_ref().or(fallback.as_ref()) {
        Some(p) => std::fs::OpenOptions::new().create(true).append(true).open(p)?.into(),
        None => std::process::Stdio::null(),
    };
    let mut cmd = std::process::Command::new(exe);
    if let Some(p) = &fallback {
        cmd.env(LOG_FILE_ENV, p);
    }
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
    Err(MountError::Refused(if msg.is_empty() {
        format!("mount failed ({status}); run with --foreground to see why")
    } else {
        msg
    }))
}
