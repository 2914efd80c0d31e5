//! Bounds-checked reading of raw records: malformed input is an error, never
//! a panic or an out-of-bounds read.

use crate::value::Var;
use bytes::Bytes;

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
    #[error("ring sample is {got} bytes, too short for its {inline_len} inline bytes")]
    InlineTooLong { inline_len: usize, got: usize },
    #[error("{0} payload bytes left over after the last variable field")]
    TrailingBytes(usize),
    #[error("payload bytes were overwritten while being read")]
    PayloadOverwritten,
    #[error("payload of {len} bytes at position {pos} on CPU {cpu} is outside the payload area")]
    PayloadOutOfRange { cpu: u32, pos: u64, len: u32 },
}

/// Reads `N` bytes at `offset`, or fails.
pub fn read_array<const N: usize>(buf: &[u8], offset: usize) -> Result<[u8; N], DecodeError> {
    offset.checked_add(N).and_then(|end| buf.get(offset..end)).and_then(|s| s.try_into().ok()).ok_or(DecodeError::OutOfBounds {
        offset,
        len: N,
        size: buf.len(),
    })
}

/// Variable bytes of one source, handed out in order: as slices of `shared`
/// when the bytes are already shared, else copied.
struct Source<'a> {
    data: &'a [u8],
    shared: Option<&'a Bytes>,
    pos: usize,
}

impl<'a> Source<'a> {
    fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        let end = self.pos.checked_add(len).filter(|&e| e <= self.data.len()).ok_or(DecodeError::VarOutOfBounds {
            offset: self.pos,
            len,
            available: self.data.len(),
        })?;
        let bytes = match self.shared {
            Some(b) => b.slice(self.pos..end),
            None => Bytes::copy_from_slice(&self.data[self.pos..end]),
        };
        self.pos = end;
        Ok(bytes)
    }

    fn left(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// Hands out the variable bytes of one record, field by field, in order:
/// a field flagged TB_VAR_INLINE from the bytes after the record in its ring
/// sample, any other from the record's payload-area bytes.
pub struct VarReader<'a> {
    area: Source<'a>,
    inline: Source<'a>,
}

impl<'a> VarReader<'a> {
    /// All variable bytes in the payload area.
    pub fn new(data: &'a [u8]) -> Self {
        VarReader::split(data, &[])
    }

    /// Bytes of the payload area and of the ring sample, copied out field
    /// by field.
    pub fn split(area: &'a [u8], inline: &'a [u8]) -> Self {
        VarReader { area: Source { data: area, shared: None, pos: 0 }, inline: Source { data: inline, shared: None, pos: 0 } }
    }

    /// Like `split`, the payload-area fields handed out as slices of `area`
    /// (no copy); inline fields (at most a few dozen bytes) are copied.
    pub fn shared(area: &'a Bytes, inline: &'a [u8]) -> Self {
        VarReader { area: Source { data: area, shared: Some(area), pos: 0 }, inline: Source { data: inline, shared: None, pos: 0 } }
    }

    /// Takes the variable field whose `struct tb_var` descriptor sits at
    /// `desc_offset` in `fixed`. The returned flags omit TB_VAR_INLINE (where
    /// the bytes travelled is no property of the field).
    pub fn take(&mut self, fixed: &[u8], desc_offset: usize) -> Result<Var, DecodeError> {
        let len = u32::from_le_bytes(read_array(fixed, desc_offset)?) as usize;
        let flags = u32::from_le_bytes(read_array(fixed, desc_offset + 4)?);
        let size = u64::from_le_bytes(read_array(fixed, desc_offset + 8)?);
        let src = if flags & VAR_INLINE != 0 { &mut self.inline } else { &mut self.area };
        let data = src.take(len)?;
        Ok(Var { data, flags: flags & !VAR_INLINE, size })
    }

    /// Fails if bytes are left over: the descriptors must account for all.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.area.left() + self.inline.left() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

/// TB_VAR_INLINE: a transport flag, stripped before a `Var` is handed out.
const VAR_INLINE: u32 = crate::types::var_flags::INLINE;

#[cfg(test)]
mod tests {
    use super::*;

    /// A `struct tb_var` descriptor: len, flags, size.
    fn desc(len: u32, flags: u32, size: u64) -> Vec<u8> {
        [len.to_le_bytes().as_slice(), &flags.to_le_bytes(), &size.to_le_bytes()].concat()
    }

    #[test]
    fn inline_and_area_fields_are_taken_from_their_own_bytes_in_order() {
        // Field order: inline "ab", area "XYZ", inline "c", area "" (empty).
        let fixed = [desc(2, VAR_INLINE, 2), desc(3, 0x1, 9), desc(1, VAR_INLINE, 1), desc(0, 0, 0)].concat();
        let mut vr = VarReader::split(b"XYZ", b"abc");
        let got: Vec<Var> = (0..4).map(|i| vr.take(&fixed, 16 * i).unwrap()).collect();
        assert_eq!(got[0], Var { data: Bytes::from_static(b"ab"), flags: 0, size: 2 });
        assert_eq!(got[1], Var { data: Bytes::from_static(b"XYZ"), flags: 0x1, size: 9 });
        assert_eq!(got[2], Var { data: Bytes::from_static(b"c"), flags: 0, size: 1 });
        assert_eq!(got[3], Var { data: Bytes::new(), flags: 0, size: 0 });
        assert_eq!(vr.finish(), Ok(()));
    }

    #[test]
    fn bytes_left_in_either_source_or_missing_are_errors() {
        let fixed = desc(2, VAR_INLINE, 2);
        let mut vr = VarReader::split(b"", b"abc");
        vr.take(&fixed, 0).unwrap();
        assert_eq!(vr.finish(), Err(DecodeError::TrailingBytes(1)));
        let mut vr = VarReader::split(b"q", b"ab");
        vr.take(&fixed, 0).unwrap();
        assert_eq!(vr.finish(), Err(DecodeError::TrailingBytes(1)));
        // An inline field is never read from the payload-area bytes.
        let mut vr = VarReader::split(b"abc", b"a");
        assert_eq!(vr.take(&fixed, 0), Err(DecodeError::VarOutOfBounds { offset: 0, len: 2, available: 1 }));
    }
}
