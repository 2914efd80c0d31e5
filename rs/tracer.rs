//! Loading, attaching and consuming: the tracer itself.

use crate::byte_blocks::BlockWriter;
use crate::cgroup::{CgroupInfo, CgroupResolver};
use crate::clock::{epoch_ns, WallClock};
use crate::columnar::{record_batch, EventSchema};
use crate::config::{Config, ResolvedConfig};
use crate::cpu_yield::CpuYield;
use crate::decode::read_array;
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::fork_guard::{self, ForkFds};
use crate::loader;
use crate::payload_area::{AreaMaps, PayloadArea};
use crate::queue::{EventQueue, Shared};
use crate::reader::{run_reader, Core, Live};
use crate::record_decoder::Inbox;
use crate::release;
use crate::skeleton::Loaded;
use crate::stats::{Stats, UserCounters};
use crate::tracepoint_format::Format;
use crate::types::{EventType, KERNEL_STATS};
use libbpf_rs::{Link, MapCore, MapFlags, RingBufferBuilder};
use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Free payload blocks kept for the next burst at most (see `byte_blocks`):
/// enough for the reader to copy into touched memory at the start of a
/// burst, little enough to be no burden when idle.
const WARM_BLOCK_BYTES: usize = 16 << 20;

/// How long a consumer whose wait ended empty waits for the reader thread
/// to answer its kick: a bound in case the reader is starved, never reached
/// otherwise (the reader answers within microseconds).
const KICK_ANSWER_WAIT: Duration = Duration::from_millis(20);

/// A running tracer: attached on creation, detached on `close()` or drop.
/// A reader thread moves records from the kernel into a bounded userspace
/// queue (`Config::queue_bytes`); `poll` takes events from that queue.
pub struct Tracer {
    /// Not dropped in a forked child (see `fork_guard`): its libbpf objects
    /// would detach perf events the parent shares.
    core: ManuallyDrop<Arc<Core>>,
    /// The ring buffer's epoll fd (owned by the ring buffer in `core`).
    epoll_fd: i32,
    reader: Option<JoinHandle<()>>,
    closed: bool,
    /// Detached by `stop()`: what was captured is still being delivered.
    stopped: bool,
    /// Stopped, and everything captured has been handed out.
    drained: bool,
    /// The counters as they were when the tracer closed.
    final_stats: Option<Stats>,
    /// The process that created the tracer; in any other (a forked child)
    /// the tracer is inert.
    owner: i32,
    /// Its descriptors, closed in forked children (until released).
    fork_fds: Option<ForkFds>,
    config: ResolvedConfig,
    ncpus: usize,
    attach_time: Duration,
    /// Generic tracepoints attached.
    generic: Vec<String>,
    /// Their formats, in the same order.
    generic_formats: Vec<Arc<Format>>,
    /// Wildcard-expanded tracepoints that could not be attached, with why.
    attach_failures: Vec<(String, String)>,
    /// What is traced another way than this kernel should allow, with why.
    notes: Vec<String>,
    /// Processes not traced because they read this process's output.
    output_readers: Vec<u32>,
    /// The Arrow schema of this tracer's events, made on first use.
    arrow_schema: OnceLock<Arc<EventSchema>>,
    /// Events on their way into a record batch (kept for its capacity).
    arrow_scratch: Vec<Event>,
    /// The polling thread's policy while the queue is light (`yield_cpu`).
    cpu_yield: CpuYield,
}

impl Tracer {
    /// Loads the BPF program, applies `config` and attaches. Fails with a
    /// specific error (privileges, BTF, tracefs, unknown event, verifier).
    pub fn new(config: Config) -> Result<Tracer> {
        let started = Instant::now();
        // Bad options fail before anything touches the kernel; event names
        // other than typed ones need the kernel's list of tracepoints.
        match config.resolve() {
            Ok(_) | Err(Error::UnknownEvent { .. }) => {}
            Err(e) => return Err(e),
        }
        loader::check_environment()?;
        let tracing = crate::tracefs::ensure_mounted()?;
        let available = if config.events.is_empty() { Vec::new() } else { crate::tracefs::available(&tracing) };
        let mut config = config.resolve_with(&available)?;
        let output_readers = if config.exclude_output_readers {
            crate::output_readers::output_readers().into_iter().filter(|p| !config.pids.contains(p)).collect()
        } else {
            Vec::new()
        };
        for p in &output_readers {
            if !config.exclude_pids.contains(p) && config.exclude_pids.len() < crate::config::EXCLUDED_MAX {
                config.exclude_pids.push(*p);
            }
        }
        loader::check_tracepoints(&tracing, &config.events)?;
        let mut formats = Vec::new();
        let mut attach_failures: Vec<(String, String)> = config
            .unavailable
            .iter()
            .map(|n| (n.clone(), format!("not available on this kernel ({})", loader::kernel_release())))
            .collect();
        for (name, wild) in &config.generic {
            match crate::tracepoint_format::load(&tracing, name) {
                Ok(f) => formats.push(Arc::new(f)),
                Err(e) if *wild => attach_failures.push((name.clone(), e)),
                Err(e) => return Err(Error::Config(format!("cannot read the format of {name}: {e}"))),
            }
        }

        let ncpus = libbpf_rs::num_possible_cpus().map_err(|e| Error::Bpf { context: "counting possible CPUs".into(), source: e })?;
        // The kernel objects of tracers this process closed are released
        // before this one is attached (see `release`).
        release::wait_idle();
        let fds_before = fork_guard::anon_fds();
        let mappings_before = fork_guard::bpf_mappings();
        let (loaded, mut shared, syscall_note) = load_with_shared_syscalls(&config, ncpus, &tracing, &formats)?;
        let notes: Vec<String> = syscall_note.into_iter().collect();
        let maps = loaded.maps();

        let area_maps = AreaMaps {
            payload: maps.payload.as_fd(),
            cpu_ctl: maps.cpu_ctl.as_fd(),
            chunk_owner: maps.chunk_owner.as_fd(),
            chunk_slot: maps.chunk_slot.as_fd(),
            pool: maps.pool.as_fd(),
        };
        let area = PayloadArea::new(area_maps, ncpus, config.payload_chunks_per_cpu)?;
        let mut blocks = BlockWriter::new((config.queue_bytes / 8).min(WARM_BLOCK_BYTES));
        blocks.prefault();
        let inbox = Rc::new(RefCell::new(Inbox {
            area,
            pending: Vec::new(),
            weights: Vec::new(),
            pending_bytes: 0,
            budget: usize::MAX,
            blocks,
            wall_clock: WallClock::new(),
            next_event_id: epoch_ns(),
            last_seq: vec![0; ncpus],
            counters: UserCounters::default(),
            formats: formats.iter().map(|f| (f.id, f.clone())).collect(),
            discarding: false,
            cgroups: CgroupResolver::new(),
        }));
        let ring = {
            let cb_inbox = Rc::clone(&inbox);
            let mut b = RingBufferBuilder::new();
            b.add(&maps.events, move |raw: &[u8]| cb_inbox.borrow_mut().on_record(raw))
                .map_err(|e| Error::Bpf { context: "setting up the ring buffer".into(), source: e })?;
            b.build().map_err(|e| Error::Bpf { context: "setting up the ring buffer".into(), source: e })?
        };
        loader::write_filters(maps, &config, true, false)?;
        loader::write_generic_descs(maps, &formats)?;
        let mut links = crate::shared_syscalls::attach(&loaded, &mut shared)?;
        links.extend(loader::attach(&loaded, &config, &shared.typed)?);
        let (generic_links, failures) = loader::attach_generic(&loaded, &config, &formats, &shared.generic)?;
        let failed: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
        formats.retain(|f| !failed.contains(&f.name));
        let generic = formats.iter().map(|f| f.name.to_string()).collect();
        attach_failures.extend(failures);
        links.extend(generic_links);
        // Attached first, then the snapshot: no process falls in between.
        let snapshot = if config.snapshot {
            let mut inbox = inbox.borrow_mut();
            let inbox = &mut *inbox;
            let resolver = &mut inbox.cgroups;
            // Canonical, as the filter's paths are (cgroup::filter).
            let root = resolver.mounts().v2.as_ref().map(|m| m.point.canonicalize().unwrap_or_else(|_| m.point.clone()));
            // What the filter resolved, for the events (resolved once).
            let mut resolved: HashMap<u32, Option<Arc<CgroupInfo>>> = HashMap::new();
            // The cgroup filter, as the kernel applies it to live events:
            // the cgroups given and their descendants.
            let mut in_cgroups = |pid: u32, cgroup_id: u64| {
                if config.cgroups.is_empty() {
                    return true;
                }
                let info = resolver.resolve(cgroup_id, pid);
                let inside = match (&root, info.as_ref().and_then(|c| c.path.as_deref())) {
                    (Some(root), Some(p)) => config.cgroups.iter().any(|c| root.join(p.trim_start_matches('/')).starts_with(c)),
                    _ => false,
                };
                resolved.insert(pid, info);
                inside
            };
            let (mut events, counts) = crate::snapshot::take(&loaded, &config, &mut inbox.next_event_id, &mut in_cgroups)?;
            for e in &mut events {
                e.cgroup = match resolved.remove(&e.pid) {
                    Some(info) => info,
                    None => inbox.cgroups.resolve(e.cgroup_id, e.pid),
                };
            }
            inbox.counters.add_snapshot(&counts);
            events
        } else {
            Vec::new()
        };
        let epoll_fd = ring.epoll_fd();
        let live = Live { ring, links, inbox, loaded };
        let core = Arc::new(Core { live: Mutex::new(Some(live)), shared: Shared::new(config.queue_bytes)? });
        let arrow_schema = OnceLock::new();
        if config.arrow {
            let schema = arrow_schema_of(&config.events, &formats);
            core.shared.build_batches(Arc::clone(&schema));
            let _ = arrow_schema.set(schema);
        }
        // Queued before the ring is first read: ahead of every live event.
        // Never dropped for room: until the consumer takes them, the reader
        // waits and the kernel buffers hold (and count) what comes.
        let weights: Vec<u32> = snapshot.iter().map(|e| EventQueue::weight(crate::snapshot::payload_len(e))).collect();
        let mut snapshot = snapshot;
        core.shared.push(&mut snapshot, weights.into_iter())?;
        fork_guard::keep_new_mappings_from_children(&mappings_before);
        let mut fds = fork_guard::new_bpf_fds(&fds_before);
        fds.push(epoll_fd);
        fds.extend(core.shared.eventfds());
        let fork_fds = ForkFds::register(fds);
        let reader = if config.reader_thread {
            let core = Arc::clone(&core);
            let thread = std::thread::Builder::new()
                .name("tracer-reader".into())
                .spawn(move || run_reader(core, epoll_fd))
                .map_err(|e| Error::Io { context: "starting the reader thread".into(), source: e })?;
            Some(thread)
        } else {
            None
        };
        let (cpu_yield, yield_note) = CpuYield::new(config.yield_cpu, reader.is_some());
        let mut notes = notes;
        notes.extend(yield_note);
        Ok(Tracer {
            core: ManuallyDrop::new(core),
            epoll_fd,
            reader,
            closed: false,
            stopped: false,
            drained: false,
            final_stats: None,
            owner: fork_guard::current_pid(),
            fork_fds: Some(fork_fds),
            config,
            ncpus,
            attach_time: started.elapsed(),
            generic,
            generic_formats: formats,
            attach_failures,
            notes,
            output_readers,
            arrow_schema,
            arrow_scratch: Vec::new(),
            cpu_yield,
        })
    }

    /// The typed events this tracer is attached to.
    pub fn events(&self) -> &[EventType] {
        &self.config.events
    }

    /// Names of every event attached: typed, then generic tracepoints.
    pub fn event_names(&self) -> Vec<String> {
        self.config.events.iter().map(|e| e.name().to_string()).chain(self.generic.iter().cloned()).collect()
    }

    /// The formats of the generic tracepoints attached (same order as in
    /// `event_names`).
    pub fn generic_formats(&self) -> &[Arc<Format>] {
        &self.generic_formats
    }

    /// A file descriptor readable while events wait to be taken by `poll`
    /// (for an external event loop; level-triggered). Owned by the tracer.
    pub fn ready_fd(&self) -> i32 {
        self.core.shared.ready_fd()
    }

    /// Tracepoints a wildcard named that could not be attached, with why.
    pub fn attach_failures(&self) -> &[(String, String)] {
        &self.attach_failures
    }

    /// What is traced by a slower way than the usual one, and why (the
    /// events are recorded all the same).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Processes not traced because they read this process's stdout or
    /// stderr (see `Config::exclude_output_readers`), found at start.
    pub fn output_readers(&self) -> &[u32] {
        &self.output_readers
    }

    /// Time from `new()` to attached (load, verify, attach).
    pub fn startup_time(&self) -> Duration {
        self.attach_time
    }

    fn check_open(&self) -> Result<()> {
        self.check_owner()?;
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Fails in a forked child: the tracer belongs to its creator.
    fn check_owner(&self) -> Result<()> {
        if self.forked() {
            Err(Error::Forked { owner: self.owner })
        } else {
            Ok(())
        }
    }

    /// Whether this is a forked child of the process that created the tracer.
    pub fn forked(&self) -> bool {
        fork_guard::current_pid() != self.owner
    }

    /// Waits up to `timeout` for events, then returns up to `max` of them
    /// (possibly none). Never blocks longer than `timeout`.
    pub fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        self.poll_into(&mut out, max, timeout)?;
        Ok(out)
    }

    /// Like `poll`, appending to `out`; returns how many were appended.
    pub fn poll_into(&mut self, out: &mut Vec<Event>, max: usize, timeout: Duration) -> Result<usize> {
        self.poll_into_within(out, max, usize::MAX, timeout)
    }

    /// Like `poll_into`, but stops after the events that reach `max_bytes`
    /// of contents and event structs (at least one event): what a caller
    /// that turns a whole batch into text or columns at once holds in
    /// memory stays bounded however large the contents.
    pub fn poll_into_within(&mut self, out: &mut Vec<Event>, max: usize, max_bytes: usize, timeout: Duration) -> Result<usize> {
        self.check_open()?;
        if self.config.arrow {
            return Err(Error::Config(
                "this tracer builds Arrow record batches (arrow): take its events with poll_arrow(); \
                 poll, iteration, JSON and the other per-event forms need a tracer opened without arrow"
                    .into(),
            ));
        }
        let max = max.max(1);
        Ok(self.poll_queue(timeout, |shared, deadline| shared.take(out, max, max_bytes, deadline).map(|n| (n, n)))?.0)
    }

    /// Takes from the queue with `take` (which returns what it took and how
    /// many events that is), waiting up to `timeout` for the first, and
    /// filling the queue from the kernel buffers when it is empty.
    fn poll_queue<T>(
        &mut self,
        timeout: Duration,
        mut take: impl FnMut(&Shared, Option<Instant>) -> Result<(T, usize)>,
    ) -> Result<(T, usize)> {
        self.check_open()?;
        let shared = &self.core.shared;
        if self.stopped {
            self.cpu_yield.restore();
            // Nothing new can come: deliver what is left, never wait.
            let got = take(shared, Some(Instant::now()))?;
            if got.1 > 0 {
                return Ok(got);
            }
            self.core.fill()?;
            let got = take(shared, Some(Instant::now()))?;
            // The queue was empty and that fill found nothing: the ring is empty.
            self.drained = got.1 == 0;
            return Ok(got);
        }
        self.cpu_yield.adjust(shared.queued_bytes(), shared.limit());
        // Records already in the ring are delivered now, not a reader tick
        // later: by the reader thread, woken for them, when there is one and
        // the caller waits (see `kick_reader`).
        if shared.is_empty() {
            if self.reader.is_some() && !timeout.is_zero() {
                shared.kick_reader();
            } else {
                self.core.fill()?;
            }
        }
        if self.reader.is_none() && shared.is_empty() && !timeout.is_zero() {
            // No reader thread: wait for the ring here, then drain it.
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            let mut pfd = libc::pollfd { fd: self.epoll_fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd; the epoll fd lives as long as `core`'s ring.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            self.core.fill()?;
            return take(shared, Some(Instant::now()));
        }
        let got = take(shared, Instant::now().checked_add(timeout))?;
        if got.1 > 0 || timeout.is_zero() {
            return Ok(got);
        }
        // Waited in vain: look at the ring once more (records can be pending
        // with no wake-up to come, see tb_end), through the reader thread
        // when there is one, for the reason `kick_reader` gives.
        if self.reader.is_some() {
            let kick = shared.kick_reader();
            shared.wait_for_answer(kick, Instant::now() + KICK_ANSWER_WAIT);
        } else {
            self.core.fill()?;
        }
        take(shared, Some(Instant::now()))
    }

    /// The Arrow schema of this tracer's record batches: its typed events and
    /// generic tracepoints, each with its payload columns.
    pub fn arrow_schema(&self) -> Arc<EventSchema> {
        self.arrow_schema.get_or_init(|| arrow_schema_of(self.events(), &self.generic_formats)).clone()
    }

    /// Like `poll`, as one Arrow record batch of `arrow_schema()` (possibly
    /// of no rows).
    pub fn poll_arrow(&mut self, max: usize, timeout: Duration) -> Result<arrow_array::RecordBatch> {
        if self.config.arrow {
            // Batches the reader built: handed out as they are (cut at
            // `max` rows).
            let max = max.max(1);
            let (batch, _) = self.poll_queue(timeout, |shared, deadline| {
                shared.take_batch(max, deadline).map(|b| {
                    let n = b.as_ref().map_or(0, |b| b.num_rows());
                    (b, n)
                })
            })?;
            return Ok(batch.unwrap_or_else(|| arrow_array::RecordBatch::new_empty(self.arrow_schema().schema())));
        }
        let mut events = std::mem::take(&mut self.arrow_scratch);
        events.clear();
        let polled = self.poll_into(&mut events, max, timeout);
        let batch = polled.and_then(|_| record_batch(self.arrow_schema(), &events));
        events.clear();
        self.arrow_scratch = events;
        batch
    }

    /// Returns events already captured, without waiting.
    pub fn try_poll(&mut self, max: usize) -> Result<Vec<Event>> {
        self.poll(max, Duration::ZERO)
    }

    /// Every counter: kernel-side losses, userspace delivery, the queue.
    /// After `close()`, their final values.
    pub fn stats(&self) -> Result<Stats> {
        self.check_owner()?;
        if self.closed {
            return self.final_stats.clone().ok_or(Error::Closed);
        }
        let guard = self.core.live();
        let live = guard.as_ref().ok_or(Error::Closed)?;
        Self::snapshot(live, &self.core.shared)
    }

    fn snapshot(live: &Live, shared: &Shared) -> Result<Stats> {
        let map = &live.loaded.maps().stats;
        let mut kernel = Vec::with_capacity(KERNEL_STATS.len());
        for (i, name) in KERNEL_STATS.iter().enumerate() {
            let key = (i as u32).to_ne_bytes();
            let per_cpu = map
                .lookup_percpu(&key, MapFlags::ANY)
                .map_err(|e| Error::Bpf { context: "reading kernel counters".into(), source: e })?
                .unwrap_or_default();
            let total: u64 = per_cpu.iter().filter_map(|v| read_array::<8>(v, 0).ok()).map(u64::from_ne_bytes).sum();
            kernel.push((*name, total));
        }
        let inbox = live.inbox.borrow();
        let mut user = inbox.counters.clone();
        // Kept by the resolver, read here rather than copied per event.
        user.cgroup_unresolved = inbox.cgroups.unresolved();
        drop(inbox);
        let (queued, queued_bytes, queue_peak_bytes, taken) = shared.levels();
        user.delivered = taken;
        Ok(Stats { kernel, user, queued, queued_bytes, queue_peak_bytes })
    }

    /// Kernel memory held by this tracer's BPF maps (ring buffer, payload
    /// area and the rest), as the kernel charges it (`memlock` in fdinfo).
    pub fn kernel_memory(&self) -> Result<u64> {
        self.check_open()?;
        let guard = self.core.live();
        let live = guard.as_ref().ok_or(Error::Closed)?;
        let mut total = 0;
        for m in live.loaded.object().maps() {
            let fd = m.as_fd().as_raw_fd();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
                .map_err(|e| Error::io(format!("reading /proc/self/fdinfo/{fd}"), e))?;
            total += info.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
        }
        Ok(total)
    }

    /// Replaces the pid filter (empty: no pid filter). With follow mode,
    /// children forked from now on are added automatically.
    pub fn set_pids(&mut self, pids: &[u32]) -> Result<()> {
        self.check_open()?;
        crate::config::validate_pids(pids, self.config.trace_self)?;
        let mut c = self.config.clone();
        c.pids = pids.to_vec();
        self.apply_filters(c)
    }

    /// Replaces the comm prefix filter (empty: no comm filter).
    pub fn set_comm(&mut self, prefixes: &[String]) -> Result<()> {
        self.check_open()?;
        let mut c = self.config.clone();
        c.comm = prefixes.to_vec();
        c.validate_comm()?;
        self.apply_filters(c)
    }

    /// Replaces the cgroup filter (empty: none): only tasks in these cgroup
    /// v2 directories or below them (see `Config::cgroups`).
    pub fn set_cgroups(&mut self, paths: &[String]) -> Result<()> {
        self.check_open()?;
        let mut c = self.config.clone();
        c.cgroups = crate::cgroup::filter::resolve_paths(paths, &crate::cgroup::CgroupMounts::detect())?;
        self.apply_filters(c)
    }

    /// Writes the filters of `c`, validated, and keeps it as the
    /// configuration in force.
    fn apply_filters(&mut self, c: ResolvedConfig) -> Result<()> {
        let guard = self.core.live();
        let live = guard.as_ref().ok_or(Error::Closed)?;
        loader::write_filters(live.loaded.maps(), &c, c.cgroups != self.config.cgroups, self.stopped)?;
        drop(guard);
        self.config = c;
        Ok(())
    }

    /// Stops every program: once it returns nothing new is captured (up to
    /// BACKGROUND_DETACH_MAX are detached afterwards, see `release`), and `poll` hands
    /// out what already was (the reader thread keeps draining the kernel
    /// buffers), then returns nothing at once; `is_drained()` tells when all
    /// of it was. Idempotent.
    pub fn stop(&mut self) -> Result<()> {
        self.check_open()?;
        if self.stopped {
            return Ok(());
        }
        // The reader keeps draining meanwhile: `live` is held only to take
        // the links and flip the switch, not through the grace period.
        let (links, switched) = match self.core.live().as_mut() {
            Some(live) => (std::mem::take(&mut live.links), loader::stop_recording(live.loaded.maps()).is_ok()),
            None => (Vec::new(), false),
        };
        let quiet = switched && release::wait_for_handlers();
        let links = self.hand_over_links(links, quiet);
        if !links.is_empty() {
            release::release(Released { links, _fork_fds: None, _loaded: None });
        }
        self.stopped = true;
        Ok(())
    }

    /// Switches `Config::yield_cpu` on or off from the next poll on; off
    /// gives the polling thread its policy back at once. Returns whether it
    /// switches: never without the reader thread or CAP_SYS_NICE, nor once
    /// closed.
    pub fn set_yield_cpu(&mut self, on: bool) -> bool {
        if self.closed || self.forked() {
            return false;
        }
        self.cpu_yield.set_enabled(on)
    }

    /// Whether `stop()` was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Stopped, and a `poll` found nothing left to hand out.
    pub fn is_drained(&self) -> bool {
        self.drained
    }

    /// Stops everything and frees this process's buffers; the programs are
    /// detached and the kernel's resources freed by a release thread right
    /// after (see `release`; larger sets than BACKGROUND_DETACH_MAX are
    /// detached before it returns). Events not handed out yet (queued, or unread
    /// in the kernel buffers) are counted as `discarded`; `stats()` keeps
    /// the final counters. Idempotent. In a forked child it only marks the
    /// tracer closed (see `fork_guard`).
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.forked() {
            if let Some(reader) = self.reader.take() {
                std::mem::forget(reader); // the thread exists only in the parent
            }
            return;
        }
        self.cpu_yield.restore();
        self.core.shared.stop();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let live = self.core.live().take();
        if let Some(mut live) = live {
            // No handler runs once they are switched off (or, if that
            // fails, detached): what is in the buffers now is all there
            // will be.
            let quiet = self.stopped || stop_handlers(&live);
            let links = self.hand_over_links(std::mem::take(&mut live.links), quiet);
            let queued = self.core.shared.discard();
            {
                let mut inbox = live.inbox.borrow_mut();
                inbox.discarding = true;
                inbox.budget = usize::MAX;
                inbox.counters.discarded += queued;
            }
            live.ring.consume_raw();
            self.final_stats = Self::snapshot(&live, &self.core.shared).ok();
            // This process's memory is given back now (the mapped kernel
            // buffers, the copied bytes); the links, programs and maps go
            // on the release worker. A descriptor stops being closed in
            // forked children just before it is closed (never after: the
            // number may be reused by then), so the ring's epoll fd and
            // the queue's eventfds (closed when the tracer is dropped) now.
            let mut closing = self.core.shared.eventfds().to_vec();
            closing.push(self.epoll_fd);
            self.forget_in_children(&closing);
            let Live { ring, inbox, loaded, .. } = live;
            drop(ring);
            drop(inbox);
            release::release(Released { links, _fork_fds: self.fork_fds.take(), _loaded: Some(loaded) });
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Links of stopped handlers: kept for the release worker (returned) if
    /// `quiet` (switched off, grace period passed) and at most
    /// BACKGROUND_DETACH_MAX, else detached here. Either way their
    /// descriptors are no longer closed in forked children from now on.
    fn hand_over_links(&mut self, links: Vec<Link>, quiet: bool) -> Vec<Link> {
        self.forget_in_children(&link_fds(&links));
        if quiet && links.len() <= BACKGROUND_DETACH_MAX {
            links
        } else {
            detach_all(links);
            Vec::new()
        }
    }

    /// Descriptors about to be closed are no longer closed in forked children.
    fn forget_in_children(&mut self, fds: &[i32]) {
        if let Some(f) = self.fork_fds.as_mut() {
            f.forget(fds);
        }
    }

    /// Number of possible CPUs the buffers were sized for.
    pub fn ncpus(&self) -> usize {
        self.ncpus
    }

    /// The configuration in force.
    pub fn config(&self) -> &ResolvedConfig {
        &self.config
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.close();
        if !self.forked() {
            // SAFETY: dropped once, here; never used after.
            unsafe { ManuallyDrop::drop(&mut self.core) };
        }
    }
}

/// The Arrow schema of typed events `events` and generic tracepoints
/// `formats`, in that order.
fn arrow_schema_of(events: &[EventType], formats: &[Arc<Format>]) -> Arc<EventSchema> {
    let kinds: Vec<EventKind> =
        events.iter().map(|t| EventKind::Typed(*t)).chain(formats.iter().map(|f| EventKind::Generic(f.clone()))).collect();
    Arc::new(EventSchema::new(&kinds))
}

/// A link handed to another thread only to be dropped.
struct SendLink(#[allow(dead_code)] Link);
// SAFETY: destroying a bpf_link only closes its fd; no thread affinity.
unsafe impl Send for SendLink {}

/// Switches the handlers off and waits until none is running (see
/// `release`). False if that could not be done: only detaching stops them.
fn stop_handlers(live: &Live) -> bool {
    loader::stop_recording(live.loaded.maps()).is_ok() && release::wait_for_handlers()
}

/// Links detached in the background at most: a larger set (`syscalls/*`:
/// hundreds) holds the kernel's `event_mutex` for tens of seconds while it
/// detaches, stalling every reader of tracefs (the next tracer's lookup of
/// event names, other tools), so `stop()` and `close()` detach it before
/// they return rather than hand that wait to whoever comes next.
const BACKGROUND_DETACH_MAX: usize = 16;

/// Loads the BPF object with the typed syscall events on the shared syscall
/// programs, and finds their syscall numbers; if the kernel refuses those
/// programs or cannot identify every one of those events, loads it again
/// with a program of their own for each (the first object is freed before).
/// `TRACER_EBPF_PER_EVENT_SYSCALLS` set in the environment goes that second
/// way directly, so that it can be tested on a kernel that takes the first.
fn load_with_shared_syscalls(
    config: &ResolvedConfig,
    ncpus: usize,
    tracing: &std::path::Path,
    formats: &[Arc<Format>],
) -> Result<(Loaded, crate::shared_syscalls::Plan, Option<String>)> {
    let uses_shared = crate::shared_syscalls::typed_syscalls(&config.events).next().is_some();
    let why_not = if !uses_shared {
        None
    } else if std::env::var_os(PER_EVENT_SYSCALLS_ENV).is_some() {
        Some(format!("{PER_EVENT_SYSCALLS_ENV} is set"))
    } else {
        match loader::open_and_load(config, ncpus, true) {
            Ok(loaded) => {
                let plan = crate::shared_syscalls::plan(&loaded, tracing, &config.events, true, formats)?;
                let missing = plan.not_covered(&config.events);
                if missing.is_empty() {
                    return Ok((loaded, plan, None));
                }
                Some(format!("the kernel's syscall metadata did not identify {}", missing.join(", ")))
            }
            Err(e) if shared_programs_may_be_why(&e) => Some(format!("the kernel refused them: {}", first_line(&e.to_string()))),
            Err(e) => return Err(e),
        }
    };
    let loaded = loader::open_and_load(config, ncpus, false)?;
    let plan = crate::shared_syscalls::plan(&loaded, tracing, &config.events, false, formats)?;
    let note =
        why_not.map(|why| format!("typed syscall events on a perf event each, not on the shared sys_enter/sys_exit programs: {why}"));
    Ok((loaded, plan, note))
}

/// Puts the typed syscall events on a perf event each: cheaper where the
/// machine's untraced syscalls dominate (docs/protocol.md), and tested.
const PER_EVENT_SYSCALLS_ENV: &str = "TRACER_EBPF_PER_EVENT_SYSCALLS";

/// Whether a load with the shared syscall programs that failed with `e` may
/// succeed without them: the verifier rejected one of them, or the kernel
/// could not load a program (no BTF raw tracepoints or iterators). A lack
/// of memory or of privileges, an interrupted call or one that timed out
/// would fail the same way again, or not for the shared programs' sake.
fn shared_programs_may_be_why(e: &Error) -> bool {
    use libbpf_rs::ErrorKind as Kind;
    match e {
        Error::Verifier { program, .. } => crate::shared_syscalls::PROGRAMS.contains(&program.as_str()) || program == "?",
        Error::Bpf { source, .. } => {
            !matches!(source.kind(), Kind::PermissionDenied | Kind::OutOfMemory | Kind::Interrupted | Kind::WouldBlock | Kind::TimedOut)
        }
        _ => false,
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// The links' descriptors.
fn link_fds(links: &[Link]) -> Vec<i32> {
    links.iter().map(|l| l.as_fd().as_raw_fd()).collect()
}

/// What a stopped or closed tracer leaves to the release worker: the links
/// are detached first; then (when closed) the remaining descriptors are no
/// longer closed in forked children, and the programs and maps go.
struct Released {
    links: Vec<Link>,
    _fork_fds: Option<ForkFds>,
    _loaded: Option<Loaded>,
}
// SAFETY: as SendLink; the skeleton's libbpf objects have no thread
// affinity, and nothing else refers to them once the tracer gave them up.
unsafe impl Send for Released {}

impl Drop for Released {
    fn drop(&mut self) {
        detach_all(std::mem::take(&mut self.links));
    }
}

/// Detaches links. Each tracepoint detach waits for an RCU grace period in
/// the kernel (~50-80 ms); hundreds of them (`syscalls/*`) would take a minute
/// one after another, so large sets are dropped from several threads, whose
/// grace periods overlap. Small sets (the typed events) are dropped in turn:
/// dropped concurrently, ten of them hung a Debian 6.1 PREEMPT_RT guest in
/// tests/kernels for over 8 minutes, for 0.25 s gained on this host's kernel,
/// which serializes them anyway (perf_trace_destroy holds event_mutex across
/// the grace period).
fn detach_all(links: Vec<Link>) {
    const PER_THREAD: usize = 16;
    if links.len() <= PER_THREAD {
        drop(links);
        return;
    }
    let mut batches: Vec<Vec<SendLink>> = Vec::new();
    for (i, l) in links.into_iter().enumerate() {
        if i % PER_THREAD == 0 {
            batches.push(Vec::new());
        }
        batches.last_mut().expect("pushed above").push(SendLink(l));
    }
    // Each batch in a slot its thread empties; a batch whose thread could
    // not be started (a pids limit) is dropped here.
    let slots: Vec<std::sync::Mutex<Option<Vec<SendLink>>>> = batches.into_iter().map(|b| std::sync::Mutex::new(Some(b))).collect();
    let take = |slot: &std::sync::Mutex<Option<Vec<SendLink>>>| drop(slot.lock().ok().and_then(|mut b| b.take()));
    std::thread::scope(|s| {
        for slot in &slots {
            if std::thread::Builder::new().spawn_scoped(s, move || take(slot)).is_err() {
                take(slot);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failure_the_shared_programs_can_cause_is_retried_without_them() {
        let verifier = |program: &str| Error::Verifier { program: program.into(), message: String::new(), log: String::new() };
        assert!(shared_programs_may_be_why(&verifier("handle__sys_exit")));
        assert!(shared_programs_may_be_why(&verifier("tb_syscall_ident")));
        assert!(!shared_programs_may_be_why(&verifier("handle__generic")));
        let einval = libbpf_rs::Error::from(std::io::Error::from_raw_os_error(libc::EINVAL));
        assert!(shared_programs_may_be_why(&Error::Bpf { context: "loading".into(), source: einval }));
        for errno in [libc::EPERM, libc::EACCES, libc::ENOMEM, libc::EINTR, libc::EAGAIN] {
            let source = libbpf_rs::Error::from(std::io::Error::from_raw_os_error(errno));
            assert!(!shared_programs_may_be_why(&Error::Bpf { context: "loading".into(), source }), "errno {errno}");
        }
        assert!(!shared_programs_may_be_why(&Error::OutOfMemory { asked: String::new(), limit: String::new() }));
        assert!(!shared_programs_may_be_why(&Error::Permission { what: String::new() }));
    }
}
