//! Property tests: folding loses no line kind, fold counts add back up, errors survive.

mod common;
use common::{kind_keys, plain_lines};

use ktstr_verifier::line::FOLD_PREFIX;
use ktstr_verifier::{collapse_with, expanded_line_count, CollapseConfig};
use proptest::prelude::*;

/// A template line whose `{}` slots take a value that changes per iteration.
const TEMPLATES: &[&str] = &[
    "2: R0_w=scalar() R1_w=P{} R10=fp0",
    "; u64 v = arr[i]; @ prop.bpf.c:25",
    "4: (bf) r3 = r1                       ; R1_w=P{} R3_w=P{}",
    "5: (67) r3 <<= 3                      ; R3_w=P{}",
    "6: (0f) r2 += r3                      ; R2_w=map_value(map=p.bss,ks=4,vs=320,off={}) R3_w=P{}",
    "mark_precise: frame0: last_idx 6 first_idx 2 subseq_idx -1",
    "mark_precise: frame0: parent state regs=r1 stack=:  R0_w=scalar() R1_rw=P{} R10=fp0",
    "7: (79) r2 = *(u64 *)(r2 +0)          ; R2_w=scalar(id={},smin=0,smax=umax={},var_off=(0x0; 0x{}))",
    "from 10 to 2: R0=scalar() R1=P{} R10=fp0",
    "9: (07) r1 += 1                       ; R1_w=P{}",
    "10: (a5) if r1 < 0x28 goto pc-9       ; R1_w=P{}",
    "11: safe",
    "",
    "R1 invalid mem access 'scalar'",
];

/// One-off lines, including ones of kinds that never repeat.
const SINGLES: &[&str] = &[
    "func#0 @0",
    "0: R1=ctx() R10=fp0",
    "R1 invalid mem access 'scalar'",
    "invalid access to map value, value_size=320 off=320 size=8",
    "verification time 12 usec",
    "stack depth 8+0",
    "processed 99 insns (limit 1000000) max_states_per_insn 1 total_states 4 peak_states 4 mark_read 1",
    "-- BEGIN PROG LOAD LOG --",
    "libbpf: prog 'p': failed to load: -13",
    "some text the classifier does not know",
    "12: (85) call bpf_map_lookup_elem#1   ; R0_w=map_value_or_null(id=1,map=m,ks=4,vs=8)",
];

fn fill(template: &str, v: i64) -> String {
    let mut out = String::new();
    let mut parts = template.split("{}").peekable();
    let mut k = 0i64;
    while let Some(p) = parts.next() {
        out.push_str(p);
        if parts.peek().is_some() {
            out.push_str(&(v + k).to_string());
            k += 1;
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Segment {
    /// `iters` iterations of a body of template indices; values start at `base`, move by `step`
    /// (or pseudo-randomly when `step` is 0).
    Loop {
        body: Vec<usize>,
        iters: usize,
        base: i64,
        step: i64,
    },
    /// An outer loop around an inner one.
    Nested {
        outer: usize,
        inner_body: Vec<usize>,
        inner: usize,
    },
    /// Lines from the one-off list.
    Singles(Vec<usize>),
    /// A loop whose precision backtracking grows by `growth` lines per iteration (kernel 7.x).
    Backtracking { iters: usize, growth: usize },
}

fn segment() -> impl Strategy<Value = Segment> {
    let body = prop::collection::vec(0..TEMPLATES.len(), 1..8);
    prop_oneof![
        (body.clone(), 1usize..40, -50i64..50, -9i64..9).prop_map(|(body, iters, base, step)| {
            Segment::Loop {
                body,
                iters,
                base,
                step,
            }
        }),
        (1usize..6, body, 1usize..12).prop_map(|(outer, inner_body, inner)| Segment::Nested {
            outer,
            inner_body,
            inner,
        }),
        prop::collection::vec(0..SINGLES.len(), 1..5).prop_map(Segment::Singles),
        (1usize..30, 0usize..4).prop_map(|(iters, growth)| Segment::Backtracking { iters, growth }),
    ]
}

fn render(segments: &[Segment]) -> Vec<String> {
    let mut out = Vec::new();
    for s in segments {
        match s {
            Segment::Loop {
                body,
                iters,
                base,
                step,
            } => {
                for i in 0..*iters as i64 {
                    let v = if *step == 0 {
                        (i * 7919 + base) % 31
                    } else {
                        base + i * step
                    };
                    out.extend(body.iter().map(|t| fill(TEMPLATES[*t], v)));
                }
            }
            Segment::Nested {
                outer,
                inner_body,
                inner,
            } => {
                for j in 0..*outer as i64 {
                    out.push(fill(
                        "20: (bf) r8 = r6                       ; R6=P{} R8_w=P{}",
                        j,
                    ));
                    for i in 0..*inner as i64 {
                        out.extend(inner_body.iter().map(|t| fill(TEMPLATES[*t], i + j)));
                    }
                    out.push(fill(
                        "30: (07) r6 += 1                      ; R6_w=P{}",
                        j + 1,
                    ));
                }
            }
            Segment::Singles(ix) => out.extend(ix.iter().map(|i| SINGLES[*i].to_string())),
            Segment::Backtracking { iters, growth } => {
                for i in 0..*iters {
                    out.push(fill(
                        "9: (07) r1 += 1                       ; R1_w=P{}",
                        i as i64,
                    ));
                    out.push("10: (a5) if r1 < 0x28 goto pc-9".to_string());
                    out.push("mark_precise: frame0: last_idx 10 first_idx 9 subseq_idx -1".into());
                    out.extend((0..=growth * i).map(|_| {
                        "mark_precise: frame0: regs=r1 stack= before 9: (07) r1 += 1".to_string()
                    }));
                    out.push(fill(
                        "mark_precise: frame0: parent state regs=r1 stack=:  R0_w=scalar() R1_rw=P{} R10=fp0",
                        i as i64,
                    ));
                }
            }
        }
    }
    out
}

fn config() -> impl Strategy<Value = CollapseConfig> {
    (1usize..64, 0usize..40, 1usize..4, 1usize..8, 0usize..6).prop_map(
        |(max_period, keep_tail, passes, min_fold_lines, max_notes)| CollapseConfig {
            max_period,
            keep_tail,
            passes,
            min_fold_lines,
            max_notes,
        },
    )
}

fn run(lines: &[String], cfg: &CollapseConfig) -> String {
    let mut input = lines.join("\n");
    input.push('\n');
    let mut out = Vec::new();
    let summary = collapse_with(input.as_bytes(), &mut out, cfg).expect("collapse");
    assert_eq!(summary.lines_in, lines.len() as u64);
    String::from_utf8(out).expect("utf-8 output")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn expanding_fold_counts_gives_the_input_line_count(
        segs in prop::collection::vec(segment(), 1..8),
        cfg in config(),
    ) {
        let lines = render(&segs);
        let out = run(&lines, &cfg);
        prop_assert_eq!(expanded_line_count(&out).ok(), Some(lines.len() as u64));
    }

    #[test]
    fn no_distinct_line_kind_is_lost(
        segs in prop::collection::vec(segment(), 1..8),
        cfg in config(),
    ) {
        let lines = render(&segs);
        let out = run(&lines, &cfg);
        let kinds_in = kind_keys(lines.iter().map(String::as_str));
        let kinds_out = kind_keys(plain_lines(&out));
        let lost: Vec<&String> = kinds_in.difference(&kinds_out).collect();
        prop_assert!(lost.is_empty(), "lost {:?}", lost);
    }

    #[test]
    fn final_error_and_every_error_survive(
        segs in prop::collection::vec(segment(), 1..8),
        cfg in config(),
    ) {
        let mut lines = render(&segs);
        lines.push("R7 invalid mem access 'scalar'".to_string());
        let out = run(&lines, &cfg);
        prop_assert_eq!(out.lines().last(), Some("R7 invalid mem access 'scalar'"));
        let errors_in = lines.iter().filter(|l| ktstr_verifier::classify(l).kind == ktstr_verifier::LineKind::Error).count();
        let errors_out = plain_lines(&out).into_iter().filter(|l| ktstr_verifier::classify(l).kind == ktstr_verifier::LineKind::Error).count();
        prop_assert_eq!(errors_in, errors_out);
    }

    #[test]
    fn tail_is_verbatim_and_output_is_deterministic(
        segs in prop::collection::vec(segment(), 1..8),
        cfg in config(),
    ) {
        let lines = render(&segs);
        let out = run(&lines, &cfg);
        prop_assert_eq!(&out, &run(&lines, &cfg));
        let keep = cfg.keep_tail.min(lines.len());
        let tail_in: Vec<&str> = lines[lines.len() - keep..].iter().map(String::as_str).collect();
        let out_lines: Vec<&str> = out.lines().collect();
        prop_assert!(out_lines.len() >= keep);
        prop_assert_eq!(&out_lines[out_lines.len() - keep..], &tail_in[..]);
    }
}

#[test]
fn long_counted_loop_shrinks_to_a_small_fraction() {
    let segs = [Segment::Loop {
        body: vec![0, 1, 2, 3, 4, 5, 6, 7, 9, 10],
        iters: 1000,
        base: 0,
        step: 1,
    }];
    let lines = render(&segs);
    let out = run(&lines, &CollapseConfig::default());
    assert!(
        out.lines().count() * 50 < lines.len(),
        "{} lines out",
        out.lines().count()
    );
}

#[test]
fn growing_backtracking_folds_across_the_loop() {
    let lines = render(&[Segment::Backtracking {
        iters: 40,
        growth: 3,
    }]);
    let out = run(&lines, &CollapseConfig::default());
    // One fold of iterations; the last iteration's long run is abbreviated by one more header.
    let headers: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with(FOLD_PREFIX) && l.contains(" iterations "))
        .collect();
    assert_eq!(headers.len(), 1, "{out}");
    assert!(headers[0].contains("iterations 2-"), "{}", headers[0]);
    assert!(
        out.contains("---   backtracking (mark_precise runs): "),
        "{out}"
    );
    assert!(
        out.lines().count() * 5 < lines.len(),
        "{} -> {}",
        lines.len(),
        out.lines().count()
    );
    assert_eq!(expanded_line_count(&out).ok(), Some(lines.len() as u64));
}

/// Lines made of the characters verifier logs are built from, so the classifier's paths get hit.
fn noisy_line() -> impl Strategy<Value = String> {
    const ALPHABET: &[char] = &[
        '0',
        '1',
        '2',
        '7',
        '9',
        ' ',
        'R',
        'r',
        'f',
        'p',
        'x',
        '=',
        '(',
        ')',
        ';',
        ':',
        '-',
        '_',
        ',',
        '.',
        '\'',
        '#',
        '@',
        's',
        'm',
        'i',
        'a',
        'P',
        'w',
        '\\',
        '\t',
        '\u{e9}',
        '\u{1f600}',
    ];
    prop::collection::vec(prop::sample::select(ALPHABET), 0..40)
        .prop_map(|c| c.into_iter().collect::<String>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_text_collapses_and_counts_back(
        block in prop::collection::vec(noisy_line(), 1..6),
        reps in 1usize..12,
        noise in prop::collection::vec(noisy_line(), 0..20),
        cfg in config(),
    ) {
        let mut lines: Vec<String> = noise.clone();
        for _ in 0..reps {
            lines.extend(block.iter().cloned());
        }
        lines.extend(noise);
        let out = run(&lines, &cfg);
        prop_assert_eq!(expanded_line_count(&out).ok(), Some(lines.len() as u64));
    }
}

#[test]
fn marker_lines_in_the_input_are_escaped() {
    let lines = vec![
        format!("{FOLD_PREFIX}7 lines omitted: iterations 2-2 of 3 (period 1 lines); 0 notes ---"),
        "\\--- ktstr fold: 1 lines".to_string(),
        "x".to_string(),
    ];
    let out = run(&lines, &CollapseConfig::default());
    assert_eq!(expanded_line_count(&out).ok(), Some(3));
    let back: Vec<&str> = out.lines().map(ktstr_verifier::fold::unescape).collect();
    assert_eq!(back, lines);
}
