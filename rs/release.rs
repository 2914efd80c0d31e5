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
//! The links and the rest of the kernel objects are then dropped by a
//! release thread.
//!
//! Releases of this process run one at a time, and a new tracer waits for
//! them before it loads (`wait_idle`): the kernel sees the same sequence of
//! attaches and detaches as if they were done inline (detaching from several
//! threads at once hung a PREEMPT_RT kernel). At process exit the kernel
//! detaches whatever a release thread had not reached yet.

use std::sync::{Condvar, Mutex};

/// Releases not finished yet.
static PENDING: Mutex<usize> = Mutex::new(0);
static IDLE: Condvar = Condvar::new();
/// Held while a release drops its objects: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Waits for every handler run that began before now to finish. False if
/// the kernel cannot (nohz_full CPUs make `MEMBARRIER_CMD_GLOBAL` fail):
/// then only detaching gives that guarantee.
pub(crate) fn wait_for_handlers() -> bool {
    // SAFETY: a system call with integer arguments only.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, libc::MEMBARRIER_CMD_GLOBAL, 0, 0) };
    rc == 0
}

/// Drops `objects` (links first, in the order their type drops its
/// fields) on a release thread; inline if no thread can be started.
pub(crate) fn release<T: Send + 'static>(objects: T) {
    *lock(&PENDING) += 1;
    let job = move || {
        {
            let _one_at_a_time = lock(&SERIAL);
            drop(objects);
        }
        *lock(&PENDING) -= 1;
        IDLE.notify_all();
    };
    let slot = std::sync::Arc::new(Mutex::new(Some(job)));
    let spawned = {
        let slot = std::sync::Arc::clone(&slot);
        std::thread::Builder::new().name("tracer-release".into()).spawn(move || {
            if let Some(job) = lock(&slot).take() {
                job()
            }
        })
    };
    if spawned.is_err() {
        if let Some(job) = lock(&slot).take() {
            job()
        }
    }
}

/// Blocks until every release of this process has finished.
pub(crate) fn wait_idle() {
    let mut pending = lock(&PENDING);
    while *pending > 0 {
        pending = IDLE.wait(pending).unwrap_or_else(|p| p.into_inner());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in a drop leaves nothing half-done that matters here.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
