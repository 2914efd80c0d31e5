//! NativeTracer: the tracer as the Python package's tracer_ebpf.Tracer uses it.

use super::arrow::ArrowBatch;
use super::columns::{columns, Schema};
use super::dataset::PyDataset;
use super::errors::{poisoned, to_py};
use super::event::PyEvent;
use super::exporter::NativeExporter;
use crate::columnar::record_batch;
use crate::config::Config;
use crate::error::Error;
use crate::event::Event;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A running tracer. Use tracer_ebpf.Tracer, which wraps this.
#[pyclass(module = "tracer_ebpf._native")]
pub struct NativeTracer {
    // A Mutex makes the tracer shareable between Python threads: one call at
    // a time, the GIL released while it waits for events.
    inner: Mutex<crate::Tracer>,
    schema: Mutex<Schema>,
    /// Reused between polls: no fresh (page-faulting) memory per batch.
    spare: Mutex<Vec<Event>>,
    /// The process that created it: a forked child must not take the
    /// mutexes (a thread of the parent may have held them at the fork).
    owner: i32,
    /// Closed in a forked child (which never touches `inner`).
    closed_in_child: std::sync::atomic::AtomicBool,
    /// Its batches are built by the reader (`arrow`): known without the lock.
    arrow: bool,
}

/// Longest wait without looking for Python signals: bounds how long Ctrl-C
/// (KeyboardInterrupt) takes to interrupt a poll.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// Most bytes of events (contents and event structs, as the queue weighs
/// them) one call takes: each call turns its whole batch into Python
/// objects, JSON text, columns or files at once, and 65,536 events of
/// 4 KiB written as JSON took tracer-example past 1.6 GB.
const BATCH_BYTES: usize = 16 << 20;

impl NativeTracer {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, crate::Tracer>> {
        self.check_owner()?;
        self.inner.lock().map_err(|_| poisoned())
    }

    fn forked(&self) -> bool {
        crate::fork_guard::current_pid() != self.owner
    }

    fn check_owner(&self) -> PyResult<()> {
        if self.forked() {
            Python::attach(|py| Err(to_py(py, Error::Forked { owner: self.owner })))
        } else {
            Ok(())
        }
    }

    /// Polls into `dataset`; with `json`, also returns the JSON lines.
    fn to_dataset(&self, py: Python<'_>, dataset: &PyDataset, max_events: usize, timeout: f64, json: bool) -> PyResult<(usize, String)> {
        dataset.check_open(py)?; // closed: fail before taking events
        let evs = self.wait(py, max_events, timeout)?;
        let stats = self.lock().ok().and_then(|t| t.stats().ok());
        let n = evs.len();
        let written = dataset.with_open(py, |ds| {
            if let Some(s) = &stats {
                ds.set_stats(s);
            }
            let mut text = String::new();
            if json {
                text.reserve(evs.len() * 256);
                for e in &evs {
                    crate::json::write_event(&mut text, e);
                    text.push('\n');
                }
            }
            ds.write(&evs).map(|_| text)
        });
        self.recycle(evs);
        written.map(|t| (n, t))
    }

    /// Keeps an emptied `wait` buffer for the next call.
    fn recycle(&self, mut buf: Vec<Event>) {
        buf.clear();
        if let Ok(mut spare) = self.spare.lock() {
            *spare = buf;
        }
    }

    /// Calls `take(tracer, slice)` with the GIL released, in slices of
    /// `timeout` seconds between which pending Python signals are handled
    /// (so Ctrl-C raises KeyboardInterrupt promptly), until it takes
    /// something (the count it returns), the tracer is drained, or the time
    /// is up. None once another thread closed the tracer meanwhile.
    fn wait_for<T: Send>(
        &self,
        py: Python<'_>,
        timeout: f64,
        mut take: impl FnMut(&mut crate::Tracer, Duration) -> crate::error::Result<(T, usize)> + Send,
    ) -> PyResult<Option<T>> {
        self.check_owner()?;
        let timeout = Duration::from_secs_f64(if timeout.is_finite() { timeout.clamp(0.0, 1e9) } else { 0.0 });
        let deadline = Instant::now() + timeout;
        let mut first = true;
        loop {
            let slice = deadline.saturating_duration_since(Instant::now()).min(SIGNAL_CHECK);
            let got = py
                .detach(|| {
                    self.inner
                        .lock()
                        .map(|mut t| {
                            if t.is_closed() && !first {
                                Ok(None)
                            } else {
                                take(&mut t, slice).map(|(v, n)| Some((v, n, t.is_drained())))
                            }
                        })
                        .map_err(|_| ())
                })
                .map_err(|_| poisoned())?
                .map_err(|e| to_py(py, e))?;
            first = false;
            match got {
                None => return Ok(None),
                Some((v, n, drained)) if n > 0 || drained || Instant::now() >= deadline => return Ok(Some(v)),
                Some(_) => py.check_signals()?,
            }
        }
    }

    /// Up to `max_events` events, and no more than `BATCH_BYTES` of them (see
    /// `wait_for`). The Vec comes from `spare`: hand it back with `recycle`.
    fn wait(&self, py: Python<'_>, max_events: usize, timeout: f64) -> PyResult<Vec<Event>> {
        self.check_owner()?;
        let mut out = self.spare.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        out.reserve(max_events.min(1 << 16));
        self.wait_for(py, timeout, |t, slice| t.poll_into_within(&mut out, max_events, BATCH_BYTES, slice).map(|n| ((), n)))?;
        Ok(out)
    }

    /// For a tracer that builds record batches (`arrow`): one batch of up
    /// to `max_events` rows, possibly empty (see `wait_for`).
    fn wait_batch(&self, py: Python<'_>, max_events: usize, timeout: f64) -> PyResult<ArrowBatch> {
        let got = self.wait_for(py, timeout, |t, slice| {
            t.poll_arrow(max_events, slice).map(|b| {
                let n = b.num_rows();
                (b, n)
            })
        })?;
        let batch = match got {
            Some(b) => b,
            None => arrow_array::RecordBatch::new_empty(self.lock()?.arrow_schema().schema()),
        };
        Ok(ArrowBatch { batch })
    }
}

#[pymethods]
impl NativeTracer {
    #[new]
    #[pyo3(signature = (*, events, pids, follow_children, comm, content_fds, all_fds, content_max, argv_max,
                        ring_bytes, payload_bytes_per_cpu, queue_bytes, reader_thread, trace_self,
                        exclude_pids=Vec::new(), exclude_comm=Vec::new(), exclude_output_readers=true,
                        cgroups=Vec::new(), snapshot=false, arrow=false, yield_cpu=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        events: Vec<String>,
        pids: Vec<u32>,
        follow_children: bool,
        comm: Vec<String>,
        content_fds: Vec<i32>,
        all_fds: bool,
        content_max: u32,
        argv_max: u32,
        ring_bytes: Option<usize>,
        payload_bytes_per_cpu: Option<usize>,
        queue_bytes: Option<usize>,
        reader_thread: bool,
        trace_self: bool,
        exclude_pids: Vec<u32>,
        exclude_comm: Vec<String>,
        exclude_output_readers: bool,
        cgroups: Vec<String>,
        snapshot: bool,
        arrow: bool,
        yield_cpu: bool,
    ) -> PyResult<Self> {
        // Sizes not given are sized from the memory this process may use
        // (RAM or its cgroup's limit), now: see sizing.rs.
        let defaults = Config::default();
        let cfg = Config {
            events,
            pids,
            follow_children,
            comm,
            content_fds,
            all_fds,
            content_max,
            argv_max,
            ring_bytes: ring_bytes.unwrap_or(defaults.ring_bytes),
            payload_bytes_per_cpu: payload_bytes_per_cpu.unwrap_or(defaults.payload_bytes_per_cpu),
            queue_bytes: queue_bytes.unwrap_or(defaults.queue_bytes),
            reader_thread,
            trace_self,
            exclude_pids,
            exclude_comm,
            exclude_output_readers,
            cgroups,
            snapshot,
            arrow,
            yield_cpu,
            ..defaults
        };
        let t = py.detach(|| crate::Tracer::new(cfg)).map_err(|e| to_py(py, e))?;
        let schema = Mutex::new(Schema::new(t.events()));
        Ok(NativeTracer {
            inner: Mutex::new(t),
            schema,
            spare: Mutex::default(),
            owner: crate::fork_guard::current_pid(),
            closed_in_child: Default::default(),
            arrow,
        })
    }

    /// Waits up to `timeout` seconds, returns up to `max_events` events.
    fn poll(&self, py: Python<'_>, max_events: usize, timeout: f64) -> PyResult<Vec<PyEvent>> {
        let mut evs = self.wait(py, max_events, timeout)?;
        let out = evs.drain(..).map(|e| PyEvent { ev: e }).collect();
        self.recycle(evs);
        Ok(out)
    }

    /// Like poll(), but returns the events as JSON lines (bytes, one per
    /// line, newline-terminated) and their count: the fast path of
    /// tracer-example, with no Python object per event.
    fn poll_json<'py>(&self, py: Python<'py>, max_events: usize, timeout: f64) -> PyResult<(Bound<'py, PyBytes>, usize)> {
        let evs = self.wait(py, max_events, timeout)?;
        let text = py.detach(|| {
            let mut s = String::with_capacity(evs.len() * 256);
            for e in &evs {
                crate::json::write_event(&mut s, e);
                s.push('\n');
            }
            s
        });
        let n = evs.len();
        self.recycle(evs);
        Ok((PyBytes::new(py, text.as_bytes()), n))
    }

    /// Like poll(), but column by column: {column: array.array, list or
    /// BytesColumn}, one entry per event in each (see `columns`). No Python
    /// object per event but for `char[]`, `char[][]` and list fields.
    fn poll_columns<'py>(&self, py: Python<'py>, max_events: usize, timeout: f64) -> PyResult<Bound<'py, PyDict>> {
        let evs = self.wait(py, max_events, timeout)?;
        let cols = columns(py, &mut *self.schema.lock().map_err(|_| poisoned())?, &evs);
        self.recycle(evs);
        cols
    }

    /// Like poll(), as one Arrow record batch (an ArrowBatch, possibly of no
    /// rows) of this tracer's schema (see docs/columnar.md).
    fn poll_arrow(&self, py: Python<'_>, max_events: usize, timeout: f64) -> PyResult<ArrowBatch> {
        if self.arrow {
            return self.wait_batch(py, max_events, timeout);
        }
        let schema = self.lock()?.arrow_schema();
        let evs = self.wait(py, max_events, timeout)?;
        let built = py.detach(|| record_batch(schema, &evs));
        self.recycle(evs);
        Ok(ArrowBatch { batch: built.map_err(|e| to_py(py, e))? })
    }

    /// Like poll(), writing the events into a ParquetDataset (with the
    /// tracer's counters, for the files it closes) instead of returning
    /// them: no Python object per event. Returns how many were written.
    fn write_parquet(&self, py: Python<'_>, dataset: &Bound<'_, PyDataset>, max_events: usize, timeout: f64) -> PyResult<usize> {
        Ok(self.to_dataset(py, dataset.get(), max_events, timeout, false)?.0)
    }

    /// write_parquet(), also returning the events as JSON lines (as
    /// poll_json() does): (bytes, count).
    fn write_parquet_json<'py>(
        &self,
        py: Python<'py>,
        dataset: &Bound<'_, PyDataset>,
        max_events: usize,
        timeout: f64,
    ) -> PyResult<(Bound<'py, PyBytes>, usize)> {
        let (n, text) = self.to_dataset(py, dataset.get(), max_events, timeout, true)?;
        Ok((PyBytes::new(py, text.as_bytes()), n))
    }

    /// Like poll(), but hands the events to an OTLP exporter (with no
    /// Python object per event): returns how many were handed over (those
    /// that did not fit in its buffer are counted in its export_dropped).
    fn export(&self, py: Python<'_>, exporter: &NativeExporter, max_events: usize, timeout: f64) -> PyResult<usize> {
        if exporter.inner.is_closed() {
            return Err(to_py(py, Error::ExporterClosed));
        }
        let evs = self.wait(py, max_events, timeout)?;
        let n = evs.len();
        let exported = py.detach(|| exporter.inner.export(&evs));
        self.recycle(evs);
        exported.map_err(|e| to_py(py, e))?;
        Ok(n)
    }

    /// Every counter, by name.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.lock()?.stats().map_err(|e| to_py(py, e))?;
        let d = PyDict::new(py);
        for (k, v) in s.pairs() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// The buffer sizes in force and the kernel memory they hold.
    fn memory<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = self.lock()?;
        let kernel = t.kernel_memory().map_err(|e| to_py(py, e))?;
        let c = t.config();
        let d = PyDict::new(py);
        d.set_item("kernel_bytes", kernel)?;
        d.set_item("ring_bytes", c.ring_bytes)?;
        d.set_item("payload_bytes_per_cpu", c.payload_chunks_per_cpu * crate::types::CHUNK_SIZE)?;
        d.set_item("ncpus", t.ncpus())?;
        d.set_item("queue_bytes", c.queue_bytes)?;
        Ok(d)
    }

    fn set_pids(&self, py: Python<'_>, pids: Vec<u32>) -> PyResult<()> {
        self.lock()?.set_pids(&pids).map_err(|e| to_py(py, e))
    }

    fn set_comm(&self, py: Python<'_>, comm: Vec<String>) -> PyResult<()> {
        self.lock()?.set_comm(&comm).map_err(|e| to_py(py, e))
    }

    fn set_cgroups(&self, py: Python<'_>, cgroups: Vec<String>) -> PyResult<()> {
        self.lock()?.set_cgroups(&cgroups).map_err(|e| to_py(py, e))
    }

    /// Names of the attached events.
    #[getter]
    fn events(&self) -> PyResult<Vec<String>> {
        Ok(self.lock()?.event_names())
    }

    /// What is traced by a slower way than the usual one, and why.
    #[getter]
    fn notes(&self) -> PyResult<Vec<String>> {
        Ok(self.lock()?.notes().to_vec())
    }

    /// Processes not traced because they read this process's output.
    #[getter]
    fn output_readers(&self) -> PyResult<Vec<u32>> {
        Ok(self.lock()?.output_readers().to_vec())
    }

    /// Tracepoints a wildcard named that could not be attached: [(name, reason)].
    fn attach_failures(&self) -> PyResult<Vec<(String, String)>> {
        Ok(self.lock()?.attach_failures().to_vec())
    }

    /// For each event name seen so far by poll_columns() (and each typed
    /// event attached), its payload columns.
    #[getter]
    fn event_columns(&self) -> PyResult<HashMap<String, Vec<String>>> {
        let s = self.schema.lock().map_err(|_| poisoned())?;
        Ok(s.event_columns())
    }

    /// Seconds from creation to attached.
    #[getter]
    fn startup_seconds(&self) -> PyResult<f64> {
        Ok(self.lock()?.startup_time().as_secs_f64())
    }

    /// Detaches: nothing new is captured; poll() hands out the rest, then
    /// returns nothing at once (`drained` becomes true).
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        self.check_owner()?;
        py.detach(|| self.inner.lock().map(|mut t| t.stop()).map_err(|_| ())).map_err(|_| poisoned())?.map_err(|e| to_py(py, e))
    }

    /// Switches yield_cpu on or off from the next poll on (off: the polling
    /// thread's policy is given back now); returns whether it switches.
    /// Does nothing once closed or in a forked child.
    fn set_yield_cpu(&self, py: Python<'_>, on: bool) -> PyResult<bool> {
        if self.forked() {
            return Ok(false);
        }
        py.detach(|| self.inner.lock().map(|mut t| t.set_yield_cpu(on)).map_err(|_| ())).map_err(|_| poisoned())
    }

    /// Whether stop() was called.
    #[getter]
    fn stopped(&self) -> PyResult<bool> {
        Ok(self.lock()?.is_stopped())
    }

    /// Stopped, and everything captured has been handed out.
    #[getter]
    fn drained(&self) -> PyResult<bool> {
        Ok(self.lock()?.is_drained())
    }

    /// Detaches and frees everything; idempotent. What was not handed out is
    /// counted as `discarded`. Waits for a concurrent poll() to return
    /// (within SIGNAL_CHECK: it then returns no events). In a forked child it
    /// touches nothing: the tracer is the parent's.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.forked() {
            self.closed_in_child.store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        py.detach(|| self.inner.lock().map(|mut t| t.close()).map_err(|_| ())).map_err(|_| poisoned())
    }

    /// Closed; in a forked child, closed there (it was never usable there).
    #[getter]
    fn closed(&self) -> PyResult<bool> {
        if self.forked() {
            return Ok(self.closed_in_child.load(std::sync::atomic::Ordering::Relaxed));
        }
        Ok(self.lock()?.is_closed())
    }
}
