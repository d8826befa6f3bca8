//! The functions a template may call, exactly the set Loki registers: Go's builtins (`and`,
//! `or`, `not`, `len`, `index`, `slice`, `print*`, `html`, `js`, `urlquery`, `eq`…`ge`;
//! `call` has no function to call), the sprig functions Loki picks (strings, integer and
//! decimal float math, `date`/`toDate`/`now`/`unixEpoch`, `fromJson`, `default`, base64) and
//! Loki's own (`__line__`, `__timestamp__`, `bytes`, `duration`, `toDateInZone`,
//! `unixToTime`, `alignLeft`/`alignRight`, `count`, `urlencode`/`urldecode`, the `ToUpper`…
//! `TrimSpace` family).
//!
//! Arguments are converted loosely (a number where a string is expected is its text), where
//! Go would report a type error; comparisons follow Go exactly.

use super::*;

pub(super) const FUNCS: &[&str] = &[
    "ToLower",
    "ToUpper",
    "lower",
    "upper",
    "title",
    "trim",
    "TrimSpace",
    "trimAll",
    "TrimPrefix",
    "TrimSuffix",
    "trimPrefix",
    "trimSuffix",
    "Replace",
    "replace",
    "trunc",
    "substr",
    "default",
    "printf",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "addf",
    "subf",
    "mulf",
    "divf",
    "max",
    "min",
    "maxf",
    "minf",
    "ceil",
    "floor",
    "round",
    "toDate",
    "date",
    "unixEpoch",
    "unixEpochMillis",
    "unixEpochNanos",
    "unixToTime",
    "alignLeft",
    "alignRight",
    "indent",
    "nindent",
    "repeat",
    "b64enc",
    "b64dec",
    "count",
    "urlencode",
    "urldecode",
    "len",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and",
    "or",
    "not",
    "int",
    "float64",
    "__line__",
    "__timestamp__",
    "now",
    "fromJson",
    "print",
    "println",
    "html",
    "js",
    "urlquery",
    "TrimLeft",
    "TrimRight",
    "Trim",
    "bytes",
    "duration",
    "duration_seconds",
    "toDateInZone",
    "index",
    "slice",
    "call",
];

fn want(args: &[Value], n: usize, f: &str) -> Result<(), String> {
    if args.len() != n {
        return Err(format!(
            "template: line_format:1: wrong number of args for {f}: want {n} got {}",
            args.len()
        ));
    }
    Ok(())
}

pub(super) fn call(f: &str, a: Vec<Value>, data: &Data<'_>) -> Result<Value, String> {
    let s = |i: usize| a.get(i).map(Value::to_str).unwrap_or_default();
    let n = |i: usize| a.get(i).map(Value::to_i64).unwrap_or(0);
    let x = |i: usize| a.get(i).map(Value::to_f64).unwrap_or(0.0);
    let fixed = |k: usize| want(&a, k, f);
    Ok(match f {
        "__line__" => Value::Str(data.line.to_string()),
        "__timestamp__" => Value::Time(Time::from_nanos(data.ts_ns)),
        "now" => Value::Time(Time::from_nanos(data.now_ns)),
        "ToLower" | "lower" => {
            fixed(1)?;
            Value::Str(s(0).to_lowercase())
        }
        "ToUpper" | "upper" => {
            fixed(1)?;
            Value::Str(s(0).to_uppercase())
        }
        "title" => {
            fixed(1)?;
            let mut out = String::new();
            let mut prev_letter = false;
            for c in s(0).chars() {
                if !prev_letter && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
            }
            Value::Str(out)
        }
        "trim" | "TrimSpace" => {
            fixed(1)?;
            Value::Str(s(0).trim().to_string())
        }
        "trimAll" => {
            fixed(2)?;
            let cut = s(0);
            Value::Str(s(1).trim_matches(|c| cut.contains(c)).to_string())
        }
        "TrimLeft" | "TrimRight" | "Trim" => {
            fixed(2)?;
            let (v, cut) = (s(0), s(1));
            let f_cut = |c: char| cut.contains(c);
            Value::Str(match f {
                "TrimLeft" => v.trim_start_matches(f_cut).to_string(),
                "TrimRight" => v.trim_end_matches(f_cut).to_string(),
                _ => v.trim_matches(f_cut).to_string(),
            })
        }
        "bytes" => {
            fixed(1)?;
            match crate::duration::parse_bytes_human(&s(0)) {
                Ok(b) => Value::Float(b as f64),
                Err(e) => return Err(format!("template: line_format:1: error calling bytes: {e}")),
            }
        }
        "duration" | "duration_seconds" => {
            fixed(1)?;
            match crate::duration::parse_duration(&s(0), false) {
                Ok(ns) => Value::Float(ns as f64 / 1e9),
                Err(e) => return Err(format!("template: line_format:1: error calling {f}: {e}")),
            }
        }
        "toDateInZone" => {
            fixed(3)?;
            // Loki reads an unknown zone as UTC, and a value that does not parse as Go's
            // zero time
            let zone = Zone::load(&s(1)).unwrap_or(Zone::Utc);
            Value::Time(parse_time(&s(0), &s(2), &zone).unwrap_or_else(Time::zero))
        }
        "TrimPrefix" => {
            fixed(2)?;
            let (v, p) = (s(0), s(1));
            Value::Str(v.strip_prefix(p.as_str()).unwrap_or(&v).to_string())
        }
        "TrimSuffix" => {
            fixed(2)?;
            let (v, p) = (s(0), s(1));
            Value::Str(v.strip_suffix(p.as_str()).unwrap_or(&v).to_string())
        }
        "trimPrefix" => {
            fixed(2)?;
            let (p, v) = (s(0), s(1));
            Value::Str(v.strip_prefix(p.as_str()).unwrap_or(&v).to_string())
        }
        "trimSuffix" => {
            fixed(2)?;
            let (p, v) = (s(0), s(1));
            Value::Str(v.strip_suffix(p.as_str()).unwrap_or(&v).to_string())
        }
        "Replace" => {
            fixed(4)?;
            let (v, old, new, k) = (s(0), s(1), s(2), n(3));
            Value::Str(if k < 0 {
                v.replace(&old, &new)
            } else {
                v.replacen(&old, &new, k as usize)
            })
        }
        "replace" => {
            fixed(3)?;
            Value::Str(s(2).replace(&s(0), &s(1)))
        }
        "trunc" => {
            fixed(2)?;
            let (k, v) = (n(0), s(1));
            let chars: Vec<char> = v.chars().collect();
            let len = chars.len() as i64;
            Value::Str(if k >= 0 {
                chars[..(k.min(len)) as usize].iter().collect()
            } else {
                chars[(len + k).max(0) as usize..].iter().collect()
            })
        }
        "substr" => {
            fixed(3)?;
            // sprig: start < 0 is [:end]; end < 0 or past the end is [start:]; Go's slice
            // bounds errors otherwise
            let (st, en, v) = (n(0), n(1), s(2));
            let b = v.as_bytes();
            let len = b.len() as i64;
            let (lo, hi) = if st < 0 {
                (0, en)
            } else if en < 0 || en > len {
                (st, len)
            } else {
                (st, en)
            };
            if hi < 0 || hi > len {
                return Err(call_err(
                    f,
                    format!("runtime error: slice bounds out of range [:{hi}] with length {len}"),
                ));
            }
            if lo > hi {
                return Err(call_err(
                    f,
                    format!("runtime error: slice bounds out of range [{lo}:{hi}]"),
                ));
            }
            Value::Str(String::from_utf8_lossy(&b[lo as usize..hi as usize]).into_owned())
        }
        "default" => {
            if a.is_empty() || a.len() > 2 {
                return Err("template: line_format:1: wrong number of args for default".into());
            }
            match a.get(1) {
                Some(v) if v.truthy() => v.clone(),
                _ => a[0].clone(),
            }
        }
        "printf" => {
            if a.is_empty() {
                return Err("template: line_format:1: wrong number of args for printf".into());
            }
            Value::Str(go_sprintf(&s(0), &a[1..]))
        }
        "print" => Value::Str(go_sprint(&a)),
        "println" => Value::Str(
            a.iter()
                .map(Value::nested_str)
                .collect::<Vec<_>>()
                .join(" ")
                + "\n",
        ),
        "contains" => {
            fixed(2)?;
            Value::Bool(s(1).contains(&s(0)))
        }
        "hasPrefix" => {
            fixed(2)?;
            Value::Bool(s(1).starts_with(&s(0)))
        }
        "hasSuffix" => {
            fixed(2)?;
            Value::Bool(s(1).ends_with(&s(0)))
        }
        "regexReplaceAll" | "regexReplaceAllLiteral" => {
            fixed(3)?;
            let re = regex::Regex::new(&s(0)).map_err(|e| e.to_string())?;
            let v = s(1);
            let r = s(2);
            Value::Str(if f == "regexReplaceAll" {
                re.replace_all(&v, r.as_str()).into_owned()
            } else {
                re.replace_all(&v, regex::NoExpand(&r)).into_owned()
            })
        }
        "count" => {
            fixed(2)?;
            let re = regex::Regex::new(&s(0)).map_err(|e| e.to_string())?;
            Value::Int(re.find_iter(&s(1)).count() as i64)
        }
        "add" => Value::Int(a.iter().map(Value::to_i64).fold(0i64, i64::wrapping_add)),
        "mul" => Value::Int(a.iter().map(Value::to_i64).fold(1i64, i64::wrapping_mul)),
        "sub" => {
            fixed(2)?;
            Value::Int(n(0).wrapping_sub(n(1)))
        }
        "div" => {
            fixed(2)?;
            if n(1) == 0 {
                return Err(
                    "template: line_format:1: error calling div: integer divide by zero".into(),
                );
            }
            Value::Int(n(0).wrapping_div(n(1)))
        }
        "mod" => {
            fixed(2)?;
            if n(1) == 0 {
                return Err(
                    "template: line_format:1: error calling mod: integer divide by zero".into(),
                );
            }
            Value::Int(n(0).wrapping_rem(n(1)))
        }
        // sprig computes these in decimal: `addf 0.1 0.2` is 0.3
        "addf" => Value::Float(decimal_fold(&a, 0.0, |p, q| p.add(q, false), |p, q| p + q)),
        "mulf" => Value::Float(decimal_fold(&a, 1.0, Dec::mul, |p, q| p * q)),
        "subf" => {
            if a.is_empty() {
                return Err(err("wrong number of args for subf: want at least 1 got 0"));
            }
            Value::Float(decimal_fold(
                &a[1..],
                x(0),
                |p, q| p.add(q, true),
                |p, q| p - q,
            ))
        }
        "divf" => {
            if a.is_empty() {
                return Err(err("wrong number of args for divf: want at least 1 got 0"));
            }
            let mut acc = x(0);
            for v in &a[1..] {
                let q = v.to_f64();
                if q == 0.0 {
                    return Err(call_err(f, "decimal division by zero"));
                }
                // shopspring/decimal's Div keeps 16 decimal places
                acc = format!("{:.16}", acc / q).parse().unwrap_or(acc / q);
            }
            Value::Float(acc)
        }
        "max" => Value::Int(a.iter().map(Value::to_i64).max().unwrap_or(0)),
        "min" => Value::Int(a.iter().map(Value::to_i64).min().unwrap_or(0)),
        "maxf" => Value::Float(
            a.iter()
                .map(Value::to_f64)
                .fold(f64::NEG_INFINITY, f64::max),
        ),
        "minf" => Value::Float(a.iter().map(Value::to_f64).fold(f64::INFINITY, f64::min)),
        "ceil" => Value::Float(x(0).ceil()),
        "floor" => Value::Float(x(0).floor()),
        "round" => {
            // sprig: up when the fraction of value×10^places reaches `roundOn` (default .5)
            if a.len() < 2 {
                return Err(err(format!(
                    "wrong number of args for round: want at least 2 got {}",
                    a.len()
                )));
            }
            let round_on = a.get(2).map_or(0.5, Value::to_f64);
            let pow = 10f64.powf(x(1).trunc());
            let digit = pow * x(0);
            let r = if digit.fract() >= round_on {
                digit.ceil()
            } else {
                digit.floor()
            };
            Value::Float(r / pow)
        }
        "int" => Value::Int(n(0)),
        "float64" => Value::Float(x(0)),
        "len" => {
            fixed(1)?;
            Value::Int(match &a[0] {
                Value::Str(v) => v.len(),
                Value::List(l) => l.len(),
                Value::Map(m) => m.len(),
                other => return Err(call_err(f, format!("len of type {}", other.type_name()))),
            } as i64)
        }
        "index" => {
            let Some((first, keys)) = a.split_first() else {
                return Err(call_err(
                    f,
                    "wrong number of args for index: want at least 1 got 0",
                ));
            };
            let mut v = first.clone();
            for k in keys {
                v = match (&v, k) {
                    // a label map's missing key is "" (Go's map[string]string)
                    (Value::Labels, Value::Str(name)) => {
                        Value::Str((data.labels)(name).unwrap_or_default())
                    }
                    (Value::Labels, _) => {
                        index(&data.materialize(Value::Labels), k).map_err(|e| call_err(f, e))?
                    }
                    _ => index(&v, k).map_err(|e| call_err(f, e))?,
                };
            }
            v
        }
        "slice" => slice(&a).map_err(|e| call_err(f, e))?,
        "call" => return Err(call_err(f, "no function to call")),
        "eq" => {
            let Some((first, rest)) = a.split_first().filter(|(_, r)| !r.is_empty()) else {
                return Err(call_err(f, "missing argument for comparison"));
            };
            let mut any = false;
            for v in rest {
                any |= go_eq(first, v).map_err(|e| call_err(f, e))?;
            }
            Value::Bool(any)
        }
        "ne" => {
            fixed(2)?;
            Value::Bool(!go_eq(&a[0], &a[1]).map_err(|e| call_err(f, e))?)
        }
        "lt" | "le" | "gt" | "ge" => {
            fixed(2)?;
            let ord = go_cmp(&a[0], &a[1]).map_err(|e| call_err(f, e))?;
            Value::Bool(match f {
                "lt" => ord.is_lt(),
                "le" => ord.is_le(),
                "gt" => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        // `and`/`or` are short-circuited by the executor; these see evaluated arguments
        "and" | "or" => {
            if a.is_empty() {
                return Err(err(format!(
                    "wrong number of args for {f}: want at least 1 got 0"
                )));
            }
            let stop = |v: &Value| v.truthy() == (f == "or");
            a.iter()
                .find(|v| stop(v))
                .or(a.last())
                .cloned()
                .unwrap_or(Value::Nil)
        }
        "not" => {
            fixed(1)?;
            Value::Bool(!a[0].truthy())
        }
        "unixEpoch" => {
            fixed(1)?;
            Value::Int(time_of(a.first(), data).secs)
        }
        "unixEpochMillis" => {
            fixed(1)?;
            let t = time_of(a.first(), data);
            Value::Int(t.secs.wrapping_mul(1000) + i64::from(t.nanos / 1_000_000))
        }
        "unixEpochNanos" => {
            fixed(1)?;
            Value::Int(time_of(a.first(), data).unix_nanos())
        }
        "unixToTime" => {
            fixed(1)?;
            // Loki tells the unit by the number of digits: days, s, ms, µs or ns
            let v = s(0);
            let bad = || call_err(f, format!("unable to parse time '{v}'"));
            let k: i64 = v.parse().map_err(|_| bad())?;
            let (secs, nanos) = match v.len() {
                5 => (k.checked_mul(86_400).ok_or_else(bad)?, 0),
                10 => (k, 0),
                13 => (k.div_euclid(1_000), k.rem_euclid(1_000) * 1_000_000),
                16 => (k.div_euclid(1_000_000), k.rem_euclid(1_000_000) * 1_000),
                19 => (k.div_euclid(1_000_000_000), k.rem_euclid(1_000_000_000)),
                _ => return Err(bad()),
            };
            Value::Time(Time {
                secs,
                nanos: nanos as u32,
                zone: Zone::Utc,
            })
        }
        "toDate" => {
            fixed(2)?;
            Value::Time(parse_time(&s(0), &s(1), &Zone::Utc).unwrap_or_else(Time::zero))
        }
        "date" => {
            fixed(2)?;
            // sprig formats in the server's local zone (UTC here), whatever the time's zone
            Value::Str(format_time(&time_of(a.get(1), data).in_utc(), &s(0)))
        }
        "alignLeft" | "alignRight" if n(0) < 0 => {
            fixed(2)?;
            Value::Str(s(1))
        }
        "alignLeft" => {
            fixed(2)?;
            let (k, v) = (sized(n(0), 1)?, s(1));
            let len = v.chars().count();
            Value::Str(if len >= k {
                v.chars().take(k).collect()
            } else {
                format!("{v}{}", " ".repeat(k - len))
            })
        }
        "alignRight" => {
            fixed(2)?;
            let (k, v) = (sized(n(0), 1)?, s(1));
            let len = v.chars().count();
            Value::Str(if len >= k {
                v.chars().skip(len - k).collect()
            } else {
                format!("{}{v}", " ".repeat(k - len))
            })
        }
        "indent" | "nindent" => {
            fixed(2)?;
            let pad = " ".repeat(sized(n(0), s(1).matches('\n').count() + 1)?);
            let body = format!("{pad}{}", s(1).replace('\n', &format!("\n{pad}")));
            Value::Str(if f == "nindent" {
                format!("\n{body}")
            } else {
                body
            })
        }
        "repeat" => {
            fixed(2)?;
            Value::Str(s(1).repeat(sized(n(0), s(1).len())?))
        }
        "b64enc" => Value::Str(b64enc(s(0).as_bytes())),
        "b64dec" => Value::Str(
            b64dec(&s(0))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|| "illegal base64 data".into()),
        ),
        "urlencode" => Value::Str(urlencode(&s(0))),
        "urlquery" => Value::Str(urlencode(&go_sprint(&a))),
        "urldecode" => Value::Str(urldecode(&s(0)).map_err(|e| call_err(f, e))?),
        "html" => Value::Str(html_escape(&go_sprint(&a))),
        "js" => Value::Str(js_escape(&go_sprint(&a))),
        "fromJson" => {
            fixed(1)?;
            // sprig ignores the decoding error: the value is nil
            serde_json::from_str::<serde_json::Value>(&s(0))
                .map(|j| from_json(&j))
                .unwrap_or(Value::Nil)
        }
        _ => {
            return Err(format!(
                "template: line_format:1: function {f:?} not defined"
            ));
        }
    })
}

/// The most bytes a padding or repeating function may produce (a bad template must not
/// exhaust memory).
pub(super) const MAX_OUTPUT: usize = 1 << 20;

fn sized(n: i64, unit: usize) -> Result<usize, String> {
    let n = n.max(0) as usize;
    if n.saturating_mul(unit.max(1)) > MAX_OUTPUT {
        return Err(format!(
            "template: line_format:1: output of more than {MAX_OUTPUT} bytes"
        ));
    }
    Ok(n)
}

/// sprig's reading of a date argument: a time, or an integer of Unix seconds; anything else
/// is now.
fn time_of(v: Option<&Value>, data: &Data<'_>) -> Time {
    match v {
        Some(Value::Time(t)) => t.clone(),
        Some(Value::Int(i)) => Time {
            secs: *i,
            nanos: 0,
            zone: Zone::Utc,
        },
        _ => Time::from_nanos(data.now_ns),
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %v %d %f %g %e %q %x %X %t %c %%`,
/// flags `-+ 0#`, width and precision.
pub fn go_sprintf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let chars: Vec<char> = fmt.chars().collect();
    let mut i = 0;
    let mut ai = 0;
    while i < chars.len() {
        if chars[i] != '%' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        i += 1;
        let mut left = false;
        let mut zero = false;
        let mut plus = false;
        while i < chars.len() && matches!(chars[i], '-' | '+' | ' ' | '0' | '#') {
            match chars[i] {
                '-' => left = true,
                '0' => zero = true,
                '+' => plus = true,
                _ => {}
            }
            i += 1;
        }
        let mut width = None;
        let st = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        if i > st {
            width = chars[st..i]
                .iter()
                .collect::<String>()
                .parse::<usize>()
                .ok();
        }
        let mut prec = None;
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            let st = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            prec = Some(
                chars[st..i]
                    .iter()
                    .collect::<String>()
                    .parse::<usize>()
                    .unwrap_or(0),
            );
        }
        let Some(&verb) = chars.get(i) else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += 1;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(ai) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        ai += 1;
        let body = match verb {
            's' | 'v' => {
                let s = arg.to_str();
                match prec {
                    Some(p) if verb == 's' => s.chars().take(p).collect(),
                    _ => s,
                }
            }
            'q' => go_quote(&arg.to_str()),
            'd' => {
                let v = match arg {
                    Value::Str(s) => match s.parse::<i64>() {
                        Ok(v) => v,
                        Err(_) => {
                            out.push_str(&format!("%!d(string={s})"));
                            continue;
                        }
                    },
                    other => other.to_i64(),
                };
                if plus && v >= 0 {
                    format!("+{v}")
                } else {
                    v.to_string()
                }
            }
            'f' | 'F' => {
                let v = arg.to_f64();
                let s = format!("{:.*}", prec.unwrap_or(6), v);
                if plus && v >= 0.0 { format!("+{s}") } else { s }
            }
            'e' => format!("{:.*e}", prec.unwrap_or(6), arg.to_f64()),
            'g' => go_float_fmt(arg.to_f64()),
            'x' => match arg {
                Value::Str(s) => s.bytes().map(|b| format!("{b:02x}")).collect(),
                other => format!("{:x}", other.to_i64()),
            },
            'X' => match arg {
                Value::Str(s) => s.bytes().map(|b| format!("{b:02X}")).collect(),
                other => format!("{:X}", other.to_i64()),
            },
            't' => arg.truthy().to_string(),
            'c' => char::from_u32(arg.to_i64() as u32)
                .map(String::from)
                .unwrap_or_default(),
            other => format!("%!{other}({})", arg.to_str()),
        };
        let len = body.chars().count();
        match width {
            Some(w) if w > len => {
                let pad = w - len;
                if left {
                    out.push_str(&body);
                    out.push_str(&" ".repeat(pad));
                } else if zero && matches!(verb, 'd' | 'f' | 'F' | 'e' | 'g') {
                    let (sign, digits) = match body.strip_prefix('-') {
                        Some(d) => ("-", d.to_string()),
                        None => ("", body.clone()),
                    };
                    out.push_str(sign);
                    out.push_str(&"0".repeat(pad));
                    out.push_str(&digits);
                } else {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(&body);
                }
            }
            _ => out.push_str(&body),
        }
    }
    if ai < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[ai..]
            .iter()
            .map(|a| match a {
                Value::Str(s) => format!("string={s}"),
                Value::Int(i) => format!("int={i}"),
                other => other.to_str(),
            })
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64enc(b: &[u8]) -> String {
    let mut out = String::new();
    for ch in b.chunks(3) {
        let v = (u32::from(ch[0]) << 16)
            | (u32::from(*ch.get(1).unwrap_or(&0)) << 8)
            | u32::from(*ch.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= ch.len() {
                out.push(B64[((v >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64dec(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|b| *b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `url.QueryUnescape`: `+` is a space; a bad `%` escape is an error.
fn urldecode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16);
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => {
                    let bad: String = String::from_utf8_lossy(&b[i..(i + 3).min(b.len())]).into();
                    return Err(format!("invalid URL escape {}", go_quote(&bad)));
                }
            },
            c => out.push(c),
        }
        i += 1;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `error calling f: msg`, as Go reports a function's error.
fn call_err(f: &str, msg: impl std::fmt::Display) -> String {
    err(format!("error calling {f}: {msg}"))
}

/// Go's `fmt.Sprint`: a space between two operands when neither is a string.
fn go_sprint(a: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in a.iter().enumerate() {
        if i > 0 && !matches!(v, Value::Str(_)) && !matches!(a[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        out.push_str(&v.nested_str());
    }
    out
}

/// A decoded JSON document as Go's `encoding/json` gives it (numbers are float64).
fn from_json(j: &serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::Str(s.clone()),
        serde_json::Value::Array(a) => Value::List(Rc::new(a.iter().map(from_json).collect())),
        serde_json::Value::Object(o) => Value::Map(Rc::new(
            o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect(),
        )),
    }
}

/// Go's template `eq` for two values: same basic kind (bool, int, float, string) or an
/// error; nil equals only nil.
fn go_eq(x: &Value, y: &Value) -> Result<bool, String> {
    Ok(match (x, y) {
        (Value::Nil, other) | (other, Value::Nil) => matches!(other, Value::Nil),
        (Value::Bool(p), Value::Bool(q)) => p == q,
        (Value::Int(p), Value::Int(q)) => p == q,
        (Value::Float(p), Value::Float(q)) => p == q,
        (Value::Str(p), Value::Str(q)) => p == q,
        (Value::Time(p), Value::Time(q)) => p == q,
        (Value::List(_) | Value::Map(_) | Value::Labels, _)
        | (_, Value::List(_) | Value::Map(_) | Value::Labels) => {
            return Err(format!(
                "non-comparable types {}: {}, {}: {}",
                x.nested_str(),
                x.type_name(),
                y.type_name(),
                y.nested_str()
            ));
        }
        _ => return Err("incompatible types for comparison".into()),
    })
}

/// Go's template `lt` family: ints, floats and strings, each only with its own kind.
fn go_cmp(x: &Value, y: &Value) -> Result<std::cmp::Ordering, String> {
    Ok(match (x, y) {
        (Value::Int(p), Value::Int(q)) => p.cmp(q),
        (Value::Float(p), Value::Float(q)) => p.partial_cmp(q).unwrap_or(std::cmp::Ordering::Equal),
        (Value::Str(p), Value::Str(q)) => p.cmp(q),
        (
            Value::Int(_) | Value::Float(_) | Value::Str(_),
            Value::Int(_) | Value::Float(_) | Value::Str(_),
        ) => {
            return Err("incompatible types for comparison".into());
        }
        _ => return Err("invalid type for comparison".into()),
    })
}

/// An integer index argument (Go accepts any integer kind).
fn int_index(k: &Value) -> Result<i64, String> {
    match k {
        Value::Int(i) => Ok(*i),
        Value::Nil => Err("cannot index slice/array with nil".into()),
        other => Err(format!(
            "cannot index slice/array with type {}",
            other.type_name()
        )),
    }
}

/// One step of Go's `index`: a list by position, a map by key (missing: nil), a string's byte.
fn index(v: &Value, k: &Value) -> Result<Value, String> {
    match v {
        Value::List(l) => {
            let i = int_index(k)?;
            usize::try_from(i)
                .ok()
                .and_then(|i| l.get(i))
                .cloned()
                .ok_or_else(|| format!("index out of range: {i}"))
        }
        Value::Str(s) => {
            let i = int_index(k)?;
            usize::try_from(i)
                .ok()
                .and_then(|i| s.as_bytes().get(i))
                .map(|b| Value::Int(i64::from(*b)))
                .ok_or_else(|| format!("index out of range: {i}"))
        }
        Value::Map(m) => match k {
            Value::Str(key) => Ok(m.get(key).cloned().unwrap_or(Value::Nil)),
            other => Err(format!(
                "value has type {}; should be string",
                other.type_name()
            )),
        },
        Value::Nil => Err("index of untyped nil".into()),
        other => Err(format!("can't index item of type {}", other.type_name())),
    }
}

/// Go's `slice x i j`: a sub-list or a sub-string (by bytes).
fn slice(a: &[Value]) -> Result<Value, String> {
    let Some((item, idx)) = a.split_first() else {
        return Err("wrong number of args for slice: want at least 1 got 0".into());
    };
    if idx.len() > 2 {
        return Err(format!("too many slice indexes: {}", idx.len()));
    }
    let len = match item {
        Value::List(l) => l.len(),
        Value::Str(s) => s.len(),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    };
    let mut bounds = [0usize, len];
    for (n, k) in idx.iter().enumerate() {
        let i = int_index(k)?;
        bounds[n] = usize::try_from(i)
            .ok()
            .filter(|i| *i <= len)
            .ok_or_else(|| format!("index out of range: {i}"))?;
    }
    let [lo, hi] = bounds;
    if lo > hi {
        return Err(format!("invalid slice index: {lo} > {hi}"));
    }
    Ok(match item {
        Value::List(l) => Value::List(Rc::new(l[lo..hi].to_vec())),
        Value::Str(s) => Value::Str(String::from_utf8_lossy(&s.as_bytes()[lo..hi]).into_owned()),
        _ => Value::Nil,
    })
}

/// Go's `template.HTMLEscapeString`.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `template.JSEscapeString`.
fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A decimal `m × 10^-scale`, for sprig's decimal float arithmetic.
#[derive(Clone, Copy)]
struct Dec {
    m: i128,
    scale: u32,
}

impl Dec {
    /// The shortest decimal that reads back as `f` (shopspring's `NewFromFloat`); `None` for
    /// values too large or small for an i128 mantissa (and non-finite ones).
    fn of(f: f64) -> Option<Dec> {
        if !f.is_finite() {
            return None;
        }
        let sci = format!("{f:e}");
        let (mant, exp) = sci.split_once('e')?;
        let exp: i32 = exp.parse().ok()?;
        let neg = mant.starts_with('-');
        let mant = mant.trim_start_matches('-');
        let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
        let digits: i128 = format!("{int}{frac}").parse().ok()?;
        let scale = frac.len() as i32 - exp;
        let (m, scale) = if scale >= 0 {
            (digits, scale as u32)
        } else {
            (digits.checked_mul(10i128.checked_pow((-scale) as u32)?)?, 0)
        };
        (scale <= 30).then_some(Dec {
            m: if neg { -m } else { m },
            scale,
        })
    }
    fn rescale(self, scale: u32) -> Option<i128> {
        self.m.checked_mul(10i128.checked_pow(scale - self.scale)?)
    }
    fn add(self, o: Dec, negate: bool) -> Option<Dec> {
        let scale = self.scale.max(o.scale);
        let q = o.rescale(scale)?;
        let q = if negate { -q } else { q };
        Some(Dec {
            m: self.rescale(scale)?.checked_add(q)?,
            scale,
        })
    }
    fn mul(self, o: Dec) -> Option<Dec> {
        Some(Dec {
            m: self.m.checked_mul(o.m)?,
            scale: self.scale + o.scale,
        })
    }
    fn to_f64(self) -> f64 {
        let digits = self.m.unsigned_abs().to_string();
        let sign = if self.m < 0 { "-" } else { "" };
        format!("{sign}{digits}e-{}", self.scale)
            .parse()
            .unwrap_or(f64::NAN)
    }
}

/// Folds `args` into `init` in decimal (`dop`), or in plain floats (`fop`) when a value
/// does not fit a decimal.
fn decimal_fold(
    args: &[Value],
    init: f64,
    dop: impl Fn(Dec, Dec) -> Option<Dec>,
    fop: impl Fn(f64, f64) -> f64,
) -> f64 {
    let exact = Dec::of(init).and_then(|start| {
        args.iter()
            .try_fold(start, |acc, v| dop(acc, Dec::of(v.to_f64())?))
    });
    match exact {
        Some(d) => d.to_f64(),
        None => args.iter().fold(init, |acc, v| fop(acc, v.to_f64())),
    }
}
