//! Shared helpers of the VM benchmarks.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The ktstr binary under test.
pub const KTSTR: &str = env!("CARGO_BIN_EXE_ktstr");

/// Runs ktstr with `args`, returning its output and wall time.
pub fn ktstr(args: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let out = Command::new(KTSTR)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ktstr");
    (out, t.elapsed())
}

/// The cached kernel directory ktstr would boot by default.
pub fn kernel_dir() -> PathBuf {
    let (out, _) = ktstr(&["kernel", "fetch"]);
    assert!(
        out.status.success(),
        "ktstr kernel fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    image.parent().expect("kernel dir").to_path_buf()
}

/// Median of samples.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

/// Parses `launch to init 1.23s` from ktstr's verbose stderr.
pub fn launch_to_init(stderr: &str) -> Option<f64> {
    seconds_after(stderr, "launch to init ")
}

/// Parses `launch to engine running 0.123s` from verbose stderr: for ktstr's VMM the guest
/// built and loaded, its vCPUs started.
pub fn launch_to_running(stderr: &str) -> Option<f64> {
    seconds_after(stderr, "launch to engine running ")
}

/// Parses `launch to first console byte 0.123s` (ktstr's VMM only) from verbose stderr.
pub fn launch_to_console(stderr: &str) -> Option<f64> {
    seconds_after(stderr, "launch to first console byte ")
}

/// The seconds (`1.23s`) that follow `label` in `stderr`.
fn seconds_after(stderr: &str, label: &str) -> Option<f64> {
    let rest = stderr.split(label).nth(1)?;
    rest.split('s').next()?.parse().ok()
}
