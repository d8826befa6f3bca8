//! `flightdeck promqltest FILE...`: runs promqltest scripts with the built-in PromQL engine
//! and an in-memory store, prints every failure and skip as `file:line: reason`, and ends
//! with `promqltest: N passed, M failed, K skipped` (exit status 1 when anything failed).

use std::path::PathBuf;
use std::process::ExitCode;

use promql::promqltest::{Status, run_script, summarize};

#[derive(clap::Args)]
pub struct PromqltestArgs {
    /// Script files (`.test`).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Lookback delta in seconds for instant selectors.
    #[arg(long, default_value_t = 300)]
    lookback_delta_secs: u64,
}

pub fn run(a: PromqltestArgs) -> ExitCode {
    let engine = promql::Engine::new(promql::EngineOptions {
        lookback_delta_ms: i64::try_from(a.lookback_delta_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        ..promql::EngineOptions::default()
    });
    let mut all = Vec::new();
    let mut broken = false;
    for f in &a.files {
        let name = f.display().to_string();
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{name}: cannot read: {e}");
                broken = true;
                continue;
            }
        };
        match run_script(&name, &text, &engine) {
            Ok(o) => all.extend(o),
            Err(e) => {
                eprintln!("{e}");
                broken = true;
            }
        }
    }
    for o in &all {
        match &o.status {
            Status::Failed(r) => println!("{}:{}: FAIL: {r}", o.file, o.line),
            Status::Skipped(r) => println!("{}:{}: SKIP: {r}", o.file, o.line),
            Status::Passed => {}
        }
    }
    let s = summarize(&all);
    println!(
        "promqltest: {} passed, {} failed, {} skipped",
        s.passed, s.failed, s.skipped
    );
    if s.failed > 0 || broken {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
