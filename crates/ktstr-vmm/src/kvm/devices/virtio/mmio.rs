//! The virtio-MMIO transport, version 2: the register file a driver finds at a DSDT `LNRO0005`
//! window, feature negotiation, queue setup, notifications and the interrupt.

use std::sync::Arc;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};

use virtio_queue::{Queue, QueueT};
use vm_superio::Trigger;

use super::{device_name, VirtioDevice, VirtioError, FEATURE_VERSION_1};
use crate::kvm::bus::MmioDevice;
use crate::kvm::devices::IrqTrigger;
use crate::kvm::faults::GuestFaults;
use crate::kvm::GuestMemory;

/// "virt" in little endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// The modern (virtio 1.x) transport.
pub const VERSION: u32 = 2;
/// Vendor ID: "ktst" in little endian.
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"ktst");

const MAGIC: u64 = 0x000;
const VERSION_REG: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const VENDOR: u64 = 0x00c;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
/// The register a driver writes a queue index to when it added buffers.
pub const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DESC_HIGH: u64 = 0x084;
const QUEUE_DRIVER_LOW: u64 = 0x090;
const QUEUE_DRIVER_HIGH: u64 = 0x094;
const QUEUE_DEVICE_LOW: u64 = 0x0a0;
const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const SHM_LEN_LOW: u64 = 0x0b0;
const SHM_BASE_HIGH: u64 = 0x0bc;
const CONFIG_GENERATION: u64 = 0x0fc;
/// Start of the device-specific configuration space.
pub const CONFIG: u64 = 0x100;

/// One virtio device's register file, queues and interrupt.
pub struct VirtioMmioTransport<D> {
    device: D,
    mem: GuestMemory,
    irq: IrqTrigger,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    interrupt_status: u32,
    /// Where refused chains and queue errors are counted, and the name they go under.
    faults: Arc<GuestFaults>,
    name: String,
}

impl<D: VirtioDevice> VirtioMmioTransport<D> {
    /// `device` on `mem`, interrupting through `irq`; fails on a queue size virtio-queue refuses.
    pub fn new(device: D, mem: GuestMemory, irq: IrqTrigger) -> Result<Self, VirtioError> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .enumerate()
            .map(|(queue, &max)| {
                Queue::new(max).map_err(|source| VirtioError::Queue { queue, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let name = device_name(device.device_id());
        let mut t = VirtioMmioTransport {
            device,
            mem,
            irq,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            interrupt_status: 0,
            faults: Arc::new(GuestFaults::new()),
            name,
        };
        t.reset();
        Ok(t)
    }

    /// Counts what the guest's queues get refused in `faults`, under `name`.
    pub fn report_faults_to(&mut self, faults: Arc<GuestFaults>, name: String) {
        self.faults = faults;
        self.name = name;
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, mutably (e.g. to queue host input before [`Self::process`]).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The device status register (ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK, ...).
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Features the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Whether the driver set DRIVER_OK and the device is live.
    pub fn is_active(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0
            && self.status & VIRTIO_CONFIG_S_NEEDS_RESET == 0
    }

    /// Serves queue `index` if live and ready, then the device's follow-up queue, if any;
    /// interrupts if buffers were used and wanted.
    pub fn process(&mut self, index: usize) {
        self.process_one(index);
        if let Some(next) = self.device.follow_up(index) {
            self.process_one(next);
        }
    }

    fn process_one(&mut self, index: usize) {
        if !self.is_active() {
            return;
        }
        let Some(q) = self.queues.get_mut(index) else {
            return;
        };
        if !q.ready() {
            return;
        }
        let mut used = false;
        let result = loop {
            match self.device.process_queue(index, q, &self.mem) {
                // A refused chain was used (untouched); serve the rest of the queue.
                Err(e @ VirtioError::OutsideMemory { .. }) => {
                    self.faults.device_refused(&self.name, &e);
                    used = true;
                }
                r => break r,
            }
        };
        match result {
            Ok(more) => {
                // An unreadable avail ring still gets an interrupt rather than a lost one.
                if (used || more) && q.needs_notification(&self.mem).unwrap_or(true) {
                    self.signal(VIRTIO_MMIO_INT_VRING);
                }
            }
            Err(e) => {
                self.faults.device_refused(&self.name, &e);
                self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
                self.signal(VIRTIO_MMIO_INT_CONFIG);
            }
        }
    }

    fn signal(&mut self, why: u32) {
        self.interrupt_status |= why;
        // An irqfd write fails only if the counter overflows; nobody to tell either way.
        let _ = self.irq.trigger();
    }

    fn reset(&mut self) {
        self.device.reset();
        self.queues.iter_mut().for_each(QueueT::reset);
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.status = 0;
        self.interrupt_status = 0;
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// The selected queue, if the driver may still change it (not ready, device not live).
    fn configurable(&mut self) -> Option<&mut Queue> {
        if self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            return None;
        }
        self.selected().filter(|q| !q.ready())
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        // A driver may not clear bits except by writing zero.
        if v & self.status != self.status {
            return;
        }
        let mut v = v;
        let newly = v & !self.status;
        if newly & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let offered = self.device.features();
            if self.driver_features & !offered != 0 || self.driver_features & FEATURE_VERSION_1 == 0
            {
                v &= !VIRTIO_CONFIG_S_FEATURES_OK;
            }
        }
        if newly & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            let features_ok = v & VIRTIO_CONFIG_S_FEATURES_OK != 0;
            let mem = &self.mem;
            let bad_queue = self
                .queues
                .iter()
                .position(|q| q.ready() && !q.is_valid(mem));
            if let Some(i) = bad_queue {
                let why = format!(
                    "virtqueue {i}: rings outside guest memory or misaligned at DRIVER_OK; \
                     the device needs a reset"
                );
                self.faults.device_refused(&self.name, &why);
            }
            if !features_ok || bad_queue.is_some() {
                v |= VIRTIO_CONFIG_S_NEEDS_RESET;
                self.status = v;
                self.signal(VIRTIO_MMIO_INT_CONFIG);
                return;
            }
        }
        self.status = v;
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let q = self.queues.get(self.queue_sel as usize);
        match offset {
            MAGIC => MAGIC_VALUE,
            VERSION_REG => VERSION,
            DEVICE_ID => self.device.device_id(),
            VENDOR => VENDOR_ID,
            DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size())),
            QUEUE_READY => q.map_or(0, |q| u32::from(q.ready())),
            INTERRUPT_STATUS => self.interrupt_status,
            STATUS => self.status,
            // No shared-memory regions: a length of all ones says "absent".
            SHM_LEN_LOW..=SHM_BASE_HIGH => u32::MAX,
            // Configuration space never changes under the driver.
            CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            DEVICE_FEATURES_SEL => self.device_features_sel = v,
            // Frozen once FEATURES_OK is set.
            DRIVER_FEATURES if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 => {
                let (mask, shift) = match self.driver_features_sel {
                    0 => (0xffff_ffff_u64, 0),
                    1 => (0xffff_ffff_0000_0000, 32),
                    _ => return,
                };
                self.driver_features = (self.driver_features & !mask) | (u64::from(v) << shift);
            }
            DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            QUEUE_SEL => self.queue_sel = v,
            QUEUE_NUM => {
                if let (Some(q), Ok(n)) = (self.configurable(), u16::try_from(v)) {
                    q.set_size(n);
                }
            }
            QUEUE_READY => {
                if let Some(q) = self.selected() {
                    q.set_ready(v == 1);
                }
            }
            QUEUE_NOTIFY => self.process(v as usize),
            INTERRUPT_ACK => self.interrupt_status &= !v,
            STATUS => self.set_status(v),
            QUEUE_DESC_LOW => self.set_addr(|q, v| q.set_desc_table_address(Some(v), None), v),
            QUEUE_DESC_HIGH => self.set_addr(|q, v| q.set_desc_table_address(None, Some(v)), v),
            QUEUE_DRIVER_LOW => self.set_addr(|q, v| q.set_avail_ring_address(Some(v), None), v),
            QUEUE_DRIVER_HIGH => self.set_addr(|q, v| q.set_avail_ring_address(None, Some(v)), v),
            QUEUE_DEVICE_LOW => self.set_addr(|q, v| q.set_used_ring_address(Some(v), None), v),
            QUEUE_DEVICE_HIGH => self.set_addr(|q, v| q.set_used_ring_address(None, Some(v)), v),
            _ => {}
        }
    }

    fn set_addr(&mut self, set: impl FnOnce(&mut Queue, u32), v: u32) {
        if let Some(q) = self.configurable() {
            set(q, v);
        }
    }
}

impl<D: VirtioDevice> MmioDevice for VirtioMmioTransport<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG {
            self.device.read_config(offset - CONFIG, data);
            return;
        }
        match <&mut [u8; 4]>::try_from(&mut *data) {
            Ok(b) if offset % 4 == 0 => *b = self.read_reg(offset).to_le_bytes(),
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG {
            self.device.write_config(offset - CONFIG, data);
            return;
        }
        if let (Ok(b), 0) = (<[u8; 4]>::try_from(data), offset % 4) {
            self.write_reg(offset, u32::from_le_bytes(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::devices::virtio::{read_config_bytes, VirtioError};
    use virtio_bindings::virtio_config::{VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER};
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    /// A device that counts notifications and claims to use a buffer on each.
    #[derive(Default)]
    struct Fake {
        notified: Vec<usize>,
        resets: u32,
    }

    impl VirtioDevice for Fake {
        fn device_id(&self) -> u32 {
            42
        }
        fn features(&self) -> u64 {
            FEATURE_VERSION_1 | 0b101
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            read_config_bytes(&[1, 2, 3, 4, 5], offset, data);
        }
        fn process_queue(
            &mut self,
            index: usize,
            _queue: &mut Queue,
            _mem: &GuestMemory,
        ) -> Result<bool, VirtioError> {
            self.notified.push(index);
            Ok(true)
        }
        fn reset(&mut self) {
            self.resets += 1;
        }
    }

    fn transport() -> (VirtioMmioTransport<Fake>, EventFd) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = IrqTrigger::new(Some(evt.try_clone().unwrap()));
        (
            VirtioMmioTransport::new(Fake::default(), mem, irq).unwrap(),
            evt,
        )
    }

    fn rd(t: &mut VirtioMmioTransport<Fake>, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(t: &mut VirtioMmioTransport<Fake>, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    const ACK_DRIVER: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;

    /// Negotiates VERSION_1 and sets up queue 0 with its rings at 0x1000/0x2000/0x3000.
    fn bring_up(t: &mut VirtioMmioTransport<Fake>) {
        wr(t, STATUS, ACK_DRIVER);
        wr(t, DRIVER_FEATURES_SEL, 1);
        wr(t, DRIVER_FEATURES, 1);
        wr(t, STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        wr(t, QUEUE_SEL, 0);
        wr(t, QUEUE_NUM, 8);
        wr(t, QUEUE_DESC_LOW, 0x1000);
        wr(t, QUEUE_DRIVER_LOW, 0x2000);
        wr(t, QUEUE_DEVICE_LOW, 0x3000);
        wr(t, QUEUE_READY, 1);
        wr(
            t,
            STATUS,
            ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK,
        );
    }

    #[test]
    fn identification_registers() {
        let (mut t, _e) = transport();
        assert_eq!(rd(&mut t, MAGIC), 0x7472_6976);
        assert_eq!(rd(&mut t, VERSION_REG), 2);
        assert_eq!(rd(&mut t, DEVICE_ID), 42);
        assert_eq!(rd(&mut t, VENDOR), VENDOR_ID);
        assert_eq!(rd(&mut t, CONFIG_GENERATION), 0);
        assert_eq!(rd(&mut t, SHM_LEN_LOW), u32::MAX, "no shared memory");
        // Registers want aligned 32-bit accesses.
        let mut b = [9u8; 2];
        t.read(MAGIC, &mut b);
        assert_eq!(b, [0, 0]);
        assert_eq!(rd(&mut t, MAGIC + 2), 0);
        // Config space takes any size; beyond its end reads zero.
        let mut c = [0u8; 8];
        t.read(CONFIG + 1, &mut c);
        assert_eq!(c, [2, 3, 4, 5, 0, 0, 0, 0]);
    }

    #[test]
    fn feature_negotiation() {
        let (mut t, _e) = transport();
        assert_eq!(rd(&mut t, DEVICE_FEATURES), 0b101);
        wr(&mut t, DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&mut t, DEVICE_FEATURES), 1, "VERSION_1");
        wr(&mut t, DEVICE_FEATURES_SEL, 2);
        assert_eq!(rd(&mut t, DEVICE_FEATURES), 0);

        // Without VERSION_1 FEATURES_OK does not stick.
        wr(&mut t, STATUS, ACK_DRIVER);
        wr(&mut t, DRIVER_FEATURES, 0b100);
        wr(&mut t, STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        assert_eq!(rd(&mut t, STATUS), ACK_DRIVER);
        // A feature the device does not offer: refused too.
        wr(&mut t, DRIVER_FEATURES_SEL, 1);
        wr(&mut t, DRIVER_FEATURES, 1 | 2);
        wr(&mut t, STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        assert_eq!(rd(&mut t, STATUS), ACK_DRIVER);
        wr(&mut t, DRIVER_FEATURES, 1);
        wr(&mut t, STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        assert_eq!(rd(&mut t, STATUS), ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        assert_eq!(t.driver_features(), FEATURE_VERSION_1 | 0b100);
        // Frozen once FEATURES_OK is set.
        wr(&mut t, DRIVER_FEATURES_SEL, 0);
        wr(&mut t, DRIVER_FEATURES, 0);
        assert_eq!(t.driver_features(), FEATURE_VERSION_1 | 0b100);
        // Bits cannot be cleared except by reset.
        wr(&mut t, STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        assert_eq!(rd(&mut t, STATUS), ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    }

    #[test]
    fn queue_setup_notify_interrupt_and_ack() {
        let (mut t, evt) = transport();
        wr(&mut t, QUEUE_SEL, 1);
        assert_eq!(rd(&mut t, QUEUE_NUM_MAX), 8);
        wr(&mut t, QUEUE_SEL, 2);
        assert_eq!(rd(&mut t, QUEUE_NUM_MAX), 0, "no queue 2");
        wr(&mut t, QUEUE_NOTIFY, 0);
        assert!(t.device().notified.is_empty(), "not live yet");

        bring_up(&mut t);
        assert!(t.is_active());
        assert_eq!(rd(&mut t, QUEUE_READY), 1);
        let q = &t.queues[0];
        assert_eq!(
            (q.size(), q.desc_table(), q.avail_ring(), q.used_ring()),
            (8, 0x1000, 0x2000, 0x3000)
        );
        // A live queue cannot be moved.
        wr(&mut t, QUEUE_DESC_LOW, 0x8000);
        assert_eq!(t.queues[0].desc_table(), 0x1000);

        wr(&mut t, QUEUE_NOTIFY, 1);
        assert!(t.device().notified.is_empty(), "queue 1 is not ready");
        wr(&mut t, QUEUE_NOTIFY, 0);
        wr(&mut t, QUEUE_NOTIFY, 7);
        assert_eq!(t.device().notified, [0]);
        assert_eq!(rd(&mut t, INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
        assert_eq!(evt.read().unwrap(), 1);
        wr(&mut t, INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
        assert_eq!(rd(&mut t, INTERRUPT_STATUS), 0);
    }

    #[test]
    fn status_zero_resets_everything() {
        let (mut t, _e) = transport();
        bring_up(&mut t);
        wr(&mut t, QUEUE_NOTIFY, 0);
        let resets = t.device().resets;
        wr(&mut t, STATUS, 0);
        assert_eq!(t.device().resets, resets + 1);
        assert_eq!(rd(&mut t, STATUS), 0);
        assert_eq!(rd(&mut t, INTERRUPT_STATUS), 0);
        assert_eq!(rd(&mut t, QUEUE_READY), 0);
        assert_eq!(t.driver_features(), 0);
        assert_eq!(t.queues[0].desc_table(), 0);
        assert!(!t.is_active());
    }

    #[test]
    fn driver_ok_with_a_bad_queue_needs_reset() {
        let (mut t, evt) = transport();
        let faults = Arc::new(GuestFaults::new());
        t.report_faults_to(faults.clone(), "fake at 0xd0000000".into());
        wr(&mut t, STATUS, ACK_DRIVER);
        wr(&mut t, DRIVER_FEATURES_SEL, 1);
        wr(&mut t, DRIVER_FEATURES, 1);
        wr(&mut t, STATUS, ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
        // Rings outside guest memory.
        wr(&mut t, QUEUE_DESC_LOW, 0x1000);
        wr(&mut t, QUEUE_DRIVER_LOW, 0x2000);
        wr(&mut t, QUEUE_DEVICE_HIGH, 0x10);
        wr(&mut t, QUEUE_READY, 1);
        wr(
            &mut t,
            STATUS,
            ACK_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK,
        );
        assert_ne!(rd(&mut t, STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        assert_eq!(rd(&mut t, INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
        assert_eq!(evt.read().unwrap(), 1);
        assert!(!t.is_active());
        wr(&mut t, QUEUE_NOTIFY, 0);
        assert!(t.device().notified.is_empty());
        let log = faults.snapshot();
        assert_eq!(log.devices.len(), 1, "{log:?}");
        assert_eq!(log.devices[0].device, "fake at 0xd0000000");
        assert!(
            log.devices[0]
                .first
                .starts_with("virtqueue 0: rings outside"),
            "{log:?}"
        );
    }
}
