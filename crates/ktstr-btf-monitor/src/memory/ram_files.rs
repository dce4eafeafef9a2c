//! QEMU's guest RAM files (`memory-backend-file,share=on`), mapped read-only.
//!
//! ktstr gives QEMU one RAM file per NUMA node (`/dev/shm/ktstr-ram-<pid>-<n>-node<N>`).
//! QEMU lays the nodes' backends end to end in node order to form the machine's RAM, then
//! places that RAM in guest-physical space. For `-M pc` (i440FX) the rule in QEMU's
//! `pc_init1` is:
//!
//! - RAM smaller than 3.5 GiB (`max-ram-below-4g`, 0xE000_0000): all of it at gpa
//!   `0..size`.
//! - Otherwise the first 3 GiB (0xC000_0000, gigabyte-aligned split) at gpa `0..3G` and
//!   the rest at gpa `4G..4G + size - 3G`; the 3–4 GiB range is the PCI hole.
//!
//! So RAM offset `r` is at gpa `r` below the split and `r + (4G - split)` above it.
//! [`PcRamLayout::with_below_4g`] covers a non-default `max-ram-below-4g`.
//!
//! Reads copy from the mapping with volatile loads (8 bytes at a time where aligned): the
//! guest writes this memory concurrently, so the compiler must not assume it is stable.
//! A RAM file truncated while mapped would make reads fault (SIGBUS); QEMU never
//! shrinks its backing files, and sizes are checked when mapping.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{read_spans, GuestMemory, MemError, Span};

/// 4 GiB, the end of the 32-bit PCI hole: RAM above the split resumes here.
const FOUR_GIB: u64 = 1 << 32;
/// QEMU's default `max-ram-below-4g` for `-M pc`.
const PC_MAX_RAM_BELOW_4G: u64 = 0xe000_0000;
/// The gigabyte-aligned split QEMU uses when RAM does not fit below `max-ram-below-4g`.
const PC_GIGABYTE_SPLIT: u64 = 0xc000_0000;

/// How QEMU `-M pc` places RAM offsets in guest-physical space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcRamLayout {
    /// Bytes of RAM placed at gpa 0; the rest starts at 4 GiB.
    pub below_4g: u64,
}

impl PcRamLayout {
    /// QEMU's default split for a guest with `ram_size` bytes of RAM (see the module doc).
    pub fn for_ram_size(ram_size: u64) -> Self {
        let below_4g = if ram_size >= PC_MAX_RAM_BELOW_4G {
            PC_GIGABYTE_SPLIT
        } else {
            ram_size
        };
        PcRamLayout { below_4g }
    }

    /// A layout with an explicit amount of RAM below 4 GiB.
    pub fn with_below_4g(below_4g: u64) -> Self {
        PcRamLayout { below_4g }
    }

    /// Guest-physical address of RAM offset `ram_off`.
    pub fn gpa(&self, ram_off: u64) -> u64 {
        if ram_off < self.below_4g {
            ram_off
        } else {
            ram_off - self.below_4g + FOUR_GIB
        }
    }

    /// Splits RAM bytes `start..start + len` at the hole: `(gpa, ram_off, len)` pieces.
    fn pieces(&self, start: u64, len: u64) -> Vec<(u64, u64, u64)> {
        let end = start.saturating_add(len);
        let mut out = Vec::new();
        if start < self.below_4g {
            let low_end = end.min(self.below_4g);
            out.push((start, start, low_end - start));
        }
        let high_start = start.max(self.below_4g);
        if high_start < end {
            out.push((self.gpa(high_start), high_start, end - high_start));
        }
        out
    }
}

/// A region of a file that backs guest-physical memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamRegion {
    /// The file.
    pub path: PathBuf,
    /// Where in the file the region starts.
    pub file_offset: u64,
    /// Guest-physical address of the region's first byte.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
}

/// One read-only shared mapping, unmapped on drop.
struct Mapping {
    ptr: *const u8,
    len: usize,
    /// Bytes between the page-aligned mapping start and the region start.
    lead: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone; reading it from several
// threads is as safe as from one (each read is a volatile copy).
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only allows reads.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no reference into the
        // mapping outlives `self` (reads copy out).
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// Guest RAM read from mapped files, one mapping per [`RamRegion`].
pub struct RamFiles {
    spans: Vec<Span>,
    maps: Vec<Mapping>,
}

impl std::fmt::Debug for RamFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RamFiles")
            .field("spans", &self.spans)
            .finish()
    }
}

impl RamFiles {
    /// Maps QEMU `-M pc` RAM files given in node order, split by QEMU's default rule.
    pub fn open_pc<P: AsRef<Path>>(paths: &[P]) -> Result<Self, MemError> {
        let (sizes, layout) = pc_sizes(paths)?;
        Self::open_pc_with(paths, &sizes, layout)
    }

    /// Maps RAM files in node order with backend sizes `sizes` and an explicit layout.
    pub fn open_pc_with<P: AsRef<Path>>(
        paths: &[P],
        sizes: &[u64],
        layout: PcRamLayout,
    ) -> Result<Self, MemError> {
        let regions = pc_regions(paths, sizes, layout);
        Self::open(&regions)
    }

    /// Maps each region read-only; regions must not overlap in guest-physical space.
    pub fn open(regions: &[RamRegion]) -> Result<Self, MemError> {
        let mut sorted: Vec<&RamRegion> = regions.iter().filter(|r| r.len > 0).collect();
        sorted.sort_by_key(|r| r.gpa);
        let mut spans = Vec::with_capacity(sorted.len());
        let mut maps = Vec::with_capacity(sorted.len());
        for (i, r) in sorted.into_iter().enumerate() {
            maps.push(map_region(r)?);
            spans.push(Span {
                gpa: r.gpa,
                len: r.len,
                src: i,
                src_off: 0,
            });
        }
        Ok(RamFiles { spans, maps })
    }

    /// `(gpa, len)` of every mapped region, in address order.
    pub fn regions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.spans.iter().map(|s| (s.gpa, s.len))
    }
}

/// The regions of RAM files given in node order with backend sizes `sizes`, split by `layout`.
fn pc_regions<P: AsRef<Path>>(paths: &[P], sizes: &[u64], layout: PcRamLayout) -> Vec<RamRegion> {
    let mut regions = Vec::new();
    let mut ram_off = 0u64;
    for (p, &size) in paths.iter().zip(sizes) {
        for (gpa, off, len) in layout.pieces(ram_off, size) {
            regions.push(RamRegion {
                path: p.as_ref().to_path_buf(),
                file_offset: off - ram_off,
                gpa,
                len,
            });
        }
        ram_off = ram_off.saturating_add(size);
    }
    regions
}

/// The sizes of RAM files given in node order, and QEMU's default `-M pc` split for their total.
fn pc_sizes<P: AsRef<Path>>(paths: &[P]) -> Result<(Vec<u64>, PcRamLayout), MemError> {
    let mut sizes = Vec::with_capacity(paths.len());
    for p in paths {
        let p = p.as_ref();
        let meta = std::fs::metadata(p).map_err(|source| MemError::Io {
            path: p.to_path_buf(),
            gpa: 0,
            source,
        })?;
        sizes.push(meta.len());
    }
    let total = sizes.iter().fold(0u64, |a, &b| a.saturating_add(b));
    Ok((sizes, PcRamLayout::for_ram_size(total)))
}

fn map_region(r: &RamRegion) -> Result<Mapping, MemError> {
    let io = |source| MemError::Io {
        path: r.path.clone(),
        gpa: r.gpa,
        source,
    };
    let file = File::open(&r.path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let needed = r.file_offset.saturating_add(r.len);
    if file_len < needed {
        return Err(MemError::FileTooShort {
            path: r.path.clone(),
            file_len,
            needed,
        });
    }
    let page = 4096u64;
    let lead = r.file_offset % page;
    let map_off = r.file_offset - lead;
    let too_big = || MemError::Mmap {
        path: r.path.clone(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    };
    let len = usize::try_from(r.len.saturating_add(lead)).map_err(|_| too_big())?;
    let off = libc::off_t::try_from(map_off).map_err(|_| too_big())?;
    // SAFETY: a fresh read-only shared mapping of an open file, at an address the kernel
    // chooses; it aliases no Rust object. The file is at least `map_off + len` bytes long
    // (checked above), so every mapped byte is backed.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            off,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(MemError::Mmap {
            path: r.path.clone(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(Mapping {
        ptr: ptr as *const u8,
        len,
        lead: lead as usize,
    })
}

/// Copies `dst.len()` bytes from `src` with volatile loads, 8 bytes at a time when aligned.
///
/// # Safety
/// `src..src + dst.len()` must be readable for the whole call.
unsafe fn volatile_copy(src: *const u8, dst: &mut [u8]) {
    let mut i = 0;
    while i < dst.len() {
        // SAFETY: `i < dst.len()`, so `src + i` is inside the readable range.
        let p = unsafe { src.add(i) };
        if (p as usize) % 8 == 0 && dst.len() - i >= 8 {
            // SAFETY: `p` is 8-aligned and 8 bytes from `p` are in range.
            let v = unsafe { std::ptr::read_volatile(p as *const u64) };
            dst[i..i + 8].copy_from_slice(&v.to_ne_bytes());
            i += 8;
        } else {
            // SAFETY: `p` is in range.
            dst[i] = unsafe { std::ptr::read_volatile(p) };
            i += 1;
        }
    }
}

impl GuestMemory for RamFiles {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        read_spans(&self.spans, gpa, buf, |span, off, chunk| {
            let map = self.maps.get(span.src).ok_or(MemError::Unmapped {
                gpa,
                len: chunk.len(),
            })?;
            // `off + chunk.len() <= span.len` (read_spans) and the mapping holds `lead +
            // span.len` bytes, so this start index and the copied range are in the mapping.
            let start = map.lead + off as usize;
            debug_assert!(start + chunk.len() <= map.len);
            // SAFETY: by the above, `ptr + start .. + chunk.len()` lies in the live
            // read-only mapping owned by `self`.
            unsafe { volatile_copy(map.ptr.add(start), chunk) };
            Ok(())
        })
    }
}

/// Writes into guest RAM files (`pwrite` into the shared backing file, which the guest
/// sees at once): the few host-side writes ktstr makes, e.g. shortening the sched_ext
/// watchdog. Reading stays with [`RamFiles`].
#[derive(Debug)]
pub struct RamWriter {
    regions: Vec<(RamRegion, File)>,
}

impl RamWriter {
    /// Opens QEMU `-M pc` RAM files given in node order for writing, split like
    /// [`RamFiles::open_pc`].
    pub fn open_pc<P: AsRef<Path>>(paths: &[P]) -> Result<Self, MemError> {
        let (sizes, layout) = pc_sizes(paths)?;
        let regions = pc_regions(paths, &sizes, layout)
            .into_iter()
            .map(|r| {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&r.path)
                    .map_err(|source| MemError::Io {
                        path: r.path.clone(),
                        gpa: r.gpa,
                        source,
                    })?;
                Ok((r, file))
            })
            .collect::<Result<Vec<_>, MemError>>()?;
        Ok(RamWriter { regions })
    }

    /// Writes `bytes` at guest-physical `gpa`; the range must lie in one region.
    pub fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), MemError> {
        use std::os::unix::fs::FileExt;
        let len = bytes.len() as u64;
        let (r, f) = self
            .regions
            .iter()
            .find(|(r, _)| gpa >= r.gpa && gpa.saturating_add(len) <= r.gpa + r.len)
            .ok_or(MemError::Unmapped {
                gpa,
                len: bytes.len(),
            })?;
        f.write_all_at(bytes, r.file_offset + (gpa - r.gpa))
            .map_err(|source| MemError::Io {
                path: r.path.clone(),
                gpa,
                source,
            })
    }

    /// Writes a little-endian `u64`.
    pub fn write_u64(&self, gpa: u64, value: u64) -> Result<(), MemError> {
        self.write(gpa, &value.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn writes_land_in_the_file_and_show_through_the_mapping() {
        let dir = std::env::temp_dir().join(format!("ktstr-ramwriter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ram");
        std::fs::write(&path, vec![0u8; 2 * 4096]).unwrap();
        let reader = RamFiles::open_pc(&[&path]).unwrap();
        let writer = RamWriter::open_pc(&[&path]).unwrap();
        writer.write_u64(4096 + 8, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(reader.read_u64(4096 + 8).unwrap(), 0x1122_3344_5566_7788);
        assert!(
            writer.write_u64(2 * 4096 - 4, 1).is_err(),
            "crosses the end"
        );
        assert!(writer.write(1 << 40, &[1]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pc_layout_follows_qemu_split() {
        assert_eq!(PcRamLayout::for_ram_size(2 * GIB).below_4g, 2 * GIB);
        // 3.25 GiB still fits below max-ram-below-4g (3.5 GiB): no split.
        assert_eq!(
            PcRamLayout::for_ram_size(3 * GIB + GIB / 4).below_4g,
            3 * GIB + GIB / 4
        );
        let big = PcRamLayout::for_ram_size(3 * GIB + GIB / 2);
        assert_eq!(big.below_4g, 3 * GIB);
        assert_eq!(big.gpa(3 * GIB - 1), 3 * GIB - 1);
        assert_eq!(big.gpa(3 * GIB), 4 * GIB);
        assert_eq!(
            big.pieces(2 * GIB, 2 * GIB),
            [(2 * GIB, 2 * GIB, GIB), (4 * GIB, 3 * GIB, GIB)]
        );
    }

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("ktstr-btf-monitor-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).expect("write temp file");
        p
    }

    #[test]
    fn two_node_files_split_across_the_hole() {
        // Scaled down: 3 pages below the "hole", files of 2 and 3 pages.
        let page = 4096usize;
        let a: Vec<u8> = (0..2 * page).map(|i| (i / page) as u8 + 1).collect();
        let b: Vec<u8> = (0..3 * page).map(|i| (i / page) as u8 + 10).collect();
        let (pa, pb) = (temp_file("node0", &a), temp_file("node1", &b));
        let layout = PcRamLayout::with_below_4g(3 * page as u64);
        let ram = RamFiles::open_pc_with(&[&pa, &pb], &[a.len() as u64, b.len() as u64], layout)
            .expect("map");
        let regions: Vec<_> = ram.regions().collect();
        let p = page as u64;
        assert_eq!(regions, [(0, 2 * p), (2 * p, p), (FOUR_GIB, 2 * p)]);
        assert_eq!(ram.read_u32(0).expect("node0 page0"), 0x0101_0101);
        assert_eq!(ram.read_u32(2 * p).expect("node1 page0"), 0x0a0a_0a0a);
        assert_eq!(
            ram.read_u32(FOUR_GIB + p).expect("node1 page2"),
            0x0c0c_0c0c
        );
        // A read across the node boundary.
        let mut buf = [0u8; 4];
        ram.read(2 * p - 2, &mut buf).expect("straddle");
        assert_eq!(buf, [2, 2, 10, 10]);
        assert!(matches!(
            ram.read(3 * p, &mut buf),
            Err(MemError::Unmapped { .. })
        ));
        // Unaligned volatile copies match plain ones.
        let mut odd = [0u8; 21];
        ram.read(p - 7, &mut odd).expect("unaligned");
        assert_eq!(&odd[..], &a[page - 7..page + 14]);
        let _ = std::fs::remove_file(pa);
        let _ = std::fs::remove_file(pb);
    }

    #[test]
    fn short_or_missing_files_are_errors() {
        let p = temp_file("short", &[0u8; 100]);
        let region = RamRegion {
            path: p.clone(),
            file_offset: 0,
            gpa: 0,
            len: 4096,
        };
        assert!(matches!(
            RamFiles::open(&[region]),
            Err(MemError::FileTooShort { needed: 4096, .. })
        ));
        let _ = std::fs::remove_file(p);
        let missing = RamFiles::open_pc(&["/nonexistent/ktstr-ram-0-0-node0"]);
        assert!(matches!(missing, Err(MemError::Io { .. })));
    }

    #[test]
    fn unaligned_file_offset_is_mapped_from_the_page_below() {
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        let p = temp_file("offset", &data);
        let region = RamRegion {
            path: p.clone(),
            file_offset: 5000,
            gpa: 0x10_0000,
            len: 100,
        };
        let ram = RamFiles::open(&[region]).expect("map");
        let mut buf = [0u8; 100];
        ram.read(0x10_0000, &mut buf).expect("read");
        assert_eq!(&buf[..], &data[5000..5100]);
        let _ = std::fs::remove_file(p);
    }
}
