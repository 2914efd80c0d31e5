//! ParquetDataset: a Parquet dataset being written (rs/dataset), as the
//! Python package's tracer_ebpf.ParquetDataset uses it.

use super::errors::{dataset_error, poisoned, raise, to_py};
use super::event::events_of;
use crate::dataset::{Dataset, DatasetOptions, DatasetSummary};
use crate::error::Error;
use crate::stats::Stats;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// A Parquet dataset being written. Use tracer_ebpf.ParquetDataset, which
/// wraps this.
#[pyclass(name = "ParquetDataset", module = "tracer_ebpf._native", frozen)]
pub struct PyDataset {
    inner: Mutex<Option<Dataset>>,
    summary: Mutex<Option<DatasetSummary>>,
    owner: i32,
}

fn closed(py: Python<'_>) -> PyErr {
    raise(py, "TracerClosedError", "I/O operation on a closed dataset".into())
}

fn config(msg: String) -> Error {
    Error::Config(msg)
}

/// An int option as u64: a negative value is a clear error, not an
/// OverflowError.
fn unsigned(name: &str, v: i64) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| config(format!("{name} must not be negative, got {v}")))
}

pub(crate) fn summary_dict<'py>(py: Python<'py>, s: &DatasetSummary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("files", s.files.len())?;
    d.set_item("rows", s.rows)?;
    d.set_item("bytes", s.bytes)?;
    d.set_item("rows_lost", s.rows_lost)?;
    let paths: Vec<String> = s.files.iter().map(|f| f.path.to_string_lossy().into_owned()).collect();
    d.set_item("paths", paths)?;
    d.set_item("host", &s.host)?;
    d.set_item("run", &s.run)?;
    d.set_item("side_file", s.side_file.to_string_lossy().into_owned())?;
    Ok(d)
}

/// Why `with_open` could not run its function.
enum Failed {
    Poisoned,
    Closed,
    Error(Error),
}

impl PyDataset {
    fn check_owner(&self, py: Python<'_>) -> PyResult<()> {
        if crate::fork_guard::current_pid() != self.owner {
            return Err(to_py(py, config("this dataset belongs to another process (a forked child cannot use it)".into())));
        }
        Ok(())
    }

    /// The open dataset, locked (briefly: never held while waiting for the
    /// GIL); an error once closed or in a forked child.
    fn lock(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, Option<Dataset>>> {
        self.check_owner(py)?;
        let g = self.inner.lock().map_err(|_| poisoned())?;
        if g.is_none() {
            return Err(closed(py));
        }
        Ok(g)
    }

    /// Runs `f` on the open dataset with the GIL released; the lock is
    /// taken and let go without the GIL (a thread waiting for it with the
    /// GIL, e.g. in close(), cannot deadlock with this one).
    pub(crate) fn with_open<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut Dataset) -> Result<R, Error> + Send) -> PyResult<R> {
        self.check_owner(py)?;
        let r = py.detach(|| match self.inner.lock() {
            Err(_) => Err(Failed::Poisoned),
            Ok(mut g) => match g.as_mut() {
                None => Err(Failed::Closed),
                Some(ds) => f(ds).map_err(Failed::Error),
            },
        });
        r.map_err(|e| match e {
            Failed::Poisoned => poisoned(),
            Failed::Closed => closed(py),
            Failed::Error(e) => dataset_error(py, e),
        })
    }

    /// Fails if closed.
    pub(crate) fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        self.lock(py).map(drop)
    }
}

fn stats_of(counters: HashMap<String, u64>) -> Stats {
    Stats::from_pairs(counters.iter().map(|(k, v)| (k.as_str(), *v)))
}

#[pymethods]
impl PyDataset {
    #[new]
    #[pyo3(signature = (path, *, host=None, max_file_bytes, max_file_seconds, row_group_bytes, max_buffered_bytes,
                        max_open_files, zstd_level))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        host: Option<String>,
        max_file_bytes: i64,
        max_file_seconds: f64,
        row_group_bytes: i64,
        max_buffered_bytes: i64,
        max_open_files: i64,
        zstd_level: i32,
    ) -> PyResult<Self> {
        let opts = (|| {
            if !(0.0..=1e9).contains(&max_file_seconds) {
                return Err(config(format!("max_file_seconds must be a number of seconds, got {max_file_seconds}")));
            }
            Ok(DatasetOptions {
                host,
                max_file_bytes: unsigned("max_file_bytes", max_file_bytes)?,
                max_file_age: Duration::from_secs_f64(max_file_seconds),
                row_group_bytes: unsigned("row_group_bytes", row_group_bytes)?,
                max_buffered_bytes: unsigned("max_buffered_bytes", max_buffered_bytes)?,
                max_open_files: unsigned("max_open_files", max_open_files)?,
                zstd_level,
            })
        })()
        .map_err(|e| dataset_error(py, e))?;
        let ds = py.detach(|| Dataset::create(&path, opts)).map_err(|e| dataset_error(py, e))?;
        Ok(PyDataset { inner: Mutex::new(Some(ds)), summary: Mutex::new(None), owner: crate::fork_guard::current_pid() })
    }

    /// Writes a list of Event.
    fn write(&self, py: Python<'_>, events: &Bound<'_, PyList>) -> PyResult<()> {
        let evs = events_of(events, "ParquetDataset.write")?;
        self.with_open(py, |ds| ds.write(&evs))
    }

    /// The tracer's counters (a dict as Tracer.stats() gives), recorded in
    /// the files closed from now on.
    fn set_stats(&self, py: Python<'_>, stats: HashMap<String, u64>) -> PyResult<()> {
        let stats = stats_of(stats);
        self.with_open(py, |ds| {
            ds.set_stats(&stats);
            Ok(())
        })
    }

    /// Closes every file; returns the summary. Idempotent (a second call
    /// returns the same summary).
    #[pyo3(signature = (stats=None))]
    fn close<'py>(&self, py: Python<'py>, stats: Option<HashMap<String, u64>>) -> PyResult<Bound<'py, PyDict>> {
        let mut sg = self.summary.lock().map_err(|_| poisoned())?;
        if let Some(s) = sg.as_ref() {
            return summary_dict(py, s);
        }
        self.check_owner(py)?;
        let ds = self.inner.lock().map_err(|_| poisoned())?.take();
        let Some(ds) = ds else { return Err(closed(py)) };
        let stats = stats.map(stats_of);
        let summary = py.detach(|| ds.close(stats.as_ref())).map_err(|e| dataset_error(py, e))?;
        let d = summary_dict(py, &summary)?;
        *sg = Some(summary);
        Ok(d)
    }

    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.inner.lock().map_err(|_| poisoned())?.is_none())
    }

    /// The summary of what was written so far (complete files only).
    fn summary<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if let Some(s) = self.summary.lock().map_err(|_| poisoned())?.as_ref() {
            return summary_dict(py, s);
        }
        let summary = self.lock(py)?.as_ref().ok_or_else(poisoned)?.summary();
        summary_dict(py, &summary)
    }

    #[getter]
    fn host(&self, py: Python<'_>) -> PyResult<String> {
        if let Some(s) = self.summary.lock().map_err(|_| poisoned())?.as_ref() {
            return Ok(s.host.clone());
        }
        Ok(self.lock(py)?.as_ref().ok_or_else(poisoned)?.host().to_string())
    }

    #[getter]
    fn run(&self, py: Python<'_>) -> PyResult<String> {
        if let Some(s) = self.summary.lock().map_err(|_| poisoned())?.as_ref() {
            return Ok(s.run.clone());
        }
        Ok(self.lock(py)?.as_ref().ok_or_else(poisoned)?.run().to_string())
    }
}
