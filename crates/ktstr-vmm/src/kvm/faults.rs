//! What the guest asked of the VMM that nothing accepted: port I/O and MMIO no device
//! claims, virtqueues a device refused (rings or buffers outside guest memory, chains
//! virtio-queue cannot follow), and output dropped because the host kept only a bounded tail.
//! All of it is counted here and refused where it happened; none of it stops the host side.

use std::fmt;
use std::sync::Mutex;

/// How many distinct unclaimed ports and addresses are counted one by one, first seen
/// first; later ones count only in the totals.
pub const DISTINCT_UNCLAIMED: usize = 64;

/// Which bus an unclaimed access was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// Port I/O.
    Port,
    /// Memory-mapped I/O.
    Mmio,
}

/// One distinct unclaimed access: bus, direction and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Unclaimed {
    /// The bus.
    pub space: Space,
    /// Whether the guest wrote (else read).
    pub write: bool,
    /// Port number or guest-physical address.
    pub addr: u64,
}

impl fmt::Display for Unclaimed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = if self.write { "write" } else { "read" };
        match self.space {
            Space::Port => write!(f, "port {dir} {:#x}", self.addr),
            Space::Mmio => write!(f, "MMIO {dir} {:#x}", self.addr),
        }
    }
}

/// A device that refused a queue, with how often and the first reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFault {
    /// The device ("virtio-blk at 0xd0000000").
    pub device: String,
    /// How many times it refused.
    pub count: u64,
    /// The first refusal's reason.
    pub first: String,
}

/// Guest output the host did not keep: the device, bytes dropped, and the bound kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedOutput {
    /// The output ("COM2").
    pub device: String,
    /// Bytes dropped from the front of the kept tail, or skipped by a reader that fell behind.
    pub bytes: u64,
    /// The most the host keeps of that output.
    pub limit: usize,
}

/// A snapshot of everything counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultLog {
    /// Port reads no device claimed (they read as all ones).
    pub unclaimed_port_reads: u64,
    /// Port writes no device claimed (dropped).
    pub unclaimed_port_writes: u64,
    /// MMIO reads no device claimed (they read as all ones).
    pub unclaimed_mmio_reads: u64,
    /// MMIO writes no device claimed (dropped).
    pub unclaimed_mmio_writes: u64,
    /// The first [`DISTINCT_UNCLAIMED`] distinct unclaimed accesses, in the order seen, each
    /// with how often it happened.
    pub unclaimed: Vec<(Unclaimed, u64)>,
    /// Devices that refused something the guest queued (the first reason says whether the
    /// device then needs a reset).
    pub devices: Vec<DeviceFault>,
    /// Outputs whose bounded buffer dropped bytes.
    pub dropped: Vec<DroppedOutput>,
}

impl FaultLog {
    /// Whether anything beyond unclaimed accesses happened: a refused queue or dropped output.
    /// Linux probes a few absent legacy ports on every boot, so those alone are not.
    pub fn has_device_faults(&self) -> bool {
        !self.devices.is_empty() || !self.dropped.is_empty()
    }

    /// Unclaimed accesses in one line, `None` when there were none.
    pub fn unclaimed_line(&self) -> Option<String> {
        let total = self.unclaimed_port_reads
            + self.unclaimed_port_writes
            + self.unclaimed_mmio_reads
            + self.unclaimed_mmio_writes;
        if total == 0 {
            return None;
        }
        let mut first: Vec<String> = self
            .unclaimed
            .iter()
            .map(|(u, n)| format!("{u} x{n}"))
            .collect();
        if self.unclaimed.len() >= DISTINCT_UNCLAIMED {
            first.push("others not itemized".into());
        }
        Some(format!(
            "unclaimed I/O refused: ports {} reads, {} writes; MMIO {} reads, {} writes (first: {})",
            self.unclaimed_port_reads,
            self.unclaimed_port_writes,
            self.unclaimed_mmio_reads,
            self.unclaimed_mmio_writes,
            first.join(", ")
        ))
    }

    /// How often the guest made exactly this unclaimed access (0 if it is not among the
    /// distinct ones counted).
    pub fn unclaimed_count(&self, space: Space, write: bool, addr: u64) -> u64 {
        let u = Unclaimed { space, write, addr };
        self.unclaimed
            .iter()
            .find(|(k, _)| *k == u)
            .map_or(0, |(_, n)| *n)
    }

    /// One line per refused queue and per output that dropped bytes.
    pub fn device_lines(&self) -> Vec<String> {
        let refused = self.devices.iter().map(|d| {
            let times = if d.count == 1 { "time" } else { "times" };
            format!(
                "{} refused what the guest queued {} {times}; first: {}",
                d.device, d.count, d.first
            )
        });
        let dropped = self.dropped.iter().map(|d| {
            format!(
                "{} output flooded: {} bytes dropped (the host keeps at most {} bytes)",
                d.device, d.bytes, d.limit
            )
        });
        refused.chain(dropped).collect()
    }
}

/// The counters, shared by the buses, the devices and the host.
#[derive(Debug, Default)]
pub struct GuestFaults {
    log: Mutex<FaultLog>,
}

impl GuestFaults {
    /// No faults yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts an access to `addr` that no device on `space` claimed.
    pub fn unclaimed(&self, space: Space, write: bool, addr: u64) {
        let mut log = super::lock(&self.log);
        let counter = match (space, write) {
            (Space::Port, false) => &mut log.unclaimed_port_reads,
            (Space::Port, true) => &mut log.unclaimed_port_writes,
            (Space::Mmio, false) => &mut log.unclaimed_mmio_reads,
            (Space::Mmio, true) => &mut log.unclaimed_mmio_writes,
        };
        *counter = counter.saturating_add(1);
        let u = Unclaimed { space, write, addr };
        let full = log.unclaimed.len() >= DISTINCT_UNCLAIMED;
        match log.unclaimed.iter_mut().find(|(k, _)| *k == u) {
            Some((_, n)) => *n = n.saturating_add(1),
            None if !full => log.unclaimed.push((u, 1)),
            None => {}
        }
    }

    /// Counts a queue `device` refused because of `why`.
    pub fn device_refused(&self, device: &str, why: &dyn fmt::Display) {
        let mut log = super::lock(&self.log);
        match log.devices.iter_mut().find(|d| d.device == device) {
            Some(d) => d.count = d.count.saturating_add(1),
            None => log.devices.push(DeviceFault {
                device: device.to_string(),
                count: 1,
                first: why.to_string(),
            }),
        }
    }

    /// Everything counted so far.
    pub fn snapshot(&self) -> FaultLog {
        super::lock(&self.log).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_access_and_keeps_the_first_distinct_ones() {
        let f = GuestFaults::new();
        for _ in 0..3 {
            f.unclaimed(Space::Port, true, 0x1234);
        }
        f.unclaimed(Space::Port, false, 0x1235);
        f.unclaimed(Space::Mmio, false, 0xc000_0000);
        for a in 0..100 {
            f.unclaimed(Space::Mmio, true, 0xe000_0000 + a);
        }
        let log = f.snapshot();
        assert_eq!(log.unclaimed_port_writes, 3);
        assert_eq!(log.unclaimed_port_reads, 1);
        assert_eq!(log.unclaimed_mmio_reads, 1);
        assert_eq!(log.unclaimed_mmio_writes, 100);
        assert_eq!(log.unclaimed.len(), DISTINCT_UNCLAIMED);
        assert_eq!(log.unclaimed_count(Space::Port, true, 0x1234), 3);
        assert_eq!(log.unclaimed_count(Space::Port, false, 0x1234), 0);
        assert_eq!(log.unclaimed_count(Space::Mmio, true, 0xe000_0000), 1);
        // Beyond the distinct ones kept: only in the totals.
        assert_eq!(log.unclaimed_count(Space::Mmio, true, 0xe000_0000 + 99), 0);
        let line = log.unclaimed_line().unwrap();
        assert!(
            line.contains("ports 1 reads, 3 writes; MMIO 1 reads, 100 writes"),
            "{line}"
        );
        assert!(
            line.contains(
                "first: port write 0x1234 x3, port read 0x1235 x1, MMIO read 0xc0000000 x1, "
            ),
            "{line}"
        );
        assert!(
            line.ends_with(", MMIO write 0xe000003c x1, others not itemized)"),
            "{line}"
        );
        assert!(!log.has_device_faults());
        assert_eq!(FaultLog::default().unclaimed_line(), None);
    }

    #[test]
    fn refusals_are_counted_per_device_with_the_first_reason() {
        let f = GuestFaults::new();
        f.device_refused("virtio-blk at 0xd0000000", &"descriptor outside memory");
        f.device_refused("virtio-blk at 0xd0000000", &"something later");
        f.device_refused("virtio-net at 0xd0001000", &"bad ring");
        let log = f.snapshot();
        assert!(log.has_device_faults());
        assert_eq!(
            log.device_lines(),
            [
                "virtio-blk at 0xd0000000 refused what the guest queued 2 times; first: \
                 descriptor outside memory",
                "virtio-net at 0xd0001000 refused what the guest queued 1 time; first: bad ring",
            ]
        );
    }
}
