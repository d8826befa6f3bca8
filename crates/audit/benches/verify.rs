//! Verifier benchmark: `audit::verify::verify` over a log of N realistic
//! events (default 1,000,000, about 550 bytes each) written as tlog-tiles
//! files in a temporary directory and read back through `dir_fetcher`,
//! exactly as `flightdeck audit verify --data-dir` does (page cache warm:
//! the files were just written). Target: 1M entries in ≤ 10 s. Then
//! `audit::monitor::monitor` on the same log: a first run (everything) and
//! a run after 1,000 more entries (what a cron job pays each time).
//!
//! Run: `cargo bench -p audit --bench verify [-- --events N]`.
//! Writes `bench/results/verify-<date>.md` at the workspace root.

use std::time::Instant;

use audit::verify::{Expect, dir_fetcher, verify};
use audit::*;
use merkle::tiles::{BundleId, build_tiles, encode_entry_bundle};
use merkle::{Checkpoint, Hash, SignerKey, leaf_hash, root_from_leaf_hashes};

const T0: i64 = 1_767_225_600_000_000_000;

fn event(i: u64) -> Vec<u8> {
    let user = i % 200;
    let draft = EventDraft {
        organization: "acme".into(),
        project: Some("bench".into()),
        principal: Principal {
            kind: PrincipalKind::User,
            id: format!("usr_{user:06}"),
            name: format!("user{user}@example.com"),
            token_id: None,
            auth_method: Some(AuthMethod::Bearer),
        },
        source_ip: Some(format!("10.{}.{}.{}", user % 7, user % 13, user % 251)),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) flightdeck-cli/0.1".into()),
        action: "iam.token.create".into(),
        resource: Some(Resource {
            kind: "token".into(),
            id: Some(format!("res_{i:08x}")),
            name: Some(format!("resource {}", i % 1000)),
        }),
        request_id: Some(format!(
            "req_{:016x}",
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        )),
        result: Outcome {
            status: Status::Success,
            http_status: Some(200),
            error_code: None,
            error_message: None,
        },
        request_parameters: Some(
            serde_json::json!({ "comment": "x".repeat((i % 220) as usize), "dry_run": false }),
        ),
        response_elements: None,
        changes: vec![],
        event_source: "flightdeck".into(),
        event_time: None,
        external_id: None,
    };
    let time = format_time_ns(T0 + i as i64 * 1000);
    Event::from_draft(draft, format!("id-{i}"), 2 * i + 1, i, time).canonical_bytes()
}

fn main() {
    let mut n: u64 = 1_000_000;
    let args: Vec<String> = std::env::args().collect();
    if let Some(p) = args.iter().position(|a| a == "--events") {
        n = args[p + 1].parse().expect("--events N");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("p/bench");
    let write = |rel: &str, bytes: &[u8]| {
        let p = log.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    };
    let t = Instant::now();
    let mut leaves: Vec<Hash> = Vec::with_capacity(n as usize);
    let mut bytes_total = 0u64;
    let mut chunk = Vec::with_capacity(256);
    for i in 0..n {
        let e = event(i);
        bytes_total += e.len() as u64;
        leaves.push(leaf_hash(&e));
        chunk.push(e);
        if chunk.len() == 256 || i + 1 == n {
            let b = BundleId::new(i / 256, chunk.len() as u64).unwrap();
            write(&b.path(), &encode_entry_bundle(&chunk).unwrap());
            chunk.clear();
        }
    }
    for (tile, bytes) in build_tiles(&leaves) {
        write(&tile.path(), &bytes);
    }
    let signer = SignerKey::from_seed("flightdeck", &[5; 32]).unwrap();
    let cp = Checkpoint::new("flightdeck/p/bench", n, root_from_leaf_hashes(&leaves))
        .unwrap()
        .sign(&[&signer])
        .unwrap();
    write("checkpoint", &cp);
    eprintln!("wrote {n} entries in {:.1} s", t.elapsed().as_secs_f64());

    let expect = Expect::new(
        vec![signer.verifier()],
        "flightdeck/p/bench",
        Some(LogKey::of(Some("bench"))),
    );
    let t = Instant::now();
    let report = verify(dir_fetcher(log.clone()), &expect).expect("the log verifies");
    let secs = t.elapsed().as_secs_f64();
    println!("{report}");

    // The monitor: a first run, then 1,000 more entries and a second run.
    let t = Instant::now();
    let (first, state) =
        audit::monitor::monitor(dir_fetcher(log.clone()), &expect, None).expect("first run");
    let first_secs = t.elapsed().as_secs_f64();
    println!("{first}");
    let more = 1000;
    let start = n / 256 * 256;
    let mut chunk: Vec<Vec<u8>> = (start..n).map(event).collect();
    for i in n..n + more {
        let e = event(i);
        leaves.push(leaf_hash(&e));
        chunk.push(e);
        if chunk.len() == 256 || i + 1 == n + more {
            let b = BundleId::new(i / 256, chunk.len() as u64).unwrap();
            write(&b.path(), &encode_entry_bundle(&chunk).unwrap());
            chunk.clear();
        }
    }
    for (tile, bytes) in build_tiles(&leaves) {
        if !tile.is_full() || tile.index() >= (start / 256) >> (8 * tile.level()) {
            write(&tile.path(), &bytes);
        }
    }
    let cp = Checkpoint::new(
        "flightdeck/p/bench",
        n + more,
        root_from_leaf_hashes(&leaves),
    )
    .unwrap()
    .sign(&[&signer])
    .unwrap();
    write("checkpoint", &cp);
    drop(leaves);
    let t = Instant::now();
    let (second, _) = audit::monitor::monitor(dir_fetcher(log.clone()), &expect, Some(&state))
        .expect("second run");
    let second_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!("{second}");

    let date = format_time_ns(
        i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(0),
    )[..10]
        .to_string();
    let md = format!(
        "# Verifier benchmark ({date})\n\n`cargo bench -p audit --bench verify -- --events {n}`: \
         `audit::verify::verify` through `dir_fetcher` (page cache warm), one thread.\n\n\
         | entries | entry bytes | tiles + bundles | time | entries/s |\n| --- | --- | --- | --- | --- |\n\
         | {n} | {:.0} MB | {} | {secs:.2} s | {:.0} |\n\nTarget: 1M entries ≤ 10 s ({}).\n\n\
         `audit::monitor::monitor` on the same log:\n\n\
         | run | new entries | tiles + bundles read | time |\n| --- | --- | --- | --- |\n\
         | first (no state) | {n} | {} | {first_secs:.2} s |\n\
         | next (+{more} entries) | {more} | {} | {second_ms:.1} ms |\n",
        bytes_total as f64 / 1e6,
        report.tiles,
        n as f64 / secs,
        if n >= 1_000_000 && secs <= 10.0 {
            "met"
        } else if n >= 1_000_000 {
            "missed"
        } else {
            "run with 1M to judge"
        },
        first.tiles,
        second.tiles,
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = root.join("bench/results");
    let path = out.join(format!("verify-{date}.md"));
    match std::fs::create_dir_all(&out).and_then(|()| std::fs::write(&path, &md)) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
    print!("{md}");
}
