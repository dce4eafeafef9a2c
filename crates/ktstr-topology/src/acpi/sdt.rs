//! The common System Description Table header, checksums and a little-endian byte writer.

use super::AcpiError;

/// OEM ID written into every table and the RSDP.
pub const OEM_ID: [u8; 6] = *b"KTSTR ";
/// OEM table ID written into every table.
pub const OEM_TABLE_ID: [u8; 8] = *b"KTSTRVM ";
/// OEM revision written into every table.
pub const OEM_REVISION: u32 = 1;
/// Creator ID written into every table.
pub const CREATOR_ID: [u8; 4] = *b"KTST";
/// Creator revision written into every table.
pub const CREATOR_REVISION: u32 = 1;
/// Size of the System Description Table header.
pub const HEADER_LEN: usize = 36;

/// Offset of the length field in the header.
const LENGTH_OFFSET: usize = 4;
/// Offset of the checksum byte in the header.
const CHECKSUM_OFFSET: usize = 9;

/// The byte that makes `bytes` sum to zero modulo 256 once added.
pub fn checksum(bytes: &[u8]) -> u8 {
    // Checksums are defined modulo 256, so wrapping is the intended arithmetic.
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)))
}

/// A growable little-endian byte buffer.
#[derive(Debug, Default, Clone)]
pub struct Bytes {
    buf: Vec<u8>,
}

impl Bytes {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends `n` zero bytes.
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.buf.resize(self.buf.len().saturating_add(n), 0);
        self
    }

    /// The written bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Appends a 12-byte Generic Address Structure for a byte-wide I/O port, or zeros for `None`.
pub fn gas_io(b: &mut Bytes, port: Option<u16>) {
    match port {
        None => {
            b.zeros(12);
        }
        Some(port) => {
            // Address space 1 (system I/O), bit width 8, bit offset 0, access size 1 (byte).
            b.u8(1).u8(8).u8(0).u8(1).u64(u64::from(port));
        }
    }
}

/// A System Description Table under construction: header first, body appended.
#[derive(Debug)]
pub struct Sdt {
    signature: &'static str,
    body: Bytes,
}

impl Sdt {
    /// Starts a table with `signature` and `revision`; length and checksum are filled by [`Sdt::finish`].
    pub fn new(signature: &'static str, revision: u8) -> Self {
        let mut body = Bytes::new();
        body.bytes(signature.as_bytes())
            .u32(0)
            .u8(revision)
            .u8(0)
            .bytes(&OEM_ID)
            .bytes(&OEM_TABLE_ID)
            .u32(OEM_REVISION)
            .bytes(&CREATOR_ID)
            .u32(CREATOR_REVISION);
        Sdt { signature, body }
    }

    /// The table body, to append fields to.
    pub fn body(&mut self) -> &mut Bytes {
        &mut self.body
    }

    /// Fills in the length and checksum and returns the table's bytes.
    pub fn finish(self) -> Result<Vec<u8>, AcpiError> {
        let signature = self.signature;
        let mut v = self.body.into_vec();
        let len = u32::try_from(v.len()).map_err(|_| AcpiError::TableTooLarge {
            table: signature,
            len: v.len(),
        })?;
        v[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&len.to_le_bytes());
        v[CHECKSUM_OFFSET] = checksum(&v);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_and_checksum() {
        let mut t = Sdt::new("TEST", 3);
        t.body().u32(0xdead_beef);
        let v = t.finish().unwrap();
        assert_eq!(v.len(), HEADER_LEN + 4);
        assert_eq!(&v[0..4], b"TEST");
        assert_eq!(u32::from_le_bytes(v[4..8].try_into().unwrap()), 40);
        assert_eq!(v[8], 3);
        assert_eq!(&v[10..16], b"KTSTR ");
        assert_eq!(&v[16..24], b"KTSTRVM ");
        assert_eq!(&v[28..32], b"KTST");
        assert_eq!(v.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
    }

    #[test]
    fn gas_encoding() {
        let mut b = Bytes::new();
        gas_io(&mut b, Some(0x3c0));
        gas_io(&mut b, None);
        let v = b.into_vec();
        assert_eq!(&v[..12], &[1, 8, 0, 1, 0xc0, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&v[12..], &[0; 12]);
    }
}
