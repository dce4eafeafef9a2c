//! Monitor benchmark: full samples per second of a 16-vCPU guest and the monitor thread's
//! CPU time.
//!
//! `cargo bench -p ktstr-cli --bench monitor [-- HZ SECONDS]` (default 1000 Hz, 10 s) runs
//! `ktstr exec --topology 1,2,8,1 --monitor FILE --monitor-hz HZ -- sleep SECONDS` and,
//! while it runs, reads the `ktstr-monitor` thread's utime + stime from
//! `/proc/<ktstr>/task/<tid>/stat` every 20 ms. The CPU time counted starts when the first
//! sample reaches FILE (BTF loading and sampler setup excluded) and ends with the thread's
//! last reading. It prints the samples/s achieved (ktstr's summary line and FILE's line
//! count), the monitor's share of one host core, and that share per 100 samples/s (the
//! target: under 1%). The monitor's work per sample includes JSON writing and the checks.
//! It runs twice: without a sched_ext scheduler (EEVDF), and with `scx_simple` from
//! ktstr's cache (or `$KTSTR_BENCH_SCHEDULER`) attached, so that each sample also reads
//! sched_ext's per-CPU event counters and its global and bypass DSQs; the second run is
//! skipped, and says so, when there is no such scheduler.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::KTSTR;

/// utime + stime of thread `tid` of `pid`, in clock ticks.
fn thread_ticks(pid: u32, tid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The tid of `pid`'s thread named `name`.
fn find_thread(pid: u32, name: &str) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let hz: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let secs: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    println!("== EEVDF (no sched_ext scheduler)");
    run(hz, secs, None);
    let scheduler = std::env::var_os("KTSTR_BENCH_SCHEDULER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
            std::env::var_os("KTSTR_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache/ktstr"))
                .join("schedulers/scx_simple")
        });
    println!("== sched_ext: {}", scheduler.display());
    if scheduler.is_file() {
        run(hz, secs, Some(&scheduler));
    } else {
        println!("skipped: no such scheduler (scripts/build-scx-examples builds scx_simple)");
    }
}

fn run(hz: u32, secs: u32, scheduler: Option<&Path>) {
    // SAFETY: sysconf has no preconditions.
    let tick_hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let out =
        std::env::temp_dir().join(format!("ktstr-bench-monitor-{}.jsonl", std::process::id()));
    let (hz_s, secs_s) = (hz.to_string(), secs.to_string());
    let mut argv = vec![
        "exec",
        "--topology",
        "1,2,8,1",
        "--monitor",
        out.to_str().expect("utf-8 temp path"),
        "--monitor-hz",
        &hz_s,
    ];
    if let Some(s) = scheduler {
        argv.extend(["--scheduler", s.to_str().expect("utf-8 scheduler path")]);
    }
    argv.extend(["--", "sleep", &secs_s]);
    println!("ktstr {}", argv.join(" "));
    let started = Instant::now();
    let mut child = Command::new(KTSTR)
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ktstr");
    let pid = child.id();
    let mut stderr = child.stderr.take().expect("stderr");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut tid: Option<String> = None;
    let (mut base, mut last): (Option<u64>, Option<u64>) = (None, None);
    let mut first_sample_at = None;
    while child.try_wait().expect("wait").is_none() {
        if tid.is_none() {
            tid = find_thread(pid, "ktstr-monitor");
        }
        if let Some(t) = tid.as_deref().and_then(|t| thread_ticks(pid, t)) {
            if base.is_none() && file_len(&out) > 0 {
                base = Some(t);
                first_sample_at = Some(started.elapsed());
            }
            last = Some(t);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().expect("wait");
    let stderr = err_thread.join().unwrap_or_default();
    let lines = std::fs::read_to_string(&out)
        .map(|s| s.lines().count())
        .unwrap_or(0);
    let summary = stderr
        .lines()
        .find(|l| l.contains("monitor: ") && l.contains(" samples in "))
        .unwrap_or("(no monitor summary line)");
    let scx = std::fs::read_to_string(&out)
        .map(|t| {
            let with = t.lines().filter(|l| l.contains("\"events\":{")).count();
            let longest = t.lines().map(str::len).max().unwrap_or(0);
            format!(
                "samples with sched_ext event counters and DSQs: {with} of {}; longest line \
                 {longest} bytes",
                t.lines().count()
            )
        })
        .unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    println!("exit {status}; {summary}\n{scx}");
    // `ktstr: monitor: N samples in S s, R/s (asked ...`
    let num_after = |key: &str| -> Option<f64> {
        let i = summary.find(key)?;
        summary[..i].split_whitespace().last()?.parse().ok()
    };
    let (Some(sampling_s), Some(rate)) = (num_after(" s,"), num_after("/s")) else {
        println!("monitor: no samples; stderr:\n{stderr}");
        return;
    };
    println!(
        "samples: {lines} lines written, {rate:.1} samples/s achieved over {sampling_s:.2} s \
         (asked {hz}), first sample {:.1} s after launch",
        first_sample_at.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    match (base, last) {
        (Some(b), Some(l)) if sampling_s > 0.0 && rate > 0.0 => {
            let cpu_s = (l - b) as f64 / tick_hz;
            let core_pct = cpu_s / sampling_s * 100.0;
            println!(
                "monitor thread CPU: {cpu_s:.2} s over {sampling_s:.2} s = {core_pct:.2}% of one \
                 core = {:.3}% of one core per 100 samples/s (target < 1%), {:.1} us per sample \
                 (16 CPUs: runqueues, tasks, sched_ext state, JSON, checks)",
                core_pct / (rate / 100.0),
                cpu_s * 1e6 / (rate * sampling_s)
            );
        }
        _ => println!("monitor thread CPU: not measured (thread not found)"),
    }
}
