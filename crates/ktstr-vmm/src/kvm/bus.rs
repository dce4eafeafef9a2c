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

/// Address ranges and what sits at each, after vm-device's bus: no two overlap, and an
/// access belongs to a device only when all of it falls inside the device's range and it is
/// no wider than the device takes. The port and MMIO buses both look devices up here, so a
/// straddling or oversized access is refused the same way on both.
struct RangeMap<D> {
    ranges: Vec<Mapped<D>>,
}

struct Mapped<D> {
    base: u64,
    len: u64,
    max_access: usize,
    device: D,
}

impl<D> Default for RangeMap<D> {
    fn default() -> Self {
        RangeMap { ranges: Vec::new() }
    }
}

impl<D> RangeMap<D> {
    /// Puts `device` at `base..base + len` (ending at or below `limit`), taking accesses of
    /// at most `max_access` bytes; `what` names the space in errors.
    fn insert(
        &mut self,
        what: &str,
        (base, len, limit): (u64, u64, u64),
        max_access: usize,
        device: D,
    ) -> Result<(), KvmError> {
        let end = base.checked_add(len).filter(|&e| len > 0 && e <= limit);
        let Some(end) = end else {
            return Err(KvmError::BadConfig {
                reason: format!("{what} {base:#x}+{len:#x} is empty or beyond {limit:#x}"),
            });
        };
        if let Some(r) = self
            .ranges
            .iter()
            .find(|r| base < r.base + r.len && r.base < end)
        {
            return Err(KvmError::BadConfig {
                reason: format!(
                    "{what} {base:#x}+{len:#x} overlaps the device at {:#x}+{:#x}",
                    r.base, r.len
                ),
            });
        }
        self.ranges.push(Mapped {
            base,
            len,
            max_access,
            device,
        });
        Ok(())
    }

    /// The device taking all of `addr..addr + size`, and the offset into its range.
    fn find(&self, addr: u64, size: usize) -> Option<(&D, u64)> {
        let end = addr.checked_add(size as u64)?;
        self.ranges
            .iter()
            .find(|r| addr >= r.base && end <= r.base + r.len && size <= r.max_access)
            .map(|r| (&r.device, addr - r.base))
    }
}

/// The widest port access x86 has (IN/OUT with EAX).
const MAX_PORT_ACCESS: usize = 4;

/// Port ranges and their devices; unclaimed ports (and accesses that straddle a device's
/// end or are wider than it takes) read as all ones, ignore writes, and are counted.
#[derive(Default)]
pub struct PioBus {
    map: RangeMap<SharedDevice>,
    faults: Arc<GuestFaults>,
}

impl PioBus {
    /// An empty bus counting unclaimed ports in `faults`.
    pub fn new(faults: Arc<GuestFaults>) -> Self {
        PioBus {
            map: RangeMap::default(),
            faults,
        }
    }

    /// Puts `device` at ports `base..base + len`, which must not overlap another device.
    pub fn insert(&mut self, base: u16, len: u16, device: SharedDevice) -> Result<(), KvmError> {
        self.insert_sized(base, len, MAX_PORT_ACCESS, device)
    }

    /// As [`PioBus::insert`], for a device that takes accesses of at most `max_access`
    /// bytes (a 16550 takes single bytes, as Firecracker's serial does).
    pub fn insert_sized(
        &mut self,
        base: u16,
        len: u16,
        max_access: usize,
        device: SharedDevice,
    ) -> Result<(), KvmError> {
        let range = (u64::from(base), u64::from(len), 0x1_0000);
        self.map.insert("port range", range, max_access, device)
    }

    /// Handles an IN; returns whether a device claimed the port.
    pub fn read(&self, port: u16, data: &mut [u8]) -> bool {
        match self.map.find(u64::from(port), data.len()) {
            Some((dev, off)) => {
                match dev.lock() {
                    Ok(mut d) => d.read(off as u16, data),
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
        match self.map.find(u64::from(port), data.len()) {
            Some((dev, off)) => match dev.lock() {
                Ok(mut d) => d.write(off as u16, data),
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

/// Guest-physical windows and their devices; unclaimed addresses (and accesses that
/// straddle a window's end) read all ones, drop writes, and are counted.
#[derive(Default)]
pub struct MmioBus {
    map: RangeMap<SharedMmioDevice>,
    faults: Arc<GuestFaults>,
}

impl MmioBus {
    /// An empty bus counting unclaimed addresses in `faults`.
    pub fn new(faults: Arc<GuestFaults>) -> Self {
        MmioBus {
            map: RangeMap::default(),
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
        self.map
            .insert("MMIO window", (base, len, u64::MAX), usize::MAX, device)
    }

    fn find(&self, addr: u64, size: usize) -> Option<(&SharedMmioDevice, u64)> {
        self.map.find(addr, size)
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
    fn straddling_and_oversized_accesses_are_refused_on_both_buses() {
        let faults = Arc::new(GuestFaults::new());
        let mut pio = PioBus::new(faults.clone());
        pio.insert(0x600, 8, Arc::new(Mutex::new(Echo(0)))).unwrap();
        pio.insert_sized(0x3f8, 8, 1, Arc::new(Mutex::new(Echo(0))))
            .unwrap();
        let mut mmio = MmioBus::new(faults.clone());
        mmio.insert(0xc000_0000, 8, Arc::new(Mutex::new(Regs([0; 16]))))
            .unwrap();
        // Four bytes from the last two ports of a range: straddles its end.
        let mut w = [0u8; 4];
        assert!(!pio.read(0x606, &mut w));
        assert_eq!(w, [0xff; 4]);
        assert!(pio.read(0x604, &mut w), "a 4-byte access inside is taken");
        assert!(!mmio.read(0xc000_0006, &mut w));
        assert!(mmio.read(0xc000_0004, &mut w));
        // A 16550 takes bytes only.
        let mut h = [0u8; 2];
        assert!(!pio.read(0x3f8, &mut h));
        assert_eq!(pio.write(0x3f8, &[1, 2]), DeviceAction::None);
        let mut b = [0u8; 1];
        assert!(pio.read(0x3f8, &mut b));
        let log = faults.snapshot();
        assert_eq!(log.unclaimed_count(Space::Port, false, 0x606), 1);
        assert_eq!(log.unclaimed_count(Space::Port, false, 0x3f8), 1);
        assert_eq!(log.unclaimed_count(Space::Port, true, 0x3f8), 1);
        assert_eq!(log.unclaimed_count(Space::Mmio, false, 0xc000_0006), 1);
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
