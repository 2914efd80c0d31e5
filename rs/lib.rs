//! tracer-ebpf: an eBPF tracer with 2-layer buffering.
//!
//! Small fixed records travel through a BPF ring buffer; variable payloads
//! (write contents, paths, argv) go to a payload area of chunks shared by
//! the CPUs, which this library reads through mmap. Nothing is lost without a counter: see
//! [`Stats`] and the per-field flags of [`types::Var`].
//!
//! ```no_run
//! use std::time::Duration;
//! let mut t = tracer_ebpf::Tracer::new(tracer_ebpf::Config::new().events(["syscalls/sys_enter_write"]))?;
//! for ev in t.poll(1000, Duration::from_millis(100))? {
//!     println!("{}", ev.to_json());
//! }
//! # Ok::<(), tracer_ebpf::Error>(())
//! ```

/// The libbpf-cargo skeleton of c/bootstrap.bpf.c (types of its maps).
#[allow(clippy::all, unsafe_op_in_unsafe_fn)]
pub mod bpf {
    include!(concat!(env!("OUT_DIR"), "/bootstrap.skel.rs"));
}

// What the data path is made of, in order: the payload area and the reader
// (kernel buffers to the queue), the decoder (records to events), the sinks
// (JSON) and the front ends (capi, python). Modules used only inside the
// crate are private; their public items are re-exported below.
mod byte_blocks;
pub mod cgroup;
mod clock;
pub mod columnar;
mod config;
mod cpu_yield;
pub mod dataset;
pub mod decode;
mod error;
pub mod event;
mod event_chunks;
mod fork_guard;
mod iter_output;
pub mod json;
mod loader;
pub mod memory;
#[cfg(feature = "otlp")]
pub mod otlp;
mod output_readers;
pub mod payload_area;
mod queue;
mod reader;
mod record_decoder;
mod release;
mod shared_syscalls;
mod sizing;
mod skeleton;
mod snapshot;
mod stats;
mod tracefs;
pub mod tracepoint_format;
mod tracer;
pub mod types;
mod value;

#[cfg(feature = "capi")]
mod capi;
#[cfg(feature = "python")]
mod python;

pub use config::{glob_match, limit, suggestions_among, Config, ResolvedConfig, LIMITS};
pub use error::{Error, Result};
pub use event::{Comm, Event};
pub use output_readers::output_readers;
pub use sizing::MemoryBudget;
pub use stats::{Stats, UserCounters};
pub use tracer::Tracer;
pub use types::{EventType, Payload};
