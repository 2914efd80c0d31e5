//! NativeExporter: the OTLP exporter as tracer_ebpf.OtlpExporter uses it.

use super::errors::to_py;
use super::event::PyEvent;
use crate::event::Event;
use crate::otlp::{ExportStats, Exporter, OtlpConfig};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::time::Duration;

/// An OTLP logs exporter. Use tracer_ebpf.OtlpExporter, which wraps this.
#[pyclass(module = "tracer_ebpf._native", frozen)]
pub struct NativeExporter {
    pub(crate) inner: Exporter,
}

/// Seconds from Python (checked there) as a Duration.
pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.clamp(0.0, 1e9) } else { 1e9 })
}

fn stats_dict<'py>(py: Python<'py>, s: &ExportStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in s.pairs() {
        d.set_item(k, v)?;
    }
    Ok(d)
}

#[pymethods]
impl NativeExporter {
    #[new]
    #[pyo3(signature = (*, endpoint=None, protocol=None, headers=None, compression=None, timeout=None, certificate=None,
                        client_certificate=None, client_key=None, insecure=None, service_name=None,
                        resource_attributes=Vec::new(), buffer_bytes=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        endpoint: Option<String>,
        protocol: Option<String>,
        headers: Option<Vec<(String, String)>>,
        compression: Option<String>,
        timeout: Option<f64>,
        certificate: Option<PathBuf>,
        client_certificate: Option<PathBuf>,
        client_key: Option<PathBuf>,
        insecure: Option<bool>,
        service_name: Option<String>,
        resource_attributes: Vec<(String, String)>,
        buffer_bytes: Option<usize>,
    ) -> PyResult<Self> {
        let config = OtlpConfig {
            endpoint,
            protocol,
            headers,
            compression,
            timeout: timeout.map(secs),
            certificate,
            client_certificate,
            client_key,
            insecure,
            service_name,
            resource_attributes,
            buffer_bytes,
        };
        let inner = py.detach(|| Exporter::new(&config)).map_err(|e| to_py(py, e))?;
        Ok(NativeExporter { inner })
    }

    /// Buffers the events for sending; returns how many fit (the others are
    /// counted in export_dropped).
    fn export(&self, py: Python<'_>, events: Vec<PyRef<'_, PyEvent>>) -> PyResult<usize> {
        let evs: Vec<Event> = events.iter().map(|e| e.ev.clone()).collect();
        py.detach(|| self.inner.export(&evs)).map_err(|e| to_py(py, e))
    }

    /// Every counter, by name.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.inner.stats())
    }

    /// Waits up to `timeout` seconds for the buffer to empty.
    fn flush(&self, py: Python<'_>, timeout: f64) -> bool {
        py.detach(|| self.inner.flush(secs(timeout)))
    }

    /// Sends what is buffered for at most `timeout` seconds, drops the
    /// rest; the final counters.
    fn close<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Bound<'py, PyDict>> {
        let s = py.detach(|| self.inner.close(secs(timeout)));
        stats_dict(py, &s)
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The URL (HTTP) or scheme://host:port (gRPC) records go to.
    #[getter]
    fn endpoint(&self) -> String {
        self.inner.settings().endpoint.to_string()
    }

    #[getter]
    fn protocol(&self) -> &'static str {
        self.inner.settings().protocol.name()
    }

    #[getter]
    fn compression(&self) -> &'static str {
        self.inner.settings().compression.name()
    }

    /// Seconds allowed per request.
    #[getter]
    fn timeout(&self) -> f64 {
        self.inner.settings().timeout.as_secs_f64()
    }

    #[getter]
    fn buffer_bytes(&self) -> usize {
        self.inner.settings().buffer_bytes
    }

    /// The resource attributes from the configuration (service.name among
    /// them; host and instance attributes are added when sending).
    #[getter]
    fn resource(&self) -> Vec<(String, String)> {
        self.inner.settings().resource.clone()
    }

    /// tracer_ebpf.source: the id the tracer_ebpf.seq numbers count in.
    #[getter]
    fn source(&self) -> String {
        self.inner.source().to_string()
    }

    /// Why the last request failed, if one did.
    #[getter]
    fn last_error(&self) -> Option<String> {
        self.inner.last_error()
    }

    /// "http/protobuf to http://localhost:4318/v1/logs, uncompressed".
    fn describe(&self) -> String {
        self.inner.settings().describe()
    }
}
