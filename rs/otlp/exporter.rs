//! The exporter: callers hand it events (`export`, which never waits);
//! its own thread batches the records and sends them, retrying what may
//! succeed later; `close` flushes within a time limit. Every record ends up
//! counted in exactly one of `exported`, `export_failed`, `export_dropped`.

use super::batch::{put_record, Encoder};
use super::buffer::{Batch, ExportStats, Shared};
use super::config::{OtlpConfig, Settings};
use super::mapping::fill_record;
use super::resource::{new_source_id, resource, scope};
use super::retry::Backoff;
use super::transport::{Outcome, Transport};
use crate::clock::epoch_ns;
use crate::error::{Error, Result};
use crate::event::Event;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long the first record of a batch waits for others to join it.
pub const LINGER: Duration = Duration::from_millis(100);
/// Records encoded at a time by `export` before they go into the buffer:
/// at most this many, or CHUNK_BYTES (bounds the memory of records on
/// their way in, beyond the buffer's, to CHUNK_BYTES plus one record).
const CHUNK: usize = 256;
const CHUNK_BYTES: usize = 1 << 20;

/// An OTLP logs exporter (docs/otlp.md).
///
/// ```no_run
/// # use std::time::Duration;
/// let exporter = tracer_ebpf::otlp::Exporter::new(&tracer_ebpf::otlp::OtlpConfig::default())?;
/// let mut t = tracer_ebpf::Tracer::new(tracer_ebpf::Config::new().events(["syscalls/sys_enter_write"]))?;
/// for _ in 0..10 {
///     exporter.export_from(&mut t, 65536, Duration::from_millis(100))?;
/// }
/// let stats = exporter.close(Duration::from_secs(5));
/// # Ok::<(), tracer_ebpf::Error>(())
/// ```
pub struct Exporter {
    shared: Arc<Shared>,
    settings: Settings,
    source: String,
    /// Bytes of records a request holds at most.
    budget: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// close()'s deadline, for the thread's waits.
    deadline: watch::Sender<Option<Instant>>,
    closed: AtomicBool,
    /// Held by close(): one at a time.
    closing: Mutex<()>,
    final_stats: Mutex<Option<ExportStats>>,
}

impl Exporter {
    /// Validates `config` (with the environment) and starts the exporter's
    /// thread. Nothing is sent, and no connection made, before records come:
    /// a receiver that is not up yet is no error.
    pub fn new(config: &OtlpConfig) -> Result<Exporter> {
        Exporter::with_settings(config.resolve()?)
    }

    pub fn with_settings(settings: Settings) -> Result<Exporter> {
        let source = new_source_id();
        let encoder = Encoder::new(resource(&settings.resource, &source), scope());
        let budget = encoder.record_budget;
        let shared = Arc::new(Shared::new(settings.buffer_bytes, budget));
        let (deadline, deadline_rx) = watch::channel(None);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let thread = {
            let (shared, settings) = (Arc::clone(&shared), settings.clone());
            std::thread::Builder::new()
                .name("tracer-otlp".into())
                .spawn(move || {
                    // However the thread ends (a panic included), flush()
                    // and close() are told.
                    let _finished = Finished(&shared);
                    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(Error::io("starting the OTLP exporter's runtime", e)));
                            return;
                        }
                    };
                    let transport = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let _in_runtime = rt.enter();
                        Transport::new(&settings)
                    }));
                    let transport = match transport {
                        Ok(Ok(t)) => t,
                        Ok(Err(e)) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                        Err(_) => {
                            let bug = std::io::Error::other("setting up the client panicked (a bug in tracer-ebpf: please report it)");
                            let _ = ready_tx.send(Err(Error::io("starting the OTLP exporter", bug)));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let timeout = settings.timeout;
                    rt.block_on(Sender { shared: &shared, transport, encoder, deadline: deadline_rx, timeout }.run());
                    // Name resolution may still be running on a blocking
                    // thread: not waited for.
                    rt.shutdown_background();
                })
                .map_err(|e| Error::io("starting the OTLP exporter's thread", e))?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                let bug = std::io::Error::other("it ended before it started (a bug in tracer-ebpf: please report it)");
                return Err(Error::io("starting the OTLP exporter's thread", bug));
            }
        }
        Ok(Exporter {
            shared,
            settings,
            source,
            budget,
            thread: Mutex::new(Some(thread)),
            deadline,
            closed: AtomicBool::new(false),
            closing: Mutex::new(()),
            final_stats: Mutex::new(None),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// This exporter's `tracer_ebpf.source` (and, unless configured,
    /// `service.instance.id`): the id its `tracer_ebpf.seq` numbers count in.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Maps `events` to records and buffers them for sending, without
    /// waiting: those that do not fit in the buffer are dropped and counted
    /// (`export_dropped`). Returns how many were buffered.
    pub fn export(&self, events: &[Event]) -> Result<usize> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ExporterClosed);
        }
        let observed = epoch_ns();
        let first = self.shared.reserve_seq(events.len() as u64);
        let mut kept = 0;
        // One record's buffers, reused from event to event, and the
        // encodings of a chunk of records with their lengths.
        let mut record = LogRecord::default();
        let mut chunk: Vec<u8> = Vec::new();
        let mut lens: Vec<usize> = Vec::with_capacity(CHUNK.min(events.len()));
        for (seq, e) in (first..).zip(events) {
            fill_record(&mut record, e, seq, observed);
            let len = put_record(&mut chunk, &record);
            if len > self.budget {
                chunk.truncate(chunk.len() - len);
                self.shared.set_error(format!(
                    "a record of {len} bytes does not fit in one request (at most {} bytes of records): not sent",
                    self.budget
                ));
                self.shared.add_failed(1);
                continue;
            }
            lens.push(len);
            if lens.len() == CHUNK || chunk.len() >= CHUNK_BYTES {
                kept += self.shared.push(&chunk, &lens);
                chunk.clear();
                lens.clear();
            }
        }
        kept += self.shared.push(&chunk, &lens);
        Ok(kept)
    }

    /// Polls `tracer` (up to `max` events, waiting up to `timeout`) and
    /// exports what it returns; returns how many events it handed over.
    pub fn export_from(&self, tracer: &mut crate::Tracer, max: usize, timeout: Duration) -> Result<usize> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ExporterClosed);
        }
        let mut events = Vec::new();
        let n = tracer.poll_into(&mut events, max, timeout)?;
        self.export(&events)?;
        Ok(n)
    }

    /// Every counter, now (the final values after `close`).
    pub fn stats(&self) -> ExportStats {
        match &*self.final_stats.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(s) => s.clone(),
            None => self.shared.stats(),
        }
    }

    /// Why the last request failed (retried or not), if one did.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error()
    }

    /// Waits up to `timeout` for everything buffered to be sent (or
    /// refused); true if it was. Batches go at once meanwhile.
    pub fn flush(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut st = self.shared.lock();
        st.flushing += 1;
        drop(st);
        self.shared.wake.notify_one();
        st = self.shared.lock();
        let done = loop {
            if Shared::idle(&st) || st.finished {
                break Shared::idle(&st);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            st = self.shared.progress.wait_timeout(st, left).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        };
        st.flushing -= 1;
        done
    }

    /// Stops taking records, sends what is buffered for at most `timeout`,
    /// then drops (and counts in `export_dropped`) what is left, a request
    /// under way included. Returns the final counters. Idempotent.
    pub fn close(&self, timeout: Duration) -> ExportStats {
        let _one_at_a_time = self.closing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = &*self.final_stats.lock().unwrap_or_else(|p| p.into_inner()) {
            return s.clone();
        }
        self.closed.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        self.shared.lock().deadline = Some(deadline);
        self.deadline.send_replace(Some(deadline));
        self.shared.wake.notify_one();
        // Every wait of the thread ends by the deadline.
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        // If the thread died early (a bug), what it left is still counted.
        self.shared.drop_pending();
        let s = self.shared.stats();
        *self.final_stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.clone());
        s
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for Exporter {
    /// Without `close()`: what is buffered is dropped (and counted).
    fn drop(&mut self) {
        self.close(Duration::ZERO);
    }
}

/// Marks the exporter's thread finished when dropped.
struct Finished<'a>(&'a Shared);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.lock().finished = true;
        self.0.progress.notify_all();
    }
}

/// The exporter thread's side.
struct Sender<'a> {
    shared: &'a Shared,
    transport: Transport,
    encoder: Encoder,
    deadline: watch::Receiver<Option<Instant>>,
    timeout: Duration,
}

impl Sender<'_> {
    async fn run(mut self) {
        loop {
            if self.deadline.borrow().is_some_and(|d| Instant::now() >= d) {
                break; // close()'s time is up: what is left is dropped below
            }
            let wait = match self.shared.take_batch(LINGER) {
                Ok(batch) => {
                    self.send(batch).await;
                    continue;
                }
                Err(wait) => wait,
            };
            if self.deadline.borrow().is_some() {
                break; // closing, and nothing is left
            }
            tokio::select! {
                _ = self.shared.wake.notified() => {}
                _ = self.deadline.changed() => {}
                _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))) => {}
            }
        }
        self.shared.drop_pending();
    }

    /// Resolves when close()'s deadline has passed (never if none is set).
    async fn closing(mut rx: watch::Receiver<Option<Instant>>) {
        loop {
            let d = *rx.borrow_and_update();
            match d {
                Some(d) => return tokio::time::sleep_until(d.into()).await,
                None => {
                    if rx.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }

    /// Sends one batch until it is taken, refused, or close()'s time is up.
    async fn send(&mut self, batch: Batch) {
        let n = batch.records as u64;
        let body = self.transport.prepare(self.encoder.encode(&batch.bytes));
        let mut backoff = Backoff::new();
        loop {
            let attempt = tokio::time::timeout(self.timeout + Duration::from_secs(1), self.transport.send(body.clone()));
            let outcome = tokio::select! {
                o = attempt => o.unwrap_or_else(|_| Outcome::Retry { after: None, why: format!("no answer within {:?}", self.timeout) }),
                _ = Self::closing(self.deadline.clone()) => {
                    // The earlier error (a refused certificate, an unreachable
                    // receiver) is still why nothing went out: kept beside it.
                    let why = "close: the time ran out while a request was under way";
                    self.shared.set_error(match self.shared.last_error() {
                        Some(before) if !before.starts_with(why) => format!("{why} (before: {before})"),
                        _ => why.into(),
                    });
                    return self.shared.finish_batch(batch, 0, 0, n);
                }
            };
            match outcome {
                Outcome::Accepted { rejected, message } => {
                    let rejected = rejected.min(n);
                    if rejected > 0 {
                        self.shared.set_error(format!("the receiver rejected {rejected} of {n} records: {message}"));
                    }
                    self.shared.add_request();
                    return self.shared.finish_batch(batch, n - rejected, rejected, 0);
                }
                Outcome::Failed { why } => {
                    self.shared.set_error(why);
                    self.shared.add_request();
                    return self.shared.finish_batch(batch, 0, n, 0);
                }
                Outcome::Retry { after, why } => {
                    self.shared.set_error(why);
                    let delay = backoff.delay(after);
                    let deadline = *self.deadline.borrow();
                    if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                        return self.shared.finish_batch(batch, 0, 0, n);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = Self::closing(self.deadline.clone()) => return self.shared.finish_batch(batch, 0, 0, n),
                    }
                    self.shared.add_retry();
                }
            }
        }
    }
}
