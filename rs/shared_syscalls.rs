//! Syscall events through the two shared programs of c/bpf/syscalls.h, on
//! the raw sys_enter and sys_exit tracepoints, instead of one perf event per
//! syscall event:
//! - a traced syscall costs 90-120 ns less per call on this VM, recorded
//!   or filtered out, and one not traced 45-65 ns more
//!   (bench/results/syscall_paths.md);
//! - detaching a perf event waits for a grace period under the kernel's
//!   event_mutex (tens of ms each, 25 s for all syscalls), a raw
//!   tracepoint's link does not.
//!
//! The typed syscall events (write, openat, …) always go this way; generic
//! ones when there are SHARED_MIN or more of them.
//!
//! The syscall number of each event comes from the kernel's own metadata,
//! read by the `tb_syscall_ident` file iterator through the event's tracefs
//! `enable` file, and is used only when the iterator found exactly the
//! event that file belongs to (its tracefs ID). Events it cannot identify
//! get their own perf event, as fewer generic events always do.

use crate::error::{Error, Result};
use crate::skeleton::{Loaded, Open};
use crate::tracepoint_format::Format;
use crate::types::EventType;
use libbpf_rs::{Link, MapCore, MapFlags};
use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

/// Generic syscall events needed for the shared programs to record them:
/// below this, one perf event each detaches about as fast
/// (BACKGROUND_DETACH_MAX, tracer.rs).
pub const SHARED_MIN: usize = 17;
/// Syscall numbers the shared programs know (TB_SYSCALL_NR_MAX).
const NR_MAX: i32 = 1024;
/// One record of tb_syscall_ident (struct tb_syscall_ident_rec).
const IDENT_REC_SIZE: usize = 16;
/// A syscall_ids entry of a typed event: this flag and its event id
/// (TB_SYSCALL_TYPED), else a generic event's tracefs ID.
const TYPED: u32 = 0x8000_0000;

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

/// The bit of typed event `e` in tb_shared_typed: its place among the typed
/// syscall events in events.toml order (TB_SYSCALL_TRACEPOINT_LIST).
fn shared_slot(e: EventType) -> Option<u32> {
    let slot = EventType::ALL.iter().filter(|x| x.category() == "syscalls" && !x.synthetic()).position(|x| *x == e)?;
    u32::try_from(slot).ok().filter(|&s| s < 64)
}

/// The programs this module loads.
pub const PROGRAMS: [&str; 3] = ["handle__sys_enter", "handle__sys_exit", "tb_syscall_ident"];

/// The typed events of `events` that the shared programs can record.
pub fn typed_syscalls(events: &[EventType]) -> impl Iterator<Item = EventType> + '_ {
    events.iter().copied().filter(|e| direction(e.name()).is_some() && shared_slot(*e).is_some())
}

/// Loads the shared programs the typed syscall events of `typed` (if
/// `shared_typed`) and the generic tracepoints `names` call for, and the
/// identifying iterator with them. Typed events the shared programs are to
/// record get no program of their own (`records_on_its_own`).
pub fn prepare(open: &mut Open, typed: &[EventType], names: &[&str], shared_typed: bool) {
    let generic: Vec<Direction> = names.iter().filter_map(|n| direction(n)).collect();
    let shared_generic = generic.len() >= SHARED_MIN;
    let mut dirs: Vec<Direction> = if shared_generic { generic } else { Vec::new() };
    let mut mask = 0u64;
    if shared_typed {
        for e in typed_syscalls(typed) {
            mask |= shared_slot(e).map_or(0, |s| 1 << s);
            dirs.extend(direction(e.name()));
        }
    }
    open.progs.handle__sys_enter.set_autoload(dirs.contains(&Direction::Enter));
    open.progs.handle__sys_exit.set_autoload(dirs.contains(&Direction::Exit));
    open.progs.tb_syscall_ident.set_autoload(!dirs.is_empty());
    if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
        rodata.tb_ident_tgid = std::process::id();
        rodata.tb_shared_typed = mask;
        rodata.tb_shared_generic = shared_generic;
    }
}

/// Whether typed event `e` needs its own program, given `shared_typed` (as
/// passed to `prepare`).
pub fn records_on_its_own(e: EventType, shared_typed: bool) -> bool {
    !shared_typed || typed_syscalls(&[e]).next().is_none()
}

/// What the shared programs are set up to record.
#[derive(Default)]
pub struct Plan {
    /// Tracefs IDs of the generic events: the others are for
    /// `attach_generic`.
    pub generic: HashSet<u32>,
    /// The typed events.
    pub typed: HashSet<EventType>,
}

impl Plan {
    /// The typed syscall events of `events` that `prepare` gave to the
    /// shared programs and that it does not record (a kernel that refuses
    /// the iterator, or an event it cannot identify, leaves some out).
    pub fn not_covered(&self, events: &[EventType]) -> Vec<&'static str> {
        typed_syscalls(events).filter(|e| !self.typed.contains(e)).map(|e| e.name()).collect()
    }
}

/// Finds the syscall numbers of the typed syscall events of `typed` (if
/// `shared_typed`, as passed to `prepare`) and of
/// the generic syscall events among `formats` (if SHARED_MIN or more) in the
/// kernel's metadata, and writes them for the shared programs. Nothing is
/// planned if the programs were not loaded, no event could be identified,
/// or the kernel refuses the iterator: then generic syscall events get
/// their own perf event each, the slower way to the same records.
pub fn plan(loaded: &Loaded, tracing: &Path, typed: &[EventType], shared_typed: bool, formats: &[Arc<Format>]) -> Result<Plan> {
    let progs = loaded.progs();
    if !progs.tb_syscall_ident.autoload() {
        return Ok(Plan::default());
    }
    let generic: Vec<&Arc<Format>> = formats.iter().filter(|f| direction(f.name).is_some()).collect();
    // (name, tracefs ID, syscall_ids value) of each candidate.
    let mut candidates: Vec<(&str, u32, u32)> = Vec::new();
    if generic.len() >= SHARED_MIN {
        candidates.extend(generic.iter().map(|f| (f.name, f.id, f.id)));
    }
    if shared_typed {
        for e in typed_syscalls(typed) {
            if let Ok(format) = crate::tracepoint_format::load(tracing, e.name()) {
                candidates.push((e.name(), format.id, TYPED | e.id()));
            }
        }
    }
    let Ok(numbers) = identify(loaded, tracing, &candidates) else {
        return Ok(Plan::default());
    };
    let mut ids: HashMap<i32, (u32, u32)> = HashMap::new();
    for (name, id, value) in &candidates {
        if let Some(&nr) = numbers.get(id) {
            let slot = ids.entry(nr).or_default();
            match direction(name) {
                Some(Direction::Enter) => slot.0 = *value,
                _ => slot.1 = *value,
            }
        }
    }
    let map = &loaded.maps().syscall_ids;
    for (nr, (enter_id, exit_id)) in &ids {
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&enter_id.to_ne_bytes());
        value[4..].copy_from_slice(&exit_id.to_ne_bytes());
        map.update(&(*nr as u32).to_ne_bytes(), &value, MapFlags::ANY)
            .map_err(|e| Error::Bpf { context: "writing the syscall numbers of the shared programs".into(), source: e })?;
    }
    let values: HashSet<u32> = ids.values().flat_map(|&(a, b)| [a, b]).filter(|&v| v != 0).collect();
    Ok(Plan {
        generic: values.iter().filter(|&&v| v & TYPED == 0).copied().collect(),
        typed: values.iter().filter(|&&v| v & TYPED != 0).filter_map(|&v| EventType::from_id(v & !TYPED)).collect(),
    })
}

/// Attaches the shared programs for `plan` (both or neither). A kernel that
/// refuses one leaves the generic events to their own perf events (the plan
/// then records none of them); the typed events have no other program
/// loaded, so that is an error for them.
pub fn attach(loaded: &Loaded, plan: &mut Plan) -> Result<Vec<Link>> {
    if plan.generic.is_empty() && plan.typed.is_empty() {
        return Ok(Vec::new());
    }
    let progs = loaded.progs();
    let mut links = Vec::new();
    for (name, prog) in [("handle__sys_enter", &progs.handle__sys_enter), ("handle__sys_exit", &progs.handle__sys_exit)] {
        if !prog.autoload() {
            continue;
        }
        match prog.attach() {
            Ok(l) => links.push(l),
            Err(e) if !plan.typed.is_empty() => return Err(Error::Bpf { context: format!("attaching {name}"), source: e }),
            Err(_) => {
                plan.generic.clear();
                return Ok(Vec::new());
            }
        }
    }
    Ok(links)
}

/// The syscall number of each event of `events` (by tracefs ID), as the
/// kernel's metadata gives it; events whose `enable` file cannot be opened
/// or whose file leads to another event are left out.
fn identify(loaded: &Loaded, tracing: &Path, events: &[(&str, u32, u32)]) -> Result<HashMap<u32, i32>> {
    // Opened read-only and never read: opening changes nothing.
    let files: HashMap<i32, (u32, std::fs::File)> = events
        .iter()
        .filter_map(|&(name, id, _)| {
            let file = std::fs::File::open(tracing.join("events").join(name).join("enable")).ok()?;
            Some((file.as_raw_fd(), (id, file)))
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
    fn each_typed_syscall_event_has_the_bit_of_its_place_in_the_c_list() {
        // The BPF side numbers them by TB_SYSCALL_TRACEPOINT_LIST.
        let header = include_str!("../c/bootstrap.gen.h");
        let list = header.split("#define TB_SYSCALL_TRACEPOINT_LIST(X) \\\n").nth(1).expect("the list");
        let names: Vec<String> = list
            .lines()
            .map_while(|l| l.trim().strip_prefix("X("))
            .map(|l| {
                let mut parts = l.split(", ");
                format!("{}/{}", parts.next().unwrap(), parts.next().unwrap())
            })
            .collect();
        assert!(names.len() >= 6, "{names:?}");
        for (i, name) in names.iter().enumerate() {
            let e = EventType::from_name(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(shared_slot(e), Some(i as u32), "{name}");
        }
        assert_eq!(shared_slot(EventType::from_name("sched/sched_process_exec").unwrap()), None);
    }

    #[test]
    fn syscall_events_are_told_by_their_category_and_prefix() {
        assert!(direction("syscalls/sys_enter_write") == Some(Direction::Enter));
        assert!(direction("syscalls/sys_exit_newstat") == Some(Direction::Exit));
        assert!(direction("raw_syscalls/sys_enter").is_none());
        assert!(direction("sched/sched_switch").is_none());
    }
}
