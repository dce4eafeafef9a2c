//! Guest-physical memory behind one trait, [`GuestMemory`].
//!
//! Implementations: [`BufferMemory`] (bytes at a base address: tests, captured images),
//! [`RamFiles`] (QEMU's shared `memory-backend-file` RAM, mapped read-only, with the PC
//! memory hole), and [`ElfCore`] (a QEMU `dump-guest-memory` ELF, for offline use).

mod elfcore;
mod ram_files;

pub use elfcore::{ElfCore, QemuCpuState};
pub use ram_files::{PcRamLayout, RamFiles, RamRegion, RamWriter};

use std::path::PathBuf;

/// Errors from reading guest memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemError {
    /// No region backs (part of) the range.
    #[error("guest physical {gpa:#x} (+{len:#x}) is not backed by any region")]
    Unmapped {
        /// First address not backed.
        gpa: u64,
        /// Bytes still to read from there.
        len: usize,
    },
    /// A file could not be opened, sized or read.
    #[error("cannot read {path} for guest physical {gpa:#x}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The guest-physical address being read (0 when opening).
        gpa: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A RAM file is shorter than the region that should be in it.
    #[error("{path} has {file_len:#x} bytes, but a region needs {needed:#x}")]
    FileTooShort {
        /// The file.
        path: PathBuf,
        /// Its length.
        file_len: u64,
        /// The length the region needs.
        needed: u64,
    },
    /// mmap of a RAM file failed.
    #[error("cannot map {path}")]
    Mmap {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The dump is not an ELF64 core that can be parsed.
    #[error("cannot parse ELF core {path}")]
    Elf {
        /// The file.
        path: PathBuf,
        /// What object reported.
        #[source]
        source: object::read::Error,
    },
}

/// Read access to guest-physical memory.
pub trait GuestMemory {
    /// Fills `buf` from guest-physical address `gpa`; fails unless every byte is backed.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError>;

    /// Reads a little-endian `u64`.
    fn read_u64(&self, gpa: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a little-endian `u32`.
    fn read_u32(&self, gpa: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

impl<T: GuestMemory + ?Sized> GuestMemory for &T {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        (**self).read(gpa, buf)
    }
}

impl<T: GuestMemory + ?Sized> GuestMemory for Box<T> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        (**self).read(gpa, buf)
    }
}

/// Guest memory held in a buffer (a `Vec<u8>`, a slice, ...) that starts at `base`.
#[derive(Clone, Debug)]
pub struct BufferMemory<B> {
    base: u64,
    data: B,
}

impl<B: AsRef<[u8]>> BufferMemory<B> {
    /// Memory whose first byte is at guest-physical `base`.
    pub fn new(base: u64, data: B) -> Self {
        BufferMemory { base, data }
    }

    /// The buffer.
    pub fn data(&self) -> &B {
        &self.data
    }
}

impl<B: AsRef<[u8]>> GuestMemory for BufferMemory<B> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let src = gpa
            .checked_sub(self.base)
            .and_then(|off| usize::try_from(off).ok())
            .and_then(|off| self.data.as_ref().get(off..off.checked_add(buf.len())?))
            .ok_or(MemError::Unmapped {
                gpa,
                len: buf.len(),
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A piece of guest-physical space backed by `len` bytes of some source at `src_off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) gpa: u64,
    pub(crate) len: u64,
    pub(crate) src: usize,
    pub(crate) src_off: u64,
}

/// Splits a read of `buf` at `gpa` over `spans` (sorted by `gpa`, non-overlapping) and
/// calls `copy(span, offset_in_span, chunk)` for each piece.
pub(crate) fn read_spans(
    spans: &[Span],
    gpa: u64,
    buf: &mut [u8],
    mut copy: impl FnMut(&Span, u64, &mut [u8]) -> Result<(), MemError>,
) -> Result<(), MemError> {
    let mut done = 0usize;
    while done < buf.len() {
        let at = gpa.checked_add(done as u64);
        let unmapped = || MemError::Unmapped {
            gpa: gpa.wrapping_add(done as u64),
            len: buf.len() - done,
        };
        let at = at.ok_or_else(unmapped)?;
        let i = spans.partition_point(|s| s.gpa.saturating_add(s.len) <= at);
        let span = spans
            .get(i)
            .filter(|s| s.gpa <= at && at - s.gpa < s.len)
            .ok_or_else(unmapped)?;
        let off = at - span.gpa;
        let n = usize::try_from(span.len - off)
            .unwrap_or(usize::MAX)
            .min(buf.len() - done);
        copy(span, off, &mut buf[done..done + n])?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_reads_inside_and_rejects_outside() {
        let mem = BufferMemory::new(0x1000, (0u8..=255).collect::<Vec<u8>>());
        assert_eq!(mem.read_u32(0x1004).expect("in range"), 0x0706_0504);
        assert_eq!(mem.read_u64(0x10f8).expect("last 8"), 0xfffe_fdfc_fbfa_f9f8);
        let mut b = [0u8; 2];
        assert!(matches!(
            mem.read(0xfff, &mut b),
            Err(MemError::Unmapped { gpa: 0xfff, len: 2 })
        ));
        assert!(mem.read(0x10ff, &mut b).is_err());
        assert!(mem.read(u64::MAX, &mut b).is_err());
        let by_ref: &dyn GuestMemory = &mem;
        assert_eq!(by_ref.read_u32(0x1000).expect("dyn"), 0x0302_0100);
    }

    #[test]
    fn reads_span_adjacent_regions_and_stop_at_gaps() {
        let spans = [
            Span {
                gpa: 0,
                len: 4,
                src: 0,
                src_off: 0,
            },
            Span {
                gpa: 4,
                len: 4,
                src: 1,
                src_off: 100,
            },
            Span {
                gpa: 16,
                len: 4,
                src: 2,
                src_off: 0,
            },
        ];
        let mut calls = Vec::new();
        let mut buf = [0u8; 6];
        read_spans(&spans, 2, &mut buf, |s, off, chunk| {
            calls.push((s.src, off, chunk.len()));
            chunk.fill(s.src as u8);
            Ok(())
        })
        .expect("contiguous");
        assert_eq!(calls, [(0, 2, 2), (1, 0, 4)]);
        assert_eq!(buf, [0, 0, 1, 1, 1, 1]);
        let err = read_spans(&spans, 6, &mut buf, |_, _, _| Ok(())).expect_err("gap");
        assert!(matches!(err, MemError::Unmapped { gpa: 8, len: 4 }));
    }
}
