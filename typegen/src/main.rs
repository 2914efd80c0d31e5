//! `typegen [--check] [--root DIR] [EVENTS_TOML]`
//!
//! Writes the committed generated files (c/bootstrap.gen.h,
//! python/tracer_ebpf/events.py, docs/events.md) under the repository root,
//! each only if its content changed. With --check, writes nothing and exits 1
//! if any is stale. Invalid input exits 2 with file:line:column and the key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    // `cargo run` sets CARGO_MANIFEST_DIR for the program too: prefer it to
    // the value baked in at compile time, which names wherever this binary
    // was built (a copy of the repository sharing the target dir, say).
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    let mut root = manifest_dir.parent().unwrap_or(&manifest_dir).to_path_buf();
    let mut toml: Option<PathBuf> = None;
    let mut out_rust: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--check" => check = true,
            "--root" => match args.next() {
                Some(r) => root = r.into(),
                None => return usage("--root needs a directory"),
            },
            "--rust-out" => match args.next() {
                Some(r) => out_rust = Some(r.into()),
                None => return usage("--rust-out needs a file"),
            },
            "-h" | "--help" => {
                println!("usage: typegen [--check] [--root DIR] [--rust-out FILE] [EVENTS_TOML]");
                println!("Generates C, Rust, Python and docs outputs from typegen/events.toml.");
                return ExitCode::SUCCESS;
            }
            s if s.starts_with('-') => return usage(&format!("unknown option {s}")),
            s => toml = Some(s.into()),
        }
    }
    let toml = toml.unwrap_or_else(|| root.join("typegen/events.toml"));
    // Name the file relative to the current directory when under it, as
    // compilers do: `typegen/events.toml:12:8: ...`.
    let cwd = std::env::current_dir().unwrap_or_default();
    let toml = toml.strip_prefix(&cwd).map(Path::to_path_buf).unwrap_or(toml);
    let model = match typegen::load(&toml) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let outputs = typegen::render_all(&model);
    let mut stale = Vec::new();
    for o in typegen::committed(&outputs) {
        let path = root.join(o.rel_path);
        if check {
            if std::fs::read(&path).map(|b| b != o.content.as_bytes()).unwrap_or(true) {
                stale.push(o.rel_path);
            }
        } else {
            match typegen::write_if_changed(&path, &o.content) {
                Ok(true) => eprintln!("typegen: wrote {}", path.display()),
                Ok(false) => {}
                Err(e) => {
                    eprintln!("error: writing {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
    }
    if let Some(p) = out_rust {
        let rust = outputs.iter().find(|o| o.rel_path == "rs/types.gen.rs").expect("rust output");
        if let Err(e) = typegen::write_if_changed(&p, &rust.content) {
            eprintln!("error: writing {}: {e}", p.display());
            return ExitCode::from(2);
        }
    }
    if !stale.is_empty() {
        eprintln!("stale generated files (run `cargo run -p typegen`): {}", stale.join(", "));
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("typegen: {msg}\nusage: typegen [--check] [--root DIR] [--rust-out FILE] [EVENTS_TOML]");
    ExitCode::from(2)
}
