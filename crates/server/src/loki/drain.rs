//! Log patterns found at query time: a Drain-style clustering of tokenised lines, behind
//! `/loki/api/v1/patterns` ([`super::patterns`]). Pure: no HTTP, no store.
//!
//! Loki finds patterns in its ingesters as lines arrive; Flightdeck has no ingesters, so the
//! endpoint feeds the lines a query selects (newest first, capped) into a [`Drain`] and
//! reads the clusters back as patterns with a count per step.
//!
//! The idea is Drain's (He et al., ICWS 2017): lines that come from the same print
//! statement have the same number of tokens and usually the same first tokens, so
//!
//! 1. a line is split into [tokens](tokenize): words between whitespace, with `=`, `"`,
//!    `,`, `;`, brackets and braces (and `:` unless it sits between two digits) as tokens
//!    of their own, so `key=value` and JSON's `"key":value` keep the key apart from the
//!    value; a word that looks like a value (numbers, hex, UUIDs, IPs, timestamps,
//!    durations: [`looks_variable`]) is a variable from the start;
//! 2. a fixed-depth prefix tree routes the line by its token count, then by its first
//!    [`PREFIX_DEPTH`] words (a word with a digit or a `/`, or beyond [`MAX_CHILDREN`]
//!    siblings, takes the `<_>` branch) to a leaf holding a few clusters;
//! 3. in the leaf the most similar cluster wins: its punctuation must be the line's, and
//!    the share of words equal to the line's is the similarity. At [`SIMILARITY`] or more
//!    the line joins it, and every word where they differ becomes a variable; else the
//!    line starts a cluster of its own. A full leaf ([`MAX_LEAF_CLUSTERS`]) makes the line
//!    join its most similar cluster anyway, which bounds the work per line.
//!
//! A cluster's pattern is its tokens with each variable written `<_>` (a run of variables
//! with no whitespace between them is one `<_>`), the whitespace taken from the first line
//! it saw: a pattern Loki's `|>` line filter accepts, and which matches every line of the
//! cluster (a unit test holds the two together).

use std::collections::{BTreeMap, HashMap};

/// Least share of equal words for a line to join a cluster.
pub const SIMILARITY: f64 = 0.7;
/// Words of a line, after its token count, that route it in the prefix tree.
pub const PREFIX_DEPTH: usize = 2;
/// Most distinct words under one node of the tree; more go to its `<_>` branch.
pub const MAX_CHILDREN: usize = 100;
/// Most clusters in one leaf of the tree.
pub const MAX_LEAF_CLUSTERS: usize = 100;
/// Bytes of a line that are tokenised; a longer line ends in `<_>`.
pub const MAX_LINE_BYTES: usize = 4096;

/// What a variable looks like in a pattern (Loki's "any text" capture).
pub const VAR: &str = "<_>";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Word,
    Punct,
}

/// One token of a line: the whitespace before it, its text, and whether it is a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tok<'a> {
    ws: &'a str,
    text: &'a str,
    kind: Kind,
    var: bool,
}

fn word<'a>(ws: &'a str, text: &'a str) -> Tok<'a> {
    Tok {
        ws,
        text,
        kind: Kind::Word,
        var: looks_variable(text),
    }
}

fn is_punct(c: char) -> bool {
    matches!(c, '=' | '"' | ',' | ';' | '(' | ')' | '[' | ']' | '{' | '}')
}

/// Whether a word is a value rather than part of the message: it has a digit, and either
/// at most two letters outside the hex digits (`404`, `12.5ms`, `0x1f`, a UUID, an IP,
/// `2026-11-27T04:28:05Z`) or digits make half of it (`27/Nov/2026:04:28:05`). `HTTP/1.1`,
/// `user123` and `ipv4` stay words. A word with `<` is a value too, so that no literal of a
/// pattern reads as a `<name>` capture.
pub fn looks_variable(w: &str) -> bool {
    if w.contains('<') {
        return true;
    }
    let (mut digits, mut letters, mut len) = (0usize, 0usize, 0usize);
    for c in w.chars() {
        len += 1;
        if c.is_ascii_digit() {
            digits += 1;
        } else if c.is_ascii_alphabetic() && !c.is_ascii_hexdigit() {
            letters += 1;
        }
    }
    digits > 0 && (letters <= 2 || digits * 2 >= len)
}

/// Splits a line into tokens (see the module doc). Trailing whitespace is dropped; a line
/// longer than [`MAX_LINE_BYTES`] is cut there and ends in a variable.
fn tokenize(line: &str) -> Vec<Tok<'_>> {
    let mut cut = line.len().min(MAX_LINE_BYTES);
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    let s = &line[..cut];
    let b = s.as_bytes();
    let mut out = Vec::new();
    // Where the whitespace before the next token starts, and the word being read.
    let mut gap = 0;
    let mut word_start: Option<usize> = None;
    for (at, c) in s.char_indices() {
        let punct = is_punct(c)
            || (c == ':'
                && !(at > 0
                    && b[at - 1].is_ascii_digit()
                    && b.get(at + 1).is_some_and(u8::is_ascii_digit)));
        if c.is_whitespace() || punct {
            if let Some(w) = word_start.take() {
                out.push(word(&s[gap..w], &s[w..at]));
                gap = at;
            }
            if punct {
                let end = at + c.len_utf8();
                out.push(Tok {
                    ws: &s[gap..at],
                    text: &s[at..end],
                    kind: Kind::Punct,
                    var: false,
                });
                gap = end;
            }
        } else if word_start.is_none() {
            word_start = Some(at);
        }
    }
    if let Some(w) = word_start {
        out.push(word(&s[gap..w], &s[w..]));
    }
    if cut < line.len() {
        out.push(Tok {
            ws: "",
            text: VAR,
            kind: Kind::Word,
            var: true,
        });
    }
    out
}

/// One position of a cluster's template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    Var,
    Lit(Box<str>),
}

struct Cluster {
    slots: Vec<Slot>,
    /// The kind of token at each position, from the first line.
    kinds: Vec<Kind>,
    /// The whitespace before each position, from the first line.
    ws: Vec<Box<str>>,
    total: u64,
    /// Lines per step, by the step's start (ns).
    buckets: BTreeMap<i64, u64>,
}

impl Cluster {
    fn new(toks: &[Tok<'_>]) -> Cluster {
        Cluster {
            slots: toks
                .iter()
                .map(|t| {
                    if t.var {
                        Slot::Var
                    } else {
                        Slot::Lit(t.text.into())
                    }
                })
                .collect(),
            kinds: toks.iter().map(|t| t.kind).collect(),
            ws: toks.iter().map(|t| t.ws.into()).collect(),
            total: 0,
            buckets: BTreeMap::new(),
        }
    }

    /// The share of the line's words this cluster has (a variable agrees with a variable
    /// only), and whether its punctuation is the line's. Same token count assumed.
    fn similarity(&self, toks: &[Tok<'_>]) -> (f64, bool) {
        let (mut words, mut equal, mut shape) = (0usize, 0usize, true);
        for ((slot, kind), t) in self.slots.iter().zip(&self.kinds).zip(toks) {
            let same = match slot {
                Slot::Var => t.var,
                Slot::Lit(l) => !t.var && **l == *t.text,
            };
            if *kind != t.kind || (t.kind == Kind::Punct && !same) {
                shape = false;
            }
            if t.kind == Kind::Word {
                words += 1;
                equal += usize::from(same);
            }
        }
        let sim = if words == 0 {
            1.0
        } else {
            equal as f64 / words as f64
        };
        (sim, shape)
    }

    /// Takes a line in: every position where it differs becomes a variable.
    fn merge(&mut self, toks: &[Tok<'_>]) {
        for (slot, t) in self.slots.iter_mut().zip(toks) {
            if let Slot::Lit(l) = slot
                && (t.var || **l != *t.text)
            {
                *slot = Slot::Var;
            }
        }
    }

    /// The pattern: literals and whitespace as they are, each run of variables with no
    /// whitespace inside written once as `<_>`.
    fn render(&self) -> String {
        let mut out = String::new();
        let mut prev_var = false;
        for (slot, ws) in self.slots.iter().zip(&self.ws) {
            match slot {
                Slot::Var if prev_var && ws.is_empty() => {}
                Slot::Var => {
                    out.push_str(ws);
                    out.push_str(VAR);
                    prev_var = true;
                }
                Slot::Lit(l) => {
                    out.push_str(ws);
                    out.push_str(l);
                    prev_var = false;
                }
            }
        }
        out
    }
}

/// A node of the prefix tree: children by word (`<_>` for variables and overflow), and at
/// the leaves the clusters (indexes into [`Drain::clusters`]).
#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    clusters: Vec<usize>,
}

/// A pattern and how many lines it took, per step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    pub pattern: String,
    pub total: u64,
    /// `(start of the step in ns, lines)`: only steps with lines, in time order.
    pub samples: Vec<(i64, u64)>,
}

/// The clustering: feed lines with [`Drain::add`], read patterns with [`Drain::patterns`].
/// The result depends on the order lines come in (as Drain's does); the endpoint feeds
/// them oldest first.
pub struct Drain {
    step_ns: i64,
    /// The prefix tree's roots, by token count.
    roots: HashMap<usize, Node>,
    clusters: Vec<Cluster>,
}

impl Drain {
    /// Counts lines per `step_ns`, in steps aligned to multiples of it since the epoch.
    pub fn new(step_ns: i64) -> Drain {
        assert!(step_ns > 0, "bug: a step must be positive");
        Drain {
            step_ns,
            roots: HashMap::new(),
            clusters: Vec::new(),
        }
    }

    /// Clusters one line seen at `ts_ns`. A blank line is not counted.
    pub fn add(&mut self, ts_ns: i64, line: &str) {
        let toks = tokenize(line);
        if toks.is_empty() {
            return;
        }
        let Drain {
            step_ns,
            roots,
            clusters,
        } = self;
        let mut node = roots.entry(toks.len()).or_default();
        for t in toks
            .iter()
            .filter(|t| t.kind == Kind::Word)
            .take(PREFIX_DEPTH)
        {
            // As Drain does, a word with a digit routes as a variable (even when it is
            // not one in the template); a path too: both vary between lines of a print.
            let routes_as_var = t.var || t.text.contains(|c: char| c.is_ascii_digit() || c == '/');
            let mut key = if routes_as_var { VAR } else { t.text };
            if !node.children.contains_key(key) {
                if node.children.len() >= MAX_CHILDREN {
                    key = VAR;
                }
                node.children.entry(key.into()).or_default();
            }
            node = node
                .children
                .get_mut(key)
                .expect("bug: the child was inserted above");
        }
        let mut best: Option<(usize, bool, f64)> = None;
        for &id in &node.clusters {
            let (sim, shape) = clusters[id].similarity(&toks);
            if best.is_none_or(|(_, bshape, bsim)| (shape, sim) > (bshape, bsim)) {
                best = Some((id, shape, sim));
            }
        }
        let id = match best {
            Some((id, true, sim)) if sim >= SIMILARITY => {
                clusters[id].merge(&toks);
                id
            }
            Some((id, _, _)) if node.clusters.len() >= MAX_LEAF_CLUSTERS => {
                clusters[id].merge(&toks);
                id
            }
            _ => {
                clusters.push(Cluster::new(&toks));
                node.clusters.push(clusters.len() - 1);
                clusters.len() - 1
            }
        };
        let c = &mut clusters[id];
        c.total += 1;
        *c.buckets
            .entry(ts_ns.div_euclid(*step_ns) * *step_ns)
            .or_default() += 1;
    }

    /// The patterns, most lines first (ties by pattern), at most `max`. Clusters that came
    /// to the same pattern are counted as one.
    pub fn patterns(&self, max: usize) -> Vec<Pattern> {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut merged: Vec<(String, u64, BTreeMap<i64, u64>)> = Vec::new();
        for c in &self.clusters {
            let p = c.render();
            match index.get(&p) {
                Some(&i) => {
                    merged[i].1 += c.total;
                    for (t, n) in &c.buckets {
                        *merged[i].2.entry(*t).or_default() += n;
                    }
                }
                None => {
                    index.insert(p.clone(), merged.len());
                    merged.push((p, c.total, c.buckets.clone()));
                }
            }
        }
        merged.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        merged.truncate(max);
        merged
            .into_iter()
            .map(|(pattern, total, buckets)| Pattern {
                pattern,
                total,
                samples: buckets.into_iter().collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    /// A pattern, its total and its samples (seconds).
    type Got = (String, u64, Vec<(i64, u64)>);

    /// The tokens of `line`, `|`-separated, each with its whitespace, values as `<_>`.
    fn check_tokens(line: &str, want: &str) {
        let got: Vec<String> = tokenize(line)
            .iter()
            .map(|t| format!("{}{}", t.ws, if t.var { VAR } else { t.text }))
            .collect();
        assert_eq!(got.join("|"), want, "{line}");
    }

    #[test]
    fn lines_are_split_into_words_punctuation_and_values() {
        check_tokens(
            r#"level=info msg="GET /api/users/42" took=12ms"#,
            r#"level|=|info| msg|=|"|GET| /api/users/42|"| took|=|<_>"#,
        );
        check_tokens(
            r#"{"level":"warn","n":3}"#,
            r#"{|"|level|"|:|"|warn|"|,|"|n|"|:|<_>|}"#,
        );
        check_tokens(
            "10.0.0.1 - - [27/Nov/2026:04:28:05 +0000] \"GET / HTTP/1.1\" 200",
            r#"<_>| -| -| [|<_>| <_>|]| "|GET| /| HTTP/1.1|"| <_>"#,
        );
        check_tokens("  a\tb  host:80  ", "  a|\tb|  host|:|<_>");
        check_tokens("", "");
        check_tokens("<html> body", "<_>| body");
        let long = "word ".repeat(2000);
        let toks = tokenize(&long);
        assert!(toks.len() < 1000 && toks.last().unwrap().var);
    }

    #[test]
    fn values_are_told_from_words() {
        for v in [
            "404",
            "12.5ms",
            "0x1f",
            "550e8400-e29b-41d4-a716-446655440000",
            "192.168.1.20:8080",
            "2026-11-27T04:28:05.123Z",
            "27/Nov/2026:04:28:05",
            "db-1",
            "v2",
            "12%",
            "a<b",
        ] {
            assert!(looks_variable(v), "{v} is a value");
        }
        for w in [
            "GET",
            "HTTP/1.1",
            "user123",
            "ipv4",
            "deadbeef",
            "/api/users",
            "-",
        ] {
            assert!(!looks_variable(w), "{w} is a word");
        }
    }

    /// Feeds `lines` (`(seconds, line)`) with a 10 s step; the patterns with their totals
    /// and samples (seconds).
    fn cluster(lines: &[(i64, String)]) -> Vec<Got> {
        let mut d = Drain::new(10 * S);
        for (t, l) in lines {
            d.add(t * S, l);
        }
        d.patterns(300)
            .into_iter()
            .map(|p| {
                let samples = p.samples.iter().map(|(t, n)| (t / S, *n)).collect();
                (p.pattern, p.total, samples)
            })
            .collect()
    }

    fn mixed() -> Vec<(i64, String)> {
        let mut lines = Vec::new();
        for (i, user) in ["alice", "bob", "carol", "dave", "erin"].iter().enumerate() {
            let ip = format!("10.0.0.{i}");
            lines.push((
                100 + i as i64,
                format!(
                    r#"level=info caller=auth.go:{} msg="user {user} logged in" ip={ip}"#,
                    40 + i
                ),
            ));
        }
        for i in 0..3 {
            lines.push((
                112 + i,
                format!(
                    "level=error msg=\"connection refused\" host=db-{i} port=54{i}2 retry={}",
                    i * 3
                ),
            ));
        }
        for (i, key) in ["session-abc", "session-def", "session-ghi", "session-jkl"]
            .iter()
            .enumerate()
        {
            lines.push((
                95 + 10 * i as i64,
                format!(r#"{{"level":"debug","msg":"cache miss","key":"{key}","ms":{i}.5}}"#),
            ));
        }
        for i in 0..6 {
            lines.push((
                120 + i,
                format!(
                    r#"172.16.0.{i} - - [27/Nov/2026:04:10:{:02} +0000] "GET /api/items/{} HTTP/1.1" 200 {}"#,
                    i * 7,
                    1000 + i,
                    512 * i
                ),
            ));
        }
        lines.push((
            130,
            "level=warn msg=\"disk almost full\" path=/var free=7%".into(),
        ));
        lines.push((
            131,
            "level=warn msg=\"queue nearly empty\" name=jobs size=3".into(),
        ));
        lines.push((132, "   ".into()));
        lines
    }

    #[test]
    fn lines_of_a_few_templates_come_back_as_those_templates() {
        let got = cluster(&mixed());
        let want: Vec<Got> = vec![
            (
                r#"<_> - - [<_> <_>] "GET <_> HTTP/1.1" <_> <_>"#.into(),
                6,
                vec![(120, 6)],
            ),
            (
                r#"level=info caller=auth.go:<_> msg="user <_> logged in" ip=<_>"#.into(),
                5,
                vec![(100, 5)],
            ),
            (
                r#"{"level":"debug","msg":"cache miss","key":"<_>","ms":<_>}"#.into(),
                4,
                vec![(90, 1), (100, 1), (110, 1), (120, 1)],
            ),
            (
                r#"level=error msg="connection refused" host=<_> port=<_> retry=<_>"#.into(),
                3,
                vec![(110, 3)],
            ),
            (
                r#"level=warn msg="disk almost full" path=/var free=<_>"#.into(),
                1,
                vec![(130, 1)],
            ),
            (
                r#"level=warn msg="queue nearly empty" name=jobs size=<_>"#.into(),
                1,
                vec![(130, 1)],
            ),
        ];
        assert_eq!(got, want);
    }

    /// Every line matches its pattern through LogQL's own `|>` filter (what Grafana sends
    /// when a pattern is picked).
    #[test]
    fn each_pattern_matches_its_lines_with_the_pattern_filter() {
        let lines = mixed();
        let patterns = cluster(&lines);
        let labels = model::Labels::from_pairs([("job", "x")]);
        let filters: Vec<(String, logql::TailQuery)> = patterns
            .iter()
            .map(|(p, _, _)| {
                let q = format!("{{job=\"x\"}} |> `{p}`");
                let tq = logql::TailQuery::new(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
                (p.clone(), tq)
            })
            .collect();
        for (_, line) in lines.iter().filter(|(_, l)| !l.trim().is_empty()) {
            let hits: Vec<&str> = filters
                .iter()
                .filter(|(_, tq)| tq.process(&labels, 0, line, &[]).is_some())
                .map(|(p, _)| p.as_str())
                .collect();
            assert!(!hits.is_empty(), "no pattern matches {line}");
        }
    }

    /// Words with digits or slashes route as variables, so lines that differ there meet
    /// in one leaf; a different first word keeps them apart.
    #[test]
    fn values_in_the_first_words_do_not_split_a_template() {
        let lines: Vec<(i64, String)> = [
            "GET /items/abc took 1ms",
            "GET /items/7 took 2ms",
            "GET /orders took 3ms",
            "POST /orders took 9ms",
        ]
        .iter()
        .map(|l| (0, l.to_string()))
        .collect();
        let got: Vec<(String, u64)> = cluster(&lines).into_iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(
            got,
            vec![
                ("GET <_> took <_>".to_string(), 3),
                ("POST /orders took <_>".to_string(), 1)
            ]
        );
    }

    #[test]
    fn samples_count_lines_per_aligned_step() {
        let mut lines: Vec<(i64, String)> = Vec::new();
        for t in [1, 2, 9, 10, 19, 35, 35, -3] {
            lines.push((t, format!("job {t} done in {t}ms")));
        }
        let got = cluster(&lines);
        assert_eq!(
            got,
            vec![(
                "job <_> done in <_>".to_string(),
                8,
                vec![(-10, 1), (0, 3), (10, 2), (30, 2)]
            )]
        );
    }

    #[test]
    fn patterns_are_capped_most_lines_first() {
        let mut d = Drain::new(S);
        for (n, w) in [(1, "alpha"), (3, "beta"), (2, "gamma"), (3, "delta")] {
            for _ in 0..n {
                d.add(0, &format!("{w} {w} {w}"));
            }
        }
        let got: Vec<(String, u64)> = d
            .patterns(3)
            .into_iter()
            .map(|p| (p.pattern, p.total))
            .collect();
        assert_eq!(
            got,
            vec![
                ("beta beta beta".to_string(), 3),
                ("delta delta delta".to_string(), 3),
                ("gamma gamma gamma".to_string(), 2)
            ]
        );
    }

    /// Lines that share little: a leaf stops at `MAX_LEAF_CLUSTERS` clusters, and every
    /// line is still counted once.
    #[test]
    fn a_full_leaf_bounds_the_clusters_and_loses_no_line() {
        let word = |mut i: usize| {
            let mut w = String::new();
            for _ in 0..4 {
                w.push((b'g' + (i % 20) as u8) as char);
                i /= 20;
            }
            w
        };
        let mut d = Drain::new(S);
        let n = 3000;
        for i in 0..n {
            d.add(
                i as i64,
                &format!("start middle {} {} {}", word(i), word(i + 7), word(i * 13)),
            );
        }
        assert_eq!(d.clusters.len(), MAX_LEAF_CLUSTERS);
        let ps = d.patterns(usize::MAX);
        assert!(ps.len() <= MAX_LEAF_CLUSTERS, "{}", ps.len());
        assert_eq!(ps.iter().map(|p| p.total).sum::<u64>(), n as u64);
    }
}
