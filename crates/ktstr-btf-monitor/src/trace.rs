//! A Chrome/Perfetto trace (`{"traceEvents": [...]}`) of per-CPU running tasks and
//! queue depths, written incrementally from a sequence of [`Sample`]s.
//!
//! One process (pid 1, "guest CPUs") holds one thread track per CPU (tid = CPU number,
//! named `CPU n`). On it:
//!
//! - a complete event (`"ph":"X"`) per run of the same non-idle current task: named by
//!   its `comm`, with `args.pid`; it starts at the first sample that saw the task and
//!   ends at the first sample that saw another one (or at the last sample of the run);
//! - a counter (`"ph":"C"`) named `CPU n runqueue` with series `nr_running` and
//!   `scx_nr_running`, written when either changes.
//!
//! While a sched_ext scheduler is attached, two process-wide counters as well, each
//! written when it changes: `sched_ext DSQs` (series `global node N` per global DSQ,
//! `bypass`, the sum over the per-CPU bypass DSQs, and `dsq <id>` per user DSQ) and
//! `sched_ext events` (one series per event counter, summed over CPUs).
//!
//! Times are microseconds of the sample clock. Memory is bounded by the number of
//! CPUs; [`TraceWriter::finish`] closes the JSON and must be called for a valid file.

use std::io::{self, Write};

use serde_json::{json, Map, Value};

use crate::sampler::{DsqKind, Sample, ScxSample};

/// The trace's process id.
const PID: u32 = 1;

#[derive(Debug, Clone, Default)]
struct CpuTrack {
    named: bool,
    /// The running task: (pid, comm, start t_ns).
    run: Option<(i32, String, u64)>,
    counters: Option<(u32, u32)>,
}

/// Writes the trace as samples arrive.
#[derive(Debug)]
pub struct TraceWriter<W: Write> {
    out: W,
    first: bool,
    last_t: u64,
    cpus: Vec<CpuTrack>,
    events: u64,
    /// Last `sched_ext DSQs` counter arguments written.
    last_dsqs: Option<Map<String, Value>>,
    /// Last `sched_ext events` counter arguments written.
    last_events: Option<Map<String, Value>>,
}

impl<W: Write> TraceWriter<W> {
    /// Writes the opening of the trace.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n")?;
        let mut w = TraceWriter {
            out,
            first: true,
            last_t: 0,
            cpus: Vec::new(),
            events: 0,
            last_dsqs: None,
            last_events: None,
        };
        w.event(
            &json!({"ph": "M", "name": "process_name", "pid": PID, "tid": 0,
                        "args": {"name": "guest CPUs"}}),
        )?;
        Ok(w)
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    fn event(&mut self, v: &serde_json::Value) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut self.out, v)?;
        self.events += 1;
        Ok(())
    }

    fn end_run(&mut self, cpu: usize, t_ns: u64) -> io::Result<()> {
        if let Some((pid, comm, start)) = self.cpus[cpu].run.take() {
            let ev = json!({"ph": "X", "name": comm, "pid": PID, "tid": cpu,
                            "ts": start as f64 / 1e3,
                            "dur": t_ns.saturating_sub(start) as f64 / 1e3,
                            "args": {"pid": pid}});
            self.event(&ev)?;
        }
        Ok(())
    }

    /// Adds one sample taken at `t_ns`.
    pub fn sample(&mut self, t_ns: u64, sample: &Sample) -> io::Result<()> {
        self.last_t = t_ns;
        for c in &sample.cpus {
            let i = c.cpu as usize;
            if i > 4096 {
                continue;
            }
            if i >= self.cpus.len() {
                self.cpus.resize(i + 1, CpuTrack::default());
            }
            if !self.cpus[i].named {
                self.cpus[i].named = true;
                self.event(
                    &json!({"ph": "M", "name": "thread_name", "pid": PID, "tid": i,
                                   "args": {"name": format!("CPU {i}")}}),
                )?;
                self.event(&json!({"ph": "M", "name": "thread_sort_index", "pid": PID,
                                   "tid": i, "args": {"sort_index": i}}))?;
            }
            let Some(rq) = &c.rq else {
                self.end_run(i, t_ns)?;
                continue;
            };
            let same = self.cpus[i]
                .run
                .as_ref()
                .is_some_and(|(pid, comm, _)| *pid == rq.curr_pid && *comm == rq.curr_comm);
            if !same {
                self.end_run(i, t_ns)?;
                if !rq.curr_is_idle {
                    self.cpus[i].run = Some((rq.curr_pid, rq.curr_comm.clone(), t_ns));
                }
            }
            let counters = (rq.nr_running, rq.scx_nr_running.unwrap_or(0));
            if self.cpus[i].counters != Some(counters) {
                self.cpus[i].counters = Some(counters);
                self.event(&json!({"ph": "C", "name": format!("CPU {i} runqueue"),
                                   "pid": PID, "tid": i, "ts": t_ns as f64 / 1e3,
                                   "args": {"nr_running": counters.0,
                                            "scx_nr_running": counters.1}}))?;
            }
        }
        if let Some(scx) = &sample.scx {
            self.scx_counters(t_ns, scx)?;
        }
        Ok(())
    }

    /// Adds a counter track `name` with `values` at `t_ns` (one line per key).
    pub fn counters(
        &mut self,
        name: &str,
        t_ns: u64,
        values: &std::collections::BTreeMap<String, f64>,
    ) -> io::Result<()> {
        let args: Map<String, Value> = values.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        self.counter(name, t_ns, &args)
    }

    fn counter(&mut self, name: &str, t_ns: u64, args: &Map<String, Value>) -> io::Result<()> {
        self.event(&json!({"ph": "C", "name": name, "pid": PID, "tid": 0,
                           "ts": t_ns as f64 / 1e3, "args": args}))
    }

    fn scx_counters(&mut self, t_ns: u64, scx: &ScxSample) -> io::Result<()> {
        let mut dsqs = Map::new();
        let mut bypass = 0u64;
        for d in &scx.dsqs {
            match d.kind {
                DsqKind::Global => {
                    let node = d.node.unwrap_or(0);
                    dsqs.insert(format!("global node {node}"), d.nr.into());
                }
                DsqKind::Bypass => bypass += u64::from(d.nr),
                DsqKind::User => {
                    dsqs.insert(format!("dsq {}", d.id), d.nr.into());
                }
            }
        }
        if scx.dsqs.iter().any(|d| d.kind == DsqKind::Bypass) {
            dsqs.insert("bypass".into(), bypass.into());
        }
        let events: Map<String, Value> = scx
            .events
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect();
        let dsqs_changed = !dsqs.is_empty() && self.last_dsqs.as_ref() != Some(&dsqs);
        let events_changed = !events.is_empty() && self.last_events.as_ref() != Some(&events);
        if dsqs_changed {
            self.counter("sched_ext DSQs", t_ns, &dsqs)?;
            self.last_dsqs = Some(dsqs);
        }
        if events_changed {
            self.counter("sched_ext events", t_ns, &events)?;
            self.last_events = Some(events);
        }
        Ok(())
    }

    /// Ends the open runs at the last sample, closes the JSON and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let t = self.last_t;
        for i in 0..self.cpus.len() {
            self.end_run(i, t)?;
        }
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::tests::{rq, sample};
    use serde_json::Value;

    const MS: u64 = 1_000_000;

    fn events<'a>(v: &'a Value, ph: &str, tid: u64) -> Vec<&'a Value> {
        v["traceEvents"]
            .as_array()
            .expect("traceEvents")
            .iter()
            .filter(|e| e["ph"] == ph && e["tid"] == tid)
            .collect()
    }

    #[test]
    fn runs_and_counters_per_cpu() {
        let mut w = TraceWriter::new(Vec::new()).unwrap();
        // CPU 1: t7 for 0..30 ms, t8 at 30..50 ms (open at the end); CPU 0 idle, then a
        // task with a quote in its comm.
        for i in 0..5u64 {
            let pid = if i < 3 { 7 } else { 8 };
            let mut cpu0 = rq(0, 0, i, 0);
            if i == 4 {
                cpu0 = rq(1, 9, i, 1);
                cpu0.curr_comm = "a\"b".into();
            }
            w.sample(i * 10 * MS, &sample(vec![cpu0, rq(3, pid, i, i)]))
                .unwrap();
        }
        let bytes = w.finish().unwrap();
        let v: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        let x1 = events(&v, "X", 1);
        assert_eq!(x1.len(), 2, "{x1:?}");
        assert_eq!(x1[0]["name"], "t7");
        assert_eq!(x1[0]["args"]["pid"], 7);
        assert_eq!(
            (x1[0]["ts"].as_f64(), x1[0]["dur"].as_f64()),
            (Some(0.0), Some(30_000.0))
        );
        assert_eq!(x1[1]["name"], "t8");
        assert_eq!(
            (x1[1]["ts"].as_f64(), x1[1]["dur"].as_f64()),
            (Some(30_000.0), Some(10_000.0))
        );
        // The idle task is not an event; the quoted comm survives.
        let x0 = events(&v, "X", 0);
        assert_eq!(x0.len(), 1);
        assert_eq!(x0[0]["name"], "a\"b");
        // Counters only on change: CPU 1 stays at 3, CPU 0 goes 0 -> 1.
        let c1 = events(&v, "C", 1);
        assert_eq!(c1.len(), 1);
        assert_eq!(c1[0]["args"]["nr_running"], 3);
        assert_eq!(c1[0]["args"]["scx_nr_running"], 0);
        assert_eq!(c1[0]["name"], "CPU 1 runqueue");
        assert_eq!(events(&v, "C", 0).len(), 2);
        // Named tracks.
        let names = events(&v, "M", 1);
        assert!(names.iter().any(|e| e["args"]["name"] == "CPU 1"));
    }

    #[test]
    fn sched_ext_dsq_and_event_counters_on_change() {
        use crate::sampler::DsqSample;
        let scx = |fallback: i64, global: u32, bypass: [u32; 2]| ScxSample {
            state: "enabled".into(),
            ops: Some("simple".into()),
            exit_kind: Some("none".into()),
            events: [("select_cpu_fallback".to_string(), fallback)].into(),
            dsqs: std::iter::once(DsqSample {
                id: 1 << 63 | 1,
                kind: DsqKind::Global,
                node: Some(0),
                cpu: None,
                nr: global,
                addr: 0,
            })
            .chain((0..2).map(|c| DsqSample {
                id: 1 << 63 | 3,
                kind: DsqKind::Bypass,
                node: None,
                cpu: Some(c),
                nr: bypass[c as usize],
                addr: 0,
            }))
            .chain(std::iter::once(DsqSample {
                id: 0,
                kind: DsqKind::User,
                node: None,
                cpu: None,
                nr: global * 2,
                addr: 0,
            }))
            .collect(),
            error: None,
        };
        let mut w = TraceWriter::new(Vec::new()).unwrap();
        for (i, x) in [scx(1, 0, [0, 0]), scx(1, 0, [0, 0]), scx(2, 4, [1, 2])]
            .into_iter()
            .enumerate()
        {
            let mut s = sample(vec![rq(1, 5, 0, 0)]);
            s.scx = Some(x);
            w.sample(i as u64 * MS, &s).unwrap();
        }
        let v: Value = serde_json::from_slice(&w.finish().unwrap()).unwrap();
        let c: Vec<&Value> = events(&v, "C", 0)
            .into_iter()
            .filter(|e| {
                e["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("sched_ext"))
            })
            .collect();
        assert_eq!(c.len(), 4, "{c:?}");
        assert_eq!(
            c[0]["args"],
            json!({"global node 0": 0, "bypass": 0, "dsq 0": 0})
        );
        assert_eq!(c[1]["args"], json!({"select_cpu_fallback": 1}));
        assert_eq!(
            c[2]["args"],
            json!({"global node 0": 4, "bypass": 3, "dsq 0": 8})
        );
        assert_eq!(c[2]["ts"].as_f64(), Some(2000.0));
        assert_eq!(c[3]["args"], json!({"select_cpu_fallback": 2}));
    }

    #[test]
    fn an_empty_trace_is_valid_and_unreadable_cpus_end_runs() {
        let bytes = TraceWriter::new(Vec::new()).unwrap().finish().unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["traceEvents"].as_array().map(Vec::len), Some(1));

        let mut w = TraceWriter::new(Vec::new()).unwrap();
        w.sample(0, &sample(vec![rq(1, 5, 0, 0)])).unwrap();
        let mut s = sample(vec![rq(1, 5, 0, 0)]);
        s.cpus[0].rq = None;
        s.cpus[0].error = Some("unreadable".into());
        w.sample(MS, &s).unwrap();
        w.sample(2 * MS, &sample(vec![rq(1, 5, 0, 0)])).unwrap();
        let v: Value = serde_json::from_slice(&w.finish().unwrap()).unwrap();
        let x = events(&v, "X", 0);
        assert_eq!(x.len(), 2);
        assert_eq!(x[0]["dur"].as_f64(), Some(1000.0));
        assert_eq!(x[1]["dur"].as_f64(), Some(0.0));
    }
}
