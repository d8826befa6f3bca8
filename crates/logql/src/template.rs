//! The Go `text/template` subset that `line_format` and `label_format` use: `{{.label}}`,
//! pipelines (`{{ .a | ToUpper }}`), function calls with string, number and parenthesized
//! arguments, `{{if}}…{{else if}}…{{else}}…{{end}}`, `{{-`/`-}}` trimming, and the functions
//! Loki documents (strings, math, dates, encodings, `__line__`, `__timestamp__`).

use crate::duration::go_quote;
use std::fmt::Write as _;

/// A parsed template.
#[derive(Clone, Debug)]
pub struct Template {
    nodes: Vec<Node>,
    /// Does it use `__line__` or `__timestamp__`? (Otherwise the line need not be passed.)
    pub uses_line: bool,
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Action(Pipeline),
    If {
        branches: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
}

#[derive(Clone, Debug)]
struct Pipeline(Vec<Command>);

#[derive(Clone, Debug)]
struct Command {
    func: Option<String>,
    args: Vec<Arg>,
}

#[derive(Clone, Debug)]
enum Arg {
    Field(String),
    Dot,
    Str(String),
    Num(f64, bool),
    Bool(bool),
    Nil,
    Sub(Pipeline),
    Func(String),
}

/// A template value.
#[derive(Clone, Debug)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A time in nanoseconds since the Unix epoch (UTC).
    Time(i64),
    Nil,
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Str(s) => !s.is_empty(),
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Bool(b) => *b,
            Value::Time(_) => true,
            Value::Nil => false,
        }
    }
    fn to_str(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => go_float_fmt(*f),
            Value::Bool(b) => b.to_string(),
            Value::Time(t) => format_time(*t, "2006-01-02 15:04:05.999999999 -0700 MST"),
            Value::Nil => "<no value>".into(),
        }
    }
    fn to_f64(&self) -> f64 {
        match self {
            Value::Str(s) => s.trim().parse().unwrap_or(0.0),
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Time(t) => *t as f64,
            Value::Nil => 0.0,
        }
    }
    /// sprig's `toInt64` (strings parse as floats then truncate).
    fn to_i64(&self) -> i64 {
        match self {
            Value::Str(s) => s
                .trim()
                .parse::<i64>()
                .unwrap_or_else(|_| s.trim().parse::<f64>().unwrap_or(0.0) as i64),
            Value::Float(f) => *f as i64,
            other => other.to_f64() as i64,
        }
    }
}

fn go_float_fmt(f: f64) -> String {
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f.is_nan() {
        return "NaN".into();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e21).contains(&a) {
        let s = format!("{f:e}");
        // Go writes e+06 style exponents
        if let Some((m, e)) = s.split_once('e') {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            return format!("{m}e{sign}{digits:0>2}");
        }
        return s;
    }
    format!("{f}")
}

/// What a template sees: labels, the line, the timestamp.
pub struct Data<'a> {
    pub labels: &'a dyn Fn(&str) -> Option<String>,
    pub line: &'a str,
    pub ts_ns: i64,
}

const FUNCS: &[&str] = &[
    "ToLower",
    "ToUpper",
    "lower",
    "upper",
    "title",
    "Title",
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
    "toString",
    "__line__",
    "__timestamp__",
    "now",
    "fromJson",
    "print",
    "println",
    "html",
    "js",
    "urlquery",
    "quote",
    "squote",
    "nospace",
    "abbrev",
    "initials",
    "snakecase",
    "camelcase",
    "TrimLeft",
    "TrimRight",
    "Trim",
    "bytes",
    "duration",
    "duration_seconds",
    "toDateInZone",
];

impl Template {
    /// Parses a template; errors read like Go's (`template: …: unclosed action`,
    /// `function "x" not defined`).
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut toks = Vec::new();
        let mut rest = src;
        let mut trim_next = false;
        while let Some(start) = rest.find("{{") {
            let mut text = &rest[..start];
            if trim_next {
                text = text.trim_start();
            }
            let after = &rest[start + 2..];
            let trim_left = after.starts_with('-') && after[1..].starts_with(char::is_whitespace);
            if trim_left {
                text = text.trim_end();
            }
            if !text.is_empty() {
                toks.push((false, text.to_string()));
            }
            let body_start = if trim_left { 1 } else { 0 };
            let end = find_action_end(&after[body_start..])
                .ok_or_else(|| "template: line_format:1: unclosed action".to_string())?;
            let mut body = &after[body_start..body_start + end];
            trim_next = false;
            if body.ends_with('-') && body[..body.len() - 1].ends_with(char::is_whitespace) {
                body = &body[..body.len() - 1];
                trim_next = true;
            }
            toks.push((true, body.trim().to_string()));
            rest = &after[body_start + end + 2..];
        }
        let mut text = rest;
        if trim_next {
            text = text.trim_start();
        }
        if !text.is_empty() {
            toks.push((false, text.to_string()));
        }
        let mut i = 0;
        let (nodes, end) = parse_nodes(&toks, &mut i)?;
        if let Some(e) = end {
            return Err(format!("template: line_format:1: unexpected {{{{{e}}}}}"));
        }
        let uses_line = src.contains("__line__") || src.contains("__timestamp__");
        Ok(Template { nodes, uses_line })
    }

    /// Does the template contain no action (a constant)?
    pub fn is_constant(&self) -> Option<&str> {
        match self.nodes.as_slice() {
            [] => Some(""),
            [Node::Text(t)] => Some(t),
            _ => None,
        }
    }

    pub fn render(&self, data: &Data<'_>, out: &mut String) -> Result<(), String> {
        render_nodes(&self.nodes, data, out)
    }
}

fn find_action_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b[i + 1] == b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

type Toks = [(bool, String)];

/// Parses nodes until `{{end}}`/`{{else…}}` (returned as the terminator) or the end.
fn parse_nodes(toks: &Toks, i: &mut usize) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while *i < toks.len() {
        let (is_action, s) = &toks[*i];
        *i += 1;
        if !is_action {
            nodes.push(Node::Text(s.clone()));
            continue;
        }
        if s == "end" || s == "else" || s.starts_with("else ") {
            return Ok((nodes, Some(s.clone())));
        }
        if s.starts_with("/*") {
            continue;
        }
        if let Some(cond) = s.strip_prefix("if ") {
            let mut branches = Vec::new();
            let mut cond = parse_pipeline(cond)?;
            let otherwise;
            loop {
                let (body, end) = parse_nodes(toks, i)?;
                branches.push((cond, body));
                match end.as_deref() {
                    Some("end") => {
                        otherwise = Vec::new();
                        break;
                    }
                    Some("else") => {
                        let (body, end) = parse_nodes(toks, i)?;
                        if end.as_deref() != Some("end") {
                            return Err("template: line_format:1: unexpected EOF".into());
                        }
                        otherwise = body;
                        break;
                    }
                    Some(e) if e.starts_with("else if ") => {
                        cond = parse_pipeline(&e[8..])?;
                    }
                    _ => return Err("template: line_format:1: unexpected EOF".into()),
                }
            }
            nodes.push(Node::If {
                branches,
                otherwise,
            });
            continue;
        }
        nodes.push(Node::Action(parse_pipeline(s)?));
    }
    Ok((nodes, None))
}

fn tokenize_action(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
            continue;
        }
        if ch == '(' || ch == ')' || ch == '|' {
            out.push(ch.to_string());
            i += 1;
            continue;
        }
        if ch == '"' || ch == '`' {
            let mut j = i + 1;
            while j < c.len() && c[j] != ch {
                if ch == '"' && c[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            if j >= c.len() {
                return Err("template: line_format:1: unterminated quoted string".into());
            }
            out.push(c[i..=j].iter().collect());
            i = j + 1;
            continue;
        }
        let mut j = i;
        while j < c.len() && !c[j].is_whitespace() && !matches!(c[j], '(' | ')' | '|') {
            j += 1;
        }
        out.push(c[i..j].iter().collect());
        i = j;
    }
    Ok(out)
}

fn parse_pipeline(s: &str) -> Result<Pipeline, String> {
    let toks = tokenize_action(s)?;
    let mut i = 0;
    let p = parse_pipe_toks(&toks, &mut i)?;
    if i < toks.len() {
        return Err(format!(
            "template: line_format:1: unexpected {:?} in command",
            toks[i]
        ));
    }
    Ok(p)
}

fn parse_pipe_toks(toks: &[String], i: &mut usize) -> Result<Pipeline, String> {
    let mut cmds = Vec::new();
    let mut cur: Vec<Arg> = Vec::new();
    while *i < toks.len() {
        let t = &toks[*i];
        match t.as_str() {
            ")" => break,
            "|" => {
                *i += 1;
                cmds.push(make_command(std::mem::take(&mut cur))?);
                continue;
            }
            "(" => {
                *i += 1;
                let sub = parse_pipe_toks(toks, i)?;
                if toks.get(*i).map(String::as_str) != Some(")") {
                    return Err("template: line_format:1: unclosed left paren".into());
                }
                *i += 1;
                cur.push(Arg::Sub(sub));
                continue;
            }
            _ => {}
        }
        *i += 1;
        cur.push(parse_operand(t)?);
    }
    if cur.is_empty() {
        return Err("template: line_format:1: missing value for command".into());
    }
    cmds.push(make_command(cur)?);
    Ok(Pipeline(cmds))
}

fn make_command(mut args: Vec<Arg>) -> Result<Command, String> {
    if args.is_empty() {
        return Err("template: line_format:1: missing value for command".into());
    }
    if let Arg::Func(f) = &args[0] {
        let f = f.clone();
        args.remove(0);
        return Ok(Command {
            func: Some(f),
            args,
        });
    }
    Ok(Command { func: None, args })
}

fn parse_operand(t: &str) -> Result<Arg, String> {
    if t == "." {
        return Ok(Arg::Dot);
    }
    if let Some(f) = t.strip_prefix('.') {
        return Ok(Arg::Field(f.to_string()));
    }
    if t.starts_with('"') {
        let chars: Vec<char> = t.chars().collect();
        let mut s = String::new();
        let mut j = 1;
        while j < chars.len() - 1 {
            if chars[j] == '\\' && j + 1 < chars.len() - 1 {
                j += 1;
                match chars[j] {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'x' => {
                        let h: String = chars[j + 1..(j + 3).min(chars.len())].iter().collect();
                        let v = u32::from_str_radix(&h, 16).map_err(|_| "template: bad escape")?;
                        s.push(char::from_u32(v).unwrap_or('?'));
                        j += 2;
                    }
                    c => s.push(c),
                }
            } else {
                s.push(chars[j]);
            }
            j += 1;
        }
        return Ok(Arg::Str(s));
    }
    if t.starts_with('`') {
        return Ok(Arg::Str(t[1..t.len() - 1].to_string()));
    }
    if t == "true" || t == "false" {
        return Ok(Arg::Bool(t == "true"));
    }
    if t == "nil" {
        return Ok(Arg::Nil);
    }
    if t.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
        let is_int = !t.contains(['.', 'e', 'E']);
        let v: f64 = t
            .parse()
            .map_err(|_| format!("template: line_format:1: bad number syntax: {t:?}"))?;
        return Ok(Arg::Num(v, is_int));
    }
    if FUNCS.contains(&t) {
        return Ok(Arg::Func(t.to_string()));
    }
    Err(format!(
        "template: line_format:1: function {:?} not defined",
        t
    ))
}

fn render_nodes(nodes: &[Node], data: &Data<'_>, out: &mut String) -> Result<(), String> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipeline(p, data)?;
                out.push_str(&v.to_str());
            }
            Node::If {
                branches,
                otherwise,
            } => {
                let mut done = false;
                for (c, body) in branches {
                    if eval_pipeline(c, data)?.truthy() {
                        render_nodes(body, data, out)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    render_nodes(otherwise, data, out)?;
                }
            }
        }
    }
    Ok(())
}

fn eval_pipeline(p: &Pipeline, data: &Data<'_>) -> Result<Value, String> {
    let mut prev: Option<Value> = None;
    for c in &p.0 {
        let mut args = Vec::with_capacity(c.args.len() + 1);
        for a in &c.args {
            args.push(eval_arg(a, data)?);
        }
        if let Some(v) = prev.take() {
            args.push(v);
        }
        prev = Some(match &c.func {
            Some(f) => call(f, args, data)?,
            None => {
                if args.len() != 1 {
                    return Err(
                        "template: line_format:1: can't give argument to non-function".into(),
                    );
                }
                args.pop().unwrap_or(Value::Nil)
            }
        });
    }
    Ok(prev.unwrap_or(Value::Nil))
}

fn eval_arg(a: &Arg, data: &Data<'_>) -> Result<Value, String> {
    Ok(match a {
        Arg::Field(f) => Value::Str((data.labels)(f).unwrap_or_default()),
        Arg::Dot => Value::Str(String::new()),
        Arg::Str(s) => Value::Str(s.clone()),
        Arg::Num(v, true) => Value::Int(*v as i64),
        Arg::Num(v, false) => Value::Float(*v),
        Arg::Bool(b) => Value::Bool(*b),
        Arg::Nil => Value::Nil,
        Arg::Sub(p) => eval_pipeline(p, data)?,
        Arg::Func(f) => call(f, Vec::new(), data)?,
    })
}

fn want(args: &[Value], n: usize, f: &str) -> Result<(), String> {
    if args.len() != n {
        return Err(format!(
            "template: line_format:1: wrong number of args for {f}: want {n} got {}",
            args.len()
        ));
    }
    Ok(())
}

fn call(f: &str, a: Vec<Value>, data: &Data<'_>) -> Result<Value, String> {
    let s = |i: usize| a.get(i).map(Value::to_str).unwrap_or_default();
    let n = |i: usize| a.get(i).map(Value::to_i64).unwrap_or(0);
    let x = |i: usize| a.get(i).map(Value::to_f64).unwrap_or(0.0);
    let fixed = |k: usize| want(&a, k, f);
    Ok(match f {
        "__line__" => Value::Str(data.line.to_string()),
        "__timestamp__" => Value::Time(data.ts_ns),
        "now" => Value::Time(data.ts_ns),
        "ToLower" | "lower" => {
            fixed(1)?;
            Value::Str(s(0).to_lowercase())
        }
        "ToUpper" | "upper" => {
            fixed(1)?;
            Value::Str(s(0).to_uppercase())
        }
        "title" | "Title" => {
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
        "nospace" => Value::Str(s(0).chars().filter(|c| !c.is_whitespace()).collect()),
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
            // zones other than UTC are not known here: the value is read as UTC
            Value::Time(parse_time(&s(0), &s(2)).unwrap_or(0))
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
            let (st, en, v) = (n(0), n(1), s(2));
            let b = v.as_bytes();
            let len = b.len() as i64;
            let st = st.max(0);
            let en = if en < 0 || en > len { len } else { en };
            Value::Str(if st >= en {
                String::new()
            } else {
                String::from_utf8_lossy(&b[st as usize..en as usize]).into_owned()
            })
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
        "print" => Value::Str(a.iter().map(Value::to_str).collect::<Vec<_>>().join("")),
        "println" => Value::Str(a.iter().map(Value::to_str).collect::<Vec<_>>().join(" ") + "\n"),
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
        "addf" => Value::Float(a.iter().map(Value::to_f64).sum()),
        "mulf" => Value::Float(a.iter().map(Value::to_f64).product()),
        "subf" => Value::Float(a.iter().skip(1).fold(x(0), |acc, v| acc - v.to_f64())),
        "divf" => Value::Float(a.iter().skip(1).fold(x(0), |acc, v| acc / v.to_f64())),
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
            let p = 10f64.powi(n(1) as i32);
            Value::Float((x(0) * p).round() / p)
        }
        "int" => Value::Int(n(0)),
        "float64" => Value::Float(x(0)),
        "toString" => Value::Str(s(0)),
        "len" => Value::Int(s(0).chars().count() as i64),
        "eq" => Value::Bool(a.len() >= 2 && a[1..].iter().any(|v| v.to_str() == s(0))),
        "ne" => Value::Bool(s(0) != s(1)),
        "lt" | "le" | "gt" | "ge" => {
            fixed(2)?;
            let ord = match (&a[0], &a[1]) {
                (Value::Str(p), Value::Str(q)) => p.cmp(q),
                _ => x(0).partial_cmp(&x(1)).unwrap_or(std::cmp::Ordering::Equal),
            };
            Value::Bool(match f {
                "lt" => ord.is_lt(),
                "le" => ord.is_le(),
                "gt" => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        "and" => a
            .iter()
            .find(|v| !v.truthy())
            .or(a.last())
            .cloned()
            .unwrap_or(Value::Nil),
        "or" => a
            .iter()
            .find(|v| v.truthy())
            .or(a.last())
            .cloned()
            .unwrap_or(Value::Nil),
        "not" => Value::Bool(!a.first().is_some_and(Value::truthy)),
        "unixEpoch" => Value::Int(time_of(a.first()).div_euclid(1_000_000_000)),
        "unixEpochMillis" => Value::Int(time_of(a.first()).div_euclid(1_000_000)),
        "unixEpochNanos" => Value::Int(time_of(a.first())),
        "unixToTime" => {
            let v = s(0);
            let k: i64 = v
                .parse()
                .map_err(|_| format!("unable to parse unix time {v:?}"))?;
            let ns = match v.len() {
                0..=10 => k.saturating_mul(1_000_000_000),
                11..=13 => k.saturating_mul(1_000_000),
                14..=16 => k.saturating_mul(1_000),
                _ => k,
            };
            Value::Time(ns)
        }
        "toDate" => {
            fixed(2)?;
            Value::Time(parse_time(&s(0), &s(1)).unwrap_or(0))
        }
        "date" => {
            fixed(2)?;
            Value::Str(format_time(time_of(a.get(1)), &s(0)))
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
        "quote" => Value::Str(
            a.iter()
                .map(|v| go_quote(&v.to_str()))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "squote" => Value::Str(
            a.iter()
                .map(|v| format!("'{}'", v.to_str()))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "b64enc" => Value::Str(b64enc(s(0).as_bytes())),
        "b64dec" => Value::Str(
            b64dec(&s(0))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|| "illegal base64 data".into()),
        ),
        "urlencode" | "urlquery" => Value::Str(urlencode(&s(0))),
        "urldecode" => Value::Str(urldecode(&s(0))),
        "html" | "js" => Value::Str(s(0)),
        "fromJson" => Value::Str(s(0)),
        "abbrev" => {
            let (k, v) = (n(0).max(0) as usize, s(1));
            Value::Str(if v.chars().count() <= k || k < 4 {
                v
            } else {
                format!("{}...", v.chars().take(k - 3).collect::<String>())
            })
        }
        "initials" => Value::Str(
            s(0).split_whitespace()
                .filter_map(|w| w.chars().next())
                .collect(),
        ),
        "snakecase" | "camelcase" => Value::Str(s(0)),
        _ => {
            return Err(format!(
                "template: line_format:1: function {f:?} not defined"
            ));
        }
    })
}

/// The most bytes a padding or repeating function may produce (a bad template must not
/// exhaust memory).
const MAX_OUTPUT: usize = 1 << 20;

fn sized(n: i64, unit: usize) -> Result<usize, String> {
    let n = n.max(0) as usize;
    if n.saturating_mul(unit.max(1)) > MAX_OUTPUT {
        return Err(format!(
            "template: line_format:1: output of more than {MAX_OUTPUT} bytes"
        ));
    }
    Ok(n)
}

fn time_of(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Time(t)) => *t,
        Some(Value::Int(i)) => i.saturating_mul(1_000_000_000),
        Some(other) => other.to_f64() as i64,
        None => 0,
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

fn urldecode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Days since 1970-01-01 to (y, m, d) (proleptic Gregorian).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];

/// Go's reference-time layouts (`2006-01-02T15:04:05Z07:00`), UTC only.
pub fn format_time(ns: i64, layout: &str) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = civil(days);
    let (h, mi, s) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let wd = DAYS[days.rem_euclid(7) as usize];
    let mut out = String::new();
    let mut rest = layout;
    let table: &[(&str, &dyn Fn() -> String)] = &[
        ("2006", &|| format!("{y:04}")),
        ("January", &|| MONTHS[mo as usize - 1].to_string()),
        ("Jan", &|| MONTHS[mo as usize - 1][..3].to_string()),
        ("Monday", &|| wd.to_string()),
        ("Mon", &|| wd[..3].to_string()),
        ("MST", &|| "UTC".to_string()),
        ("Z07:00", &|| "Z".to_string()),
        ("-0700", &|| "+0000".to_string()),
        ("-07:00", &|| "+00:00".to_string()),
        (".000000000", &|| format!(".{frac:09}")),
        (".999999999", &|| {
            if frac == 0 {
                String::new()
            } else {
                format!(".{frac:09}").trim_end_matches('0').to_string()
            }
        }),
        (".000000", &|| format!(".{:06}", frac / 1000)),
        (".000", &|| format!(".{:03}", frac / 1_000_000)),
        ("01", &|| format!("{mo:02}")),
        ("02", &|| format!("{d:02}")),
        ("15", &|| format!("{h:02}")),
        ("03", &|| {
            format!("{:02}", if h % 12 == 0 { 12 } else { h % 12 })
        }),
        ("04", &|| format!("{mi:02}")),
        ("05", &|| format!("{s:02}")),
        ("06", &|| format!("{:02}", y % 100)),
        ("PM", &|| if h >= 12 { "PM".into() } else { "AM".into() }),
        ("pm", &|| if h >= 12 { "pm".into() } else { "am".into() }),
        ("1", &|| mo.to_string()),
        ("2", &|| d.to_string()),
        ("3", &|| (if h % 12 == 0 { 12 } else { h % 12 }).to_string()),
        ("4", &|| mi.to_string()),
        ("5", &|| s.to_string()),
    ];
    'outer: while !rest.is_empty() {
        for (pat, f) in table {
            if let Some(r) = rest.strip_prefix(pat) {
                out.push_str(&f());
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Parses `value` with a Go layout (numeric fields, `Z`/offset zones); `None` if it does
/// not fit.
pub fn parse_time(layout: &str, value: &str) -> Option<i64> {
    let (mut y, mut mo, mut d) = (1i64, 1u32, 1u32);
    let (mut h, mut mi, mut s, mut frac, mut off) = (0i64, 0i64, 0i64, 0i64, 0i64);
    let mut l = layout;
    let mut v = value;
    fn num(v: &mut &str, n: usize) -> Option<i64> {
        let k = v.bytes().take(n).take_while(u8::is_ascii_digit).count();
        if k == 0 {
            return None;
        }
        let r = v[..k].parse().ok();
        *v = &v[k..];
        r
    }
    fn fraction(v: &mut &str) -> Option<i64> {
        let k = v.bytes().take_while(u8::is_ascii_digit).count();
        let digits = format!("{:0<9}", &v[..k]);
        *v = &v[k..];
        digits[..9].parse().ok()
    }
    fn zone(v: &mut &str, colon: bool) -> Option<i64> {
        let sign = match v.as_bytes().first()? {
            b'-' => -1,
            b'+' => 1,
            _ => return None,
        };
        *v = &v[1..];
        let oh = num(v, 2)?;
        if colon {
            *v = v.strip_prefix(':')?;
        }
        let om = num(v, 2)?;
        Some(sign * (oh * 3600 + om * 60))
    }
    while !l.is_empty() {
        if let Some(r) = l.strip_prefix("2006") {
            y = num(&mut v, 4)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("Z07:00") {
            match v.strip_prefix('Z') {
                Some(rv) => v = rv,
                None => off = zone(&mut v, true)?,
            }
            l = r;
        } else if let Some(r) = l.strip_prefix("-07:00") {
            off = zone(&mut v, true)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("-0700") {
            off = zone(&mut v, false)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("01") {
            mo = num(&mut v, 2)? as u32;
            l = r;
        } else if let Some(r) = l.strip_prefix("02") {
            d = num(&mut v, 2)? as u32;
            l = r;
        } else if let Some(r) = l.strip_prefix("15") {
            h = num(&mut v, 2)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("04") {
            mi = num(&mut v, 2)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("05") {
            s = num(&mut v, 2)?;
            l = r;
            // Go accepts a fraction after seconds even when the layout has none
            if !l.starts_with('.')
                && let Some(rv) = v.strip_prefix('.')
            {
                v = rv;
                frac = fraction(&mut v)?;
            }
        } else if let Some(r) = l.strip_prefix(".000") {
            v = v.strip_prefix('.')?;
            frac = fraction(&mut v)?;
            l = r.trim_start_matches('0');
        } else {
            let c = l.chars().next()?;
            let cv = v.chars().next()?;
            if c != cv {
                return None;
            }
            l = &l[c.len_utf8()..];
            v = &v[cv.len_utf8()..];
        }
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days
        .checked_mul(86_400)?
        .checked_add(h * 3600 + mi * 60 + s - off)?;
    secs.checked_mul(1_000_000_000)?.checked_add(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, labels: &[(&str, &str)]) -> Result<String, String> {
        let tpl = Template::parse(t)?;
        let get = |n: &str| {
            labels
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        let mut out = String::new();
        tpl.render(
            &Data {
                labels: &get,
                line: "the line",
                ts_ns: 1_700_000_000_123_000_000,
            },
            &mut out,
        )?;
        Ok(out)
    }

    #[test]
    fn fields_pipelines_and_functions() {
        let l = [("a", "Hello World"), ("n", "1500"), ("e", "")];
        assert_eq!(render("{{.a}}!", &l).unwrap(), "Hello World!");
        assert_eq!(render("{{ .a | ToUpper }}", &l).unwrap(), "HELLO WORLD");
        assert_eq!(
            render("{{ .a | lower | title }}", &l).unwrap(),
            "Hello World"
        );
        assert_eq!(render("{{ div .n 1000 }}", &l).unwrap(), "1");
        assert_eq!(
            render(r#"{{ Replace .a "o" "0" -1 }}"#, &l).unwrap(),
            "Hell0 W0rld"
        );
        assert_eq!(
            render(r#"{{ replace "o" "0" .a }}"#, &l).unwrap(),
            "Hell0 W0rld"
        );
        assert_eq!(render("{{ trunc 5 .a }}", &l).unwrap(), "Hello");
        assert_eq!(render("{{ substr 0 4 .a }}", &l).unwrap(), "Hell");
        assert_eq!(render(r#"{{ .e | default "none" }}"#, &l).unwrap(), "none");
        assert_eq!(
            render(r#"{{ printf "%-6s|%5.1f" "ab" 2.25 }}"#, &l).unwrap(),
            "ab    |  2.2"
        );
        assert_eq!(
            render(
                r#"{{ if contains "World" .a }}yes{{ else }}no{{ end }}"#,
                &l
            )
            .unwrap(),
            "yes"
        );
        assert_eq!(
            render(
                r#"{{ if eq .n "1" }}a{{ else if eq .n "1500" }}b{{ end }}"#,
                &l
            )
            .unwrap(),
            "b"
        );
        assert_eq!(render("{{ __line__ }}", &l).unwrap(), "the line");
        assert_eq!(
            render("{{ __timestamp__ | unixEpoch }}", &l).unwrap(),
            "1700000000"
        );
        assert_eq!(
            render(r#"{{ date "2006-01-02T15:04:05" __timestamp__ }}"#, &l).unwrap(),
            "2023-11-14T22:13:20"
        );
        assert_eq!(
            render(r#"{{ regexReplaceAll "o(.)" .a "${1}0" }}"#, &l).unwrap(),
            "Hell 0Wr0ld"
        );
        assert_eq!(render("{{ .a | b64enc }}", &l).unwrap(), "SGVsbG8gV29ybGQ=");
        assert_eq!(
            render("{{ .a | b64enc | b64dec }}", &l).unwrap(),
            "Hello World"
        );
        assert_eq!(
            render("{{ alignRight 7 .n }}|{{ alignLeft 2 .n }}", &l).unwrap(),
            "   1500|15"
        );
        assert_eq!(render("a {{- .n -}} b", &l).unwrap(), "a1500b");
        assert_eq!(render("{{ .missing }}", &l).unwrap(), "");
        assert_eq!(render(r#"{{ TrimLeft .a "Hel" }}"#, &l).unwrap(), "o World");
        assert_eq!(
            render(r#"{{ TrimRight .a "dl" }}"#, &l).unwrap(),
            "Hello Wor"
        );
        assert_eq!(render(r#"{{ "1.5KiB" | bytes }}"#, &l).unwrap(), "1536");
        assert_eq!(render(r#"{{ "1m30s" | duration }}"#, &l).unwrap(), "90");
        assert_eq!(
            render(r#"{{ "a%20b%zé%4" | urldecode }}"#, &l).unwrap(),
            "a b%zé%4"
        );
        assert_eq!(
            render(r#"{{ "a b/é" | urlencode }}"#, &l).unwrap(),
            "a+b%2F%C3%A9"
        );
    }

    #[test]
    fn errors() {
        assert!(
            render("{{ nosuchfunc }}", &[])
                .unwrap_err()
                .contains("not defined")
        );
        assert!(render("{{", &[]).unwrap_err().contains("unclosed action"));
    }

    #[test]
    fn time_roundtrip() {
        let t = parse_time("2006-01-02T15:04:05Z07:00", "2024-02-29T12:30:00+01:00").unwrap();
        assert_eq!(format_time(t, "2006-01-02 15:04:05"), "2024-02-29 11:30:00");
    }
}
