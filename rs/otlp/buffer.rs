//! The bounded buffer between the callers of `export` and the exporter's
//! thread, and the counters that account for every record.
//!
//! Bounded by bytes: each record is kept encoded and weighs its encoded
//! size, and a batch being sent keeps its weight until it is done. A record that does not fit is dropped at once (the caller
//! never waits) and counted in `export_dropped`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Every counter of an exporter (docs/otlp.md#counters). Whenever no
/// `export` call is under way, `export_records == exported + export_failed +
/// export_dropped + export_buffered`; after `close()`, `export_buffered` is 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Records handed to the exporter (the last `tracer_ebpf.seq` given).
    pub records: u64,
    /// Records the receiver accepted.
    pub exported: u64,
    /// Records the receiver refused (a permanent error, or rejected in a
    /// partial success), or too large for one request.
    pub failed: u64,
    /// Records never delivered for want of room or time: the buffer was
    /// full when they came, or they were still unsent when `close()`'s time
    /// ran out.
    pub dropped: u64,
    /// Requests sent again after a retryable failure.
    pub retries: u64,
    /// Requests that got an answer (accepted or refused).
    pub requests: u64,
    /// Records buffered or in the request being sent.
    pub buffered: u64,
    /// Their weight in bytes (bounded by `buffer_bytes`).
    pub buffered_bytes: u64,
    /// The most `buffered_bytes` has been.
    pub buffer_peak_bytes: u64,
}

impl ExportStats {
    /// Every counter as (name, value), named as in the tracer's `stats()`.
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("export_records", self.records),
            ("exported", self.exported),
            ("export_failed", self.failed),
            ("export_dropped", self.dropped),
            ("export_retries", self.retries),
            ("export_requests", self.requests),
            ("export_buffered", self.buffered),
            ("export_buffered_bytes", self.buffered_bytes),
            ("export_buffer_peak_bytes", self.buffer_peak_bytes),
        ]
    }

    /// Records handed over that will never be delivered (so far).
    pub fn lost(&self) -> u64 {
        self.failed + self.dropped
    }
}

/// Records waiting, encoded as they go in a request: each one's
/// `log_records` field (tag, length, the LogRecord as prost encodes it),
/// one after the other, at most a request's worth (`Encoder::encode` wraps
/// them).
#[derive(Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub records: usize,
}

#[derive(Default)]
pub struct State {
    /// Full batches, oldest first, then the one being filled.
    full: VecDeque<Batch>,
    open: Batch,
    /// Emptied batches' buffers, kept warm for the next ones.
    spare: Vec<Vec<u8>>,
    /// Bytes of the records waiting plus `in_flight`.
    bytes: usize,
    peak: usize,
    /// Bytes and count of the records taken for the request being sent.
    in_flight: usize,
    in_flight_records: usize,
    /// When the open batch got its first record (it waits a little for more).
    oldest: Option<Instant>,
    /// Set by close(): the exporter's thread sends what it can until then.
    pub deadline: Option<Instant>,
    /// The exporter's thread has finished.
    pub finished: bool,
    /// flush() calls waiting: batches go without lingering.
    pub flushing: u32,
}

/// Emptied buffers kept for reuse (each up to a request, 4 MiB).
const SPARE_BUFFERS: usize = 2;

impl State {
    fn waiting_records(&self) -> usize {
        self.full.iter().map(|b| b.records).sum::<usize>() + self.open.records
    }
}

/// What both sides share.
pub struct Shared {
    state: Mutex<State>,
    /// Signalled when a request completes or the thread finishes (flush()
    /// and close() wait on it).
    pub progress: Condvar,
    /// Wakes the exporter's thread: records came, or close() was called.
    pub wake: tokio::sync::Notify,
    pub limit: usize,
    /// Bytes of records per batch (a request's worth).
    budget: usize,
    next_seq: AtomicU64,
    exported: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    requests: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(limit: usize, budget: usize) -> Shared {
        Shared {
            state: Mutex::new(State::default()),
            budget,
            progress: Condvar::new(),
            wake: tokio::sync::Notify::new(),
            limit,
            next_seq: AtomicU64::new(1),
            exported: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The state, even after a panic elsewhere (its fields stay consistent:
    /// each is updated under the lock in one step).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `n` sequence numbers; returns the first.
    pub fn reserve_seq(&self, n: u64) -> u64 {
        self.next_seq.fetch_add(n, Ordering::Relaxed)
    }

    /// Buffers what fits of `records` (encoded `log_records` fields, one
    /// after the other; `lens` their lengths), drops (and counts) the rest;
    /// wakes the thread. Returns how many were buffered.
    pub fn push(&self, records: &[u8], lens: &[usize]) -> usize {
        let mut st = self.lock();
        let st = &mut *st;
        let (mut kept, mut dropped, mut at) = (0, 0, 0);
        for &len in lens {
            let r = &records[at..at + len];
            at += len;
            if st.deadline.is_some() || st.bytes + len > self.limit {
                dropped += 1;
                continue;
            }
            if st.open.records > 0 && st.open.bytes.len() + len > self.budget {
                let next = Batch { bytes: st.spare.pop().unwrap_or_default(), records: 0 };
                st.full.push_back(std::mem::replace(&mut st.open, next));
                // The full one goes at once; the new one waits from now.
                st.oldest = Some(Instant::now());
            }
            st.open.bytes.extend_from_slice(r);
            st.open.records += 1;
            st.bytes += len;
            kept += 1;
        }
        st.peak = st.peak.max(st.bytes);
        if kept > 0 && st.oldest.is_none() {
            st.oldest = Some(Instant::now());
        }
        self.add_dropped(dropped);
        if kept > 0 {
            self.wake.notify_one();
        }
        kept
    }

    fn add_exported(&self, n: u64) {
        self.exported.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_failed(&self, n: u64) {
        self.failed.fetch_add(n, Ordering::Relaxed);
    }
    fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn stats(&self) -> ExportStats {
        let st = self.lock();
        ExportStats {
            // Read under the lock, with the counters the thread updates
            // before releasing a batch's weight (see `finish_batch`).
            records: self.next_seq.load(Ordering::Relaxed) - 1,
            exported: self.exported.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            buffered: (st.waiting_records() + st.in_flight_records) as u64,
            buffered_bytes: st.bytes as u64,
            buffer_peak_bytes: st.peak as u64,
        }
    }

    /// Takes the next batch: a full one at once; the one being filled once
    /// its first record has waited `linger`, or at once during a flush or
    /// close. `Err(None)`: nothing to send; `Err(Some(wait))`: how long to
    /// wait for it.
    pub fn take_batch(&self, linger: Duration) -> Result<Batch, Option<Duration>> {
        let mut st = self.lock();
        let st = &mut *st;
        let batch = match st.full.pop_front() {
            Some(b) => b,
            None => {
                let Some(oldest) = st.oldest else {
                    return Err(None);
                };
                let waited = oldest.elapsed();
                if st.deadline.is_none() && st.flushing == 0 && waited < linger {
                    return Err(Some(linger - waited));
                }
                st.oldest = None;
                let next = Batch { bytes: st.spare.pop().unwrap_or_default(), records: 0 };
                std::mem::replace(&mut st.open, next)
            }
        };
        st.in_flight = batch.bytes.len();
        st.in_flight_records = batch.records;
        Ok(batch)
    }

    /// The batch taken last is done: its records are counted (under the
    /// lock, so that `stats()` never counts them twice), its bytes are
    /// released and its buffer kept for reuse.
    pub fn finish_batch(&self, batch: Batch, exported: u64, failed: u64, dropped: u64) {
        let mut st = self.lock();
        self.add_exported(exported);
        self.add_failed(failed);
        self.add_dropped(dropped);
        st.bytes -= st.in_flight;
        st.in_flight = 0;
        st.in_flight_records = 0;
        if st.spare.len() < SPARE_BUFFERS {
            let mut b = batch.bytes;
            b.clear();
            st.spare.push(b);
        }
        drop(st);
        self.progress.notify_all();
    }

    /// Drops everything still waiting (close()'s time is up); returns how
    /// many.
    pub fn drop_pending(&self) -> u64 {
        let mut st = self.lock();
        let n = st.waiting_records() as u64;
        let bytes = st.full.iter().map(|b| b.bytes.len()).sum::<usize>() + st.open.bytes.len();
        st.full.clear();
        st.open = Batch::default();
        st.bytes -= bytes;
        st.oldest = None;
        self.add_dropped(n);
        n
    }

    /// Nothing pending and nothing in flight.
    pub fn idle(st: &State) -> bool {
        st.full.is_empty() && st.open.records == 0 && st.in_flight_records == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` records of `len` bytes each, as `push` takes them.
    fn recs(n: usize, len: usize) -> (Vec<u8>, Vec<usize>) {
        (vec![b'x'; n * len], vec![len; n])
    }

    fn push(s: &Shared, n: usize, len: usize) -> usize {
        let (b, l) = recs(n, len);
        s.push(&b, &l)
    }

    #[test]
    fn a_batch_begun_when_another_fills_waits_its_own_linger() {
        let s = Shared::new(1 << 30, 450);
        let linger = Duration::from_millis(200);
        assert_eq!(push(&s, 4, 100), 4);
        std::thread::sleep(linger);
        // The 5th record begins a new batch: the full one goes at once, the
        // new one only after lingering itself.
        assert_eq!(push(&s, 1, 100), 1);
        let full = s.take_batch(linger).unwrap_or_else(|_| panic!("the full batch"));
        assert_eq!(full.records, 4);
        s.finish_batch(full, 4, 0, 0);
        assert!(matches!(s.take_batch(linger), Err(Some(_))));
    }

    #[test]
    fn full_buffer_drops_and_counts() {
        let s = Shared::new(3000, 1 << 20);
        assert_eq!(push(&s, 5, 1000), 3);
        let st = s.stats();
        assert_eq!((st.dropped, st.buffered, st.buffered_bytes), (2, 3, 3000));
        // A taken batch keeps its bytes until finished.
        let b = s.take_batch(Duration::ZERO).unwrap_or_else(|_| panic!("a batch"));
        assert_eq!((b.records, b.bytes.len()), (3, 3000));
        assert_eq!(push(&s, 1, 1000), 0);
        s.finish_batch(b, 3, 0, 0);
        assert_eq!(push(&s, 1, 1000), 1);
        let st = s.stats();
        assert_eq!((st.exported, st.dropped, st.buffered), (3, 3, 1));
        assert_eq!(st.buffer_peak_bytes, 3000);
        assert_eq!(s.drop_pending(), 1);
        let st = s.stats();
        assert_eq!((st.dropped, st.buffered, st.buffered_bytes), (4, 0, 0));
    }

    #[test]
    fn batches_stay_within_the_budget_and_wait_for_more() {
        let s = Shared::new(1 << 30, 450);
        assert_eq!(push(&s, 10, 100), 10);
        // Full batches go at once, in order; the rest waits for more.
        for _ in 0..2 {
            let b = s.take_batch(Duration::from_secs(60)).unwrap_or_else(|_| panic!("a full batch"));
            assert_eq!((b.records, b.bytes.len()), (4, 400));
            s.finish_batch(b, 4, 0, 0);
        }
        assert!(matches!(s.take_batch(Duration::from_secs(60)), Err(Some(_))));
        let b = s.take_batch(Duration::ZERO).unwrap_or_else(|_| panic!("the open batch"));
        assert_eq!(b.records, 2);
        s.finish_batch(b, 2, 0, 0);
        assert!(matches!(s.take_batch(Duration::ZERO), Err(None)));
        // One record larger than the budget still goes (alone).
        assert_eq!(push(&s, 1, 100) + push(&s, 1, 5000) + push(&s, 1, 100), 3);
        let sizes: Vec<usize> = (0..3)
            .map(|_| {
                let b = s.take_batch(Duration::ZERO).unwrap_or_else(|_| panic!("a batch"));
                let n = b.bytes.len();
                s.finish_batch(b, 1, 0, 0);
                n
            })
            .collect();
        assert_eq!(sizes, [100, 5000, 100]);
        assert_eq!(s.stats().exported, 13);
    }
}
