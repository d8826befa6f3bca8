//! Durations and byte sizes as LogQL reads them: Go's `time.ParseDuration` (plus `d`, `w`,
//! `y` in ranges), byte-size literals (`20MB`, `1KiB`) and human byte sizes in label values
//! (`1.5 kb`), with Go's error texts, which Loki passes through to users.

/// Go's `strconv.Quote` for the characters that occur in practice.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Why a duration did not parse, with Go's message.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationError(String);

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a Go duration (`1h30m`, `1.5s`, `-2ms`, `0`) into nanoseconds. With `allow_days`
/// also `d` (24h), `w` (7d) and `y` (365d), as Loki's ranges accept.
pub fn parse_duration(s: &str, allow_days: bool) -> Result<i64, DurationError> {
    let orig = s;
    let invalid = || DurationError(format!("time: invalid duration {}", go_quote(orig)));
    let mut s = s;
    let mut neg = false;
    if let Some(r) = s.strip_prefix('-') {
        neg = true;
        s = r;
    } else if let Some(r) = s.strip_prefix('+') {
        s = r;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let num = &s[..num_end];
        if num.is_empty() || num == "." {
            return Err(invalid());
        }
        let v: f64 = num.parse().map_err(|_| invalid())?;
        s = &s[num_end..];
        let unit_end = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let unit = &s[..unit_end];
        if unit.is_empty() {
            return Err(DurationError(format!(
                "time: missing unit in duration {}",
                go_quote(orig)
            )));
        }
        let mult: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" if allow_days => 86400e9,
            "w" if allow_days => 7.0 * 86400e9,
            "y" if allow_days => 365.0 * 86400e9,
            _ => {
                return Err(DurationError(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit),
                    go_quote(orig)
                )));
            }
        };
        total += v * mult;
        s = &s[unit_end..];
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let ns = total.round() as i64;
    Ok(if neg { -ns } else { ns })
}

fn bytes_unit(unit: &str, case_sensitive: bool) -> Option<f64> {
    let u = if case_sensitive {
        unit.to_string()
    } else {
        unit.to_ascii_lowercase()
    };
    let table: &[(&str, f64)] = &[
        ("B", 1.0),
        ("kB", 1e3),
        ("KB", 1e3),
        ("KiB", 1024.0),
        ("MB", 1e6),
        ("MiB", 1024.0 * 1024.0),
        ("GB", 1e9),
        ("GiB", 1024f64.powi(3)),
        ("TB", 1e12),
        ("TiB", 1024f64.powi(4)),
        ("PB", 1e15),
        ("PiB", 1024f64.powi(5)),
        ("EB", 1e18),
        ("EiB", 1024f64.powi(6)),
    ];
    if case_sensitive {
        return table.iter().find(|(n, _)| *n == u).map(|(_, m)| *m);
    }
    let short: &[(&str, f64)] = &[
        ("", 1.0),
        ("b", 1.0),
        ("k", 1e3),
        ("ki", 1024.0),
        ("m", 1e6),
        ("mi", 1024.0 * 1024.0),
        ("g", 1e9),
        ("gi", 1024f64.powi(3)),
        ("t", 1e12),
        ("ti", 1024f64.powi(4)),
        ("p", 1e15),
        ("pi", 1024f64.powi(5)),
        ("e", 1e18),
        ("ei", 1024f64.powi(6)),
    ];
    table
        .iter()
        .chain(short)
        .find(|(n, _)| n.to_ascii_lowercase() == u)
        .map(|(_, m)| *m)
}

/// A byte-size literal in a query (`20MB`, `1.5KiB`): case-sensitive units.
pub fn parse_bytes_literal(s: &str) -> Option<u64> {
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let v: f64 = s[..end].parse().ok()?;
    let m = bytes_unit(&s[end..], true)?;
    Some((v * m) as u64)
}

/// A human byte size in a label value (`3MB`, `1.5 kib`, `42`), like go-humanize's
/// `ParseBytes`, with its error messages.
pub fn parse_bytes_human(s: &str) -> Result<u64, String> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(s.len());
    let num: String = s[..end].chars().filter(|c| *c != ',').collect();
    let v: f64 = num.parse().map_err(|_| {
        format!(
            "strconv.ParseFloat: parsing {}: invalid syntax",
            go_quote(&num)
        )
    })?;
    let unit = s[end..].trim();
    let m = bytes_unit(unit, false).ok_or_else(|| format!("unhandled size name: {unit}"))?;
    let r = v * m;
    if r >= u64::MAX as f64 {
        return Err(format!("too large: {s}"));
    }
    Ok(r as u64)
}

/// Go's `strconv.ParseFloat` for label values and unwrapped values: decimal and hex floats,
/// `inf`/`nan` in any case; returns Go's error text.
pub fn parse_go_float(s: &str) -> Result<f64, String> {
    go_float(s).ok_or_else(|| {
        format!(
            "strconv.ParseFloat: parsing {}: invalid syntax",
            go_quote(s)
        )
    })
}

fn go_float(s: &str) -> Option<f64> {
    let t = s.trim_start_matches(['+', '-']);
    if s.len() - t.len() > 1 {
        return None;
    }
    let neg = s.starts_with('-');
    let lower = t.to_ascii_lowercase();
    let v = match lower.as_str() {
        "inf" | "infinity" => f64::INFINITY,
        "nan" => f64::NAN,
        _ if lower.starts_with("0x") => parse_hex_float(&lower[2..])?,
        _ => {
            if t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-' | '_'))
            {
                return None;
            }
            let cleaned: String = t.chars().filter(|c| *c != '_').collect();
            cleaned.parse::<f64>().ok()?
        }
    };
    Some(if neg { -v } else { v })
}

/// `1.8p3` (after `0x`): a mantissa in hex and a mandatory binary exponent.
fn parse_hex_float(s: &str) -> Option<f64> {
    let (mant, exp) = s.split_once('p')?;
    let exp: i32 = exp.parse().ok()?;
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int.chars() {
        v = v * 16.0 + c.to_digit(16)? as f64;
    }
    let mut scale = 1.0 / 16.0;
    for c in frac.chars() {
        v += c.to_digit(16)? as f64 * scale;
        scale /= 16.0;
    }
    Some(v * 2f64.powi(exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m", false), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("1.5s", false), Ok(1_500_000_000));
        assert_eq!(parse_duration("1d", true), Ok(86_400_000_000_000));
        assert_eq!(
            parse_duration("1d", false).unwrap_err().to_string(),
            r#"time: unknown unit "d" in duration "1d""#
        );
        assert_eq!(
            parse_duration("5", false).unwrap_err().to_string(),
            r#"time: missing unit in duration "5""#
        );
        assert_eq!(
            parse_duration("abc", false).unwrap_err().to_string(),
            r#"time: invalid duration "abc""#
        );
    }

    #[test]
    fn bytes_and_floats() {
        assert_eq!(parse_bytes_literal("20MB"), Some(20_000_000));
        assert_eq!(parse_bytes_literal("1KiB"), Some(1024));
        assert_eq!(parse_bytes_literal("1mb"), None);
        assert_eq!(parse_bytes_human("1.5 kib"), Ok(1536));
        assert_eq!(parse_bytes_human("42"), Ok(42));
        assert_eq!(
            parse_bytes_human("").unwrap_err(),
            r#"strconv.ParseFloat: parsing "": invalid syntax"#
        );
        assert_eq!(parse_go_float("0x1.8p3"), Ok(12.0));
        assert!(parse_go_float("0x1A").is_err());
        assert!(parse_go_float("-Inf").unwrap().is_infinite());
    }
}
