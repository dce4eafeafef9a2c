//! How long a snapshot keeps the guest frozen: a 16-CPU guest (1 node, 2 LLCs, 8 cores each)
//! running 200 sleeping tasks and 16 spinners, snapshotted every 500 ms by
//! `ktstr exec --monitor --snapshot-every 500`; prints the tasks each snapshot saw and the
//! time the vCPUs stayed frozen for it (QMP `stop` to `cont` on QEMU, parked vCPU threads on
//! ktstr's VMM), then the median and worst.
//!
//! `cargo bench -p ktstr-cli --bench snapshot` (`KTSTR_BENCH_TASKS=200`,
//! `KTSTR_BENCH_TOPOLOGY=1,2,8,1`). The target is under 5 ms of guest time per snapshot; under
//! QEMU TCG the guest's clock stops while frozen, so the frozen wall time is all host time.

mod common;

use common::{kernel_dir, ktstr, median};

fn main() {
    let tasks: u32 = std::env::var("KTSTR_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let topology = std::env::var("KTSTR_BENCH_TOPOLOGY").unwrap_or_else(|_| "1,2,8,1".into());
    let kernel = kernel_dir().join("vmlinux").display().to_string();
    let dir = std::env::temp_dir().join(format!("ktstr-snapshot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let monitor = dir.join("m.jsonl");
    let script = format!(
        "for i in $(seq {tasks}); do sleep 300 & done; \
         for i in $(seq 16); do (while :; do :; done) & done; \
         sleep 4; kill $(jobs -p) 2>/dev/null; true"
    );
    let (out, wall) = ktstr(&[
        "exec",
        "--kernel",
        &kernel,
        "--topology",
        &topology,
        "--timeout",
        "600",
        "--monitor",
        &monitor.display().to_string(),
        "--snapshot-every",
        "500",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(
        out.status.success(),
        "ktstr failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = monitor.with_extension("snapshots.json");
    let snaps: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&path).expect("snapshots file")).expect("JSON");
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "snapshots of a {topology} guest with {tasks} sleepers and 16 spinners, kernel {kernel} \
         (run {:.1} s)",
        wall.as_secs_f64()
    );
    println!(
        "{:<14} {:>6} {:>8} {:>11}",
        "snapshot", "tasks", "queued", "frozen ms"
    );
    let mut frozen = Vec::new();
    for s in &snaps {
        let n = s["tasks"].as_array().map_or(0, Vec::len);
        let queued: usize = s["cpus"].as_array().map_or(0, |c| {
            c.iter()
                .map(|c| c["local_dsq"].as_array().map_or(0, Vec::len))
                .sum()
        });
        let ms = s["frozen_us"].as_u64().unwrap_or(0) as f64 / 1000.0;
        println!(
            "{:<14} {n:>6} {queued:>8} {ms:>11.2}",
            s["name"].as_str().unwrap_or("?")
        );
        // Only snapshots that saw the whole crowd count.
        if n >= tasks as usize {
            frozen.push(ms);
        }
    }
    assert!(!frozen.is_empty(), "no snapshot saw all {tasks} tasks");
    let worst = frozen.iter().copied().fold(0.0, f64::max);
    println!(
        "frozen per snapshot with >= {tasks} tasks: median {:.2} ms, worst {worst:.2} ms over {} \
         (target < 5 ms)",
        median(&mut frozen),
        frozen.len()
    );
}
