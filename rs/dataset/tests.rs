//! The dataset without a kernel: events made here, files read back by
//! the parquet crate.

use super::{Dataset, DatasetOptions};
use crate::event::{Event, EventKind};
use crate::types::{payload, EventType, Payload};
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

const HOUR: u64 = 3_600_000_000_000;
/// 2026-12-02 13:00:00 UTC.
const T0: u64 = 1_796_216_400 * 1_000_000_000;

fn read(id: u64, ts: u64) -> Event {
    Event::test_read(id, ts)
}

fn exit(id: u64, ts: u64) -> Event {
    let mut e = read(id, ts);
    e.event_type = EventKind::Typed(EventType::SchedSchedProcessExit);
    e.payload = Payload::SchedSchedProcessExit(payload::SchedSchedProcessExit {
        exit_code: 0,
        exit_status: 0,
        signal: 0,
        core_dumped: 0,
        group_leader: 1,
    });
    e
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tracer-ebpf-dataset-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rows(p: &Path) -> i64 {
    SerializedFileReader::new(std::fs::File::open(p).unwrap()).unwrap().metadata().file_metadata().num_rows()
}

#[test]
fn partitions_by_event_type_and_hour_and_completes_a_past_hour() {
    let dir = tmp("hours");
    let mut ds = Dataset::create(&dir, DatasetOptions::new().host("h")).unwrap();
    ds.hour_grace = Duration::ZERO;
    ds.write(&[read(1, T0 + 10), exit(2, T0 + 20), read(3, T0 + 30)]).unwrap();
    assert_eq!(ds.open_files(), 2);
    assert!(files(&dir, ".parquet").is_empty());
    assert_eq!(files(&dir, ".parquet.tmp").len(), 2);
    // The next hour begins: the files of hour 13 are completed.
    ds.write(&[read(4, T0 + HOUR)]).unwrap();
    let done = files(&dir, ".parquet");
    assert_eq!(done.len(), 2, "{done:?}");
    let reads = dir.join("host=h/date=2026-12-02/hour=13/event=syscalls.sys_enter_read");
    assert!(done[1].starts_with(&reads), "{done:?}");
    assert_eq!(rows(&done[1]), 2);
    // A straggler of hour 13 gets a new file.
    ds.write(&[read(5, T0 + 40)]).unwrap();
    let s = ds.close(None).unwrap();
    assert_eq!((s.files.len(), s.rows, s.rows_lost), (4, 5, 0));
    assert!(files(&dir, ".tmp").is_empty());
    assert_eq!(files(&dir, ".parquet").len(), 4);
    assert!(dir.join("host=h/date=2026-12-02/hour=14/event=syscalls.sys_enter_read").is_dir());
    let side = std::fs::read_to_string(&s.side_file).unwrap();
    assert!(side.contains("\"complete\":true") && side.contains("\"rows\":5"), "{side}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_past_hour_still_written_to_stays_open() {
    let dir = tmp("replay");
    let mut ds = Dataset::create(&dir, DatasetOptions::new().host("h")).unwrap();
    ds.hour_grace = Duration::from_secs(60);
    for i in 0..10 {
        ds.write(&[read(2 * i, T0 + i), read(2 * i + 1, T0 + HOUR + i)]).unwrap();
    }
    assert_eq!(ds.open_files(), 2);
    assert!(files(&dir, ".parquet").is_empty());
    let s = ds.close(None).unwrap();
    assert_eq!((s.files.len(), s.rows), (2, 20));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn open_files_are_bounded_and_dropping_completes_them() {
    let dir = tmp("open");
    let mut o = DatasetOptions::new().host("h");
    o.max_open_files = 1;
    let mut ds = Dataset::create(&dir, o).unwrap();
    ds.write(&[read(1, T0)]).unwrap();
    ds.write(&[exit(2, T0)]).unwrap();
    assert_eq!(ds.open_files(), 1);
    assert_eq!(files(&dir, ".parquet").len(), 1);
    drop(ds);
    assert_eq!(files(&dir, ".parquet").len(), 2);
    assert!(files(&dir, ".tmp").is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn runs_of_one_process_never_share_names() {
    let dir = tmp("runs");
    let a = Dataset::create(&dir, DatasetOptions::new().host("h")).unwrap();
    let b = Dataset::create(&dir, DatasetOptions::new().host("h")).unwrap();
    assert_ne!(a.run(), b.run());
    drop((a, b));
    assert_eq!(files(&dir, ".json").len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_create_leaves_nothing() {
    let dir = tmp("fail");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("a/host=h"), b"in the way").unwrap();
    let e = Dataset::create(dir.join("a"), DatasetOptions::new().host("h")).err().unwrap().to_string();
    assert!(e.contains("is not a directory"), "{e}");
    let e = Dataset::create(dir.join("b/c"), DatasetOptions::new().host("x/y")).err().unwrap().to_string();
    assert!(e.contains("'/' is not allowed"), "{e}");
    assert!(!dir.join("b").exists());
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
    entries.sort();
    assert_eq!(entries, ["a"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
