//! Loading BTF from files: raw BTF, or the `.BTF` section of a vmlinux ELF.

use std::fs::File;
use std::path::Path;

use object::read::ReadCache;
use object::{Object, ObjectSection};

use super::{Btf, BtfError};

/// The first bytes of every ELF file.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

impl Btf {
    /// Parses the `.BTF` section of an ELF image held in memory.
    pub fn from_elf(data: &[u8]) -> Result<Btf, BtfError> {
        Self::from_elf_data(data, Path::new("<memory>"))
    }

    /// Parses a file holding either raw BTF (`/sys/kernel/btf/vmlinux`) or a vmlinux ELF.
    ///
    /// From an ELF only the `.BTF` section is read, not the whole file.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let io = |source| BtfError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let mut magic = [0u8; 4];
        let is_elf = {
            use std::os::unix::fs::FileExt;
            file.read_exact_at(&mut magic, 0).is_ok() && &magic == ELF_MAGIC
        };
        if !is_elf {
            return Btf::parse(&std::fs::read(path).map_err(io)?);
        }
        let cache = ReadCache::new(file);
        Self::from_elf_data(&cache, path)
    }

    fn from_elf_data<'a, R: object::ReadRef<'a>>(data: R, path: &Path) -> Result<Btf, BtfError> {
        let elf = |source| BtfError::Elf {
            path: path.to_path_buf(),
            source,
        };
        let obj = object::File::parse(data).map_err(elf)?;
        let section = obj
            .section_by_name(".BTF")
            .ok_or_else(|| BtfError::NoBtfSection {
                path: path.to_path_buf(),
            })?;
        Btf::parse(section.data().map_err(elf)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_elf_non_btf_bytes_are_rejected() {
        assert!(matches!(
            Btf::from_elf(b"not an elf at all"),
            Err(BtfError::Elf { .. })
        ));
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Btf::from_file(Path::new("/nonexistent/vmlinux")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }

    #[test]
    fn elf_without_btf_section_is_reported() {
        // The test binary itself is an ELF with no .BTF section.
        let Ok(exe) = std::env::current_exe() else {
            println!("skipping: no current_exe");
            return;
        };
        let err = Btf::from_file(&exe).expect_err("no .BTF in the test binary");
        assert!(matches!(err, BtfError::NoBtfSection { .. }), "{err}");
    }
}
