//! Boot benchmark: ktstr `exec -- true` against the plain QEMU command on the same kernel.
//!
//! `cargo bench -p ktstr-cli --bench boot [-- REPS]` prints, per configuration,
//! medians of launch-to-init and whole wall time, and ktstr's ratio to plain
//! QEMU: at 2 vCPUs against `qemu-system-x86_64 -M pc -nographic -kernel
//! <bzImage> -initrd <busybox init>`, and at 16 vCPUs against the same with
//! multi-threaded TCG. Runs alternate so both sides see the same machine load.
//! `KTSTR_BENCH_KERNELS=name,name` adds cached kernels (e.g. one from
//! `ktstr kernel build`) beside the fetched Debian kernel; `KTSTR_BENCH_VCPUS=2` skips the
//! 16-vCPU rows.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{kernel_dir, ktstr, launch_to_init, median};

const MARKER: &str = "KTSTR-PLAIN-INIT";

/// A busybox initramfs whose /init prints a marker and powers off.
fn plain_initramfs(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::create_dir_all(root.join("sys")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    let init = root.join("init");
    std::fs::write(
        &init,
        format!("#!/bin/busybox sh\n/bin/busybox mount -t proc p /proc\n/bin/busybox mount -t sysfs s /sys\necho {MARKER}\n/bin/busybox poweroff -f\n"),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&init).status().unwrap();
    let cpio = dir.join("plain.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc --quiet > {}",
            root.display(),
            cpio.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "cpio failed");
    cpio
}

/// One plain QEMU boot: (launch to marker, launch to exit); `None` if the marker never came.
fn plain_boot(bzimage: &Path, initrd: &Path, smp: u32, threads: &str) -> Option<(f64, f64)> {
    let t = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "pc",
            "-nographic",
            "-no-reboot",
            "-m",
            "512",
            "-cpu",
            "max",
        ])
        .args(["-accel", &format!("tcg,thread={threads}")])
        .args(["-smp", &smp.to_string()])
        .arg("-kernel")
        .arg(bzimage)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-system-x86_64");
    // A plain guest can hang (early oops under multi-threaded TCG): give up after 120 s.
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + std::time::Duration::from_secs(120);
        while Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = Command::new("kill").arg(pid.to_string()).status();
    });
    let mut marker = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if marker.is_none() && line.contains(MARKER) {
                marker = Some(t.elapsed().as_secs_f64());
            }
        }
    }
    let _ = child.wait();
    let _ = watchdog.join();
    marker.map(|m| (m, t.elapsed().as_secs_f64()))
}

struct Row {
    name: String,
    ktstr_init: Vec<f64>,
    ktstr_total: Vec<f64>,
    plain_init: Vec<f64>,
    plain_total: Vec<f64>,
    ktstr_failures: u32,
    plain_failures: u32,
}

#[allow(clippy::too_many_arguments)]
fn bench(
    name: &str,
    kernel: &Path,
    reps: usize,
    topo: &str,
    smp: u32,
    plain_threads: &str,
    bz: &Path,
    initrd: &Path,
) -> Row {
    let mut row = Row {
        name: name.into(),
        ktstr_init: vec![],
        ktstr_total: vec![],
        plain_init: vec![],
        plain_total: vec![],
        ktstr_failures: 0,
        plain_failures: 0,
    };
    for i in 0..reps {
        print!("\r{name}: run {}/{reps}", i + 1);
        let _ = std::io::stdout().flush();
        let k = kernel.join("vmlinux").display().to_string();
        let (out, wall) = ktstr(&[
            "exec",
            "-v",
            "--kernel",
            &k,
            "--topology",
            topo,
            "--",
            "true",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match (out.status.success(), launch_to_init(&stderr)) {
            (true, Some(init)) if !stderr.contains("retried") => {
                row.ktstr_init.push(init);
                row.ktstr_total.push(wall.as_secs_f64());
            }
            _ => {
                row.ktstr_failures += 1;
                eprintln!(
                    "\nktstr run failed or retried: {}",
                    stderr
                        .lines()
                        .filter(|l| l.contains("ktstr:"))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
            }
        }
        match plain_boot(bz, initrd, smp, plain_threads) {
            Some((init, total)) => {
                row.plain_init.push(init);
                row.plain_total.push(total);
            }
            None => row.plain_failures += 1,
        }
    }
    println!();
    row
}

fn main() {
    let reps: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let mut kernels = vec![kernel_dir()];
    if let Ok(extra) = std::env::var("KTSTR_BENCH_KERNELS") {
        let root = kernels[0]
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        kernels.extend(
            extra
                .split(',')
                .filter(|k| !k.is_empty())
                .map(|k| root.join(k)),
        );
    }
    let work = std::env::temp_dir().join(format!("ktstr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let initrd = plain_initramfs(&work);
    let mut rows = Vec::new();
    for kdir in &kernels {
        let bz = kdir.join("vmlinuz");
        let kname = kdir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Warm the initramfs cache so the first run is not an outlier.
        let k = kdir.join("vmlinux").display().to_string();
        let _ = ktstr(&["exec", "--kernel", &k, "--", "true"]);
        rows.push(bench(
            &format!("{kname}: 2 vCPUs (1,1,2,1) vs -smp 2"),
            kdir,
            reps,
            "1,1,2,1",
            2,
            "multi",
            &bz,
            &initrd,
        ));
        if std::env::var("KTSTR_BENCH_VCPUS").as_deref() != Ok("2") {
            rows.push(bench(
                &format!("{kname}: 16 vCPUs (2,2,2,2) vs -smp 16 mt"),
                kdir,
                reps,
                "2,2,2,2",
                16,
                "multi",
                &bz,
                &initrd,
            ));
        }
    }
    println!(
        "{:<58} {:>10} {:>10} {:>11} {:>11} {:>7} {:>7} {:>9}",
        "configuration (medians, s)",
        "ktstr init",
        "plain init",
        "ktstr total",
        "plain total",
        "init x",
        "total x",
        "fail k/p"
    );
    for mut r in rows {
        let (ki, pi) = (median(&mut r.ktstr_init), median(&mut r.plain_init));
        let (kt, pt) = (median(&mut r.ktstr_total), median(&mut r.plain_total));
        println!(
            "{:<58} {:>10.2} {:>10.2} {:>11.2} {:>11.2} {:>7.2} {:>7.2} {:>9}",
            r.name,
            ki,
            pi,
            kt,
            pt,
            ki / pi,
            kt / pt,
            format!("{}/{}", r.ktstr_failures, r.plain_failures)
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}
