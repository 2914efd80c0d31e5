//! The process snapshot (`Config::snapshot`): one `proc/snapshot` event per
//! process already running when the tracer attached, made right after
//! attaching and queued before any live event, parents before children.
//!
//! The kernel's view comes from a task iterator (c/bpf/snapshot.h: ids,
//! upid exactly as live events have it, comm, credentials, cgroup); /proc
//! adds exe, argv and cwd (`procfs`). Attaching first means no process
//! falls in a gap: one started meanwhile can show both in the snapshot and
//! in live events.

mod order;
mod procfs;
mod record;

use crate::config::ResolvedConfig;
use crate::error::{Error, Result};
use crate::event::{Comm, Event, EventKind};
use crate::skeleton::Loaded;
use crate::types::{payload, rec_flags, EventType, Payload};
use crate::value::Var;
use libbpf_rs::{IterOpts, MapCore, MapFlags};
use record::SnapRecord;
use std::collections::HashSet;

/// What a snapshot counted (added to `UserCounters`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SnapshotCounts {
    /// proc/snapshot events made.
    pub(crate) events: u64,
    /// Their fields lost because /proc no longer had the process or would
    /// not tell ("exited", "unreadable").
    pub(crate) lost: u64,
    /// Their fields cut at their limit (argv beyond argv_max).
    pub(crate) truncated: u64,
    /// Existing descendants of the follow-mode targets added to the pid filter.
    pub(crate) followed: u64,
    /// Processes /proc lists, started before the snapshot and selected by
    /// the filters, that the kernel's task walk did not report (hidden
    /// from BPF): no event for them.
    pub(crate) unseen: u64,
}

/// The value of pid filter entries added by follow mode (as tb_follow_fork).
const FOLLOWED_MARK: u8 = 2;

/// Bytes asked for per read of the iterator (a multiple of the record).
const ITER_READ_BYTES: usize = record::SNAP_REC_SIZE * 1024;

/// Runs the iterator over every task and returns its records.
fn iterate(loaded: &Loaded) -> Result<Vec<SnapRecord>> {
    let bpf = |context: &str| {
        let context = context.to_string();
        move |e| Error::Bpf { context: context.clone(), source: e }
    };
    let link = loaded.progs().tb_snapshot.attach_iter_with_opts(IterOpts::None).map_err(bpf("creating the snapshot iterator"))?;
    let bytes = crate::iter_output::read_all(&link, ITER_READ_BYTES, "snapshot iterator")?;
    SnapRecord::parse_all(&bytes)
        .map_err(|e| Error::io("reading the snapshot iterator", std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Whether `cfg`'s filters let process `pid` with comm `comm` through, as
/// the BPF filter (tb_filter) would its live events; `pid_set` is the pid
/// filter with follow mode's additions.
fn selected(pid: u32, comm: &[u8], cfg: &ResolvedConfig, pid_set: &HashSet<u32>) -> bool {
    let matches = |prefixes: &[String]| prefixes.iter().any(|p| comm.starts_with(p.as_bytes()));
    (cfg.trace_self || pid != std::process::id())
        && (cfg.pids.is_empty() || pid_set.contains(&pid))
        && !cfg.exclude_pids.contains(&pid)
        && (cfg.comm.is_empty() || matches(&cfg.comm))
        && !matches(&cfg.exclude_comm)
}

/// Takes the snapshot: in follow mode, adds the targets' existing
/// descendants to the pid filter first (their live events are traced from
/// then on), then makes the events, parents first, with event ids from
/// `next_event_id` on (advanced past them).
/// `in_cgroups(pid, cgroup_id)`: whether the cgroup filter selects the
/// process (its /proc files are read only if so).
pub(crate) fn take(
    loaded: &Loaded,
    cfg: &ResolvedConfig,
    next_event_id: &mut u64,
    in_cgroups: &mut dyn FnMut(u32, u64) -> bool,
) -> Result<(Vec<Event>, SnapshotCounts)> {
    let walk_boot_ns = procfs::boot_ns();
    let recs = iterate(loaded)?;
    let mut counts = SnapshotCounts::default();
    let pid_set = if cfg.follow_children { order::with_descendants(&recs, &cfg.pids) } else { cfg.pids.iter().copied().collect() };
    if cfg.follow_children {
        let pids = &loaded.maps().pids;
        for &p in pid_set.iter().filter(|p| !cfg.pids.contains(p)) {
            let key = p.to_ne_bytes();
            // Not over an entry already there (a target, or a child the
            // fork hook added since attach).
            if pids.lookup(&key, MapFlags::ANY).ok().flatten().is_none() {
                pids.update(&key, &[FOLLOWED_MARK], MapFlags::NO_EXIST)
                    .map_err(|e| Error::Bpf { context: "adding descendants to the pid filter".into(), source: e })?;
                counts.followed += 1;
            }
        }
    }
    let limits = procfs::Limits { exe: field_max("exe"), cwd: field_max("cwd"), argv: field_max("argv").min(cfg.argv_max as usize) };
    let timestamp_ns = crate::clock::epoch_ns();
    let seen: HashSet<u32> = recs.iter().map(|r| r.pid).collect();
    counts.unseen = procfs::unseen(&seen, walk_boot_ns).iter().filter(|l| selected(l.pid, &l.comm, cfg, &pid_set)).count() as u64;
    let recs: Vec<SnapRecord> = recs
        .into_iter()
        .filter(|r| selected(r.pid, Comm::from_padded(&r.comm).as_bytes(), cfg, &pid_set) && in_cgroups(r.pid, r.cgroup_id))
        .collect();
    let mut events = Vec::with_capacity(recs.len());
    for r in order::parents_first(recs) {
        let f = procfs::read(r.pid, r.start_ns, r.kernel_thread, limits);
        for v in [&f.exe, &f.cwd, &f.argv] {
            counts.lost += u64::from(!v.captured());
            counts.truncated += u64::from(v.truncated());
        }
        *next_event_id = next_event_id.wrapping_add(1);
        events.push(event(&r, f, *next_event_id, timestamp_ns));
    }
    counts.events = events.len() as u64;
    Ok((events, counts))
}

/// The byte limit events.toml gives field `name` of proc/snapshot.
fn field_max(name: &str) -> usize {
    EventType::ProcSnapshot.fields().iter().find(|f| f.name == name).map_or(0, |f| f.max as usize)
}

/// The event of one process. The header is the process's, as a live event
/// of its main thread would carry it; `cpu` is the CPU the iterator ran on,
/// `timestamp_ns` when the snapshot was taken.
fn event(r: &SnapRecord, f: procfs::ProcFields, event_id: u64, timestamp_ns: u64) -> Event {
    let lost = [&f.exe, &f.cwd, &f.argv].iter().any(|v| !v.captured());
    // One record per thread-group leader: its tid is its pid, in both
    // namespaces. The cgroup is resolved by the caller (the reader's
    // resolver).
    Event {
        event_id,
        event_type: EventKind::Typed(EventType::ProcSnapshot),
        timestamp_ns,
        cpu: r.cpu,
        pid: r.pid,
        tid: r.pid,
        ppid: r.ppid,
        upid: r.upid,
        uppid: r.uppid,
        comm: Comm::from_padded(&r.comm),
        ns_pid: r.ns_pid,
        ns_tid: r.ns_pid,
        cgroup_id: r.cgroup_id,
        cgroup: None,
        flags: if lost { rec_flags::PAYLOAD_LOST } else { 0 },
        payload: Payload::ProcSnapshot(Box::new(payload::ProcSnapshot {
            uid: r.uid,
            gid: r.gid,
            kernel_thread: u8::from(r.kernel_thread),
            exe: f.exe,
            cwd: f.cwd,
            argv: f.argv,
        })),
    }
}

/// Bytes an event's variable fields hold (its queue weight, as a live one).
pub(crate) fn payload_len(e: &Event) -> usize {
    match &e.payload {
        Payload::ProcSnapshot(p) => [&p.exe, &p.cwd, &p.argv].iter().map(|v: &&Var| v.data.len()).sum(),
        _ => 0,
    }
}
