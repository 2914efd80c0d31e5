//! Live export of events as OpenTelemetry logs (OTLP over gRPC or
//! HTTP/protobuf): docs/otlp.md. Cargo feature `otlp` (on by default).
//!
//! One module per job: `config` (the OTEL_* settings) with `kv_list` (their
//! key=value lists), `mapping` (event → LogRecord) and `resource`, `buffer`
//! (the bounded buffer and the counters), `batch` (requests under the size
//! limit), `retry` (backoff), `transport` with `grpc`, `http_proto` and
//! `tls`, and `exporter` (the thread that ties them together).

mod batch;
mod buffer;
mod config;
mod exporter;
mod grpc;
mod http_proto;
mod kv_list;
pub mod mapping;
mod resource;
mod retry;
mod tls;
mod transport;

pub use batch::MAX_REQUEST_BYTES;
pub use buffer::ExportStats;
pub use config::{Compression, Env, OtlpConfig, Protocol, Settings, Tls, DEFAULT_BUFFER_BYTES, MAX_BUFFER_BYTES, MIN_BUFFER_BYTES};
pub use exporter::Exporter;
