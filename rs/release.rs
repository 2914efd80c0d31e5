//! Stopping a tracer's handlers without waiting for its tracepoints to
//! detach, and detaching them on a thread of their own.
//!
//! Detaching a perf-event tracepoint waits for an RCU grace period while the
//! kernel holds `event_mutex`, so tracepoints detach one after another and
//! ten of them take most of a second. What `stop()` and `close()` promise is
//! only that nothing more is recorded and that the counters are final; for
//! that one grace period is enough: the handlers are switched off
//! (`cfg.stopped`), and `membarrier(MEMBARRIER_CMD_GLOBAL)` (an RCU grace
//! period) waits for every handler run that began before the switch. BPF
//! tracing programs run inside an RCU read-side section (`trace_call_bpf`),
//! so once it returns no handler can still write a record or a counter.
//! The links and the rest of the kernel objects are then dropped by the
//! release worker.
//!
//! One worker per process takes the releases in the order they were made,
//! and a new tracer waits until it is idle before it loads (`wait_idle`):
//! the kernel sees the same sequence of attaches and detaches as if they
//! were done inline (detaching from several threads at once hung a
//! PREEMPT_RT kernel). At process exit the kernel detaches whatever the
//! worker had not reached yet. Its state is reached through atomics only,
//! and belongs to the process that made it: a forked child, which has no
//! worker thread, starts its own and does not wait for its parent's.

use crate::fork_guard::current_pid;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// The release worker of one process.
struct Worker {
    pid: i32,
    jobs: Sender<Job>,
    /// Releases handed over and not finished yet.
    pending: &'static AtomicUsize,
}

/// The current process's worker (null until its first release). Workers are
/// never freed: one per process that ever released a tracer.
static WORKER: AtomicPtr<Worker> = AtomicPtr::new(std::ptr::null_mut());

/// How often `wait_idle` looks again.
const IDLE_POLL: Duration = Duration::from_millis(1);

/// Waits for every handler run that began before now to finish. False if
/// the kernel cannot (nohz_full CPUs make `MEMBARRIER_CMD_GLOBAL` fail):
/// then only detaching gives that guarantee.
pub(crate) fn wait_for_handlers() -> bool {
    // SAFETY: a system call with integer arguments only.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, libc::MEMBARRIER_CMD_GLOBAL, 0, 0) };
    rc == 0
}

/// This process's worker, if it has one.
fn worker() -> Option<&'static Worker> {
    // SAFETY: a non-null pointer is a leaked Box, never freed.
    let w = unsafe { WORKER.load(Ordering::Acquire).as_ref() }?;
    (w.pid == current_pid()).then_some(w)
}

/// Starts this process's worker; None if no thread can be started.
fn start_worker() -> Option<&'static Worker> {
    let pending: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
    let (jobs, queue) = channel::<Job>();
    std::thread::Builder::new()
        .name("tracer-release".into())
        .spawn(move || {
            for job in queue {
                // A panic in a drop must not stop later releases or leave
                // `pending` up (a new tracer would wait forever).
                let _ = catch_unwind(AssertUnwindSafe(job));
                pending.fetch_sub(1, Ordering::AcqRel);
            }
        })
        .ok()?;
    let fresh = Box::into_raw(Box::new(Worker { pid: current_pid(), jobs, pending }));
    let seen = WORKER.load(Ordering::Acquire);
    // SAFETY: as in `worker`.
    let current = unsafe { seen.as_ref() }.is_some_and(|w| w.pid == current_pid());
    if !current && WORKER.compare_exchange(seen, fresh, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        // SAFETY: just installed; leaked for good.
        return Some(unsafe { &*fresh });
    }
    // Another thread of this process installed one first: use it (the
    // thread started above ends when its channel's sender, dropped here, goes).
    // SAFETY: `fresh` was never shared.
    drop(unsafe { Box::from_raw(fresh) });
    worker()
}

/// Drops `objects` on this process's release worker, after every release
/// made before; inline if no worker thread can be started.
pub(crate) fn release<T: Send + 'static>(objects: T) {
    let Some(w) = worker().or_else(start_worker) else {
        drop(objects);
        return;
    };
    w.pending.fetch_add(1, Ordering::AcqRel);
    if let Err(returned) = w.jobs.send(Box::new(move || drop(objects))) {
        // The worker thread is gone (it never ends by itself): drop here.
        w.pending.fetch_sub(1, Ordering::AcqRel);
        (returned.0)();
    }
}

/// Blocks until every release this process made has finished.
pub(crate) fn wait_idle() {
    if let Some(w) = worker() {
        while w.pending.load(Ordering::Acquire) > 0 {
            std::thread::sleep(IDLE_POLL);
        }
    }
}
