//! Many syscall events (`syscalls/*`) through the two shared programs of
//! c/bpf/syscalls.h, on the raw sys_enter and sys_exit tracepoints, instead
//! of one perf event per syscall event: detaching a perf event waits for a
//! grace period under the kernel's event_mutex (tens of ms each, 25 s for
//! all syscalls), a raw tracepoint's link does not.
//!
//! The syscall number of each event comes from the kernel's own metadata,
//! read by the `tb_syscall_ident` file iterator through the event's tracefs
//! `enable` file, and is used only when the iterator found exactly the
//! event that file belongs to (its tracefs ID). Events it cannot identify
//! are attached one by one, as fewer events always are.

use crate::error::{Error, Result};
use crate::skeleton::{Loaded, Open};
use crate::tracepoint_format::Format;
use libbpf_rs::{Link, MapCore, MapFlags};
use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

/// Syscall events needed for the shared programs: below this, one perf
/// event each detaches about as fast (BACKGROUND_DETACH_MAX, tracer.rs),
/// and syscalls that are not traced pay nothing.
pub const SHARED_MIN: usize = 17;
/// Syscall numbers the shared programs know (TB_SYSCALL_NR_MAX).
const NR_MAX: i32 = 1024;
/// One record of tb_syscall_ident (struct tb_syscall_ident_rec).
const IDENT_REC_SIZE: usize = 16;

/// Whether `name` (category/name) is a syscall enter or exit event.
fn direction(name: &str) -> Option<Direction> {
    let event = name.strip_prefix("syscalls/")?;
    if event.starts_with("sys_enter_") {
        Some(Direction::Enter)
    } else if event.starts_with("sys_exit_") {
        Some(Direction::Exit)
    } else {
        None
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Enter,
    Exit,
}

/// Loads the shared programs the generic tracepoints `names` call for
/// (those of SHARED_MIN syscall events or more), and the identifying
/// iterator with them.
pub fn prepare(open: &mut Open, names: &[&str]) {
    let dirs: Vec<Direction> = names.iter().filter_map(|n| direction(n)).collect();
    let shared = dirs.len() >= SHARED_MIN;
    open.progs.handle__sys_enter.set_autoload(shared && dirs.contains(&Direction::Enter));
    open.progs.handle__sys_exit.set_autoload(shared && dirs.contains(&Direction::Exit));
    open.progs.tb_syscall_ident.set_autoload(shared);
    if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
        rodata.tb_ident_tgid = std::process::id();
    }
}

/// Attaches the shared programs for the syscall events among `formats`
/// that the kernel's metadata identifies. Returns the links and the
/// tracefs IDs of the events they record: the others are for
/// `attach_generic`. Nothing is attached if the programs were not loaded
/// (fewer than SHARED_MIN syscall events), no event could be identified, or
/// the kernel refuses the iterator or either program: then every syscall
/// event gets its own perf event, the slower way to the same records.
pub fn attach(loaded: &Loaded, tracing: &Path, formats: &[Arc<Format>]) -> Result<(Vec<Link>, HashSet<u32>)> {
    let progs = loaded.progs();
    let (enter, exit) = (&progs.handle__sys_enter, &progs.handle__sys_exit);
    if !progs.tb_syscall_ident.autoload() {
        return Ok((Vec::new(), HashSet::new()));
    }
    let syscall_events: Vec<&Arc<Format>> = formats.iter().filter(|f| direction(f.name).is_some()).collect();
    // A kernel that refuses the iterator leaves every event to its own
    // perf event, as if there were fewer.
    let Ok(numbers) = identify(loaded, tracing, &syscall_events) else {
        return Ok((Vec::new(), HashSet::new()));
    };
    let mut ids: HashMap<i32, (u32, u32)> = HashMap::new();
    for f in &syscall_events {
        if let Some(&nr) = numbers.get(&f.id) {
            let slot = ids.entry(nr).or_default();
            match direction(f.name) {
                Some(Direction::Enter) => slot.0 = f.id,
                _ => slot.1 = f.id,
            }
        }
    }
    if ids.is_empty() {
        return Ok((Vec::new(), HashSet::new()));
    }
    let map = &loaded.maps().syscall_ids;
    for (nr, (enter_id, exit_id)) in &ids {
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&enter_id.to_ne_bytes());
        value[4..].copy_from_slice(&exit_id.to_ne_bytes());
        map.update(&(*nr as u32).to_ne_bytes(), &value, MapFlags::ANY)
            .map_err(|e| Error::Bpf { context: "writing the syscall numbers of the shared programs".into(), source: e })?;
    }
    // Both or neither: with one of them refused, its events go to their
    // own perf events with the others (the link attached is dropped).
    let mut links = Vec::new();
    for prog in [enter, exit].into_iter().filter(|p| p.autoload()) {
        match prog.attach() {
            Ok(l) => links.push(l),
            Err(_) => return Ok((Vec::new(), HashSet::new())),
        }
    }
    let handled = ids.values().flat_map(|&(a, b)| [a, b]).filter(|&id| id != 0).collect();
    Ok((links, handled))
}

/// The syscall number of each event of `events` (by tracefs ID), as the
/// kernel's metadata gives it; events whose `enable` file cannot be opened
/// or whose file leads to another event are left out.
fn identify(loaded: &Loaded, tracing: &Path, events: &[&Arc<Format>]) -> Result<HashMap<u32, i32>> {
    // Opened read-only and never read: opening changes nothing.
    let files: HashMap<i32, (u32, std::fs::File)> = events
        .iter()
        .filter_map(|f| {
            let file = std::fs::File::open(tracing.join("events").join(f.name).join("enable")).ok()?;
            Some((file.as_raw_fd(), (f.id, file)))
        })
        .collect();
    let link = loaded
        .progs()
        .tb_syscall_ident
        .attach_iter_with_opts(libbpf_rs::IterOpts::None)
        .map_err(|e| Error::Bpf { context: "creating the syscall identification iterator".into(), source: e })?;
    let bytes = crate::iter_output::read_all(&link, IDENT_REC_SIZE * 1024, "syscall identification iterator")?;
    Ok(parse_idents(&bytes, &files.iter().map(|(fd, (id, _))| (*fd, *id)).collect()))
}

/// Reads tb_syscall_ident's records: (fd, tracefs ID, syscall number) each.
/// Keeps the number of each fd in `opened` (fd → the ID of the event it was
/// opened for) whose record names that same event and a number in range.
fn parse_idents(bytes: &[u8], opened: &HashMap<i32, u32>) -> HashMap<u32, i32> {
    let u32_at = |r: &[u8], o: usize| u32::from_ne_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
    bytes
        .chunks_exact(IDENT_REC_SIZE)
        .filter_map(|r| {
            let (fd, id, nr) = (u32_at(r, 0) as i32, u32_at(r, 4), u32_at(r, 8) as i32);
            (opened.get(&fd) == Some(&id) && (0..NR_MAX).contains(&nr)).then_some((id, nr))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fd: u32, id: u32, nr: i32) -> Vec<u8> {
        [fd.to_ne_bytes(), id.to_ne_bytes(), nr.to_ne_bytes(), [0; 4]].concat()
    }

    #[test]
    fn an_fd_counts_only_for_the_event_it_was_opened_for() {
        let opened: HashMap<i32, u32> = [(3, 840), (4, 839), (5, 858)].into();
        let bytes = [
            rec(0, 0, 0),      // stdin: not opened by us
            rec(3, 840, 1),    // sys_enter_write
            rec(4, 777, 1),    // leads to another event: ignored
            rec(5, 858, 4096), // number out of range: ignored
            rec(9, 900, 2),    // not one of ours
        ]
        .concat();
        assert_eq!(parse_idents(&bytes, &opened), [(840, 1)].into());
    }

    #[test]
    fn syscall_events_are_told_by_their_category_and_prefix() {
        assert!(direction("syscalls/sys_enter_write") == Some(Direction::Enter));
        assert!(direction("syscalls/sys_exit_newstat") == Some(Direction::Exit));
        assert!(direction("raw_syscalls/sys_enter").is_none());
        assert!(direction("sched/sched_switch").is_none());
    }
}
