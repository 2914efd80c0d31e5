//! Build script: typegen, then the BPF object and its skeleton.
//!
//! Everything it writes goes to OUT_DIR, and only when the content changes,
//! so an unchanged events.toml triggers no rebuild.

use libbpf_cargo::SkeletonBuilder;
use std::env;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let toml = root.join("typegen/events.toml");
    let bpf_src = root.join("c/bootstrap.bpf.c");
    let vmlinux = root.join("vendor/vmlinux.h/include/x86");
    for p in [
        &toml,
        &bpf_src,
        &root.join("c/bootstrap.bpf.h"),
        &root.join("c/bpf"),
        &root.join("c/bootstrap-protocol.h"),
        &vmlinux.join("vmlinux.h"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let model = match typegen::load(&toml) {
        Ok(m) => m,
        Err(e) => {
            // Cargo shows build-script stderr on failure: file:line:col first.
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    warn_missing_tracepoints(&model);
    for o in typegen::render_all(&model) {
        let name = Path::new(o.rel_path).file_name().expect("output has a file name");
        if name == "bootstrap.gen.h" || name == "types.gen.rs" {
            typegen::write_if_changed(&out.join(name), &o.content).expect("write generated file to OUT_DIR");
        }
    }

    let skel = out.join("bootstrap.skel.rs");
    let obj = out.join("bootstrap.bpf.o");
    if let Err(e) = SkeletonBuilder::new()
        .source(&bpf_src)
        .obj(&obj)
        .clang_args([
            "-I".as_ref(),
            out.as_os_str(),
            "-I".as_ref(),
            vmlinux.as_os_str(),
            "-I".as_ref(),
            root.join("c").as_os_str(),
            "-mcpu=v3".as_ref(),
            "-Wall".as_ref(),
        ])
        .build_and_generate(&skel)
    {
        eprintln!("error: compiling {}: {e:#}", bpf_src.display());
        eprintln!("hint: the BPF program needs clang (apt-get install clang llvm)");
        std::process::exit(1);
    }
}

/// Warns (not fails: the build machine need not be the target) when this
/// machine's kernel lacks a tracepoint the catalogue declares.
fn warn_missing_tracepoints(model: &typegen::Model) {
    let events = ["/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"].iter().map(Path::new).find(|p| p.is_dir());
    let Some(events) = events else { return };
    // Synthetic events have no tracepoint.
    for e in model.events.iter().filter(|e| !e.synthetic) {
        if !events.join(&e.category).join(&e.tracepoint).is_dir() {
            println!(
                "cargo:warning=tracepoint {} is not available on this kernel{}",
                e.name(),
                if e.optional { " (optional event: attaching it will fail with a clear error)" } else { "" }
            );
        }
    }
}
