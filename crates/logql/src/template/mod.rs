//! The Go `text/template` language that `line_format` and `label_format` use, as Loki runs it
//! (`missingkey=zero`, the line's labels as the data):
//!
//! - actions `{{ pipeline }}` with `{{-`/`-}}` trimming and `{{/* comments */}}`;
//! - pipelines of commands joined by `|` (the previous result is the last argument), function
//!   calls, parenthesized pipelines, field chains (`.a`, `$v.a.b`, `(fromJson .x).a`);
//! - variables: `$` (the data), `{{ $x := … }}`, `{{ $x = … }}`, scoped to the enclosing
//!   control structure;
//! - `{{if}}`/`{{else if}}`/`{{else}}`/`{{end}}`, `{{with}}`/`{{else with}}`/`{{else}}`,
//!   `{{range}}` with `$v :=` or `$i, $v :=`, `{{else}}`, `{{break}}` and `{{continue}}`.
//!   `range` iterates over a list or object from `fromJson`, over the label map (`.` or `$`,
//!   in name order as Go ranges over a map) and over an integer `n` (0 … n-1, Go ≥ 1.22);
//! - the functions of [`funcs`]: Go's builtins and the sprig and Loki functions Loki registers.
//!
//! A template that does not parse is a query error; one that fails while running (a
//! comparison of a string with a number, a range over a string, …) sets
//! `__error__="TemplateFormatErr"` on the line, as Loki does.
//!
//! Not supported: `{{define}}`, `{{template}}`, `{{block}}` (Loki's templates are one
//! expression, there is nothing to call) and method calls.

use crate::duration::go_quote;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;

mod funcs;
mod gotime;
pub use funcs::go_sprintf;
use funcs::{FUNCS, call};
pub use gotime::{Time, Zone, format_time, parse_time};

/// At most this many `range` iterations per rendering (a template must not spin forever on
/// `range 1000000000`).
const MAX_ITERATIONS: usize = 1 << 20;

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
    /// Prints its value, unless it declares or assigns a variable.
    Action(Pipeline),
    If {
        cond: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        value: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        over: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Break,
    Continue,
}

#[derive(Clone, Debug)]
struct Pipeline {
    /// Variables declared (`:=`) or assigned (`=`); two only in `range $i, $v := …`.
    decl: Vec<String>,
    assign: bool,
    cmds: Vec<Command>,
}

#[derive(Clone, Debug)]
struct Command {
    func: Option<String>,
    args: Vec<Arg>,
}

#[derive(Clone, Debug)]
enum Arg {
    /// `.` (the current data).
    Dot,
    /// `.a.b`: fields of the current data.
    Field(Vec<String>),
    /// `$x.a.b` (`$` alone is the template's data).
    Var(String, Vec<String>),
    Str(String),
    Num(f64, bool),
    Bool(bool),
    Nil,
    /// `(pipeline).a.b`
    Sub(Pipeline, Vec<String>),
    /// A function in argument position: called with no arguments.
    Func(String),
}

/// A template value.
#[derive(Clone, Debug)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Go's `time.Time`: an instant and its zone.
    Time(Time),
    Nil,
    /// A JSON array from `fromJson` (Go's `[]interface{}`).
    List(Rc<Vec<Value>>),
    /// A JSON object from `fromJson` (Go's `map[string]interface{}`), in key order.
    Map(Rc<BTreeMap<String, Value>>),
    /// The template's data, the line's labels (Go's `map[string]string`), read on demand.
    Labels,
}

impl Value {
    fn to_f64(&self) -> f64 {
        match self {
            Value::Str(s) => s.trim().parse().unwrap_or(0.0),
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Time(t) => t.unix_nanos() as f64,
            _ => 0.0,
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
    /// The Go type name, for error messages.
    fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Bool(_) => "bool",
            Value::Time(_) => "time.Time",
            Value::Nil => "<nil>",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]interface {}",
            Value::Labels => "map[string]string",
        }
    }
}

/// Go's `%v` of a float64: the shortest digits, in `%e` form (`1e+06`) when the exponent is
/// below -4 or at least 6 (strconv's `'g'` with precision -1), else plain.
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
    let sci = format!("{f:e}");
    let Some((m, e)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = e.parse().unwrap_or(0);
    if f != 0.0 && !(-4..6).contains(&exp) {
        // Go writes e+06 style exponents
        let (sign, digits) = match e.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', e),
        };
        return format!("{m}e{sign}{digits:0>2}");
    }
    format!("{f}")
}

/// Calls its argument with every label of the line.
pub type EachLabel<'a> = dyn Fn(&mut dyn FnMut(&str, &str)) + 'a;

/// What a template sees: labels, the line, the timestamp.
pub struct Data<'a> {
    pub labels: &'a dyn Fn(&str) -> Option<String>,
    /// Calls its argument with every label (for `range .`, `{{ . }}`, `len .`, `index . "x"`).
    pub each_label: &'a EachLabel<'a>,
    pub line: &'a str,
    pub ts_ns: i64,
    /// `now` (ns since the epoch; Loki's is the server's clock, taken once per query here).
    pub now_ns: i64,
}

impl Data<'_> {
    /// The labels as a sorted map (Go ranges over and prints a map in key order).
    fn label_map(&self) -> BTreeMap<String, Value> {
        let mut m = BTreeMap::new();
        (self.each_label)(&mut |k, v| {
            m.insert(k.to_string(), Value::Str(v.to_string()));
        });
        m
    }

    /// `Value::Labels` as a `Value::Map`; other values unchanged.
    fn materialize(&self, v: Value) -> Value {
        match v {
            Value::Labels => Value::Map(Rc::new(self.label_map())),
            v => v,
        }
    }

    /// Go's truth, the labels included (true when the line has any).
    fn truthy(&self, v: &Value) -> bool {
        match v {
            Value::Labels => {
                let mut any = false;
                (self.each_label)(&mut |_, _| any = true);
                any
            }
            v => v.truthy(),
        }
    }

    /// Go's `fmt.Print` of a value (`<no value>` for nil at the top of an action).
    fn print(&self, v: &Value) -> String {
        match v {
            Value::Nil => "<no value>".into(),
            Value::Labels => self.materialize(Value::Labels).to_str(),
            v => v.to_str(),
        }
    }
}

impl Value {
    /// Go's truth: false, 0, nil and empty strings, lists and maps are false (the labels
    /// count as true here; [`Data::truthy`] looks).
    fn truthy(&self) -> bool {
        match self {
            Value::Str(s) => !s.is_empty(),
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Bool(b) => *b,
            Value::Time(_) | Value::Labels => true,
            Value::Nil => false,
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    /// Go's `%v`: lists as `[a b]`, maps as `map[k:v]`, nil inside them as `<nil>`.
    fn to_str(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => go_float_fmt(*f),
            Value::Bool(b) => b.to_string(),
            Value::Time(t) => t.go_string(),
            Value::Nil => "<no value>".into(),
            Value::List(l) => {
                let items: Vec<String> = l.iter().map(Value::nested_str).collect();
                format!("[{}]", items.join(" "))
            }
            Value::Map(m) => {
                let items: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.nested_str()))
                    .collect();
                format!("map[{}]", items.join(" "))
            }
            Value::Labels => "map[]".into(),
        }
    }
    fn nested_str(&self) -> String {
        match self {
            Value::Nil => "<nil>".into(),
            v => v.to_str(),
        }
    }
}

fn err(msg: impl std::fmt::Display) -> String {
    format!("template: line_format:1: {msg}")
}

impl Template {
    /// Parses a template; errors read like Go's (`template: …: unclosed action`,
    /// `function "x" not defined`, `undefined variable "$x"`).
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
            let end =
                find_action_end(&after[body_start..]).ok_or_else(|| err("unclosed action"))?;
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
        let mut p = Parser {
            toks: &toks,
            i: 0,
            vars: vec!["$".to_string()],
            ranges: 0,
            depth: 0,
        };
        let (nodes, end) = p.list()?;
        match end {
            None => {}
            Some(End::End) => return Err(err("unexpected {{end}}")),
            Some(End::Else(_)) => return Err(err("unexpected {{else}}")),
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
        let mut ex = Exec {
            data,
            vars: Vec::new(),
            iterations: 0,
        };
        ex.walk(&self.nodes, &Value::Labels, out).map(|_| ())
    }
}

fn find_action_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        match b[i] {
            b'"' | b'\'' => {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
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

/// A token inside an action.
#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// An identifier, keyword or number.
    Word(String),
    /// `.name` (a field; follows its receiver without a space in a chain).
    Field(String),
    Dot,
    /// `$name`, or `$` alone.
    Var(String),
    Str(String),
    Char(i64),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

/// Splits an action into tokens; each carries whether a space came before it (Go tells
/// `$x.a` (a field of `$x`) from `$x .a` (two arguments) that way).
fn tokenize_action(s: &str) -> Result<Vec<(Tok, bool)>, String> {
    let mut out = Vec::new();
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut spaced = true;
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            spaced = true;
            i += 1;
            continue;
        }
        let tok = match ch {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            '|' => {
                i += 1;
                Tok::Pipe
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            ':' if c.get(i + 1) == Some(&'=') => {
                i += 2;
                Tok::Declare
            }
            '=' => {
                i += 1;
                Tok::Assign
            }
            '`' => {
                let mut j = i + 1;
                while j < c.len() && c[j] != '`' {
                    j += 1;
                }
                if j >= c.len() {
                    return Err(err("unterminated raw quoted string"));
                }
                let body: String = c[i + 1..j].iter().collect();
                i = j + 1;
                Tok::Str(body)
            }
            '"' => {
                let (v, next) = crate::lexer::unescape_go(&c, i + 1, '"')
                    .map_err(|e| err(format!("{e} in quoted string")))?;
                i = next;
                Tok::Str(v)
            }
            '\'' => {
                let (v, next) = crate::lexer::unescape_go(&c, i + 1, '\'')
                    .map_err(|e| err(format!("{e} in character constant")))?;
                let mut it = v.chars();
                let (Some(ch), None) = (it.next(), it.next()) else {
                    let body: String = c[i + 1..next - 1].iter().collect();
                    return Err(err(format!("malformed character constant: '{body}'")));
                };
                i = next;
                Tok::Char(i64::from(u32::from(ch)))
            }
            '$' => {
                let mut j = i + 1;
                while j < c.len() && ident(c[j]) {
                    j += 1;
                }
                let name: String = c[i..j].iter().collect();
                i = j;
                Tok::Var(name)
            }
            '.' if c.get(i + 1).is_some_and(|d| d.is_ascii_digit()) => {
                let mut j = i + 1;
                while j < c.len() && (c[j].is_ascii_alphanumeric() || c[j] == '.') {
                    j += 1;
                }
                let w: String = c[i..j].iter().collect();
                i = j;
                Tok::Word(w)
            }
            '.' => {
                let mut j = i + 1;
                while j < c.len() && ident(c[j]) {
                    j += 1;
                }
                let name: String = c[i + 1..j].iter().collect();
                i = j;
                if name.is_empty() {
                    Tok::Dot
                } else {
                    Tok::Field(name)
                }
            }
            _ => {
                let mut j = i;
                let number = ch.is_ascii_digit() || ch == '-' || ch == '+';
                while j < c.len()
                    && (ident(c[j])
                        || (number && matches!(c[j], '.' | '+' | '-'))
                        || (j == i && matches!(c[j], '-' | '+')))
                {
                    // a field chain may follow a number-less word: `now.x` is not Go either
                    j += 1;
                }
                if j == i {
                    return Err(err(format!("unexpected {ch:?} in command")));
                }
                let w: String = c[i..j].iter().collect();
                i = j;
                Tok::Word(w)
            }
        };
        out.push((tok, spaced));
        spaced = false;
    }
    Ok(out)
}

/// How a list of nodes ended.
enum End {
    End,
    /// `{{else …}}` with what follows `else`.
    Else(Vec<(Tok, bool)>),
}

#[derive(Clone, Copy, PartialEq)]
enum Control {
    If,
    With,
    Range,
}

struct Parser<'t> {
    toks: &'t [(bool, String)],
    i: usize,
    /// Variables in scope (Go checks each use at parse time).
    vars: Vec<String>,
    /// How many `range`s enclose the current position (for `break`/`continue`).
    ranges: usize,
    /// Nesting of control structures and parentheses (bounded: the parser recurses).
    depth: usize,
}

/// The deepest nesting of control structures and parentheses a template may have.
const MAX_DEPTH: usize = 100;

impl Parser<'_> {
    /// Nodes up to `{{end}}`/`{{else…}}` (returned) or the end of the template.
    fn list(&mut self) -> Result<(Vec<Node>, Option<End>), String> {
        let mut nodes = Vec::new();
        while self.i < self.toks.len() {
            let (is_action, s) = &self.toks[self.i];
            self.i += 1;
            if !is_action {
                nodes.push(Node::Text(s.clone()));
                continue;
            }
            if s.starts_with("/*") {
                if !s.ends_with("*/") {
                    return Err(err("comment ends before closing delimiter"));
                }
                continue;
            }
            let toks = tokenize_action(s)?;
            let keyword = match toks.first() {
                Some((Tok::Word(w), _)) => w.as_str(),
                _ => "",
            };
            match keyword {
                "end" if toks.len() == 1 => return Ok((nodes, Some(End::End))),
                "else" => return Ok((nodes, Some(End::Else(toks[1..].to_vec())))),
                "if" => nodes.push(self.control(Control::If, &toks[1..])?),
                "with" => nodes.push(self.control(Control::With, &toks[1..])?),
                "range" => nodes.push(self.control(Control::Range, &toks[1..])?),
                "break" | "continue" if toks.len() == 1 => {
                    if self.ranges == 0 {
                        return Err(err(format!("{{{{{keyword}}}}} outside {{{{range}}}}")));
                    }
                    nodes.push(if keyword == "break" {
                        Node::Break
                    } else {
                        Node::Continue
                    });
                }
                "define" | "template" | "block" => {
                    return Err(err(format!("{{{{{keyword}}}}} is not supported")));
                }
                _ => nodes.push(Node::Action(self.pipeline(&toks, false)?)),
            }
        }
        Ok((nodes, None))
    }

    /// `{{if|with|range pipeline}} … [{{else [if|with] …}} …] {{end}}`; `toks` follows the keyword.
    fn control(&mut self, kind: Control, toks: &[(Tok, bool)]) -> Result<Node, String> {
        self.deeper()?;
        let node = self.control_body(kind, toks);
        self.depth -= 1;
        node
    }

    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.depth -= 1;
            return Err(err(format!("nesting deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn control_body(&mut self, kind: Control, toks: &[(Tok, bool)]) -> Result<Node, String> {
        let mark = self.vars.len();
        let pipe = self.pipeline(toks, kind == Control::Range)?;
        if kind == Control::Range {
            self.ranges += 1;
        }
        let body = self.list();
        if kind == Control::Range {
            self.ranges -= 1;
        }
        let (body, end) = body?;
        let otherwise = match end {
            None => return Err(err("unexpected EOF")),
            Some(End::End) => Vec::new(),
            Some(End::Else(rest)) if rest.is_empty() => {
                let (b, end) = self.list()?;
                match end {
                    Some(End::End) => b,
                    None => return Err(err("unexpected EOF")),
                    Some(End::Else(_)) => return Err(err("expected end; found {{else}}")),
                }
            }
            Some(End::Else(rest)) => {
                let chained = match rest.first() {
                    Some((Tok::Word(w), _)) if w == "if" => Control::If,
                    Some((Tok::Word(w), _)) if w == "with" && kind == Control::With => {
                        Control::With
                    }
                    _ => return Err(err("unexpected {{else}} arguments")),
                };
                // `{{else if x}}…{{end}}` is `{{else}}{{if x}}…{{end}}{{end}}`: one `end`
                vec![self.control(chained, &rest[1..])?]
            }
        };
        self.vars.truncate(mark);
        Ok(match kind {
            Control::If => Node::If {
                cond: pipe,
                then: body,
                otherwise,
            },
            Control::With => Node::With {
                value: pipe,
                then: body,
                otherwise,
            },
            Control::Range => Node::Range {
                over: pipe,
                body,
                otherwise,
            },
        })
    }

    fn pipeline(&mut self, toks: &[(Tok, bool)], in_range: bool) -> Result<Pipeline, String> {
        let mut decl = Vec::new();
        let mut assign = false;
        let mut i = 0;
        match toks {
            [(Tok::Var(a), _), (Tok::Declare | Tok::Assign, _), ..] => {
                decl.push(a.clone());
                assign = toks[1].0 == Tok::Assign;
                i = 2;
            }
            [
                (Tok::Var(a), _),
                (Tok::Comma, _),
                (Tok::Var(b), _),
                (op, _),
                ..,
            ] if matches!(op, Tok::Declare | Tok::Assign) => {
                if !in_range {
                    return Err(err("too many declarations in command"));
                }
                decl.push(a.clone());
                decl.push(b.clone());
                assign = *op == Tok::Assign;
                i = 4;
            }
            _ => {}
        }
        if assign {
            for v in &decl {
                self.check_var(v)?;
            }
        } else {
            self.vars.extend(decl.iter().cloned());
        }
        let cmds = self.commands(toks, &mut i)?;
        if i < toks.len() {
            return Err(err(format!("unexpected {:?} in command", toks[i].0)));
        }
        Ok(Pipeline { decl, assign, cmds })
    }

    fn check_var(&self, name: &str) -> Result<(), String> {
        if self.vars.iter().any(|v| v == name) {
            Ok(())
        } else {
            Err(err(format!("undefined variable {name:?}")))
        }
    }

    /// Commands separated by `|`, up to a `)` or the end.
    fn commands(&mut self, toks: &[(Tok, bool)], i: &mut usize) -> Result<Vec<Command>, String> {
        let mut cmds = Vec::new();
        let mut cur: Vec<Arg> = Vec::new();
        while *i < toks.len() {
            match &toks[*i].0 {
                Tok::RParen => break,
                Tok::Pipe => {
                    *i += 1;
                    cmds.push(make_command(std::mem::take(&mut cur))?);
                    continue;
                }
                _ => {}
            }
            cur.push(self.operand(toks, i)?);
        }
        if cur.is_empty() {
            return Err(err("missing value for command"));
        }
        cmds.push(make_command(cur)?);
        Ok(cmds)
    }

    /// A term and the field chain that follows it without a space.
    fn operand(&mut self, toks: &[(Tok, bool)], i: &mut usize) -> Result<Arg, String> {
        let (tok, _) = &toks[*i];
        *i += 1;
        let chain = |i: &mut usize| {
            let mut fields = Vec::new();
            while let Some((Tok::Field(f), false)) = toks.get(*i) {
                fields.push(f.clone());
                *i += 1;
            }
            fields
        };
        Ok(match tok {
            Tok::Dot => Arg::Dot,
            Tok::Field(f) => {
                let mut fields = vec![f.clone()];
                fields.extend(chain(i));
                Arg::Field(fields)
            }
            Tok::Var(v) => {
                self.check_var(v)?;
                Arg::Var(v.clone(), chain(i))
            }
            Tok::Str(s) => Arg::Str(s.clone()),
            Tok::Char(c) => Arg::Num(*c as f64, true),
            Tok::LParen => {
                self.deeper()?;
                let cmds = self.commands(toks, i);
                self.depth -= 1;
                let cmds = cmds?;
                if toks.get(*i).map(|t| &t.0) != Some(&Tok::RParen) {
                    return Err(err("unclosed left paren"));
                }
                *i += 1;
                let sub = Pipeline {
                    decl: Vec::new(),
                    assign: false,
                    cmds,
                };
                Arg::Sub(sub, chain(i))
            }
            Tok::Word(w) => parse_word(w)?,
            Tok::RParen => return Err(err("unexpected right paren")),
            Tok::Pipe | Tok::Declare | Tok::Assign | Tok::Comma => {
                return Err(err(format!("unexpected {tok:?} in operand")));
            }
        })
    }
}

fn make_command(mut args: Vec<Arg>) -> Result<Command, String> {
    if args.is_empty() {
        return Err(err("missing value for command"));
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

fn parse_word(t: &str) -> Result<Arg, String> {
    match t {
        "true" | "false" => return Ok(Arg::Bool(t == "true")),
        "nil" => return Ok(Arg::Nil),
        _ => {}
    }
    if t.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.') {
        let clean = t.replace('_', "");
        let (sign, body) = match clean.strip_prefix('-') {
            Some(b) => (-1i64, b.to_string()),
            None => (1, clean.trim_start_matches('+').to_string()),
        };
        let radix = [
            ("0x", 16),
            ("0X", 16),
            ("0o", 8),
            ("0O", 8),
            ("0b", 2),
            ("0B", 2),
        ]
        .iter()
        .find_map(|(p, r)| body.strip_prefix(p).map(|d| (d.to_string(), *r)));
        if let Some((digits, r)) = radix
            && let Ok(v) = i64::from_str_radix(&digits, r)
        {
            return Ok(Arg::Num((sign * v) as f64, true));
        }
        let is_int = !clean.contains(['.', 'e', 'E']);
        let v: f64 = clean
            .parse()
            .map_err(|_| err(format!("bad number syntax: {t:?}")))?;
        return Ok(Arg::Num(v, is_int));
    }
    if FUNCS.contains(&t) {
        return Ok(Arg::Func(t.to_string()));
    }
    Err(err(format!("function {t:?} not defined")))
}

/// What a list of nodes asks of the enclosing `range`.
#[derive(PartialEq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'d, 'a> {
    data: &'d Data<'a>,
    /// Variables in scope, innermost last.
    vars: Vec<(String, Value)>,
    iterations: usize,
}

impl Exec<'_, '_> {
    fn walk(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<Flow, String> {
        for n in nodes {
            let flow = match n {
                Node::Text(t) => {
                    out.push_str(t);
                    Flow::Normal
                }
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.decl.is_empty() {
                        out.push_str(&self.data.print(&v));
                    }
                    Flow::Normal
                }
                Node::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let v = self.pipeline(cond, dot)?;
                    let branch = if self.data.truthy(&v) {
                        then
                    } else {
                        otherwise
                    };
                    let flow = self.walk(branch, dot, out);
                    self.vars.truncate(mark);
                    flow?
                }
                Node::With {
                    value,
                    then,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let v = self.pipeline(value, dot)?;
                    let flow = if self.data.truthy(&v) {
                        self.walk(then, &v, out)
                    } else {
                        self.walk(otherwise, dot, out)
                    };
                    self.vars.truncate(mark);
                    flow?
                }
                Node::Range {
                    over,
                    body,
                    otherwise,
                } => self.range(over, body, otherwise, dot, out)?,
                Node::Break => Flow::Break,
                Node::Continue => Flow::Continue,
            };
            if out.len() > funcs::MAX_OUTPUT {
                return Err(err(format!(
                    "output of more than {} bytes",
                    funcs::MAX_OUTPUT
                )));
            }
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn range(
        &mut self,
        over: &Pipeline,
        body: &[Node],
        otherwise: &[Node],
        dot: &Value,
        out: &mut String,
    ) -> Result<Flow, String> {
        let v = self.commands(&over.cmds, dot)?;
        let v = self.data.materialize(v);
        let items: Vec<(Value, Value)> = match &v {
            Value::List(l) => l
                .iter()
                .enumerate()
                .map(|(i, e)| (Value::Int(i as i64), e.clone()))
                .collect(),
            Value::Map(m) => m
                .iter()
                .map(|(k, e)| (Value::Str(k.clone()), e.clone()))
                .collect(),
            Value::Int(n) => {
                if over.decl.len() > 1 {
                    return Err(err(format!(
                        "can't use {n} to iterate over more than one variable"
                    )));
                }
                let n = usize::try_from(*n).unwrap_or(0);
                if n > MAX_ITERATIONS {
                    return Err(err(format!("range over more than {MAX_ITERATIONS} items")));
                }
                (0..n as i64)
                    .map(|i| (Value::Int(i), Value::Int(i)))
                    .collect()
            }
            Value::Nil => Vec::new(),
            other => {
                return Err(err(format!(
                    "range can't iterate over {}",
                    self.data.print(other)
                )));
            }
        };
        let mark = self.vars.len();
        if items.is_empty() {
            let flow = self.walk(otherwise, dot, out);
            self.vars.truncate(mark);
            return flow.map(|_| Flow::Normal);
        }
        for (k, e) in items {
            self.iterations += 1;
            if self.iterations > MAX_ITERATIONS {
                return Err(err(format!("more than {MAX_ITERATIONS} range iterations")));
            }
            match over.decl.as_slice() {
                [] => {}
                [v] => self.bind(v, e.clone(), over.assign),
                [i, v, ..] => {
                    self.bind(i, k, over.assign);
                    self.bind(v, e.clone(), over.assign);
                }
            }
            let flow = self.walk(body, &e, out);
            self.vars.truncate(mark);
            if flow? == Flow::Break {
                break;
            }
        }
        Ok(Flow::Normal)
    }

    /// Declares (`:=`) or assigns (`=`) a variable.
    fn bind(&mut self, name: &str, v: Value, assign: bool) {
        if assign && let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            slot.1 = v;
            return;
        }
        self.vars.push((name.to_string(), v));
    }

    /// Evaluates a pipeline and binds what it declares.
    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, String> {
        let v = self.commands(&p.cmds, dot)?;
        if let Some(name) = p.decl.first() {
            self.bind(name, v.clone(), p.assign);
        }
        Ok(v)
    }

    fn commands(&mut self, cmds: &[Command], dot: &Value) -> Result<Value, String> {
        let mut prev: Option<Value> = None;
        for c in cmds {
            let mut args = Vec::with_capacity(c.args.len() + 1);
            // Go evaluates `and`/`or` arguments only until the result is known
            let stop_on = match c.func.as_deref() {
                Some("and") => Some(false),
                Some("or") => Some(true),
                _ => None,
            };
            let mut decided = false;
            for a in &c.args {
                let v = self.arg(a, dot)?;
                decided = stop_on.is_some_and(|t| self.data.truthy(&v) == t);
                args.push(v);
                if decided {
                    break;
                }
            }
            if let Some(v) = prev.take()
                && !decided
            {
                args.push(v);
            }
            prev = Some(match &c.func {
                Some(f) => {
                    // (`index . "x"` reads one label: it stays `Labels`)
                    if f != "index" && args.iter().any(|a| matches!(a, Value::Labels)) {
                        args = args.into_iter().map(|a| self.data.materialize(a)).collect();
                    }
                    call(f, args, self.data)?
                }
                None => {
                    if args.len() != 1 {
                        return Err(err("can't give argument to non-function"));
                    }
                    args.pop().unwrap_or(Value::Nil)
                }
            });
        }
        Ok(prev.unwrap_or(Value::Nil))
    }

    fn arg(&mut self, a: &Arg, dot: &Value) -> Result<Value, String> {
        Ok(match a {
            Arg::Dot => dot.clone(),
            Arg::Field(fields) => self.fields(dot.clone(), fields)?,
            Arg::Var(name, fields) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .or_else(|| (name == "$").then_some(Value::Labels))
                    .ok_or_else(|| err(format!("undefined variable {name:?}")))?;
                self.fields(v, fields)?
            }
            Arg::Str(s) => Value::Str(s.clone()),
            Arg::Num(v, true) => Value::Int(*v as i64),
            Arg::Num(v, false) => Value::Float(*v),
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Nil => Value::Nil,
            Arg::Sub(p, fields) => {
                let v = self.commands(&p.cmds, dot)?;
                self.fields(v, fields)?
            }
            Arg::Func(f) => call(f, Vec::new(), self.data)?,
        })
    }

    /// `v.a.b`: a missing key is the zero value (`""` for a label, nil in a JSON object).
    fn fields(&self, mut v: Value, fields: &[String]) -> Result<Value, String> {
        for f in fields {
            v = match &v {
                Value::Labels => Value::Str((self.data.labels)(f).unwrap_or_default()),
                Value::Map(m) => m.get(f).cloned().unwrap_or(Value::Nil),
                Value::Nil => Value::Nil,
                other => {
                    return Err(err(format!(
                        "can't evaluate field {f} in type {}",
                        other.type_name()
                    )));
                }
            };
        }
        Ok(v)
    }
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
        let each = |f: &mut dyn FnMut(&str, &str)| {
            for (k, v) in labels {
                f(k, v);
            }
        };
        let mut out = String::new();
        tpl.render(
            &Data {
                labels: &get,
                each_label: &each,
                line: "the line",
                ts_ns: 1_700_000_000_123_000_000,
                now_ns: 1_800_000_000_000_000_000,
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
            render(r#"{{ "a%20b+c" | urldecode }}"#, &l).unwrap(),
            "a b c"
        );
        assert_eq!(
            render(r#"{{ "a b/é" | urlencode }}"#, &l).unwrap(),
            "a+b%2F%C3%A9"
        );
    }

    /// `check(template, labels, expected)`: renders with the labels, line "the line" and
    /// timestamp 2023-11-14T22:13:20.123Z.
    fn check(t: &str, labels: &[(&str, &str)], want: &str) {
        assert_eq!(render(t, labels).as_deref(), Ok(want), "template {t}");
    }

    /// A template that parses but fails when run (a `TemplateFormatErr` on the line).
    fn check_run_err(t: &str, labels: &[(&str, &str)], want: &str) {
        Template::parse(t).unwrap_or_else(|e| panic!("{t} should parse: {e}"));
        let e = render(t, labels).unwrap_err();
        assert!(e.contains(want), "template {t}: error {e:?} lacks {want:?}");
    }

    /// A template rejected when the query is parsed.
    fn check_parse_err(t: &str, want: &str) {
        let e = Template::parse(t).unwrap_err();
        assert!(e.contains(want), "template {t}: error {e:?} lacks {want:?}");
    }

    /// String and character literals decode Go's escapes (the LogQL lexer's decoder) and
    /// reject what Go rejects.
    #[test]
    fn literals_decode_go_escapes() {
        check(r#"{{ "a\x41\101\u00e9\t|" }}"#, &[], "aAA\u{e9}\t|");
        check(r#"{{ print '"' 'A' '\n' }}"#, &[], "34 65 10");
        check("{{ `raw \\n` }}", &[], "raw \\n");
        check_parse_err(r#"{{ "\q" }}"#, "invalid syntax");
        check_parse_err(r#"{{ 'ab' }}"#, "malformed character constant");
        check_parse_err(r#"{{ "open }}"#, "unclosed action");
    }

    const QUERIES: &str = r#"[{"query":"up","ms":12.5},{"query":"rate(x[5m])","ms":1000000}]"#;

    #[test]
    fn range_over_json_labels_and_integers() {
        let l = [("app", "web"), ("env", "prod"), ("q", QUERIES)];
        check(
            "{{ range $q := fromJson .q }}{{ $q.query }};{{ end }}",
            &l,
            "up;rate(x[5m]);",
        );
        check(
            "{{ range fromJson .q }}[{{ .query }} {{ .ms }}]{{ end }}",
            &l,
            "[up 12.5][rate(x[5m]) 1e+06]",
        );
        check(
            "{{ range $i, $q := fromJson .q }}{{ $i }}={{ $q.query }} {{ end }}",
            &l,
            "0=up 1=rate(x[5m]) ",
        );
        // a map ranges in key order; `.` and `$` are the labels (Go's map[string]string)
        check(
            r#"{{ range $k, $v := fromJson `{"b":1,"a":"x"}` }}{{ $k }}:{{ $v }},{{ end }}"#,
            &l,
            "a:x,b:1,",
        );
        check(
            "{{ range $k, $v := . }}{{ if ne $k \"q\" }}{{ $k }}={{ $v }} {{ end }}{{ end }}",
            &l,
            "app=web env=prod ",
        );
        check(
            "{{ range $k, $v := $ }}{{ $k }} {{ end }}",
            &l,
            "app env q ",
        );
        check("{{ range 3 }}{{ . }}{{ end }}", &l, "012");
        // else when empty, nil ranges as empty
        check(
            "{{ range fromJson `[]` }}x{{ else }}none{{ end }}",
            &l,
            "none",
        );
        check(
            "{{ range fromJson .missing }}x{{ else }}none{{ end }}",
            &l,
            "none",
        );
        // break and continue
        check(
            "{{ range $i := 10 }}{{ if eq $i 2 }}{{ continue }}{{ end }}{{ if gt $i 4 }}{{ break }}{{ end }}{{ $i }}{{ end }}",
            &l,
            "0134",
        );
        // nested ranges, each `.` its own
        check(
            r#"{{ range fromJson `[[1,2],[3]]` }}({{ range . }}{{ . }}{{ end }}){{ end }}"#,
            &l,
            "(12)(3)",
        );
        // printing composite values like Go's %v
        check(
            r#"{{ fromJson `{"a":[1,"x",null],"b":true}` }}"#,
            &l,
            "map[a:[1 x <nil>] b:true]",
        );
        check("{{ . }}", &[("a", "1"), ("b", "")], "map[a:1 b:]");
        check("{{ fromJson `not json` }}", &l, "<no value>");
    }

    #[test]
    fn range_errors() {
        check_run_err(
            "{{ range .app }}x{{ end }}",
            &[("app", "web")],
            "range can't iterate over web",
        );
        check_run_err(
            "{{ range $i, $v := 3 }}x{{ end }}",
            &[],
            "can't use 3 to iterate over more than one variable",
        );
        check_run_err("{{ range 2000000 }}{{ end }}", &[], "range over more than");
        check_parse_err("{{ break }}", "{{break}} outside {{range}}");
        check_parse_err("{{ range .a }}x", "unexpected EOF");
        check_parse_err("{{ $a, $b := 1 }}", "too many declarations");
        check_parse_err(
            &format!("{{{{ {}1{} }}}}", "(".repeat(200), ")".repeat(200)),
            "nesting deeper than 100",
        );
        check_parse_err(&"{{ if 1 }}".repeat(200), "nesting deeper than 100");
        check_run_err(
            "{{ range 200000 }}{{ __line__ }}{{ end }}",
            &[],
            "output of more than 1048576 bytes",
        );
    }

    #[test]
    fn with_and_if() {
        let l = [("a", "x"), ("e", ""), ("j", r#"{"user":{"name":"ann"}}"#)];
        check("{{ with .a }}<{{ . }}>{{ end }}", &l, "<x>");
        check(
            "{{ with .e }}<{{ . }}>{{ else }}empty{{ end }}",
            &l,
            "empty",
        );
        check(
            "{{ with .e }}1{{ else with .a }}2{{ . }}{{ else }}3{{ end }}",
            &l,
            "2x",
        );
        check(
            "{{ with $u := (fromJson .j).user }}{{ $u.name }}/{{ .name }}{{ end }}",
            &l,
            "ann/ann",
        );
        check(
            "{{ with (fromJson .j).nobody }}x{{ else }}none{{ end }}",
            &l,
            "none",
        );
        check("{{ if .e }}1{{ else if .a }}2{{ else }}3{{ end }}", &l, "2");
        check("{{ if .e }}1{{ else if .e }}2{{ else }}3{{ end }}", &l, "3");
        check("{{ if $n := len .a }}{{ $n }}{{ end }}", &l, "1");
        check_parse_err("{{ with .a }}1{{ else if .e }}2", "unexpected EOF");
        check_parse_err("{{ end }}", "unexpected {{end}}");
        check_parse_err("{{ else }}", "unexpected {{else}}");
    }

    #[test]
    fn variables() {
        let l = [("a", "x"), ("n", "3")];
        check("{{ $v := .a }}{{ $v }}{{ $v }}", &l, "xx");
        check("{{ $v := 1 }}{{ $v = 2 }}{{ $v }}", &l, "2");
        // assignment inside a range changes the outer variable; a declaration there is local
        check(
            "{{ $s := 0 }}{{ range $i := 4 }}{{ $s = add $s $i }}{{ end }}{{ $s }}",
            &l,
            "6",
        );
        check(
            "{{ $s := 0 }}{{ range 4 }}{{ $s := 9 }}{{ end }}{{ $s }}",
            &l,
            "0",
        );
        check("{{ $.a }}{{ with .n }}{{ $.a }}{{ . }}{{ end }}", &l, "xx3");
        check("{{ $v := .a | upper }}{{ $v | printf \"%s!\" }}", &l, "X!");
        check_parse_err("{{ $nope }}", "undefined variable \"$nope\"");
        check_parse_err("{{ $nope = 1 }}", "undefined variable \"$nope\"");
        check_parse_err(
            "{{ if true }}{{ $v := 1 }}{{ end }}{{ $v }}",
            "undefined variable \"$v\"",
        );
    }

    #[test]
    fn comparisons_and_logic_as_go() {
        let l = [("a", "x"), ("n", "3"), ("e", "")];
        check(
            "{{ eq .a \"y\" \"x\" }} {{ ne .a \"x\" }} {{ eq 1 1 }} {{ eq nil nil }}",
            &l,
            "true false true true",
        );
        check(
            "{{ lt 1 2 }} {{ le 2 2 }} {{ gt 1.5 2.5 }} {{ ge \"b\" \"a\" }}",
            &l,
            "true true false true",
        );
        // Go compares only values of one kind: a label (a string) with a number is an error
        check_run_err(
            "{{ eq .n 3 }}",
            &l,
            "error calling eq: incompatible types for comparison",
        );
        check_run_err(
            "{{ lt 1 2.5 }}",
            &l,
            "error calling lt: incompatible types for comparison",
        );
        check_run_err("{{ lt true false }}", &l, "invalid type for comparison");
        check_run_err("{{ eq 1 }}", &l, "missing argument for comparison");
        check("{{ eq (int .n) 3 }}", &l, "true");
        // and/or return an operand and stop at the first that decides
        check(
            "{{ and .a .n }}|{{ and .e .a }}|{{ or .e .n }}|{{ or .e \"\" }}|{{ not .e }}",
            &l,
            "3||3||true",
        );
        check("{{ or .a (index 1 5) }} {{ and .e (index 1 5) }}", &l, "x ");
        check_run_err(
            "{{ and .a (index 1 5) }}",
            &l,
            "can't index item of type int",
        );
        // len counts bytes of a string, items of a list or map
        check(
            "{{ len \"é\" }} {{ len (fromJson `[1,2,3]`) }} {{ len . }}",
            &l,
            "2 3 3",
        );
        check_run_err("{{ len 3 }}", &l, "len of type int");
        // index and slice
        check(
            r#"{{ index (fromJson `{"a":[10,20]}`) "a" 1 }} {{ index . "a" }} {{ index "abc" 1 }}"#,
            &l,
            "20 x 98",
        );
        check(
            r#"{{ index (fromJson `{"a":1}`) "zz" }}|{{ index . "zz" }}|"#,
            &l,
            "<no value>||",
        );
        check_run_err(
            "{{ index (fromJson `[1]`) 3 }}",
            &l,
            "error calling index: index out of range: 3",
        );
        check(
            r#"{{ slice "hello" 1 3 }} {{ slice (fromJson `[1,2,3]`) 1 }}"#,
            &l,
            "el [2 3]",
        );
        check_run_err(r#"{{ slice "abc" 2 1 }}"#, &l, "invalid slice index: 2 > 1");
        // fields of a string are an error; of nil, nil
        check_run_err("{{ .a.b }}", &l, "can't evaluate field b in type string");
        check("{{ (fromJson `{}`).x.y }}", &l, "<no value>");
    }

    #[test]
    fn go_printing_and_escaping() {
        let l = [("a", "<b>&'\"")];
        check("{{ print 1 2 \"a\" 3 \"b\" \"c\" }}", &l, "1 2a3bc");
        check("{{ println 1 \"a\" }}", &l, "1 a\n");
        check("{{ html .a }}", &l, "&lt;b&gt;&amp;&#39;&#34;");
        check("{{ js .a }}", &l, "\\u003Cb\\u003E\\u0026\\'\\\"");
        check("{{ urlquery \"a b\" 1 }}", &l, "a+b1");
        check(
            "{{ 1e6 }} {{ 123456.0 }} {{ 0.00001 }} {{ 0.0001 }} {{ addf 1000000 1 }}",
            &l,
            "1e+06 123456 1e-05 0.0001 1.000001e+06",
        );
        check("{{ 'a' }} {{ 0x1F }} {{ 1_000 }}", &l, "97 31 1000");
        check("{{ \"\\u00e9\\x41\" }}", &l, "éA");
    }

    #[test]
    fn time_zones_from_the_tz_database() {
        let l = [("jan", "2024-01-15 09:30"), ("jul", "2024-07-15 09:30")];
        let ny = |v: &str| format!(r#"toDateInZone "2006-01-02 15:04" "America/New_York" {v}"#);
        // New York observes DST: EST (-5h) in January, EDT (-4h) in July
        check(
            &format!("{{{{ {} }}}}", ny(".jan")),
            &l,
            "2024-01-15 09:30:00 -0500 EST",
        );
        check(
            &format!("{{{{ {} }}}}", ny(".jul")),
            &l,
            "2024-07-15 09:30:00 -0400 EDT",
        );
        check(
            &format!("{{{{ {} | unixEpoch }}}}", ny(".jan")),
            &l,
            "1705329000",
        );
        check(
            &format!("{{{{ {} | unixEpoch }}}}", ny(".jul")),
            &l,
            "1721050200",
        );
        // a wall time skipped by the spring-forward change, and one repeated in the autumn
        check(
            &format!("{{{{ {} }}}}", ny(r#""2024-03-10 02:30""#)),
            &l,
            "2024-03-10 01:30:00 -0500 EST",
        );
        check(
            &format!("{{{{ {} | unixEpoch }}}}", ny(r#""2024-11-03 01:30""#)),
            &l,
            "1730611800",
        );
        // other zones, and a zone name in the value
        check(
            r#"{{ toDateInZone "2006-01-02 15:04" "Asia/Kolkata" "2024-01-15 09:30" }}"#,
            &l,
            "2024-01-15 09:30:00 +0530 IST",
        );
        check(
            r#"{{ toDateInZone "2006-01-02 15:04 MST" "America/New_York" "2024-07-15 09:30 EDT" | unixEpoch }}"#,
            &l,
            "1721050200",
        );
        check(
            r#"{{ toDateInZone "2006-01-02T15:04:05Z07:00" "Europe/Paris" "2024-07-15T09:30:00+02:00" }}"#,
            &l,
            "2024-07-15 09:30:00 +0200 CEST",
        );
        check(
            r#"{{ toDateInZone "2006-01-02T15:04:05Z07:00" "Europe/Paris" "2024-07-15T09:30:00+05:00" }}"#,
            &l,
            "2024-07-15 09:30:00 +0500 +0500",
        );
        // `date` formats in the server's zone (UTC), as sprig's does, whatever the time's zone
        check(
            &format!(
                r#"{{{{ {} | date "2006-01-02 15:04 MST Z07:00" }}}}"#,
                ny(".jan")
            ),
            &l,
            "2024-01-15 14:30 UTC Z",
        );
        // an unknown zone reads as UTC (Loki's fallback), a value that does not parse is
        // Go's zero time
        check(
            r#"{{ toDateInZone "2006-01-02" "Mars/Olympus_Mons" "2024-01-15" }}"#,
            &l,
            "2024-01-15 00:00:00 +0000 UTC",
        );
        check(
            r#"{{ toDateInZone "2006-01-02" "UTC" "15/01/2024" }}"#,
            &l,
            "0001-01-01 00:00:00 +0000 UTC",
        );
        check(
            r#"{{ toDate "2006-01-02" "nope" | unixEpoch }}"#,
            &l,
            "-62135596800",
        );
        check(
            r#"{{ toDate "02 Jan 06 3:04PM" "15 Jan 24 9:30PM" }}"#,
            &l,
            "2024-01-15 21:30:00 +0000 UTC",
        );
        check(
            r#"{{ toDate "Monday, January _2 2006 15:04:05.999" "Monday, January  8 2024 10:00:00.25" | unixEpochMillis }}"#,
            &l,
            "1704708000250",
        );
        // unixToTime: days, seconds, milli-, micro- and nanoseconds by the number of digits
        check(
            r#"{{ unixToTime "19737" | date "2006-01-02" }}"#,
            &l,
            "2024-01-15",
        );
        check(
            r#"{{ unixToTime "1705329000123" | date "15:04:05.000" }}"#,
            &l,
            "14:30:00.123",
        );
        check(
            r#"{{ unixToTime "1705329000123456" | unixEpochNanos }}"#,
            &l,
            "1705329000123456000",
        );
        check_run_err(
            r#"{{ unixToTime "123" }}"#,
            &l,
            "error calling unixToTime: unable to parse time '123'",
        );
        check(
            "{{ __timestamp__ }}",
            &l,
            "2023-11-14 22:13:20.123 +0000 UTC",
        );
        check(
            "{{ now }} {{ unixEpoch now }}",
            &l,
            "2027-01-15 08:00:00 +0000 UTC 1800000000",
        );
        check(
            r#"{{ date "2006" 1700000000 }} {{ date "2006" "x" }}"#,
            &l,
            "2023 2027",
        );
        check(
            r#"{{ __timestamp__ | date "Mon Jan _2 03:04:05.000000 PM 2006 -07 002" }}"#,
            &l,
            "Tue Nov 14 10:13:20.123000 PM 2023 +00 318",
        );
    }

    #[test]
    fn sprig_functions_as_sprig() {
        let l = [("a", "hello world"), ("f", "0.1")];
        // decimal arithmetic: no binary float noise
        check(
            "{{ addf .f 0.2 }} {{ subf 0.3 0.1 }} {{ mulf 1.1 1.1 }} {{ divf 10 4 }}",
            &l,
            "0.3 0.2 1.21 2.5",
        );
        check(
            "{{ addf 3.5 2 5 }} {{ subf 5.5 2 1.5 }} {{ mulf 5.5 2 2.5 }} {{ divf 10 2 4 }}",
            &l,
            "10.5 2 27.5 1.25",
        );
        check(
            "{{ divf 1 3 }} {{ addf 1e300 1e300 }}",
            &l,
            "0.3333333333333333 2e+300",
        );
        check_run_err(
            "{{ divf 1 0 }}",
            &l,
            "error calling divf: decimal division by zero",
        );
        // round with sprig's roundOn
        check(
            "{{ round 123.555555 3 }} {{ round 123.88571428571 5 .2 }} {{ round 123.88571428571 5 }}",
            &l,
            "123.556 123.88572 123.88571",
        );
        check(
            "{{ ceil 123.001 }} {{ floor 123.9999 }} {{ max 1 2 3 }} {{ minf 1 2.5 3 }}",
            &l,
            "124 123 3 1",
        );
        // substr and its bounds
        check(
            "{{ substr 0 5 .a }}|{{ substr 6 11 .a }}|{{ substr -1 5 .a }}|{{ substr 6 -1 .a }}|{{ substr 6 99 .a }}",
            &l,
            "hello|world|hello|world|world",
        );
        check_run_err(
            "{{ substr 5 2 .a }}",
            &l,
            "error calling substr: runtime error: slice bounds out of range [5:2]",
        );
        check_run_err(
            "{{ substr -1 99 .a }}",
            &l,
            "slice bounds out of range [:99] with length 11",
        );
        // alignLeft/alignRight leave a string alone for a negative width
        check(
            "{{ alignLeft 5 .a }}|{{ alignRight 5 .a }}|{{ alignLeft 4 \"hi\" }}|{{ alignLeft -1 .a }}",
            &l,
            "hello|world|hi  |hello world",
        );
        check_run_err(
            r#"{{ "a%zz" | urldecode }}"#,
            &l,
            r#"error calling urldecode: invalid URL escape "%zz""#,
        );
        check_parse_err("{{ Title .a }}", "function \"Title\" not defined");
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
        let t = parse_time(
            "2006-01-02T15:04:05Z07:00",
            "2024-02-29T12:30:00+01:00",
            &Zone::Utc,
        )
        .unwrap();
        assert_eq!(
            format_time(&t, "2006-01-02 15:04:05 -0700 MST"),
            "2024-02-29 12:30:00 +0100 +0100"
        );
        assert_eq!(
            format_time(&t.in_utc(), "2006-01-02 15:04:05"),
            "2024-02-29 11:30:00"
        );
    }
}
