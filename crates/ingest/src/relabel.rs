//! Prometheus relabeling: `relabel_configs` and `metric_relabel_configs`.
//!
//! A [`RelabelConfig`] is one rule as written in the configuration file
//! (TOML here; the keys are Prometheus' YAML keys). [`compile`] checks a
//! list of them the way Prometheus validates its configuration and returns
//! [`Relabeler`]s; [`process`] runs a label set through them.
//!
//! The semantics are Prometheus' (`model/relabel/relabel.go`):
//! - the values of `source_labels` (absent = empty) are joined with
//!   `separator` (default `;`);
//! - `regex` (default `(.*)`) is anchored at both ends and `.` matches a
//!   newline (`^(?s:REGEX)$`);
//! - `replacement` (default `$1`) and a `replace` rule's `target_label` are
//!   expanded like Go's `Regexp.Expand`: `$1`, `${1}`, `$name`,
//!   `${name}`, `$$` for a dollar; `$1x` means the group named `1x` (which
//!   does not exist, so it expands to nothing); a `$` not followed by a
//!   name stays;
//! - setting a label to the empty string deletes it;
//! - `hashmod`: the MD5 of the joined value, its last 8 bytes read as a
//!   big-endian u64, modulo `modulus`.
//!
//! Differences from Prometheus, both at the edges: label names must match
//! the classic `[a-zA-Z_][a-zA-Z0-9_]*` (Prometheus 3 also allows any
//! UTF-8), and regexes use Rust's `regex` crate, whose syntax is RE2's as
//! in Go except that `\w`, `\d`, `\s` and `\b` are Unicode-aware.

use md5::{Digest, Md5};
use model::{Label, Labels, is_valid_label_name};
use regex::Regex;
use serde::Deserialize;

/// One `relabel_config` as written in the configuration file. Every field
/// is optional; [`compile`] fills in Prometheus' defaults and rejects
/// combinations Prometheus rejects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    pub source_labels: Option<Vec<String>>,
    pub separator: Option<String>,
    pub target_label: Option<String>,
    pub regex: Option<String>,
    pub modulus: Option<u64>,
    pub replacement: Option<String>,
    pub action: Option<String>,
}

/// What a rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

const ACTIONS: &str = "replace, keep, drop, keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep, lowercase, uppercase";

impl Action {
    /// Parses an action name, ignoring case as Prometheus does.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule that [`compile`] rejected: which one (0-based position in its
/// list), which key, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("relabel rule {index}, `{field}`: {problem}")]
pub struct RelabelConfigError {
    pub index: usize,
    pub field: &'static str,
    pub problem: Problem,
}

/// Why a rule is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("unknown action {0:?} (one of: {ACTIONS})")]
    UnknownAction(String),
    #[error("invalid regular expression {regex:?}: {error}")]
    InvalidRegex { regex: String, error: String },
    #[error("the {0} action needs a target_label (e.g. target_label = \"instance\")")]
    MissingTargetLabel(Action),
    #[error(
        "{label:?} is not a valid label name for the {action} action (use letters, digits and '_', not starting with a digit)"
    )]
    InvalidTargetLabel { label: String, action: Action },
    #[error(
        "{0:?} is not a valid label name (use letters, digits and '_', not starting with a digit)"
    )]
    InvalidSourceLabel(String),
    #[error("the hashmod action needs a modulus greater than 0")]
    ZeroModulus,
    #[error("the {0} action takes no replacement (remove the key)")]
    ReplacementNotAllowed(Action),
    #[error(
        "{0:?} is not a valid labelmap replacement: it must expand to a label name (e.g. \"$1\" or \"k8s_$1\")"
    )]
    InvalidLabelMapReplacement(String),
    #[error("the {action} action takes only {allowed} (remove this key)")]
    FieldNotAllowed {
        action: Action,
        allowed: &'static str,
    },
}

/// A validated, compiled rule. Build with [`compile`] or [`Relabeler::new`].
#[derive(Clone, Debug)]
pub struct Relabeler {
    action: Action,
    source_labels: Vec<String>,
    separator: String,
    target_label: String,
    regex: Regex,
    /// The regex as written, for display.
    regex_src: String,
    modulus: u64,
    replacement: String,
}

const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_REPLACEMENT: &str = "$1";
const DEFAULT_SEPARATOR: &str = ";";

/// Compiles a list of rules, naming the first invalid one by its position.
pub fn compile(configs: &[RelabelConfig]) -> Result<Vec<Relabeler>, RelabelConfigError> {
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Relabeler::new(c).map_err(|(field, problem)| RelabelConfigError {
                index: i,
                field,
                problem,
            })
        })
        .collect()
}

impl Relabeler {
    /// Validates and compiles one rule; the error names the offending key.
    pub fn new(c: &RelabelConfig) -> Result<Relabeler, (&'static str, Problem)> {
        let action = match &c.action {
            None => Action::Replace,
            Some(a) => {
                Action::parse(a).ok_or_else(|| ("action", Problem::UnknownAction(a.clone())))?
            }
        };
        let regex_src = c.regex.clone().unwrap_or_else(|| DEFAULT_REGEX.to_owned());
        let regex = Regex::new(&format!("^(?s:{regex_src})$")).map_err(|e| {
            (
                "regex",
                Problem::InvalidRegex {
                    regex: regex_src.clone(),
                    error: e.to_string(),
                },
            )
        })?;
        let source_labels = c.source_labels.clone().unwrap_or_default();
        if let Some(bad) = source_labels.iter().find(|l| !is_valid_label_name(l)) {
            return Err(("source_labels", Problem::InvalidSourceLabel(bad.clone())));
        }
        let separator = c
            .separator
            .clone()
            .unwrap_or_else(|| DEFAULT_SEPARATOR.to_owned());
        let target_label = c.target_label.clone().unwrap_or_default();
        let modulus = c.modulus.unwrap_or(0);
        let replacement = c
            .replacement
            .clone()
            .unwrap_or_else(|| DEFAULT_REPLACEMENT.to_owned());

        use Action::*;
        if action == HashMod && modulus == 0 {
            return Err(("modulus", Problem::ZeroModulus));
        }
        let needs_target = matches!(
            action,
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
        );
        if needs_target && target_label.is_empty() {
            return Err(("target_label", Problem::MissingTargetLabel(action)));
        }
        let target_must_be_name = match action {
            Replace => !target_label.contains('$'),
            HashMod | Lowercase | Uppercase | KeepEqual | DropEqual => true,
            _ => false,
        };
        if target_must_be_name && !is_valid_label_name(&target_label) {
            return Err((
                "target_label",
                Problem::InvalidTargetLabel {
                    label: target_label,
                    action,
                },
            ));
        }
        if matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual)
            && replacement != DEFAULT_REPLACEMENT
        {
            return Err(("replacement", Problem::ReplacementNotAllowed(action)));
        }
        if action == LabelMap && !is_labelmap_template(&replacement) {
            return Err((
                "replacement",
                Problem::InvalidLabelMapReplacement(replacement),
            ));
        }
        if matches!(action, KeepEqual | DropEqual) {
            let allowed = "source_labels and target_label";
            if regex_src != DEFAULT_REGEX {
                return Err(("regex", Problem::FieldNotAllowed { action, allowed }));
            }
            if modulus != 0 {
                return Err(("modulus", Problem::FieldNotAllowed { action, allowed }));
            }
            if separator != DEFAULT_SEPARATOR {
                return Err(("separator", Problem::FieldNotAllowed { action, allowed }));
            }
        }
        if matches!(action, LabelDrop | LabelKeep) {
            let allowed = "regex";
            let bad = if c.source_labels.is_some() {
                Some("source_labels")
            } else if !target_label.is_empty() {
                Some("target_label")
            } else if modulus != 0 {
                Some("modulus")
            } else if separator != DEFAULT_SEPARATOR {
                Some("separator")
            } else if replacement != DEFAULT_REPLACEMENT {
                Some("replacement")
            } else {
                None
            };
            if let Some(field) = bad {
                return Err((field, Problem::FieldNotAllowed { action, allowed }));
            }
        }
        Ok(Relabeler {
            action,
            source_labels,
            separator,
            target_label,
            regex,
            regex_src,
            modulus,
            replacement,
        })
    }

    pub fn action(&self) -> Action {
        self.action
    }

    /// The regex as written (without the anchors added).
    pub fn regex(&self) -> &str {
        &self.regex_src
    }

    /// Applies the rule; false means the label set is dropped.
    fn apply(&self, lb: &mut Builder) -> bool {
        let val = {
            let mut v = String::new();
            for (i, n) in self.source_labels.iter().enumerate() {
                if i > 0 {
                    v.push_str(&self.separator);
                }
                v.push_str(lb.get(n));
            }
            v
        };
        match self.action {
            Action::Drop => return !self.regex.is_match(&val),
            Action::Keep => return self.regex.is_match(&val),
            Action::DropEqual => return lb.get(&self.target_label) != val,
            Action::KeepEqual => return lb.get(&self.target_label) == val,
            Action::Replace => {
                let Some(caps) = self.regex.captures(&val) else {
                    return true;
                };
                let target = expand(&self.regex, &caps, &self.target_label);
                if !is_valid_label_name(&target) {
                    return true;
                }
                let res = expand(&self.regex, &caps, &self.replacement);
                lb.set(&target, res);
            }
            Action::Lowercase => lb.set(&self.target_label, val.to_lowercase()),
            Action::Uppercase => lb.set(&self.target_label, val.to_uppercase()),
            Action::HashMod => {
                let sum = Md5::digest(val.as_bytes());
                let mut tail = [0u8; 8];
                tail.copy_from_slice(&sum[8..16]);
                let m = u64::from_be_bytes(tail) % self.modulus;
                lb.set(&self.target_label, m.to_string());
            }
            Action::LabelMap => {
                for l in lb.snapshot() {
                    if let Some(caps) = self.regex.captures(&l.name) {
                        let name = expand(&self.regex, &caps, &self.replacement);
                        lb.set(&name, l.value);
                    }
                }
            }
            Action::LabelDrop => {
                for l in lb.snapshot() {
                    if self.regex.is_match(&l.name) {
                        lb.del(&l.name);
                    }
                }
            }
            Action::LabelKeep => {
                for l in lb.snapshot() {
                    if !self.regex.is_match(&l.name) {
                        lb.del(&l.name);
                    }
                }
            }
        }
        true
    }
}

/// Runs `labels` through `rules` in order. `None`: a rule dropped it.
/// The result may lack `__name__` or hold labels that are not valid
/// (e.g. a labelmap to an odd name); callers check what they require.
pub fn process(labels: &Labels, rules: &[Relabeler]) -> Option<Labels> {
    if rules.is_empty() {
        return Some(labels.clone());
    }
    let mut lb = Builder::new(labels);
    for r in rules {
        if !r.apply(&mut lb) {
            return None;
        }
    }
    Some(lb.build())
}

/// Prometheus' `relabelTarget`: what a labelmap replacement must look like
/// (`^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`).
fn is_labelmap_template(s: &str) -> bool {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$")
            .unwrap_or_else(|e| panic!("bug: labelmap template regex: {e}"))
    })
    .is_match(s)
}

/// Go's `Regexp.Expand` for a string template.
fn expand(re: &Regex, caps: &regex::Captures<'_>, template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let Some((name, after)) = extract_name(rest) else {
            out.push('$');
            continue;
        };
        rest = after;
        let group = match group_number(name) {
            Some(n) => caps.get(n),
            None => re
                .capture_names()
                .position(|n| n == Some(name))
                .and_then(|i| caps.get(i)),
        };
        if let Some(m) = group {
            out.push_str(m.as_str());
        }
    }
    out.push_str(rest);
    out
}

/// After a `$`: `{name}` or the longest run of letters, digits and `_`.
fn extract_name(s: &str) -> Option<(&str, &str)> {
    let (brace, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|&(_, c)| !(c.is_alphabetic() || c.is_numeric() || c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    if brace {
        let after = body[end..].strip_prefix('}')?;
        Some((name, after))
    } else {
        Some((name, &body[end..]))
    }
}

/// A group name that is a number: ASCII digits, no leading zero, below
/// 1e8 (Go's rule); anything else is looked up by name.
fn group_number(name: &str) -> Option<usize> {
    if !name.bytes().all(|b| b.is_ascii_digit())
        || (name.len() > 1 && name.starts_with('0'))
        || name.len() > 8
    {
        return None;
    }
    name.parse().ok()
}

/// Prometheus' `labels.Builder`: a base set plus additions and deletions,
/// with its iteration order (base labels, then additions in the order
/// made), which decides who wins when a labelmap maps two labels to one
/// name.
struct Builder {
    base: Vec<Label>,
    add: Vec<Label>,
    del: Vec<String>,
}

impl Builder {
    fn new(labels: &Labels) -> Builder {
        Builder {
            base: labels.as_slice().to_vec(),
            add: Vec::new(),
            del: Vec::new(),
        }
    }

    fn get(&self, name: &str) -> &str {
        if let Some(a) = self.add.iter().find(|a| a.name == name) {
            return &a.value;
        }
        if self.del.iter().any(|d| d == name) {
            return "";
        }
        self.base
            .iter()
            .find(|l| l.name == name)
            .map_or("", |l| l.value.as_str())
    }

    fn set(&mut self, name: &str, value: String) {
        if value.is_empty() {
            self.del(name);
            return;
        }
        if let Some(a) = self.add.iter_mut().find(|a| a.name == name) {
            a.value = value;
        } else {
            self.add.push(Label {
                name: name.to_owned(),
                value,
            });
        }
    }

    fn del(&mut self, name: &str) {
        self.add.retain(|a| a.name != name);
        self.del.push(name.to_owned());
    }

    /// The current labels: base ones not deleted or overridden, then the
    /// additions.
    fn snapshot(&self) -> Vec<Label> {
        self.base
            .iter()
            .filter(|l| !self.del.contains(&l.name) && !self.add.iter().any(|a| a.name == l.name))
            .chain(self.add.iter())
            .cloned()
            .collect()
    }

    fn build(self) -> Labels {
        let mut v = self.snapshot();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Labels::from_sorted_unchecked(v)
    }
}

#[cfg(test)]
mod tests;
