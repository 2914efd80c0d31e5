//! Opening, sizing, loading and attaching the BPF object, and writing the
//! filter maps. Every failure becomes an `Error` that says what to do.

use crate::bpf::types::{tb_config, tb_generic_desc};
use crate::bpf::{BootstrapMaps, BootstrapSkelBuilder};
use crate::config::ResolvedConfig;
use crate::error::{Error, Result};
use crate::skeleton::{self, Loaded};
use crate::tracepoint_format::{FieldShape, Format};
use crate::types::{EventType, COMM_LEN};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, MapMut, PrintLevel, ProgramMut};
use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities of this process, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// Whether `path` holds usable BTF: present, and a header whose sections fit
/// in the file (an empty or damaged file would otherwise fail deep inside
/// libbpf with a bare errno).
pub(crate) fn check_btf(path: &Path) -> std::result::Result<(), String> {
    use std::io::Read;
    const MAGIC: u16 = 0xeb9f;
    let mut f = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            "not found".to_string()
        } else {
            format!("cannot be read: {e}")
        }
    })?;
    let mut hdr = [0u8; 24];
    let mut got = 0;
    while got < hdr.len() {
        match f.read(&mut hdr[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(format!("cannot be read: {e}")),
        }
    }
    if got == 0 {
        return Err("is empty".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes([hdr[o], hdr[o + 1], hdr[o + 2], hdr[o + 3]]);
    if got < hdr.len() || u16::from_le_bytes([hdr[0], hdr[1]]) != MAGIC || hdr[2] != 1 {
        return Err("is not BTF (no BTF header)".into());
    }
    // Sections: type_off, type_len, str_off, str_len after the header.
    let (hdr_len, type_end, str_end) = (u32_at(4) as u64, u32_at(8) as u64 + u32_at(12) as u64, u32_at(16) as u64 + u32_at(20) as u64);
    let size = f.metadata().map_err(|e| format!("cannot be read: {e}"))?.len();
    if size < hdr_len + type_end.max(str_end) || u32_at(12) == 0 {
        return Err(format!("is damaged (its header describes more than its {size} bytes)"));
    }
    Ok(())
}

/// BTF and privileges, checked before anything is loaded so the error says
/// exactly what is missing.
pub fn check_environment() -> Result<()> {
    if let Err(problem) = check_btf(Path::new(BTF_PATH)) {
        return Err(Error::BtfMissing { path: BTF_PATH.into(), problem });
    }
    if let Some(caps) = effective_caps() {
        let has = |c: u32| caps & (1u64 << c) != 0;
        if !has(CAP_SYS_ADMIN) && (!has(CAP_BPF) || !has(CAP_PERFMON)) {
            let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")]
                .iter()
                .filter(|(c, _)| !has(*c))
                .map(|(_, n)| *n)
                .collect();
            return Err(Error::Permission { what: format!("this process lacks {}", missing.join(", ")) });
        }
    }
    Ok(())
}

/// Fails clearly if the kernel lacks a selected tracepoint.
pub fn check_tracepoints(tracing: &Path, events: &[EventType]) -> Result<()> {
    for e in events.iter().filter(|e| !e.synthetic()) {
        if !crate::tracefs::has_tracepoint(tracing, e.category(), e.tracepoint()) {
            let hint = if e.optional() {
                "this event is optional: leave it out of `events` on this kernel".to_string()
            } else {
                "check the kernel configuration, or leave this event out".to_string()
            };
            return Err(Error::TracepointMissing { name: e.name().to_string(), release: kernel_release(), hint });
        }
    }
    Ok(())
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown kernel".into())
}

/// libbpf's messages of the current load, for the verifier log in errors.
static LIBBPF_LOG: Mutex<String> = Mutex::new(String::new());

fn capture_libbpf(_level: PrintLevel, msg: String) {
    if std::env::var_os("TRACER_EBPF_DEBUG").is_some() {
        eprint!("libbpf: {msg}");
    }
    if let Ok(mut log) = LIBBPF_LOG.lock() {
        if log.len() < (1 << 20) {
            log.push_str(&msg);
        }
    }
}

/// Opens the embedded object through its skeleton, sizes its maps for
/// `ncpus` and `cfg`, sets its rodata, enables only the programs needed, and
/// loads it.
pub fn open_and_load(cfg: &ResolvedConfig, ncpus: usize, shared_typed: bool) -> Result<Loaded> {
    libbpf_rs::set_print(Some((PrintLevel::Debug, capture_libbpf)));
    if let Ok(mut log) = LIBBPF_LOG.lock() {
        log.clear();
    }
    let (pool_chunks, slots) = crate::payload_area::geometry(ncpus, cfg.payload_chunks_per_cpu);
    let too_large = |_| Error::Config("payload area too large".into());
    let geometry =
        PoolGeometry { pool_chunks: u32::try_from(pool_chunks).map_err(too_large)?, slots: u32::try_from(slots).map_err(too_large)? };
    let storage = skeleton::new_storage();
    // SAFETY: the storage is freed below only once the skeleton is gone, or
    // handed to Loaded, which drops the skeleton first.
    let loaded = BootstrapSkelBuilder::default()
        .open(unsafe { skeleton::storage_ref(storage) })
        .map_err(|e| Error::Bpf { context: "opening the BPF object".into(), source: e })
        .and_then(|open| prepare(open, cfg, ncpus, geometry, shared_typed))
        .and_then(|open| {
            open.load().map_err(|e| {
                if raw_errno(&e) == Some(libc::ENOMEM) || e.kind() == libbpf_rs::ErrorKind::OutOfMemory {
                    out_of_memory(cfg, ncpus)
                } else {
                    load_error(e)
                }
            })
        });
    match loaded {
        // SAFETY: `skel` was opened with `storage`.
        Ok(skel) => Ok(unsafe { Loaded::new(skel, storage) }),
        Err(e) => {
            // SAFETY: the skeleton was dropped with the error.
            unsafe { skeleton::free_storage(storage) };
            Err(e)
        }
    }
}

/// The payload pool: its chunks, and how many one CPU may hold.
#[derive(Clone, Copy)]
struct PoolGeometry {
    pool_chunks: u32,
    slots: u32,
}

/// Sizes the maps, writes the rodata and picks the programs of an open skeleton.
fn prepare(
    mut open: skeleton::Open,
    cfg: &ResolvedConfig,
    ncpus: usize,
    geometry: PoolGeometry,
    shared_typed: bool,
) -> Result<skeleton::Open> {
    let sized = |name: &str, r: libbpf_rs::Result<()>| r.map_err(|e| Error::Bpf { context: format!("sizing map {name}"), source: e });
    sized("events", open.maps.events.set_max_entries(cfg.ring_bytes as u32))?;
    sized("payload", open.maps.payload.set_max_entries(geometry.pool_chunks))?;
    sized("chunk_owner", open.maps.chunk_owner.set_max_entries(geometry.pool_chunks))?;
    sized("chunk_slot", open.maps.chunk_slot.set_max_entries(ncpus as u32 * geometry.slots))?;
    sized("cpu_ctl", open.maps.cpu_ctl.set_max_entries(ncpus as u32))?;
    sized("generic_desc", open.maps.generic_desc.set_max_entries(cfg.generic.len().clamp(1, 8192) as u32))?;
    let rodata = open.maps.rodata_data.as_deref_mut().ok_or_else(|| Error::Config("BPF object has no rodata".into()))?;
    rodata.tb_pool_chunks = geometry.pool_chunks;
    rodata.tb_slots = geometry.slots;
    rodata.tb_wake_ns = cfg.wake_ns;
    open.progs.tb_follow_fork.set_autoload(cfg.follow_children);
    open.progs.handle__generic.set_autoload(!cfg.generic.is_empty());
    let generic_names: Vec<&str> = cfg.generic.iter().map(|(n, _)| n.as_str()).collect();
    crate::shared_syscalls::prepare(&mut open, &cfg.events, &generic_names, shared_typed);
    // The snapshot's task iterator: verified only when a snapshot is taken.
    open.progs.tb_snapshot.set_autoload(cfg.snapshot);
    // One handler per typed event, named by typegen (EventType::program_name)
    // as TB_HANDLER names it.
    for mut p in open.open_object_mut().progs_mut() {
        let name = p.name().to_string_lossy().into_owned();
        if name.starts_with("handle__") && !["handle__generic", "handle__sys_enter", "handle__sys_exit"].contains(&name.as_str()) {
            p.set_autoload(
                cfg.events.iter().any(|e| e.program_name() == name && crate::shared_syscalls::records_on_its_own(*e, shared_typed)),
            );
        }
    }
    Ok(open)
}

/// The error for buffers the kernel could not allocate: what was asked and
/// the limit that applies.
pub fn out_of_memory(cfg: &ResolvedConfig, ncpus: usize) -> Error {
    let mib = |b: f64| b / (1u64 << 20) as f64;
    let per_cpu = (cfg.payload_chunks_per_cpu * crate::types::CHUNK_ELEM_SIZE) as f64;
    let asked = format!(
        "ring {:.1} MiB + payload area {ncpus} x {:.1} MiB = {:.1} MiB",
        mib(cfg.ring_bytes as f64),
        mib(per_cpu),
        mib(cfg.ring_bytes as f64 + ncpus as f64 * per_cpu)
    );
    let limit = match crate::sizing::MemoryBudget::detect().cgroup {
        Some((l, file)) => format!("; this process's memory limit is {:.1} MiB ({file})", mib(l as f64)),
        None => String::new(),
    };
    Error::OutOfMemory { asked, limit }
}

fn load_error(e: libbpf_rs::Error) -> Error {
    let log = LIBBPF_LOG.lock().map(|l| l.clone()).unwrap_or_default();
    let errno = raw_errno(&e);
    // The verifier reports a rejected program with EACCES or EINVAL and a log.
    if log.contains("processed ") || log.contains("verifier log") || log.contains("-- BEGIN PROG LOAD LOG --") {
        let program = log
            .lines()
            .filter(|l| l.contains("BEGIN PROG LOAD LOG") || l.contains("failed to load"))
            .find_map(|l| l.split("prog '").nth(1).and_then(|s| s.split('\'').next()))
            .unwrap_or("?")
            .to_string();
        // The full log can be megabytes: keep its end, where the reason is.
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        return Error::Verifier { program, message: e.to_string(), log: tail };
    }
    if matches!(errno, Some(libc::EPERM) | Some(libc::EACCES)) || e.kind() == libbpf_rs::ErrorKind::PermissionDenied {
        return Error::Permission { what: format!("loading the BPF program failed: {e}") };
    }
    Error::Bpf { context: "loading the BPF program".into(), source: e }
}

fn raw_errno(e: &libbpf_rs::Error) -> Option<i32> {
    // libbpf-rs keeps the OS error in its source chain.
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        src = s.source();
    }
    None
}

/// Writes the filter and capture settings into the `cfg`, `pids` and
/// `content_fds` maps. Safe to call while attached. `stopped` keeps the
/// handlers' off switch as it is (see `stop_recording`).
/// The cgroup map is rewritten only when `cgroups_changed`: a cgroup of
/// the filter removed since (which the map still references, and nothing can
/// be in) must not make another filter's change fail.
pub fn write_filters(maps: &BootstrapMaps, cfg: &ResolvedConfig, cgroups_changed: bool, stopped: bool) -> Result<()> {
    let upd = |e| Error::Bpf { context: "updating filter maps".into(), source: e };
    // Opened before anything changes: a cgroup removed since it was checked
    // fails here, with the filters as they were.
    let cgroup_fds = if cgroups_changed { crate::cgroup::filter::open_all(&cfg.cgroups)? } else { Vec::new() };
    // pids, fds and cgroups first, then the switch that makes the kernel use them.
    for (slot, fd) in cgroup_fds.iter().enumerate() {
        maps.cgroups.update(&(slot as u32).to_ne_bytes(), &(fd.as_raw_fd() as u32).to_ne_bytes(), MapFlags::ANY).map_err(upd)?;
    }
    sync_pid_set(&maps.pids, &cfg.pids)?;
    sync_pid_set(&maps.excluded, &cfg.exclude_pids)?;
    let fds = &maps.content_fds;
    let existing: Vec<Vec<u8>> = fds.keys().collect();
    for k in existing {
        let _ = fds.delete(&k);
    }
    for fd in &cfg.content_fds {
        fds.update(&(*fd as u32).to_ne_bytes(), &[1u8], MapFlags::ANY).map_err(upd)?;
    }

    // SAFETY: tb_config is plain integers and arrays of them; all-zero is valid.
    let mut c: tb_config = unsafe { std::mem::zeroed() };
    c.self_tgid = if cfg.trace_self { 0 } else { std::process::id() };
    c.pid_filter = u32::from(!cfg.pids.is_empty());
    c.follow = u32::from(cfg.follow_children);
    c.ncomm = cfg.comm.len() as u32;
    c.content_max = cfg.content_max;
    c.argv_max = cfg.argv_max;
    c.all_fds = u32::from(cfg.all_fds);
    c.generic_max = cfg.generic_max;
    c.fd_mask = cfg.content_fds.iter().filter(|&&fd| (0..64).contains(&fd)).fold(0u64, |m, &fd| m | 1 << fd);
    c.exclude_pids = u32::from(!cfg.exclude_pids.is_empty());
    c.nexclude_comm = cfg.exclude_comm.len() as u32;
    c.ncgroup = cfg.cgroups.len() as u32;
    c.stopped = u32::from(stopped);
    for (slots, prefixes) in [(&mut c.comm, &cfg.comm), (&mut c.exclude_comm, &cfg.exclude_comm)] {
        for (slot, prefix) in slots.iter_mut().zip(prefixes) {
            let b = prefix.as_bytes();
            let n = b.len().min(COMM_LEN - 1);
            for (d, s) in slot.prefix.iter_mut().zip(&b[..n]) {
                *d = *s as i8;
            }
            slot.len = n as u32;
        }
    }
    // SAFETY: viewing a repr(C) struct without padding as its bytes.
    let bytes = unsafe { std::slice::from_raw_parts((&c as *const tb_config).cast::<u8>(), std::mem::size_of::<tb_config>()) };
    maps.cfg.update(&0u32.to_ne_bytes(), bytes, MapFlags::ANY).map_err(upd)?;
    // Slots no longer used, once the kernel no longer reads them: the map
    // holds a reference to each cgroup until its slot is cleared.
    if cgroups_changed {
        for slot in cfg.cgroups.len()..crate::cgroup::CGROUP_FILTERS_MAX {
            let _ = maps.cgroups.delete(&(slot as u32).to_ne_bytes());
        }
    }
    Ok(())
}

/// Turns every handler off: from the next handler run on, nothing is
/// recorded or counted. Only `cfg.stopped` changes: the filters stay as
/// they are, so no handler sees a half-written filter.
pub fn stop_recording(maps: &BootstrapMaps) -> Result<()> {
    let err = |e| Error::Bpf { context: "stopping the handlers".into(), source: e };
    let key = 0u32.to_ne_bytes();
    let mut bytes = maps.cfg.lookup(&key, MapFlags::ANY).map_err(err)?.unwrap_or_default();
    let at = std::mem::offset_of!(tb_config, stopped);
    let Some(field) = bytes.get_mut(at..at + 4) else {
        let short = format!("the cfg map holds {} bytes, fewer than a tb_config", bytes.len());
        return Err(Error::Io {
            context: "stopping the handlers".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, short),
        });
    };
    field.copy_from_slice(&1u32.to_ne_bytes());
    maps.cfg.update(&key, &bytes, MapFlags::ANY).map_err(err)
}

/// Makes the pid set `m` hold exactly `pids` (value 1: given by the caller).
fn sync_pid_set(m: &MapMut, pids: &[u32]) -> Result<()> {
    let wanted: std::collections::HashSet<u32> = pids.iter().copied().collect();
    let existing: Vec<Vec<u8>> = m.keys().collect();
    for k in existing {
        let pid = u32::from_ne_bytes(k.as_slice().try_into().unwrap_or([0; 4]));
        if !wanted.contains(&pid) {
            let _ = m.delete(&k);
        }
    }
    for pid in pids {
        m.update(&pid.to_ne_bytes(), &[1u8], MapFlags::ANY)
            .map_err(|e| Error::Bpf { context: "updating filter maps".into(), source: e })?;
    }
    Ok(())
}

/// Tells handle__generic how to record each generic tracepoint (keyed by its
/// tracefs ID): the fixed size, the __data_loc fields, the user strings.
pub fn write_generic_descs(maps: &BootstrapMaps, formats: &[Arc<Format>]) -> Result<()> {
    if formats.is_empty() {
        return Ok(());
    }
    let m = &maps.generic_desc;
    for f in formats {
        // SAFETY: plain integers; all-zero is valid.
        let mut d: tb_generic_desc = unsafe { std::mem::zeroed() };
        d.raw_size = f.raw_size as u32;
        for field in &f.fields {
            match field.shape {
                FieldShape::DataLocStr | FieldShape::DataLocArray { .. } => {
                    d.dataloc_off[d.ndataloc as usize] = field.offset as u16;
                    d.ndataloc += 1;
                }
                FieldShape::UserStr { slot } | FieldShape::UserStrList { slot } => {
                    d.str_off[slot] = field.offset as u16;
                    d.nstr = d.nstr.max(slot as u32 + 1);
                    if matches!(field.shape, FieldShape::UserStrList { .. }) {
                        d.str_list |= 1 << slot;
                    }
                }
                _ => {}
            }
        }
        // SAFETY: viewing a repr(C) struct of integers as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((&d as *const tb_generic_desc).cast::<u8>(), std::mem::size_of::<tb_generic_desc>()) };
        m.update(&f.id.to_ne_bytes(), bytes, MapFlags::ANY)
            .map_err(|e| Error::Bpf { context: format!("describing {}", f.name), source: e })?;
    }
    Ok(())
}

/// Tracepoints that could not be attached, with why: (name, reason).
pub type AttachFailures = Vec<(String, String)>;

/// Attaches handle__generic to each generic tracepoint but those in
/// `shared` (recorded by the shared syscall programs). A failure on a name
/// the caller gave is an error; on a wildcard expansion it is reported in the
/// returned list (name, reason) and tracing goes on.
pub fn attach_generic(
    loaded: &Loaded,
    cfg: &ResolvedConfig,
    formats: &[Arc<Format>],
    shared: &std::collections::HashSet<u32>,
) -> Result<(Vec<Link>, AttachFailures)> {
    let mut links = Vec::new();
    let mut failures = Vec::new();
    if formats.is_empty() {
        return Ok((links, failures));
    }
    let prog = &loaded.progs().handle__generic;
    for f in formats.iter().filter(|f| !shared.contains(&f.id)) {
        let (cat, name) = f.name.split_once('/').unwrap_or((f.name, ""));
        let opts = libbpf_rs::TracepointOpts { cookie: f.id as u64, ..Default::default() };
        match prog.attach_tracepoint_with_opts(libbpf_rs::TracepointCategory::Custom(cat.to_string()), name, opts) {
            Ok(l) => links.push(l),
            Err(e) => {
                let from_wildcard = cfg.generic.iter().any(|(n, w)| n == f.name && *w);
                if from_wildcard {
                    failures.push((f.name.to_string(), e.to_string()));
                } else {
                    return Err(match raw_errno(&e) {
                        Some(libc::EPERM) | Some(libc::EACCES) => Error::Permission { what: format!("attaching {} failed: {e}", f.name) },
                        _ => Error::Bpf { context: format!("attaching {}", f.name), source: e },
                    });
                }
            }
        }
    }
    Ok((links, failures))
}

/// Attaches the programs of the selected events (and follow mode's).
pub fn attach(loaded: &Loaded, cfg: &ResolvedConfig, shared: &HashSet<EventType>) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    let mut progs: Vec<(&str, ProgramMut)> = Vec::new();
    // Synthetic events have no program: userspace makes them. `shared`
    // ones are recorded by the shared syscall programs.
    for e in cfg.events.iter().filter(|e| !e.synthetic() && !shared.contains(e)) {
        let name = e.program_name();
        let prog = loaded
            .object()
            .progs_mut()
            .find(|p| p.name() == name)
            .ok_or_else(|| Error::Config(format!("BPF object has no program {name}")))?;
        progs.push((name, prog));
    }
    for (name, prog) in
        progs.iter().map(|(n, p)| (*n, p)).chain(cfg.follow_children.then_some(("tb_follow_fork", &loaded.progs().tb_follow_fork)))
    {
        let link = prog.attach().map_err(|e| match raw_errno(&e) {
            Some(libc::EPERM) | Some(libc::EACCES) => Error::Permission { what: format!("attaching {name} failed: {e}") },
            _ => Error::Bpf { context: format!("attaching {name}"), source: e },
        })?;
        links.push(link);
    }
    Ok(links)
}
