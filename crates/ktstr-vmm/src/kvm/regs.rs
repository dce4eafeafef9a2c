//! The 64-bit entry state the Linux boot protocol asks for: GDT, identity page tables,
//! control registers, segment registers, FPU, and the local APIC's LINT pins.
//!
//! Linux's 64-bit boot protocol (Documentation/arch/x86/boot.rst): long mode with paging,
//! an identity map covering the kernel, boot_params and command line, a GDT with flat
//! `__BOOT_CS` (0x10, execute/read) and `__BOOT_DS` (0x18, read/write), CS = `__BOOT_CS`,
//! DS/ES/SS = `__BOOT_DS`, interrupts off, RSI = address of boot_params.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::error::ioctl;
use super::layout::{GDT_GPA, IDENTITY_MAPPED, PDPT_GPA, PD_GPA, PML4_GPA};
use super::memory::GuestMemory;
use super::KvmError;

/// Selector of the 64-bit code segment (`__BOOT_CS`).
pub const BOOT_CS: u16 = 0x10;
/// Selector of the data segment (`__BOOT_DS`).
pub const BOOT_DS: u16 = 0x18;
/// Selector of the TSS.
pub const BOOT_TSS: u16 = 0x20;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_PS: u64 = 0x80;

/// A GDT entry from its flags (access byte + flags nibble, as `0xa09b`), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0xffff)
}

/// The GDT: null, null, code 0x10, data 0x18, TSS 0x20.
pub const GDT: [u64; 5] = [
    0,
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// The `kvm_segment` a GDT entry describes when loaded with `selector`.
pub fn segment(entry: u64, selector: u16) -> kvm_segment {
    let limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from((entry >> 47) & 1 == 0),
        padding: 0,
    }
}

/// Writes the GDT and the identity page tables (0..[`IDENTITY_MAPPED`], 2 MiB pages).
pub fn write_boot_tables(mem: &GuestMemory) -> Result<(), KvmError> {
    let w = |what, gpa: u64, v: u64| {
        mem.write_obj(v, GuestAddress(gpa))
            .map_err(|source| KvmError::GuestMemory { what, gpa, source })
    };
    for (i, e) in GDT.iter().enumerate() {
        w("GDT", GDT_GPA + 8 * i as u64, *e)?;
    }
    w("PML4", PML4_GPA, PDPT_GPA | PTE_PRESENT_RW)?;
    let gibs = IDENTITY_MAPPED >> 30;
    for g in 0..gibs {
        let pd = PD_GPA + g * 0x1000;
        w("PDPT", PDPT_GPA + g * 8, pd | PTE_PRESENT_RW)?;
        for i in 0..512u64 {
            let page = (g << 30) | (i << 21);
            w("PD", pd + i * 8, page | PTE_PRESENT_RW | PDE_PS)?;
        }
    }
    Ok(())
}

/// General registers a vCPU starts with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryRegs {
    /// Entry point.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// RSI (boot_params for Linux; APIC ID for test programs).
    pub rsi: u64,
    /// RDI (vCPU index for test programs).
    pub rdi: u64,
    /// RDX (vCPU count for test programs).
    pub rdx: u64,
}

/// Puts `vcpu` in 64-bit mode on the boot tables with `entry`'s registers.
pub fn enter_long_mode(vcpu: &VcpuFd, entry: EntryRegs) -> Result<(), KvmError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    let code = segment(GDT[2], BOOT_CS);
    let data = segment(GDT[3], BOOT_DS);
    let tss = segment(GDT[4], BOOT_TSS);
    sregs.gdt.base = GDT_GPA;
    sregs.gdt.limit = (std::mem::size_of_val(&GDT) - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = PML4_GPA;
    sregs.cr4 |= CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.cr0 |= CR0_PE | CR0_PG | CR0_ET | CR0_NE;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    let regs = kvm_regs {
        rip: entry.rip,
        rsp: entry.rsp,
        rbp: entry.rsp,
        rsi: entry.rsi,
        rdi: entry.rdi,
        rdx: entry.rdx,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(ioctl("KVM_SET_FPU"))
}

/// Local APIC register offsets and delivery modes for LINT0/LINT1.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Wires LINT0 to the 8259 (ExtINT) and LINT1 to NMI, as firmware leaves them for Linux.
pub fn set_lint(vcpu: &VcpuFd) -> Result<(), KvmError> {
    let mut lapic = vcpu.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?;
    for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes: Vec<u8> = lapic.regs[reg..reg + 4].iter().map(|b| *b as u8).collect();
        let mut v = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        v = (v & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(ioctl("KVM_SET_LAPIC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_golden() {
        assert_eq!(GDT[2], 0x00af_9b00_0000_ffff);
        assert_eq!(GDT[3], 0x00cf_9300_0000_ffff);
        assert_eq!(GDT[4], 0x008f_8b00_0000_ffff);
        let cs = segment(GDT[2], BOOT_CS);
        assert_eq!(
            (cs.l, cs.db, cs.type_, cs.present, cs.s, cs.g),
            (1, 0, 0xb, 1, 1, 1)
        );
        assert_eq!((cs.base, cs.limit), (0, 0xffff_ffff));
        let ds = segment(GDT[3], BOOT_DS);
        assert_eq!((ds.l, ds.db, ds.type_, ds.unusable), (0, 1, 3, 0));
        assert_eq!(segment(0, 0).unusable, 1);
    }

    #[test]
    fn identity_map_covers_four_gib() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write_boot_tables(&mem).unwrap();
        let r = |a: u64| mem.read_obj::<u64>(GuestAddress(a)).unwrap();
        assert_eq!(r(PML4_GPA), PDPT_GPA | 3);
        assert_eq!(r(PDPT_GPA + 24), (PD_GPA + 0x3000) | 3);
        assert_eq!(r(PD_GPA), 0x83);
        // 0xd000_0000 (the ring): GiB 3, 2 MiB entry 128.
        assert_eq!(r(PD_GPA + 0x3000 + 128 * 8), 0xd000_0000 | 0x83);
        assert_eq!(r(GDT_GPA + 16), GDT[2]);
    }
}
