//! virtio-blk (device ID 2) backed by a host file, read-only (VIRTIO_BLK_F_RO) or writable.
//!
//! Requests IN, OUT, FLUSH and GET_ID; anything else gets VIRTIO_BLK_S_UNSUPP. The capacity
//! is the file's size in 512-byte sectors (a partial last sector is not exposed).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::{DescriptorChain, Queue};

use super::{
    read_config_bytes, serve_next, VirtioDevice, VirtioError, FEATURE_INDIRECT_DESC,
    FEATURE_VERSION_1,
};
use crate::kvm::GuestMemory;

/// Bytes per sector, as virtio-blk counts them.
pub const SECTOR_SIZE: u64 = 512;
/// Descriptors in the request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request the driver may use (the header and status take two more).
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Bytes of the request header: type, reserved, sector.
const HEADER_LEN: usize = 16;
/// Bytes moved between the file and guest memory at a time.
const CHUNK: usize = 64 * 1024;
/// Bytes of configuration space: capacity (8), size_max (4), seg_max (4).
const CONFIG_LEN: usize = 16;

/// Why a disk image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Opening or sizing the file failed.
    #[error("cannot open disk image {path}")]
    Open {
        /// The image.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A file-backed block device.
pub struct Block {
    file: File,
    read_only: bool,
    capacity: u64,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    config: [u8; CONFIG_LEN],
}

impl Block {
    /// Opens `path` as a disk whose GET_ID serial is `id` (first 20 bytes).
    pub fn open(path: &Path, read_only: bool, id: &str) -> Result<Self, BlockError> {
        let open = || -> std::io::Result<(File, u64)> {
            let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
            let len = file.metadata()?.len();
            Ok((file, len))
        };
        let (file, len) = open().map_err(|source| BlockError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::new(file, len / SECTOR_SIZE, read_only, id))
    }

    /// A disk of `capacity` sectors on an open `file`.
    pub fn new(file: File, capacity: u64, read_only: bool, id: &str) -> Self {
        let mut serial = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = id.len().min(serial.len());
        serial[..n].copy_from_slice(&id.as_bytes()[..n]);
        let mut config = [0u8; CONFIG_LEN];
        config[..8].copy_from_slice(&capacity.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        Block {
            file,
            read_only,
            capacity,
            id: serial,
            config,
        }
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Byte offset of `sector` if `len` bytes from there lie inside the disk.
    fn range(&self, sector: u64, len: usize) -> Option<u64> {
        let start = sector.checked_mul(SECTOR_SIZE)?;
        let end = start.checked_add(len as u64)?;
        (len as u64 % SECTOR_SIZE == 0 && end <= self.capacity * SECTOR_SIZE).then_some(start)
    }

    /// Serves one request; returns the bytes written into the chain (status included).
    fn request(&mut self, chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory) -> u32 {
        let Ok(mut reader) = chain.clone().reader(mem) else {
            return 0;
        };
        let Ok(mut writer) = chain.writer(mem) else {
            return 0;
        };
        // The status byte is the last writable byte; without one there is no one to answer.
        let Some(data_len) = writer.available_bytes().checked_sub(1) else {
            return 0;
        };
        let Ok(mut status) = writer.split_at(data_len) else {
            return 0;
        };
        let mut header = [0u8; HEADER_LEN];
        let mut written = 0usize;
        let code = match reader.read_exact(&mut header) {
            Err(_) => VIRTIO_BLK_S_IOERR,
            Ok(()) => {
                let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
                let mut s = [0u8; 8];
                s.copy_from_slice(&header[8..16]);
                let sector = u64::from_le_bytes(s);
                match kind {
                    VIRTIO_BLK_T_IN => match self.range(sector, data_len) {
                        Some(off) => {
                            let r = copy_to_guest(&self.file, off, data_len, &mut writer);
                            written = writer.bytes_written();
                            if r.is_ok() {
                                VIRTIO_BLK_S_OK
                            } else {
                                VIRTIO_BLK_S_IOERR
                            }
                        }
                        None => VIRTIO_BLK_S_IOERR,
                    },
                    VIRTIO_BLK_T_OUT => {
                        let len = reader.available_bytes();
                        match self.range(sector, len) {
                            Some(off) if !self.read_only => {
                                match copy_from_guest(&self.file, off, len, &mut reader) {
                                    Ok(()) => VIRTIO_BLK_S_OK,
                                    Err(_) => VIRTIO_BLK_S_IOERR,
                                }
                            }
                            _ => VIRTIO_BLK_S_IOERR,
                        }
                    }
                    VIRTIO_BLK_T_FLUSH => {
                        if self.read_only || self.file.sync_data().is_ok() {
                            VIRTIO_BLK_S_OK
                        } else {
                            VIRTIO_BLK_S_IOERR
                        }
                    }
                    VIRTIO_BLK_T_GET_ID => {
                        let n = data_len.min(self.id.len());
                        if writer.write_all(&self.id[..n]).is_ok() {
                            written = n;
                            VIRTIO_BLK_S_OK
                        } else {
                            VIRTIO_BLK_S_IOERR
                        }
                    }
                    _ => VIRTIO_BLK_S_UNSUPP,
                }
            }
        };
        match status.write_all(&[code as u8]) {
            Ok(()) => (written + 1) as u32,
            Err(_) => written as u32,
        }
    }
}

/// Reads `len` bytes of `file` at `off` into the chain.
fn copy_to_guest<W: Write>(file: &File, off: u64, len: usize, w: &mut W) -> std::io::Result<()> {
    let mut buf = vec![0u8; len.min(CHUNK)];
    let mut done = 0usize;
    while done < len {
        let n = (len - done).min(CHUNK);
        file.read_exact_at(&mut buf[..n], off + done as u64)?;
        w.write_all(&buf[..n])?;
        done += n;
    }
    Ok(())
}

/// Writes `len` bytes of the chain to `file` at `off`.
fn copy_from_guest<R: Read>(file: &File, off: u64, len: usize, r: &mut R) -> std::io::Result<()> {
    let mut buf = vec![0u8; len.min(CHUNK)];
    let mut done = 0usize;
    while done < len {
        let n = (len - done).min(CHUNK);
        r.read_exact(&mut buf[..n])?;
        file.write_all_at(&buf[..n], off + done as u64)?;
        done += n;
    }
    Ok(())
}

impl VirtioDevice for Block {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let mut f = FEATURE_VERSION_1
            | FEATURE_INDIRECT_DESC
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX);
        if self.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemory,
    ) -> Result<bool, VirtioError> {
        let mut used = false;
        while serve_next(queue, index, mem, |chain| self.request(chain, mem))? {
            used = true;
        }
        Ok(used)
    }

    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::bus::MmioDevice;
    use crate::kvm::devices::virtio::testing::{activate, GuestQueue, DESC_F_WRITE};
    use crate::kvm::devices::virtio::VirtioMmioTransport;
    use crate::kvm::devices::IrqTrigger;
    use vm_memory::{Bytes, GuestAddress};

    const HDR: u64 = 0x8000;
    const DATA: u64 = 0x9000;
    const STATUS: u64 = 0x8800;

    struct Disk {
        t: VirtioMmioTransport<Block>,
        q: GuestQueue,
        mem: GuestMemory,
        path: PathBuf,
    }

    impl Drop for Disk {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// A 4-sector disk (sector n filled with byte n + 1) behind a live transport.
    fn disk(name: &str, read_only: bool) -> Disk {
        let path =
            std::env::temp_dir().join(format!("ktstr-vmm-blk-{name}-{}.img", std::process::id()));
        let img: Vec<u8> = (0..4u8)
            .flat_map(|s| [s + 1; SECTOR_SIZE as usize])
            .collect();
        std::fs::write(&path, img).unwrap();
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let blk = Block::open(&path, read_only, "ktstr-disk").unwrap();
        let mut t = VirtioMmioTransport::new(blk, mem.clone(), IrqTrigger::new(None)).unwrap();
        let q = GuestQueue::new(&mem, 0x1_0000, 16);
        activate(&mut t, &[&q]);
        Disk { t, q, mem, path }
    }

    impl Disk {
        /// Sends one request with `data` bytes of payload; returns (status, used length).
        fn request(&mut self, kind: u32, sector: u64, data: u32) -> (u8, u32) {
            let mut hdr = [0u8; 16];
            hdr[..4].copy_from_slice(&kind.to_le_bytes());
            hdr[8..].copy_from_slice(&sector.to_le_bytes());
            self.mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
            self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
            let data_flags = if kind == VIRTIO_BLK_T_OUT {
                0
            } else {
                DESC_F_WRITE
            };
            let mut descs = vec![(HDR, 16, 0)];
            if data > 0 {
                descs.push((DATA, data, data_flags));
            }
            descs.push((STATUS, 1, DESC_F_WRITE));
            self.q.add_chain(&self.mem, &descs);
            let before = self.q.used_idx(&self.mem);
            self.t.write(0x50, &0u32.to_le_bytes());
            assert_eq!(self.q.used_idx(&self.mem), before.wrapping_add(1));
            let status: u8 = self.mem.read_obj(GuestAddress(STATUS)).unwrap();
            (status, self.q.used(&self.mem, before).1)
        }

        fn data(&self, len: usize) -> Vec<u8> {
            let mut v = vec![0u8; len];
            self.mem.read_slice(&mut v, GuestAddress(DATA)).unwrap();
            v
        }
    }

    fn cfg_u64(t: &mut VirtioMmioTransport<Block>, off: u64) -> u64 {
        let mut b = [0u8; 8];
        t.read(0x100 + off, &mut b);
        u64::from_le_bytes(b)
    }

    #[test]
    fn config_and_features() {
        let mut d = disk("cfg", true);
        assert_eq!(cfg_u64(&mut d.t, 0), 4, "capacity in sectors");
        let mut b = [0u8; 4];
        d.t.read(0x100 + 12, &mut b);
        assert_eq!(u32::from_le_bytes(b), SEG_MAX);
        d.t.read(0x8, &mut b);
        assert_eq!(u32::from_le_bytes(b), 2, "device ID");
        d.t.write(0x14, &0u32.to_le_bytes());
        d.t.read(0x10, &mut b);
        assert_ne!(u32::from_le_bytes(b) & (1 << VIRTIO_BLK_F_RO), 0);
        assert!(d.t.device().read_only());
        let rw = disk("cfg-rw", false);
        assert_eq!(rw.t.device().features() & (1 << VIRTIO_BLK_F_RO), 0);
    }

    #[test]
    fn reads_sectors_of_the_file() {
        let mut d = disk("read", true);
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 1, 1024), (0, 1025));
        let got = d.data(1024);
        assert!(got[..512].iter().all(|&b| b == 2), "sector 1");
        assert!(got[512..].iter().all(|&b| b == 3), "sector 2");
    }

    #[test]
    fn writes_reach_the_file_and_flush() {
        let mut d = disk("write", false);
        d.mem.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        assert_eq!(d.request(VIRTIO_BLK_T_OUT, 3, 512), (0, 1));
        assert_eq!(d.request(VIRTIO_BLK_T_FLUSH, 0, 0), (0, 1));
        let img = std::fs::read(&d.path).unwrap();
        assert!(img[3 * 512..].iter().all(|&b| b == 0xab));
        assert!(
            img[2 * 512..3 * 512].iter().all(|&b| b == 3),
            "neighbour kept"
        );
        // Read back through the device.
        d.mem.write_slice(&[0; 512], GuestAddress(DATA)).unwrap();
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 3, 512).0, 0);
        assert!(d.data(512).iter().all(|&b| b == 0xab));
    }

    #[test]
    fn out_of_range_sectors_are_io_errors() {
        let mut d = disk("range", false);
        let ioerr = VIRTIO_BLK_S_IOERR as u8;
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 4, 512).0, ioerr, "past the end");
        assert_eq!(
            d.request(VIRTIO_BLK_T_IN, 3, 1024).0,
            ioerr,
            "runs past the end"
        );
        assert_eq!(d.request(VIRTIO_BLK_T_OUT, 4, 512).0, ioerr);
        assert_eq!(
            d.request(VIRTIO_BLK_T_IN, u64::MAX, 512).0,
            ioerr,
            "overflow"
        );
        assert_eq!(
            d.request(VIRTIO_BLK_T_IN, 0, 100).0,
            ioerr,
            "not whole sectors"
        );
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 3, 512), (0, 513), "last sector");
    }

    #[test]
    fn read_only_disk_refuses_writes() {
        let mut d = disk("ro", true);
        d.mem.write_slice(&[0xcd; 512], GuestAddress(DATA)).unwrap();
        assert_eq!(
            d.request(VIRTIO_BLK_T_OUT, 0, 512),
            (VIRTIO_BLK_S_IOERR as u8, 1)
        );
        let img = std::fs::read(&d.path).unwrap();
        assert!(img[..512].iter().all(|&b| b == 1), "file untouched");
        assert_eq!(d.request(VIRTIO_BLK_T_FLUSH, 0, 0).0, 0);
    }

    #[test]
    fn get_id_and_unsupported_requests() {
        let mut d = disk("id", true);
        assert_eq!(d.request(VIRTIO_BLK_T_GET_ID, 0, 20), (0, 21));
        assert_eq!(&d.data(20)[..11], b"ktstr-disk\0");
        assert_eq!(d.request(77, 0, 0), (VIRTIO_BLK_S_UNSUPP as u8, 1));
    }

    #[test]
    fn malformed_chains_do_not_stall_the_queue() {
        let mut d = disk("bad", true);
        // No writable status byte: used with length 0.
        d.q.add_chain(&d.mem, &[(HDR, 16, 0)]);
        d.t.write(0x50, &0u32.to_le_bytes());
        assert_eq!(d.q.used(&d.mem, 0), (0, 0));
        // A data buffer outside guest memory.
        d.q.add_chain(
            &d.mem,
            &[
                (HDR, 16, 0),
                (0x10_0000, 512, DESC_F_WRITE),
                (STATUS, 1, DESC_F_WRITE),
            ],
        );
        d.t.write(0x50, &0u32.to_le_bytes());
        assert_eq!(d.q.used_idx(&d.mem), 2);
        // The queue still works.
        assert_eq!(d.request(VIRTIO_BLK_T_IN, 0, 512), (0, 513));
    }
}
