//! Loading, attaching and consuming: the tracer itself.

use crate::config::{Config, ResolvedConfig};
use crate::decode::{read_array, DecodeError};
use crate::error::{Error, Result};
use crate::event::{Comm, Event, EventKind};
use crate::tracepoint_format::{Format, GenericPayload, MAX_USER_STRS};
use crate::decode::VarReader;
use std::collections::HashMap;
use std::sync::Arc;
use crate::payload_area::PayloadArea;
use crate::stats::{Stats, UserCounters};
use crate::types::{rec, EventType, Payload, COMM_LEN, KERNEL_STATS, RECORD_SIZE};
use crate::loader;
use libbpf_rs::{Link, MapCore, MapFlags, Object, RingBuffer, RingBufferBuilder};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Events decoded by the ring-buffer callback, waiting to be handed out.
struct Inbox {
    area: PayloadArea,
    queue: VecDeque<Event>,
    /// Reused buffer for one record's payload bytes.
    scratch: Vec<u8>,
    /// Epoch ns minus boot ns, to turn kernel timestamps into wall time.
    clock_offset: i64,
    next_event_id: u64,
    last_seq: Vec<u64>,
    counters: UserCounters,
    /// Stop consuming the ring once this many events are queued.
    batch_limit: usize,
    /// Generic tracepoints by tracefs ID.
    formats: HashMap<u32, Arc<Format>>,
}

/// Record flag: a generic tracepoint (TB_REC_GENERIC).
const REC_GENERIC: u32 = 0x2;

impl Inbox {
    fn on_record(&mut self, raw: &[u8]) -> i32 {
        match self.decode(raw) {
            Ok(ev) => {
                self.counters.delivered += 1;
                self.queue.push_back(ev);
            }
            Err(DecodeError::PayloadOverwritten) => self.counters.overwritten += 1,
            Err(_) => self.counters.decode_errors += 1,
        }
        if self.queue.len() >= self.batch_limit {
            -1 // stop ring_buffer__consume; the record itself was consumed
        } else {
            0
        }
    }

    fn decode(&mut self, raw: &[u8]) -> Result<Event, DecodeError> {
        if raw.len() < RECORD_SIZE {
            return Err(DecodeError::RecordTooShort { need: RECORD_SIZE, got: raw.len() });
        }
        let u32_at = |o| read_array::<4>(raw, o).map(u32::from_le_bytes);
        let u64_at = |o| read_array::<8>(raw, o).map(u64::from_le_bytes);
        let cpu = u32_at(rec::CPU)?;
        let pos = u64_at(rec::PAYLOAD_POS)?;
        let len = u32_at(rec::PAYLOAD_LEN)?;
        let seq = u64_at(rec::SEQ)?;

        // Copy the payload out first, then hand its space back to the
        // producer, whatever becomes of the decoding.
        self.scratch.clear();
        let read = self.area.read(cpu, pos, len, &mut self.scratch);
        if read.is_ok() {
            self.area.release(cpu, pos.wrapping_add(len as u64));
            if let Some(last) = self.last_seq.get_mut(cpu as usize) {
                if seq > last.saturating_add(1) {
                    self.counters.seq_gaps += seq - *last - 1;
                }
                *last = seq;
            }
        }
        if !read? {
            return Err(DecodeError::PayloadOverwritten);
        }

        let type_id = u32_at(rec::EVENT_TYPE)?;
        let flags = u32_at(rec::FLAGS)?;
        let fixed = raw.get(rec::FIXED..RECORD_SIZE).ok_or(DecodeError::RecordTooShort { need: RECORD_SIZE, got: raw.len() })?;
        let (event_type, payload) = if flags & REC_GENERIC != 0 {
            let format = self.formats.get(&type_id).ok_or(DecodeError::UnknownEventType(type_id))?.clone();
            let mut vr = VarReader::new(&self.scratch);
            let raw_var = vr.take(fixed, 0)?;
            let strs: [_; MAX_USER_STRS] = [vr.take(fixed, 16)?, vr.take(fixed, 32)?, vr.take(fixed, 48)?];
            vr.finish()?;
            let g = GenericPayload::decode(format.clone(), &raw_var, strs)?;
            (EventKind::Generic(format), Payload::Generic(g))
        } else {
            let event_type = EventType::from_id(type_id).ok_or(DecodeError::UnknownEventType(type_id))?;
            (EventKind::Typed(event_type), Payload::decode(event_type, fixed, &self.scratch)?)
        };
        let comm: [u8; COMM_LEN] = read_array(raw, rec::COMM)?;
        let boot_ns = u64_at(rec::TIMESTAMP_NS)?;
        self.next_event_id = self.next_event_id.wrapping_add(1);
        Ok(Event {
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
        })
    }
}

/// Everything that exists only while the tracer is open. Fields drop in
/// order: the ring buffer and links go before the maps they use.
struct Live {
    ring: RingBuffer<'static>,
    #[allow(dead_code)] // held, not read: dropping a Link detaches its program
    links: Vec<Link>,
    inbox: Rc<RefCell<Inbox>>,
    object: Object,
}

/// A running tracer: attached on creation, detached on `close()` or drop.
pub struct Tracer {
    live: Option<Live>,
    config: ResolvedConfig,
    ncpus: usize,
    attach_time: Duration,
    /// Generic tracepoints attached.
    generic: Vec<String>,
    /// Wildcard-expanded tracepoints that could not be attached, with why.
    attach_failures: Vec<(String, String)>,
}

// SAFETY: the Rc is shared only between `inbox` and the ring-buffer callback,
// both owned by this Tracer, so moving the Tracer moves every clone at once;
// libbpf objects, links and ring buffers have no thread affinity. Tracer is
// not Sync: it must be used from one thread at a time.
unsafe impl Send for Tracer {}

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
        let config = config.resolve_with(&available)?;
        loader::check_tracepoints(&tracing, &config.events)?;
        let mut formats = Vec::new();
        let mut attach_failures: Vec<(String, String)> =
            config.unavailable.iter().map(|n| (n.clone(), format!("not available on this kernel ({})", loader::kernel_release()))).collect();
        for (name, wild) in &config.generic {
            match crate::tracepoint_format::load(&tracing, name) {
                Ok(f) => formats.push(Arc::new(f)),
                Err(e) if *wild => attach_failures.push((name.clone(), e)),
                Err(e) => return Err(Error::Config(format!("cannot read the format of {name}: {e}"))),
            }
        }

        let ncpus = libbpf_rs::num_possible_cpus().map_err(|e| Error::Bpf { context: "counting possible CPUs".into(), source: e })?;
        let object = loader::open_and_load(&config, ncpus)?;

        let area = {
            let payload = loader::map(&object, "payload")?;
            let ctl = loader::map(&object, "cpu_ctl")?;
            PayloadArea::new(payload.as_fd(), ctl.as_fd(), ncpus, config.payload_chunks_per_cpu)?
        };
        let inbox = Rc::new(RefCell::new(Inbox {
            area,
            queue: VecDeque::new(),
            scratch: Vec::with_capacity(64 << 10),
            clock_offset: clock_offset(),
            next_event_id: epoch_ns(),
            last_seq: vec![0; ncpus],
            counters: UserCounters::default(),
            batch_limit: 65536,
            formats: formats.iter().map(|f| (f.id, f.clone())).collect(),
        }));
        let ring = {
            let cb_inbox = Rc::clone(&inbox);
            let events = loader::map(&object, "events")?;
            let mut b = RingBufferBuilder::new();
            b.add(&events, move |raw: &[u8]| cb_inbox.borrow_mut().on_record(raw))
                .map_err(|e| Error::Bpf { context: "setting up the ring buffer".into(), source: e })?;
            b.build().map_err(|e| Error::Bpf { context: "setting up the ring buffer".into(), source: e })?
        };
        let mut tracer = Tracer {
            live: None,
            config,
            ncpus,
            attach_time: Duration::ZERO,
            generic: Vec::new(),
            attach_failures,
        };
        tracer.apply_filters(&object)?;
        loader::write_generic_descs(&object, &formats)?;
        let mut links = loader::attach(&object, &tracer.config)?;
        let (generic_links, failures) = loader::attach_generic(&object, &tracer.config, &formats)?;
        let failed: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
        tracer.generic = formats.iter().map(|f| f.name.to_string()).filter(|n| !failed.contains(&n.as_str())).collect();
        tracer.attach_failures.extend(failures);
        links.extend(generic_links);
        tracer.live = Some(Live { ring, links, inbox, object });
        tracer.attach_time = started.elapsed();
        Ok(tracer)
    }

    /// The typed events this tracer is attached to.
    pub fn events(&self) -> &[EventType] {
        &self.config.events
    }

    /// Names of every event attached: typed, then generic tracepoints.
    pub fn event_names(&self) -> Vec<String> {
        self.config.events.iter().map(|e| e.name().to_string()).chain(self.generic.iter().cloned()).collect()
    }

    /// Tracepoints a wildcard named that could not be attached, with why.
    pub fn attach_failures(&self) -> &[(String, String)] {
        &self.attach_failures
    }

    /// Time from `new()` to attached (load, verify, attach).
    pub fn startup_time(&self) -> Duration {
        self.attach_time
    }

    fn live(&self) -> Result<&Live> {
        self.live.as_ref().ok_or_else(|| Error::Config("the tracer is closed".into()))
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
        let live = self.live()?;
        let max = max.max(1);
        {
            let mut inbox = live.inbox.borrow_mut();
            inbox.batch_limit = max;
            if !inbox.queue.is_empty() {
                let n = inbox.queue.len().min(max);
                out.extend(inbox.queue.drain(..n));
                return Ok(n);
            }
        }
        // A negative return is the callback asking to stop (batch full) or
        // EINTR; anything else negative is a real error.
        let rc = live.ring.poll_raw(timeout);
        if rc < 0 && rc != -1 && rc != -libc::EINTR {
            return Err(Error::Io { context: "polling the ring buffer".into(), source: std::io::Error::from_raw_os_error(-rc) });
        }
        // The kernel batches wake-ups, so records can be pending with no
        // wake-up to come: always look at the ring after waiting (no system
        // call: the positions are in shared memory).
        if live.inbox.borrow().queue.is_empty() {
            live.ring.consume_raw();
        }
        let mut inbox = live.inbox.borrow_mut();
        let n = inbox.queue.len().min(max);
        out.extend(inbox.queue.drain(..n));
        Ok(n)
    }

    /// Returns events already in the ring buffer without waiting.
    pub fn try_poll(&mut self, max: usize) -> Result<Vec<Event>> {
        self.poll(max, Duration::ZERO)
    }

    /// Every counter: kernel-side losses and userspace delivery.
    pub fn stats(&self) -> Result<Stats> {
        let live = self.live()?;
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
        let inbox = live.inbox.borrow();
        Ok(Stats { kernel, user: inbox.counters.clone(), queued: inbox.queue.len() as u64 })
    }

    /// Replaces the pid filter (empty: no pid filter). With follow mode,
    /// children forked from now on are added automatically.
    pub fn set_pids(&mut self, pids: &[u32]) -> Result<()> {
        self.config.pids = pids.to_vec();
        let live = self.live.take().ok_or_else(|| Error::Config("the tracer is closed".into()))?;
        let r = self.apply_filters(&live.object);
        self.live = Some(live);
        r
    }

    /// Replaces the comm prefix filter (empty: no comm filter).
    pub fn set_comm(&mut self, prefixes: &[String]) -> Result<()> {
        let mut c = self.config.clone();
        c.comm = prefixes.to_vec();
        c.validate_comm()?;
        self.config = c;
        let live = self.live.take().ok_or_else(|| Error::Config("the tracer is closed".into()))?;
        let r = self.apply_filters(&live.object);
        self.live = Some(live);
        r
    }

    fn apply_filters(&self, object: &Object) -> Result<()> {
        loader::write_filters(object, &self.config)
    }

    /// Detaches everything and frees kernel resources. Idempotent.
    pub fn close(&mut self) {
        if let Some(mut live) = self.live.take() {
            detach_all(std::mem::take(&mut live.links));
        }
    }

    pub fn is_closed(&self) -> bool {
        self.live.is_none()
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
    }
}

/// A link handed to another thread only to be dropped.
struct SendLink(#[allow(dead_code)] Link);
// SAFETY: destroying a bpf_link only closes its fd; no thread affinity.
unsafe impl Send for SendLink {}

/// Detaches links. Each tracepoint detach waits for an RCU grace period in
/// the kernel (~50-80 ms); hundreds of them (`syscalls/*`) would take a minute
/// one after another, so large sets are dropped from several threads, whose
/// grace periods overlap.
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

