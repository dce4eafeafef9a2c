//! virtio-net (device ID 1) with an in-VMM L2 loopback.
//!
//! There is no host network behind the device: every Ethernet frame the guest puts on its
//! transmitq comes back on its own receiveq, as if the link were a cable plugged into itself.
//! The host sees the same traffic through a [`NetPort`]: it can inject frames for the guest,
//! read counters and capture the last [`CAPTURE_FRAMES`] frames the guest sent.
//!
//! Every buffer starts with the 12-byte `struct virtio_net_hdr_v1` that modern (VERSION_1)
//! devices always use, little endian:
//!
//! | offset | field       | size |
//! |--------|-------------|------|
//! | 0      | flags       | 1    |
//! | 1      | gso_type    | 1    |
//! | 2      | hdr_len     | 2    |
//! | 4      | gso_size    | 2    |
//! | 6      | csum_start  | 2    |
//! | 8      | csum_offset | 2    |
//! | 10     | num_buffers | 2    |
//!
//! No offloads are offered, so the device ignores the header of transmitted frames and writes
//! a zeroed one with `num_buffers` = 1 in front of each received frame. Frames wait in a
//! bounded backlog ([`RX_BACKLOG`]) until the guest posts receive buffers.

use std::collections::VecDeque;
use std::fmt;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};
use virtio_queue::{DescriptorChain, Queue};

use super::{
    read_config_bytes, serve_next, VirtioDevice, VirtioError, VirtioMmioTransport,
    FEATURE_INDIRECT_DESC, FEATURE_VERSION_1,
};
use crate::kvm::GuestMemory;

/// Device-to-guest queue.
pub const RECEIVEQ: usize = 0;
/// Guest-to-device queue.
pub const TRANSMITQ: usize = 1;
/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes of `struct virtio_net_hdr_v1` in front of every frame.
pub const HEADER_LEN: usize = 12;
/// Bytes of an Ethernet header (destination, source, EtherType): the shortest frame accepted.
pub const ETH_HEADER_LEN: usize = 14;
/// Longest frame accepted from the transmitq (a 64 KiB GSO frame plus headers).
pub const MAX_FRAME_LEN: usize = 65_550;
/// Frames waiting for receive buffers at most; more are dropped.
pub const RX_BACKLOG: usize = 256;
/// Frames the guest sent that the host capture keeps (the newest).
pub const CAPTURE_FRAMES: usize = 64;
/// The default MAC: 52:54:00 has the locally administered bit set and the multicast bit clear
/// (the prefix QEMU uses), followed by "kt" and 0.
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x6b, 0x74, 0x00];

/// Offset of `num_buffers` in the header.
const NUM_BUFFERS: usize = 10;
/// Bytes of configuration space with non-zero fields: mac (6), status (2),
/// max_virtqueue_pairs (2); the rest of `struct virtio_net_config` reads as zero.
const CONFIG_LEN: usize = 10;

/// Traffic counters of a [`Net`] device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames the guest transmitted (valid ones).
    pub tx_frames: u64,
    /// Bytes of those frames, headers excluded.
    pub tx_bytes: u64,
    /// Transmit chains dropped as runts or oversized.
    pub tx_errors: u64,
    /// Frames delivered into the guest's receive buffers.
    pub rx_frames: u64,
    /// Bytes of those frames, headers excluded.
    pub rx_bytes: u64,
    /// Frames dropped on the way to the guest (backlog full or receive buffer too small).
    pub rx_dropped: u64,
}

/// The network device: a loopback link with host injection and capture.
pub struct Net {
    mac: [u8; 6],
    config: [u8; CONFIG_LEN],
    pending: VecDeque<Vec<u8>>,
    capture: VecDeque<Vec<u8>>,
    stats: NetStats,
}

impl Net {
    /// A device with address `mac`, link up.
    pub fn new(mac: [u8; 6]) -> Self {
        let mut config = [0u8; CONFIG_LEN];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        Net {
            mac,
            config,
            pending: VecDeque::new(),
            capture: VecDeque::new(),
            stats: NetStats::default(),
        }
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Frames waiting for receive buffers.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The traffic counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The last [`CAPTURE_FRAMES`] frames the guest sent, oldest first.
    pub fn transmitted(&self) -> Vec<Vec<u8>> {
        self.capture.iter().cloned().collect()
    }

    /// Queues `frame` for the guest; it moves when the receiveq is processed.
    pub fn queue_frame(&mut self, frame: &[u8]) {
        self.enqueue(frame.to_vec());
    }

    fn enqueue(&mut self, frame: Vec<u8>) {
        if self.pending.len() >= RX_BACKLOG {
            self.stats.rx_dropped += 1;
        } else {
            self.pending.push_back(frame);
        }
    }

    /// Takes each transmitq chain's frame: counted, captured and looped back to the receiveq.
    fn transmit(&mut self, queue: &mut Queue, mem: &GuestMemory) -> Result<bool, VirtioError> {
        let mut used = false;
        while serve_next(queue, TRANSMITQ, mem, |chain| self.take_frame(chain, mem))? {
            used = true;
        }
        Ok(used)
    }

    /// Takes one transmitq chain's frame; the device writes nothing into it.
    fn take_frame(&mut self, chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory) -> u32 {
        match frame_of(chain, mem) {
            Some(frame) => {
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += frame.len() as u64;
                if self.capture.len() >= CAPTURE_FRAMES {
                    self.capture.pop_front();
                }
                self.capture.push_back(frame.clone());
                self.enqueue(frame);
            }
            None => self.stats.tx_errors += 1,
        }
        0
    }

    /// Moves pending frames into receiveq chains, one frame per chain, while both last.
    fn receive(&mut self, queue: &mut Queue, mem: &GuestMemory) -> Result<bool, VirtioError> {
        let mut used = false;
        while !self.pending.is_empty()
            && serve_next(queue, RECEIVEQ, mem, |chain| self.give_frame(chain, mem))?
        {
            used = true;
        }
        Ok(used)
    }

    /// Writes the oldest pending frame into a receiveq chain; the bytes written (0: dropped).
    fn give_frame(&mut self, chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory) -> u32 {
        let Some(frame) = self.pending.pop_front() else {
            return 0;
        };
        match deliver(chain, mem, &frame) {
            Some(len) => {
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += frame.len() as u64;
                len
            }
            None => {
                self.stats.rx_dropped += 1;
                0
            }
        }
    }
}

/// The frame a transmitq chain carries after its header; `None` for a runt or an oversized
/// frame (chains with a descriptor outside guest memory never get here: `serve_next` refuses
/// them).
fn frame_of(chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory) -> Option<Vec<u8>> {
    let mut reader = chain.reader(mem).ok()?;
    let len = reader.available_bytes();
    if !(HEADER_LEN + ETH_HEADER_LEN..=HEADER_LEN + MAX_FRAME_LEN).contains(&len) {
        return None;
    }
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header).ok()?;
    let mut frame = vec![0u8; len - HEADER_LEN];
    reader.read_exact(&mut frame).ok()?;
    Some(frame)
}

/// Writes a header and `frame` into the chain's writable descriptors; returns the used length,
/// or `None` if the chain cannot hold both.
fn deliver(chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory, frame: &[u8]) -> Option<u32> {
    let mut writer = chain.writer(mem).ok()?;
    let total = HEADER_LEN + frame.len();
    if writer.available_bytes() < total {
        return None;
    }
    let mut header = [0u8; HEADER_LEN];
    header[NUM_BUFFERS..].copy_from_slice(&1u16.to_le_bytes());
    writer.write_all(&header).ok()?;
    writer.write_all(frame).ok()?;
    u32::try_from(total).ok()
}

impl VirtioDevice for Net {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        FEATURE_VERSION_1
            | FEATURE_INDIRECT_DESC
            | (1 << VIRTIO_NET_F_MAC)
            | (1 << VIRTIO_NET_F_STATUS)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
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
        match index {
            RECEIVEQ => self.receive(queue, mem),
            TRANSMITQ => self.transmit(queue, mem),
            _ => Ok(false),
        }
    }

    fn reset(&mut self) {
        // A new driver should not get the old one's frames; counters and capture are the
        // host's and survive.
        self.pending.clear();
    }

    fn follow_up(&self, index: usize) -> Option<usize> {
        (index == TRANSMITQ && !self.pending.is_empty()).then_some(RECEIVEQ)
    }
}

/// The host's end of a virtio-net loopback link.
#[derive(Clone)]
pub struct NetPort {
    transport: Arc<Mutex<VirtioMmioTransport<Net>>>,
}

impl fmt::Debug for NetPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetPort")
    }
}

impl NetPort {
    /// The port of the device behind `transport`.
    pub fn new(transport: Arc<Mutex<VirtioMmioTransport<Net>>>) -> Self {
        NetPort { transport }
    }

    fn with<R>(&self, f: impl FnOnce(&mut VirtioMmioTransport<Net>) -> R) -> R {
        let mut t = crate::kvm::lock(&self.transport);
        f(&mut t)
    }

    /// Sends `frame` to the guest: now into a posted receive buffer, else when it posts one.
    pub fn inject(&self, frame: &[u8]) {
        self.with(|t| {
            t.device_mut().queue_frame(frame);
            t.process(RECEIVEQ);
        });
    }

    /// The device's traffic counters.
    pub fn stats(&self) -> NetStats {
        self.with(|t| t.device().stats())
    }

    /// The last [`CAPTURE_FRAMES`] frames the guest sent, oldest first.
    pub fn transmitted(&self) -> Vec<Vec<u8>> {
        self.with(|t| t.device().transmitted())
    }

    /// Waits until the guest has sent `frames` frames in all; false if `timeout` passed first.
    pub fn wait_for_tx(&self, frames: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stats().tx_frames >= frames {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{activate, GuestQueue, DESC_F_WRITE};
    use super::*;
    use crate::kvm::bus::MmioDevice;
    use crate::kvm::devices::IrqTrigger;
    use crate::kvm::faults::GuestFaults;
    use vm_memory::Bytes;
    use vm_memory::GuestAddress;

    type Shared = Arc<Mutex<VirtioMmioTransport<Net>>>;

    fn net() -> (Shared, GuestMemory) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let t = VirtioMmioTransport::new(Net::new(DEFAULT_MAC), mem.clone(), IrqTrigger::new(None))
            .unwrap();
        (Arc::new(Mutex::new(t)), mem)
    }

    /// A live device with an 8-entry receiveq at 0x1_0000 and transmitq at 0x2_0000.
    fn live() -> (Shared, GuestMemory, GuestQueue, GuestQueue) {
        let (t, mem) = net();
        let rx = GuestQueue::new(&mem, 0x1_0000, 8);
        let tx = GuestQueue::new(&mem, 0x2_0000, 8);
        activate(&mut *t.lock().unwrap(), &[&rx, &tx]);
        (t, mem, rx, tx)
    }

    fn notify(t: &Shared, queue: usize) {
        t.lock().unwrap().write(0x50, &(queue as u32).to_le_bytes());
    }

    /// A broadcast frame from the default MAC: EtherType 0x88b5, `len` bytes in all.
    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&DEFAULT_MAC);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.resize(len, fill);
        f
    }

    /// Header + frame as received at `addr` (contiguous), `len` frame bytes.
    fn received(mem: &GuestMemory, addr: u64, len: usize) -> (Vec<u8>, Vec<u8>) {
        let mut buf = vec![0u8; HEADER_LEN + len];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        let frame = buf.split_off(HEADER_LEN);
        (buf, frame)
    }

    fn expected_header() -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[NUM_BUFFERS] = 1;
        h
    }

    #[test]
    fn config_space_and_features() {
        let (t, _mem) = net();
        let mut t = t.lock().unwrap();
        let mut b = [0u8; 4];
        t.read(0x8, &mut b);
        assert_eq!(u32::from_le_bytes(b), 1, "device ID");
        let mut mac = [0u8; 6];
        t.read(0x100, &mut mac);
        assert_eq!(mac, DEFAULT_MAC);
        assert_eq!(t.device().mac(), DEFAULT_MAC);
        let mut w = [0u8; 2];
        t.read(0x106, &mut w);
        assert_eq!(u16::from_le_bytes(w), VIRTIO_NET_S_LINK_UP as u16);
        t.read(0x108, &mut w);
        assert_eq!(u16::from_le_bytes(w), 1, "one queue pair");
        t.read(0x10a, &mut w);
        assert_eq!(w, [0, 0], "mtu and beyond read zero");
        // Config writes are ignored.
        t.write(0x100, &[0; 6]);
        t.read(0x100, &mut mac);
        assert_eq!(mac, DEFAULT_MAC);

        t.write(0x14, &0u32.to_le_bytes());
        t.read(0x10, &mut b);
        let low = u64::from(u32::from_le_bytes(b));
        t.write(0x14, &1u32.to_le_bytes());
        t.read(0x10, &mut b);
        let features = low | u64::from(u32::from_le_bytes(b)) << 32;
        for bit in [
            1 << VIRTIO_NET_F_MAC,
            1 << VIRTIO_NET_F_STATUS,
            FEATURE_VERSION_1,
            FEATURE_INDIRECT_DESC,
        ] {
            assert_ne!(features & bit, 0, "{bit:#x}");
        }
        assert_eq!(features, t.device().features());
    }

    #[test]
    fn transmitted_frames_loop_back_to_the_receiveq() {
        let (t, mem, mut rx, mut tx) = live();
        let port = NetPort::new(Arc::clone(&t));
        let head_a = rx.add_chain(&mem, &[(0x4_0000, 2048, DESC_F_WRITE)]);
        // Header and frame in separate receive descriptors.
        let head_b = rx.add_chain(
            &mem,
            &[(0x4_1000, 12, DESC_F_WRITE), (0x4_2000, 2048, DESC_F_WRITE)],
        );
        notify(&t, RECEIVEQ);
        assert_eq!(rx.used_idx(&mem), 0, "nothing to receive yet");

        let f1 = frame(60, 0xa1);
        let f2 = frame(100, 0xb2);
        // Header in its own descriptor.
        mem.write_slice(&[0; HEADER_LEN], GuestAddress(0x5_0000))
            .unwrap();
        mem.write_slice(&f1, GuestAddress(0x5_1000)).unwrap();
        tx.add_chain(&mem, &[(0x5_0000, 12, 0), (0x5_1000, 60, 0)]);
        // Header and frame in one descriptor.
        let mut one = vec![0u8; HEADER_LEN];
        one.extend_from_slice(&f2);
        mem.write_slice(&one, GuestAddress(0x5_2000)).unwrap();
        tx.add_chain(&mem, &[(0x5_2000, one.len() as u32, 0)]);
        notify(&t, TRANSMITQ);

        assert_eq!(tx.used_idx(&mem), 2);
        assert_eq!(tx.used(&mem, 0).1, 0);
        assert_eq!(tx.used(&mem, 1).1, 0);
        assert_eq!(rx.used_idx(&mem), 2);
        assert_eq!(rx.used(&mem, 0), (u32::from(head_a), 12 + 60));
        assert_eq!(rx.used(&mem, 1), (u32::from(head_b), 12 + 100));
        let (h, got) = received(&mem, 0x4_0000, 60);
        assert_eq!((h, got), (expected_header(), f1.clone()));
        let (h, _) = received(&mem, 0x4_1000, 0);
        assert_eq!(h, expected_header());
        let mut got = vec![0u8; 100];
        mem.read_slice(&mut got, GuestAddress(0x4_2000)).unwrap();
        assert_eq!(got, f2);

        assert_eq!(
            port.stats(),
            NetStats {
                tx_frames: 2,
                tx_bytes: 160,
                tx_errors: 0,
                rx_frames: 2,
                rx_bytes: 160,
                rx_dropped: 0,
            }
        );
        assert_eq!(port.transmitted(), vec![f1, f2]);
        assert_eq!(t.lock().unwrap().device().pending(), 0);
        assert!(port.wait_for_tx(2, Duration::ZERO));
        assert!(!port.wait_for_tx(3, Duration::from_millis(5)));
        assert_eq!(format!("{port:?}"), "NetPort");
    }

    #[test]
    fn frame_waits_for_a_receive_buffer() {
        let (t, mem, mut rx, mut tx) = live();
        let f = frame(64, 0x5a);
        let mut one = vec![0u8; HEADER_LEN];
        one.extend_from_slice(&f);
        mem.write_slice(&one, GuestAddress(0x5_0000)).unwrap();
        tx.add_chain(&mem, &[(0x5_0000, one.len() as u32, 0)]);
        notify(&t, TRANSMITQ);
        assert_eq!(tx.used_idx(&mem), 1);
        assert_eq!(rx.used_idx(&mem), 0);
        assert_eq!(t.lock().unwrap().device().pending(), 1);

        rx.add_chain(&mem, &[(0x4_0000, 1536, DESC_F_WRITE)]);
        notify(&t, RECEIVEQ);
        assert_eq!(rx.used_idx(&mem), 1);
        assert_eq!(rx.used(&mem, 0), (0, 12 + 64));
        assert_eq!(received(&mem, 0x4_0000, 64), (expected_header(), f));
        let t = t.lock().unwrap();
        assert_eq!(t.device().pending(), 0);
        assert_eq!(t.device().stats().rx_frames, 1);
    }

    #[test]
    fn injection_small_buffers_and_runts() {
        let (t, mem, mut rx, mut tx) = live();
        let port = NetPort::new(Arc::clone(&t));
        rx.add_chain(&mem, &[(0x4_0000, 1536, DESC_F_WRITE)]);
        notify(&t, RECEIVEQ);
        let f = frame(42, 0x11);
        port.inject(&f);
        assert_eq!(rx.used(&mem, 0), (0, 12 + 42));
        assert_eq!(received(&mem, 0x4_0000, 42), (expected_header(), f));
        assert!(
            port.transmitted().is_empty(),
            "injected frames are not captured"
        );

        // A receive buffer too small for header + frame: the frame is dropped.
        rx.add_chain(&mem, &[(0x4_1000, 12 + 10, DESC_F_WRITE)]);
        port.inject(&frame(60, 0x22));
        assert_eq!(rx.used_idx(&mem), 2);
        assert_eq!(rx.used(&mem, 1), (1, 0));
        assert_eq!(t.lock().unwrap().device().pending(), 0);

        // Runt: header plus less than an Ethernet header.
        mem.write_slice(&[0; 12 + 10], GuestAddress(0x5_0000))
            .unwrap();
        tx.add_chain(&mem, &[(0x5_0000, 12 + 10, 0)]);
        // Oversized.
        tx.add_chain(
            &mem,
            &[(0x6_0000, (HEADER_LEN + MAX_FRAME_LEN + 1) as u32, 0)],
        );
        // The frame descriptor lies outside guest memory: refused before the card sees it,
        // counted as a fault, and the queue goes on.
        let faults = Arc::new(GuestFaults::new());
        t.lock()
            .unwrap()
            .report_faults_to(faults.clone(), "net".into());
        tx.add_chain(&mem, &[(0x5_0000, 12, 0), (0x10_0000, 60, 0)]);
        notify(&t, TRANSMITQ);
        assert_eq!(tx.used_idx(&mem), 3);
        for i in 0..3 {
            assert_eq!(tx.used(&mem, i).1, 0);
        }
        let log = faults.snapshot();
        assert_eq!(log.devices.len(), 1);
        assert_eq!(log.devices[0].count, 1);
        assert!(
            log.devices[0]
                .first
                .contains("buffer at 0x100000+60 outside guest memory"),
            "{:?}",
            log.devices
        );
        assert!(t.lock().unwrap().is_active(), "no reset needed");
        assert_eq!(
            port.stats(),
            NetStats {
                tx_frames: 0,
                tx_bytes: 0,
                tx_errors: 2,
                rx_frames: 1,
                rx_bytes: 42,
                rx_dropped: 1,
            }
        );
        assert!(port.transmitted().is_empty());
        // The largest frame still passes.
        let big = frame(MAX_FRAME_LEN, 0x33);
        mem.write_slice(&big, GuestAddress(0x6_0000)).unwrap();
        tx.add_chain(&mem, &[(0x5_0000, 12, 0), (0x6_0000, big.len() as u32, 0)]);
        notify(&t, TRANSMITQ);
        assert_eq!(port.stats().tx_frames, 1);
        assert_eq!(port.transmitted(), vec![big]);
    }

    #[test]
    fn backlog_is_bounded_and_reset_clears_it() {
        let (t, _mem, _rx, _tx) = live();
        let port = NetPort::new(Arc::clone(&t));
        for i in 0..RX_BACKLOG + 3 {
            port.inject(&frame(60, i as u8));
        }
        assert_eq!(t.lock().unwrap().device().pending(), RX_BACKLOG);
        assert_eq!(port.stats().rx_dropped, 3);
        t.lock().unwrap().write(0x70, &0u32.to_le_bytes());
        assert_eq!(t.lock().unwrap().device().pending(), 0);
        assert_eq!(port.stats().rx_dropped, 3, "counters survive a reset");
    }
}
