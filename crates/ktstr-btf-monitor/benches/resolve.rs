//! BTF parse time and member resolutions per second.
//!
//! `cargo bench -p ktstr-btf-monitor --bench resolve [VMLINUX]`; uses VMLINUX (default: the
//! 7.3 vmlinux in ktstr's cache under `$HOME/.cache/ktstr`) and the host's
//! `/sys/kernel/btf/vmlinux`, skipping whichever is absent.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use ktstr_btf_monitor::{resolve, Btf};

const HOST_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Paths a sampler resolves once per run.
const PATHS: &[(&str, &str)] = &[
    ("rq", "nr_running"),
    ("rq", "scx.nr_running"),
    ("rq", "cfs.h_nr_queued"),
    ("rq", "curr"),
    ("rq", "clock"),
    ("rq", "nr_switches"),
    ("task_struct", "pid"),
    ("task_struct", "comm"),
    ("task_struct", "scx.runnable_at"),
    ("task_struct", "sched_reset_on_fork"),
];

/// Runs `f` `n` times; returns the fastest and the median duration.
fn time<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut d: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    d.sort();
    (d[0], d[n / 2])
}

fn bench_file(label: &str, path: &str) {
    if !Path::new(path).exists() {
        println!("{label}: skipped, {path} is absent");
        return;
    }
    let btf = match Btf::from_file(Path::new(path)) {
        Ok(b) => b,
        Err(e) => {
            println!("{label}: cannot parse {path}: {e}");
            return;
        }
    };
    let (min, med) = time(7, || Btf::from_file(Path::new(path)).map(|b| b.len()));
    println!(
        "{label}: parse {path}: {} types, min {:.1} ms, median {:.1} ms",
        btf.len(),
        min.as_secs_f64() * 1e3,
        med.as_secs_f64() * 1e3
    );
    let paths: Vec<_> = PATHS
        .iter()
        .filter(|(t, p)| resolve(&btf, t, p).is_ok())
        .collect();
    let rounds = 20_000;
    let start = Instant::now();
    for _ in 0..rounds {
        for (t, p) in &paths {
            let _ = black_box(resolve(&btf, black_box(t), black_box(p)));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = rounds * paths.len();
    println!(
        "{label}: {n} resolutions of {} paths in {:.3} s: {:.0} resolutions/s ({:.2} us each)",
        paths.len(),
        secs,
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}

fn main() {
    let vmlinux = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| {
            let home = std::env::var("HOME").unwrap_or_default();
            format!("{home}/.cache/ktstr/kernels/7.3.4+deb13-cloud-amd64/vmlinux")
        });
    bench_file("7.3 vmlinux (.BTF from ELF)", &vmlinux);
    bench_file("host raw BTF", HOST_BTF);
}
