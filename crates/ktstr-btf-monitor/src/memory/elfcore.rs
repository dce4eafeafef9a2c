//! Guest memory from a QEMU `dump-guest-memory` ELF64 core, read with `pread`.
//!
//! Each `PT_LOAD` segment holds RAM at guest-physical `p_paddr`; bytes past `p_filesz`
//! up to `p_memsz` read as zero. QEMU also writes a `QEMU` note per vCPU with its control
//! registers ([`QemuCpuState`]): CR3 roots the page-table walk, CR4.LA57 selects 5-level
//! paging, and the GS base is the CPU's per-CPU area.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use object::elf::{PT_LOAD, PT_NOTE};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::read::ReadCache;
use object::Endianness;

use super::{read_spans, GuestMemory, MemError, Span};

/// `Span::src` for bytes stored in the file.
const IN_FILE: usize = 0;
/// `Span::src` for the zero-filled tail of a segment.
const ZERO: usize = 1;

/// Registers of one vCPU from QEMU's `QEMUCPUState` note (`target/i386/arch_dump.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QemuCpuState {
    /// Instruction pointer.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3: physical address of the top-level page table (plus PCID bits).
    pub cr3: u64,
    /// CR4 (bit 12 is LA57).
    pub cr4: u64,
    /// GS base: the per-CPU area while in the kernel.
    pub gs_base: u64,
    /// `MSR_KERNEL_GS_BASE`, when the note is new enough to carry it.
    pub kernel_gs_base: Option<u64>,
}

/// Byte offsets in `QEMUCPUState`.
mod qemu_note {
    pub const RSP: usize = 8 + 6 * 8;
    pub const RIP: usize = 8 + 16 * 8;
    /// `gs` is the fifth 24-byte segment after rip/rflags; its base is at +16.
    pub const GS_BASE: usize = 8 + 18 * 8 + 4 * 24 + 16;
    pub const CR: usize = 8 + 18 * 8 + 10 * 24;
    pub const KERNEL_GS_BASE: usize = CR + 5 * 8;
}

impl QemuCpuState {
    /// Decodes a `QEMU` note's descriptor; `None` when it is too short.
    fn parse(desc: &[u8]) -> Option<Self> {
        let at = |off: usize| -> Option<u64> {
            let b = desc.get(off..off + 8)?;
            Some(u64::from_le_bytes(b.try_into().ok()?))
        };
        Some(QemuCpuState {
            rip: at(qemu_note::RIP)?,
            rsp: at(qemu_note::RSP)?,
            cr0: at(qemu_note::CR)?,
            cr3: at(qemu_note::CR + 3 * 8)?,
            cr4: at(qemu_note::CR + 4 * 8)?,
            gs_base: at(qemu_note::GS_BASE)?,
            kernel_gs_base: at(qemu_note::KERNEL_GS_BASE),
        })
    }

    /// True when CR4.LA57 (5-level paging) is set.
    pub fn la57(&self) -> bool {
        self.cr4 & (1 << 12) != 0
    }
}

/// A guest memory dump in ELF core format.
#[derive(Debug)]
pub struct ElfCore {
    path: PathBuf,
    file: File,
    spans: Vec<Span>,
    cpus: Vec<QemuCpuState>,
}

impl ElfCore {
    /// Opens a dump and indexes its `PT_LOAD` segments and QEMU CPU notes.
    pub fn open(path: &Path) -> Result<Self, MemError> {
        let file = File::open(path).map_err(|source| MemError::Io {
            path: path.to_path_buf(),
            gpa: 0,
            source,
        })?;
        let elf_err = |source| MemError::Elf {
            path: path.to_path_buf(),
            source,
        };
        let cache = ReadCache::new(file);
        let mut spans = Vec::new();
        let mut cpus = Vec::new();
        {
            let elf = ElfFile64::<Endianness, _>::parse(&cache).map_err(elf_err)?;
            let endian = elf.endian();
            for ph in elf.elf_program_headers() {
                match ph.p_type(endian) {
                    PT_LOAD => {
                        let (gpa, off) = (ph.p_paddr(endian), ph.p_offset(endian));
                        let (filesz, memsz) = (ph.p_filesz(endian), ph.p_memsz(endian));
                        spans.push(Span {
                            gpa,
                            len: filesz.min(memsz),
                            src: IN_FILE,
                            src_off: off,
                        });
                        if memsz > filesz {
                            spans.push(Span {
                                gpa: gpa.saturating_add(filesz),
                                len: memsz - filesz,
                                src: ZERO,
                                src_off: 0,
                            });
                        }
                    }
                    PT_NOTE => {
                        let Some(mut notes) = ph.notes(endian, &cache).map_err(elf_err)? else {
                            continue;
                        };
                        while let Some(note) = notes.next().map_err(elf_err)? {
                            if note.name() == b"QEMU" && note.n_type(endian) == 0 {
                                cpus.extend(QemuCpuState::parse(note.desc()));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        spans.retain(|s| s.len > 0);
        spans.sort_by_key(|s| s.gpa);
        // Drop any segment overlapping the one before it; a dump never has such overlap.
        let mut end = 0u64;
        spans.retain(|s| {
            let keep = s.gpa >= end;
            if keep {
                end = s.gpa.saturating_add(s.len);
            }
            keep
        });
        Ok(ElfCore {
            path: path.to_path_buf(),
            file: cache.into_inner(),
            spans,
            cpus,
        })
    }

    /// `(gpa, len)` of every segment (zero-filled tails separately), in address order.
    pub fn segments(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.spans.iter().map(|s| (s.gpa, s.len))
    }

    /// The vCPU register states from QEMU notes, in vCPU order (empty for other dumps).
    pub fn cpus(&self) -> &[QemuCpuState] {
        &self.cpus
    }
}

impl GuestMemory for ElfCore {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        read_spans(&self.spans, gpa, buf, |span, off, chunk| {
            if span.src == ZERO {
                chunk.fill(0);
                return Ok(());
            }
            let io = |source| MemError::Io {
                path: self.path.clone(),
                gpa: span.gpa.wrapping_add(off),
                source,
            };
            let pos = span
                .src_off
                .checked_add(off)
                .ok_or_else(|| io(std::io::ErrorKind::InvalidInput.into()))?;
            self.file.read_exact_at(chunk, pos).map_err(io)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a minimal ELF64 core: a QEMU note for one CPU and the given
    /// `(paddr, data, memsz)` PT_LOAD segments.
    pub(crate) fn write_core(path: &Path, cpu: &QemuCpuState, loads: &[(u64, &[u8], u64)]) {
        let phnum = 1 + loads.len();
        let mut note = Vec::new();
        let mut desc = vec![0u8; qemu_note::KERNEL_GS_BASE + 8];
        let mut put = |off: usize, v: u64| desc[off..off + 8].copy_from_slice(&v.to_le_bytes());
        put(qemu_note::RIP, cpu.rip);
        put(qemu_note::RSP, cpu.rsp);
        put(qemu_note::CR, cpu.cr0);
        put(qemu_note::CR + 24, cpu.cr3);
        put(qemu_note::CR + 32, cpu.cr4);
        put(qemu_note::GS_BASE, cpu.gs_base);
        put(qemu_note::KERNEL_GS_BASE, cpu.kernel_gs_base.unwrap_or(0));
        for v in [5u32, desc.len() as u32, 0] {
            note.extend_from_slice(&v.to_le_bytes());
        }
        note.extend_from_slice(b"QEMU\0\0\0\0");
        note.extend_from_slice(&desc);
        let mut out = Vec::new();
        out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        out.extend_from_slice(&4u16.to_le_bytes()); // ET_CORE
        out.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // entry
        out.extend_from_slice(&64u64.to_le_bytes()); // phoff
        out.extend_from_slice(&0u64.to_le_bytes()); // shoff
        out.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 56, phnum as u16, 64, 0, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let mut data_off = 64 + 56 * phnum as u64;
        let phdr = |out: &mut Vec<u8>, ty: u32, off: u64, paddr: u64, filesz: u64, memsz| {
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            for v in [off, paddr, paddr, filesz, memsz, 0] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        let n = note.len() as u64;
        phdr(&mut out, PT_NOTE, data_off, 0, n, n);
        data_off += n;
        for (paddr, data, memsz) in loads {
            let len = data.len() as u64;
            phdr(&mut out, PT_LOAD, data_off, *paddr, len, *memsz);
            data_off += len;
        }
        out.extend_from_slice(&note);
        for (_, data, _) in loads {
            out.extend_from_slice(data);
        }
        std::fs::write(path, out).expect("write core");
    }

    #[test]
    fn core_segments_notes_and_reads() {
        let path =
            std::env::temp_dir().join(format!("ktstr-btf-monitor-{}.core", std::process::id()));
        let cpu = QemuCpuState {
            rip: 0xffff_ffff_8100_0000,
            rsp: 0xffff_c900_0000_3f00,
            cr0: 0x8005_0033,
            cr3: 0x1a2b_3000,
            cr4: 0x3706f0 | (1 << 12),
            gs_base: 0xffff_8880_7fc0_0000,
            kernel_gs_base: Some(0x7f00_0000_0000),
        };
        let low: Vec<u8> = (0..0x2000u32).map(|i| i as u8).collect();
        let high = vec![0xabu8; 0x1000];
        write_core(
            &path,
            &cpu,
            &[(0, &low, 0x2000), (0x10_0000, &high, 0x2000)],
        );
        let core = ElfCore::open(&path).expect("open core");
        assert_eq!(core.cpus(), [cpu]);
        assert!(core.cpus()[0].la57());
        let segs: Vec<_> = core.segments().collect();
        assert_eq!(
            segs,
            [(0, 0x2000), (0x10_0000, 0x1000), (0x10_1000, 0x1000)]
        );
        assert_eq!(core.read_u32(0x104).expect("low"), 0x0706_0504);
        // Across the end of file data into the zero-filled tail.
        let mut buf = [0xffu8; 4];
        core.read(0x10_0ffe, &mut buf).expect("tail");
        assert_eq!(buf, [0xab, 0xab, 0, 0]);
        assert!(matches!(
            core.read(0x2000, &mut buf),
            Err(MemError::Unmapped { gpa: 0x2000, .. })
        ));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn non_elf_is_an_error() {
        let path =
            std::env::temp_dir().join(format!("ktstr-btf-monitor-{}.junk", std::process::id()));
        std::fs::write(&path, b"definitely not an ELF core").expect("write");
        assert!(matches!(ElfCore::open(&path), Err(MemError::Elf { .. })));
        let _ = std::fs::remove_file(&path);
    }
}
