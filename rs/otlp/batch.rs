//! A batch of records as one ExportLogsServiceRequest, encoded once (both
//! transports send, and resend, the same bytes), kept under the
//! Collector's default message limit.
//!
//! Each record is encoded by prost when it is buffered; a request is the
//! resource and scope, encoded by prost once per exporter, with the
//! records' bytes appended as the repeated `log_records` field (prost's
//! own key and length encoding). The result is byte for byte what prost
//! makes of the whole request (a test checks it), without walking every
//! record again to size the enclosing messages.

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

/// The largest request: the OpenTelemetry Collector's default gRPC limit
/// (`max_recv_msg_size_mib: 4`), also well under its HTTP one. The limit is
/// on the decoded message, so compression does not change it.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// Field numbers of the enclosing messages (opentelemetry/proto/logs/v1
/// and collector/logs/v1): `ExportLogsServiceRequest.resource_logs`,
/// `ResourceLogs.scope_logs`, `ScopeLogs.log_records`.
const RESOURCE_LOGS: u32 = 1;
const SCOPE_LOGS: u32 = 2;
const LOG_RECORDS: u32 = 2;

/// Builds the requests of one exporter.
pub struct Encoder {
    /// `ResourceLogs { resource }` and `ScopeLogs { scope }`, encoded: the
    /// fields that come before the records' in each.
    resource_head: Vec<u8>,
    scope_head: Vec<u8>,
    /// Bytes left for the records' delimited encodings in a request.
    pub record_budget: usize,
}

/// Bytes of a length-delimited field of `len` bytes (tag, length, bytes).
pub fn delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn put_delimited_head(out: &mut Vec<u8>, field: u32, len: usize) {
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

impl Encoder {
    pub fn new(resource: Resource, scope: InstrumentationScope) -> Encoder {
        let resource_head = ResourceLogs { resource: Some(resource), ..Default::default() }.encode_to_vec();
        let scope_head = ScopeLogs { scope: Some(scope), ..Default::default() }.encode_to_vec();
        // The enclosing messages' tags and lengths (varints of up to 4 MiB
        // take at most 4 bytes).
        let framing = resource_head.len() + scope_head.len() + 2 * (1 + 4);
        Encoder { resource_head, scope_head, record_budget: MAX_REQUEST_BYTES.saturating_sub(framing) }
    }

    /// The encoded request of `records`: `log_records` fields as
    /// `put_record` writes them, one after the other.
    pub fn encode(&self, records: &[u8]) -> Bytes {
        let scope_len = self.scope_head.len() + records.len();
        let resource_len = self.resource_head.len() + delimited_len(scope_len);
        let mut out = Vec::with_capacity(delimited_len(resource_len));
        put_delimited_head(&mut out, RESOURCE_LOGS, resource_len);
        out.extend_from_slice(&self.resource_head);
        put_delimited_head(&mut out, SCOPE_LOGS, scope_len);
        out.extend_from_slice(&self.scope_head);
        out.extend_from_slice(records);
        debug_assert_eq!(out.len(), delimited_len(resource_len));
        Bytes::from(out)
    }
}

/// Appends `r` as a `ScopeLogs.log_records` field (tag, length, prost's
/// encoding); returns the bytes written.
pub fn put_record(out: &mut Vec<u8>, r: &LogRecord) -> usize {
    let start = out.len();
    encode_key(LOG_RECORDS, WireType::LengthDelimited, out);
    r.encode_length_delimited(out).expect("a Vec grows as needed");
    out.len() - start
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::resource::{resource, scope};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

    /// The request prost makes of the same parts (for the tests' comparison).
    fn request(resource: Resource, scope: InstrumentationScope, log_records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource),
                scope_logs: vec![ScopeLogs { scope: Some(scope), log_records, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_request_is_what_prost_makes_of_it() {
        let res = resource(&[("service.name".into(), "svc".into())], "id");
        let e = Encoder::new(res.clone(), scope());
        for n in [0usize, 1, 3, 200] {
            let records: Vec<LogRecord> =
                (0..n).map(|i| LogRecord { event_name: "e".repeat(i * 7), time_unix_nano: i as u64, ..Default::default() }).collect();
            let mut fields = Vec::new();
            let written: usize = records.iter().map(|r| put_record(&mut fields, r)).sum();
            assert_eq!(written, fields.len());
            let ours = e.encode(&fields);
            let theirs = request(res.clone(), scope(), records).encode_to_vec();
            assert_eq!(ours.as_ref(), theirs.as_slice(), "{n} records");
        }
    }

    #[test]
    fn a_full_budget_encodes_under_the_limit() {
        let e = Encoder::new(resource(&[("service.name".into(), "x".repeat(1000))], "id"), scope());
        // Records of every size up to about 1 MiB, packed to the budget.
        for size in [10usize, 1000, 100_000, 1 << 20] {
            let mut records = Vec::new();
            let mut n = 0;
            loop {
                let mut one = Vec::new();
                put_record(&mut one, &LogRecord { event_name: "e".repeat(size), ..Default::default() });
                if records.len() + one.len() > e.record_budget {
                    break;
                }
                records.extend_from_slice(&one);
                n += 1;
            }
            let bytes = e.encode(&records);
            assert!(bytes.len() <= MAX_REQUEST_BYTES, "{size}: {} bytes", bytes.len());
            let back = ExportLogsServiceRequest::decode(bytes).unwrap();
            assert_eq!(back.resource_logs[0].scope_logs[0].log_records.len(), n);
        }
    }
}
