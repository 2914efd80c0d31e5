//! Which processes a snapshot reports, in which order: parents before
//! children, and in follow mode the targets' existing descendants.

use super::record::SnapRecord;
use std::collections::{HashMap, HashSet};

/// The targets and all their descendants among `recs`.
pub(crate) fn with_descendants(recs: &[SnapRecord], targets: &[u32]) -> HashSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for r in recs {
        if r.pid != r.ppid {
            children.entry(r.ppid).or_default().push(r.pid);
        }
    }
    let mut found: HashSet<u32> = targets.iter().copied().collect();
    let mut todo: Vec<u32> = targets.to_vec();
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if found.insert(c) {
                todo.push(c);
            }
        }
    }
    found
}

/// Sorts `recs` by start time then pid, then moves any process that would
/// come before its parent right after it: a parent normally started first,
/// but a consumer building the tree must never meet a child first.
pub(crate) fn parents_first(mut recs: Vec<SnapRecord>) -> Vec<SnapRecord> {
    recs.sort_by_key(|r| (r.start_ns, r.pid));
    let index: HashMap<u32, usize> = recs.iter().enumerate().map(|(i, r)| (r.pid, i)).collect();
    let mut placed = vec![false; recs.len()];
    let mut order: Vec<usize> = Vec::with_capacity(recs.len());
    for i in 0..recs.len() {
        // The chain of ancestors not placed yet, placed oldest first.
        let mut chain = Vec::new();
        let mut j = i;
        while !placed[j] && !chain.contains(&j) {
            chain.push(j);
            match index.get(&recs[j].ppid) {
                Some(&p) if p != j => j = p,
                _ => break,
            }
        }
        for &k in chain.iter().rev() {
            if !placed[k] {
                placed[k] = true;
                order.push(k);
            }
        }
    }
    let mut slots: Vec<Option<SnapRecord>> = recs.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pid: u32, ppid: u32, start_ns: u64) -> SnapRecord {
        SnapRecord {
            upid: 0,
            uppid: 0,
            start_ns,
            cgroup_id: 0,
            pid,
            ppid,
            ns_pid: pid,
            uid: 0,
            gid: 0,
            kernel_thread: false,
            cpu: 0,
            comm: [0; crate::types::COMM_LEN],
        }
    }

    fn pids(recs: &[SnapRecord]) -> Vec<u32> {
        recs.iter().map(|r| r.pid).collect()
    }

    #[test]
    fn sorted_by_start_then_pid() {
        let got = parents_first(vec![rec(30, 1, 5), rec(1, 0, 1), rec(20, 1, 5), rec(10, 1, 3)]);
        assert_eq!(pids(&got), [1, 10, 20, 30]);
    }

    #[test]
    fn a_child_never_comes_before_its_parent() {
        // 50's parent 60 has a later start (e.g. clocks of a restored
        // checkpoint): 60 and its own parent 70 come first.
        let got = parents_first(vec![rec(50, 60, 1), rec(60, 70, 2), rec(70, 1, 3), rec(1, 0, 0)]);
        assert_eq!(pids(&got), [1, 70, 60, 50]);
        // A cycle (never in a real tree) places each process once.
        let got = parents_first(vec![rec(5, 6, 1), rec(6, 5, 2)]);
        assert_eq!(pids(&got), [6, 5]);
    }

    #[test]
    fn descendants_of_the_targets_only() {
        let recs = [rec(1, 0, 0), rec(10, 1, 1), rec(11, 10, 2), rec(12, 11, 3), rec(20, 1, 4), rec(21, 20, 5)];
        let mut got: Vec<u32> = with_descendants(&recs, &[10]).into_iter().collect();
        got.sort();
        assert_eq!(got, [10, 11, 12]);
    }
}
