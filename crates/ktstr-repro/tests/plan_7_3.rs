//! Plans for the captured failures on the real 7.3 kernel's BTF and symbols (the cached
//! Debian vmlinux; skipped, visibly, without it). Offsets were checked against
//! `pahole -C <struct>` on the same vmlinux.

mod common;

use common::{blacklist_7_3, fixture, kallsyms_7_3, kernel_7_3, traceable_7_3, RELEASE};
use ktstr_repro::plan::{Attach, LeftOutReason, Phase, Target, ValueType};
use ktstr_repro::{plan, Failure, KernelInfo, ProbePlan, ReproError, MAX_FUNCS};

/// The plan for the fixtures `names` on the 7.3 BTF, with the captured guest's symbols,
/// traceable functions and kprobe blacklist.
fn plan_for(names: &[&str]) -> Option<ProbePlan> {
    let btf = kernel_7_3()?;
    let (syms, traceable, blacklist) = (kallsyms_7_3(), traceable_7_3(), blacklist_7_3());
    let k = KernelInfo {
        release: RELEASE,
        btf,
        symbols: Some(&syms),
        traceable: Some(&traceable),
        no_kprobe: Some(&blacklist),
    };
    let text: String = names.iter().map(|n| fixture(n)).collect();
    let p = plan(&Failure::parse(&text).unwrap(), &k).unwrap();
    if std::env::var_os("KTSTR_REPRO_PRINT").is_some() {
        println!("{}", serde_json::to_string_pretty(&p).unwrap());
    }
    Some(p)
}

fn probe_names(p: &ProbePlan) -> Vec<&str> {
    p.probes.iter().map(|p| p.name()).collect()
}

fn left_out(p: &ProbePlan) -> Vec<(&str, LeftOutReason)> {
    p.left_out
        .iter()
        .map(|l| (l.function.as_str(), l.reason))
        .collect()
}

#[test]
fn exit_trigger_on_7_3_is_the_sched_ext_exit_tracepoint() {
    let Some(p) = plan_for(&["scx-ktstr-error-after.sched.txt"]) else {
        return;
    };
    assert_eq!((p.version.major, p.version.minor), (7, 3));
    assert_eq!(p.trigger.attach, Attach::TpBtf);
    assert_eq!(p.trigger.target, "sched_ext_exit");
    assert!(
        p.trigger.why.contains("btf_trace_sched_ext_exit"),
        "{}",
        p.trigger.why
    );
    let args: Vec<(&str, &str)> = p
        .trigger
        .args
        .iter()
        .map(|a| (a.name.as_str(), a.c_type.as_str()))
        .collect();
    assert_eq!(args, [("sch", "struct scx_sched *"), ("kind", "__u32")]);
    let ValueType::Enum { name, values } = &p.trigger.args[1].value else {
        panic!(
            "kind is not shown as an enum: {:?}",
            p.trigger.args[1].value
        );
    };
    assert_eq!(name, "scx_exit_kind");
    assert!(values.contains(&("SCX_EXIT_ERROR_BPF".to_string(), 1025)));
    assert!(values.contains(&("SCX_EXIT_ERROR_STALL".to_string(), 1026)));
    let f = &p.trigger.fields[0];
    assert_eq!(
        (f.label.as_str(), f.offset, f.size),
        ("sch->ops.name", 360, 16)
    );
}

#[test]
fn scx_bpf_error_plan_probes_the_stack_and_the_callback() {
    let Some(p) = plan_for(&["scx-ktstr-error-after.sched.txt"]) else {
        return;
    };
    assert_eq!(
        probe_names(&p),
        [
            "scx_exit_bstr",
            "scx_bpf_error_bstr",
            "ktstr_enqueue",
            "scx_do_enqueue_task",
            "enqueue_task_scx",
            "enqueue_task",
            "ttwu_do_activate",
            "try_to_wake_up",
            "call_timer_fn",
            "run_timer_softirq",
            "handle_softirqs",
        ]
    );
    // __run_timers and __irq_exit_rcu have symbols and BTF but are not in the guest's
    // available_filter_functions.
    assert_eq!(
        left_out(&p),
        [
            ("bpf__sched_ext_ops_enqueue", LeftOutReason::Trampoline),
            ("__run_timers", LeftOutReason::Notrace),
            ("__irq_exit_rcu", LeftOutReason::Notrace),
            ("sysvec_apic_timer_interrupt", LeftOutReason::Notrace),
            ("asm_sysvec_apic_timer_interrupt", LeftOutReason::Notrace),
        ]
    );

    // The callback: fentry/fexit after the scheduler loads, arguments named by the
    // kernel's CFI stub sched_ext_ops__enqueue.
    let cb = &p.probes[2];
    assert_eq!(
        cb.target,
        Target::BpfCallback {
            op: "enqueue".into(),
            prog: Some("ktstr_enqueue".into())
        }
    );
    assert_eq!(cb.attach, [Attach::Fentry, Attach::Fexit]);
    assert_eq!(cb.phase, Phase::AfterScheduler);
    assert_eq!(cb.ret, None);
    let args: Vec<(&str, &str)> = cb
        .args
        .iter()
        .map(|a| (a.name.as_str(), a.c_type.as_str()))
        .collect();
    assert_eq!(args, [("p", "struct task_struct *"), ("enq_flags", "u64")]);
    let ValueType::Flags { name, bits } = &cb.args[1].value else {
        panic!("enq_flags: {:?}", cb.args[1].value);
    };
    assert_eq!(name, "scx_enq_flags");
    assert!(bits.contains(&("SCX_ENQ_WAKEUP".to_string(), 1)));
    // task_struct fields at pahole's offsets: pid 2872, comm 3408, thread_info.cpu 20,
    // scx (776) .dsq (+8) -> scx_dispatch_q.id (48), scx.slice 776+208, dsq_vtime 776+216,
    // weight 776+116.
    let fields: Vec<(&str, &[u32], u32, u8)> = cb
        .fields
        .iter()
        .map(|f| (f.label.as_str(), f.derefs.as_slice(), f.offset, f.size))
        .collect();
    assert_eq!(
        fields,
        [
            ("p->pid", &[][..], 2872, 4),
            ("p->comm", &[][..], 3408, 16),
            ("p->cpu", &[][..], 20, 4),
            ("p->scx.dsq->id", &[784][..], 48, 8),
            ("p->scx.slice", &[][..], 984, 8),
            ("p->scx.dsq_vtime", &[][..], 992, 8),
            ("p->scx.weight", &[][..], 892, 4),
        ]
    );
    assert_eq!(cb.fields[0].value, ValueType::Signed { size: 4 });
    assert_eq!(cb.fields[1].value, ValueType::Str { len: 16 });

    // The kernel caller: kprobe + fexit from boot, rq fields first.
    let k = &p.probes[3];
    assert_eq!(k.attach, [Attach::Kprobe, Attach::Fexit]);
    assert_eq!(k.phase, Phase::BeforeScheduler);
    let names: Vec<&str> = k.args.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["rq", "p", "enq_flags", "sticky_cpu"]);
    assert_eq!(k.fields[0].label, "rq->cpu");
    assert_eq!((k.fields[0].offset, k.fields[1].offset), (4136, 2552 + 448));
    assert_eq!(k.fields.len(), 9);
    // scx_exit_bstr has 7 parameters: 6 recorded.
    assert_eq!((p.probes[0].args.len(), p.probes[0].args_dropped), (6, 1));
}

#[test]
fn stall_plan_adds_the_scheduling_callbacks_and_their_callers() {
    let Some(p) = plan_for(&["scx-ktstr-stall.sched.txt", "scx-ktstr-stall.dmesg.txt"]) else {
        return;
    };
    assert_eq!(
        probe_names(&p),
        [
            // the watchdog's stack
            "scx_vexit",
            "__scx_exit",
            "scx_watchdog_workfn",
            "process_one_work",
            "worker_thread",
            "kthread",
            "ret_from_fork",
            // callbacks, program found at attach time by op
            "select_cpu",
            "enqueue",
            "dequeue",
            "dispatch",
            "runnable",
            "running",
            "stopping",
            "quiescent",
            // their kernel callers
            "select_task_rq_scx",
            "scx_do_enqueue_task",
            "ops_dequeue",
            "rq_owned_post_enq",
            "scx_dispatch_enqueue",
            "do_pick_task_scx",
            "enqueue_task_scx",
            "set_next_task_scx",
            "put_prev_task_scx",
            "dequeue_task_scx",
        ]
    );
    assert_eq!(
        left_out(&p),
        [
            ("ret_from_fork_asm", LeftOutReason::Notrace),
            ("scx_dispatch_sched", LeftOutReason::Inlined),
            ("dispatch_one", LeftOutReason::Inlined),
            ("dispatch_pick", LeftOutReason::Inlined),
            ("dispatch_core_pick", LeftOutReason::Inlined),
        ]
    );
    assert_eq!(p.focus_comms, ["spin", "kworker/u8:1"]);
    let dispatch = p.probes.iter().find(|x| x.name() == "dispatch").unwrap();
    let names: Vec<&str> = dispatch.args.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["prev_cpu", "prev"],
        "`__nullable` is dropped from the name"
    );
    let pick = p
        .probes
        .iter()
        .find(|x| x.name() == "do_pick_task_scx")
        .unwrap();
    assert!(
        pick.why.contains("scx_dispatch_sched <- dispatch_one"),
        "{}",
        pick.why
    );
    // put_prev_task_scx(rq, p, next): rq's 2 fields and 7 of each task = 16 exactly.
    let put = p
        .probes
        .iter()
        .find(|x| x.name() == "put_prev_task_scx")
        .unwrap();
    assert_eq!((put.fields.len(), put.fields_dropped), (16, 0));
    // scx_dispatch_enqueue has 7 parameters: slice and vtime kept, enq_flags dropped.
    let de = p
        .probes
        .iter()
        .find(|x| x.name() == "scx_dispatch_enqueue")
        .unwrap();
    assert_eq!((de.args.len(), de.args_dropped), (6, 1));
    assert!(de.fields.iter().any(|f| f.label == "dsq->id"));
}

#[test]
fn panic_plan_leaves_out_entry_code_and_notrace() {
    let Some(p) = plan_for(&["sysrq-crash-panic.console.txt"]) else {
        return;
    };
    assert_eq!(
        probe_names(&p),
        [
            "vpanic",
            "panic",
            "sysrq_handle_crash",
            "__handle_sysrq",
            "write_sysrq_trigger",
            "proc_reg_write",
            "vfs_write",
            "ksys_write",
        ]
    );
    assert_eq!(
        left_out(&p),
        [
            ("dump_stack_lvl", LeftOutReason::Notrace),
            ("do_syscall_64", LeftOutReason::Notrace),
            ("entry_SYSCALL_64_after_hwframe", LeftOutReason::Notrace),
        ]
    );
    let panic_probe = &p.probes[1];
    assert_eq!(panic_probe.fields[0].label, "*fmt");
    assert_eq!(panic_probe.fields[0].value, ValueType::Str { len: 16 });
}

#[test]
fn kprobe_blacklist_and_bounds() {
    let Some(btf) = kernel_7_3() else {
        return;
    };
    // A function on the kprobe blacklist but traceable gets fentry instead of a kprobe.
    let text = fixture("scx-ktstr-error-after.sched.txt");
    let f = Failure::parse(&text).unwrap();
    let blacklist: std::collections::HashSet<String> = ["enqueue_task".to_string()].into();
    let k = KernelInfo {
        release: RELEASE,
        btf,
        symbols: None,
        traceable: None,
        no_kprobe: Some(&blacklist),
    };
    let p = plan(&f, &k).unwrap();
    let et = p
        .probes
        .iter()
        .find(|x| x.name() == "enqueue_task")
        .unwrap();
    assert_eq!(et.attach, [Attach::Fentry, Attach::Fexit]);
    assert!(
        et.why.ends_with("on the kprobe blacklist, so fentry"),
        "{}",
        et.why
    );

    // A backtrace of 32 BPF programs of distinct callbacks: 32 fentry probes, then their
    // kernel callers, overflow MAX_FUNCS; the rest are listed as TooMany.
    let mut big = String::from("EXIT: scx_bpf_error (boom) on CPU 0\nBacktrace:\n");
    for o in ktstr_repro::OPS.iter().take(32) {
        big += &format!("  bpf_prog_0123456789abcdef_x_{}+0x1/0x10\n", o.name);
    }
    let f = Failure::parse(&big).unwrap();
    let k = KernelInfo {
        traceable: None,
        no_kprobe: None,
        ..k
    };
    let p = plan(&f, &k).unwrap();
    assert_eq!(p.probes.len(), MAX_FUNCS);
    let too_many = p
        .left_out
        .iter()
        .filter(|l| l.reason == LeftOutReason::TooMany)
        .count();
    assert!(too_many > 0, "{:?}", p.left_out);
    assert!(p.probes[..32]
        .iter()
        .all(|x| matches!(x.target, Target::BpfCallback { .. })));

    // A kernel before sched_ext is refused.
    let k = KernelInfo {
        release: "6.6.0",
        ..k
    };
    assert!(matches!(plan(&f, &k), Err(ReproError::NoSchedExt { .. })));
}
