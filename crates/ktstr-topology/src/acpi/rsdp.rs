//! Root System Description Pointer, revision 2 (ACPI 6.x section 5.2.5).

use super::sdt::{checksum, Bytes, OEM_ID};

/// Size of a revision 2 RSDP.
pub const LEN: usize = 36;
/// Bytes covered by the ACPI 1.0 checksum.
const V1_LEN: usize = 20;

/// The RSDP pointing at the XSDT at `xsdt_gpa` (no RSDT).
pub fn build(xsdt_gpa: u64) -> Vec<u8> {
    let mut b = Bytes::new();
    b.bytes(b"RSD PTR ")
        .u8(0)
        .bytes(&OEM_ID)
        .u8(2)
        .u32(0)
        .u32(LEN as u32)
        .u64(xsdt_gpa)
        .u8(0)
        .zeros(3);
    let mut v = b.into_vec();
    v[8] = checksum(&v[..V1_LEN]);
    v[32] = checksum(&v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let v = build(0x000e_0030);
        assert_eq!(v.len(), LEN);
        assert_eq!(&v[..8], b"RSD PTR ");
        assert_eq!(v[15], 2, "revision");
        assert_eq!(&v[16..20], &[0; 4], "no RSDT");
        assert_eq!(&v[20..24], &[36, 0, 0, 0]);
        assert_eq!(&v[24..32], &[0x30, 0, 0x0e, 0, 0, 0, 0, 0]);
        let sum = |s: &[u8]| s.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        assert_eq!(sum(&v[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(&v), 0, "extended checksum");
        // Hand-checked: "RSD PTR " sums to 0x21f, "KTSTR " to 0x1b8, revision 2, RSDT 0:
        // 0x3d9, low byte 0xd9, so the ACPI 1.0 checksum is 0x100 - 0xd9.
        assert_eq!(v[8], 0x27);
    }
}
