//! Prints each CPU's runqueue facts from a QEMU `dump-guest-memory` core.
//!
//! `cargo run -p ktstr-btf-monitor --example dump_rq -- GUEST.core VMLINUX`
//!
//! Works on a stripped vmlinux: BTF gives the offsets and the `runqueues` per-CPU
//! variable's place in `.data..percpu`, the `Linux version` banner finds the KASLR slide,
//! and each vCPU's kernel GS base (from QEMU's CPU notes) is its per-CPU offset.

use std::error::Error;
use std::path::Path;

use ktstr_btf_monitor::btf::TypeBody;
use ktstr_btf_monitor::{resolve, Btf, ElfCore, GuestMemory, Kind, Translator};
use object::{Object, ObjectSection};

/// Kernel addresses have the top bit set (with 4- and 5-level paging alike).
const KERNEL_BIT: u64 = 1 << 63;

fn section(obj: &object::File<'_>, name: &str) -> Result<(u64, Vec<u8>), Box<dyn Error>> {
    let s = obj
        .section_by_name(name)
        .ok_or_else(|| format!("vmlinux has no {name} section"))?;
    Ok((s.address(), s.data()?.to_vec()))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, core_path, vmlinux] = args.as_slice() else {
        return Err("usage: dump_rq GUEST.core VMLINUX".into());
    };
    let btf = Btf::from_file(Path::new(vmlinux))?;
    let data = std::fs::read(vmlinux)?;
    let obj = object::File::parse(&*data)?;
    let (percpu_va, _) = section(&obj, ".data..percpu")?;
    let (rodata_va, rodata) = section(&obj, ".rodata")?;
    let banner = b"Linux version ";
    let at = rodata
        .windows(banner.len())
        .position(|w| w == banner)
        .ok_or("no banner in .rodata")?;
    let banner_link = rodata_va + at as u64;
    let expect = &rodata[at..rodata.len().min(at + 64)];

    let var = btf.find("runqueues", Kind::Var).ok_or("no runqueues VAR")?;
    let sec = btf
        .find(".data..percpu", Kind::Datasec)
        .ok_or("no percpu DATASEC")?;
    let rq_off = match btf.get(sec).map(|t| &t.body) {
        Some(TypeBody::Datasec { vars, .. }) => vars.iter().find(|v| v.ty == var),
        _ => None,
    }
    .ok_or("runqueues is not in .data..percpu")?
    .offset;

    let f = |ty: &str, p: &str| resolve(&btf, ty, p);
    let fields = [
        ("nr_running", f("rq", "nr_running")?),
        ("scx.nr_running", f("rq", "scx.nr_running")?),
        ("cfs.h_nr_queued", f("rq", "cfs.h_nr_queued")?),
        ("nr_switches", f("rq", "nr_switches")?),
        ("clock", f("rq", "clock")?),
    ];
    let curr = f("rq", "curr")?;
    let (pid, comm) = (f("task_struct", "pid")?, f("task_struct", "comm")?);

    let core = ElfCore::open(Path::new(core_path))?;
    for (cpu, regs) in core.cpus().iter().enumerate() {
        let t = Translator::new(regs.cr3, regs.la57());
        let slide = t.find_kaslr_slide(&core, banner_link, expect)?;
        let gs = if regs.gs_base & KERNEL_BIT != 0 {
            regs.gs_base
        } else {
            regs.kernel_gs_base
                .ok_or("vCPU in user mode and no kernel GS base")?
        };
        let rq = (percpu_va + u64::from(rq_off) + slide).wrapping_add(gs);
        let mut img = vec![0u8; curr.offset_bytes.max(fields[4].1.offset_bytes) as usize + 8];
        for (_, fl) in &fields {
            img.resize(img.len().max((fl.offset_bytes + fl.size) as usize), 0);
        }
        t.read_virt(&core as &dyn GuestMemory, rq, &mut img)?;
        let mut line = format!("cpu {cpu}: slide {slide:#x} rq {rq:#x}");
        for (name, fl) in &fields {
            line += &format!(" {name}={}", fl.value_in(&img).ok_or("short image")?);
        }
        let task_va = curr.value_in(&img).ok_or("short image")?;
        let mut task =
            vec![0u8; (comm.offset_bytes + comm.size).max(pid.offset_bytes + 4) as usize];
        t.read_virt(&core, task_va, &mut task)?;
        let name = &task[comm.offset_bytes as usize..][..comm.size as usize];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        line += &format!(
            " curr_pid={} curr_comm={:?}",
            pid.value_in(&task).ok_or("short task image")?,
            String::from_utf8_lossy(&name[..end])
        );
        println!("{line}");
    }
    Ok(())
}
