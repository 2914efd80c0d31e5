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

/// How long the reader lets records gather after a drain that found some,
/// but fewer than `READER_BURST`, before it drains again. The ring's fd is
/// readable as long as it holds a record, so waiting on it returns at once:
/// against a steady writer the reader would drain a handful of records at a
/// time, paying a poll(2), a context switch and a futex wake-up for each
/// handful (bench/results/reader64.md). In 0.5 ms a writer at full speed queues a few
/// hundred small records, a few MiB at most of large ones, far less than the
/// kernel buffers hold. A kick (a consumer that found the queue empty) or
/// a stop ends the wait at once.
const READER_GATHER: Duration = Duration::from_micros(500);

/// How long the reader waits on the ring after a drain that found nothing
/// right after one that found records: the kernel wakes it at most once
/// per `wake_interval` (1 ms) per CPU (see tb_end), so records that came
/// within that interval after a wake-up carried none; looking again a
/// little later than the interval finds them.
const READER_FOLLOW_UP: Duration = Duration::from_millis(2);

/// How long it waits after a follow-up that found nothing. Any record now
/// comes more than `wake_interval` after its CPU's last wake-up, so it
/// wakes the thread; this is only a backstop.
const READER_IDLE: Duration = Duration::from_millis(250);

/// Records one drain must find for the reader to drain again at once, not
/// after `READER_GATHER`: about 0.2 ms of a writer at full speed.
const READER_BURST: usize = 256;

/// Queue weight one drain moves at most (about 12,000 events of 64 bytes)
/// before queuing them: a drain of everything at once built a batch of
/// 100,000 events or more in fresh memory during a burst, and the consumer
/// got none of them until it ended. The reader drains again at once after
/// a full slice, however few events it held (large contents).
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
        self.drain().map(|d| d.events)
    }

    /// `fill`, also telling whether the drain stopped at its slice (more
    /// may be waiting).
    fn drain(&self) -> Result<Drained> {
        let guard = self.live();
        let Some(live) = guard.as_ref() else { return Ok(Drained::default()) };
        let room = self.shared.room();
        if room == 0 {
            return Ok(Drained::default());
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
        Ok(Drained { events: n, slice_full: rc == STOP_CONSUMING })
    }
}

/// What one drain of the ring did.
#[derive(Default, Clone, Copy)]
struct Drained {
    events: usize,
    slice_full: bool,
}

/// What the reader waits for before its next drain.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Wait {
    /// Nothing: drain again at once.
    None,
    /// `READER_GATHER`, for a kick or a stop only.
    Gather,
    /// The ring, a kick or a stop, up to `READER_FOLLOW_UP`.
    FollowUp,
    /// The ring, a kick or a stop, up to `READER_IDLE`.
    Idle,
}

impl Wait {
    /// The wait after a drain that did `d`, the one before it being `self`,
    /// ended by a kick or not.
    fn after(self, d: Drained, kicked: bool) -> Wait {
        if d.slice_full || d.events >= READER_BURST {
            Wait::None
        } else if d.events > 0 {
            Wait::Gather
        } else if matches!(self, Wait::None | Wait::Gather) || (self == Wait::FollowUp && kicked) {
            // Records that came since the last wake-up may not wake the
            // thread (see `READER_FOLLOW_UP`): only a follow-up that ran
            // its course covers them, not one a consumer's kick cut short.
            Wait::FollowUp
        } else {
            Wait::Idle
        }
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
    let mut wait = Wait::Idle;
    // The kick the next drain answers, if one woke the reader.
    let mut kick = None;
    while !core.shared.stop.load(Ordering::Acquire) {
        if !core.shared.wait_for_room(READER_FOLLOW_UP) {
            continue; // queue full: the kernel buffers hold (and count) the rest
        }
        let ring = match wait {
            Wait::None => None,
            Wait::Gather => Some((-1, READER_GATHER)),
            Wait::FollowUp => Some((epoll_fd, READER_FOLLOW_UP)),
            Wait::Idle => Some((epoll_fd, READER_IDLE)),
        };
        if let Some((ring_fd, timeout)) = ring {
            // A negative fd is ignored by ppoll: the gather waits for a
            // kick or a stop only.
            let mut pfds = [
                libc::pollfd { fd: core.shared.stop_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: core.shared.kick_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: ring_fd, events: libc::POLLIN, revents: 0 },
            ];
            let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as libc::c_long };
            // SAFETY: valid pollfds and timespec; the epoll fd outlives this
            // thread (the ring buffer is dropped only after the thread is
            // joined), the stop and kick fds live in `core`.
            unsafe { libc::ppoll(pfds.as_mut_ptr(), 3, &ts, std::ptr::null()) };
            if core.shared.stop.load(Ordering::Acquire) {
                break;
            }
            if pfds[1].revents != 0 {
                kick = Some(core.shared.kicked());
            }
        }
        match core.drain() {
            Ok(d) => {
                wait = wait.after(d, kick.is_some());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(events: usize, slice_full: bool) -> Drained {
        Drained { events, slice_full }
    }

    #[test]
    fn a_few_records_gather_and_the_reader_goes_idle_only_after_a_follow_up() {
        // A burst's worth, or a full slice of however few: at once.
        assert_eq!(Wait::Gather.after(drained(READER_BURST, false), false), Wait::None);
        assert_eq!(Wait::Idle.after(drained(3, true), false), Wait::None);
        // A few records: let more gather rather than wake per record.
        for before in [Wait::None, Wait::Gather, Wait::FollowUp, Wait::Idle] {
            assert_eq!(before.after(drained(1, false), false), Wait::Gather);
            assert_eq!(before.after(drained(READER_BURST - 1, false), false), Wait::Gather);
        }
        // Nothing right after records: the ring once more, past the wake-up
        // interval, before the long wait.
        assert_eq!(Wait::Gather.after(drained(0, false), false), Wait::FollowUp);
        assert_eq!(Wait::None.after(drained(0, false), false), Wait::FollowUp);
        assert_eq!(Wait::FollowUp.after(drained(0, false), false), Wait::Idle);
        assert_eq!(Wait::Idle.after(drained(0, false), false), Wait::Idle);
        // A follow-up a consumer's kick cut short is run again; a kick
        // during the long wait changes nothing.
        assert_eq!(Wait::FollowUp.after(drained(0, false), true), Wait::FollowUp);
        assert_eq!(Wait::Idle.after(drained(0, false), true), Wait::Idle);
        assert_eq!(Wait::FollowUp.after(drained(5, false), true), Wait::Gather);
    }
}
