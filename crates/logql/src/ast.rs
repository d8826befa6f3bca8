//! The LogQL syntax tree, with a `Display` that prints a query back in canonical form.

use model::{MatchOp, Matcher};
use std::fmt;

/// A whole query: a log query or a metric (sample) query.
#[derive(Clone, Debug)]
pub enum Expr {
    Log(LogExpr),
    Sample(SampleExpr),
}

/// `{selector} | stage | stage …`
#[derive(Clone, Debug)]
pub struct LogExpr {
    pub matchers: Vec<Matcher>,
    pub stages: Vec<Stage>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFilterOp {
    /// `|=`
    Contains,
    /// `!=`
    NotContains,
    /// `|~`
    Match,
    /// `!~`
    NotMatch,
    /// `|>`
    Pattern,
    /// `!>`
    NotPattern,
}

impl LineFilterOp {
    pub fn as_str(self) -> &'static str {
        match self {
            LineFilterOp::Contains => "|=",
            LineFilterOp::NotContains => "!=",
            LineFilterOp::Match => "|~",
            LineFilterOp::NotMatch => "!~",
            LineFilterOp::Pattern => "|>",
            LineFilterOp::NotPattern => "!>",
        }
    }
    pub fn negated(self) -> bool {
        matches!(
            self,
            LineFilterOp::NotContains | LineFilterOp::NotMatch | LineFilterOp::NotPattern
        )
    }
}

/// One operand of a line filter: a string or `ip("…")`.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterValue {
    Str(String),
    Ip(String),
}

/// `|= "a" or "b"`: the operator and its `or` alternatives.
#[derive(Clone, Debug)]
pub struct LineFilter {
    pub op: LineFilterOp,
    pub values: Vec<FilterValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
        }
    }
    pub fn apply<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
        }
    }
}

/// A label filter expression (`| a="b" and c > 10s or …`).
#[derive(Clone, Debug)]
pub enum LabelFilter {
    And(Box<LabelFilter>, Box<LabelFilter>),
    Or(Box<LabelFilter>, Box<LabelFilter>),
    Paren(Box<LabelFilter>),
    Str(Matcher),
    Number {
        name: String,
        op: CmpOp,
        value: f64,
    },
    /// Value in seconds.
    Duration {
        name: String,
        op: CmpOp,
        value: f64,
        text: String,
    },
    Bytes {
        name: String,
        op: CmpOp,
        value: u64,
        text: String,
    },
    Ip {
        name: String,
        negate: bool,
        pattern: String,
    },
}

/// One `label_format` assignment.
#[derive(Clone, Debug)]
pub enum LabelFmt {
    /// `dst=src`: rename.
    Rename { dst: String, src: String },
    /// `dst="{{…}}"`: template.
    Template { dst: String, template: String },
}

/// One `keep`/`drop` item: a name or a matcher.
#[derive(Clone, Debug)]
pub enum NameOrMatcher {
    Name(String),
    Matcher(Matcher),
}

#[derive(Clone, Debug)]
pub enum Stage {
    LineFilter(LineFilter),
    Decolorize,
    /// `json` with optional `name="expression"` parameters.
    Json(Vec<(String, String)>),
    Logfmt {
        strict: bool,
        keep_empty: bool,
        params: Vec<(String, String)>,
    },
    Regexp(String),
    Pattern(String),
    Unpack,
    LabelFilter(LabelFilter),
    LineFormat(String),
    LabelFormat(Vec<LabelFmt>),
    Keep(Vec<NameOrMatcher>),
    Drop(Vec<NameOrMatcher>),
    /// `| distinct a, b` (Loki's experimental filter): one entry per combination of
    /// these labels' values, the first one emitted; log queries only.
    Distinct(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwrapConv {
    None,
    Duration,
    Bytes,
}

/// `| unwrap [conv(]label[)]` with the label filters after it.
#[derive(Clone, Debug)]
pub struct Unwrap {
    pub label: String,
    pub conv: UnwrapConv,
    pub post_filters: Vec<LabelFilter>,
}

/// A log query over a time range: the argument of a range aggregation.
#[derive(Clone, Debug)]
pub struct LogRange {
    pub log: LogExpr,
    pub range_ns: i64,
    pub offset_ns: i64,
    pub unwrap: Option<Unwrap>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOp {
    CountOverTime,
    Rate,
    RateCounter,
    BytesOverTime,
    BytesRate,
    AbsentOverTime,
    SumOverTime,
    AvgOverTime,
    MaxOverTime,
    MinOverTime,
    StddevOverTime,
    StdvarOverTime,
    QuantileOverTime,
    FirstOverTime,
    LastOverTime,
}

impl RangeOp {
    pub const ALL: [RangeOp; 15] = [
        RangeOp::CountOverTime,
        RangeOp::Rate,
        RangeOp::RateCounter,
        RangeOp::BytesOverTime,
        RangeOp::BytesRate,
        RangeOp::AbsentOverTime,
        RangeOp::SumOverTime,
        RangeOp::AvgOverTime,
        RangeOp::MaxOverTime,
        RangeOp::MinOverTime,
        RangeOp::StddevOverTime,
        RangeOp::StdvarOverTime,
        RangeOp::QuantileOverTime,
        RangeOp::FirstOverTime,
        RangeOp::LastOverTime,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RangeOp::CountOverTime => "count_over_time",
            RangeOp::Rate => "rate",
            RangeOp::RateCounter => "rate_counter",
            RangeOp::BytesOverTime => "bytes_over_time",
            RangeOp::BytesRate => "bytes_rate",
            RangeOp::AbsentOverTime => "absent_over_time",
            RangeOp::SumOverTime => "sum_over_time",
            RangeOp::AvgOverTime => "avg_over_time",
            RangeOp::MaxOverTime => "max_over_time",
            RangeOp::MinOverTime => "min_over_time",
            RangeOp::StddevOverTime => "stddev_over_time",
            RangeOp::StdvarOverTime => "stdvar_over_time",
            RangeOp::QuantileOverTime => "quantile_over_time",
            RangeOp::FirstOverTime => "first_over_time",
            RangeOp::LastOverTime => "last_over_time",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    ApproxTopk,
    Sort,
    SortDesc,
}

impl AggOp {
    pub const ALL: [AggOp; 12] = [
        AggOp::Sum,
        AggOp::Avg,
        AggOp::Min,
        AggOp::Max,
        AggOp::Count,
        AggOp::Stddev,
        AggOp::Stdvar,
        AggOp::Topk,
        AggOp::Bottomk,
        AggOp::ApproxTopk,
        AggOp::Sort,
        AggOp::SortDesc,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            AggOp::Sum => "sum",
            AggOp::Avg => "avg",
            AggOp::Min => "min",
            AggOp::Max => "max",
            AggOp::Count => "count",
            AggOp::Stddev => "stddev",
            AggOp::Stdvar => "stdvar",
            AggOp::Topk => "topk",
            AggOp::Bottomk => "bottomk",
            AggOp::ApproxTopk => "approx_topk",
            AggOp::Sort => "sort",
            AggOp::SortDesc => "sort_desc",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// `by (a, b)` / `without (a)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Grouping {
    pub without: bool,
    pub labels: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    And,
    Or,
    Unless,
}

impl BinOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Unless => "unless",
        }
    }
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le
        )
    }
    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And | BinOp::Unless => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Mod => 5,
            BinOp::Pow => 6,
        }
    }
}

/// `on (…)`/`ignoring (…)` and `group_left/right (…)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VectorMatching {
    pub on: bool,
    pub labels: Vec<String>,
    /// `Some(false)` group_left, `Some(true)` group_right.
    pub group_right: Option<bool>,
    pub include: Vec<String>,
}

#[derive(Clone, Debug)]
pub enum SampleExpr {
    Range {
        op: RangeOp,
        param: Option<f64>,
        range: Box<LogRange>,
        grouping: Option<Grouping>,
    },
    Aggregate {
        op: AggOp,
        param: Option<f64>,
        grouping: Option<Grouping>,
        expr: Box<SampleExpr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<SampleExpr>,
        rhs: Box<SampleExpr>,
        return_bool: bool,
        matching: Option<VectorMatching>,
    },
    Literal(f64),
    Vector(f64),
    LabelReplace {
        expr: Box<SampleExpr>,
        dst: String,
        replacement: String,
        src: String,
        regex: String,
    },
}

impl SampleExpr {
    /// Is this (after parentheses) a number literal?
    pub fn is_literal(&self) -> bool {
        matches!(self, SampleExpr::Literal(_))
    }
}

fn q(s: &str) -> String {
    crate::duration::go_quote(s)
}

fn dur(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ns;
    for (unit, size) in [
        ("d", 86_400_000_000_000i64),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

fn fmt_matcher(m: &Matcher) -> String {
    format!("{}{}{}", m.name, m.op.as_str(), q(&m.value))
}

impl fmt::Display for LabelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelFilter::And(a, b) => write!(f, "{a} and {b}"),
            LabelFilter::Or(a, b) => write!(f, "{a} or {b}"),
            LabelFilter::Paren(a) => write!(f, "({a})"),
            LabelFilter::Str(m) => f.write_str(&fmt_matcher(m)),
            LabelFilter::Number { name, op, value } => write!(f, "{name}{}{value}", op.as_str()),
            LabelFilter::Duration { name, op, text, .. }
            | LabelFilter::Bytes { name, op, text, .. } => {
                write!(f, "{name}{}{text}", op.as_str())
            }
            LabelFilter::Ip {
                name,
                negate,
                pattern,
            } => write!(
                f,
                "{name}{}ip({})",
                if *negate { "!=" } else { "=" },
                q(pattern)
            ),
        }
    }
}

fn params(p: &[(String, String)]) -> String {
    p.iter()
        .map(|(n, e)| format!("{n}={}", q(e)))
        .collect::<Vec<_>>()
        .join(",")
}

fn names(items: &[NameOrMatcher]) -> String {
    items
        .iter()
        .map(|i| match i {
            NameOrMatcher::Name(n) => n.clone(),
            NameOrMatcher::Matcher(m) => fmt_matcher(m),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::LineFilter(lf) => {
                let vals: Vec<String> = lf
                    .values
                    .iter()
                    .map(|v| match v {
                        FilterValue::Str(s) => q(s),
                        FilterValue::Ip(s) => format!("ip({})", q(s)),
                    })
                    .collect();
                write!(f, "{} {}", lf.op.as_str(), vals.join(" or "))
            }
            Stage::Decolorize => f.write_str("| decolorize"),
            Stage::Json(p) if p.is_empty() => f.write_str("| json"),
            Stage::Json(p) => write!(f, "| json {}", params(p)),
            Stage::Logfmt {
                strict,
                keep_empty,
                params: p,
            } => {
                f.write_str("| logfmt")?;
                if *strict {
                    f.write_str(" --strict")?;
                }
                if *keep_empty {
                    f.write_str(" --keep-empty")?;
                }
                if !p.is_empty() {
                    write!(f, " {}", params(p))?;
                }
                Ok(())
            }
            Stage::Regexp(r) => write!(f, "| regexp {}", q(r)),
            Stage::Pattern(r) => write!(f, "| pattern {}", q(r)),
            Stage::Unpack => f.write_str("| unpack"),
            Stage::LabelFilter(lf) => write!(f, "| {lf}"),
            Stage::LineFormat(t) => write!(f, "| line_format {}", q(t)),
            Stage::LabelFormat(items) => {
                let s: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        LabelFmt::Rename { dst, src } => format!("{dst}={src}"),
                        LabelFmt::Template { dst, template } => format!("{dst}={}", q(template)),
                    })
                    .collect();
                write!(f, "| label_format {}", s.join(","))
            }
            Stage::Keep(i) => write!(f, "| keep {}", names(i)),
            Stage::Drop(i) => write!(f, "| drop {}", names(i)),
            Stage::Distinct(n) => write!(f, "| distinct {}", n.join(",")),
        }
    }
}

impl fmt::Display for LogExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms: Vec<String> = self.matchers.iter().map(fmt_matcher).collect();
        write!(f, "{{{}}}", ms.join(", "))?;
        for s in &self.stages {
            write!(f, " {s}")?;
        }
        Ok(())
    }
}

impl fmt::Display for LogRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.log)?;
        if let Some(u) = &self.unwrap {
            match u.conv {
                UnwrapConv::None => write!(f, " | unwrap {}", u.label)?,
                UnwrapConv::Duration => write!(f, " | unwrap duration_seconds({})", u.label)?,
                UnwrapConv::Bytes => write!(f, " | unwrap bytes({})", u.label)?,
            }
            for p in &u.post_filters {
                write!(f, " | {p}")?;
            }
        }
        write!(f, " [{}]", dur(self.range_ns))?;
        if self.offset_ns != 0 {
            write!(f, " offset {}", dur(self.offset_ns))?;
        }
        Ok(())
    }
}

impl fmt::Display for Grouping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            if self.without { "without" } else { "by" },
            self.labels.join(", ")
        )
    }
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

impl fmt::Display for SampleExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SampleExpr::Range {
                op,
                param,
                range,
                grouping,
            } => {
                write!(f, "{}(", op.as_str())?;
                if let Some(p) = param {
                    write!(f, "{}, ", num(*p))?;
                }
                write!(f, "{range})")?;
                if let Some(g) = grouping {
                    write!(f, " {g}")?;
                }
                Ok(())
            }
            SampleExpr::Aggregate {
                op,
                param,
                grouping,
                expr,
            } => {
                write!(f, "{}", op.as_str())?;
                if let Some(g) = grouping {
                    write!(f, " {g} ")?;
                }
                f.write_str("(")?;
                if let Some(p) = param {
                    write!(f, "{}, ", num(*p))?;
                }
                write!(f, "{expr})")
            }
            SampleExpr::Binary {
                op,
                lhs,
                rhs,
                return_bool,
                matching,
            } => {
                write!(f, "({lhs} {}", op.as_str())?;
                if *return_bool {
                    f.write_str(" bool")?;
                }
                if let Some(m) = matching {
                    write!(
                        f,
                        " {} ({})",
                        if m.on { "on" } else { "ignoring" },
                        m.labels.join(", ")
                    )?;
                    if let Some(r) = m.group_right {
                        write!(
                            f,
                            " {} ({})",
                            if r { "group_right" } else { "group_left" },
                            m.include.join(", ")
                        )?;
                    }
                }
                write!(f, " {rhs})")
            }
            SampleExpr::Literal(v) => f.write_str(&num(*v)),
            SampleExpr::Vector(v) => write!(f, "vector({})", num(*v)),
            SampleExpr::LabelReplace {
                expr,
                dst,
                replacement,
                src,
                regex,
            } => write!(
                f,
                "label_replace({expr}, {}, {}, {}, {})",
                q(dst),
                q(replacement),
                q(src),
                q(regex)
            ),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Log(l) => write!(f, "{l}"),
            Expr::Sample(s) => write!(f, "{s}"),
        }
    }
}

/// `MatchOp` of a label matcher token.
pub(crate) fn match_op_of(t: &crate::lexer::Tok) -> Option<MatchOp> {
    use crate::lexer::Tok;
    match t {
        Tok::Eq => Some(MatchOp::Equal),
        Tok::Neq => Some(MatchOp::NotEqual),
        Tok::Re => Some(MatchOp::Regex),
        Tok::Nre => Some(MatchOp::NotRegex),
        _ => None,
    }
}
