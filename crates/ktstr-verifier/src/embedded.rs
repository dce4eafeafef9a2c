//! Find BPF ELF objects: a `.bpf.o` file itself, or the ones a scheduler binary embeds.
//!
//! libbpf skeletons (C from `bpftool gen skeleton`, Rust from libbpf-cargo) embed the whole
//! BPF object as one byte array. An embedded object is found by its ELF magic followed by a
//! 64-bit ELF header whose `e_machine` is `EM_BPF`; its extent is the end of its section
//! header table or of its last section, whichever is later, and it counts only if the
//! `object` crate parses that extent as a whole ELF file.

use object::elf::{FileHeader64, EM_BPF, SHT_NOBITS};
use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
use object::Endianness;

/// Where a BPF object was found in the bytes searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfObject<'a> {
    /// Byte offset of the object in the searched bytes (0 for a plain `.bpf.o`).
    pub offset: usize,
    /// The object's bytes.
    pub data: &'a [u8],
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Every BPF ELF object in `bytes`, in order: `bytes` itself if it is one, else the
/// objects embedded in it (none overlapping).
pub fn find_bpf_objects(bytes: &[u8]) -> Vec<BpfObject<'_>> {
    let mut found = Vec::new();
    let mut pos = 0;
    while let Some(rel) = find_magic(&bytes[pos..]) {
        let offset = pos + rel;
        match bpf_object_at(&bytes[offset..]) {
            Some(len) => {
                found.push(BpfObject {
                    offset,
                    data: &bytes[offset..offset + len],
                });
                pos = offset + len;
            }
            None => pos = offset + 1,
        }
    }
    found
}

/// Position of the next ELF magic in `bytes`.
fn find_magic(bytes: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(i) = bytes[start..].iter().position(|&b| b == ELF_MAGIC[0]) {
        let at = start + i;
        if bytes[at..].starts_with(ELF_MAGIC) {
            return Some(at);
        }
        start = at + 1;
    }
    None
}

/// Length of the BPF ELF object that starts `data`, if one does.
fn bpf_object_at(data: &[u8]) -> Option<usize> {
    let header = FileHeader64::<Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    if header.e_machine(endian) != EM_BPF {
        return None;
    }
    let sections = header.section_headers(endian, data).ok()?;
    let table_end = header
        .e_shoff(endian)
        .checked_add(u64::try_from(std::mem::size_of_val(sections)).ok()?)?;
    let mut end = table_end.max(u64::from(header.e_ehsize(endian)));
    for s in sections {
        if s.sh_type(endian) == SHT_NOBITS {
            continue;
        }
        end = end.max(s.sh_offset(endian).checked_add(s.sh_size(endian))?);
    }
    let len = usize::try_from(end).ok().filter(|&l| l <= data.len())?;
    ElfFile64::<Endianness>::parse(&data[..len]).ok()?;
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid little-endian ELF64 with `machine`: header, a null section, and
    /// `.shstrtab`, with the section header table at the end.
    fn tiny_elf(machine: u16) -> Vec<u8> {
        let strtab = b"\0.shstrtab\0";
        let shoff = 64 + strtab.len() as u64;
        let shoff = shoff.next_multiple_of(8);
        let mut v = vec![0u8; 64];
        v[..4].copy_from_slice(ELF_MAGIC);
        v[4] = 2; // ELFCLASS64
        v[5] = 1; // little-endian
        v[6] = 1; // EV_CURRENT
        v[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        v[18..20].copy_from_slice(&machine.to_le_bytes());
        v[20..24].copy_from_slice(&1u32.to_le_bytes());
        v[40..48].copy_from_slice(&shoff.to_le_bytes());
        v[52..54].copy_from_slice(&64u16.to_le_bytes());
        v[58..60].copy_from_slice(&64u16.to_le_bytes());
        v[60..62].copy_from_slice(&2u16.to_le_bytes());
        v[62..64].copy_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(strtab);
        v.resize(shoff as usize, 0);
        v.extend_from_slice(&[0u8; 64]);
        let mut sh = [0u8; 64];
        sh[0..4].copy_from_slice(&1u32.to_le_bytes()); // name: ".shstrtab"
        sh[4..8].copy_from_slice(&3u32.to_le_bytes()); // SHT_STRTAB
        sh[24..32].copy_from_slice(&64u64.to_le_bytes());
        sh[32..40].copy_from_slice(&(strtab.len() as u64).to_le_bytes());
        sh[48..56].copy_from_slice(&1u64.to_le_bytes());
        v.extend_from_slice(&sh);
        v
    }

    #[test]
    fn plain_object_is_found_whole() {
        let elf = tiny_elf(EM_BPF);
        let found = find_bpf_objects(&elf);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].offset, 0);
        assert_eq!(found[0].data.len(), elf.len());
    }

    #[test]
    fn embedded_objects_are_found_at_odd_offsets() {
        let bpf = tiny_elf(EM_BPF);
        let mut host = tiny_elf(62); // EM_X86_64: not a BPF object
        host.extend_from_slice(b"junk\x7fEL\x7f");
        let first = host.len();
        host.extend_from_slice(&bpf);
        host.extend_from_slice(b"\x7fELF but truncated");
        let second = host.len() + 3;
        host.extend_from_slice(b"abc");
        host.extend_from_slice(&bpf);
        host.extend_from_slice(b"tail");
        let found = find_bpf_objects(&host);
        let offsets: Vec<usize> = found.iter().map(|o| o.offset).collect();
        assert_eq!(offsets, vec![first, second]);
        assert!(found.iter().all(|o| o.data == bpf.as_slice()));
    }

    #[test]
    fn truncated_object_is_ignored() {
        let bpf = tiny_elf(EM_BPF);
        assert!(find_bpf_objects(&bpf[..bpf.len() - 1]).is_empty());
        assert!(find_bpf_objects(&[]).is_empty());
        assert!(find_bpf_objects(ELF_MAGIC).is_empty());
    }
}
