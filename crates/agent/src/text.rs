//! Renders [`Collected`] series as Prometheus text exposition format 0.0.4
//! (what `GET /metrics` serves): `# HELP`, `# TYPE`, then the samples of
//! each family, families in the order first collected.

use std::fmt::Write as _;

use crate::Collected;

/// `text/plain; version=0.0.4; charset=utf-8`
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The family a series belongs to: histogram and summary series end in
/// `_bucket`, `_sum` or `_count` after their family name.
fn family_of<'a>(name: &'a str, c: &Collected) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && c.metadata.iter().any(|(n, m)| {
                n == base
                    && matches!(
                        m.metric_type,
                        model::MetricType::Histogram | model::MetricType::Summary
                    )
            })
        {
            return base;
        }
    }
    name
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)` spelling of special values,
/// which the parsers expect.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// The whole exposition.
pub fn render(c: &Collected) -> String {
    let mut order: Vec<&str> = Vec::new();
    for (l, _) in &c.series {
        let f = family_of(l.metric_name().unwrap_or(""), c);
        if !order.contains(&f) {
            order.push(f);
        }
    }
    let mut out = String::new();
    for fam in order {
        if let Some((_, m)) = c.metadata.iter().find(|(n, _)| n == fam) {
            let _ = writeln!(out, "# HELP {fam} {}", escape_help(&m.help));
            let t = match m.metric_type {
                model::MetricType::Unknown => "untyped",
                other => other.as_str(),
            };
            let _ = writeln!(out, "# TYPE {fam} {t}");
        }
        for (l, v) in c
            .series
            .iter()
            .filter(|(l, _)| family_of(l.metric_name().unwrap_or(""), c) == fam)
        {
            out.push_str(l.metric_name().unwrap_or(""));
            let rest: Vec<String> = l
                .iter()
                .filter(|x| x.name != model::METRIC_NAME)
                .map(|x| format!("{}=\"{}\"", x.name, escape_value(&x.value)))
                .collect();
            if !rest.is_empty() {
                let _ = write!(out, "{{{}}}", rest.join(","));
            }
            let _ = writeln!(out, " {}", format_value(*v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::MetricType;

    #[test]
    fn renders_families_with_help_type_and_escapes() {
        let mut c = Collected::default();
        c.gauge("up", "Is it \\ up?\nyes", &[("job", "a\"b")], 1.0);
        c.add("lat", MetricType::Histogram, "Latency.", &[], 0.0);
        c.series.pop(); // keep only the metadata of `lat`
        c.series.push((
            model::Labels::from_pairs([("__name__", "lat_bucket"), ("le", "+Inf")]),
            3.0,
        ));
        c.series.push((
            model::Labels::from_pairs([("__name__", "lat_sum")]),
            f64::NAN,
        ));
        c.series
            .push((model::Labels::from_pairs([("__name__", "lat_count")]), 3.0));
        assert_eq!(
            render(&c),
            "# HELP up Is it \\\\ up?\\nyes\n# TYPE up gauge\nup{job=\"a\\\"b\"} 1\n\
             # HELP lat Latency.\n# TYPE lat histogram\nlat_bucket{le=\"+Inf\"} 3\nlat_sum NaN\nlat_count 3\n"
        );
    }
}
