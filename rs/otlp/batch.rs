//! A batch of records as one ExportLogsServiceRequest, encoded once (both
//! transports send, and resend, the same bytes), kept under the
//! Collector's default message limit.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// The largest request: the OpenTelemetry Collector's default gRPC limit
/// (`max_recv_msg_size_mib: 4`), also well under its HTTP one. The limit is
/// on the decoded message, so compression does not change it.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// Builds the requests of one exporter.
pub struct Encoder {
    resource: Resource,
    scope: InstrumentationScope,
    /// Bytes left for the records' delimited encodings in a request.
    pub record_budget: usize,
}

impl Encoder {
    pub fn new(resource: Resource, scope: InstrumentationScope) -> Encoder {
        let empty = request(resource.clone(), scope.clone(), Vec::new());
        // The enclosing messages' lengths grow by at most 3 bytes each
        // (varints of up to 4 MiB take 4 bytes) once records are in.
        let framing = empty.encoded_len() + 16;
        Encoder { resource, scope, record_budget: MAX_REQUEST_BYTES.saturating_sub(framing) }
    }

    /// The encoded request of `records`.
    pub fn encode(&self, records: Vec<LogRecord>) -> Bytes {
        Bytes::from(request(self.resource.clone(), self.scope.clone(), records).encode_to_vec())
    }
}

fn request(resource: Resource, scope: InstrumentationScope, log_records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs { scope: Some(scope), log_records, ..Default::default() }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::buffer::delimited_len;
    use crate::otlp::resource::{resource, scope};

    #[test]
    fn a_full_budget_encodes_under_the_limit() {
        let e = Encoder::new(resource(&[("service.name".into(), "x".repeat(1000))], "id"), scope());
        // Records of every size up to about 1 MiB, packed to the budget.
        for size in [10usize, 1000, 100_000, 1 << 20] {
            let mut records = Vec::new();
            let mut used = 0;
            loop {
                let r = LogRecord { event_name: "e".repeat(size), ..Default::default() };
                let d = delimited_len(r.encoded_len());
                if used + d > e.record_budget {
                    break;
                }
                used += d;
                records.push(r);
            }
            let n = records.len();
            let bytes = e.encode(records);
            assert!(bytes.len() <= MAX_REQUEST_BYTES, "{size}: {} bytes", bytes.len());
            let back = ExportLogsServiceRequest::decode(bytes).unwrap();
            assert_eq!(back.resource_logs[0].scope_logs[0].log_records.len(), n);
        }
    }
}
