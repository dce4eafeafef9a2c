//! Differentiated System Description Table: AML describing the virtio-MMIO devices and UARTs.
//!
//! ```text
//! Scope (\_SB) {
//!     Device (V000) {                       // one per virtio-MMIO device, V000..VFFF
//!         Name (_HID, "LNRO0005")
//!         Name (_UID, 0)
//!         Name (_CRS, ResourceTemplate () {
//!             Memory32Fixed (ReadWrite, base, size)
//!             Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi }
//!         })
//!     }
//!     Device (COM1) {                       // one per UART, COM1..COM9
//!         Name (_HID, EisaId ("PNP0501"))
//!         Name (_UID, 1)
//!         Name (_CRS, ResourceTemplate () { IO (Decode16, port, port, 1, 8) IRQNoFlags () { irq } })
//!     }
//! }
//! Name (\_S5, Package () { 5, 5 })          // only with power registers: SLP_TYP for soft-off
//! ```

use super::aml::{self, resource};
use super::sdt::Sdt;
use super::{AcpiError, AcpiLayout};

/// DSDT revision 2: AML integers are 64-bit.
const REVISION: u8 = 2;
/// Hardware ID Linux's virtio-mmio driver matches.
pub const VIRTIO_MMIO_HID: &str = "LNRO0005";
/// EISA ID of a 16550-compatible UART.
pub const UART_EISA_ID: &str = "PNP0501";
/// Most virtio-MMIO devices (names V000..VFFF).
const MAX_VIRTIO: usize = 0x1000;
/// Most UARTs (names COM1..COM9).
const MAX_UARTS: usize = 9;
/// I/O ports a 16550 decodes.
const UART_PORTS: u8 = 8;
/// SLP_TYP value of the S5 (soft-off) state written to the sleep control register.
pub const S5_SLEEP_TYPE: u64 = 5;

/// The DSDT for `layout`'s devices.
pub fn build(layout: &AcpiLayout) -> Result<Vec<u8>, AcpiError> {
    let mut sb = Vec::new();
    if layout.virtio_mmio.len() > MAX_VIRTIO {
        return Err(AcpiError::TooManyDevices {
            kind: "virtio-MMIO",
            count: layout.virtio_mmio.len(),
            max: MAX_VIRTIO,
        });
    }
    for (i, d) in layout.virtio_mmio.iter().enumerate() {
        let bad = AcpiError::BadMmioWindow {
            base: d.base,
            size: d.size,
        };
        let base = u32::try_from(d.base).map_err(|_| bad.clone())?;
        let size = u32::try_from(d.size).map_err(|_| bad.clone())?;
        if size == 0 || base.checked_add(size - 1).is_none() {
            return Err(bad);
        }
        let crs = aml::resource_template(&[
            resource::memory32_fixed(base, size),
            resource::interrupt_edge_high(d.gsi),
        ])?;
        let body = [
            aml::name("_HID", &aml::string(VIRTIO_MMIO_HID)?)?,
            aml::name("_UID", &aml::integer(i as u64))?,
            aml::name("_CRS", &crs)?,
        ]
        .concat();
        sb.extend(aml::device(&format!("V{i:03X}"), &body)?);
    }
    if layout.uarts.len() > MAX_UARTS {
        return Err(AcpiError::TooManyDevices {
            kind: "UART",
            count: layout.uarts.len(),
            max: MAX_UARTS,
        });
    }
    for (i, u) in layout.uarts.iter().enumerate() {
        if u.irq > 15 {
            return Err(AcpiError::BadUartIrq {
                port: u.port,
                irq: u.irq,
            });
        }
        let n = i + 1;
        let crs = aml::resource_template(&[
            resource::io(u.port, UART_PORTS),
            resource::irq_no_flags(u.irq),
        ])?;
        let body = [
            aml::name("_HID", &aml::dword(aml::eisa_id(UART_EISA_ID)?))?,
            aml::name("_UID", &aml::integer(n as u64))?,
            aml::name("_CRS", &crs)?,
        ]
        .concat();
        sb.extend(aml::device(&format!("COM{n}"), &body)?);
    }

    let mut t = Sdt::new("DSDT", REVISION);
    t.body().bytes(&aml::scope("\\_SB", &sb)?);
    if layout.power.is_some() {
        let s5 = aml::package(&[aml::integer(S5_SLEEP_TYPE), aml::integer(S5_SLEEP_TYPE)])?;
        t.body().bytes(&aml::name("\\_S5", &s5)?);
    }
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::{PowerPorts, Uart, VirtioMmioDevice};

    fn layout() -> AcpiLayout {
        AcpiLayout::new(0, Vec::new())
    }

    #[test]
    fn golden_com1() {
        let mut l = layout();
        l.uarts = vec![Uart::COM1];
        let v = build(&l).unwrap();
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x10, 0x33, b'\\', b'_', b'S', b'B', b'_',              // Scope (\_SB), PkgLength 51
            0x5b, 0x82, 0x2b, b'C', b'O', b'M', b'1',               // Device (COM1), PkgLength 43
            0x08, b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x05, 0x01, // _HID EisaId
            0x08, b'_', b'U', b'I', b'D', 0x01,                     // _UID One
            0x08, b'_', b'C', b'R', b'S', 0x11, 0x10, 0x0a, 0x0d,   // _CRS Buffer (13)
            0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08,         // IO 0x3f8
            0x22, 0x10, 0x00,                                       // IRQNoFlags {4}
            0x79, 0x00,                                             // End
        ];
        assert_eq!(&v[36..], want);
        assert_eq!(v.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }

    #[test]
    fn golden_virtio_device() {
        let mut l = layout();
        l.uarts.clear();
        l.virtio_mmio = vec![VirtioMmioDevice {
            base: 0xd000_0000,
            size: 0x1000,
            gsi: 5,
        }];
        let v = build(&l).unwrap();
        #[rustfmt::skip]
        let want: &[u8] = &[
            0x10, 0x43, 0x04, b'\\', b'_', b'S', b'B', b'_',        // Scope, PkgLength 67
            0x5b, 0x82, 0x3a, b'V', b'0', b'0', b'0',               // Device (V000), PkgLength 58
            0x08, b'_', b'H', b'I', b'D', 0x0d,
            b'L', b'N', b'R', b'O', b'0', b'0', b'0', b'5', 0x00,
            0x08, b'_', b'U', b'I', b'D', 0x00,
            0x08, b'_', b'C', b'R', b'S', 0x11, 0x1a, 0x0a, 0x17,   // Buffer (23)
            0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00,
            0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00,
            0x79, 0x00,
        ];
        assert_eq!(&v[36..], want);
    }

    #[test]
    fn power_adds_s5() {
        let mut l = layout();
        l.power = Some(PowerPorts {
            sleep_port: 0x3c0,
            reset_port: 0x3c0,
            reset_value: 1,
        });
        let v = build(&l).unwrap();
        let tail = [
            0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 6, 2, 0x0a, 5, 0x0a, 5,
        ];
        assert!(v.ends_with(&tail));
    }

    #[test]
    fn refuses_bad_devices() {
        let mut l = layout();
        l.virtio_mmio = vec![VirtioMmioDevice {
            base: 0x1_0000_0000,
            size: 0x1000,
            gsi: 5,
        }];
        assert!(matches!(build(&l), Err(AcpiError::BadMmioWindow { .. })));
        l.virtio_mmio[0] = VirtioMmioDevice {
            base: 0xffff_f000,
            size: 0x2000,
            gsi: 5,
        };
        assert!(matches!(build(&l), Err(AcpiError::BadMmioWindow { .. })));
        let mut l = layout();
        l.uarts = vec![Uart {
            port: 0x3e8,
            irq: 16,
        }];
        assert!(matches!(
            build(&l),
            Err(AcpiError::BadUartIrq { irq: 16, .. })
        ));
        l.uarts = vec![Uart::COM1; 10];
        assert!(matches!(build(&l), Err(AcpiError::TooManyDevices { .. })));
    }
}
