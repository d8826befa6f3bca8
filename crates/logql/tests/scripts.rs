//! Runs Flightdeck's own LogQL scripts (`tests/testdata/*.logqltest`: log queries with our
//! `eval logs` extension, and metric queries); every eval must pass, in its written and in
//! its printed (canonical) form.

use logql::Engine;
use logql::logqltest::{Status, run_script_opts};
use std::path::PathBuf;

#[test]
fn own_scripts_pass() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/testdata");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/testdata")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "logqltest"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "scripts missing in {}", dir.display());
    let engine = Engine::default();
    let mut failures = Vec::new();
    let mut n = 0;
    for f in &files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_string();
        let text = std::fs::read_to_string(f).expect("readable script");
        for o in run_script_opts(&name, &text, &engine, true).unwrap_or_else(|e| panic!("{e}")) {
            n += 1;
            if let Status::Failed(r) = o.status {
                failures.push(format!("{}:{} {} — {r}", o.file, o.line, o.query));
            }
        }
    }
    println!("own scripts: {} of {n} evals pass", n - failures.len());
    assert!(n > 80, "only {n} evals found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
