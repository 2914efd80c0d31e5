//! The run's side file, `_tracer_ebpf-<run>.json` in the host directory:
//! what the run is, its options, the schema of each event type it wrote,
//! its files and the tracer's final counters (docs/parquet.md). Its name
//! starts with `_` and does not end in `.parquet`: no reader takes it for
//! data.

use super::fs::sync_dir;
use super::layout::{side_name, Layout};
use super::options::DatasetOptions;
use super::writer::{DatasetSummary, TypeInfo};
use crate::error::{Error, Result};
use crate::json::write_str;
use crate::stats::Stats;
use std::collections::HashMap;
use std::fmt::Write;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub(super) struct SideInfo<'a> {
    pub host: &'a str,
    pub run: &'a str,
    pub host_dir: &'a Path,
    pub started_ns: u64,
    /// None while the run is still writing (or was killed).
    pub closed_ns: Option<u64>,
    pub options: &'a DatasetOptions,
    pub summary: &'a DatasetSummary,
    pub stats: Option<&'a Stats>,
    pub types: &'a HashMap<&'static str, TypeInfo>,
}

fn string(s: &mut String, v: &str) {
    write_str(s, v.as_bytes());
}

/// Every counter as one JSON object, in `Stats::pairs` order.
pub(crate) fn stats_json(st: &Stats) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in st.pairs().iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "\"{k}\":{v}");
    }
    s.push('}');
    s
}

pub(super) fn side_json(i: &SideInfo<'_>) -> String {
    let mut s = String::with_capacity(4096);
    s.push_str("{\"format\":\"tracer-ebpf parquet dataset run\",\"tracer_ebpf_version\":");
    string(&mut s, env!("CARGO_PKG_VERSION"));
    s.push_str(",\"host\":");
    string(&mut s, i.host);
    s.push_str(",\"run\":");
    string(&mut s, i.run);
    let _ = write!(s, ",\"pid\":{},\"started_ns\":{}", std::process::id(), i.started_ns);
    match i.closed_ns {
        Some(t) => {
            let _ = write!(s, ",\"closed_ns\":{t},\"complete\":true");
        }
        None => s.push_str(",\"closed_ns\":null,\"complete\":false"),
    }
    let o = i.options;
    let _ = write!(
        s,
        ",\"options\":{{\"max_file_bytes\":{},\"max_file_seconds\":{},\"row_group_bytes\":{},\"max_buffered_bytes\":{},\"max_open_files\":{},\"zstd_level\":{}}}",
        o.max_file_bytes,
        o.max_file_age.as_secs_f64(),
        o.row_group_bytes,
        o.max_buffered_bytes,
        o.max_open_files,
        o.zstd_level
    );
    let sm = i.summary;
    let _ = write!(s, ",\"files\":{},\"rows\":{},\"bytes\":{},\"rows_lost\":{}", sm.files.len(), sm.rows, sm.bytes, sm.rows_lost);
    s.push_str(",\"stats\":");
    match i.stats {
        Some(st) => {
            s.push_str(&stats_json(st));
            let _ = write!(s, ",\"events_lost\":{}", st.events_lost());
        }
        None => s.push_str("null,\"events_lost\":null"),
    }
    s.push_str(",\"event_types\":{");
    let mut names: Vec<&&str> = i.types.keys().collect();
    names.sort();
    for (n, name) in names.into_iter().enumerate() {
        let t = &i.types[*name];
        if n > 0 {
            s.push(',');
        }
        string(&mut s, name);
        s.push_str(":{\"partition\":");
        string(&mut s, &format!("event={}", super::layout::event_partition(name)));
        let _ = write!(s, ",\"rows\":{},\"columns\":[", t.rows);
        for (c, f) in t.file.fields().iter().enumerate() {
            if c > 0 {
                s.push(',');
            }
            s.push_str("{\"name\":");
            string(&mut s, f.name());
            s.push_str(",\"type\":");
            string(&mut s, &f.data_type().to_string());
            let _ = write!(s, ",\"nullable\":{}}}", f.is_nullable());
        }
        s.push_str("]}");
    }
    s.push_str("},\"paths\":[");
    for (n, f) in sm.files.iter().enumerate() {
        if n > 0 {
            s.push(',');
        }
        let rel = f.path.strip_prefix(i.host_dir).unwrap_or(&f.path);
        string(&mut s, &rel.to_string_lossy());
    }
    s.push_str("]}\n");
    s
}

/// Claims a run id in `host_dir` by creating its side file (never over
/// another run's): `<start>-<pid>`, or `<start>-<pid>-<n>` when a run of
/// this process started in the same second.
pub(super) fn claim_run(host_dir: &Path, start: &str) -> Result<(PathBuf, String, std::io::Result<std::fs::File>)> {
    let pid = std::process::id();
    for n in 0..10_000u32 {
        let run = if n == 0 { format!("{start}-{pid}") } else { format!("{start}-{pid}-{n}") };
        let path = host_dir.join(side_name(&run));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => return Ok((host_dir.to_path_buf(), run, Ok(f))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("cannot write in the dataset directory {}", host_dir.display()), e)),
        }
    }
    Err(Error::Config(format!("too many runs named {start}-{pid} in {}", host_dir.display())))
}

/// Replaces the side file with `text` (temporary file, fsync, rename over,
/// fsync of the directory).
pub(super) fn replace_side_file(layout: &Layout, text: &str) -> Result<()> {
    let (temp, path) = (layout.side_temp(), layout.side_file());
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&temp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&temp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::io(format!("writing {}", path.display()), e));
    }
    sync_dir(&layout.host_dir)
}
