//! The thin `fuser` adapter: translate requests to `crate::fs` and errors to errno. No
//! filesystem meaning lives here, and no lifecycle (that is `crate::mount`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::fs::{Attr, Caller, FileKind, Fs, FsError, Opened, SetAttr, TTL};
use crate::store::Digest;

/// One kernel backing file per blob, shared by every open of it (fuser's passthrough example).
#[derive(Default)]
struct Backing {
    by_blob: HashMap<Digest, Weak<BackingId>>,
    by_fh: HashMap<u64, Arc<BackingId>>,
}

pub struct FuseFs {
    fs: Arc<Fs>,
    /// Serve the `user.ollama.*` attributes. Off by default: any xattr answer costs a
    /// round trip per file on every `ls -l` (it asks for `security.selinux` and ACLs),
    /// while ENOSYS makes the kernel stop asking for the whole mount.
    xattrs: bool,
    /// Shared with `crate::mount`, which probes passthrough once the kernel has answered.
    passthrough: Arc<AtomicBool>,
    backing: Mutex<Backing>,
}

impl FuseFs {
    pub fn new(fs: Arc<Fs>, xattrs: bool, passthrough: Arc<AtomicBool>) -> FuseFs {
        FuseFs { fs, xattrs, passthrough, backing: Mutex::default() }
    }
}

/// Every refusal gets a log line that says why, shown with `-v` (the default log keeps to
/// changes of the store, warnings and errors); a failing disk is an error.
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
        libc::ENOENT => log::trace!("{name}: {}", e.why),
        libc::EIO | libc::ENOSPC => log::error!("{name}: {}", e.why),
        n => log::debug!("{name} ({n}): {}", e.why),
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
        rdev: a.rdev,
        blksize: 1 << 20,
        flags: 0,
    }
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::Dir => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

/// Who asked: what they create is theirs.
fn caller(req: &Request) -> Caller {
    Caller { uid: req.uid(), gid: req.gid() }
}

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

fn ttl_for(a: &Attr) -> Duration {
    if a.kind == FileKind::Symlink || a.transient { Duration::ZERO } else { TTL }
}

/// How long the kernel may keep a name: a weights entry is looked up again on every path
/// walk, so the core knows which folder a write-open of the shared inode came through.
fn entry_ttl_for(a: &Attr) -> Duration {
    if a.shared { Duration::ZERO } else { ttl_for(a) }
}

impl FuseFs {
    fn reply_opened(&self, o: Opened, reply: ReplyOpen) {
        let mut flags = FopenFlags::empty();
        if o.keep_cache {
            flags |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        if o.direct_io {
            flags |= FopenFlags::FOPEN_DIRECT_IO;
        }
        // A writer on a weights inode that readers hold in passthrough mode must share it.
        if let Some((digest, _)) = &o.shares_blob_inode
            && self.passthrough.load(Ordering::Relaxed)
        {
            let mut b = crate::sync::lock(&self.backing);
            if let Some(id) = b.by_blob.get(digest).and_then(Weak::upgrade) {
                b.by_fh.insert(o.fh, id.clone());
                reply.opened_passthrough(FileHandle(o.fh), FopenFlags::empty(), &id);
                return;
            }
        }
        if let Some((digest, file)) = o.passthrough
            && self.passthrough.load(Ordering::Relaxed)
        {
            let mut b = crate::sync::lock(&self.backing);
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
        let mut b = crate::sync::lock(&self.backing);
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
        // Writers are opened with FOPEN_DIRECT_IO (see `fs::Opened`); this keeps a shared
        // mmap of such a file possible (kernel 6.6 and later; older ones ignore it).
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        if self.passthrough.load(Ordering::Relaxed) {
            // Asked for here; whether it works is probed and reported once by the mount.
            if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_err() || config.set_max_stack_depth(1).is_err() {
                log::debug!("kernel offers no FUSE passthrough");
                self.passthrough.store(false, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.fs.lookup_from(req.pid(), parent.0, name) {
            Ok(a) => reply.entry_with_ttls(&ttl_for(&a), &entry_ttl_for(&a), &to_file_attr(&a), Generation(0)),
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

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.fs.mkdir_as(caller(req), parent.0, name, mode & !umask) {
            Ok(a) => reply.entry(&TTL, &to_file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mode = (mode & libc::S_IFMT) | (mode & !libc::S_IFMT & !umask);
        match self.fs.mknod_as(caller(req), parent.0, name, mode, rdev as u64) {
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

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let (name, target) = match (name_str(link_name), target.to_str()) {
            (Ok(n), Some(t)) => (n, t),
            _ => return reply.error(Errno::EINVAL),
        };
        match self.fs.symlink_as(caller(req), parent.0, name, target) {
            Ok(a) => reply.entry(&ttl_for(&a), &to_file_attr(&a), Generation(0)),
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

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open_from(req.pid(), ino.0, flags.0) {
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
        let res = self.fs.readdirplus(ino.0, fh.0, offset, |offset, name, attr| {
            reply.add(INodeNo(attr.ino), offset, name, &entry_ttl_for(attr), &to_file_attr(attr), Generation(0))
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
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
        req: &Request,
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
        match self.fs.create_as(caller(req), parent.0, name, mode & !umask, flags) {
            Ok((a, o)) => {
                let flags = if o.direct_io { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::empty() };
                reply.created(&ttl_for(&a), &to_file_attr(&a), Generation(0), FileHandle(o.fh), flags)
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
