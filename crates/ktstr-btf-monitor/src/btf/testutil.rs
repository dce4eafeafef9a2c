//! Test fixtures: a writer for raw BTF in either byte order, and a tiny PRNG.
//!
//! [`BtfBuilder::every_kind`] is the fixture generator: one type of every kind, plus a
//! `struct task` shaped like the kernel's (array, anonymous union, bitfields, typedef
//! and modifier chains) for the resolver's tests.

use super::{Kind, TypeId};

/// xorshift64, for reproducible mutation tests without a dependency.
pub(crate) struct Xorshift(pub u64);

impl Xorshift {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Writes BTF: types are numbered from 1 in the order they are added.
pub(crate) struct BtfBuilder {
    big_endian: bool,
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

/// A member for [`BtfBuilder::composite`]: name, type, bit offset, bitfield width.
pub(crate) type M<'a> = (&'a str, TypeId, u32, u8);

impl BtfBuilder {
    pub(crate) fn new(big_endian: bool) -> Self {
        BtfBuilder {
            big_endian,
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    pub(crate) fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        off
    }

    pub(crate) fn raw_u32(&mut self, v: u32) {
        let b = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.types.extend_from_slice(&b);
    }

    pub(crate) fn raw_type(&mut self, name_off: u32, info: u32, size_or_type: u32) -> TypeId {
        self.raw_u32(name_off);
        self.raw_u32(info);
        self.raw_u32(size_or_type);
        let id = TypeId(self.next_id);
        self.next_id += 1;
        id
    }

    fn named(&mut self, name: &str, kind: u32, kflag: bool, vlen: u32, st: u32) -> TypeId {
        let n = self.str(name);
        self.raw_type(n, (u32::from(kflag) << 31) | (kind << 24) | vlen, st)
    }

    pub(crate) fn int(&mut self, name: &str, size: u32, bits: u8, encoding: u8) -> TypeId {
        self.int_at(name, size, 0, bits, encoding)
    }

    pub(crate) fn int_at(&mut self, name: &str, size: u32, off: u8, bits: u8, enc: u8) -> TypeId {
        let id = self.named(name, 1, false, 0, size);
        self.raw_u32((u32::from(enc) << 24) | (u32::from(off) << 16) | u32::from(bits));
        id
    }

    pub(crate) fn ptr(&mut self, target: TypeId) -> TypeId {
        self.named("", 2, false, 0, target.0)
    }

    pub(crate) fn array(&mut self, elem: TypeId, index: TypeId, len: u32) -> TypeId {
        let id = self.named("", 3, false, 0, 0);
        self.raw_u32(elem.0);
        self.raw_u32(index.0);
        self.raw_u32(len);
        id
    }

    /// A struct (`union == false`) or union; kind_flag is set when any member is a bitfield.
    pub(crate) fn composite(&mut self, name: &str, union: bool, size: u32, m: &[M]) -> TypeId {
        let kflag = m.iter().any(|x| x.3 != 0);
        let kind = if union { 5 } else { 4 };
        let id = self.named(name, kind, kflag, m.len() as u32, size);
        for &(mname, ty, bit, width) in m {
            let n = self.str(mname);
            self.raw_u32(n);
            self.raw_u32(ty.0);
            self.raw_u32(if kflag {
                (u32::from(width) << 24) | bit
            } else {
                bit
            });
        }
        id
    }

    pub(crate) fn enum32(&mut self, name: &str, signed: bool, vals: &[(&str, i32)]) -> TypeId {
        let id = self.named(name, 6, signed, vals.len() as u32, 4);
        for &(n, v) in vals {
            let n = self.str(n);
            self.raw_u32(n);
            self.raw_u32(v as u32);
        }
        id
    }

    pub(crate) fn enum64(&mut self, name: &str, vals: &[(&str, u64)]) -> TypeId {
        let id = self.named(name, 19, false, vals.len() as u32, 8);
        for &(n, v) in vals {
            let n = self.str(n);
            self.raw_u32(n);
            self.raw_u32(v as u32);
            self.raw_u32((v >> 32) as u32);
        }
        id
    }

    /// A type whose only data is a referenced type (TYPEDEF, VOLATILE, CONST, ...).
    pub(crate) fn refer(&mut self, kind: Kind, name: &str, target: TypeId) -> TypeId {
        let k = match kind {
            Kind::Typedef => 8,
            Kind::Volatile => 9,
            Kind::Const => 10,
            Kind::Restrict => 11,
            Kind::TypeTag => 18,
            _ => 2,
        };
        self.named(name, k, false, 0, target.0)
    }

    pub(crate) fn finish(&self) -> Vec<u8> {
        let w = |v: u32| {
            if self.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend_from_slice(&w(0xeb9f)[if self.big_endian { 2..4 } else { 0..2 }]);
        out.extend_from_slice(&[1, 0]);
        for v in [
            24,
            0,
            self.types.len() as u32,
            self.types.len() as u32,
            self.strings.len() as u32,
        ] {
            out.extend_from_slice(&w(v));
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }

    /// Little-endian [`Self::every_kind_with`].
    pub(crate) fn every_kind() -> (Vec<u8>, Vec<(Kind, TypeId)>) {
        Self::every_kind_with(false)
    }

    /// One type of every kind, plus `struct task` (see the module doc); returns the bytes
    /// and the kind expected for each id in order.
    pub(crate) fn every_kind_with(big_endian: bool) -> (Vec<u8>, Vec<(Kind, TypeId)>) {
        let mut b = BtfBuilder::new(big_endian);
        let mut k = Vec::new();
        let int = b.int("int", 4, 32, 1);
        k.push((Kind::Int, int));
        let uint = b.int("unsigned int", 4, 32, 0);
        k.push((Kind::Int, uint));
        let long = b.int("long", 8, 64, 1);
        k.push((Kind::Int, long));
        let ch = b.int("char", 1, 8, 2);
        k.push((Kind::Int, ch));
        let comm = b.array(ch, int, 16);
        k.push((Kind::Array, comm));
        // struct inner { int a; unsigned int flag:1, mode:3; }
        let inner = b.composite(
            "inner",
            false,
            8,
            &[
                ("a", int, 0, 0),
                ("flag", uint, 32, 1),
                ("mode", uint, 33, 3),
            ],
        );
        k.push((Kind::Struct, inner));
        let anon = b.composite("", true, 8, &[("x", long, 0, 0), ("in", inner, 0, 0)]);
        k.push((Kind::Union, anon));
        let pinner = b.ptr(inner);
        k.push((Kind::Ptr, pinner));
        let td = b.refer(Kind::Typedef, "inner_t", inner);
        k.push((Kind::Typedef, td));
        let vol = b.refer(Kind::Volatile, "", td);
        k.push((Kind::Volatile, vol));
        let cst = b.refer(Kind::Const, "", vol);
        k.push((Kind::Const, cst));
        let arr = b.array(inner, int, 3);
        k.push((Kind::Array, arr));
        // Legacy bitfield: a 3-bit INT member without kind_flag.
        let u3 = b.int_at("u3", 4, 0, 3, 0);
        k.push((Kind::Int, u3));
        let task = b.composite(
            "task",
            false,
            80,
            &[
                ("pid", int, 0, 0),
                ("comm", comm, 32, 0),
                ("", anon, 192, 0),
                ("next", pinner, 256, 0),
                ("nested", cst, 320, 0),
                ("arr", arr, 384, 0),
                ("legacy", u3, 580, 0),
            ],
        );
        k.push((Kind::Struct, task));
        let rst = b.refer(Kind::Restrict, "", pinner);
        k.push((Kind::Restrict, rst));
        let tag = b.refer(Kind::TypeTag, "rcu", inner);
        k.push((Kind::TypeTag, tag));
        let neg = b.enum32("neg", true, &[("NEG_A", -3), ("NEG_B", 5)]);
        k.push((Kind::Enum, neg));
        let big = b.enum64("big", &[("BIG_A", 0x1_0000_0002)]);
        k.push((Kind::Enum64, big));
        let fwd = b.named("later", 7, true, 0, 0);
        k.push((Kind::Fwd, fwd));
        let proto = b.named("", 13, false, 2, int.0);
        let (x, y) = (b.str("x"), b.str(""));
        b.raw_u32(x);
        b.raw_u32(int.0);
        b.raw_u32(y);
        b.raw_u32(0);
        k.push((Kind::FuncProto, proto));
        let func = b.named("f", 12, false, 1, proto.0);
        k.push((Kind::Func, func));
        let var = b.named("runqueues", 14, false, 0, task.0);
        b.raw_u32(1);
        k.push((Kind::Var, var));
        let sec = b.named(".data..percpu", 15, false, 1, 80);
        b.raw_u32(var.0);
        b.raw_u32(0);
        b.raw_u32(80);
        k.push((Kind::Datasec, sec));
        let flt = b.named("double", 16, false, 0, 8);
        k.push((Kind::Float, flt));
        let dtag = b.named("tag", 17, false, 0, task.0);
        b.raw_u32(u32::MAX);
        k.push((Kind::DeclTag, dtag));
        (b.finish(), k)
    }
}
