//! virtio-console (device ID 3), one port, no multiport: the guest's transmitq bytes go to a
//! [`SerialOutput`] log/stream, held back while its reader is behind (virtio's own
//! backpressure); host input waits until the guest posts receiveq buffers.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{Bytes, GuestAddress};

use super::{
    read_config_bytes, serve_next, VirtioDevice, VirtioError, VirtioMmioTransport,
    FEATURE_INDIRECT_DESC, FEATURE_VERSION_1,
};
use crate::kvm::devices::SerialOutput;
use crate::kvm::GuestMemory;

/// Host-to-guest queue.
pub const RECEIVEQ: usize = 0;
/// Guest-to-host queue.
pub const TRANSMITQ: usize = 1;
/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
/// VIRTIO_CONSOLE_F_EMERG_WRITE: the driver may write single bytes to `emerg_wr`.
const VIRTIO_CONSOLE_F_EMERG_WRITE: u64 = 1 << 2;
/// Offset of `emerg_wr` in the configuration space (after cols, rows, max_nr_ports).
const EMERG_WR: u64 = 8;
/// Size of `struct virtio_console_config`.
const CONFIG_LEN: usize = 12;
/// Bytes copied from guest memory at a time.
const CHUNK: usize = 4096;

/// The console device.
pub struct Console {
    output: SerialOutput,
    pending: VecDeque<u8>,
}

impl Console {
    /// A console writing the guest's output to `output`.
    pub fn new(output: SerialOutput) -> Self {
        Console {
            output,
            pending: VecDeque::new(),
        }
    }

    /// Makes the output's reader serve `transport`'s transmitq again when it has drained a
    /// backlog that held the guest back (see [`Console::transmit`]). The reader holds the
    /// transport weakly: a VM that is gone is not kept alive by its output.
    pub fn wake_on_drain(transport: &Arc<Mutex<VirtioMmioTransport<Console>>>) {
        let weak = Arc::downgrade(transport);
        let output = crate::kvm::lock(transport).device().output.clone();
        output.set_waker(Arc::new(move || {
            if let Some(t) = weak.upgrade() {
                crate::kvm::lock(&t).process(TRANSMITQ);
            }
        }));
    }

    /// Queues host input; it moves when the receiveq is processed.
    pub fn queue_input(&mut self, data: &[u8]) {
        self.pending.extend(data);
    }

    /// Host input not yet taken by the guest.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Copies every readable descriptor of each transmitq chain to the output, while the
    /// output's reader keeps up: when it falls behind ([`SerialOutput::throttle`]) the rest
    /// of the chains stay in the ring, the guest's writes wait, and the reader's waker
    /// serves the queue again once it has caught up. Nothing is dropped.
    fn transmit(&mut self, queue: &mut Queue, mem: &GuestMemory) -> Result<bool, VirtioError> {
        let mut used = false;
        while !self.output.throttle()
            && serve_next(queue, TRANSMITQ, mem, |chain| self.print(chain, mem))?
        {
            used = true;
        }
        Ok(used)
    }

    /// Copies one transmitq chain's readable bytes to the output; writes nothing into it.
    fn print(&mut self, chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory) -> u32 {
        let mut buf = [0u8; CHUNK];
        for desc in chain.readable() {
            let mut off = 0u64;
            let len = u64::from(desc.len());
            while off < len {
                let n = (len - off).min(CHUNK as u64) as usize;
                let Some(addr) = desc.addr().0.checked_add(off) else {
                    break;
                };
                // A descriptor outside guest memory ends that descriptor, not the queue.
                if mem.read_slice(&mut buf[..n], GuestAddress(addr)).is_err() {
                    break;
                }
                self.output.push(&buf[..n]);
                off += n as u64;
            }
        }
        0
    }

    /// Fills receiveq chains with pending input while both last.
    fn receive(&mut self, queue: &mut Queue, mem: &GuestMemory) -> Result<bool, VirtioError> {
        let mut used = false;
        while !self.pending.is_empty()
            && serve_next(queue, RECEIVEQ, mem, |chain| self.fill(chain, mem))?
        {
            used = true;
        }
        Ok(used)
    }

    /// Moves pending input into one receiveq chain's writable descriptors; the bytes moved.
    fn fill(&mut self, chain: DescriptorChain<&GuestMemory>, mem: &GuestMemory) -> u32 {
        let mut written = 0u32;
        for desc in chain.writable() {
            let n = (desc.len() as usize).min(self.pending.len());
            if n == 0 {
                break;
            }
            let (a, b) = self.pending.as_slices();
            let bytes: Vec<u8> = a.iter().chain(b).take(n).copied().collect();
            if mem.write_slice(&bytes, desc.addr()).is_err() {
                break;
            }
            self.pending.drain(..n);
            written = written.saturating_add(n as u32);
        }
        written
    }
}

impl VirtioDevice for Console {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn features(&self) -> u64 {
        FEATURE_VERSION_1 | FEATURE_INDIRECT_DESC | VIRTIO_CONSOLE_F_EMERG_WRITE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows, max_nr_ports (no F_SIZE, no F_MULTIPORT) and emerg_wr all read as zero.
        read_config_bytes(&[0; CONFIG_LEN], offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if offset == EMERG_WR {
            if let Some(b) = data.first() {
                self.output.push(&[*b]);
            }
        }
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
        // Host input survives a driver reset: it is for whoever drives the console next.
    }
}

/// The host's writing end of a virtio-console.
#[derive(Clone)]
pub struct ConsoleInput {
    transport: Arc<Mutex<VirtioMmioTransport<Console>>>,
}

impl fmt::Debug for ConsoleInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConsoleInput")
    }
}

impl ConsoleInput {
    /// The input of the console behind `transport`.
    pub fn new(transport: Arc<Mutex<VirtioMmioTransport<Console>>>) -> Self {
        ConsoleInput { transport }
    }

    /// Sends `data` to the guest: now into posted receiveq buffers, the rest when it posts more.
    pub fn send(&self, data: &[u8]) {
        let mut t = crate::kvm::lock(&self.transport);
        t.device_mut().queue_input(data);
        t.process(RECEIVEQ);
    }
}

impl Write for ConsoleInput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    use crate::kvm::bus::MmioDevice;
    use crate::kvm::devices::virtio::testing::{GuestQueue, DESC_F_WRITE};
    use crate::kvm::devices::IrqTrigger;

    fn console() -> (
        Arc<Mutex<VirtioMmioTransport<Console>>>,
        SerialOutput,
        GuestMemory,
    ) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let out = SerialOutput::new();
        let t = VirtioMmioTransport::new(
            Console::new(out.clone()),
            mem.clone(),
            IrqTrigger::new(None),
        )
        .unwrap();
        (Arc::new(Mutex::new(t)), out, mem)
    }

    #[test]
    fn transmitq_bytes_reach_the_output() {
        let (t, out, mem) = console();
        let mut t = t.lock().unwrap();
        let rx = GuestQueue::new(&mem, 0x1_0000, 8);
        let mut tx = GuestQueue::new(&mem, 0x2_0000, 8);
        crate::kvm::devices::virtio::testing::activate(&mut *t, &[&rx, &tx]);
        mem.write_slice(b"hi from ", GuestAddress(0x8000)).unwrap();
        mem.write_slice(b"virtio", GuestAddress(0x9000)).unwrap();
        tx.add_chain(&mem, &[(0x8000, 8, 0), (0x9000, 6, 0)]);
        mem.write_slice(b"!", GuestAddress(0xa000)).unwrap();
        tx.add_chain(&mem, &[(0xa000, 1, 0)]);
        t.write(0x50, &1u32.to_le_bytes());
        assert_eq!(out.text(), "hi from virtio!");
        assert_eq!(tx.used_idx(&mem), 2);
        // Emergency write: one byte at config offset 8.
        t.write(0x100 + EMERG_WR, b"?");
        assert_eq!(out.text(), "hi from virtio!?");
    }

    #[test]
    fn a_reader_that_falls_behind_holds_the_guest_back_without_loss() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let out = SerialOutput::with_limit(64);
        let t = VirtioMmioTransport::new(
            Console::new(out.clone()),
            mem.clone(),
            IrqTrigger::new(None),
        )
        .unwrap();
        let t = Arc::new(Mutex::new(t));
        Console::wake_on_drain(&t);
        let mut reader = out.reader();
        let rx = GuestQueue::new(&mem, 0x1_0000, 8);
        let mut tx = GuestQueue::new(&mem, 0x2_0000, 8);
        crate::kvm::devices::virtio::testing::activate(&mut *t.lock().unwrap(), &[&rx, &tx]);
        for i in 0..5u8 {
            let at = 0x8000 + u64::from(i) * 0x100;
            mem.write_slice(&[b'a' + i; 20], GuestAddress(at)).unwrap();
            tx.add_chain(&mem, &[(at, 20, 0)]);
        }
        t.lock().unwrap().write(0x50, &1u32.to_le_bytes());
        // 40 bytes is past half the limit: the other three chains wait in the ring.
        assert_eq!(tx.used_idx(&mem), 2);
        assert_eq!(out.backlog(), 40);
        let mut got = vec![0u8; 100];
        reader.read_exact(&mut got[..30]).unwrap();
        // 10 behind: the read woke the queue, and the next two chains went through.
        assert_eq!(tx.used_idx(&mem), 4);
        reader.read_exact(&mut got[30..]).unwrap();
        assert_eq!(tx.used_idx(&mem), 5);
        let want: Vec<u8> = (0..5u8).flat_map(|i| [b'a' + i; 20]).collect();
        assert_eq!(got, want, "every byte, in order");
        assert_eq!(out.dropped(), 0);
    }

    #[test]
    fn host_input_waits_for_receive_buffers() {
        let (t, _out, mem) = console();
        let input = ConsoleInput::new(Arc::clone(&t));
        input.send(b"early ");
        let mut rx = GuestQueue::new(&mem, 0x1_0000, 8);
        let tx = GuestQueue::new(&mem, 0x2_0000, 8);
        crate::kvm::devices::virtio::testing::activate(&mut *t.lock().unwrap(), &[&rx, &tx]);
        input.send(b"bird");
        assert_eq!(t.lock().unwrap().device().pending(), 10, "no buffers yet");

        rx.add_chain(
            &mem,
            &[(0x8000, 4, DESC_F_WRITE), (0x9000, 3, DESC_F_WRITE)],
        );
        t.lock().unwrap().write(0x50, &0u32.to_le_bytes());
        assert_eq!(rx.used(&mem, 0), (0, 7));
        let mut got = [0u8; 7];
        mem.read_slice(&mut got[..4], GuestAddress(0x8000)).unwrap();
        mem.read_slice(&mut got[4..], GuestAddress(0x9000)).unwrap();
        assert_eq!(&got, b"early b");
        assert_eq!(t.lock().unwrap().device().pending(), 3);

        rx.add_chain(&mem, &[(0xa000, 16, DESC_F_WRITE)]);
        t.lock().unwrap().write(0x50, &0u32.to_le_bytes());
        assert_eq!(rx.used_idx(&mem), 2);
        assert_eq!(rx.used(&mem, 1).1, 3);
        let mut got = [0u8; 3];
        mem.read_slice(&mut got, GuestAddress(0xa000)).unwrap();
        assert_eq!(&got, b"ird");
        assert_eq!(t.lock().unwrap().device().pending(), 0);
    }
}
