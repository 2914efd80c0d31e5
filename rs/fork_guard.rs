//! What a forked child inherits of a tracer, and how it lets go of it.
//!
//! A child of `fork()` gets copies of the tracer's file descriptors (BPF
//! programs, links, perf events, maps) and of its memory, but not its reader
//! thread, and any lock another thread held at the fork stays held forever.
//! Left alone, the child's copies keep the programs attached after the parent
//! closes, and dropping them there runs libbpf's detach on perf events it
//! shares with the parent. So:
//! - in the child, a handler registered with `pthread_atfork` closes every
//!   descriptor a tracer registered here, before the child runs any code of
//!   its own (a plain `close`, which touches only the child's table). A
//!   descriptor is unregistered just before the tracer closes it (on the
//!   release worker, see `release`), never after: by then its number may
//!   name a pipe of the child's own (`subprocess`). As a second guard the
//!   child closes a number only while it still names an anonymous-inode file
//!   (all BPF objects, perf events, epoll and event fds share that inode);
//! - the kernel buffers' mappings are marked `MADV_DONTFORK`, so the child
//!   holds no reference to the maps either;
//! - every entry point of a `Tracer` compares `getpid()` with its owner and,
//!   in a child, does nothing but fail clearly (or, to close, forget).

use std::collections::HashSet;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Once;

/// Descriptors of all open tracers of this process (-1: free slot). A fixed
/// array of atomics: the child handler may take no lock (another thread may
/// have held it at the fork) and must not allocate.
const SLOTS: usize = 16384;
static FDS: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
static REGISTER_HANDLER: Once = Once::new();
/// Device and inode number of the anonymous inode behind the registered
/// descriptors (0 until a probe succeeded).
static ANON_DEV: AtomicU64 = AtomicU64::new(0);
static ANON_INO: AtomicU64 = AtomicU64::new(0);

/// (device, inode) of the file behind `fd`.
fn file_id(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: fstat into a zeroed stat buffer; async-signal-safe, no allocation.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

extern "C" fn close_in_child() {
    let anon = (ANON_DEV.load(Ordering::Relaxed), ANON_INO.load(Ordering::Relaxed));
    for slot in FDS.iter() {
        let fd = slot.swap(-1, Ordering::Relaxed);
        // Without the inode (no probe succeeded), by number alone.
        if fd >= 0 && (anon.1 == 0 || file_id(fd) == Some(anon)) {
            // SAFETY: closes a descriptor of this (child) process only.
            unsafe { libc::close(fd) };
        }
    }
}

/// The calling process's id.
pub(crate) fn current_pid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::getpid() }
}

/// Descriptors of one tracer, registered for closing in forked children
/// until dropped.
pub(crate) struct ForkFds {
    slots: Vec<usize>,
}

impl ForkFds {
    /// Registers `fds`; those that find no free slot (more than SLOTS open in
    /// all) stay open in children, which is what happens without this.
    pub(crate) fn register(fds: impl IntoIterator<Item = i32>) -> ForkFds {
        if ANON_INO.load(Ordering::Relaxed) == 0 {
            // The anonymous inode, as an eventfd shows it (tried again at
            // the next tracer if no descriptor could be made now).
            // SAFETY: creates and closes a descriptor of its own.
            let probe = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if let Some((dev, ino)) = file_id(probe) {
                ANON_DEV.store(dev, Ordering::Relaxed);
                ANON_INO.store(ino, Ordering::Relaxed);
            }
            if probe >= 0 {
                // SAFETY: the descriptor created above.
                unsafe { libc::close(probe) };
            }
        }
        REGISTER_HANDLER.call_once(|| {
            // SAFETY: registers a handler that only closes descriptors.
            unsafe { libc::pthread_atfork(None, None, Some(close_in_child)) };
        });
        let anon = (ANON_DEV.load(Ordering::Relaxed), ANON_INO.load(Ordering::Relaxed));
        let mut slots = Vec::new();
        let mut start = 0;
        for fd in fds {
            if anon.1 != 0 && file_id(fd) != Some(anon) {
                continue; // never closed in children: not one of the tracer's objects
            }
            while start < SLOTS {
                if FDS[start].compare_exchange(-1, fd, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    slots.push(start);
                    start += 1;
                    break;
                }
                start += 1;
            }
        }
        ForkFds { slots }
    }
}

impl ForkFds {
    /// `fds` are no longer closed in forked children. Called just before
    /// they are closed: a child forked in between keeps a copy (harmless),
    /// whereas one forked after the close might find the number taken by
    /// another file, which it must not close.
    pub(crate) fn forget(&mut self, fds: &[i32]) {
        self.slots.retain(|&i| {
            let fd = FDS[i].load(Ordering::Relaxed);
            if fds.contains(&fd) {
                FDS[i].store(-1, Ordering::Relaxed);
                false
            } else {
                true
            }
        });
    }
}

impl Drop for ForkFds {
    fn drop(&mut self) {
        for &i in &self.slots {
            FDS[i].store(-1, Ordering::Relaxed);
        }
    }
}

/// The kind of object behind each open descriptor of this process whose
/// target is an anonymous inode (`anon_inode:bpf-map`, `[perf_event]`, ...).
pub(crate) fn anon_fds() -> HashSet<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return HashSet::new() };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd: i32 = e.file_name().to_str()?.parse().ok()?;
        let target = std::fs::read_link(e.path()).ok()?;
        let target = target.to_str()?.strip_prefix("anon_inode:")?.to_string();
        Some((fd, target))
    })
    .collect()
}

/// Of the descriptors opened since `before`, those of BPF objects and perf
/// events: the tracer's own (the filter keeps out any file another thread
/// opened meanwhile).
pub(crate) fn new_bpf_fds(before: &HashSet<(i32, String)>) -> Vec<i32> {
    anon_fds()
        .difference(before)
        .filter(|(_, kind)| kind.starts_with("bpf") || kind.starts_with("btf") || kind == "[perf_event]")
        .map(|(fd, _)| *fd)
        .collect()
}

/// Address ranges of the BPF map mappings of this process.
pub(crate) fn bpf_mappings() -> HashSet<(usize, usize)> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return HashSet::new() };
    maps.lines()
        .filter(|l| l.ends_with("anon_inode:bpf-map"))
        .filter_map(|l| {
            let (start, end) = l.split_whitespace().next()?.split_once('-')?;
            Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?))
        })
        .collect()
}

/// Marks the BPF map mappings made since `before` (the ring buffer's and the
/// payload area's) `MADV_DONTFORK`.
pub(crate) fn keep_new_mappings_from_children(before: &HashSet<(usize, usize)>) {
    for (start, end) in bpf_mappings().difference(before) {
        // SAFETY: the range is a whole mapping of this process; DONTFORK only
        // changes what a child inherits.
        unsafe { libc::madvise(*start as *mut libc::c_void, end - start, libc::MADV_DONTFORK) };
    }
}
