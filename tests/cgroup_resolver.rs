//! Issue 18: cgroup ids resolved on the real kernel (needs root: it makes
//! cgroup v2 directories under the cgroup2 mount found in mountinfo).
//!
//! Run: `cargo test --release --test cgroup_resolver`.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use tracer_ebpf::cgroup::{CgroupMounts, CgroupResolver};

/// A cgroup directory made for a test, removed even when the test fails.
struct TempCgroup(PathBuf);

impl Drop for TempCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn cgroup2_point() -> PathBuf {
    CgroupMounts::detect().v2.expect("a cgroup2 mount in /proc/self/mountinfo").point
}

#[test]
fn a_new_cgroup_resolves_to_its_exact_path_and_a_removed_one_is_counted() {
    let point = cgroup2_point();
    let name = format!("tb-resolver-{}", std::process::id());
    let dir = TempCgroup(point.join(&name));
    std::fs::create_dir(&dir.0).expect("mkdir under the cgroup2 mount (root needed)");
    let child = TempCgroup(dir.0.join("child one"));
    std::fs::create_dir(&child.0).unwrap();
    let id = std::fs::metadata(&child.0).unwrap().ino();

    let mut r = CgroupResolver::new();
    let info = r.resolve(id, std::process::id()).expect("an id");
    assert_eq!(info.id, id);
    assert_eq!(info.path.as_deref(), Some(format!("/{name}/child one").as_str()));
    assert_eq!(info.container_id, None);
    let root_id = std::fs::metadata(&point).unwrap().ino();
    assert_eq!(r.resolve(root_id, 1).unwrap().path.as_deref(), Some("/"));
    assert_eq!(r.unresolved(), 0);
    assert!(r.uses_file_handles(), "as root on Linux >= 5.5, ids resolve by kernfs file handle");

    // Removed before it was ever resolved: no path, counted, no error.
    let gone = TempCgroup(dir.0.join("gone"));
    std::fs::create_dir(&gone.0).unwrap();
    let gone_id = std::fs::metadata(&gone.0).unwrap().ino();
    drop(gone);
    let info = r.resolve(gone_id, std::process::id()).expect("an id");
    assert_eq!((info.id, info.path.as_deref()), (gone_id, None));
    assert_eq!(r.unresolved(), 1);
    // The resolved one is still served, from the cache.
    assert_eq!(r.resolve(id, std::process::id()).unwrap().path.as_deref(), Some(format!("/{name}/child one").as_str()));
    drop(child);
}
