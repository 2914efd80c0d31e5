//! Where the cgroup hierarchies are mounted, from /proc/self/mountinfo:
//! the cgroup2 mount (pure v2 hosts: /sys/fs/cgroup; hybrid hosts:
//! /sys/fs/cgroup/unified, with no controllers; v1-only hosts: none) and
//! the v1 hierarchies beside it. Never a hard-coded path.

use std::path::PathBuf;

/// One mounted cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    /// The mount point ("/sys/fs/cgroup/unified").
    pub point: PathBuf,
    /// The directory of the hierarchy mounted there ("/" unless a cgroup
    /// namespace or a bind mount shows only part of it).
    pub root: String,
    /// v1 only: its controllers and `name=` options ("cpu", "name=systemd").
    pub controllers: Vec<String>,
}

/// The cgroup layout of this host, as this process sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// The cgroup2 mount, if any (the first whose root is the hierarchy's
    /// root, else the first).
    pub v2: Option<CgroupMount>,
    /// The cgroup v1 hierarchies.
    pub v1: Vec<CgroupMount>,
}

impl CgroupMounts {
    /// Reads /proc/self/mountinfo; an unreadable one gives no mounts.
    pub fn detect() -> CgroupMounts {
        std::fs::read_to_string("/proc/self/mountinfo").map(|s| Self::parse(&s)).unwrap_or_default()
    }

    /// Parses the text of a mountinfo file; lines that are not cgroup
    /// mounts, or malformed, are skipped.
    pub fn parse(mountinfo: &str) -> CgroupMounts {
        let mut out = CgroupMounts::default();
        let mut v2: Vec<CgroupMount> = Vec::new();
        for line in mountinfo.lines() {
            let Some((fstype, m)) = parse_line(line) else { continue };
            match fstype.as_str() {
                "cgroup2" => v2.push(m),
                "cgroup" => out.v1.push(m),
                _ => {}
            }
        }
        out.v2 = v2.iter().find(|m| m.root == "/").or(v2.first()).cloned();
        out
    }

    /// A layout of cgroup v1 only (no cgroup2 mounted).
    pub fn v1_only(&self) -> bool {
        self.v2.is_none() && !self.v1.is_empty()
    }
}

/// One line: `id parent major:minor root point options [optional...] - fstype source superoptions`.
/// The optional fields are any number of words, ended by a lone "-".
fn parse_line(line: &str) -> Option<(String, CgroupMount)> {
    let mut words = line.split(' ');
    let _id = words.next()?;
    let _parent = words.next()?;
    let _dev = words.next()?;
    let root = unescape(words.next()?);
    let point = unescape(words.next()?);
    let _options = words.next()?;
    words.by_ref().find(|w| *w == "-")?;
    let fstype = unescape(words.next()?);
    let _source = words.next()?;
    let superopts = words.next().unwrap_or("");
    let controllers = if fstype == "cgroup" {
        superopts.split(',').filter(|o| !matches!(*o, "rw" | "ro") && !o.is_empty()).map(str::to_string).collect()
    } else {
        Vec::new()
    };
    Some((fstype, CgroupMount { point: PathBuf::from(point), root, controllers }))
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash); anything else is kept as is.
pub(crate) fn unescape(s: &str) -> String {
    super::escape::decode(s, "\\", 3, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_finds_the_unified_mount_and_the_v1_controllers() {
        let m = CgroupMounts::parse(HYBRID);
        let v2 = m.v2.expect("cgroup2");
        assert_eq!(v2.point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(v2.root, "/");
        let ctrls: Vec<Vec<String>> = m.v1.iter().map(|m| m.controllers.clone()).collect();
        assert_eq!(ctrls, vec![vec!["cpu".to_string()], vec!["memory".into()], vec!["xattr".into(), "name=systemd".into()]]);
        assert!(!CgroupMounts::parse(HYBRID).v1_only());
    }

    #[test]
    fn pure_v2_with_optional_fields() {
        let m = CgroupMounts::parse(
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        assert_eq!(m.v2.unwrap().point, PathBuf::from("/sys/fs/cgroup"));
        assert!(m.v1.is_empty());
    }

    #[test]
    fn v1_only_has_no_cgroup2() {
        let m = CgroupMounts::parse("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n");
        assert!(m.v2.is_none());
        assert!(m.v1_only());
        assert_eq!(m.v1[0].controllers, vec!["cpu".to_string(), "cpuacct".into()]);
    }

    #[test]
    fn escapes_and_namespaced_roots() {
        let m = CgroupMounts::parse(
            "1 2 0:1 /a\\040b / rw - ext4 /dev/sda rw\n\
             7 6 0:40 /kubepods/pod1 /my\\040cg\\134x rw,relatime - cgroup2 cgroup2 rw\n\
             8 6 0:41 / /other rw,relatime - cgroup2 cgroup2 rw\n",
        );
        // The mount of the whole hierarchy is preferred.
        assert_eq!(m.v2.as_ref().unwrap().point, PathBuf::from("/other"));
        let m = CgroupMounts::parse("7 6 0:40 /kubepods/pod1 /my\\040cg\\134x rw,relatime - cgroup2 cgroup2 rw\n");
        let v2 = m.v2.unwrap();
        assert_eq!(v2.point, PathBuf::from("/my cg\\x"));
        assert_eq!(v2.root, "/kubepods/pod1");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let m = CgroupMounts::parse("garbage\n1 2 3\n41 31 0:38 / /u rw - cgroup2\n41 31 0:38 / /sys/fs/cgroup rw no-dash cgroup2 x\n");
        assert_eq!(m, CgroupMounts::default());
        assert_eq!(unescape("\\04"), "\\04");
        assert_eq!(unescape("a\\012b\\011"), "a\nb\t");
    }
}
