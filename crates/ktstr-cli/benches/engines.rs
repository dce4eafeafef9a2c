//! ktstr's own VMM against QEMU `-accel kvm`: the same kernel, topology and memory, runs
//! alternating so both see the same machine.
//!
//! `cargo bench -p ktstr-cli --bench engines [-- REPS]` prints, per kernel and topology, the
//! medians of launch to our VMM running (guest built, kernel and initramfs loaded), to the
//! first kernel console byte (ours only), to init, and `exec -- true` wall time, and ours /
//! QEMU's ratios. It needs KVM that boots Linux: hardware KVM, or the
//! nested lane (`scripts/nested --bench`, which runs it in an outer guest with QEMU inside).
//! `KTSTR_BENCH_TOPOLOGIES=1,1,2,1;2,2,2,2` picks the topologies, `KTSTR_BENCH_KERNELS`
//! (`--kernel` values, comma-separated) the kernels; the default is the fetched Debian
//! kernel. A minimal kernel from `ktstr kernel build` shows what the VMM itself costs.

mod common;

use std::io::Write;

use common::{kernel_dir, ktstr, launch_to_console, launch_to_init, launch_to_running, median};

/// One engine's samples for one topology.
#[derive(Default)]
struct Samples {
    running: Vec<f64>,
    console: Vec<f64>,
    init: Vec<f64>,
    total: Vec<f64>,
    failures: u32,
}

impl Samples {
    /// Runs `ktstr exec -v <engine args> -- true` once and records it.
    fn run(&mut self, kernel: &str, topology: &str, memory: &str, engine: &[&str]) {
        let mut args = vec!["exec", "-v", "--attempts", "1", "--kernel", kernel];
        args.extend(["--topology", topology, "--memory", memory]);
        args.extend(engine);
        args.extend(["--", "true"]);
        let (out, wall) = ktstr(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match (out.status.success(), launch_to_init(&stderr)) {
            (true, Some(init)) => {
                self.init.push(init);
                self.total.push(wall.as_secs_f64());
                self.running.extend(launch_to_running(&stderr));
                self.console.extend(launch_to_console(&stderr));
            }
            _ => {
                self.failures += 1;
                let said: Vec<&str> = stderr.lines().filter(|l| l.contains("ktstr:")).collect();
                eprintln!("\n{engine:?} failed: {}", said.join(" | "));
            }
        }
    }
}

fn main() {
    let reps: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    if let Some(why) = ktstr::vmm::host_kvm().unusable_reason() {
        println!("engines bench skipped: {why} (scripts/nested --bench runs it under nested KVM)");
        return;
    }
    let kernels: Vec<String> = match std::env::var("KTSTR_BENCH_KERNELS") {
        Ok(k) if !k.is_empty() => k.split(',').map(str::to_string).collect(),
        _ => vec![kernel_dir().join("vmlinux").display().to_string()],
    };
    let topologies =
        std::env::var("KTSTR_BENCH_TOPOLOGIES").unwrap_or_else(|_| "1,1,2,1;2,2,2,2".into());
    let memory = "1G";
    let ours: &[&str] = &["--vmm", "kvm"];
    let qemu: &[&str] = &["--vmm", "qemu", "--accel", "kvm"];
    let mut rows = Vec::new();
    for (n, kernel) in kernels.iter().enumerate() {
        // Warm the initramfs cache so the first run is not an outlier.
        let _ = ktstr(&["exec", "--kernel", kernel, "--vmm", "kvm", "--", "true"]);
        for topo in topologies.split(';').filter(|t| !t.is_empty()) {
            let (mut k, mut q) = (Samples::default(), Samples::default());
            for i in 0..reps {
                print!("\rkernel {n}, {topo}: run {}/{reps}", i + 1);
                let _ = std::io::stdout().flush();
                k.run(kernel, topo, memory, ours);
                q.run(kernel, topo, memory, qemu);
            }
            println!();
            rows.push((n, topo.to_string(), k, q));
        }
    }
    println!(
        "{:<6} {:<10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>7} {:>7} {:>9}",
        "kernel",
        "topology",
        "ours start",
        "ours COM1",
        "ours init",
        "qemu init",
        "ours total",
        "qemu total",
        "init x",
        "total x",
        "fail o/q"
    );
    for (n, topo, mut k, mut q) in rows {
        let (ki, qi) = (median(&mut k.init), median(&mut q.init));
        let (kt, qt) = (median(&mut k.total), median(&mut q.total));
        println!(
            "{:<6} {:<10} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>7.2} {:>7.2} {:>9}",
            n,
            topo,
            median(&mut k.running),
            median(&mut k.console),
            ki,
            qi,
            kt,
            qt,
            ki / qi,
            kt / qt,
            format!("{}/{}", k.failures, q.failures)
        );
    }
    println!("(seconds, medians of {reps}; memory {memory})");
    for (n, kernel) in kernels.iter().enumerate() {
        println!("kernel {n}: {kernel}");
    }
}
