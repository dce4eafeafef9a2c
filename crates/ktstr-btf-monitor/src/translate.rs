//! Kernel virtual to guest physical addresses on x86-64, and per-CPU variables.
//!
//! [`Translator`] walks the guest's own page tables from CR3 (4-level, or 5-level when
//! CR4.LA57 is set), honouring 1 GiB and 2 MiB pages. Two fast paths skip the walk once
//! their bases are known (typically read from the guest through a walk first):
//!
//! - the direct map: `va - page_offset_base` for `va` in `page_offset_base..+phys_end`;
//! - the kernel image: `va - __START_KERNEL_map + phys_base` for `va` in the 1 GiB image
//!   mapping (KASLR moves both the virtual and the physical base; `phys_base` is the
//!   kernel's variable of that name).
//!
//! A per-CPU variable of CPU `n` lives at its symbol address plus `__per_cpu_offset[n]`.

use crate::memory::{GuestMemory, MemError};
use crate::symbols::START_KERNEL_MAP;

/// Physical-address bits of a page-table entry (bits 12..51).
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Entry bit 0: present.
const PRESENT: u64 = 1;
/// Entry bit 7 in a PDPT or PD entry: maps a 1 GiB or 2 MiB page.
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// Size of the kernel image mapping (`KERNEL_IMAGE_SIZE` with KASLR).
const KERNEL_IMAGE_SIZE: u64 = 1 << 30;
/// KASLR moves the kernel in steps of `CONFIG_PHYSICAL_ALIGN` (2 MiB by default).
const SLIDE_ALIGN: u64 = 2 << 20;

/// Errors from address translation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranslateError {
    /// The address is not canonical for the paging mode.
    #[error("virtual address {va:#x} is not canonical ({levels}-level paging)")]
    NonCanonical {
        /// The address.
        va: u64,
        /// 4 or 5.
        levels: u8,
    },
    /// A page-table entry on the way is not present.
    #[error("virtual address {va:#x} is not mapped: entry at level {level} (gpa {entry_gpa:#x}) is {entry:#x}")]
    NotPresent {
        /// The address.
        va: u64,
        /// Table level: 5 PML5, 4 PML4, 3 PDPT, 2 PD, 1 PT.
        level: u8,
        /// Guest-physical address of the entry.
        entry_gpa: u64,
        /// The entry's value.
        entry: u64,
    },
    /// Guest memory could not be read while translating or reading `va`.
    #[error("reading guest memory for virtual address {va:#x}")]
    Memory {
        /// The virtual address.
        va: u64,
        /// The failed read.
        #[source]
        source: MemError,
    },
    /// No KASLR slide up to 1 GiB puts the expected bytes at the link-time address.
    #[error("no KASLR slide puts the expected {len} bytes at link address {link_va:#x} + slide")]
    SlideNotFound {
        /// The link-time address probed.
        link_va: u64,
        /// Length of the expected bytes.
        len: usize,
    },
    /// No `__per_cpu_offset` entry for this CPU.
    #[error("no per-CPU offset for CPU {cpu} ({nr_cpus} known)")]
    NoCpu {
        /// The CPU asked for.
        cpu: usize,
        /// Offsets known.
        nr_cpus: usize,
    },
}

/// Translates kernel virtual addresses of one guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translator {
    root: u64,
    la57: bool,
    direct_map: Option<(u64, u64)>,
    phys_base: Option<u64>,
}

impl Translator {
    /// A translator walking from `cr3` (PCID and flag bits are ignored); `la57` as CR4.LA57.
    pub fn new(cr3: u64, la57: bool) -> Self {
        Translator {
            root: cr3 & ADDR_MASK,
            la57,
            direct_map: None,
            phys_base: None,
        }
    }

    /// Adds the direct-map fast path for guest-physical `0..phys_end` at `page_offset_base`.
    pub fn with_direct_map(mut self, page_offset_base: u64, phys_end: u64) -> Self {
        self.direct_map = Some((page_offset_base, phys_end));
        self
    }

    /// Adds the kernel-image fast path with the kernel's `phys_base`.
    pub fn with_kernel_image(mut self, phys_base: u64) -> Self {
        self.phys_base = Some(phys_base);
        self
    }

    /// Guest-physical address of `va`, using a fast path when one applies.
    pub fn translate(&self, mem: &dyn GuestMemory, va: u64) -> Result<u64, TranslateError> {
        if let Some(gpa) = self.fast_path(va) {
            return Ok(gpa);
        }
        self.walk(mem, va).map(|(gpa, _)| gpa)
    }

    fn fast_path(&self, va: u64) -> Option<u64> {
        if let Some((base, end)) = self.direct_map {
            if let Some(off) = va.checked_sub(base).filter(|&off| off < end) {
                return Some(off);
            }
        }
        let pb = self.phys_base?;
        let off = va
            .checked_sub(START_KERNEL_MAP)
            .filter(|&off| off < KERNEL_IMAGE_SIZE)?;
        off.checked_add(pb)
    }

    /// Walks the page tables for `va`: returns the guest-physical address and the size
    /// of the page that maps it.
    pub fn walk(&self, mem: &dyn GuestMemory, va: u64) -> Result<(u64, u64), TranslateError> {
        let levels: u8 = if self.la57 { 5 } else { 4 };
        let top_bit = if self.la57 { 56 } else { 47 };
        let high = (va as i64) >> top_bit;
        if high != 0 && high != -1 {
            return Err(TranslateError::NonCanonical { va, levels });
        }
        let mut table = self.root;
        for level in (1..=levels).rev() {
            let shift = 12 + 9 * u32::from(level - 1);
            let index = (va >> shift) & 0x1ff;
            let entry_gpa = table + index * 8;
            let entry = mem
                .read_u64(entry_gpa)
                .map_err(|source| TranslateError::Memory { va, source })?;
            if entry & PRESENT == 0 {
                return Err(TranslateError::NotPresent {
                    va,
                    level,
                    entry_gpa,
                    entry,
                });
            }
            let page_size = 1u64 << shift;
            if level == 1 || ((level == 2 || level == 3) && entry & PAGE_SIZE_BIT != 0) {
                let base = entry & ADDR_MASK & !(page_size - 1);
                return Ok((base | (va & (page_size - 1)), page_size));
            }
            table = entry & ADDR_MASK;
        }
        // The loop returns at level 1 at the latest.
        Err(TranslateError::NonCanonical { va, levels })
    }

    /// Reads `buf.len()` bytes at kernel virtual `va`, page by page.
    pub fn read_virt(
        &self,
        mem: &dyn GuestMemory,
        va: u64,
        buf: &mut [u8],
    ) -> Result<(), TranslateError> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = va.wrapping_add(done as u64);
            let (gpa, room) = match self.fast_path(at) {
                // Contiguous in both spaces: the whole rest in one read.
                Some(gpa) => (gpa, u64::MAX),
                None => {
                    let (gpa, size) = self.walk(mem, at)?;
                    (gpa, size - (at & (size - 1)))
                }
            };
            let n = usize::try_from(room)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            mem.read(gpa, &mut buf[done..done + n])
                .map_err(|source| TranslateError::Memory { va: at, source })?;
            done += n;
        }
        Ok(())
    }

    /// Reads a little-endian `u64` at kernel virtual `va`.
    pub fn read_virt_u64(&self, mem: &dyn GuestMemory, va: u64) -> Result<u64, TranslateError> {
        let mut b = [0u8; 8];
        self.read_virt(mem, va, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Finds the kernel's KASLR slide: the multiple of 2 MiB (`CONFIG_PHYSICAL_ALIGN`)
    /// below 1 GiB at which the page tables map `expect` at `link_va + slide`.
    ///
    /// `link_va` and `expect` come from the vmlinux, e.g. the `Linux version` banner in
    /// `.rodata`; pick bytes that are unique.
    pub fn find_kaslr_slide(
        &self,
        mem: &dyn GuestMemory,
        link_va: u64,
        expect: &[u8],
    ) -> Result<u64, TranslateError> {
        let mut buf = vec![0u8; expect.len()];
        (0..KERNEL_IMAGE_SIZE / SLIDE_ALIGN)
            .map(|k| k * SLIDE_ALIGN)
            .find(|&slide| {
                let mut plain = *self;
                plain.phys_base = None;
                plain
                    .read_virt(mem, link_va.wrapping_add(slide), &mut buf)
                    .is_ok()
                    && buf == expect
            })
            .ok_or(TranslateError::SlideNotFound {
                link_va,
                len: expect.len(),
            })
    }

    /// Reads `__per_cpu_offset[0..nr_cpus]` from the array at virtual `array_va`.
    pub fn per_cpu_offsets(
        &self,
        mem: &dyn GuestMemory,
        array_va: u64,
        nr_cpus: usize,
    ) -> Result<Vec<u64>, TranslateError> {
        let mut raw = vec![0u8; nr_cpus.saturating_mul(8)];
        self.read_virt(mem, array_va, &mut raw)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| c.iter().rev().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
            .collect())
    }
}

/// Virtual address of CPU `cpu`'s copy of the per-CPU variable at `symbol_addr`.
pub fn per_cpu_addr(symbol_addr: u64, offsets: &[u64], cpu: usize) -> Result<u64, TranslateError> {
    offsets
        .get(cpu)
        .map(|off| symbol_addr.wrapping_add(*off))
        .ok_or(TranslateError::NoCpu {
            cpu,
            nr_cpus: offsets.len(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::BufferMemory;

    const PAGE: u64 = 4096;

    /// Page tables in a 64 KiB buffer at gpa 0:
    /// PML5 0x5000, PML4 0x1000, PDPT(kernel) 0x2000, PD 0x3000, PT 0x4000,
    /// PDPT(direct map) 0x8000 with a 1 GiB page; data pages 0x6000 and 0x7000.
    struct Fixture {
        mem: BufferMemory<Vec<u8>>,
    }

    const IMG_4K: u64 = 0xffff_ffff_8120_3456; // PML4 511, PDPT 510, PD 9, PT 3
    const IMG_2M: u64 = 0xffff_ffff_8140_1234; // PD 10 (2 MiB page)
    const IMG_HOLE: u64 = 0xffff_ffff_8160_0000; // PD 11: not present
    const DIRECT: u64 = 0xffff_8880_0012_3456; // PML4 273, PDPT 0 (1 GiB page)

    impl Fixture {
        fn new() -> Self {
            let mut m = vec![0u8; 0x10000];
            let mut set = |table: u64, index: u64, value: u64| {
                let at = (table + index * 8) as usize;
                m[at..at + 8].copy_from_slice(&value.to_le_bytes());
            };
            set(0x5000, 511, 0x1000 | 3);
            set(0x1000, 511, 0x2000 | 3);
            set(0x1000, 273, 0x8000 | 3);
            set(0x8000, 0, PAGE_SIZE_BIT | 3);
            set(0x2000, 510, 0x3000 | 3);
            set(0x3000, 9, 0x4000 | 3);
            set(0x3000, 10, 0x20_0000 | PAGE_SIZE_BIT | 3 | (1 << 63));
            set(0x4000, 3, 0x7000 | 3);
            set(0x4000, 4, 0x6000 | 3);
            set(0x4000, 5, 0x6000); // not present
            for (i, b) in m[0x6000..0x8000].iter_mut().enumerate() {
                *b = i as u8;
            }
            Fixture {
                mem: BufferMemory::new(0, m),
            }
        }
    }

    #[test]
    fn walks_4k_2m_and_1g_pages() {
        let f = Fixture::new();
        let t = Translator::new(0x1000 | 0x18, false);
        assert_eq!(t.walk(&f.mem, IMG_4K).expect("4k"), (0x7456, 4096));
        assert_eq!(t.walk(&f.mem, IMG_2M).expect("2m"), (0x20_1234, 2 << 20));
        assert_eq!(t.walk(&f.mem, DIRECT).expect("1g"), (0x12_3456, 1 << 30));
        let l5 = Translator::new(0x5000, true);
        assert_eq!(l5.translate(&f.mem, IMG_4K).expect("5-level"), 0x7456);
    }

    #[test]
    fn unmapped_and_non_canonical_addresses_are_errors() {
        let f = Fixture::new();
        let t = Translator::new(0x1000, false);
        match t.walk(&f.mem, IMG_HOLE) {
            Err(TranslateError::NotPresent {
                level: 2,
                entry_gpa,
                ..
            }) => {
                assert_eq!(entry_gpa, 0x3000 + 11 * 8)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            t.walk(&f.mem, IMG_4K + 2 * PAGE),
            Err(TranslateError::NotPresent { level: 1, .. })
        ));
        assert!(matches!(
            t.walk(&f.mem, 0x0000_8000_0000_0000),
            Err(TranslateError::NonCanonical { levels: 4, .. })
        ));
        // Canonical for 5-level paging, but PML5 entry 0 is empty.
        let l5 = Translator::new(0x5000, true);
        assert!(matches!(
            l5.walk(&f.mem, 0x0000_8000_0000_0000),
            Err(TranslateError::NotPresent { level: 5, .. })
        ));
        // A table outside guest memory.
        let bad = Translator::new(0x100_0000, false);
        assert!(matches!(
            bad.walk(&f.mem, IMG_4K),
            Err(TranslateError::Memory { .. })
        ));
    }

    #[test]
    fn read_virt_crosses_discontiguous_pages() {
        let f = Fixture::new();
        let t = Translator::new(0x1000, false);
        let page_end = (IMG_4K | 0xfff) + 1;
        let mut buf = [0u8; 6];
        t.read_virt(&f.mem, page_end - 3, &mut buf).expect("cross");
        // Last 3 bytes of 0x7000's page, then the first 3 of 0x6000's.
        let hi = |gpa: u64| (gpa - 0x6000) as u8;
        assert_eq!(buf, [hi(0x7ffd), hi(0x7ffe), hi(0x7fff), 0, 1, 2]);
    }

    #[test]
    fn fast_paths_agree_with_the_walk() {
        let f = Fixture::new();
        let t = Translator::new(0x1000, false)
            .with_direct_map(0xffff_8880_0000_0000, 1 << 29)
            .with_kernel_image(0x100_0000);
        let walked = t.walk(&f.mem, DIRECT).expect("walk").0;
        assert_eq!(t.translate(&f.mem, DIRECT).expect("direct"), walked);
        // va - __START_KERNEL_map + phys_base, with no table read.
        assert_eq!(t.translate(&f.mem, IMG_4K).expect("image"), 0x220_3456);
        assert_eq!(t.translate(&f.mem, IMG_HOLE).expect("image"), 0x260_0000);
        // Past phys_end of the direct map, the walk is used (and agrees).
        let far = 0xffff_8880_2012_3456u64;
        assert_eq!(
            t.translate(&f.mem, far).expect("walk"),
            t.walk(&f.mem, far).expect("walk").0
        );
    }

    #[test]
    fn kaslr_slide_is_found_by_probing_the_tables() {
        let f = Fixture::new();
        let t = Translator::new(0x1000, false);
        let expect: Vec<u8> = (0x56u8..0x66).collect(); // bytes at gpa 0x7456..
        let slide = 3 * SLIDE_ALIGN;
        let found = t.find_kaslr_slide(&f.mem, IMG_4K - slide, &expect);
        assert_eq!(found.expect("slide"), slide);
        // A stale kernel-image fast path must not short-circuit the probe.
        let stale = t.with_kernel_image(0);
        assert_eq!(
            stale
                .find_kaslr_slide(&f.mem, IMG_4K - slide, &expect)
                .expect("slide"),
            slide
        );
        let wrong = [0xeeu8; 16];
        assert!(matches!(
            t.find_kaslr_slide(&f.mem, IMG_4K - slide, &wrong),
            Err(TranslateError::SlideNotFound { len: 16, .. })
        ));
    }

    #[test]
    fn per_cpu_offsets_and_addresses() {
        let f = Fixture::new();
        let mut m = f.mem.data().clone();
        let offsets = [0x1_0000u64, 0x2_0000, 0x3_0000];
        for (i, o) in offsets.iter().enumerate() {
            m[0x6100 + i * 8..0x6108 + i * 8].copy_from_slice(&o.to_le_bytes());
        }
        let mem = BufferMemory::new(0, m);
        let t = Translator::new(0x1000, false);
        let array_va = (IMG_4K & !0xfff) + PAGE + 0x100; // in the page at 0x6000
        let read = t.per_cpu_offsets(&mem, array_va, 3).expect("offsets");
        assert_eq!(read, offsets);
        assert_eq!(
            per_cpu_addr(0x32bc0, &read, 2).expect("cpu 2"),
            0x3_2bc0 + 0x3_0000
        );
        assert!(matches!(
            per_cpu_addr(0x32bc0, &read, 3),
            Err(TranslateError::NoCpu { cpu: 3, nr_cpus: 3 })
        ));
        assert_eq!(t.read_virt_u64(&mem, array_va).expect("u64"), 0x1_0000);
    }
}
