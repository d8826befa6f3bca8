//! Unit tests of the public surface: parse errors and canonical printing, one
//! `check(query, expected)` per case, and the engine's limits (max series, max entries,
//! cancel flag, deadline).

use crate::{Direction, Engine, EngineOptions, Error, MemStorage, QueryParams, QueryResult};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// The query parses and prints as `printed`.
fn check_print(query: &str, printed: &str) {
    let e = crate::parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    assert_eq!(e.to_string(), printed, "{query}");
}

/// The query is rejected with a message containing `msg`.
fn check_err(query: &str, msg: &str) {
    match crate::parse(query) {
        Ok(e) => panic!("{query} parsed as {e}"),
        Err(e) => assert!(e.to_string().contains(msg), "{query}: {e}"),
    }
}

#[test]
fn canonical_printing() {
    check_print(r#"{app="a"}"#, r#"{app="a"}"#);
    check_print(
        r#"{app="a"} |= "x" or "y" | logfmt --strict host, ip="src" | d > 1s and (n >= 2 or s = ip("1.2.3.0/24"))"#,
        r#"{app="a"} |= "x" or "y" | logfmt --strict host="host",ip="src" | d>1s and (n>=2 or s=ip("1.2.3.0/24"))"#,
    );
    check_print(
        r#"sum by (a) (rate({app="a"} | json [5m] offset 1m)) / on (a) group_left (b) count_over_time({app="b"}[1h])"#,
        r#"(sum by (a) (rate({app="a"} | json [5m] offset 1m)) / on (a) group_left (b) count_over_time({app="b"} [1h]))"#,
    );
    check_print(
        r#"quantile_over_time(0.9, {app="a"} | logfmt | unwrap duration_seconds(d) | __error__="" [1m]) by (x)"#,
        r#"quantile_over_time(0.9, {app="a"} | logfmt | unwrap duration_seconds(d) | __error__="" [1m]) by (x)"#,
    );
    check_print("1 + 2 * 3", "7");
    check_print("2 ^ 3 ^ 2", "512");
    check_print(r#"{app="a"} # a comment"#, r#"{app="a"}"#);
}

#[test]
fn parse_errors_name_position_and_cause() {
    check_err(r#"{app="a""#, "syntax error: unexpected $end");
    check_err(r#"{app="a"} |~"#, "unexpected $end, expecting STRING or ip");
    check_err(
        r#"rate({app="a"}[5minutes])"#,
        r#"unknown unit "minutes" in duration"#,
    );
    check_err(r#"min({app="a"}[5m])"#, "syntax error: unexpected RANGE");
    check_err(
        r#"sum(3, count_over_time({app="a"}[1m]))"#,
        "unsupported parameter for operation sum(3,",
    );
    check_err(
        r#"{app="a"} | regexp "(?P<x>.)(?P<x>.)""#,
        "duplicate extracted label name",
    );
    check_err(
        r#"{app="a"} | pattern "no captures""#,
        "at least one capture is required",
    );
    check_err(r##"{app="a"} | line_format "{{ .x ""##, "unclosed action");
    check_err(r##"{app="a"} | json x="a[""##, "cannot parse expression");
    check_err(r##"{app="a"} |~ "(""##, "error parsing regexp");
    let e = crate::parse("sum(\n  rate({app=\"a\"}[1m]) ) )").unwrap_err();
    assert!(matches!(e, Error::Parse { line: 2, .. }), "{e:?}");
}

fn store() -> MemStorage {
    let mut s = MemStorage::new();
    for i in 0..10 {
        let labels = model::Labels::from_pairs([("app", "a"), ("pod", &*i.to_string())]);
        for k in 0..100 {
            s.push(&labels, k * 1_000_000_000, &format!("line {k}"), vec![]);
        }
    }
    s.seal();
    s
}

#[test]
fn max_series_limit() {
    let eng = Engine::new(EngineOptions {
        max_series: 5,
        max_entries: 100,
    });
    let p = QueryParams::instant(50_000_000_000);
    let e = eng
        .query(&store(), r#"count_over_time({app="a"}[1m])"#, &p)
        .unwrap_err();
    assert!(matches!(e, Error::Limit(_)), "{e}");
    let r = eng.query(&store(), r#"max(count_over_time({app="a"}[1m]))"#, &p);
    assert!(
        r.is_err(),
        "the inner range aggregation still has 10 series"
    );
    // `sum` merges the inner series while reading, so the limit holds for the merged ones
    let r = eng
        .query(&store(), r#"sum(count_over_time({app="a"}[1m]))"#, &p)
        .unwrap();
    assert_eq!(
        r,
        QueryResult::Vector(vec![crate::Sample {
            labels: vec![],
            value: 510.0
        }])
    );
    let r = eng
        .query(
            &store(),
            r#"sum(count_over_time({app="a", pod=~"[0-4]"}[1m]))"#,
            &p,
        )
        .unwrap();
    assert_eq!(
        r,
        QueryResult::Vector(vec![crate::Sample {
            labels: vec![],
            value: 255.0
        }])
    );
}

#[test]
fn log_limit_and_max_entries() {
    let eng = Engine::new(EngineOptions {
        max_series: 5,
        max_entries: 100,
    });
    let mut p = QueryParams::range(0, 100_000_000_000, 0);
    p.limit = 1000;
    let e = eng.query(&store(), r#"{app="a"}"#, &p).unwrap_err();
    assert!(e.to_string().contains("max entries limit"), "{e}");
    p.limit = 15;
    p.direction = Direction::Forward;
    let QueryResult::Streams(s) = eng.query(&store(), r#"{app="a"}"#, &p).unwrap() else {
        panic!()
    };
    let n: usize = s.iter().map(|s| s.entries.len()).sum();
    assert_eq!(n, 15);
    // the 15 oldest overall: ts 0 for all ten pods, then ts 1 for five of them
    assert!(
        s.iter()
            .all(|s| s.entries.iter().all(|e| e.ts_ns <= 1_000_000_000))
    );
}

#[test]
fn cancel_and_deadline() {
    let eng = Engine::default();
    let mut p = QueryParams::instant(50_000_000_000);
    p.cancel = Some(Arc::new(AtomicBool::new(true)));
    let e = eng
        .query(&store(), r#"count_over_time({app="a"}[1m])"#, &p)
        .unwrap_err();
    assert_eq!(e, Error::Canceled);
    let mut p = QueryParams::instant(50_000_000_000);
    p.deadline = Some(std::time::Instant::now());
    let e = eng.query(&store(), r#"{app="a"}"#, &p).unwrap_err();
    assert_eq!(e, Error::Timeout);
}

#[test]
fn step_alignment_and_metadata_in_entries() {
    assert_eq!(crate::align_to_step(61, 179, 60), (60, 120));
    assert_eq!(crate::align_to_step(5, 7, 0), (5, 7));
    let mut s = MemStorage::new();
    let l = model::Labels::from_pairs([("app", "m")]);
    s.push(&l, 5, "x", vec![("trace".into(), "t1".into())]);
    s.seal();
    let r = Engine::default()
        .query(&s, r#"{app="m"}"#, &QueryParams::range(0, 10, 0))
        .unwrap();
    let QueryResult::Streams(st) = r else {
        panic!()
    };
    assert_eq!(
        st[0].labels,
        vec![("app".into(), "m".into()), ("trace".into(), "t1".into())]
    );
    assert_eq!(
        st[0].entries[0].metadata,
        vec![("trace".to_string(), "t1".to_string())]
    );
}

#[test]
fn too_many_steps_is_an_error() {
    let p = QueryParams::range(0, 20_000 * 1_000_000_000, 1_000_000_000);
    let e = Engine::default()
        .query(&store(), r#"count_over_time({app="a"}[1m])"#, &p)
        .unwrap_err();
    assert!(e.to_string().contains("maximum resolution"), "{e}");
}

/// Random token soup must be rejected or accepted, never panic (the server feeds user
/// input straight to the parser and templates).
#[test]
fn parser_and_templates_never_panic() {
    let atoms = [
        "{",
        "}",
        "(",
        ")",
        "[5m]",
        "[",
        "]",
        ",",
        "=",
        "!=",
        "=~",
        "!~",
        "|=",
        "|~",
        "|>",
        "!>",
        "|",
        "app",
        "\"a\"",
        "`b`",
        "\"",
        "`",
        "1",
        "-",
        "+",
        "*",
        "/",
        "%",
        "^",
        "==",
        ">",
        ">=",
        "<",
        "<=",
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "bool",
        "offset",
        "5m",
        "1.5",
        "0x1p3",
        "20MB",
        "json",
        "logfmt",
        "--strict",
        "regexp",
        "pattern",
        "unpack",
        "line_format",
        "label_format",
        "keep",
        "drop",
        "unwrap",
        "bytes",
        "duration",
        "ip",
        "sum",
        "topk",
        "rate",
        "count_over_time",
        "quantile_over_time",
        "vector",
        "label_replace",
        "#",
        "\n",
        "é",
        "\"{{\"",
        "\"{{ .a | x }}\"",
        "__error__",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rng = model::XorShift64::new(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let mut q = String::new();
        for _ in 0..(x % 24) {
            x = rng.next_u64();
            q.push_str(atoms[(x % atoms.len() as u64) as usize]);
            if x & 4 == 0 {
                q.push(' ');
            }
        }
        x = x.wrapping_add(1);
        let _ = crate::parse(&q);
        if let Ok(t) = crate::template::Template::parse(&q) {
            let get = |n: &str| (n != "missing").then(|| format!("{n}-é-{}", n.len()));
            let mut out = String::new();
            let _ = t.render(
                &crate::template::Data {
                    labels: &get,
                    each_label: &|f: &mut dyn FnMut(&str, &str)| f("k", "v"),
                    line: "a line é",
                    ts_ns: -5,
                    now_ns: 7,
                },
                &mut out,
            );
        }
        let _ = crate::template::parse_time(
            "2006-01-02T15:04:05Z07:00",
            &q,
            &crate::template::Zone::Utc,
        );
    }
    let fns = [
        "{{",
        "}}",
        "trunc",
        "substr",
        "-3",
        "100",
        "\"x\"",
        ".a",
        "|",
        "(",
        ")",
        "printf",
        "\"%-5.2f|%d|%q|%x|%\"",
        "alignLeft",
        "alignRight",
        "indent",
        "repeat",
        "div",
        "mod",
        "0",
        "b64dec",
        "urldecode",
        "\"%zz\"",
        "date",
        "toDate",
        "\"2006\"",
        "__timestamp__",
        "regexReplaceAll",
        "\"(\"",
        "count",
        "if",
        "else",
        "end",
        "default",
        "unixToTime",
        "\"99999999999999999999\"",
        "title",
        "-",
        "range",
        "with",
        "break",
        "continue",
        "$",
        "$x",
        "$x :=",
        "$i, $v :=",
        "$x =",
        ".",
        "fromJson",
        "\"[1,{\\\"a\\\":[2]}]\"",
        ".a.b",
        "index",
        "slice",
        "len",
        "eq",
        "lt",
        "and",
        "or",
        "toDateInZone",
        "\"America/New_York\"",
        "\"Jan _2 MST -07:00 .999 PM\"",
        "round",
        "addf",
        "divf",
        "1e300",
        "-9223372036854775808",
    ];
    for _ in 0..20_000 {
        let mut t = String::from("{{ ");
        for _ in 0..(x % 8) {
            x = rng.next_u64();
            t.push_str(fns[(x % fns.len() as u64) as usize]);
            t.push(' ');
        }
        t.push_str("}}");
        // close what the atoms may have opened (`range`, `with`, `if`) so bodies run too
        if x & 8 == 0 {
            t.push_str("{{ . }}{{ break }}{{ end }}{{ end }}");
        }
        x = x.wrapping_add(1);
        if let Ok(tpl) = crate::template::Template::parse(&t) {
            let get = |n: &str| Some(format!("{n}é"));
            let mut out = String::new();
            let _ = tpl.render(
                &crate::template::Data {
                    labels: &get,
                    each_label: &|f: &mut dyn FnMut(&str, &str)| f("k", "v"),
                    line: "é",
                    ts_ns: 0,
                    now_ns: 0,
                },
                &mut out,
            );
        }
    }
    // and a few well-formed seeds with random tails
    for seed in [
        r#"{app="a"} | logfmt | x > 1"#,
        r#"sum by (a) (rate({a="b"}[1m]))"#,
    ] {
        for cut in 0..seed.len() {
            let _ = crate::parse(&seed[..cut]);
        }
    }
}

#[test]
fn huge_ranges_and_offsets_do_not_overflow() {
    for q in [
        r#"count_over_time({app="a"}[100000y])"#,
        r#"count_over_time({app="a"}[1m] offset 100000y)"#,
        r#"rate({app="a"}[100000y] offset 100000y)"#,
    ] {
        let _ = Engine::default().query(&store(), q, &QueryParams::instant(i64::MAX - 1));
        let _ = Engine::default().query(&store(), q, &QueryParams::instant(i64::MIN + 1));
    }
}

/// A range query's value at each step equals the instant query at that time (exercises the
/// window segments with overlapping and gapped windows, offsets and pushdown).
#[test]
fn range_steps_equal_instant_queries() {
    let mut s = MemStorage::new();
    let mut rng = model::XorShift64::new(0xdead_beef_1234_5678);
    for i in 0..400i64 {
        let x = rng.next_u64();
        let pod = (x % 3).to_string();
        let labels = model::Labels::from_pairs([("app", "r"), ("pod", pod.as_str())]);
        let ts = i * 1_500_000_000 + (x % 1000) as i64 * 1_000_000;
        let line = format!(
            "v={} level={}",
            x % 97,
            ["info", "warn", "error"][(x % 7 % 3) as usize]
        );
        s.push(&labels, ts, &line, vec![]);
    }
    s.seal();
    let eng = Engine::default();
    let queries = [
        r#"count_over_time({app="r"}[45s])"#,
        r#"sum by (level) (rate({app="r"} | logfmt [1m]))"#,
        r#"sum(bytes_over_time({app="r"} |= "warn" [30s] offset 20s))"#,
        r#"avg_over_time({app="r"} | logfmt | unwrap v [1m]) by (pod)"#,
        r#"max_over_time({app="r"} | logfmt | unwrap v [2m]) by (level)"#,
        r#"stddev_over_time({app="r"} | logfmt | unwrap v [50s]) by (pod)"#,
        r#"last_over_time({app="r"} | logfmt | unwrap v [20s]) by (pod)"#,
        r#"quantile_over_time(0.9, {app="r"} | logfmt | unwrap v [1m]) by (pod)"#,
        r#"sum by (pod) (rate_counter({app="r"} | logfmt | keep pod, v | unwrap v [1m]))"#,
        r#"topk(2, sum by (pod) (count_over_time({app="r"}[1m])))"#,
    ];
    let (start, end, step) = (30_000_000_000i64, 600_000_000_000i64, 17_000_000_000i64);
    for q in queries {
        let QueryResult::Matrix(m) = eng
            .query(&s, q, &QueryParams::range(start, end, step))
            .unwrap()
        else {
            panic!("{q}: not a matrix")
        };
        let mut t = start;
        while t <= end {
            let QueryResult::Vector(v) = eng.query(&s, q, &QueryParams::instant(t)).unwrap() else {
                panic!("{q}: not a vector")
            };
            let from_range: Vec<(&crate::LabelPairs, f64)> = m
                .iter()
                .filter_map(|s| {
                    s.points
                        .iter()
                        .find(|(pt, _)| *pt == t)
                        .map(|(_, v)| (&s.labels, *v))
                })
                .collect();
            assert_eq!(from_range.len(), v.len(), "{q} at {t}");
            for smp in &v {
                let (_, rv) = from_range
                    .iter()
                    .find(|(l, _)| **l == smp.labels)
                    .unwrap_or_else(|| {
                        panic!("{q} at {t}: {:?} missing in range result", smp.labels)
                    });
                let same = (rv.is_nan() && smp.value.is_nan())
                    || (rv - smp.value).abs() <= 1e-9 * rv.abs().max(1.0);
                assert!(same, "{q} at {t}: range {rv}, instant {}", smp.value);
            }
            t += step;
        }
    }
}
