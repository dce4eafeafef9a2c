//! `Sampler::sample()` cost on the committed real-guest capture, without a VM.
//!
//! `cargo bench -p ktstr-btf-monitor --bench sample [-- N]` replays
//! `tests/fixtures/guest-7.3-scx-simple` (2 vCPUs, sched_ext on) from memory, with the 7.3
//! vmlinux's BTF from ktstr's cache (skipped when absent). It times N samples (default
//! 20000) of 1 and of 2 CPUs, each serialized to JSON as the monitor writes it, in the
//! thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`), best of 5 alternating rounds, and
//! scales to a 16-CPU guest two ways: 8 times the 2-CPU cost (an upper bound: all of it
//! counted as per-CPU) and fixed + 16 x per-CPU (from the 1- and 2-CPU difference). For
//! each it prints samples/s one core could take and the share of one core per 100
//! samples/s.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use ktstr_btf_monitor::capture::{CaptureMeta, PAGE};
use ktstr_btf_monitor::{Btf, ElfCore, GuestMemory, KernelAddrs, MemError, Sampler, SymbolTable};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/guest-7.3-scx-simple"
);

/// Captured pages held in memory, like the mmapped RAM files of a live run.
struct Pages(HashMap<u64, Vec<u8>>);

impl GuestMemory for Pages {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let mut done = 0;
        while done < buf.len() {
            let at = gpa + done as u64;
            let page = self.0.get(&(at & !(PAGE - 1))).ok_or(MemError::Unmapped {
                gpa: at,
                len: buf.len() - done,
            })?;
            let off = (at % PAGE) as usize;
            let n = (PAGE as usize - off).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&page[off..off + n]);
            done += n;
        }
        Ok(())
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn vmlinux() -> PathBuf {
    let cache = std::env::var_os("KTSTR_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ktstr")
        });
    cache.join("kernels/7.3.4+deb13-cloud-amd64/vmlinux")
}

fn main() {
    let n: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let path = vmlinux();
    if !path.exists() {
        println!("sample: skipped, {} is absent", path.display());
        return;
    }
    let btf = Btf::from_file(&path).expect("BTF");
    let meta: CaptureMeta =
        serde_json::from_slice(&std::fs::read(format!("{FIXTURE}.json")).expect("fixture"))
            .expect("fixture JSON");
    let zst = std::fs::read(format!("{FIXTURE}.core.zst")).expect("fixture core");
    let mut raw = Vec::new();
    ruzstd::decoding::StreamingDecoder::new(zst.as_slice())
        .expect("zstd")
        .read_to_end(&mut raw)
        .expect("zstd");
    let tmp = std::env::temp_dir().join(format!("ktstr-bench-{}.core", std::process::id()));
    std::fs::write(&tmp, &raw).expect("write");
    let core = ElfCore::open(&tmp).expect("core");
    let _ = std::fs::remove_file(&tmp);
    let mut pages = HashMap::new();
    for (gpa, len) in core.segments() {
        for p in (gpa..gpa + len).step_by(PAGE as usize) {
            let mut b = vec![0u8; PAGE as usize];
            core.read(p, &mut b).expect("page");
            pages.insert(p, b);
        }
    }
    let mem = Pages(pages);
    let addrs = KernelAddrs::from_symbols(&SymbolTable::from_text(&meta.kallsyms).expect("syms"))
        .expect("addrs");
    let mut line = Vec::with_capacity(8192);
    let mut samplers: Vec<_> = [1usize, 2]
        .iter()
        .map(|&cpus| {
            Sampler::new(&mem, &btf, &meta.regs, addrs, cpus, meta.phys_end).expect("sampler")
        })
        .collect();
    let mut best = [f64::INFINITY; 2];
    let mut json_len = [0usize; 2];
    for _round in 0..5 {
        for (i, s) in samplers.iter_mut().enumerate() {
            let t0 = thread_cpu();
            for _ in 0..n {
                let sample = s.sample();
                line.clear();
                serde_json::to_writer(&mut line, &sample).expect("json");
                std::hint::black_box(&line);
            }
            let us = (thread_cpu() - t0).as_secs_f64() * 1e6 / f64::from(n);
            best[i] = best[i].min(us);
            json_len[i] = line.len();
        }
    }
    for (i, us) in best.iter().enumerate() {
        println!(
            "{} CPU(s): {us:.2} us CPU per sample+JSON ({} bytes of JSON)",
            i + 1,
            json_len[i]
        );
    }
    let report = |what: &str, us16: f64| {
        println!(
            "16 CPUs, {what}: {us16:.1} us per sample = {:.0} samples/s on one core; {:.3}% of \
             one core per 100 samples/s (target < 1%)",
            1e6 / us16,
            us16 * 100.0 / 1e6 * 100.0
        );
    };
    report("upper bound 8 x 2-CPU cost", 8.0 * best[1]);
    let per_cpu = (best[1] - best[0]).max(0.0);
    report(
        &format!(
            "fixed {:.2} us + 16 x {per_cpu:.2} us per CPU",
            best[0] - per_cpu
        ),
        best[0] + 15.0 * per_cpu,
    );
}
