//! The resource every batch carries: the configured attributes
//! (`service.name` among them) plus what identifies this machine and this
//! exporter, unless configured otherwise.

use super::mapping::{kv, NS};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;

/// `host.name`: the kernel's node name.
fn host_name() -> Option<String> {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = u.nodename.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8(bytes).ok().filter(|s| !s.is_empty())
}

/// `host.id`: the machine id (systemd's /etc/machine-id, else D-Bus's), as
/// the semantic conventions ask for on Linux.
fn host_id() -> Option<String> {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty() && s.len() <= 64)
}

/// A random (version 4) UUID: this exporter's identity, the source its
/// `tracer_ebpf.seq` numbers count in.
pub fn new_source_id() -> String {
    let mut b = [0u8; 16];
    // SAFETY: writes at most 16 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 16 {
        // No entropy source: time and pid still tell exporters apart.
        let t = crate::clock::epoch_ns().to_le_bytes();
        b[..8].copy_from_slice(&t);
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The resource: `configured` (resolved from OTEL_RESOURCE_ATTRIBUTES,
/// OTEL_SERVICE_NAME and the options), then `host.name`, `host.id` and
/// `service.instance.id` where not configured, then `tracer_ebpf.source`.
pub fn resource(configured: &[(String, String)], source: &str) -> Resource {
    let mut attrs: Vec<_> = configured.iter().map(|(k, v)| kv(k.clone(), Value::StringValue(v.clone()))).collect();
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            if !configured.iter().any(|(c, _)| c == k) {
                attrs.push(kv(k, Value::StringValue(v)));
            }
        }
    };
    add("host.name", host_name());
    add("host.id", host_id());
    add("service.instance.id", Some(source.to_string()));
    attrs.push(kv(format!("{NS}source"), Value::StringValue(source.to_string())));
    Resource { attributes: attrs, ..Default::default() }
}

/// The instrumentation scope of every record: this library.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope { name: "tracer-ebpf".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ids_are_uuid4_and_differ() {
        let (a, b) = (new_source_id(), new_source_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn configured_attributes_win() {
        let r = resource(&[("host.name".into(), "given".into()), ("service.name".into(), "s".into())], "id");
        let get = |k: &str| r.attributes.iter().filter(|a| a.key == k).count();
        assert_eq!(get("host.name"), 1);
        assert_eq!(get("service.instance.id"), 1);
        assert_eq!(get("tracer_ebpf.source"), 1);
        assert_eq!(r.attributes[0].value.as_ref().unwrap().value, Some(Value::StringValue("given".into())));
    }
}
