//! Scratch entries: whatever a model folder holds that is not part of its model (editor
//! swap files, rsync's `.~tmp~/` and `--partial-dir` folders, anything made below a folder
//! made inside a model folder).
//!
//! Each model folder keeps its scratch entries in a real directory, its *scratch tree*
//! (`<store>/.ollamafs/<pid>/folders/<n>/`, same disk as `blobs/`), and the mount serves
//! each entry as the real file it is: its inode is the disk's (one per file, not per
//! name), so hard links, symlinks, fifos, sockets, an unlinked file that is still open,
//! modes, owners and times all behave as on the disk below. The tree moves with its
//! folder (it is the folder's, not the name's) and is removed with it; a killed daemon's
//! trees go with its `<pid>` folder at the next start.
//!
//! While the kernel knows a scratch inode, the core holds it open (`O_PATH`), and every
//! change is made relative to those descriptors (`openat`, `mkdirat`, `renameat2`, ...).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirEntryExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{self as rfs, AtFlags, CWD, Mode, OFlags, RenameFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::edit::{is_layer_name, is_staging_name};
use super::{Attr, FileKind, Fs, FsError, Handle, Node, Opened, Result, SetAttr, State};
use crate::name::Name;

/// An open scratch folder (or any scratch inode), shared by the requests that use it.
pub(crate) type Fd = Arc<OwnedFd>;

/// Who made a request: what they create is theirs, as on any filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

impl Caller {
    /// The daemon itself (the API, tests): new entries keep the daemon's owner.
    pub fn daemon() -> Caller {
        Caller { uid: rustix::process::geteuid().as_raw(), gid: rustix::process::getegid().as_raw() }
    }
}

impl From<Errno> for FsError {
    fn from(e: Errno) -> FsError {
        FsError { errno: e.raw_os_error(), why: e.to_string() }
    }
}

/// A folder path inside a model folder that holds the model's named layers (`files`,
/// `files/text_encoder`): mkdir makes it a layer folder, never a scratch folder.
pub(crate) fn is_layer_folder(path: &str) -> bool {
    path == "files" || (path.starts_with("files/") && is_layer_name(path))
}

/// Names at a model folder's own levels that belong to the model (layers, rsync's temp
/// files for layers, layer folders). Every other name there is a scratch entry.
pub(crate) fn is_reserved(path: &str) -> bool {
    is_layer_name(path) || is_staging_name(path) || is_layer_folder(path)
}

fn proc_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn proc_path_of(f: &File) -> String {
    format!("/proc/self/fd/{}", f.as_raw_fd())
}

fn stale(b: u64) -> FsError {
    FsError::new(libc::ESTALE, format!("scratch inode {b} is no longer known"))
}

/// Attributes of a scratch inode: the disk's own. (`stat`'s field types differ between
/// architectures, hence the casts that are no-ops on some.)
#[allow(clippy::unnecessary_cast)]
pub(super) fn stat_attr(ino: u64, s: &rfs::Stat) -> Attr {
    let time = |sec: i64, nsec: u64| {
        let d = Duration::new(sec.max(0) as u64, (nsec as u32).min(999_999_999));
        UNIX_EPOCH + d
    };
    let mode = s.st_mode as u32;
    Attr {
        ino,
        kind: kind_of_mode(mode),
        size: s.st_size as u64,
        blocks: s.st_blocks as u64,
        perm: (mode & 0o7777) as u16,
        nlink: s.st_nlink as u32,
        uid: s.st_uid,
        gid: s.st_gid,
        rdev: s.st_rdev as u32,
        atime: time(s.st_atime as i64, s.st_atime_nsec as u64),
        mtime: time(s.st_mtime as i64, s.st_mtime_nsec as u64),
        ctime: time(s.st_ctime as i64, s.st_ctime_nsec as u64),
        transient: false,
        shared: false,
    }
}

fn kind_of_mode(mode: u32) -> FileKind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFSOCK => FileKind::Socket,
        libc::S_IFCHR => FileKind::CharDevice,
        libc::S_IFBLK => FileKind::BlockDevice,
        _ => FileKind::File,
    }
}

fn kind_of_type(t: std::fs::FileType) -> FileKind {
    if t.is_dir() {
        FileKind::Dir
    } else if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_fifo() {
        FileKind::Fifo
    } else if t.is_socket() {
        FileKind::Socket
    } else if t.is_char_device() {
        FileKind::CharDevice
    } else if t.is_block_device() {
        FileKind::BlockDevice
    } else {
        FileKind::File
    }
}

/// The entries of a real folder: name, disk inode, kind. `skip` leaves out names (a
/// model folder's layer folders, which its tree only holds scratch entries for).
pub(super) fn list_dir(path: &Path, skip: impl Fn(&str) -> bool) -> Vec<(String, u64, FileKind)> {
    let Ok(rd) = std::fs::read_dir(path) else { return Vec::new() };
    let mut out: Vec<(String, u64, FileKind)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let kind = kind_of_type(e.file_type().ok()?);
            (!skip(&name)).then_some((name, e.ino(), kind))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The digest of a scratch file that was a blob a moment ago (rsync's finished temp file
/// moved into `--partial-dir` or `.~tmp~/`), so that moving it back onto a layer name needs
/// no second hashing pass. Keyed by the file's inode on the disk; valid while its length and
/// ctime are unchanged, and dropped whenever the file is opened for writing or truncated
/// (every write to a scratch file goes through the daemon).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KnownDigest {
    digest: crate::store::Digest,
    len: u64,
    ctime: (i64, u64),
}

#[allow(clippy::unnecessary_cast)]
pub(super) fn ctime_of(s: &rfs::Stat) -> (i64, u64) {
    (s.st_ctime as i64, s.st_ctime_nsec as u64)
}

/// Undo `Fs::make_entry`.
fn remove_made(dir: &OwnedFd, name: &str, what: Make) {
    let flags = if matches!(what, Make::Dir { .. }) { AtFlags::REMOVEDIR } else { AtFlags::empty() };
    let _ = rfs::unlinkat(dir, name, flags);
}

/// What the kernel asks of a new scratch entry.
#[derive(Clone, Copy, Debug)]
pub(super) enum Make<'a> {
    Dir { mode: u32 },
    Node { mode: u32, rdev: u64 },
    Symlink { target: &'a str },
}

impl Fs {
    /// The real folder behind model folder `m` at `sub` ("" for the folder itself), made
    /// on demand when `make` (the tree is the folder's from then on).
    pub(super) fn tree_dir(&self, st: &mut State, m: &Name, sub: &str, make: bool) -> Result<Option<PathBuf>> {
        let root = match st.folder(m).and_then(|f| f.tree.clone()) {
            Some(t) => t,
            None if !make => return Ok(None),
            None => {
                let t = self.new_tree_path(st);
                std::fs::create_dir_all(&t)?;
                st.folder_entry(m).tree = Some(t.clone());
                t
            }
        };
        let dir = if sub.is_empty() { root } else { root.join(sub) };
        if make {
            std::fs::create_dir_all(&dir)?;
            if !sub.is_empty() {
                // A layer folder holding scratch entries stays until it is removed.
                st.folder_entry(m).subs.insert(sub.to_string());
            }
        }
        Ok(Some(dir))
    }

    /// A fresh path for a scratch tree (not made yet).
    pub(super) fn new_tree_path(&self, st: &mut State) -> PathBuf {
        st.next_tree += 1;
        self.store.process_scratch().join("folders").join(st.next_tree.to_string())
    }

    /// The real folder that holds the scratch entries of folder node `parent`: a scratch
    /// folder itself, or the tree of a model folder (`None` when it has none yet).
    pub(super) fn scratch_dir(&self, st: &mut State, parent: &Node, make: bool) -> Result<Option<Fd>> {
        let dir = match parent {
            Node::Scratch(b) => return st.scratch_fds.get(b).cloned().map(Some).ok_or_else(|| stale(*b)),
            Node::Model(m) => self.tree_dir(st, m, "", make)?,
            Node::Sub(m, s) => self.tree_dir(st, m, s, make)?,
            Node::View(k, p) => self.view_tree_dir(*k, p, make)?,
            _ => return Ok(None),
        };
        let Some(dir) = dir else { return Ok(None) };
        match rfs::open(&dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => Ok(Some(Arc::new(fd))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Look `name` up in real folder `dir`. Its inode is held open from now on (dropped
    /// when the kernel forgets it), so the node stays valid across renames and unlinks.
    pub(super) fn scratch_lookup(&self, st: &mut State, dir: &OwnedFd, name: &str) -> Result<Option<Node>> {
        let fd = match rfs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let b = rfs::fstat(&fd)?.st_ino as u64;
        st.scratch_fds.entry(b).or_insert_with(|| Arc::new(fd));
        Ok(Some(Node::Scratch(b)))
    }

    pub(super) fn scratch_fd(&self, st: &State, b: u64) -> Result<Fd> {
        st.scratch_fds.get(&b).cloned().ok_or_else(|| stale(b))
    }

    pub(super) fn scratch_node_attr(&self, st: &mut State, ino: u64, b: u64) -> Result<Attr> {
        let fd = self.scratch_fd(st, b)?;
        Ok(stat_attr(ino, &rfs::fstat(&*fd)?))
    }

    /// Entries of a scratch folder.
    pub(super) fn scratch_children(&self, st: &State, b: u64) -> Result<Vec<(String, u64, FileKind)>> {
        let fd = self.scratch_fd(st, b)?;
        Ok(list_dir(Path::new(&proc_path(&fd)), |_| false))
    }

    /// The scratch entries of a model folder at `sub`: its tree, without the layer folders.
    pub(super) fn tree_children(&self, st: &State, m: &Name, sub: &str) -> Vec<(String, u64, FileKind)> {
        let Some(root) = st.folder(m).and_then(|f| f.tree.as_ref()) else { return Vec::new() };
        let dir = if sub.is_empty() { root.clone() } else { root.join(sub) };
        list_dir(&dir, |name| is_reserved(&super::tree::join(sub, name)))
    }

    /// Does model folder `m` hold nothing at `sub`, neither layers nor scratch entries?
    /// (What `rmdir` and a rename onto it need.)
    pub(super) fn folder_is_empty(&self, st: &State, m: &Name, sub: &str) -> bool {
        st.model_children(m, sub).is_empty() && self.tree_children(st, m, sub).is_empty()
    }

    /// The parent of scratch folder `b`: another scratch folder, or the model folder whose
    /// tree it is in (for `..`).
    pub(super) fn scratch_parent(&self, st: &State, b: u64) -> Option<Node> {
        let fd = st.scratch_fds.get(&b)?;
        let up = rfs::statat(&**fd, "..", AtFlags::empty()).ok()?.st_ino as u64;
        if let Some(v) = self.view_folder_of(fd) {
            return Some(v);
        }
        for (name, f) in &st.folders {
            if let Some(t) = &f.tree
                && std::fs::metadata(t).is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == up)
            {
                return Some(Node::Model(name.clone()));
            }
        }
        Some(Node::Scratch(up))
    }

    /// The entry `name` just made in `dir` gets exactly the mode asked for (the daemon's
    /// own umask must not apply: the kernel applied the caller's), keeping the set-group-ID
    /// bit a folder inherits from a set-group-ID parent.
    fn exact_mode(&self, dir: &OwnedFd, name: &str, mode: u32) -> Result<()> {
        let made = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let have = made.st_mode as u32;
        let inherited = if kind_of_mode(have) == FileKind::Dir { have & libc::S_ISGID } else { 0 };
        let want = (mode & 0o7777) | inherited;
        if have & 0o7777 != want {
            rfs::chmodat(dir, name, Mode::from_raw_mode(want), AtFlags::empty())?;
        }
        Ok(())
    }

    /// The entry `name` just made in `dir` becomes the caller's (the daemon makes it).
    fn give_to_caller(&self, dir: &OwnedFd, name: &str, who: Caller) -> Result<()> {
        if !rustix::process::geteuid().is_root() || who == Caller::daemon() {
            return Ok(());
        }
        let parent = rfs::fstat(dir)?;
        let made = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        // In a set-group-ID folder the group is the folder's (the disk gave it already).
        let gid = (parent.st_mode as u32 & libc::S_ISGID == 0).then(|| rfs::Gid::from_raw(who.gid));
        rfs::chownat(dir, name, Some(rfs::Uid::from_raw(who.uid)), gid, AtFlags::SYMLINK_NOFOLLOW)?;
        let mode = made.st_mode as u32;
        if mode & (libc::S_ISUID | libc::S_ISGID) != 0 && kind_of_mode(mode) != FileKind::Symlink {
            // chown cleared the set-ID bits the caller asked for: give them back.
            rfs::chmodat(dir, name, Mode::from_raw_mode(mode & 0o7777), AtFlags::empty())?;
        }
        Ok(())
    }

    /// mkdir, mknod or symlink of a scratch entry in `dir`.
    pub(super) fn scratch_make(
        &self,
        st: &mut State,
        dir: &OwnedFd,
        name: &str,
        what: Make,
        who: Caller,
    ) -> Result<Attr> {
        self.make_entry(dir, name, what, who)?;
        let found = self.scratch_lookup(st, dir, name).and_then(|n| n.ok_or_else(|| super::enoent(name)));
        let made = found.and_then(|node| self.remembered_attr(st, &node));
        if made.is_err() {
            remove_made(dir, name, what);
        }
        made
    }

    /// Make entry `name` in real folder `dir` as the caller asked: its exact mode, the
    /// caller's. Nothing is left when that fails.
    pub(super) fn make_entry(&self, dir: &OwnedFd, name: &str, what: Make, who: Caller) -> Result<()> {
        match what {
            Make::Dir { mode } => rfs::mkdirat(dir, name, Mode::from_raw_mode(mode & 0o7777))?,
            Make::Node { mode, rdev } => {
                let ft = rfs::FileType::from_raw_mode(mode);
                rfs::mknodat(dir, name, ft, Mode::from_raw_mode(mode & 0o7777), rdev)?
            }
            Make::Symlink { target } => rfs::symlinkat(target, dir, name)?,
        }
        let mode = match what {
            Make::Dir { mode } | Make::Node { mode, .. } => Some(mode),
            Make::Symlink { .. } => None,
        };
        let made =
            mode.map_or(Ok(()), |m| self.exact_mode(dir, name, m)).and_then(|()| self.give_to_caller(dir, name, who));
        if made.is_err() {
            remove_made(dir, name, what);
        }
        made
    }

    /// The attributes of `node`, counted as a lookup the kernel will forget.
    pub(super) fn remembered_attr(&self, st: &mut State, node: &Node) -> Result<Attr> {
        let attr = self.attr_of(st, node)?;
        st.inodes.remember(node);
        Ok(attr)
    }

    /// create(2) of a scratch file in `dir`, opened as asked.
    pub(super) fn scratch_create(
        &self,
        st: &mut State,
        dir: &OwnedFd,
        name: &str,
        mode: u32,
        flags: i32,
        who: Caller,
    ) -> Result<(Attr, Opened)> {
        let oflags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(dir, name, oflags, Mode::from_raw_mode(mode & 0o7777))?;
        let made = self.exact_mode(dir, name, mode).and_then(|()| self.give_to_caller(dir, name, who)).and_then(|()| {
            let node = self.scratch_lookup(st, dir, name)?.ok_or_else(|| super::enoent(name))?;
            self.remembered_attr(st, &node)
        });
        let attr = match made {
            Ok(a) => a,
            Err(e) => {
                let _ = rfs::unlinkat(dir, name, AtFlags::empty());
                return Err(e);
            }
        };
        let file = File::from(fd);
        self.forget_digest(&file); // a new file on a reused inode number
        if flags & libc::O_APPEND != 0 {
            rfs::fcntl_setfl(&file, OFlags::APPEND | OFlags::RDWR)?;
        }
        let fh = self.add_handle(Handle::Scratch(Arc::new(file), attr.ino));
        self.track_download(fh);
        Ok((attr, Opened { fh, keep_cache: false, passthrough: None, direct_io: false, shares_blob_inode: None }))
    }

    /// open(2) of an existing scratch file.
    pub(super) fn scratch_open(&self, fd: &OwnedFd, flags: i32, ino: u64) -> Result<Opened> {
        self.open_scratch(Path::new(&proc_path(fd)), flags, ino)
    }

    /// chmod, chown, truncate, utimens on a scratch inode without an open file.
    pub(super) fn scratch_setattr(&self, fd: &OwnedFd, set: &SetAttr) -> Result<()> {
        let kind = kind_of_mode(rfs::fstat(fd)?.st_mode as u32);
        let link = kind == FileKind::Symlink;
        let path = proc_path(fd);
        if let Some(mode) = set.mode {
            if link {
                return Err(FsError::new(libc::EOPNOTSUPP, "a symlink has no mode of its own"));
            }
            rfs::chmodat(CWD, &path, Mode::from_raw_mode(mode & 0o7777), AtFlags::empty())?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            let (uid, gid) = (set.uid.map(rfs::Uid::from_raw), set.gid.map(rfs::Gid::from_raw));
            rfs::chownat(fd, "", uid, gid, AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)?;
        }
        if let Some(size) = set.size {
            self.forget_digest(fd);
            match kind {
                FileKind::Dir => return Err(FsError::new(libc::EISDIR, "is a folder")),
                FileKind::File => OpenOptions::new().write(true).open(&path)?.set_len(size)?,
                _ => return Err(FsError::new(libc::EINVAL, "not a regular file")),
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let ts = |t: Option<SystemTime>| match t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
                Some(d) => Timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos() as _ },
                None => Timespec { tv_sec: 0, tv_nsec: rfs::UTIME_OMIT },
            };
            let times = Timestamps { last_access: ts(set.atime), last_modification: ts(set.mtime) };
            match link {
                true => rfs::utimensat(fd, "", &times, AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW)?,
                false => rfs::utimensat(CWD, &path, &times, AtFlags::empty())?,
            }
        }
        Ok(())
    }

    pub(super) fn scratch_readlink(&self, fd: &OwnedFd) -> Result<String> {
        let target = rfs::readlinkat(fd, "", Vec::new())?;
        target.into_string().map_err(|_| FsError::new(libc::EINVAL, "a link target that is not UTF-8"))
    }

    /// link(2): a second name for scratch inode `fd` in `dir`.
    pub(super) fn scratch_link(&self, st: &mut State, fd: &OwnedFd, dir: &OwnedFd, name: &str) -> Result<Attr> {
        rfs::linkat(CWD, proc_path(fd).as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)?;
        let node = self.scratch_lookup(st, dir, name)?.ok_or_else(|| super::enoent(name))?;
        self.remembered_attr(st, &node)
    }

    pub(super) fn scratch_remove(&self, dir: &OwnedFd, name: &str, folder: bool) -> Result<()> {
        let flags = if folder { AtFlags::REMOVEDIR } else { AtFlags::empty() };
        Ok(rfs::unlinkat(dir, name, flags)?)
    }

    pub(super) fn scratch_rename(&self, from: (&OwnedFd, &str), to: (&OwnedFd, &str), flags: u32) -> Result<()> {
        let flags = RenameFlags::from_bits_retain(flags);
        Ok(rfs::renameat_with(from.0, from.1, to.0, to.1, flags)?)
    }

    /// Open descriptors of scratch inode `ino` keep reading it but can no longer write it
    /// (it is becoming a blob). Every write to a scratch file goes through the daemon, so
    /// swapping each handle's file for a read-only one is enough.
    pub(super) fn seal_scratch_handles(&self, ino: u64) -> Result<()> {
        let mut handles = self.handles();
        for h in handles.values_mut() {
            if let Handle::Scratch(f, i) = h
                && *i == ino
            {
                *f = Arc::new(File::open(proc_path_of(f))?);
            }
        }
        Ok(())
    }

    /// File `fd` holds exactly blob `digest` (`len` bytes).
    pub(super) fn remember_digest(&self, fd: &impl std::os::fd::AsFd, digest: crate::store::Digest, len: u64) {
        if let Ok(s) = rfs::fstat(fd) {
            let known = KnownDigest { digest, len, ctime: ctime_of(&s) };
            crate::sync::lock(&self.known_digests).insert(s.st_ino, known);
        }
    }

    /// The digest and length of file `fd`, when known and still valid.
    pub(super) fn known_digest(&self, fd: &impl std::os::fd::AsFd) -> Option<(crate::store::Digest, u64)> {
        let known = crate::sync::lock(&self.known_digests);
        if known.is_empty() {
            return None;
        }
        let s = rfs::fstat(fd).ok()?;
        let k = known.get(&s.st_ino)?;
        (k.len == s.st_size as u64 && k.ctime == ctime_of(&s)).then_some((k.digest, k.len))
    }

    /// File `fd` may change: its digest is no longer known.
    pub(super) fn forget_digest(&self, fd: &impl std::os::fd::AsFd) {
        let mut known = crate::sync::lock(&self.known_digests);
        if !known.is_empty()
            && let Ok(s) = rfs::fstat(fd)
        {
            known.remove(&s.st_ino);
        }
    }

    /// The path on disk of entry `name` of real folder `dir` (to hash or adopt it).
    pub(super) fn scratch_path(&self, dir: &OwnedFd, name: &str) -> Result<PathBuf> {
        Ok(std::fs::read_link(proc_path(dir))?.join(name))
    }

    /// A file of this process's scratch folder moves to `name` in `dir` (a layer copied
    /// out to a scratch name).
    pub(super) fn scratch_adopt(&self, temp: &Path, dir: &OwnedFd, name: &str) -> Result<()> {
        Ok(rfs::renameat(CWD, temp, dir, name)?)
    }
}
