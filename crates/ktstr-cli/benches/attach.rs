//! Time from a sched_ext scheduler's start to `/sys/kernel/sched_ext/state` reading `enabled`
//! with its `root/ops`, in the guest, as ktstr measures it for every scheduler run.
//!
//! `cargo bench -p ktstr-cli --bench attach [-- RUNS]` (default 5 runs per scheduler):
//! scx_ktstr (found or built like a test's `Scheduler::named("scx_ktstr")`) and the kernel's
//! scx_simple (`scripts/build-scx-examples`), on a 1,1,2,1 guest. Prints each run and the
//! median; a scheduler that cannot be found is reported and skipped.

mod common;

use common::{ktstr, median};
use ktstr::test_support::Scheduler;

/// `attached in 0.42s` from ktstr's scheduler line.
fn attach_s(stderr: &str) -> Option<f64> {
    let rest = stderr.split("attached in ").nth(1)?;
    rest.split('s').next()?.parse().ok()
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    println!(
        "scheduler attach time (start to sched_ext `enabled`), {runs} runs each, topology 1,1,2,1"
    );
    for name in ["scx_ktstr", "scx_simple"] {
        let binary = match Scheduler::named(name).resolve_binary() {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                println!("{name}: skipped: {e}");
                continue;
            }
        };
        let path = binary.to_string_lossy().into_owned();
        let mut times = Vec::new();
        for i in 0..runs {
            let (out, wall) = ktstr(&[
                "exec",
                "--topology",
                "1,1,2,1",
                "--scheduler",
                &path,
                "--",
                "true",
            ]);
            let err = String::from_utf8_lossy(&out.stderr);
            match attach_s(&err) {
                Some(t) => {
                    println!(
                        "{name} run {i}: attached in {:.3} s (whole run {:.2} s)",
                        t,
                        wall.as_secs_f64()
                    );
                    times.push(t);
                }
                None => println!(
                    "{name} run {i}: no attach time (exit {:?}): {}",
                    out.status.code(),
                    err.lines().last().unwrap_or("")
                ),
            }
        }
        if !times.is_empty() {
            let n = times.len();
            println!(
                "{name}: median attach {:.3} s over {n} runs",
                median(&mut times)
            );
        }
    }
}
