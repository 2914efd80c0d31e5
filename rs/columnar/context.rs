//! The cgroup columns (`cgroup`, `container_id`, `container_runtime`,
//! `pod_uid`): dictionaries, since a batch holds few distinct values, and
//! a row of the same cgroup as the previous one only repeats its keys (no
//! hashing of the strings per event).

use crate::cgroup::{same_cgroup, CgroupInfo};
use crate::json::Context;
use arrow_array::{ArrayRef, DictionaryArray, Int32Array, StringArray};
use arrow_buffer::{NullBufferBuilder, ScalarBuffer};
use arrow_schema::ArrowError;
use std::collections::HashMap;
use std::sync::Arc;

/// Names of the columns, in order.
pub const CONTEXT_COLUMNS: [&str; 4] = ["cgroup", "container_id", "container_runtime", "pod_uid"];

/// One dictionary column: keys per row, distinct values in first-seen order.
struct DictColumn {
    keys: Vec<i32>,
    nulls: NullBufferBuilder,
    values: Vec<String>,
    index: HashMap<String, i32>,
}

impl Default for DictColumn {
    fn default() -> Self {
        DictColumn { keys: Vec::new(), nulls: NullBufferBuilder::new(1024), values: Vec::new(), index: HashMap::new() }
    }
}

impl DictColumn {
    fn key_of(&mut self, v: &str) -> i32 {
        if let Some(k) = self.index.get(v) {
            return *k;
        }
        let k = self.values.len() as i32;
        self.values.push(v.to_owned());
        self.index.insert(v.to_owned(), k);
        k
    }

    fn push(&mut self, key: Option<i32>) {
        self.keys.push(key.unwrap_or(0));
        self.nulls.append(key.is_some());
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let keys = Int32Array::new(ScalarBuffer::from(std::mem::take(&mut self.keys)), self.nulls.finish());
        let values = StringArray::from(std::mem::take(&mut self.values));
        self.index.clear();
        Ok(Arc::new(DictionaryArray::try_new(keys, Arc::new(values))?))
    }
}

/// The four columns of a batch being built.
#[derive(Default)]
pub struct ContextColumns {
    cols: [DictColumn; 4],
    /// The previous row's cgroup, and its keys (None: no previous row).
    last: Option<Arc<CgroupInfo>>,
    last_keys: Option<[Option<i32>; 4]>,
}

impl ContextColumns {
    pub fn push(&mut self, info: Option<&Arc<CgroupInfo>>) {
        let keys = match self.last_keys {
            Some(keys) if same_cgroup(self.last.as_ref(), info) => keys,
            _ => {
                let c = Context::of(info.map(|i| &**i));
                let values = [c.cgroup, c.container_id, c.container_runtime, c.pod_uid];
                let mut keys = [None; 4];
                for ((k, v), col) in keys.iter_mut().zip(values).zip(&mut self.cols) {
                    *k = v.map(|v| col.key_of(v));
                }
                self.last = info.cloned();
                self.last_keys = Some(keys);
                keys
            }
        };
        for (col, k) in self.cols.iter_mut().zip(keys) {
            col.push(k);
        }
    }

    /// The four arrays of the rows pushed since the last call.
    pub fn finish(&mut self) -> Result<[ArrayRef; 4], ArrowError> {
        self.last_keys = None; // keys are per batch
        let [a, b, c, d] = &mut self.cols;
        Ok([a.finish()?, b.finish()?, c.finish()?, d.finish()?])
    }
}
