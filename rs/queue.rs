//! The bounded userspace queue between the reader thread (which drains the
//! kernel buffers) and `Tracer::poll` (which hands events to the caller).
//!
//! Bounded by bytes, not events: a queue of 1 MiB writes and a queue of
//! 64-byte writes should cost the same memory at their limit. When the queue
//! is full the reader stops draining; the kernel buffers then fill and count
//! what they cannot hold, so a full queue never loses anything silently.

use crate::columnar::{BatchBuilder, EventSchema};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::event_chunks::EventChunks;
use arrow_array::RecordBatch;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Events the queue keeps room for once emptied; a burst may grow it far
/// beyond (an event is 192 bytes), and that is given back.
const KEEP_CAPACITY: usize = 16 << 10;

/// Rows per record batch a queue of batches builds (`Config::arrow`), the
/// default `max_events` of `poll_arrow`.
pub const ARROW_BATCH_ROWS: usize = 65536;

/// Decoded events waiting for `poll`, with what each weighs: as `Event`s,
/// or, for a tracer that builds Arrow batches in its reader
/// (`Config::arrow`), as rows of record batches: full ones, then the one
/// being built, which a consumer finding no full batch takes as it is (so
/// batches are large while the consumer lags, and rows wait no longer than
/// it takes the consumer to ask).
pub(crate) struct EventQueue {
    events: EventChunks,
    batches: VecDeque<RecordBatch>,
    /// Rows of `batches`.
    batch_rows: usize,
    builder: Option<BatchBuilder>,
    /// One per event or row, in order.
    weights: VecDeque<u32>,
    bytes: usize,
    peak: usize,
    /// Events handed out by `take` so far.
    taken: u64,
    /// Kicks asked for by consumers so far, and the last of them the reader
    /// has answered (looked at the kernel buffers after it).
    kicks_asked: u64,
    kicks_answered: u64,
    /// A reader-thread failure, reported by the next `take`.
    error: Option<Error>,
}

impl Default for EventQueue {
    fn default() -> EventQueue {
        EventQueue {
            events: EventChunks::new(KEEP_CAPACITY),
            batches: VecDeque::new(),
            batch_rows: 0,
            builder: None,
            weights: VecDeque::new(),
            bytes: 0,
            peak: 0,
            taken: 0,
            kicks_asked: 0,
            kicks_answered: 0,
            error: None,
        }
    }
}

impl EventQueue {
    fn len(&self) -> usize {
        self.events.len() + self.batch_rows + self.builder.as_ref().map_or(0, |b| b.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes `n` weights (the events or rows just handed out).
    fn release(&mut self, n: usize) {
        self.taken += n as u64;
        let freed: usize = self.weights.drain(..n.min(self.weights.len())).map(|w| w as usize).sum();
        self.bytes = self.bytes.saturating_sub(freed);
    }

    /// How many of the first `max` events to take so that their weights
    /// stay within `max_bytes`: at least one.
    fn fitting(&self, max: usize, max_bytes: usize) -> usize {
        if max_bytes == usize::MAX {
            return max;
        }
        let mut bytes = 0usize;
        let n = self.weights.iter().take(max).take_while(|&&w| {
            bytes = bytes.saturating_add(w as usize);
            bytes <= max_bytes
        });
        n.count().max(1)
    }

    /// What an event counts for: its payload bytes plus the event itself.
    pub(crate) fn weight(payload_len: usize) -> u32 {
        (std::mem::size_of::<Event>() + payload_len).min(u32::MAX as usize) as u32
    }
}

/// The queue and what its two sides wait on.
pub(crate) struct Shared {
    queue: Mutex<EventQueue>,
    /// Signalled when events are pushed.
    ready: Condvar,
    /// Signalled when events are taken (room for the reader).
    room: Condvar,
    limit: usize,
    pub(crate) stop: AtomicBool,
    /// An eventfd made readable by `stop()`: interrupts the reader's wait.
    stop_fd: OwnedFd,
    /// An eventfd made readable by a consumer that found the queue empty:
    /// the reader looks at the kernel buffers at once (see `kick_reader`).
    kick_fd: OwnedFd,
    /// An eventfd readable while events are queued, for callers' event
    /// loops (the C library's `tb_fd`). Written when the queue stops being
    /// empty and read when it becomes empty, both under the queue's lock, so
    /// it is readable exactly while there are events to take. Armed by the
    /// first `ready_fd()` call: until then no event pays for its syscalls.
    ready_fd: OwnedFd,
    /// Changed only under the queue's lock.
    ready_armed: AtomicBool,
}

fn eventfd(what: &str) -> Result<OwnedFd> {
    // SAFETY: eventfd has no memory arguments; the fd is owned below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::io(format!("creating the {what} eventfd"), std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes an eventfd readable (counter + 1).
fn signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Makes an eventfd unreadable (counter read back to 0).
fn clear(fd: &OwnedFd) {
    let mut n: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64 from a non-blocking eventfd we own.
    unsafe { libc::read(fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
}

impl Shared {
    pub(crate) fn new(limit: usize) -> Result<Shared> {
        Ok(Shared {
            queue: Mutex::default(),
            ready: Condvar::new(),
            room: Condvar::new(),
            limit: limit.max(1),
            stop: AtomicBool::new(false),
            stop_fd: eventfd("reader's stop")?,
            kick_fd: eventfd("reader's kick")?,
            ready_fd: eventfd("queue's ready")?,
            ready_armed: AtomicBool::new(false),
        })
    }

    pub(crate) fn stop_fd(&self) -> i32 {
        self.stop_fd.as_raw_fd()
    }

    pub(crate) fn kick_fd(&self) -> i32 {
        self.kick_fd.as_raw_fd()
    }

    /// Asks the reader thread to drain the kernel buffers now, for a
    /// consumer that found the queue empty. Draining them on the consumer's
    /// thread instead holds the reader's lock at the consumer's priority:
    /// preempted by busy writers, the consumer kept the reader (nice -10)
    /// from the ring long enough to lose tens of thousands of events
    /// (`ring_full`, bench/README.md). Returns the kick's number, for
    /// `wait_for_answer`.
    pub(crate) fn kick_reader(&self) -> u64 {
        let kick = {
            let mut q = self.lock();
            q.kicks_asked += 1;
            q.kicks_asked
        };
        // Signalled after the count (and outside the lock, which the reader
        // takes when woken): a reader woken by it reads a count that
        // includes this kick.
        signal(&self.kick_fd);
        kick
    }

    /// For the reader, woken by a kick: takes it back and returns the
    /// number of the last kick asked so far, which the drain that follows
    /// answers (see `answered`).
    pub(crate) fn kicked(&self) -> u64 {
        clear(&self.kick_fd);
        self.lock().kicks_asked
    }

    /// For the reader: the kernel buffers were drained after kick `kick`
    /// and every one before it.
    pub(crate) fn answered(&self, kick: u64) {
        let mut q = self.lock();
        q.kicks_answered = q.kicks_answered.max(kick);
        drop(q);
        self.ready.notify_all();
    }

    /// Waits until `deadline` for the reader to answer kick `kick`, events
    /// to be queued, an error or a stop, whichever comes first.
    pub(crate) fn wait_for_answer(&self, kick: u64, deadline: Instant) {
        let mut q = self.lock();
        while q.kicks_answered < kick && q.is_empty() && q.error.is_none() {
            match self.wait_ready(q, Some(deadline)) {
                Some(woken) => q = woken,
                None => return,
            }
        }
    }

    /// Waits for `ready` (events pushed, a kick answered, an error, a stop)
    /// until `deadline` (None: forever); None, without waiting, once the
    /// deadline has passed or the tracer is stopping.
    fn wait_ready<'a>(&self, q: MutexGuard<'a, EventQueue>, deadline: Option<Instant>) -> Option<MutexGuard<'a, EventQueue>> {
        let left = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        if left.is_zero() || self.stop.load(Ordering::Acquire) {
            return None;
        }
        Some(self.ready.wait_timeout(q, left).unwrap_or_else(|p| p.into_inner()).0)
    }

    /// After `n` events or rows were taken out of `q`: their weights
    /// released, the ready eventfd and a burst's bookkeeping memory given
    /// back once the queue is empty, and the reader told there is room.
    fn taken_out(&self, mut q: MutexGuard<'_, EventQueue>, n: usize) {
        q.release(n);
        if q.is_empty() {
            if self.armed() {
                clear(&self.ready_fd);
            }
            if q.weights.capacity() > KEEP_CAPACITY {
                q.weights.shrink_to(KEEP_CAPACITY);
            }
        }
        drop(q);
        self.room.notify_all();
    }

    /// The eventfds (for `fork_guard`), without arming the ready one.
    pub(crate) fn eventfds(&self) -> [i32; 3] {
        [self.stop_fd.as_raw_fd(), self.kick_fd.as_raw_fd(), self.ready_fd.as_raw_fd()]
    }

    /// The readiness eventfd, armed from now on (readable at once if events
    /// are queued).
    pub(crate) fn ready_fd(&self) -> i32 {
        let q = self.lock();
        if !self.ready_armed.swap(true, Ordering::Relaxed) && !q.is_empty() {
            signal(&self.ready_fd);
        }
        self.ready_fd.as_raw_fd()
    }

    fn armed(&self) -> bool {
        self.ready_armed.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, EventQueue> {
        // Every update below leaves the queue consistent before anything
        // that can panic: a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Bytes of events in the queue now.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The queue's bound in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes the reader may still add before the queue is full.
    pub(crate) fn room(&self) -> usize {
        self.limit.saturating_sub(self.lock().bytes)
    }

    /// (events, bytes, peak bytes) now in the queue, and events taken so far.
    pub(crate) fn levels(&self) -> (u64, u64, u64, u64) {
        let q = self.lock();
        (q.len() as u64, q.bytes as u64, q.peak as u64, q.taken)
    }

    /// Empties the queue (the tracer is closing); returns how many events
    /// were in it.
    pub(crate) fn discard(&self) -> u64 {
        let mut q = self.lock();
        let n = q.len() as u64;
        q.events.clear();
        q.batches = VecDeque::new();
        q.batch_rows = 0;
        if let Some(b) = &mut q.builder {
            *b = BatchBuilder::with_capacity(Arc::clone(b.schema()), 0);
        }
        q.weights = VecDeque::new();
        q.bytes = 0;
        if self.armed() {
            clear(&self.ready_fd);
        }
        n
    }

    /// From now on, events pushed become rows of record batches of
    /// `schema` (before the first push).
    pub(crate) fn build_batches(&self, schema: Arc<EventSchema>) {
        self.lock().builder = Some(BatchBuilder::with_capacity(schema, ARROW_BATCH_ROWS));
    }

    /// Queues `events` (which it empties), each weighing its entry of
    /// `weights`. As rows of record batches, an event type the batches'
    /// schema lacks (a bug) is an error, and then none of them is queued.
    pub(crate) fn push(&self, events: &mut Vec<Event>, weights: impl Iterator<Item = u32>) -> Result<()> {
        let mut q = self.lock();
        let was_empty = q.is_empty();
        let q_ref = &mut *q;
        let Some(b) = &mut q_ref.builder else {
            q_ref.events.extend(events);
            self.added(q, was_empty, weights);
            return Ok(());
        };
        if let Err(e) = b.check(events.iter()) {
            events.clear();
            return Err(e);
        }
        // A row also holds a null of every payload column of the other
        // event types: weighed too, so that the bound holds for rows.
        let padding = b.schema().payload_columns().len() as u32 * 8;
        let mut rest: &[Event] = events;
        while !rest.is_empty() {
            let (now, later) = rest.split_at(rest.len().min(ARROW_BATCH_ROWS.saturating_sub(b.len()).max(1)));
            // Cannot fail: every type was checked above.
            let added = b.extend(now);
            rest = later;
            let finished = if b.len() >= ARROW_BATCH_ROWS { Some(b.finish()) } else { None };
            match added.and_then(|()| finished.transpose()) {
                Ok(Some(batch)) => {
                    q_ref.batch_rows += batch.num_rows();
                    q_ref.batches.push_back(batch);
                }
                Ok(None) => {}
                // A bug: reported by the next take, whose counters are then off.
                Err(e) => q_ref.error = Some(e),
            }
        }
        events.clear();
        self.added(q, was_empty, weights.map(|w| w.saturating_add(padding)));
        Ok(())
    }

    fn added(&self, mut q: MutexGuard<'_, EventQueue>, was_empty: bool, weights: impl Iterator<Item = u32>) {
        if was_empty && !q.is_empty() && self.armed() {
            signal(&self.ready_fd);
        }
        for w in weights {
            q.bytes += w as usize;
            q.weights.push_back(w);
        }
        q.peak = q.peak.max(q.bytes);
        drop(q);
        self.ready.notify_all();
    }

    /// Moves up to `max` events to `out`, and no more after those that
    /// reach `max_bytes` of weight (at least one), waiting until `deadline`
    /// (None: forever) for the first. Returns how many were moved.
    pub(crate) fn take(&self, out: &mut Vec<Event>, max: usize, max_bytes: usize, deadline: Option<Instant>) -> Result<usize> {
        let mut q = self.lock();
        loop {
            if let Some(e) = q.error.take() {
                return Err(e);
            }
            if !q.events.is_empty() {
                // Whole chunks of events, moved to `out` after the lock is
                // released (or fewer than a chunk's events, moved now): the
                // reader thread waits for this lock to queue what it read.
                let max = q.fitting(max, max_bytes);
                let (taken, n) = q.events.take_front(max);
                self.taken_out(q, n);
                let emptied = taken.move_to(out);
                if !emptied.is_empty() {
                    self.lock().events.recycle(emptied);
                }
                return Ok(n);
            }
            match self.wait_ready(q, deadline) {
                Some(woken) => q = woken,
                None => return Ok(0),
            }
        }
    }

    /// Takes up to `max` rows of record batches, waiting until `deadline`
    /// (None: forever) for the first: a full batch, else the one being
    /// built; cut at `max` rows (without a copy), the rest left first in the
    /// queue. None if no row came.
    pub(crate) fn take_batch(&self, max: usize, deadline: Option<Instant>) -> Result<Option<RecordBatch>> {
        let max = max.max(1);
        let mut q = self.lock();
        loop {
            if let Some(e) = q.error.take() {
                return Err(e);
            }
            let q_ref = &mut *q;
            if q_ref.batches.is_empty() {
                if let Some(b) = q_ref.builder.as_mut().filter(|b| !b.is_empty()) {
                    match b.finish() {
                        Ok(batch) => {
                            q_ref.batch_rows += batch.num_rows();
                            q_ref.batches.push_back(batch);
                        }
                        Err(e) => {
                            // A bug (the rows are gone): said, never a silent empty batch.
                            if q.is_empty() && self.armed() {
                                clear(&self.ready_fd);
                            }
                            return Err(e);
                        }
                    }
                }
            }
            if let Some(first) = q.batches.pop_front() {
                let batch = if first.num_rows() > max {
                    q.batches.push_front(first.slice(max, first.num_rows() - max));
                    first.slice(0, max)
                } else {
                    first
                };
                let n = batch.num_rows();
                q.batch_rows -= n;
                self.taken_out(q, n);
                return Ok(Some(batch));
            }
            match self.wait_ready(q, deadline) {
                Some(woken) => q = woken,
                None => return Ok(None),
            }
        }
    }

    /// For the reader: waits up to `timeout` while the queue is full.
    /// Returns whether there is room.
    pub(crate) fn wait_for_room(&self, timeout: Duration) -> bool {
        let q = self.lock();
        if q.bytes < self.limit {
            return true;
        }
        let q = self.room.wait_timeout(q, timeout).unwrap_or_else(|p| p.into_inner()).0;
        q.bytes < self.limit
    }

    /// Records a reader failure for the consumer and stops the reader.
    pub(crate) fn fail(&self, e: Error) {
        self.lock().error = Some(e);
        self.ready.notify_all();
    }

    /// Asks the reader to stop and wakes everything waiting.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        signal(&self.stop_fd);
        self.room.notify_all();
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event_chunks::CHUNK_EVENTS;

    fn push(q: &Shared, ids: std::ops::Range<u64>) {
        let mut events: Vec<Event> = ids.map(|i| Event::test_read(i, i)).collect();
        let weights: Vec<u32> = events.iter().map(|_| EventQueue::weight(0)).collect();
        q.push(&mut events, weights.into_iter()).unwrap();
        assert!(events.is_empty());
    }

    fn take(q: &Shared, max: usize) -> Vec<u64> {
        let mut out = Vec::new();
        q.take(&mut out, max, usize::MAX, Some(Instant::now())).unwrap();
        out.iter().map(|e| e.event_id).collect()
    }

    #[test]
    fn a_take_of_all_hands_over_the_queue_and_keeps_its_room() {
        let q = Shared::new(1 << 30).unwrap();
        push(&q, 0..10);
        assert_eq!(take(&q, 100), (0..10).collect::<Vec<_>>());
        assert_eq!(q.levels().1, 0, "no bytes left counted");
        assert!(q.lock().events.capacity() >= 10, "the emptied chunk was kept");
        push(&q, 10..15);
        assert_eq!(take(&q, 5), (10..15).collect::<Vec<_>>());
        assert!(take(&q, 5).is_empty());
    }

    #[test]
    fn a_take_of_part_moves_whole_chunks_in_order() {
        let q = Shared::new(1 << 30).unwrap();
        let n = CHUNK_EVENTS as u64 + 10;
        push(&q, 0..n);
        let first = take(&q, CHUNK_EVENTS + 5);
        assert_eq!(first, (0..CHUNK_EVENTS as u64).collect::<Vec<_>>(), "the whole chunks that fit");
        assert_eq!(q.levels().0, 10);
        push(&q, n..n + 3);
        assert_eq!(take(&q, 4), (CHUNK_EVENTS as u64..CHUNK_EVENTS as u64 + 4).collect::<Vec<_>>());
        assert_eq!(take(&q, usize::MAX), (CHUNK_EVENTS as u64 + 4..n + 3).collect::<Vec<_>>());
        assert_eq!(q.levels(), (0, 0, q.levels().2, n + 3));
    }

    #[test]
    fn a_take_stops_at_its_byte_bound_but_always_takes_one() {
        let q = Shared::new(1 << 30).unwrap();
        push(&q, 0..10);
        let w = EventQueue::weight(0) as usize;
        let mut out = Vec::new();
        let now = Some(Instant::now());
        assert_eq!(q.take(&mut out, 100, 3 * w + w / 2, now).unwrap(), 3);
        assert_eq!(q.take(&mut out, 100, w - 1, now).unwrap(), 1, "an event heavier than the bound still comes");
        assert_eq!(q.take(&mut out, 2, 100 * w, now).unwrap(), 2, "max still bounds the count");
        assert_eq!(q.levels().1 as usize, 4 * w, "the weights of what was taken are released");
        assert_eq!(q.take(&mut out, 100, usize::MAX, now).unwrap(), 4);
        assert_eq!(out.iter().map(|e| e.event_id).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_burst_s_room_is_given_back() {
        let q = Shared::new(1 << 30).unwrap();
        push(&q, 0..(4 * KEEP_CAPACITY) as u64);
        while !take(&q, 1000).is_empty() {}
        let g = q.lock();
        assert!(g.events.capacity() <= KEEP_CAPACITY, "{}", g.events.capacity());
        assert!(g.weights.capacity() <= KEEP_CAPACITY);
    }

    #[test]
    fn a_consumer_waiting_for_its_kick_returns_once_the_reader_answers_it() {
        let q = Arc::new(Shared::new(1 << 20).unwrap());
        let far = Instant::now() + Duration::from_secs(10);
        // No reader: the wait ends at its deadline, not before.
        let kick = q.kick_reader();
        let start = Instant::now();
        q.wait_for_answer(kick, start + Duration::from_millis(50));
        assert!(start.elapsed() >= Duration::from_millis(50));
        // A reader woken now answers every kick asked before it woke.
        assert_eq!(q.kicked(), kick);
        let reader = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                let k = q.kicked();
                q.answered(k);
            })
        };
        let kick = q.kick_reader();
        let start = Instant::now();
        q.wait_for_answer(kick, far);
        let waited = start.elapsed();
        reader.join().unwrap();
        assert!(waited >= Duration::from_millis(20) && waited < Duration::from_secs(5), "{waited:?}");
        // An answer to an earlier kick does not answer a later one.
        q.answered(kick);
        let later = q.kick_reader();
        let start = Instant::now();
        q.wait_for_answer(later, start + Duration::from_millis(30));
        assert!(start.elapsed() >= Duration::from_millis(30));
        // Events queued end the wait at once.
        push(&q, 0..1);
        let start = Instant::now();
        q.wait_for_answer(later, far);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
