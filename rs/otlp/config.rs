//! Exporter settings: the standard OTEL_* environment variables, each
//! overridable by an explicit option, all validated before anything starts
//! (docs/otlp.md#configuration).
//!
//! Precedence, per the OpenTelemetry specification: an explicit option, then
//! the `OTEL_EXPORTER_OTLP_LOGS_*` variable, then `OTEL_EXPORTER_OTLP_*`, then
//! the default. An empty variable counts as unset.

use super::kv_list::parse_kv_list;
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// How the records travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`): unary `LogsService/Export` calls over HTTP/2.
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (`http/protobuf`): POSTs to
    /// `.../v1/logs` over HTTP/1.1.
    HttpProtobuf,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Request body compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        }
    }
}

/// The exporter's options; `None` (or empty) takes the environment's value,
/// then the default. `OtlpConfig::default().resolve()` is the exporter an
/// OpenTelemetry SDK would make from the same environment.
#[derive(Clone, Debug, Default)]
pub struct OtlpConfig {
    /// Where to send. With a path other than `/` it is the logs URL itself
    /// (like `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`); without, a base URL to
    /// which HTTP adds `/v1/logs` (like `OTEL_EXPORTER_OTLP_ENDPOINT`). A
    /// gRPC endpoint may omit the scheme (`host:port`): TLS unless
    /// `insecure`. Default: http://localhost:4318/v1/logs (http/protobuf),
    /// http://localhost:4317 (grpc).
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (the default).
    pub protocol: Option<String>,
    /// Request headers (gRPC metadata), replacing those of the environment.
    pub headers: Option<Vec<(String, String)>>,
    /// `gzip` or `none` (the default).
    pub compression: Option<String>,
    /// Time allowed for one export request (default 10 s).
    pub timeout: Option<Duration>,
    /// PEM file of the CA certificates that verify the server (default: the
    /// system's roots).
    pub certificate: Option<PathBuf>,
    /// PEM files of a client certificate and its private key (mutual TLS).
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// A gRPC endpoint without a scheme is plaintext (default: TLS).
    pub insecure: Option<bool>,
    /// `service.name` (default: OTEL_SERVICE_NAME, else `service.name` of
    /// OTEL_RESOURCE_ATTRIBUTES, else `tracer-ebpf`).
    pub service_name: Option<String>,
    /// Resource attributes added over OTEL_RESOURCE_ATTRIBUTES.
    pub resource_attributes: Vec<(String, String)>,
    /// Most bytes of records held for sending (default 64 MiB, at least
    /// 4 MiB): past it, new records are dropped and counted.
    pub buffer_bytes: Option<usize>,
}

/// TLS for an https endpoint: the roots to trust and an optional identity.
#[derive(Clone, Debug)]
pub struct Tls {
    /// PEM CA certificates (None: the system's roots).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and private key of the client.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub protocol: Protocol,
    /// HTTP: the full URL requests are POSTed to. gRPC: scheme and authority.
    pub endpoint: http::Uri,
    /// Some for https.
    pub tls: Option<Tls>,
    /// Lowercase names, printable-ASCII values.
    pub headers: Vec<(String, String)>,
    pub compression: Compression,
    pub timeout: Duration,
    /// Resource attributes from the configuration, `service.name` included
    /// (host and instance attributes are added by `resource`).
    pub resource: Vec<(String, String)>,
    pub buffer_bytes: usize,
}

impl Settings {
    /// One line for people: "http/protobuf to https://host/v1/logs, gzip".
    pub fn describe(&self) -> String {
        let compression = match self.compression {
            Compression::Gzip => "gzip",
            Compression::None => "uncompressed",
        };
        format!("{} to {}, {compression}", self.protocol.name(), self.endpoint)
    }
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BUFFER_BYTES: usize = 64 << 20;
/// The buffer must hold a batch's worth (see `batch::MAX_REQUEST_BYTES`).
pub const MIN_BUFFER_BYTES: usize = 4 << 20;
pub const MAX_BUFFER_BYTES: usize = 64 << 30;
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_SERVICE_NAME: &str = "tracer-ebpf";

/// Headers the exporter sets itself.
const RESERVED_HEADERS: &[&str] =
    &["content-type", "content-encoding", "content-length", "transfer-encoding", "te", "host", "connection", "user-agent"];

fn bad(setting: impl Into<String>, problem: impl Into<String>) -> Error {
    Error::OtlpConfig { setting: setting.into(), problem: problem.into() }
}

/// A value as shown in a message: quoted, long ones cut.
fn shown(v: &str) -> String {
    let cut: String = v.chars().take(60).collect();
    if cut.len() < v.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Where settings come from besides the explicit options.
pub trait Env {
    /// The variable's value; None if unset or empty. Err(name) if it is not
    /// valid UTF-8.
    fn var(&self, name: &str) -> Result<Option<String>>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Result<Option<String>> {
        match std::env::var(name) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(bad(name, "not valid UTF-8")),
        }
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Result<Option<String>> {
        Ok(self.iter().find(|(k, v)| *k == name && !v.trim().is_empty()).map(|(_, v)| v.to_string()))
    }
}

/// A setting's value and where it came from (the variable or option name).
struct Found {
    from: String,
    value: String,
}

/// The logs-specific variable, else the general one.
fn env_pair(env: &dyn Env, suffix: &str) -> Result<Option<Found>> {
    for name in [format!("OTEL_EXPORTER_OTLP_LOGS_{suffix}"), format!("OTEL_EXPORTER_OTLP_{suffix}")] {
        if let Some(value) = env.var(&name)? {
            return Ok(Some(Found { from: name, value }));
        }
    }
    Ok(None)
}

fn option_or_env(option: &Option<String>, option_name: &str, env: &dyn Env, suffix: &str) -> Result<Option<Found>> {
    match option {
        Some(v) => Ok(Some(Found { from: option_name.to_string(), value: v.clone() })),
        None => env_pair(env, suffix),
    }
}

impl OtlpConfig {
    pub fn new() -> OtlpConfig {
        OtlpConfig::default()
    }

    /// Validates the options against the process environment.
    pub fn resolve(&self) -> Result<Settings> {
        self.resolve_with(&ProcessEnv)
    }

    /// Validates the options against `env`.
    pub fn resolve_with(&self, env: &dyn Env) -> Result<Settings> {
        let protocol = match option_or_env(&self.protocol, "protocol", env, "PROTOCOL")? {
            None => Protocol::HttpProtobuf,
            Some(f) => match f.value.trim() {
                "grpc" => Protocol::Grpc,
                "http/protobuf" => Protocol::HttpProtobuf,
                "http/json" => return Err(bad(f.from, "http/json is not supported: use grpc or http/protobuf")),
                _ => return Err(bad(f.from, format!("{} is not a protocol: use grpc or http/protobuf", shown(&f.value)))),
            },
        };
        let compression = match option_or_env(&self.compression, "compression", env, "COMPRESSION")? {
            None => Compression::None,
            Some(f) => match f.value.trim() {
                "gzip" => Compression::Gzip,
                "none" => Compression::None,
                _ => return Err(bad(f.from, format!("{} is not a compression: use gzip or none", shown(&f.value)))),
            },
        };
        let timeout = match (self.timeout, env_pair(env, "TIMEOUT")?) {
            (Some(t), _) if t.is_zero() || t > MAX_TIMEOUT => {
                return Err(bad("timeout", format!("{t:?} is out of range: from 1 ms to {} s", MAX_TIMEOUT.as_secs())))
            }
            (Some(t), _) => t,
            (None, None) => DEFAULT_TIMEOUT,
            (None, Some(f)) => match f.value.trim().parse::<u64>() {
                Ok(ms) if ms >= 1 && ms <= MAX_TIMEOUT.as_millis() as u64 => Duration::from_millis(ms),
                _ => {
                    return Err(bad(
                        f.from,
                        format!("{} is not a timeout: a whole number of milliseconds, 1 to {}", shown(&f.value), MAX_TIMEOUT.as_millis()),
                    ))
                }
            },
        };
        let insecure = match self.insecure {
            Some(b) => b,
            None => match env_pair(env, "INSECURE")? {
                None => false,
                Some(f) => match f.value.trim().to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(f.from, format!("{} is not true or false", shown(&f.value)))),
                },
            },
        };
        let (endpoint, tls) = self.endpoint(env, protocol, insecure)?;
        let tls = if tls { Some(self.tls(env)?) } else { None };
        let headers = match (&self.headers, env_pair(env, "HEADERS")?) {
            (Some(h), _) => h.clone(),
            (None, None) => Vec::new(),
            (None, Some(f)) => parse_kv_list(&f.value).map_err(|p| bad(&f.from, p))?,
        };
        let headers = check_headers(headers, if self.headers.is_some() { "headers" } else { "OTEL_EXPORTER_OTLP_HEADERS" })?;
        let buffer_bytes = match self.buffer_bytes {
            None => DEFAULT_BUFFER_BYTES,
            Some(b) if (MIN_BUFFER_BYTES..=MAX_BUFFER_BYTES).contains(&b) => b,
            Some(b) => {
                return Err(bad(
                    "buffer_bytes",
                    format!("{b} is out of range: from {} MiB to {} GiB", MIN_BUFFER_BYTES >> 20, MAX_BUFFER_BYTES >> 30),
                ))
            }
        };
        Ok(Settings { protocol, endpoint, tls, headers, compression, timeout, resource: self.resource(env)?, buffer_bytes })
    }

    /// The URL and whether it is TLS.
    fn endpoint(&self, env: &dyn Env, protocol: Protocol, insecure: bool) -> Result<(http::Uri, bool)> {
        // (where from, value, whether a path is to be added for HTTP)
        let (from, value, base) = if let Some(e) = &self.endpoint {
            let full = e.split_once("://").map(|(_, rest)| rest).unwrap_or(e).split_once('/').is_some_and(|(_, p)| !p.is_empty());
            ("endpoint".to_string(), e.clone(), !full)
        } else if let Some(v) = env.var("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")? {
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT".to_string(), v, false)
        } else if let Some(v) = env.var("OTEL_EXPORTER_OTLP_ENDPOINT")? {
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), v, true)
        } else {
            let default = match protocol {
                Protocol::Grpc => "http://localhost:4317",
                Protocol::HttpProtobuf => "http://localhost:4318",
            };
            ("the default endpoint".to_string(), default.to_string(), true)
        };
        let value = value.trim();
        let with_scheme = if value.contains("://") {
            value.to_string()
        } else if protocol == Protocol::Grpc {
            // OTLP/gRPC alone may leave the scheme out: `insecure` decides.
            format!("{}://{value}", if insecure { "http" } else { "https" })
        } else {
            return Err(bad(from, format!("{} is not a URL: give http://host:port or https://host:port", shown(value))));
        };
        let uri: http::Uri =
            with_scheme.parse().map_err(|e| bad(&from, format!("{} is not a URL ({e}): e.g. http://localhost:4318", shown(value))))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad(&from, format!("{}: the scheme must be http or https", shown(value)))),
        };
        let Some(authority) = uri.authority().cloned() else {
            return Err(bad(&from, format!("{} has no host", shown(value))));
        };
        if authority.host().is_empty() {
            return Err(bad(&from, format!("{} has no host", shown(value))));
        }
        if authority.as_str().contains('@') {
            return Err(bad(&from, "credentials in the URL are not supported: use headers (e.g. authorization=...)"));
        }
        let path = uri.path();
        let uri = match protocol {
            Protocol::Grpc => {
                if path != "/" && !path.is_empty() || uri.query().is_some() {
                    return Err(bad(&from, format!("{}: a gRPC endpoint is scheme://host:port, with no path", shown(value))));
                }
                http::Uri::builder().scheme(uri.scheme_str().unwrap_or("http")).authority(authority).path_and_query("/").build()
            }
            Protocol::HttpProtobuf if base => {
                let p = format!("{}/v1/logs{}", path.trim_end_matches('/'), uri.query().map(|q| format!("?{q}")).unwrap_or_default());
                http::Uri::builder().scheme(uri.scheme_str().unwrap_or("http")).authority(authority).path_and_query(p).build()
            }
            Protocol::HttpProtobuf => Ok(uri),
        }
        .map_err(|e| bad(&from, format!("{}: {e}", shown(value))))?;
        Ok((uri, tls))
    }

    fn tls(&self, env: &dyn Env) -> Result<Tls> {
        let path = |option: &Option<PathBuf>, name: &str, suffix: &str| -> Result<Option<(String, PathBuf)>> {
            Ok(match option {
                Some(p) => Some((name.to_string(), p.clone())),
                None => env_pair(env, suffix)?.map(|f| (f.from, PathBuf::from(f.value))),
            })
        };
        let ca_pem = match path(&self.certificate, "certificate", "CERTIFICATE")? {
            None => None,
            Some((from, p)) => Some(read_pem(&from, &p, PemKind::Certificates)?),
        };
        let cert = path(&self.client_certificate, "client_certificate", "CLIENT_CERTIFICATE")?;
        let key = path(&self.client_key, "client_key", "CLIENT_KEY")?;
        let identity = match (cert, key) {
            (None, None) => None,
            (Some((from, p)), Some((key_from, k))) => {
                Some((read_pem(&from, &p, PemKind::Certificates)?, read_pem(&key_from, &k, PemKind::PrivateKey)?))
            }
            (Some((from, _)), None) => {
                return Err(bad(from, "a client certificate needs its key too (client_key / OTEL_EXPORTER_OTLP_CLIENT_KEY)"))
            }
            (None, Some((from, _))) => {
                return Err(bad(
                    from,
                    "a client key needs its certificate too (client_certificate / OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE)",
                ))
            }
        };
        Ok(Tls { ca_pem, identity })
    }

    fn resource(&self, env: &dyn Env) -> Result<Vec<(String, String)>> {
        let mut attrs: Vec<(String, String)> = match env.var("OTEL_RESOURCE_ATTRIBUTES")? {
            None => Vec::new(),
            Some(v) => parse_kv_list(&v).map_err(|p| bad("OTEL_RESOURCE_ATTRIBUTES", p))?,
        };
        for (k, v) in &self.resource_attributes {
            if k.trim().is_empty() {
                return Err(bad("resource_attributes", "an attribute name is empty"));
            }
            set(&mut attrs, k.trim(), v);
        }
        let service = match (&self.service_name, env.var("OTEL_SERVICE_NAME")?) {
            (Some(s), _) if s.trim().is_empty() => return Err(bad("service_name", "empty")),
            (Some(s), _) => Some(s.clone()),
            (None, s) => s,
        };
        if let Some(s) = service {
            set(&mut attrs, "service.name", &s);
        } else if !attrs.iter().any(|(k, _)| k == "service.name") {
            set(&mut attrs, "service.name", DEFAULT_SERVICE_NAME);
        }
        Ok(attrs)
    }
}

/// Sets `key` in `attrs`, replacing an earlier value.
fn set(attrs: &mut Vec<(String, String)>, key: &str, value: &str) {
    match attrs.iter_mut().find(|(k, _)| k == key) {
        Some(kv) => kv.1 = value.to_string(),
        None => attrs.push((key.to_string(), value.to_string())),
    }
}

fn check_headers(headers: Vec<(String, String)>, from: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (k, v) in headers {
        let name = k.trim().to_ascii_lowercase();
        if name.is_empty() {
            return Err(bad(from, "a header name is empty"));
        }
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(bad(from, format!("{} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)", shown(&k))));
        }
        if RESERVED_HEADERS.contains(&name.as_str()) || name.starts_with("grpc-") || name.starts_with(':') {
            return Err(bad(from, format!("header {name:?} is set by the exporter itself")));
        }
        if name.ends_with("-bin") {
            return Err(bad(from, format!("header {name:?}: binary (-bin) gRPC metadata is not supported")));
        }
        let value = v.as_str();
        if value.bytes().any(|b| !(b == b'\t' || (0x20..0x7f).contains(&b))) || http::HeaderValue::from_str(value).is_err() {
            return Err(bad(
                from,
                format!("the value of header {name:?} must be printable ASCII (percent-encode other bytes in the variable)"),
            ));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(bad(from, format!("header {name:?} is given twice")));
        }
        out.push((name, value.to_string()));
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PemKind {
    Certificates,
    PrivateKey,
}

/// Reads a PEM file and checks that it holds what it should.
fn read_pem(from: &str, path: &std::path::Path, kind: PemKind) -> Result<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let shown_path = shown(&path.to_string_lossy());
    let data = std::fs::read(path).map_err(|e| bad(from, format!("cannot read {shown_path}: {e}")))?;
    let ok = match kind {
        PemKind::Certificates => {
            let certs: std::result::Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&data).collect();
            matches!(certs, Ok(c) if !c.is_empty())
        }
        PemKind::PrivateKey => PrivateKeyDer::from_pem_slice(&data).is_ok(),
    };
    if !ok {
        let what = if kind == PemKind::Certificates { "PEM certificates" } else { "a PEM private key" };
        return Err(bad(from, format!("{shown_path} holds no {what}")));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve<const N: usize>(c: &OtlpConfig, env: [(&str, &str); N]) -> Result<Settings> {
        c.resolve_with(&env)
    }

    fn problem(r: Result<Settings>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(s) => panic!("accepted: {s:?}"),
        }
    }

    #[test]
    fn defaults_follow_the_specification() {
        let s = resolve(&OtlpConfig::new(), []).unwrap();
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.endpoint.to_string(), "http://localhost:4318/v1/logs");
        assert!(s.tls.is_none());
        assert_eq!(s.compression, Compression::None);
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(s.resource, vec![("service.name".to_string(), "tracer-ebpf".to_string())]);
        let g = resolve(&OtlpConfig { protocol: Some("grpc".into()), ..Default::default() }, []).unwrap();
        assert_eq!(g.endpoint.to_string(), "http://localhost:4317/");
    }

    #[test]
    fn logs_variables_win_over_general_ones_and_options_over_both() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318/base/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "Api-Key=s%20cret , b = 2"),
        ];
        let s = resolve(&OtlpConfig::new(), env).unwrap();
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.endpoint.to_string(), "https://collector:4318/base/v1/logs");
        assert!(s.tls.is_some());
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!(s.compression, Compression::Gzip);
        assert_eq!(s.headers, vec![("api-key".into(), "s cret".into()), ("b".into(), "2".into())]);

        let c = OtlpConfig {
            endpoint: Some("http://other:9999".into()),
            protocol: Some("grpc".into()),
            compression: Some("none".into()),
            headers: Some(vec![("x".into(), "y".into())]),
            timeout: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let s = resolve(&c, env).unwrap();
        assert_eq!((s.protocol, s.endpoint.to_string(), s.compression), (Protocol::Grpc, "http://other:9999/".into(), Compression::None));
        assert_eq!(s.headers, vec![("x".into(), "y".into())]);
        assert_eq!(s.timeout, Duration::from_secs(2));
    }

    #[test]
    fn endpoint_paths() {
        let http = |env: [(&str, &str); 1]| resolve(&OtlpConfig::new(), env).unwrap().endpoint.to_string();
        assert_eq!(http([("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://h:1/custom")]), "http://h:1/custom");
        assert_eq!(http([("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:1")]), "http://h:1/v1/logs");
        assert_eq!(http([("OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:1/")]), "http://h:1/v1/logs");
        let opt = |e: &str| resolve(&OtlpConfig { endpoint: Some(e.into()), ..Default::default() }, []).unwrap().endpoint.to_string();
        assert_eq!(opt("http://h:1"), "http://h:1/v1/logs");
        assert_eq!(opt("http://h:1/v1/logs"), "http://h:1/v1/logs");
        assert_eq!(opt("http://h:1/x/y"), "http://h:1/x/y");
        let grpc = |e: &str, insecure: Option<bool>| {
            let c = OtlpConfig { endpoint: Some(e.into()), protocol: Some("grpc".into()), insecure, ..Default::default() };
            resolve(&c, []).map(|s| (s.endpoint.to_string(), s.tls.is_some()))
        };
        assert_eq!(grpc("collector:4317", None).unwrap(), ("https://collector:4317/".into(), true));
        assert_eq!(grpc("collector:4317", Some(true)).unwrap(), ("http://collector:4317/".into(), false));
        assert!(grpc("http://c:4317/v1/logs", None).unwrap_err().to_string().contains("no path"));
    }

    #[test]
    fn bad_values_are_errors_naming_the_setting() {
        let e = problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_PROTOCOL", "grcp")]));
        assert_eq!(e, "invalid OTLP setting OTEL_EXPORTER_OTLP_PROTOCOL: \"grcp\" is not a protocol: use grpc or http/protobuf");
        assert!(problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json")])).contains("not supported"));
        let e = problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_HEADERS", "a=1,novalue")]));
        assert!(e.starts_with("invalid OTLP setting OTEL_EXPORTER_OTLP_HEADERS: "), "{e}");
        assert!(problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_HEADERS", "a=%zz")])).contains("percent"));
        assert!(problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_HEADERS", "a b=1")])).contains("header name"));
        assert!(problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_HEADERS", "content-type=x")])).contains("exporter itself"));
        assert!(problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_HEADERS", "a=x%0Ay")])).contains("printable"));
        assert!(problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")])).contains("gzip or none"));
        assert!(problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")])).contains("milliseconds"));
        assert!(problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_TIMEOUT", "0")])).contains("milliseconds"));
        assert!(problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318")])).contains("not a URL"));
        assert!(problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://h")])).contains("scheme"));
        assert!(problem(resolve(&OtlpConfig::new(), [("OTEL_EXPORTER_OTLP_INSECURE", "yes")])).contains("true or false"));
        assert!(problem(resolve(&OtlpConfig::new(), [("OTEL_RESOURCE_ATTRIBUTES", "=x")])).contains("empty"));
        let e = problem(resolve(
            &OtlpConfig::new(),
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "https://h"), ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")],
        ));
        assert!(e.contains("OTEL_EXPORTER_OTLP_CERTIFICATE") && e.contains("cannot read"), "{e}");
        let c = OtlpConfig { buffer_bytes: Some(1000), ..Default::default() };
        assert!(problem(resolve(&c, [])).contains("buffer_bytes"));
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("otlp-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let c = OtlpConfig { endpoint: Some("https://h:1".into()), certificate: Some(f.clone()), ..Default::default() };
        assert!(problem(resolve(&c, [])).contains("holds no PEM certificates"));
        // Not used (and so not read) for a plaintext endpoint.
        let c = OtlpConfig { endpoint: Some("http://h:1".into()), certificate: Some(f), ..Default::default() };
        assert!(resolve(&c, []).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn service_name_precedence() {
        let name = |c: &OtlpConfig, env: [(&str, &str); 2]| {
            let r = resolve(c, env).unwrap().resource;
            r.into_iter().find(|(k, _)| k == "service.name").unwrap().1
        };
        let env = [("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,team=a%2Cb"), ("OTEL_SERVICE_NAME", "")];
        assert_eq!(name(&OtlpConfig::new(), env), "from-attrs");
        let env2 = [("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"), ("OTEL_SERVICE_NAME", "svc")];
        assert_eq!(name(&OtlpConfig::new(), env2), "svc");
        assert_eq!(name(&OtlpConfig { service_name: Some("opt".into()), ..Default::default() }, env2), "opt");
        let r = resolve(&OtlpConfig::new(), env).unwrap().resource;
        assert!(r.contains(&("team".to_string(), "a,b".to_string())));
    }
}
