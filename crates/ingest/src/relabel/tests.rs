//! Relabeling cases as data: input labels, rules in the configuration
//! file's TOML, and the labels that must come out (or `DROPPED`). The
//! cases restate Prometheus' documented behaviour; `hashmod` values were
//! computed with an independent MD5 (Python's `hashlib`).

use super::*;

#[derive(Deserialize)]
struct Rules {
    #[serde(default)]
    r: Vec<RelabelConfig>,
}

/// `a=1,b=x y` → labels (no escaping; values may hold spaces and `\n`).
fn labels(s: &str) -> Labels {
    Labels::from_pairs(s.split(',').filter(|p| !p.is_empty()).map(|p| {
        let (n, v) = p.split_once('=').expect("test input: name=value");
        (n.to_owned(), v.replace("\\n", "\n"))
    }))
}

fn render(l: &Labels) -> String {
    l.iter()
        .map(|l| format!("{}={}", l.name, l.value.replace('\n', "\\n")))
        .collect::<Vec<_>>()
        .join(",")
}

fn rules(toml_src: &str) -> Result<Vec<Relabeler>, RelabelConfigError> {
    let parsed: Rules =
        toml::from_str(toml_src).unwrap_or_else(|e| panic!("test rules {toml_src:?}: {e}"));
    compile(&parsed.r)
}

/// (what it shows, input, rules, expected output or "DROPPED")
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "replace: default regex and replacement copy the joined sources",
        "a=foo,b=bar",
        "[[r]]\nsource_labels=['a','b']\ntarget_label='c'",
        "a=foo,b=bar,c=foo;bar",
    ),
    (
        "replace: separator",
        "a=foo,b=bar",
        "[[r]]\nsource_labels=['a','b']\nseparator='/'\ntarget_label='c'",
        "a=foo,b=bar,c=foo/bar",
    ),
    (
        "replace: groups in replacement",
        "a=foo",
        "[[r]]\nsource_labels=['a']\nregex='f(.*)'\ntarget_label='d'\nreplacement='ch${1}-ch${1}'",
        "a=foo,d=choo-choo",
    ),
    (
        "replace: two sources, two groups",
        "a=foo,b=bar,c=baz",
        "[[r]]\nsource_labels=['a','b']\nregex='f(.*);(.*)r'\ntarget_label='a'\nreplacement='b${1}${2}m'",
        "a=boobam,b=bar,c=baz",
    ),
    (
        "replace: regex is anchored, no match leaves labels alone",
        "a=foo",
        "[[r]]\nsource_labels=['a']\nregex='o+'\ntarget_label='b'",
        "a=foo",
    ),
    (
        "replace: missing source is the empty string; empty result deletes the target",
        "a=foo,b=bar",
        "[[r]]\nsource_labels=['nope']\ntarget_label='b'",
        "a=foo",
    ),
    (
        "replace: explicit empty replacement deletes",
        "a=foo,b=bar",
        "[[r]]\ntarget_label='a'\nreplacement=''",
        "b=bar",
    ),
    (
        "replace: target label from groups",
        "a=some-name-value",
        "[[r]]\nsource_labels=['a']\nregex='some-([^-]+)-([^,]+)'\ntarget_label='${1}'\nreplacement='${2}'",
        "a=some-name-value,name=value",
    ),
    (
        "replace: target expanding to an invalid name is skipped",
        "a=some-1bad-value",
        "[[r]]\nsource_labels=['a']\nregex='some-([^-]+)-([^,]+)'\ntarget_label='${1}'\nreplacement='${2}'",
        "a=some-1bad-value",
    ),
    (
        "replace: $1x names group '1x', which is empty",
        "a=foo",
        "[[r]]\nsource_labels=['a']\ntarget_label='b'\nreplacement='$1x'",
        "a=foo",
    ),
    (
        "replace: ${1}x",
        "a=foo",
        "[[r]]\nsource_labels=['a']\ntarget_label='b'\nreplacement='${1}x'",
        "a=foo,b=foox",
    ),
    (
        "replace: $$ is a dollar, a lone $ stays",
        "a=foo",
        "[[r]]\nsource_labels=['a']\ntarget_label='b'\nreplacement='$$1 $ ${'",
        "a=foo,b=$1 $ ${",
    ),
    (
        "replace: named groups",
        "a=foo-bar",
        "[[r]]\nsource_labels=['a']\nregex='(?P<first>\\w+)-(?P<second>\\w+)'\ntarget_label='b'\nreplacement='$second.${first}'",
        "a=foo-bar,b=bar.foo",
    ),
    (
        "replace: $01 is not group 1",
        "a=foo",
        "[[r]]\nsource_labels=['a']\ntarget_label='b'\nreplacement='[$01]'",
        "a=foo,b=[]",
    ),
    (
        "replace: constant value",
        "a=foo",
        "[[r]]\ntarget_label='env'\nreplacement='prod'",
        "a=foo,env=prod",
    ),
    (
        "replace: . matches a newline",
        "a=x\\ny",
        "[[r]]\nsource_labels=['a']\nregex='x.y'\ntarget_label='b'\nreplacement='ok'",
        "a=x\\ny,b=ok",
    ),
    (
        "replace: the action name ignores case",
        "a=foo",
        "[[r]]\naction='Replace'\nsource_labels=['a']\ntarget_label='b'",
        "a=foo,b=foo",
    ),
    (
        "keep: match keeps",
        "__name__=up,job=node",
        "[[r]]\naction='keep'\nsource_labels=['job']\nregex='no.*'",
        "__name__=up,job=node",
    ),
    (
        "keep: anchored, a partial match drops",
        "__name__=up,job=node",
        "[[r]]\naction='keep'\nsource_labels=['job']\nregex='od'",
        "DROPPED",
    ),
    (
        "keep: missing label is the empty string",
        "a=1",
        "[[r]]\naction='keep'\nsource_labels=['b']\nregex='.+'",
        "DROPPED",
    ),
    (
        "drop: match drops",
        "__name__=go_gc_duration_seconds,job=x",
        "[[r]]\naction='drop'\nsource_labels=['__name__']\nregex='go_.*'",
        "DROPPED",
    ),
    (
        "drop: no match keeps",
        "__name__=up,job=x",
        "[[r]]\naction='drop'\nsource_labels=['__name__']\nregex='go_.*'",
        "__name__=up,job=x",
    ),
    (
        "drop: on two labels joined",
        "a=1,b=2",
        "[[r]]\naction='drop'\nsource_labels=['a','b']\nregex='1;2'",
        "DROPPED",
    ),
    (
        "keepequal: equal keeps",
        "a=1,b=1",
        "[[r]]\naction='keepequal'\nsource_labels=['a']\ntarget_label='b'",
        "a=1,b=1",
    ),
    (
        "keepequal: different drops",
        "a=1,b=2",
        "[[r]]\naction='keepequal'\nsource_labels=['a']\ntarget_label='b'",
        "DROPPED",
    ),
    (
        "dropequal: equal drops",
        "a=1,b=1",
        "[[r]]\naction='dropequal'\nsource_labels=['a']\ntarget_label='b'",
        "DROPPED",
    ),
    (
        "dropequal: different keeps",
        "a=1,b=2",
        "[[r]]\naction='dropequal'\nsource_labels=['a']\ntarget_label='b'",
        "a=1,b=2",
    ),
    (
        "hashmod: md5, last 8 bytes big-endian, mod",
        "a=foo,b=bar,c=baz",
        "[[r]]\naction='hashmod'\nsource_labels=['c']\ntarget_label='d'\nmodulus=1000",
        "a=foo,b=bar,c=baz,d=976",
    ),
    (
        "hashmod: of the joined value",
        "a=foo,b=bar",
        "[[r]]\naction='hashmod'\nsource_labels=['a','b']\ntarget_label='h'\nmodulus=10",
        "a=foo,b=bar,h=0",
    ),
    (
        "hashmod: sharding targets by address",
        "__address__=localhost:9100",
        "[[r]]\naction='hashmod'\nsource_labels=['__address__']\ntarget_label='__tmp_hash'\nmodulus=3\n[[r]]\naction='keep'\nsource_labels=['__tmp_hash']\nregex='1'",
        "__address__=localhost:9100,__tmp_hash=1",
    ),
    (
        "hashmod: of the empty string",
        "a=1",
        "[[r]]\naction='hashmod'\nsource_labels=['zzz']\ntarget_label='h'\nmodulus=7",
        "a=1,h=1",
    ),
    (
        "labelmap: copies matching labels under the new name",
        "__meta_kubernetes_pod_label_app=web,__meta_kubernetes_pod_label_tier=db,job=k",
        "[[r]]\naction='labelmap'\nregex='__meta_kubernetes_pod_label_(.+)'",
        "__meta_kubernetes_pod_label_app=web,__meta_kubernetes_pod_label_tier=db,app=web,job=k,tier=db",
    ),
    (
        "labelmap: replacement template",
        "a=foo,b=bar,c=baz",
        "[[r]]\naction='labelmap'\nregex='(b.*)'\nreplacement='bar_${1}'",
        "a=foo,b=bar,bar_b=bar,c=baz",
    ),
    (
        "labelmap: later label wins a name clash",
        "__meta_a_x=1,__meta_b_x=2",
        "[[r]]\naction='labelmap'\nregex='__meta_[ab]_(.+)'",
        "__meta_a_x=1,__meta_b_x=2,x=2",
    ),
    (
        "labeldrop: anchored name match",
        "a=1,b=2,bb=3,__tmp=4",
        "[[r]]\naction='labeldrop'\nregex='b|__tmp'",
        "a=1,bb=3",
    ),
    (
        "labelkeep: everything else goes",
        "__name__=up,a=1,b=2,c=3",
        "[[r]]\naction='labelkeep'\nregex='__name__|a|c'",
        "__name__=up,a=1,c=3",
    ),
    (
        "lowercase",
        "foo=bAr123Foo",
        "[[r]]\naction='lowercase'\nsource_labels=['foo']\ntarget_label='foo_lower'",
        "foo=bAr123Foo,foo_lower=bar123foo",
    ),
    (
        "uppercase of two joined",
        "a=ab,b=cd",
        "[[r]]\naction='uppercase'\nsource_labels=['a','b']\ntarget_label='u'",
        "a=ab,b=cd,u=AB;CD",
    ),
    (
        "rules chain: a later rule sees an earlier rule's result",
        "__address__=host:9100",
        "[[r]]\nsource_labels=['__address__']\nregex='([^:]+):.*'\ntarget_label='host'\n[[r]]\naction='keep'\nsource_labels=['host']\nregex='host'",
        "__address__=host:9100,host=host",
    ),
    (
        "rules chain: a deleted label reads as empty",
        "a=1,b=2",
        "[[r]]\naction='labeldrop'\nregex='a'\n[[r]]\nsource_labels=['a','b']\ntarget_label='c'",
        "b=2,c=;2",
    ),
    ("no rules: unchanged", "a=1", "", "a=1"),
];

#[test]
fn actions_behave_as_prometheus_documents() {
    let mut bad = 0;
    for (what, input, toml_src, expected) in CASES {
        let rs = rules(toml_src).unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = match process(&labels(input), &rs) {
            None => "DROPPED".to_owned(),
            Some(l) => render(&l),
        };
        if got != *expected {
            eprintln!("{what}\n  got  {got}\n  want {expected}");
            bad += 1;
        }
    }
    assert_eq!(bad, 0, "{bad} of {} cases differ", CASES.len());
}

/// Invalid rule lists and the error each must produce.
const ERRORS: &[(&str, &str)] = &[
    (
        "[[r]]\naction='rename'\ntarget_label='a'",
        "relabel rule 0, `action`: unknown action \"rename\" (one of: replace, keep, drop, keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep, lowercase, uppercase)",
    ),
    (
        "[[r]]\naction='keep'\nregex='(a'",
        "relabel rule 0, `regex`: invalid regular expression \"(a\": ",
    ),
    (
        "[[r]]\nsource_labels=['a']",
        "relabel rule 0, `target_label`: the replace action needs a target_label (e.g. target_label = \"instance\")",
    ),
    (
        "[[r]]\naction='keep'\n[[r]]\naction='hashmod'\ntarget_label='h'",
        "relabel rule 1, `modulus`: the hashmod action needs a modulus greater than 0",
    ),
    (
        "[[r]]\naction='hashmod'\ntarget_label='h'\nmodulus=0",
        "relabel rule 0, `modulus`: the hashmod action needs a modulus greater than 0",
    ),
    (
        "[[r]]\ntarget_label='1abc'",
        "relabel rule 0, `target_label`: \"1abc\" is not a valid label name for the replace action (use letters, digits and '_', not starting with a digit)",
    ),
    (
        "[[r]]\naction='hashmod'\ntarget_label='${1}'\nmodulus=2",
        "relabel rule 0, `target_label`: \"${1}\" is not a valid label name for the hashmod action (use letters, digits and '_', not starting with a digit)",
    ),
    (
        "[[r]]\naction='lowercase'\nsource_labels=['a']\ntarget_label='b'\nreplacement='x'",
        "relabel rule 0, `replacement`: the lowercase action takes no replacement (remove the key)",
    ),
    (
        "[[r]]\naction='labelmap'\nreplacement='foo-$1'",
        "relabel rule 0, `replacement`: \"foo-$1\" is not a valid labelmap replacement: it must expand to a label name (e.g. \"$1\" or \"k8s_$1\")",
    ),
    (
        "[[r]]\naction='labeldrop'\nsource_labels=['a']\nregex='a'",
        "relabel rule 0, `source_labels`: the labeldrop action takes only regex (remove this key)",
    ),
    (
        "[[r]]\naction='labelkeep'\nregex='a'\nreplacement='b'",
        "relabel rule 0, `replacement`: the labelkeep action takes only regex (remove this key)",
    ),
    (
        "[[r]]\naction='keepequal'\nsource_labels=['a']\ntarget_label='b'\nregex='x'",
        "relabel rule 0, `regex`: the keepequal action takes only source_labels and target_label (remove this key)",
    ),
    (
        "[[r]]\naction='dropequal'\nsource_labels=['a']",
        "relabel rule 0, `target_label`: the dropequal action needs a target_label (e.g. target_label = \"instance\")",
    ),
    (
        "[[r]]\naction='keep'\nsource_labels=['a-b']",
        "relabel rule 0, `source_labels`: \"a-b\" is not a valid label name (use letters, digits and '_', not starting with a digit)",
    ),
];

#[test]
fn invalid_rules_are_named_with_index_and_field() {
    let mut bad = 0;
    for (toml_src, expected) in ERRORS {
        match rules(toml_src) {
            Ok(_) => {
                eprintln!("accepted: {toml_src:?}");
                bad += 1;
            }
            // Regex error texts come from the regex crate; compare the prefix.
            Err(e) if !e.to_string().starts_with(expected) => {
                eprintln!("{toml_src:?}\n  got  {e}\n  want {expected}");
                bad += 1;
            }
            Err(_) => {}
        }
    }
    assert_eq!(bad, 0, "{bad} of {} cases differ", ERRORS.len());
}

#[test]
fn unknown_keys_are_rejected() {
    let err = toml::from_str::<Rules>("[[r]]\ntarget='a'")
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `target`"), "{err}");
}
