//! The dataset: routes events to partitions (one per event type and UTC
//! hour), each writing one file at a time, and rotates those files by
//! size, age and hour.

use super::file::{file_batch, file_schema, parquet_error, FileDone, PartFile};
use super::fs::{make_dirs, sync_dir};
use super::layout::{check_host, compact_utc, host_dir, hour_of, machine_host, Layout};
use super::options::DatasetOptions;
use super::side::{claim_run, replace_side_file, side_json, SideInfo};
use crate::columnar::{BatchBuilder, EventSchema};
use crate::error::{Error, Result};
use crate::event::{Event, EventKind};
use crate::stats::Stats;
use crate::types::FieldValue;
use arrow_schema::SchemaRef;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Once a newer hour has begun, the file of an earlier hour is completed
/// when it has had no rows for this long (stragglers: events of other CPUs
/// delivered a little later). One still written to (events replayed out of
/// order) stays open until its size, age or the open-file limit ends it.
const HOUR_GRACE: Duration = Duration::from_secs(5);

/// Most events handed to a file in one write: between writes the file's
/// size is checked, so a file ends within about one such chunk of
/// `max_file_bytes`.
const CHUNK_ROWS: usize = 16_384;

/// What a dataset wrote: its complete files, their rows and bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatasetSummary {
    pub host: String,
    /// The run id in this run's file names.
    pub run: String,
    /// Every complete file, in the order it was closed.
    pub files: Vec<FileDone>,
    pub rows: u64,
    pub bytes: u64,
    /// Rows of files that could not be completed (a write error); none
    /// otherwise.
    pub rows_lost: u64,
    /// The run's side file (schema and final counters).
    pub side_file: PathBuf,
}

type Key = (&'static str, u64);

/// The schemas of one event type and its rows so far.
pub(super) struct TypeInfo {
    pub events: Arc<EventSchema>,
    pub file: SchemaRef,
    pub rows: u64,
}

/// One event type in one hour: where its files go and the one open now.
struct Partition {
    dir: PathBuf,
    builder: BatchBuilder,
    file_schema: SchemaRef,
    file: Option<PartFile>,
    /// When it was last written to (a counter of writes).
    last_used: u64,
    last_write: Instant,
}

/// A Parquet dataset being written (see the module documentation of
/// `dataset` and docs/parquet.md). Close it with `close()`; dropped
/// without, it closes its files all the same (errors then go unreported).
pub struct Dataset {
    root: PathBuf,
    host: String,
    layout: Layout,
    options: DatasetOptions,
    props: WriterProperties,
    started_ns: u64,
    types: HashMap<&'static str, TypeInfo>,
    parts: HashMap<Key, Partition>,
    /// Partition directories known to exist.
    dirs: HashSet<PathBuf>,
    seq: u64,
    tick: u64,
    stats: Option<Stats>,
    done: Vec<FileDone>,
    rows_lost: u64,
    /// The latest hour of an event written.
    newest_hour: Option<u64>,
    /// HOUR_GRACE (shorter in tests).
    pub(super) hour_grace: Duration,
    closed: bool,
}

impl Dataset {
    /// Starts a dataset in `dir` (created if missing, mode 0700), under
    /// `host=<host>`. Options and the host name are checked first: on any
    /// error nothing is created (directories this call made are removed).
    pub fn create(dir: impl AsRef<Path>, options: DatasetOptions) -> Result<Dataset> {
        options.validate()?;
        let host = match &options.host {
            Some(h) => h.clone(),
            None => {
                let h = machine_host()?;
                check_host(&h).map_err(|e| Error::Config(format!("{e}; name the host explicitly (--host NAME, host=...)")))?;
                h
            }
        };
        let root = dir.as_ref();
        if root.as_os_str().is_empty() {
            return Err(Error::Config("the dataset directory is an empty path".into()));
        }
        let level = ZstdLevel::try_new(options.zstd_level).map_err(|e| parquet_error("zstd level", e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_bytes(Some(options.row_group_bytes.min(options.max_file_bytes) as usize))
            .set_created_by(format!("tracer-ebpf {} (parquet-rs)", env!("CARGO_PKG_VERSION")))
            .build();
        let mut created = Vec::new();
        let started = SystemTime::now();
        let claimed = (|| {
            make_dirs(root, &mut created)?;
            let hdir = host_dir(root, &host);
            make_dirs(&hdir, &mut created)?;
            claim_run(&hdir, &compact_utc(started))
        })();
        let (hdir, run, side) = match claimed {
            Ok(x) => x,
            Err(e) => {
                for d in created.iter().rev() {
                    let _ = std::fs::remove_dir(d);
                }
                return Err(e);
            }
        };
        let mut ds = Dataset {
            root: root.to_path_buf(),
            host,
            layout: Layout { host_dir: hdir, run },
            options,
            props,
            started_ns: started.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
            types: HashMap::new(),
            parts: HashMap::new(),
            dirs: HashSet::new(),
            seq: 0,
            tick: 0,
            stats: None,
            done: Vec::new(),
            rows_lost: 0,
            newest_hour: None,
            hour_grace: HOUR_GRACE,
            closed: false,
        };
        // The side file was claimed empty: now say what this run is.
        let text = ds.side_text(false);
        let written = side.and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()));
        if let Err(e) = written {
            ds.closed = true;
            let _ = std::fs::remove_file(ds.layout.side_file());
            for d in created.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            return Err(Error::io(format!("writing {}", ds.layout.side_file().display()), e));
        }
        Ok(ds)
    }

    /// The dataset's directory (the one given to `create`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `host=` directory this run writes into.
    pub fn host_dir(&self) -> &Path {
        &self.layout.host_dir
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The run id in this run's file names (`<start>-<pid>`).
    pub fn run(&self) -> &str {
        &self.layout.run
    }

    pub fn options(&self) -> &DatasetOptions {
        &self.options
    }

    /// The tracer's counters, recorded in each file closed from now on
    /// (and in the side file).
    pub fn set_stats(&mut self, stats: &Stats) {
        self.stats = Some(stats.clone());
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.parts.values().filter(|p| p.file.is_some()).count()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Writes `events`, each into the partition of its event type and hour;
    /// then closes the files that are due (size, age, a past hour). Call it
    /// with no events now and then (each poll) so that files are closed by
    /// age when no events come. On an error the other partitions are still
    /// written; the rows of a file that failed are counted in `rows_lost`.
    pub fn write(&mut self, events: &[Event]) -> Result<()> {
        self.check_open()?;
        let mut routes: Vec<(Key, Vec<&Event>)> = Vec::new();
        let mut last = usize::MAX;
        let mut newest = None;
        for e in events {
            let hour = hour_of(e.timestamp_ns);
            newest = newest.max(Some(hour));
            let key = (e.event_type.name(), hour);
            if routes.get(last).is_none_or(|r| r.0 != key) {
                last = match routes.iter().position(|r| r.0 == key) {
                    Some(i) => i,
                    None => {
                        self.type_info(&e.event_type);
                        routes.push((key, Vec::new()));
                        routes.len() - 1
                    }
                };
            }
            routes[last].1.push(e);
        }
        let budget = self.chunk_bytes();
        let mut first_err = None;
        for (key, evs) in &routes {
            let mut start = 0;
            while start < evs.len() {
                let mut end = start;
                let mut bytes = 0;
                while end < evs.len() && (end == start || (bytes < budget && end - start < CHUNK_ROWS)) {
                    bytes += approx_bytes(evs[end]);
                    end += 1;
                }
                if let Err(e) = self.write_chunk(*key, &evs[start..end]) {
                    first_err.get_or_insert(e);
                }
                start = end;
            }
        }
        let upkeep = self.upkeep(newest);
        match first_err {
            Some(e) => Err(e),
            None => upkeep,
        }
    }

    /// Closes every file, records `stats` (if given, else the last
    /// `set_stats`) in them and in the side file, and tells what was written.
    pub fn close(mut self, stats: Option<&Stats>) -> Result<DatasetSummary> {
        if let Some(s) = stats {
            self.stats = Some(s.clone());
        }
        self.close_all()?;
        Ok(self.summary())
    }

    /// What was written so far (complete files only).
    pub fn summary(&self) -> DatasetSummary {
        DatasetSummary {
            host: self.host.clone(),
            run: self.layout.run.clone(),
            files: self.done.clone(),
            rows: self.done.iter().map(|f| f.rows).sum(),
            bytes: self.done.iter().map(|f| f.bytes).sum(),
            rows_lost: self.rows_lost,
            side_file: self.layout.side_file(),
        }
    }

    fn close_all(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let keys: Vec<Key> = self.parts.iter().filter(|(_, p)| p.file.is_some()).map(|(k, _)| *k).collect();
        let mut first_err = None;
        for k in keys {
            if let Err(e) = self.finish_file(k) {
                first_err.get_or_insert(e);
            }
        }
        self.parts.clear();
        if let Err(e) = self.write_side_file() {
            first_err.get_or_insert(e);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Bytes of events (roughly, before encoding) handed to a file at once.
    fn chunk_bytes(&self) -> usize {
        ((self.options.max_file_bytes.min(self.options.row_group_bytes) / 8) as usize).max(64 << 10)
    }

    fn type_info(&mut self, kind: &EventKind) -> &TypeInfo {
        self.types.entry(kind.name()).or_insert_with(|| {
            let events = Arc::new(EventSchema::new([kind]));
            let file = file_schema(&events.schema());
            TypeInfo { events, file, rows: 0 }
        })
    }

    /// Writes events of one partition into its open file (opened if none):
    /// the rows of a chunk that cannot reach a file count in `rows_lost`.
    fn write_chunk(&mut self, key: Key, evs: &[&Event]) -> Result<()> {
        self.tick += 1;
        let batch = match self.prepare(key, evs) {
            Ok(b) => b,
            Err(e) => {
                self.rows_lost += evs.len() as u64;
                return Err(e);
            }
        };
        let max_bytes = self.options.max_file_bytes;
        let part = self.parts.get_mut(&key).ok_or(Error::Closed)?;
        let Some(file) = part.file.as_mut() else { return Err(Error::Closed) };
        if let Err(e) = file.write(&batch) {
            // The file cannot be completed: dropped (its temporary file removed).
            self.rows_lost += file.rows() + batch.num_rows() as u64;
            part.file = None;
            return Err(e);
        }
        let full = file.size() >= max_bytes;
        if let Some(t) = self.types.get_mut(key.0) {
            t.rows += batch.num_rows() as u64;
        }
        if full {
            self.finish_file(key)?;
        }
        Ok(())
    }

    /// The partition's file open and the events as one batch of its schema.
    fn prepare(&mut self, key: Key, evs: &[&Event]) -> Result<arrow_array::RecordBatch> {
        if !self.parts.contains_key(&key) {
            let p = self.new_partition(key)?;
            self.parts.insert(key, p);
        }
        if self.parts.get(&key).is_some_and(|p| p.file.is_none()) {
            self.make_room()?;
            if let Err(e) = self.open_file(key) {
                // Its directory may have gone: made again next time.
                if let Some(p) = self.parts.remove(&key) {
                    self.dirs.remove(&p.dir);
                }
                return Err(e);
            }
        }
        let tick = self.tick;
        let part = self.parts.get_mut(&key).ok_or(Error::Closed)?;
        part.last_used = tick;
        part.last_write = Instant::now();
        part.builder.extend(evs.iter().copied())?;
        file_batch(&part.builder.finish()?, &part.file_schema)
    }

    fn new_partition(&mut self, key: Key) -> Result<Partition> {
        let dir = self.layout.partition_dir(key.0, key.1);
        if !self.dirs.contains(&dir) {
            let mut created = Vec::new();
            make_dirs(&dir, &mut created)?;
            // New directory entries survive a crash (the files' own are
            // synced when they are renamed).
            for d in &created {
                if let Some(parent) = d.parent() {
                    sync_dir(parent)?;
                }
            }
            self.dirs.insert(dir.clone());
        }
        let t = self.types.get(key.0).ok_or_else(|| Error::Config(format!("no schema for {}", key.0)))?;
        Ok(Partition {
            dir,
            builder: BatchBuilder::new(t.events.clone()),
            file_schema: t.file.clone(),
            file: None,
            last_used: 0,
            last_write: Instant::now(),
        })
    }

    fn open_file(&mut self, key: Key) -> Result<()> {
        self.seq += 1;
        let (temp, name) = (self.layout.temp_name(self.seq), self.layout.part_name(self.seq));
        let props = self.props.clone();
        let part = self.parts.get_mut(&key).ok_or(Error::Closed)?;
        part.file = Some(PartFile::create(&part.dir, &temp, &name, part.file_schema.clone(), props)?);
        Ok(())
    }

    /// Closes the least recently written files until another may open.
    fn make_room(&mut self) -> Result<()> {
        while self.open_files() as u64 >= self.options.max_open_files {
            let oldest = self.parts.iter().filter(|(_, p)| p.file.is_some()).min_by_key(|(_, p)| p.last_used).map(|(k, _)| *k);
            match oldest {
                Some(k) => self.finish_file(k)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Completes the open file of a partition (if any).
    fn finish_file(&mut self, key: Key) -> Result<()> {
        let Some(file) = self.parts.get_mut(&key).and_then(|p| p.file.take()) else { return Ok(()) };
        let rows = file.rows();
        match file.finish(self.file_metadata(key.0)) {
            Ok(done) => {
                self.done.push(done);
                Ok(())
            }
            Err(e) => {
                self.rows_lost += rows;
                Err(e)
            }
        }
    }

    /// The key-value metadata of a file of `event_type`, as it closes.
    fn file_metadata(&self, event_type: &str) -> Vec<KeyValue> {
        let kv = |k: &str, v: String| KeyValue::new(format!("tracer_ebpf.{k}"), v);
        let mut out = vec![
            kv("version", env!("CARGO_PKG_VERSION").to_string()),
            kv("host", self.host.clone()),
            kv("run", self.layout.run.clone()),
            kv("event_type", event_type.to_string()),
        ];
        if let Some(s) = &self.stats {
            out.push(kv("stats", super::side::stats_json(s)));
            out.push(kv("events_lost", s.events_lost().to_string()));
        }
        out
    }

    /// Closes the files that are due (age, a past hour), forgets past
    /// partitions, and writes out row groups while buffers hold too much.
    fn upkeep(&mut self, newest: Option<u64>) -> Result<()> {
        self.newest_hour = self.newest_hour.max(newest);
        let grace = self.hour_grace;
        let newest = self.newest_hour;
        // A partition of a past hour that has had no rows for `grace`.
        let past = |k: &Key, p: &Partition| newest.is_some_and(|h| k.1 < h) && p.last_write.elapsed() >= grace;
        let max_age = self.options.max_file_age;
        let due: Vec<Key> = self
            .parts
            .iter()
            .filter(|(k, p)| p.file.as_ref().is_some_and(|f| f.age() >= max_age) || (p.file.is_some() && past(k, p)))
            .map(|(k, _)| *k)
            .collect();
        let mut first_err = None;
        for k in due {
            if let Err(e) = self.finish_file(k) {
                first_err.get_or_insert(e);
            }
        }
        self.parts.retain(|k, p| p.file.is_some() || !past(k, p));
        let limit = self.options.max_buffered_bytes as usize;
        loop {
            let total: usize = self.parts.values().filter_map(|p| p.file.as_ref()).map(|f| f.memory()).sum();
            if total <= limit {
                break;
            }
            let biggest =
                self.parts.values_mut().filter_map(|p| p.file.as_ref().map(|f| f.memory()).map(|m| (m, p))).max_by_key(|(m, _)| *m);
            let Some((m, part)) = biggest else { break };
            if m == 0 {
                break;
            }
            let Some(file) = part.file.as_mut() else { break };
            if let Err(e) = file.flush_row_group() {
                self.rows_lost += file.rows();
                part.file = None;
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn side_text(&self, complete: bool) -> String {
        let summary = self.summary();
        let closed_ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        side_json(&SideInfo {
            host: &self.host,
            run: &self.layout.run,
            host_dir: &self.layout.host_dir,
            started_ns: self.started_ns,
            closed_ns: complete.then_some(closed_ns),
            options: &self.options,
            summary: &summary,
            stats: self.stats.as_ref(),
            types: &self.types,
        })
    }

    /// Replaces the side file with the final one.
    fn write_side_file(&self) -> Result<()> {
        replace_side_file(&self.layout, &self.side_text(true))
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        let _ = self.close_all();
    }
}

/// Payload bytes of an event, plus its header: what it adds to a batch
/// before encoding, roughly.
fn approx_bytes(e: &Event) -> usize {
    let mut n = 96;
    e.payload.for_each_field(|_, v| {
        n += match v {
            FieldValue::Var(v) => v.data.len(),
            FieldValue::UList(l) => l.len() * 8,
            FieldValue::IList(l) => l.len() * 8,
            _ => 8,
        }
    });
    n
}
