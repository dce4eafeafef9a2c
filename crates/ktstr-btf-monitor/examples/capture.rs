//! Captures the pages the sampler reads from a running ktstr guest, as a small fixture.
//!
//! ```text
//! cargo run -p ktstr-btf-monitor --example capture -- \
//!     QMP_SOCKET RAM_FILES(comma-separated) KALLSYMS_FILE VMLINUX NR_CPUS RELEASE OUT_STEM "HOW"
//! ```
//!
//! Over QMP it stops the guest (`stop`), reads every vCPU's registers (`info registers
//! -a`), sets up a [`Sampler`] on the RAM files wrapped in a [`RecordingMemory`], takes one
//! sample, copies the pages read, and resumes the guest (`cont`). It writes
//! `OUT_STEM.core.zst` (a sparse ELF core of those pages, zstd) and `OUT_STEM.json`
//! ([`CaptureMeta`]), then replays the core and checks the sample comes out the same.
//! `tests/fixtures/README.md` gives the full recipe (ktstr exec command included).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ktstr_btf_monitor::capture::{write_sparse_core, CaptureMeta, RecordingMemory};
use ktstr_btf_monitor::{Btf, CpuRegs, ElfCore, KernelAddrs, RamFiles, Sampler, SymbolTable};
use serde_json::{json, Value};

type Res<T> = Result<T, String>;

/// A minimal QMP session: commands in, replies out, events skipped.
struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Res<Qmp> {
        let s = UnixStream::connect(path).map_err(|e| format!("{}: {e}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let w = s.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp {
            r: BufReader::new(s),
            w,
        };
        let greeting = q.line()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        q.exec("qmp_capabilities", None)?;
        Ok(q)
    }

    fn line(&mut self) -> Res<Value> {
        let mut l = String::new();
        self.r.read_line(&mut l).map_err(|e| e.to_string())?;
        serde_json::from_str(&l).map_err(|e| format!("QMP sent `{l}`: {e}"))
    }

    fn exec(&mut self, cmd: &str, args: Option<Value>) -> Res<Value> {
        let mut m = json!({ "execute": cmd });
        if let (Some(a), Some(o)) = (args, m.as_object_mut()) {
            o.insert("arguments".into(), a);
        }
        writeln!(self.w, "{m}").map_err(|e| e.to_string())?;
        loop {
            let v = self.line()?;
            if v.get("event").is_some() {
                continue;
            }
            return match v.get("return") {
                Some(r) => Ok(r.clone()),
                None => Err(format!("{cmd}: {v}")),
            };
        }
    }
}

/// CR0, CR3, CR4, EFER and the GS base of each `CPU#n` block of `info registers -a`.
fn parse_registers(text: &str) -> Res<Vec<CpuRegs>> {
    let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|e| format!("`{s}`: {e}"));
    let mut out = Vec::new();
    for block in text.split("CPU#").skip(1) {
        let cpu: u32 = block
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or("bad CPU# header")?;
        let (mut cr0, mut cr3, mut cr4, mut efer, mut gs) = (0, 0, 0, 0, 0);
        for line in block.lines() {
            if let Some(seg) = line.strip_prefix("GS =") {
                gs = hex(seg.split_whitespace().nth(1).ok_or("GS base")?)?;
            }
            for kv in line.split_whitespace() {
                match kv.split_once('=') {
                    Some(("CR0", v)) => cr0 = hex(v)?,
                    Some(("CR3", v)) => cr3 = hex(v)?,
                    Some(("CR4", v)) => cr4 = hex(v)?,
                    Some(("EFER", v)) => efer = hex(v)?,
                    _ => {}
                }
            }
        }
        out.push(CpuRegs {
            cpu,
            cr3,
            la57: cr4 & (1 << 12) != 0,
            long_mode: efer & (1 << 10) != 0 && cr0 & (1 << 31) != 0,
            gs_base: gs,
        });
    }
    Ok(out)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("capture: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [qmp, ram, kallsyms, vmlinux, nr_cpus, release, out, how] = a.as_slice() else {
        return Err(
            "usage: capture QMP RAM_FILES KALLSYMS VMLINUX NR_CPUS RELEASE OUT_STEM HOW \
                    (see the file's doc comment)"
                .into(),
        );
    };
    let nr_cpus: usize = nr_cpus.parse().map_err(|e| format!("NR_CPUS: {e}"))?;
    let kallsyms = std::fs::read_to_string(kallsyms).map_err(|e| format!("{kallsyms}: {e}"))?;
    let btf = Btf::from_file(Path::new(vmlinux)).map_err(|e| e.to_string())?;
    let addrs = SymbolTable::from_text(&kallsyms)
        .map_err(|e| e.to_string())
        .and_then(|s| KernelAddrs::from_symbols(&s).map_err(|e| e.to_string()))?;
    let files: Vec<PathBuf> = ram.split(',').map(PathBuf::from).collect();
    let ram = RamFiles::open_pc(&files).map_err(|e| e.to_string())?;
    let phys_end = ram.regions().map(|(g, l)| g + l).max().unwrap_or(0);

    let mut q = Qmp::connect(Path::new(qmp))?;
    q.exec("stop", None)?;
    let taken = (|| {
        let text = q.exec(
            "human-monitor-command",
            Some(json!({"command-line": "info registers -a"})),
        )?;
        let regs = parse_registers(text.as_str().ok_or("HMP output is not text")?)?;
        let rec = RecordingMemory::new(&ram);
        let mut s =
            Sampler::new(&rec, &btf, &regs, addrs, nr_cpus, phys_end).map_err(|e| e.to_string())?;
        let sample = s.sample();
        drop(s);
        let pages = rec.pages();
        let mut core = Vec::new();
        write_sparse_core(&mut core, &ram, &pages).map_err(|e| e.to_string())?;
        Ok::<_, String>((regs, sample, pages.len(), core))
    })();
    q.exec("cont", None)?;
    let (regs, sample, npages, core) = taken?;

    let meta = CaptureMeta {
        release: release.clone(),
        nr_cpus,
        phys_end,
        regs,
        kallsyms,
        sample: serde_json::to_value(&sample).map_err(|e| e.to_string())?,
        how: how.clone(),
    };
    let zst = ruzstd::encoding::compress_to_vec(
        core.as_slice(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let core_path = format!("{out}.core.zst");
    std::fs::write(&core_path, &zst).map_err(|e| format!("{core_path}: {e}"))?;
    let json_path = format!("{out}.json");
    let text = serde_json::to_string_pretty(&meta).map_err(|e| e.to_string())? + "\n";
    std::fs::write(&json_path, text).map_err(|e| format!("{json_path}: {e}"))?;

    // Replay from the written core: the same sample must come out.
    let tmp = std::env::temp_dir().join(format!("ktstr-capture-{}.core", std::process::id()));
    std::fs::write(&tmp, &core).map_err(|e| e.to_string())?;
    let replay = ElfCore::open(&tmp).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&tmp);
    let again = Sampler::new(replay?, &btf, &meta.regs, addrs, nr_cpus, phys_end)
        .map_err(|e| format!("replay: {e}"))?
        .sample();
    if again != sample {
        return Err("the replayed sample differs from the captured one".into());
    }
    println!(
        "{npages} pages, core {} bytes, {core_path} {} bytes; replay matches\n{}",
        core.len(),
        zst.len(),
        serde_json::to_string(&sample).map_err(|e| e.to_string())?
    );
    Ok(())
}
