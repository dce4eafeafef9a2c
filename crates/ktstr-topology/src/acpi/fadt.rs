//! Fixed ACPI Description Table, revision 6.3, hardware-reduced (ACPI 6.x section 5.2.9).

use super::sdt::{gas_io, Sdt};
use super::{AcpiError, PowerPorts};

/// Length of a revision 6 FADT.
pub const LEN: usize = 276;
/// FADT major revision.
const REVISION: u8 = 6;
/// FADT minor revision (ACPI 6.3).
const MINOR_REVISION: u8 = 3;
/// Flags: the power button is a control-method device, not a fixed feature.
const PWR_BUTTON: u32 = 1 << 4;
/// Flags: the sleep button is a control-method device, not a fixed feature.
const SLP_BUTTON: u32 = 1 << 5;
/// Flags: RESET_REG is supported.
const RESET_REG_SUP: u32 = 1 << 10;
/// Flags: hardware-reduced ACPI (no fixed hardware, no SCI, no FACS needed).
const HW_REDUCED_ACPI: u32 = 1 << 20;
/// IA-PC boot architecture flags: no VGA.
const VGA_NOT_PRESENT: u16 = 1 << 2;
/// Hypervisor vendor identity written to the last field.
const HYPERVISOR_ID: u64 = u64::from_le_bytes(*b"KTSTRVMM");

/// The FADT pointing at the DSDT at `dsdt_gpa`, with the sleep/reset registers of `power`.
pub fn build(dsdt_gpa: u64, power: Option<PowerPorts>) -> Result<Vec<u8>, AcpiError> {
    let mut flags = HW_REDUCED_ACPI | PWR_BUTTON | SLP_BUTTON;
    if power.is_some() {
        flags |= RESET_REG_SUP;
    }
    let mut t = Sdt::new("FACP", REVISION);
    let b = t.body();
    // FIRMWARE_CTRL, DSDT (the 64-bit X_DSDT below is used instead).
    b.u32(0).u32(0);
    // Reserved, Preferred_PM_Profile (unspecified), SCI_INT, SMI_CMD, ACPI_ENABLE/DISABLE,
    // S4BIOS_REQ, PSTATE_CNT: all unused on hardware-reduced platforms.
    b.u8(0).u8(0).u16(0).u32(0).u8(0).u8(0).u8(0).u8(0);
    // PM1a/b event, PM1a/b control, PM2 control, PM timer, GPE0/1 blocks: absent.
    b.zeros(8 * 4);
    // Their lengths, GPE1_BASE, CST_CNT.
    b.zeros(8);
    // P_LVL2_LAT, P_LVL3_LAT, FLUSH_SIZE, FLUSH_STRIDE.
    b.u16(0).u16(0).u16(0).u16(0);
    // DUTY_OFFSET, DUTY_WIDTH, DAY_ALRM, MON_ALRM, CENTURY.
    b.zeros(5);
    b.u16(VGA_NOT_PRESENT).u8(0).u32(flags);
    gas_io(b, power.map(|p| p.reset_port));
    b.u8(power.map_or(0, |p| p.reset_value));
    // ARM_BOOT_ARCH, minor version, X_FIRMWARE_CTRL, X_DSDT.
    b.u16(0).u8(MINOR_REVISION).u64(0).u64(dsdt_gpa);
    // X_PM1a/b_EVT, X_PM1a/b_CNT, X_PM2_CNT, X_PM_TMR, X_GPE0/1: absent.
    b.zeros(8 * 12);
    gas_io(b, power.map(|p| p.sleep_port));
    gas_io(b, power.map(|p| p.sleep_port));
    b.u64(HYPERVISOR_ID);
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_fields() {
        let power = PowerPorts {
            sleep_port: 0x3c0,
            reset_port: 0x3c1,
            reset_value: 0x42,
        };
        let v = build(0x000e_1000, Some(power)).unwrap();
        assert_eq!(v.len(), LEN);
        assert_eq!(&v[0..4], b"FACP");
        assert_eq!(v[8], 6);
        assert_eq!(v[131], 3, "minor revision");
        assert_eq!(&v[40..44], &[0; 4], "32-bit DSDT unused");
        assert_eq!(&v[140..148], &0x000e_1000u64.to_le_bytes(), "X_DSDT");
        let flags = u32::from_le_bytes(v[112..116].try_into().unwrap());
        assert_eq!(flags, (1 << 20) | (1 << 10) | (1 << 5) | (1 << 4));
        assert_eq!(&v[109..111], &[4, 0], "IAPC_BOOT_ARCH");
        assert_eq!(&v[116..128], &[1, 8, 0, 1, 0xc1, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(v[128], 0x42);
        assert_eq!(&v[244..248], &[1, 8, 0, 1], "SLEEP_CONTROL_REG");
        assert_eq!(&v[248..250], &[0xc0, 3]);
        assert_eq!(&v[256..260], &[1, 8, 0, 1], "SLEEP_STATUS_REG");
        assert_eq!(&v[268..276], b"KTSTRVMM");
        assert_eq!(v.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }

    #[test]
    fn without_power_registers() {
        let v = build(0x1000, None).unwrap();
        assert_eq!(v.len(), LEN);
        let flags = u32::from_le_bytes(v[112..116].try_into().unwrap());
        assert_eq!(flags & (1 << 10), 0);
        assert_eq!(&v[244..268], &[0; 24]);
    }
}
