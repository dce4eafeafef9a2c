//! Cuts the real kernel's BTF down to what the planner reads, and writes it as raw BTF:
//! the committed `tests/fixtures/btf-7.3-subset.btf`, so the planner's tests run without
//! the 62 MB vmlinux.
//!
//! Kept: the FUNCs named (with their prototypes), `btf_trace_sched_ext_exit`, the
//! sched_ext enums, and for the structs of the planner's field catalogue only the members
//! on its paths (offsets and sizes unchanged: BTF members carry their own offsets). Every
//! other struct or union keeps its name and size and loses its members.

use std::collections::HashMap;

use ktstr_btf_monitor::btf::TypeBody;
use ktstr_btf_monitor::{Btf, Kind, TypeId};

/// Struct members to keep: the planner's catalogue plus `sched_ext_ops.name`.
fn kept_paths() -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<(&str, &str)> = ktstr_repro::plan::FIELD_CATALOGUE
        .iter()
        .flat_map(|(s, paths)| paths.iter().map(move |(_, p)| (*s, *p)))
        .collect();
    v.push(("sched_ext_ops", "name"));
    v
}

struct Subset<'a> {
    btf: &'a Btf,
    /// Members kept per struct id (indices into its member list).
    keep: HashMap<u32, Vec<usize>>,
    /// Old id -> new id.
    map: HashMap<u32, u32>,
    order: Vec<u32>,
}

impl<'a> Subset<'a> {
    fn members(&self, id: TypeId) -> &'a [ktstr_btf_monitor::btf::Member] {
        self.btf.get(id).map_or(&[], |t| t.members())
    }

    /// Marks the members along `step` in struct `id` (through anonymous members);
    /// returns the type of the member named `step`.
    fn mark_step(&mut self, id: TypeId, step: &str) -> Option<TypeId> {
        let members = self.members(id);
        for (i, m) in members.iter().enumerate() {
            let name = self.btf.str_at(m.name_off);
            if name == step {
                self.keep.entry(id.0).or_default().push(i);
                return Some(m.ty);
            }
        }
        for (i, m) in members.iter().enumerate() {
            if m.name_off == 0 {
                let inner = self.btf.skip_modifiers(m.ty).ok()?;
                if let Some(t) = self.mark_step(inner, step) {
                    self.keep.entry(id.0).or_default().push(i);
                    return Some(t);
                }
            }
        }
        None
    }

    fn mark_path(&mut self, sname: &str, path: &str) {
        let Ok(mut cur) = self.btf.find_struct(sname) else {
            return;
        };
        for (hop_n, hop) in path.split("->").enumerate() {
            if hop_n > 0 {
                // cur is the pointer member's type: go to its pointee struct.
                let Ok(p) = self.btf.skip_modifiers(cur) else {
                    return;
                };
                let Some(TypeBody::Ptr { target }) = self.btf.get(p).map(|t| &t.body) else {
                    return;
                };
                let Ok(s) = self.btf.skip_modifiers(*target) else {
                    return;
                };
                cur = s;
            }
            for step in hop.split('.') {
                let Ok(s) = self.btf.skip_modifiers(cur) else {
                    return;
                };
                let Some(next) = self.mark_step(s, step) else {
                    return;
                };
                cur = next;
            }
        }
    }

    fn add(&mut self, id: TypeId) {
        if id.0 == 0 || self.map.contains_key(&id.0) {
            return;
        }
        let new = self.order.len() as u32 + 1;
        self.map.insert(id.0, new);
        self.order.push(id.0);
        let Some(t) = self.btf.get(id) else { return };
        match &t.body {
            TypeBody::Ptr { target }
            | TypeBody::Typedef { target }
            | TypeBody::Volatile { target }
            | TypeBody::Const { target }
            | TypeBody::Restrict { target }
            | TypeBody::TypeTag { target } => self.add(*target),
            TypeBody::Array { elem, index, .. } => {
                self.add(*elem);
                self.add(*index);
            }
            TypeBody::Struct { members, .. } | TypeBody::Union { members, .. } => {
                let keep = self.keep.get(&id.0).cloned().unwrap_or_default();
                for i in keep {
                    if let Some(m) = members.get(i) {
                        self.add(m.ty);
                    }
                }
            }
            TypeBody::Func { proto, .. } => self.add(*proto),
            TypeBody::FuncProto { ret, params } => {
                self.add(*ret);
                for p in params {
                    self.add(p.ty);
                }
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct Writer {
    types: Vec<u8>,
    strings: Vec<u8>,
    offsets: HashMap<String, u32>,
}

impl Writer {
    fn str(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&o) = self.offsets.get(s) {
            return o;
        }
        let o = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        self.offsets.insert(s.to_string(), o);
        o
    }

    fn u32(&mut self, v: u32) {
        self.types.extend_from_slice(&v.to_le_bytes());
    }

    fn head(&mut self, name: u32, kind: u32, vlen: usize, kflag: bool, size_or_type: u32) {
        self.u32(name);
        self.u32(u32::from(kflag) << 31 | kind << 24 | vlen as u32);
        self.u32(size_or_type);
    }
}

/// The subset of `btf` for `funcs` (names of FUNCs), as raw little-endian BTF; the
/// roots named in `without` are left out (to make kernels that lack them).
pub fn subset(btf: &Btf, funcs: &[String], without: &[&str]) -> Vec<u8> {
    let mut s = Subset {
        btf,
        keep: HashMap::new(),
        map: HashMap::new(),
        order: Vec::new(),
    };
    for (st, path) in kept_paths() {
        s.mark_path(st, path);
    }
    for v in s.keep.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    let mut roots: Vec<TypeId> = Vec::new();
    let mut names: Vec<&String> = funcs.iter().collect();
    names.sort();
    names.dedup();
    for f in names.into_iter().filter(|f| !without.contains(&f.as_str())) {
        if let Some(id) = btf.find(f, Kind::Func) {
            roots.push(id);
        }
    }
    for (n, k) in [
        ("btf_trace_sched_ext_exit", Kind::Typedef),
        ("sched_ext_ops", Kind::Struct),
        ("scx_exit_kind", Kind::Enum),
        ("scx_enq_flags", Kind::Enum64),
        ("scx_deq_flags", Kind::Enum64),
        ("scx_wake_flags", Kind::Enum),
    ] {
        if without.contains(&n) {
            continue;
        }
        if let Some(id) = btf.find(n, k) {
            roots.push(id);
        }
    }
    for r in roots {
        s.add(r);
    }
    let mut w = Writer::default();
    w.strings.push(0);
    let map = |id: TypeId| s.map.get(&id.0).copied().unwrap_or(0);
    for &old in &s.order {
        let Some(t) = btf.get(TypeId(old)) else {
            continue;
        };
        let name = w.str(btf.str_at(t.name_off));
        match &t.body {
            TypeBody::Void => {}
            TypeBody::Int {
                size,
                encoding,
                offset,
                bits,
            } => {
                w.head(name, 1, 0, false, *size);
                w.u32(u32::from(*encoding) << 24 | u32::from(*offset) << 16 | u32::from(*bits));
            }
            TypeBody::Ptr { target } => w.head(name, 2, 0, false, map(*target)),
            TypeBody::Array { elem, index, len } => {
                w.head(name, 3, 0, false, 0);
                w.u32(map(*elem));
                w.u32(map(*index));
                w.u32(*len);
            }
            TypeBody::Struct { size, members } | TypeBody::Union { size, members } => {
                let kind = if t.kind() == Kind::Struct { 4 } else { 5 };
                let keep = s.keep.get(&old).cloned().unwrap_or_default();
                let kept: Vec<_> = keep.iter().filter_map(|&i| members.get(i)).collect();
                let kflag = kept.iter().any(|m| m.bitfield_size != 0);
                w.head(name, kind, kept.len(), kflag, *size);
                for m in kept {
                    let mname = w.str(btf.str_at(m.name_off));
                    w.u32(mname);
                    w.u32(map(m.ty));
                    w.u32(if kflag {
                        u32::from(m.bitfield_size) << 24 | m.bit_offset
                    } else {
                        m.bit_offset
                    });
                }
            }
            TypeBody::Enum {
                size,
                signed,
                is_64,
                values,
            } => {
                w.head(
                    name,
                    if *is_64 { 19 } else { 6 },
                    values.len(),
                    *signed,
                    *size,
                );
                for v in values {
                    let vname = w.str(btf.str_at(v.name_off));
                    w.u32(vname);
                    w.u32(v.value as u64 as u32);
                    if *is_64 {
                        w.u32((v.value as u64 >> 32) as u32);
                    }
                }
            }
            TypeBody::Fwd { is_union } => w.head(name, 7, 0, *is_union, 0),
            TypeBody::Typedef { target } => w.head(name, 8, 0, false, map(*target)),
            TypeBody::Volatile { target } => w.head(name, 9, 0, false, map(*target)),
            TypeBody::Const { target } => w.head(name, 10, 0, false, map(*target)),
            TypeBody::Restrict { target } => w.head(name, 11, 0, false, map(*target)),
            TypeBody::Func { proto, linkage } => {
                w.head(name, 12, usize::from(*linkage), false, map(*proto))
            }
            TypeBody::FuncProto { ret, params } => {
                w.head(name, 13, params.len(), false, map(*ret));
                for p in params {
                    let pname = w.str(btf.str_at(p.name_off));
                    w.u32(pname);
                    w.u32(map(p.ty));
                }
            }
            TypeBody::Float { size } => w.head(name, 16, 0, false, *size),
            TypeBody::TypeTag { target } => w.head(name, 18, 0, false, map(*target)),
            // Not reachable from functions and struct members.
            TypeBody::Var { .. } | TypeBody::Datasec { .. } | TypeBody::DeclTag { .. } => {
                w.head(name, 8, 0, false, 0)
            }
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&0xeb9fu16.to_le_bytes());
    out.extend_from_slice(&[1, 0]);
    for v in [
        24u32,
        0,
        w.types.len() as u32,
        w.types.len() as u32,
        w.strings.len() as u32,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&w.types);
    out.extend_from_slice(&w.strings);
    out
}
