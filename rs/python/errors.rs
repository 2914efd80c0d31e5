//! Rust errors as the exceptions of tracer_ebpf.errors.

use crate::error::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// Maps a Rust error to the matching exception class of tracer_ebpf.errors.
pub(crate) fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let class = match &e {
        Error::Permission { .. } => "TracerPermissionError",
        Error::BtfMissing { .. } => "BtfMissingError",
        Error::TracefsMissing { .. } => "TracefsError",
        Error::UnknownEvent { .. } => "UnknownEventError",
        Error::TracepointMissing { .. } => "TracepointMissingError",
        Error::Config(_) | Error::OtlpConfig { .. } => "ConfigError",
        Error::Cgroup(_) => "CgroupError",
        Error::Closed => "TracerClosedError",
        Error::ExporterClosed => "ExporterClosedError",
        Error::OutOfMemory { .. } => "TracerMemoryError",
        Error::Verifier { .. } => "VerifierError",
        Error::Forked { .. } | Error::Bpf { .. } | Error::Io { .. } | Error::Arrow { .. } | Error::Parquet { .. } => "TracerError",
    };
    raise(py, class, e.to_string())
}

/// Maps an error of a Parquet dataset: bad values as ConfigError, a closed
/// dataset as TracerClosedError, anything else (a file that could not be
/// written) as DatasetError, an OSError.
pub(crate) fn dataset_error(py: Python<'_>, e: Error) -> PyErr {
    match e {
        Error::Config(_) | Error::Closed => to_py(py, e),
        e => raise(py, "DatasetError", e.to_string()),
    }
}

pub(crate) fn raise(py: Python<'_>, class: &str, msg: String) -> PyErr {
    match py.import("tracer_ebpf.errors").and_then(|m| m.getattr(class)).and_then(|c| c.call1((msg.clone(),))) {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => PyRuntimeError::new_err(msg),
    }
}

/// A lock poisoned by an earlier panic.
pub(crate) fn poisoned() -> PyErr {
    PyRuntimeError::new_err("tracer state poisoned by an earlier panic")
}
