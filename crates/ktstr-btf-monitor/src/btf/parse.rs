//! The raw BTF format (`include/uapi/linux/btf.h`): header, type section, string section.
//!
//! Both byte orders are accepted (the magic tells which). Every read goes through
//! [`Reader`], which checks bounds with checked arithmetic.

use super::{Btf, BtfError, Enumerator, Member, Param, Type, TypeBody, TypeId, VarSecInfo};

/// The BTF magic number.
const BTF_MAGIC: u16 = 0xeb9f;
/// Size of the fixed part of `struct btf_header`.
const HEADER_LEN: u32 = 24;

/// A bounds-checked cursor over a byte slice in one byte order.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    big_endian: bool,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], BtfError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.data.get(self.pos..end)) {
            Some(b) => {
                self.pos += n;
                Ok(b)
            }
            None => Err(BtfError::Truncated {
                what,
                start: self.pos as u64,
                end: self.pos as u64 + n as u64,
                len: self.data.len(),
            }),
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, BtfError> {
        let b = self.bytes(4, what)?;
        let a = [b[0], b[1], b[2], b[3]];
        Ok(if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    }
}

/// Returns `data[start..start + len]` or a `Truncated` error naming `what`.
fn section<'a>(
    data: &'a [u8],
    start: u64,
    len: u32,
    what: &'static str,
) -> Result<&'a [u8], BtfError> {
    let end = start.saturating_add(u64::from(len));
    usize::try_from(start)
        .ok()
        .zip(usize::try_from(end).ok())
        .and_then(|(s, e)| data.get(s..e))
        .ok_or(BtfError::Truncated {
            what,
            start,
            end,
            len: data.len(),
        })
}

impl Btf {
    /// Parses raw BTF, such as the contents of `/sys/kernel/btf/vmlinux`.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let magic = match data.get(..2) {
            Some(&[a, b]) => u16::from_le_bytes([a, b]),
            _ => {
                return Err(BtfError::Truncated {
                    what: "magic",
                    start: 0,
                    end: 2,
                    len: data.len(),
                })
            }
        };
        let big_endian = if magic == BTF_MAGIC {
            false
        } else if magic.swap_bytes() == BTF_MAGIC {
            true
        } else {
            return Err(BtfError::BadMagic { magic });
        };
        let mut r = Reader {
            data,
            pos: 2,
            big_endian,
        };
        let vf = r.bytes(2, "header")?;
        if vf[0] != 1 {
            return Err(BtfError::BadVersion { version: vf[0] });
        }
        let hdr_len = r.u32("header")?;
        if hdr_len < HEADER_LEN {
            return Err(BtfError::BadHeader { hdr_len });
        }
        let type_off = r.u32("header")?;
        let type_len = r.u32("header")?;
        let str_off = r.u32("header")?;
        let str_len = r.u32("header")?;
        let base = u64::from(hdr_len);
        let type_data = section(data, base + u64::from(type_off), type_len, "type section")?;
        let str_data = section(data, base + u64::from(str_off), str_len, "string section")?;
        let strings = std::str::from_utf8(str_data)
            .map_err(|_| BtfError::StringsNotUtf8)?
            .to_owned();

        let mut types = vec![Type {
            name_off: 0,
            body: TypeBody::Void,
        }];
        let mut r = Reader {
            data: type_data,
            pos: 0,
            big_endian,
        };
        while r.pos < type_data.len() {
            let id = u32::try_from(types.len()).unwrap_or(u32::MAX);
            types.push(parse_type(&mut r, id)?);
        }
        let btf = Btf {
            by_name: Vec::new(),
            types,
            strings,
        };
        btf.validate()?;
        Ok(btf.with_index())
    }

    /// Checks every name offset and type reference, so later lookups stay in range.
    fn validate(&self) -> Result<(), BtfError> {
        let count = self.types.len();
        for (id, t) in (0u32..).zip(&self.types) {
            let name = |offset: u32| -> Result<(), BtfError> {
                let ok = (offset as usize) < self.strings.len()
                    && self.strings.is_char_boundary(offset as usize);
                if ok || offset == 0 {
                    Ok(())
                } else {
                    Err(BtfError::BadStringOffset {
                        type_id: id,
                        offset,
                        len: self.strings.len(),
                    })
                }
            };
            let ty = |target: TypeId| -> Result<(), BtfError> {
                if (target.0 as usize) < count {
                    Ok(())
                } else {
                    Err(BtfError::BadTypeRef {
                        type_id: id,
                        target: target.0,
                        count,
                    })
                }
            };
            name(t.name_off)?;
            match &t.body {
                TypeBody::Void
                | TypeBody::Int { .. }
                | TypeBody::Fwd { .. }
                | TypeBody::Float { .. } => {}
                TypeBody::Ptr { target }
                | TypeBody::Typedef { target }
                | TypeBody::Volatile { target }
                | TypeBody::Const { target }
                | TypeBody::Restrict { target }
                | TypeBody::TypeTag { target }
                | TypeBody::DeclTag { target, .. } => ty(*target)?,
                TypeBody::Array { elem, index, .. } => {
                    ty(*elem)?;
                    ty(*index)?;
                }
                TypeBody::Struct { members, .. } | TypeBody::Union { members, .. } => {
                    for m in members {
                        name(m.name_off)?;
                        ty(m.ty)?;
                    }
                }
                TypeBody::Enum { values, .. } => {
                    for v in values {
                        name(v.name_off)?;
                    }
                }
                TypeBody::Func { proto, .. } => ty(*proto)?,
                TypeBody::FuncProto { ret, params } => {
                    ty(*ret)?;
                    for p in params {
                        name(p.name_off)?;
                        ty(p.ty)?;
                    }
                }
                TypeBody::Var { ty: v, .. } => ty(*v)?,
                TypeBody::Datasec { vars, .. } => {
                    for v in vars {
                        ty(v.ty)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Builds the sorted name index.
    fn with_index(mut self) -> Btf {
        let mut named: Vec<(&str, u32, TypeId)> = (0u32..)
            .zip(&self.types)
            .filter(|(_, t)| t.name_off != 0)
            .map(|(i, t)| (self.str_at(t.name_off), t.name_off, TypeId(i)))
            .collect();
        named.sort_unstable_by(|a, b| a.0.cmp(b.0).then(a.2.cmp(&b.2)));
        let by_name = named.into_iter().map(|(_, off, id)| (off, id)).collect();
        self.by_name = by_name;
        self
    }
}

/// Parses one `struct btf_type` and its trailing data; `id` is for error messages.
fn parse_type(r: &mut Reader<'_>, id: u32) -> Result<Type, BtfError> {
    let name_off = r.u32("btf_type")?;
    let info = r.u32("btf_type")?;
    let size_or_type = r.u32("btf_type")?;
    let vlen = (info & 0xffff) as usize;
    let kind = (info >> 24) & 0x1f;
    let kflag = info >> 31 == 1;
    let target = TypeId(size_or_type);
    // Each trailing record is at least 4 bytes: refuse counts the data cannot hold
    // before allocating for them.
    let remaining = r.data.len().saturating_sub(r.pos);
    let cap = |per: usize| vlen.min(remaining / per);
    let body = match kind {
        1 => {
            let v = r.u32("btf_int")?;
            TypeBody::Int {
                size: size_or_type,
                encoding: ((v >> 24) & 0x0f) as u8,
                offset: ((v >> 16) & 0xff) as u8,
                bits: (v & 0xff) as u8,
            }
        }
        2 => TypeBody::Ptr { target },
        3 => TypeBody::Array {
            elem: TypeId(r.u32("btf_array")?),
            index: TypeId(r.u32("btf_array")?),
            len: r.u32("btf_array")?,
        },
        4 | 5 => {
            let mut members = Vec::with_capacity(cap(12));
            for _ in 0..vlen {
                let name_off = r.u32("btf_member")?;
                let ty = TypeId(r.u32("btf_member")?);
                let offset = r.u32("btf_member")?;
                let (bit_offset, bitfield_size) = if kflag {
                    (offset & 0x00ff_ffff, (offset >> 24) as u8)
                } else {
                    (offset, 0)
                };
                members.push(Member {
                    name_off,
                    ty,
                    bit_offset,
                    bitfield_size,
                });
            }
            if kind == 4 {
                TypeBody::Struct {
                    size: size_or_type,
                    members,
                }
            } else {
                TypeBody::Union {
                    size: size_or_type,
                    members,
                }
            }
        }
        6 | 19 => {
            let per = if kind == 6 { 8 } else { 12 };
            let mut values = Vec::with_capacity(cap(per));
            for _ in 0..vlen {
                let name_off = r.u32("btf_enum")?;
                let lo = r.u32("btf_enum")?;
                let value = if kind == 19 {
                    let hi = r.u32("btf_enum64")?;
                    ((u64::from(hi) << 32) | u64::from(lo)) as i64
                } else if kflag {
                    i64::from(lo as i32)
                } else {
                    i64::from(lo)
                };
                values.push(Enumerator { name_off, value });
            }
            TypeBody::Enum {
                size: size_or_type,
                signed: kflag,
                is_64: kind == 19,
                values,
            }
        }
        7 => TypeBody::Fwd { is_union: kflag },
        8 => TypeBody::Typedef { target },
        9 => TypeBody::Volatile { target },
        10 => TypeBody::Const { target },
        11 => TypeBody::Restrict { target },
        12 => TypeBody::Func {
            proto: target,
            linkage: vlen as u16,
        },
        13 => {
            let mut params = Vec::with_capacity(cap(8));
            for _ in 0..vlen {
                params.push(Param {
                    name_off: r.u32("btf_param")?,
                    ty: TypeId(r.u32("btf_param")?),
                });
            }
            TypeBody::FuncProto {
                ret: target,
                params,
            }
        }
        14 => TypeBody::Var {
            ty: target,
            linkage: r.u32("btf_var")?,
        },
        15 => {
            let mut vars = Vec::with_capacity(cap(12));
            for _ in 0..vlen {
                vars.push(VarSecInfo {
                    ty: TypeId(r.u32("btf_var_secinfo")?),
                    offset: r.u32("btf_var_secinfo")?,
                    size: r.u32("btf_var_secinfo")?,
                });
            }
            TypeBody::Datasec {
                size: size_or_type,
                vars,
            }
        }
        16 => TypeBody::Float { size: size_or_type },
        17 => TypeBody::DeclTag {
            target,
            component_idx: r.u32("btf_decl_tag")? as i32,
        },
        18 => TypeBody::TypeTag { target },
        _ => return Err(BtfError::UnknownKind { type_id: id, kind }),
    };
    Ok(Type { name_off, body })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{BtfBuilder, Xorshift};
    use super::super::{Btf, BtfError, Kind, TypeBody, TypeId};

    #[test]
    fn every_kind_round_trips_through_the_builder() {
        let (bytes, ids) = BtfBuilder::every_kind();
        let btf = Btf::parse(&bytes).expect("parse");
        assert_eq!(btf.len(), ids.len() + 1);
        for (kind, id) in &ids {
            let t = btf.get(*id).expect("type");
            assert_eq!(t.kind(), *kind, "type {id:?}");
        }
        let e64 = btf.find("big", Kind::Enum64).expect("enum64");
        match &btf.get(e64).expect("t").body {
            TypeBody::Enum { values, is_64, .. } => {
                assert!(is_64);
                assert_eq!(values[0].value as u64, 0x1_0000_0002);
                assert_eq!(btf.str_at(values[0].name_off), "BIG_A");
            }
            other => panic!("not an enum: {other:?}"),
        }
        let e = btf.find("neg", Kind::Enum).expect("signed enum");
        match &btf.get(e).expect("t").body {
            TypeBody::Enum { values, signed, .. } => {
                assert!(signed);
                assert_eq!(values[0].value, -3);
            }
            other => panic!("not an enum: {other:?}"),
        }
        assert_eq!(btf.find("neg", Kind::Struct), None);
    }

    #[test]
    fn big_endian_input_parses_the_same() {
        let (le, _) = BtfBuilder::every_kind();
        let (be, _) = BtfBuilder::every_kind_with(true);
        let a = Btf::parse(&le).expect("le");
        let b = Btf::parse(&be).expect("be");
        let ta: Vec<_> = a.types().map(|(_, t)| t.clone()).collect();
        let tb: Vec<_> = b.types().map(|(_, t)| t.clone()).collect();
        assert_eq!(ta, tb);
    }

    #[test]
    fn bad_headers_are_errors() {
        assert!(matches!(Btf::parse(&[]), Err(BtfError::Truncated { .. })));
        assert!(matches!(
            Btf::parse(&[0, 0, 1, 0]),
            Err(BtfError::BadMagic { magic: 0 })
        ));
        let (mut bytes, _) = BtfBuilder::every_kind();
        bytes[2] = 2;
        assert!(matches!(
            Btf::parse(&bytes),
            Err(BtfError::BadVersion { version: 2 })
        ));
        let (bytes, _) = BtfBuilder::every_kind();
        let cut = &bytes[..bytes.len() - 3];
        assert!(matches!(
            Btf::parse(cut),
            Err(BtfError::Truncated {
                what: "string section",
                ..
            })
        ));
    }

    #[test]
    fn dangling_type_reference_is_an_error() {
        let mut b = BtfBuilder::new(false);
        b.ptr(TypeId(7));
        assert!(matches!(
            Btf::parse(&b.finish()),
            Err(BtfError::BadTypeRef {
                type_id: 1,
                target: 7,
                ..
            })
        ));
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let mut b = BtfBuilder::new(false);
        b.raw_type(0, 25 << 24, 0);
        assert!(matches!(
            Btf::parse(&b.finish()),
            Err(BtfError::UnknownKind {
                type_id: 1,
                kind: 25
            })
        ));
    }

    #[test]
    fn bad_string_offset_is_an_error() {
        let mut b = BtfBuilder::new(false);
        b.raw_type(9999, 1 << 24, 4);
        b.raw_u32(32);
        assert!(matches!(
            Btf::parse(&b.finish()),
            Err(BtfError::BadStringOffset { offset: 9999, .. })
        ));
    }

    /// Random byte flips and truncations of valid BTF must give Ok or Err, never a panic.
    #[test]
    fn mutated_input_never_panics() {
        let (bytes, _) = BtfBuilder::every_kind();
        let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
        let mut errors = 0;
        for _ in 0..20_000 {
            let mut m = bytes.clone();
            for _ in 0..=(rng.next() % 4) {
                let i = (rng.next() as usize) % m.len();
                m[i] = rng.next() as u8;
            }
            if rng.next() % 3 == 0 {
                m.truncate((rng.next() as usize) % m.len());
            }
            if Btf::parse(&m).is_err() {
                errors += 1;
            }
        }
        assert!(errors > 0, "no mutation was ever rejected");
    }
}
