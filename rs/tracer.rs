//! Loading, attaching and consuming: the tracer itself.

use crate::config::{Config, ResolvedConfig};
use crate::decode::{read_array, DecodeError};
use crate::error::{Error, Result};
use crate::event::{Comm, Event};
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
}

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
            self.area.release(cpu, pos + len as u64);
            if let Some(last) = self.last_seq.get_mut(cpu as usize) {
                if seq > *last + 1 {
                    self.counters.seq_gaps += seq - *last - 1;
                }
                *last = seq;
            }
        }
        if !read? {
            return Err(DecodeError::PayloadOverwritten);
        }

        let type_id = u32_at(rec::EVENT_TYPE)?;
        let event_type = EventType::from_id(type_id).ok_or(DecodeError::UnknownEventType(type_id))?;
        let fixed = raw.get(rec::FIXED..RECORD_SIZE).ok_or(DecodeError::RecordTooShort { need: RECORD_SIZE, got: raw.len() })?;
        let payload = Payload::decode(event_type, fixed, &self.scratch)?;
        let comm: [u8; COMM_LEN] = read_array(raw, rec::COMM)?;
        let boot_ns = u64_at(rec::TIMESTAMP_NS)?;
        self.next_event_id += 1;
        Ok(Event {
            event_id: self.next_event_id,
            event_type,
            timestamp_ns: (boot_ns as i64 + self.clock_offset) as u64,
            cpu,
            pid: u32_at(rec::PID)?,
            tid: u32_at(rec::TID)?,
            ppid: u32_at(rec::PPID)?,
            upid: u64_at(rec::UPID)?,
            uppid: u64_at(rec::UPPID)?,
            comm: Comm::from_padded(&comm),
            flags: u32_at(rec::FLAGS)?,
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
        let config = config.resolve()?;
        loader::check_environment()?;
        let tracing = crate::tracefs::ensure_mounted()?;
        loader::check_tracepoints(&tracing, &config.events)?;

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
        };
        tracer.apply_filters(&object)?;
        let links = loader::attach(&object, &tracer.config)?;
        tracer.live = Some(Live { ring, links, inbox, object });
        tracer.attach_time = started.elapsed();
        Ok(tracer)
    }

    /// The events this tracer is attached to.
    pub fn events(&self) -> &[EventType] {
        &self.config.events
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
        self.live = None;
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

