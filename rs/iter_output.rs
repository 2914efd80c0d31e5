//! Reading a BPF iterator's output (`iter/*` programs) to its end.

use crate::error::{Error, Result};
use libbpf_rs::{Iter, Link};
use std::io::Read;

/// Everything the iterator of `link` writes, read `chunk` bytes at a time:
/// a multiple of its record size, since a read shorter than a record is
/// not guaranteed to resume at the right place by every kernel. `what`
/// names the iterator in errors.
pub(crate) fn read_all(link: &Link, chunk: usize, what: &str) -> Result<Vec<u8>> {
    let mut it = Iter::new(link).map_err(|e| Error::Bpf { context: format!("opening the {what}"), source: e })?;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        match it.read(&mut buf) {
            Ok(0) => return Ok(bytes),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(format!("reading the {what}"), e)),
        }
    }
}
