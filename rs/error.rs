//! What can go wrong when starting or running a tracer, each with what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "insufficient privileges to trace: {what}. Run as root, or grant the capabilities \
         CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (e.g. `sudo setcap cap_bpf,cap_perfmon,cap_sys_admin+ep <binary>`); \
         CAP_SYS_ADMIN alone also works on kernels before 5.8"
    )]
    Permission { what: String },

    #[error(
        "kernel BTF at {path} {problem}: tracer-ebpf needs a kernel built with CONFIG_DEBUG_INFO_BTF=y \
         (most distribution kernels since 2020 have it)"
    )]
    BtfMissing { path: PathBuf, problem: String },

    #[error(
        "tracefs is not mounted and could not be mounted ({reason}). Mount it as root: \
         `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    TracefsMissing { reason: String },

    #[error("unknown event {:?}{}", short(.name), suggest(.suggestions))]
    UnknownEvent { name: String, suggestions: Vec<String> },

    #[error("tracepoint {name} does not exist on this kernel ({release}); {hint}")]
    TracepointMissing { name: String, release: String, hint: String },

    #[error("invalid configuration: {0}")]
    Config(String),

    /// A cgroup filter path that cannot be used (see `cgroup::CgroupFilterError`).
    #[error("invalid cgroup filter: {0}")]
    Cgroup(#[from] crate::cgroup::CgroupFilterError),

    #[error("I/O operation on a closed tracer")]
    Closed,

    /// A bad OTLP exporter setting (docs/otlp.md): from an environment
    /// variable (`setting` is its name) or an explicit option.
    #[error("invalid OTLP setting {setting}: {problem}")]
    OtlpConfig { setting: String, problem: String },

    #[error("export to a closed OTLP exporter")]
    ExporterClosed,

    #[error(
        "the kernel could not allocate the tracer's buffers ({asked}){limit}: lower them with \
         ring_bytes / payload_bytes_per_cpu (--ring-bytes / --payload-bytes-per-cpu), or raise the memory limit"
    )]
    OutOfMemory {
        /// What was asked, in words ("ring 8 MiB + payload area 2 x 23.5 MiB").
        asked: String,
        /// "; the cgroup limit is ..." when one applies, else empty.
        limit: String,
    },

    #[error("the kernel rejected the BPF program {program}: {message}\n{log}")]
    Verifier { program: String, message: String, log: String },

    #[error(
        "this tracer belongs to process {owner}; in a forked child it is inert (it captures nothing and \
         closing it there leaves the parent's tracer alone): create a new tracer in the child"
    )]
    Forked { owner: i32 },

    #[error("{context}: {source}")]
    Bpf {
        context: String,
        #[source]
        source: libbpf_rs::Error,
    },

    #[error("{context}: {source}")]
    Arrow {
        context: String,
        #[source]
        source: arrow_schema::ArrowError,
    },

    #[error("{context}: {source}")]
    Parquet {
        context: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A name as shown in a message: long ones are cut.
fn short(name: &str) -> String {
    if name.chars().count() <= 80 {
        name.to_string()
    } else {
        format!("{}…", name.chars().take(80).collect::<String>())
    }
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() {
        "; see list_events() or `tracer-example --list`".to_string()
    } else {
        format!("; did you mean {}?", s.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", "))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }
}
