//! Capture tests: recording, the sparse core round trip, and the committed real-guest fixture.

use super::*;
use crate::memory::{BufferMemory, ElfCore};

#[test]
fn records_pages_and_round_trips_through_a_sparse_core() {
    let data: Vec<u8> = (0..0x10000u32).map(|i| (i * 7 + i / 4096) as u8).collect();
    let rec = RecordingMemory::new(BufferMemory::new(0, data.clone()));
    let mut b = [0u8; 16];
    rec.read(0x1ff8, &mut b).expect("straddles pages 1 and 2");
    rec.read(0x5000, &mut b[..1]).expect("page 5");
    rec.read(0x3000, &mut [])
        .expect("empty read records nothing");
    assert!(rec.read(0x10000, &mut b).is_err());
    assert_eq!(rec.pages(), [0x1000, 0x2000, 0x5000]);
    assert_eq!(page_runs(&rec.pages()), [(0x1000, 2), (0x5000, 1)]);
    let mut core = Vec::new();
    write_sparse_core(&mut core, rec.inner(), &rec.pages()).expect("write");
    assert_eq!(core.len(), 64 + 2 * 56 + 3 * 4096);
    let path = std::env::temp_dir().join(format!("ktstr-capture-test-{}.core", std::process::id()));
    std::fs::write(&path, &core).expect("write");
    let elf = ElfCore::open(&path).expect("reads back");
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        elf.segments().collect::<Vec<_>>(),
        [(0x1000, 0x2000), (0x5000, 0x1000)]
    );
    let mut got = [0u8; 16];
    elf.read(0x1ff8, &mut got).expect("in the core");
    assert_eq!(got[..], data[0x1ff8..0x2008]);
    assert!(elf.read(0x3000, &mut got).is_err(), "not captured");
}

/// The committed capture of a real 7.3 guest (see `tests/fixtures/README.md`).
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/guest-7.3-scx-simple"
);

/// Decompresses the fixture's core to a temporary file and opens it.
fn fixture_core() -> (ElfCore, CaptureMeta) {
    use std::io::Read;
    let meta: CaptureMeta =
        serde_json::from_slice(&std::fs::read(format!("{FIXTURE}.json")).expect("fixture JSON"))
            .expect("fixture JSON parses");
    let zst = std::fs::read(format!("{FIXTURE}.core.zst")).expect("fixture core");
    let mut core = Vec::new();
    ruzstd::decoding::StreamingDecoder::new(zst.as_slice())
        .expect("zstd frame")
        .read_to_end(&mut core)
        .expect("zstd data");
    let path = std::env::temp_dir().join(format!(
        "ktstr-fixture-{}-{:?}.core",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, &core).expect("write core");
    let elf = ElfCore::open(&path).expect("fixture core opens");
    let _ = std::fs::remove_file(&path);
    (elf, meta)
}

#[test]
fn fixture_is_small_and_sparse() {
    let zst = std::fs::metadata(format!("{FIXTURE}.core.zst")).expect("fixture");
    assert!(zst.len() < 256 << 10, "{} bytes", zst.len());
    let (core, meta) = fixture_core();
    let bytes: u64 = core.segments().map(|(_, len)| len).sum();
    assert!(bytes < 1 << 20 && bytes % PAGE == 0, "{bytes}");
    assert_eq!(meta.release, "7.3.4+deb13-cloud-amd64");
    assert_eq!((meta.nr_cpus, meta.regs.len()), (2, 2));
}

/// Replays the real guest: 2 vCPUs under scx_simple, three busy loops named
/// `ktstr-spin` pinned to CPU 1.
#[test]
fn fixture_replays_the_known_facts_of_a_real_7_3_guest() {
    use crate::sampler::{DsqKind, KernelAddrs, Sampler};
    use crate::symbols::SymbolTable;
    let path = crate::btf::kernel_tests::vmlinux_7_3();
    if !path.exists() {
        crate::btf::kernel_tests::skip(&format!("{} is absent", path.display()));
        return;
    }
    let btf = crate::btf::Btf::from_file(&path).expect("BTF");
    let (core, meta) = fixture_core();
    let syms = SymbolTable::from_text(&meta.kallsyms).expect("kallsyms");
    let addrs = KernelAddrs::from_symbols(&syms).expect("symbols");
    let mut s = Sampler::new(core, &btf, &meta.regs, addrs, meta.nr_cpus, meta.phys_end)
        .expect("setup on the captured pages alone");
    assert!(
        s.info()
            .notes
            .iter()
            .any(|n| n == "rq.cpu matches for CPUs 0..2"),
        "{:?}",
        s.info().notes
    );
    let sample = s.sample();
    assert_eq!(
        serde_json::to_value(&sample).expect("json"),
        meta.sample,
        "replay differs from the sample taken at capture"
    );
    assert!(sample.cpus.iter().all(|c| c.error.is_none()), "{sample:?}");
    let cpu1 = sample.cpus[1].rq.as_ref().expect("CPU 1");
    assert!(cpu1.nr_running >= 3, "{cpu1:?}");
    assert!(cpu1.scx_nr_running.is_some_and(|n| n >= 3), "{cpu1:?}");
    assert_eq!(cpu1.curr_comm, "ktstr-spin");
    assert!(!cpu1.curr_is_idle && cpu1.curr_pid > 1);
    let scx = sample.scx.expect("sched_ext state");
    assert_eq!(scx.state, "enabled");
    assert_eq!(scx.ops.as_deref(), Some("simple"));
    assert_eq!(scx.exit_kind.as_deref(), Some("none"));
    assert_eq!(scx.error, None);
    // Every s64 counter of 7.3's scx_event_stats; enabling passes through bypass once.
    assert_eq!(scx.events.len(), 21, "{:?}", scx.events);
    assert!(scx.events.contains_key("select_cpu_fallback"));
    assert!(scx.events["bypass_activate"] >= 1, "{:?}", scx.events);
    assert!(scx.events["bypass_duration"] > 0, "{:?}", scx.events);
    // The ids read from guest memory prove the DSQ offsets: SCX_DSQ_GLOBAL for node 0,
    // SCX_DSQ_BYPASS for each CPU, and scx_simple's one user DSQ (SHARED_DSQ, id 0) found
    // by walking scx_sched.dsq_hash.
    let ids: Vec<_> = scx
        .dsqs
        .iter()
        .map(|d| (d.kind, d.node, d.cpu, d.id))
        .collect();
    assert_eq!(
        ids,
        [
            (DsqKind::Global, Some(0), None, 1 << 63 | 1),
            (DsqKind::Bypass, None, Some(0), 1 << 63 | 3),
            (DsqKind::Bypass, None, Some(1), 1 << 63 | 3),
            (DsqKind::User, None, None, 0),
        ]
    );
    // scx_simple queues every spinner on SHARED_DSQ and moves one at a time to CPU 1: the
    // ones waiting there are CPU 1's sched_ext tasks less the running one and its local DSQ.
    let shared = scx.dsqs[3].nr;
    let local = cpu1.scx_local_dsq_nr.unwrap_or(0);
    assert!(shared >= 1, "{:?}", scx.dsqs);
    assert_eq!(
        Some(shared + local + 1),
        cpu1.scx_nr_running,
        "{cpu1:?} {:?}",
        scx.dsqs
    );
}
