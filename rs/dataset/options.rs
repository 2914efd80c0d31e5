//! The options of a Parquet dataset, their defaults and ranges (the ranges
//! are in `config::LIMITS`, shared with Python and the command line).

use crate::config::limit;
use crate::error::{Error, Result};
use std::time::Duration;

/// How a dataset is written. Every limit is explicit; `Default` gives the
/// documented defaults (docs/parquet.md).
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetOptions {
    /// The `host=` partition value. None: this machine's host name.
    pub host: Option<String>,
    /// A file is closed (and the next one started) once it holds about
    /// this many bytes (default 128 MiB).
    pub max_file_bytes: u64,
    /// A file is closed once it has been open this long (default 300 s),
    /// so readers see recent events within that time.
    pub max_file_age: Duration,
    /// A row group is written out once its encoded size reaches this
    /// (default 32 MiB; at most `max_file_bytes`).
    pub row_group_bytes: u64,
    /// Most bytes held in memory by all open files' unwritten row groups
    /// together; past it the largest is written out (default 256 MiB).
    pub max_buffered_bytes: u64,
    /// Most files open at once (one per event type and hour being
    /// written); past it the one written to longest ago is closed
    /// (default 64).
    pub max_open_files: u64,
    /// zstd compression level, 1 (fastest, the default) to 22.
    pub zstd_level: i32,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            host: None,
            max_file_bytes: 128 << 20,
            max_file_age: Duration::from_secs(300),
            row_group_bytes: 32 << 20,
            max_buffered_bytes: 256 << 20,
            max_open_files: 64,
            zstd_level: 1,
        }
    }
}

impl DatasetOptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    pub fn max_file_bytes(mut self, n: u64) -> Self {
        self.max_file_bytes = n;
        self
    }

    pub fn max_file_age(mut self, d: Duration) -> Self {
        self.max_file_age = d;
        self
    }

    /// Checks every option against its range (and the host name).
    pub fn validate(&self) -> Result<()> {
        in_range("max_file_bytes", self.max_file_bytes)?;
        in_range("row_group_bytes", self.row_group_bytes)?;
        in_range("max_buffered_bytes", self.max_buffered_bytes)?;
        in_range("max_open_files", self.max_open_files)?;
        let (lo, hi) = limit("max_file_seconds");
        let age = self.max_file_age;
        if age < Duration::from_secs(lo) || age > Duration::from_secs(hi) {
            return Err(Error::Config(format!("max_file_seconds must be from {lo} to {hi}, got {}", age.as_secs_f64())));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(Error::Config(format!("zstd_level must be from 1 to 22, got {}", self.zstd_level)));
        }
        if let Some(h) = &self.host {
            super::layout::check_host(h)?;
        }
        Ok(())
    }
}

fn in_range(name: &str, v: u64) -> Result<()> {
    let (lo, hi) = limit(name);
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(Error::Config(format!("{name} must be from {lo} to {hi}, got {v}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_say_which() {
        DatasetOptions::default().validate().unwrap();
        let e = DatasetOptions::new().max_file_bytes(0).validate().unwrap_err().to_string();
        assert!(e.contains("max_file_bytes must be from"), "{e}");
        let e = DatasetOptions::new().max_file_age(Duration::ZERO).validate().unwrap_err().to_string();
        assert!(e.contains("max_file_seconds"), "{e}");
        let e = DatasetOptions::new().host("a/b").validate().unwrap_err().to_string();
        assert!(e.contains("'/' is not allowed"), "{e}");
    }
}
