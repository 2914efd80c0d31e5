//! typegen: events.toml is the single source of truth for tracer-ebpf's typed
//! events. This crate validates it and renders, from the same model, the C
//! header (BPF program and C library), the Rust types and decoder, the Python
//! typing module and the event reference in docs/.

pub mod gen_c;
pub mod gen_docs;
pub mod gen_py;
pub mod gen_rust;
pub mod model;
pub mod names;
pub mod record;

pub use model::{load, parse, Error, Model};

use std::io;
use std::path::{Path, PathBuf};

/// One rendered output.
pub struct Output {
    /// Path relative to the repository root (for committed copies).
    pub rel_path: &'static str,
    pub content: String,
}

/// Every output, rendered from one model. Deterministic: same model, same bytes.
pub fn render_all(model: &Model) -> Vec<Output> {
    vec![
        Output { rel_path: "c/bootstrap.gen.h", content: gen_c::render(model) },
        Output { rel_path: "rs/types.gen.rs", content: gen_rust::render(model) },
        Output { rel_path: "python/tracer_ebpf/events.py", content: gen_py::render(model) },
        Output { rel_path: "docs/events.md", content: gen_docs::render(model) },
    ]
}

/// Files committed to the repository (all outputs but the Rust one, which
/// build.rs writes to OUT_DIR only).
pub fn committed(outputs: &[Output]) -> impl Iterator<Item = &Output> {
    outputs.iter().filter(|o| o.rel_path != "rs/types.gen.rs")
}

/// Writes `content` to `path` only if it differs, so that unchanged outputs
/// keep their mtime and trigger no rebuild. Returns whether it wrote.
pub fn write_if_changed(path: &Path, content: &str) -> io::Result<bool> {
    if std::fs::read(path).map(|old| old == content.as_bytes()).unwrap_or(false) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write to a temporary file then rename: a reader never sees half a file.
    let tmp: PathBuf = path.with_extension("tmp~");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}
