//! A 16550 UART (vm-superio) on the port bus, its interrupt, and the host's ends of it.
//!
//! The guest's output goes to a [`SerialOutput`]: an in-memory log the host can snapshot,
//! wait on, or read as a blocking stream, optionally copied to a file. Host input goes in
//! through a [`SerialInput`]; bytes that do not fit the UART's 64-byte FIFO wait in a queue
//! and move in as the guest reads.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::kvm::bus::{DeviceAction, PioDevice};

/// Ports a 16550 decodes.
pub const SERIAL_LEN: u16 = 8;
/// Receive buffer register offset.
const RBR: u16 = 0;

/// Raises a UART's interrupt through an irqfd; without an in-kernel irqchip there is none.
#[derive(Debug)]
pub struct IrqTrigger(Option<EventFd>);

impl IrqTrigger {
    /// A trigger writing to `evt` (registered as an irqfd), or none.
    pub fn new(evt: Option<EventFd>) -> Self {
        IrqTrigger(evt)
    }
}

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        match &self.0 {
            Some(e) => e.write(1),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Default)]
struct OutputState {
    bytes: Vec<u8>,
    first_byte_at: Option<Instant>,
    closed: bool,
}

/// The guest's output on one UART: a growing log shared by the device and the host.
#[derive(Debug, Clone, Default)]
pub struct SerialOutput {
    inner: Arc<(Mutex<OutputState>, Condvar)>,
}

impl SerialOutput {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, OutputState> {
        // A panic while holding the lock leaves plain bytes behind; keep using them.
        crate::kvm::lock(&self.inner.0)
    }

    pub(crate) fn push(&self, data: &[u8]) {
        let mut s = self.state();
        if s.first_byte_at.is_none() && !data.is_empty() {
            s.first_byte_at = Some(Instant::now());
        }
        s.bytes.extend_from_slice(data);
        self.inner.1.notify_all();
    }

    /// Marks the end of output (the VM stopped); blocked readers see end of file.
    pub fn close(&self) {
        self.state().closed = true;
        self.inner.1.notify_all();
    }

    /// Every byte so far.
    pub fn contents(&self) -> Vec<u8> {
        self.state().bytes.clone()
    }

    /// Every byte so far as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.state().bytes).into_owned()
    }

    /// When the first byte arrived.
    pub fn first_byte_at(&self) -> Option<Instant> {
        self.state().first_byte_at
    }

    /// Waits until the output contains `needle`, the output ends, or `timeout` passes.
    pub fn wait_for(&self, needle: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.state();
        // Only bytes that arrived since the last look (plus an overlap) are searched again.
        let mut from = 0;
        loop {
            if needle.is_empty() || s.bytes[from..].windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            from = s.bytes.len().saturating_sub(needle.len() - 1);
            let now = Instant::now();
            if s.closed || now >= deadline {
                return false;
            }
            s = match self.inner.1.wait_timeout(s, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// A blocking reader from the first byte; it ends when the output is closed.
    pub fn reader(&self) -> SerialReader {
        SerialReader {
            out: self.clone(),
            pos: 0,
        }
    }
}

/// Reads a [`SerialOutput`] as a stream.
#[derive(Debug)]
pub struct SerialReader {
    out: SerialOutput,
    pos: usize,
}

impl Read for SerialReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.out.state();
        loop {
            if s.bytes.len() > self.pos {
                let n = buf.len().min(s.bytes.len() - self.pos);
                buf[..n].copy_from_slice(&s.bytes[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if s.closed || buf.is_empty() {
                return Ok(0);
            }
            s = match self.out.inner.1.wait(s) {
                Ok(g) => g,
                Err(e) => e.into_inner(),
            };
        }
    }
}

/// Where a UART's output goes: the shared log and, optionally, a file.
#[derive(Debug)]
pub struct SerialSink {
    out: SerialOutput,
    file: Option<File>,
}

impl Write for SerialSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.push(buf);
        if let Some(f) = &mut self.file {
            // The log in memory is authoritative; a full disk must not stop the guest.
            let _ = f.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// A 16550 UART on the port bus.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, NoEvents, SerialSink>,
    pending: VecDeque<u8>,
}

impl SerialDevice {
    /// A UART raising `irq`, writing to `out` and, when given, to `file`.
    pub fn new(irq: IrqTrigger, out: SerialOutput, file: Option<File>) -> Self {
        SerialDevice {
            uart: Serial::new(irq, SerialSink { out, file }),
            pending: VecDeque::new(),
        }
    }

    /// Queues host input and moves what fits into the FIFO.
    pub fn enqueue(&mut self, data: &[u8]) {
        self.pending.extend(data);
        self.fill_fifo();
    }

    /// Bytes of host input still waiting for FIFO room.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn fill_fifo(&mut self) {
        while !self.pending.is_empty() {
            let room = self.uart.fifo_capacity();
            if room == 0 {
                break;
            }
            let chunk: Vec<u8> = self.pending.iter().take(room).copied().collect();
            match self.uart.enqueue_raw_bytes(&chunk) {
                Ok(n) if n > 0 => {
                    self.pending.drain(..n);
                }
                // Loopback mode or a trigger error: keep the bytes for later.
                _ => break,
            }
        }
    }
}

impl PioDevice for SerialDevice {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(off);
        }
        if offset == RBR {
            self.fill_fifo();
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceAction {
        if let (&[v], Ok(off)) = (data, u8::try_from(offset)) {
            // Errors are the sink's (ignored there) or the irqfd's, which has no one to tell.
            let _ = self.uart.write(off, v);
        }
        DeviceAction::None
    }
}

/// The host's writing end of a UART.
#[derive(Clone)]
pub struct SerialInput {
    device: Arc<Mutex<SerialDevice>>,
}

impl SerialInput {
    /// The input of `device`.
    pub fn new(device: Arc<Mutex<SerialDevice>>) -> Self {
        SerialInput { device }
    }

    /// Sends `data` to the guest.
    pub fn send(&self, data: &[u8]) {
        crate::kvm::lock(&self.device).enqueue(data);
    }
}

impl Write for SerialInput {
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

    const LSR: u16 = 5;
    const IER: u16 = 1;
    const IIR: u16 = 2;

    fn dev() -> (SerialDevice, SerialOutput, EventFd) {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = SerialOutput::new();
        let d = SerialDevice::new(
            IrqTrigger::new(Some(evt.try_clone().unwrap())),
            out.clone(),
            None,
        );
        (d, out, evt)
    }

    fn rd(d: &mut SerialDevice, off: u16) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn output_reaches_log_and_reader() {
        let (mut d, out, _e) = dev();
        assert!(out.first_byte_at().is_none());
        for b in b"hi\n" {
            d.write(0, &[*b]);
        }
        d.write(0, b"xy");
        assert_eq!(out.contents(), b"hi\n");
        assert!(out.first_byte_at().is_some());
        assert!(out.wait_for(b"hi", Duration::from_millis(1)));
        assert!(!out.wait_for(b"zz", Duration::from_millis(1)));
        out.close();
        let mut s = String::new();
        out.reader().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hi\n");
    }

    #[test]
    fn input_overflowing_the_fifo_waits_and_interrupts() {
        let (mut d, _out, evt) = dev();
        d.write(IER, &[1]); // Received-data-available interrupt on.
        let input: Vec<u8> = (0..100u8).collect();
        d.enqueue(&input);
        assert_eq!(d.pending(), 100 - 64);
        assert!(evt.read().unwrap() >= 1, "interrupt raised");
        assert_eq!(rd(&mut d, IIR) & 0xf, 0x4, "data available");
        let mut got = Vec::new();
        while rd(&mut d, LSR) & 1 != 0 {
            got.push(rd(&mut d, RBR));
        }
        assert_eq!(got, input);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn unknown_offsets_and_sizes_are_harmless() {
        let (mut d, out, _e) = dev();
        let mut b = [7u8; 4];
        d.read(0x100, &mut b);
        assert_eq!(b, [0; 4]);
        assert_eq!(d.write(0x100, &[1]), DeviceAction::None);
        assert_eq!(d.write(0, &[]), DeviceAction::None);
        assert!(out.contents().is_empty());
    }
}
