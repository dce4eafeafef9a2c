//! Boot benchmark: ktstr `exec -- true` against the plain QEMU command on the same kernel.
//!
//! `cargo bench -p ktstr-cli --bench boot [-- REPS]` prints, per configuration,
//! medians of launch-to-init and whole wall time, and ktstr's ratio to plain
//! QEMU: at 2 vCPUs against `qemu-system-x86_64 -M pc -nographic -kernel
//! <bzImage> -initrd <busybox init>`, and at 16 vCPUs against the same with
//! multi-threaded TCG. Runs alternate so both sides see the same machine load.

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
    let mut marker = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if marker.is_none() && line.contains(MARKER) {
                marker = Some(t.elapsed().as_secs_f64());
            }
        }
    }
    let _ = child.wait();
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

fn bench(
    name: &str,
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
        let (out, wall) = ktstr(&["exec", "-v", "--topology", topo, "--", "true"]);
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
    let kdir = kernel_dir();
    let bz = kdir.join("vmlinuz");
    let work = std::env::temp_dir().join(format!("ktstr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let initrd = plain_initramfs(&work);
    // Warm the initramfs cache so the first run is not an outlier.
    let _ = ktstr(&["exec", "--", "true"]);
    let rows = [
        bench(
            "2 vCPUs (1,1,2,1) vs plain -smp 2",
            reps,
            "1,1,2,1",
            2,
            "multi",
            &bz,
            &initrd,
        ),
        bench(
            "16 vCPUs (2,2,2,2) vs plain -smp 16 multi-threaded",
            reps,
            "2,2,2,2",
            16,
            "multi",
            &bz,
            &initrd,
        ),
    ];
    println!("kernel: {}", kdir.display());
    println!(
        "{:<52} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9} {:>9}",
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
            "{:<52} {:>12.2} {:>12.2} {:>12.2} {:>12.2} {:>9.2} {:>9.2} {:>9}",
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
