//! A newcomer's first hour: what `mount` says and refuses, where a background mount logs,
//! how the mount shows in /proc/mounts, and a mount by a normal user.

mod common;
use common::*;
use std::fs;
use std::path::Path;

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// The kernel lists the mount as type `fuse.ollamafs` (source `ollamafs:STORE`), as sshfs
/// shows `fuse.sshfs`: `findmnt -t fuse.ollamafs`, `df -t`, systemd and fstab tools use it.
#[test]
fn the_mount_type_is_fuse_ollamafs() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts.lines().find(|l| l.split(' ').nth(1) == Some(&*m.mp.to_string_lossy())).unwrap();
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[2], "fuse.ollamafs", "{line}");
    assert_eq!(fields[0], format!("ollamafs:{}", m.store.canonicalize().unwrap().display()));
    let found = sh_ok(&format!("findmnt -n -t fuse.ollamafs -o TARGET {}", q(&m.mp)));
    assert_eq!(found.trim(), m.mp.to_string_lossy());
}

/// Mounting again on a mount point that already is an ollamafs mount is refused with a
/// message that says what to do (it used to stack a second mount and a second daemon).
#[test]
fn a_second_mount_on_the_same_mount_point_is_refused() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let o = ollamafs(&m.store, &["mount", &m.mp.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is already an ollamafs mount"), "{}", stderr(&o));
    assert!(stderr(&o).contains("umount"), "says how to get out of it: {}", stderr(&o));
    let stacked = fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(&*m.mp.to_string_lossy()))
        .count();
    assert_eq!(stacked, 1);
}

/// Passthrough is reported once, with the state it really has, when the mount starts.
#[test]
fn passthrough_is_reported_once_at_mount_time() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    sh_ok(&format!("cat {} > /dev/null", q(&m.p("llama3.2:latest/model.gguf"))));
    let log = m.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("passthrough")).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("FUSE passthrough enabled"), "root on this kernel: {lines:?}");
}

/// Where there is no system log (containers, minimal systems, CI), a background mount says
/// so before it detaches and logs to `<store>/.ollamafs/log`. At the default level the log
/// has one line at start and one per change of the store, saying who made it; refusals
/// only with -v. A store folder that does not exist is made, and the user told.
#[test]
fn without_a_system_log_the_mount_logs_changes_to_the_store() {
    if !fuse_available() {
        return;
    }
    let _one = DEV_LOG.lock().unwrap_or_else(|e| e.into_inner());
    if Path::new("/dev/log").exists() {
        assert!(std::env::var("CI").is_err(), "CI machines have no /dev/log");
        skip("this machine has a system log (/dev/log)");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mp = d.path().join("mnt");
    fs::create_dir_all(&mp).unwrap();
    let _unmount = UnmountOnDrop(mp.clone());
    // A store that does not exist yet.
    let fresh = d.path().join("fresh-store");
    let o = ollamafs(&fresh, &["mount", &mp.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("made an empty one"), "{}", stderr(&o));
    assert!(stderr(&o).contains("no system log"), "said before detaching: {}", stderr(&o));
    sh_ok(&format!("umount {}", q(&mp)));

    let (_d2, store, _) = fixture_store(8 << 20);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let api = format!("127.0.0.1:{port}");
    let o = ollamafs(&store, &["mount", "--api", &api, &mp.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let log_path = store.join(".ollamafs/log");
    assert!(stderr(&o).contains(&log_path.display().to_string()), "{}", stderr(&o));
    sh_ok(&format!("cp -r {} {}", q(&mp.join("llama3.2:latest")), q(&mp.join("mine:v1"))));
    sh_ok(&format!("rm -r {}", q(&mp.join("mine:v1"))));
    let _ = sh(&format!("mkdir {}", q(&mp.join("hf.co/bad name:x"))));
    let body = r#"{"source":"llama3.2","destination":"backup:v1"}"#;
    sh_ok(&format!("curl -sf http://{api}/api/copy -d '{body}'"));
    sh_ok(&format!("umount {}", q(&mp)));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = fs::read_to_string(&log_path).unwrap();
    let start: Vec<&str> = log.lines().filter(|l| l.contains("serving")).collect();
    assert_eq!(start.len(), 1, "one line at start: {log}");
    for part in ["6 models", &store.display().to_string(), &mp.display().to_string(), "passthrough"] {
        assert!(start[0].contains(part), "the start line names {part}: {}", start[0]);
    }
    assert!(log.contains("published mine:v1 (id "), "{log}");
    assert!(log.contains("through the mount"), "{log}");
    assert!(log.contains("mine:v1 left the store"), "{log}");
    assert!(log.contains("published backup:v1 (id ") && log.contains("over the API"), "{log}");
    assert!(!log.contains("EINVAL"), "refusals only with -v: {log}");
    assert!(!log.contains("DEBUG"), "{log}");
}

/// Tests that make or need the absence of /dev/log run one at a time.
static DEV_LOG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A background mount without --log-file logs to the system log (/dev/log, which syslog
/// daemons and journald serve): with -v the reason behind an `Invalid argument` can be
/// read there.
#[test]
fn a_background_mount_logs_to_the_system_log() {
    if !fuse_available() {
        return;
    }
    let _one = DEV_LOG.lock().unwrap_or_else(|e| e.into_inner());
    if Path::new("/dev/log").exists() {
        // A real system log is running: read it with `journalctl -t ollamafs` instead.
        assert!(std::env::var("CI").is_err(), "CI machines have no /dev/log; this test provides one");
        skip("/dev/log belongs to this machine's syslog");
        return;
    }
    let (d, store, _) = fixture_store(8 << 20);
    let listener = std::os::unix::net::UnixDatagram::bind("/dev/log").unwrap();
    struct Remove;
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = fs::remove_file("/dev/log");
        }
    }
    let _remove = Remove;
    // Read the log as a system log does, all the time (a full socket drops lines).
    let got = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let got = got.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = listener.recv(&mut buf) {
                got.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let mp = d.path().join("mnt");
    fs::create_dir_all(&mp).unwrap();
    let o = ollamafs(&store, &["mount", "-v", &mp.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("no system log"), "{}", stderr(&o));
    let _unmount = UnmountOnDrop(mp.clone());
    let o = sh(&format!("mkdir {}", q(&mp.join("hf.co/bad name:x"))));
    assert!(stderr(&o).contains("Invalid argument"));
    let t0 = std::time::Instant::now();
    while !got.lock().unwrap().contains("EINVAL") && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let got = got.lock().unwrap().clone();
    assert!(got.contains("ollamafs["), "tagged with the program and pid: {got}");
    assert!(got.contains("host folder"), "the reason is in the log: {got}");
}

/// A normal user mounts their own store (no root): copy, read, unmount. Weights are served
/// by the daemon (passthrough needs CAP_SYS_ADMIN), which the log says once.
#[test]
fn a_normal_user_can_mount_copy_and_unmount() {
    if !fuse_available() {
        return;
    }
    let user = "ollamafs-test";
    if !sh(&format!("id -u {user}")).status.success() {
        sh_ok(&format!("useradd --no-create-home {user} || adduser --system --no-create-home {user}"));
    }
    // A folder the user owns, with a copy of the binary it can run.
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("u");
    fs::create_dir_all(home.join("mnt")).unwrap();
    sh_ok(&format!("chmod 755 {}", q(d.path())));
    let exe = home.join("ollamafs");
    fs::copy(bin(), &exe).unwrap();
    sh_ok(&format!("chown -R {user} {}", q(&home)));
    let as_user = |cmd: &str| sh(&format!("runuser -u {user} -- sh -c {}", shell_quote(cmd)));
    let store = home.join("store");
    ollamafs::fixture::build(&store, 8 << 20).unwrap();
    sh_ok(&format!("chown -R {user} {}", q(&store)));
    let mp = home.join("mnt");
    let log = home.join("log");
    let o = as_user(&format!("{} mount --store {} -v --log-file {} {}", q(&exe), q(&store), q(&log), q(&mp)));
    assert!(o.status.success(), "a normal user's mount failed: {}", stderr(&o));
    let _guard = UnmountOnDrop(mp.clone());
    let o = as_user(&format!(
        "stat -c %h {0} >/dev/null && cp -r {1} {2} && stat -c %h {0} {3}",
        q(&mp.join("llama3.2:latest/model.gguf")),
        q(&mp.join("llama3.2:latest")),
        q(&mp.join("mine:v1")),
        q(&mp.join("mine:v1/model.gguf"))
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    // Right after cp -r, the source (whose attributes the kernel had cached) shows the
    // same link count as the copy: it is one inode.
    let counts: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
    assert_eq!(counts.len(), 2);
    assert_eq!(counts[0], counts[1], "source and copy right after cp -r");
    let o =
        as_user(&format!("cmp {} {}", q(&mp.join("mine:v1/model.gguf")), q(&mp.join("llama3.2:latest/model.gguf"))));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(store.join("manifests/registry.ollama.ai/library/mine/v1").exists());
    // Unmount and mount again at once: the new mount stays, whatever the old daemon still
    // does on its way out.
    let remount = format!("fusermount3 -u {0} && {1} mount --store {2} {0}", q(&mp), q(&exe), q(&store));
    let o = as_user(&remount);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = mp.join("llama3.2:latest/model.gguf");
    assert_mount_stays(&mp, || as_user(&format!("test -f {}", q(&model))).status.success());
    let o = as_user(&format!("fusermount3 -u {}", q(&mp)));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!is_mounted(&mp));
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("passthrough unavailable"), "{text}");
    assert_verifies(&store);
}

/// The mount at `mp` is there and answers for three seconds (the time an old daemon takes
/// to finish).
fn assert_mount_stays(mp: &std::path::Path, answers: impl Fn() -> bool) {
    for _ in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(is_mounted(mp), "the new mount vanished");
    }
    assert!(answers(), "the new mount answers");
}

/// Root: `umount M && ollamafs mount M` at once keeps the new mount.
#[test]
fn an_immediate_remount_stays() {
    if !fuse_available() {
        return;
    }
    let (dir, store, _) = fixture_store(8 << 20);
    let mp = dir.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let _guard = UnmountOnDrop(mp.clone());
    let mount = format!("{} mount --store {} {}", q(&bin()), q(&store), q(&mp));
    sh_ok(&mount);
    for unmount in ["umount", "fusermount3 -u"] {
        sh_ok(&format!("{unmount} {} && {mount}", q(&mp)));
        assert_mount_stays(&mp, || mp.join("llama3.2:latest/model.gguf").exists());
    }
    sh_ok(&format!("umount {}", q(&mp)));
    assert_verifies(&store);
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The daemon holds every scratch inode the kernel knows open, so it takes the hard limit
/// of open files rather than a service's small soft one.
#[test]
fn the_daemon_takes_the_hard_open_file_limit() {
    if !fuse_available() {
        return;
    }
    let (dir, store, _) = fixture_store(4 << 20);
    let mp = dir.path().join("mnt");
    fs::create_dir(&mp).unwrap();
    let _guard = UnmountOnDrop(mp.clone());
    let log = dir.path().join("log");
    sh_ok(&format!(
        "prlimit --nofile=256:4096 {} mount --store {} --log-file {} {}",
        q(&bin()),
        q(&store),
        q(&log),
        q(&mp)
    ));
    let pid = sh_ok(&format!("pgrep -f -n 'mount --store {}'", store.display()));
    let limits = fs::read_to_string(format!("/proc/{}/limits", pid.trim())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let nums: Vec<&str> = line.split_whitespace().filter(|w| w.parse::<u64>().is_ok()).collect();
    assert_eq!(nums, ["4096", "4096"], "{line}");
    sh_ok(&format!("umount {}", q(&mp)));
}
