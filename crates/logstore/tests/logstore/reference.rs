//! The store against a naive reference (a list of every entry): random
//! appends, flushes and reopens, then random queries with ranges,
//! directions, limits and required substrings. Also the property that
//! the bloom filter never skips a block holding the needle: a query with
//! `required` must return exactly the entries a plain scan finds.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use logstore::{Direction, Entry, Options, Query, StreamBatch};
use model::{Labels, Matcher};

use crate::common::*;

const WORDS: &[&str] = &[
    "GET",
    "POST",
    "/api/v1/users",
    "200",
    "404",
    "500",
    "error",
    "timeout",
    "user=",
    "ab",
    "abc",
    "xyz",
    "level=info",
    "{\"msg\":",
    "ok",
    "é",
    "—",
    " ",
];

fn random_line(rng: &mut StdRng) -> String {
    let n = rng.random_range(0..8);
    let mut s = String::new();
    for _ in 0..n {
        if rng.random_bool(0.2) {
            // Random lowercase letters: many distinct trigrams.
            for _ in 0..rng.random_range(1..6) {
                s.push(rng.random_range(b'a'..=b'z') as char);
            }
        } else {
            s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        }
    }
    s
}

struct Model {
    /// (stream, entry); timestamps are unique so order is total.
    all: Vec<(Labels, Entry)>,
}

impl Model {
    fn expect(&self, m: &[Matcher], q: &Query) -> Vec<(Labels, Vec<Entry>)> {
        let mut v: Vec<&(Labels, Entry)> = self
            .all
            .iter()
            .filter(|(l, e)| {
                m.iter().all(|m| m.matches(l.get(&m.name).unwrap_or("")))
                    && e.ts >= q.start
                    && e.ts < q.end
                    && q.required
                        .iter()
                        .all(|n| memchr::memmem::find(e.line.as_bytes(), n).is_some())
            })
            .collect();
        v.sort_by_key(|(_, e)| e.ts);
        if q.direction == Direction::Backward {
            v.reverse();
        }
        if q.limit > 0 {
            v.truncate(q.limit);
        }
        let mut out: Vec<(Labels, Vec<Entry>)> = Vec::new();
        let mut streams: Vec<Labels> = v.iter().map(|(l, _)| l.clone()).collect();
        streams.sort();
        streams.dedup();
        for s in streams {
            let es = v
                .iter()
                .filter(|(l, _)| *l == s)
                .map(|(_, e)| e.clone())
                .collect();
            out.push((s, es));
        }
        out
    }
}

fn run(seed: u64, opts: Options) {
    let mut rng = StdRng::seed_from_u64(seed);
    let d = tempfile::tempdir().unwrap();
    let mut store = open_with(d.path(), opts.clone()).unwrap();
    let mut model = Model { all: Vec::new() };
    let streams: Vec<Labels> = (0..5)
        .map(|i| labels(&[("app", ["api", "web", "db"][i % 3]), ("i", &i.to_string())]))
        .collect();
    let mut ts_pool: Vec<i64> = (0..3000).map(|i| i * 10).collect();
    // Shuffle: appends arrive out of order.
    for i in (1..ts_pool.len()).rev() {
        let j = rng.random_range(0..=i);
        ts_pool.swap(i, j);
    }
    for round in 0..30 {
        let mut batches = Vec::new();
        for l in &streams {
            if rng.random_bool(0.6) {
                let n = rng.random_range(1..40);
                let entries: Vec<Entry> = (0..n)
                    .filter_map(|_| ts_pool.pop())
                    .map(|ts| Entry::new(ts, random_line(&mut rng)))
                    .collect();
                for e in &entries {
                    model.all.push((l.clone(), e.clone()));
                }
                batches.push(StreamBatch {
                    labels: l.clone(),
                    entries,
                });
            }
        }
        store.append("p", &batches).unwrap();
        match round % 10 {
            3 | 7 => store.flush().unwrap(),
            9 => {
                store.close().unwrap();
                drop(store);
                store = open_with(d.path(), opts.clone()).unwrap();
            }
            _ => {}
        }
    }
    let matchers = [
        vec![],
        vec![eq("app", "api")],
        vec![Matcher::new(model::MatchOp::Regex, "app", "web|db").unwrap()],
        vec![eq("i", "4")],
    ];
    for k in 0..300 {
        let m = &matchers[k % matchers.len()];
        let a = rng.random_range(-50..30100);
        let b = rng.random_range(-50..30100);
        // Needles: a piece of an existing line (always present somewhere),
        // a word, or random letters (mostly absent).
        let piece: Vec<u8> = {
            let (_, e) = &model.all[rng.random_range(0..model.all.len())];
            let l = e.line.as_bytes();
            if l.is_empty() {
                Vec::new()
            } else {
                let i = rng.random_range(0..l.len());
                let j = rng.random_range(i..=l.len().min(i + 8));
                l[i..j].to_vec()
            }
        };
        let word = WORDS[rng.random_range(0..WORDS.len())].as_bytes().to_vec();
        let rand_letters: Vec<u8> = (0..4).map(|_| rng.random_range(b'a'..=b'z')).collect();
        let required: Vec<&[u8]> = match k % 5 {
            0 => vec![],
            1 => vec![&piece],
            2 => vec![&word],
            3 => vec![&rand_letters],
            _ => vec![&piece, &word],
        };
        let q = Query {
            matchers: m,
            start: a.min(b),
            end: a.max(b),
            direction: if rng.random_bool(0.5) {
                Direction::Forward
            } else {
                Direction::Backward
            },
            limit: [0, 1, 5, 50, 1000][rng.random_range(0..5)],
            required: &required,
        };
        let got = store.query("p", &q).unwrap();
        assert_eq!(got, model.expect(m, &q), "seed {seed} query {k}: {q:?}");
    }
    // Labels and stats agree with the model too.
    let mut want: Vec<Labels> = model.all.iter().map(|(l, _)| l.clone()).collect();
    want.sort();
    want.dedup();
    assert_eq!(store.series("p", &[], i64::MIN, i64::MAX), want);
    let s = store.stats("p", &[], i64::MIN, i64::MAX);
    assert_eq!(s.entries as usize, model.all.len());
    assert_eq!(
        s.bytes as usize,
        model.all.iter().map(|(_, e)| e.line.len()).sum::<usize>()
    );
}

#[test]
fn matches_the_reference_with_small_blocks() {
    for seed in 0..4 {
        run(seed, small_opts());
    }
}

#[test]
fn matches_the_reference_with_sparse_blooms_and_automatic_flushes() {
    run(
        99,
        Options {
            block_bytes: 600,
            block_entries: 1000,
            bloom_bits_per_trigram: 1,
            flush_bytes: 5000,
            ..Options::default()
        },
    );
}

#[test]
fn bloom_skips_blocks_without_the_needle() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    for k in 0..20 {
        let es: Vec<(i64, String)> = (0..16)
            .map(|i| {
                let t = k * 16 + i;
                let extra = if t == 200 { " needle-in-haystack" } else { "" };
                (t, format!("GET /api/v1/users/{t} 200{extra}"))
            })
            .collect();
        let es: Vec<(i64, &str)> = es.iter().map(|(t, l)| (*t, l.as_str())).collect();
        s.append("p", &[sb(&[("a", "1")], &es)]).unwrap();
    }
    s.flush().unwrap();
    let m = [eq("a", "1")];
    let req: [&[u8]; 1] = [b"needle-in-haystack"];
    let q = Query {
        matchers: &m,
        start: 0,
        end: 1000,
        direction: Direction::Forward,
        limit: 0,
        required: &req,
    };
    let mut it = s.select("p", &q).pop().unwrap().1;
    let got: Vec<i64> = it.by_ref().map(|e| e.unwrap().ts).collect();
    assert_eq!(got, vec![200]);
    assert_eq!(it.blocks_read() + it.blocks_skipped(), 20);
    assert!(it.blocks_skipped() >= 18, "skipped {}", it.blocks_skipped());
}
