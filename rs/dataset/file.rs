//! One Parquet file being written: created under a hidden temporary name,
//! renamed to its final name only once complete (written, footer and all,
//! and fsynced), so that a reader never takes a partial file for a whole
//! one, whatever happens to the writer.

use super::fs::{rename_new, sync_dir};
use crate::error::{Error, Result};
use arrow_array::{Array, ArrayRef, RecordBatch, TimestampMicrosecondArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A complete file: where it is, its rows and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDone {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// A file in progress (only its temporary name exists).
pub(crate) struct PartFile {
    writer: Option<ArrowWriter<File>>,
    dir: PathBuf,
    temp: PathBuf,
    path: PathBuf,
    opened: Instant,
    rows: u64,
}

pub(crate) fn parquet_error(context: impl Into<String>, e: parquet::errors::ParquetError) -> Error {
    Error::Parquet { context: context.into(), source: e }
}

impl PartFile {
    /// Creates `dir/temp_name` (mode 0600, never over an existing file),
    /// to become `dir/final_name`.
    pub fn create(dir: &Path, temp_name: &str, final_name: &str, schema: SchemaRef, props: WriterProperties) -> Result<PartFile> {
        let temp = dir.join(temp_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&temp)
            .map_err(|e| Error::io(format!("creating {}", temp.display()), e))?;
        let writer = match ArrowWriter::try_new(file, schema, Some(props)) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(parquet_error(format!("starting {}", temp.display()), e));
            }
        };
        Ok(PartFile { writer: Some(writer), dir: dir.to_path_buf(), temp, path: dir.join(final_name), opened: Instant::now(), rows: 0 })
    }

    fn writer(&mut self) -> Result<&mut ArrowWriter<File>> {
        self.writer.as_mut().ok_or(Error::Closed)
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let temp = self.temp.display().to_string();
        self.writer()?.write(batch).map_err(|e| parquet_error(format!("writing {temp}"), e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Bytes the file will have if closed now (written plus the encoded
    /// size of the row group in progress, estimated).
    pub fn size(&self) -> u64 {
        self.writer.as_ref().map(|w| (w.bytes_written() + w.in_progress_size()) as u64).unwrap_or(0)
    }

    /// Memory held by the row group in progress.
    pub fn memory(&self) -> usize {
        self.writer.as_ref().map(|w| w.memory_size()).unwrap_or(0)
    }

    /// Writes out the row group in progress (frees its memory).
    pub fn flush_row_group(&mut self) -> Result<()> {
        let temp = self.temp.display().to_string();
        self.writer()?.flush().map_err(|e| parquet_error(format!("writing {temp}"), e))
    }

    pub fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the footer with `metadata` added, fsyncs, renames the file to
    /// its final name (never over another file) and fsyncs the directory.
    /// On failure the temporary file is removed.
    pub fn finish(mut self, metadata: Vec<KeyValue>) -> Result<FileDone> {
        let Some(mut w) = self.writer.take() else { return Err(Error::Closed) };
        for kv in metadata {
            w.append_key_value_metadata(kv);
        }
        let done = (|| {
            let temp = self.temp.display();
            // Writes the last row group and the footer.
            let file = w.into_inner().map_err(|e| parquet_error(format!("finishing {temp}"), e))?;
            file.sync_all().map_err(|e| Error::io(format!("syncing {temp}"), e))?;
            let bytes = file.metadata().map_err(|e| Error::io(format!("reading the size of {temp}"), e))?.len();
            drop(file);
            rename_new(&self.temp, &self.path)?;
            sync_dir(&self.dir)?;
            Ok(FileDone { path: self.path.clone(), rows: self.rows, bytes })
        })();
        if done.is_err() {
            let _ = std::fs::remove_file(&self.temp);
        }
        done
    }
}

impl Drop for PartFile {
    /// A file dropped unfinished (an error on the way) is removed: it was
    /// never visible under its final name.
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// The schema of a file: the batch schema with `timestamp` in microseconds
/// (Spark cannot read nanosecond timestamps; `timestamp_ns` keeps every
/// digit).
pub(crate) fn file_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.name() == "timestamp" {
                Field::new("timestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), f.is_nullable())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A batch of the event schema as a batch of `file_schema` (its
/// `timestamp` computed from `timestamp_ns`).
pub(crate) fn file_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let idx = |name: &str| {
        batch.schema().index_of(name).map_err(|e| Error::Arrow { context: "converting a batch for Parquet".into(), source: e })
    };
    let (ts, ns) = (idx("timestamp")?, idx("timestamp_ns")?);
    if let Some(ns_col) = columns[ns].as_any().downcast_ref::<UInt64Array>() {
        let us: Vec<i64> = ns_col.values().iter().map(|&v| (v / 1000) as i64).collect();
        columns[ts] = Arc::new(TimestampMicrosecondArray::from(us).with_timezone("UTC"));
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Arrow { context: "converting a batch for Parquet".into(), source: e })
}
