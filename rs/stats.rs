//! Counters: every loss is counted somewhere.

/// Userspace-side counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserCounters {
    /// Events handed to the caller (returned by `poll`).
    pub delivered: u64,
    /// Events captured but never handed out: still queued or unread in the
    /// kernel buffers when the tracer was closed.
    pub discarded: u64,
    /// Records that could not be decoded (malformed; never expected).
    pub decode_errors: u64,
    /// Records whose payload bytes were overwritten while read (never
    /// expected: the producer respects the consumer's position).
    pub overwritten: u64,
    /// Records missing from the per-CPU sequence (each lost record is also
    /// counted by the kernel, e.g. as ring_full).
    pub seq_gaps: u64,
    /// Events whose cgroup id could not be resolved to a path (the cgroup
    /// was removed first): their `cgroup` has no path.
    pub cgroup_unresolved: u64,
    /// proc/snapshot events made (`Config::snapshot`).
    pub snapshot_events: u64,
    /// Their fields lost because /proc no longer had the process or would
    /// not tell (`<field>_lost`: "exited", "unreadable").
    pub snapshot_lost: u64,
    /// Their fields cut at their limit (argv beyond argv_max).
    pub snapshot_truncated: u64,
    /// Existing descendants of follow-mode targets added to the pid filter
    /// by the snapshot (children forked later count as `followed`).
    pub snapshot_followed: u64,
    /// Processes /proc lists, started before the snapshot and selected by
    /// the filters, that the kernel's task walk did not report (hidden from
    /// BPF, as some sandboxes hide their pid 1): they have no event.
    pub snapshot_unseen: u64,
}

impl UserCounters {
    /// Adds what the process snapshot counted.
    pub(crate) fn add_snapshot(&mut self, c: &crate::snapshot::SnapshotCounts) {
        self.snapshot_events += c.events;
        self.snapshot_lost += c.lost;
        self.snapshot_truncated += c.truncated;
        self.snapshot_followed += c.followed;
        self.snapshot_unseen += c.unseen;
    }
}

/// A snapshot of every counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Kernel counters, summed over CPUs, in KERNEL_STATS order.
    pub kernel: Vec<(&'static str, u64)>,
    pub user: UserCounters,
    /// Events decoded but not yet returned by poll().
    pub queued: u64,
    /// Bytes those events hold (bounded by `Config::queue_bytes`).
    pub queued_bytes: u64,
    /// The most `queued_bytes` has been: how close the queue came to full.
    pub queue_peak_bytes: u64,
}

impl Stats {
    /// All counters as (name, value), kernel ones first.
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.kernel.clone();
        v.extend([
            ("delivered", self.user.delivered),
            ("discarded", self.user.discarded),
            ("decode_errors", self.user.decode_errors),
            ("overwritten", self.user.overwritten),
            ("seq_gaps", self.user.seq_gaps),
            ("cgroup_unresolved", self.user.cgroup_unresolved),
            ("snapshot_events", self.user.snapshot_events),
            ("snapshot_lost", self.user.snapshot_lost),
            ("snapshot_truncated", self.user.snapshot_truncated),
            ("snapshot_followed", self.user.snapshot_followed),
            ("snapshot_unseen", self.user.snapshot_unseen),
            ("queued", self.queued),
            ("queued_bytes", self.queued_bytes),
            ("queue_peak_bytes", self.queue_peak_bytes),
        ]);
        v
    }

    /// A snapshot from counters by name, as `pairs()` gives them (a counter
    /// missing is 0; other names are ignored).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> Stats {
        let mut s = Stats {
            kernel: crate::types::KERNEL_STATS.iter().map(|n| (*n, 0)).collect(),
            user: UserCounters::default(),
            queued: 0,
            queued_bytes: 0,
            queue_peak_bytes: 0,
        };
        for (name, v) in pairs {
            if let Some(k) = s.kernel.iter_mut().find(|(n, _)| *n == name) {
                k.1 = v;
                continue;
            }
            match name {
                "delivered" => s.user.delivered = v,
                "discarded" => s.user.discarded = v,
                "decode_errors" => s.user.decode_errors = v,
                "overwritten" => s.user.overwritten = v,
                "seq_gaps" => s.user.seq_gaps = v,
                "cgroup_unresolved" => s.user.cgroup_unresolved = v,
                "snapshot_events" => s.user.snapshot_events = v,
                "snapshot_lost" => s.user.snapshot_lost = v,
                "snapshot_truncated" => s.user.snapshot_truncated = v,
                "snapshot_followed" => s.user.snapshot_followed = v,
                "snapshot_unseen" => s.user.snapshot_unseen = v,
                "queued" => s.queued = v,
                "queued_bytes" => s.queued_bytes = v,
                "queue_peak_bytes" => s.queue_peak_bytes = v,
                _ => {}
            }
        }
        s
    }

    /// One counter by name.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.pairs().into_iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Events that were produced but will never be delivered.
    pub fn events_lost(&self) -> u64 {
        ["ring_full", "busy"].iter().filter_map(|n| self.get(n)).sum::<u64>()
            + self.user.decode_errors
            + self.user.overwritten
            + self.user.discarded
    }
}
