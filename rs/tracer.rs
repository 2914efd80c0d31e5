//! Loading, attaching and consuming: the tracer itself.

use crate::byte_blocks::BlockWriter;
use crate::config::{Config, ResolvedConfig};
use crate::decode::VarReader;
use crate::decode::{read_array, DecodeError};
use crate::error::{Error, Result};
use crate::event::{Comm, Event, EventKind};
use crate::fork_guard::{self, ForkFds};
use crate::loader;
use crate::payload_area::PayloadArea;
use crate::queue::{EventQueue, Shared};
use crate::stats::{Stats, UserCounters};
use crate::tracepoint_format::{Format, GenericPayload, MAX_USER_STRS};
use crate::types::{rec, EventType, Payload, COMM_LEN, KERNEL_STATS, RECORD_SIZE};
use bytes::Bytes;
use libbpf_rs::{Link, MapCore, MapFlags, Object, RingBuffer, RingBufferBuilder};
use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Events decoded by the ring-buffer callback during one consume, before
/// they move to the shared queue.
struct Inbox {
    area: PayloadArea,
    pending: Vec<Event>,
    /// Queue weight of each pending event (see `EventQueue::weight`).
    weights: Vec<u32>,
    pending_bytes: usize,
    /// Stop consuming once pending events weigh this much.
    budget: usize,
    /// Where payload bytes are copied to (shared by the events).
    blocks: BlockWriter,
    /// Epoch ns minus boot ns, to turn kernel timestamps into wall time.
    clock_offset: i64,
    next_event_id: u64,
    last_seq: Vec<u64>,
    counters: UserCounters,
    /// Generic tracepoints by tracefs ID.
    formats: HashMap<u32, Arc<Format>>,
    /// Closing: records are counted as discarded, not decoded.
    discarding: bool,
}

/// Record flag: a generic tracepoint (TB_REC_GENERIC).
const REC_GENERIC: u32 = crate::types::rec_flags::GENERIC;

/// What the ring-buffer callback returns to stop `ring_buffer__consume`
/// (which then returns it).
const STOP_CONSUMING: i32 = -1;

/// How long the reader thread waits after a drain that found records: the
/// kernel wakes it at most once per `wake_interval` (1 ms) per CPU (see
/// tb_end), so records that came within that interval after a wake-up
/// carried none; looking again a little later than the interval finds them.
const READER_FOLLOW_UP: Duration = Duration::from_millis(2);

/// How long it waits after a drain that found nothing. Any record now comes
/// more than `wake_interval` after its CPU's last wake-up, so it wakes the
/// thread; this is only a backstop.
const READER_IDLE: Duration = Duration::from_millis(250);

/// Free payload blocks kept for the next burst at most (see `byte_blocks`):
/// enough for the reader to copy into touched memory at the start of a
/// burst, little enough to be no burden when idle.
const WARM_BLOCK_BYTES: usize = 16 << 20;

/// The reader thread's nice value (see `run_reader`).
const READER_NICE: libc::c_int = -10;

impl Inbox {
    fn on_record(&mut self, raw: &[u8]) -> i32 {
        if self.discarding {
            self.counters.discarded += 1;
            return 0;
        }
        match self.decode(raw) {
            Ok((ev, payload_len)) => {
                let w = EventQueue::weight(payload_len);
                self.pending.push(ev);
                self.weights.push(w);
                self.pending_bytes += w as usize;
            }
            Err(DecodeError::PayloadOverwritten) => self.counters.overwritten += 1,
            Err(_) => self.counters.decode_errors += 1,
        }
        if self.pending_bytes >= self.budget {
            STOP_CONSUMING // the record itself was consumed
        } else {
            0
        }
    }

    /// The event of record `raw`, and how many variable bytes it had
    /// (payload area and inline).
    fn decode(&mut self, raw: &[u8]) -> Result<(Event, usize), DecodeError> {
        if raw.len() < RECORD_SIZE {
            return Err(DecodeError::RecordTooShort { need: RECORD_SIZE, got: raw.len() });
        }
        let u32_at = |o| read_array::<4>(raw, o).map(u32::from_le_bytes);
        let u64_at = |o| read_array::<8>(raw, o).map(u64::from_le_bytes);
        let cpu = u32_at(rec::CPU)?;
        let pos = u64_at(rec::PAYLOAD_POS)?;
        let len = u32_at(rec::PAYLOAD_LEN)?;
        let seq = u64_at(rec::SEQ)?;

        // Copy the payload bytes once, into the reader's blocks (the events'
        // fields are slices of that copy), then hand their space in the area
        // back to the producer, whatever became of them.
        let inline_len = u32_at(rec::INLINE_LEN)? as usize;
        let inline = RECORD_SIZE
            .checked_add(inline_len)
            .and_then(|end| raw.get(RECORD_SIZE..end))
            .ok_or(DecodeError::InlineTooLong { inline_len, got: raw.len() });
        let area = &self.area;
        let (bytes, copied) = if len as u64 > area.region_size() {
            (Bytes::new(), Err(DecodeError::PayloadOutOfRange { cpu, pos, len }))
        } else {
            self.blocks.put(len as usize, |dst| area.read_into(cpu, pos, dst))
        };
        let decoded = match copied {
            Ok(true) => inline.and_then(|inline| decode_payload(raw, &bytes, inline, &self.formats)),
            Ok(false) => Err(DecodeError::PayloadOverwritten),
            Err(e) => Err(e),
        };
        if !matches!(decoded, Err(DecodeError::PayloadOutOfRange { .. })) {
            self.area.release(cpu, pos.wrapping_add(len as u64));
            if let Some(last) = self.last_seq.get_mut(cpu as usize) {
                if seq > last.saturating_add(1) {
                    self.counters.seq_gaps += seq - *last - 1;
                }
                *last = seq;
            }
        }
        let (event_type, payload) = decoded?;
        let flags = u32_at(rec::FLAGS)?;
        let comm: [u8; COMM_LEN] = read_array(raw, rec::COMM)?;
        let boot_ns = u64_at(rec::TIMESTAMP_NS)?;
        self.next_event_id = self.next_event_id.wrapping_add(1);
        let event = Event {
            event_id: self.next_event_id,
            event_type,
            timestamp_ns: (boot_ns as i64).wrapping_add(self.clock_offset) as u64,
            cpu,
            pid: u32_at(rec::PID)?,
            tid: u32_at(rec::TID)?,
            ppid: u32_at(rec::PPID)?,
            upid: u64_at(rec::UPID)?,
            uppid: u64_at(rec::UPPID)?,
            comm: Comm::from_padded(&comm),
            flags,
            payload,
        };
        // Inline bytes count too: the queue bounds what the events hold.
        Ok((event, len as usize + inline_len))
    }
}

/// The event kind and payload of ring sample `raw`: its payload-area bytes
/// are `bytes`, the bytes after the record in the sample (an inline field)
/// `inline`; the event's fields are slices of them.
fn decode_payload(
    raw: &[u8],
    bytes: &Bytes,
    inline: &[u8],
    formats: &HashMap<u32, Arc<Format>>,
) -> Result<(EventKind, Payload), DecodeError> {
    let type_id = read_array::<4>(raw, rec::EVENT_TYPE).map(u32::from_le_bytes)?;
    let flags = read_array::<4>(raw, rec::FLAGS).map(u32::from_le_bytes)?;
    let fixed = raw.get(rec::FIXED..RECORD_SIZE).ok_or(DecodeError::RecordTooShort { need: RECORD_SIZE, got: raw.len() })?;
    if flags & REC_GENERIC != 0 {
        let format = formats.get(&type_id).ok_or(DecodeError::UnknownEventType(type_id))?.clone();
        let mut vr = VarReader::shared(bytes, inline);
        let raw_var = vr.take(fixed, 0)?;
        let strs: [_; MAX_USER_STRS] = [vr.take(fixed, 16)?, vr.take(fixed, 32)?, vr.take(fixed, 48)?];
        vr.finish()?;
        let g = GenericPayload::decode(format.clone(), &raw_var, strs)?;
        Ok((EventKind::Generic(format), Payload::Generic(g)))
    } else {
        let event_type = EventType::from_id(type_id).ok_or(DecodeError::UnknownEventType(type_id))?;
        Ok((EventKind::Typed(event_type), Payload::decode_shared(event_type, fixed, bytes, inline)?))
    }
}

/// Everything that exists only while the tracer is open. Fields drop in
/// order: the ring buffer and links go before the maps they use.
struct Live {
    ring: RingBuffer<'static>,
    links: Vec<Link>,
    inbox: Rc<RefCell<Inbox>>,
    object: Object,
}

// SAFETY: the Rc is shared only between `inbox` and the ring-buffer callback,
// both owned by this Live, so moving the Live moves every clone at once;
// libbpf objects, links and ring buffers have no thread affinity. A Live is
// only used behind `Core::live`'s mutex, by one thread at a time.
unsafe impl Send for Live {}

/// State shared by the tracer and its reader thread.
struct Core {
    /// Lock order: `live`, then the queue inside `shared`.
    live: Mutex<Option<Live>>,
    shared: Shared,
}

impl Core {
    fn live(&self) -> MutexGuard<'_, Option<Live>> {
        // A panic while holding the lock leaves at worst a counter behind:
        // keep going rather than poison every later call.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the records now in the ring (up to the queue's free room) into
    /// the queue. Returns how many events were added.
    fn fill(&self) -> Result<usize> {
        let guard = self.live();
        let Some(live) = guard.as_ref() else { return Ok(0) };
        let room = self.shared.room();
        if room == 0 {
            return Ok(0);
        }
        live.inbox.borrow_mut().budget = room;
        let rc = live.ring.consume_raw();
        if rc < 0 && rc != STOP_CONSUMING && rc != -libc::EINTR {
            return Err(Error::Io { context: "reading the ring buffer".into(), source: std::io::Error::from_raw_os_error(-rc) });
        }
        let mut inbox = live.inbox.borrow_mut();
        let inbox = &mut *inbox;
        let n = inbox.pending.len();
        if n > 0 {
            // Pushed while `live` is held: events enter the queue in ring
            // order whichever thread consumed them.
            self.shared.push(inbox.pending.drain(..), inbox.weights.drain(..));
            inbox.pending_bytes = 0;
        }
        Ok(n)
    }
}

/// The reader thread: drains the ring buffer and payload area into the
/// queue as records arrive, so the kernel buffers are freed at memcpy speed
/// whatever the consumer does with the events (JSON, Python objects).
fn run_reader(core: Arc<Core>, epoll_fd: i32) {
    // Ahead of the consumer's threads when CPUs are scarce: a consumer busy
    // formatting must not keep the kernel buffers from being drained. Needs
    // CAP_SYS_NICE (root has it); without it the thread keeps its nice value.
    // SAFETY: plain system calls on this thread's own id.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, READER_NICE) };
    let mut found = false;
    while !core.shared.stop.load(Ordering::Acquire) {
        if !core.shared.wait_for_room(READER_FOLLOW_UP) {
            continue; // queue full: the kernel buffers hold (and count) the rest
        }
        let wait = if found { READER_FOLLOW_UP } else { READER_IDLE };
        let mut pfds = [
            libc::pollfd { fd: epoll_fd, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: core.shared.stop_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: valid pollfds; the epoll fd outlives this thread (the ring
        // buffer is dropped only after the thread is joined), the stop fd
        // lives in `core`.
        unsafe { libc::poll(pfds.as_mut_ptr(), 2, wait.as_millis() as i32) };
        if core.shared.stop.load(Ordering::Acquire) {
            break;
        }
        match core.fill() {
            Ok(n) => found = n > 0,
            Err(e) => {
                core.shared.fail(e);
                break;
            }
        }
    }
}

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
    /// Its descriptors, closed in forked children.
    _fork_fds: ForkFds,
    config: ResolvedConfig,
    ncpus: usize,
    attach_time: Duration,
    /// Generic tracepoints attached.
    generic: Vec<String>,
    /// Their formats, in the same order.
    generic_formats: Vec<Arc<Format>>,
    /// Wildcard-expanded tracepoints that could not be attached, with why.
    attach_failures: Vec<(String, String)>,
    /// Processes not traced because they read this process's output.
    output_readers: Vec<u32>,
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
        let fds_before = fork_guard::anon_fds();
        let mappings_before = fork_guard::bpf_mappings();
        let object = loader::open_and_load(&config, ncpus)?;

        let area = {
            let payload = loader::map(&object, "payload")?;
            let ctl = loader::map(&object, "cpu_ctl")?;
            PayloadArea::new(payload.as_fd(), ctl.as_fd(), ncpus, config.payload_chunks_per_cpu)?
        };
        let mut blocks = BlockWriter::new((config.queue_bytes / 8).min(WARM_BLOCK_BYTES));
        blocks.prefault();
        let inbox = Rc::new(RefCell::new(Inbox {
            area,
            pending: Vec::new(),
            weights: Vec::new(),
            pending_bytes: 0,
            budget: usize::MAX,
            blocks,
            clock_offset: clock_offset(),
            next_event_id: epoch_ns(),
            last_seq: vec![0; ncpus],
            counters: UserCounters::default(),
            formats: formats.iter().map(|f| (f.id, f.clone())).collect(),
            discarding: false,
        }));
        let ring = {
            let cb_inbox = Rc::clone(&inbox);
            let events = loader::map(&object, "events")?;
            let mut b = RingBufferBuilder::new();
            b.add(&events, move |raw: &[u8]| cb_inbox.borrow_mut().on_record(raw))
                .map_err(|e| Error::Bpf { context: "setting up the ring buffer".into(), source: e })?;
            b.build().map_err(|e| Error::Bpf { context: "setting up the ring buffer".into(), source: e })?
        };
        loader::write_filters(&object, &config)?;
        loader::write_generic_descs(&object, &formats)?;
        let mut links = loader::attach(&object, &config)?;
        let (generic_links, failures) = loader::attach_generic(&object, &config, &formats)?;
        let failed: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
        formats.retain(|f| !failed.contains(&f.name));
        let generic = formats.iter().map(|f| f.name.to_string()).collect();
        attach_failures.extend(failures);
        links.extend(generic_links);
        let epoll_fd = ring.epoll_fd();
        let live = Live { ring, links, inbox, object };
        let core = Arc::new(Core { live: Mutex::new(Some(live)), shared: Shared::new(config.queue_bytes)? });
        fork_guard::keep_new_mappings_from_children(&mappings_before);
        let mut fds = fork_guard::new_bpf_fds(&fds_before);
        fds.extend([epoll_fd, core.shared.stop_fd(), core.shared.ready_fd()]);
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
        Ok(Tracer {
            core: ManuallyDrop::new(core),
            epoll_fd,
            reader,
            closed: false,
            stopped: false,
            drained: false,
            final_stats: None,
            owner: fork_guard::current_pid(),
            _fork_fds: fork_fds,
            config,
            ncpus,
            attach_time: started.elapsed(),
            generic,
            generic_formats: formats,
            attach_failures,
            output_readers,
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
        self.check_open()?;
        let max = max.max(1);
        let shared = &self.core.shared;
        if self.stopped {
            // Nothing new can come: deliver what is left, never wait.
            let mut n = shared.take(out, max, Some(Instant::now()))?;
            if n == 0 {
                self.core.fill()?;
                n = shared.take(out, max, Some(Instant::now()))?;
                // The queue was empty, so that fill had room for the whole ring.
                self.drained = n == 0;
            }
            return Ok(n);
        }
        // Records already in the ring are delivered now, not a reader tick
        // later.
        if shared.is_empty() {
            self.core.fill()?;
        }
        if self.reader.is_none() && shared.is_empty() && !timeout.is_zero() {
            // No reader thread: wait for the ring here, then drain it.
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            let mut pfd = libc::pollfd { fd: self.epoll_fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd; the epoll fd lives as long as `core`'s ring.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            self.core.fill()?;
            return shared.take(out, max, Some(Instant::now()));
        }
        let n = shared.take(out, max, Instant::now().checked_add(timeout))?;
        if n > 0 || timeout.is_zero() {
            return Ok(n);
        }
        // Waited in vain: look at the ring once more (records can be pending
        // with no wake-up to come, see tb_end).
        self.core.fill()?;
        shared.take(out, max, Some(Instant::now()))
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
        let map = loader::map(&live.object, "stats")?;
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
        let mut user = live.inbox.borrow().counters.clone();
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
        for m in live.object.maps() {
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

    /// Writes the filters of `c`, validated, and keeps it as the
    /// configuration in force.
    fn apply_filters(&mut self, c: ResolvedConfig) -> Result<()> {
        let guard = self.core.live();
        let live = guard.as_ref().ok_or(Error::Closed)?;
        loader::write_filters(&live.object, &c)?;
        drop(guard);
        self.config = c;
        Ok(())
    }

    /// Detaches every program: nothing new is captured, and `poll` hands out
    /// what already was (the reader thread keeps draining the kernel
    /// buffers), then returns nothing at once; `is_drained()` tells when all
    /// of it was. Idempotent.
    pub fn stop(&mut self) -> Result<()> {
        self.check_open()?;
        if self.stopped {
            return Ok(());
        }
        let links = self.core.live().as_mut().map(|l| std::mem::take(&mut l.links)).unwrap_or_default();
        detach_all(links);
        self.stopped = true;
        Ok(())
    }

    /// Whether `stop()` was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Stopped, and a `poll` found nothing left to hand out.
    pub fn is_drained(&self) -> bool {
        self.drained
    }

    /// Detaches everything and frees the kernel resources. Events not handed
    /// out yet (queued, or unread in the kernel buffers) are counted as
    /// `discarded`; `stats()` keeps the final counters. Idempotent. In a
    /// forked child it only marks the tracer closed (see `fork_guard`).
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
        self.core.shared.stop();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let live = self.core.live().take();
        if let Some(mut live) = live {
            // No handler runs once the links are gone: what is in the
            // buffers now is all there will be.
            detach_all(std::mem::take(&mut live.links));
            let queued = self.core.shared.discard();
            {
                let mut inbox = live.inbox.borrow_mut();
                inbox.discarding = true;
                inbox.budget = usize::MAX;
                inbox.counters.discarded += queued;
            }
            live.ring.consume_raw();
            self.final_stats = Self::snapshot(&live, &self.core.shared).ok();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
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

/// A link handed to another thread only to be dropped.
struct SendLink(#[allow(dead_code)] Link);
// SAFETY: destroying a bpf_link only closes its fd; no thread affinity.
unsafe impl Send for SendLink {}

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
    std::thread::scope(|s| {
        for b in batches {
            s.spawn(move || drop(b));
        }
    });
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn epoch_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME) as u64
}

/// CLOCK_REALTIME - CLOCK_BOOTTIME, sampled tightly.
fn clock_offset() -> i64 {
    let boot1 = clock_ns(libc::CLOCK_BOOTTIME);
    let real = clock_ns(libc::CLOCK_REALTIME);
    let boot2 = clock_ns(libc::CLOCK_BOOTTIME);
    real - (boot1 + (boot2 - boot1) / 2)
}
