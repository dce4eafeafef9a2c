//! Kernel memory reads and writes from the host, for `Op::write_kernel_*`/`read_kernel_*`.
//!
//! A [`KernelTarget`] becomes a kernel virtual address: symbols through the guest kernel's
//! symbols (vmlinux's moved by the KASLR slide, or the guest's own `/proc/kallsyms`),
//! per-CPU fields through `__per_cpu_offset[cpu]` and the variable's BTF type, task fields
//! through the task list and `task_struct`'s BTF. The address is translated through the
//! kernel's own page tables, page by page.
//!
//! Writes are allowed only where a test can mean them: the kernel's data and bss
//! (`_sdata.._edata`, `__bss_start..__bss_stop`), the static per-CPU areas of every CPU, and
//! the `task_struct` of a task found by pid. A field's write may not be wider than the field.
//! Anything else (kernel text, read-only data, an unmapped address) is refused with an error
//! naming the address, before a byte is written.

use ktstr_btf_monitor::bpf::{global_var, list_maps, list_progs, map_btf, BpfLayout, BpfProgInfo};
use ktstr_btf_monitor::sampler::error_chain;
use ktstr_btf_monitor::{btf::TypeBody, resolve, Btf, GuestMemory, Kind, Sampler, SymbolTable};

use crate::monitor::FullSymbols;
use crate::scenario::kernel_mem::MAX_KERNEL_READ;
use crate::scenario::{KernelTarget, KernelValue, KernelValueWidth};
use crate::watchdog::GuestWriter;

/// Most writes in one batch.
pub const MAX_WRITES: usize = 64;
/// Page size of the guest's kernel mappings, for translating page by page.
const PAGE: u64 = 4096;

/// Resolves and performs kernel memory ops for one guest.
pub(crate) struct KernelOps {
    btf: Btf,
    /// The guest kernel's symbols at their runtime addresses: the monitor's few at first,
    /// the whole table once a lookup misses.
    syms: SymbolTable,
    /// Where the whole table comes from, until it is loaded.
    full: Option<FullSymbols>,
    /// Where BPF maps' members are, or why they cannot be found.
    bpf: Result<BpfLayout, String>,
}

/// Where a target resolved to: its address, and the field's size when it is a field.
struct Place {
    va: u64,
    field_size: Option<u32>,
    /// For a task field: the task's `task_struct`, `[start, end)`.
    task: Option<(u64, u64)>,
}

impl KernelOps {
    /// Ops on the guest kernel with `btf` and symbols `syms` (runtime addresses).
    pub(crate) fn new(btf: Btf, syms: SymbolTable, full: FullSymbols) -> Self {
        KernelOps {
            bpf: BpfLayout::from_btf(&btf),
            btf,
            syms,
            full: Some(full),
        }
    }

    /// Every BPF program with its statistics.
    pub(crate) fn bpf_progs<M: GuestMemory>(
        &mut self,
        sampler: &Sampler<M>,
    ) -> Result<Vec<BpfProgInfo>, String> {
        let l = self.bpf.as_ref().map_err(|e| e.clone())?.clone();
        let idr = self.symbol_addr("prog_idr")?;
        list_progs(
            &sampler.translator(),
            sampler.memory(),
            &l,
            idr,
            &sampler.info().per_cpu_offsets,
        )
    }

    /// Sets global `field` of every map whose name ends with `suffix` (and whose BTF has
    /// it) to `value`; `Ok(None)` while no such map exists yet.
    pub(crate) fn write_map_global<M: GuestMemory>(
        &mut self,
        suffix: &str,
        field: &str,
        value: u32,
        sampler: &Sampler<M>,
        writer: &dyn GuestWriter,
    ) -> Result<Option<String>, String> {
        let l = self.bpf.as_ref().map_err(|e| e.clone())?.clone();
        let idr = self.symbol_addr("map_idr")?;
        let (t, mem) = (sampler.translator(), sampler.memory());
        let maps = list_maps(&t, mem, &l, idr)?;
        let mut done = Vec::new();
        for m in maps.iter().filter(|m| m.name.ends_with(suffix)) {
            let Some(base) = m.value_addr else { continue };
            let Ok(btf) = map_btf(&t, mem, &l, m) else {
                continue;
            };
            let Some((off, size)) = global_var(&btf, m.btf_value_type_id, field) else {
                continue;
            };
            if m.name.ends_with(".rodata") {
                return Err(format!(
                    "map {} is read-only data, frozen when its program loaded: {field} not written",
                    m.name
                ));
            }
            if u64::from(off) + u64::from(size) > u64::from(m.value_size) || size > 8 {
                return Err(format!(
                    "map {}: {field} at {off} ({size} bytes) is not a scalar inside its value",
                    m.name
                ));
            }
            let bytes = u64::from(value).to_le_bytes();
            if size < 4 && u64::from(value) >> (8 * size) != 0 {
                return Err(format!("{value} does not fit {field}'s {size} bytes"));
            }
            let va = base + u64::from(off);
            write_at(sampler, writer, va, &bytes[..size as usize])?;
            done.push(format!(
                "map {} (id {}): {field} = {value} ({size} bytes at {va:#x})",
                m.name, m.id
            ));
        }
        Ok((!done.is_empty()).then(|| done.join("; ")))
    }

    /// The runtime address of kernel symbol `name`.
    pub(crate) fn symbol_addr(&mut self, name: &str) -> Result<u64, String> {
        let find = |t: &SymbolTable| {
            t.lookup_all(name)
                .find(|s| s.module.is_none())
                .map(|s| s.addr)
        };
        if let Some(a) = find(&self.syms) {
            return Ok(a);
        }
        if let Some(full) = self.full.take() {
            self.syms = full.load()?;
        }
        find(&self.syms).ok_or_else(|| format!("no kernel symbol `{name}`"))
    }

    fn place<M: GuestMemory>(
        &mut self,
        target: &KernelTarget,
        sampler: &Sampler<M>,
    ) -> Result<Place, String> {
        let plain = |va| Place {
            va,
            field_size: None,
            task: None,
        };
        match target {
            KernelTarget::Symbol(name) => Ok(plain(self.symbol_addr(name)?)),
            KernelTarget::Direct(va) | KernelTarget::Kva(va) => Ok(plain(*va)),
            KernelTarget::PerCpuField { symbol, field, cpu } => {
                let offsets = &sampler.info().per_cpu_offsets;
                let off = offsets
                    .get(*cpu as usize)
                    .ok_or_else(|| format!("CPU {cpu}: the guest has CPUs 0..{}", offsets.len()))?;
                let base = self.symbol_addr(symbol)?.wrapping_add(*off);
                let ty = self.var_type(symbol)?;
                let f = resolve(&self.btf, &ty, field)
                    .map_err(|e| format!("{symbol} ({ty}).{field}: {e}"))?;
                if f.bit_size % 8 != 0 || f.bit_offset % 8 != 0 {
                    return Err(format!("{symbol}.{field} is a bitfield"));
                }
                Ok(Place {
                    va: base.wrapping_add(u64::from(f.offset_bytes)),
                    field_size: Some(f.size),
                    task: None,
                })
            }
            KernelTarget::TaskField {
                pid,
                expected_start_time_ns,
                field,
            } => {
                let pid_i =
                    i32::try_from(*pid).map_err(|_| format!("pid {pid} is out of range"))?;
                let task = sampler.find_task(pid_i)?;
                let size = self
                    .btf
                    .find_struct("task_struct")
                    .and_then(|id| self.btf.size_of(id))
                    .map_err(|e| format!("task_struct's size: {e}"))?;
                if *expected_start_time_ns != 0 {
                    let st = resolve(&self.btf, "task_struct", "start_time")
                        .map_err(|e| format!("task_struct.start_time: {e}"))?;
                    let got = sampler
                        .translator()
                        .read_virt_u64(sampler.memory(), task + u64::from(st.offset_bytes))
                        .map_err(|e| format!("task {pid}'s start_time: {}", error_chain(&e)))?;
                    if got != *expected_start_time_ns {
                        return Err(format!(
                            "task {pid} started at {got} ns, not {expected_start_time_ns}: \
                             the pid was reused"
                        ));
                    }
                }
                let f = resolve(&self.btf, "task_struct", field)
                    .map_err(|e| format!("task_struct.{field}: {e}"))?;
                if f.bit_size % 8 != 0 || f.bit_offset % 8 != 0 {
                    return Err(format!("task_struct.{field} is a bitfield"));
                }
                Ok(Place {
                    va: task.wrapping_add(u64::from(f.offset_bytes)),
                    field_size: Some(f.size),
                    task: Some((task, task.wrapping_add(size))),
                })
            }
        }
    }

    /// The name of the BTF type of per-CPU variable `symbol`.
    fn var_type(&self, symbol: &str) -> Result<String, String> {
        let id = self
            .btf
            .find(symbol, Kind::Var)
            .ok_or_else(|| format!("BTF has no variable `{symbol}` (is it per-CPU?)"))?;
        let ty = match self.btf.get(id).map(|t| &t.body) {
            Some(TypeBody::Var { ty, .. }) => *ty,
            _ => return Err(format!("BTF's `{symbol}` is not a variable")),
        };
        let ty = self.btf.skip_modifiers(ty).map_err(|e| e.to_string())?;
        match self.btf.name(ty) {
            "" => Err(format!("`{symbol}` has an unnamed type")),
            n => Ok(n.to_string()),
        }
    }

    /// Why `[va, va+len)` may not be written, if it may not.
    fn check_writable<M: GuestMemory>(
        &mut self,
        place: &Place,
        len: u64,
        sampler: &Sampler<M>,
    ) -> Result<(), String> {
        let end = place
            .va
            .checked_add(len)
            .ok_or_else(|| format!("{:#x} + {len} wraps", place.va))?;
        if let Some(size) = place.field_size {
            if len > u64::from(size) {
                return Err(format!(
                    "{len} bytes do not fit the {size}-byte field at {:#x}",
                    place.va
                ));
            }
        }
        if let Some((start, stop)) = place.task {
            return if place.va >= start && end <= stop {
                Ok(())
            } else {
                Err(format!(
                    "{:#x}..{end:#x} leaves the task_struct at {start:#x}..{stop:#x}",
                    place.va
                ))
            };
        }
        let mut regions = Vec::new();
        for (from, to, what) in [
            ("_sdata", "_edata", "data"),
            ("__bss_start", "__bss_stop", "bss"),
        ] {
            regions.push((self.symbol_addr(from)?, self.symbol_addr(to)?, what));
        }
        let (ps, pe) = (
            self.symbol_addr("__per_cpu_start")?,
            self.symbol_addr("__per_cpu_end")?,
        );
        for off in &sampler.info().per_cpu_offsets {
            regions.push((ps.wrapping_add(*off), pe.wrapping_add(*off), "per-CPU"));
        }
        if regions.iter().any(|(s, e, _)| place.va >= *s && end <= *e) {
            Ok(())
        } else {
            Err(format!(
                "{:#x}..{end:#x} is outside the kernel's data, bss and per-CPU areas and \
                 every task's structure: not written",
                place.va
            ))
        }
    }

    /// Performs `writes` in order; each is resolved and checked before any is written.
    pub(crate) fn write<M: GuestMemory>(
        &mut self,
        writes: &[(KernelTarget, KernelValue)],
        sampler: &Sampler<M>,
        writer: &dyn GuestWriter,
    ) -> Result<String, String> {
        if writes.len() > MAX_WRITES {
            return Err(format!(
                "{} writes in one batch, more than {MAX_WRITES}",
                writes.len()
            ));
        }
        let mut planned = Vec::new();
        for (target, value) in writes {
            let place = self
                .place(target, sampler)
                .map_err(|e| format!("{target:?}: {e}"))?;
            let len = match value {
                KernelValue::U32(_) | KernelValue::OrU32(_) => 4,
                KernelValue::U64(_) => 8,
                KernelValue::Bytes(b) => b.len() as u64,
            };
            self.check_writable(&place, len, sampler)
                .map_err(|e| format!("{target:?}: {e}"))?;
            planned.push((place.va, value));
        }
        let mut said = Vec::new();
        for (va, value) in planned {
            let bytes = match value {
                KernelValue::U32(v) => v.to_le_bytes().to_vec(),
                KernelValue::U64(v) => v.to_le_bytes().to_vec(),
                KernelValue::Bytes(b) => b.clone(),
                KernelValue::OrU32(mask) => {
                    let old = read_at(sampler, va, 4)?;
                    let old = u32::from_le_bytes([old[0], old[1], old[2], old[3]]);
                    (old | mask).to_le_bytes().to_vec()
                }
            };
            write_at(sampler, writer, va, &bytes)?;
            said.push(format!("{} bytes at {va:#x}", bytes.len()));
        }
        Ok(format!("wrote {}", said.join(", ")))
    }

    /// Reads `width` at `target`. A hot read (`frozen` false) of more than 8 bytes is read
    /// twice and must come out the same; one that does not is read once more, and a torn
    /// read that repeats is an error.
    pub(crate) fn read<M: GuestMemory>(
        &mut self,
        target: &KernelTarget,
        width: KernelValueWidth,
        frozen: bool,
        sampler: &Sampler<M>,
    ) -> Result<KernelValue, String> {
        if width.len() > MAX_KERNEL_READ {
            return Err(format!(
                "{} bytes asked, at most {MAX_KERNEL_READ} per read",
                width.len()
            ));
        }
        let place = self
            .place(target, sampler)
            .map_err(|e| format!("{target:?}: {e}"))?;
        let mut bytes = read_at(sampler, place.va, width.len())?;
        if !frozen && width.len() > 8 {
            let mut again = read_at(sampler, place.va, width.len())?;
            if again != bytes {
                bytes = again;
                again = read_at(sampler, place.va, width.len())?;
                if again != bytes {
                    return Err(format!(
                        "{target:?}: the {} bytes at {:#x} changed while read, twice (torn): \
                         read it cold",
                        width.len(),
                        place.va
                    ));
                }
            }
        }
        Ok(width.value(&bytes))
    }
}

fn read_at<M: GuestMemory>(sampler: &Sampler<M>, va: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; len];
    sampler
        .translator()
        .read_virt(sampler.memory(), va, &mut b)
        .map_err(|e| format!("reading {len} bytes at {va:#x}: {}", error_chain(&e)))?;
    Ok(b)
}

/// Writes `bytes` at kernel address `va`, translating each page.
fn write_at<M: GuestMemory>(
    sampler: &Sampler<M>,
    writer: &dyn GuestWriter,
    va: u64,
    bytes: &[u8],
) -> Result<(), String> {
    let mut done = 0usize;
    while done < bytes.len() {
        let at = va.wrapping_add(done as u64);
        let room = (PAGE - at % PAGE) as usize;
        let n = room.min(bytes.len() - done);
        let gpa = sampler
            .translator()
            .translate(sampler.memory(), at)
            .map_err(|e| format!("{at:#x} does not map: {}", error_chain(&e)))?;
        writer
            .write(gpa, &bytes[done..done + n])
            .map_err(|e| format!("writing {n} bytes at {at:#x} (physical {gpa:#x}): {e}"))?;
        done += n;
    }
    Ok(())
}
