//! ArrowBatch: a record batch handed to Python through the Arrow PyCapsule
//! interface (`__arrow_c_schema__`, `__arrow_c_array__`,
//! `__arrow_c_stream__`), so pyarrow, polars and DuckDB take it without a
//! copy and without this package depending on any of them.

use super::errors::to_py;
use super::event::events_of;
use crate::columnar::{ffi_array, ffi_schema, record_batch, EventSchema};
use crate::error::Error;
use crate::event::{Event, EventKind};
use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{RecordBatch, RecordBatchIterator};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyList, PyTuple};
use std::ffi::CString;
use std::sync::Arc;

/// Events as an Arrow record batch. Pass it as it is to
/// `pyarrow.record_batch()` / `pyarrow.table()`, `polars.DataFrame()` or
/// DuckDB; the buffers are shared, not copied.
#[pyclass(name = "ArrowBatch", module = "tracer_ebpf._native", frozen)]
pub struct ArrowBatch {
    pub(crate) batch: RecordBatch,
}

fn ffi_error(e: Error) -> PyErr {
    PyValueError::new_err(format!("Arrow export failed: {e}"))
}

fn capsule<'py, T: 'static + Send>(py: Python<'py>, value: T, name: &str) -> PyResult<Bound<'py, PyCapsule>> {
    // The consumer moves the struct out (leaving `release` NULL); one it
    // never took is released when the capsule is freed (T's Drop).
    PyCapsule::new(py, value, Some(CString::new(name).expect("no NUL in a capsule name")))
}

#[pymethods]
impl ArrowBatch {
    fn __len__(&self) -> usize {
        self.batch.num_rows()
    }

    #[getter]
    fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Column names, in order.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.batch.schema().fields().iter().map(|f| f.name().clone()).collect()
    }

    /// The schema as an Arrow C schema capsule.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let schema = ffi_schema(self.batch.schema().as_ref()).map_err(ffi_error)?;
        capsule(py, schema, "arrow_schema")
    }

    /// (schema capsule, array capsule): the batch as one struct array.
    /// `requested_schema` is not applied (the protocol allows that).
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(&self, py: Python<'py>, requested_schema: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema;
        let schema = ffi_schema(self.batch.schema().as_ref()).map_err(ffi_error)?;
        let array = ffi_array(self.batch.clone());
        PyTuple::new(py, [capsule(py, schema, "arrow_schema")?.into_any(), capsule(py, array, "arrow_array")?.into_any()])
    }

    /// A stream of this one batch.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(&self, py: Python<'py>, requested_schema: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let reader = RecordBatchIterator::new([Ok(self.batch.clone())], self.batch.schema());
        capsule(py, FFI_ArrowArrayStream::new(Box::new(reader)), "arrow_array_stream")
    }

    fn __repr__(&self) -> String {
        format!("<ArrowBatch of {} rows, {} columns>", self.batch.num_rows(), self.batch.num_columns())
    }
}

/// Builds one batch of `events` with a schema of their event types (the
/// columns of `Tracer.poll_arrow()` for those types).
pub(crate) fn events_batch(events: &[Event]) -> crate::error::Result<RecordBatch> {
    let mut kinds: Vec<EventKind> = Vec::new();
    for e in events {
        if !kinds.iter().any(|k| k.name() == e.event_type.name()) {
            kinds.push(e.event_type.clone());
        }
    }
    record_batch(Arc::new(EventSchema::new(&kinds)), events)
}

/// events_to_arrow(events): a list of Event as one ArrowBatch.
#[pyfunction]
pub(crate) fn events_to_arrow(py: Python<'_>, events: &Bound<'_, PyList>) -> PyResult<ArrowBatch> {
    let evs = events_of(events, "events_to_arrow")?;
    let batch = py.detach(|| events_batch(&evs)).map_err(|e: Error| to_py(py, e))?;
    Ok(ArrowBatch { batch })
}
