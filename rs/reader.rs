//! The reader: what lives while a tracer is open (ring buffer, links, the
//! BPF object) and the thread that drains the kernel buffers into the queue.

use crate::error::{Error, Result};
use crate::queue::Shared;
use crate::record_decoder::{Inbox, STOP_CONSUMING};
use crate::skeleton::Loaded;
use libbpf_rs::{Link, RingBuffer};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long the reader thread waits after a drain that found records: the
/// kernel wakes it at most once per `wake_interval` (1 ms) per CPU (see
/// tb_end), so records that came within that interval after a wake-up
/// carried none; looking again a little later than the interval finds them.
const READER_FOLLOW_UP: Duration = Duration::from_millis(2);

/// How long it waits after a drain that found nothing. Any record now comes
/// more than `wake_interval` after its CPU's last wake-up, so it wakes the
/// thread; this is only a backstop.
const READER_IDLE: Duration = Duration::from_millis(250);

/// Records one drain must find for the reader to drain again at once, not
/// after the next wake-up: about 0.2 ms of a writer at full speed.
const READER_BURST: usize = 256;

/// Queue weight one drain moves at most (about 12,000 events of 64 bytes)
/// before queuing them: a drain of everything at once built a batch of
/// 100,000 events or more in fresh memory during a burst, and the consumer
/// got none of them until it ended. The reader drains again at once after
/// a full slice (see `READER_BURST`); a slice of fewer events than that
/// (contents of 16 KiB and more) goes through `poll(2)`, which returns at
/// once while the ring holds records (its fd is readable while it has data).
const DRAIN_SLICE_BYTES: usize = 4 << 20;

/// The reader thread's nice value (see `run_reader`).
const READER_NICE: libc::c_int = -10;

/// Everything that exists only while the tracer is open. Fields drop in
/// order: the ring buffer and links go before the maps they use.
pub(crate) struct Live {
    pub(crate) ring: RingBuffer<'static>,
    pub(crate) links: Vec<Link>,
    pub(crate) inbox: Rc<RefCell<Inbox>>,
    pub(crate) loaded: Loaded,
}

// SAFETY: the Rc is shared only between `inbox` and the ring-buffer callback,
// both owned by this Live, so moving the Live moves every clone at once;
// libbpf objects, links and ring buffers have no thread affinity. A Live is
// only used behind `Core::live`'s mutex, by one thread at a time.
unsafe impl Send for Live {}

/// State shared by the tracer and its reader thread.
pub(crate) struct Core {
    /// Lock order: `live`, then the queue inside `shared`.
    pub(crate) live: Mutex<Option<Live>>,
    pub(crate) shared: Shared,
}

impl Core {
    pub(crate) fn live(&self) -> MutexGuard<'_, Option<Live>> {
        // A panic while holding the lock leaves at worst a counter behind:
        // keep going rather than poison every later call.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the records now in the ring (up to the queue's free room and
    /// `DRAIN_SLICE_BYTES`) into the queue. Returns how many events were
    /// added.
    pub(crate) fn fill(&self) -> Result<usize> {
        let guard = self.live();
        let Some(live) = guard.as_ref() else { return Ok(0) };
        let room = self.shared.room();
        if room == 0 {
            return Ok(0);
        }
        live.inbox.borrow_mut().budget = room.min(DRAIN_SLICE_BYTES);
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
            let pushed = self.shared.push(&mut inbox.pending, inbox.weights.drain(..));
            inbox.pending_bytes = 0;
            pushed?;
        }
        Ok(n)
    }
}

/// The reader thread: drains the ring buffer and payload area into the
/// queue as records arrive, so the kernel buffers are freed at memcpy speed
/// whatever the consumer does with the events (JSON, Python objects).
pub(crate) fn run_reader(core: Arc<Core>, epoll_fd: i32) {
    // Ahead of the consumer's threads when CPUs are scarce: a consumer busy
    // formatting must not keep the kernel buffers from being drained. Needs
    // CAP_SYS_NICE (root has it); without it the thread keeps its nice value.
    // SAFETY: plain system calls on this thread's own id.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, READER_NICE) };
    let mut found = 0;
    // The kick the next drain answers, if one woke the reader.
    let mut kick = None;
    while !core.shared.stop.load(Ordering::Acquire) {
        if !core.shared.wait_for_room(READER_FOLLOW_UP) {
            continue; // queue full: the kernel buffers hold (and count) the rest
        }
        // After a drain that found a burst's worth, more came while it ran:
        // read on at once rather than wait for the next wake-up.
        if found < READER_BURST {
            let wait = if found > 0 { READER_FOLLOW_UP } else { READER_IDLE };
            let mut pfds = [
                libc::pollfd { fd: epoll_fd, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: core.shared.stop_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: core.shared.kick_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: valid pollfds; the epoll fd outlives this thread (the ring
            // buffer is dropped only after the thread is joined), the stop and
            // kick fds live in `core`.
            unsafe { libc::poll(pfds.as_mut_ptr(), 3, wait.as_millis() as i32) };
            if core.shared.stop.load(Ordering::Acquire) {
                break;
            }
            if pfds[2].revents != 0 {
                kick = Some(core.shared.kicked());
            }
        }
        match core.fill() {
            Ok(n) => {
                found = n;
                if let Some(k) = kick.take() {
                    core.shared.answered(k);
                }
            }
            Err(e) => {
                core.shared.fail(e);
                break;
            }
        }
    }
}
