//! The guest's BPF maps and programs, found from the host: the kernel keeps them in two IDRs
//! (`map_idr`, `prog_idr`), xarrays of pointers to `struct bpf_map` and `struct bpf_prog`.
//!
//! [`BpfLayout::from_btf`] resolves the members once; [`idr_entries`] walks an IDR's tree,
//! [`list_maps`] and [`list_progs`] read what each entry points to, and [`map_btf`] reads a
//! map's own BTF (the program's, as loaded), in which [`global_var`] finds a global variable
//! of a `.bss`/`.data`/`.rodata` map. Every walk is bounded; a torn pointer ends it with an
//! error, never a loop.

use serde::Serialize;

use crate::btf::{resolve, Btf, Field, TypeBody, TypeId};
use crate::memory::GuestMemory;
use crate::sampler::{c_string, error_chain, value};
use crate::translate::Translator;

/// Slots per xarray node (`XA_CHUNK_SIZE`).
const XA_CHUNK: u64 = 64;
/// Most IDR entries read.
pub const MAX_IDR_ENTRIES: usize = 65536;
/// Largest map BTF read.
pub const MAX_MAP_BTF: u32 = 16 << 20;
/// `BPF_MAP_TYPE_ARRAY`: the maps whose values sit inline after `struct bpf_array`.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`: `struct bpf_array` holds a per-CPU pointer per entry.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;

/// Where the IDR, map, array, BTF and program members are, from the kernel's BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfLayout {
    xa_head: u32,
    node_shift: u32,
    node_slots: u32,
    map: MapFields,
    array_value: Option<u32>,
    btf_data: u32,
    btf_data_size: u32,
    btf_base: Option<u32>,
    prog: Option<ProgFields>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MapFields {
    id: Field,
    name: Field,
    map_type: Field,
    key_size: Field,
    value_size: Field,
    max_entries: Field,
    btf: Field,
    btf_value_type_id: Field,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProgFields {
    aux: u32,
    aux_id: Field,
    aux_name: Field,
    aux_verified_insns: Option<Field>,
    /// `bpf_prog.stats`: a per-CPU pointer to `bpf_prog_stats { cnt, nsecs, .. }`.
    stats: Option<(u32, u32, u32)>,
}

impl BpfLayout {
    /// Resolves the layout; programs' members are optional.
    pub fn from_btf(btf: &Btf) -> Result<Self, String> {
        let need = |ty: &str, path: &str| {
            resolve(btf, ty, path).map_err(|e| format!("BTF has no {ty}.{path}: {e}"))
        };
        let opt = |ty: &str, path: &str| resolve(btf, ty, path).ok();
        let map = MapFields {
            id: need("bpf_map", "id")?,
            name: need("bpf_map", "name")?,
            map_type: need("bpf_map", "map_type")?,
            key_size: need("bpf_map", "key_size")?,
            value_size: need("bpf_map", "value_size")?,
            max_entries: need("bpf_map", "max_entries")?,
            btf: need("bpf_map", "btf")?,
            btf_value_type_id: need("bpf_map", "btf_value_type_id")?,
        };
        let prog = (|| {
            Some(ProgFields {
                aux: opt("bpf_prog", "aux")?.offset_bytes,
                aux_id: opt("bpf_prog_aux", "id")?,
                aux_name: opt("bpf_prog_aux", "name")?,
                aux_verified_insns: opt("bpf_prog_aux", "verified_insns"),
                stats: match (
                    opt("bpf_prog", "stats"),
                    opt("bpf_prog_stats", "cnt"),
                    opt("bpf_prog_stats", "nsecs"),
                ) {
                    (Some(s), Some(c), Some(n)) => {
                        Some((s.offset_bytes, c.offset_bytes, n.offset_bytes))
                    }
                    _ => None,
                },
            })
        })();
        Ok(BpfLayout {
            xa_head: need("idr", "idr_rt.xa_head")?.offset_bytes,
            node_shift: need("xa_node", "shift")?.offset_bytes,
            node_slots: need("xa_node", "slots")?.offset_bytes,
            map,
            array_value: opt("bpf_array", "value").map(|f| f.offset_bytes),
            btf_data: need("btf", "data")?.offset_bytes,
            btf_data_size: need("btf", "data_size")?.offset_bytes,
            btf_base: opt("btf", "base_btf").map(|f| f.offset_bytes),
            prog,
        })
    }
}

/// Every `(index, pointer)` stored in the IDR at `idr`, in index order.
pub fn idr_entries(
    t: &Translator,
    mem: &dyn GuestMemory,
    l: &BpfLayout,
    idr: u64,
) -> Result<Vec<(u64, u64)>, String> {
    let read = |va: u64, what: &str| {
        t.read_virt_u64(mem, va)
            .map_err(|e| format!("{what} at {va:#x}: {}", error_chain(&e)))
    };
    let head = read(idr + u64::from(l.xa_head), "the IDR's xa_head")?;
    let mut out = Vec::new();
    // (entry, index of its first slot)
    let mut stack = vec![(head, 0u64)];
    while let Some((entry, base)) = stack.pop() {
        if entry == 0 || entry & 1 == 1 {
            continue; // empty, or a value entry
        }
        if entry & 3 == 2 {
            if entry <= 4096 {
                continue; // a sibling, retry or zero entry
            }
            let node = entry - 2;
            let mut b = [0u8; 1];
            t.read_virt(mem, node + u64::from(l.node_shift), &mut b)
                .map_err(|e| format!("xa_node.shift at {node:#x}: {}", error_chain(&e)))?;
            let shift = u64::from(b[0]);
            if shift > 58 || shift % 6 != 0 {
                return Err(format!("xa_node at {node:#x} has shift {shift}: torn?"));
            }
            let mut slots = vec![0u8; (XA_CHUNK * 8) as usize];
            t.read_virt(mem, node + u64::from(l.node_slots), &mut slots)
                .map_err(|e| format!("xa_node.slots at {node:#x}: {}", error_chain(&e)))?;
            for (i, s) in slots.chunks_exact(8).enumerate().rev() {
                let mut w = [0u8; 8];
                w.copy_from_slice(s);
                let e = u64::from_le_bytes(w);
                if e != 0 {
                    stack.push((e, base + ((i as u64) << shift)));
                }
            }
            if stack.len() + out.len() > MAX_IDR_ENTRIES {
                return Err(format!("more than {MAX_IDR_ENTRIES} IDR entries"));
            }
            continue;
        }
        out.push((base, entry));
    }
    Ok(out)
}

/// One BPF map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BpfMapInfo {
    /// Its id.
    pub id: u32,
    /// Its name (`ktstr_bp.bss` style for a program's globals).
    pub name: String,
    /// `map_type` (`BPF_MAP_TYPE_ARRAY` is 2).
    pub map_type: u32,
    /// Key bytes.
    pub key_size: u32,
    /// Value bytes.
    pub value_size: u32,
    /// Entries.
    pub max_entries: u32,
    /// Address of its `struct bpf_map`.
    pub addr: u64,
    /// Address of its first value, for an array map; for a per-CPU array, of its first
    /// entry's per-CPU pointer.
    pub value_addr: Option<u64>,
    /// Its `struct btf` (0: none).
    pub btf: u64,
    /// The value's type id in that BTF.
    pub btf_value_type_id: u32,
}

/// Every map in `map_idr`.
pub fn list_maps(
    t: &Translator,
    mem: &dyn GuestMemory,
    l: &BpfLayout,
    map_idr: u64,
) -> Result<Vec<BpfMapInfo>, String> {
    let m = &l.map;
    let fields = [
        m.id,
        m.name,
        m.map_type,
        m.key_size,
        m.value_size,
        m.max_entries,
        m.btf,
        m.btf_value_type_id,
    ];
    let start = fields.iter().map(|f| f.offset_bytes).min().unwrap_or(0);
    let end = fields
        .iter()
        .map(|f| f.offset_bytes + f.size)
        .max()
        .unwrap_or(0);
    let mut buf = vec![0u8; (end - start) as usize];
    let mut out = Vec::new();
    for (_, addr) in idr_entries(t, mem, l, map_idr)? {
        t.read_virt(mem, addr + u64::from(start), &mut buf)
            .map_err(|e| format!("bpf_map at {addr:#x}: {}", error_chain(&e)))?;
        let get = |f: &Field| value(f, &buf, start).unwrap_or(0);
        let map_type = get(&m.map_type) as u32;
        out.push(BpfMapInfo {
            id: get(&m.id) as u32,
            name: c_string(&buf, m.name.offset_bytes - start, m.name.size),
            map_type,
            key_size: get(&m.key_size) as u32,
            value_size: get(&m.value_size) as u32,
            max_entries: get(&m.max_entries) as u32,
            addr,
            value_addr: l
                .array_value
                .filter(|_| matches!(map_type, BPF_MAP_TYPE_ARRAY | BPF_MAP_TYPE_PERCPU_ARRAY))
                .map(|off| addr + u64::from(off)),
            btf: get(&m.btf),
            btf_value_type_id: get(&m.btf_value_type_id) as u32,
        });
    }
    Ok(out)
}

/// The BTF a map was created with (its program's), read from guest memory.
pub fn map_btf(
    t: &Translator,
    mem: &dyn GuestMemory,
    l: &BpfLayout,
    map: &BpfMapInfo,
) -> Result<Btf, String> {
    if map.btf == 0 {
        return Err(format!("map {} has no BTF", map.name));
    }
    let e = |what: &str, err: crate::translate::TranslateError| {
        format!("map {}'s BTF: {what}: {}", map.name, error_chain(&err))
    };
    if let Some(off) = l.btf_base {
        let base = t
            .read_virt_u64(mem, map.btf + u64::from(off))
            .map_err(|err| e("base_btf", err))?;
        if base != 0 {
            return Err(format!("map {}'s BTF is split BTF: not read", map.name));
        }
    }
    let data = t
        .read_virt_u64(mem, map.btf + u64::from(l.btf_data))
        .map_err(|err| e("data", err))?;
    let mut b = [0u8; 4];
    t.read_virt(mem, map.btf + u64::from(l.btf_data_size), &mut b)
        .map_err(|err| e("data_size", err))?;
    let size = u32::from_le_bytes(b);
    if size == 0 || size > MAX_MAP_BTF {
        return Err(format!("map {}'s BTF is {size} bytes: not read", map.name));
    }
    let mut raw = vec![0u8; size as usize];
    t.read_virt(mem, data, &mut raw)
        .map_err(|err| e("its bytes", err))?;
    Btf::parse(&raw).map_err(|err| format!("map {}'s BTF: {err}", map.name))
}

/// The offset and size of global variable `name` in a map whose value type is the data
/// section `value_type` of `btf`.
pub fn global_var(btf: &Btf, value_type: u32, name: &str) -> Option<(u32, u32)> {
    let TypeBody::Datasec { vars, .. } = &btf.get(TypeId(value_type))?.body else {
        return None;
    };
    vars.iter()
        .find(|v| btf.name(v.ty) == name)
        .map(|v| (v.offset, v.size))
}

/// One BPF program and what the kernel counted of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BpfProgInfo {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Instructions the verifier processed to load it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_insns: Option<u32>,
    /// Runs, summed over CPUs (counted only with `kernel.bpf_stats_enabled = 1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_cnt: Option<u64>,
    /// Nanoseconds run, summed over CPUs (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_time_ns: Option<u64>,
}

/// Every program in `prog_idr`, with its per-CPU run statistics summed over `per_cpu_offsets`.
pub fn list_progs(
    t: &Translator,
    mem: &dyn GuestMemory,
    l: &BpfLayout,
    prog_idr: u64,
    per_cpu_offsets: &[u64],
) -> Result<Vec<BpfProgInfo>, String> {
    let p = l.prog.ok_or("BTF lacks bpf_prog's members")?;
    let u64_at = |va: u64, what: &str| {
        t.read_virt_u64(mem, va)
            .map_err(|e| format!("{what} at {va:#x}: {}", error_chain(&e)))
    };
    let mut out = Vec::new();
    for (_, prog) in idr_entries(t, mem, l, prog_idr)? {
        let aux = u64_at(prog + u64::from(p.aux), "bpf_prog.aux")?;
        let mut name = [0u8; 16];
        let n = (p.aux_name.size as usize).min(16);
        t.read_virt(
            mem,
            aux + u64::from(p.aux_name.offset_bytes),
            &mut name[..n],
        )
        .map_err(|e| format!("bpf_prog_aux.name: {}", error_chain(&e)))?;
        let small = |f: Field| {
            let mut b = [0u8; 4];
            t.read_virt(mem, aux + u64::from(f.offset_bytes), &mut b)
                .ok()
                .map(|()| u32::from_le_bytes(b))
        };
        let (mut cnt, mut ns) = (None, None);
        if let Some((stats, c, nsecs)) = p.stats {
            if let Ok(pcpu) = u64_at(prog + u64::from(stats), "bpf_prog.stats") {
                if pcpu != 0 {
                    let (mut tc, mut tn) = (0u64, 0u64);
                    let mut ok = true;
                    for off in per_cpu_offsets {
                        let base = pcpu.wrapping_add(*off);
                        match (
                            u64_at(base + u64::from(c), "cnt"),
                            u64_at(base + u64::from(nsecs), "nsecs"),
                        ) {
                            (Ok(a), Ok(b)) => {
                                tc = tc.wrapping_add(a);
                                tn = tn.wrapping_add(b);
                            }
                            _ => ok = false,
                        }
                    }
                    if ok {
                        cnt = Some(tc);
                        ns = Some(tn);
                    }
                }
            }
        }
        out.push(BpfProgInfo {
            id: small(p.aux_id).unwrap_or(0),
            name: c_string(&name, 0, n as u32),
            verified_insns: p.aux_verified_insns.and_then(small),
            run_cnt: cnt,
            run_time_ns: ns,
        });
    }
    Ok(out)
}

/// Where `path` lies in a value of type `value_type` of `btf`: `(offset, size)`. For a data
/// section the first step names a global variable and the rest a member path inside it; for a
/// struct the whole path is a member path.
pub fn value_field(btf: &Btf, value_type: u32, path: &str) -> Result<(u32, u32), String> {
    let ty = btf
        .get(TypeId(value_type))
        .ok_or_else(|| format!("no type {value_type} in the map's BTF"))?;
    let (base, struct_id, rest) = match &ty.body {
        TypeBody::Datasec { vars, .. } => {
            let (var, rest) = path.split_once('.').unwrap_or((path, ""));
            let v = vars
                .iter()
                .find(|v| btf.name(v.ty) == var)
                .ok_or_else(|| format!("no global `{var}` in the map"))?;
            if rest.is_empty() {
                return Ok((v.offset, v.size));
            }
            let inner = match btf.get(v.ty).map(|t| &t.body) {
                Some(TypeBody::Var { ty, .. }) => *ty,
                _ => return Err(format!("`{var}` is not a variable")),
            };
            (v.offset, inner, rest)
        }
        _ => (0, TypeId(value_type), path),
    };
    let sid = btf.skip_modifiers(struct_id).map_err(|e| e.to_string())?;
    let name = btf.name(sid);
    if name.is_empty() {
        return Err(format!(
            "`{path}`: the value's type has no name to resolve in"
        ));
    }
    let f = resolve(btf, name, rest).map_err(|e| format!("{name}.{rest}: {e}"))?;
    if f.bit_size % 8 != 0 || f.bit_offset % 8 != 0 {
        return Err(format!("`{path}` is a bitfield"));
    }
    Ok((base + f.offset_bytes, f.size))
}
