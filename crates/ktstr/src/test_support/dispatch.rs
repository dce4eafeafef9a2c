//! The test binary's other lives: guest `/init` (as PID 1) and one test body in the guest
//! (`--ktstr-test NAME`). Chosen before `main` by a constructor `#[ktstr_test]` emits.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use ktstr_assert::AssertResult;

use super::entry::KtstrTestEntry;
use crate::scenario::{CpuTopo, Ctx, PhaseCgroupStats, DEFAULT_WORKLOAD_ROOT};

/// The argument that makes the test binary run one test body and exit.
pub const TEST_ARG: &str = "--ktstr-test";

/// What a test body produced, sent from the guest to the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestReport {
    /// The body's verdict, or its error (a panic included).
    pub result: Result<AssertResult, String>,
    /// Per-step measurements.
    pub phases: Vec<PhaseCgroupStats>,
    /// The CPUs the guest had.
    pub topo: CpuTopo,
    /// Payload runs, in the order they ended.
    #[serde(default)]
    pub payloads: Vec<crate::scenario::PayloadResult>,
    /// Schedulers the test process attached (by scheduler ops), in order.
    #[serde(default)]
    pub schedulers: Vec<crate::sched::SchedulerReport>,
    /// How long the body ran, ms.
    pub elapsed_ms: u64,
}

impl GuestReport {
    /// The report a test body wrote (JSON), or why it does not parse.
    pub fn from_json(json: &[u8]) -> Result<GuestReport, String> {
        serde_json::from_slice(json).map_err(|e| e.to_string())
    }
}

static DISPATCHED: AtomicBool = AtomicBool::new(false);

fn cmdline() -> Vec<String> {
    std::fs::read("/proc/self/cmdline")
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs before `main`: becomes guest init as PID 1, runs one test body when asked, and
/// otherwise returns so the test harness starts as usual.
pub fn early_dispatch() {
    if DISPATCHED.swap(true, Ordering::SeqCst) {
        return;
    }
    if crate::guest::is_guest_init() {
        crate::guest::init_main();
    }
    let args = cmdline();
    if args.get(1).map(String::as_str) == Some(TEST_ARG) {
        let name = args.get(2).cloned().unwrap_or_default();
        std::process::exit(run_test_body(&name));
    }
    if let Some(code) = gauntlet_dispatch(&args) {
        std::process::exit(code);
    }
}

/// The gauntlet's part of libtest's command line: under `$KTSTR_GAUNTLET=1`, `--list` also
/// lists `gauntlet/<test>/<preset>` for every preset a test's constraints admit (and with
/// `$KTSTR_VERBOSE=1` says on stderr why the others are left out), then libtest lists its
/// own; a `gauntlet/..` name to run (nextest's `--exact NAME`) runs here and exits with
/// 0 (passed or skipped) or 101 (failed, or a preset the constraints reject).
fn gauntlet_dispatch(args: &[String]) -> Option<i32> {
    use super::gauntlet::{gauntlet_mode, listing, parse_variant_name, preset, HostSize};
    let req = super::gauntlet::LibtestArgs::parse(args.get(1..).unwrap_or_default());
    if req.list {
        if gauntlet_mode() {
            let (names, rejected) =
                listing(super::KTSTR_TESTS.iter(), HostSize::here(), req.ignored);
            let mut out = std::io::stdout().lock();
            for n in names.iter().filter(|n| req.selects(n)) {
                let _ = writeln!(out, "{n}: test");
            }
            let _ = out.flush();
            let rejected: Vec<&String> = rejected
                .iter()
                .filter(|r| r.split(": ").next().is_some_and(|n| req.selects(n)))
                .collect();
            if std::env::var(super::gauntlet::VERBOSE_ENV).is_ok_and(|v| v == "1") {
                for r in &rejected {
                    eprintln!("ktstr: {r}");
                }
            }
            // For `cargo ktstr test`, which reads them back (nextest keeps a listing's stderr).
            let file_tag = if req.ignored { "-ignored" } else { "" };
            if let Some(dir) = std::env::var_os(super::RESULTS_DIR_ENV) {
                let text: String = rejected.iter().map(|r| format!("{r}\n")).collect();
                let file = Path::new(&dir).join(format!(
                    "{}{}{file_tag}.txt",
                    super::gauntlet::REJECTED_PREFIX,
                    std::process::id()
                ));
                let _ = std::fs::write(file, text);
            }
        }
        return None;
    }
    let runs = req.gauntlet_runs();
    if runs.is_empty() {
        return None;
    }
    let mut failed = false;
    for name in runs {
        let Some((test, preset_name)) = parse_variant_name(name) else {
            continue;
        };
        let outcome = match (KtstrTestEntry::find(test), preset(preset_name)) {
            (None, _) => Err(format!("{name}: no test named `{test}` in this binary")),
            (_, None) => Err(format!("{name}: no gauntlet preset named `{preset_name}`")),
            (Some(entry), Some(p)) => super::runner::run_gauntlet_variant(entry, p),
        };
        match outcome {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                eprintln!("{e}");
                println!("test {name} ... FAILED");
                failed = true;
            }
        }
    }
    Some(if failed { 101 } else { 0 })
}

/// Runs test `name`'s body here and writes its [`GuestReport`] to the file
/// `$KTSTR_REPORT_PATH` names (guest init, or the host for `host_only`, reads it from
/// there; nothing the body prints is taken for it); without that variable (the body run by
/// hand) the report goes to stdout. Returns the exit status.
pub fn run_test_body(name: &str) -> i32 {
    let Some(entry) = KtstrTestEntry::find(name) else {
        eprintln!("ktstr: no test named `{name}` in this binary");
        return 2;
    };
    let start = Instant::now();
    let mut root = entry
        .workload_root_cgroup
        .or(entry.scheduler.cgroup_parent)
        .unwrap_or(DEFAULT_WORKLOAD_ROOT)
        .to_string();
    if entry.host_only {
        // Several host_only tests may run at once on one host: each gets its own root.
        root = format!("{root}-{}", std::process::id());
    }
    let (result, phases, topo, schedulers, payloads) = match Ctx::new(
        entry.name,
        &root,
        entry.duration(),
        entry.effective_assert(),
    ) {
        Err(e) => (
            Err(format!("setting up the test context: {e:#}")),
            vec![],
            CpuTopo::default(),
            vec![],
            vec![],
        ),
        Ok(mut ctx) => {
            ctx.payload = entry.payload;
            let writes = if entry.bpf_map_writes.is_empty() {
                Ok(String::new())
            } else {
                crate::request::ask_host(crate::request::RequestOp::AwaitMapWrites)
            };
            let body = match writes {
                Ok(_) => {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (entry.func)(&ctx)))
                }
                Err(e) => Ok(Err(anyhow::anyhow!("bpf_map_write: {e}"))),
            };
            let result = match body {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(p) => Err(format!("the test body panicked: {}", panic_text(&*p))),
            };
            let phases = ctx.take_phases();
            let topo = ctx.topo.clone();
            let schedulers = ctx.lock_scheduler().finish();
            let payloads = ctx.take_payload_results();
            drop(ctx);
            (result, phases, topo, schedulers, payloads)
        }
    };
    let report = GuestReport {
        result,
        phases,
        topo,
        schedulers,
        payloads,
        elapsed_ms: start.elapsed().as_millis() as u64,
    };
    let json = match serde_json::to_string(&report) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("ktstr: cannot encode the report: {e}");
            return 3;
        }
    };
    match std::env::var_os(crate::guest::REPORT_PATH_ENV) {
        Some(path) => {
            if let Err(e) = std::fs::write(&path, &json) {
                eprintln!(
                    "ktstr: cannot write the report to {}: {e}",
                    Path::new(&path).display()
                );
                return 3;
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{json}");
            let _ = out.flush();
        }
    }
    0
}

/// The message of a panic payload.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_round_trips_and_garbage_is_refused() {
        let report = GuestReport {
            result: Err("boom".into()),
            phases: vec![],
            topo: CpuTopo::default(),
            schedulers: vec![],
            payloads: vec![],
            elapsed_ms: 5,
        };
        let json = serde_json::to_vec(&report).unwrap();
        let got = GuestReport::from_json(&json).unwrap();
        assert_eq!(got.result.unwrap_err(), "boom");
        assert!(GuestReport::from_json(b"nothing here").is_err());
    }
}
