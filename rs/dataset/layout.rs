//! Where a dataset's files go and what they are called (docs/parquet.md):
//!
//! ```text
//! DIR/host=<host>/date=YYYY-MM-DD/hour=HH/event=<category>.<name>/part-<run>-<seq>.parquet
//! DIR/host=<host>/_tracer_ebpf-<run>.json
//! ```
//!
//! Date and hour are UTC, from the event's timestamp. A file being written
//! is `.part-<run>-<seq>.parquet.tmp` beside its final name: a leading dot
//! and no `.parquet` ending hide it from every reader (Spark skips names
//! starting with `.` or `_`; DuckDB and polars read `*.parquet`). No
//! partition key is also a column name (engines replace a file's column by
//! the partition value of the same name).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds in an hour.
pub(crate) const HOUR_NS: u64 = 3_600 * 1_000_000_000;

/// Longest host name (HOST_NAME_MAX).
pub const HOST_MAX: usize = 64;

/// The hour (since the epoch, UTC) of a timestamp in epoch nanoseconds.
pub(crate) fn hour_of(timestamp_ns: u64) -> u64 {
    timestamp_ns / HOUR_NS
}

/// (year, month, day) of a day counted from 1970-01-01, proleptic
/// Gregorian (H. Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `YYYY-MM-DD` and `HH` of an hour since the epoch.
pub(crate) fn date_hour(hour: u64) -> (String, String) {
    let (y, m, d) = civil_from_days((hour / 24) as i64);
    (format!("{y:04}-{m:02}-{d:02}"), format!("{:02}", hour % 24))
}

/// A UTC time as `YYYYMMDDTHHMMSSZ`.
pub(crate) fn compact_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// The `event=` partition value of an event type: `category/name` becomes
/// `category.name`; any byte other than ASCII letters, digits, `_` and `-`
/// is written `%XX` (Hive's escaping; tracepoint names never need it).
pub fn event_partition(event_type: &str) -> String {
    let mut out = String::with_capacity(event_type.len());
    for b in event_type.bytes() {
        match b {
            b'/' => out.push('.'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Checks a host name for use as the `host=` partition value: 1 to
/// HOST_MAX bytes of ASCII letters, digits, `-`, `_` and `.`, not starting
/// with `.` or `_` (readers skip such directories).
pub fn check_host(host: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Config(format!("host name {:?} cannot name a dataset directory: {why}", short(host))));
    if host.is_empty() {
        return bad("it is empty");
    }
    if host.len() > HOST_MAX {
        return bad(&format!("longer than {HOST_MAX} bytes"));
    }
    if let Some(c) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return bad(&format!("{c:?} is not allowed (only ASCII letters, digits, '-', '_' and '.')"));
    }
    if host.starts_with(['.', '_']) {
        return bad("it starts with '.' or '_' (readers skip such directories)");
    }
    Ok(())
}

fn short(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(80).collect::<String>())
    }
}

/// This machine's host name (uname's nodename).
pub fn machine_host() -> Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it when the name fits (it does: HOST_NAME_MAX is 64).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return Err(Error::io("reading the host name", std::io::Error::last_os_error()));
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Paths of one dataset run: `host_dir` and the run id that makes its file
/// names unique (`<start>-<pid>`, `-<n>` added when another run of the same
/// second and pid exists).
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub host_dir: PathBuf,
    pub run: String,
}

impl Layout {
    /// The directory of a partition.
    pub fn partition_dir(&self, event_type: &str, hour: u64) -> PathBuf {
        let (date, hh) = date_hour(hour);
        self.host_dir.join(format!("date={date}")).join(format!("hour={hh}")).join(format!("event={}", event_partition(event_type)))
    }

    /// Final name of file number `seq` of this run.
    pub fn part_name(&self, seq: u64) -> String {
        format!("part-{}-{seq:05}.parquet", self.run)
    }

    /// The name a file has while being written.
    pub fn temp_name(&self, seq: u64) -> String {
        format!(".{}.tmp", self.part_name(seq))
    }

    /// The run's side file (schema, final counters).
    pub fn side_file(&self) -> PathBuf {
        self.host_dir.join(side_name(&self.run))
    }

    pub fn side_temp(&self) -> PathBuf {
        self.host_dir.join(format!(".{}.tmp", side_name(&self.run)))
    }
}

pub(crate) fn side_name(run: &str) -> String {
    format!("_tracer_ebpf-{run}.json")
}

/// The `host=` directory of `root`.
pub(crate) fn host_dir(root: &Path, host: &str) -> PathBuf {
    root.join(format!("host={host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2026-12-02 13:xx UTC
        let ns = 1_796_218_000u64 * 1_000_000_000;
        assert_eq!(date_hour(hour_of(ns)), ("2026-12-02".to_string(), "13".to_string()));
        assert_eq!(compact_utc(UNIX_EPOCH + std::time::Duration::from_secs(1_796_218_000)), "20261202T132640Z");
    }

    #[test]
    fn event_names_become_one_safe_component() {
        assert_eq!(event_partition("syscalls/sys_enter_write"), "syscalls.sys_enter_write");
        assert_eq!(event_partition("a b/c=d"), "a%20b.c%3Dd");
    }

    #[test]
    fn host_names() {
        for ok in ["a", "web-1.example.org", "Host_2"] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "..", ".hidden", "_x", "a=b", "é", &"x".repeat(65)] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        let l = Layout { host_dir: PathBuf::from("/d/host=h"), run: "20260102T030405Z-42".into() };
        assert_eq!(l.part_name(3), "part-20260102T030405Z-42-00003.parquet");
        assert_eq!(l.temp_name(3), ".part-20260102T030405Z-42-00003.parquet.tmp");
        assert_eq!(
            l.partition_dir("sched/sched_process_exec", 0),
            PathBuf::from("/d/host=h/date=1970-01-01/hour=00/event=sched.sched_process_exec")
        );
        assert_eq!(l.side_file(), PathBuf::from("/d/host=h/_tracer_ebpf-20260102T030405Z-42.json"));
    }
}
