//! The LogQL tokenizer: strings (Go-escaped `"…"` and raw `` `…` ``), numbers, durations,
//! byte sizes, `[range]`s, `--flags`, operators and identifiers; `#` starts a comment
//! outside strings. Keywords are identifiers; the parser gives them meaning by position.

use crate::Error;
use crate::duration::parse_duration;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    Str(String),
    /// A number as written (converted by the parser, which knows the error to give).
    Number(String),
    /// A duration as written (`5m`, `1h30m`, `1d`).
    Duration(String),
    /// A byte size as written (`20MB`, `1KiB`).
    Bytes(String),
    /// `[5m]`: the range in nanoseconds.
    Range(i64),
    /// `--strict`, `--keep-empty`.
    Flag(String),
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    /// `=`
    Eq,
    /// `==`
    EqEq,
    Neq,
    Re,
    Nre,
    PipeExact,
    PipeMatch,
    PipePattern,
    NotPattern,
    Pipe,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Gt,
    Gte,
    Lt,
    Lte,
    Eof,
}

/// Words that Loki's grammar names by their text in "unexpected …" messages.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "bool",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "and",
    "or",
    "unless",
    "json",
    "logfmt",
    "regexp",
    "pattern",
    "unpack",
    "line_format",
    "label_format",
    "decolorize",
    "keep",
    "drop",
    "distinct",
    "unwrap",
    "ip",
];

impl Tok {
    /// The name Loki's parser uses for this token in "unexpected …" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) if KEYWORDS.contains(&s.as_str()) => s.clone(),
            Tok::Ident(_) => "IDENTIFIER".into(),
            Tok::Str(_) => "STRING".into(),
            Tok::Number(_) => "NUMBER".into(),
            Tok::Duration(_) => "DURATION".into(),
            Tok::Bytes(_) => "BYTES".into(),
            Tok::Range(_) => "RANGE".into(),
            Tok::Flag(f) => format!("--{f}"),
            Tok::Eof => "$end".into(),
            other => other.symbol().into(),
        }
    }

    pub fn symbol(&self) -> &'static str {
        match self {
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Eq => "=",
            Tok::EqEq => "==",
            Tok::Neq => "!=",
            Tok::Re => "=~",
            Tok::Nre => "!~",
            Tok::PipeExact => "|=",
            Tok::PipeMatch => "|~",
            Tok::PipePattern => "|>",
            Tok::NotPattern => "!>",
            Tok::Pipe => "|",
            Tok::Add => "+",
            Tok::Sub => "-",
            Tok::Mul => "*",
            Tok::Div => "/",
            Tok::Mod => "%",
            Tok::Pow => "^",
            Tok::Gt => ">",
            Tok::Gte => ">=",
            Tok::Lt => "<",
            Tok::Lte => "<=",
            _ => "",
        }
    }
}

/// A token with its 1-based line and column.
#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    pub pos: (usize, usize),
}

pub fn tokenize(src: &str) -> Result<Vec<Token>, Error> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let (mut line, mut line_start) = (1usize, 0usize);
    while i < chars.len() {
        let c = chars[i];
        let pos = (line, i - line_start + 1);
        if c == '\n' {
            line += 1;
            line_start = i + 1;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let tok = match two.as_str() {
            "==" => Some(Tok::EqEq),
            "!=" => Some(Tok::Neq),
            "=~" => Some(Tok::Re),
            "!~" => Some(Tok::Nre),
            "|=" => Some(Tok::PipeExact),
            "|~" => Some(Tok::PipeMatch),
            "|>" => Some(Tok::PipePattern),
            "!>" => Some(Tok::NotPattern),
            ">=" => Some(Tok::Gte),
            "<=" => Some(Tok::Lte),
            _ => None,
        };
        if let Some(t) = tok {
            out.push(Token { tok: t, pos });
            i += 2;
            continue;
        }
        if two == "--" && chars.get(i + 2).is_some_and(|c| c.is_ascii_alphabetic()) {
            let mut j = i + 2;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '-') {
                j += 1;
            }
            out.push(Token {
                tok: Tok::Flag(chars[i + 2..j].iter().collect()),
                pos,
            });
            i = j;
            continue;
        }
        let single = match c {
            '{' => Some(Tok::LBrace),
            '}' => Some(Tok::RBrace),
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            ',' => Some(Tok::Comma),
            '=' => Some(Tok::Eq),
            '|' => Some(Tok::Pipe),
            '+' => Some(Tok::Add),
            '-' => Some(Tok::Sub),
            '*' => Some(Tok::Mul),
            '/' => Some(Tok::Div),
            '%' => Some(Tok::Mod),
            '^' => Some(Tok::Pow),
            '>' => Some(Tok::Gt),
            '<' => Some(Tok::Lt),
            _ => None,
        };
        if let Some(t) = single {
            out.push(Token { tok: t, pos });
            i += 1;
            continue;
        }
        if c == '"' {
            let (s, j) = lex_quoted(&chars, i).map_err(|m| Error::parse_at(pos, m))?;
            out.push(Token {
                tok: Tok::Str(s),
                pos,
            });
            i = j;
            continue;
        }
        if c == '`' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '`' {
                if chars[j] == '\n' {
                    line += 1;
                    line_start = j + 1;
                }
                j += 1;
            }
            if j >= chars.len() {
                return Err(Error::parse_at(pos, "literal not terminated"));
            }
            out.push(Token {
                tok: Tok::Str(chars[i + 1..j].iter().collect()),
                pos,
            });
            i = j + 1;
            continue;
        }
        if c == '[' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != ']' {
                j += 1;
            }
            if j >= chars.len() {
                return Err(Error::parse_at(pos, "syntax error: unclosed range"));
            }
            let body: String = chars[i + 1..j].iter().collect();
            let ns = parse_duration(body.trim(), true)
                .map_err(|m| Error::parse_at(pos, m.to_string()))?;
            out.push(Token {
                tok: Tok::Range(ns),
                pos,
            });
            i = j + 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let (t, j) = lex_number(&chars, i).map_err(|m| Error::parse_at(pos, m))?;
            out.push(Token { tok: t, pos });
            i = j;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let mut j = i;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            out.push(Token {
                tok: Tok::Ident(chars[i..j].iter().collect()),
                pos,
            });
            i = j;
            continue;
        }
        return Err(Error::parse_at(
            pos,
            format!("syntax error: unexpected character {c:?}"),
        ));
    }
    let pos = (line, chars.len() - line_start + 1);
    out.push(Token { tok: Tok::Eof, pos });
    Ok(out)
}

/// A Go interpreted string literal starting at `chars[i] == '"'`; returns the value and the
/// index after the closing quote.
fn lex_quoted(chars: &[char], i: usize) -> Result<(String, usize), String> {
    unescape_go(chars, i + 1, '"')
}

/// The body of a Go quoted literal (string `"…"` or character `'…'`) from `chars[from]` up
/// to the unescaped `quote`, with Go's escapes decoded (also used by the templates'
/// lexer); returns the value and the index after the closing quote.
pub(crate) fn unescape_go(
    chars: &[char],
    from: usize,
    quote: char,
) -> Result<(String, usize), String> {
    let mut s = String::new();
    let mut j = from;
    while j < chars.len() {
        let c = chars[j];
        match c {
            c if c == quote => return Ok((s, j + 1)),
            '\\' => {
                let e = *chars.get(j + 1).ok_or("literal not terminated")?;
                j += 2;
                match e {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'a' => s.push('\x07'),
                    'b' => s.push('\x08'),
                    'f' => s.push('\x0c'),
                    'v' => s.push('\x0b'),
                    '\\' => s.push('\\'),
                    '"' => s.push('"'),
                    '\'' => s.push('\''),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = chars
                            .get(j..j + n)
                            .ok_or("invalid escape")?
                            .iter()
                            .collect();
                        let v = u32::from_str_radix(&hex, 16).map_err(|_| "invalid syntax")?;
                        s.push(char::from_u32(v).ok_or("invalid escape")?);
                        j += n;
                    }
                    '0'..='7' => {
                        let oct: String = chars
                            .get(j - 1..j + 2)
                            .ok_or("invalid escape")?
                            .iter()
                            .collect();
                        let v = u32::from_str_radix(&oct, 8).map_err(|_| "invalid syntax")?;
                        s.push(char::from_u32(v).ok_or("invalid escape")?);
                        j += 2;
                    }
                    _ => return Err("invalid syntax".into()),
                }
            }
            '\n' => return Err("newline in string".into()),
            _ => {
                s.push(c);
                j += 1;
            }
        }
    }
    Err("literal not terminated".into())
}

fn lex_number(chars: &[char], i: usize) -> Result<(Tok, usize), String> {
    let mut j = i;
    // Prefixed integers (0x, 0o, 0b) and hex floats: one alphanumeric run (plus '.', and a
    // sign right after a hex exponent); converted (or rejected) by the parser.
    if chars[i] == '0'
        && chars
            .get(i + 1)
            .is_some_and(|c| matches!(c, 'x' | 'X' | 'o' | 'O' | 'b' | 'B'))
        && chars.get(i + 2).is_some_and(|c| c.is_ascii_alphanumeric())
    {
        j = i + 2;
        while j < chars.len() {
            let c = chars[j];
            let exponent_sign = (c == '+' || c == '-') && matches!(chars[j - 1], 'p' | 'P');
            if c.is_ascii_alphanumeric() || c == '.' || exponent_sign {
                j += 1;
            } else {
                break;
            }
        }
        return Ok((Tok::Number(chars[i..j].iter().collect()), j));
    }
    while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
        j += 1;
    }
    // exponent
    if j < chars.len() && matches!(chars[j], 'e' | 'E') {
        let mut k = j + 1;
        if k < chars.len() && matches!(chars[k], '+' | '-') {
            k += 1;
        }
        if k < chars.len() && chars[k].is_ascii_digit() {
            while k < chars.len() && chars[k].is_ascii_digit() {
                k += 1;
            }
            if !chars.get(k).is_some_and(|c| c.is_alphabetic()) {
                return Ok((Tok::Number(chars[i..k].iter().collect()), k));
            }
        }
    }
    if j < chars.len() && (chars[j].is_alphabetic() || chars[j] == 'µ') {
        let mut k = j;
        while k < chars.len() && (chars[k].is_alphanumeric() || chars[k] == '.') {
            k += 1;
        }
        let text: String = chars[i..k].iter().collect();
        if parse_duration(&text, true).is_ok() {
            return Ok((Tok::Duration(text), k));
        }
        if crate::duration::parse_bytes_literal(&text).is_some() {
            return Ok((Tok::Bytes(text), k));
        }
        let unit: String = chars[j..k]
            .iter()
            .take_while(|c| c.is_alphabetic())
            .collect();
        if unit.ends_with(['b', 'B']) {
            return Err(format!("syntax error: unexpected IDENTIFIER {unit:?}"));
        }
        return Err(parse_duration(&text, true).unwrap_err().to_string());
    }
    Ok((Tok::Number(chars[i..j].iter().collect()), j))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn basic_tokens() {
        assert_eq!(
            toks(r#"{a="b\n"} |= `x\n` [5m] 1.5 20MB 1h30m --strict # c"#),
            vec![
                Tok::LBrace,
                Tok::Ident("a".into()),
                Tok::Eq,
                Tok::Str("b\n".into()),
                Tok::RBrace,
                Tok::PipeExact,
                Tok::Str("x\\n".into()),
                Tok::Range(300_000_000_000),
                Tok::Number("1.5".into()),
                Tok::Bytes("20MB".into()),
                Tok::Duration("1h30m".into()),
                Tok::Flag("strict".into()),
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("1--1"),
            vec![
                Tok::Number("1".into()),
                Tok::Sub,
                Tok::Sub,
                Tok::Number("1".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn bad_units() {
        let e = tokenize("[5minutes]").unwrap_err().to_string();
        assert!(e.contains("unknown unit \"minutes\" in duration"), "{e}");
        let e = tokenize("x > 1mb").unwrap_err().to_string();
        assert!(e.contains("syntax error"), "{e}");
    }
}
