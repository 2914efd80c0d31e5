//! The committed generated files are fresh, rendering is deterministic, a
//! second run of the binary rewrites nothing, and the outputs have the
//! structure the C, Rust and Python sides rely on.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};
use typegen::Model;

const CRATE_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn repo_root() -> PathBuf {
    Path::new(CRATE_DIR).parent().unwrap().to_path_buf()
}

fn events_toml() -> String {
    fs::read_to_string(Path::new(CRATE_DIR).join("events.toml")).unwrap()
}

fn parse(text: &str) -> Model {
    typegen::parse("events.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

/// A richer catalogue than the real one: ids out of order, every type and
/// decode, an optional event, an event without fields and a synthetic one.
const SAMPLE: &str = r#"
[proc.snapshot]
id = 40
comment = "made by userspace"
synthetic = true
payload = [ { name = "uid", type = "u32" }, { name = "exe", type = "char[]" } ]

[sched.sched_process_exit]
id = 30
comment = "process exit"
context = "trace_event_raw_sched_process_template"
payload = []

[syscalls.sys_exit_openat]
id = 20
comment = "openat(2) exit; 'ret' is the fd or -errno"
context = "trace_event_raw_sys_exit"
optional = true
payload = [ { name = "ret", type = "i64", decode = "errno" } ]

[syscalls.sys_enter_execve]
id = 10
comment = "execve(2) entry"
context = "syscall_trace_enter"
payload = [
  { name = "flags", type = "u32", decode = "open_flags" },
  { name = "sig", type = "i8", decode = "signal" },
  { name = "a", type = "u8" },
  { name = "b", type = "u16" },
  { name = "c", type = "i16" },
  { name = "filename", type = "char[]", max = 4096 },
  { name = "argv", type = "char[][]" },
  { name = "data", type = "u8[]", max = 1048576 },
]
"#;

/// Where `a` and `b` first differ, for readable failures.
fn first_difference(a: &str, b: &str) -> String {
    match a.lines().zip(b.lines()).position(|(x, y)| x != y) {
        Some(i) => {
            format!("at line {}:\n  committed: {:?}\n  expected:  {:?}", i + 1, a.lines().nth(i).unwrap(), b.lines().nth(i).unwrap())
        }
        None => format!("in length ({} lines committed, {} expected)", a.lines().count(), b.lines().count()),
    }
}

#[test]
fn committed_outputs_are_fresh() {
    let outputs = typegen::render_all(&parse(&events_toml()));
    let mut stale = Vec::new();
    for o in typegen::committed(&outputs) {
        let path = repo_root().join(o.rel_path);
        let on_disk = fs::read_to_string(&path).unwrap_or_default();
        if on_disk != o.content {
            stale.push(format!("{} differs {}", o.rel_path, first_difference(&on_disk, &o.content)));
        }
    }
    assert!(stale.is_empty(), "generated files are stale: run `cargo run -p typegen` to regenerate them\n{}", stale.join("\n"));
}

#[test]
fn rendering_is_deterministic() {
    for text in [events_toml().as_str(), SAMPLE] {
        let a = typegen::render_all(&parse(text));
        let b = typegen::render_all(&parse(text));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.rel_path, y.rel_path);
            assert!(x.content == y.content, "{} differs between two renders", x.rel_path);
        }
    }
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_typegen")).args(args).output().unwrap()
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

/// The binary writes into a temporary --root, never the repository.
#[test]
fn second_run_rewrites_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("typegen")).unwrap();
    fs::write(root.join("typegen/events.toml"), events_toml()).unwrap();
    let rust_out = root.join("out/types.gen.rs");
    let args = [root.as_os_str(), rust_out.as_os_str()];
    let write = || run(&["--root".as_ref(), args[0], "--rust-out".as_ref(), args[1]]);
    let check = || run(&["--check".as_ref(), "--root".as_ref(), args[0]]);

    let first = write();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let rendered = typegen::render_all(&parse(&events_toml()));
    let mut files = vec![rust_out.clone()];
    for o in typegen::committed(&rendered) {
        let p = root.join(o.rel_path);
        assert_eq!(fs::read_to_string(&p).unwrap(), o.content, "{}", o.rel_path);
        assert!(String::from_utf8_lossy(&first.stderr).contains(&format!("wrote {}", p.display())));
        files.push(p);
    }
    let rust = rendered.iter().find(|o| o.rel_path == "rs/types.gen.rs").unwrap();
    assert_eq!(fs::read_to_string(&rust_out).unwrap(), rust.content);

    // Backdate the outputs, so any rewrite shows even with coarse mtimes.
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for p in &files {
        fs::File::options().write(true).open(p).unwrap().set_modified(old).unwrap();
    }
    let second = write();
    assert!(second.status.success());
    assert_eq!(String::from_utf8_lossy(&second.stderr), "", "second run wrote something");
    for p in &files {
        assert_eq!(mtime(p), old, "{} was rewritten", p.display());
    }
    assert_eq!(check().status.code(), Some(0));

    // --check reports a stale file and leaves it alone.
    let docs = root.join("docs/events.md");
    fs::write(&docs, "edited by hand\n").unwrap();
    let stale = check();
    assert_eq!(stale.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&stale.stderr), "stale generated files (run `cargo run -p typegen`): docs/events.md\n");
    assert_eq!(fs::read_to_string(&docs).unwrap(), "edited by hand\n");
}

fn output<'a>(outputs: &'a [typegen::Output], rel: &str) -> &'a str {
    &outputs.iter().find(|o| o.rel_path == rel).unwrap().content
}

/// Checks the outputs of `m` have what the C, Rust and Python code use.
fn check_structure(m: &Model) {
    let outputs = typegen::render_all(m);

    // C: enum tb_event_type lists every id, ascending.
    let c = output(&outputs, "c/bootstrap.gen.h");
    let body = c.split("enum tb_event_type {\n").nth(1).unwrap().split("};").next().unwrap();
    let ids: Vec<u32> = body.lines().map(|l| l.split(" = ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids not ascending: {ids:?}");
    assert_eq!(ids, m.events.iter().map(|e| e.id).collect::<Vec<_>>());

    // C: one X-macro entry per traced event, in TB_TRACEPOINT_LIST; none
    // for a synthetic event (no handler), which still has its payload struct.
    let list = c.split("#define TB_TRACEPOINT_LIST(X)").nth(1).unwrap().split("\n\n").next().unwrap();
    let traced = m.events.iter().filter(|e| !e.synthetic).count();
    assert_eq!(list.matches("\tX(").count(), traced, "{list}");
    for e in &m.events {
        if e.synthetic {
            assert!(!list.contains(&format!("X({}, {},", e.category, e.tracepoint)), "{list}");
            assert!(c.contains(&format!("struct tb_payload_{} {{", e.ident())));
            continue;
        }
        let entry = format!("\tX({}, {}, {}, {}, {})", e.category, e.tracepoint, e.context, e.enum_const(), e.optional as u8);
        assert!(list.contains(&entry), "no X-macro entry {entry:?} in:\n{list}");
        // The shared syscall programs' list: exactly the syscall events.
        let syscalls = list.split("#define TB_SYSCALL_TRACEPOINT_LIST(X)").nth(1).unwrap();
        assert_eq!(syscalls.contains(&entry), e.category == "syscalls", "{entry:?} in:\n{syscalls}");
        assert!(c.contains(&format!("struct tb_payload_{} {{", e.ident())));
    }

    // Rust: a decode arm and a struct per event; synthetic ones say so and
    // name no program.
    let rs = output(&outputs, "rs/types.gen.rs");
    for e in m.events.iter().filter(|e| e.synthetic) {
        assert!(rs.contains(&format!("EventType::{} => true,", e.camel())), "synthetic() of {}", e.name());
        assert!(rs.contains(&format!("EventType::{} => \"\",", e.camel())), "program_name() of {}", e.name());
    }
    for e in &m.events {
        // Payloads of more than one variable field are boxed (an event would
        // otherwise be as large as the largest of them).
        let boxed = e.fields.iter().filter(|f| f.ty.is_var()).count() > 1;
        let (variant, arm) = if boxed {
            (
                format!("    {0}(Box<payload::{0}>),", e.camel()),
                format!("EventType::{0} => Payload::{0}(Box::new(payload::{0} {{", e.camel()),
            )
        } else {
            (format!("    {0}(payload::{0}),", e.camel()), format!("EventType::{0} => Payload::{0}(payload::{0} {{", e.camel()))
        };
        assert!(rs.contains(&variant), "no Payload variant {variant:?}");
        assert!(rs.contains(&arm), "no Payload::decode arm {arm:?}");
        assert!(rs.contains(&format!("pub struct {} {{", e.camel())));
    }

    // Python: a TypedDict per event, and the module is valid Python.
    let py = output(&outputs, "python/tracer_ebpf/events.py");
    for e in &m.events {
        assert!(py.contains(&format!("class {}Payload(TypedDict):", e.camel())));
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), py).unwrap();
    let out = Command::new("python3")
        .args(["-c", "import ast,sys; ast.parse(open(sys.argv[1]).read())"])
        .arg(file.path())
        .output()
        .expect("python3 is needed to check the generated Python module");
    assert!(out.status.success(), "events.py is not valid Python:\n{}", String::from_utf8_lossy(&out.stderr));

    // Docs: a section per event.
    let md = output(&outputs, "docs/events.md");
    for e in &m.events {
        assert!(md.contains(&format!("## {}\n", e.name())));
        let source =
            if e.synthetic { "synthetic: made by userspace, no tracepoint".to_string() } else { format!("context `struct {}`", e.context) };
        assert!(md.contains(&format!("id {}, ", e.id)) && md.contains(&source), "{} in docs", e.name());
    }
}

#[test]
fn structure_of_the_real_catalogue() {
    check_structure(&parse(&events_toml()));
}

#[test]
fn structure_of_a_sample_catalogue() {
    let m = parse(SAMPLE);
    assert_eq!(m.events.iter().map(|e| e.id).collect::<Vec<_>>(), [10, 20, 30, 40]);
    assert_eq!(m.events.iter().map(|e| e.synthetic).collect::<Vec<_>>(), [false, false, false, true]);
    check_structure(&m);
}
