//! The escapes of the names cgroups come with: mountinfo's octal `\040`
//! and systemd unit names' `\x2d`.

/// `s` with every `intro` followed by `ndigits` digits of `radix` replaced
/// by that byte; anything else (a bad or cut escape) is kept as is.
pub(crate) fn decode(s: &str, intro: &str, ndigits: usize, radix: u32) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(intro.as_bytes()) {
            let at = i + intro.len();
            let value = s
                .get(at..at + ndigits)
                .filter(|d| d.len() == ndigits && d.chars().all(|c| c.is_digit(radix)))
                .and_then(|d| u8::from_str_radix(d, radix).ok());
            if let Some(v) = value {
                out.push(v);
                i = at + ndigits;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
