//! Probe records captured in a real 7.3 guest while scx_ktstr hit its `--error-after 50`
//! `scx_bpf_error`, decoded with the plan that made them (`tests/fixtures/README.md`).

mod common;

use common::{fixture, fixture_bytes};
use ktstr_btf_monitor::SymbolTable;
use ktstr_repro::symbolize::Symbolizer;
use ktstr_repro::{decode_stream, EventKind, Failure, ProbePlan, Value};

fn plan() -> ProbePlan {
    serde_json::from_str(&fixture("scx-ktstr-error-after.probe-plan.json")).unwrap()
}

fn field<'a>(e: &'a ktstr_repro::Event, label: &str) -> &'a Value {
    &e.fields.iter().find(|(l, _)| l == label).unwrap().1
}

#[test]
fn the_window_before_the_exit_decodes_and_ends_with_the_failure() {
    let p = plan();
    let events = decode_stream(&p, &fixture_bytes("scx-ktstr-error-after.events.bin")).unwrap();
    assert_eq!(events.len(), 256);
    // Sequence numbers run without a gap: nothing in the window was lost.
    for w in events.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    if std::env::var_os("KTSTR_REPRO_PRINT").is_some() {
        for e in &events[events.len() - 8..] {
            println!("{e}");
        }
    }
    let n = events.len();
    let (bstr, exit_bstr, trigger) = (&events[n - 3], &events[n - 2], &events[n - 1]);

    // The failing path, in order, on one CPU and task: scx_bpf_error_bstr, scx_exit_bstr,
    // then the sched_ext_exit tracepoint.
    assert_eq!(bstr.function, "scx_bpf_error_bstr");
    assert_eq!(exit_bstr.function, "scx_exit_bstr");
    assert_eq!(
        (trigger.kind, trigger.function.as_str()),
        (EventKind::Trigger, "sched_ext_exit")
    );
    for e in [bstr, exit_bstr] {
        assert_eq!(e.kind, EventKind::Entry);
        assert_eq!((e.cpu, e.pid), (trigger.cpu, trigger.pid));
        assert!(e.ts_ns <= trigger.ts_ns);
    }
    // The format string starts with the source file (scx_bpf_error() prefixes it); 15
    // characters and the NUL fit the 16-byte slot.
    assert_eq!(field(bstr, "*fmt"), &Value::Str("src/bpf/main.bp".into()));
    assert_eq!(exit_bstr.args[1].1.to_string(), "SCX_EXIT_ERROR_BPF");
    assert_eq!(trigger.args[1].1.to_string(), "SCX_EXIT_ERROR_BPF");
    assert_eq!(field(trigger, "sch->ops.name"), &Value::Str("ktstr".into()));
    // Only these two fired once: they are the error path.
    assert_eq!(
        events
            .iter()
            .filter(|e| e.function == "scx_exit_bstr")
            .count(),
        1
    );

    // The scheduler's own dump names the same task and CPU as the trigger record.
    let run = fixture("scx-ktstr-error-after.probe-run.txt");
    let f = Failure::parse(&run).unwrap();
    let culprit = f.culprit.unwrap();
    assert_eq!((culprit.pid, f.cpu), (trigger.pid, Some(trigger.cpu)));
    assert_eq!(f.exit_kind, Some(1025));

    // scx_do_enqueue_task saw tasks with their comm, pid and flags.
    let enq: Vec<_> = events
        .iter()
        .filter(|e| e.function == "scx_do_enqueue_task")
        .collect();
    assert!(!enq.is_empty());
    for e in &enq {
        let Value::Signed(pid) = field(e, "p->pid") else {
            panic!("{e}")
        };
        assert!(*pid > 0, "{e}");
        assert!(
            matches!(field(e, "p->comm"), Value::Str(c) if !c.is_empty()),
            "{e}"
        );
        assert!(matches!(field(e, "rq->cpu"), Value::Signed(0 | 1)), "{e}");
        assert!(matches!(e.args[2].1, Value::Flags { .. }), "{e}");
    }
}

#[test]
fn the_trigger_stack_is_the_kernels_backtrace() {
    let p = plan();
    let events = decode_stream(&p, &fixture_bytes("scx-ktstr-error-after.events.bin")).unwrap();
    let trigger = events.last().unwrap();
    let syms = Symbolizer::new(
        &SymbolTable::from_text(&fixture("scx-ktstr-error-after.stack-kallsyms.txt")).unwrap(),
    );
    let names: Vec<String> = trigger
        .stack
        .iter()
        .map(|&a| {
            syms.symbolize(a).map_or("?".into(), |s| {
                s.split('+').next().unwrap_or("").to_string()
            })
        })
        .collect();
    // `?`: JIT code (the probe program, the scheduler's ktstr_enqueue and its struct_ops
    // trampoline), whose kallsyms entries were gone when kallsyms was read.
    assert_eq!(
        names[..12],
        [
            "?",
            "bpf_trace_run2",
            "scx_claim_exit",
            "scx_exit_bstr",
            "scx_bpf_error_bstr",
            "?",
            "?",
            "scx_do_enqueue_task",
            "enqueue_task_scx",
            "enqueue_task",
            "ttwu_do_activate",
            "try_to_wake_up",
        ]
    );
    assert_eq!(names.len(), 23);
}
