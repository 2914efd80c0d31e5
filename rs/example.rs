//! Standalone Rust example: prints every captured event as one JSON line,
//! the same format as `tracer-example` and `c/example`, or writes them into
//! a Parquet dataset (`--parquet DIR`, docs/parquet.md).
//!
//! usage: example [--events A,B] [--pid PID]... [--follow] [--snapshot] [--comm PREFIX]... [--cgroup PATH]...
//!                [--content-fds 1,2] [--content-max BYTES] [--duration SECS]
//!                [--parquet DIR [--host NAME]]

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracer_ebpf::dataset::{Dataset, DatasetOptions};
use tracer_ebpf::{Config, Event, Tracer};

static STOP: AtomicBool = AtomicBool::new(false);

/// Longest time spent printing what was captured before a stop.
const DRAIN_TIME: Duration = Duration::from_secs(5);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// What the command line asks for.
struct Args {
    cfg: Config,
    duration: Option<Duration>,
    /// `--parquet DIR`, and its options (`--host`).
    parquet: Option<(String, DatasetOptions)>,
}

fn parse_args() -> Result<Args, String> {
    // Formatting waits while a burst's writers run (see Config::yield_cpu).
    let mut cfg = Config::new().yield_cpu(true);
    let mut duration = None;
    let mut parquet = None;
    let mut host = None;
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
            "--snapshot" => cfg.snapshot = true,
            "--comm" => cfg.comm.push(val("--comm")?),
            "--cgroup" => cfg.cgroups.push(val("--cgroup")?),
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
            "--no-yield-cpu" => cfg.yield_cpu = false,
            "--duration" => {
                let v = val("--duration")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s >= 0.0 && *s < 1e9)
                    .ok_or(format!("--duration: not a number of seconds from 0 to 1e9: {v:?}"))?;
                duration = Some(Duration::from_secs_f64(secs))
            }
            "--parquet" => {
                let v = val("--parquet")?;
                if v.is_empty() {
                    return Err("--parquet needs a directory".into());
                }
                parquet = Some(v)
            }
            "--host" => host = Some(val("--host")?),
            "-h" | "--help" => {
                println!("usage: example [--events A,B] [--pid PID]... [--follow] [--snapshot] [--comm PREFIX]... [--cgroup PATH]... [--content-fds 1,2] [--content-max BYTES] [--ring-bytes N] [--payload-bytes-per-cpu N] [--queue-bytes N] [--no-reader-thread] [--no-yield-cpu] [--duration SECS] [--parquet DIR [--host NAME]]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if host.is_some() && parquet.is_none() {
        return Err("--host needs --parquet DIR".into());
    }
    let parquet = parquet.map(|dir| {
        let mut o = DatasetOptions::new();
        o.host = host;
        (dir, o)
    });
    Ok(Args { cfg, duration, parquet })
}

/// Where events go: JSON lines on stdout, or a Parquet dataset.
enum Sink<'a> {
    Json { out: std::io::BufWriter<std::io::StdoutLock<'a>>, line: String },
    Parquet { ds: Box<Dataset>, last_stats: Instant },
}

/// Why writing stopped.
enum Stop {
    /// stdout was closed (e.g. piped into head): not an error.
    Closed,
    Failed(String),
}

impl Sink<'_> {
    fn write(&mut self, tracer: &Tracer, events: &[Event]) -> Result<(), Stop> {
        match self {
            Sink::Json { out, line } => {
                for ev in events {
                    line.clear();
                    tracer_ebpf::json::write_event(line, ev);
                    line.push('\n');
                    out.write_all(line.as_bytes()).map_err(|_| Stop::Closed)?;
                }
                if events.is_empty() {
                    out.flush().map_err(|_| Stop::Closed)?;
                }
                Ok(())
            }
            Sink::Parquet { ds, last_stats } => {
                // The counters recorded in each file as it closes: fresh
                // within a second.
                if last_stats.elapsed() >= Duration::from_secs(1) {
                    if let Ok(s) = tracer.stats() {
                        ds.set_stats(&s);
                    }
                    *last_stats = Instant::now();
                }
                ds.write(events).map_err(|e| Stop::Failed(e.to_string()))
            }
        }
    }
}

/// CPU time of this process so far, in seconds (every thread).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

fn bytes(v: String, flag: &str) -> Result<usize, String> {
    v.parse().map_err(|_| format!("{flag}: not a byte count: {v:?}"))
}

fn main() -> ExitCode {
    let Args { cfg, duration, parquet } = match parse_args() {
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
    // The dataset first: a bad directory or host fails before tracing.
    let dataset = match parquet {
        Some((dir, opts)) => match Dataset::create(&dir, opts) {
            Ok(ds) => Some(ds),
            Err(e) => {
                eprintln!("example: --parquet {dir}: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
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
    for note in tracer.notes() {
        eprintln!("example: note: {note}");
    }
    eprintln!(
        "example: tracing {} event(s) (started in {} ms); Ctrl-C to stop",
        tracer.event_names().len(),
        tracer.startup_time().as_millis()
    );
    let deadline = duration.and_then(|d| Instant::now().checked_add(d));
    let cpu_start = cpu_seconds();
    let stdout = std::io::stdout();
    let mut sink = match dataset {
        Some(ds) => Sink::Parquet { ds: Box::new(ds), last_stats: Instant::now() },
        None => Sink::Json { out: std::io::BufWriter::with_capacity(1 << 20, stdout.lock()), line: String::with_capacity(1 << 16) },
    };
    let mut batch = Vec::with_capacity(4096);
    let mut failed = None;
    while !STOP.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        batch.clear();
        if let Err(e) = tracer.poll_into(&mut batch, 65536, Duration::from_millis(50)) {
            eprintln!("example: {e}");
            return ExitCode::from(1);
        }
        match sink.write(&tracer, &batch) {
            Ok(()) => {}
            Err(Stop::Closed) => return ExitCode::SUCCESS,
            Err(Stop::Failed(e)) => {
                failed = Some(e);
                break;
            }
        }
    }
    // Detach, then write everything captured (for at most DRAIN_TIME); the
    // rest is counted as discarded by close().
    if let Err(e) = tracer.stop() {
        eprintln!("example: {e}");
        return ExitCode::from(1);
    }
    let drain_end = Instant::now() + DRAIN_TIME;
    while failed.is_none() && !tracer.is_drained() && Instant::now() < drain_end {
        batch.clear();
        if tracer.poll_into(&mut batch, 65536, Duration::ZERO).is_err() {
            break;
        }
        match sink.write(&tracer, &batch) {
            Ok(()) => {}
            Err(Stop::Closed) => return ExitCode::SUCCESS,
            Err(Stop::Failed(e)) => failed = Some(e),
        }
    }
    tracer.close();
    let stats = tracer.stats();
    match sink {
        Sink::Json { mut out, .. } => {
            let _ = out.flush();
        }
        Sink::Parquet { ds, .. } => {
            let dir = ds.host_dir().display().to_string();
            match ds.close(stats.as_ref().ok()) {
                Ok(s) => {
                    let cpu = cpu_seconds() - cpu_start;
                    let rows = s.rows.max(1) as f64;
                    eprintln!(
                        "example: parquet: {} files, {} rows, {} bytes ({:.1} bytes/event, {:.2} us CPU/event), {cpu:.2} s CPU, in {dir}",
                        s.files.len(),
                        s.rows,
                        s.bytes,
                        s.bytes as f64 / rows,
                        cpu * 1e6 / rows
                    );
                }
                Err(e) => failed = failed.or(Some(e.to_string())),
            }
        }
    }
    match stats {
        Ok(s) => {
            let pairs: Vec<String> = s.pairs().iter().map(|(k, v)| format!("{k}={v}")).collect();
            eprintln!("example: stats {}", pairs.join(" "));
        }
        Err(e) => eprintln!("example: stats unavailable: {e}"),
    }
    if let Some(e) = failed {
        eprintln!("example: cannot write the dataset: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
