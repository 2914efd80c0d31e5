//! Record batches through the Arrow C data interface: the one export that
//! both the Python capsules and the C library (`tb_poll_arrow`) hand out.

use crate::error::{Error, Result};
use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::{Array, RecordBatch, StructArray};
use arrow_schema::Schema;

/// The schema as a C struct schema (format "+s", one child per column),
/// the type of `ffi_array`'s arrays.
pub fn ffi_schema(schema: &Schema) -> Result<FFI_ArrowSchema> {
    FFI_ArrowSchema::try_from(schema).map_err(|source| Error::Arrow { context: "exporting the Arrow schema".into(), source })
}

/// The batch as a C struct array (one child per column): the interface has
/// no record batch of its own. The buffers are shared, not copied; they
/// live until the consumer calls `release`.
pub fn ffi_array(batch: RecordBatch) -> FFI_ArrowArray {
    FFI_ArrowArray::new(&StructArray::from(batch).into_data())
}
