//! Extended System Description Table: 64-bit pointers to the other tables.

use super::sdt::{Sdt, HEADER_LEN};
use super::AcpiError;

/// Length of an XSDT with `entries` pointers.
pub fn len(entries: usize) -> usize {
    HEADER_LEN + 8 * entries
}

/// The XSDT listing `tables` (guest-physical addresses).
pub fn build(tables: &[u64]) -> Result<Vec<u8>, AcpiError> {
    let mut t = Sdt::new("XSDT", 1);
    tables.iter().for_each(|gpa| {
        t.body().u64(*gpa);
    });
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden() {
        let v = build(&[0x1000, 0x2000]).unwrap();
        assert_eq!(v.len(), len(2));
        assert_eq!(&v[36..44], &0x1000u64.to_le_bytes());
        assert_eq!(&v[44..52], &0x2000u64.to_le_bytes());
        assert_eq!(v.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
    }
}
