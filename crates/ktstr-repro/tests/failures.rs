//! Parsing failures captured from real 7.3 guests (`tests/fixtures/README.md` says how
//! each was made).

use ktstr_repro::{Failure, FailureKind, SymbolKind};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn symbols(f: &Failure) -> Vec<String> {
    f.functions().into_iter().map(|s| s.symbol).collect()
}

#[test]
fn scx_bpf_error_from_the_schedulers_exit_dump() {
    let f = Failure::parse(&fixture("scx-ktstr-error-after.sched.txt")).unwrap();
    assert_eq!(f.kind, FailureKind::ScxExit);
    assert_eq!(f.reason, "scx_bpf_error");
    assert_eq!(
        f.message.as_deref(),
        Some("src/bpf/main.bpf.c:96: error-after: 50 tasks dispatched")
    );
    assert_eq!(f.exit_kind, Some(1025));
    assert_eq!(f.scheduler.as_deref(), Some("ktstr"));
    assert_eq!(f.cpu, Some(1));
    let culprit = f.culprit.as_ref().unwrap();
    assert_eq!((culprit.comm.as_str(), culprit.pid), ("sh", 125));
    assert!(f.stalled.is_empty());
    assert_eq!(
        symbols(&f),
        [
            "scx_exit_bstr",
            "scx_bpf_error_bstr",
            "bpf_prog_cb55bb7efa107ee2_ktstr_enqueue",
            "bpf__sched_ext_ops_enqueue",
            "scx_do_enqueue_task",
            "enqueue_task_scx",
            "enqueue_task",
            "ttwu_do_activate",
            "try_to_wake_up",
            "call_timer_fn",
            "__run_timers",
            "run_timer_softirq",
            "handle_softirqs",
            "__irq_exit_rcu",
            "sysvec_apic_timer_interrupt",
            "asm_sysvec_apic_timer_interrupt",
        ]
    );
    let prog = &f.functions()[2];
    assert_eq!(
        prog.kind,
        SymbolKind::BpfProg {
            tag: "cb55bb7efa107ee2".into(),
            name: "ktstr_enqueue".into()
        }
    );
    assert_eq!(prog.op.as_deref(), Some("enqueue"));
    assert_eq!(f.functions()[3].op.as_deref(), Some("enqueue"));

    // The dump's CPU states: five tasks on two CPUs, in print order.
    let tasks: Vec<(Option<u32>, &str, u32, bool)> = f
        .tasks
        .iter()
        .map(|t| (t.cpu, t.comm.as_str(), t.pid, t.current))
        .collect();
    assert_eq!(
        tasks,
        [
            (Some(1), "sh", 125, true),
            (Some(1), "sh", 127, false),
            (Some(1), "rcu_preempt", 15, false),
            (Some(0), "sh", 124, true),
            (Some(0), "sh", 126, false),
        ]
    );
    let sh125 = &f.tasks[0];
    assert_eq!(
        (sh125.dsq_id, sh125.slice, sh125.weight),
        (None, Some(12623197), Some(100))
    );
    assert_eq!(sh125.runnable_ms, Some(-32));
    assert_eq!(sh125.stack.len(), 16);
    assert_eq!(sh125.stack[1].symbol, "scx_dump_state");
    let rcu = &f.tasks[2];
    assert_eq!((rcu.dsq_id, rcu.slice), (Some(0), Some(20_000_000)));
    assert_eq!(
        rcu.stack.first().map(|s| s.symbol.as_str()),
        Some("rcu_gp_kthread")
    );
}

#[test]
fn scx_bpf_error_from_the_kernel_console_alone() {
    let f = Failure::parse(&fixture("scx-ktstr-error-after.dmesg.txt")).unwrap();
    assert_eq!(f.kind, FailureKind::ScxExit);
    assert_eq!(f.reason, "scx_bpf_error");
    assert_eq!(f.scheduler.as_deref(), Some("ktstr"));
    assert_eq!(
        f.message.as_deref(),
        Some("src/bpf/main.bpf.c:96: error-after: 50 tasks dispatched")
    );
    // The console has the same backtrace as the dump, and nothing else to say.
    let dump = Failure::parse(&fixture("scx-ktstr-error-after.sched.txt")).unwrap();
    assert_eq!(f.backtrace, dump.backtrace);
    assert_eq!(f.exit_kind, None);
    assert!(f.tasks.is_empty());
}

#[test]
fn scx_bpf_error_as_ktstr_exec_printed_it() {
    // ktstr exec shows the kernel's last lines and the scheduler's output tail, prefixed.
    let f = Failure::parse(&fixture("ktstr-exec-error-after.stderr.txt")).unwrap();
    assert_eq!(f.kind, FailureKind::ScxExit);
    assert_eq!(f.reason, "scx_bpf_error");
    assert_eq!(f.exit_kind, Some(1025));
    assert_eq!(f.cpu, Some(1));
    let funcs = f.functions();
    assert_eq!(funcs.len(), 1);
    assert_eq!(funcs[0].symbol, "bpf__sched_ext_ops_enqueue");
    assert_eq!(funcs[0].op.as_deref(), Some("enqueue"));
}

#[test]
fn runnable_task_stall_names_the_stalled_task() {
    let text = fixture("scx-ktstr-stall.sched.txt") + &fixture("scx-ktstr-stall.dmesg.txt");
    let f = Failure::parse(&text).unwrap();
    assert!(f.is_stall());
    assert_eq!(f.kind, FailureKind::ScxExit);
    assert_eq!(f.reason, "runnable task stall");
    assert_eq!(f.exit_kind, Some(1026));
    assert_eq!(
        f.message.as_deref(),
        Some("spin[122] failed to run for 2.400s")
    );
    let stalled: Vec<(&str, u32)> = f.stalled.iter().map(|t| (t.comm.as_str(), t.pid)).collect();
    assert_eq!(stalled, [("spin", 122)]);
    let culprit = f.culprit.as_ref().unwrap();
    assert_eq!((culprit.comm.as_str(), culprit.pid), ("kworker/u8:1", 37));
    assert_eq!(
        symbols(&f),
        [
            "scx_vexit",
            "__scx_exit",
            "scx_watchdog_workfn",
            "process_one_work",
            "worker_thread",
            "kthread",
            "ret_from_fork",
            "ret_from_fork_asm",
        ]
    );
    assert!(f.functions().iter().all(|s| s.op.is_none()));
    // The stalled task in the dump: runnable for 2400 ms, no slice left, on no DSQ.
    let spin = f.tasks.iter().find(|t| t.pid == 122).unwrap();
    assert_eq!(spin.cpu, Some(1));
    assert_eq!(spin.comm, "spin");
    assert_eq!(spin.runnable_ms, Some(-2400));
    assert_eq!(
        (spin.slice, spin.dsq_id, spin.current),
        (Some(0), None, false)
    );
    let kworker = f.tasks.iter().find(|t| t.pid == 37).unwrap();
    assert_eq!(kworker.comm, "kworker/u8:1");
    assert_eq!(kworker.stack.len(), 14);
}

#[test]
fn sysrq_crash_panic_call_trace() {
    let f = Failure::parse(&fixture("sysrq-crash-panic.console.txt")).unwrap();
    assert_eq!(f.kind, FailureKind::Panic);
    assert_eq!(f.reason, "sysrq triggered crash");
    assert_eq!(f.cpu, Some(1));
    let culprit = f.culprit.as_ref().unwrap();
    assert_eq!((culprit.comm.as_str(), culprit.pid), ("sh", 100));
    // `?` frames are kept in the backtrace but are not functions of the failure.
    assert_eq!(f.backtrace.len(), 19);
    assert_eq!(f.backtrace.iter().filter(|b| b.unreliable).count(), 8);
    assert_eq!(
        symbols(&f),
        [
            "dump_stack_lvl",
            "vpanic",
            "panic",
            "sysrq_handle_crash",
            "__handle_sysrq.cold",
            "write_sysrq_trigger",
            "proc_reg_write",
            "vfs_write",
            "ksys_write",
            "do_syscall_64",
            "entry_SYSCALL_64_after_hwframe",
        ]
    );
    assert_eq!(
        f.functions()[4].kind,
        SymbolKind::Kernel {
            function: "__handle_sysrq".into(),
            clone_suffix: Some(".cold".into())
        }
    );
}

#[test]
fn truncated_captures_parse_what_is_there() {
    // Every prefix of every capture parses or says there is no failure; none panics.
    for name in [
        "scx-ktstr-error-after.sched.txt",
        "scx-ktstr-error-after.dmesg.txt",
        "scx-ktstr-stall.sched.txt",
        "sysrq-crash-panic.console.txt",
    ] {
        let text = fixture(name);
        let mut cut = 0;
        while cut < text.len() {
            if text.is_char_boundary(cut) {
                let _ = Failure::parse(&text[..cut]);
            }
            cut += 7;
        }
    }
}

#[test]
fn mutated_captures_never_panic() {
    let texts: Vec<Vec<u8>> = [
        "scx-ktstr-error-after.sched.txt",
        "scx-ktstr-stall.sched.txt",
        "scx-ktstr-stall.dmesg.txt",
        "sysrq-crash-panic.console.txt",
        "ktstr-exec-error-after.stderr.txt",
    ]
    .iter()
    .map(|n| fixture(n).into_bytes())
    .collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"[]()*:+/x0123456789 \n?<>|=-_.\"";
    for round in 0..3000 {
        let mut b = texts[round % texts.len()].clone();
        for _ in 0..(next() % 16 + 1) {
            let i = (next() as usize) % b.len();
            b[i] = alphabet[(next() as usize) % alphabet.len()];
        }
        let _ = Failure::parse(&String::from_utf8_lossy(&b));
    }
}
