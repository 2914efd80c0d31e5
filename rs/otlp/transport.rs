//! Sending one encoded request and what came of it, for either protocol.

use super::config::{Protocol, Settings};
use super::{grpc, http_proto};
use crate::error::Result;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use std::time::Duration;

/// What came of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver took the request; `rejected` of its records it refused
    /// (a partial success), saying why in `message`.
    Accepted { rejected: u64, message: String },
    /// Not taken, but worth sending again (after `after` if the receiver
    /// said so).
    Retry { after: Option<Duration>, why: String },
    /// Refused for good.
    Failed { why: String },
}

impl Outcome {
    /// What a successful answer says.
    pub fn from_response(r: ExportLogsServiceResponse) -> Outcome {
        match r.partial_success {
            Some(p) if p.rejected_log_records > 0 || !p.error_message.is_empty() => {
                Outcome::Accepted { rejected: p.rejected_log_records.max(0) as u64, message: p.error_message }
            }
            _ => Outcome::Accepted { rejected: 0, message: String::new() },
        }
    }
}

/// A client for the configured endpoint.
pub enum Transport {
    Grpc(grpc::Client),
    Http(http_proto::Client),
}

impl Transport {
    /// Must run inside the exporter's tokio runtime (the gRPC channel
    /// starts a task on it).
    pub fn new(s: &Settings) -> Result<Transport> {
        Ok(match s.protocol {
            Protocol::Grpc => Transport::Grpc(grpc::Client::new(s)?),
            Protocol::HttpProtobuf => Transport::Http(http_proto::Client::new(s)?),
        })
    }

    /// The body as this transport sends it, every attempt (HTTP compresses
    /// here, once; gRPC compresses each message itself).
    pub fn prepare(&self, request: Bytes) -> Bytes {
        match self {
            Transport::Grpc(_) => request,
            Transport::Http(c) => c.prepare(request),
        }
    }

    pub async fn send(&mut self, body: Bytes) -> Outcome {
        match self {
            Transport::Grpc(c) => c.send(body).await,
            Transport::Http(c) => c.send(body).await,
        }
    }
}

/// The user agent of every request.
pub fn user_agent() -> String {
    format!("tracer-ebpf/{}", env!("CARGO_PKG_VERSION"))
}
