//! What to trace and how big the buffers are: a builder, validated into a
//! ResolvedConfig before anything touches the kernel.

use crate::error::{Error, Result};
use crate::sizing::MemoryBudget;
use crate::types::{EventType, CHUNK_SIZE, COMM_LEN};
use std::time::Duration;

/// Tracer configuration. `Config::default()` traces every typed event the
/// kernel has, from every process but the tracer itself, capturing write
/// content of fds 1 and 2.
#[derive(Clone, Debug)]
pub struct Config {
    /// Event names ("syscalls/sys_enter_write") or wildcards ("syscalls/*");
    /// empty: every non-optional typed event.
    pub events: Vec<String>,
    /// Only these processes (tgids); empty: all processes.
    pub pids: Vec<u32>,
    /// Also trace children forked by traced processes (needs `pids`).
    pub follow_children: bool,
    /// Only tasks whose comm starts with one of these (at most 8, 1..15 bytes).
    pub comm: Vec<String>,
    /// Only tasks in these cgroups or their descendants (cgroup v2
    /// directories: absolute paths inside the cgroup2 mount, or relative to
    /// it; at most `cgroup::CGROUP_FILTERS_MAX`). Empty: all cgroups.
    pub cgroups: Vec<String>,
    /// Never these processes (tgids; at most 4096 with the output readers).
    pub exclude_pids: Vec<u32>,
    /// Never tasks whose comm starts with one of these (at most 8, 1..15 bytes).
    pub exclude_comm: Vec<String>,
    /// Never the processes that read this process's stdout or stderr (the
    /// other end of its pipe or pty, and, in turn, the readers of theirs):
    /// tracing them would trace the tracer's own output, without end
    /// (`tracer-example | jq`). Found at start (see `output_readers`).
    /// Default: on.
    pub exclude_output_readers: bool,
    /// File descriptors whose write content is captured.
    pub content_fds: Vec<i32>,
    /// Capture write content for every fd (ignores `content_fds`).
    pub all_fds: bool,
    /// Most content bytes captured per write (1 byte to 1 MiB).
    pub content_max: u32,
    /// Most argv bytes captured per exec (1 byte to 1 MiB).
    pub argv_max: u32,
    /// Ring-buffer size in bytes (rounded up to a power of two).
    /// Default: `MemoryBudget::ring_bytes` (see `sizing`).
    pub ring_bytes: usize,
    /// Payload area per possible CPU, in bytes (rounded up to whole 1 MiB
    /// chunks, at least 2). The area is one pool of possible CPUs x this,
    /// shared by every CPU: one CPU writing a burst may use all of it.
    /// Default: `MemoryBudget::payload_bytes_per_cpu` (see `sizing`): the
    /// reader thread drains the area while a burst runs, so it only has to
    /// hold what the reader cannot move out meanwhile.
    pub payload_bytes_per_cpu: usize,
    /// Most bytes of decoded events held in userspace, waiting for `poll`.
    /// A reader thread drains the kernel buffers into this queue as fast as
    /// it can, so a slow consumer (JSON, Python) loses nothing until the
    /// queue is full; then the kernel buffers fill and their losses are
    /// counted. Default: `MemoryBudget::queue_bytes` (see `sizing`).
    pub queue_bytes: usize,
    /// Run the reader thread (default). Without it the kernel buffers are
    /// drained only inside `poll`, by the caller's thread: nothing moves
    /// while the caller does something else.
    pub reader_thread: bool,
    /// The thread that polls runs as SCHED_IDLE while the queue holds less
    /// than a quarter of its bound, and at its own policy from then until
    /// the queue is down to an eighth (see `cpu_yield`): a burst's writers
    /// keep their CPUs while the queue holds what the consumer has not
    /// formatted yet. Off by default (it changes the caller's thread); the
    /// command-line front ends turn it on. Needs the reader thread and
    /// CAP_SYS_NICE (else a note says it is off).
    pub yield_cpu: bool,
    /// Each CPU wakes the reader at most once per this interval.
    pub wake_interval: Duration,
    /// Trace the tracer's own process too (off: it would trace its own output).
    pub trace_self: bool,
    /// Most raw bytes recorded per generic tracepoint event (fixed fields and
    /// __data_loc data; at most 8190).
    pub generic_max: u32,
    /// Right after attaching, one `proc/snapshot` event per process already
    /// running (those the pid and comm filters select; in follow mode the
    /// targets and their existing descendants, which are then followed
    /// too), parents first, before any live event (see `snapshot`).
    pub snapshot: bool,
    /// The reader builds Arrow record batches as events arrive (no `Event`
    /// is queued): take them with `poll_arrow`, which then only hands out
    /// batches already built; `poll` and every per-event form refuse.
    pub arrow: bool,
}

impl Default for Config {
    fn default() -> Self {
        let budget = MemoryBudget::detect();
        let ncpus = libbpf_rs::num_possible_cpus().unwrap_or(1).max(1);
        Config {
            events: Vec::new(),
            pids: Vec::new(),
            follow_children: false,
            comm: Vec::new(),
            cgroups: Vec::new(),
            exclude_pids: Vec::new(),
            exclude_comm: Vec::new(),
            exclude_output_readers: true,
            content_fds: vec![1, 2],
            all_fds: false,
            content_max: 1 << 20,
            argv_max: 128 << 10,
            ring_bytes: budget.ring_bytes(),
            payload_bytes_per_cpu: budget.payload_bytes_per_cpu(ncpus),
            queue_bytes: budget.queue_bytes(),
            reader_thread: true,
            yield_cpu: false,
            wake_interval: Duration::from_millis(1),
            trace_self: false,
            generic_max: 4096,
            snapshot: false,
            arrow: false,
        }
    }
}

macro_rules! setter {
    ($(#[$m:meta])* $name:ident: $t:ty) => {
        $(#[$m])*
        pub fn $name(mut self, v: $t) -> Self {
            self.$name = v;
            self
        }
    };
}

impl Config {
    pub fn new() -> Self {
        Self::default()
    }
    /// Event names or wildcards.
    pub fn events<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.events = names.into_iter().map(Into::into).collect();
        self
    }
    setter!(pids: Vec<u32>);
    setter!(follow_children: bool);
    setter!(comm: Vec<String>);
    setter!(cgroups: Vec<String>);
    setter!(exclude_pids: Vec<u32>);
    setter!(exclude_comm: Vec<String>);
    setter!(exclude_output_readers: bool);
    setter!(content_fds: Vec<i32>);
    setter!(all_fds: bool);
    setter!(content_max: u32);
    setter!(argv_max: u32);
    setter!(ring_bytes: usize);
    setter!(payload_bytes_per_cpu: usize);
    setter!(queue_bytes: usize);
    setter!(reader_thread: bool);
    setter!(yield_cpu: bool);
    setter!(wake_interval: Duration);
    setter!(trace_self: bool);
    setter!(generic_max: u32);
    setter!(snapshot: bool);
    setter!(arrow: bool);

    /// Validates everything and expands event names over the typed events
    /// only (no tracefs needed).
    pub fn resolve(&self) -> Result<ResolvedConfig> {
        self.resolve_with(&[])
    }

    /// Validates everything and expands event names over the typed events
    /// and `available` tracepoints ("category/name", from tracefs).
    pub fn resolve_with(&self, available: &[String]) -> Result<ResolvedConfig> {
        let (mut events, generic, unavailable) = resolve_events(&self.events, available)?;
        // Synthetic events come from their option, not from a tracepoint.
        if let Some(e) = events.iter().find(|e| e.synthetic() && !self.snapshot) {
            return Err(Error::Config(format!(
                "{e} events are made by the process snapshot: set snapshot (--snapshot) instead of naming {e}"
            )));
        }
        if self.snapshot && !events.contains(&EventType::ProcSnapshot) {
            events.push(EventType::ProcSnapshot);
        }
        let cap = |what: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err(Error::Config(format!("{what} must be from {lo} to {hi}, got {v}")))
            } else {
                Ok(())
            }
        };
        for (name, v) in [
            ("content_max", self.content_max as u64),
            ("argv_max", self.argv_max as u64),
            ("ring_bytes", self.ring_bytes as u64),
            ("payload_bytes_per_cpu", self.payload_bytes_per_cpu as u64),
            ("queue_bytes", self.queue_bytes as u64),
            ("generic_max", self.generic_max as u64),
        ] {
            let (lo, hi) = limit(name);
            cap(name, v, lo, hi)?;
        }
        if self.follow_children && self.pids.is_empty() {
            return Err(Error::Config("follow_children needs at least one pid to follow".into()));
        }
        if self.content_fds.len() > 256 {
            return Err(Error::Config(format!("at most 256 content_fds, got {}", self.content_fds.len())));
        }
        if let Some(fd) = self.content_fds.iter().find(|&&fd| fd < 0) {
            return Err(Error::Config(format!("content_fds must be non-negative, got {fd}")));
        }
        validate_pids(&self.pids, self.trace_self)?;
        if self.exclude_pids.len() > EXCLUDED_MAX {
            return Err(Error::Config(format!("at most {EXCLUDED_MAX} exclude_pids, got {}", self.exclude_pids.len())));
        }
        let cgroups = crate::cgroup::filter::resolve_paths(&self.cgroups, &crate::cgroup::CgroupMounts::detect())?;
        let r = ResolvedConfig {
            events,
            generic,
            unavailable,
            generic_max: self.generic_max,
            pids: self.pids.clone(),
            follow_children: self.follow_children,
            comm: self.comm.clone(),
            cgroups,
            exclude_pids: self.exclude_pids.clone(),
            exclude_comm: self.exclude_comm.clone(),
            exclude_output_readers: self.exclude_output_readers,
            content_fds: self.content_fds.clone(),
            all_fds: self.all_fds,
            content_max: self.content_max,
            argv_max: self.argv_max,
            ring_bytes: self.ring_bytes.next_power_of_two(),
            payload_chunks_per_cpu: self.payload_bytes_per_cpu.div_ceil(CHUNK_SIZE).max(crate::payload_area::MIN_CHUNKS_PER_CPU),
            queue_bytes: self.queue_bytes,
            reader_thread: self.reader_thread,
            yield_cpu: self.yield_cpu,
            wake_ns: self.wake_interval.as_nanos().min(u64::MAX as u128) as u64,
            trace_self: self.trace_self,
            snapshot: self.snapshot,
            arrow: self.arrow,
        };
        r.validate_comm()?;
        Ok(r)
    }
}

/// A validated configuration, with event names resolved.
#[derive(Clone, Debug)]
pub struct ResolvedConfig {
    pub events: Vec<EventType>,
    /// Other tracepoints ("category/name"), recorded raw and decoded from
    /// their format; `true` when named by a wildcard (a failure to attach
    /// one of those is reported, not fatal).
    pub generic: Vec<(String, bool)>,
    /// Typed events a wildcard matched that this kernel lacks.
    pub unavailable: Vec<String>,
    pub generic_max: u32,
    pub pids: Vec<u32>,
    pub follow_children: bool,
    pub comm: Vec<String>,
    /// The cgroup filter's directories, absolute and checked.
    pub cgroups: Vec<std::path::PathBuf>,
    pub exclude_pids: Vec<u32>,
    pub exclude_comm: Vec<String>,
    pub exclude_output_readers: bool,
    pub content_fds: Vec<i32>,
    pub all_fds: bool,
    pub content_max: u32,
    pub argv_max: u32,
    pub ring_bytes: usize,
    pub payload_chunks_per_cpu: usize,
    pub queue_bytes: usize,
    pub reader_thread: bool,
    pub yield_cpu: bool,
    pub wake_ns: u64,
    pub trace_self: bool,
    /// Take the process snapshot (`proc/snapshot` is then in `events`).
    pub snapshot: bool,
    /// Record batches built by the reader (`Config::arrow`).
    pub arrow: bool,
}

/// The range of each numeric option, inclusive: the one table the Rust
/// core, the Python package and the command line check against.
pub const LIMITS: &[(&str, u64, u64)] = &[
    ("content_max", 1, 1 << 20),
    ("argv_max", 1, 1 << 20),
    ("ring_bytes", 4096, 1 << 30),
    ("payload_bytes_per_cpu", 1, 1 << 30),
    ("queue_bytes", 1 << 16, 1 << 40),
    ("generic_max", 8, 8190),
    // pid_max is at most 2^22: pids are below it.
    ("pid", 1, (1 << 22) - 1),
    // Parquet datasets (dataset::DatasetOptions).
    ("max_file_bytes", 64 << 10, 1 << 40),
    ("max_file_seconds", 1, 3600),
    ("row_group_bytes", 64 << 10, 1 << 30),
    ("max_buffered_bytes", 1 << 20, 1 << 36),
    ("max_open_files", 1, 4096),
];

/// The range of option `name` (one of LIMITS).
pub fn limit(name: &str) -> (u64, u64) {
    LIMITS.iter().find(|(n, _, _)| *n == name).map(|&(_, lo, hi)| (lo, hi)).unwrap_or((0, u64::MAX))
}

/// Most pids in the pid filter (the `pids` map's size).
pub const PIDS_MAX: usize = 65536;
/// Most excluded processes (the `excluded` map's size).
pub const EXCLUDED_MAX: usize = 4096;

/// Pids the caller gives to trace: real process ids of processes that exist
/// now, and not this process unless it traces itself.
pub(crate) fn validate_pids(pids: &[u32], trace_self: bool) -> Result<()> {
    if pids.len() > PIDS_MAX {
        return Err(Error::Config(format!("at most {PIDS_MAX} pids, got {}", pids.len())));
    }
    let me = std::process::id();
    for &p in pids {
        let (lo, hi) = limit("pid");
        if (p as u64) < lo || p as u64 > hi {
            return Err(Error::Config(format!("pid {p} is not a process id")));
        }
        if p == me && !trace_self {
            return Err(Error::Config(format!(
                "pid {p} is this process, the tracer itself, which is not traced (it would trace its own output); \
                 set trace_self to trace it"
            )));
        }
        if !std::path::Path::new(&format!("/proc/{p}")).exists() {
            return Err(Error::Config(format!("no process with pid {p}")));
        }
    }
    Ok(())
}

fn validate_prefixes(what: &str, prefixes: &[String]) -> Result<()> {
    if prefixes.len() > 8 {
        return Err(Error::Config(format!("at most 8 {what} prefixes, got {}", prefixes.len())));
    }
    for c in prefixes {
        if c.is_empty() || c.len() >= COMM_LEN {
            return Err(Error::Config(format!(
                "{what} prefix {c:?} must be 1 to {} bytes (the kernel keeps {} bytes of comm)",
                COMM_LEN - 1,
                COMM_LEN - 1
            )));
        }
        if c.contains('\0') {
            return Err(Error::Config(format!("{what} prefix {c:?} contains a NUL byte, which no comm has")));
        }
    }
    Ok(())
}

impl ResolvedConfig {
    pub(crate) fn validate_comm(&self) -> Result<()> {
        validate_prefixes("comm", &self.comm)?;
        validate_prefixes("exclude_comm", &self.exclude_comm)
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == n[ni] || p[pi] == b'?') {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ni;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Expands names and wildcards: typed events take precedence over generic
/// tracepoints of the same name.
type Resolved = (Vec<EventType>, Vec<(String, bool)>, Vec<String>);

fn resolve_events(names: &[String], available: &[String]) -> Result<Resolved> {
    if names.is_empty() {
        let all = EventType::ALL.iter().copied().filter(|e| !e.optional() && !e.synthetic());
        return Ok((all.collect(), Vec::new(), Vec::new()));
    }
    let mut unavailable: Vec<String> = Vec::new();
    let mut typed: Vec<EventType> = Vec::new();
    let mut generic: Vec<(String, bool)> = Vec::new();
    for name in names {
        let name = name.trim();
        let wild = name.contains(['*', '?']);
        let mut matched = 0;
        for e in EventType::ALL {
            // A wildcard never names a synthetic event: those come from
            // their option (a name given outright is checked by the caller).
            if wild && e.synthetic() {
                continue;
            }
            if (wild && glob_match(name, e.name())) || (!wild && e.name() == name) {
                matched += 1;
                // A wildcard skips typed events this kernel lacks (reported
                // by the tracer); a name given outright fails at attach.
                let missing = wild && !available.is_empty() && !available.iter().any(|a| a == e.name());
                if missing {
                    if !unavailable.iter().any(|u: &String| u == e.name()) {
                        unavailable.push(e.name().to_string());
                    }
                } else if !typed.contains(e) {
                    typed.push(*e);
                }
            }
        }
        for a in available {
            if EventType::from_name(a).is_some() {
                continue;
            }
            if (wild && glob_match(name, a)) || (!wild && a == name) {
                matched += 1;
                if !generic.iter().any(|(g, _)| g == a) {
                    generic.push((a.clone(), wild));
                }
            }
        }
        if matched == 0 && wild {
            if let Some(e) = EventType::ALL.iter().find(|e| e.synthetic() && glob_match(name, e.name())) {
                return Err(Error::Config(format!(
                    "{name} only names {e}, whose events are made by the process snapshot: set snapshot (--snapshot) instead"
                )));
            }
        }
        if matched == 0 {
            return Err(Error::UnknownEvent { name: name.to_string(), suggestions: suggestions_among(name, available) });
        }
    }
    Ok((typed, generic, unavailable))
}

/// Typed and `available` event names close to `name`, best first.
pub fn suggestions_among(name: &str, available: &[String]) -> Vec<String> {
    if name.len() > 256 {
        return Vec::new(); // no event name is that long; don't spend time comparing
    }
    // (score, edit distance, name): a name that merely contains or is
    // contained in the query scores 1 like a one-letter typo, but the typo
    // ranks first ("sys_enter_writ" means sys_enter_write, not
    // raw_syscalls/sys_enter).
    let mut scored: Vec<(usize, usize, &str)> = EventType::ALL
        .iter()
        .map(|e| e.name())
        .chain(available.iter().map(String::as_str))
        .map(|n| {
            let tp = n.split('/').nth(1).unwrap_or(n);
            let raw = edit_distance(name, n).min(edit_distance(name, tp));
            let d = if n.contains(name) || name.contains(tp) { raw.min(1) } else { raw };
            (d, raw, n)
        })
        .filter(|(d, _, n)| *d <= 3.max(n.len() / 3))
        .collect();
    scored.sort();
    scored.dedup();
    scored.into_iter().take(5).map(|(_, _, n)| n.to_string()).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("syscalls/*", "syscalls/sys_enter_write"));
        assert!(glob_match("*write", "syscalls/sys_enter_write"));
        assert!(!glob_match("sched/*", "syscalls/sys_enter_write"));
        assert!(glob_match("*", "a"));
    }

    #[test]
    fn unknown_event_lists_close_matches() {
        let err = Config::new().events(["syscalls/sys_enter_writ"]).resolve().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("did you mean \"syscalls/sys_enter_write\""), "{msg}");
        let err = Config::new().events(["nosuch/thing_at_all_xyz"]).resolve().unwrap_err();
        assert!(err.to_string().contains("list_events()"), "{err}");
    }

    #[test]
    fn a_typo_ranks_before_a_name_it_contains() {
        let available = ["raw_syscalls/sys_enter".to_string(), "syscalls/sys_enter_write".to_string()];
        let s = suggestions_among("syscalls/sys_enter_writ", &available);
        assert_eq!(s.first().map(String::as_str), Some("syscalls/sys_enter_write"), "{s:?}");
        assert!(s.iter().any(|n| n == "raw_syscalls/sys_enter"), "{s:?}");
    }

    #[test]
    fn the_snapshot_event_comes_from_its_option_only() {
        // Not a default event, and no wildcard names it.
        assert!(!Config::new().resolve().unwrap().events.contains(&EventType::ProcSnapshot));
        assert!(!Config::new().events(["*"]).resolve().unwrap().events.contains(&EventType::ProcSnapshot));
        // snapshot adds it, once, after the events named.
        let r = Config::new().events(["sched/sched_process_exec", "*"]).snapshot(true).resolve().unwrap();
        assert_eq!(r.events.iter().filter(|e| **e == EventType::ProcSnapshot).count(), 1);
        assert_eq!(r.events[0], EventType::SchedSchedProcessExec);
        assert!(r.snapshot);
        let r = Config::new().events(["proc/snapshot"]).snapshot(true).resolve().unwrap();
        assert_eq!(r.events, [EventType::ProcSnapshot]);
        // Named without snapshot: an error that says what to do.
        for names in [vec!["proc/snapshot"], vec!["proc/*"], vec!["sched/sched_process_exec", "proc/snapshot"]] {
            let e = Config::new().events(names.clone()).resolve().unwrap_err().to_string();
            assert!(e.contains("set snapshot (--snapshot)"), "{names:?}: {e}");
        }
    }

    #[test]
    fn limits_are_checked() {
        assert!(Config::new().content_max(0).resolve().is_err());
        assert!(Config::new().content_max((1 << 20) + 1).resolve().is_err());
        assert!(Config::new().comm(vec!["a-very-long-comm-name".into()]).resolve().is_err());
        assert!(Config::new().follow_children(true).resolve().is_err());
        assert!(Config::new().content_fds(vec![-1]).resolve().is_err());
        assert!(Config::new().comm(vec!["ab\0".into()]).resolve().unwrap_err().to_string().contains("NUL"));
        assert!(Config::new().exclude_comm(vec!["x".repeat(16)]).resolve().is_err());
        let me = std::process::id();
        assert!(Config::new().pids(vec![me]).resolve().unwrap_err().to_string().contains("the tracer itself"));
        assert!(Config::new().pids(vec![me]).trace_self(true).resolve().is_ok());
        assert!(Config::new().pids(vec![(1 << 22) - 1]).resolve().unwrap_err().to_string().contains("no process"));
        assert!(Config::new().pids(vec![1 << 22]).resolve().unwrap_err().to_string().contains("not a process id"));
        let r = Config::new().payload_bytes_per_cpu(1).ring_bytes(5000).resolve().unwrap();
        assert_eq!(r.payload_chunks_per_cpu, 2); // at least MIN_CHUNKS_PER_CPU
        assert_eq!(r.ring_bytes, 8192);
    }
}
