//! OTLP/HTTP with binary protobuf: a POST of the encoded request (gzipped
//! when configured) over HTTP/1.1 (hyper, rustls for https).
//!
//! Retried, per the OTLP specification: 429, 502, 503, 504 (after the
//! `Retry-After` delay when given) and failures of the connection itself.
//! Any other answer but 2xx is a permanent failure; its google.rpc.Status
//! body, when there is one, says why.

use super::config::{Compression, Settings};
use super::retry::parse_retry_after;
use super::transport::{user_agent, Outcome};
use crate::error::{Error, Result};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;
use std::io::Write;
use std::time::{Duration, SystemTime};

/// Most bytes of an answer read (a success is a few bytes; an error a
/// message).
const MAX_ANSWER: usize = 64 << 10;

type HyperClient = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct Client {
    client: HyperClient,
    uri: http::Uri,
    headers: HeaderMap,
    gzip: bool,
    timeout: Duration,
}

impl Client {
    pub fn new(s: &Settings) -> Result<Client> {
        let bad = |problem: String| Error::OtlpConfig { setting: "headers".into(), problem };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(s.timeout));
        http.set_nodelay(true);
        let tls = super::tls::rustls_config(s.tls.as_ref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
        let mut headers = HeaderMap::new();
        for (k, v) in &s.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(format!("{k:?}: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| bad(format!("{k:?}: {e}")))?;
            headers.insert(name, value);
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        headers.insert(USER_AGENT, HeaderValue::from_str(&user_agent()).map_err(|e| bad(e.to_string()))?);
        let gzip = s.compression == Compression::Gzip;
        if gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Ok(Client { client, uri: s.endpoint.clone(), headers, gzip, timeout: s.timeout })
    }

    /// The body of every attempt: the request, gzipped if configured.
    pub fn prepare(&self, request: Bytes) -> Bytes {
        if !self.gzip {
            return request;
        }
        let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(request.len() / 4), flate2::Compression::fast());
        // Writing into a Vec cannot fail.
        let _ = e.write_all(&request);
        Bytes::from(e.finish().unwrap_or_default())
    }

    pub async fn send(&mut self, body: Bytes) -> Outcome {
        let mut req = Request::post(self.uri.clone()).body(Full::new(body)).expect("a POST of a checked URI");
        *req.headers_mut() = self.headers.clone();
        let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => return Outcome::Retry { after: None, why: format!("no answer within {:?}", self.timeout) },
            Ok(Err(e)) => return Outcome::Retry { after: None, why: format!("HTTP connection: {}", chain(&e)) },
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let retry_after =
            resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, SystemTime::now()));
        let answer = match tokio::time::timeout(self.timeout, Limited::new(resp.into_body(), MAX_ANSWER).collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        };
        classify(status, retry_after, &answer)
    }
}

/// What an answer means.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, answer: &[u8]) -> Outcome {
    if status.is_success() {
        return match ExportLogsServiceResponse::decode(answer) {
            Ok(r) => Outcome::from_response(r),
            Err(_) => Outcome::Accepted { rejected: 0, message: String::new() },
        };
    }
    let why = format!("HTTP {}{}", status, detail(answer));
    match status.as_u16() {
        429 | 502 | 503 | 504 => Outcome::Retry { after: retry_after, why },
        _ => Outcome::Failed { why },
    }
}

/// ": <message>" from an error answer: a google.rpc.Status, or short text.
fn detail(answer: &[u8]) -> String {
    if answer.is_empty() {
        return String::new();
    }
    if let Ok(s) = tonic_types::Status::decode(answer) {
        if !s.message.is_empty() {
            return format!(": {}", s.message);
        }
    }
    match std::str::from_utf8(answer) {
        Ok(t) if !t.trim().is_empty() => format!(": {}", t.trim().chars().take(200).collect::<String>()),
        _ => String::new(),
    }
}

/// An error with its causes ("connect: Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;

    #[test]
    fn answers() {
        let ok = ExportLogsServiceResponse { partial_success: None }.encode_to_vec();
        assert_eq!(classify(StatusCode::OK, None, &ok), Outcome::Accepted { rejected: 0, message: String::new() });
        assert_eq!(classify(StatusCode::OK, None, b""), Outcome::Accepted { rejected: 0, message: String::new() });
        let partial = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess { rejected_log_records: 2, error_message: "too old".into() }),
        }
        .encode_to_vec();
        assert_eq!(classify(StatusCode::OK, None, &partial), Outcome::Accepted { rejected: 2, message: "too old".into() });
        let d = Some(Duration::from_secs(1));
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, d, b""),
            Outcome::Retry { after: d, why: "HTTP 503 Service Unavailable".into() }
        );
        assert!(matches!(classify(StatusCode::TOO_MANY_REQUESTS, None, b""), Outcome::Retry { .. }));
        let status = tonic_types::Status { code: 3, message: "bad body".into(), details: vec![] }.encode_to_vec();
        assert_eq!(classify(StatusCode::BAD_REQUEST, None, &status), Outcome::Failed { why: "HTTP 400 Bad Request: bad body".into() });
        assert!(matches!(classify(StatusCode::INTERNAL_SERVER_ERROR, None, b"oops"), Outcome::Failed { .. }));
    }

    #[test]
    fn gzip_bodies_decompress_to_the_request() {
        let s = crate::otlp::config::OtlpConfig { compression: Some("gzip".into()), ..Default::default() }
            .resolve_with(&[("", ""); 0])
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let c = rt.block_on(async { Client::new(&s) }).unwrap();
        let body = c.prepare(Bytes::from_static(b"hello hello hello"));
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).unwrap();
        assert_eq!(out, b"hello hello hello");
    }
}
