//! How fast does the reader thread move write contents out of the payload
//! area, beside a plain memcpy on the same machine?
//!
//! `cargo run --release --example drain [-- --sizes 4096,65536,1048576 --mib 256 --reps 3]`
//! (root; builds target/bench/tbwork with `make -C bench` first).
//!
//! For each size, `tbwork` writes `--mib` MiB in writes of that size to
//! /dev/null while the consumer does not poll: the reader thread alone moves
//! the contents into the userspace queue. The drain rate is the content
//! bytes delivered divided by the reader thread's CPU time
//! (/proc/self/task/TID/schedstat), so it is the reader's own speed, not
//! the writer's. The same is then done with a tracer of default settings
//! whose payload area is small, to show whether the reader keeps up during
//! the burst (payload_full = what it did not). memcpy: the same bytes
//! copied in pieces of the same size into memory already touched (the
//! limit) and into fresh memory (page faults included).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tracer_ebpf::{Config, Tracer};

struct Args {
    sizes: Vec<usize>,
    mib: usize,
    reps: usize,
    threads: usize,
    tbwork: String,
}

fn parse() -> Result<Args, String> {
    let mut a = Args { sizes: vec![4096, 65536, 1 << 20], mib: 256, reps: 3, threads: 1, tbwork: "target/bench/tbwork".into() };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        match k.as_str() {
            "--sizes" => {
                a.sizes = v()?.split(',').map(|s| s.trim().parse().map_err(|_| format!("--sizes: {s:?}"))).collect::<Result<_, _>>()?
            }
            "--mib" => a.mib = v()?.parse().map_err(|_| "--mib: not a number".to_string())?,
            "--reps" => a.reps = v()?.parse().map_err(|_| "--reps: not a number".to_string())?,
            "--tbwork" => a.tbwork = v()?,
            "--threads" => a.threads = v()?.parse().map_err(|_| "--threads: not a number".to_string())?,
            _ => return Err(format!("unknown option {k}")),
        }
    }
    Ok(a)
}

/// CPU time of this process's thread named `name`, in ns.
fn thread_cpu_ns(name: &str) -> Option<u64> {
    for e in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let s = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
            return s.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

struct Run {
    gbps: f64,
    wall_ms: f64,
    intact_pct: f64,
    payload_full: u64,
    ring_full: u64,
    kernel_mib: f64,
}

fn one(args: &Args, size: usize, cfg: Config) -> Result<Run, String> {
    let n = args.mib * (1 << 20) / size;
    let ring_bytes = cfg.ring_bytes;
    let area_bytes = cfg.payload_bytes_per_cpu * libbpf_rs::num_possible_cpus().unwrap_or(1);
    let mut t = Tracer::new(cfg.events(["syscalls/sys_enter_write"]).comm(vec!["tbwork".into()])).map_err(|e| e.to_string())?;
    let mut before = None;
    for _ in 0..100 {
        before = thread_cpu_ns("tracer-reader");
        if before.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = before.ok_or("no reader thread")?;
    let started = Instant::now();
    let status = Command::new(&args.tbwork)
        .args(["-n", &n.to_string(), "-s", &size.to_string(), "-t", &args.threads.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", args.tbwork))?;
    if !status.success() {
        return Err(format!("tbwork failed: {status}"));
    }
    // Wait until the reader has moved everything (or the queue stops growing).
    let mut last = (0, Instant::now());
    loop {
        let s = t.stats().map_err(|e| e.to_string())?;
        let done = s.get("records").unwrap_or(0) as usize >= n && s.queued as usize >= n;
        if done || last.1.elapsed() > Duration::from_millis(500) {
            break;
        }
        if s.queued != last.0 {
            last = (s.queued, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let wall = started.elapsed();
    if std::env::var_os("DRAIN_SHOW_THP").is_some() {
        let r = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
        eprintln!(
            "{}",
            r.lines()
                .filter(|l| l.starts_with("AnonHuge") || l.starts_with("Rss") || l.starts_with("Anonymous"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let cpu = thread_cpu_ns("tracer-reader").ok_or("no reader thread")? - before;
    let s = t.stats().map_err(|e| e.to_string())?;
    let mut intact = 0usize;
    let mut bytes = 0usize;
    loop {
        let evs = t.poll(100_000, Duration::ZERO).map_err(|e| e.to_string())?;
        if evs.is_empty() {
            break;
        }
        for ev in &evs {
            if let tracer_ebpf::Payload::SyscallsSysEnterWrite(p) = &ev.payload {
                if p.content.captured() && p.content.data.len() == size {
                    intact += 1;
                    bytes += size;
                }
            }
        }
    }
    t.close();
    Ok(Run {
        gbps: bytes as f64 / cpu.max(1) as f64,
        wall_ms: wall.as_secs_f64() * 1e3,
        intact_pct: 100.0 * intact as f64 / n as f64,
        payload_full: s.get("payload_full").unwrap_or(0),
        ring_full: s.get("ring_full").unwrap_or(0),
        kernel_mib: (ring_bytes + area_bytes) as f64 / (1 << 20) as f64,
    })
}

/// GB/s of copying `total` bytes in `piece`-byte copies, into a destination
/// already touched (`warm`) or freshly mapped.
fn memcpy_gbps(total: usize, piece: usize, warm: bool) -> f64 {
    let src = vec![0x5au8; piece.max(1 << 20)];
    let mut dst: Vec<u8> = Vec::with_capacity(total);
    if warm {
        dst.resize(total, 1);
        dst.clear();
    }
    let t = Instant::now();
    let mut off = 0;
    while off + piece <= total {
        dst.extend_from_slice(&src[..piece]);
        off += piece;
    }
    std::hint::black_box(&dst);
    total as f64 / t.elapsed().as_nanos().max(1) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("drain: {e}");
            std::process::exit(2);
        }
    };
    tracer_ebpf::memory::keep_freed_memory();
    println!("| size | tracer | kernel MiB | reader drain GB/s (CPU) | burst wall ms | intact % | payload_full | ring_full | memcpy warm GB/s | memcpy fresh GB/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &size in &args.sizes {
        let total = args.mib << 20;
        let warm = median((0..args.reps).map(|_| memcpy_gbps(total, size, true)).collect());
        let fresh = median((0..args.reps).map(|_| memcpy_gbps(total, size, false)).collect());
        let big = || Config::new().payload_bytes_per_cpu((args.mib + 16) << 20).queue_bytes(4 << 30);
        for (label, cfg) in [("area holds the burst", &big as &dyn Fn() -> Config), ("defaults", &Config::new)] {
            let runs: Vec<Run> = (0..args.reps).filter_map(|_| one(&args, size, cfg()).map_err(|e| eprintln!("drain: {e}")).ok()).collect();
            if runs.is_empty() {
                continue;
            }
            let pick = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
            println!(
                "| {size} | {label} | {:.0} | {:.3} | {:.0} | {:.1} | {:.0} | {:.0} | {warm:.2} | {fresh:.2} |",
                pick(|r| r.kernel_mib),
                pick(|r| r.gbps),
                pick(|r| r.wall_ms),
                pick(|r| r.intact_pct),
                pick(|r| r.payload_full as f64),
                pick(|r| r.ring_full as f64),
            );
        }
    }
}
