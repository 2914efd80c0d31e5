//! The tracer handle (`struct tb_tracer`) and its functions: a `Tracer`
//! (with its reader thread and queue) plus what C callers need on top: the
//! callback, a stop flag that a signal handler may set, the events taken
//! from the queue but not yet delivered, and the descriptors. Events leave
//! either through the callback (tb_poll, tb_consume) or as Arrow batches
//! (tb_poll_arrow, tb_consume_arrow), from the same queue.

use super::desc::{self, EventDesc};
use super::event::{fill, ContextStrings};
use super::options;
use super::status::{guard, Failure, TB_ERR_INVALID, TB_OK, TB_STOPPED};
use super::types::{TbEventDesc, TbOptions, TbStats};
use crate::columnar::{ffi_array, ffi_schema, record_batch};
use crate::event::{Event, EventKind};
use crate::tracer::Tracer;
use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use std::cell::UnsafeCell;
use std::collections::{HashMap, VecDeque};
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Events taken from the queue per tb_poll/tb_consume at most (and per
/// Arrow batch when the caller sets no bound): bounds one call's work when
/// a producer never pauses.
const BATCH: usize = 65536;

/// What tb_stop() touches: an atomic flag and an eventfd that wakes a
/// waiting tb_poll(). Both are async-signal-safe and need no lock.
struct StopSignal {
    stopped: AtomicBool,
    fd: OwnedFd,
}

impl StopSignal {
    fn new() -> Result<StopSignal, Failure> {
        // SAFETY: eventfd has no memory arguments; the fd is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(crate::error::Error::Io { context: "creating the stop eventfd".into(), source: e }.into());
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(StopSignal { stopped: AtomicBool::new(false), fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Only an atomic store and write(2): async-signal-safe. errno is kept.
    fn raise(&self) {
        // SAFETY: errno is this thread's.
        let saved = unsafe { *libc::__errno_location() };
        self.stopped.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = saved };
    }

    fn clear(&self) {
        self.stopped.store(false, Ordering::Release);
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }

    fn is_raised(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// Everything but the stop signal: used by one thread at a time (the
/// header's rule), never while a callback runs except through shared reads.
struct Inner {
    tracer: Tracer,
    /// None for a tracer read only as Arrow batches.
    on_event: Option<unsafe extern "C" fn(*const super::types::TbEvent, *mut c_void) -> c_int>,
    ctx: *mut c_void,
    /// Taken from the queue, not yet delivered (a callback ended a call);
    /// handed out before the queue by every way out.
    pending: VecDeque<Event>,
    /// Reused by `fetch` and `take_arrow`.
    batch: Vec<Event>,
    delivered: u64,
    /// Descriptors of the events attached: typed, then generic.
    attached: Vec<*const TbEventDesc>,
    /// Generic tracepoints' descriptors by tracefs ID, for the tracer's life.
    generic: HashMap<u32, Box<EventDesc>>,
}

/// struct tb_tracer.
pub struct TbTracer {
    stop: StopSignal,
    inner: UnsafeCell<Inner>,
}

impl Inner {
    /// tb_poll and tb_consume need the callback; Arrow readers may go
    /// without.
    fn check_callback(&self) -> Result<(), Failure> {
        match self.on_event {
            Some(_) => Ok(()),
            None => Err(Failure::invalid("this tracer has no on_event callback: read it with tb_poll_arrow/tb_consume_arrow")),
        }
    }

    fn desc_of(&mut self, kind: &EventKind) -> *const EventDesc {
        match kind {
            EventKind::Typed(t) => desc::typed(*t),
            EventKind::Generic(f) => &**self.generic.entry(f.id).or_insert_with(|| desc::generic(f)),
        }
    }
}

/// Takes up to BATCH events into `pending` without waiting.
fn fetch(inner: &mut Inner) -> Result<(), Failure> {
    // Through a buffer kept between calls: no allocation per batch.
    inner.tracer.poll_into(&mut inner.batch, BATCH, Duration::ZERO)?;
    inner.pending.extend(inner.batch.drain(..));
    Ok(())
}

/// Hands the pending events to the callback until it asks to stop or none
/// is left. Returns how many were delivered.
///
/// # Safety
/// `t` is a live tracer used by this thread only (tb_stop aside).
unsafe fn deliver(t: *const TbTracer) -> c_int {
    let mut fields = Vec::new();
    let mut strings = ContextStrings::default();
    let mut n: c_int = 0;
    loop {
        // The &mut Inner lives only between callbacks: a callback may call
        // tb_stats, tb_stop or tb_set_* on this tracer.
        // SAFETY: the caller's promise.
        let (ev, d, on_event, ctx) = {
            let inner = unsafe { &mut *(*t).inner.get() };
            let Some(on_event) = inner.on_event else { break };
            let Some(ev) = inner.pending.pop_front() else { break };
            let d = inner.desc_of(&ev.event_type);
            inner.delivered += 1;
            (ev, d, on_event, inner.ctx)
        };
        // SAFETY: descriptors live as long as the tracer.
        let tb = fill(&ev, unsafe { &*d }, &mut fields, &mut strings);
        n = n.saturating_add(1);
        // SAFETY: a valid event for the callback's duration, as promised.
        if unsafe { on_event(&tb, ctx) } != 0 {
            break;
        }
    }
    n
}

/// The tracer behind `t`, or TB_ERR_INVALID for NULL.
fn handle<'a>(t: *const TbTracer) -> Result<&'a TbTracer, Failure> {
    // SAFETY: non-NULL handles come from tb_open and live until tb_close.
    unsafe { t.as_ref() }.ok_or_else(|| Failure::invalid("the tracer is NULL"))
}

/// # Safety
/// See c/bootstrap-api.h: `opts` and its arrays valid, `out` valid,
/// `errbuf` NULL or valid for `errlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn tb_open(opts: *const TbOptions, out: *mut *mut TbTracer, errbuf: *mut c_char, errlen: usize) -> c_int {
    if !out.is_null() {
        // SAFETY: the caller's promise.
        unsafe { *out = std::ptr::null_mut() };
    }
    // SAFETY: the caller's promises.
    unsafe {
        guard(errbuf, errlen, || {
            let o = opts.as_ref().ok_or_else(|| Failure::invalid("options are NULL"))?;
            if out.is_null() {
                return Err(Failure::invalid("out is NULL"));
            }
            let tracer = Tracer::new(options::config(o)?)?;
            let mut generic = HashMap::new();
            let mut attached: Vec<*const TbEventDesc> = tracer.events().iter().map(|&e| &desc::typed(e).raw as *const _).collect();
            for f in tracer.generic_formats() {
                let d: &EventDesc = generic.entry(f.id).or_insert_with(|| desc::generic(f));
                attached.push(&d.raw);
            }
            let inner = Inner {
                tracer,
                on_event: o.on_event,
                ctx: o.ctx,
                pending: VecDeque::new(),
                batch: Vec::new(),
                delivered: 0,
                attached,
                generic,
            };
            let t = Box::new(TbTracer { stop: StopSignal::new()?, inner: UnsafeCell::new(inner) });
            *out = Box::into_raw(t);
            Ok(TB_OK)
        })
    }
}

/// tb_poll's wait: up to `timeout_ms` for queued events, if none is
/// pending. False once tb_stop() was called, before or during the wait;
/// otherwise true, events or not (a timeout, or a signal: EINTR ends the
/// wait early).
fn wait(h: &TbTracer, inner: &Inner, timeout_ms: c_int) -> bool {
    if h.stop.is_raised() {
        return false;
    }
    if inner.pending.is_empty() {
        // Wait for queued events or tb_stop(). The caller then looks at the
        // ring also after a timeout: records can sit there with no wake-up
        // to come.
        let mut pfds = [
            libc::pollfd { fd: inner.tracer.ready_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: h.stop.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfds.
        unsafe { libc::poll(pfds.as_mut_ptr(), 2, timeout_ms.max(-1)) };
    }
    !h.stop.is_raised()
}

/// # Safety
/// `t` from tb_open, not closed; one thread at a time.
#[no_mangle]
pub unsafe extern "C" fn tb_poll(t: *mut TbTracer, timeout_ms: c_int) -> c_int {
    // SAFETY: the caller's promises.
    unsafe {
        guard(std::ptr::null_mut(), 0, || {
            let h = handle(t)?;
            let inner = &mut *h.inner.get();
            inner.check_callback()?;
            if !wait(h, inner, timeout_ms) {
                return Ok(TB_STOPPED);
            }
            if inner.pending.is_empty() {
                fetch(inner)?;
            }
            Ok(deliver(t))
        })
    }
}

/// # Safety
/// As tb_poll.
#[no_mangle]
pub unsafe extern "C" fn tb_consume(t: *mut TbTracer) -> c_int {
    // SAFETY: the caller's promises.
    unsafe {
        guard(std::ptr::null_mut(), 0, || {
            let inner = &mut *handle(t)?.inner.get();
            inner.check_callback()?;
            if inner.pending.is_empty() {
                fetch(inner)?;
            }
            Ok(deliver(t))
        })
    }
}

/// Marks the caller's `*out` released before anything can fail, so that
/// on every error it holds nothing to free (it may hold garbage on entry:
/// written, never dropped). Returns it, or TB_ERR_INVALID for NULL.
///
/// # Safety
/// `out` is NULL or valid for writes.
unsafe fn released<'a, T>(out: *mut T, empty: fn() -> T) -> Result<&'a mut T, Failure> {
    if out.is_null() {
        return Err(Failure::invalid("out is NULL"));
    }
    // SAFETY: the caller's promise; nothing is read from `out`.
    unsafe {
        out.write(empty());
        Ok(&mut *out)
    }
}

/// Up to `max_events` events (0: up to BATCH), those a callback left
/// pending first (they are older than the queue's), as one batch of the
/// tracer's schema in `out`. Never waits. Returns the row count.
fn take_arrow(inner: &mut Inner, max_events: usize, out: &mut FFI_ArrowArray) -> Result<c_int, Failure> {
    // The count is returned as an int.
    let max = if max_events == 0 { BATCH } else { max_events.min(c_int::MAX as usize) };
    if inner.tracer.config().arrow {
        // Rows of the batches the reader built (no callback ever runs).
        let batch = inner.tracer.poll_arrow(max, Duration::ZERO)?;
        let n = batch.num_rows();
        *out = ffi_array(batch);
        inner.delivered += n as u64;
        return Ok(n as c_int);
    }
    inner.batch.clear();
    let from_pending = inner.pending.len().min(max);
    inner.batch.extend(inner.pending.drain(..from_pending));
    let room = max - from_pending;
    if room > 0 {
        inner.tracer.poll_into(&mut inner.batch, room, Duration::ZERO)?;
    }
    let built = record_batch(inner.tracer.arrow_schema(), &inner.batch);
    let n = inner.batch.len();
    inner.batch.clear();
    *out = ffi_array(built?);
    inner.delivered += n as u64;
    Ok(n as c_int)
}

/// # Safety
/// As tb_poll; `out` NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn tb_poll_arrow(t: *mut TbTracer, timeout_ms: c_int, max_events: usize, out: *mut FFI_ArrowArray) -> c_int {
    // SAFETY: the caller's promises.
    unsafe {
        guard(std::ptr::null_mut(), 0, || {
            let out = released(out, FFI_ArrowArray::empty)?;
            let h = handle(t)?;
            let inner = &mut *h.inner.get();
            if !wait(h, inner, timeout_ms) {
                return Ok(TB_STOPPED);
            }
            take_arrow(inner, max_events, out)
        })
    }
}

/// # Safety
/// As tb_poll_arrow.
#[no_mangle]
pub unsafe extern "C" fn tb_consume_arrow(t: *mut TbTracer, max_events: usize, out: *mut FFI_ArrowArray) -> c_int {
    // SAFETY: the caller's promises.
    unsafe {
        guard(std::ptr::null_mut(), 0, || {
            let out = released(out, FFI_ArrowArray::empty)?;
            take_arrow(&mut *handle(t)?.inner.get(), max_events, out)
        })
    }
}

/// # Safety
/// `t` live; `out` NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn tb_arrow_schema(t: *mut TbTracer, out: *mut FFI_ArrowSchema) -> c_int {
    // SAFETY: the caller's promises; a shared read of the tracer.
    unsafe {
        guard(std::ptr::null_mut(), 0, || {
            let out = released(out, FFI_ArrowSchema::empty)?;
            let inner = &*handle(t)?.inner.get();
            *out = ffi_schema(&inner.tracer.arrow_schema().schema())?;
            Ok(TB_OK)
        })
    }
}

/// Async-signal-safe, from any thread: only StopSignal::raise.
///
/// # Safety
/// `t` NULL or a live tracer.
#[no_mangle]
pub unsafe extern "C" fn tb_stop(t: *mut TbTracer) {
    // SAFETY: the caller's promise; only the Sync stop signal is touched.
    if let Some(h) = unsafe { t.as_ref() } {
        h.stop.raise();
    }
}

/// # Safety
/// `t` NULL or a live tracer.
#[no_mangle]
pub unsafe extern "C" fn tb_resume(t: *mut TbTracer) {
    // SAFETY: the caller's promise.
    if let Some(h) = unsafe { t.as_ref() } {
        h.stop.clear();
    }
}

/// # Safety
/// `t` NULL or a live tracer.
#[no_mangle]
pub unsafe extern "C" fn tb_fd(t: *const TbTracer) -> c_int {
    // SAFETY: the caller's promise; a shared read.
    match unsafe { t.as_ref() } {
        Some(h) => unsafe { &*h.inner.get() }.tracer.ready_fd(),
        None => TB_ERR_INVALID,
    }
}

/// # Safety
/// `t` live; `pids` valid for `npids`; `errbuf` NULL or valid for `errlen`.
#[no_mangle]
pub unsafe extern "C" fn tb_set_pids(t: *mut TbTracer, pids: *const u32, npids: usize, errbuf: *mut c_char, errlen: usize) -> c_int {
    // SAFETY: the caller's promises.
    unsafe {
        guard(errbuf, errlen, || {
            let inner = &mut *handle(t)?.inner.get();
            inner.tracer.set_pids(options::slice(pids, npids, "pids")?)?;
            Ok(TB_OK)
        })
    }
}

/// Replaces a filter given as C strings (comm prefixes, cgroup paths).
///
/// # Safety
/// `t` live; `p` valid for `n` C strings; `errbuf` NULL or valid for `errlen`.
unsafe fn set_string_filter(
    t: *mut TbTracer,
    p: *const *const c_char,
    n: usize,
    what: &str,
    errbuf: *mut c_char,
    errlen: usize,
    set: fn(&mut Tracer, &[String]) -> crate::error::Result<()>,
) -> c_int {
    // SAFETY: the caller's promises.
    unsafe {
        guard(errbuf, errlen, || {
            let inner = &mut *handle(t)?.inner.get();
            set(&mut inner.tracer, &options::strings(p, n, what)?)?;
            Ok(TB_OK)
        })
    }
}

/// # Safety
/// `t` live; `comms` valid for `ncomms` C strings; `errbuf` as above.
#[no_mangle]
pub unsafe extern "C" fn tb_set_comms(
    t: *mut TbTracer,
    comms: *const *const c_char,
    ncomms: usize,
    errbuf: *mut c_char,
    errlen: usize,
) -> c_int {
    // SAFETY: the caller's promises.
    unsafe { set_string_filter(t, comms, ncomms, "comms", errbuf, errlen, Tracer::set_comm) }
}

/// # Safety
/// `t` live; `cgroups` valid for `ncgroups` C strings; `errbuf` as above.
#[no_mangle]
pub unsafe extern "C" fn tb_set_cgroups(
    t: *mut TbTracer,
    cgroups: *const *const c_char,
    ncgroups: usize,
    errbuf: *mut c_char,
    errlen: usize,
) -> c_int {
    // SAFETY: the caller's promises.
    unsafe { set_string_filter(t, cgroups, ncgroups, "cgroups", errbuf, errlen, Tracer::set_cgroups) }
}

/// # Safety
/// `t` live; `out` valid.
#[no_mangle]
pub unsafe extern "C" fn tb_stats(t: *mut TbTracer, out: *mut TbStats) -> c_int {
    // SAFETY: the caller's promises; shared reads of the tracer.
    unsafe {
        guard(std::ptr::null_mut(), 0, || {
            let inner = &*handle(t)?.inner.get();
            let out = out.as_mut().ok_or_else(|| Failure::invalid("out is NULL"))?;
            let s = inner.tracer.stats()?;
            out.kernel = [0; crate::types::KERNEL_STATS.len()];
            for (slot, (_, v)) in out.kernel.iter_mut().zip(&s.kernel) {
                *slot = *v;
            }
            out.delivered = inner.delivered;
            out.decode_errors = s.user.decode_errors;
            out.overwritten = s.user.overwritten;
            out.seq_gaps = s.user.seq_gaps;
            out.discarded = s.user.discarded;
            out.cgroup_unresolved = s.user.cgroup_unresolved;
            out.queued = s.queued + inner.pending.len() as u64;
            out.snapshot_events = s.user.snapshot_events;
            out.snapshot_lost = s.user.snapshot_lost;
            out.snapshot_truncated = s.user.snapshot_truncated;
            out.snapshot_followed = s.user.snapshot_followed;
            out.snapshot_unseen = s.user.snapshot_unseen;
            Ok(TB_OK)
        })
    }
}

/// The name of kernel counter `i`, or NULL.
#[no_mangle]
pub extern "C" fn tb_stat_name(i: c_uint) -> *const c_char {
    static NAMES: std::sync::OnceLock<Vec<std::ffi::CString>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| crate::types::KERNEL_STATS.iter().filter_map(|n| std::ffi::CString::new(*n).ok()).collect());
    names.get(i as usize).map_or(std::ptr::null(), |n| n.as_ptr())
}

/// # Safety
/// `t` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn tb_ncpus(t: *const TbTracer) -> c_uint {
    // SAFETY: the caller's promise; a shared read.
    unsafe { t.as_ref() }.map_or(0, |h| unsafe { &*h.inner.get() }.tracer.ncpus() as c_uint)
}

/// # Safety
/// `t` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn tb_nevents(t: *const TbTracer) -> usize {
    // SAFETY: the caller's promise; a shared read.
    unsafe { t.as_ref() }.map_or(0, |h| unsafe { &*h.inner.get() }.attached.len())
}

/// # Safety
/// `t` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn tb_event_at(t: *const TbTracer, i: usize) -> *const TbEventDesc {
    // SAFETY: the caller's promise; a shared read.
    unsafe { t.as_ref() }.and_then(|h| unsafe { &*h.inner.get() }.attached.get(i).copied()).unwrap_or(std::ptr::null())
}

/// # Safety
/// `t` NULL or from tb_open, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn tb_close(t: *mut TbTracer) {
    if t.is_null() {
        return;
    }
    // SAFETY: the caller hands the handle back; dropping it closes the
    // tracer. A panic is contained (the handle is then leaked, not freed twice).
    let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(t) })));
}
