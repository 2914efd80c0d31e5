//! What only /proc has about a process: its executable, argv and working
//! directory, read through one open /proc/<pid> directory so that a pid
//! reused meanwhile is never mistaken for the process the kernel reported.

use crate::types::var_flags;
use crate::value::Var;
use bytes::Bytes;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A process's /proc fields, each captured or flagged lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcFields {
    pub(crate) exe: Var,
    pub(crate) cwd: Var,
    pub(crate) argv: Var,
}

/// Byte limits of the fields (from events.toml, and argv_max).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) exe: usize,
    pub(crate) cwd: usize,
    pub(crate) argv: usize,
}

/// Why a /proc file gave nothing: the flag for its field.
fn lost_flag(e: &std::io::Error) -> u32 {
    match e.raw_os_error() {
        // The process (or its /proc entry) is gone.
        Some(libc::ENOENT) | Some(libc::ESRCH) => var_flags::EXITED,
        _ => var_flags::UNREADABLE,
    }
}

fn lost(flag: u32) -> Var {
    Var { data: Bytes::new(), flags: flag, size: 0 }
}

/// `data` cut at `max`, flagged and sized like a live field cut at its max.
fn captured(mut data: Vec<u8>, max: usize) -> Var {
    let size = data.len() as u64;
    let mut flags = 0;
    if data.len() > max {
        data.truncate(max);
        flags |= var_flags::TRUNCATED;
    }
    Var { data: Bytes::from(data), flags, size }
}

fn cstr(name: &str) -> CString {
    CString::new(name).expect("no NUL in /proc file names")
}

fn openat(dir: &OwnedFd, name: &str, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let name = cstr(name);
    // SAFETY: a valid directory fd and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_file(dir: &OwnedFd, name: &str) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::from(openat(dir, name, libc::O_RDONLY)?).read_to_end(&mut out)?;
    Ok(out)
}

fn readlinkat(dir: &OwnedFd, name: &str) -> std::io::Result<Vec<u8>> {
    let name = cstr(name);
    // PATH_MAX and a byte more, to tell a full buffer from a cut.
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: a valid directory fd, a NUL-terminated name and a buffer of buf.len() bytes.
    let n = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The start time in clock ticks since boot, field 22 of /proc/<pid>/stat
/// (after the comm, which may hold spaces and parentheses).
fn stat_start_ticks(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // Fields from 3 (state) on: 22 is the 20th.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Clock ticks per second of /proc's times (USER_HZ).
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// CLOCK_BOOTTIME now, in ns: the clock of the kernel's start times.
pub(crate) fn boot_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A process /proc lists: its pid, and the comm of /proc/<pid>/stat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) pid: u32,
    pub(crate) comm: Vec<u8>,
}

/// The processes /proc lists, not in `seen`, that surely started before
/// `boot_ns` (a whole clock tick before it): those the kernel's task walk
/// should have reported but did not (a process hidden from BPF, as some
/// sandboxes hide their pid 1).
pub(crate) fn unseen(seen: &std::collections::HashSet<u32>, boot_ns: u64) -> Vec<Listed> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let tick_ns = 1_000_000_000 / ticks_per_second();
    let mut out = Vec::new();
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if seen.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else { continue };
        let (Some(open), Some(close)) = (stat.iter().position(|&b| b == b'('), stat.iter().rposition(|&b| b == b')')) else {
            continue;
        };
        match stat_start_ticks(&stat) {
            Some(t) if (t + 1).saturating_mul(tick_ns) <= boot_ns => {}
            _ => continue,
        }
        out.push(Listed { pid, comm: stat.get(open + 1..close).unwrap_or_default().to_vec() });
    }
    out
}

/// Reads exe, cwd and argv of process `pid`, which the kernel reported as
/// started at `start_ns` (boot time): a /proc entry with another start is a
/// new process that reused the pid, and the fields are then lost as
/// "exited". A kernel thread has no executable or argv: both are empty.
pub(crate) fn read(pid: u32, start_ns: u64, kernel_thread: bool, limits: Limits) -> ProcFields {
    let gone = || ProcFields { exe: lost(var_flags::EXITED), cwd: lost(var_flags::EXITED), argv: lost(var_flags::EXITED) };
    let dir = match std::fs::File::open(format!("/proc/{pid}")) {
        Ok(f) => OwnedFd::from(f),
        Err(e) => {
            let f = lost_flag(&e);
            return ProcFields { exe: lost(f), cwd: lost(f), argv: lost(f) };
        }
    };
    // The open directory stays bound to the process it was opened for: if
    // that one exits, reads through it fail rather than reach a newcomer.
    match read_file(&dir, "stat").ok().as_deref().and_then(stat_start_ticks) {
        Some(ticks) if ticks == start_ns / (1_000_000_000 / ticks_per_second()) => {}
        _ => return gone(),
    }
    let link = |name: &str, max: usize| match readlinkat(&dir, name) {
        Ok(path) => captured(path, max),
        Err(e) => lost(lost_flag(&e)),
    };
    let cwd = link("cwd", limits.cwd);
    if kernel_thread {
        return ProcFields { exe: Var::default(), cwd, argv: Var::default() };
    }
    let exe = link("exe", limits.exe);
    let argv = match read_file(&dir, "cmdline") {
        // A process with no memory any more (exiting, a zombie) shows an
        // empty cmdline and no exe: it exited.
        Ok(a) if a.is_empty() && exe.flags & var_flags::EXITED != 0 => lost(var_flags::EXITED),
        Ok(a) => captured(a, limits.argv),
        Err(e) => lost(lost_flag(&e)),
    };
    ProcFields { exe, cwd, argv }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { exe: 4096, cwd: 4096, argv: 1 << 20 };

    /// This process's start in ns, as the kernel's start_boottime rounds
    /// to /proc's ticks.
    fn my_start_ns() -> u64 {
        let stat = std::fs::read("/proc/self/stat").unwrap();
        stat_start_ticks(&stat).unwrap() * (1_000_000_000 / ticks_per_second())
    }

    #[test]
    fn a_pid_that_does_not_exist_is_lost_as_exited() {
        // pid_max is at most 2^22: this pid never exists.
        let got = read((1 << 22) + 5, 0, false, LIMITS);
        for v in [&got.exe, &got.cwd, &got.argv] {
            assert_eq!(v.lost(), Some("exited"), "{got:?}");
            assert!(v.data.is_empty() && !v.captured());
        }
    }

    #[test]
    fn this_process_reads_as_itself() {
        let me = std::process::id();
        let got = read(me, my_start_ns(), false, LIMITS);
        assert_eq!(got.exe.data.as_ref(), std::fs::read_link("/proc/self/exe").unwrap().as_os_str().as_encoded_bytes());
        assert_eq!(got.cwd.data.as_ref(), std::env::current_dir().unwrap().as_os_str().as_encoded_bytes());
        let argv: Vec<String> = got.argv.strings().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
        assert_eq!(argv, std::env::args().collect::<Vec<_>>());
        assert_eq!((got.exe.flags, got.cwd.flags, got.argv.flags), (0, 0, 0));
        assert_eq!(got.argv.size, got.argv.data.len() as u64);
    }

    #[test]
    fn another_start_time_is_a_reused_pid() {
        let got = read(std::process::id(), my_start_ns() + 10_000_000_000, false, LIMITS);
        assert_eq!([got.exe.lost(), got.cwd.lost(), got.argv.lost()], [Some("exited"); 3]);
    }

    #[test]
    fn argv_beyond_the_limit_is_cut_and_flagged() {
        let got = read(std::process::id(), my_start_ns(), false, Limits { argv: 3, ..LIMITS });
        assert_eq!(got.argv.data.len(), 3);
        assert!(got.argv.truncated() && got.argv.captured());
        assert!(got.argv.size > 3);
    }

    #[test]
    fn stat_with_parentheses_in_comm() {
        let stat = b"42 (a) b (c)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 1000 100";
        assert_eq!(stat_start_ticks(stat), Some(777));
    }
}
