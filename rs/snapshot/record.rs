//! The task iterator's records (struct tb_snap_rec, c/bpf/snapshot.h): one
//! per process, read from the iterator's file as a stream of fixed records.

use crate::decode::{read_array, DecodeError};
use crate::types::COMM_LEN;

/// Bytes of one struct tb_snap_rec (asserted in c/bpf/snapshot.h).
pub(crate) const SNAP_REC_SIZE: usize = 80;
/// tb_snap_rec.flags: a kernel thread.
const KTHREAD: u32 = 0x1;

/// One process as the kernel had it when the snapshot was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapRecord {
    pub(crate) upid: u64,
    pub(crate) uppid: u64,
    /// start_boottime in ns: the parents-first order, and the check that a
    /// /proc directory still is this process.
    pub(crate) start_ns: u64,
    /// cgroup v2 id (the inode of its cgroup's directory); for the Event's
    /// `cgroup_id` once the record header has one.
    pub(crate) cgroup_id: u64,
    pub(crate) pid: u32,
    pub(crate) ppid: u32,
    /// The pid in its own pid namespace; for the Event's `ns_pid` and
    /// `ns_tid` (the same: one record per thread-group leader).
    pub(crate) ns_pid: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) kernel_thread: bool,
    /// The CPU the iterator ran on.
    pub(crate) cpu: u32,
    pub(crate) comm: [u8; COMM_LEN],
}

impl SnapRecord {
    /// Decodes one record (little-endian, as the BPF side wrote it).
    pub(crate) fn parse(b: &[u8]) -> Result<SnapRecord, DecodeError> {
        if b.len() < SNAP_REC_SIZE {
            return Err(DecodeError::RecordTooShort { need: SNAP_REC_SIZE, got: b.len() });
        }
        let u64_at = |o| read_array::<8>(b, o).map(u64::from_le_bytes);
        let u32_at = |o| read_array::<4>(b, o).map(u32::from_le_bytes);
        Ok(SnapRecord {
            upid: u64_at(0)?,
            uppid: u64_at(8)?,
            start_ns: u64_at(16)?,
            cgroup_id: u64_at(24)?,
            pid: u32_at(32)?,
            ppid: u32_at(36)?,
            ns_pid: u32_at(40)?,
            uid: u32_at(44)?,
            gid: u32_at(48)?,
            kernel_thread: u32_at(52)? & KTHREAD != 0,
            cpu: u32_at(56)?,
            comm: read_array(b, 64)?,
        })
    }

    /// Every record of an iterator's output; a length that is not a whole
    /// number of records is an error (never expected).
    pub(crate) fn parse_all(bytes: &[u8]) -> Result<Vec<SnapRecord>, DecodeError> {
        if !bytes.len().is_multiple_of(SNAP_REC_SIZE) {
            return Err(DecodeError::TrailingBytes(bytes.len() % SNAP_REC_SIZE));
        }
        bytes.chunks_exact(SNAP_REC_SIZE).map(SnapRecord::parse).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_at_the_c_offsets() {
        let mut b = vec![0u8; SNAP_REC_SIZE];
        for (off, v) in [(0usize, 11u64), (8, 12), (16, 13), (24, 14)] {
            b[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
        for (off, v) in [(32usize, 21u32), (36, 22), (40, 23), (44, 24), (48, 25), (52, 1), (56, 3)] {
            b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[64..68].copy_from_slice(b"bash");
        let r = SnapRecord::parse_all(&[b.clone(), b].concat()).unwrap();
        assert_eq!(r.len(), 2);
        let r = &r[0];
        assert_eq!((r.upid, r.uppid, r.start_ns, r.cgroup_id), (11, 12, 13, 14));
        assert_eq!((r.pid, r.ppid, r.ns_pid, r.uid, r.gid, r.kernel_thread, r.cpu), (21, 22, 23, 24, 25, true, 3));
        assert_eq!(&r.comm[..5], b"bash\0");
        assert_eq!(SnapRecord::parse_all(&[0u8; SNAP_REC_SIZE + 1]), Err(DecodeError::TrailingBytes(1)));
    }
}
