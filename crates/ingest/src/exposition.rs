//! Parser for the text formats a scrape returns: the Prometheus text
//! exposition format 0.0.4 and OpenMetrics 1.0 text.
//!
//! [`parse`] picks the format from the response's `Content-Type` the way
//! Prometheus does (`application/openmetrics-text` → OpenMetrics, anything
//! else → text 0.0.4) and returns every sample line with its labels
//! (`__name__` included), value and optional timestamp, plus the metadata
//! (`TYPE`, `HELP`, `UNIT`) of each family. It is one pass over the bytes:
//! the only allocations are the label strings it returns and the metadata.
//!
//! What each format accepts follows Prometheus' own parsers
//! (`model/textparse`), not the looser or stricter readings elsewhere:
//!
//! | | text 0.0.4 | OpenMetrics 1.0 |
//! | --- | --- | --- |
//! | blanks between tokens | spaces and tabs, any number | exactly one space where the grammar has one |
//! | blank lines, `# other comments` | ignored | rejected |
//! | timestamp | integer milliseconds | seconds, decimals allowed (→ ms, truncated) |
//! | last line | must end with `\n` | `# EOF`, nothing after it |
//! | `TYPE` values | counter gauge histogram summary untyped | + gaugehistogram info stateset unknown |
//! | escapes in `HELP` | `\\` `\n` | `\\` `\n` `\"` |
//!
//! Escapes in label values are `\\`, `\"` and `\n`; any other backslash
//! sequence is kept as written (as Prometheus does). Exemplars
//! (` # {…} value [ts]` after an OpenMetrics sample) are checked for syntax
//! and dropped. `_created` lines of OpenMetrics counters, histograms and
//! summaries stay ordinary samples (what Prometheus stores unless
//! created-timestamp ingestion is on) and are also listed in
//! [`Scraped::created`].
//!
//! Not supported: UTF-8 metric and label names in quotes (Prometheus 3's
//! `{"my.metric"}` form; the scraper asks targets for
//! `escaping=underscores`), hexadecimal float values (`0x1p-3`), and the
//! protobuf exposition format.

use std::collections::HashMap;
use std::fmt;

use model::{Label, Labels, METRIC_NAME, Metadata, MetricType};

/// The text format of a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text exposition format 0.0.4 (`text/plain; version=0.0.4`).
    PrometheusText,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The format Prometheus would parse a response with this `Content-Type`
    /// as: `application/openmetrics-text` (any parameters, any case) →
    /// OpenMetrics, anything else or none → text 0.0.4.
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        let media = content_type
            .and_then(|ct| ct.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Sorted, names unique, `__name__` included; empty values dropped.
    pub labels: Labels,
    /// The value as written (`NaN`, `+Inf`, `-Inf` included).
    pub value: f64,
    /// The line's own timestamp in milliseconds since the epoch, if it
    /// carried one (OpenMetrics seconds are converted).
    pub timestamp_ms: Option<i64>,
}

/// Everything a body held, in the order written.
#[derive(Clone, Debug, PartialEq)]
pub struct Scraped {
    pub format: Format,
    pub samples: Vec<Sample>,
    /// Metadata by family name (as written after `TYPE`/`HELP`/`UNIT`), one
    /// entry per family in order of first mention.
    pub metadata: Vec<(String, Metadata)>,
    /// OpenMetrics `<family>_created` samples of counters, histograms and
    /// summaries: the labels of the line with `__name__` set to the family,
    /// and the created time in milliseconds. The same lines are also in
    /// `samples`.
    pub created: Vec<(Labels, i64)>,
}

/// Where a body stops being valid, and why. Lines and columns count from
/// 1; columns count bytes.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{} parsing error in line {line}, column {column}: {kind}", match .format {
    Format::PrometheusText => "text format",
    Format::OpenMetrics => "openmetrics format",
})]
pub struct ParseError {
    pub format: Format,
    pub line: usize,
    pub column: usize,
    pub kind: ParseErrorKind,
}

/// What was wrong at a [`ParseError`]'s position.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ParseErrorKind {
    /// The grammar wanted `expected` where the body has `found`.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        expected: &'static str,
        found: Found,
    },
    #[error("label value is not valid UTF-8")]
    InvalidUtf8,
    #[error("label value is not terminated by '\"' before the end of the line")]
    UnterminatedLabelValue,
    #[error("label name {0:?} appears more than once in the sample")]
    DuplicateLabel(String),
    #[error("{0:?} is not a float value (use a decimal number, NaN, +Inf or -Inf)")]
    InvalidValue(String),
    #[error("{0:?} is not a valid timestamp ({1})")]
    InvalidTimestamp(String, &'static str),
    #[error("invalid metric type {0:?} (one of: {1})")]
    InvalidType(String, &'static str),
    #[error("unit {unit:?} is not a suffix of metric {metric:?} (the name must end in _{unit})")]
    UnitNotSuffix { unit: String, metric: String },
    #[error("data does not end with a newline")]
    NoTrailingNewline,
    #[error("OpenMetrics body does not end with '# EOF'")]
    MissingEof,
    #[error("unexpected data after '# EOF'")]
    DataAfterEof,
}

/// What the parser saw instead of what it expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Byte(u8),
    EndOfLine,
    EndOfInput,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Byte(b) if b.is_ascii_graphic() || *b == b' ' => write!(f, "'{}'", *b as char),
            Found::Byte(b'\t') => f.write_str("a tab"),
            Found::Byte(b) => write!(f, "byte 0x{b:02x}"),
            Found::EndOfLine => f.write_str("end of line"),
            Found::EndOfInput => f.write_str("end of input"),
        }
    }
}

/// Parses a scraped body. `content_type` is the response's `Content-Type`
/// header, which picks the format (see [`Format::from_content_type`]).
///
/// The whole body must be valid: the first error is returned and no
/// samples (a scrape is appended all or nothing, as in Prometheus).
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Scraped, ParseError> {
    parse_format(body, Format::from_content_type(content_type))
}

/// Parses a body in a known format.
pub fn parse_format(body: &[u8], format: Format) -> Result<Scraped, ParseError> {
    let mut p = Parser {
        b: body,
        pos: 0,
        line: 1,
        line_start: 0,
        om: format == Format::OpenMetrics,
        format,
        out: Scraped {
            format,
            samples: Vec::new(),
            metadata: Vec::new(),
            created: Vec::new(),
        },
        meta_index: HashMap::new(),
        current_family: None,
    };
    p.run()?;
    Ok(p.out)
}

const TEXT_TYPES: &str = "counter, gauge, histogram, summary, untyped";
const OM_TYPES: &str =
    "counter, gauge, histogram, gaugehistogram, summary, info, stateset, unknown";

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
    line: usize,
    line_start: usize,
    om: bool,
    format: Format,
    out: Scraped,
    /// Family name → index in `out.metadata`.
    meta_index: HashMap<String, usize>,
    /// Index in `out.metadata` of the last family a `TYPE` line named
    /// (OpenMetrics `_created` detection).
    current_family: Option<usize>,
}

type PResult<T> = Result<T, ParseError>;

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}
fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}
fn is_label_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}
fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn found(&self) -> Found {
        match self.peek() {
            None => Found::EndOfInput,
            Some(b'\n') => Found::EndOfLine,
            Some(c) => Found::Byte(c),
        }
    }

    fn err_at(&self, pos: usize, kind: ParseErrorKind) -> ParseError {
        ParseError {
            format: self.format,
            line: self.line,
            column: pos - self.line_start + 1,
            kind,
        }
    }

    fn err(&self, kind: ParseErrorKind) -> ParseError {
        self.err_at(self.pos, kind)
    }

    fn unexpected(&self, expected: &'static str) -> ParseError {
        self.err(ParseErrorKind::Unexpected {
            expected,
            found: self.found(),
        })
    }

    /// Text 0.0.4 allows runs of spaces and tabs between tokens;
    /// OpenMetrics none (single spaces are consumed explicitly).
    fn skip_blanks(&mut self) {
        if !self.om {
            while matches!(self.peek(), Some(b' ' | b'\t')) {
                self.pos += 1;
            }
        }
    }

    /// Consumes the `\n` ending a line.
    fn newline(&mut self) {
        debug_assert_eq!(self.peek(), Some(b'\n'), "bug: newline() not at a newline");
        self.pos += 1;
        self.line += 1;
        self.line_start = self.pos;
    }

    fn run(&mut self) -> PResult<()> {
        loop {
            if self.pos == self.b.len() {
                return if self.om {
                    Err(self.err(ParseErrorKind::MissingEof))
                } else {
                    Ok(())
                };
            }
            if self.om {
                if self.peek() == Some(b'#') {
                    if self.om_comment()? {
                        return Ok(());
                    }
                } else {
                    self.sample()?;
                }
            } else {
                self.skip_blanks();
                match self.peek() {
                    Some(b'\n') => self.newline(),
                    None => return Ok(()),
                    Some(b'#') => self.text_comment()?,
                    Some(_) => self.sample()?,
                }
            }
        }
    }

    /// Rest of the line (without the `\n`), leaving `pos` at the `\n` or
    /// the end.
    fn rest_of_line(&mut self) -> &'a [u8] {
        let start = self.pos;
        let end = self.b[start..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(self.b.len(), |i| start + i);
        self.pos = end;
        &self.b[start..end]
    }

    fn end_comment_line(&mut self) {
        if self.peek() == Some(b'\n') {
            self.newline();
        }
    }

    /// A `#` line in text 0.0.4: `# HELP`, `# TYPE`, or a comment.
    fn text_comment(&mut self) -> PResult<()> {
        self.pos += 1; // '#'
        let blanks = self.pos;
        self.skip_blanks();
        let rest = &self.b[self.pos..];
        let kw = if self.pos > blanks && (rest.starts_with(b"HELP") || rest.starts_with(b"TYPE")) {
            let after = rest.get(4).copied();
            matches!(after, Some(b' ' | b'\t')).then(|| rest[0])
        } else {
            None
        };
        let Some(kw) = kw else {
            self.rest_of_line();
            self.end_comment_line();
            return Ok(());
        };
        self.pos += 4;
        self.skip_blanks();
        let name = self.metric_name("metric name after HELP or TYPE")?;
        if !matches!(self.peek(), None | Some(b'\n' | b' ' | b'\t')) {
            return Err(self.unexpected("a blank after the metric name"));
        }
        self.skip_blanks();
        let text = self.rest_of_line();
        if kw == b'H' {
            let help = unescape_help(text, false);
            self.family(name).help = help;
        } else {
            let t = trim_blanks(text);
            let ty = match t {
                b"counter" => MetricType::Counter,
                b"gauge" => MetricType::Gauge,
                b"histogram" => MetricType::Histogram,
                b"summary" => MetricType::Summary,
                b"untyped" => MetricType::Unknown,
                _ => {
                    let at = self.pos - text.len();
                    return Err(self.err_at(at, ParseErrorKind::InvalidType(lossy(t), TEXT_TYPES)));
                }
            };
            self.family(name).metric_type = ty;
        }
        self.end_comment_line();
        Ok(())
    }

    /// A `#` line in OpenMetrics. Returns true at `# EOF`.
    fn om_comment(&mut self) -> PResult<bool> {
        let rest = &self.b[self.pos..];
        if rest.starts_with(b"# EOF") && matches!(rest.get(5), None | Some(b'\n')) {
            self.pos += 5;
            if self.peek() == Some(b'\n') {
                self.newline();
            }
            if self.pos != self.b.len() {
                return Err(self.err(ParseErrorKind::DataAfterEof));
            }
            return Ok(true);
        }
        let kw = [&b"# HELP "[..], b"# TYPE ", b"# UNIT "]
            .iter()
            .position(|k| rest.starts_with(k));
        let Some(kw) = kw else {
            self.pos += 1;
            return Err(if self.peek() == Some(b' ') {
                self.pos += 1;
                self.unexpected(
                    "HELP, TYPE, UNIT or EOF after '# ' (OpenMetrics has no other comments)",
                )
            } else {
                self.unexpected("' ' after '#'")
            });
        };
        self.pos += 7;
        let name = self.metric_name("metric name")?;
        let text: &[u8] = match self.peek() {
            Some(b' ') => {
                self.pos += 1;
                self.rest_of_line()
            }
            Some(b'\n') if kw != 1 => &[],
            _ => return Err(self.unexpected("' ' after the metric name")),
        };
        if self.peek() != Some(b'\n') {
            return Err(self.unexpected("a newline"));
        }
        match kw {
            0 => {
                let help = unescape_help(text, true);
                self.family(name).help = help;
            }
            1 => {
                let ty = match text {
                    b"counter" => MetricType::Counter,
                    b"gauge" => MetricType::Gauge,
                    b"histogram" => MetricType::Histogram,
                    b"gaugehistogram" => MetricType::GaugeHistogram,
                    b"summary" => MetricType::Summary,
                    b"info" => MetricType::Info,
                    b"stateset" => MetricType::StateSet,
                    b"unknown" => MetricType::Unknown,
                    _ => {
                        let at = self.pos - text.len();
                        return Err(
                            self.err_at(at, ParseErrorKind::InvalidType(lossy(text), OM_TYPES))
                        );
                    }
                };
                self.family(name).metric_type = ty;
                self.current_family = self.meta_index.get(name).copied();
            }
            _ => {
                let unit = std::str::from_utf8(text)
                    .map_err(|_| self.err_at(self.pos - text.len(), ParseErrorKind::InvalidUtf8))?;
                let suffix_ok = name
                    .strip_suffix(unit)
                    .and_then(|stem| stem.strip_suffix('_'))
                    .is_some_and(|stem| !stem.is_empty());
                if !unit.is_empty() && !suffix_ok {
                    return Err(self.err_at(
                        self.pos - text.len(),
                        ParseErrorKind::UnitNotSuffix {
                            unit: unit.to_owned(),
                            metric: name.to_owned(),
                        },
                    ));
                }
                let unit = unit.to_owned();
                self.family(name).unit = unit;
            }
        }
        self.newline();
        Ok(false)
    }

    /// The metadata entry of a family, created on first mention.
    fn family(&mut self, name: &str) -> &mut Metadata {
        let idx = match self.out.metadata.last() {
            Some((last, _)) if last == name => self.out.metadata.len() - 1,
            _ => match self.meta_index.get(name) {
                Some(&i) => i,
                None => {
                    self.out
                        .metadata
                        .push((name.to_owned(), Metadata::default()));
                    let i = self.out.metadata.len() - 1;
                    self.meta_index.insert(name.to_owned(), i);
                    i
                }
            },
        };
        &mut self.out.metadata[idx].1
    }

    fn metric_name(&mut self, expected: &'static str) -> PResult<&'a str> {
        let start = self.pos;
        if !self.peek().is_some_and(is_name_start) {
            return Err(self.unexpected(expected));
        }
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        // ASCII by construction.
        Ok(std::str::from_utf8(&self.b[start..self.pos]).unwrap_or_default())
    }

    fn sample(&mut self) -> PResult<()> {
        let name = self.metric_name("metric name, '#' or a blank line")?;
        let mut labels: Vec<Label> = Vec::with_capacity(8);
        labels.push(Label::new(METRIC_NAME, name));
        let labels_at = self.pos;
        self.skip_blanks();
        if self.peek() == Some(b'{') {
            let brace = self.pos;
            self.pos += 1;
            self.label_pairs(&mut labels)?;
            labels.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            if let Some(w) = labels.windows(2).find(|w| w[0].name == w[1].name) {
                let dup = w[0].name.clone();
                return Err(self.err_at(brace, ParseErrorKind::DuplicateLabel(dup)));
            }
            self.skip_blanks();
        } else if self.pos == labels_at {
            // The name must be followed by labels or a blank.
            if self.om {
                if self.peek() != Some(b' ') {
                    return Err(self.unexpected("'{' or ' ' after the metric name"));
                }
            } else {
                return Err(self.unexpected("'{' or a blank after the metric name"));
            }
        }
        if self.om {
            if self.peek() != Some(b' ') {
                return Err(self.unexpected("' ' before the value"));
            }
            self.pos += 1;
        }
        let value = self.value()?;
        let timestamp_ms = self.timestamp_and_end()?;

        let labels = Labels::from_sorted_checked(labels)
            .unwrap_or_else(|e| panic!("bug: labels checked above: {e}"));
        if self.om
            && let Some(fi) = self.current_family
        {
            let (family, meta) = &self.out.metadata[fi];
            if matches!(
                meta.metric_type,
                MetricType::Counter | MetricType::Histogram | MetricType::Summary
            ) && name.len() == family.len() + "_created".len()
                && name.starts_with(family.as_str())
                && name.ends_with("_created")
                && value.is_finite()
            {
                let mut b = labels.builder();
                b.set(METRIC_NAME, family.clone());
                self.out.created.push((b.build(), (value * 1000.0) as i64));
            }
        }
        self.out.samples.push(Sample {
            labels,
            value,
            timestamp_ms,
        });
        Ok(())
    }

    /// `name="value", …}` after the `{`.
    fn label_pairs(&mut self, labels: &mut Vec<Label>) -> PResult<()> {
        loop {
            self.skip_blanks();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(());
            }
            let start = self.pos;
            if !self.peek().is_some_and(is_label_start) {
                return Err(self.unexpected("label name or '}'"));
            }
            while self.peek().is_some_and(is_label_char) {
                self.pos += 1;
            }
            let lname = std::str::from_utf8(&self.b[start..self.pos]).unwrap_or_default();
            self.skip_blanks();
            if self.peek() != Some(b'=') {
                return Err(self.unexpected("'=' after label name"));
            }
            self.pos += 1;
            self.skip_blanks();
            if self.peek() != Some(b'"') {
                return Err(self.unexpected("'\"' to start the label value"));
            }
            self.pos += 1;
            let value = self.quoted_value()?;
            labels.push(Label {
                name: lname.to_owned(),
                value,
            });
            self.skip_blanks();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.unexpected("',' or '}' after label value")),
            }
        }
    }

    /// A label value after its opening quote, up to and including the
    /// closing quote, unescaped.
    fn quoted_value(&mut self) -> PResult<String> {
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(self.err(ParseErrorKind::UnterminatedLabelValue)),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 1;
                    if matches!(self.peek(), None | Some(b'\n')) {
                        return Err(self.err(ParseErrorKind::UnterminatedLabelValue));
                    }
                    self.pos += 1;
                }
                Some(_) => self.pos += 1,
            }
        }
        let raw = &self.b[start..self.pos];
        let s = std::str::from_utf8(raw)
            .map_err(|e| self.err_at(start + e.valid_up_to(), ParseErrorKind::InvalidUtf8))?;
        self.pos += 1; // closing quote
        Ok(if escaped {
            unescape(s, true)
        } else {
            s.to_owned()
        })
    }

    fn value(&mut self) -> PResult<f64> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == b'\n' || c == b' ' || (!self.om && (c == b'\t' || c == b'{')) {
                break;
            }
            self.pos += 1;
        }
        let tok = &self.b[start..self.pos];
        if tok.is_empty() {
            return Err(self.unexpected("a value"));
        }
        parse_go_float(tok)
            .ok_or_else(|| self.err_at(start, ParseErrorKind::InvalidValue(lossy(tok))))
    }

    /// After the value: an optional timestamp (and, in OpenMetrics, an
    /// exemplar), then the end of the line.
    fn timestamp_and_end(&mut self) -> PResult<Option<i64>> {
        let mut ts = None;
        if self.om {
            if self.peek() == Some(b' ') && self.b.get(self.pos + 1) != Some(&b'#') {
                self.pos += 1;
                ts = Some(self.om_timestamp()?);
            }
            if self.peek() == Some(b' ') {
                self.pos += 1;
                self.exemplar()?;
            }
        } else {
            let before = self.pos;
            self.skip_blanks();
            if self.pos > before && self.peek().is_some_and(|c| c != b'\n') {
                ts = Some(self.text_timestamp()?);
                self.skip_blanks();
            }
        }
        match self.peek() {
            Some(b'\n') => {
                self.newline();
                Ok(ts)
            }
            None if !self.om => Err(self.err(ParseErrorKind::NoTrailingNewline)),
            _ => Err(self.unexpected("end of line")),
        }
    }

    fn token(&mut self) -> &'a [u8] {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == b'\n' || c == b' ' || (!self.om && c == b'\t') {
                break;
            }
            self.pos += 1;
        }
        &self.b[start..self.pos]
    }

    fn text_timestamp(&mut self) -> PResult<i64> {
        let start = self.pos;
        let tok = self.token();
        if !tok.iter().all(u8::is_ascii_digit) {
            return Err(self.err_at(
                start,
                ParseErrorKind::InvalidTimestamp(
                    lossy(tok),
                    "integer milliseconds since the epoch",
                ),
            ));
        }
        std::str::from_utf8(tok)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| {
                self.err_at(
                    start,
                    ParseErrorKind::InvalidTimestamp(lossy(tok), "out of range"),
                )
            })
    }

    fn om_timestamp(&mut self) -> PResult<i64> {
        let start = self.pos;
        let tok = self.token();
        if tok.is_empty() {
            return Err(self.unexpected("a timestamp"));
        }
        match parse_go_float(tok) {
            Some(s) if s.is_finite() => Ok((s * 1000.0) as i64),
            _ => Err(self.err_at(
                start,
                ParseErrorKind::InvalidTimestamp(
                    lossy(tok),
                    "seconds since the epoch, e.g. 1700000000.123",
                ),
            )),
        }
    }

    /// `# {labels} value [timestamp]` after a sample; checked, dropped.
    fn exemplar(&mut self) -> PResult<()> {
        if !self.b[self.pos..].starts_with(b"# {") {
            return Err(self.unexpected("'# {' to start an exemplar"));
        }
        self.pos += 3;
        let mut scratch = Vec::new();
        self.label_pairs(&mut scratch)?;
        if self.peek() != Some(b' ') {
            return Err(self.unexpected("' ' before the exemplar value"));
        }
        self.pos += 1;
        self.value()?;
        if self.peek() == Some(b' ') {
            self.pos += 1;
            self.om_timestamp()?;
        }
        Ok(())
    }
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Replaces `\\`, `\n` and (if `quote`) `\"`; other sequences stay.
fn unescape(s: &str, quote: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quote => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn unescape_help(text: &[u8], om: bool) -> String {
    let s = String::from_utf8_lossy(text);
    if s.contains('\\') {
        unescape(&s, om)
    } else {
        s.into_owned()
    }
}

/// A float as Go's `strconv.ParseFloat` reads a decimal one: digits with
/// optional fraction and exponent, or `NaN`, `Inf`, `Infinity` (any case;
/// a sign on the infinities only).
pub fn parse_go_float(tok: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(tok).ok()?;
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    if unsigned.eq_ignore_ascii_case("nan") {
        return (unsigned.len() == s.len()).then_some(f64::NAN);
    }
    if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity") {
        return Some(if s.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    // Rust's grammar is Go's decimal grammar minus hex floats and minus
    // underscores (which Go rejects in decimal floats too).
    if !unsigned
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests;
