//! Cgroup ids of events to paths and containers, cached: called for every
//! event, so a run of events of one cgroup (and process, on hosts with v1
//! hierarchies) costs a compare and an `Arc` clone each.

use super::container::{parse_container, parse_pod_uid};
use super::lookup::{self, Lookup};
use super::mounts::CgroupMounts;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What is known of one cgroup (and, on hosts with v1 hierarchies, of the
/// process the container id was read for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The cgroup v2 id (the inode of its directory).
    pub id: u64,
    /// Its path under the cgroup2 root, starting with "/"; None when it was
    /// removed before it could be resolved, or no cgroup2 is mounted.
    pub path: Option<String>,
    /// The container it belongs to (see `parse_container`).
    pub container_id: Option<String>,
    pub runtime: Option<&'static str>,
    /// The Kubernetes pod UID, with dashes.
    pub pod_uid: Option<String>,
}

/// Most cgroup ids and (pid, cgroup id) pairs remembered; the cache is
/// emptied when full (a host has far fewer cgroups; only a churn of
/// short-lived cgroups or processes refills it).
pub const CACHE_MAX: usize = 16384;
/// A cgroup id that could not be resolved is looked up again at most once
/// per this: ids are not reused, but a lookup can fail for a while (a tree
/// walk racing a mkdir, no fds left), and a miss must not stick.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// /proc/<pid>/cgroup is read again after this, for a pid whose v2 cgroup
/// did not change (a pid reused by another process, a move between v1
/// cgroups).
pub const PID_TTL: Duration = Duration::from_secs(5);

struct IdEntry {
    info: Arc<CgroupInfo>,
    /// For an unresolved id: when to look it up again.
    retry_at: Option<Instant>,
}

/// Resolves cgroup ids; owned by one thread (the reader).
pub struct CgroupResolver {
    mounts: CgroupMounts,
    mount_fd: Option<OwnedFd>,
    /// File handles work here (cleared on the first failure that is not
    /// "no such cgroup": then every lookup walks the tree).
    handles: bool,
    /// v1 hierarchies are mounted: a container may show only in them.
    v1: bool,
    by_id: HashMap<u64, IdEntry>,
    by_pid: HashMap<(u32, u64), (Arc<CgroupInfo>, Instant)>,
    /// The last answer: (cgroup id, pid, info); only resolved ones.
    last: Option<(u64, u32, Arc<CgroupInfo>)>,
    unresolved: u64,
    proc_root: String,
}

impl CgroupResolver {
    /// A resolver for this host's layout (/proc/self/mountinfo).
    pub fn new() -> CgroupResolver {
        Self::with_mounts(CgroupMounts::detect())
    }

    /// A resolver for a given layout.
    pub fn with_mounts(mounts: CgroupMounts) -> CgroupResolver {
        let mount_fd = mounts.v2.as_ref().and_then(|m| lookup::open_mount(&m.point)).map(|fd| {
            // SAFETY: a new fd, owned from here.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        CgroupResolver {
            v1: !mounts.v1.is_empty(),
            mounts,
            mount_fd,
            handles: true,
            by_id: HashMap::new(),
            by_pid: HashMap::new(),
            last: None,
            unresolved: 0,
            proc_root: "/proc".into(),
        }
    }

    /// The layout found.
    pub fn mounts(&self) -> &CgroupMounts {
        &self.mounts
    }

    /// Whether ids are resolved by file handle (false once they failed for
    /// want of privilege or kernel support: then by walking the tree).
    pub fn uses_file_handles(&self) -> bool {
        self.handles && self.mount_fd.is_some()
    }

    /// Events whose cgroup had no path though cgroup2 is mounted: it was
    /// removed before it could be resolved. (On a v1-only host no event has
    /// a path, and none is counted.)
    pub fn unresolved(&self) -> u64 {
        self.unresolved
    }

    /// What is known of cgroup `cgroup_id` for an event of process `pid`
    /// (its tgid); None for id 0 (no cgroup id recorded).
    pub fn resolve(&mut self, cgroup_id: u64, pid: u32) -> Option<Arc<CgroupInfo>> {
        if let Some((id, p, info)) = &self.last {
            if *id == cgroup_id && (!self.v1 || *p == pid) {
                return Some(Arc::clone(info));
            }
        }
        if cgroup_id == 0 {
            return None;
        }
        let info = self.by_id(cgroup_id);
        let info = if self.v1 && info.container_id.is_none() { self.with_v1(info, pid) } else { info };
        if info.path.is_some() || self.mounts.v2.is_none() {
            self.last = Some((cgroup_id, pid, Arc::clone(&info)));
        } else {
            self.unresolved += 1;
        }
        Some(info)
    }

    fn by_id(&mut self, id: u64) -> Arc<CgroupInfo> {
        if let Some(e) = self.by_id.get(&id) {
            // The clock only for an entry to be retried.
            if e.retry_at.is_none_or(|t| Instant::now() < t) {
                return Arc::clone(&e.info);
            }
        }
        let now = Instant::now();
        let path = self.path_of(id);
        let container = path.as_deref().and_then(parse_container);
        let info = Arc::new(CgroupInfo {
            id,
            container_id: container.as_ref().map(|c| c.id.clone()),
            runtime: container.as_ref().map(|c| c.runtime),
            pod_uid: container.and_then(|c| c.pod_uid).or_else(|| path.as_deref().and_then(parse_pod_uid)),
            path,
        });
        if self.by_id.len() >= CACHE_MAX {
            self.by_id.clear();
        }
        let retry_at = (info.path.is_none() && self.mounts.v2.is_some()).then(|| now + RETRY_AFTER);
        self.by_id.insert(id, IdEntry { info: Arc::clone(&info), retry_at });
        info
    }

    fn path_of(&mut self, id: u64) -> Option<String> {
        let point = self.mounts.v2.as_ref()?.point.clone();
        if self.handles {
            if let Some(fd) = &self.mount_fd {
                match lookup::by_handle(fd.as_raw_fd(), &point, id) {
                    Lookup::Found(p) => return Some(p),
                    Lookup::Gone => return None,
                    Lookup::Unsupported => self.handles = false,
                }
            }
        }
        match lookup::by_walk(&point, id) {
            Lookup::Found(p) => Some(p),
            _ => None,
        }
    }

    /// `info` with the container named in the v1 lines of
    /// /proc/<pid>/cgroup, if any (hybrid and v1-only hosts), cached per
    /// (pid, cgroup id) for PID_TTL.
    fn with_v1(&mut self, info: Arc<CgroupInfo>, pid: u32) -> Arc<CgroupInfo> {
        let now = Instant::now();
        let key = (pid, info.id);
        if let Some((cached, at)) = self.by_pid.get(&key) {
            // The same v2 entry (it may have been re-resolved since).
            if now.duration_since(*at) < PID_TTL && cached.path == info.path {
                return Arc::clone(cached);
            }
        }
        let text = std::fs::read_to_string(format!("{}/{pid}/cgroup", self.proc_root)).unwrap_or_default();
        let out = match v1_container(&text) {
            Some((c, uid)) => Arc::new(CgroupInfo {
                container_id: Some(c.id),
                runtime: Some(c.runtime),
                pod_uid: info.pod_uid.clone().or(uid),
                ..(*info).clone()
            }),
            None => info,
        };
        if self.by_pid.len() >= CACHE_MAX {
            self.by_pid.clear();
        }
        self.by_pid.insert(key, (Arc::clone(&out), now));
        out
    }
}

/// Whether two events' cgroups are the same resolved entry (consumers that
/// derive something from it do so once per run of events).
pub fn same_cgroup(a: Option<&Arc<CgroupInfo>>, b: Option<&Arc<CgroupInfo>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl Default for CgroupResolver {
    fn default() -> Self {
        Self::new()
    }
}

/// The container (and pod UID) named in the v1 lines of a /proc/<pid>/cgroup
/// text ("hierarchy:controllers:path"; the v2 line is "0::path").
pub fn v1_container(proc_cgroup: &str) -> Option<(super::Container, Option<String>)> {
    proc_cgroup
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (h, _, path) = (parts.next()?, parts.next()?, parts.next()?);
            (h != "0").then_some(path)
        })
        .find_map(|path| parse_container(path).map(|c| (c, parse_pod_uid(path))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::mounts::CgroupMount;
    use std::os::unix::fs::MetadataExt;

    const ID: &str = "3f1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";

    #[test]
    fn v1_lines_name_the_container_of_a_hybrid_host() {
        let text = format!("12:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/system.slice/containerd.service\n");
        let (c, uid) = v1_container(&text).expect("container");
        assert_eq!((c.id.as_str(), c.runtime, uid), (ID, "docker", None));
        assert!(v1_container("0::/docker/x\n4:memory:/user.slice\n").is_none());
    }

    /// A fake /proc and a cgroup2 "mount" that is a plain directory, so
    /// file handles are off (on a plain file system a kernfs handle reads as
    /// a stale one, "gone"): the walk finds inodes.
    #[test]
    fn walk_fallback_v1_containers_retry_and_fast_path() {
        let root = std::env::temp_dir().join(format!("tb-cg-resolver-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let point = root.join("cg");
        std::fs::create_dir_all(point.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("proc/42")).unwrap();
        std::fs::write(root.join("proc/42/cgroup"), format!("3:cpu:/docker/{ID}\n0::/a/b\n")).unwrap();
        let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
        let mounts = CgroupMounts {
            v2: Some(CgroupMount { point: point.clone(), root: "/".into(), controllers: vec![] }),
            v1: vec![CgroupMount { point: root.join("cpu"), root: "/".into(), controllers: vec!["cpu".into()] }],
        };
        let mut r = CgroupResolver::with_mounts(mounts);
        r.proc_root = root.join("proc").to_string_lossy().into_owned();
        r.handles = false;
        let b = r.resolve(ino(&point.join("a/b")), 42).unwrap();
        assert_eq!(b.path.as_deref(), Some("/a/b"));
        assert_eq!((b.container_id.as_deref(), b.runtime), (Some(ID), Some("docker")));
        // The hit path hands out the same Arc.
        assert!(Arc::ptr_eq(&b, &r.resolve(b.id, 42).unwrap()));
        // Another process of that cgroup, outside any container.
        let other = r.resolve(b.id, 43).unwrap();
        assert_eq!((other.path.as_deref(), other.container_id.as_deref()), (Some("/a/b"), None));
        assert_eq!(r.resolve(ino(&point), 43).unwrap().path.as_deref(), Some("/"));
        assert_eq!(r.resolve(0, 43), None);
        // A directory not (yet) in the tree: no path, counted per event,
        // cached; moved in (same inode), it is found once RETRY_AFTER has
        // passed (forced here).
        std::fs::create_dir_all(root.join("elsewhere/late")).unwrap();
        let late = ino(&root.join("elsewhere/late"));
        assert_eq!(r.resolve(late, 43).unwrap().path, None);
        std::fs::rename(root.join("elsewhere/late"), point.join("late")).unwrap();
        assert_eq!(r.resolve(late, 43).unwrap().path, None);
        assert_eq!(r.unresolved(), 2);
        r.by_id.get_mut(&late).unwrap().retry_at = Some(Instant::now());
        assert_eq!(r.resolve(late, 43).unwrap().path.as_deref(), Some("/late"));
        assert_eq!(r.unresolved(), 2);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_only_reports_no_path_and_counts_nothing() {
        let mounts = CgroupMounts::parse("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n");
        let mut r = CgroupResolver::with_mounts(mounts);
        r.proc_root = "/nonexistent".into();
        let i = r.resolve(1, 1).unwrap();
        assert_eq!((i.path.as_deref(), i.container_id.as_deref()), (None, None));
        assert_eq!(r.unresolved(), 0);
    }
}
