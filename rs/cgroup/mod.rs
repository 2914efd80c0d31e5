//! Cgroups: where they are mounted, which cgroup an event's cgroup id is
//! (its path and container), and the cgroup filter's paths.

mod container;
mod escape;
pub mod filter;
mod lookup;
mod mounts;
mod resolver;

pub use container::{parse_container, parse_pod_uid, Container};
pub use filter::{CgroupFilterError, CGROUP_FILTERS_MAX};
pub use mounts::{CgroupMount, CgroupMounts};
pub use resolver::{same_cgroup, v1_container, CgroupInfo, CgroupResolver, CACHE_MAX, PID_TTL, RETRY_AFTER};
