//! Container ids and Kubernetes pod UIDs in cgroup paths, as each runtime
//! names its cgroups (cgroupfs and systemd drivers, cgroup v1 and v2 alike:
//! the names are the same in both).

/// A container found in a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// The runtime's id of the container (64 hex digits for docker,
    /// containerd, cri-o and podman; the machine name for systemd machines
    /// and LXC).
    pub id: String,
    /// "docker", "containerd", "cri-o", "podman", "machine" (systemd-machined:
    /// nspawn containers and registered VMs) or "lxc".
    pub runtime: &'static str,
    /// The Kubernetes pod's UID (with dashes) when the path has one.
    pub pod_uid: Option<String>,
}

/// The container a cgroup path belongs to, from its deepest component that
/// names one (a container's own sub-cgroups, such as podman's
/// `libpod-<id>.scope/container` or `docker-<id>.scope/init.scope`, belong
/// to it). The monitors beside containers (`crio-conmon-<id>.scope`,
/// `libpod-conmon-<id>.scope`) are not in the container: no container.
pub fn parse_container(path: &str) -> Option<Container> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let k8s = parts.iter().any(|p| p.starts_with("kubepods"));
    for (i, part) in parts.iter().enumerate().rev() {
        if part.contains("-conmon-") {
            return None;
        }
        let parent = if i > 0 { parts[i - 1] } else { "" };
        if let Some((id, runtime)) = component(part, parent, k8s) {
            return Some(Container { id, runtime, pod_uid: parse_pod_uid(path) });
        }
    }
    None
}

/// The Kubernetes pod UID in a cgroup path: systemd driver
/// `kubepods-burstable-pod<uid with underscores>.slice`, cgroupfs driver
/// `/kubepods/besteffort/pod<uid>` (guaranteed pods have no QoS level).
pub fn parse_pod_uid(path: &str) -> Option<String> {
    let mut in_kubepods = false;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part.starts_with("kubepods") {
            in_kubepods = true;
        }
        if !in_kubepods {
            continue;
        }
        let name = part.strip_suffix(".slice").unwrap_or(part);
        let Some(at) = name.rfind("pod") else { continue };
        // "pod<uid>" is the whole name (cgroupfs) or its last "-" word (systemd).
        if at != 0 && !name[..at].ends_with('-') {
            continue;
        }
        let uid = name[at + 3..].replace('_', "-");
        if is_uuid(&uid) {
            return Some(uid);
        }
    }
    None
}

/// The container one path component names: (id, runtime).
fn component(part: &str, parent: &str, k8s: bool) -> Option<(String, &'static str)> {
    const SCOPED: &[(&str, &str)] =
        &[("docker-", "docker"), ("cri-containerd-", "containerd"), ("nerdctl-", "containerd"), ("crio-", "cri-o"), ("libpod-", "podman")];
    let name = part.strip_suffix(".scope").unwrap_or(part);
    for (prefix, runtime) in SCOPED {
        if let Some(id) = name.strip_prefix(prefix).filter(|id| is_hex64(id)) {
            return Some((id.to_string(), runtime));
        }
    }
    if is_hex64(part) {
        // cgroupfs drivers: docker's /docker/<id>, and under /kubepods the
        // CRI runtime's (containerd; docker through dockershim names them
        // the same way and cannot be told apart).
        match parent {
            "docker" => return Some((part.to_string(), "docker")),
            _ if k8s => return Some((part.to_string(), "containerd")),
            _ => {}
        }
    }
    if let Some(m) = part.strip_prefix("machine-").and_then(|m| m.strip_suffix(".scope")).filter(|_| parent == "machine.slice") {
        return Some((systemd_unescape(m), "machine"));
    }
    if let Some(name) = part.strip_prefix("lxc.payload.").filter(|n| !n.is_empty()) {
        return Some((name.to_string(), "lxc"));
    }
    None
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36 && b.iter().enumerate().all(|(i, &c)| if matches!(i, 8 | 13 | 18 | 23) { c == b'-' } else { c.is_ascii_hexdigit() })
}

/// Undoes systemd's unit-name escapes (`\x2d` for "-" in machine names).
fn systemd_unescape(s: &str) -> String {
    super::escape::decode(s, "\\x", 2, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";
    const UID: &str = "5e4b6a3c-1d2f-4e8a-9b7c-0a1b2c3d4e5f";
    const UID_: &str = "5e4b6a3c_1d2f_4e8a_9b7c_0a1b2c3d4e5f";

    fn c(path: &str) -> Option<(String, &'static str, Option<String>)> {
        parse_container(path).map(|c| (c.id, c.runtime, c.pod_uid))
    }

    #[test]
    fn docker_cgroupfs_and_systemd_drivers() {
        assert_eq!(c(&format!("/docker/{ID}")), Some((ID.into(), "docker", None)));
        // v1 line of a hybrid host, and a container's own sub-cgroup.
        assert_eq!(c(&format!("/system.slice/docker-{ID}.scope")), Some((ID.into(), "docker", None)));
        assert_eq!(c(&format!("/system.slice/docker-{ID}.scope/init.scope")), Some((ID.into(), "docker", None)));
        // The daemon itself is no container.
        assert_eq!(c("/system.slice/docker.service"), None);
    }

    #[test]
    fn kubernetes_containerd_systemd_and_cgroupfs() {
        let systemd = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope");
        assert_eq!(c(&systemd), Some((ID.into(), "containerd", Some(UID.into()))));
        let guaranteed = format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope");
        assert_eq!(c(&guaranteed), Some((ID.into(), "containerd", Some(UID.into()))));
        let cgroupfs = format!("/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(c(&cgroupfs), Some((ID.into(), "containerd", Some(UID.into()))));
        assert_eq!(c(&format!("/kubepods/pod{UID}/{ID}")), Some((ID.into(), "containerd", Some(UID.into()))));
        // A pod's own cgroup: its UID, no container.
        assert_eq!(c(&format!("/kubepods/burstable/pod{UID}")), None);
        assert_eq!(parse_pod_uid(&format!("/kubepods/burstable/pod{UID}")), Some(UID.into()));
        // Nested: a kind/k3d node container running pods.
        let nested = format!("/docker/{}/kubepods/besteffort/pod{UID}/{ID}", "a".repeat(64));
        assert_eq!(c(&nested), Some((ID.into(), "containerd", Some(UID.into()))));
    }

    #[test]
    fn cri_o_and_its_monitor() {
        let p = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope");
        assert_eq!(c(&p), Some((ID.into(), "cri-o", Some(UID.into()))));
        assert_eq!(c(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}")), Some((ID.into(), "cri-o", Some(UID.into()))));
        let conmon = format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{ID}.scope");
        assert_eq!(c(&conmon), None);
        assert_eq!(parse_pod_uid(&conmon), Some(UID.into()));
    }

    #[test]
    fn podman_rootful_rootless_and_conmon() {
        assert_eq!(c(&format!("/machine.slice/libpod-{ID}.scope")), Some((ID.into(), "podman", None)));
        let rootless = format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container");
        assert_eq!(c(&rootless), Some((ID.into(), "podman", None)));
        assert_eq!(c(&format!("/libpod_parent/libpod-{ID}")), Some((ID.into(), "podman", None)));
        assert_eq!(c(&format!("/machine.slice/libpod-conmon-{ID}.scope")), None);
    }

    #[test]
    fn machines_and_lxc() {
        assert_eq!(c("/machine.slice/machine-web\\x2d1.scope/payload"), Some(("web-1".into(), "machine", None)));
        assert_eq!(c("/lxc.payload.web/init.scope"), Some(("web".into(), "lxc", None)));
    }

    #[test]
    fn plain_host_cgroups_have_no_container() {
        for p in [
            "/",
            "",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/containerd.service",
            "/system.slice/docker-short.scope",
            &format!("/elsewhere/{ID}"), // 64 hex outside docker and kubepods
            &format!("/docker/{}", &ID[..63]),
            &format!("/system.slice/docker-{}.scope", ID.to_uppercase()),
            "/kubepods/burstable/podnot-a-uid",
        ] {
            assert_eq!(c(p), None, "{p}");
        }
        assert_eq!(parse_pod_uid(&format!("/system.slice/pod{UID}")), None);
    }
}
