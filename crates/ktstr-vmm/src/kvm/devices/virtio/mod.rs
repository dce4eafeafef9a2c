//! virtio devices on the virtio-MMIO transport (version 2, "modern").
//!
//! A [`VirtioDevice`] knows its device type, features, configuration space and what to do with
//! a queue the guest notified; [`mmio::VirtioMmioTransport`] owns the register file, the
//! virtqueues ([`virtio_queue::Queue`]) and the interrupt, and calls the device. Queues are
//! served on the VMM's I/O thread ([`crate::kvm::event_loop`], through ioeventfds), or on the
//! vCPU thread that wrote QueueNotify when there is none, or on the host thread that queued
//! input.

pub mod block;
pub mod console;
pub mod mmio;
pub mod net;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryBackend as _;

use crate::kvm::GuestMemory;

pub use block::{Block, BlockError};
pub use console::{Console, ConsoleInput};
pub use mmio::VirtioMmioTransport;
pub use net::{Net, NetPort, NetStats};

/// VIRTIO_F_VERSION_1 as a feature bit mask: every modern device offers it.
pub const FEATURE_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// VIRTIO_RING_F_INDIRECT_DESC as a mask: virtio-queue follows indirect tables.
pub const FEATURE_INDIRECT_DESC: u64 =
    1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;

/// Why a device could not serve a queue or a chain.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// virtio-queue refused an operation (bad ring address, index or guest memory); the
    /// transport asks the driver for a reset.
    #[error("virtqueue {queue}: {source}; the device needs a reset")]
    Queue {
        /// Queue index.
        queue: usize,
        /// virtio-queue's error.
        #[source]
        source: virtio_queue::Error,
    },
    /// A chain with a buffer outside guest memory: put on the used ring untouched (length
    /// 0); the queue goes on.
    #[error(
        "virtqueue {queue}: chain {head} has a buffer at {addr:#x}+{len} outside guest memory"
    )]
    OutsideMemory {
        /// Queue index.
        queue: usize,
        /// The chain's head descriptor.
        head: u16,
        /// The buffer's guest-physical address.
        addr: u64,
        /// Its length.
        len: u32,
    },
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// virtio device ID (1 = net, 2 = block, 3 = console).
    fn device_id(&self) -> u32;
    /// Feature bits the device offers.
    fn features(&self) -> u64;
    /// Largest size of each of the device's queues; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads device configuration space at `offset` (beyond its end reads as zero).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device configuration space at `offset` (ignored by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Serves queue `index` after a notification; returns whether used entries were added.
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemory,
    ) -> Result<bool, VirtioError>;
    /// Returns the device to its state before the driver found it.
    fn reset(&mut self);
    /// A queue to serve right after queue `index` was served (a loopback device's receive
    /// queue after its transmit queue); none by default.
    fn follow_up(&self, _index: usize) -> Option<usize> {
        None
    }
}

/// Pops the next available chain of `queue` (number `index`), hands it to `serve`, which
/// returns the bytes it wrote into the chain, and puts it on the used ring; `Ok(false)` when
/// no chain was available. A chain with a buffer outside guest memory is not served: it goes
/// on the used ring with length 0 and comes back as [`VirtioError::OutsideMemory`].
pub fn serve_next(
    queue: &mut Queue,
    index: usize,
    mem: &GuestMemory,
    serve: impl FnOnce(DescriptorChain<&GuestMemory>) -> u32,
) -> Result<bool, VirtioError> {
    let Some(chain) = queue.pop_descriptor_chain(mem) else {
        return Ok(false);
    };
    let head = chain.head_index();
    let outside = chain
        .clone()
        .find(|d| !mem.check_range(d.addr(), d.len() as usize));
    let written = match outside {
        Some(_) => 0,
        None => serve(chain),
    };
    queue
        .add_used(mem, head, written)
        .map_err(|source| VirtioError::Queue {
            queue: index,
            source,
        })?;
    match outside {
        Some(d) => Err(VirtioError::OutsideMemory {
            queue: index,
            head,
            addr: d.addr().0,
            len: d.len(),
        }),
        None => Ok(true),
    }
}

/// The name of a virtio device type, as in "virtio-blk".
pub fn device_name(device_id: u32) -> String {
    use virtio_bindings::virtio_ids::{VIRTIO_ID_BLOCK, VIRTIO_ID_CONSOLE, VIRTIO_ID_NET};
    match device_id {
        VIRTIO_ID_NET => "virtio-net".into(),
        VIRTIO_ID_BLOCK => "virtio-blk".into(),
        VIRTIO_ID_CONSOLE => "virtio-console".into(),
        id => format!("virtio device {id}"),
    }
}

/// Copies `config[offset..]` into `data`; bytes beyond `config` read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// Host-side builders of split virtqueues in guest memory, for the devices' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use vm_memory::{Bytes, GuestAddress};

    use super::{VirtioDevice, VirtioMmioTransport};
    use crate::kvm::bus::MmioDevice;
    use crate::kvm::GuestMemory;

    /// VIRTQ_DESC_F_NEXT.
    pub const DESC_F_NEXT: u16 = 1;
    /// VIRTQ_DESC_F_WRITE.
    pub const DESC_F_WRITE: u16 = 2;

    /// A split virtqueue the test plays the driver of: descriptor table at `base`, avail ring
    /// at `base + 0x1000`, used ring at `base + 0x2000`.
    pub struct GuestQueue {
        pub base: u64,
        pub size: u16,
        next_desc: u16,
        avail_idx: u16,
    }

    impl GuestQueue {
        /// A queue of `size` descriptors at `base`, rings zeroed.
        pub fn new(mem: &GuestMemory, base: u64, size: u16) -> Self {
            mem.write_slice(&[0u8; 0x3000], GuestAddress(base)).unwrap();
            GuestQueue {
                base,
                size,
                next_desc: 0,
                avail_idx: 0,
            }
        }

        pub fn desc(&self) -> u64 {
            self.base
        }

        pub fn avail(&self) -> u64 {
            self.base + 0x1000
        }

        pub fn used_ring(&self) -> u64 {
            self.base + 0x2000
        }

        /// Writes `(addr, len, flags)` descriptors chained with NEXT and makes the head available.
        pub fn add_chain(&mut self, mem: &GuestMemory, descs: &[(u64, u32, u16)]) -> u16 {
            let head = self.next_desc;
            for (i, &(addr, len, flags)) in descs.iter().enumerate() {
                let idx = (self.next_desc + i as u16) % self.size;
                let last = i + 1 == descs.len();
                let next = (idx + 1) % self.size;
                let flags = if last { flags } else { flags | DESC_F_NEXT };
                let d = GuestAddress(self.desc() + u64::from(idx) * 16);
                mem.write_obj(addr.to_le(), d).unwrap();
                mem.write_obj(len.to_le(), GuestAddress(d.0 + 8)).unwrap();
                mem.write_obj(flags.to_le(), GuestAddress(d.0 + 12))
                    .unwrap();
                mem.write_obj(
                    if last { 0u16 } else { next }.to_le(),
                    GuestAddress(d.0 + 14),
                )
                .unwrap();
            }
            self.next_desc = (self.next_desc + descs.len() as u16) % self.size;
            let slot = u64::from(self.avail_idx % self.size);
            mem.write_obj(head.to_le(), GuestAddress(self.avail() + 4 + slot * 2))
                .unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            mem.write_obj(self.avail_idx.to_le(), GuestAddress(self.avail() + 2))
                .unwrap();
            head
        }

        /// The used ring's index.
        pub fn used_idx(&self, mem: &GuestMemory) -> u16 {
            mem.read_obj(GuestAddress(self.used_ring() + 2)).unwrap()
        }

        /// Used element `i`: (descriptor head, bytes written).
        pub fn used(&self, mem: &GuestMemory, i: u16) -> (u32, u32) {
            let e = self.used_ring() + 4 + u64::from(i % self.size) * 8;
            (
                mem.read_obj(GuestAddress(e)).unwrap(),
                mem.read_obj(GuestAddress(e + 4)).unwrap(),
            )
        }
    }

    fn wr(t: &mut dyn MmioDevice, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    /// Drives `t` as a driver would: VERSION_1 (plus `extra` low feature bits), the queues in
    /// order, DRIVER_OK.
    pub fn activate_with<D: VirtioDevice>(
        t: &mut VirtioMmioTransport<D>,
        queues: &[&GuestQueue],
        extra: u32,
    ) {
        wr(t, 0x70, 3);
        wr(t, 0x24, 0);
        wr(t, 0x20, extra);
        wr(t, 0x24, 1);
        wr(t, 0x20, 1);
        wr(t, 0x70, 0xb);
        for (i, q) in queues.iter().enumerate() {
            wr(t, 0x30, i as u32);
            wr(t, 0x38, u32::from(q.size));
            wr(t, 0x80, q.desc() as u32);
            wr(t, 0x84, (q.desc() >> 32) as u32);
            wr(t, 0x90, q.avail() as u32);
            wr(t, 0x94, (q.avail() >> 32) as u32);
            wr(t, 0xa0, q.used_ring() as u32);
            wr(t, 0xa4, (q.used_ring() >> 32) as u32);
            wr(t, 0x44, 1);
        }
        wr(t, 0x70, 0xf);
        assert!(t.is_active(), "status {:#x}", t.status());
    }

    /// [`activate_with`] and VERSION_1 only.
    pub fn activate<D: VirtioDevice>(t: &mut VirtioMmioTransport<D>, queues: &[&GuestQueue]) {
        activate_with(t, queues, 0);
    }
}
