//! The JSON line format shared by every front end (Rust example, Python,
//! C library). Byte-for-byte rules, so the C side can match them:
//! - strings: `"` `\` escaped; \n \r \t as such; other bytes below 0x20 and
//!   0x7f as \u00xx; valid UTF-8 passes through; each byte that does not
//!   start a valid UTF-8 sequence becomes U+FFFD;
//! - `u8[]` fields that are not valid UTF-8 also get `<name>_base64` with
//!   the exact bytes;
//! - variable fields not captured are `null`; `<name>_lost` says why
//!   ("payload_full", "fault", "overwritten"); `<name>_truncated: true` and
//!   `<name>_size` (original size, when known) mark a cut;
//! - integer fields with a decode hint get `<name>_name`.

use crate::event::Event;
use crate::types::{Decode, FieldKind, FieldValue, Var, ERRNO, OPEN_ACCMODE, OPEN_FLAGS, SIGNALS};
use std::fmt::Write;

pub fn write_event(s: &mut String, e: &Event) {
    let _ = write!(
        s,
        "{{\"event_id\":{},\"event_type\":\"{}\",\"timestamp_ns\":{},\"pid\":{},\"tid\":{},\"ppid\":{},\"upid\":{},\"uppid\":{},\"comm\":",
        e.event_id,
        e.event_type.name(),
        e.timestamp_ns,
        e.pid,
        e.tid,
        e.ppid,
        e.upid,
        e.uppid
    );
    write_str(s, e.comm.as_bytes());
    s.push_str(",\"payload\":{");
    let mut first = true;
    e.payload.for_each_field(|info, v| {
        if !first {
            s.push(',');
        }
        first = false;
        let _ = write!(s, "\"{}\":", info.name);
        match v {
            FieldValue::Unsigned(u) => {
                let _ = write!(s, "{u}");
                if let Some(d) = info.decode {
                    write_decoded(s, info.name, d, u as i64);
                }
            }
            FieldValue::Signed(i) => {
                let _ = write!(s, "{i}");
                if let Some(d) = info.decode {
                    write_decoded(s, info.name, d, i);
                }
            }
            FieldValue::Var(var) => write_var(s, info.name, info.kind, var),
            FieldValue::UList(l) => write_list(s, l),
            FieldValue::IList(l) => write_list(s, l),
        }
    });
    s.push_str("}}");
}

fn write_var(s: &mut String, name: &str, kind: FieldKind, v: &Var) {
    if !v.captured() {
        s.push_str("null");
    } else if kind == FieldKind::StrList {
        s.push('[');
        for (i, part) in v.strings().enumerate() {
            if i > 0 {
                s.push(',');
            }
            write_str(s, part);
        }
        s.push(']');
    } else {
        write_str(s, &v.data);
        if kind == FieldKind::Bytes && std::str::from_utf8(&v.data).is_err() {
            let _ = write!(s, ",\"{name}_base64\":\"");
            base64(s, &v.data);
            s.push('"');
        }
    }
    if let Some(why) = v.lost() {
        let _ = write!(s, ",\"{name}_lost\":\"{why}\"");
    }
    if v.truncated() {
        let _ = write!(s, ",\"{name}_truncated\":true");
        if v.size != 0 {
            let _ = write!(s, ",\"{name}_size\":{}", v.size);
        }
    }
}

fn write_list<T: std::fmt::Display>(s: &mut String, l: &[T]) {
    s.push('[');
    for (i, v) in l.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{v}");
    }
    s.push(']');
}

fn lookup(table: &[(i64, &'static str)], v: i64) -> Option<&'static str> {
    table.iter().find(|(k, _)| *k == v).map(|(_, n)| *n)
}

/// The symbolic name a decode hint gives `v`, if any.
pub fn decoded_name(d: Decode, v: i64) -> Option<String> {
    match d {
        Decode::Errno if v < 0 => v.checked_neg().and_then(|n| lookup(ERRNO, n)).map(str::to_string),
        Decode::Errno => None,
        Decode::Signal => lookup(SIGNALS, v).map(str::to_string),
        Decode::OpenFlags => {
            let mut out = String::from(OPEN_ACCMODE[(v & 3) as usize]);
            let mut rest = v & !3;
            for (bit, n) in OPEN_FLAGS {
                if rest & bit != 0 {
                    out.push('|');
                    out.push_str(n);
                    rest &= !bit;
                }
            }
            if rest != 0 {
                let _ = write!(out, "|0x{rest:x}");
            }
            Some(out)
        }
    }
}

fn write_decoded(s: &mut String, name: &str, d: Decode, v: i64) {
    if let Some(n) = decoded_name(d, v) {
        let _ = write!(s, ",\"{name}_name\":\"{n}\"");
    }
}

/// Length of the valid UTF-8 sequence starting at `b[0]`, or 0 if none.
fn utf8_len(b: &[u8]) -> usize {
    let cont = |i: usize, lo: u8, hi: u8| b.get(i).is_some_and(|&c| (lo..=hi).contains(&c));
    match b[0] {
        0x00..=0x7f => 1,
        0xc2..=0xdf if cont(1, 0x80, 0xbf) => 2,
        0xe0 if cont(1, 0xa0, 0xbf) && cont(2, 0x80, 0xbf) => 3,
        0xe1..=0xec | 0xee..=0xef if cont(1, 0x80, 0xbf) && cont(2, 0x80, 0xbf) => 3,
        0xed if cont(1, 0x80, 0x9f) && cont(2, 0x80, 0xbf) => 3,
        0xf0 if cont(1, 0x90, 0xbf) && cont(2, 0x80, 0xbf) && cont(3, 0x80, 0xbf) => 4,
        0xf1..=0xf3 if cont(1, 0x80, 0xbf) && cont(2, 0x80, 0xbf) && cont(3, 0x80, 0xbf) => 4,
        0xf4 if cont(1, 0x80, 0x8f) && cont(2, 0x80, 0xbf) && cont(3, 0x80, 0xbf) => 4,
        _ => 0,
    }
}

/// Writes `b` as a JSON string (rules in the module doc).
pub fn write_str(s: &mut String, b: &[u8]) {
    s.reserve(b.len() + 2);
    s.push('"');
    let mut i = 0;
    while i < b.len() {
        // Fast path: a run of printable ASCII that needs no escape.
        let run = b[i..].iter().take_while(|&&c| (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\').count();
        if run > 0 {
            // Printable ASCII is valid UTF-8.
            s.push_str(std::str::from_utf8(&b[i..i + run]).unwrap_or_default());
            i += run;
            continue;
        }
        let c = b[i];
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x00..=0x1f | 0x7f => {
                let _ = write!(s, "\\u{:04x}", c);
            }
            0x20..=0x7e => s.push(c as char),
            _ => {
                let n = utf8_len(&b[i..]);
                if n == 0 {
                    s.push('\u{fffd}');
                } else {
                    // Validated above: a complete, well-formed sequence.
                    s.push_str(std::str::from_utf8(&b[i..i + n]).unwrap_or("\u{fffd}"));
                    i += n;
                    continue;
                }
            }
        }
        i += 1;
    }
    s.push('"');
}

fn base64(s: &mut String, b: &[u8]) {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 { A[(n >> 6) as usize & 63] as char } else { '=' });
        s.push(if c.len() > 2 { A[n as usize & 63] as char } else { '=' });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(b: &[u8]) -> String {
        let mut s = String::new();
        write_str(&mut s, b);
        s
    }

    #[test]
    fn escapes_controls_and_invalid_utf8() {
        assert_eq!(js(b"a\"b\\c\n\r\t\x00\x1b\x7f"), "\"a\\\"b\\\\c\\n\\r\\t\\u0000\\u001b\\u007f\"");
        assert_eq!(js("é€😀".as_bytes()), "\"é€😀\"");
        assert_eq!(js(b"\xff\xc3"), "\"\u{fffd}\u{fffd}\"");
        assert_eq!(js(b"\xe2\x82"), "\"\u{fffd}\u{fffd}\"");
        assert_eq!(js(b"\xed\xa0\x80"), "\"\u{fffd}\u{fffd}\u{fffd}\""); // surrogate
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            let mut s = String::new();
            base64(&mut s, i.as_bytes());
            assert_eq!(s, o);
        }
    }

    #[test]
    fn decode_names() {
        assert_eq!(decoded_name(Decode::Errno, -2).as_deref(), Some("ENOENT"));
        assert_eq!(decoded_name(Decode::Errno, 3), None);
        assert_eq!(decoded_name(Decode::Signal, 9).as_deref(), Some("SIGKILL"));
        assert_eq!(decoded_name(Decode::OpenFlags, 0o2000101).as_deref(), Some("O_WRONLY|O_CREAT|O_CLOEXEC"));
        assert_eq!(decoded_name(Decode::OpenFlags, 0).as_deref(), Some("O_RDONLY"));
    }
}
