//! `struct tb_options` into a `Config`: zero means "the default" everywhere.

use super::status::Failure;
use super::types::TbOptions;
use crate::config::Config;
use std::ffi::{c_char, CStr};
use std::time::Duration;

/// The `n` items at `p` (none if `n` is 0); NULL with `n > 0` is an error
/// naming `what`.
///
/// # Safety
/// `p` is NULL or valid for `n` items.
pub unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T], Failure> {
    if n == 0 {
        Ok(&[])
    } else if p.is_null() {
        Err(Failure::invalid(format!("{what} is NULL but its count is {n}")))
    } else {
        // SAFETY: the caller's promise.
        Ok(unsafe { std::slice::from_raw_parts(p, n) })
    }
}

/// The C strings at `p` as Strings (they must be UTF-8).
///
/// # Safety
/// `p` is NULL or valid for `n` pointers, each NULL or a C string.
pub unsafe fn strings(p: *const *const c_char, n: usize, what: &str) -> Result<Vec<String>, Failure> {
    // SAFETY: the caller's promise.
    let ptrs = unsafe { slice(p, n, what)? };
    ptrs.iter()
        .enumerate()
        .map(|(i, &s)| {
            if s.is_null() {
                return Err(Failure::invalid(format!("{what}[{i}] is NULL")));
            }
            // SAFETY: a C string, by the caller's promise.
            let c = unsafe { CStr::from_ptr(s) };
            c.to_str().map(str::to_string).map_err(|_| Failure::invalid(format!("{what}[{i}] {c:?} is not UTF-8")))
        })
        .collect()
}

/// The configuration `o` asks for.
///
/// # Safety
/// Every pointer in `o` is NULL or valid for its count.
pub unsafe fn config(o: &TbOptions) -> Result<Config, Failure> {
    let mut c = Config::new();
    // SAFETY (all blocks below): the caller's promise about `o`.
    c.events = unsafe { strings(o.events, o.nevents, "events")? };
    c.pids = unsafe { slice(o.pids, o.npids, "pids")? }.to_vec();
    c.follow_children = o.follow != 0;
    c.comm = unsafe { strings(o.comms, o.ncomms, "comms")? };
    c.cgroups = unsafe { strings(o.cgroups, o.ncgroups, "cgroups")? };
    // NULL keeps the default fds; non-NULL with a count of 0 is "none".
    if !o.content_fds.is_null() {
        c.content_fds = unsafe { slice(o.content_fds, o.ncontent_fds, "content_fds")? }.to_vec();
    }
    c.all_fds = o.all_fds != 0;
    if o.content_max != 0 {
        c.content_max = o.content_max;
    }
    if o.argv_max != 0 {
        c.argv_max = o.argv_max;
    }
    if o.ring_bytes != 0 {
        c.ring_bytes = o.ring_bytes;
    }
    if o.payload_bytes_per_cpu != 0 {
        c.payload_bytes_per_cpu = o.payload_bytes_per_cpu;
    }
    if o.wake_ns != 0 {
        c.wake_interval = Duration::from_nanos(o.wake_ns);
    }
    c.trace_self = o.trace_self != 0;
    c.snapshot = o.snapshot != 0;
    if o.arrow != 0 && o.on_event.is_some() {
        return Err(Failure::invalid(
            "arrow: the reader builds Arrow batches, read with tb_poll_arrow/tb_consume_arrow: leave on_event NULL",
        ));
    }
    c.arrow = o.arrow != 0;
    c.yield_cpu = o.yield_cpu != 0;
    Ok(c)
}
