//! Guest-to-host throughput of the bulk channel (QEMU: a virtio-serial port; ktstr's VMM: its
//! virtio-console) against COM2, measured in one run, and the host's memory while it streams.
//!
//! `cargo bench -p ktstr-cli --bench channel` (`KTSTR_BENCH_MB=64` sets the bulk channel's
//! size; COM2 moves a sixteenth of it, at least 1 MB, as it crawls; `KTSTR_BENCH_REPS=3`).
//! Each size runs twice in the guest: `head -c N /dev/zero > /dev/null` (what producing the
//! bytes costs) and `head -c N /dev/zero` (through the channel to ktstr's stdout, which the
//! bench reads and counts); throughput is N over the difference of the medians. ktstr's peak
//! RSS (VmHWM) is sampled while it streams: it must not grow with N.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{kernel_dir, median, KTSTR};

/// One guest run: wall seconds, bytes that reached ktstr's stdout, ktstr's peak RSS in KiB.
struct Sample {
    wall: f64,
    bytes: u64,
    peak_kib: u64,
}

fn run(kernel: &str, channel: bool, script: &str) -> Sample {
    let mut cmd = Command::new(KTSTR);
    cmd.args(["exec", "--kernel", kernel, "--timeout", "1200"]);
    if !channel {
        cmd.arg("--no-bulk-channel");
    }
    cmd.args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().expect("run ktstr");
    let pid = child.id();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = vm_hwm_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut stdout = child.stdout.take().expect("stdout");
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = stdout.read(&mut buf) {
        if n == 0 {
            break;
        }
        bytes += n as u64;
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().expect("wait for ktstr");
    let wall = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    assert!(status.success(), "ktstr failed: {stderr}");
    Sample {
        wall,
        bytes,
        peak_kib: peak.load(Ordering::Relaxed),
    }
}

/// ktstr's peak resident set (`VmHWM`) in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Throughput in MB/s of `mb` megabytes over `channel`, with the medians it came from.
fn measure(kernel: &str, channel: bool, mb: u64, reps: usize) -> (f64, f64, f64, u64) {
    let n = mb * 1_000_000;
    let (mut quiet, mut loud) = (Vec::new(), Vec::new());
    let mut peak = 0;
    for _ in 0..reps {
        let s = run(
            kernel,
            channel,
            &format!("head -c {n} /dev/zero > /dev/null"),
        );
        quiet.push(s.wall);
        let s = run(kernel, channel, &format!("head -c {n} /dev/zero"));
        assert_eq!(s.bytes, n, "every byte arrives");
        loud.push(s.wall);
        peak = peak.max(s.peak_kib);
    }
    let (q, l) = (median(&mut quiet), median(&mut loud));
    let mbps = mb as f64 / (l - q).max(1e-3);
    (mbps, q, l, peak)
}

fn main() {
    let mb: u64 = std::env::var("KTSTR_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let reps: usize = std::env::var("KTSTR_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let kernel = kernel_dir().join("vmlinux").display().to_string();
    println!("guest-to-host throughput, kernel {kernel}, median of {reps}");
    println!(
        "{:<28} {:>6} {:>10} {:>10} {:>9} {:>12}",
        "channel", "MB", "quiet s", "loud s", "MB/s", "host peak"
    );
    let mut rows = Vec::new();
    for (name, channel, size) in [
        ("bulk channel", true, mb / 4),
        ("bulk channel", true, mb),
        ("COM2", false, (mb / 16).max(1)),
    ] {
        let (mbps, q, l, peak) = measure(&kernel, channel, size, reps);
        println!(
            "{name:<28} {size:>6} {q:>10.2} {l:>10.2} {mbps:>9.2} {:>8} MiB",
            peak / 1024
        );
        rows.push((name, size, mbps, peak));
    }
    let bulk = rows[1].2;
    let com2 = rows[2].2;
    println!("bulk channel / COM2 throughput: {:.1}x", bulk / com2);
    println!(
        "host peak RSS at {} MB vs {} MB: {} vs {} MiB",
        rows[0].1,
        rows[1].1,
        rows[0].3 / 1024,
        rows[1].3 / 1024
    );
}
