//! Label sets: a series' identity, as Prometheus defines it.
//!
//! A [`Labels`] is a list of `name="value"` pairs sorted by name, names
//! unique, no empty values (an empty value means "label absent", as in
//! Prometheus). The metric name is the label `__name__`.

use std::fmt;

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One `name="value"` pair.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub name: String,
    pub value: String,
}

impl Label {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A sorted, duplicate-free label set. Build one with [`Labels::from_pairs`]
/// (which sorts and drops empty values) or check raw input with
/// [`Labels::from_sorted_checked`].
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<Label>);

impl Labels {
    pub fn new() -> Self {
        Labels(Vec::new())
    }

    /// Sorts the pairs by name and drops empty values. A duplicate name
    /// keeps the last value given (use [`Labels::from_sorted_checked`] where
    /// duplicates must be rejected instead).
    pub fn from_pairs<N: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut b = LabelsBuilder::default();
        for (n, v) in pairs {
            b.set(n, v);
        }
        b.build()
    }

    /// Takes labels as a wire format sent them and checks Prometheus'
    /// rules: sorted by name, no duplicate names. Empty values are dropped.
    pub fn from_sorted_checked(labels: Vec<Label>) -> Result<Self, LabelsError> {
        for w in labels.windows(2) {
            match w[0].name.cmp(&w[1].name) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err(LabelsError::Duplicate(w[0].name.clone())),
                std::cmp::Ordering::Greater => {
                    return Err(LabelsError::Unsorted {
                        before: w[0].name.clone(),
                        after: w[1].name.clone(),
                    });
                }
            }
        }
        let mut labels = labels;
        labels.retain(|l| !l.value.is_empty());
        Ok(Labels(labels))
    }

    /// Wraps a vector the caller knows is sorted, unique and without empty
    /// values (e.g. read back from storage). Checked in debug builds.
    pub fn from_sorted_unchecked(labels: Vec<Label>) -> Self {
        debug_assert!(
            labels.windows(2).all(|w| w[0].name < w[1].name),
            "bug: labels not sorted/unique"
        );
        Labels(labels)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    /// The metric name (`__name__`), if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }

    /// A builder that starts from these labels.
    pub fn builder(&self) -> LabelsBuilder {
        LabelsBuilder {
            labels: self.0.clone(),
        }
    }

    /// A stable 64-bit hash (FNV-1a over `name 0xff value 0xff` …), the same
    /// in every process and version: usable in files and for sharding.
    pub fn stable_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for l in &self.0 {
            eat(l.name.as_bytes());
            eat(&[0xff]);
            eat(l.value.as_bytes());
            eat(&[0xff]);
        }
        h
    }
}

impl fmt::Display for Labels {
    /// Prometheus' text form: `name{a="b", c="d"}`, or `{__name__="…"}` when
    /// there is no name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name();
        if let Some(n) = name {
            f.write_str(n)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for l in self.0.iter().filter(|l| l.name != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{}=\"{}\"", l.name, l.value.escape_default())?;
        }
        f.write_str("}")
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Why a wire format's label list is not a valid label set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelsError {
    #[error("duplicate label name {0:?}")]
    Duplicate(String),
    #[error("labels are not sorted by name: {before:?} comes before {after:?}")]
    Unsorted { before: String, after: String },
}

/// Edits a label set: set, delete, then [`LabelsBuilder::build`] sorts and
/// drops empty values.
#[derive(Clone, Debug, Default)]
pub struct LabelsBuilder {
    labels: Vec<Label>,
}

impl LabelsBuilder {
    /// Sets `name` to `value` (an empty value deletes the label).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let (name, value) = (name.into(), value.into());
        if let Some(l) = self.labels.iter_mut().find(|l| l.name == name) {
            l.value = value;
        } else {
            self.labels.push(Label { name, value });
        }
        self
    }

    pub fn del(&mut self, name: &str) -> &mut Self {
        self.labels.retain(|l| l.name != name);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    /// Keeps only the labels for which `keep(name)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) -> &mut Self {
        self.labels.retain(|l| keep(&l.name));
        self
    }

    pub fn build(&self) -> Labels {
        let mut v: Vec<Label> = self
            .labels
            .iter()
            .filter(|l| !l.value.is_empty())
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Labels(v)
    }
}

/// Prometheus' (pre-UTF-8) rule for label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Prometheus' (pre-UTF-8) rule for metric names: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_valid_metric_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_' || b[0] == b':')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_pairs_sorts_and_drops_empty() {
        let l = Labels::from_pairs([
            ("job", "a"),
            (METRIC_NAME, "up"),
            ("empty", ""),
            ("instance", "h:1"),
        ]);
        assert_eq!(l.to_string(), r#"up{instance="h:1", job="a"}"#);
        assert_eq!(l.get("job"), Some("a"));
        assert_eq!(l.get("empty"), None);
    }

    #[test]
    fn checked_rejects_duplicates_and_disorder() {
        let dup = vec![Label::new("a", "1"), Label::new("a", "2")];
        assert_eq!(
            Labels::from_sorted_checked(dup),
            Err(LabelsError::Duplicate("a".into()))
        );
        let uns = vec![Label::new("b", "1"), Label::new("a", "2")];
        assert!(matches!(
            Labels::from_sorted_checked(uns),
            Err(LabelsError::Unsorted { .. })
        ));
    }

    #[test]
    fn stable_hash_is_stable() {
        let l = Labels::from_pairs([(METRIC_NAME, "up"), ("job", "a")]);
        assert_eq!(l.stable_hash(), l.clone().stable_hash());
        assert_ne!(
            l.stable_hash(),
            Labels::from_pairs([(METRIC_NAME, "up"), ("job", "b")]).stable_hash()
        );
        // a value boundary cannot be shifted into the next name
        let a = Labels::from_pairs([("a", "bc"), ("d", "e")]);
        let b = Labels::from_pairs([("a", "b"), ("cd", "e")]);
        assert_ne!(a.stable_hash(), b.stable_hash());
    }

    #[test]
    fn name_rules() {
        for ok in ["a", "_x", "ab_9", "A"] {
            assert!(is_valid_label_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a-b", "a:b", "é"] {
            assert!(!is_valid_label_name(bad), "{bad}");
        }
        assert!(is_valid_metric_name("node:cpu:rate5m"));
        assert!(!is_valid_metric_name("1up"));
    }
}
