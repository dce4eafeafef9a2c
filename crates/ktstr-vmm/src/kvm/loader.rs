//! Kernel, initramfs and command line into guest memory, and the zero page that describes them.
//!
//! ELF vmlinux images load at their physical addresses and are entered at `e_entry`
//! (`startup_64`); bzImages load their protected-mode part at 1 MiB and are entered at its
//! 64-bit entry, 0x200 bytes in. Both get the same boot_params: e820 map, command line,
//! initramfs, `type_of_loader` 0xff and `acpi_rsdp_addr` (the RSDP is also at 0xE0000
//! where Linux's legacy scan looks).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use super::layout::{
    E820Entry, MemoryLayout, CMDLINE_GPA, CMDLINE_MAX, HIMEM_START, ZERO_PAGE_GPA,
};
use super::memory::GuestMemory;
use super::KvmError;

/// `boot_flag` of a valid setup header.
const BOOT_FLAG: u16 = 0xaa55;
/// `header` magic: "HdrS".
const HDRS: u32 = 0x5372_6448;
/// Boot protocol version claimed for ELF kernels (2.15).
const BOOT_PROTOCOL: u16 = 0x020f;
/// `type_of_loader`: undefined boot loader.
const LOADER_UNDEFINED: u8 = 0xff;
/// `loadflags` bit: the protected-mode code is loaded at 0x100000.
const LOADED_HIGH: u8 = 1;
/// Kernel alignment the kernel assumes (16 MiB).
const KERNEL_ALIGN: u32 = 0x0100_0000;
/// Highest initramfs end when the image does not say (boot protocol default).
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;
/// Offset of the 64-bit entry in a bzImage's protected-mode code.
const BZIMAGE_ENTRY_64: u64 = 0x200;
/// Most e820 entries the zero page holds.
const E820_MAX: usize = 128;

/// Which image format a kernel file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An uncompressed ELF vmlinux.
    Elf,
    /// A bzImage.
    BzImage,
}

/// Where a kernel was loaded.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// The format.
    pub format: KernelFormat,
    /// 64-bit entry point (RIP of the boot vCPU).
    pub entry: u64,
    /// First byte past the loaded image.
    pub end: u64,
    /// The image's setup header (bzImage only).
    pub setup_header: Option<setup_header>,
}

/// The zero page as plain bytes for vm-memory.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
pub struct BootParams(pub boot_params);

// SAFETY: boot_params is a packed C struct of integers and arrays of integers: every bit
// pattern is valid and it has no padding the kernel does not also treat as data.
unsafe impl ByteValued for BootParams {}

/// Reads the image's first bytes to tell ELF from bzImage.
pub fn detect(path: &Path) -> Result<KernelFormat, KvmError> {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|source| KvmError::ReadFile {
            what: "kernel",
            path: path.into(),
            source,
        })?;
    Ok(if magic == *b"\x7fELF" {
        KernelFormat::Elf
    } else {
        KernelFormat::BzImage
    })
}

/// Loads the kernel at `path` into `mem`.
pub fn load_kernel(mem: &GuestMemory, path: &Path) -> Result<LoadedKernel, KvmError> {
    let format = detect(path)?;
    let mut file = File::open(path).map_err(|source| KvmError::ReadFile {
        what: "kernel",
        path: path.into(),
        source,
    })?;
    let err = |source| KvmError::LoadKernel {
        path: path.into(),
        source,
    };
    let himem = Some(GuestAddress(HIMEM_START));
    let r = match format {
        KernelFormat::Elf => Elf::load(mem, None, &mut file, himem).map_err(err)?,
        KernelFormat::BzImage => BzImage::load(mem, None, &mut file, himem).map_err(err)?,
    };
    let entry = match format {
        KernelFormat::Elf => r.kernel_load.0,
        KernelFormat::BzImage => r.kernel_load.0 + BZIMAGE_ENTRY_64,
    };
    Ok(LoadedKernel {
        format,
        entry,
        end: r.kernel_end,
        setup_header: r.setup_header,
    })
}

/// Loads the initramfs as high in low RAM as the kernel allows; returns `(gpa, size)`.
pub fn load_initramfs(
    mem: &GuestMemory,
    layout: &MemoryLayout,
    kernel: &LoadedKernel,
    path: &Path,
) -> Result<(u64, u64), KvmError> {
    let read = |source| KvmError::ReadFile {
        what: "initramfs",
        path: path.into(),
        source,
    };
    let mut file = File::open(path).map_err(read)?;
    let size = file.metadata().map_err(read)?.len();
    let max = kernel
        .setup_header
        .map(|h| u64::from(h.initrd_addr_max))
        .filter(|m| *m != 0)
        .unwrap_or(DEFAULT_INITRD_ADDR_MAX);
    let top = layout.low_ram_end().min(max.saturating_add(1));
    let gpa = top.saturating_sub(size) & !0xfff;
    if size == 0 || gpa < kernel.end.max(HIMEM_START) || gpa + size > top {
        return Err(KvmError::DoesNotFit {
            what: "initramfs",
            gpa,
            size,
        });
    }
    let len = usize::try_from(size).map_err(|_| KvmError::DoesNotFit {
        what: "initramfs",
        gpa,
        size,
    })?;
    mem.read_exact_volatile_from(GuestAddress(gpa), &mut file, len)
        .map_err(|source| KvmError::GuestMemory {
            what: "initramfs",
            gpa,
            source,
        })?;
    Ok((gpa, size))
}

/// Writes the NUL-terminated command line at [`CMDLINE_GPA`]; returns its length without the NUL.
pub fn write_cmdline(mem: &GuestMemory, cmdline: &str) -> Result<usize, KvmError> {
    let mut c = Cmdline::new(CMDLINE_MAX).map_err(KvmError::Cmdline)?;
    if !cmdline.is_empty() {
        c.insert_str(cmdline).map_err(KvmError::Cmdline)?;
    }
    load_cmdline(mem, GuestAddress(CMDLINE_GPA), &c).map_err(|source| KvmError::LoadKernel {
        path: "command line".into(),
        source,
    })?;
    Ok(cmdline.len())
}

/// What the zero page says besides the kernel's own header.
#[derive(Debug, Clone)]
pub struct BootInfo {
    /// Command line length (without NUL).
    pub cmdline_len: usize,
    /// Initramfs `(gpa, size)`.
    pub initramfs: Option<(u64, u64)>,
    /// The e820 map.
    pub e820: Vec<E820Entry>,
    /// The RSDP's address.
    pub rsdp: u64,
}

/// The zero page for `kernel` and `info`.
pub fn boot_params(kernel: &LoadedKernel, info: &BootInfo) -> Result<BootParams, KvmError> {
    let mut p = BootParams::default();
    let bp = &mut p.0;
    match kernel.setup_header {
        Some(h) => bp.hdr = h,
        None => {
            bp.hdr.boot_flag = BOOT_FLAG;
            bp.hdr.header = HDRS;
            bp.hdr.version = BOOT_PROTOCOL;
            bp.hdr.kernel_alignment = KERNEL_ALIGN;
        }
    }
    bp.hdr.type_of_loader = LOADER_UNDEFINED;
    bp.hdr.loadflags |= LOADED_HIGH;
    bp.hdr.cmd_line_ptr = CMDLINE_GPA as u32;
    bp.hdr.cmdline_size = info.cmdline_len as u32;
    if let Some((gpa, size)) = info.initramfs {
        let (lo, hi) = (gpa as u32, (gpa >> 32) as u32);
        bp.hdr.ramdisk_image = lo;
        bp.hdr.ramdisk_size = size as u32;
        bp.ext_ramdisk_image = hi;
        bp.ext_ramdisk_size = (size >> 32) as u32;
    }
    if info.e820.len() > E820_MAX {
        return Err(KvmError::BadConfig {
            reason: format!(
                "{} e820 entries; the zero page holds {E820_MAX}",
                info.e820.len()
            ),
        });
    }
    for (i, e) in info.e820.iter().enumerate() {
        bp.e820_table[i] = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    bp.e820_entries = info.e820.len() as u8;
    bp.acpi_rsdp_addr = info.rsdp;
    Ok(p)
}

/// Writes `params` at [`ZERO_PAGE_GPA`].
pub fn write_boot_params(mem: &GuestMemory, params: &BootParams) -> Result<(), KvmError> {
    mem.write_obj(*params, GuestAddress(ZERO_PAGE_GPA))
        .map_err(|source| KvmError::GuestMemory {
            what: "boot_params",
            gpa: ZERO_PAGE_GPA,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::layout::{E820_RAM, RSDP_GPA};
    use ktstr_topology::Topology;

    #[test]
    fn zero_page_fields() {
        let k = LoadedKernel {
            format: KernelFormat::Elf,
            entry: 0x100_0000,
            end: 0x200_0000,
            setup_header: None,
        };
        let info = BootInfo {
            cmdline_len: 12,
            initramfs: Some((0x300_0000, 0x1234)),
            e820: vec![E820Entry {
                addr: 0,
                size: 0x9fc00,
                kind: E820_RAM,
            }],
            rsdp: RSDP_GPA,
        };
        let p = boot_params(&k, &info).unwrap();
        let b = p.as_slice();
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        // Offsets from Documentation/arch/x86/zero-page.rst and boot.rst.
        assert_eq!(
            u64::from_le_bytes(b[0x70..0x78].try_into().unwrap()),
            RSDP_GPA
        );
        assert_eq!(b[0x1e8], 1, "e820_entries");
        assert_eq!(u16::from_le_bytes([b[0x1fe], b[0x1ff]]), 0xaa55);
        assert_eq!(u32_at(0x202), HDRS);
        assert_eq!(b[0x210], 0xff, "type_of_loader");
        assert_eq!(u32_at(0x218), 0x300_0000, "ramdisk_image");
        assert_eq!(u32_at(0x21c), 0x1234, "ramdisk_size");
        assert_eq!(u32_at(0x228), CMDLINE_GPA as u32, "cmd_line_ptr");
        assert_eq!(u32_at(0x238), 12, "cmdline_size");
        assert_eq!(u32_at(0x2d0 + 8), 0x9fc00, "e820[0].size");
        let too_many = BootInfo {
            e820: vec![info.e820[0]; 129],
            ..info
        };
        assert!(boot_params(&k, &too_many).is_err());
    }

    #[test]
    fn cmdline_and_initramfs_placement() {
        let t = Topology::default();
        let l = MemoryLayout::new(&t, 64, 4096).unwrap();
        let mem = crate::kvm::memory::allocate(&l).unwrap();
        assert_eq!(write_cmdline(&mem, "console=ttyS0 quiet").unwrap(), 19);
        let mut buf = [0u8; 20];
        mem.read_slice(&mut buf, GuestAddress(CMDLINE_GPA)).unwrap();
        assert_eq!(&buf, b"console=ttyS0 quiet\0");
        assert!(write_cmdline(&mem, &"x".repeat(CMDLINE_MAX)).is_err());
        let dir = std::env::temp_dir().join(format!("ktstr-initrd-{}", std::process::id()));
        std::fs::write(&dir, vec![0x5a; 5000]).unwrap();
        let k = LoadedKernel {
            format: KernelFormat::Elf,
            entry: 0,
            end: 0x200_0000,
            setup_header: None,
        };
        let (gpa, size) = load_initramfs(&mem, &l, &k, &dir).unwrap();
        assert_eq!(size, 5000);
        assert_eq!(gpa, (64 << 20) - 0x2000);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(gpa + 4999)).unwrap(), 0x5a);
        let huge = LoadedKernel { end: 64 << 20, ..k };
        assert!(load_initramfs(&mem, &l, &huge, &dir).is_err());
        let _ = std::fs::remove_file(&dir);
        assert!(matches!(
            detect(Path::new("/nonexistent")),
            Err(KvmError::ReadFile { .. })
        ));
    }
}
