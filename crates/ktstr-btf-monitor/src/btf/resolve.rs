//! Member paths (`scx.nr_running`, `cpu_capacity[2]`) resolved to offsets and sizes.
//!
//! A path is `.`-separated member names, each optionally followed by `[N]` indices.
//! Typedefs, `const`/`volatile`/`restrict` and type tags are looked through; members of
//! anonymous structs and unions are found as if they were members of the enclosing type,
//! as in C. Pointers are not followed: that needs a memory read.

use super::{Btf, BtfError, Kind, Member, TypeBody, TypeId, MAX_CHAIN};

/// Where a member lives inside its outermost struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset of the first byte holding the member (`bit_offset / 8`).
    pub offset_bytes: u32,
    /// Offset from the start of the struct, in bits.
    pub bit_offset: u32,
    /// Number of bits the value occupies: the bitfield width, or `size * 8`.
    pub bit_size: u32,
    /// Size in bytes of the member's type (of the storage unit for a bitfield).
    pub size: u32,
    /// The member's declared type.
    pub type_id: TypeId,
}

impl Field {
    /// True when the member is a bitfield (it does not fill whole bytes of its type).
    pub fn is_bitfield(&self) -> bool {
        self.bit_size != self.size.saturating_mul(8) || self.bit_offset % 8 != 0
    }

    /// The member's value, zero-extended, from a little-endian image of the struct;
    /// `None` when the image is too short or the value is wider than 64 bits.
    pub fn value_in(&self, image: &[u8]) -> Option<u64> {
        if self.bit_size == 0 || self.bit_size > 64 {
            return None;
        }
        let first = (self.bit_offset / 8) as usize;
        let shift = self.bit_offset % 8;
        let nbytes = ((shift + self.bit_size).div_ceil(8)) as usize;
        let bytes = image.get(first..first.checked_add(nbytes)?)?;
        let mut raw: u128 = 0;
        for (i, b) in bytes.iter().enumerate() {
            raw |= u128::from(*b) << (8 * i);
        }
        let mask = if self.bit_size == 64 {
            u64::MAX
        } else {
            (1u64 << self.bit_size) - 1
        };
        Some((raw >> shift) as u64 & mask)
    }
}

/// One parsed step of a path: a member name and the indices that follow it.
struct Step<'a> {
    name: &'a str,
    indices: Vec<u64>,
}

fn parse_path(path: &str) -> Result<Vec<Step<'_>>, BtfError> {
    let bad = |reason| BtfError::BadPath {
        path: path.to_string(),
        reason,
    };
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if name.is_empty() {
            return Err(bad("empty member name"));
        }
        let mut indices = Vec::new();
        while !rest.is_empty() {
            let close = rest.find(']').ok_or_else(|| bad("`[` without `]`"))?;
            let inner = rest.get(1..close).ok_or_else(|| bad("bad index"))?;
            let idx = inner
                .parse::<u64>()
                .map_err(|_| bad("index is not a number"))?;
            indices.push(idx);
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(bad("text after `]`"));
            }
        }
        steps.push(Step { name, indices });
    }
    Ok(steps)
}

impl Btf {
    /// The struct (or, failing that, union) named `name`; typedef names are accepted too.
    pub fn find_struct(&self, name: &str) -> Result<TypeId, BtfError> {
        let found = self
            .find(name, Kind::Struct)
            .or_else(|| self.find(name, Kind::Union))
            .or_else(|| {
                let td = self.find(name, Kind::Typedef)?;
                let id = self.skip_modifiers(td).ok()?;
                matches!(self.get(id)?.kind(), Kind::Struct | Kind::Union).then_some(id)
            });
        found.ok_or_else(|| BtfError::TypeNotFound {
            name: name.to_string(),
        })
    }

    /// `struct name`, `union name`, or `(anonymous struct)` for messages.
    fn describe(&self, id: TypeId) -> String {
        let Some(t) = self.get(id) else {
            return format!("type {}", id.0);
        };
        let kw = match t.kind() {
            Kind::Struct => "struct",
            Kind::Union => "union",
            other => return format!("{other:?} {}", self.str_at(t.name_off)),
        };
        match self.str_at(t.name_off) {
            "" => format!("(anonymous {kw})"),
            n => format!("{kw} {n}"),
        }
    }

    /// Finds `name` among the members of `id`, descending into anonymous members;
    /// returns the member and its bit offset from the start of `id`.
    fn find_member(&self, id: TypeId, name: &str, depth: usize) -> Option<(u64, &Member)> {
        if depth > MAX_CHAIN {
            return None;
        }
        let members = self.get(id)?.members();
        if let Some(m) = members.iter().find(|m| self.str_at(m.name_off) == name) {
            return Some((u64::from(m.bit_offset), m));
        }
        members.iter().filter(|m| m.name_off == 0).find_map(|m| {
            let inner = self.skip_modifiers(m.ty).ok()?;
            let (off, found) = self.find_member(inner, name, depth + 1)?;
            Some((u64::from(m.bit_offset) + off, found))
        })
    }
}

/// Resolves `path` inside the struct named `type_name`, e.g. `resolve(btf, "rq", "scx.nr_running")`.
///
/// Indexing a flexible array (`len` 0) is allowed at any index.
pub fn resolve(btf: &Btf, type_name: &str, path: &str) -> Result<Field, BtfError> {
    let steps = parse_path(path)?;
    let overflow = || BtfError::Overflow {
        path: path.to_string(),
    };
    let mut cur = btf.find_struct(type_name)?;
    let mut bit: u64 = 0;
    let mut bitfield: u8 = 0;
    for step in &steps {
        let comp = btf.skip_modifiers(cur)?;
        let kind = btf.get(comp).map_or(Kind::Void, |t| t.kind());
        if !matches!(kind, Kind::Struct | Kind::Union) {
            return Err(BtfError::NotComposite {
                member: step.name.to_string(),
                in_type: btf.describe(comp),
                kind,
                path: path.to_string(),
            });
        }
        let (rel, m) =
            btf.find_member(comp, step.name, 0)
                .ok_or_else(|| BtfError::MemberNotFound {
                    member: step.name.to_string(),
                    in_type: btf.describe(comp),
                    path: path.to_string(),
                })?;
        bit = bit.checked_add(rel).ok_or_else(overflow)?;
        cur = m.ty;
        bitfield = m.bitfield_size;
        for &index in &step.indices {
            let arr = btf.skip_modifiers(cur)?;
            match btf.get(arr).map(|t| &t.body) {
                Some(TypeBody::Array { elem, len, .. }) => {
                    if *len != 0 && index >= u64::from(*len) {
                        return Err(BtfError::IndexOutOfBounds {
                            member: step.name.to_string(),
                            index,
                            len: *len,
                            path: path.to_string(),
                        });
                    }
                    let stride = btf.size_of(*elem)?.checked_mul(8).ok_or_else(overflow)?;
                    let add = index.checked_mul(stride).ok_or_else(overflow)?;
                    bit = bit.checked_add(add).ok_or_else(overflow)?;
                    cur = *elem;
                    bitfield = 0;
                }
                _ => {
                    return Err(BtfError::NotArray {
                        member: step.name.to_string(),
                        kind: btf.get(arr).map_or(Kind::Void, |t| t.kind()),
                        path: path.to_string(),
                    })
                }
            }
        }
    }
    let size = u32::try_from(btf.size_of(cur)?).map_err(|_| overflow())?;
    let mut bit_size = u32::from(bitfield);
    if bit_size == 0 {
        // A bitfield in the legacy encoding: an INT narrower than its storage.
        match btf.get(btf.skip_modifiers(cur)?).map(|t| &t.body) {
            Some(&TypeBody::Int {
                size, offset, bits, ..
            }) if u32::from(bits) != size * 8 || offset != 0 => {
                bit += u64::from(offset);
                bit_size = u32::from(bits);
            }
            _ => bit_size = size.checked_mul(8).ok_or_else(overflow)?,
        }
    }
    let bit_offset = u32::try_from(bit).map_err(|_| overflow())?;
    Ok(Field {
        offset_bytes: bit_offset / 8,
        bit_offset,
        bit_size,
        size,
        type_id: cur,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::BtfBuilder;
    use super::*;

    fn fixture() -> Btf {
        Btf::parse(&BtfBuilder::every_kind().0).expect("fixture parses")
    }

    #[test]
    fn plain_members() {
        let btf = fixture();
        let pid = resolve(&btf, "task", "pid").expect("pid");
        assert_eq!((pid.offset_bytes, pid.size, pid.bit_size), (0, 4, 32));
        assert_eq!(btf.name(pid.type_id), "int");
        let comm = resolve(&btf, "task", "comm").expect("comm");
        assert_eq!((comm.offset_bytes, comm.size), (4, 16));
        assert!(!comm.is_bitfield());
    }

    #[test]
    fn array_index_and_nested_member() {
        let btf = fixture();
        let c = resolve(&btf, "task", "comm[5]").expect("comm[5]");
        assert_eq!((c.offset_bytes, c.size), (9, 1));
        let a = resolve(&btf, "task", "arr[2].a").expect("arr[2].a");
        assert_eq!((a.offset_bytes, a.size), (48 + 16, 4));
        let err = resolve(&btf, "task", "arr[3]").expect_err("past the end");
        assert!(matches!(
            err,
            BtfError::IndexOutOfBounds {
                index: 3,
                len: 3,
                ..
            }
        ));
        let err = resolve(&btf, "task", "pid[0]").expect_err("not an array");
        assert!(matches!(
            err,
            BtfError::NotArray {
                kind: Kind::Int,
                ..
            }
        ));
    }

    #[test]
    fn anonymous_union_members_are_found() {
        let btf = fixture();
        let x = resolve(&btf, "task", "x").expect("x");
        assert_eq!((x.offset_bytes, x.size), (24, 8));
        let mode = resolve(&btf, "task", "in.mode").expect("in.mode");
        assert_eq!(
            (mode.bit_offset, mode.bit_size, mode.size),
            (24 * 8 + 33, 3, 4)
        );
    }

    #[test]
    fn bitfields_and_value_extraction() {
        let btf = fixture();
        let flag = resolve(&btf, "inner", "flag").expect("flag");
        assert_eq!(
            (flag.offset_bytes, flag.bit_offset, flag.bit_size),
            (4, 32, 1)
        );
        assert!(flag.is_bitfield());
        let mode = resolve(&btf, "inner", "mode").expect("mode");
        // a = 7, flag = 1, mode = 0b101 -> byte 4 = 1 | 0b101 << 1.
        let image = [7, 0, 0, 0, 0b1011, 0, 0, 0];
        assert_eq!(flag.value_in(&image), Some(1));
        assert_eq!(mode.value_in(&image), Some(5));
        let a = resolve(&btf, "inner", "a").expect("a");
        assert_eq!(a.value_in(&image), Some(7));
        assert_eq!(a.value_in(&image[..3]), None);
        let legacy = resolve(&btf, "task", "legacy").expect("legacy INT bitfield");
        assert_eq!(
            (legacy.bit_offset, legacy.bit_size, legacy.size),
            (580, 3, 4)
        );
    }

    #[test]
    fn typedef_and_modifier_chain_is_followed() {
        let btf = fixture();
        let f = resolve(&btf, "task", "nested.mode").expect("nested.mode");
        assert_eq!((f.bit_offset, f.bit_size), (320 + 33, 3));
        let nested = resolve(&btf, "task", "nested").expect("nested");
        assert_eq!(nested.size, 8);
        assert_eq!(btf.get(nested.type_id).map(|t| t.kind()), Some(Kind::Const));
        let via_typedef = resolve(&btf, "inner_t", "mode").expect("typedef root");
        assert_eq!(via_typedef.bit_offset, 33);
    }

    #[test]
    fn errors_name_the_member_and_the_struct() {
        let btf = fixture();
        let err = resolve(&btf, "task", "in.nope").expect_err("missing");
        let msg = err.to_string();
        assert!(
            msg.contains("`nope`") && msg.contains("struct inner"),
            "{msg}"
        );
        let err = resolve(&btf, "task", "next.a").expect_err("through a pointer");
        assert!(matches!(
            err,
            BtfError::NotComposite {
                kind: Kind::Ptr,
                ..
            }
        ));
        let err = resolve(&btf, "nosuch", "a").expect_err("no struct");
        assert!(matches!(err, BtfError::TypeNotFound { .. }));
        for bad in ["", "a..b", "comm[", "comm[x]", "comm[1]x"] {
            let err = resolve(&btf, "task", bad).expect_err(bad);
            assert!(matches!(err, BtfError::BadPath { .. }), "{bad}: {err}");
        }
    }
}
