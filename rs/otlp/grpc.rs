//! OTLP/gRPC: unary `opentelemetry.proto.collector.logs.v1.LogsService/
//! Export` calls through tonic, carrying the request already encoded (a
//! pass-through codec: nothing is encoded again on a retry).
//!
//! Retried, per the OTLP specification: CANCELLED, DEADLINE_EXCEEDED,
//! ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS, RESOURCE_EXHAUSTED when
//! the server says when to come back (RetryInfo; without it the request is
//! refused for good: e.g. a message larger than the server takes), and
//! failures of the connection itself. The server's RetryInfo delay is
//! honoured. Everything else is a permanent failure.

use super::config::{Compression, Settings};
use super::transport::{user_agent, Outcome};
use crate::error::{Error, Result};
use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

pub struct Client {
    grpc: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
    timeout: std::time::Duration,
}

impl Client {
    pub fn new(s: &Settings) -> Result<Client> {
        let bad = |problem: String| Error::OtlpConfig { setting: "endpoint".into(), problem };
        let mut ep = Endpoint::from(s.endpoint.clone())
            .connect_timeout(s.timeout)
            .timeout(s.timeout)
            .user_agent(user_agent())
            .map_err(|e| bad(e.to_string()))?;
        if let Some(tls) = &s.tls {
            ep = ep.tls_config(super::tls::tonic_config(tls)).map_err(|e| bad(format!("TLS set-up: {e}")))?;
        }
        let mut grpc = tonic::client::Grpc::new(ep.connect_lazy());
        if s.compression == Compression::Gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        grpc = grpc.accept_compressed(CompressionEncoding::Gzip);
        let mut metadata = MetadataMap::new();
        for (k, v) in &s.headers {
            // Both were checked by the configuration.
            let key = MetadataKey::from_bytes(k.as_bytes()).map_err(|e| bad(format!("header {k:?}: {e}")))?;
            let value = MetadataValue::try_from(v.as_str()).map_err(|e| bad(format!("header {k:?}: {e}")))?;
            metadata.insert(key, value);
        }
        Ok(Client { grpc, metadata, timeout: s.timeout })
    }

    pub async fn send(&mut self, body: Bytes) -> Outcome {
        if let Err(e) = self.grpc.ready().await {
            return Outcome::Retry { after: None, why: format!("gRPC connection: {e}") };
        }
        let mut req = tonic::Request::new(body);
        *req.metadata_mut() = self.metadata.clone();
        req.set_timeout(self.timeout);
        match self.grpc.unary(req, PathAndQuery::from_static(PATH), RawCodec).await {
            Ok(resp) => match ExportLogsServiceResponse::decode(resp.into_inner()) {
                Ok(r) => Outcome::from_response(r),
                // Taken (status OK) with an answer that does not decode:
                // nothing says a record was refused.
                Err(_) => Outcome::Accepted { rejected: 0, message: String::new() },
            },
            Err(status) => classify(&status),
        }
    }
}

/// What a failed call's status means.
pub fn classify(status: &Status) -> Outcome {
    let why = format!("gRPC {:?}: {}", status.code(), status.message());
    // A status made on this side (no connection, a broken one): the request
    // did not get an answer.
    let local = std::error::Error::source(status).is_some();
    let asked = status.get_details_retry_info().and_then(|r| r.retry_delay);
    match status.code() {
        Code::Cancelled | Code::DeadlineExceeded | Code::Aborted | Code::OutOfRange | Code::Unavailable | Code::DataLoss => {
            Outcome::Retry { after: asked, why }
        }
        Code::ResourceExhausted if asked.is_some() => Outcome::Retry { after: asked, why },
        _ if local => Outcome::Retry { after: None, why },
        _ => Outcome::Failed { why },
    }
}

/// Sends the request bytes as they are; returns the answer's bytes.
#[derive(Clone, Copy)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> std::result::Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> std::result::Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn which_codes_are_retried() {
        let retry = |s: Status| matches!(classify(&s), Outcome::Retry { .. });
        assert!(retry(Status::unavailable("down")));
        assert!(retry(Status::deadline_exceeded("slow")));
        assert!(!retry(Status::invalid_argument("bad")));
        assert!(!retry(Status::unauthenticated("who")));
        assert!(!retry(Status::resource_exhausted("message too large")));
        let with_delay =
            Status::with_error_details(Code::ResourceExhausted, "later", ErrorDetails::with_retry_info(Some(Duration::from_secs(3))));
        assert_eq!(
            classify(&with_delay),
            Outcome::Retry { after: Some(Duration::from_secs(3)), why: "gRPC ResourceExhausted: later".into() }
        );
    }
}
