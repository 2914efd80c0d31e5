//! Bounds-checked reading of raw records: malformed input is an error, never
//! a panic or an out-of-bounds read.

use crate::value::Var;

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record is {got} bytes, expected at least {need}")]
    RecordTooShort { need: usize, got: usize },
    #[error("unknown event type id {0}")]
    UnknownEventType(u32),
    #[error("{event}: fixed part is {got} bytes, expected {need}")]
    FixedTooShort { event: &'static str, need: usize, got: usize },
    #[error("read of {len} bytes at offset {offset} is outside the {size}-byte fixed part")]
    OutOfBounds { offset: usize, len: usize, size: usize },
    #[error("variable field claims {len} bytes at {offset}, but only {available} were delivered")]
    VarOutOfBounds { offset: usize, len: usize, available: usize },
    #[error("{0} payload bytes left over after the last variable field")]
    TrailingBytes(usize),
    #[error("payload bytes were overwritten while being read")]
    PayloadOverwritten,
    #[error("payload of {len} bytes at position {pos} on CPU {cpu} is outside the payload area")]
    PayloadOutOfRange { cpu: u32, pos: u64, len: u32 },
}

/// Reads `N` bytes at `offset`, or fails.
pub fn read_array<const N: usize>(buf: &[u8], offset: usize) -> Result<[u8; N], DecodeError> {
    offset
        .checked_add(N)
        .and_then(|end| buf.get(offset..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(DecodeError::OutOfBounds { offset, len: N, size: buf.len() })
}

/// Hands out the variable bytes of one record, field by field, in order.
pub struct VarReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> VarReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        VarReader { data, pos: 0 }
    }

    /// Takes the variable field whose `struct tb_var` descriptor sits at
    /// `desc_offset` in `fixed`.
    pub fn take(&mut self, fixed: &[u8], desc_offset: usize) -> Result<Var, DecodeError> {
        let len = u32::from_le_bytes(read_array(fixed, desc_offset)?) as usize;
        let flags = u32::from_le_bytes(read_array(fixed, desc_offset + 4)?);
        let size = u64::from_le_bytes(read_array(fixed, desc_offset + 8)?);
        let end = self.pos.checked_add(len).filter(|&e| e <= self.data.len()).ok_or(
            DecodeError::VarOutOfBounds { offset: self.pos, len, available: self.data.len() },
        )?;
        let data = self.data[self.pos..end].to_vec();
        self.pos = end;
        Ok(Var { data, flags, size })
    }

    /// Fails if bytes are left over: the descriptors must account for all.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.data.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}
