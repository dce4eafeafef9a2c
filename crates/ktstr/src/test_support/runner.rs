//! The host side of a `#[ktstr_test]`: boot a VM for it, run its body there, judge the
//! result, and leave a record for `cargo ktstr test`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use ktstr_assert::{AssertResult, DetailKind};

use super::dispatch::{GuestReport, TEST_ARG};
use super::entry::KtstrTestEntry;
use super::gauntlet::{plan, preset_memory_mib, variant_name, HostSize, Plan, TopoPreset};
use super::slots::vm_slot;
use super::tail::{StreamTail, TAIL_LIMIT};
use crate::kernel;
use crate::monitor::{snapshot_times, MonitorOptions, MonitorSummary};
use crate::run::{self, Mode, Outcome, RunOptions, SchedulerRun, Stream};
use crate::scenario::{CpuTopo, Phase, PhaseCgroupStats};
use crate::sched::SchedulerReport;
use ktstr_assert::Assert;
use ktstr_btf_monitor::MonitorThresholds;
use ktstr_btf_monitor::Snapshot;
use ktstr_topology::Topology;

/// How long a scheduler may take to attach in a test.
pub const TEST_ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed beyond the workload's duration for boot, setup and teardown.
pub const RUN_MARGIN: Duration = Duration::from_secs(240);
/// Set to `1` to run the host-side monitor during every VM test (`cargo ktstr test --monitor`).
pub const MONITOR_ENV: &str = "KTSTR_MONITOR";
/// Monitor samples per second during tests.
pub const TEST_MONITOR_HZ: u32 = 100;
/// Directory `cargo ktstr test` sets for per-test records.
pub const RESULTS_DIR_ENV: &str = "KTSTR_RESULTS_DIR";
/// Directory that receives each test's whole guest stdout and stderr (`<test>.stdout`,
/// `<test>.stderr`); without it only their tails are kept.
pub const OUTPUT_DIR_ENV: &str = "KTSTR_OUTPUT_DIR";

/// Everything the host knows about a test's VM run.
#[derive(Debug, Clone, Default)]
pub struct VmResult {
    /// The test's name.
    pub test: String,
    /// The kernel it booted.
    pub kernel: String,
    /// The guest topology, `numa,llcs,cores,threads`.
    pub topology: String,
    /// The body's verdict (`None` when it never delivered one).
    pub result: Option<AssertResult>,
    /// Why there is no verdict or why the run failed outside the body's checks.
    pub error: Option<String>,
    /// Per-step measurements.
    pub phases: Vec<PhaseCgroupStats>,
    /// The CPUs the guest had.
    pub topo: Option<CpuTopo>,
    /// What became of the scheduler the test started with (guest init's), for sched_ext tests.
    pub scheduler: Option<SchedulerReport>,
    /// Every scheduler that ran, in order: the first one, then those scheduler ops attached.
    pub schedulers: Vec<SchedulerReport>,
    /// The test process's stdout in the guest: its last [`super::TAIL_LIMIT`] bytes, led
    /// by a line counting what went before.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Why the run itself failed (boot, guest death, timeout), apart from the test's checks
    /// and its schedulers; part of `error` too.
    pub run_failure: Option<String>,
    /// Last console lines when the guest failed.
    pub console_tail: Vec<String>,
    /// Boot to end of the VM.
    pub wall: Duration,
    /// How each payload run ended.
    pub payloads: Vec<crate::scenario::PayloadResult>,
    /// What the host-side runqueue monitor saw, when it ran (monitor checks asked for,
    /// `num_snapshots`, or `KTSTR_MONITOR=1`).
    pub monitor: Option<MonitorSummary>,
    /// The snapshots taken (`num_snapshots` ones named `periodic_<i>`, then those
    /// `Op::capture_snapshot` and `Op::watch_snapshot` took), in the order taken.
    pub snapshots: Vec<Snapshot>,
    /// Snapshots asked for and not taken, with why.
    pub snapshot_errors: Vec<String>,
}

impl VmResult {
    /// A run metric of a watched BPF map field (`watch_bpf_maps`): `<object>_<label>`, with
    /// `_avg`/`_max` for a per-CPU gauge; `None` when it was never read.
    pub fn run_metric(&self, key: &str) -> Option<f64> {
        self.monitor.as_ref()?.run_metrics.get(key).copied()
    }

    /// The first snapshot named `name`.
    pub fn snapshot(&self, name: &str) -> Option<&Snapshot> {
        self.snapshots.iter().find(|s| s.name == name)
    }

    /// One cgroup's measurements over one phase.
    pub fn phase_cgroup(&self, phase: Phase, cgroup: &str) -> Option<&PhaseCgroupStats> {
        self.phases
            .iter()
            .find(|p| p.phase == phase && p.cgroup == cgroup)
    }

    /// True when the body's checks passed and nothing else went wrong.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.result.as_ref().is_some_and(|r| !r.is_fail())
    }

    /// Why the test failed, in a few lines (`None` if it passed).
    pub fn failure(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        let r = self.result.as_ref()?;
        r.is_fail().then(|| r.to_string())
    }
}

/// How a test ended, as `cargo ktstr test` tabulates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It passed (or failed as `expect_err` wanted).
    Pass,
    /// It failed.
    Fail,
    /// It could not run here.
    Skip,
}

/// One test's record, written to `$KTSTR_RESULTS_DIR/<test>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestRecord {
    /// Test name.
    pub test: String,
    /// `numa,llcs,cores,threads`.
    pub topology: String,
    /// The kernel booted.
    pub kernel: String,
    /// Scheduler name.
    pub scheduler: String,
    /// Wall time, seconds.
    pub duration_s: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// The first failing check (or the skip reason).
    pub reason: Option<String>,
    /// The full failure text.
    pub detail: Option<String>,
    /// How the run was placed, when worth saying: a gauntlet preset with more vCPUs than
    /// the host has CPUs ran under single-threaded TCG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn required() -> bool {
    std::env::var("KTSTR_REQUIRE_VM").is_ok_and(|v| v == "1")
}

/// Runs one registered test and panics (failing it under libtest) when it fails. Under
/// `cargo ktstr test --gauntlet` run by `cargo test` (not nextest, which lists and runs each
/// `gauntlet/<test>/<preset>` by itself), the test's gauntlet runs follow its own.
pub fn run_ktstr_test(entry: &KtstrTestEntry) {
    let mut failures = Vec::new();
    if let Err(e) = run_one(entry, &Target::own(entry)) {
        failures.push(e);
    }
    if super::gauntlet::gauntlet_mode() && std::env::var_os("NEXTEST_RUN_ID").is_none() {
        let verbose = std::env::var(super::gauntlet::VERBOSE_ENV).is_ok_and(|v| v == "1");
        for preset in super::gauntlet::GAUNTLET_PRESETS {
            if !preset.in_gauntlet() {
                continue;
            }
            if entry.host_only {
                break;
            }
            let host = HostSize::here();
            if let Plan::Rejected(why) = plan(preset, &entry.constraints, entry.memory_mib, host) {
                if verbose {
                    let name = variant_name(entry.name, preset.name);
                    let _ = std::io::Write::write_all(
                        &mut std::io::stderr(),
                        format!("ktstr: {name}: not run: {why}\n").as_bytes(),
                    );
                }
                continue;
            }
            match Target::preset(entry, preset) {
                Ok(Some(target)) => {
                    if let Err(e) = run_one(entry, &target) {
                        failures.push(e);
                    }
                }
                Ok(None) => {}
                Err(e) => failures.push(e),
            }
        }
    }
    if !failures.is_empty() {
        panic!("{}", failures.join("\n"));
    }
}

/// Runs `gauntlet/<entry>/<preset>`: `Ok` when it passed or was skipped (the skip said on
/// stderr), `Err(why)` when it failed or its constraints reject the preset.
pub fn run_gauntlet_variant(entry: &KtstrTestEntry, preset: &TopoPreset) -> Result<(), String> {
    match Target::preset(entry, preset)? {
        Some(target) => run_one(entry, &target),
        None => Ok(()),
    }
}

/// What one run boots: the test's own topology, or a gauntlet preset's.
struct Target {
    /// `<test>`, or `gauntlet/<test>/<preset>`.
    name: String,
    /// The preset's topology and memory (`None`: the test's own).
    preset: Option<(Topology, u64)>,
    /// Why the run is on single-threaded TCG (a preset bigger than the host).
    single_tcg: Option<String>,
}

impl Target {
    fn own(entry: &KtstrTestEntry) -> Target {
        Target {
            name: entry.name.to_string(),
            preset: None,
            single_tcg: None,
        }
    }

    /// The run of `entry` on `preset`; `Ok(None)` when this host cannot hold it (skipped:
    /// said on stderr and recorded), `Err` when the test's constraints reject it.
    fn preset(entry: &KtstrTestEntry, preset: &TopoPreset) -> Result<Option<Target>, String> {
        let name = variant_name(entry.name, preset.name);
        if entry.host_only {
            return Err(format!("{name}: host_only tests have no gauntlet"));
        }
        match plan(
            preset,
            &entry.constraints,
            entry.memory_mib,
            HostSize::here(),
        ) {
            Plan::Rejected(why) => Err(format!(
                "{name}: the test's constraints reject this preset ({why})"
            )),
            Plan::Skip(why) => {
                let why = format!("preset {}: {why}", preset.name);
                let target = Target {
                    name: name.clone(),
                    preset: None,
                    single_tcg: None,
                };
                write_record(
                    &target,
                    entry,
                    &None,
                    Duration::ZERO,
                    Verdict::Skip,
                    &Some(why.clone()),
                    &None,
                );
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!("SKIPPED {name}: {why}\n").as_bytes(),
                );
                Ok(None)
            }
            Plan::Run { single_tcg } => {
                let topology = preset.topology()?;
                Ok(Some(Target {
                    name,
                    preset: Some((topology, preset_memory_mib(preset, entry.memory_mib))),
                    single_tcg,
                }))
            }
        }
    }
}

/// Runs `entry` on `target`, records it, and says a skip on stderr; `Err` on failure.
fn run_one(entry: &KtstrTestEntry, target: &Target) -> Result<(), String> {
    let start = Instant::now();
    let (verdict, reason, detail, vm) = match judge(entry, target) {
        Judged::Pass(vm) => (Verdict::Pass, None, None, Some(vm)),
        Judged::Skip(why) => (Verdict::Skip, Some(why), None, None),
        Judged::Fail { reason, detail, vm } => (Verdict::Fail, Some(reason), Some(detail), vm),
    };
    write_record(
        target,
        entry,
        &vm,
        start.elapsed(),
        verdict,
        &reason,
        &detail,
    );
    match verdict {
        Verdict::Pass => Ok(()),
        Verdict::Skip => {
            let why = reason.unwrap_or_default();
            assert!(!required(), "KTSTR_REQUIRE_VM=1 but {why}");
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED {}: {why}\n", target.name).as_bytes(),
            );
            Ok(())
        }
        Verdict::Fail => Err(format!(
            "ktstr test {} failed: {}\n{}",
            target.name,
            reason.unwrap_or_default(),
            detail.unwrap_or_default()
        )),
    }
}

enum Judged {
    Pass(VmResult),
    Skip(String),
    Fail {
        reason: String,
        detail: String,
        vm: Option<VmResult>,
    },
}

fn fail(reason: impl Into<String>, detail: impl Into<String>, vm: Option<VmResult>) -> Judged {
    Judged::Fail {
        reason: reason.into(),
        detail: detail.into(),
        vm,
    }
}

/// Runs the test and decides pass, fail or skip, honouring `expect_err`, `post_vm` and
/// `post_vm_unconditional`.
fn judge(entry: &KtstrTestEntry, target: &Target) -> Judged {
    let vm = match run_vm(entry, target) {
        Ok(vm) => vm,
        Err(Unrunnable::Skip(why)) => return Judged::Skip(why),
        Err(Unrunnable::Error(e)) => return fail(e.clone(), e, None),
    };
    if let Some(Err(e)) = entry.post_vm_unconditional.map(|check| check(&vm)) {
        return fail(
            format!("post_vm_unconditional: {e:#}"),
            format!("{e:?}"),
            Some(vm),
        );
    }
    let failure = vm.failure();
    if entry.expect_err {
        if let Some(why) = &vm.run_failure {
            return fail(
                format!("expected the test to fail (expect_err), but the run itself failed: {why}"),
                failure.unwrap_or_default(),
                Some(vm),
            );
        }
        let Some(text) = failure else {
            return fail(
                "expected to fail (expect_err) but passed",
                vm.result
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
                Some(vm),
            );
        };
        if let Some(want) = entry.expect_scx_bpf_error_contains {
            let sched_text = vm
                .schedulers
                .iter()
                .map(|s| [s.kernel_log.join("\n"), s.output_tail.join("\n")].join("\n"))
                .collect::<Vec<_>>()
                .join("\n");
            if !sched_text.contains(want) {
                return fail(
                    format!("failed, but the scheduler's error does not contain `{want}`"),
                    format!("{text}\nscheduler output:\n{sched_text}"),
                    Some(vm),
                );
            }
        }
        return Judged::Pass(vm);
    }
    if let Some(text) = failure {
        let reason = vm
            .result
            .as_ref()
            .and_then(|r| r.first_failure())
            .map(|d| d.message.clone())
            .filter(|_| vm.error.is_none())
            .unwrap_or_else(|| text.lines().next().unwrap_or("").to_string());
        return fail(reason, text, Some(vm));
    }
    if let Some(post) = entry.post_vm {
        if let Err(e) = post(&vm) {
            return fail(format!("post_vm: {e:#}"), format!("{e:?}"), Some(vm));
        }
    }
    Judged::Pass(vm)
}

enum Unrunnable {
    Skip(String),
    Error(String),
}

fn qemu_present() -> bool {
    std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Boots a VM (or, for `host_only`, a child process here) and collects its result.
fn run_vm(entry: &KtstrTestEntry, target: &Target) -> Result<VmResult, Unrunnable> {
    let topology = match target.preset {
        Some((t, _)) => t,
        None => entry
            .topology()
            .map_err(|e| Unrunnable::Error(format!("topology: {e}")))?,
    };
    let topo_text = format!(
        "{},{},{},{}",
        topology.numa_nodes, topology.llcs, topology.cores, topology.threads
    );
    if entry.constraints.requires_smt && topology.threads < 2 {
        return Err(Unrunnable::Skip(format!(
            "requires_smt but the topology {topo_text} has one thread per core"
        )));
    }
    if entry.host_only {
        return run_on_host(entry, topo_text);
    }
    if !qemu_present() {
        // ktstr's own KVM VMM needs no QEMU, but only where KVM can boot Linux.
        if let Some(why) = ktstr_vmm::host_kvm().unusable_reason() {
            return Err(Unrunnable::Skip(format!(
                "qemu-system-x86_64 is not installed (scripts/setup installs it) and {why}"
            )));
        }
    }
    let kernel = kernel::resolve(None, &mut |_| {}).map_err(|e| {
        Unrunnable::Skip(format!(
            "no kernel ({e}); run `ktstr kernel fetch` or set KTSTR_KERNEL"
        ))
    })?;
    let main_binary = entry
        .scheduler
        .resolve_binary()
        .map_err(Unrunnable::Error)?;
    let scheduler = main_binary.clone().map(|binary| SchedulerRun {
        binary,
        args: entry
            .scheduler
            .sched_args
            .iter()
            .chain(entry.extra_sched_args)
            .map(|s| s.to_string())
            .collect(),
        attach_timeout: TEST_ATTACH_TIMEOUT,
    });
    let mut opts =
        RunOptions::new(kernel.clone(), topology).map_err(|e| Unrunnable::Error(e.to_string()))?;
    // Every scheduler a scheduler op may attach, at the path the guest looks for it.
    let staged = entry
        .staged_schedulers
        .iter()
        .map(|s| Ok((s.guest_path(), s.resolve_binary()?)))
        .collect::<Result<Vec<_>, String>>()
        .map_err(Unrunnable::Error)?;
    for (path, binary) in std::iter::once((entry.scheduler.guest_path(), main_binary)).chain(staged)
    {
        if let (Some(path), Some(binary)) = (path, binary) {
            if !opts.extra_files.iter().any(|(p, _)| *p == path) {
                opts.extra_files.push((path, binary));
            }
        }
    }
    for p in entry.payload.iter().chain(entry.workloads.iter()) {
        let binary = p.resolve_binary().map_err(Unrunnable::Error)?;
        opts.extra_files.push((p.guest_path(), binary));
    }
    opts.memory_mib = match target.preset {
        Some((_, mib)) => Some(mib),
        None => entry.memory_mib,
    };
    if let Some(why) = &target.single_tcg {
        // More vCPUs than host CPUs: one host thread runs them all, as QEMU's TCG.
        opts.vmm = ktstr_vmm::VmmKind::Qemu;
        opts.accel = ktstr_vmm::VmmRequest::Tcg;
        opts.tcg_threads = Some(ktstr_vmm::TcgThreads::Single);
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("ktstr: {}: {why}\n", target.name).as_bytes(),
        );
    }
    // Sysctls and kernel arguments of every scheduler the test may run apply from boot:
    // the kernel command line is fixed then, and sysctls are set before any scheduler starts.
    let schedulers =
        || std::iter::once(entry.scheduler).chain(entry.staged_schedulers.iter().copied());
    opts.sysctls = schedulers()
        .flat_map(|s| s.sysctls)
        .map(|s| (s.key.to_string(), s.value.to_string()))
        .collect();
    opts.extra_cmdline = schedulers()
        .flat_map(|s| s.kargs.iter().copied())
        .chain((!entry.kaslr).then_some("nokaslr"))
        .collect::<Vec<_>>()
        .join(" ");
    opts.timeout = entry.duration() + RUN_MARGIN;
    // Bare names are looked up in PATH when the initramfs is built.
    opts.include_files = entry
        .extra_include_files
        .iter()
        .map(PathBuf::from)
        .collect();
    opts.scheduler = scheduler;
    let assert = entry.effective_assert();
    if assert.wants_monitor()
        || entry.watchdog_timeout_s.is_some()
        || entry.num_snapshots > 0
        || entry.host_ops
        || !entry.bpf_map_writes.is_empty()
        || !entry.watch_bpf_maps.is_empty()
        || std::env::var(MONITOR_ENV).is_ok_and(|v| v == "1")
    {
        let mut m = monitor_options(&file_stem(&target.name), &assert);
        m.snapshot_at = snapshot_times(entry.num_snapshots, entry.duration());
        m.map_writes = entry
            .bpf_map_writes
            .iter()
            .map(|w| (w.map_suffix.to_string(), w.field.to_string(), w.value))
            .collect();
        m.watch_maps = entry.watch_bpf_maps.to_vec();
        if let Some(secs) = entry.watchdog_timeout_s {
            let hz = kernel
                .config_text()
                .and_then(|c| crate::watchdog::config_hz(&c))
                .ok_or_else(|| {
                    Unrunnable::Error(format!(
                        "watchdog_timeout_s needs the kernel's CONFIG_HZ; kernel {} has no known .config",
                        kernel.name
                    ))
                })?;
            let jiffies = secs.checked_mul(hz).ok_or_else(|| {
                Unrunnable::Error(format!("watchdog_timeout_s = {secs} is too large"))
            })?;
            m.watchdog_jiffies = Some(jiffies);
        }
        opts.monitor = Some(m);
    }
    let mode = Mode::Exec(vec!["/init".into(), TEST_ARG.into(), entry.name.into()]);
    let _slot = vm_slot().map_err(|e| Unrunnable::Error(format!("VM slot lock: {e}")))?;
    let (mut stdout, mut stderr) = output_tails(&file_stem(&target.name));
    let cancel = AtomicBool::new(false);
    let report = run::run(
        &opts,
        &mode,
        &mut |s, b| match s {
            Stream::Stdout => stdout.push(b),
            Stream::Stderr => stderr.push(b),
        },
        &cancel,
    )
    .map_err(|e| Unrunnable::Error(run::one_line_error(&e)))?;
    for e in [stdout.file_error(), stderr.file_error()]
        .into_iter()
        .flatten()
    {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("ktstr: {}: guest output not saved: {e}\n", target.name).as_bytes(),
        );
    }
    if let Some(line) = &report.fallback {
        // Said as `ktstr exec` says it, past libtest's capture like SKIPPED.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("ktstr: {}: {line}\n", target.name).as_bytes(),
        );
    }
    let stdout = stdout.into_text();
    let mut vm = VmResult {
        test: target.name.clone(),
        kernel: kernel.name.clone(),
        topology: topo_text,
        stderr: stderr.into_text(),
        scheduler: report.scheduler.clone(),
        console_tail: report.console_tail.clone(),
        wall: report.launch_to_end,
        ..VmResult::default()
    };
    let guest_error = match &report.outcome {
        Outcome::Command(exit) => (exit.code != Some(0)).then(|| {
            format!(
                "the test process in the guest ended with {}",
                match (exit.code, exit.signal) {
                    (Some(c), _) => format!("status {c}"),
                    (_, Some(s)) => format!("signal {s}"),
                    _ => "no status".into(),
                }
            )
        }),
        Outcome::CommandTimedOut { after } => Some(format!(
            "timed out after {:.0} s (duration {} s + {} s margin)",
            after.as_secs_f64(),
            entry.duration().as_secs(),
            RUN_MARGIN.as_secs()
        )),
        Outcome::GuestDied(f) => Some(format!("the guest kernel died during the test: {f}")),
        Outcome::Infrastructure(f) => Some(format!(
            "infrastructure failure before the test ran ({} attempt(s){}): {f}",
            report.retried.len() + 1,
            match f.retry() {
                run::Retry::Deterministic => ", not retried: it fails the same way every time",
                run::Retry::Transient => "",
            }
        )),
        Outcome::SchedulerNotAttached => Some("the scheduler did not attach".into()),
        Outcome::Interrupted => Some("interrupted".into()),
        Outcome::ShellEnded => Some("unexpected shell end".into()),
    };
    // A run that failed by itself (boot, guest death, timeout) is not the failure
    // `expect_err` waits for.
    if !matches!(
        report.outcome,
        Outcome::Command(_) | Outcome::SchedulerNotAttached
    ) {
        vm.run_failure = guest_error.clone();
    }
    let guest_schedulers =
        absorb_report(&mut vm, report.test_report.as_deref(), &stdout, guest_error);
    vm.monitor = report.monitor.clone();
    if let Some(m) = vm.monitor.as_mut() {
        vm.snapshots = std::mem::take(&mut m.snapshots);
        vm.snapshot_errors = m.snapshot_errors.clone();
    }
    judge_monitor(&mut vm, &assert);
    vm.schedulers.extend(vm.scheduler.iter().cloned());
    vm.schedulers.extend(guest_schedulers);
    for s in &vm.schedulers {
        if !s.healthy() {
            let kind = scheduler_kind(s);
            let mut text = format!("{kind:?}: {}", s.summary());
            for l in s
                .kernel_log
                .iter()
                .chain(s.output_tail.iter().rev().take(30).rev())
            {
                text.push_str(&format!("\n  | {l}"));
            }
            vm.error = Some(match vm.error.take() {
                Some(e) => format!("{text}\n{e}"),
                None => text,
            });
        }
    }
    match (&report.failure_dump, vm.error.as_mut()) {
        (Some(Ok(path)), Some(e)) => e.push_str(&format!("\nfailure dump -> {}", path.display())),
        (Some(Err(why)), Some(e)) => e.push_str(&format!("\nfailure dump not written: {why}")),
        _ => {}
    }
    if vm.error.is_some() && !vm.console_tail.is_empty() {
        let tail = vm.console_tail.join("\n  | ");
        if let Some(e) = vm.error.as_mut() {
            e.push_str(&format!("\nlast console lines:\n  | {tail}"));
        }
    }
    Ok(vm)
}

/// Where a test's monitor writes: `<cache>/monitor/<test>.jsonl` (and `.trace.json`).
fn monitor_options(test: &str, assert: &Assert) -> MonitorOptions {
    let dir = crate::kernel::cache_root().join("monitor");
    let _ = std::fs::create_dir_all(&dir);
    let d = MonitorThresholds::default();
    MonitorOptions {
        thresholds: MonitorThresholds {
            max_imbalance_ratio: assert.max_imbalance_ratio.unwrap_or(d.max_imbalance_ratio),
            max_local_dsq_depth: assert.max_local_dsq_depth.unwrap_or(d.max_local_dsq_depth),
            fail_on_rq_clock_stuck: assert
                .fail_on_rq_clock_stuck
                .unwrap_or(d.fail_on_rq_clock_stuck),
            sustained_samples: assert.sustained_samples.unwrap_or(d.sustained_samples),
            max_wait_ms: assert.max_wait_ms,
            max_fallback_rate: assert.max_fallback_rate.unwrap_or(d.max_fallback_rate),
            max_keep_last_rate: assert.max_keep_last_rate.unwrap_or(d.max_keep_last_rate),
        },
        trace: Some(dir.join(format!("{test}.trace.json"))),
        ..MonitorOptions::new(dir.join(format!("{test}.jsonl")), TEST_MONITOR_HZ)
    }
}

/// Reports the monitor's findings on the result, and fails the test when its checks are
/// enforced (`Assert::with_monitor_defaults`) or a stall bound (`no_stall_over`) is passed.
fn judge_monitor(vm: &mut VmResult, assert: &Assert) {
    let Some(m) = &vm.monitor else { return };
    let mut lines = vec![m.line()];
    lines.extend(m.check_lines().into_iter().map(|l| format!("monitor: {l}")));
    // What the watchdog shortener did, or why it did nothing (watchdog_timeout_s).
    lines.extend(
        m.notes
            .iter()
            .filter(|n| n.starts_with("watchdog:"))
            .map(|n| format!("monitor: {n}")),
    );
    lines.extend(
        vm.snapshots
            .iter()
            .map(|s| format!("monitor: {}", s.line())),
    );
    lines.extend(
        m.snapshots_file
            .iter()
            .map(|f| format!("monitor: snapshots -> {}", f.display())),
    );
    lines.extend(
        vm.snapshot_errors
            .iter()
            .map(|e| format!("monitor: snapshot not taken: {e}")),
    );
    if let Some(r) = vm.result.as_mut() {
        r.notes.extend(lines.iter().cloned());
    }
    let mut failures = Vec::new();
    if assert.enforce_monitor_thresholds {
        let failed = m.failed_checks();
        if !failed.is_empty() {
            failures.push(format!("monitor checks failed: {}", failed.join(", ")));
        }
    }
    if let Some(bound) = assert.max_wait_ms {
        let report = m.report.as_ref();
        match (report.map(|r| r.wait_passed), report.and_then(|r| r.longest_wait.as_ref())) {
            (Some(Some(false)), Some(w)) => failures.push(format!(
                "Monitor: tasks waited {} ms on CPU {} behind {}[{}] > {bound} ms (no_stall_over)",
                w.ms, w.cpu, w.comm, w.pid
            )),
            (Some(_), _) if m.samples > 0 => {}
            _ => failures.push(format!(
                "Monitor: no_stall_over({bound}) could not be judged: the monitor took no samples ({})",
                m.setup_error.as_deref().unwrap_or("no reason given")
            )),
        }
    }
    if !failures.is_empty() {
        failures.extend(lines);
        let text = failures.join("\n");
        vm.error = Some(match vm.error.take() {
            Some(e) => format!("{e}\n{text}"),
            None => text,
        });
    }
}

/// The detail kind that names a scheduler's death.
fn scheduler_kind(s: &SchedulerReport) -> DetailKind {
    use crate::sched::SchedulerVerdict as V;
    match s.verdict {
        V::ExitedCleanly => DetailKind::SchedulerExitedCleanly,
        V::DiedUnknown { .. } => DetailKind::SchedulerDiedUnknownReason,
        _ => DetailKind::SchedulerCrashed,
    }
}

/// Fills `vm` from the report the test body sent (typed, never taken from its output), its
/// stdout and its exit; returns the schedulers the test process attached.
fn absorb_report(
    vm: &mut VmResult,
    report: Option<&[u8]>,
    stdout: &str,
    process_error: Option<String>,
) -> Vec<SchedulerReport> {
    let mut schedulers = Vec::new();
    vm.stdout = stdout.to_string();
    let parsed = report.map(GuestReport::from_json);
    match parsed {
        Some(Ok(report)) => {
            schedulers = report.schedulers;
            vm.payloads = report.payloads;
            vm.phases = report.phases;
            vm.topo = Some(report.topo);
            match report.result {
                Ok(r) => vm.result = Some(r),
                Err(e) => vm.error = Some(format!("the test body failed: {e}")),
            }
            if vm.error.is_none() {
                vm.error = process_error;
            }
        }
        missing_or_bad => {
            let why = match missing_or_bad {
                Some(Err(e)) => {
                    format!("the test process delivered a report that does not parse: {e}")
                }
                _ => "the test process delivered no report".to_string(),
            };
            vm.error = Some(process_error.unwrap_or(why));
            if !vm.stderr.is_empty() {
                let tail: Vec<&str> = vm.stderr.lines().rev().take(20).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                if let Some(e) = vm.error.as_mut() {
                    e.push_str(&format!("\nits stderr:\n  | {}", tail.join("\n  | ")));
                }
            }
        }
    }
    schedulers
}

/// `host_only`: the body runs in a child process of this binary, here.
fn run_on_host(entry: &KtstrTestEntry, topology: String) -> Result<VmResult, Unrunnable> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Unrunnable::Skip(
            "host_only tests create cgroups and need root".into(),
        ));
    }
    let exe = std::env::current_exe().map_err(|e| Unrunnable::Error(e.to_string()))?;
    let report_path = std::env::temp_dir().join(format!(
        "ktstr-report-{}-{}.json",
        std::process::id(),
        entry.name
    ));
    let _ = std::fs::remove_file(&report_path);
    let start = Instant::now();
    let out = std::process::Command::new(exe)
        .args([TEST_ARG, entry.name])
        .env(crate::guest::REPORT_PATH_ENV, &report_path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Unrunnable::Error(format!("running the test body: {e}")))?;
    let report = std::fs::read(&report_path).ok();
    let _ = std::fs::remove_file(&report_path);
    let mut vm = VmResult {
        test: entry.name.to_string(),
        kernel: "host".into(),
        topology,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        wall: start.elapsed(),
        ..VmResult::default()
    };
    let error =
        (!out.status.success()).then(|| format!("the test process ended with {}", out.status));
    let _ = absorb_report(
        &mut vm,
        report.as_deref(),
        &String::from_utf8_lossy(&out.stdout),
        error,
    );
    Ok(vm)
}

/// The test's stdout and stderr tails; with `$KTSTR_OUTPUT_DIR` set, each whole stream
/// also goes to `<dir>/<test>.stdout` and `.stderr`.
fn output_tails(test: &str) -> (StreamTail, StreamTail) {
    let tail = |ext: &str| {
        let t = StreamTail::new(TAIL_LIMIT);
        match std::env::var_os(OUTPUT_DIR_ENV).map(PathBuf::from) {
            Some(dir) => {
                let _ = std::fs::create_dir_all(&dir);
                t.with_file(dir.join(format!("{test}.{ext}")))
            }
            None => t,
        }
    };
    (tail("stdout"), tail("stderr"))
}

/// A run's name as a file name: `gauntlet/t/p` becomes `gauntlet__t__p`.
fn file_stem(name: &str) -> String {
    name.replace('/', "__")
}

fn write_record(
    target: &Target,
    entry: &KtstrTestEntry,
    vm: &Option<VmResult>,
    wall: Duration,
    verdict: Verdict,
    reason: &Option<String>,
    detail: &Option<String>,
) {
    let Some(dir) = std::env::var_os(RESULTS_DIR_ENV).map(PathBuf::from) else {
        return;
    };
    let name = target.name.as_str();
    let record = TestRecord {
        test: name.to_string(),
        topology: vm.as_ref().map(|v| v.topology.clone()).unwrap_or_else(|| {
            // A gauntlet run that did not boot: its preset's shape.
            super::gauntlet::parse_variant_name(name)
                .and_then(|(_, p)| super::gauntlet::preset(p))
                .map(|p| p.topology())
                .unwrap_or_else(|| entry.topology().map_err(|e| e.to_string()))
                .map(|t| format!("{},{},{},{}", t.numa_nodes, t.llcs, t.cores, t.threads))
                .unwrap_or_default()
        }),
        kernel: vm.as_ref().map(|v| v.kernel.clone()).unwrap_or_default(),
        scheduler: entry.scheduler.name.to_string(),
        // The VM's own time when there was one: waiting for a VM slot is not the test's.
        duration_s: vm.as_ref().map_or(wall, |v| v.wall).as_secs_f64(),
        verdict,
        reason: reason.clone(),
        detail: detail.clone(),
        note: target.single_tcg.clone(),
    };
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(json) = serde_json::to_string_pretty(&record) {
        let _ = std::fs::write(dir.join(format!("{}.json", file_stem(name))), json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_report_names_the_process_end_and_stderr() {
        let mut vm = VmResult {
            stderr: "thread panicked at x\n".into(),
            ..VmResult::default()
        };
        let _ = absorb_report(&mut vm, None, "hello\n", Some("status 101".into()));
        let e = vm.error.unwrap();
        assert!(e.contains("status 101") && e.contains("panicked"), "{e}");
        assert_eq!(vm.stdout, "hello\n");
    }

    #[test]
    fn nothing_the_body_prints_is_taken_for_its_report() {
        let pass = GuestReport {
            result: Ok(AssertResult::pass()),
            phases: vec![],
            topo: CpuTopo::default(),
            schedulers: vec![],
            payloads: vec![],
            elapsed_ms: 1,
        };
        let json = serde_json::to_string(&pass).unwrap();
        // The old marker line, a bare report and a frame-shaped line in stdout: no report.
        let forged = format!("\u{1e}KTSTR-REPORT {json}\n{json}\nKTSF\t\0\0\0\n");
        let mut vm = VmResult::default();
        let _ = absorb_report(&mut vm, None, &forged, None);
        assert!(!vm.passed());
        assert_eq!(
            vm.error.as_deref(),
            Some("the test process delivered no report")
        );
        assert_eq!(vm.stdout, forged, "stdout is kept whole");
        // A damaged report is said to be one.
        let mut vm = VmResult::default();
        let _ = absorb_report(&mut vm, Some(&json.as_bytes()[..10]), "", None);
        assert!(vm
            .error
            .unwrap()
            .starts_with("the test process delivered a report that does not parse"));
        // The real one counts, whatever stdout says.
        let mut vm = VmResult::default();
        let _ = absorb_report(&mut vm, Some(json.as_bytes()), &forged, None);
        assert!(vm.passed(), "{:?}", vm.error);
    }

    #[test]
    fn a_report_with_a_failed_check_fails_the_result() {
        let mut failed = AssertResult::pass();
        failed.merge(AssertResult::fail(ktstr_assert::AssertDetail {
            kind: DetailKind::Stuck,
            message: "cg_0: worker 7 longest progress gap 3000 ms > 2000 ms".into(),
            cgroup: Some("cg_0".into()),
            worker: Some(7),
            measured: Some(3000.0),
            bound: Some(2000.0),
        }));
        let report = GuestReport {
            result: Ok(failed),
            phases: vec![],
            topo: CpuTopo::default(),
            schedulers: vec![],
            payloads: vec![],
            elapsed_ms: 1,
        };
        let json = serde_json::to_vec(&report).unwrap();
        let mut vm = VmResult::default();
        let _ = absorb_report(&mut vm, Some(&json), "", None);
        assert!(!vm.passed());
        assert!(vm.failure().unwrap().contains("worker 7"));
    }
}
