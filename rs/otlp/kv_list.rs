//! The `key1=value1,key2=value2` lists of OTEL_EXPORTER_OTLP_HEADERS and
//! OTEL_RESOURCE_ATTRIBUTES: values percent-decoded, spaces around keys and
//! values ignored, a malformed list refused as a whole.

/// The pairs, in order; Err says what is wrong (for an error message).
pub fn parse_kv_list(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, item) in s.split(',').enumerate() {
        if item.trim().is_empty() {
            continue; // "a=1,,b=2" and a trailing comma
        }
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("item {} ({:?}) is not key=value", i + 1, cut(item.trim())));
        };
        let key = k.trim();
        if key.is_empty() {
            return Err(format!("item {} ({:?}) has an empty key", i + 1, cut(item.trim())));
        }
        let value = percent_decode(v.trim()).map_err(|e| format!("the value of {:?}: {e}", cut(key)))?;
        out.push((percent_decode(key).map_err(|e| format!("the key {:?}: {e}", cut(key)))?, value));
    }
    Ok(out)
}

fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

/// `%XX` sequences to bytes; the result must be UTF-8.
pub fn percent_decode(s: &str) -> Result<String, String> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(v) => out.push(v),
                None => return Err(format!("bad percent-encoding at byte {i} (% must be followed by two hex digits)")),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-decodes to bytes that are not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        let kv = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(parse_kv_list(" a = 1 ,b=x%3Dy%2C%20z,").unwrap(), vec![kv("a", "1"), kv("b", "x=y, z")]);
        assert_eq!(parse_kv_list("a=").unwrap(), vec![kv("a", "")]);
        assert_eq!(parse_kv_list("").unwrap(), vec![]);
        assert_eq!(parse_kv_list("k=%C3%A9").unwrap(), vec![kv("k", "é")]);
        assert!(parse_kv_list("a").unwrap_err().contains("not key=value"));
        assert!(parse_kv_list("=1").unwrap_err().contains("empty key"));
        assert!(parse_kv_list("a=%4").unwrap_err().contains("percent"));
        assert!(parse_kv_list("a=%ff").unwrap_err().contains("UTF-8"));
    }
}
