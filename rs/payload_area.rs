//! The mmapped payload area and per-CPU control blocks: userspace reads
//! payload bytes with no system call, publishes how far it has read, and
//! gives the pool chunks it has read past back to the producers.
//!
//! Each CPU writes a stream of logical positions; logical chunk L of CPU c
//! lives in the pool chunk named by slot `c * slots + L % slots`. The pool is
//! shared by all CPUs, so one CPU writing a burst can use all of it
//! (docs/protocol.md).

use crate::bpf::types::{tb_cpu_ctl, tb_pool};
use crate::decode::DecodeError;
use crate::error::{Error, Result};
use crate::types::{CHUNK_ELEM_SIZE, CHUNK_SIZE, CPU_CTL_SIZE};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Offsets in struct tb_cpu_ctl (c/bootstrap-protocol.h), from the
/// skeleton's copy of its layout.
const CTL_HEAD: usize = std::mem::offset_of!(tb_cpu_ctl, head);
const CTL_TAIL: usize = std::mem::offset_of!(tb_cpu_ctl, tail);
const POOL_USED: usize = std::mem::offset_of!(tb_pool, used);
const _: () = assert!(std::mem::size_of::<tb_cpu_ctl>() == CPU_CTL_SIZE);

/// Chunks one CPU may hold at once at most (its slots): 1 GiB of payload in
/// flight, and 8 bytes of slot table per CPU and slot.
pub const MAX_SLOTS: usize = 1024;
/// Pool chunks per CPU at least. A CPU whose payload was all read still
/// holds the chunk its head is in; with two per CPU, a CPU that needs one
/// finds one free even when every other CPU holds one that way.
pub const MIN_CHUNKS_PER_CPU: usize = 2;

/// The pool's geometry for `ncpus` possible CPUs and `chunks_per_cpu`
/// (already at least MIN_CHUNKS_PER_CPU): (pool chunks, slots per CPU).
pub fn geometry(ncpus: usize, chunks_per_cpu: usize) -> (usize, usize) {
    let pool = ncpus.max(1) * chunks_per_cpu;
    (pool, pool.min(MAX_SLOTS))
}

/// A shared mapping of a BPF_F_MMAPABLE array map.
struct Mmap {
    ptr: *mut u8,
    len: usize,
}

impl Mmap {
    fn map(fd: BorrowedFd<'_>, entries: usize, value_size: usize, writable: bool, what: &str) -> Result<Mmap> {
        let page = page_size();
        let len = (entries * value_size.div_ceil(8) * 8).div_ceil(page) * page;
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        // SAFETY: mapping a map fd we own; the kernel checks length and flags.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(Error::io(format!("mmap of the {what} map ({len} bytes)"), std::io::Error::last_os_error()));
        }
        Ok(Mmap { ptr: ptr.cast(), len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from a successful mmap and are unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// The maps of the payload area, as file descriptors.
pub struct AreaMaps<'a> {
    pub payload: BorrowedFd<'a>,
    pub cpu_ctl: BorrowedFd<'a>,
    pub chunk_owner: BorrowedFd<'a>,
    pub chunk_slot: BorrowedFd<'a>,
    pub pool: BorrowedFd<'a>,
}

pub struct PayloadArea {
    data: Mmap,
    ctl: Mmap,
    owner: Mmap,
    slot: Mmap,
    pool: Mmap,
    ncpus: usize,
    pool_chunks: usize,
    slots: usize,
    /// Per CPU: the logical chunks below this one were given back.
    freed: Vec<u64>,
}

// SAFETY: the mappings are plain shared memory; all cross-thread access goes
// through atomics (control words) or copies of bytes the producer no longer
// writes (flow control).
unsafe impl Send for PayloadArea {}

impl PayloadArea {
    pub fn new(maps: AreaMaps<'_>, ncpus: usize, chunks_per_cpu: usize) -> Result<Self> {
        let (pool_chunks, slots) = geometry(ncpus, chunks_per_cpu);
        Ok(PayloadArea {
            data: Mmap::map(maps.payload, pool_chunks, CHUNK_ELEM_SIZE, false, "payload")?,
            ctl: Mmap::map(maps.cpu_ctl, ncpus, CPU_CTL_SIZE, true, "cpu_ctl")?,
            owner: Mmap::map(maps.chunk_owner, pool_chunks, 8, true, "chunk_owner")?,
            slot: Mmap::map(maps.chunk_slot, ncpus * slots, 8, false, "chunk_slot")?,
            pool: Mmap::map(maps.pool, 1, std::mem::size_of::<tb_pool>(), true, "pool")?,
            ncpus,
            pool_chunks,
            slots,
            freed: vec![0; ncpus],
        })
    }

    /// The most payload bytes one CPU can have in flight (its slots).
    pub fn region_size(&self) -> u64 {
        (self.slots * CHUNK_SIZE) as u64
    }

    /// The 8-byte word at byte `at` of mapping `m`, if in bounds.
    fn word(m: &Mmap, at: usize) -> Option<&AtomicU64> {
        // SAFETY: in bounds (checked), 8-aligned (entries and offsets are
        // multiples of 8 and mmap is page aligned), and only accessed atomically.
        (at.is_multiple_of(8) && at + 8 <= m.len).then(|| unsafe { &*(m.ptr.add(at) as *const AtomicU64) })
    }

    /// The pool chunk of logical chunk `lchunk` of `cpu`, as the producer
    /// mapped it (None if out of range: never expected).
    fn pool_chunk(&self, cpu: usize, lchunk: u64) -> Option<usize> {
        let slot = cpu * self.slots + (lchunk % self.slots as u64) as usize;
        let chunk = Self::word(&self.slot, slot * 8)?.load(Ordering::Acquire) as usize;
        (chunk < self.pool_chunks).then_some(chunk)
    }

    fn ctl_word(&self, cpu: usize, off: usize) -> &AtomicU64 {
        let at = cpu * CPU_CTL_SIZE + off;
        assert!(cpu < self.ncpus && at + 8 <= self.ctl.len);
        // SAFETY: in bounds (checked), 8-aligned (CPU_CTL_SIZE and offsets are
        // multiples of 8 and mmap is page aligned), and only accessed atomically.
        unsafe { &*(self.ctl.ptr.add(at) as *const AtomicU64) }
    }

    /// The producer's position on `cpu`.
    pub fn head(&self, cpu: usize) -> u64 {
        self.ctl_word(cpu, CTL_HEAD).load(Ordering::Acquire)
    }

    /// Appends `len` payload bytes at logical position `pos` of `cpu`'s region
    /// to `out`. Returns false if the producer may have overwritten them while
    /// they were copied (never expected: the producer respects `tail`).
    pub fn read(&self, cpu: u32, pos: u64, len: u32, out: &mut Vec<u8>) -> Result<bool, DecodeError> {
        if !self.in_range(cpu, len as u64) {
            return Err(DecodeError::PayloadOutOfRange { cpu, pos, len });
        }
        let start = out.len();
        out.resize(start + len as usize, 0);
        let r = self.read_into(cpu, pos, &mut out[start..]);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    /// Copies the `dst.len()` payload bytes at logical position `pos` of
    /// `cpu`'s region into `dst` (gathered across chunk boundaries). Returns
    /// false if the producer may have overwritten them while they were
    /// copied (never expected: the producer respects `tail`).
    pub fn read_into(&self, cpu: u32, pos: u64, dst: &mut [u8]) -> Result<bool, DecodeError> {
        let cpu_us = cpu as usize;
        let len = dst.len() as u64;
        let out_of_range = DecodeError::PayloadOutOfRange { cpu, pos, len: len.min(u32::MAX as u64) as u32 };
        if !self.in_range(cpu, len) {
            return Err(out_of_range);
        }
        if len == 0 {
            return Ok(true); // no bytes that a writer could have reached (and no fence)
        }
        let mut done = 0u64;
        while done < len {
            let p = pos.wrapping_add(done);
            let chunk = self.pool_chunk(cpu_us, p / CHUNK_SIZE as u64).ok_or(out_of_range.clone())?;
            let off = (p % CHUNK_SIZE as u64) as usize;
            let n = ((CHUNK_SIZE - off) as u64).min(len - done) as usize;
            let at = chunk * CHUNK_ELEM_SIZE + off;
            if at + n > self.data.len {
                return Err(out_of_range);
            }
            // SAFETY: in bounds (checked above); the producer does not write
            // these bytes until we release them (checked again below).
            let src = unsafe { std::slice::from_raw_parts(self.data.ptr.add(at), n) };
            dst[done as usize..done as usize + n].copy_from_slice(src);
            done += n as u64;
        }
        Ok(self.intact(cpu, pos))
    }

    /// Whether `len` bytes of `cpu`'s region can exist at all.
    fn in_range(&self, cpu: u32, len: u64) -> bool {
        (cpu as usize) < self.ncpus && len <= self.region_size()
    }

    /// True unless the producer on `cpu` has reserved past `pos` + region,
    /// where it would start reusing the bytes at `pos` (never expected: it
    /// respects `tail`). Call after copying bytes read at `pos`.
    pub fn intact(&self, cpu: u32, pos: u64) -> bool {
        fence(Ordering::SeqCst);
        let region = self.region_size();
        (cpu as usize) < self.ncpus && pos.checked_add(region).is_some_and(|end| self.head(cpu as usize) <= end)
    }

    /// Tells the producer on `cpu` that everything before `upto` was read,
    /// giving back the pool chunks wholly before it. They are freed before
    /// the tail moves: the producer reuses a chunk's slot only once the tail
    /// has passed it.
    pub fn release(&mut self, cpu: u32, upto: u64) {
        let cpu_us = cpu as usize;
        if cpu_us >= self.ncpus {
            return;
        }
        let passed = upto / CHUNK_SIZE as u64;
        let used = Self::word(&self.pool, POOL_USED).expect("pool word in its mapping");
        while self.freed[cpu_us] < passed {
            if let Some(chunk) = self.pool_chunk(cpu_us, self.freed[cpu_us]) {
                if let Some(owner) = Self::word(&self.owner, chunk * 8) {
                    owner.store(0, Ordering::Release);
                    used.fetch_sub(1, Ordering::Release);
                }
            }
            self.freed[cpu_us] += 1;
        }
        self.ctl_word(cpu_us, CTL_TAIL).store(upto, Ordering::Release);
    }
}
