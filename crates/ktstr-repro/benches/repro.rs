//! What a failure costs this crate: parsing its text, planning on the real BTF, and
//! decoding probe events.
//!
//! `cargo bench -p ktstr-repro --bench repro [VMLINUX]`; VMLINUX defaults to the 7.3
//! vmlinux in ktstr's cache (`$HOME/.cache/ktstr`); without it, planning runs on the
//! committed BTF subset only.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ktstr_btf_monitor::{Btf, SymbolTable};
use ktstr_repro::event::RawField;
use ktstr_repro::{decode_stream, plan, EventKind, Failure, KernelInfo, RawEvent};

const RELEASE: &str = "7.3.4+deb13-cloud-amd64";

fn fixture(name: &str) -> String {
    let p = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

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

fn main() {
    let dump = fixture("scx-ktstr-stall.sched.txt") + &fixture("scx-ktstr-stall.dmesg.txt");
    let (best, med) = time(200, || Failure::parse(&dump).map(|f| f.backtrace.len()));
    println!(
        "parse stall dump ({} bytes): best {best:?}, median {med:?}",
        dump.len()
    );
    let failure = Failure::parse(&dump).expect("fixture parses");

    let subset_path = format!(
        "{}/tests/fixtures/btf-7.3-subset.btf",
        env!("CARGO_MANIFEST_DIR")
    );
    let subset = Btf::parse(&std::fs::read(&subset_path).expect("subset")).expect("subset parses");
    let k = KernelInfo {
        release: RELEASE,
        btf: &subset,
        symbols: None,
        traceable: None,
        no_kprobe: None,
    };
    let (best, med) = time(200, || plan(&failure, &k).map(|p| p.probes.len()));
    println!("plan on the BTF subset: best {best:?}, median {med:?}");
    let p = plan(&failure, &k).expect("plan");

    let vmlinux = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/ktstr/kernels")
                .join(RELEASE)
                .join("vmlinux")
        });
    if vmlinux.exists() {
        let (best, med) = time(5, || Btf::from_file(&vmlinux).map(|b| b.len()));
        println!("parse the 7.3 vmlinux's BTF: best {best:?}, median {med:?}");
        let btf = Btf::from_file(&vmlinux).expect("vmlinux BTF");
        let fx = |n: &str| fixture(n);
        let syms = SymbolTable::from_text(&fx("7.3-kallsyms.txt")).expect("kallsyms");
        let traceable =
            ktstr_repro::plan::parse_filter_functions(&fx("7.3-available_filter_functions.txt"));
        let k = KernelInfo {
            release: RELEASE,
            btf: &btf,
            symbols: Some(&syms),
            traceable: Some(&traceable),
            no_kprobe: None,
        };
        let (best, med) = time(50, || plan(&failure, &k).map(|p| p.probes.len()));
        println!("plan on the whole 7.3 BTF: best {best:?}, median {med:?}");
    } else {
        println!("{} absent: whole-BTF timings skipped", vmlinux.display());
    }

    // 100k records of the stall plan's enqueue callback, 7 fields each.
    let probe = p
        .probes
        .iter()
        .position(|x| x.name() == "enqueue")
        .expect("enqueue probe") as u16;
    let ev = RawEvent {
        kind: EventKind::Entry,
        probe,
        cpu: 1,
        pid: 122,
        tgid: 122,
        ts_ns: 1,
        ret: None,
        seq: 0,
        args: vec![0xffff_8880_0412_8000, 1],
        fields: vec![
            RawField {
                bytes: Some(vec![122, 0, 0, 0])
            };
            7
        ]
        .into_iter()
        .enumerate()
        .map(|(i, f)| match i {
            1 => RawField {
                bytes: Some(b"spin\0\0\0\0\0\0\0\0\0\0\0\0".to_vec()),
            },
            3..=5 => RawField {
                bytes: Some(vec![0; 8]),
            },
            _ => f,
        })
        .collect(),
        stack: vec![],
    };
    let one = ev.to_bytes();
    let n = 100_000;
    let stream: Vec<u8> = one.iter().copied().cycle().take(one.len() * n).collect();
    let (best, med) = time(5, || decode_stream(&p, &stream).map(|v| v.len()));
    println!(
        "decode {n} records of {} bytes: best {best:?} ({:.2} M records/s), median {med:?}",
        one.len(),
        n as f64 / best.as_secs_f64() / 1e6
    );
}
