//! The planner on the committed BTF subset of the 7.3 kernel (always runs), and the
//! subset checked against the real BTF (when the kernel is cached).

mod common;

use common::{
    btf_subset, fixture, kallsyms_7_3, kernel_7_3, subset_btf, subset_funcs, traceable_7_3,
    FAILURES, RELEASE, SUBSET,
};
use ktstr_repro::plan::{Attach, LeftOutReason, Target};
use ktstr_repro::{plan, Failure, KernelInfo};

fn failure(names: &[&str]) -> Failure {
    let text: String = names.iter().map(|n| fixture(n)).collect();
    Failure::parse(&text).unwrap()
}

#[test]
fn committed_subset_is_what_the_real_btf_gives() {
    let Some(btf) = kernel_7_3() else { return };
    let fresh = btf_subset::subset(btf, &subset_funcs(), &[]);
    let path = format!("{}/tests/fixtures/{SUBSET}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var("KTSTR_REPRO_REGEN").as_deref() == Ok("1") {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read(&path).unwrap();
    assert!(
        committed == fresh,
        "{SUBSET} is stale: rerun with KTSTR_REPRO_REGEN=1 ({} vs {} bytes)",
        committed.len(),
        fresh.len()
    );
}

#[test]
fn plans_from_the_subset_equal_plans_from_the_real_btf() {
    let Some(btf) = kernel_7_3() else { return };
    let sub = subset_btf();
    for names in FAILURES {
        let f = failure(names);
        let real = KernelInfo::new(RELEASE, btf);
        let small = KernelInfo { btf: &sub, ..real };
        assert_eq!(
            plan(&f, &real).unwrap(),
            plan(&f, &small).unwrap(),
            "{names:?}"
        );
    }
}

#[test]
fn subset_plans_without_the_kernel() {
    let btf = subset_btf();
    assert!(btf.len() < 2000, "the subset has {} types", btf.len());
    let k = KernelInfo {
        release: RELEASE,
        btf: &btf,
        symbols: None,
        traceable: None,
        no_kprobe: None,
    };
    let p = plan(&failure(FAILURES[0]), &k).unwrap();
    assert_eq!(
        (p.trigger.attach, p.trigger.target.as_str()),
        (Attach::TpBtf, "sched_ext_exit")
    );
    let cb = &p.probes[2];
    assert_eq!(
        cb.target,
        Target::BpfCallback {
            op: "enqueue".into(),
            prog: Some("ktstr_enqueue".into())
        }
    );
    let offsets: Vec<(&str, &[u32], u32)> = cb
        .fields
        .iter()
        .map(|f| (f.label.as_str(), f.derefs.as_slice(), f.offset))
        .collect();
    assert_eq!(
        offsets,
        [
            ("p->pid", &[][..], 2872),
            ("p->comm", &[][..], 3408),
            ("p->cpu", &[][..], 20),
            ("p->scx.dsq->id", &[784][..], 48),
            ("p->scx.slice", &[][..], 984),
            ("p->scx.dsq_vtime", &[][..], 992),
            ("p->scx.weight", &[][..], 892),
        ]
    );
    // Without a symbol table, an inlined function is only "not in BTF".
    let p = plan(&failure(FAILURES[1]), &k).unwrap();
    assert!(p
        .left_out
        .iter()
        .any(|l| l.function == "dispatch_one" && l.reason == LeftOutReason::NotInBtf));
    // With the guest's kallsyms and available_filter_functions it is inlined, and
    // functions the guest cannot trace are notrace.
    let (syms, traceable) = (kallsyms_7_3(), traceable_7_3());
    let k = KernelInfo {
        symbols: Some(&syms),
        traceable: Some(&traceable),
        ..k
    };
    let p = plan(&failure(FAILURES[1]), &k).unwrap();
    assert!(p
        .left_out
        .iter()
        .any(|l| l.function == "dispatch_one" && l.reason == LeftOutReason::Inlined));
    let p = plan(&failure(FAILURES[0]), &k).unwrap();
    let notrace: Vec<&str> = p
        .left_out
        .iter()
        .filter(|l| l.reason == LeftOutReason::Notrace)
        .map(|l| l.function.as_str())
        .collect();
    assert_eq!(
        notrace,
        [
            "__run_timers",
            "__irq_exit_rcu",
            "sysvec_apic_timer_interrupt",
            "asm_sysvec_apic_timer_interrupt"
        ]
    );
}

#[test]
fn exit_trigger_falls_back_by_what_the_btf_has() {
    // Kernels without the sched_ext_exit tracepoint (and then without scx_vexit) are made
    // by cutting the committed subset further.
    let full = subset_btf();
    let f = failure(FAILURES[0]);
    let trigger = |without: &[&str], release: &str| {
        let bytes = btf_subset::subset(&full, &subset_funcs(), without);
        let btf = ktstr_btf_monitor::Btf::parse(&bytes).unwrap();
        let k = KernelInfo {
            release,
            btf: &btf,
            symbols: None,
            traceable: None,
            no_kprobe: None,
        };
        plan(&f, &k).map(|p| {
            (
                p.trigger.attach,
                p.trigger.target,
                p.trigger.why,
                p.trigger.args.len(),
            )
        })
    };
    let (a, t, why, nargs) = trigger(&["btf_trace_sched_ext_exit"], "6.16.0").unwrap();
    assert_eq!((a, t.as_str(), nargs), (Attach::Fentry, "scx_vexit", 6));
    assert!(why.starts_with("6.16: BTF has scx_vexit"), "{why}");
    assert!(
        why.contains("not available: btf_trace_sched_ext_exit"),
        "{why}"
    );
    let (a, t, _, nargs) = trigger(&["btf_trace_sched_ext_exit", "scx_vexit"], "6.12.1").unwrap();
    assert_eq!(
        (a, t.as_str(), nargs),
        (Attach::Fentry, "scx_dump_state", 4)
    );
    let none = trigger(
        &["btf_trace_sched_ext_exit", "scx_vexit", "scx_dump_state"],
        "6.12.1",
    );
    assert!(
        matches!(none, Err(ktstr_repro::ReproError::NoExitTrigger { .. })),
        "{none:?}"
    );
    let no_scx = trigger(&[], "6.11.0");
    assert!(
        matches!(no_scx, Err(ktstr_repro::ReproError::NoSchedExt { .. })),
        "{no_scx:?}"
    );
}

#[test]
fn names_list_covers_every_function_the_planner_asks_about() {
    let path = format!(
        "{}/tests/fixtures/7.3-names.txt",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut want = subset_funcs();
    want.sort();
    want.dedup();
    if std::env::var("KTSTR_REPRO_REGEN").as_deref() == Ok("1") {
        std::fs::write(&path, want.join("\n") + "\n").unwrap();
    }
    let have = fixture("7.3-names.txt");
    let have: Vec<&str> = have.lines().collect();
    let missing: Vec<&String> = want
        .iter()
        .filter(|n| !have.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "7.3-names.txt lacks {missing:?}: regenerate (fixtures/README.md)"
    );
}
