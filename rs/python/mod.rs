//! The `tracer_ebpf._native` extension module (Cargo feature `python`),
//! split by what it exposes: the tracer, events, columns, Arrow batches,
//! the OTLP exporter, errors.
//!
//! Thin by design: the Python package (python/tracer_ebpf/) holds the
//! user-facing API.

mod arrow;
mod columns;
mod dataset;
mod errors;
mod event;
mod exporter;
mod tracer;

use crate::config::Config;
use crate::types::EventType;
use arrow::{events_to_arrow, ArrowBatch};
use columns::BytesColumn;
use event::PyEvent;
use exporter::NativeExporter;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tracer::NativeTracer;

/// The typed event catalogue: [{name, id, comment, optional, synthetic, fields: [(name, type)]}].
#[pyfunction]
fn list_events<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for e in EventType::ALL {
        let d = PyDict::new(py);
        d.set_item("name", e.name())?;
        d.set_item("id", e.id())?;
        d.set_item("comment", e.comment())?;
        d.set_item("optional", e.optional())?;
        d.set_item("synthetic", e.synthetic())?;
        let fields: Vec<(&str, &str)> = e.fields().iter().map(|f| (f.name, f.kind.toml_name())).collect();
        d.set_item("fields", fields)?;
        out.append(d)?;
    }
    Ok(out)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Each poll builds and frees batches of several MB: see memory.rs.
    crate::memory::keep_freed_memory();
    m.add_class::<NativeTracer>()?;
    m.add_class::<PyEvent>()?;
    m.add_class::<BytesColumn>()?;
    m.add_class::<ArrowBatch>()?;
    m.add_class::<dataset::PyDataset>()?;
    m.add_class::<NativeExporter>()?;
    m.add_function(wrap_pyfunction!(events_to_arrow, m)?)?;
    m.add_function(wrap_pyfunction!(list_events, m)?)?;
    m.add("DEFAULT_CONTENT_MAX", Config::default().content_max)?;
    m.add("DEFAULT_ARGV_MAX", Config::default().argv_max)?;
    m.add("DEFAULT_RING_BYTES", Config::default().ring_bytes)?;
    m.add("DEFAULT_PAYLOAD_BYTES_PER_CPU", Config::default().payload_bytes_per_cpu)?;
    m.add("DEFAULT_QUEUE_BYTES", Config::default().queue_bytes)?;
    m.add("DEFAULT_OTLP_BUFFER_BYTES", crate::otlp::DEFAULT_BUFFER_BYTES)?;
    let limits = PyDict::new(m.py());
    for &(name, lo, hi) in crate::config::LIMITS {
        limits.set_item(name, (lo, hi))?;
    }
    limits.set_item("otlp_buffer_bytes", (crate::otlp::MIN_BUFFER_BYTES, crate::otlp::MAX_BUFFER_BYTES))?;
    m.add("LIMITS", limits)?;
    Ok(())
}
