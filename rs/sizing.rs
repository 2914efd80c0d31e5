//! Default buffer sizes, from the memory this process may really use: the
//! host's RAM, or its cgroup's memory limit when that is lower (BPF maps are
//! charged to the cgroup that creates them, so a tracer sized from host RAM
//! would fail or be OOM-killed in a small container).
//!
//! The rule, with M = min(physical RAM, cgroup memory limit):
//! - kernel memory budget K = M / 384, between 12 and 64 MiB;
//! - ring buffer: the power of two nearest K / 4 (1 to 16 MiB): about
//!   75,000 records of up to 224 bytes. A record that does not fit loses
//!   the whole event (`ring_full`), a content that does not fit the area
//!   only itself (`payload_full`, flagged in its event), so the ring gets a
//!   quarter: with 8 MiB a burst of 50,000 writes of 4 KiB from 4 threads
//!   lost whole events in 9 of 15 runs here (bench/README.md);
//! - filter and control maps: under 1 MiB (the pid table grows with use);
//! - payload area: the rest of K, counted per possible CPU, at least 2 MiB
//!   per CPU (so beyond about 20 CPUs, K grows by 2 MiB per CPU). It is one
//!   pool of chunks that any CPU may take all of (see `payload_area`);
//! - userspace queue: M / 8, between 16 MiB and 1 GiB: the elastic buffer
//!   that absorbs bursts while a consumer is slow. The kernel area only has
//!   to hold what the reader thread cannot move out while a burst runs.

use crate::types::{CHUNK_ELEM_SIZE, CHUNK_SIZE};

const MIB: u64 = 1 << 20;
/// Memory of the maps other than the ring and the payload area, rounded up.
const OTHER_MAPS: u64 = MIB;
/// Payload area per CPU at least: room for two largest fields (1 MiB).
const MIN_AREA_PER_CPU: u64 = 2 * MIB;

/// The memory a tracer sizes itself from, and where that figure came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Physical RAM in bytes (0 if unknown).
    pub host: u64,
    /// The lowest memory limit of this process's cgroup and its ancestors,
    /// with the file it was read from (cgroup v2 `memory.max` or v1
    /// `memory.limit_in_bytes`); None if unlimited or unknown.
    pub cgroup: Option<(u64, String)>,
}

impl MemoryBudget {
    /// Reads RAM and the cgroup limit of the calling process.
    pub fn detect() -> MemoryBudget {
        let cgroup = (|| {
            let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            cgroup_limit(&own, &mounts, |p| std::fs::read_to_string(p).ok())
        })();
        MemoryBudget { host: physical_memory(), cgroup }
    }

    /// M: the lower of RAM and the cgroup limit (1 GiB if neither is known).
    pub fn usable(&self) -> u64 {
        let host = if self.host == 0 { 1 << 30 } else { self.host };
        self.cgroup.as_ref().map_or(host, |(l, _)| host.min(*l))
    }

    /// Kernel memory budget K.
    fn kernel(&self) -> u64 {
        (self.usable() / 384).clamp(12 * MIB, 64 * MIB)
    }

    /// Default ring-buffer bytes: the power of two nearest K / 4.
    pub fn ring_bytes(&self) -> usize {
        let k = self.kernel() / 4;
        let below = 1u64 << (63 - k.leading_zeros());
        let nearest = if k - below >= below / 2 { below * 2 } else { below };
        nearest.clamp(MIB, 16 * MIB) as usize
    }

    /// Default payload-area bytes per possible CPU (whole chunks).
    pub fn payload_bytes_per_cpu(&self, ncpus: usize) -> usize {
        let ncpus = ncpus.max(1) as u64;
        let area = self.kernel().saturating_sub(self.ring_bytes() as u64 + OTHER_MAPS);
        // Each chunk of CHUNK_SIZE data bytes takes CHUNK_ELEM_SIZE in the map.
        let chunks = (area / ncpus / CHUNK_ELEM_SIZE as u64).max(MIN_AREA_PER_CPU / CHUNK_SIZE as u64);
        chunks as usize * CHUNK_SIZE
    }

    /// Default userspace queue bytes.
    pub fn queue_bytes(&self) -> usize {
        (self.usable() / 8).clamp(16 * MIB, 1 << 30) as usize
    }
}

/// Physical memory in bytes (0 if unknown).
pub fn physical_memory() -> u64 {
    // SAFETY: sysinfo fills the struct it is given.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    if unsafe { libc::sysinfo(&mut si) } != 0 {
        return 0;
    }
    (si.totalram as u64).saturating_mul(si.mem_unit.max(1) as u64)
}

/// A mounted cgroup hierarchy, as the limit search needs it.
struct CgroupMount {
    /// The directory of the hierarchy that is mounted there.
    root: String,
    point: String,
    v2: bool,
    /// A v1 hierarchy with the memory controller.
    memory: bool,
}

/// The hierarchies of `mountinfo`, parsed by `cgroup::CgroupMounts` (one
/// parser for the whole crate: escapes, optional fields).
fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let m = crate::cgroup::CgroupMounts::parse(mountinfo);
    let v2 = m.v2.into_iter().map(|h| (h, true));
    v2.chain(m.v1.into_iter().map(|h| (h, false)))
        .map(|(h, v2)| CgroupMount {
            memory: !v2 && h.controllers.iter().any(|c| c == "memory"),
            point: h.point.to_string_lossy().into_owned(),
            root: h.root,
            v2,
        })
        .collect()
}

/// The lowest memory limit on the way from this process's cgroup up to the
/// root of each hierarchy that has the memory controller (cgroup v2, or v1
/// `memory`), given /proc/self/cgroup, /proc/self/mountinfo and a file
/// reader. Works on pure v2 hosts (cgroup2 at /sys/fs/cgroup), hybrid ones
/// (cgroup2 without controllers at /sys/fs/cgroup/unified, v1 beside it) and
/// v1-only ones, and inside a cgroup namespace (mount root not "/").
pub fn cgroup_limit(own: &str, mountinfo: &str, read: impl Fn(&str) -> Option<String>) -> Option<(u64, String)> {
    let mounts = cgroup_mounts(mountinfo);
    let mut best: Option<(u64, String)> = None;
    for line in own.lines() {
        // hierarchy-id:controllers:path
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let v2 = id == "0" && ctrls.is_empty();
        let v1_memory = ctrls.split(',').any(|c| c == "memory");
        if !v2 && !v1_memory {
            continue;
        }
        let file = if v2 { "memory.max" } else { "memory.limit_in_bytes" };
        for m in mounts.iter().filter(|m| if v2 { m.v2 } else { m.memory }) {
            // The part of our path below the mounted directory.
            let rel =
                if m.root == "/" { Some(path) } else { path.strip_prefix(m.root.as_str()).filter(|r| r.is_empty() || r.starts_with('/')) };
            let Some(rel) = rel else { continue };
            let mut dir = format!("{}{}", m.point.trim_end_matches('/'), rel.trim_end_matches('/'));
            loop {
                let at = format!("{dir}/{file}");
                if let Some(v) = read(&at).and_then(|s| parse_limit(&s)) {
                    if best.as_ref().is_none_or(|(b, _)| v < *b) {
                        best = Some((v, at));
                    }
                }
                if dir.len() <= m.point.trim_end_matches('/').len() {
                    break;
                }
                match dir.rfind('/') {
                    Some(i) if i >= m.point.trim_end_matches('/').len() => dir.truncate(i),
                    _ => break,
                }
            }
        }
    }
    best
}

/// A limit file's value; None for "max" and v1's "unlimited" (near 2^63).
fn parse_limit(s: &str) -> Option<u64> {
    let v: u64 = s.trim().parse().ok()?;
    (v < 1 << 60).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn reader(files: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = files.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |p| m.get(p).cloned()
    }

    const V2: &str = "29 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    const HYBRID: &str = "30 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                          35 25 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                          36 25 0:33 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";

    #[test]
    fn pure_v2_takes_the_lowest_limit_up_the_tree() {
        let own = "0::/user.slice/app.scope\n";
        let files =
            reader(&[("/sys/fs/cgroup/user.slice/app.scope/memory.max", "max\n"), ("/sys/fs/cgroup/user.slice/memory.max", "268435456\n")]);
        assert_eq!(cgroup_limit(own, V2, files), Some((256 << 20, "/sys/fs/cgroup/user.slice/memory.max".into())));
    }

    #[test]
    fn hybrid_reads_the_v1_memory_controller() {
        let own = "4:memory:/process_api/abc\n1:cpu:/\n0::/\n";
        let files = reader(&[
            ("/sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes", "9223372036854771712\n"),
            ("/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes", "536870912\n"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"),
        ]);
        assert_eq!(cgroup_limit(own, HYBRID, files), Some((512 << 20, "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes".into())));
    }

    #[test]
    fn unlimited_or_unreadable_is_none() {
        assert_eq!(cgroup_limit("0::/\n", V2, reader(&[("/sys/fs/cgroup/memory.max", "max")])), None);
        assert_eq!(cgroup_limit("0::/a\n", V2, reader(&[])), None);
        assert_eq!(cgroup_limit("", V2, reader(&[])), None);
        assert_eq!(cgroup_limit("0::/a\n", "garbage line\n", reader(&[("/sys/fs/cgroup/a/memory.max", "1")])), None);
    }

    #[test]
    fn cgroup_namespace_mount_root_is_stripped() {
        // Inside a container: the hierarchy mounted is /kubepods/pod1/c1.
        let mi = "29 1 0:26 /kubepods/pod1/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let own = "0::/kubepods/pod1/c1\n";
        let files = reader(&[("/sys/fs/cgroup/memory.max", "104857600")]);
        assert_eq!(cgroup_limit(own, mi, files), Some((100 << 20, "/sys/fs/cgroup/memory.max".into())));
    }

    #[test]
    fn sizes_follow_the_rule() {
        let host = |gib: u64| MemoryBudget { host: gib << 30, cgroup: None };
        // 24 GiB, 2 CPUs: K = 64 MiB, ring 16 MiB, area (64-16-1)/2 MiB per CPU in chunks.
        assert_eq!(MemoryBudget { host: 23_500 << 20, cgroup: None }.ring_bytes(), 16 << 20);
        let b = host(24);
        assert_eq!(b.ring_bytes(), 16 << 20);
        let per_cpu = b.payload_bytes_per_cpu(2);
        assert_eq!(per_cpu, (47 * MIB as usize / 2 / CHUNK_ELEM_SIZE) * CHUNK_SIZE);
        let kernel = b.ring_bytes() + 2 * per_cpu / CHUNK_SIZE * CHUNK_ELEM_SIZE + OTHER_MAPS as usize;
        assert!(kernel <= 64 << 20, "{kernel}");
        assert_eq!(b.queue_bytes(), 1 << 30);
        // A 256 MiB cgroup: K = 12 MiB, ring 4 MiB (nearest 3), (12-4-1)/2 MiB per CPU, queue 32 MiB.
        let small = MemoryBudget { host: 24 << 30, cgroup: Some((256 << 20, "x".into())) };
        assert_eq!(small.usable(), 256 << 20);
        assert_eq!(small.ring_bytes(), 4 << 20);
        assert_eq!(small.payload_bytes_per_cpu(2), 3 << 20);
        assert_eq!(small.queue_bytes(), 32 << 20);
        // Many CPUs: at least 2 MiB each.
        assert_eq!(host(256).payload_bytes_per_cpu(128), 2 << 20);
        // A cgroup limit above RAM changes nothing.
        let big = MemoryBudget { host: 24 << 30, cgroup: Some((1 << 40, "x".into())) };
        assert_eq!(big.payload_bytes_per_cpu(2), per_cpu);
    }
}
