//! The bounded buffer between the callers of `export` and the exporter's
//! thread, and the counters that account for every record.
//!
//! Bounded by bytes: each record weighs its encoded size plus an estimate
//! of its in-memory overhead, and a batch being sent keeps its weight until
//! it is done. A record that does not fit is dropped at once (the caller
//! never waits) and counted in `export_dropped`.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
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

/// What a record weighs in the buffer: its encoded size, plus the heap
/// blocks and headers its decoded form holds (about two per attribute).
pub fn weight(r: &LogRecord, encoded_len: usize) -> usize {
    encoded_len + std::mem::size_of::<LogRecord>() + r.attributes.len() * (std::mem::size_of::<KeyValue>() + 32) + 64
}

/// A record waiting, with its encoded length and weight.
pub struct Pending {
    pub record: LogRecord,
    pub encoded_len: usize,
    pub weight: usize,
}

#[derive(Default)]
pub struct State {
    pending: VecDeque<Pending>,
    /// Weight of `pending` plus `in_flight`.
    bytes: usize,
    peak: usize,
    /// Weight and count of the records taken for the request being sent.
    in_flight: usize,
    in_flight_records: usize,
    /// When the oldest pending record came (batches wait a little for more).
    oldest: Option<Instant>,
    /// Set by close(): the exporter's thread sends what it can until then.
    pub deadline: Option<Instant>,
    /// The exporter's thread has finished.
    pub finished: bool,
    /// flush() calls waiting: batches go without lingering.
    pub flushing: u32,
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
    next_seq: AtomicU64,
    exported: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    requests: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(limit: usize) -> Shared {
        Shared {
            state: Mutex::new(State::default()),
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

    /// Buffers what fits, drops (and counts) the rest; wakes the thread.
    /// Returns how many were buffered.
    pub fn push(&self, records: impl Iterator<Item = Pending>) -> usize {
        let mut st = self.lock();
        let (mut kept, mut dropped) = (0, 0);
        for p in records {
            if st.deadline.is_some() || st.bytes + p.weight > self.limit {
                dropped += 1;
                continue;
            }
            st.bytes += p.weight;
            st.pending.push_back(p);
            kept += 1;
        }
        st.peak = st.peak.max(st.bytes);
        if kept > 0 && st.oldest.is_none() {
            st.oldest = Some(Instant::now());
        }
        self.add_dropped(dropped);
        drop(st);
        if kept > 0 {
            self.wake.notify_one();
        }
        kept
    }

    fn add_exported(&self, n: u64) {
        self.exported.fetch_add(n, Ordering::Relaxed);
    }
    fn add_failed(&self, n: u64) {
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
            buffered: (st.pending.len() + st.in_flight_records) as u64,
            buffered_bytes: st.bytes as u64,
            buffer_peak_bytes: st.peak as u64,
        }
    }

    /// Takes the next batch: records whose delimited encodings add up to at
    /// most `budget` bytes (at least one record), once the oldest has waited
    /// `linger`, `budget` is reached, or close() was called. None: nothing
    /// to send yet; `Some(wait)` in the error tells how long to wait.
    pub fn take_batch(&self, budget: usize, linger: Duration) -> Result<Vec<Pending>, Option<Duration>> {
        let mut st = self.lock();
        let Some(oldest) = st.oldest else {
            return Err(None);
        };
        let waited = oldest.elapsed();
        let pending_bytes: usize = st.bytes - st.in_flight;
        if st.deadline.is_none() && st.flushing == 0 && waited < linger && pending_bytes < budget {
            return Err(Some(linger - waited));
        }
        let mut batch = Vec::new();
        let mut size = 0;
        while let Some(p) = st.pending.front() {
            let delimited = delimited_len(p.encoded_len);
            if !batch.is_empty() && size + delimited > budget {
                break;
            }
            size += delimited;
            let p = st.pending.pop_front().expect("front exists");
            st.in_flight += p.weight;
            batch.push(p);
        }
        st.in_flight_records = batch.len();
        st.oldest = if st.pending.is_empty() { None } else { Some(Instant::now()) };
        Ok(batch)
    }

    /// The batch taken last is done: its records are counted (under the
    /// lock, so that `stats()` never counts them twice) and its weight is
    /// released.
    pub fn finish_batch(&self, exported: u64, failed: u64, dropped: u64) {
        let mut st = self.lock();
        self.add_exported(exported);
        self.add_failed(failed);
        self.add_dropped(dropped);
        st.bytes -= st.in_flight;
        st.in_flight = 0;
        st.in_flight_records = 0;
        drop(st);
        self.progress.notify_all();
    }

    /// Drops everything still pending (close()'s time is up); returns how
    /// many.
    pub fn drop_pending(&self) -> u64 {
        let mut st = self.lock();
        let n = st.pending.len() as u64;
        let w: usize = st.pending.iter().map(|p| p.weight).sum();
        st.pending.clear();
        st.bytes -= w;
        st.oldest = None;
        self.add_dropped(n);
        n
    }

    /// Nothing pending and nothing in flight.
    pub fn idle(st: &State) -> bool {
        st.pending.is_empty() && st.in_flight_records == 0
    }
}

/// The bytes a record takes inside its ScopeLogs: tag, length, encoding.
pub fn delimited_len(encoded_len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(encoded_len as u64) + encoded_len
}

/// A record ready for the buffer.
pub fn pending(record: LogRecord) -> Pending {
    let encoded_len = record.encoded_len();
    let weight = weight(&record, encoded_len);
    Pending { record, encoded_len, weight }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(body_len: usize) -> Pending {
        pending(LogRecord { event_name: "x".repeat(body_len), ..Default::default() })
    }

    #[test]
    fn full_buffer_drops_and_counts() {
        let one = rec(1000).weight;
        let s = Shared::new(one * 3);
        assert_eq!(s.push((0..5).map(|_| rec(1000))), 3);
        let st = s.stats();
        assert_eq!((st.dropped, st.buffered, st.buffered_bytes), (2, 3, 3 * one as u64));
        // A taken batch keeps its weight until finished.
        let b = s.take_batch(usize::MAX, Duration::ZERO).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(s.push(std::iter::once(rec(1000))), 0);
        s.finish_batch(3, 0, 0);
        assert_eq!(s.push(std::iter::once(rec(1000))), 1);
        let st = s.stats();
        assert_eq!((st.exported, st.dropped, st.buffered), (3, 3, 1));
        assert_eq!(s.stats().buffer_peak_bytes, 3 * one as u64);
    }

    #[test]
    fn batches_stay_within_the_budget_and_wait_for_more() {
        let s = Shared::new(1 << 30);
        s.push((0..10).map(|_| rec(100)));
        assert!(matches!(s.take_batch(1 << 20, Duration::from_secs(60)), Err(Some(_))));
        let per = delimited_len(rec(100).encoded_len);
        let b = s.take_batch(per * 4 + per / 2, Duration::ZERO).unwrap();
        assert_eq!(b.len(), 4);
        s.finish_batch(4, 0, 0);
        // One record larger than the budget still goes (alone).
        let s = Shared::new(1 << 30);
        s.push(std::iter::once(rec(5000)));
        assert_eq!(s.take_batch(100, Duration::ZERO).unwrap().len(), 1);
    }
}
