//! VM tests of `ktstr exec --monitor`: the host reads each CPU's runqueue from guest RAM
//! while a workload whose effect is known in advance runs, and the JSON lines must show
//! that effect.
//!
//! Like `tests/vm.rs` they need QEMU and a kernel (the fetched Debian kernel: its BTF and
//! sched_ext are what the monitor reads), skip with the reason printed when either is
//! missing unless `KTSTR_REQUIRE_VM=1`, and take the same lock so one VM runs at a time.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use common::{scx_simple, test_kernel, text, vm_slot, KTSTR};

/// Runs `script` in a 2-CPU guest with the monitor on; returns ktstr's output and the
/// parsed JSON lines.
fn monitored(name: &str, hz: u32, script: &str) -> (Output, Vec<Value>) {
    let (out, lines, _) = monitored_traced(name, hz, script);
    (out, lines)
}

/// [`monitored`], also writing `--monitor-trace` and returning it parsed.
fn monitored_traced(name: &str, hz: u32, script: &str) -> (Output, Vec<Value>, Value) {
    let kernel = test_kernel().expect("checked by vm_slot");
    let file: PathBuf =
        std::env::temp_dir().join(format!("ktstr-monitor-{name}-{}.jsonl", std::process::id()));
    let trace: PathBuf =
        std::env::temp_dir().join(format!("ktstr-monitor-{name}-{}.json", std::process::id()));
    let out = Command::new(KTSTR)
        .args(["exec", "-v", "--kernel", kernel, "--topology", "1,1,2,1"])
        .arg("--monitor")
        .arg(&file)
        .arg("--monitor-trace")
        .arg(&trace)
        .args(["--monitor-hz", &hz.to_string(), "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("run ktstr");
    assert!(
        out.status.success(),
        "ktstr failed: {}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .expect("monitor output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l}: {e}")))
        .collect();
    let _ = std::fs::remove_file(&file);
    let trace_json: Value = serde_json::from_slice(&std::fs::read(&trace).expect("trace file"))
        .unwrap_or_else(|e| panic!("trace {} is not valid JSON: {e}", trace.display()));
    let _ = std::fs::remove_file(&trace);
    (out, lines, trace_json)
}

/// The worst value and CPU of check `name` from ktstr's summary line
/// (`ktstr: monitor: check NAME: worst V (cpu C) threshold ...`).
fn check_line(stderr: &str, name: &str) -> (f64, Option<u64>, String) {
    let prefix = format!("ktstr: monitor: check {name}: worst ");
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} check line in\n{stderr}"));
    let value = line
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value in {line}"));
    let cpu = line
        .split_once("(cpu ")
        .and_then(|(_, r)| r.split(')').next())
        .and_then(|c| c.parse().ok());
    (value, cpu, line.to_string())
}

/// CPU `cpu`'s entry of one sample.
fn cpu(sample: &Value, cpu: u64) -> &Value {
    sample["cpus"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["cpu"] == cpu))
        .unwrap_or_else(|| panic!("no CPU {cpu} in {sample}"))
}

/// Samples from 1 s after the first (the workers have started) to 0.5 s before the last
/// (the command is still sleeping).
fn steady(lines: &[Value]) -> Vec<&Value> {
    let t = |v: &Value| v["t_ns"].as_u64().expect("t_ns");
    let (first, last) = (t(&lines[0]), t(&lines[lines.len() - 1]));
    lines
        .iter()
        .filter(|l| t(l) >= first + 1_000_000_000 && t(l) + 500_000_000 <= last)
        .collect()
}

fn share(samples: &[&Value], pred: impl Fn(&Value) -> bool) -> f64 {
    samples.iter().filter(|s| pred(s)).count() as f64 / samples.len().max(1) as f64
}

/// Sets its own comm, then spins: `sh -c` of busybox cannot be renamed by copying.
fn spinners(n: u32, cpu: u32, comm: &str) -> String {
    format!(
        "for i in $(seq {n}); do taskset -c {cpu} sh -c 'printf {comm} > /proc/self/comm; \
         while :; do :; done' & done; sleep 4"
    )
}

#[test]
fn three_spinners_pinned_to_cpu1_are_seen_there() {
    let Some(_slot) = vm_slot() else { return };
    let (out, lines, trace) = monitored_traced("cpu1", 200, &spinners(3, 1, "spin"));
    let stderr = text(&out.stderr);
    assert!(
        lines.len() > 100,
        "{} samples in a 4 s command at 200 Hz\n{stderr}",
        lines.len()
    );
    // The contract's names are in every CPU entry.
    for key in [
        "nr_running",
        "curr_pid",
        "curr_comm",
        "scx_nr_running",
        "fair_nr_running",
        "rq_clock_ns",
        "nr_switches",
    ] {
        assert!(
            cpu(&lines[0], 0).get(key).is_some(),
            "{key} in {}",
            lines[0]
        );
    }
    let s = steady(&lines);
    assert!(s.len() > 50, "{} steady samples\n{stderr}", s.len());
    let loaded = share(&s, |v| cpu(v, 1)["nr_running"].as_u64() >= Some(3));
    let spinning = share(&s, |v| cpu(v, 1)["curr_comm"] == "spin");
    let fair = share(&s, |v| cpu(v, 1)["fair_nr_running"].as_u64() >= Some(3));
    assert!(
        loaded >= 0.9,
        "CPU 1 had nr_running >= 3 in {loaded:.2} of samples"
    );
    assert!(
        spinning >= 0.9,
        "CPU 1 ran `spin` in {spinning:.2} of samples"
    );
    assert!(
        fair >= 0.9,
        "CPU 1 had 3 fair tasks in {fair:.2} of samples"
    );
    // The spinners are pinned: CPU 0 never runs one.
    assert!(s.iter().all(|v| cpu(v, 0)["curr_comm"] != "spin"));
    assert!(
        stderr.contains("ktstr: monitor: ") && stderr.contains("samples in"),
        "{stderr}"
    );
    // The imbalance check saw CPU 1 with 3+ runnable next to a CPU 0 with 0 or 1. (Its worst
    // sample may be CPU 0 for a moment, while the shell forks the workers before they are pinned.)
    let (ratio, _busiest, line) = check_line(&stderr, "max_imbalance_ratio");
    assert!(ratio >= 3.0, "imbalance {ratio}: {line}\n{stderr}");
    for name in ["max_local_dsq_depth", "rq_clock_stuck"] {
        check_line(&stderr, name);
    }
    assert!(
        stderr.contains("ktstr: monitor: check longest_wait_ms: "),
        "{stderr}"
    );
    // No sched_ext scheduler, no event counters: the event-rate checks are not shown.
    assert!(!stderr.contains("check max_fallback_rate"), "{stderr}");
    // The trace has a track named CPU 1 whose complete events are the spinners.
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    let track = events
        .iter()
        .find(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["args"]["name"] == "CPU 1")
        .map(|e| e["tid"].clone())
        .expect("a CPU 1 track");
    let spin: Vec<&Value> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["tid"] == track && e["name"] == "spin")
        .collect();
    assert!(!spin.is_empty(), "no spin events on CPU 1");
    let spin_us: f64 = spin.iter().filter_map(|e| e["dur"].as_f64()).sum();
    assert!(
        spin_us >= 2e6,
        "spin ran {spin_us} us on CPU 1 in the trace"
    );
    assert!(spin.iter().all(|e| e["args"]["pid"].as_i64() > Some(0)));
    assert!(events.iter().any(|e| e["ph"] == "C"
        && e["tid"] == track
        && e["args"]["nr_running"].as_u64() >= Some(3)));
    // Spinners pinned to CPU 1 never show on CPU 0's track.
    assert!(!events
        .iter()
        .any(|e| e["ph"] == "X" && e["tid"] != track && e["name"] == "spin"));
}

#[test]
fn idle_cpu_shows_its_idle_task_and_clocks_advance() {
    let Some(_slot) = vm_slot() else { return };
    // Two spinners on CPU 0, nothing pinned to CPU 1; no scheduler attached.
    let (out, lines) = monitored("idle1", 100, &spinners(2, 0, "spin0"));
    let stderr = text(&out.stderr);
    let s = steady(&lines);
    assert!(s.len() > 50, "{} steady samples\n{stderr}", s.len());
    let idle = share(&s, |v| {
        let c = cpu(v, 1);
        c["nr_running"] == 0
            && c["curr_is_idle"] == true
            && c["curr_pid"] == 0
            && c["curr_comm"] == "swapper/1"
    });
    assert!(idle >= 0.8, "CPU 1 was idle in {idle:.2} of samples");
    let busy = share(&s, |v| {
        cpu(v, 0)["nr_running"].as_u64() >= Some(2) && cpu(v, 0)["curr_comm"] == "spin0"
    });
    assert!(busy >= 0.9, "CPU 0 ran 2 spinners in {busy:.2} of samples");
    // Per CPU, the rq clock and the switch count never go back.
    for c in 0..2 {
        for w in lines.windows(2) {
            for key in ["rq_clock_ns", "nr_switches"] {
                let (a, b) = (cpu(&w[0], c)[key].as_u64(), cpu(&w[1], c)[key].as_u64());
                assert!(a <= b, "CPU {c} {key} went from {a:?} to {b:?}");
            }
        }
    }
    // sched_ext is built in but nothing attached it.
    assert!(lines.iter().all(|l| l["scx"]["state"] == "disabled"));
}

#[test]
fn spinners_under_scx_simple_are_sched_ext_tasks() {
    let Some(_slot) = vm_slot() else { return };
    let Some(scx) = scx_simple() else { return };
    let kernel = test_kernel().expect("checked by vm_slot");
    let file = std::env::temp_dir().join(format!("ktstr-monitor-scx-{}.jsonl", std::process::id()));
    let out = Command::new(KTSTR)
        .args(["exec", "--kernel", kernel, "--topology", "1,1,2,1"])
        .args(["--scheduler", &scx, "--monitor"])
        .arg(&file)
        .args(["--", "sh", "-c", &spinners(3, 1, "spin")])
        .stdin(Stdio::null())
        .output()
        .expect("run ktstr");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .expect("monitor output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let _ = std::fs::remove_file(&file);
    // The scheduler attaches after the first samples and is still attached at the end of
    // the command: sched_ext must be seen going from disabled to enabled, as `simple`.
    assert_eq!(lines[0]["scx"]["state"], "disabled", "{}", lines[0]);
    let enabled: Vec<&Value> = lines
        .iter()
        .filter(|l| l["scx"]["state"] == "enabled")
        .collect();
    assert!(
        enabled.len() > 50,
        "{} enabled samples\n{stderr}",
        enabled.len()
    );
    // While enabled it is `simple`; its exit kind is `none` until ktstr stops it after
    // the command (then the kernel records `unreg`, then `done`, before `disabling`).
    let odd: Vec<&&Value> = enabled
        .iter()
        .filter(|l| {
            l["scx"]["ops"] != "simple"
                || !(l["scx"]["exit_kind"] == "none"
                    || l["scx"]["exit_kind"]
                        .as_str()
                        .is_some_and(|k| k.starts_with("unreg") || k == "done"))
        })
        .collect();
    assert!(
        odd.is_empty(),
        "{} odd samples, first {}",
        odd.len(),
        odd[0]
    );
    let s = steady(&enabled.into_iter().cloned().collect::<Vec<_>>())
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    let s: Vec<&Value> = s.iter().collect();
    let scx_tasks = share(&s, |v| {
        let c = cpu(v, 1);
        c["scx_nr_running"].as_u64() >= Some(3) && c["fair_nr_running"] == 0
    });
    assert!(
        scx_tasks >= 0.9,
        "CPU 1 had 3 sched_ext tasks in {scx_tasks:.2} of samples"
    );
    let spinning = share(&s, |v| cpu(v, 1)["curr_comm"] == "spin");
    assert!(
        spinning >= 0.9,
        "CPU 1 ran `spin` in {spinning:.2} of samples"
    );
    assert!(s.iter().all(|v| v["scx"]["exit_kind"] == "none"));
    // scx_simple queues the spinners on its one user DSQ (SHARED_DSQ, id 0), read from
    // scx_sched.dsq_hash: the two not running wait there.
    let shared = |v: &Value| {
        v["scx"]["dsqs"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["kind"] == "user" && d["id"] == 0))
            .and_then(|d| d["nr"].as_u64())
    };
    assert!(
        s.iter()
            .all(|v| v["scx"]["error"].is_null() && shared(v).is_some()),
        "a sample without SHARED_DSQ: {:?}",
        s.iter().find(|v| shared(v).is_none())
    );
    // Under a scheduler the sched_ext event rates are judged, per vCPU-second; scx_simple
    // keeps its pinned spinners well under the defaults.
    for name in ["max_fallback_rate", "max_keep_last_rate"] {
        let prefix = format!("ktstr: monitor: check {name}: worst ");
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {name} line in\n{stderr}"));
        assert!(
            line.contains("/vCPU-s threshold") && line.ends_with(": pass"),
            "{line}"
        );
    }
    let waiting = share(&s, |v| shared(v) >= Some(1));
    assert!(
        waiting >= 0.9,
        "SHARED_DSQ held a spinner in {waiting:.2} of samples"
    );
}
