//! Parquet datasets: events written as zstd-compressed Parquet files,
//! partitioned so that the directories of many hosts merge into one
//! dataset (docs/parquet.md):
//!
//! ```text
//! DIR/host=<host>/date=YYYY-MM-DD/hour=HH/event=<category>.<name>/part-<run>-<seq>.parquet
//! ```
//!
//! Each file holds one event type (its own columns: the header, then
//! `payload.<field>`), is written under a hidden temporary name and renamed
//! once complete, and records the tracer's version, host and counters in
//! its key-value metadata. Files are rotated by size, age and hour.
//!
//! ```no_run
//! use std::time::Duration;
//! use tracer_ebpf::dataset::{Dataset, DatasetOptions};
//! let mut t = tracer_ebpf::Tracer::new(tracer_ebpf::Config::new().events(["syscalls/sys_enter_write"]))?;
//! let mut ds = Dataset::create("/var/tmp/trace", DatasetOptions::new())?;
//! for _ in 0..100 {
//!     ds.write(&t.poll(65536, Duration::from_millis(100))?)?;
//! }
//! t.close();
//! let summary = ds.close(Some(&t.stats()?))?;
//! eprintln!("{} files, {} rows, {} bytes", summary.files.len(), summary.rows, summary.bytes);
//! # Ok::<(), tracer_ebpf::Error>(())
//! ```

mod file;
mod fs;
mod layout;
mod options;
mod side;
#[cfg(test)]
mod tests;
mod writer;

pub use file::FileDone;
pub use layout::{check_host, event_partition, machine_host, HOST_MAX};
pub use options::DatasetOptions;
pub use writer::{Dataset, DatasetSummary};
