//! TLS for https endpoints, with rustls (ring): the system's roots or the
//! configured CA, and an optional client identity. Both transports trust
//! the same roots: the configured CA replaces the system's.

use super::config::Tls;
use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

fn bad(problem: String) -> Error {
    Error::OtlpConfig { setting: "certificate".into(), problem }
}

/// The roots: the configured CA's certificates, else the system's.
fn roots(tls: &Tls) -> Result<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    match &tls.ca_pem {
        Some(pem) => {
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| bad(format!("bad PEM certificate: {e}")))?;
                store.add(c).map_err(|e| bad(format!("unusable CA certificate: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (_added, _ignored) = store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(bad("no system CA certificates were found (install ca-certificates, or give one with \
                     certificate / OTEL_EXPORTER_OTLP_CERTIFICATE)"
                    .into()));
            }
        }
    }
    Ok(store)
}

/// A rustls client configuration for HTTP/1.1 (without TLS settings: one
/// that is never used, for a client that only speaks plain http).
pub fn rustls_config(tls: Option<&Tls>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS set-up: {e}")))?;
    let Some(tls) = tls else {
        return Ok(builder.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth());
    };
    let builder = builder.with_root_certificates(roots(tls)?);
    let config = match &tls.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain: std::result::Result<Vec<_>, _> = CertificateDer::pem_slice_iter(cert).collect();
            let chain = chain.map_err(|e| bad(format!("bad client certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad(format!("bad client key: {e}")))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| bad(format!("client certificate and key: {e}")))?
        }
    };
    // ALPN is hyper-rustls's to set (it refuses a configuration that has it).
    Ok(config)
}

/// The same for tonic (gRPC over HTTP/2).
pub fn tonic_config(tls: &Tls) -> tonic::transport::ClientTlsConfig {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut c = ClientTlsConfig::new();
    c = match &tls.ca_pem {
        Some(pem) => c.ca_certificate(Certificate::from_pem(pem)),
        None => c.with_native_roots(),
    };
    if let Some((cert, key)) = &tls.identity {
        c = c.identity(Identity::from_pem(cert, key));
    }
    c
}
