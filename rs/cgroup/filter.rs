//! The cgroup filter's paths: checked and made absolute before any state
//! changes, then opened for the kernel's cgroup array (`cgroups` map, read
//! by bpf_current_task_under_cgroup: a cgroup and its descendants).

use super::mounts::CgroupMounts;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Most cgroups in the filter: the `cgroups` map's size, and the bound of
/// the loop that tests them in the kernel (TB_MAX_CGROUP_FILTERS).
pub const CGROUP_FILTERS_MAX: usize = 8;

/// CGROUP2_SUPER_MAGIC in include/uapi/linux/magic.h.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Why a cgroup filter path was refused.
#[derive(Debug, thiserror::Error)]
pub enum CgroupFilterError {
    #[error(
        "no cgroup2 hierarchy is mounted (a cgroup v1-only host): the cgroup filter works on cgroup v2 \
         directories; mount one (`mount -t cgroup2 none /sys/fs/cgroup/unified`) or filter by pid or comm"
    )]
    NoCgroup2,
    #[error("at most {CGROUP_FILTERS_MAX} cgroups can be filtered, got {0}")]
    TooMany(usize),
    #[error("cgroup {path:?} does not exist{hint}")]
    NotFound { path: String, hint: String },
    #[error("cgroup {path:?} is not a directory")]
    NotDirectory { path: String },
    #[error("{path:?} is not in the cgroup2 hierarchy (mounted at {mount:?}){hint}")]
    NotCgroup2 { path: String, mount: String, hint: String },
    #[error("cgroup {path:?}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, CgroupFilterError>;

/// Checks `paths` (absolute, inside the cgroup2 mount, or relative to the
/// cgroup2 root) and returns each as the absolute path of its directory,
/// duplicates dropped. None given: no filter (and no mount needed).
pub fn resolve_paths(paths: &[String], mounts: &CgroupMounts) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    if paths.len() > CGROUP_FILTERS_MAX {
        return Err(CgroupFilterError::TooMany(paths.len()));
    }
    let point = &mounts.v2.as_ref().ok_or(CgroupFilterError::NoCgroup2)?.point;
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        let dir = resolve_one(p, point)?;
        if !out.contains(&dir) {
            out.push(dir);
        }
    }
    Ok(out)
}

fn resolve_one(given: &str, point: &Path) -> Result<PathBuf> {
    let mount = point.display().to_string();
    let candidate = if given.starts_with('/') { PathBuf::from(given) } else { point.join(given) };
    let not_found = |hint: String| CgroupFilterError::NotFound { path: given.to_string(), hint };
    if given.is_empty() || given.contains('\0') {
        return Err(not_found(" (an empty path or one with a NUL byte)".into()));
    }
    let meta = match std::fs::metadata(&candidate) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A cgroup path as events show it ("/system.slice/x"), given
            // without the mount point.
            let under_root = point.join(given.trim_start_matches('/'));
            let hint = if given.starts_with('/') && under_root.is_dir() {
                format!(
                    "; did you mean {:?} (under the cgroup2 mount), or {:?}?",
                    under_root.display().to_string(),
                    given.trim_start_matches('/')
                )
            } else {
                format!(" (cgroup2 is mounted at {mount:?}; relative paths are taken from there)")
            };
            return Err(not_found(hint));
        }
        Err(e) => return Err(CgroupFilterError::Io { path: given.to_string(), source: e }),
    };
    if !meta.is_dir() {
        return Err(CgroupFilterError::NotDirectory { path: given.to_string() });
    }
    let real = candidate.canonicalize().map_err(|e| CgroupFilterError::Io { path: given.to_string(), source: e })?;
    let real_point = point.canonicalize().unwrap_or_else(|_| point.to_path_buf());
    let inside = real.starts_with(&real_point) && !real.components().any(|c| c == Component::ParentDir);
    if !inside || !on_cgroup2(&real) {
        let hint = if real.starts_with("/sys/fs/cgroup") {
            " (a cgroup v1 hierarchy? the filter takes cgroup v2 directories)".to_string()
        } else {
            String::new()
        };
        return Err(CgroupFilterError::NotCgroup2 { path: given.to_string(), mount, hint });
    }
    Ok(real)
}

/// Whether `dir` is on a cgroup2 file system (statfs).
fn on_cgroup2(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: a NUL-terminated path and a statfs the kernel fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == CGROUP2_SUPER_MAGIC
}

/// Opens every directory (all of them before the caller changes anything).
pub fn open_all(dirs: &[PathBuf]) -> Result<Vec<OwnedFd>> {
    dirs.iter()
        .map(|d| {
            let path = d.display().to_string();
            let c = std::ffi::CString::new(d.as_os_str().as_bytes())
                .map_err(|_| CgroupFilterError::NotFound { path: path.clone(), hint: String::new() })?;
            // SAFETY: a NUL-terminated path.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            if fd < 0 {
                let e = std::io::Error::last_os_error();
                return Err(if e.kind() == std::io::ErrorKind::NotFound {
                    CgroupFilterError::NotFound { path, hint: " (removed meanwhile)".into() }
                } else {
                    CgroupFilterError::Io { path, source: e }
                });
            }
            // SAFETY: a new fd, owned from here.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts() -> CgroupMounts {
        CgroupMounts::detect()
    }

    #[test]
    fn bad_paths_give_specific_errors() {
        let m = mounts();
        let point = m.v2.as_ref().expect("this host has cgroup2").point.clone();
        let e = |p: &str| resolve_paths(&[p.to_string()], &m).unwrap_err();
        assert!(matches!(e("no-such-cgroup-xyz"), CgroupFilterError::NotFound { .. }));
        assert!(matches!(e(""), CgroupFilterError::NotFound { .. }));
        assert!(matches!(e("cgroup.procs"), CgroupFilterError::NotDirectory { .. }));
        assert!(matches!(e("/tmp"), CgroupFilterError::NotCgroup2 { .. }));
        assert!(matches!(e(".."), CgroupFilterError::NotCgroup2 { .. }));
        let many: Vec<String> = (0..9).map(|_| "/".into()).collect();
        assert!(matches!(resolve_paths(&many, &m), Err(CgroupFilterError::TooMany(9))));
        let v1 = CgroupMounts::parse("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n");
        assert!(matches!(resolve_paths(&["x".into()], &v1), Err(CgroupFilterError::NoCgroup2)));
        assert_eq!(resolve_paths(&[], &v1).unwrap(), Vec::<PathBuf>::new());
        // The root, given three ways, is one directory.
        let root = resolve_paths(&[point.display().to_string(), ".".into(), format!("{}/", point.display())], &m).unwrap();
        assert_eq!(root, vec![point.canonicalize().unwrap()]);
    }
}
