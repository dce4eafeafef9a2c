//! Figures for ktstr's KVM VMM: build-to-first-COM1-byte latency, port-I/O exits per second,
//! and virtqueue notification round trips per second on the I/O thread and on the vCPU thread.
//!
//! `cargo bench -p ktstr-vmm --bench kvm_vmm`; skips visibly without /dev/kvm.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use ktstr_topology::Topology;
use ktstr_vmm::kvm::{KvmExit, KvmVm, KvmVmBuilder, KvmVmHandle};

const RUNS: usize = 20;
const OUTS: u32 = 200_000;

fn main() {
    if !common::kvm_available("kvm_vmm bench") {
        return;
    }
    let one = Topology::new(1, 1, 1, 1).unwrap_or_default();
    let mut first_byte = Vec::new();
    for _ in 0..RUNS {
        let t0 = Instant::now();
        let vm = match KvmVm::builder()
            .topology(one)
            .memory_mib(16)
            .program(common::programs::out_loop(1))
            .build()
        {
            Ok(vm) => vm,
            Err(e) => return eprintln!("build failed: {e}"),
        };
        let console = vm.io().console.clone();
        let mut h = match vm.start() {
            Ok(h) => h,
            Err(e) => return eprintln!("start failed: {e}"),
        };
        let _ = h.wait(Duration::from_secs(10));
        if let Some(at) = console.first_byte_at() {
            first_byte.push(at - t0);
        }
    }
    first_byte.sort();
    if let (Some(min), Some(med)) = (first_byte.first(), first_byte.get(first_byte.len() / 2)) {
        println!(
            "build -> first COM1 byte: median {:.2} ms, min {:.2} ms ({} runs, 1 vCPU, 16 MiB)",
            med.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3,
            first_byte.len()
        );
    }

    let b = KvmVm::builder()
        .topology(one)
        .memory_mib(16)
        .program(common::programs::out_loop(OUTS));
    let Some(mut h) = start(b) else { return };
    let t0 = h.started();
    match h.wait(Duration::from_secs(120)) {
        Ok(KvmExit::PowerOff { status: 0 }) => {
            let secs = t0.elapsed().as_secs_f64();
            let exits = h.io_exits();
            println!(
                "port-I/O exits: {exits} in {secs:.3} s = {:.0} exits/s ({:.2} us each)",
                exits as f64 / secs,
                secs * 1e6 / exits as f64
            );
        }
        other => eprintln!("OUT loop did not finish cleanly: {other:?}"),
    }

    for io_thread in [true, false] {
        let b = KvmVm::builder()
            .topology(one)
            .memory_mib(16)
            .virtio_console(true)
            .io_thread(io_thread)
            .program(common::programs::virtio_notify());
        let Some(mut h) = start(b) else { return };
        let t0 = h.started();
        let path = if io_thread {
            "I/O thread (ioeventfd)"
        } else {
            "vCPU thread (MMIO exit)"
        };
        match h.wait(Duration::from_secs(120)) {
            Ok(KvmExit::PowerOff { status: 0 }) => {
                let secs = t0.elapsed().as_secs_f64();
                let n = common::programs::VIRTIO_NOTIFY_ROUNDS;
                println!(
                    "virtqueue round trips on the {path}: {n} in {secs:.3} s = {:.0}/s \
                     ({:.2} us each)",
                    n as f64 / secs,
                    secs * 1e6 / n as f64
                );
            }
            other => eprintln!("notification loop on the {path} did not finish: {other:?}"),
        }
    }
}

/// Builds and starts `b`, or says why not.
fn start(b: KvmVmBuilder) -> Option<KvmVmHandle> {
    match b.build().and_then(KvmVm::start) {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("cannot start the VM: {e}");
            None
        }
    }
}
