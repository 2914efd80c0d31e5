//! A cgroup v2 id to its path under the cgroup2 root. The id is the kernfs
//! node id of the cgroup's directory, which on 64-bit kernels is also its
//! inode number. First choice: open the directory by a kernfs file handle
//! (`open_by_handle_at`, handle type FILEID_KERNFS, the 8-byte id) and read
//! the path back from /proc/self/fd; that needs CAP_DAC_READ_SEARCH and a
//! kernel that exports cgroupfs handles. Otherwise: walk the tree for the
//! directory with that inode.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The path under the cgroup2 root, starting with "/".
    Found(String),
    /// No cgroup has this id (removed, or never existed).
    Gone,
    /// File handles cannot be used here (no privilege, old kernel).
    Unsupported,
}

/// FILEID_KERNFS in include/linux/exportfs.h.
const FILEID_KERNFS: i32 = 0xfe;

#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// Opens the cgroup `id` through `mount_fd` (an fd of the cgroup2 mount
/// point at `point`) and returns its path under the mount.
pub fn by_handle(mount_fd: i32, point: &Path, id: u64) -> Lookup {
    let mut h = KernfsHandle { handle_bytes: 8, handle_type: FILEID_KERNFS, id };
    // SAFETY: a file_handle header followed by its 8 bytes; the kernel only
    // reads it. O_PATH: no permission on the directory itself is needed.
    let fd = unsafe { libc::syscall(libc::SYS_open_by_handle_at, mount_fd, &mut h as *mut KernfsHandle, libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ESTALE) | Some(libc::ENOENT) => Lookup::Gone,
            _ => Lookup::Unsupported,
        };
    }
    let fd = fd as i32;
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}"));
    // SAFETY: the fd opened above, closed once.
    unsafe { libc::close(fd) };
    match link {
        Ok(p) => under(point, &p).map(Lookup::Found).unwrap_or(Lookup::Unsupported),
        Err(_) => Lookup::Unsupported,
    }
}

/// `p` as a path under the mount point, "/" for the mount point itself;
/// None if `p` is elsewhere (a node outside the part of the hierarchy this
/// mount shows, whose link reads differently).
pub(crate) fn under(point: &Path, p: &Path) -> Option<String> {
    let rel = p.strip_prefix(point).ok()?;
    let rel = rel.to_str()?;
    Some(format!("/{rel}"))
}

/// Walks the cgroup2 tree under `point` for the directory whose inode is
/// `id`. Cgroup trees are small (hundreds of directories), and a walk runs
/// only for an id not yet known.
pub fn by_walk(point: &Path, id: u64) -> Lookup {
    let mut stack = vec![point.to_path_buf()];
    while let Some(dir) = stack.pop() {
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.ino() == id => return under(point, &dir).map(Lookup::Found).unwrap_or(Lookup::Gone),
            Ok(_) => {}
            Err(_) => continue, // removed meanwhile
        }
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    Lookup::Gone
}

/// Opens the mount point for `by_handle`. Not O_PATH: open_by_handle_at
/// refuses an O_PATH mount fd (EBADF).
pub fn open_mount(point: &Path) -> Option<i32> {
    let c = CString::new(point.as_os_str().as_bytes()).ok()?;
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    (fd >= 0).then_some(fd)
}
