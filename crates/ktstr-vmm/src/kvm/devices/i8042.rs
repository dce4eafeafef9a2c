//! Just enough of the i8042 keyboard controller for Linux's reboot: 0xFE to port 0x64 resets.

use crate::kvm::bus::{DeviceAction, PioDevice, RebootCause};

/// First port of the controller (data); the command/status port is `I8042_BASE + 4`.
pub const I8042_BASE: u16 = 0x60;
/// Ports the controller decodes.
pub const I8042_LEN: u16 = 5;
/// Offset of the command/status register.
const COMMAND: u16 = 4;
/// Command: pulse the CPU reset line.
const CMD_RESET: u8 = 0xfe;

/// An i8042 with no keyboard: status reads 0 (no data), the reset command reboots.
#[derive(Debug, Default)]
pub struct I8042;

impl PioDevice for I8042 {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceAction {
        match (offset, data) {
            (COMMAND, [CMD_RESET]) => DeviceAction::Reboot {
                cause: RebootCause::Keyboard,
            },
            _ => DeviceAction::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_reboots() {
        let mut k = I8042;
        assert_eq!(k.write(0, &[CMD_RESET]), DeviceAction::None);
        assert_eq!(k.write(COMMAND, &[0xaa]), DeviceAction::None);
        assert_eq!(
            k.write(COMMAND, &[CMD_RESET]),
            DeviceAction::Reboot {
                cause: RebootCause::Keyboard
            }
        );
        let mut b = [0xffu8];
        k.read(COMMAND, &mut b);
        assert_eq!(b, [0]);
    }
}
