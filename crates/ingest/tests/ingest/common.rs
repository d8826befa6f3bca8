//! Shared test helpers: locating the conformance suite, rendering a
//! batch as text lines that a test can spell out, and a deterministic PRNG.

use model::{HistogramValue, WriteBatch};
use std::path::{Path, PathBuf};

/// The conformance folder: `$FLIGHTDECK_CONFORMANCE`, else
/// `<workspace>/../shared/conformance`. Fails the test when it is missing:
/// a missing suite must never look like a pass.
pub fn conformance_file(rel: &str) -> Vec<u8> {
    let base = match std::env::var_os("FLIGHTDECK_CONFORMANCE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance"),
    };
    let path = base.join(rel);
    std::fs::read(&path).unwrap_or_else(|e| {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        panic!(
            "CONFORMANCE SUITE MISSING: cannot read {} ({e}){}. Put the shared conformance data \
             at ../shared/conformance relative to the workspace root, or set \
             FLIGHTDECK_CONFORMANCE to its path. This test fails rather than skip, so that a \
             missing suite never looks like a pass.",
            path.display(),
            if ci { " (CI=true)" } else { "" }
        )
    })
}

/// A float as text that tells the stale marker from other NaNs.
pub fn value_text(v: f64) -> String {
    if model::is_stale_nan(v) {
        "STALE".into()
    } else {
        format!("{v:?}")
    }
}

/// One line per float sample: `series @t = v`, plus ` ct=…` when the series
/// has a created timestamp; one line per histogram sample with its Debug
/// form. In batch order.
pub fn render(b: &WriteBatch) -> Vec<String> {
    let mut out = Vec::new();
    for s in &b.series {
        let ct = if s.created_timestamp != 0 {
            format!(" ct={}", s.created_timestamp)
        } else {
            String::new()
        };
        for x in &s.samples {
            out.push(format!("{} @{} = {}{ct}", s.labels, x.t, value_text(x.v)));
        }
        for h in &s.histograms {
            let kind = match &h.h {
                HistogramValue::Int(_) => "int",
                HistogramValue::Float(_) => "float",
            };
            out.push(format!("{} @{} = {kind} histogram{ct}", s.labels, h.t));
        }
    }
    out
}

/// xorshift64*: deterministic, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a>(&mut self, v: &[&'a [u8]]) -> &'a [u8] {
        v[self.below(v.len())]
    }
}
