//! Telemetry overhead of a `SpinWait` worker: work units per second of the bare spin kernel
//! versus a real telemetry-carrying worker, on the same CPU, alternated over several rounds.
//!
//! Environment: `KTSTR_BENCH_SECS` (seconds per measurement, default 2),
//! `KTSTR_BENCH_ROUNDS` (default 5), `KTSTR_BENCH_CPU` (default the first allowed CPU),
//! `KTSTR_BENCH_SLICE_MS` (each round's time is cut into alternating slices this long,
//! default 100).
//! Always exits 0: it reports, it does not judge.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ktstr_workload::{spin_unit, AffinityMode, WorkType, WorkloadConfig, WorkloadHandle};

/// Overhead the issue asks to stay under, percent.
const TARGET_PCT: f64 = 2.0;
/// Bare-loop units between two clock reads (keeps the loop's own bookkeeping negligible).
const BARE_BATCH: u64 = 64;

/// One measurement: units done, wall and CPU time spent.
#[derive(Clone, Copy, Default)]
struct Sample {
    units: u64,
    wall_ns: u64,
    cpu_ns: u64,
}

impl Sample {
    /// Accumulates another measurement of the same side.
    fn add(&mut self, other: Sample) {
        self.units += other.units;
        self.wall_ns += other.wall_ns;
        self.cpu_ns += other.cpu_ns;
    }

    /// Units per wall-clock second.
    fn per_wall_s(self) -> f64 {
        per_s(self.units, self.wall_ns)
    }

    /// Units per CPU second.
    fn per_cpu_s(self) -> f64 {
        per_s(self.units, self.cpu_ns)
    }
}

fn per_s(units: u64, ns: u64) -> f64 {
    if ns == 0 {
        0.0
    } else {
        units as f64 * 1e9 / ns as f64
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The calling thread's allowed CPUs.
fn get_affinity() -> Result<BTreeSet<usize>, String> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(format!(
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, inside the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Pins the calling thread to `cpus`.
fn set_affinity(cpus: &BTreeSet<usize>) -> Result<(), String> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: `cpu` is below CPU_SETSIZE, inside the set.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        return Err(format!(
            "sched_setaffinity({cpus:?}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Measurement 1: the bare spin kernel in a tight loop on `cpu`, no telemetry.
fn bare(cpu: usize, others: &BTreeSet<usize>, dur: Duration) -> Result<Sample, String> {
    set_affinity(&BTreeSet::from([cpu]))?;
    let wall0 = clock_ns(libc::CLOCK_MONOTONIC);
    let cpu0 = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID);
    let end = Instant::now() + dur;
    let mut units = 0u64;
    loop {
        for _ in 0..BARE_BATCH {
            spin_unit();
        }
        units += BARE_BATCH;
        if Instant::now() >= end {
            break;
        }
    }
    let cpu_ns = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(cpu0);
    let wall_ns = clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(wall0);
    set_affinity(others)?;
    Ok(Sample {
        units,
        wall_ns,
        cpu_ns,
    })
}

/// Measurement 2: one real `SpinWait` worker pinned to `cpu`, from its report.
fn worker(cpu: usize, dur: Duration) -> Result<(Sample, u64), String> {
    let cfg = WorkloadConfig::new(1, WorkType::SpinWait)
        .affinity(AffinityMode::Fixed(BTreeSet::from([cpu])));
    let mut handle = WorkloadHandle::spawn(&cfg).map_err(|e| format!("spawn: {e}"))?;
    handle.start();
    std::thread::sleep(dur);
    let reports = handle.stop_and_collect();
    let report = reports.first().ok_or("no worker report")?;
    if !report.completed {
        return Err(format!("worker did not complete: {:?}", report.exit_info));
    }
    if let Some(e) = &report.affinity_error {
        return Err(format!("worker affinity: {e}"));
    }
    let sample = Sample {
        units: report.work_units,
        wall_ns: report.wall_time_ns,
        cpu_ns: report.cpu_time_ns,
    };
    Ok((sample, report.iterations))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T, valid: impl Fn(&T) -> bool) -> T {
    match std::env::var(name) {
        Err(_) => default,
        Ok(text) => match text.trim().parse::<T>() {
            Ok(v) if valid(&v) => v,
            _ => {
                println!("warning: ignoring {name}={text:?} (invalid); using the default");
                default
            }
        },
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Overhead of `with` relative to `without`, percent.
fn overhead_pct(without: f64, with: f64) -> f64 {
    if without > 0.0 {
        (1.0 - with / without) * 100.0
    } else {
        f64::NAN
    }
}

fn run() -> Result<(), String> {
    let allowed = get_affinity()?;
    let first = *allowed.first().ok_or("no allowed CPU")?;
    let secs = env_or("KTSTR_BENCH_SECS", 2.0f64, |s| s.is_finite() && *s > 0.0);
    let rounds = env_or("KTSTR_BENCH_ROUNDS", 5usize, |r| *r > 0);
    let cpu = env_or("KTSTR_BENCH_CPU", first, |c| allowed.contains(c));
    let slice_ms = env_or("KTSTR_BENCH_SLICE_MS", 100u64, |&m| m >= 10);
    let dur = Duration::from_secs_f64(secs);
    // While the worker runs, keep this (mostly sleeping) parent off its CPU when possible.
    let mut others: BTreeSet<usize> = allowed.iter().copied().filter(|&c| c != cpu).collect();
    if others.is_empty() {
        others = allowed.clone();
    }
    set_affinity(&others)?;

    println!(
        "SpinWait telemetry overhead: CPU {cpu}, {secs} s per side per round \
         (alternating {slice_ms} ms slices), {rounds} rounds"
    );
    println!("units/s = SpinWait work units (1024-iteration spins) per second");
    println!(
        "{:>5}  {:>14} {:>14}  {:>14} {:>14} {:>12}  {:>9} {:>9}",
        "round",
        "bare/wall-s",
        "bare/cpu-s",
        "worker/wall-s",
        "worker/cpu-s",
        "checkpts/s",
        "ovh wall",
        "ovh cpu"
    );
    let (mut wall_ovh, mut cpu_ovh) = (Vec::new(), Vec::new());
    let (mut bare_rates, mut worker_rates) = (Vec::new(), Vec::new());
    // Warm-up (page faults, frequency ramp) not counted.
    bare(cpu, &others, Duration::from_millis(200))?;
    let slices = (secs * 1000.0 / slice_ms as f64).ceil().max(1.0) as u32;
    let slice = dur / slices;
    for round in 1..=rounds {
        // Interleave short slices (alternating which side goes first) so both sides see
        // the same machine conditions: host noise drifts over seconds on shared cores.
        let (mut b, mut w, mut checkpoints) = (Sample::default(), Sample::default(), 0);
        for i in 0..slices {
            if (i + round as u32) % 2 == 0 {
                b.add(bare(cpu, &others, slice)?);
                let (ws, cp) = worker(cpu, slice)?;
                w.add(ws);
                checkpoints += cp;
            } else {
                let (ws, cp) = worker(cpu, slice)?;
                w.add(ws);
                checkpoints += cp;
                b.add(bare(cpu, &others, slice)?);
            }
        }
        let (ow, oc) = (
            overhead_pct(b.per_wall_s(), w.per_wall_s()),
            overhead_pct(b.per_cpu_s(), w.per_cpu_s()),
        );
        println!(
            "{round:>5}  {:>14.0} {:>14.0}  {:>14.0} {:>14.0} {:>12.0}  {:>8.2}% {:>8.2}%",
            b.per_wall_s(),
            b.per_cpu_s(),
            w.per_wall_s(),
            w.per_cpu_s(),
            per_s(checkpoints, w.wall_ns),
            ow,
            oc
        );
        wall_ovh.push(ow);
        cpu_ovh.push(oc);
        bare_rates.push(b.per_cpu_s());
        worker_rates.push(w.per_cpu_s());
    }
    let (bare_med, worker_med) = (median(&bare_rates), median(&worker_rates));
    println!(
        "median units per CPU-second: bare {bare_med:.0}, worker {worker_med:.0} (ratio {:.4})",
        worker_med / bare_med
    );
    println!(
        "telemetry overhead: {:.2}% per wall-second (median of {rounds} rounds)",
        median(&wall_ovh)
    );
    let ovh = median(&cpu_ovh);
    println!("telemetry overhead: {ovh:.2}% (median of {rounds} rounds; per CPU-second)");
    let lo = cpu_ovh.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = cpu_ovh.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    println!("per-round spread: {lo:.2}% .. {hi:.2}% (a negative figure is measurement noise)");
    if ovh < TARGET_PCT {
        println!("target (< {TARGET_PCT}% overhead): MET");
    } else {
        println!("target (< {TARGET_PCT}% overhead): NOT MET");
    }
    set_affinity(&allowed)?;
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        println!("telemetry bench could not run: {e}");
    }
}
