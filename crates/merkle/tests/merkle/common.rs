//! Shared test helpers: locating the conformance suite, reading its JSON,
//! decoding base64, a deterministic PRNG, and the "leaf-<i>" test tree.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use merkle::{Hash, leaf_hash};
use serde_json::Value;

/// The conformance folder: `$FLIGHTDECK_CONFORMANCE`, else
/// `<workspace>/../shared/conformance`. Panics (fails the test) when it is
/// missing: a missing suite must never look like a pass.
pub fn conformance_dir(sub: &str) -> PathBuf {
    let base = match std::env::var_os("FLIGHTDECK_CONFORMANCE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"),
    };
    let dir = base.join(sub);
    if !dir.is_dir() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        panic!(
            "CONFORMANCE SUITE MISSING: {} does not exist{}. Put the shared conformance data at \
             ../shared/conformance relative to the workspace root, or set FLIGHTDECK_CONFORMANCE \
             to its path. This test fails rather than skip, so that a missing suite never looks \
             like a pass.",
            dir.display(),
            if ci { " (CI=true)" } else { "" }
        );
    }
    dir
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Every `*.json` file under `dir`, recursively, sorted.
pub fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Decodes standard base64 (the vectors' encoding); panics on bad test data.
pub fn b64(s: &str) -> Vec<u8> {
    BASE64
        .decode(s)
        .unwrap_or_else(|e| panic!("bad base64 in vector {s:?}: {e}"))
}

/// A string field.
pub fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("field {k} missing in {v}"))
}

/// A u64 field.
pub fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("field {k} missing in {v}"))
}

/// A base64 list field where `null` means empty.
pub fn b64_list(v: &Value, k: &str) -> Vec<Vec<u8>> {
    match &v[k] {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().map(|x| b64(x.as_str().expect("string"))).collect(),
        other => panic!("field {k} is {other}"),
    }
}

/// Leaf hashes of `leaf-0 .. leaf-(n-1)`, the tlog-tiles vectors' tree.
pub fn leaf_n_hashes(n: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(format!("leaf-{i}").as_bytes()))
        .collect()
}

/// Deterministic xorshift64* PRNG for randomised comparisons.
pub struct Rng(pub u64);

impl Rng {
    /// Next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish value in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Pass/fail bookkeeping for a vector file: collects mismatches and prints
/// the count, then fails with every mismatch listed.
pub struct Tally {
    pub name: String,
    /// What one check is: "vectors" (one per vector) or "checks" (several per vector).
    pub unit: &'static str,
    pub passed: usize,
    pub failures: Vec<String>,
}

impl Tally {
    pub fn new(name: &str) -> Self {
        Tally {
            name: name.to_owned(),
            unit: "vectors",
            passed: 0,
            failures: Vec::new(),
        }
    }

    /// A tally whose checks are finer than vectors (several per vector).
    pub fn checks(name: &str) -> Self {
        Tally {
            unit: "checks",
            ..Self::new(name)
        }
    }

    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
        } else {
            self.failures.push(what());
        }
    }

    /// Prints the summary and fails if anything failed or nothing ran.
    pub fn finish(self) {
        println!(
            "conformance {}: {} {} passed, {} failed",
            self.name,
            self.passed,
            self.unit,
            self.failures.len()
        );
        assert!(self.passed > 0, "{}: no vectors ran", self.name);
        assert!(
            self.failures.is_empty(),
            "{} mismatches:\n{}",
            self.name,
            self.failures.join("\n")
        );
    }
}
