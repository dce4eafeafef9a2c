//! `watch_bpf_maps`: fields of a scheduler's BPF maps, read from the host at every monitor
//! tick without freezing the guest, written to the monitor's JSON lines and trace, and folded
//! into run metrics (`VmResult::run_metric("<object>_<label>")`).
//!
//! The maps appear when the scheduler attaches: until a watch's map exists it is looked for
//! again (at most every 50 ms); once found, its leaf's address is kept and only its bytes are
//! read each tick.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ktstr_btf_monitor::bpf::{
    list_maps, map_btf, value_field, BpfLayout, BpfMapInfo, BPF_MAP_TYPE_PERCPU_ARRAY,
};
use ktstr_btf_monitor::{GuestMemory, Sampler};

/// How a watched field's samples fold into run metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpfMapAgg {
    /// A gauge: the mean over the run's samples.
    Scalar,
    /// A counter: its value at the last sample.
    ScalarCounter,
    /// A per-CPU gauge (per-CPU array map): `_avg` (mean over samples of the CPUs' mean) and
    /// `_max` (the largest any CPU showed).
    PerCpu,
    /// A per-CPU counter: the CPUs' sum at the last sample.
    PerCpuCounter,
}

/// One watched field: map (by how its name ends), field path, folding, metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchBpfMap {
    /// How the map's name ends (`.bss`, or a named map's name).
    pub map_suffix: &'static str,
    /// A global (`nr_dispatched`) or a path (`stats.avg_lat`) in the map's value.
    pub field: &'static str,
    /// How its samples fold.
    pub agg: BpfMapAgg,
    /// The metric's name after the scheduler's object name (`<object>_<label>`).
    pub label: &'static str,
}

impl WatchBpfMap {
    /// Watches `field` of the map whose name ends with `map_suffix`.
    pub const fn new(
        map_suffix: &'static str,
        field: &'static str,
        agg: BpfMapAgg,
        label: &'static str,
    ) -> Self {
        WatchBpfMap {
            map_suffix,
            field,
            agg,
            label,
        }
    }
}

/// A watch whose leaf was found: the addresses read each tick (one, or one per CPU).
#[derive(Debug)]
struct Resolved {
    addrs: Vec<u64>,
    size: u32,
    key: String,
}

/// The watches of one run and what they saw.
pub(crate) struct BpfWatches {
    watches: Vec<(WatchBpfMap, Option<Resolved>)>,
    layout: Result<BpfLayout, String>,
    checked: Option<Instant>,
    /// Per metric key: every sample (one value, or one per CPU).
    series: BTreeMap<String, (BpfMapAgg, Vec<Vec<u64>>)>,
    /// Why a watch could not be resolved (kept once per watch).
    pub(crate) errors: Vec<String>,
}

impl BpfWatches {
    /// Watches `watches`, with `layout` from the kernel's BTF.
    pub(crate) fn new(watches: &[WatchBpfMap], layout: Result<BpfLayout, String>) -> Self {
        BpfWatches {
            watches: watches.iter().map(|w| (*w, None)).collect(),
            layout,
            checked: None,
            series: BTreeMap::new(),
            errors: Vec::new(),
        }
    }

    /// Looks for the maps of unresolved watches (`map_idr` at `idr`), at most every 50 ms.
    fn resolve<M: GuestMemory>(&mut self, sampler: &Sampler<M>, idr: u64) {
        if self.watches.iter().all(|w| w.1.is_some())
            || self
                .checked
                .is_some_and(|t| t.elapsed() < Duration::from_millis(50))
        {
            return;
        }
        self.checked = Some(Instant::now());
        let Ok(l) = &self.layout else { return };
        let (t, mem) = (sampler.translator(), sampler.memory());
        let Ok(maps) = list_maps(&t, mem, l, idr) else {
            return;
        };
        let object = maps
            .iter()
            .find(|m| m.name.ends_with(".bss") || m.name.ends_with(".data"))
            .and_then(|m| m.name.split_once('.'))
            .map(|(o, _)| o.to_string());
        for (w, r) in self.watches.iter_mut().filter(|w| w.1.is_none()) {
            let Some(m) = maps.iter().find(|m| m.name.ends_with(w.map_suffix)) else {
                continue;
            };
            match resolve_one(sampler, l, m, w) {
                Ok((addrs, size)) => {
                    let obj = m
                        .name
                        .split_once('.')
                        .map(|(o, _)| o.to_string())
                        .or_else(|| object.clone())
                        .unwrap_or_else(|| "bpf".into());
                    *r = Some(Resolved {
                        addrs,
                        size,
                        key: format!("{obj}_{}", w.label),
                    });
                }
                Err(e) => {
                    let line = format!("{} {}: {e}", w.map_suffix, w.field);
                    if !self.errors.contains(&line) {
                        self.errors.push(line);
                    }
                }
            }
        }
    }

    /// Reads every resolved watch once: `(metric key, values)` for the JSON line and trace.
    pub(crate) fn sample<M: GuestMemory>(
        &mut self,
        sampler: &Sampler<M>,
        idr: Option<u64>,
    ) -> BTreeMap<String, Vec<u64>> {
        if let Some(idr) = idr {
            self.resolve(sampler, idr);
        }
        let mut out = BTreeMap::new();
        let (t, mem) = (sampler.translator(), sampler.memory());
        for (w, r) in &self.watches {
            let Some(r) = r else { continue };
            let mut vals = Vec::with_capacity(r.addrs.len());
            for a in &r.addrs {
                let mut b = [0u8; 8];
                if t.read_virt(mem, *a, &mut b[..r.size as usize]).is_err() {
                    break;
                }
                vals.push(u64::from_le_bytes(b));
            }
            if vals.len() == r.addrs.len() {
                self.series
                    .entry(r.key.clone())
                    .or_insert_with(|| (w.agg, Vec::new()))
                    .1
                    .push(vals.clone());
                out.insert(r.key.clone(), vals);
            }
        }
        out
    }

    /// The run metrics the samples fold into.
    pub(crate) fn metrics(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (key, (agg, samples)) in &self.series {
            let Some(last) = samples.last() else { continue };
            let mean = |v: &[u64]| v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
            match agg {
                BpfMapAgg::Scalar => {
                    let all: Vec<u64> = samples.iter().filter_map(|s| s.first().copied()).collect();
                    out.insert(key.clone(), mean(&all));
                }
                BpfMapAgg::ScalarCounter => {
                    out.insert(key.clone(), last.first().copied().unwrap_or(0) as f64);
                }
                BpfMapAgg::PerCpu => {
                    let avgs: Vec<f64> = samples.iter().map(|s| mean(s)).collect();
                    let max = samples.iter().flatten().copied().max().unwrap_or(0);
                    out.insert(
                        format!("{key}_avg"),
                        avgs.iter().sum::<f64>() / avgs.len() as f64,
                    );
                    out.insert(format!("{key}_max"), max as f64);
                }
                BpfMapAgg::PerCpuCounter => {
                    out.insert(key.clone(), last.iter().map(|x| *x as f64).sum());
                }
            }
        }
        out
    }

    /// Watches whose map never appeared.
    pub(crate) fn unresolved(&self) -> Vec<String> {
        self.watches
            .iter()
            .filter(|w| w.1.is_none())
            .map(|(w, _)| format!("{} {}: no such map appeared", w.map_suffix, w.field))
            .collect()
    }
}

/// The addresses of watch `w`'s leaf in map `m`, and its size.
fn resolve_one<M: GuestMemory>(
    sampler: &Sampler<M>,
    l: &BpfLayout,
    m: &BpfMapInfo,
    w: &WatchBpfMap,
) -> Result<(Vec<u64>, u32), String> {
    let (t, mem) = (sampler.translator(), sampler.memory());
    let base = m
        .value_addr
        .ok_or_else(|| format!("map {} is not an array map", m.name))?;
    let btf = map_btf(&t, mem, l, m)?;
    let (off, size) = value_field(&btf, m.btf_value_type_id, w.field)?;
    if size == 0 || size > 8 || off + size > m.value_size {
        return Err(format!(
            "`{}` ({size} bytes at {off}) is not a scalar of the {}-byte value",
            w.field, m.value_size
        ));
    }
    let per_cpu = matches!(w.agg, BpfMapAgg::PerCpu | BpfMapAgg::PerCpuCounter);
    if per_cpu != (m.map_type == BPF_MAP_TYPE_PERCPU_ARRAY) {
        return Err(format!(
            "map {} is {}a per-CPU array, but the watch folds it {}",
            m.name,
            if per_cpu { "not " } else { "" },
            if per_cpu { "per CPU" } else { "as one value" }
        ));
    }
    if per_cpu {
        let pcpu = t
            .read_virt_u64(mem, base)
            .map_err(|e| format!("map {}'s per-CPU pointer: {e}", m.name))?;
        let addrs = sampler
            .info()
            .per_cpu_offsets
            .iter()
            .map(|o| pcpu.wrapping_add(*o).wrapping_add(u64::from(off)))
            .collect();
        Ok((addrs, size))
    } else {
        Ok((vec![base + u64::from(off)], size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_fold_by_their_kind() {
        let mut w = BpfWatches::new(&[], Err("unused".into()));
        w.series
            .insert("o_g".into(), (BpfMapAgg::Scalar, vec![vec![1], vec![3]]));
        w.series.insert(
            "o_c".into(),
            (BpfMapAgg::ScalarCounter, vec![vec![1], vec![9]]),
        );
        w.series.insert(
            "o_p".into(),
            (BpfMapAgg::PerCpu, vec![vec![1, 3], vec![5, 7]]),
        );
        w.series.insert(
            "o_pc".into(),
            (BpfMapAgg::PerCpuCounter, vec![vec![1, 1], vec![4, 6]]),
        );
        let m = w.metrics();
        assert_eq!(m["o_g"], 2.0);
        assert_eq!(m["o_c"], 9.0);
        assert_eq!(m["o_p_avg"], 4.0);
        assert_eq!(m["o_p_max"], 7.0);
        assert_eq!(m["o_pc"], 10.0);
        assert!(!m.contains_key("o_p"));
    }
}
