//! `tb_event_to_json` and `tb_event_to_json_alloc`: a C caller's
//! `struct tb_event` (delivered, or built by hand) through the one JSON
//! writer, `json::write_view`.

use super::desc::decode_of;
use super::types::{TbEvent, TbField};
use crate::json::{write_view, Context, Header, Value};
use crate::types::{c_abi, FieldKind, FieldRef, VarRef, COMM_LEN};
use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::{c_char, c_long, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A C string as text (NULL: "?"; invalid UTF-8 replaced, as the names the
/// core writes are always UTF-8).
///
/// # Safety
/// `p` is NULL or a C string.
unsafe fn text<'a>(p: *const c_char) -> Cow<'a, str> {
    if p.is_null() {
        Cow::Borrowed("?")
    } else {
        // SAFETY: the caller's promise.
        unsafe { CStr::from_ptr(p) }.to_string_lossy()
    }
}

/// A C string that is valid UTF-8, or None (NULL or not UTF-8).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn opt_text<'a>(p: *const c_char) -> Option<&'a str> {
    // SAFETY: the caller's promise.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().ok()).flatten()
}

/// The field kind of an enum tb_field_kind value.
fn kind_of(k: u32) -> Option<FieldKind> {
    use FieldKind::*;
    Some(match k {
        c_abi::FK_U8 => U8,
        c_abi::FK_U16 => U16,
        c_abi::FK_U32 => U32,
        c_abi::FK_U64 => U64,
        c_abi::FK_I8 => I8,
        c_abi::FK_I16 => I16,
        c_abi::FK_I32 => I32,
        c_abi::FK_I64 => I64,
        c_abi::FK_STR => Str,
        c_abi::FK_STRLIST => StrList,
        c_abi::FK_BYTES => Bytes,
        c_abi::FK_ULIST | c_abi::FK_ILIST => IntList,
        _ => return None,
    })
}

/// The `n` 8-byte integers at `p`, read without assuming alignment (a C
/// caller may point anywhere).
///
/// # Safety
/// `p` is valid for `n` * 8 bytes.
unsafe fn ints<T: Copy>(p: *const u8, n: u32) -> Vec<T> {
    // SAFETY: the caller's promise.
    (0..n as usize).map(|i| unsafe { p.cast::<T>().add(i).read_unaligned() }).collect()
}

/// Writes the line of `e`.
///
/// # Safety
/// `e`'s pointers are valid as c/bootstrap-api.h describes.
unsafe fn write_c_event(s: &mut String, e: &TbEvent) {
    // SAFETY (every block below): the caller's promise about `e`.
    let event_type = if e.desc.is_null() { Cow::Borrowed("?") } else { unsafe { text((*e.desc).name) } };
    let comm = unsafe { std::slice::from_raw_parts(e.comm.as_ptr().cast::<u8>(), (e.comm_len as usize).min(COMM_LEN + 1)) };
    let h = Header {
        event_id: e.event_id,
        event_type: &event_type,
        timestamp_ns: e.timestamp_ns,
        pid: e.pid,
        tid: e.tid,
        ppid: e.ppid,
        upid: e.upid,
        uppid: e.uppid,
        comm,
        ns_pid: e.ns_pid,
        ns_tid: e.ns_tid,
        cgroup_id: e.cgroup_id,
        context: Context {
            cgroup: unsafe { opt_text(e.cgroup) },
            container_id: unsafe { opt_text(e.container_id) },
            container_runtime: unsafe { opt_text(e.container_runtime) },
            pod_uid: unsafe { opt_text(e.pod_uid) },
        },
    };
    let fields: &[TbField] =
        if e.fields.is_null() || e.nfields == 0 { &[] } else { unsafe { std::slice::from_raw_parts(e.fields, e.nfields as usize) } };
    write_view(s, &h, |out| {
        for f in fields {
            if f.desc.is_null() {
                continue; // nothing says what it is
            }
            let d = unsafe { &*f.desc };
            let name = unsafe { text(d.name) };
            let Some(kind) = kind_of(d.kind) else { continue };
            let r = FieldRef { name: &name, kind, decode: decode_of(d.decode) };
            let bytes = || if f.data.is_null() { &[][..] } else { unsafe { std::slice::from_raw_parts(f.data, f.len as usize) } };
            match d.kind {
                c_abi::FK_ULIST => out(r, Value::UList(&unsafe { ints::<u64>(f.data, if f.data.is_null() { 0 } else { f.len }) })),
                c_abi::FK_ILIST => out(r, Value::IList(&unsafe { ints::<i64>(f.data, if f.data.is_null() { 0 } else { f.len }) })),
                c_abi::FK_STR | c_abi::FK_STRLIST | c_abi::FK_BYTES => {
                    out(r, Value::Var(VarRef { data: bytes(), flags: f.flags, size: f.size }))
                }
                c_abi::FK_I8 | c_abi::FK_I16 | c_abi::FK_I32 | c_abi::FK_I64 => out(r, Value::Signed(f.i)),
                _ => out(r, Value::Unsigned(f.u)),
            }
        }
    });
}

/// The line of `e` in a per-thread buffer (reused: no allocation per
/// event once it has grown), passed to `use_it`; an empty line if `e` is
/// NULL or writing it panicked.
///
/// # Safety
/// `e` is NULL or valid as c/bootstrap-api.h describes.
unsafe fn with_line<R>(e: *const TbEvent, use_it: impl FnOnce(&[u8]) -> R) -> R {
    thread_local!(static LINE: RefCell<String> = const { RefCell::new(String::new()) });
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        if !e.is_null() {
            // SAFETY: the caller's promise.
            if catch_unwind(AssertUnwindSafe(|| unsafe { write_c_event(&mut line, &*e) })).is_err() {
                line.clear();
            }
        }
        use_it(line.as_bytes())
    })
}

/// snprintf-style: see c/bootstrap-api.h.
///
/// # Safety
/// `e` as described there; `buf` NULL or valid for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn tb_event_to_json(e: *const TbEvent, buf: *mut c_char, size: usize) -> usize {
    // SAFETY: the caller's promises.
    unsafe {
        with_line(e, |line| {
            if !buf.is_null() && size > 0 {
                let n = line.len().min(size - 1);
                std::ptr::copy_nonoverlapping(line.as_ptr(), buf.cast::<u8>(), n);
                *buf.add(n) = 0;
            }
            line.len()
        })
    }
}

/// getline-style: see c/bootstrap-api.h.
///
/// # Safety
/// `e` as described there; `buf` and `cap` valid, `*buf` NULL or from malloc
/// with `*cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn tb_event_to_json_alloc(e: *const TbEvent, buf: *mut *mut c_char, cap: *mut usize) -> c_long {
    if buf.is_null() || cap.is_null() {
        // SAFETY: errno is this thread's.
        unsafe { *libc::__errno_location() = libc::EINVAL };
        return -1;
    }
    // SAFETY: the caller's promises.
    unsafe {
        with_line(e, |line| {
            let want = line.len() + 1;
            if (*buf).is_null() || *cap < want {
                let grown = if (*buf).is_null() { want } else { want.max(cap.read().saturating_mul(2)) };
                let nb = libc::realloc((*buf).cast(), grown).cast::<c_char>();
                if nb.is_null() {
                    *libc::__errno_location() = libc::ENOMEM;
                    return -1;
                }
                *buf = nb;
                *cap = grown;
            }
            std::ptr::copy_nonoverlapping(line.as_ptr(), (*buf).cast::<u8>(), line.len());
            *(*buf).add(line.len()) = 0;
            line.len() as c_long
        })
    }
}
