//! Events as Apache Arrow record batches: one schema per tracer (header
//! columns, then `payload.<field>` columns with their `_truncated`, `_lost`,
//! `_size`, `_bytes` and `_name` companions), filled row by row from
//! decoded events. See docs/columnar.md for every column.

mod builder;
mod column;
mod context;
mod ffi;
mod schema;

pub use builder::{lost_reasons, record_batch, BatchBuilder};
pub use context::CONTEXT_COLUMNS;
pub use ffi::{ffi_array, ffi_schema};
pub use schema::{EventSchema, HEADER_COLUMNS};
