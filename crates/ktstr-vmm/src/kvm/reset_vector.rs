//! The one piece of a BIOS a firmware-less VMM keeps: the reset vector.
//!
//! When Linux's reboot methods (ACPI reset register, i8042 pulse, EFI) have not reset the
//! machine, it falls back to `machine_real_restart`: real mode, then a far jump to
//! F000:FFF0, where a BIOS would reboot. Without firmware that address holds whatever RAM
//! holds and the vCPU runs off into it forever, so a panic with `panic=-1` never ends the
//! run. The stub here answers like a machine would: it writes the ACPI reset register, then
//! halts.

use vm_memory::{Bytes, GuestAddress};

use super::devices::power::{RESET_PORT, RESET_VALUE};
use super::layout::RESET_VECTOR_GPA;
use super::memory::GuestMemory;
use super::KvmError;

/// `mov al, RESET_VALUE; mov dx, RESET_PORT; out dx, al; hlt; jmp $-1` in real mode.
pub fn stub() -> [u8; 9] {
    let [lo, hi] = RESET_PORT.to_le_bytes();
    [0xb0, RESET_VALUE, 0xba, lo, hi, 0xee, 0xf4, 0xeb, 0xfd]
}

/// Writes [`stub`] at the reset vector (physical 0xFFFF0).
pub fn write(mem: &GuestMemory) -> Result<(), KvmError> {
    mem.write_slice(&stub(), GuestAddress(RESET_VECTOR_GPA))
        .map_err(|source| KvmError::GuestMemory {
            what: "reset vector",
            gpa: RESET_VECTOR_GPA,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_fits_below_one_mib_and_writes_the_reset_register() {
        let s = stub();
        assert!(RESET_VECTOR_GPA + s.len() as u64 <= 0x10_0000);
        assert_eq!(&s[..2], &[0xb0, RESET_VALUE], "mov al, imm8");
        assert_eq!(
            u16::from_le_bytes([s[3], s[4]]),
            RESET_PORT,
            "mov dx, imm16"
        );
        assert_eq!(
            &s[5..],
            &[0xee, 0xf4, 0xeb, 0xfd],
            "out; hlt; jmp back to hlt"
        );
    }
}
