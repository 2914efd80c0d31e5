//! The processes that read this process's output: tracing them would trace
//! the tracer's own output (`tracer-example | jq`: every line jq prints is a
//! write, which becomes an event, which jq prints...).
//!
//! Found through /proc: the other end of each of our stdout/stderr pipes (a
//! process holding the same pipe open for reading) or ptys (a process holding
//! the pty's master, `/dev/ptmx` with that `tty-index`), then the readers of
//! their stdout/stderr in turn (`| tee f | less`), up to `MAX_DEPTH` hops.

use std::collections::{BTreeSet, HashMap};
use std::fs;

/// Hops followed from this process's output.
const MAX_DEPTH: usize = 8;

/// What an output fd leads to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Sink {
    /// A pipe, by inode.
    Pipe(u64),
    /// A pty, by its index (/dev/pts/N).
    Pty(u32),
}

fn sink_of(target: &str) -> Option<Sink> {
    if let Some(ino) = target.strip_prefix("pipe:[").and_then(|t| t.strip_suffix(']')) {
        return ino.parse().ok().map(Sink::Pipe);
    }
    target.strip_prefix("/dev/pts/").and_then(|n| n.parse().ok()).map(Sink::Pty)
}

/// Where fds 1 and 2 of `pid` lead.
fn sinks_of(pid: &str) -> Vec<Sink> {
    (1..=2).filter_map(|fd| fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()).filter_map(|t| sink_of(t.to_str()?)).collect()
}

/// Every process's fds that read a sink: pipe inode or pty index -> pids.
fn readers_by_sink() -> HashMap<Sink, BTreeSet<u32>> {
    let mut by: HashMap<Sink, BTreeSet<u32>> = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else { return by };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else { continue };
            let Some(target) = target.to_str() else { continue };
            let fdinfo = || fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_str().unwrap_or(""))).ok();
            let sink = if target.starts_with("pipe:[") {
                // The read end of a pipe is open O_RDONLY (access mode 0).
                let info = fdinfo();
                let flags = info.as_deref().and_then(|i| i.lines().find_map(|l| l.strip_prefix("flags:")));
                match (sink_of(target), flags.and_then(|f| u32::from_str_radix(f.trim(), 8).ok())) {
                    (Some(s), Some(f)) if f & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32 => Some(s),
                    _ => None,
                }
            } else if target == "/dev/ptmx" || target == "/dev/pts/ptmx" {
                fdinfo().and_then(|i| i.lines().find_map(|l| l.strip_prefix("tty-index:")?.trim().parse().ok())).map(Sink::Pty)
            } else {
                None
            };
            if let Some(s) = sink {
                by.entry(s).or_default().insert(pid);
            }
        }
    }
    by
}

/// The pids that read this process's stdout and stderr, directly or through
/// the output of readers, this process excluded.
pub fn output_readers() -> Vec<u32> {
    let me = std::process::id();
    let start = sinks_of("self");
    if start.is_empty() {
        return Vec::new(); // files, /dev/null, sockets: no process reads them back to us
    }
    let by_sink = readers_by_sink();
    let mut found = BTreeSet::new();
    let mut frontier = start;
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for sink in &frontier {
            for &pid in by_sink.get(sink).into_iter().flatten() {
                if pid != me && found.insert(pid) {
                    next.extend(sinks_of(&pid.to_string()));
                }
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_are_parsed_from_fd_targets() {
        assert_eq!(sink_of("pipe:[12345]"), Some(Sink::Pipe(12345)));
        assert_eq!(sink_of("/dev/pts/3"), Some(Sink::Pty(3)));
        assert_eq!(sink_of("/dev/null"), None);
        assert_eq!(sink_of("socket:[77]"), None);
    }
}
