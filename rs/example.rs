//! Standalone Rust example: prints every captured event as one JSON line,
//! the same format as `tracer-example` and `c/example`.
//!
//! usage: example [--events A,B] [--pid PID]... [--follow] [--comm PREFIX]...
//!                [--content-fds 1,2] [--content-max BYTES] [--duration SECS]

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracer_ebpf::{Config, Tracer};

static STOP: AtomicBool = AtomicBool::new(false);

/// Longest time spent printing what was captured before a stop.
const DRAIN_TIME: Duration = Duration::from_secs(5);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn parse_args() -> Result<(Config, Option<Duration>), String> {
    let mut cfg = Config::new();
    let mut duration = None;
    let mut args = std::env::args().skip(1);
    let list = |v: String| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect::<Vec<_>>();
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--events" => {
                cfg.events = list(val("--events")?);
                if cfg.events.is_empty() {
                    return Err("--events needs at least one event name".into());
                }
            }
            "--pid" => {
                let v = val("--pid")?;
                let pid: u32 = v.parse().ok().filter(|p| (1..=1 << 22).contains(p)).ok_or(format!("--pid: not a process id: {v:?}"))?;
                cfg.pids.push(pid)
            }
            "--follow" => cfg.follow_children = true,
            "--comm" => cfg.comm.push(val("--comm")?),
            "--content-fds" => {
                let v = val("--content-fds")?;
                cfg.content_fds = list(v.clone())
                    .iter()
                    .map(|s| s.parse().map_err(|_| format!("--content-fds: not an fd: {s:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--content-max" => {
                let v = val("--content-max")?;
                cfg.content_max = v.parse().map_err(|_| format!("--content-max: not a byte count: {v:?}"))?
            }
            // Buffer sizes; out-of-range values get Config's own error.
            "--ring-bytes" => cfg.ring_bytes = bytes(val("--ring-bytes")?, "--ring-bytes")?,
            "--payload-bytes-per-cpu" => cfg.payload_bytes_per_cpu = bytes(val("--payload-bytes-per-cpu")?, "--payload-bytes-per-cpu")?,
            "--queue-bytes" => cfg.queue_bytes = bytes(val("--queue-bytes")?, "--queue-bytes")?,
            "--no-reader-thread" => cfg.reader_thread = false,
            "--duration" => {
                let v = val("--duration")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s >= 0.0 && *s < 1e9)
                    .ok_or(format!("--duration: not a number of seconds from 0 to 1e9: {v:?}"))?;
                duration = Some(Duration::from_secs_f64(secs))
            }
            "-h" | "--help" => {
                println!("usage: example [--events A,B] [--pid PID]... [--follow] [--comm PREFIX]... [--content-fds 1,2] [--content-max BYTES] [--ring-bytes N] [--payload-bytes-per-cpu N] [--queue-bytes N] [--no-reader-thread] [--duration SECS]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok((cfg, duration))
}

fn bytes(v: String, flag: &str) -> Result<usize, String> {
    v.parse().map_err(|_| format!("{flag}: not a byte count: {v:?}"))
}

fn main() -> ExitCode {
    let (cfg, duration) = match parse_args() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("example: {e}");
            return ExitCode::from(2);
        }
    };
    tracer_ebpf::memory::keep_freed_memory();
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut tracer = match Tracer::new(cfg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("example: {e}");
            return ExitCode::from(1);
        }
    };
    for (name, why) in tracer.attach_failures() {
        eprintln!("example: not attached: {name}: {why}");
    }
    eprintln!(
        "example: tracing {} event(s) (started in {} ms); Ctrl-C to stop",
        tracer.event_names().len(),
        tracer.startup_time().as_millis()
    );
    let deadline = duration.and_then(|d| Instant::now().checked_add(d));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut batch = Vec::with_capacity(4096);
    let mut line = String::with_capacity(1 << 16);
    while !STOP.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        batch.clear();
        if let Err(e) = tracer.poll_into(&mut batch, 65536, Duration::from_millis(50)) {
            eprintln!("example: {e}");
            return ExitCode::from(1);
        }
        for ev in &batch {
            line.clear();
            tracer_ebpf::json::write_event(&mut line, ev);
            line.push('\n');
            if out.write_all(line.as_bytes()).is_err() {
                return ExitCode::SUCCESS; // stdout closed (e.g. piped into head)
            }
        }
        if batch.is_empty() && out.flush().is_err() {
            return ExitCode::SUCCESS;
        }
    }
    // Detach, then print everything captured (for at most DRAIN_TIME); the
    // rest is counted as discarded by close().
    if let Err(e) = tracer.stop() {
        eprintln!("example: {e}");
        return ExitCode::from(1);
    }
    let drain_end = Instant::now() + DRAIN_TIME;
    while !tracer.is_drained() && Instant::now() < drain_end {
        batch.clear();
        if tracer.poll_into(&mut batch, 65536, Duration::ZERO).is_err() {
            break;
        }
        for ev in &batch {
            line.clear();
            tracer_ebpf::json::write_event(&mut line, ev);
            line.push('\n');
            if out.write_all(line.as_bytes()).is_err() {
                return ExitCode::SUCCESS;
            }
        }
    }
    let _ = out.flush();
    tracer.close();
    match tracer.stats() {
        Ok(s) => {
            let pairs: Vec<String> = s.pairs().iter().map(|(k, v)| format!("{k}={v}")).collect();
            eprintln!("example: stats {}", pairs.join(" "));
        }
        Err(e) => eprintln!("example: stats unavailable: {e}"),
    }
    ExitCode::SUCCESS
}
