//! File-system steps with their durability: directories made (and
//! synced), files renamed without replacing anything.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Creates `dir` and its missing parents (mode 0700), appending those it
/// made to `created`. An existing part of the path that is not a directory
/// is an error.
pub(super) fn make_dirs(dir: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
    let mut missing = Vec::new();
    let mut p = Some(dir);
    while let Some(d) = p {
        if d.as_os_str().is_empty() {
            break;
        }
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(Error::Config(format!("cannot write a dataset into {}: {} is not a directory", dir.display(), d.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(d.to_path_buf()),
            Err(e) => return Err(Error::io(format!("cannot write a dataset into {}", dir.display()), e)),
        }
        p = d.parent();
    }
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => created.push(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(Error::io(format!("cannot create the dataset directory {}", d.display()), e)),
        }
    }
    Ok(())
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Config(format!("path {} contains a NUL byte", p.display())))
}

/// Renames `from` to `to`, failing if `to` exists (renameat2 with
/// RENAME_NOREPLACE; a hard link then unlink where the file system lacks it).
pub(crate) fn rename_new(from: &Path, to: &Path) -> Result<()> {
    let (a, b) = (cstr(from)?, cstr(to)?);
    // SAFETY: two valid NUL-terminated paths.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let context = || format!("renaming {} to {}", from.display(), to.display());
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            std::fs::hard_link(from, to).map_err(|e| Error::io(context(), e))?;
            std::fs::remove_file(from).map_err(|e| Error::io(context(), e))
        }
        _ => Err(Error::io(context(), err)),
    }
}

/// fsync of a directory: its new entries survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}
