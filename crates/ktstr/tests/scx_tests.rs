//! `#[ktstr_test]`s under sched_ext schedulers: ktstr's own scx-ktstr (found beside the test
//! binary, or built with cargo) and the kernel's scx_simple (built by
//! `scripts/build-scx-examples` into the ktstr cache).
//!
//! Without QEMU, a kernel or the scheduler binary they print `SKIPPED` or fail with the reason
//! (and fail under `KTSTR_REQUIRE_VM=1`).

use ktstr::prelude::*;

declare_scheduler!(pub SCX_KTSTR, {
    name = "scx_ktstr",
    binary = "scx_ktstr",
    topology = (1, 2, 2, 1),
});

/// scx-ktstr with a stalled comm and a 2 s watchdog.
static SCX_KTSTR_STALLING: Scheduler = Scheduler::named("scx_ktstr")
    .sched_args(&["--stall-comm", "stallme", "--watchdog-ms", "2000"])
    .topology(1, 1, 2, 1);

/// The kernel's example scheduler.
static SCX_SIMPLE: Scheduler = Scheduler::named("scx_simple").topology(1, 1, 2, 1);

/// scx-ktstr keeps every worker progressing and inside its cpuset, before and after cpusets change.
#[ktstr_test(scheduler = SCX_KTSTR, duration_s = 3, not_stuck, isolation)]
fn scx_ktstr_passes_steady_and_cpusets(ctx: &Ctx) -> Result<AssertResult> {
    let mut r = scenarios::steady(ctx)?;
    r.merge(scenarios::steady_llc(ctx)?);
    r.merge(scenarios::cpuset_apply(ctx)?);
    Ok(r)
}

/// The stall knob makes the kernel's watchdog eject the scheduler, and the test fails naming it.
#[ktstr_test(
    scheduler = SCX_KTSTR_STALLING,
    duration_s = 6,
    expect_err,
    expect_scx_bpf_error_contains = "runnable task stall"
)]
fn scx_ktstr_stall_fails_the_test(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(
        ctx,
        vec![CgroupDef::named("cg_0").workers(2).comm("stallme")],
    )
}

/// The error knob makes the scheduler exit with scx_bpf_error, and the test fails with its
/// message. The monitor (on for the snapshot) sees the error exit while the guest still runs:
/// it takes a `failure` snapshot, and the run leaves a failure dump that holds it, the
/// scheduler's exit and the last samples.
#[ktstr_test(
    scheduler = SCX_KTSTR,
    extra_sched_args = ["--error-after", "200"],
    llcs = 1,
    duration_s = 3,
    num_snapshots = 1,
    expect_err,
    expect_scx_bpf_error_contains = "error-after: 200 tasks dispatched",
    post_vm_unconditional = the_failure_was_dumped
)]
fn scx_ktstr_error_fails_the_test(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

fn the_failure_was_dumped(vm: &VmResult) -> Result<()> {
    use anyhow::{ensure, Context};
    let snap = vm
        .snapshot("failure")
        .with_context(|| format!("no failure snapshot: {:?}", vm.snapshot_errors))?;
    let kind = &snap.sample["scx"]["exit_kind"];
    ensure!(
        kind == "error_bpf",
        "the failure snapshot saw exit kind {kind}"
    );
    let error = vm.error.as_deref().unwrap_or_default();
    let path = error
        .lines()
        .find_map(|l| l.strip_prefix("failure dump -> "))
        .with_context(|| format!("no failure dump named in: {error}"))?;
    let dump: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
    ensure!(dump["snapshot"]["name"] == "failure", "{path}: no snapshot");
    ensure!(
        dump["last_samples"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{path}: no samples"
    );
    ensure!(
        dump["what"]
            .as_str()
            .is_some_and(|w| w.contains("scheduler")),
        "{path}: {}",
        dump["what"]
    );
    Ok(())
}

/// An outside scheduler, the kernel's scx_simple, passes steady.
#[ktstr_test(scheduler = SCX_SIMPLE, duration_s = 3, not_stuck)]
fn scx_simple_passes_steady(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

fn sched_ext(file: &str) -> String {
    std::fs::read_to_string(format!("/sys/kernel/sched_ext/{file}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

/// Runs two spinning cgroups for a step that begins with `op`.
fn step_with(ctx: &Ctx, op: Op) -> Result<AssertResult> {
    execute_steps(
        ctx,
        vec![Step::with_defs(
            vec![
                CgroupDef::named("cg_0").workers(2),
                CgroupDef::named("cg_1").workers(2),
            ],
            HoldSpec::FULL,
        )
        .set_ops(vec![op])],
    )
}

/// Detach (EEVDF takes over), attach, restart and replace, each under load; every scheduler
/// that ran is reported to the host, healthy.
#[ktstr_test(
    scheduler = SCX_KTSTR,
    staged_schedulers = [SCX_SIMPLE],
    llcs = 1,
    duration_s = 2,
    not_stuck,
    post_vm = four_schedulers_reported
)]
fn scheduler_ops_detach_attach_restart_replace(ctx: &Ctx) -> Result<AssertResult> {
    anyhow::ensure!(
        sched_ext("root/ops") == "ktstr",
        "{}",
        sched_ext("root/ops")
    );
    let mut r = step_with(ctx, Op::detach_scheduler())?;
    anyhow::ensure!(
        sched_ext("state") == "disabled",
        "after detach: {}",
        sched_ext("state")
    );
    r.merge(step_with(ctx, Op::attach_scheduler(&SCX_KTSTR))?);
    anyhow::ensure!(
        sched_ext("state") == "enabled",
        "after attach: {}",
        sched_ext("state")
    );
    r.merge(step_with(ctx, Op::restart_scheduler())?);
    anyhow::ensure!(
        sched_ext("root/ops") == "ktstr",
        "after restart: {}",
        sched_ext("root/ops")
    );
    r.merge(step_with(ctx, Op::replace_scheduler(&SCX_SIMPLE))?);
    anyhow::ensure!(
        sched_ext("root/ops") == "simple",
        "after replace: {}",
        sched_ext("root/ops")
    );
    Ok(r)
}

fn four_schedulers_reported(vm: &VmResult) -> Result<()> {
    let names: Vec<&str> = vm.schedulers.iter().map(|s| s.name.as_str()).collect();
    anyhow::ensure!(
        names == ["scx_ktstr", "scx_ktstr", "scx_ktstr", "scx_simple"],
        "schedulers reported: {names:?}"
    );
    anyhow::ensure!(
        vm.schedulers.iter().all(|s| s.healthy()),
        "{:?}",
        vm.schedulers
    );
    Ok(())
}

/// scx-ktstr stalling a comm, with the kernel's own 30 s watchdog left as it is.
static SCX_KTSTR_STALL_DEFAULT_WATCHDOG: Scheduler = Scheduler::named("scx_ktstr")
    .sched_args(&["--stall-comm", "stallme"])
    .topology(1, 1, 2, 1);

/// `watchdog_timeout_s`: the host shortens the kernel's watchdog, so the stall is caught
/// within the test. With the default 30 s timeout the kernel's first check (15 s after
/// attach) sees the task waiting under 30 s and the next comes at 30 s, after this test
/// ended: only the shortened timeout can eject the scheduler here.
#[ktstr_test(
    scheduler = SCX_KTSTR_STALL_DEFAULT_WATCHDOG,
    watchdog_timeout_s = 3,
    duration_s = 24,
    expect_err,
    expect_scx_bpf_error_contains = "runnable task stall"
)]
fn watchdog_timeout_s_makes_a_stall_fail_within_the_test(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(
        ctx,
        vec![CgroupDef::named("cg_0").workers(1).comm("stallme")],
    )
}

/// `declare_scheduler!` registers what it declares, so tools can find it by name.
#[test]
fn declared_schedulers_are_registered() {
    let found = ktstr::test_support::declared_scheduler("scx_ktstr").expect("registered");
    assert!(std::ptr::eq(found, &SCX_KTSTR));
    assert_eq!(ktstr::test_support::KTSTR_SCHEDULERS.len(), 1);
    assert!(ktstr::test_support::declared_scheduler("scx_simple").is_none());
}

/// Snapshots, watched BPF globals, program statistics and a pinned map under sched_ext: six
/// spinners crowd two CPUs, so most of them wait on DSQs.
/// Every DSQ the host lists must hold as many tasks as the kernel's own count says, each
/// task must name that DSQ in its own `scx.dsq` (a separate read), and every spinner must be
/// of the ext class and either running or queued.
#[ktstr_test(
    scheduler = SCX_KTSTR,
    llcs = 1,
    duration_s = 3,
    num_snapshots = 4,
    watch_bpf_maps = [DISPATCHED, VTIME_NOW],
    post_vm = dsqs_are_consistent
)]
fn snapshots_list_the_tasks_on_each_dsq(ctx: &Ctx) -> Result<AssertResult> {
    let r = execute_steps(
        ctx,
        vec![Step::with_defs(
            vec![CgroupDef::named("crowd").workers(6).comm("crowd")],
            HoldSpec::FULL,
        )
        .set_ops(vec![Op::pin_bpf_map("main_bpf.bss")])],
    )?;
    // Op::pin_bpf_map: the scheduler's globals, pinned where a payload could open them.
    anyhow::ensure!(
        std::path::Path::new("/sys/fs/bpf/main_bpf_bss").exists(),
        "the pinned map is not at /sys/fs/bpf/main_bpf_bss: {r}"
    );
    Ok(r)
}

/// scx-ktstr's dispatch counter and its vtime clock, read from the host every tick.
const DISPATCHED: WatchBpfMap = WatchBpfMap::new(
    ".bss",
    "nr_dispatched",
    BpfMapAgg::ScalarCounter,
    "dispatched",
);
const VTIME_NOW: WatchBpfMap = WatchBpfMap::new(".bss", "vtime_now", BpfMapAgg::Scalar, "vtime");

/// `SCX_DSQ_LOCAL`: the id of every CPU's local DSQ.
const SCX_DSQ_LOCAL: u64 = 1 << 63 | 2;

fn dsqs_are_consistent(vm: &VmResult) -> Result<()> {
    use anyhow::{ensure, Context};
    ensure!(vm.snapshots.len() == 4, "{:?}", vm.snapshot_errors);
    let mut queued_seen = 0;
    let mut crowded = 0;
    for s in &vm.snapshots {
        ensure!(s.errors.is_empty(), "{}: {:?}", s.name, s.errors);
        let dsq_of = |pid: i32| s.task(pid).and_then(|t| t.scx.as_ref()?.dsq_id);
        for d in &s.dsqs {
            ensure!(
                d.tasks.len() == d.nr as usize,
                "{}: DSQ {:#x} lists {} tasks, the kernel counts {}",
                s.name,
                d.id,
                d.tasks.len(),
                d.nr
            );
            for t in &d.tasks {
                ensure!(
                    dsq_of(t.pid) == Some(d.id),
                    "{}: {t:?} on {:#x}",
                    s.name,
                    d.id
                );
            }
            queued_seen += d.tasks.len();
        }
        for c in &s.cpus {
            for t in &c.local_dsq {
                ensure!(dsq_of(t.pid) == Some(SCX_DSQ_LOCAL), "{}: {t:?}", s.name);
            }
            queued_seen += c.local_dsq.len();
        }
        let crowd: Vec<_> = s.tasks.iter().filter(|t| t.comm == "crowd").collect();
        ensure!(crowd.len() <= 6, "{}: {crowd:?}", s.name);
        if crowd.len() < 6 {
            // Taken while the workers were still starting.
            continue;
        }
        crowded += 1;
        for t in &crowd {
            ensure!(t.class.as_deref() == Some("ext"), "{}: {t:?}", s.name);
        }
        // A spinner is running or queued, except one caught between the two.
        let placed = crowd
            .iter()
            .filter(|t| {
                s.queued().any(|q| q.pid == t.pid)
                    || s.cpus
                        .iter()
                        .any(|c| c.curr.as_ref().map(|q| q.pid) == Some(t.pid))
            })
            .count();
        ensure!(
            placed >= 5,
            "{}: only {placed} of 6 spinners running or queued",
            s.name
        );
    }
    ensure!(crowded >= 1, "no snapshot saw all six spinners");
    // The watched globals: the counter's last value is in the last JSON line too, and the
    // snapshots' scheduler saw tasks dispatched.
    let m = vm.monitor.as_ref().context("no monitor")?;
    let dispatched = vm.run_metric("main_bpf_dispatched").with_context(|| {
        format!(
            "no dispatch metric: {:?} {:?}",
            m.run_metrics, m.bpf_watch_errors
        )
    })?;
    ensure!(dispatched > 100.0, "only {dispatched} dispatches");
    ensure!(
        vm.run_metric("main_bpf_vtime").is_some_and(|v| v > 0.0),
        "{:?}",
        m.run_metrics
    );
    let text = std::fs::read_to_string(&m.output)?;
    let last = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["bpf"]["main_bpf_dispatched"][0].as_f64())
        .context("no sample line carries the watched counter")?;
    ensure!(
        last == dispatched,
        "last line {last} != metric {dispatched}"
    );
    ensure!(queued_seen > 0, "no snapshot found a queued task");
    Ok(())
}

/// scx-ktstr's dispatch counter, set by the host close to where `--error-after` fires.
const NEAR_THE_END: BpfMapWrite = BpfMapWrite::new(".bss", "nr_dispatched", 999_999_990);

/// A BPF global written from the host changes what the scheduler does: with
/// `--error-after 1000000000` scx-ktstr would run for days before its error; the host finds its
/// `.bss` map through the kernel's map IDR and the map's own BTF, sets `nr_dispatched` ten
/// dispatches short, and the scheduler fails within the test.
#[ktstr_test(
    scheduler = SCX_KTSTR,
    extra_sched_args = ["--error-after", "1000000000"],
    llcs = 1,
    duration_s = 3,
    bpf_map_write = NEAR_THE_END,
    expect_err,
    expect_scx_bpf_error_contains = "error-after: 1000000000 tasks dispatched",
    post_vm_unconditional = the_map_write_was_made
)]
fn a_bpf_global_written_from_the_host_changes_the_scheduler(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

fn the_map_write_was_made(vm: &VmResult) -> Result<()> {
    use anyhow::{ensure, Context};
    let m = vm.monitor.as_ref().context("no monitor")?;
    ensure!(
        m.map_writes
            .iter()
            .any(|w| w.contains(".bss") && w.contains("nr_dispatched = 999999990")),
        "map writes: {:?}",
        m.map_writes
    );
    Ok(())
}
