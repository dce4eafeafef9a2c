//! Kernel images: telling a bzImage from an ELF vmlinux, unpacking a vmlinux, finding BTF.

use std::path::Path;

use crate::KtstrError;

/// What a kernel image file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// An x86 boot image (`HdrS` at 0x202).
    BzImage,
    /// An uncompressed ELF vmlinux (boots through its PVH note).
    Elf,
}

/// The kind of the image at `path`, or `None` if it is neither.
pub fn image_kind(path: &Path) -> Result<Option<ImageKind>, KtstrError> {
    use std::io::Read;
    let mut head = [0u8; 0x210];
    let mut f = std::fs::File::open(path).map_err(|e| KtstrError::io(path, e))?;
    let n = f.read(&mut head).map_err(|e| KtstrError::io(path, e))?;
    Ok(if n >= 4 && head.starts_with(b"\x7fELF") {
        Some(ImageKind::Elf)
    } else if n >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        Some(ImageKind::BzImage)
    } else {
        None
    })
}

/// Unpacks the ELF vmlinux from a zstd-compressed bzImage; `Ok(None)` for other compressions.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Option<Vec<u8>>, KtstrError> {
    let bad = |reason: &str| KtstrError::BadElf {
        path: "bzImage".into(),
        reason: reason.to_string(),
    };
    let u32_at = |off: usize| -> Option<u32> {
        bzimage
            .get(off..off + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        return Err(bad("no HdrS boot header"));
    }
    let setup_sects = match bzimage.get(0x1f1).copied().unwrap_or(0) {
        0 => 4,
        n => usize::from(n),
    };
    let (Some(off), Some(len)) = (u32_at(0x248), u32_at(0x24c)) else {
        return Err(bad("header too short for payload_offset/payload_length"));
    };
    let start = (setup_sects + 1) * 512 + off as usize;
    let end = start
        .checked_add((len as usize).saturating_sub(4))
        .ok_or_else(|| bad("payload bounds overflow"))?;
    let payload = bzimage
        .get(start..end)
        .ok_or_else(|| bad("payload lies outside the file"))?;
    if !payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut decoder =
        ruzstd::decoding::StreamingDecoder::new(payload).map_err(|e| bad(&format!("zstd: {e}")))?;
    std::io::Read::read_to_end(&mut decoder, &mut out).map_err(|e| bad(&format!("zstd: {e}")))?;
    if !out.starts_with(b"\x7fELF") {
        return Err(bad("decompressed payload is not an ELF"));
    }
    Ok(Some(out))
}

/// True if the ELF at `path` has a `.BTF` section.
pub fn has_btf(path: &Path) -> bool {
    use object::{Object, ObjectSection};
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    object::File::parse(&*data)
        .map(|f| f.sections().any(|s| s.name() == Ok(".BTF")))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_bzimage() {
        assert!(extract_vmlinux(b"not a kernel").is_err());
    }

    #[test]
    fn out_of_bounds_payload_is_an_error_not_a_panic() {
        let mut img = vec![0u8; 0x300];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x248..0x24c].copy_from_slice(&0xffff_0000u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&100u32.to_le_bytes());
        assert!(extract_vmlinux(&img).is_err());
    }

    #[test]
    fn non_zstd_payload_is_none() {
        let mut img = vec![0u8; 0x1000];
        img[0x1f1] = 1;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&64u32.to_le_bytes());
        img[1024..1028].copy_from_slice(&[0x1f, 0x8b, 8, 0]);
        assert_eq!(extract_vmlinux(&img).unwrap(), None);
    }

    #[test]
    fn kinds() {
        let d = std::env::temp_dir().join(format!("ktstr-kind-{}", std::process::id()));
        std::fs::write(&d, b"hello").unwrap();
        assert_eq!(image_kind(&d).unwrap(), None);
        assert_eq!(
            image_kind(&std::env::current_exe().unwrap()).unwrap(),
            Some(ImageKind::Elf)
        );
        let _ = std::fs::remove_file(&d);
    }
}
