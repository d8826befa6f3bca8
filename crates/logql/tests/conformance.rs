//! Runs the LogQL conformance data in place (`../shared/conformance/logql/` next to the
//! workspace, or `$LOGQL_CONFORMANCE_DIR`, or `$FLIGHTDECK_CONFORMANCE_DIR/logql`): every `valid` line of `queries.txt`
//! must parse and every `invalid` one must be rejected (with Loki's quoted message where
//! given); every eval of `logqltest/*.logqltest` is compared with
//! `tests/expected-failures.txt` (`file:line reason`). The test fails when an unlisted eval
//! fails **or** a listed one passes, so the list only shrinks. `LOGQL_BLESS=1` rewrites it.
//! Every query is also evaluated in its printed (canonical) form, which must fare the same.

use logql::Engine;
use logql::logqltest::{Status, run_script_opts, summarize};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn suite_dir() -> Option<PathBuf> {
    let dir = if let Some(d) = std::env::var_os("LOGQL_CONFORMANCE_DIR") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("FLIGHTDECK_CONFORMANCE_DIR") {
        PathBuf::from(d).join("logql")
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/logql")
    };
    if dir.is_dir() {
        return Some(dir);
    }
    println!(
        "CONFORMANCE SUITE MISSING: {} (set LOGQL_CONFORMANCE_DIR)",
        dir.display()
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CONFORMANCE SUITE MISSING in CI"
    );
    None
}

/// The message in `("…")` of an invalid line's reason, if any.
fn quoted_message(reason: &str) -> Option<String> {
    let start = reason.find("(\"")? + 2;
    let end = reason[start..].find("\")")? + start;
    let m = &reason[start..end];
    // Loki's messages quote with \"; the file keeps them as \"
    Some(m.replace("\\\"", "\""))
}

#[test]
fn queries_txt() {
    let Some(dir) = suite_dir() else { return };
    let text = std::fs::read_to_string(dir.join("queries.txt")).expect("queries.txt");
    let mut ok = 0;
    let mut problems = Vec::new();
    let total = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        let mut f = line.split('\t');
        let q = f.next().unwrap_or("");
        let kind = f.next().unwrap_or("");
        let reason = f.next().unwrap_or("");
        let got = logql::parse(q);
        match (kind, got) {
            ("valid", Ok(e)) => {
                // the canonical form must parse again
                let printed = e.to_string();
                match logql::parse(&printed) {
                    Ok(_) => ok += 1,
                    Err(err) => problems.push(format!(
                        "line {}: printed form {printed:?} does not parse: {err}",
                        i + 1
                    )),
                }
            }
            ("valid", Err(e)) => problems.push(format!("line {}: {q:?} rejected: {e}", i + 1)),
            ("invalid", Ok(_)) => problems.push(format!("line {}: {q:?} accepted", i + 1)),
            ("invalid", Err(e)) => {
                let msg = e.to_string();
                match quoted_message(reason) {
                    Some(m) if !msg.contains(&m) => problems.push(format!(
                        "line {}: {q:?} rejected with {msg:?}, want {m:?}",
                        i + 1
                    )),
                    _ => ok += 1,
                }
            }
            _ => problems.push(format!("line {}: unknown kind {kind:?}", i + 1)),
        }
    }
    println!("queries.txt: {ok}/{total} classified correctly");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn logqltest_scripts() {
    let Some(dir) = suite_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("logqltest"))
        .expect("logqltest dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "logqltest"))
        .collect();
    files.sort();
    let engine = Engine::default();
    let mut outcomes = Vec::new();
    for f in &files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name")
            .to_string();
        let text = std::fs::read_to_string(f).expect("readable script");
        outcomes
            .extend(run_script_opts(&name, &text, &engine, true).unwrap_or_else(|e| panic!("{e}")));
    }
    let failures: BTreeMap<String, String> = outcomes
        .iter()
        .filter_map(|o| match &o.status {
            Status::Failed(r) => Some((format!("{}:{}", o.file, o.line), r.replace('\n', " "))),
            Status::Passed => None,
        })
        .collect();
    let list_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/expected-failures.txt");
    if std::env::var_os("LOGQL_BLESS").is_some() {
        let mut text = String::from(
            "# Evals of ../shared/conformance/logql/logqltest that fail today: file:line reason.\n# Regenerate with LOGQL_BLESS=1 cargo test -p logql --test conformance; the list may only shrink.\n",
        );
        for (k, r) in &failures {
            let r: String = r.chars().take(160).collect();
            text.push_str(&format!("{k} {r}\n"));
        }
        std::fs::write(&list_path, text).expect("write expected failures");
    }
    let listed: BTreeMap<String, String> = std::fs::read_to_string(&list_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, r) = l.split_once(' ').unwrap_or((l, ""));
            (k.to_string(), r.to_string())
        })
        .collect();
    // The canonical form of every query that parses parses again, to itself.
    for o in &outcomes {
        if let Ok(e) = logql::parse(&o.query) {
            let printed = e.to_string();
            let again = logql::parse(&printed).unwrap_or_else(|err| {
                panic!("{}:{}: {printed:?} does not parse: {err}", o.file, o.line)
            });
            assert_eq!(again.to_string(), printed, "{}:{}", o.file, o.line);
        }
    }
    let s = summarize(&outcomes);
    println!(
        "logqltest: {} passed, {} failed, {} total; listed {}",
        s.passed,
        s.failed,
        outcomes.len(),
        listed.len()
    );
    if std::env::var_os("LOGQL_SHOW_FAILURES").is_some() {
        for (k, r) in &failures {
            println!("FAIL {k} {r}");
        }
    }
    let unexpected: Vec<String> = failures
        .iter()
        .filter(|(k, _)| !listed.contains_key(*k))
        .map(|(k, r)| format!("{k} {r}"))
        .collect();
    let now_passing: Vec<&String> = listed
        .keys()
        .filter(|k| !failures.contains_key(*k))
        .collect();
    assert!(
        unexpected.is_empty() && now_passing.is_empty(),
        "unlisted failures:\n{}\nlisted but now passing (remove them from expected-failures.txt):\n{:?}",
        unexpected.join("\n"),
        now_passing
    );
}
