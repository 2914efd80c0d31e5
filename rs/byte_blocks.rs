//! Where payload bytes live in userspace: large blocks that the reader fills
//! with one copy per record and that events share slices of.
//!
//! The reader must empty the payload area at least as fast as a writer fills
//! it. A copy into memory already touched runs at memcpy speed; into fresh
//! memory, every 4 KiB page first faults and is zeroed by the kernel, which
//! costs several times the copy (bench/results/drain.md). So bytes go into
//! blocks of a few MiB, and a block whose events are all dropped goes back to
//! a small pool of warm blocks for the next records. Blocks beyond that pool
//! are unmapped: memory taken for a burst is given back once its events are
//! gone.
//!
//! Blocks use ordinary 4 KiB pages, not transparent huge pages: a virtual
//! machine with free page reporting (virtio-balloon) hands free 2 MiB pages
//! back to its host within seconds, and touching one again then waits for
//! the host to back it. Measured on such a VM: 0.07 GB/s into huge pages
//! freed seconds before, 1.1-1.4 GB/s into fresh 4 KiB pages
//! (bench/results/drain.md).

use bytes::Bytes;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// Bytes per block: a few records of the largest field (1 MiB) each.
pub const BLOCK_SIZE: usize = 4 << 20;

/// Fewer bytes than this go to the heap instead: each block slice costs a
/// small allocation and two atomic updates of the block's count, a cache
/// line that the reader and the consumer would pass back and forth for
/// every small event; the allocator recycles small buffers well anyway.
pub const SMALL: usize = 1024;

/// An anonymous mapping of BLOCK_SIZE bytes.
struct Region(NonNull<u8>);

// SAFETY: plain memory owned by this value; who may write to which part is
// decided by `BlockWriter` (see `Slice`).
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    fn new() -> Option<Region> {
        // SAFETY: a fresh private anonymous mapping; no memory is referenced.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), BLOCK_SIZE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        NonNull::new(p.cast::<u8>()).map(Region)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.0.as_ptr().cast(), BLOCK_SIZE) };
    }
}

/// Free blocks kept warm for reuse, up to `keep` of them.
struct Pool {
    free: Mutex<Vec<Region>>,
    keep: usize,
}

impl Pool {
    fn get(&self) -> Option<Region> {
        let recycled = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        recycled.or_else(Region::new)
    }

    fn put(&self, r: Region) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.keep {
            free.push(r);
        } // else dropped here: unmapped
    }
}

/// One block in use: the reader appends to it, events hold slices of it.
struct Block {
    region: Option<Region>,
    pool: Arc<Pool>,
}

impl Block {
    fn ptr(&self) -> *mut u8 {
        self.region.as_ref().map_or(std::ptr::null_mut(), |r| r.0.as_ptr())
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(r) = self.region.take() {
            self.pool.put(r);
        }
    }
}

/// The bytes `[off, off + len)` of a block, written before this was made and
/// never written again while it exists (the writer only appends past them).
struct Slice {
    block: Arc<Block>,
    off: usize,
    len: usize,
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: in bounds (checked by `BlockWriter::put`), initialised by
        // the copy, and no `&mut` to this range exists any more.
        unsafe { std::slice::from_raw_parts(self.block.ptr().add(self.off), self.len) }
    }
}

/// The reader's side: copies bytes into the current block.
pub struct BlockWriter {
    pool: Arc<Pool>,
    current: Option<Arc<Block>>,
    used: usize,
}

impl BlockWriter {
    /// A writer whose pool keeps up to `keep_bytes` of free blocks warm.
    pub fn new(keep_bytes: usize) -> BlockWriter {
        let pool = Arc::new(Pool { free: Mutex::new(Vec::new()), keep: keep_bytes / BLOCK_SIZE });
        BlockWriter { pool, current: None, used: 0 }
    }

    /// `len` bytes filled in by `fill` (which gets exactly that many bytes to
    /// write), as one shared slice of a block. Returns `fill`'s result too.
    pub fn put<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> (Bytes, R) {
        if len == 0 {
            return (Bytes::new(), fill(&mut []));
        }
        if !(SMALL..=BLOCK_SIZE).contains(&len) {
            let mut v = vec![0u8; len];
            let r = fill(&mut v);
            return (Bytes::from(v), r);
        }
        if self.current.is_none() || self.used + len > BLOCK_SIZE {
            self.current = None;
            match self.pool.get() {
                Some(region) => {
                    self.current = Some(Arc::new(Block { region: Some(region), pool: self.pool.clone() }));
                    self.used = 0;
                }
                None => {
                    // Out of address space or memory: fall back to the heap.
                    let mut v = vec![0u8; len];
                    let r = fill(&mut v);
                    return (Bytes::from(v), r);
                }
            }
        }
        let block = self.current.as_ref().expect("set above").clone();
        let off = self.used;
        // SAFETY: [off, off + len) is inside the block (checked above) and no
        // slice handed out covers it: they all end at or before `used`.
        let dst = unsafe { std::slice::from_raw_parts_mut(block.ptr().add(off), len) };
        let r = fill(dst);
        self.used = off + len;
        (Bytes::from_owner(Slice { block, off, len }), r)
    }

    /// Maps and touches blocks until the pool holds all it keeps, so that
    /// the first records of a burst are copied into memory already faulted
    /// in.
    pub fn prefault(&mut self) {
        let mut fresh = Vec::new();
        while fresh.len() < self.pool.keep {
            let Some(r) = Region::new() else { break };
            for off in (0..BLOCK_SIZE).step_by(4096) {
                // SAFETY: inside the block; nothing else references it yet.
                unsafe { r.0.as_ptr().add(off).write_volatile(0) };
            }
            fresh.push(r);
        }
        for r in fresh {
            self.pool.put(r);
        }
    }

    /// Bytes of free blocks kept warm now.
    #[cfg(test)]
    pub fn warm_bytes(&self) -> usize {
        self.pool.free.lock().unwrap_or_else(|p| p.into_inner()).len() * BLOCK_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_keep_their_bytes_and_blocks_return_to_the_pool() {
        let mut w = BlockWriter::new(BLOCK_SIZE);
        let (a, _) = w.put(SMALL, |d| d.fill(b'a'));
        let (b, n) = w.put(SMALL + 3, |d| {
            d.fill(b'b');
            7
        });
        assert_eq!(n, 7);
        assert!(a.iter().all(|&x| x == b'a') && b.iter().all(|&x| x == b'b'));
        // Fill the rest of the block so that the next put starts another.
        let (big, _) = w.put(BLOCK_SIZE - 2 * SMALL - 3, |d| d.fill(1));
        let (c, _) = w.put(SMALL, |d| d.fill(b'z'));
        assert!(c.iter().all(|&x| x == b'z'));
        assert_eq!(w.warm_bytes(), 0, "the first block is still referenced");
        drop((a, b));
        assert_eq!(w.warm_bytes(), 0);
        drop(big);
        assert_eq!(w.warm_bytes(), BLOCK_SIZE, "the first block went back to the pool");
        assert!(c.iter().all(|&x| x == b'z'));
    }

    #[test]
    fn the_pool_keeps_no_more_than_asked() {
        let mut w = BlockWriter::new(0);
        let (a, _) = w.put(BLOCK_SIZE, |d| d.fill(2));
        let (b, _) = w.put(SMALL, |d| d[0] = 3);
        drop(a);
        assert_eq!(w.warm_bytes(), 0);
        assert_eq!(b[0], 3);
    }

    #[test]
    fn empty_small_and_oversized_puts() {
        let mut w = BlockWriter::new(BLOCK_SIZE);
        assert!(w.put(0, |d| d.len()).0.is_empty());
        let (s, _) = w.put(5, |d| d.copy_from_slice(b"hello"));
        assert_eq!(&s[..], b"hello");
        assert!(w.current.is_none(), "small puts take no block");
        let (v, _) = w.put(BLOCK_SIZE + 1, |d| d.fill(9));
        assert_eq!(v.len(), BLOCK_SIZE + 1);
        assert!(v.iter().all(|&x| x == 9));
    }
}
