//! Power control: the ACPI hardware-reduced sleep and reset registers, and an exit-status port.
//!
//! Ports (all in one 8-port block at [`POWER_PORT_BASE`]):
//!
//! - [`SLEEP_PORT`] (0x600): the FADT's SLEEP_CONTROL_REG and SLEEP_STATUS_REG (given to
//!   [`ktstr_topology::AcpiLayout::power`], so the FADT names it and the DSDT gets `\_S5`).
//!   A byte with SLP_EN (bit 5) and SLP_TYP (bits 4:2) = 5 powers off with exit status 0,
//!   which is what Linux's `poweroff` does. Reads return 0.
//! - [`RESET_PORT`] (0x601): the FADT's RESET_REG; writing [`RESET_VALUE`] reboots.
//! - [`EXIT_PORT`] (0x604): ktstr's debug-exit port. An OUT of 1, 2 or 4 bytes powers off with
//!   that value (zero-extended) as the guest's exit status. A Linux guest reaches it with
//!   `ioperm` or `/dev/port`; test programs use `out dx, al`/`out dx, eax`.

use ktstr_topology::acpi::PowerPorts;

use crate::kvm::bus::{DeviceAction, PioDevice, RebootCause};

/// First port of the block.
pub const POWER_PORT_BASE: u16 = 0x600;
/// Ports in the block.
pub const POWER_PORT_LEN: u16 = 8;
/// Sleep control/status register.
pub const SLEEP_PORT: u16 = POWER_PORT_BASE;
/// Reset register.
pub const RESET_PORT: u16 = POWER_PORT_BASE + 1;
/// Value that resets when written to [`RESET_PORT`].
pub const RESET_VALUE: u8 = 0x0e;
/// Exit-status port.
pub const EXIT_PORT: u16 = POWER_PORT_BASE + 4;
/// SLP_EN bit of the sleep control register.
const SLP_EN: u8 = 1 << 5;
/// SLP_TYP of S5 (soft off), as the DSDT's `\_S5` says.
const SLP_TYP_S5: u8 = 5;

/// The ports as the ACPI layout wants them.
pub fn power_ports() -> PowerPorts {
    PowerPorts {
        sleep_port: SLEEP_PORT,
        reset_port: RESET_PORT,
        reset_value: RESET_VALUE,
    }
}

/// The power-control block.
#[derive(Debug, Default)]
pub struct PowerDevice;

impl PioDevice for PowerDevice {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceAction {
        match (POWER_PORT_BASE + offset, data) {
            (SLEEP_PORT, [v]) if v & SLP_EN != 0 && (v >> 2) & 7 == SLP_TYP_S5 => {
                DeviceAction::PowerOff { status: 0 }
            }
            (RESET_PORT, [RESET_VALUE]) => DeviceAction::Reboot {
                cause: RebootCause::ResetRegister,
            },
            (EXIT_PORT, d) if matches!(d.len(), 1 | 2 | 4) => {
                let mut b = [0u8; 4];
                b[..d.len()].copy_from_slice(d);
                DeviceAction::PowerOff {
                    status: u32::from_le_bytes(b),
                }
            }
            _ => DeviceAction::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off(status: u32) -> DeviceAction {
        DeviceAction::PowerOff { status }
    }

    #[test]
    fn sleep_register_s5_powers_off() {
        let mut p = PowerDevice;
        assert_eq!(p.write(0, &[(5 << 2) | 0x20]), off(0));
        assert_eq!(p.write(0, &[5 << 2]), DeviceAction::None, "no SLP_EN");
        assert_eq!(p.write(0, &[(3 << 2) | 0x20]), DeviceAction::None, "S3");
        assert_eq!(p.write(0, &[0x34, 0]), DeviceAction::None, "bad size");
    }

    #[test]
    fn reset_and_exit_ports() {
        let mut p = PowerDevice;
        assert_eq!(
            p.write(1, &[RESET_VALUE]),
            DeviceAction::Reboot {
                cause: RebootCause::ResetRegister
            }
        );
        assert_eq!(p.write(1, &[0]), DeviceAction::None);
        assert_eq!(p.write(4, &[42]), off(42));
        assert_eq!(p.write(4, &[1, 2, 3, 4]), off(0x0403_0201));
        assert_eq!(p.write(4, &[1, 2, 3]), DeviceAction::None);
        let mut b = [9u8; 2];
        p.read(0, &mut b);
        assert_eq!(b, [0, 0]);
        assert_eq!(power_ports().sleep_port, 0x600);
    }
}
