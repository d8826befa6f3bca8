//! A compiled log query applied to lines one at a time, for live tailing: the server checks
//! each pushed entry's stream against the selector and runs the pipeline on it, with no store
//! in between.

use crate::Error;
use crate::ast::Expr;
use crate::pipeline::{LabelPairs, LabelsBuilder, Pipeline};
use model::{Labels, Matcher};
use std::sync::Arc;

/// `{selector} | pipeline`, ready to filter entries as they arrive.
#[derive(Debug)]
pub struct TailQuery {
    matchers: Vec<Matcher>,
    pipeline: Pipeline,
}

/// What a tailed entry became.
#[derive(Clone, Debug, PartialEq)]
pub struct TailedEntry {
    pub labels: LabelPairs,
    pub line: String,
}

impl TailQuery {
    /// Parses a log query (a metric query is an error: only log queries can be tailed).
    pub fn new(query: &str) -> Result<Self, Error> {
        match crate::parse(query)? {
            Expr::Log(l) => Ok(TailQuery {
                pipeline: Pipeline::compile(&l.stages)?,
                matchers: l.matchers,
            }),
            Expr::Sample(_) => Err(Error::BadQuery(
                "only log queries can be tailed, not metric queries".into(),
            )),
        }
    }

    /// The selector's matchers.
    pub fn matchers(&self) -> &[Matcher] {
        &self.matchers
    }

    /// Does a stream with these labels feed this query?
    pub fn matches_stream(&self, labels: &Labels) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
    }

    /// Runs one entry of a matching stream through the pipeline; `None` when it is dropped.
    pub fn process(
        &self,
        stream: &Labels,
        ts_ns: i64,
        line: &str,
        metadata: &[(String, String)],
    ) -> Option<TailedEntry> {
        let pairs: LabelPairs = stream
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        let mut lb = LabelsBuilder::new(Arc::new(pairs));
        lb.reset(metadata);
        let mut buf = String::new();
        let out = self.pipeline.process(ts_ns, line, &mut lb, &mut buf)?;
        let labels = lb.labels();
        if !self.pipeline.distinct_keeps(&labels) {
            return None;
        }
        Some(TailedEntry {
            line: out.to_string(),
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_a_log_query() {
        let q = TailQuery::new(r#"{app="a"} |= "err" | logfmt | line_format "{{.msg}}""#).unwrap();
        let a = Labels::from_pairs([("app", "a")]);
        let b = Labels::from_pairs([("app", "b")]);
        assert!(q.matches_stream(&a) && !q.matches_stream(&b));
        assert_eq!(q.process(&a, 1, "level=info msg=ok", &[]), None);
        let e = q.process(&a, 1, "level=err msg=boom", &[]).unwrap();
        assert_eq!(e.line, "boom");
        assert_eq!(
            e.labels,
            vec![
                ("app".to_string(), "a".to_string()),
                ("level".to_string(), "err".to_string()),
                ("msg".to_string(), "boom".to_string())
            ]
        );
        assert!(TailQuery::new(r#"rate({app="a"}[1m])"#).is_err());
    }
}
