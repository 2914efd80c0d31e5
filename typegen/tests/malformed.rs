//! Malformed events.toml: every error names file:line:column, the offending
//! key and what is wrong, and the binary exits 2 without touching outputs.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

/// The error `text` produces, as the binary prints it (without "error: ").
fn err(text: &str) -> String {
    match typegen::parse("events.toml", text) {
        Ok(m) => panic!("expected an error, parsed {} event(s) from:\n{text}", m.events.len()),
        Err(e) => e.to_string(),
    }
}

/// `[a.b]` with valid id, comment and context (lines 1-4), then the given
/// payload lines from line 6 on: field i is on line 6 + i.
fn event(payload: &str) -> String {
    format!("[a.b]\nid = 1\ncomment = \"x\"\ncontext = \"c\"\npayload = [\n{payload}]\n")
}

/// A valid event, lines 1-8; what follows it starts on line 9.
const WRITE: &str = r#"[syscalls.sys_enter_write]
id = 1028
comment = "write(2) entry"
context = "syscall_trace_enter"
payload = [
  { name = "fd", type = "i32" },
  { name = "content", type = "u8[]", max = 4096 },
]
"#;

macro_rules! case {
    ($name:ident, $text:expr, $expected:expr) => {
        #[test]
        fn $name() {
            assert_eq!(err(&$text), $expected);
        }
    };
}

case!(
    syntax_error,
    "[a.b]\nid = 1\ncomment = \"unterminated\ncontext = \"c\"\npayload = []\n",
    "events.toml:3:24: `a.b.comment`: invalid basic string"
);

case!(
    duplicate_event_table,
    format!("{WRITE}\n[syscalls.sys_enter_write]\nid = 1029\ncomment = \"x\"\ncontext = \"c\"\npayload = []\n"),
    "events.toml:10:1: `syscalls.sys_enter_write`: table already defined above \
     (each [category.tracepoint] may appear only once)"
);

case!(
    duplicate_id,
    format!(
        "{WRITE}\n[syscalls.sys_exit_write]\nid = 1028\ncomment = \"write(2) exit\"\n\
         context = \"trace_event_raw_sys_exit\"\npayload = []\n"
    ),
    "events.toml:11:6: `syscalls.sys_exit_write.id`: duplicate id 1028 (already used by syscalls.sys_enter_write)"
);

case!(
    duplicate_field_name,
    event("  { name = \"fd\", type = \"i32\" },\n  { name = \"fd\", type = \"i64\" },\n"),
    "events.toml:7:12: `a.b.payload[1].name`: duplicate field name \"fd\""
);

case!(
    unknown_type,
    event("  { name = \"fd\", type = \"int\" },\n"),
    "events.toml:6:25: `a.b.payload[0].type`: unknown type \"int\"; \
     expected one of: u8, u16, u32, u64, i8, i16, i32, i64, char[], char[][], u8[]"
);

case!(
    missing_id,
    format!("{WRITE}\n[a.b]\ncomment = \"x\"\ncontext = \"c\"\npayload = []\n"),
    "events.toml:10:1: `a.b.id`: missing key (an event needs id, comment, context and payload)"
);

case!(
    missing_comment,
    "[a.b]\nid = 1\ncontext = \"c\"\npayload = []\n",
    "events.toml:1:1: `a.b.comment`: missing key (an event needs id, comment, context and payload)"
);

case!(
    missing_context,
    "[a.b]\nid = 1\ncomment = \"x\"\npayload = []\n",
    "events.toml:1:1: `a.b.context`: missing key (an event needs id, comment, context and payload; \
     one made by userspace has synthetic = true instead of context)"
);

case!(
    missing_payload,
    "[a.b]\nid = 1\ncomment = \"x\"\ncontext = \"c\"\n",
    "events.toml:1:1: `a.b.payload`: missing key (an event needs id, comment, context and payload)"
);

case!(
    missing_field_name,
    event("  { type = \"i32\" },\n"),
    "events.toml:6:3: `a.b.payload[0].name`: missing key (a field needs name and type)"
);

case!(
    missing_field_type,
    event("  { name = \"fd\" },\n"),
    "events.toml:6:3: `a.b.payload[0].type`: missing key (a field needs name and type)"
);

case!(
    unknown_event_key,
    "[a.b]\nid = 1\ncomment = \"x\"\ncontext = \"c\"\ncolour = \"red\"\npayload = []\n",
    "events.toml:5:1: `a.b.colour`: unknown key; expected one of: id, comment, context, optional, synthetic, payload"
);

case!(
    unknown_field_key,
    event("  { name = \"fd\", type = \"i32\", size = 4 },\n"),
    "events.toml:6:32: `a.b.payload[0].size`: unknown key; expected one of: name, type, max, decode"
);

case!(
    nested_table_is_an_unknown_key,
    "[a.b.c]\nid = 1\n",
    "events.toml:1:6: `a.b.c`: unknown key; expected one of: id, comment, context, optional, synthetic, payload"
);

case!(
    invalid_category,
    "[Syscalls.sys_enter_write]\nid = 1\ncomment = \"x\"\ncontext = \"c\"\npayload = []\n",
    "events.toml:1:2: `Syscalls`: category must be a lowercase identifier ([a-z][a-z0-9_]*)"
);

case!(
    invalid_tracepoint,
    "[syscalls.sys-enter-write]\nid = 1\ncomment = \"x\"\ncontext = \"c\"\npayload = []\n",
    "events.toml:1:11: `syscalls.sys-enter-write`: tracepoint must be a lowercase identifier ([a-z][a-z0-9_]*)"
);

case!(
    invalid_field_name,
    event("  { name = \"Fd\", type = \"i32\" },\n"),
    "events.toml:6:12: `a.b.payload[0].name`: invalid field name \"Fd\": \
     use a lowercase identifier that is not a C, Rust or Python keyword"
);

case!(
    reserved_field_name,
    event("  { name = \"fd\", type = \"i32\" },\n  { name = \"type\", type = \"u32\" },\n"),
    "events.toml:7:12: `a.b.payload[1].name`: invalid field name \"type\": \
     use a lowercase identifier that is not a C, Rust or Python keyword"
);

case!(
    padding_field_name,
    event("  { name = \"_pad0\", type = \"u32\" },\n"),
    "events.toml:6:12: `a.b.payload[0].name`: field names starting with '_' are reserved for padding"
);

case!(
    id_zero,
    "[a.b]\nid = 0\ncomment = \"x\"\ncontext = \"c\"\npayload = []\n",
    "events.toml:2:6: `a.b.id`: id must be an integer from 1 to 4294967295, found 0"
);

case!(
    id_too_large,
    "[a.b]\nid = 4294967296\ncomment = \"x\"\ncontext = \"c\"\npayload = []\n",
    "events.toml:2:6: `a.b.id`: id must be an integer from 1 to 4294967295, found 4294967296"
);

case!(
    id_not_an_integer,
    "[a.b]\nid = \"1028\"\ncomment = \"x\"\ncontext = \"c\"\npayload = []\n",
    "events.toml:2:6: `a.b.id`: id must be an integer from 1 to 4294967295, found a string"
);

case!(
    max_on_fixed_type,
    event("  { name = \"fd\", type = \"i32\", max = 4 },\n"),
    "events.toml:6:38: `a.b.payload[0].max`: max applies only to variable-length types, not i32"
);

case!(
    max_out_of_range,
    event("  { name = \"s\", type = \"char[]\", max = 2000000 },\n"),
    "events.toml:6:40: `a.b.payload[0].max`: max must be an integer from 1 to 1048576 (bytes), found 2000000"
);

case!(
    max_zero,
    event("  { name = \"s\", type = \"char[]\", max = 0 },\n"),
    "events.toml:6:40: `a.b.payload[0].max`: max must be an integer from 1 to 1048576 (bytes), found 0"
);

case!(
    unknown_decode,
    event("  { name = \"ret\", type = \"i64\", decode = \"errnum\" },\n"),
    "events.toml:6:42: `a.b.payload[0].decode`: unknown decode \"errnum\"; expected one of: errno, open_flags, signal"
);

case!(
    decode_on_variable_field,
    event("  { name = \"path\", type = \"char[]\", decode = \"errno\" },\n"),
    "events.toml:6:46: `a.b.payload[0].decode`: decode applies only to integer fields, not char[]"
);

case!(
    fixed_part_too_big,
    event(
        "  { name = \"a\", type = \"char[]\" },\n  { name = \"b\", type = \"char[]\" },\n  \
         { name = \"c\", type = \"char[]\" },\n  { name = \"d\", type = \"char[]\" },\n  \
         { name = \"e\", type = \"u8\" },\n"
    ),
    "events.toml:10:3: `a.b.payload[4]`: field \"e\" does not fit: the fixed part is 72 bytes but the record \
     slot holds 64 (each integer takes its size, each variable field a 16-byte descriptor)"
);

case!(
    type_name_collision,
    "[a.b_c]\nid = 1\ncomment = \"x\"\ncontext = \"c\"\npayload = []\n\n\
     [a_b.c]\nid = 2\ncomment = \"x\"\ncontext = \"c\"\npayload = []\n",
    "events.toml:7:6: `a_b.c`: its type name ABC is already used by a.b_c; rename one of them"
);

case!(
    payload_not_an_array,
    "[a.b]\nid = 1\ncomment = \"x\"\ncontext = \"c\"\npayload = \"fd\"\n",
    "events.toml:5:11: `a.b.payload`: payload must be an array of { name, type } tables, found a string"
);

case!(
    field_not_a_table,
    event("  \"fd\",\n"),
    "events.toml:6:3: `a.b.payload[0]`: a payload field must be a table such as { name = \"fd\", type = \"i32\" }"
);

case!(
    event_not_a_table,
    "[a]\nb = 1\n",
    "events.toml:2:5: `a.b`: expected a table [a.b] with id, comment, context and payload, found an integer"
);

case!(
    optional_not_a_bool,
    "[a.b]\nid = 1\ncomment = \"x\"\ncontext = \"c\"\noptional = \"yes\"\npayload = []\n",
    "events.toml:5:12: `a.b.optional`: optional must be true or false, found a string"
);

case!(
    comment_on_two_lines,
    "[a.b]\nid = 1\ncomment = \"\"\"two\nlines\"\"\"\ncontext = \"c\"\npayload = []\n",
    "events.toml:3:11: `a.b.comment`: comment must be one non-empty line"
);

case!(
    comment_breaking_generated_text,
    "[a.b]\nid = 1\ncomment = 'ends the C comment */'\ncontext = \"c\"\npayload = []\n",
    "events.toml:3:11: `a.b.comment`: comment must not contain \", \\, | or */ (use ' for quotes)"
);

case!(
    tracepoint_starting_with_underscore,
    "[a._b]\nid = 1\ncomment = \"x\"\ncontext = \"c\"\npayload = []\n",
    "events.toml:1:4: `a._b`: tracepoint must be a lowercase identifier ([a-z][a-z0-9_]*)"
);

case!(
    context_not_a_struct_name,
    "[a.b]\nid = 1\ncomment = \"x\"\ncontext = \"struct syscall_trace_enter\"\npayload = []\n",
    "events.toml:4:11: `a.b.context`: context must be the name of a struct in vmlinux.h, e.g. syscall_trace_enter"
);

case!(
    synthetic_with_context,
    "[a.b]\nid = 1\ncomment = \"x\"\ncontext = \"c\"\nsynthetic = true\npayload = []\n",
    "events.toml:4:11: `a.b.context`: a synthetic event has no tracepoint, so no context: remove one of them"
);

case!(
    synthetic_and_optional,
    "[a.b]\nid = 1\ncomment = \"x\"\nsynthetic = true\noptional = true\npayload = []\n",
    "events.toml:5:12: `a.b.optional`: a synthetic event has no tracepoint a kernel could lack: remove optional"
);

case!(
    synthetic_not_a_bool,
    "[a.b]\nid = 1\ncomment = \"x\"\nsynthetic = 1\npayload = []\n",
    "events.toml:4:13: `a.b.synthetic`: synthetic must be true or false, found an integer"
);

case!(no_events, "# nothing yet\n", "events.toml:1:1: no events defined");

// Columns count characters, not bytes ("é" is two bytes).
case!(
    column_counts_characters,
    "a.b = { id = 1, comment = \"café\", context = \"c\", payload = [], x = 1 }\n",
    "events.toml:1:64: `a.b.x`: unknown key; expected one of: id, comment, context, optional, synthetic, payload"
);

#[test]
fn error_fields_are_separate() {
    let e = typegen::parse("x/events.toml", &event("  { name = \"fd\", type = \"int\" },\n")).unwrap_err();
    assert_eq!((e.file.as_str(), e.line, e.column), ("x/events.toml", 6, 25));
    assert_eq!(e.key, "a.b.payload[0].type");
    assert!(e.message.starts_with("unknown type \"int\""), "{}", e.message);
}

#[test]
fn valid_forms_are_accepted() {
    // Inline event tables and [[...payload]] tables are plain TOML too.
    let m = typegen::parse(
        "events.toml",
        "a.b = { id = 2, comment = \"x\", context = \"c\", payload = [] }\n\n\
         [a.c]\nid = 1\ncomment = \"y\"\ncontext = \"c\"\noptional = true\n\
         [[a.c.payload]]\nname = \"fd\"\ntype = \"i32\"\ndecode = \"errno\"\n\
         [[a.c.payload]]\nname = \"path\"\ntype = \"char[]\"\nmax = 256\n",
    )
    .unwrap();
    let names: Vec<String> = m.events.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["a/c", "a/b"], "sorted by id");
    let c = &m.events[0];
    assert!(c.optional);
    assert_eq!(c.fields.len(), 2);
    assert_eq!((c.fields[1].offset, c.fields[1].max), (8, 256));
    assert_eq!(c.fixed_size, 24);
}

fn mtime(p: &Path) -> SystemTime {
    fs::metadata(p).unwrap().modified().unwrap()
}

/// The binary exits 2 on invalid input, prints the located error, and
/// leaves the previous outputs exactly as they were.
#[test]
fn binary_rejects_invalid_input_and_keeps_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    fs::create_dir_all(root.join("typegen")).unwrap();
    fs::write(root.join("typegen/events.toml"), event("  { name = \"fd\", type = \"int\" },\n")).unwrap();

    let outputs = ["c/bootstrap.gen.h", "python/tracer_ebpf/events.py", "docs/events.md"];
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for rel in outputs {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, format!("previous {rel}\n")).unwrap();
        fs::File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
    }

    for check in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_typegen"));
        cmd.current_dir(&root).arg("--root").arg(&root);
        if check {
            cmd.arg("--check");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "check={check}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "error: typegen/events.toml:6:25: `a.b.payload[0].type`: unknown type \"int\"; \
             expected one of: u8, u16, u32, u64, i8, i16, i32, i64, char[], char[][], u8[]\n"
        );
        assert!(out.stdout.is_empty());
        for rel in outputs {
            let p = root.join(rel);
            assert_eq!(fs::read_to_string(&p).unwrap(), format!("previous {rel}\n"), "{rel} changed");
            assert_eq!(mtime(&p), old, "{rel} was rewritten");
        }
    }
    // Nothing else appeared (no temporary files left behind).
    let mut entries: Vec<String> = walk(&root);
    entries.sort();
    assert_eq!(entries, ["c/bootstrap.gen.h", "docs/events.md", "python/tracer_ebpf/events.py", "typegen/events.toml"]);
}

fn walk(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    files
}
