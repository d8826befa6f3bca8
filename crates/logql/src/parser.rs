//! A hand-written recursive-descent parser for LogQL. Binary operators use precedence
//! climbing (`or` < `and`/`unless` < comparisons < `+ -` < `* / %` < `^`, `^` right
//! associative). Errors name the position and, where Loki's users know them, use Loki's text.

use crate::Error;
use crate::ast::*;
use crate::duration::{parse_bytes_literal, parse_duration, parse_go_float};
use crate::lexer::{Tok, Token, tokenize};
use model::{MatchOp, Matcher};

/// Parses and checks a query (selectors, aggregation rules, regexes, patterns and
/// templates), so that a query that parses can be evaluated.
pub fn parse(query: &str) -> Result<Expr, Error> {
    let toks = tokenize(query)?;
    let mut p = Parser { toks, i: 0 };
    let e = p.expr(0)?;
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected());
    }
    let e = match e {
        Node::Log(l) => Expr::Log(l),
        Node::Sample(s) => Expr::Sample(s),
        Node::LogUnwrap(..) => {
            return Err(Error::parse_at(
                p.toks[0].pos,
                "syntax error: unexpected unwrap",
            ));
        }
        Node::LogRange(..) => {
            return Err(Error::parse_at(
                p.toks[0].pos,
                "syntax error: unexpected RANGE",
            ));
        }
    };
    crate::pipeline::validate(&e)?;
    Ok(e)
}

/// What a primary expression turned out to be.
enum Node {
    Log(LogExpr),
    /// A log expression followed by its range (only valid as a range function argument).
    LogRange(Box<LogRange>),
    /// A log expression with `| unwrap …` but no range yet (inside parentheses).
    LogUnwrap(LogExpr, Box<Unwrap>),
    Sample(SampleExpr),
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
}

type R<T> = Result<T, Error>;

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.i].tok
    }
    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.i + n).min(self.toks.len() - 1)].tok
    }
    fn pos(&self) -> (usize, usize) {
        self.toks[self.i].pos
    }
    fn next(&mut self) -> Tok {
        let t = self.toks[self.i].tok.clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }
    fn unexpected(&self) -> Error {
        Error::parse_at(
            self.pos(),
            format!("syntax error: unexpected {}", self.peek().describe()),
        )
    }
    fn unexpected_expecting(&self, what: &str) -> Error {
        Error::parse_at(
            self.pos(),
            format!(
                "syntax error: unexpected {}, expecting {what}",
                self.peek().describe()
            ),
        )
    }
    fn expect(&mut self, t: Tok) -> R<()> {
        if self.peek() == &t {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected_expecting(t.symbol()))
        }
    }
    fn is_ident(&self, s: &str) -> bool {
        matches!(self.peek(), Tok::Ident(x) if x == s)
    }
    fn ident(&mut self) -> R<String> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                self.next();
                Ok(s)
            }
            _ => Err(self.unexpected_expecting("IDENTIFIER")),
        }
    }
    fn string(&mut self) -> R<String> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.next();
                Ok(s)
            }
            _ => Err(self.unexpected_expecting("STRING")),
        }
    }

    fn binop(&self) -> Option<BinOp> {
        Some(match self.peek() {
            Tok::Add => BinOp::Add,
            Tok::Sub => BinOp::Sub,
            Tok::Mul => BinOp::Mul,
            Tok::Div => BinOp::Div,
            Tok::Mod => BinOp::Mod,
            Tok::Pow => BinOp::Pow,
            Tok::EqEq => BinOp::Eq,
            Tok::Neq => BinOp::Ne,
            Tok::Gt => BinOp::Gt,
            Tok::Gte => BinOp::Ge,
            Tok::Lt => BinOp::Lt,
            Tok::Lte => BinOp::Le,
            Tok::Ident(s) if s == "and" => BinOp::And,
            Tok::Ident(s) if s == "or" => BinOp::Or,
            Tok::Ident(s) if s == "unless" => BinOp::Unless,
            _ => return None,
        })
    }

    fn expr(&mut self, min_prec: u8) -> R<Node> {
        let mut lhs = self.unary()?;
        while let Some(op) = self.binop() {
            let prec = op.precedence();
            if prec < min_prec {
                break;
            }
            self.next();
            let return_bool = if self.is_ident("bool") {
                self.next();
                true
            } else {
                false
            };
            let matching = self.vector_matching()?;
            let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
            let rhs = self.expr(next_min)?;
            lhs = Node::Sample(build_binary(op, lhs, rhs, return_bool, matching)?);
        }
        Ok(lhs)
    }

    fn vector_matching(&mut self) -> R<Option<VectorMatching>> {
        let on = if self.is_ident("on") {
            true
        } else if self.is_ident("ignoring") {
            false
        } else {
            return Ok(None);
        };
        self.next();
        let labels = self.label_list()?;
        let mut m = VectorMatching {
            on,
            labels,
            group_right: None,
            include: vec![],
        };
        if self.is_ident("group_left") || self.is_ident("group_right") {
            m.group_right = Some(self.is_ident("group_right"));
            self.next();
            if self.peek() == &Tok::LParen {
                m.include = self.label_list()?;
            }
        }
        Ok(Some(m))
    }

    /// `( a, b, … )`
    fn label_list(&mut self) -> R<Vec<String>> {
        self.expect(Tok::LParen)?;
        let mut v = Vec::new();
        while self.peek() != &Tok::RParen {
            v.push(self.ident()?);
            if self.peek() == &Tok::Comma {
                self.next();
            } else if self.peek() != &Tok::RParen {
                return Err(self.unexpected_expecting(")"));
            }
        }
        self.next();
        Ok(v)
    }

    fn unary(&mut self) -> R<Node> {
        match self.peek() {
            Tok::Sub | Tok::Add => {
                let neg = self.peek() == &Tok::Sub;
                self.next();
                match self.peek().clone() {
                    Tok::Number(n) => {
                        let pos = self.pos();
                        self.next();
                        let v = literal_float(&n, pos)?;
                        Ok(Node::Sample(SampleExpr::Literal(if neg { -v } else { v })))
                    }
                    Tok::Sub | Tok::Add => {
                        // `1+1--1`: a sign on a signed literal.
                        match self.unary()? {
                            Node::Sample(SampleExpr::Literal(v)) => {
                                Ok(Node::Sample(SampleExpr::Literal(if neg { -v } else { v })))
                            }
                            _ => Err(Error::parse_at(
                                self.pos(),
                                "syntax error: unexpected -, expecting NUMBER",
                            )),
                        }
                    }
                    _ => Err(self.unexpected_expecting("NUMBER")),
                }
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> R<Node> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Number(n) => {
                self.next();
                Ok(Node::Sample(SampleExpr::Literal(literal_float(&n, pos)?)))
            }
            Tok::LParen => {
                self.next();
                let inner = self.expr(0)?;
                self.expect(Tok::RParen)?;
                match inner {
                    Node::Log(l) => {
                        if let Tok::Range(_) = self.peek() {
                            let r = self.log_range_after(l, None)?;
                            Ok(Node::LogRange(Box::new(r)))
                        } else {
                            Ok(Node::Log(l))
                        }
                    }
                    Node::LogUnwrap(l, u) => {
                        let mut r = self.log_range_after(l, None)?;
                        r.unwrap = Some(*u);
                        Ok(Node::LogRange(Box::new(r)))
                    }
                    other => Ok(other),
                }
            }
            Tok::LBrace => {
                let log = self.log_expr()?;
                let unwrap_next =
                    self.peek() == &Tok::Pipe && self.peek_at(1) == &Tok::Ident("unwrap".into());
                if unwrap_next {
                    self.next();
                    let u = self.unwrap()?;
                    if !matches!(self.peek(), Tok::Range(_)) {
                        // `({…} | unwrap x)[1m]`: the range comes after the parenthesis
                        return Ok(Node::LogUnwrap(log, Box::new(u)));
                    }
                    let mut r = self.log_range_after(log, None)?;
                    r.unwrap = Some(u);
                    return Ok(Node::LogRange(Box::new(r)));
                }
                if matches!(self.peek(), Tok::Range(_)) {
                    // a log range: only meaningful inside a range function
                    let r = self.log_range_after(log, None)?;
                    return Ok(Node::LogRange(Box::new(r)));
                }
                Ok(Node::Log(log))
            }
            Tok::Ident(name) => {
                if let Some(op) = RangeOp::from_name(&name) {
                    return self.range_fn(op).map(Node::Sample);
                }
                if let Some(op) = AggOp::from_name(&name) {
                    return self.vector_agg(op).map(Node::Sample);
                }
                match name.as_str() {
                    "vector" => {
                        self.next();
                        self.expect(Tok::LParen)?;
                        let v = self.number_arg()?;
                        self.expect(Tok::RParen)?;
                        Ok(Node::Sample(SampleExpr::Vector(v)))
                    }
                    "label_replace" => {
                        self.next();
                        self.expect(Tok::LParen)?;
                        let e = self.sample_arg()?;
                        let mut s = Vec::new();
                        for _ in 0..4 {
                            self.expect(Tok::Comma)?;
                            s.push(self.string()?);
                        }
                        self.expect(Tok::RParen)?;
                        let regex = s.pop().unwrap_or_default();
                        let src = s.pop().unwrap_or_default();
                        let replacement = s.pop().unwrap_or_default();
                        let dst = s.pop().unwrap_or_default();
                        regex::Regex::new(&format!("^(?s:{regex})$")).map_err(|e| {
                            Error::BadQuery(format!(
                                "invalid regular expression in label_replace(): {e}"
                            ))
                        })?;
                        if !model::is_valid_label_name(&dst) {
                            return Err(Error::BadQuery(format!(
                                "invalid destination label name in label_replace(): {dst}"
                            )));
                        }
                        Ok(Node::Sample(SampleExpr::LabelReplace {
                            expr: Box::new(e),
                            dst,
                            replacement,
                            src,
                            regex,
                        }))
                    }
                    _ => Err(self.unexpected()),
                }
            }
            _ => Err(self.unexpected()),
        }
    }

    /// A (possibly signed) number argument.
    fn number_arg(&mut self) -> R<f64> {
        let pos = self.pos();
        let neg = match self.peek() {
            Tok::Sub => {
                self.next();
                true
            }
            _ => false,
        };
        match self.peek().clone() {
            Tok::Number(n) => {
                self.next();
                let v = literal_float(&n, pos)?;
                Ok(if neg { -v } else { v })
            }
            _ => Err(self.unexpected_expecting("NUMBER")),
        }
    }

    fn sample_arg(&mut self) -> R<SampleExpr> {
        match self.expr(0)? {
            Node::Sample(s) => Ok(s),
            Node::Log(_) | Node::LogUnwrap(..) => Err(self.unexpected()),
            Node::LogRange(_) => Err(Error::parse_at(
                self.pos(),
                "syntax error: unexpected RANGE",
            )),
        }
    }

    fn grouping(&mut self) -> R<Option<Grouping>> {
        let without = if self.is_ident("by") {
            false
        } else if self.is_ident("without") {
            true
        } else {
            return Ok(None);
        };
        self.next();
        let labels = self.label_list()?;
        Ok(Some(Grouping { without, labels }))
    }

    fn range_fn(&mut self, op: RangeOp) -> R<SampleExpr> {
        self.next();
        self.expect(Tok::LParen)?;
        let mut param = None;
        if op == RangeOp::QuantileOverTime {
            match self.peek().clone() {
                Tok::Number(n) => {
                    let pos = self.pos();
                    self.next();
                    param = Some(literal_float(&n, pos)?);
                    self.expect(Tok::Comma)?;
                }
                _ => return Err(self.unexpected_expecting("NUMBER")),
            }
        }
        let range = match self.expr(0)? {
            Node::LogRange(r) => r,
            Node::Log(_) | Node::LogUnwrap(..) => return Err(self.unexpected_expecting("RANGE")),
            Node::Sample(_) => return Err(self.unexpected()),
        };
        self.expect(Tok::RParen)?;
        let grouping = self.grouping()?;
        let name = op.as_str();
        use RangeOp::*;
        let needs_unwrap = matches!(
            op,
            SumOverTime
                | AvgOverTime
                | MaxOverTime
                | MinOverTime
                | StddevOverTime
                | StdvarOverTime
                | QuantileOverTime
                | FirstOverTime
                | LastOverTime
                | RateCounter
        );
        let no_unwrap = matches!(op, CountOverTime | BytesOverTime | BytesRate);
        if needs_unwrap && range.unwrap.is_none() {
            return Err(Error::BadQuery(format!(
                "invalid aggregation {name} without unwrap"
            )));
        }
        if no_unwrap && range.unwrap.is_some() {
            return Err(Error::BadQuery(format!(
                "invalid aggregation {name} with unwrap"
            )));
        }
        let grouping_ok = matches!(
            op,
            AvgOverTime
                | StddevOverTime
                | StdvarOverTime
                | QuantileOverTime
                | MaxOverTime
                | MinOverTime
                | FirstOverTime
                | LastOverTime
        );
        if grouping.is_some() && !grouping_ok {
            return Err(Error::BadQuery(format!(
                "grouping not allowed for {name} aggregation"
            )));
        }
        Ok(SampleExpr::Range {
            op,
            param,
            range,
            grouping,
        })
    }

    fn vector_agg(&mut self, op: AggOp) -> R<SampleExpr> {
        self.next();
        let mut grouping = self.grouping()?;
        self.expect(Tok::LParen)?;
        let mut param = None;
        let mut param_text = String::new();
        if let Tok::Number(n) = self.peek().clone()
            && self.peek_at(1) == &Tok::Comma
        {
            let pos = self.pos();
            self.next();
            self.next();
            param_text = n.clone();
            param = Some(literal_float(&n, pos)?);
        }
        let expr = match self.expr(0)? {
            Node::Sample(s) => s,
            Node::Log(_) | Node::LogUnwrap(..) => return Err(self.unexpected()),
            Node::LogRange(_) => {
                return Err(Error::parse_at(
                    self.pos(),
                    "syntax error: unexpected RANGE",
                ));
            }
        };
        self.expect(Tok::RParen)?;
        if let Some(g) = self.grouping()? {
            if grouping.is_some() {
                return Err(self.unexpected());
            }
            grouping = Some(g);
        }
        let name = op.as_str();
        let takes_param = matches!(op, AggOp::Topk | AggOp::Bottomk | AggOp::ApproxTopk);
        match (takes_param, param) {
            (true, None) => {
                return Err(Error::BadQuery(format!(
                    "parameter required for operation {name}"
                )));
            }
            (true, Some(k)) if k.fract() != 0.0 || k.is_nan() => {
                return Err(Error::BadQuery(format!(
                    "invalid parameter {name}({param_text},"
                )));
            }
            (false, Some(_)) => {
                return Err(Error::BadQuery(format!(
                    "unsupported parameter for operation {name}({param_text},"
                )));
            }
            _ => {}
        }
        if op == AggOp::ApproxTopk && grouping.is_some() {
            return Err(Error::BadQuery(
                "grouping not allowed for approx_topk aggregation".into(),
            ));
        }
        Ok(SampleExpr::Aggregate {
            op,
            param,
            grouping,
            expr: Box::new(expr),
        })
    }

    /// After a log expression: `[unwrap …] [range] [offset d]` with the range required.
    fn log_range_after(&mut self, mut log: LogExpr, range: Option<i64>) -> R<LogRange> {
        let mut range = range;
        let mut unwrap = None;
        if let Tok::Range(r) = self.peek().clone() {
            self.next();
            range = Some(r);
            // `{…}[5m] | json`: the pipeline may follow the range
            if self.peek() == &Tok::Pipe || self.line_filter_op().is_some() {
                let more = self.pipeline()?;
                log.stages.extend(more);
            }
        }
        if self.is_ident("unwrap")
            || (self.peek() == &Tok::Pipe && self.peek_at(1) == &Tok::Ident("unwrap".into()))
        {
            if self.peek() == &Tok::Pipe {
                self.next();
            }
            unwrap = Some(self.unwrap()?);
        }
        if range.is_none() {
            match self.peek().clone() {
                Tok::Range(r) => {
                    self.next();
                    range = Some(r);
                }
                _ => return Err(self.unexpected_expecting("RANGE")),
            }
        }
        let mut offset_ns = 0;
        if self.is_ident("offset") {
            self.next();
            offset_ns = match self.peek().clone() {
                Tok::Duration(d) => {
                    let pos = self.pos();
                    self.next();
                    parse_duration(&d, true).map_err(|e| Error::parse_at(pos, e.to_string()))?
                }
                _ => return Err(self.unexpected_expecting("DURATION")),
            };
        }
        Ok(LogRange {
            log,
            range_ns: range.unwrap_or_default(),
            offset_ns,
            unwrap,
        })
    }

    fn unwrap(&mut self) -> R<Unwrap> {
        // at `unwrap`
        self.next();
        let first = self.ident()?;
        let (label, conv) = if self.peek() == &Tok::LParen {
            let conv = match first.as_str() {
                "duration" | "duration_seconds" => UnwrapConv::Duration,
                "bytes" => UnwrapConv::Bytes,
                _ => return Err(self.unexpected()),
            };
            self.next();
            let l = self.ident()?;
            self.expect(Tok::RParen)?;
            (l, conv)
        } else {
            (first, UnwrapConv::None)
        };
        let mut post_filters = Vec::new();
        while self.peek() == &Tok::Pipe {
            self.next();
            post_filters.push(self.label_filter_expr()?);
        }
        Ok(Unwrap {
            label,
            conv,
            post_filters,
        })
    }

    fn log_expr(&mut self) -> R<LogExpr> {
        let matchers = self.selector()?;
        let stages = self.pipeline()?;
        Ok(LogExpr { matchers, stages })
    }

    fn selector(&mut self) -> R<Vec<Matcher>> {
        let start = self.pos();
        self.expect(Tok::LBrace)?;
        let mut ms = Vec::new();
        while self.peek() != &Tok::RBrace {
            let name = self.ident()?;
            let pos = self.pos();
            let op = match crate::ast::match_op_of(self.peek()) {
                Some(op) => op,
                None => return Err(self.unexpected()),
            };
            self.next();
            let value = self.string()?;
            let m = Matcher::new(op, name, value)
                .map_err(|e| Error::parse_at(pos, format!("error parsing regexp: {}", e.reason)))?;
            ms.push(m);
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                Tok::RBrace => {}
                _ => return Err(self.unexpected()),
            }
        }
        self.next();
        if !ms.iter().any(|m| !m.matches_empty()) {
            return Err(Error::parse_at(
                start,
                "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will",
            ));
        }
        Ok(ms)
    }

    fn line_filter_op(&self) -> Option<LineFilterOp> {
        Some(match self.peek() {
            Tok::PipeExact => LineFilterOp::Contains,
            Tok::Neq => LineFilterOp::NotContains,
            Tok::PipeMatch => LineFilterOp::Match,
            Tok::Nre => LineFilterOp::NotMatch,
            Tok::PipePattern => LineFilterOp::Pattern,
            Tok::NotPattern => LineFilterOp::NotPattern,
            _ => return None,
        })
    }

    fn pipeline(&mut self) -> R<Vec<Stage>> {
        let mut stages = Vec::new();
        loop {
            if let Some(op) = self.line_filter_op() {
                self.next();
                let mut values = vec![self.filter_value()?];
                while self.is_ident("or") {
                    self.next();
                    values.push(self.filter_value()?);
                }
                stages.push(Stage::LineFilter(LineFilter { op, values }));
                continue;
            }
            if self.peek() != &Tok::Pipe {
                break;
            }
            if self.peek_at(1) == &Tok::Ident("unwrap".into()) {
                break;
            }
            self.next();
            stages.push(self.stage()?);
        }
        Ok(stages)
    }

    fn filter_value(&mut self) -> R<FilterValue> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.next();
                Ok(FilterValue::Str(s))
            }
            Tok::Ident(i) if i == "ip" => {
                self.next();
                self.expect(Tok::LParen)?;
                let s = self.string()?;
                self.expect(Tok::RParen)?;
                Ok(FilterValue::Ip(s))
            }
            _ => Err(self.unexpected_expecting("STRING or ip")),
        }
    }

    fn params(&mut self) -> R<Vec<(String, String)>> {
        let mut out = Vec::new();
        while let Tok::Ident(name) = self.peek().clone() {
            self.next();
            let expr = if self.peek() == &Tok::Eq {
                self.next();
                self.string()?
            } else {
                name.clone()
            };
            out.push((name, expr));
            if self.peek() == &Tok::Comma {
                self.next();
            } else {
                break;
            }
        }
        Ok(out)
    }

    fn stage(&mut self) -> R<Stage> {
        let name = match self.peek() {
            Tok::Ident(s) => s.clone(),
            Tok::LParen => return Ok(Stage::LabelFilter(self.label_filter_expr()?)),
            _ => return Err(self.unexpected()),
        };
        // A stage keyword followed by a comparison is a label filter on a label of that name.
        let is_filter = crate::ast::match_op_of(self.peek_at(1)).is_some()
            || matches!(
                self.peek_at(1),
                Tok::EqEq | Tok::Gt | Tok::Gte | Tok::Lt | Tok::Lte
            );
        if is_filter {
            return Ok(Stage::LabelFilter(self.label_filter_expr()?));
        }
        match name.as_str() {
            "json" => {
                self.next();
                Ok(Stage::Json(self.params()?))
            }
            "logfmt" => {
                self.next();
                let (mut strict, mut keep_empty) = (false, false);
                while let Tok::Flag(f) = self.peek().clone() {
                    match f.as_str() {
                        "strict" => strict = true,
                        "keep-empty" => keep_empty = true,
                        _ => return Err(self.unexpected()),
                    }
                    self.next();
                }
                let params = self.params()?;
                Ok(Stage::Logfmt {
                    strict,
                    keep_empty,
                    params,
                })
            }
            "regexp" => {
                self.next();
                Ok(Stage::Regexp(self.string()?))
            }
            "pattern" => {
                self.next();
                Ok(Stage::Pattern(self.string()?))
            }
            "unpack" => {
                self.next();
                Ok(Stage::Unpack)
            }
            "decolorize" => {
                self.next();
                Ok(Stage::Decolorize)
            }
            "line_format" => {
                self.next();
                Ok(Stage::LineFormat(self.string()?))
            }
            "label_format" => {
                self.next();
                let mut items = Vec::new();
                loop {
                    let dst = self.ident()?;
                    self.expect(Tok::Eq)?;
                    match self.peek().clone() {
                        Tok::Str(t) => {
                            self.next();
                            items.push(LabelFmt::Template { dst, template: t });
                        }
                        Tok::Ident(src) => {
                            self.next();
                            items.push(LabelFmt::Rename { dst, src });
                        }
                        _ => return Err(self.unexpected_expecting("STRING or IDENTIFIER")),
                    }
                    if self.peek() == &Tok::Comma {
                        self.next();
                    } else {
                        break;
                    }
                }
                Ok(Stage::LabelFormat(items))
            }
            "distinct" => {
                self.next();
                let mut names = vec![self.ident()?];
                while self.peek() == &Tok::Comma {
                    self.next();
                    names.push(self.ident()?);
                }
                Ok(Stage::Distinct(names))
            }
            "keep" | "drop" => {
                self.next();
                let mut items = Vec::new();
                loop {
                    let n = self.ident()?;
                    if let Some(op) = crate::ast::match_op_of(self.peek()) {
                        let pos = self.pos();
                        self.next();
                        let v = self.string()?;
                        let m = Matcher::new(op, n, v).map_err(|e| {
                            Error::parse_at(pos, format!("error parsing regexp: {}", e.reason))
                        })?;
                        items.push(NameOrMatcher::Matcher(m));
                    } else {
                        items.push(NameOrMatcher::Name(n));
                    }
                    if self.peek() == &Tok::Comma {
                        self.next();
                    } else {
                        break;
                    }
                }
                Ok(if name == "keep" {
                    Stage::Keep(items)
                } else {
                    Stage::Drop(items)
                })
            }
            _ => Ok(Stage::LabelFilter(self.label_filter_expr()?)),
        }
    }

    /// `a or b`, where `and`, `,` and juxtaposition bind tighter than `or`.
    fn label_filter_expr(&mut self) -> R<LabelFilter> {
        let mut lhs = self.label_filter_and()?;
        while self.is_ident("or") {
            self.next();
            let rhs = self.label_filter_and()?;
            lhs = LabelFilter::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn label_filter_and(&mut self) -> R<LabelFilter> {
        let mut lhs = self.label_filter_term()?;
        loop {
            if self.is_ident("and") || self.peek() == &Tok::Comma {
                self.next();
            } else if self.peek() == &Tok::LParen
                || (matches!(self.peek(), Tok::Ident(s) if s != "or" && s != "and")
                    && (crate::ast::match_op_of(self.peek_at(1)).is_some()
                        || matches!(
                            self.peek_at(1),
                            Tok::EqEq | Tok::Gt | Tok::Gte | Tok::Lt | Tok::Lte
                        )))
            {
                // juxtaposition: `a="b" c="d"`
            } else {
                break;
            }
            let rhs = self.label_filter_term()?;
            lhs = LabelFilter::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn label_filter_term(&mut self) -> R<LabelFilter> {
        if self.peek() == &Tok::LParen {
            self.next();
            let inner = self.label_filter_expr()?;
            self.expect(Tok::RParen)?;
            return Ok(LabelFilter::Paren(Box::new(inner)));
        }
        let name = self.ident()?;
        let op_tok = self.peek().clone();
        let op_pos = self.pos();
        let cmp = match op_tok {
            Tok::Eq | Tok::EqEq => CmpOp::Eq,
            Tok::Neq => CmpOp::Ne,
            Tok::Gt => CmpOp::Gt,
            Tok::Gte => CmpOp::Ge,
            Tok::Lt => CmpOp::Lt,
            Tok::Lte => CmpOp::Le,
            Tok::Re | Tok::Nre => CmpOp::Eq,
            _ => return Err(self.unexpected()),
        };
        self.next();
        let vpos = self.pos();
        match self.peek().clone() {
            Tok::Str(s) => {
                let op = match op_tok {
                    Tok::Eq => MatchOp::Equal,
                    Tok::Neq => MatchOp::NotEqual,
                    Tok::Re => MatchOp::Regex,
                    Tok::Nre => MatchOp::NotRegex,
                    _ => return Err(self.unexpected()),
                };
                self.next();
                let m = Matcher::new(op, name, s).map_err(|e| {
                    Error::parse_at(op_pos, format!("error parsing regexp: {}", e.reason))
                })?;
                Ok(LabelFilter::Str(m))
            }
            Tok::Ident(i) if i == "ip" => {
                let negate = match op_tok {
                    Tok::Eq => false,
                    Tok::Neq => true,
                    _ => return Err(self.unexpected()),
                };
                self.next();
                self.expect(Tok::LParen)?;
                let pattern = self.string()?;
                self.expect(Tok::RParen)?;
                Ok(LabelFilter::Ip {
                    name,
                    negate,
                    pattern,
                })
            }
            Tok::Re | Tok::Nre => Err(self.unexpected()),
            _ if matches!(op_tok, Tok::Re | Tok::Nre) => Err(self.unexpected_expecting("STRING")),
            Tok::Number(_) | Tok::Sub => {
                let value = self.number_arg()?;
                Ok(LabelFilter::Number {
                    name,
                    op: cmp,
                    value,
                })
            }
            Tok::Duration(d) => {
                self.next();
                let ns =
                    parse_duration(&d, true).map_err(|e| Error::parse_at(vpos, e.to_string()))?;
                Ok(LabelFilter::Duration {
                    name,
                    op: cmp,
                    value: ns as f64 / 1e9,
                    text: d,
                })
            }
            Tok::Bytes(b) => {
                self.next();
                let v = parse_bytes_literal(&b)
                    .ok_or_else(|| Error::parse_at(vpos, "syntax error: invalid bytes"))?;
                Ok(LabelFilter::Bytes {
                    name,
                    op: cmp,
                    value: v,
                    text: b,
                })
            }
            _ => Err(self.unexpected()),
        }
    }
}

/// A number literal as Loki converts it (Go's `ParseFloat`: decimal and hex floats; no
/// `0x1A`, `0o17`, `0b1`).
fn literal_float(s: &str, pos: (usize, usize)) -> R<f64> {
    parse_go_float(s)
        .map_err(|e| Error::parse_at(pos, format!("unable to parse literal as a float: {e}")))
}

fn build_binary(
    op: BinOp,
    lhs: Node,
    rhs: Node,
    return_bool: bool,
    matching: Option<VectorMatching>,
) -> R<SampleExpr> {
    let side = |n: Node, which: &str| -> R<SampleExpr> {
        match n {
            Node::Sample(s) => Ok(s),
            _ => Err(Error::BadQuery(format!(
                "unexpected type for {which} leg of binary operation ({})",
                op.as_str()
            ))),
        }
    };
    let lhs = side(lhs, "left")?;
    let rhs = side(rhs, "right")?;
    if op.is_set() {
        for (s, which) in [(&lhs, "left"), (&rhs, "right")] {
            if s.is_literal() {
                return Err(Error::BadQuery(format!(
                    "unexpected literal for {which} leg of logical/set binary operation ({})",
                    op.as_str()
                )));
            }
        }
    }
    if return_bool && !op.is_comparison() {
        return Err(Error::BadQuery(
            "bool modifier can only be used on comparison operators".into(),
        ));
    }
    // Literal folding: `1 + 2` is a literal (so `1 and 2`-style checks still see literals).
    // Non-finite results stay expressions: LogQL has no NaN or Inf literal to print them as.
    if let (SampleExpr::Literal(a), SampleExpr::Literal(b)) = (&lhs, &rhs)
        && let Some(v) = crate::eval::scalar_binop(op, *a, *b, true)
        && v.is_finite()
    {
        return Ok(SampleExpr::Literal(v));
    }
    Ok(SampleExpr::Binary {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
        return_bool,
        matching,
    })
}
