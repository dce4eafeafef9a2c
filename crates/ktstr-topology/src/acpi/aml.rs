//! Hand-written AML encoders: just what the DSDT needs (ACPI 6.x section 20).
//!
//! Every function returns the encoded bytes of one AML object so callers can nest them.

use super::AcpiError;

const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const ONES_OP: u8 = 0xff;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const NAME_OP: u8 = 0x08;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;

/// Largest value a PkgLength can encode (28 bits).
const MAX_PKG_LENGTH: usize = (1 << 28) - 1;

/// Encodes the PkgLength of an object whose payload after the PkgLength is `payload` bytes.
///
/// The encoded length counts the PkgLength bytes themselves; one byte holds up to 63,
/// otherwise the top two bits of the lead byte say how many bytes follow.
pub fn pkg_length(payload: usize) -> Result<Vec<u8>, AcpiError> {
    let too_long = AcpiError::AmlTooLong { len: payload };
    for n in 1..=4usize {
        let total = payload.checked_add(n).ok_or(too_long.clone())?;
        let limit = if n == 1 {
            0x3f
        } else {
            (1usize << (4 + 8 * (n - 1))) - 1
        };
        if total <= limit && total <= MAX_PKG_LENGTH {
            if n == 1 {
                return Ok(vec![total as u8]);
            }
            let mut out = Vec::with_capacity(n);
            // Lead byte: bits 7-6 = count of following bytes, bits 3-0 = low nibble.
            out.push((((n - 1) as u8) << 6) | (total & 0x0f) as u8);
            for i in 0..n - 1 {
                out.push(((total >> (4 + 8 * i)) & 0xff) as u8);
            }
            return Ok(out);
        }
    }
    Err(too_long)
}

/// Validates and returns a 4-character NameSeg (`[A-Z_][A-Z0-9_]{3}`), padding shorter names with `_`.
pub fn name_seg(seg: &str) -> Result<[u8; 4], AcpiError> {
    let bad = || AcpiError::BadAmlName {
        name: seg.to_string(),
    };
    let b = seg.as_bytes();
    if b.is_empty() || b.len() > 4 {
        return Err(bad());
    }
    let mut out = [b'_'; 4];
    for (i, c) in b.iter().enumerate() {
        let ok = c.is_ascii_uppercase() || *c == b'_' || (i > 0 && c.is_ascii_digit());
        if !ok {
            return Err(bad());
        }
        out[i] = *c;
    }
    Ok(out)
}

/// Encodes a NameString such as `\_SB`, `\_SB.COM1` or `VR00` (a leading `\` makes it absolute).
pub fn name_string(path: &str) -> Result<Vec<u8>, AcpiError> {
    let mut out = Vec::new();
    let rel = match path.strip_prefix('\\') {
        Some(r) => {
            out.push(ROOT_CHAR);
            r
        }
        None => path,
    };
    let segs = rel
        .split('.')
        .map(name_seg)
        .collect::<Result<Vec<_>, _>>()?;
    match segs.len() {
        1 => {}
        2 => out.push(DUAL_NAME_PREFIX),
        n => {
            out.push(MULTI_NAME_PREFIX);
            out.push(u8::try_from(n).map_err(|_| AcpiError::BadAmlName {
                name: path.to_string(),
            })?);
        }
    }
    segs.iter().for_each(|s| out.extend_from_slice(s));
    Ok(out)
}

/// Encodes an integer with the shortest form (ZeroOp, OneOp, OnesOp or a sized prefix).
pub fn integer(v: u64) -> Vec<u8> {
    match v {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        u64::MAX => vec![ONES_OP],
        v => {
            if let Ok(b) = u8::try_from(v) {
                vec![BYTE_PREFIX, b]
            } else if let Ok(w) = u16::try_from(v) {
                let mut o = vec![WORD_PREFIX];
                o.extend_from_slice(&w.to_le_bytes());
                o
            } else if let Ok(d) = u32::try_from(v) {
                let mut o = vec![DWORD_PREFIX];
                o.extend_from_slice(&d.to_le_bytes());
                o
            } else {
                let mut o = vec![QWORD_PREFIX];
                o.extend_from_slice(&v.to_le_bytes());
                o
            }
        }
    }
}

/// Encodes a DWordConst regardless of value (used for EISA IDs, which iasl expects as DWords).
pub fn dword(v: u32) -> Vec<u8> {
    let mut o = vec![DWORD_PREFIX];
    o.extend_from_slice(&v.to_le_bytes());
    o
}

/// Encodes an ASCII string constant (NUL-terminated).
pub fn string(s: &str) -> Result<Vec<u8>, AcpiError> {
    if !s.bytes().all(|c| (1..=0x7f).contains(&c)) {
        return Err(AcpiError::BadAmlString { s: s.to_string() });
    }
    let mut o = vec![STRING_PREFIX];
    o.extend_from_slice(s.as_bytes());
    o.push(0);
    Ok(o)
}

/// Compresses a 7-character EISA ID such as `PNP0501` into its 32-bit form.
pub fn eisa_id(id: &str) -> Result<u32, AcpiError> {
    let bad = || AcpiError::BadEisaId { id: id.to_string() };
    let b = id.as_bytes();
    if b.len() != 7 || !b[..3].iter().all(u8::is_ascii_uppercase) {
        return Err(bad());
    }
    let mut v: u32 = 0;
    for c in &b[..3] {
        v = (v << 5) | u32::from(c - 0x40);
    }
    for c in &b[3..] {
        let digit = char::from(*c).to_digit(16).ok_or_else(bad)?;
        v = (v << 4) | digit;
    }
    // Three 5-bit letters and four nibbles fill 31 bits, big-endian; AML stores it byte-swapped.
    Ok(v.swap_bytes())
}

/// Wraps `body` as `op` (optionally an extended op) with a PkgLength and a leading name.
fn named_block(op: &[u8], name: &str, body: &[u8]) -> Result<Vec<u8>, AcpiError> {
    let name = name_string(name)?;
    let payload = name
        .len()
        .checked_add(body.len())
        .ok_or(AcpiError::AmlTooLong { len: usize::MAX })?;
    let mut o = op.to_vec();
    o.extend(pkg_length(payload)?);
    o.extend(name);
    o.extend_from_slice(body);
    Ok(o)
}

/// `Scope (path) { body }`.
pub fn scope(path: &str, body: &[u8]) -> Result<Vec<u8>, AcpiError> {
    named_block(&[SCOPE_OP], path, body)
}

/// `Device (name) { body }`.
pub fn device(name: &str, body: &[u8]) -> Result<Vec<u8>, AcpiError> {
    named_block(&[EXT_OP_PREFIX, DEVICE_OP], name, body)
}

/// `Name (name, object)`.
pub fn name(name: &str, object: &[u8]) -> Result<Vec<u8>, AcpiError> {
    let mut o = vec![NAME_OP];
    o.extend(name_string(name)?);
    o.extend_from_slice(object);
    Ok(o)
}

/// `Buffer () { data }`, with the buffer size as an integer.
pub fn buffer(data: &[u8]) -> Result<Vec<u8>, AcpiError> {
    let size = integer(data.len() as u64);
    let payload = size
        .len()
        .checked_add(data.len())
        .ok_or(AcpiError::AmlTooLong { len: data.len() })?;
    let mut o = vec![BUFFER_OP];
    o.extend(pkg_length(payload)?);
    o.extend(size);
    o.extend_from_slice(data);
    Ok(o)
}

/// `Package () { elements }`, at most 255 elements.
pub fn package(elements: &[Vec<u8>]) -> Result<Vec<u8>, AcpiError> {
    let count = u8::try_from(elements.len()).map_err(|_| AcpiError::AmlTooLong {
        len: elements.len(),
    })?;
    let body: Vec<u8> = elements.concat();
    let payload = body
        .len()
        .checked_add(1)
        .ok_or(AcpiError::AmlTooLong { len: body.len() })?;
    let mut o = vec![PACKAGE_OP];
    o.extend(pkg_length(payload)?);
    o.push(count);
    o.extend(body);
    Ok(o)
}

/// Resource descriptors that go inside a `ResourceTemplate` buffer.
pub mod resource {
    /// `Memory32Fixed (ReadWrite, base, length)`: large descriptor 0x86.
    pub fn memory32_fixed(base: u32, length: u32) -> Vec<u8> {
        let mut o = vec![0x86, 9, 0, 1];
        o.extend_from_slice(&base.to_le_bytes());
        o.extend_from_slice(&length.to_le_bytes());
        o
    }

    /// `Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi }`: large descriptor 0x89.
    pub fn interrupt_edge_high(gsi: u32) -> Vec<u8> {
        // Flags: bit 0 consumer, bit 1 edge-triggered; active-high and exclusive are 0.
        let mut o = vec![0x89, 6, 0, 0b0000_0011, 1];
        o.extend_from_slice(&gsi.to_le_bytes());
        o
    }

    /// `IO (Decode16, port, port, 1, length)`: small descriptor 0x47.
    pub fn io(port: u16, length: u8) -> Vec<u8> {
        let [lo, hi] = port.to_le_bytes();
        vec![0x47, 1, lo, hi, lo, hi, 1, length]
    }

    /// `IRQNoFlags () { irq }` for an ISA IRQ 0-15: small descriptor 0x22 (edge, active-high).
    pub fn irq_no_flags(irq: u8) -> Vec<u8> {
        let mask = 1u16.checked_shl(u32::from(irq)).unwrap_or(0);
        let [lo, hi] = mask.to_le_bytes();
        vec![0x22, lo, hi]
    }

    /// The End Tag closing a resource template (checksum 0 means "not checked").
    pub fn end_tag() -> Vec<u8> {
        vec![0x79, 0]
    }
}

/// `ResourceTemplate () { descriptors }`: a buffer of descriptors plus the End Tag.
pub fn resource_template(descriptors: &[Vec<u8>]) -> Result<Vec<u8>, AcpiError> {
    let mut data = descriptors.concat();
    data.extend(resource::end_tag());
    buffer(&data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_length_forms() {
        assert_eq!(pkg_length(0).unwrap(), vec![1]);
        assert_eq!(pkg_length(62).unwrap(), vec![63]);
        // 63 + 2 = 65 = 0x41: lead 0x41 (1 following byte, nibble 1), then 0x04.
        assert_eq!(pkg_length(63).unwrap(), vec![0x41, 0x04]);
        assert_eq!(pkg_length(0xffd).unwrap(), vec![0x4f, 0xff]);
        // 0xffe + 3 = 0x1001: three bytes.
        assert_eq!(pkg_length(0xffe).unwrap(), vec![0x81, 0x00, 0x01]);
        assert_eq!(pkg_length(0x0fff_fffb).unwrap().len(), 4);
        assert!(pkg_length(0x0fff_fffc).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(name_string("\\_SB").unwrap(), b"\\_SB_".to_vec());
        assert_eq!(name_string("COM1").unwrap(), b"COM1".to_vec());
        assert_eq!(
            name_string("\\_SB.VR00").unwrap(),
            b"\\\x2e_SB_VR00".to_vec()
        );
        assert_eq!(
            name_string("A.B.C").unwrap(),
            b"\x2f\x03A___B___C___".to_vec()
        );
        assert!(name_seg("1ABC").is_err());
        assert!(name_seg("abcd").is_err());
        assert!(name_seg("ABCDE").is_err());
    }

    #[test]
    fn integers_and_strings() {
        assert_eq!(integer(0), vec![0]);
        assert_eq!(integer(1), vec![1]);
        assert_eq!(integer(5), vec![0x0a, 5]);
        assert_eq!(integer(0x3f8), vec![0x0b, 0xf8, 0x03]);
        assert_eq!(integer(0xd000_0000), vec![0x0c, 0, 0, 0, 0xd0]);
        assert_eq!(integer(1 << 32), vec![0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(string("AB").unwrap(), vec![0x0d, b'A', b'B', 0]);
        assert!(string("a\0b").is_err());
    }

    #[test]
    fn eisa_ids() {
        assert_eq!(eisa_id("PNP0501").unwrap(), 0x0105_d041);
        assert_eq!(eisa_id("PNP0A03").unwrap(), 0x030a_d041);
        assert!(eisa_id("pnp0501").is_err());
        assert!(eisa_id("PNP05G1").is_err());
    }

    #[test]
    fn blocks() {
        // Device (COM1) { Name (_UID, One) }
        let d = device("COM1", &name("_UID", &integer(1)).unwrap()).unwrap();
        assert_eq!(
            d,
            vec![0x5b, 0x82, 11, b'C', b'O', b'M', b'1', 0x08, b'_', b'U', b'I', b'D', 1]
        );
        let p = package(&[integer(5), integer(0)]).unwrap();
        assert_eq!(p, vec![0x12, 5, 2, 0x0a, 5, 0]);
        let rt = resource_template(&[resource::irq_no_flags(4)]).unwrap();
        assert_eq!(rt, vec![0x11, 8, 0x0a, 5, 0x22, 0x10, 0, 0x79, 0]);
    }
}
