//! Allocator tuning for programs that consume events at high rates.

/// Keeps up to 64 MiB of freed memory in the process instead of handing it
/// back to the kernel at once.
///
/// Consumers build and free batches of several MB (events, column buffers,
/// JSON text) while the reader thread allocates the next ones. With glibc's
/// defaults the freed memory goes straight back to the kernel (the heap is
/// trimmed above 128 KiB free, blocks over 128 KiB are unmapped) and the
/// next batch faults it in again, page by page: half of the Python columnar
/// path's time went to that. Process-wide, so it is for programs (the
/// examples, the Python extension at import), not called by `Tracer`.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
