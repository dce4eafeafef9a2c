//! Decoding probe events with plans made from the committed 7.3 BTF subset.
//!
//! No probe program exists yet (issue 17, item 2), so the records here are written with
//! [`RawEvent::to_bytes`], the format's reference encoder, and carry the values the
//! captured stall's debug dump shows for the stalled task (`spin[122]` on CPU 1, slice 0,
//! weight 100, dsq_vtime 175683814; `tests/fixtures/scx-ktstr-stall.sched.txt`).

mod common;

use common::{fixture, subset_btf, FAILURES, RELEASE};
use ktstr_repro::event::{RawField, TRIGGER_PROBE};
use ktstr_repro::{
    decode, decode_stream, plan, EventKind, Failure, KernelInfo, ProbePlan, RawEvent, ReproError,
    Value,
};

fn stall_plan() -> ProbePlan {
    let btf = subset_btf();
    let text: String = FAILURES[1].iter().map(|n| fixture(n)).collect();
    let k = KernelInfo::new(RELEASE, &btf);
    plan(&Failure::parse(&text).unwrap(), &k).unwrap()
}

fn probe_index(p: &ProbePlan, name: &str) -> u16 {
    p.probes.iter().position(|x| x.name() == name).unwrap() as u16
}

fn le(v: u64, n: usize) -> Option<Vec<u8>> {
    Some(v.to_le_bytes()[..n].to_vec())
}

fn comm(s: &str) -> Option<Vec<u8>> {
    let mut b = s.as_bytes().to_vec();
    b.resize(16, 0);
    Some(b)
}

/// `ops.enqueue(spin[122], SCX_ENQ_WAKEUP | 0x10000000)` entered on CPU 1, with the
/// task's fields as the dump printed them; its DSQ pointer was NULL, so that read faulted.
fn enqueue_of_the_stalled_task(p: &ProbePlan) -> RawEvent {
    RawEvent {
        kind: EventKind::Entry,
        probe: probe_index(p, "enqueue"),
        cpu: 1,
        pid: 122,
        tgid: 122,
        ts_ns: 7_426_000_123,
        ret: None,
        seq: 41,
        args: vec![0xffff_8880_0412_8000, 0x1 | 0x1000_0000],
        fields: vec![
            RawField { bytes: le(122, 4) },
            RawField {
                bytes: comm("spin"),
            },
            RawField { bytes: le(1, 4) },
            RawField { bytes: None },
            RawField { bytes: le(0, 8) },
            RawField {
                bytes: le(175_683_814, 8),
            },
            RawField { bytes: le(100, 4) },
        ],
        stack: vec![],
    }
}

#[test]
fn callback_entry_decodes_to_the_tasks_fields() {
    let p = stall_plan();
    let raw = enqueue_of_the_stalled_task(&p);
    let ev = decode(&p, &raw, 0).unwrap();
    assert_eq!(ev.function, "enqueue");
    assert_eq!(
        ev.args,
        [
            ("p".to_string(), Value::Pointer(0xffff_8880_0412_8000)),
            (
                "enq_flags".to_string(),
                Value::Flags {
                    names: vec!["SCX_ENQ_WAKEUP".into()],
                    rest: 0x1000_0000
                }
            ),
        ]
    );
    let fields: Vec<String> = ev.fields.iter().map(|(l, v)| format!("{l}={v}")).collect();
    assert_eq!(
        fields,
        [
            "p->pid=122",
            "p->comm=\"spin\"",
            "p->cpu=1",
            "p->scx.dsq->id=<unreadable>",
            "p->scx.slice=0",
            "p->scx.dsq_vtime=175683814",
            "p->scx.weight=100",
        ]
    );
    assert_eq!(
        ev.to_string(),
        "7.426000123 cpu1 122[122] -> enqueue(p=0xffff888004128000, \
         enq_flags=SCX_ENQ_WAKEUP|0x10000000) p->pid=122 p->comm=\"spin\" p->cpu=1 \
         p->scx.dsq->id=<unreadable> p->scx.slice=0 p->scx.dsq_vtime=175683814 p->scx.weight=100"
    );
}

#[test]
fn kernel_exit_and_trigger_decode_in_a_stream() {
    let p = stall_plan();
    // select_task_rq_scx(p, prev_cpu=1, wake_flags) returned CPU 0 (an int: -1 would be
    // 0xffffffff in the register's low half).
    let sel = &p.probes[probe_index(&p, "select_task_rq_scx") as usize];
    let mut fields: Vec<RawField> = sel
        .fields
        .iter()
        .map(|_| RawField { bytes: None })
        .collect();
    fields[0] = RawField { bytes: le(122, 4) };
    let exit = RawEvent {
        kind: EventKind::Exit,
        probe: probe_index(&p, "select_task_rq_scx"),
        cpu: 1,
        pid: 37,
        tgid: 37,
        ts_ns: 9_000_000_000,
        ret: Some(0xffff_ffff),
        seq: 42,
        args: vec![0xffff_8880_0412_8000, 1, 0x8],
        fields,
        stack: vec![],
    };
    // The trigger: sched_ext_exit(sch, SCX_EXIT_ERROR_STALL) on the watchdog's kworker.
    let trigger = RawEvent {
        kind: EventKind::Trigger,
        probe: TRIGGER_PROBE,
        cpu: 1,
        pid: 37,
        tgid: 37,
        ts_ns: 9_826_900_000,
        ret: None,
        seq: 43,
        args: vec![0xffff_8880_0300_0000, 1026],
        fields: vec![RawField {
            bytes: comm("ktstr"),
        }],
        stack: vec![0xffff_ffff_8123_4567; 32],
    };
    let mut stream = enqueue_of_the_stalled_task(&p).to_bytes();
    stream.extend(exit.to_bytes());
    stream.extend(trigger.to_bytes());
    let evs = decode_stream(&p, &stream).unwrap();
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[1].ret, Some(Value::Signed(-1)));
    let wake = &evs[1].args[2].1;
    assert_eq!(wake.to_string(), "SCX_WAKE_TTWU");
    assert_eq!(evs[2].kind, EventKind::Trigger);
    assert_eq!(evs[2].function, "sched_ext_exit");
    assert_eq!(evs[2].args[1].1.to_string(), "SCX_EXIT_ERROR_STALL");
    assert_eq!(
        evs[2].fields[0],
        ("sch->ops.name".to_string(), Value::Str("ktstr".into()))
    );
    assert_eq!(evs[2].stack.len(), 32);
}

#[test]
fn records_that_disagree_with_the_plan_are_errors() {
    let p = stall_plan();
    let good = enqueue_of_the_stalled_task(&p);
    let mismatch = |raw: RawEvent| {
        let bytes = raw.to_bytes();
        matches!(
            decode_stream(&p, &bytes),
            Err(ReproError::EventPlanMismatch { at: 0, .. })
        )
    };
    assert!(mismatch(RawEvent {
        probe: p.probes.len() as u16,
        ..good.clone()
    }));
    assert!(mismatch(RawEvent {
        args: vec![1],
        ..good.clone()
    }));
    assert!(mismatch(RawEvent {
        fields: good.fields[..3].to_vec(),
        ..good.clone()
    }));
    let mut short_pid = good.clone();
    short_pid.fields[0] = RawField { bytes: le(122, 2) };
    assert!(mismatch(short_pid));
    assert!(mismatch(RawEvent {
        kind: EventKind::Trigger,
        ..good.clone()
    }));
    // An exit of a function that returns a value, without the value.
    let sel = probe_index(&p, "select_task_rq_scx") as usize;
    assert!(mismatch(RawEvent {
        kind: EventKind::Exit,
        probe: sel as u16,
        ret: None,
        args: vec![0; p.probes[sel].args.len()],
        fields: vec![RawField { bytes: None }; p.probes[sel].fields.len()],
        ..good.clone()
    }));
    // A good record then garbage: the error names the garbage's offset.
    let mut bytes = good.to_bytes();
    let at = bytes.len();
    bytes.extend_from_slice(b"garbage!");
    match decode_stream(&p, &bytes) {
        Err(ReproError::EventBadMagic { at: a, .. }) => assert_eq!(a, at),
        other => panic!("{other:?}"),
    }
    // Cut inside the second record (48 + 2 * 8 + 7 * 24 = 232 bytes each).
    let mut bytes = good.to_bytes();
    bytes.extend_from_slice(&good.to_bytes()[..60]);
    assert!(matches!(
        decode_stream(&p, &bytes),
        Err(ReproError::EventTruncated {
            at: 232,
            need: 232,
            have: 60,
        })
    ));
}

#[test]
fn random_bytes_never_panic() {
    let p = stall_plan();
    let good = enqueue_of_the_stalled_task(&p).to_bytes();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..20_000 {
        let mut b = good.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        let cut = (next() as usize) % (b.len() + 1);
        let _ = decode_stream(&p, &b[..cut]);
        let _ = RawEvent::parse(&b, 0);
    }
}
