//! Runs every promqltest script of the conformance suite (`../shared/conformance/promql/`
//! next to the workspace, or `$PROMQL_CONFORMANCE_DIR`) and compares the failing evals with
//! `tests/expected-failures.txt` (one `file:line reason` per line). The test fails when an
//! unlisted eval fails **or** a listed one passes, so the list only shrinks. Run with
//! `PROMQL_BLESS=1` to rewrite the list from the current failures, with
//! `PROMQL_SHOW_STABLE_FAILURES=1` to print the failing evals that count as stable PromQL.

use promql::promqltest::{Status, run_script, summarize};
use promql::{Engine, EngineOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn suite_dir() -> PathBuf {
    match std::env::var_os("PROMQL_CONFORMANCE_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/promql")
        }
    }
}

#[test]
fn conformance_suite() {
    let dir = suite_dir();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        println!(
            "CONFORMANCE SUITE MISSING: {} (set PROMQL_CONFORMANCE_DIR)",
            dir.display()
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CONFORMANCE SUITE MISSING in CI"
        );
        return;
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let engine = Engine::new(EngineOptions::default());
    let mut outcomes = Vec::new();
    for f in &files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 file name")
            .to_string();
        let text = std::fs::read_to_string(f).expect("readable script");
        outcomes.extend(run_script(&name, &text, &engine).unwrap_or_else(|e| panic!("{e}")));
    }
    let failures: BTreeMap<String, String> = outcomes
        .iter()
        .filter_map(|o| match &o.status {
            Status::Failed(r) => Some((format!("{}:{}", o.file, o.line), r.replace('\n', " "))),
            _ => None,
        })
        .collect();
    let list_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/expected-failures.txt");
    if std::env::var("PROMQL_BLESS").is_ok() {
        let mut text = String::from(
            "# Evals of ../shared/conformance/promql that fail today: file:line reason.\n# Regenerate with PROMQL_BLESS=1 cargo test -p promql --test conformance; the list may only shrink.\n",
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
    let s = summarize(&outcomes);
    if std::env::var_os("PROMQL_SHOW_STABLE_FAILURES").is_some() {
        for o in outcomes.iter().filter(|o| o.stable) {
            if let Status::Failed(r) = &o.status {
                let r: String = r.chars().take(200).collect();
                println!("STABLE-FAIL {}:{} {}", o.file, o.line, r.replace('\n', " "));
            }
        }
    }
    let unchecked = outcomes.iter().filter(|o| o.annotations_unchecked).count();
    println!(
        "promqltest: {} passed, {} failed, {} skipped; listed {}; stable {}/{} = {:.1}%; annotations unchecked in {} evals",
        s.passed,
        s.failed,
        s.skipped,
        listed.len(),
        s.stable_passed,
        s.stable_total,
        100.0 * s.stable_passed as f64 / s.stable_total.max(1) as f64,
        unchecked
    );
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
