//! Finds tracefs, mounting it when it is not (a fresh machine may not have it).

use crate::error::{Error, Result};
use std::ffi::CString;
use std::path::{Path, PathBuf};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracing directory, mounting tracefs at /sys/kernel/tracing if needed.
pub fn ensure_mounted() -> Result<PathBuf> {
    if let Some(p) = find() {
        return Ok(p);
    }
    let target = Path::new(TRACEFS);
    if !target.is_dir() {
        return Err(Error::TracefsMissing { reason: format!("{TRACEFS} does not exist: is CONFIG_TRACING enabled?") });
    }
    let src = CString::new("nodev").expect("no NUL");
    let dst = CString::new(TRACEFS).expect("no NUL");
    let fstype = CString::new("tracefs").expect("no NUL");
    // SAFETY: all pointers are valid NUL-terminated strings; data is NULL.
    let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Error::TracefsMissing { reason: "mounting it needs CAP_SYS_ADMIN".to_string() },
            _ => Error::TracefsMissing { reason: format!("mount failed: {err}") },
        });
    }
    find().ok_or_else(|| Error::TracefsMissing { reason: "mounted, but it has no events/ directory".to_string() })
}

/// The tracing directory if tracefs is already mounted.
pub fn find() -> Option<PathBuf> {
    [TRACEFS, DEBUGFS_TRACING].iter().map(PathBuf::from).find(|p| p.join("events").is_dir())
}

/// Whether the running kernel has `category/name`.
pub fn has_tracepoint(tracing: &Path, category: &str, name: &str) -> bool {
    tracing.join("events").join(category).join(name).is_dir()
}

/// Every tracepoint the running kernel lists, as "category/name", sorted.
pub fn available(tracing: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(tracing.join("available_events")).unwrap_or_default();
    let mut v: Vec<String> = text.lines().filter_map(|l| l.split_once(':')).map(|(c, n)| format!("{c}/{n}")).collect();
    v.sort();
    v.dedup();
    v
}
