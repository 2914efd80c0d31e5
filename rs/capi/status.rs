//! Status codes (enum tb_status), what each `Error` maps to, error messages
//! into the caller's buffer, and the guard that keeps panics on this side.

use crate::error::Error;
use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub const TB_OK: c_int = 0;
pub const TB_STOPPED: c_int = -1;
pub const TB_ERR_INVALID: c_int = -2;
pub const TB_ERR_PERMISSION: c_int = -3;
pub const TB_ERR_NO_BTF: c_int = -4;
pub const TB_ERR_TRACEFS: c_int = -5;
pub const TB_ERR_UNKNOWN_EVENT: c_int = -6;
pub const TB_ERR_NO_TRACEPOINT: c_int = -7;
pub const TB_ERR_VERIFIER: c_int = -8;
pub const TB_ERR_BPF: c_int = -9;
pub const TB_ERR_NOMEM: c_int = -10;
pub const TB_ERR_IO: c_int = -11;

/// A failure as the C caller sees it: a status and a message.
pub struct Failure {
    pub status: c_int,
    pub message: String,
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure { status: TB_ERR_INVALID, message: message.into() }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let status = match &e {
            Error::Permission { .. } => TB_ERR_PERMISSION,
            Error::BtfMissing { .. } => TB_ERR_NO_BTF,
            Error::TracefsMissing { .. } => TB_ERR_TRACEFS,
            Error::UnknownEvent { .. } => TB_ERR_UNKNOWN_EVENT,
            Error::TracepointMissing { .. } => TB_ERR_NO_TRACEPOINT,
            Error::Config(_)
            | Error::Cgroup(_)
            | Error::OtlpConfig { .. }
            | Error::Closed
            | Error::ExporterClosed
            | Error::Forked { .. } => TB_ERR_INVALID,
            Error::OutOfMemory { .. } => TB_ERR_NOMEM,
            Error::Verifier { .. } => TB_ERR_VERIFIER,
            Error::Bpf { .. } => TB_ERR_BPF,
            Error::Io { .. } | Error::Arrow { .. } | Error::Parquet { .. } => TB_ERR_IO,
        };
        Failure { status, message: e.to_string() }
    }
}

/// Copies `msg` into `buf` (`len` bytes, NUL included), cut at a character
/// boundary if it does not fit. Nothing if `buf` is NULL or `len` is 0.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes.
pub unsafe fn write_message(buf: *mut c_char, len: usize, msg: &str) {
    if buf.is_null() || len == 0 {
        return;
    }
    let mut n = msg.len().min(len - 1);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: n < len bytes fit in `buf`, plus the NUL at n.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
}

/// Runs `f`, turning a failure into its status (and message into `errbuf`)
/// and a panic into TB_ERR_INVALID: nothing unwinds into C.
///
/// # Safety
/// `errbuf` is NULL or valid for `errlen` bytes.
pub unsafe fn guard(errbuf: *mut c_char, errlen: usize, f: impl FnOnce() -> Result<c_int, Failure>) -> c_int {
    let failure = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(n)) => return n,
        Ok(Err(failure)) => failure,
        Err(_) => Failure::invalid("internal error (a bug in tracer-ebpf: please report it)"),
    };
    // SAFETY: the caller's promise about errbuf.
    unsafe { write_message(errbuf, errlen, &failure.message) };
    failure.status
}

/// A short description of a status code.
#[no_mangle]
pub extern "C" fn tb_strerror(status: c_int) -> *const c_char {
    let s: &'static std::ffi::CStr = match status {
        TB_OK => c"success",
        TB_STOPPED => c"stopped",
        TB_ERR_INVALID => c"invalid argument",
        TB_ERR_PERMISSION => c"permission denied",
        TB_ERR_NO_BTF => c"kernel BTF missing",
        TB_ERR_TRACEFS => c"tracefs unavailable",
        TB_ERR_UNKNOWN_EVENT => c"unknown event",
        TB_ERR_NO_TRACEPOINT => c"tracepoint missing",
        TB_ERR_VERIFIER => c"BPF program rejected by the verifier",
        TB_ERR_BPF => c"BPF operation failed",
        TB_ERR_NOMEM => c"out of memory",
        TB_ERR_IO => c"system call failed",
        _ => c"unknown status",
    };
    s.as_ptr()
}
