//! The consuming thread's CPU priority while the queue is light
//! (`Config::yield_cpu`).
//!
//! A tracer with a reader thread runs at least three threads against a
//! burst: the traced writer, the reader (nice -10, draining the kernel
//! buffers) and the thread that polls and formats. Where CPUs are fewer than
//! that, the formatter at the writer's priority shares the writer's CPU and
//! halves its speed (the scheduler puts it there to balance the reader's
//! weight), though the queue could hold what it formats until the burst
//! ends. So, while the queue holds less than a quarter of its bound, the
//! polling thread runs as SCHED_IDLE: it takes only CPU time nothing else
//! wants, and its CPU counts as idle where the scheduler places a waking
//! reader. Once the queue holds a quarter of its bound, the thread gets its
//! own policy back and keeps it until the queue is down to an eighth, so
//! that a consumer behind for long catches up at its usual priority instead
//! of letting the queue fill.

/// Back to the thread's own policy at this share of the queue's bound...
const NORMAL_AT_DIVISOR: usize = 4;
/// ...and idle again below this one.
const IDLE_BELOW_DIVISOR: usize = 8;

/// CAP_SYS_NICE's bit in the capability sets (linux/capability.h): leaving
/// SCHED_IDLE needs it (or an RLIMIT_NICE that allows it).
const CAP_SYS_NICE: u32 = 23;

/// The policy switches of the thread that polls.
#[derive(Debug, Default)]
pub(crate) struct CpuYield {
    /// The thread being switched and whether it is idle now; None before
    /// the first poll and when switching is off.
    thread: Option<Yielding>,
    /// Switching now.
    enabled: bool,
    /// Switching is possible: a reader thread drains the kernel buffers and
    /// the process may leave SCHED_IDLE again.
    available: bool,
}

#[derive(Debug)]
struct Yielding {
    tid: libc::pid_t,
    /// SCHED_IDLE now (set by us).
    idle: bool,
    /// The thread had another policy than SCHED_OTHER (chosen by its
    /// owner): it is left alone.
    hands_off: bool,
}

impl CpuYield {
    /// Switching as `Config::yield_cpu` asks, if this process may leave
    /// SCHED_IDLE again (else None, with why, for the tracer's notes).
    pub(crate) fn new(asked: bool, reader_thread: bool) -> (CpuYield, Option<String>) {
        // Without the reader thread the poller drains the kernel buffers
        // itself: it must never be idle.
        let available = reader_thread && has_cap_sys_nice();
        let why = (asked && reader_thread && !available).then(|| {
            "yield_cpu: without CAP_SYS_NICE the polling thread could not leave SCHED_IDLE again, \
             so it keeps its priority"
                .to_string()
        });
        (CpuYield { thread: None, enabled: asked && available, available }, why)
    }

    /// Switches from the next poll on (if possible), or gives the thread its
    /// policy back and stops switching; returns whether it switches.
    pub(crate) fn set_enabled(&mut self, on: bool) -> bool {
        if !on {
            self.restore();
        }
        self.enabled = on && self.available;
        self.enabled
    }

    /// Called by the polling thread before it takes from the queue, which
    /// holds `queued` of its `limit` bytes.
    pub(crate) fn adjust(&mut self, queued: usize, limit: usize) {
        if !self.enabled {
            return;
        }
        let tid = current_tid();
        if self.thread.as_ref().is_some_and(|t| t.tid != tid) {
            self.restore(); // another thread polls now
        }
        let t = self.thread.get_or_insert_with(|| Yielding { tid, idle: false, hands_off: policy(tid) != Some(libc::SCHED_OTHER) });
        if t.hands_off {
            return;
        }
        let want_idle = if t.idle { queued < limit / NORMAL_AT_DIVISOR } else { queued < limit / IDLE_BELOW_DIVISOR };
        if want_idle != t.idle {
            if set_policy(tid, if want_idle { libc::SCHED_IDLE } else { libc::SCHED_OTHER }) {
                t.idle = want_idle;
            } else if want_idle {
                t.hands_off = true; // refused: leave it as it is
            } else {
                // Cannot leave SCHED_IDLE (not reached with CAP_SYS_NICE):
                // stop switching rather than retry on every poll.
                self.enabled = false;
                self.available = false;
            }
        }
    }

    /// Gives the thread its own policy back (the tracer closes, or another
    /// thread polls).
    pub(crate) fn restore(&mut self) {
        if let Some(t) = self.thread.take() {
            if t.idle {
                set_policy(t.tid, libc::SCHED_OTHER);
            }
        }
    }

    /// Whether the polling thread is SCHED_IDLE now.
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| t.idle)
    }
}

fn current_tid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::gettid() }
}

/// The thread's policy.
fn policy(tid: libc::pid_t) -> Option<libc::c_int> {
    // SAFETY: a plain system call on a thread of this process.
    let p = unsafe { libc::sched_getscheduler(tid) };
    (p >= 0).then_some(p)
}

/// SCHED_OTHER keeps the thread's nice value: only the policy changes.
/// (SCHED_RESET_ON_FORK would not help: it resets real-time policies and
/// negative nice values only, so a process or thread the poller starts
/// while idle is idle too; the front ends start theirs before polling.)
fn set_policy(tid: libc::pid_t, policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a plain system call on a thread of this process, with a valid param.
    unsafe { libc::sched_setscheduler(tid, policy, &param) == 0 }
}

/// CAP_SYS_NICE in this process's effective set (/proc/self/status).
fn has_cap_sys_nice() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_with_hysteresis_and_restores() {
        if !has_cap_sys_nice() {
            eprintln!("skipped: needs CAP_SYS_NICE");
            return;
        }
        let handle = std::thread::spawn(|| {
            let tid = current_tid();
            let (mut y, why) = CpuYield::new(true, true);
            assert!(why.is_none());
            let limit = 800;
            y.adjust(99, limit); // below an eighth: idle
            assert_eq!(policy(tid), Some(libc::SCHED_IDLE));
            y.adjust(199, limit); // below a quarter: still idle
            assert!(y.is_idle());
            y.adjust(200, limit); // a quarter: its own policy
            assert_eq!(policy(tid), Some(libc::SCHED_OTHER));
            y.adjust(100, limit); // not yet below an eighth
            assert!(!y.is_idle());
            y.adjust(99, limit);
            assert!(y.is_idle());
            y.restore();
            assert_eq!(policy(tid), Some(libc::SCHED_OTHER));
        });
        handle.join().unwrap();
    }

    #[test]
    fn leaves_a_chosen_policy_alone() {
        if !has_cap_sys_nice() {
            eprintln!("skipped: needs CAP_SYS_NICE");
            return;
        }
        let handle = std::thread::spawn(|| {
            let tid = current_tid();
            assert!(set_policy(tid, libc::SCHED_BATCH));
            let (mut y, _) = CpuYield::new(true, true);
            y.adjust(0, 800);
            assert_eq!(policy(tid), Some(libc::SCHED_BATCH));
            assert!(!y.is_idle());
        });
        handle.join().unwrap();
    }

    #[test]
    fn off_without_reader_thread() {
        let (mut y, why) = CpuYield::new(true, false);
        assert!(why.is_none());
        y.adjust(0, 800);
        assert!(!y.is_idle());
        assert!(!y.set_enabled(true));
        y.adjust(0, 800);
        assert!(!y.is_idle());
    }

    #[test]
    fn switched_on_and_off_while_running() {
        if !has_cap_sys_nice() {
            eprintln!("skipped: needs CAP_SYS_NICE");
            return;
        }
        let handle = std::thread::spawn(|| {
            let tid = current_tid();
            let (mut y, _) = CpuYield::new(false, true);
            y.adjust(0, 800);
            assert_eq!(policy(tid), Some(libc::SCHED_OTHER));
            assert!(y.set_enabled(true));
            y.adjust(0, 800);
            assert_eq!(policy(tid), Some(libc::SCHED_IDLE));
            assert!(!y.set_enabled(false)); // gives the policy back at once
            assert_eq!(policy(tid), Some(libc::SCHED_OTHER));
            y.adjust(0, 800);
            assert_eq!(policy(tid), Some(libc::SCHED_OTHER));
        });
        handle.join().unwrap();
    }
}
