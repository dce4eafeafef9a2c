//! The port-I/O and MMIO buses: which device answers which ports or addresses, and what a
//! port write asks of the VM.

use std::sync::{Arc, Mutex};

use super::faults::{GuestFaults, Space};
use super::KvmError;

/// Why the guest rebooted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootCause {
    /// A triple fault (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// The FADT reset register was written.
    ResetRegister,
    /// The i8042 controller's reset command (0xFE to port 0x64).
    Keyboard,
    /// KVM reported a reset system event.
    SystemEvent,
}

/// What a device write asks of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAction {
    /// Nothing beyond the device's own state.
    None,
    /// Power the guest off with this exit status.
    PowerOff {
        /// The guest's exit status.
        status: u32,
    },
    /// The guest asked to reboot.
    Reboot {
        /// How it asked.
        cause: RebootCause,
    },
}

/// A device on the port-I/O bus, addressed by offset from its base port.
pub trait PioDevice: Send {
    /// Fills `data` with the value at `offset` (unknown registers read as zero).
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// Writes `data` at `offset`; bad sizes and unknown registers are ignored.
    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceAction;
}

/// A shared device on the bus.
pub type SharedDevice = Arc<Mutex<dyn PioDevice>>;

struct Range {
    base: u16,
    len: u16,
    device: SharedDevice,
}

/// Port ranges and their devices; unclaimed ports read as all ones, ignore writes, and are
/// counted.
#[derive(Default)]
pub struct PioBus {
    ranges: Vec<Range>,
    faults: Arc<GuestFaults>,
}

impl PioBus {
    /// An empty bus counting unclaimed ports in `faults`.
    pub fn new(faults: Arc<GuestFaults>) -> Self {
        PioBus {
            ranges: Vec::new(),
            faults,
        }
    }

    /// Puts `device` at ports `base..base + len`, which must not overlap another device.
    pub fn insert(&mut self, base: u16, len: u16, device: SharedDevice) -> Result<(), KvmError> {
        let end = u32::from(base) + u32::from(len);
        if len == 0 || end > 0x1_0000 {
            return Err(KvmError::BadConfig {
                reason: format!("port range {base:#x}+{len} is empty or beyond 0xffff"),
            });
        }
        if let Some(r) = self.ranges.iter().find(|r| {
            u32::from(base) < u32::from(r.base) + u32::from(r.len) && u32::from(r.base) < end
        }) {
            return Err(KvmError::BadConfig {
                reason: format!(
                    "port range {base:#x}+{len} overlaps the device at {:#x}+{}",
                    r.base, r.len
                ),
            });
        }
        self.ranges.push(Range { base, len, device });
        Ok(())
    }

    fn find(&self, port: u16) -> Option<(&SharedDevice, u16)> {
        self.ranges
            .iter()
            .find(|r| port >= r.base && u32::from(port) < u32::from(r.base) + u32::from(r.len))
            .map(|r| (&r.device, port - r.base))
    }

    /// Handles an IN; returns whether a device claimed the port.
    pub fn read(&self, port: u16, data: &mut [u8]) -> bool {
        match self.find(port) {
            Some((dev, off)) => {
                match dev.lock() {
                    Ok(mut d) => d.read(off, data),
                    Err(_) => data.fill(0xff),
                }
                true
            }
            None => {
                data.fill(0xff);
                self.faults.unclaimed(Space::Port, false, u64::from(port));
                false
            }
        }
    }

    /// Handles an OUT; an unclaimed port does nothing but count.
    pub fn write(&self, port: u16, data: &[u8]) -> DeviceAction {
        match self.find(port) {
            Some((dev, off)) => match dev.lock() {
                Ok(mut d) => d.write(off, data),
                Err(_) => DeviceAction::None,
            },
            None => {
                self.faults.unclaimed(Space::Port, true, u64::from(port));
                DeviceAction::None
            }
        }
    }
}

/// A device on the MMIO bus, addressed by offset from the base of its window.
pub trait MmioDevice: Send {
    /// Fills `data` with the value at `offset` (unknown registers read as zero).
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset`; bad sizes and unknown registers are ignored.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A shared device on the MMIO bus.
pub type SharedMmioDevice = Arc<Mutex<dyn MmioDevice>>;

struct MmioRange {
    base: u64,
    len: u64,
    device: SharedMmioDevice,
}

/// Guest-physical windows and their devices; unclaimed addresses read all ones, drop writes,
/// and are counted.
#[derive(Default)]
pub struct MmioBus {
    ranges: Vec<MmioRange>,
    faults: Arc<GuestFaults>,
}

impl MmioBus {
    /// An empty bus counting unclaimed addresses in `faults`.
    pub fn new(faults: Arc<GuestFaults>) -> Self {
        MmioBus {
            ranges: Vec::new(),
            faults,
        }
    }

    /// Puts `device` at `base..base + len`, which must not overlap another device.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: SharedMmioDevice,
    ) -> Result<(), KvmError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(KvmError::BadConfig {
                reason: format!("MMIO window {base:#x}+{len:#x} is empty or overflows"),
            });
        };
        if let Some(r) = self
            .ranges
            .iter()
            .find(|r| base < r.base + r.len && r.base < end)
        {
            return Err(KvmError::BadConfig {
                reason: format!(
                    "MMIO window {base:#x}+{len:#x} overlaps the device at {:#x}+{:#x}",
                    r.base, r.len
                ),
            });
        }
        self.ranges.push(MmioRange { base, len, device });
        Ok(())
    }

    /// The device whose window holds all of `addr..addr + size`, and the offset into it.
    fn find(&self, addr: u64, size: usize) -> Option<(&SharedMmioDevice, u64)> {
        let end = addr.checked_add(size as u64)?;
        self.ranges
            .iter()
            .find(|r| addr >= r.base && end <= r.base + r.len)
            .map(|r| (&r.device, addr - r.base))
    }

    /// Handles an MMIO read; returns whether a device claimed the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((dev, off)) => {
                match dev.lock() {
                    Ok(mut d) => d.read(off, data),
                    Err(_) => data.fill(0xff),
                }
                true
            }
            None => {
                data.fill(0xff);
                self.faults.unclaimed(Space::Mmio, false, addr);
                false
            }
        }
    }

    /// Handles an MMIO write; returns whether a device claimed the address.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((dev, off)) => {
                if let Ok(mut d) = dev.lock() {
                    d.write(off, data);
                }
                true
            }
            None => {
                self.faults.unclaimed(Space::Mmio, true, addr);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u8);

    impl PioDevice for Echo {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(offset as u8));
        }
        fn write(&mut self, _offset: u16, data: &[u8]) -> DeviceAction {
            if let [v] = data {
                self.0 = *v;
            }
            DeviceAction::None
        }
    }

    #[test]
    fn routes_by_range_and_refuses_overlaps() {
        let faults = Arc::new(GuestFaults::new());
        let mut bus = PioBus::new(faults.clone());
        bus.insert(0x3f8, 8, Arc::new(Mutex::new(Echo(0x10))))
            .unwrap();
        assert!(bus.insert(0x3ff, 2, Arc::new(Mutex::new(Echo(0)))).is_err());
        assert!(bus
            .insert(0xffff, 2, Arc::new(Mutex::new(Echo(0))))
            .is_err());
        bus.insert(0x400, 1, Arc::new(Mutex::new(Echo(0)))).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3f9, &mut b));
        assert_eq!(b, [0x11]);
        assert_eq!(bus.write(0x3f8, &[0x20]), DeviceAction::None);
        bus.read(0x3ff, &mut b);
        assert_eq!(b, [0x27]);
        assert!(!bus.read(0x3f7, &mut b));
        assert_eq!(b, [0xff]);
        assert_eq!(bus.write(0x80, &[1]), DeviceAction::None);
        let log = faults.snapshot();
        assert_eq!(
            (log.unclaimed_port_reads, log.unclaimed_port_writes),
            (1, 1)
        );
        assert_eq!(log.unclaimed_count(Space::Port, false, 0x3f7), 1);
        assert_eq!(log.unclaimed_count(Space::Port, true, 0x80), 1);
    }

    struct Regs([u8; 16]);

    impl MmioDevice for Regs {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            let o = offset as usize;
            data.copy_from_slice(&self.0[o..o + data.len()]);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            let o = offset as usize;
            self.0[o..o + data.len()].copy_from_slice(data);
        }
    }

    #[test]
    fn mmio_routes_by_window_and_refuses_overlaps() {
        let faults = Arc::new(GuestFaults::new());
        let mut bus = MmioBus::new(faults.clone());
        bus.insert(0xc000_0000, 16, Arc::new(Mutex::new(Regs([0; 16]))))
            .unwrap();
        bus.insert(0xc000_0010, 16, Arc::new(Mutex::new(Regs([7; 16]))))
            .unwrap();
        assert!(bus
            .insert(0xc000_000f, 2, Arc::new(Mutex::new(Regs([0; 16]))))
            .is_err());
        assert!(bus
            .insert(u64::MAX, 2, Arc::new(Mutex::new(Regs([0; 16]))))
            .is_err());
        assert!(bus.write(0xc000_0004, &0xdead_beef_u32.to_le_bytes()));
        let mut b = [0u8; 4];
        assert!(bus.read(0xc000_0004, &mut b));
        assert_eq!(u32::from_le_bytes(b), 0xdead_beef);
        assert!(bus.read(0xc000_0010, &mut b));
        assert_eq!(b, [7; 4]);
        // Straddling two windows, or outside any: unclaimed.
        assert!(!bus.read(0xc000_000e, &mut b));
        assert_eq!(b, [0xff; 4]);
        assert!(!bus.write(0xbfff_fffe, &[1, 2, 3, 4]));
        let log = faults.snapshot();
        assert_eq!(
            (log.unclaimed_mmio_reads, log.unclaimed_mmio_writes),
            (1, 1)
        );
        assert_eq!(log.unclaimed_count(Space::Mmio, true, 0xbfff_fffe), 1);
    }
}
