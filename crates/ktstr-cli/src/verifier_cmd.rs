//! `ktstr verifier`: boot a kernel, load every BPF program of a scheduler (or object) in it
//! with `ktstr-veristat`, print a table of the programs' verifier statistics, then the log of
//! `--program`, else of the programs that failed to load, folded by `ktstr_verifier::collapse`.
//!
//! The capture tool is, in this order: `--veristat PATH`, `$KTSTR_VERISTAT`, `ktstr-veristat`
//! beside the running executable (or beside its `deps/` directory, for test binaries), else
//! built with `cargo build --release -p ktstr-verifier --features capture --bin ktstr-veristat`
//! in the workspace this binary was built from. A scheduler NAME is looked up in
//! `<cache>/schedulers/`, then `PATH`, then beside the running executable, else built with
//! `cargo build --release --bin NAME` in that workspace.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use ktstr::run::{self, Mode, Outcome, RunOptions, Stream};
use ktstr::test_support::scheduler::find_built;
use ktstr::test_support::StreamTail;
use ktstr::Topology;
use serde_json::Value;

/// The capture tool's binary name.
const VERISTAT: &str = "ktstr-veristat";
/// Where `--include-files` land in the guest.
const GUEST_DIR: &str = "/include-files";

/// Options of `verifier` (without a subcommand).
#[derive(Debug, Args)]
pub struct VerifierArgs {
    /// Kernel: cache name, version (7.3), image path or source tree (default $KTSTR_KERNEL, else newest cached).
    /// Give it twice to compare the programs' verifier figures on two kernels.
    #[arg(long)]
    pub kernel: Vec<String>,
    /// Scheduler binary whose embedded BPF object to load: a path, or a name looked up in the
    /// scheduler cache, PATH, beside this executable, else built with cargo.
    #[arg(long, conflicts_with = "object")]
    pub scheduler: Option<String>,
    /// A BPF object file (.bpf.o) to load. Give it twice (old, new) to compare the two.
    #[arg(long)]
    pub object: Vec<PathBuf>,
    /// Print this program's log (default: the logs of the programs that failed to load).
    #[arg(long)]
    pub program: Option<String>,
    /// Print logs as the kernel wrote them instead of folding repeated loop iterations.
    #[arg(long)]
    pub raw: bool,
    /// Print the capture tool's JSON document instead of the table and logs.
    #[arg(long)]
    pub json: bool,
    /// The ktstr-veristat binary (default: $KTSTR_VERISTAT, beside this executable, else cargo build).
    #[arg(long)]
    pub veristat: Option<PathBuf>,
    /// Guest memory in MiB (verifier logs at level 2 can be large).
    #[arg(long, default_value_t = 1024)]
    pub memory_mib: u64,
    /// Seconds before the VM is killed (boot and capture together).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// Captures, prints the table and the chosen logs; returns 0 when every program loaded, 1
/// when one did not (or the file held no BPF object).
pub fn run(args: &VerifierArgs, progress: &dyn Fn(&str)) -> Result<i32> {
    if args.kernel.len() > 2 || args.object.len() > 2 {
        bail!("give --kernel or --object at most twice (A and B)");
    }
    if args.kernel.len() == 2 && args.object.len() == 2 {
        bail!("compare two kernels or two objects, not both at once");
    }
    for o in &args.object {
        if !o.is_file() {
            bail!("BPF object {} does not exist", o.display());
        }
    }
    let target = match (&args.scheduler, args.object.first()) {
        (Some(s), _) => resolve_scheduler(s, progress)?,
        (None, Some(o)) => o.clone(),
        (None, None) => bail!("give --scheduler NAME_OR_PATH or --object FILE"),
    };
    let veristat = resolve_veristat(args.veristat.as_deref(), progress)?;
    if args.kernel.len() == 2 || args.object.len() == 2 {
        return compare(args, &veristat, &target, progress);
    }
    progress(&format!(
        "capturing verifier logs of {} with {}",
        target.display(),
        veristat.display()
    ));
    let report = capture(
        args,
        args.kernel.first().map(String::as_str),
        &veristat,
        &target,
        progress,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(exit_status(&report));
    }
    if let Some(k) = report.get("kernel").and_then(Value::as_str) {
        progress(&format!("kernel {k}"));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(render_table(&report).as_bytes())?;
    for (name, log) in chosen_logs(&report, args.program.as_deref())? {
        writeln!(out)?;
        write_log(&mut out, &name, &log, args.raw)?;
    }
    out.flush()?;
    Ok(exit_status(&report))
}

/// A/B: captures side A and side B (two kernels, or two objects on one kernel), prints one
/// row per program with the difference; 0 when every program loads on both sides, else 1.
fn compare(
    args: &VerifierArgs,
    veristat: &Path,
    target: &Path,
    progress: &dyn Fn(&str),
) -> Result<i32> {
    let kernel_a = args.kernel.first().map(String::as_str);
    let sides: [(Option<&str>, PathBuf, String); 2] = if args.kernel.len() == 2 {
        let k = |i: usize| args.kernel.get(i).map(String::as_str);
        [
            (
                k(0),
                target.to_path_buf(),
                format!("kernel {}", k(0).unwrap_or("")),
            ),
            (
                k(1),
                target.to_path_buf(),
                format!("kernel {}", k(1).unwrap_or("")),
            ),
        ]
    } else {
        let o = |i: usize| args.object.get(i).cloned().unwrap_or_default();
        [
            (kernel_a, o(0), o(0).display().to_string()),
            (kernel_a, o(1), o(1).display().to_string()),
        ]
    };
    let mut results = Vec::new();
    for (kernel, object, label) in &sides {
        progress(&format!("capturing side {label}"));
        let report = capture(args, *kernel, veristat, object, progress)?;
        results.push((
            label.clone(),
            program_results(&report),
            exit_status(&report),
        ));
    }
    let [(la, a, sa), (lb, b, sb)] =
        <[_; 2]>::try_from(results).map_err(|_| anyhow::anyhow!("expected two captures"))?;
    let rows = ktstr_verifier::diff::diff(&a, &b);
    if args.json {
        println!("{}", ktstr_verifier::diff::rows_json(&rows));
    } else {
        print!("{}", ktstr_verifier::diff::render_diff(&rows, &la, &lb));
    }
    Ok(sa.max(sb))
}

/// Each program of a capture report, with its verdict and statistics.
pub fn program_results(report: &Value) -> Vec<ktstr_verifier::diff::ProgramResult> {
    let objects = report
        .get("objects")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    objects
        .iter()
        .flat_map(programs)
        .map(|p| {
            let stats = ktstr_verifier::VerifierStats {
                processed_insns: num(p, &["stats", "processed_insns"]),
                total_states: num(p, &["stats", "total_states"]),
                peak_states: num(p, &["stats", "peak_states"]),
                stack_depth_max: num(p, &["stats", "stack_depth_max"]),
                stack_depth: p
                    .get("stats")
                    .and_then(|s| s.get("stack_depth"))
                    .and_then(Value::as_array)
                    .map_or_else(Vec::new, |a| a.iter().filter_map(Value::as_u64).collect()),
                ..ktstr_verifier::VerifierStats::default()
            };
            ktstr_verifier::diff::ProgramResult::new(
                text(p, "name"),
                p.get("loaded").and_then(Value::as_bool) == Some(true),
                stats,
            )
        })
        .collect()
}

/// Boots `kernel`, runs the capture tool on `target`, and parses its JSON.
fn capture(
    args: &VerifierArgs,
    kernel: Option<&str>,
    veristat: &Path,
    target: &Path,
    progress: &dyn Fn(&str),
) -> Result<Value> {
    let kernel = ktstr::kernel::resolve(kernel, &mut |m| progress(m))?;
    let mut opts = RunOptions::new(kernel, Topology::new(1, 1, 1, 1)?)?;
    opts.memory_mib = Some(args.memory_mib);
    opts.timeout = Duration::from_secs(args.timeout);
    opts.include_files = vec![veristat.to_path_buf(), target.to_path_buf()];
    let guest = |p: &Path| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        format!("{GUEST_DIR}/{}", name.unwrap_or_default())
    };
    let mut argv = vec![guest(veristat), "--log".into(), "failed".into()];
    if let Some(p) = &args.program {
        argv.extend(["--log-program".into(), p.clone()]);
    }
    argv.push(guest(target));
    // The JSON comes back as the typed report; stdout is only kept (its end) to explain a
    // run that sent none.
    opts.max_report = MAX_CAPTURE_REPORT;
    let mut stdout = StreamTail::new(64 << 10);
    let mut output = |stream: Stream, data: &[u8]| match stream {
        Stream::Stdout => stdout.push(data),
        Stream::Stderr => {
            let _ = std::io::stderr().write_all(data);
        }
    };
    let cancel = AtomicBool::new(false);
    let report = run::run(&opts, &Mode::Exec(argv), &mut output, &cancel)?;
    let code = report.exit_code();
    match &report.outcome {
        Outcome::Command(_) if code == 0 || code == 1 => {}
        other => {
            let tail: Vec<&str> = report.console_tail.iter().map(String::as_str).collect();
            bail!(
                "{VERISTAT} did not finish in the guest (exit status {code}, {other:?}); console {}:\n{}",
                report.console_log.display(),
                tail.join("\n")
            );
        }
    }
    let Some(json) = report.test_report.as_deref() else {
        bail!(
            "{VERISTAT} sent no report from the guest; its stdout ended with:\n{}",
            stdout.into_text()
        );
    };
    serde_json::from_slice(json).with_context(|| {
        let head = String::from_utf8_lossy(&json[..json.len().min(400)]).into_owned();
        let issues = report.channel_issues.join("; ");
        format!("{VERISTAT}'s report is not a JSON document ({issues}): {head:?}")
    })
}

/// The most bytes of ktstr-veristat's JSON report the host takes: level-2 logs of several
/// failing programs run to many MiB.
const MAX_CAPTURE_REPORT: usize = 512 << 20;

/// 0 when every object was found and every program loaded, else 1.
fn exit_status(report: &Value) -> i32 {
    let objects = report.get("objects").and_then(Value::as_array);
    let ok = objects.is_some_and(|objs| {
        !objs.is_empty()
            && objs.iter().all(|o| {
                o.get("error").is_none_or(Value::is_null)
                    && programs(o)
                        .iter()
                        .all(|p| p.get("loaded").and_then(Value::as_bool) == Some(true))
            })
    });
    if ok {
        0
    } else {
        1
    }
}

fn programs(object: &Value) -> &[Value] {
    object
        .get("programs")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn num(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn or_dash(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

/// The table: one line per program, objects introduced by their file and offset.
pub fn render_table(report: &Value) -> String {
    let mut s = String::new();
    let objects = report
        .get("objects")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    for o in objects {
        let offset = num(o, &["offset"]).map_or(String::new(), |off| format!(" @ {off:#x}"));
        let _ = writeln!(
            s,
            "{}{offset} ({} bytes)",
            text(o, "file"),
            or_dash(num(o, &["size"]))
        );
        if let Some(e) = o.get("error").and_then(Value::as_str) {
            let _ = writeln!(s, "  error: {e}");
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<28} {:<12} {:>6} {:>9} {:>13} {:>6} {:>10}  VERDICT",
            "PROGRAM", "TYPE", "INSNS", "PROCESSED", "STATES(T/P)", "STACK", "TIME"
        );
        for p in programs(o) {
            let states = format!(
                "{}/{}",
                or_dash(num(p, &["stats", "total_states"])),
                or_dash(num(p, &["stats", "peak_states"]))
            );
            // ktstr-veristat reports VerifierStats::max_stack_depth as `max_stack_depth`.
            let stack = num(p, &["stats", "max_stack_depth"]);
            let time = num(p, &["stats", "verification_time_us"])
                .map_or_else(|| "-".into(), |us| format!("{:.1}ms", us as f64 / 1000.0));
            let verdict = if p.get("loaded").and_then(Value::as_bool) == Some(true) {
                "ok".to_string()
            } else {
                format!("FAIL: {}", text(p, "error"))
            };
            let _ = writeln!(
                s,
                "  {:<28} {:<12} {:>6} {:>9} {:>13} {:>6} {:>10}  {verdict}",
                text(p, "name"),
                text(p, "type"),
                or_dash(num(p, &["insns"])),
                or_dash(num(p, &["stats", "processed_insns"])),
                states,
                or_dash(stack),
                time,
            );
        }
    }
    s
}

/// The logs to print: `program`'s (an error if no program has that name), else every failed
/// program's (its libbpf messages when the kernel wrote no log), as (name, text).
pub fn chosen_logs(report: &Value, program: Option<&str>) -> Result<Vec<(String, String)>> {
    let objects = report
        .get("objects")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let all = objects.iter().flat_map(programs);
    let log_of = |p: &Value| {
        let log = text(p, "log");
        if !log.is_empty() {
            return log.to_string();
        }
        let msgs: Vec<&str> = p
            .get("libbpf")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(Value::as_str)
            .collect();
        msgs.join("\n")
    };
    match program {
        Some(want) => {
            let found: Vec<(String, String)> = all
                .filter(|p| text(p, "name") == want)
                .map(|p| (want.to_string(), log_of(p)))
                .collect();
            if found.is_empty() {
                let names: Vec<&str> = objects
                    .iter()
                    .flat_map(programs)
                    .map(|p| text(p, "name"))
                    .collect();
                bail!("no program {want}; the programs are: {}", names.join(", "));
            }
            Ok(found)
        }
        None => Ok(all
            .filter(|p| p.get("loaded").and_then(Value::as_bool) != Some(true))
            .map(|p| (text(p, "name").to_string(), log_of(p)))
            .collect()),
    }
}

/// Writes one program's log under a header line, folded unless `raw`.
fn write_log(out: &mut dyn std::io::Write, name: &str, log: &str, raw: bool) -> Result<()> {
    let lines = log.lines().count();
    if raw {
        writeln!(out, "=== {name}: verifier log, {lines} lines ===")?;
        out.write_all(log.as_bytes())?;
        if !log.is_empty() && !log.ends_with('\n') {
            writeln!(out)?;
        }
        return Ok(());
    }
    let c = ktstr_verifier::collapse(log.as_bytes())?;
    writeln!(
        out,
        "=== {name}: verifier log, {lines} lines folded to {} ({} folds; --raw for all) ===",
        c.summary.lines_out, c.summary.folds
    )?;
    out.write_all(c.text.as_bytes())?;
    Ok(())
}

/// The workspace this binary was built from, if it is still there.
fn workspace() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("Cargo.toml").is_file().then_some(root)
}

/// Builds a binary of the workspace with cargo and returns its path.
fn cargo_build(cargo_args: &[&str], progress: &dyn Fn(&str)) -> Result<PathBuf> {
    let ws =
        workspace().context("no cargo workspace to build in (the ktstr source tree is gone)")?;
    progress(&format!("cargo build --release {}", cargo_args.join(" ")));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&ws)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .args(cargo_args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!("cargo build --release {} failed", cargo_args.join(" "));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|m| m.get("executable")?.as_str().map(PathBuf::from))
        .next_back()
        .context("cargo built no executable")
}

/// The capture tool (see the module documentation for the order).
fn resolve_veristat(explicit: Option<&Path>, progress: &dyn Fn(&str)) -> Result<PathBuf> {
    let from_env = std::env::var_os("KTSTR_VERISTAT").filter(|v| !v.is_empty());
    if let Some(p) = explicit
        .map(Path::to_path_buf)
        .or(from_env.map(PathBuf::from))
    {
        if !p.is_file() {
            bail!("{VERISTAT} {} does not exist", p.display());
        }
        return Ok(p);
    }
    if let Some(p) = ktstr::test_support::scheduler::beside_exe(VERISTAT) {
        return Ok(p);
    }
    cargo_build(
        &[
            "-p",
            "ktstr-verifier",
            "--features",
            "capture",
            "--bin",
            VERISTAT,
        ],
        progress,
    )
}

/// A scheduler binary from a path or a name (see the module documentation for the order).
fn resolve_scheduler(spec: &str, progress: &dyn Fn(&str)) -> Result<PathBuf> {
    let as_path = Path::new(spec);
    if spec.contains('/') || as_path.is_file() {
        if !as_path.is_file() {
            bail!("scheduler {spec} does not exist");
        }
        return Ok(as_path.to_path_buf());
    }
    if let Some(p) = find_built(spec) {
        return Ok(p);
    }
    cargo_build(&["--bin", spec], progress)
        .with_context(|| format!("scheduler {spec}: not in the cache, PATH or beside ktstr"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "tool": "ktstr-veristat", "kernel": "7.3.4", "log_level": 6,
            "objects": [{
                "file": "/include-files/s", "offset": 4096, "size": 9000, "error": null,
                "programs": [
                    {"name": "good", "type": "struct_ops", "insns": 47, "loaded": true,
                     "error": null, "libbpf": [], "log": null,
                     "stats": {"processed_insns": 34, "total_states": 2, "peak_states": 2,
                               "stack_depth": [8], "stack_depth_max": 16, "max_stack_depth": 16,
                               "verification_time_us": 21676}},
                    {"name": "bad", "type": "socket_filter", "insns": 21, "loaded": false,
                     "error": "Permission denied (os error 13)", "libbpf": ["libbpf: x"],
                     "log": "0: (b7) r0 = 0\nR1 invalid mem access 'scalar'\n",
                     "stats": {"processed_insns": 284, "total_states": 5, "peak_states": 5,
                               "stack_depth": [8, 4], "stack_depth_max": null, "max_stack_depth": 12,
                               "verification_time_us": null}},
                    {"name": "early", "type": "tracing", "insns": null, "loaded": false,
                     "error": "opening", "libbpf": ["libbpf: no BTF"], "log": "", "stats": {}}
                ]
            }]
        })
    }

    #[test]
    fn comparing_takes_two_sides_of_one_kind() {
        let args = |kernels: &[&str], objects: &[&str]| VerifierArgs {
            kernel: kernels.iter().map(|k| k.to_string()).collect(),
            scheduler: None,
            object: objects.iter().map(PathBuf::from).collect(),
            program: None,
            raw: false,
            json: false,
            veristat: None,
            memory_mib: 256,
            timeout: 1,
        };
        let err = |a: VerifierArgs| format!("{:#}", run(&a, &|_| {}).unwrap_err());
        assert!(err(args(&["a", "b", "c"], &["x.o"])).contains("at most twice"));
        assert!(err(args(&["a", "b"], &["x.o", "y.o"])).contains("not both"));
        assert!(err(args(&[], &["/no/such.o", "/no/other.o"])).contains("does not exist"));
    }

    #[test]
    fn reports_compare_program_by_program() {
        let a = program_results(&sample());
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].stats.max_stack_depth(), Some(16));
        assert_eq!(a[1].stats.max_stack_depth(), Some(12));
        let mut b_report = sample();
        b_report["objects"][0]["programs"][1]["loaded"] = Value::Bool(true);
        b_report["objects"][0]["programs"][0]["stats"]["processed_insns"] = 40.into();
        let rows = ktstr_verifier::diff::diff(&a, &program_results(&b_report));
        assert_eq!(rows[0].delta.processed_insns, Some(6));
        assert!(!rows[0].verdict_changed());
        assert!(rows[1].verdict_changed());
        let t = ktstr_verifier::diff::render_diff(&rows, "a", "b");
        assert!(t.contains("FAILS -> passes  <-- differs"), "{t}");
    }

    #[test]
    fn table_has_every_program_and_its_numbers() {
        let t = render_table(&sample());
        assert!(
            t.starts_with("/include-files/s @ 0x1000 (9000 bytes)\n"),
            "{t}"
        );
        let good = t.lines().find(|l| l.contains("good")).expect("good row");
        for want in ["struct_ops", "47", "34", "2/2", "16", "21.7ms", "ok"] {
            assert!(good.contains(want), "{want} missing from {good:?}");
        }
        let bad = t.lines().find(|l| l.contains("bad")).expect("bad row");
        assert!(
            bad.contains(" 12 "),
            "max_stack_depth (the subprograms' sum): {bad:?}"
        );
        assert!(
            bad.ends_with("FAIL: Permission denied (os error 13)"),
            "{bad:?}"
        );
        let early = t.lines().find(|l| l.contains("early")).expect("early row");
        assert!(early.contains("-/-"), "{early:?}");
        assert_eq!(exit_status(&sample()), 1);
    }

    #[test]
    fn logs_of_failures_or_the_chosen_program() {
        let r = sample();
        let failed = chosen_logs(&r, None).expect("logs");
        let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["bad", "early"]);
        assert!(failed[0].1.contains("invalid mem access"));
        assert_eq!(failed[1].1, "libbpf: no BTF");
        let chosen = chosen_logs(&r, Some("good")).expect("good");
        assert_eq!(chosen.len(), 1);
        let err = chosen_logs(&r, Some("nope")).expect_err("unknown program");
        assert!(err.to_string().contains("good, bad, early"), "{err}");
    }

    #[test]
    fn folded_log_keeps_the_error() {
        let mut log = String::new();
        for i in 0..40 {
            log += &format!("1: (07) r1 += 1                       ; R1_w={}\n", i + 1);
            log += &format!("2: (a5) if r1 < 0x28 goto pc-2       ; R1_w={}\n", i + 1);
        }
        log += "R1 invalid mem access 'scalar'\n";
        let mut out = Vec::new();
        write_log(&mut out, "p", &log, false).expect("write");
        let s = String::from_utf8(out).expect("utf8");
        assert!(
            s.starts_with("=== p: verifier log, 81 lines folded to "),
            "{s}"
        );
        assert!(s.contains("--- ktstr fold: "), "{s}");
        assert!(s.ends_with("R1 invalid mem access 'scalar'\n"), "{s}");
        let mut raw = Vec::new();
        write_log(&mut raw, "p", &log, true).expect("write");
        assert_eq!(String::from_utf8(raw).expect("utf8").lines().count(), 82);
    }

    #[test]
    fn no_objects_is_a_failure() {
        assert_eq!(exit_status(&serde_json::json!({"objects": []})), 1);
        let ok = serde_json::json!({"objects": [{"error": null, "programs": [{"loaded": true}]}]});
        assert_eq!(exit_status(&ok), 0);
    }
}
