//! A full picture of the scheduler's state, read while the guest is frozen.
//!
//! Where a [`Sample`] is a few numbers per CPU, taken while the guest runs, a [`Snapshot`]
//! follows pointers: every task on the kernel's task list (thread-group leaders through
//! `task_struct.tasks`, their threads through `signal_struct.thread_head`), the tasks
//! queued on each DSQ (through `scx_dispatch_q.list`), each task's `sched_ext_entity`, and
//! the cgroup each task is in (`css_set.dfl_cgrp`, named by walking `kernfs_node`
//! parents). The caller freezes the vCPUs first (QMP `stop`, or pausing ktstr's own
//! vCPUs), so the lists cannot change under the walk; every walk is bounded anyway, and a
//! list that does not lead back to its head is reported, not followed forever.
//!
//! [`SnapLayout::from_btf`] resolves what the walks need once; members a kernel lacks
//! leave their part out and say so in [`Snapshot::errors`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::btf::{resolve, Btf, Field};
use crate::memory::GuestMemory;
use crate::sampler::{
    c_string as c_str, error_chain, value as at, DsqKind, DsqSample, Sample, SCHED_CLASSES,
};
use crate::translate::{TranslateError, Translator};

/// Most tasks a snapshot reads (thread-group leaders and threads together).
pub const MAX_TASKS: usize = 32768;
/// Most tasks read off one DSQ.
pub const MAX_DSQ_TASKS: usize = 4096;
/// Longest span of `task_struct` read per task.
const MAX_TASK_SPAN: u32 = 64 << 10;
/// Deepest cgroup path followed.
const MAX_CGROUP_DEPTH: usize = 64;
/// `task_struct.__state` of a runnable task.
const TASK_RUNNING: u64 = 0;

/// Where a snapshot's walks find things, resolved once from BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapLayout {
    /// `task_struct.tasks`: the list of thread-group leaders.
    tasks: Field,
    /// `task_struct.pid`, `.tgid`, `.comm`.
    pid: Field,
    tgid: Field,
    comm: Field,
    /// `task_struct.__state` (or `.state` before 5.14).
    state: Option<Field>,
    /// The CPU a task is on or last ran on: `thread_info.cpu` (x86) or `task_struct.cpu`.
    cpu: Option<Field>,
    /// `task_struct.on_rq`.
    on_rq: Option<Field>,
    /// `task_struct.sched_class`.
    sched_class: Option<Field>,
    /// `task_struct.signal`, `signal_struct.thread_head` and `task_struct.thread_node`.
    threads: Option<(Field, u32, u32)>,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.name` and its parent.
    cgroup: Option<CgroupFields>,
    /// `task_struct.scx.*`, when the kernel has sched_ext.
    scx: Option<ScxEntityFields>,
    /// Offset of `scx_dispatch_q.list` and `scx_dispatch_q.id`.
    dsq_list: Option<(u32, Field)>,
    /// Offset of `rq.scx.local_dsq`.
    local_dsq: Option<u32>,
    /// Bytes `start..end` of `task_struct` read per task.
    span: (u32, u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CgroupFields {
    cgroups: Field,
    dfl_cgrp: u32,
    kn: u32,
    name: u32,
    parent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScxEntityFields {
    dsq: Field,
    slice: Field,
    weight: Field,
    flags: Field,
    dsq_vtime: Option<Field>,
    /// `task_struct.scx.dsq_list.node`: where a queued task links into its DSQ's list.
    dsq_node: u32,
    /// `scx_dsq_list_node.flags` from the list node: a BPF iterator's cursor sits on a DSQ's
    /// list too, with `SCX_DSQ_LNODE_ITER_CURSOR` set there.
    cursor_flags: Option<u32>,
}

/// `SCX_DSQ_LNODE_ITER_CURSOR`: a list node that is an iterator's cursor, not a task.
const LNODE_ITER_CURSOR: u32 = 1;

impl SnapLayout {
    /// Resolves the layout; the task list itself is required, the rest optional.
    pub fn from_btf(btf: &Btf) -> Result<Self, String> {
        let opt = |ty: &str, path: &str| resolve(btf, ty, path).ok();
        let need = |ty: &str, path: &str| {
            resolve(btf, ty, path).map_err(|e| format!("BTF has no {ty}.{path}: {e}"))
        };
        let tasks = need("task_struct", "tasks")?;
        let pid = need("task_struct", "pid")?;
        let tgid = need("task_struct", "tgid")?;
        let comm = need("task_struct", "comm")?;
        let state = opt("task_struct", "__state").or_else(|| opt("task_struct", "state"));
        let cpu = opt("task_struct", "thread_info.cpu").or_else(|| opt("task_struct", "cpu"));
        let on_rq = opt("task_struct", "on_rq");
        let sched_class = opt("task_struct", "sched_class");
        let threads = match (
            opt("task_struct", "signal"),
            opt("signal_struct", "thread_head"),
            opt("task_struct", "thread_node"),
        ) {
            (Some(s), Some(h), Some(n)) => Some((s, h.offset_bytes, n.offset_bytes)),
            _ => None,
        };
        let cgroup = (|| {
            Some(CgroupFields {
                cgroups: opt("task_struct", "cgroups")?,
                dfl_cgrp: opt("css_set", "dfl_cgrp")?.offset_bytes,
                kn: opt("cgroup", "kn")?.offset_bytes,
                name: opt("kernfs_node", "name")?.offset_bytes,
                parent: opt("kernfs_node", "__parent")
                    .or_else(|| opt("kernfs_node", "parent"))?
                    .offset_bytes,
            })
        })();
        let scx = (|| {
            Some(ScxEntityFields {
                dsq: opt("task_struct", "scx.dsq")?,
                slice: opt("task_struct", "scx.slice")?,
                weight: opt("task_struct", "scx.weight")?,
                flags: opt("task_struct", "scx.flags")?,
                dsq_vtime: opt("task_struct", "scx.dsq_vtime"),
                dsq_node: opt("task_struct", "scx.dsq_list.node")?.offset_bytes,
                cursor_flags: match (
                    opt("scx_dsq_list_node", "flags"),
                    opt("scx_dsq_list_node", "node"),
                ) {
                    (Some(f), Some(n)) => f.offset_bytes.checked_sub(n.offset_bytes),
                    _ => None,
                },
            })
        })();
        let dsq_list = match (opt("scx_dispatch_q", "list"), opt("scx_dispatch_q", "id")) {
            (Some(l), Some(id)) => Some((l.offset_bytes, id)),
            _ => None,
        };
        let local_dsq = opt("rq", "scx.local_dsq").map(|f| f.offset_bytes);
        let mut fields = vec![tasks, pid, tgid, comm];
        fields.extend(state);
        fields.extend(cpu);
        fields.extend(on_rq);
        fields.extend(sched_class);
        fields.extend(threads.map(|t| t.0));
        fields.extend(cgroup.map(|c| c.cgroups));
        if let Some(s) = &scx {
            fields.extend([s.dsq, s.slice, s.weight, s.flags]);
            fields.extend(s.dsq_vtime);
        }
        let start = fields.iter().map(|f| f.offset_bytes).min().unwrap_or(0);
        let end = fields
            .iter()
            .map(|f| f.offset_bytes.saturating_add(f.size))
            .max()
            .unwrap_or(0);
        if end - start > MAX_TASK_SPAN {
            return Err(format!(
                "task_struct fields span {} bytes, more than the {MAX_TASK_SPAN} read",
                end - start
            ));
        }
        Ok(SnapLayout {
            tasks,
            pid,
            tgid,
            comm,
            state,
            cpu,
            on_rq,
            sched_class,
            threads,
            cgroup,
            scx,
            dsq_list,
            local_dsq,
            span: (start, end),
        })
    }
}

/// A task named by pid and comm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    /// Its pid (thread id).
    pub pid: i32,
    /// Its `comm`.
    pub comm: String,
}

/// A task's `sched_ext_entity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScxEntity {
    /// The id of the DSQ it is queued on (`scx.dsq->id`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsq_id: Option<u64>,
    /// `scx.slice`: nanoseconds of slice left.
    pub slice: u64,
    /// `scx.weight`.
    pub weight: u32,
    /// `scx.flags` (`SCX_TASK_QUEUED` is bit 0, ...).
    pub flags: u32,
    /// `scx.dsq_vtime`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsq_vtime: Option<u64>,
}

/// One task at the snapshot's instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// Its pid (thread id).
    pub pid: i32,
    /// Its thread group's id.
    pub tgid: i32,
    /// Its `comm`.
    pub comm: String,
    /// `__state` (0 is runnable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<u32>,
    /// The CPU it is on or last ran on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// `on_rq` (1 queued, 2 migrating).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_rq: Option<u32>,
    /// Its scheduling class: `fair`, `ext`, `rt`, `dl`, `idle` or `stop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The path of its cgroup on the default hierarchy (`/` for the root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Its `sched_ext_entity`, for a runnable task of the `ext` class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scx: Option<ScxEntity>,
}

/// One CPU at the snapshot's instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuSnapshot {
    /// CPU number.
    pub cpu: u32,
    /// The running task (`rq.curr`), unless the CPU is idle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curr: Option<TaskRef>,
    /// The tasks on its local DSQ, in queue order.
    pub local_dsq: Vec<TaskRef>,
}

/// One of the scheduler's DSQs, with its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DsqSnapshot {
    /// `dsq.id`.
    pub id: u64,
    /// Global, bypass or user.
    pub kind: DsqKind,
    /// The NUMA node of a global DSQ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<u32>,
    /// The CPU of a bypass DSQ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// `dsq.nr` as the kernel counts it.
    pub nr: u32,
    /// The tasks on it, in queue order.
    pub tasks: Vec<TaskRef>,
}

/// One cgroup and the tasks in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSnapshot {
    /// Its path on the default hierarchy (`/` for the root).
    pub path: String,
    /// The pids of its tasks, ascending.
    pub pids: Vec<i32>,
}

/// The guest's scheduling state at one frozen instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Its name: the `Op::capture_snapshot` name, `periodic_<i>`, or the watched symbol.
    pub name: String,
    /// Host milliseconds since the VM was launched when the vCPUs were frozen.
    pub at_ms: u64,
    /// Microseconds the vCPUs stayed frozen for it.
    pub frozen_us: u64,
    /// The runqueues and sched_ext's global state: counters, DSQ depths, exit kind.
    pub sample: serde_json::Value,
    /// Per CPU: the running task and the local DSQ's tasks.
    pub cpus: Vec<CpuSnapshot>,
    /// The scheduler's global, bypass and user DSQs with their tasks.
    pub dsqs: Vec<DsqSnapshot>,
    /// Every task, in task-list order.
    pub tasks: Vec<TaskSnapshot>,
    /// The cgroups that have tasks, by path.
    pub cgroups: Vec<CgroupSnapshot>,
    /// What could not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Snapshot {
    /// A snapshot of nothing but `sample`, with why nothing more was read.
    pub fn of_sample(sample: &Sample, errors: Vec<String>) -> Self {
        Snapshot {
            name: String::new(),
            at_ms: 0,
            frozen_us: 0,
            sample: serde_json::to_value(sample).unwrap_or_default(),
            cpus: Vec::new(),
            dsqs: Vec::new(),
            tasks: Vec::new(),
            cgroups: Vec::new(),
            errors,
        }
    }

    /// The task with pid `pid`.
    pub fn task(&self, pid: i32) -> Option<&TaskSnapshot> {
        self.tasks.iter().find(|t| t.pid == pid)
    }

    /// The cgroup at `path` (`/` for the root; a leading `/` is optional).
    pub fn cgroup(&self, path: &str) -> Option<&CgroupSnapshot> {
        let want = format!("/{}", path.trim_start_matches('/'));
        self.cgroups.iter().find(|c| c.path == want)
    }

    /// Every task queued on a DSQ, local ones included: `(dsq id or local CPU, task)`.
    pub fn queued(&self) -> impl Iterator<Item = &TaskRef> {
        self.cpus
            .iter()
            .flat_map(|c| c.local_dsq.iter())
            .chain(self.dsqs.iter().flat_map(|d| d.tasks.iter()))
    }

    /// One line for a person: tasks, runnable, queued, cgroups.
    pub fn line(&self) -> String {
        let runnable = self.tasks.iter().filter(|t| t.state == Some(0)).count();
        format!(
            "snapshot {} at {:.2} s: {} tasks ({} runnable), {} queued on DSQs, {} cgroups, \
             frozen {:.2} ms{}",
            self.name,
            self.at_ms as f64 / 1000.0,
            self.tasks.len(),
            runnable,
            self.queued().count(),
            self.cgroups.len(),
            self.frozen_us as f64 / 1000.0,
            match self.errors.len() {
                0 => String::new(),
                n => format!(", {n} errors"),
            }
        )
    }
}

/// The addresses a snapshot starts from.
#[derive(Debug, Clone, Copy)]
pub struct SnapRoots<'a> {
    /// `init_task`.
    pub init_task: Option<u64>,
    /// Each CPU's `struct rq`.
    pub rq_addrs: &'a [u64],
    /// The scheduling classes' addresses, in [`SCHED_CLASSES`] order.
    pub sched_classes: &'a [Option<u64>; 6],
}

/// What a snapshot walk reads with.
struct Walker<'a> {
    classes: &'a [Option<u64>; 6],
    t: &'a Translator,
    mem: &'a dyn GuestMemory,
    l: &'a SnapLayout,
    errors: Vec<String>,
    buf: Vec<u8>,
}

impl Walker<'_> {
    fn u64(&self, va: u64) -> Result<u64, TranslateError> {
        self.t.read_virt_u64(self.mem, va)
    }

    /// The `next` pointers of a `list_head` at `head`, up to `max`; `Err` names a broken
    /// or over-long list.
    fn list(&self, head: u64, max: usize) -> Result<Vec<u64>, String> {
        let mut out = Vec::new();
        let mut node = self
            .u64(head)
            .map_err(|e| format!("list head {head:#x}: {}", error_chain(&e)))?;
        while node != head {
            if out.len() >= max {
                return Err(format!(
                    "list at {head:#x}: more than {max} entries, the rest not read"
                ));
            }
            if node == 0 || node & (1 << 63) == 0 {
                return Err(format!(
                    "list at {head:#x}: entry {} points at {node:#x}",
                    out.len()
                ));
            }
            out.push(node);
            node = self
                .u64(node)
                .map_err(|e| format!("list at {head:#x}: {}", error_chain(&e)))?;
        }
        Ok(out)
    }

    fn task_ref(&self, task: u64) -> Result<TaskRef, TranslateError> {
        let (start, end) = {
            let s = self.l.pid.offset_bytes.min(self.l.comm.offset_bytes);
            let e = (self.l.pid.offset_bytes + self.l.pid.size)
                .max(self.l.comm.offset_bytes + self.l.comm.size);
            (s, e)
        };
        let mut b = vec![0u8; (end - start) as usize];
        self.t
            .read_virt(self.mem, task.wrapping_add(u64::from(start)), &mut b)?;
        Ok(TaskRef {
            pid: at(&self.l.pid, &b, start).unwrap_or(0) as u32 as i32,
            comm: c_str(&b, self.l.comm.offset_bytes - start, self.l.comm.size),
        })
    }

    /// The tasks queued on the DSQ at `dsq`, by its list.
    fn dsq_tasks(&mut self, dsq: u64, what: &str) -> Vec<TaskRef> {
        let (Some((list, _)), Some(scx)) = (self.l.dsq_list, self.l.scx) else {
            return Vec::new();
        };
        let nodes = match self.list(dsq.wrapping_add(u64::from(list)), MAX_DSQ_TASKS) {
            Ok(n) => n,
            Err(e) => {
                self.errors.push(format!("{what}: {e}"));
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for n in nodes {
            if let Some(off) = scx.cursor_flags {
                let mut b = [0u8; 4];
                let cursor = self
                    .t
                    .read_virt(self.mem, n.wrapping_add(u64::from(off)), &mut b)
                    .is_ok_and(|()| u32::from_le_bytes(b) & LNODE_ITER_CURSOR != 0);
                if cursor {
                    continue;
                }
            }
            match self.task_ref(n.wrapping_sub(u64::from(scx.dsq_node))) {
                Ok(t) => out.push(t),
                Err(e) => {
                    self.errors
                        .push(format!("{what}: a queued task: {}", error_chain(&e)));
                    break;
                }
            }
        }
        out
    }

    /// The path of the cgroup at `cgrp`, through its kernfs node's parents.
    fn cgroup_path(&self, c: &CgroupFields, cgrp: u64) -> Result<String, String> {
        let e = |what: &str, err: TranslateError| format!("{what}: {}", error_chain(&err));
        let mut kn = self
            .u64(cgrp.wrapping_add(u64::from(c.kn)))
            .map_err(|err| e("cgroup.kn", err))?;
        let mut parts = Vec::new();
        for _ in 0..MAX_CGROUP_DEPTH {
            if kn == 0 {
                break;
            }
            let parent = self
                .u64(kn.wrapping_add(u64::from(c.parent)))
                .map_err(|err| e("kernfs_node.parent", err))?;
            if parent == 0 {
                // The root's own name is the hierarchy's, not part of the path.
                break;
            }
            let name = self
                .u64(kn.wrapping_add(u64::from(c.name)))
                .map_err(|err| e("kernfs_node.name", err))?;
            let mut b = [0u8; 256];
            self.t
                .read_virt(self.mem, name, &mut b)
                .or_else(|_| self.t.read_virt(self.mem, name, &mut b[..64]))
                .map_err(|err| e("a cgroup's name", err))?;
            parts.push(c_str(&b, 0, 256));
            kn = parent;
        }
        parts.reverse();
        Ok(format!("/{}", parts.join("/")))
    }

    fn task(
        &mut self,
        task: u64,
        paths: &mut BTreeMap<u64, Option<String>>,
        dsq_ids: &mut BTreeMap<u64, Option<u64>>,
    ) -> Result<TaskSnapshot, TranslateError> {
        let l = self.l;
        let (start, end) = l.span;
        self.buf.resize((end - start) as usize, 0);
        self.t
            .read_virt(self.mem, task.wrapping_add(u64::from(start)), &mut self.buf)?;
        let b = &self.buf;
        let get = |f: &Field| at(f, b, start);
        let state = l.state.as_ref().and_then(get);
        let mut out = TaskSnapshot {
            pid: get(&l.pid).unwrap_or(0) as u32 as i32,
            tgid: get(&l.tgid).unwrap_or(0) as u32 as i32,
            comm: c_str(b, l.comm.offset_bytes - start, l.comm.size),
            state: state.map(|s| s as u32),
            cpu: l.cpu.as_ref().and_then(get).map(|c| c as u32),
            on_rq: l.on_rq.as_ref().and_then(get).map(|c| c as u32),
            class: l.sched_class.as_ref().and_then(get).and_then(|p| {
                let i = self.classes.iter().position(|c| *c == Some(p))?;
                Some(SCHED_CLASSES[i].to_string())
            }),
            cgroup: None,
            scx: None,
        };
        let cgrp = l
            .cgroup
            .and_then(|c| get(&c.cgroups).map(|css_set| (c, css_set)));
        let is_ext = out.class.as_deref() == Some("ext");
        let scx = l
            .scx
            .filter(|_| is_ext && state == Some(TASK_RUNNING))
            .map(|s| {
                (
                    s,
                    get(&s.dsq).unwrap_or(0),
                    ScxEntity {
                        dsq_id: None,
                        slice: get(&s.slice).unwrap_or(0),
                        weight: get(&s.weight).unwrap_or(0) as u32,
                        flags: get(&s.flags).unwrap_or(0) as u32,
                        dsq_vtime: s.dsq_vtime.as_ref().and_then(get),
                    },
                )
            });
        if let Some((c, css_set)) = cgrp {
            let cg = self.u64(css_set.wrapping_add(u64::from(c.dfl_cgrp)))?;
            let pid = out.pid;
            out.cgroup = paths
                .entry(cg)
                .or_insert_with(|| match self.cgroup_path(&c, cg) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        self.errors.push(format!("cgroup of pid {pid}: {e}"));
                        None
                    }
                })
                .clone();
        }
        if let Some((_, dsq, mut e)) = scx {
            if dsq != 0 {
                e.dsq_id = *dsq_ids.entry(dsq).or_insert_with(|| {
                    l.dsq_list.and_then(|(_, id)| {
                        let mut b = [0u8; 8];
                        let n = (id.size as usize).min(8);
                        self.t
                            .read_virt(
                                self.mem,
                                dsq.wrapping_add(u64::from(id.offset_bytes)),
                                &mut b[..n],
                            )
                            .ok()
                            .map(|()| u64::from_le_bytes(b))
                    })
                });
            }
            out.scx = Some(e);
        }
        Ok(out)
    }
}

/// Reads a snapshot: the caller has frozen the vCPUs and took `sample` in the same freeze
/// (its DSQs are the ones whose tasks are listed).
pub fn read_snapshot(
    t: &Translator,
    mem: &dyn GuestMemory,
    l: &SnapLayout,
    roots: SnapRoots<'_>,
    sample: &Sample,
) -> Snapshot {
    let mut w = Walker {
        classes: roots.sched_classes,
        t,
        mem,
        l,
        errors: Vec::new(),
        buf: Vec::new(),
    };
    let mut cpus = Vec::new();
    for (cpu, rq) in roots.rq_addrs.iter().enumerate() {
        let curr = sample
            .cpus
            .get(cpu)
            .and_then(|c| c.rq.as_ref())
            .filter(|r| !r.curr_is_idle)
            .map(|r| TaskRef {
                pid: r.curr_pid,
                comm: r.curr_comm.clone(),
            });
        let local_dsq = match l.local_dsq {
            Some(off) => w.dsq_tasks(
                rq.wrapping_add(u64::from(off)),
                &format!("CPU {cpu} local DSQ"),
            ),
            None => Vec::new(),
        };
        cpus.push(CpuSnapshot {
            cpu: cpu as u32,
            curr,
            local_dsq,
        });
    }
    let mut dsq_out = Vec::new();
    let sampled: &[DsqSample] = sample.scx.as_ref().map_or(&[], |s| &s.dsqs);
    for d in sampled {
        let tasks = w.dsq_tasks(d.addr, &format!("DSQ {:#x}", d.id));
        dsq_out.push(DsqSnapshot {
            id: d.id,
            kind: d.kind,
            node: d.node,
            cpu: d.cpu,
            nr: d.nr,
            tasks,
        });
    }
    let mut tasks = Vec::new();
    if let Some(init) = roots.init_task {
        let mut paths = BTreeMap::new();
        let mut dsq_ids = BTreeMap::new();
        let toff = u64::from(l.tasks.offset_bytes);
        let leaders = match w.list(init.wrapping_add(toff), MAX_TASKS) {
            Ok(v) => v,
            Err(e) => {
                w.errors.push(format!("task list: {e}"));
                Vec::new()
            }
        };
        for leader in std::iter::once(init).chain(leaders.iter().map(|n| n.wrapping_sub(toff))) {
            if tasks.len() >= MAX_TASKS {
                w.errors
                    .push(format!("more than {MAX_TASKS} tasks, the rest not read"));
                break;
            }
            let mut members = vec![leader];
            if let Some((signal, head, node)) = l.threads {
                let threads = w
                    .u64(leader.wrapping_add(u64::from(signal.offset_bytes)))
                    .map_err(|e| error_chain(&e))
                    .and_then(|sig| {
                        if sig == 0 {
                            return Ok(Vec::new());
                        }
                        w.list(sig.wrapping_add(u64::from(head)), MAX_TASKS)
                    });
                match threads {
                    Ok(v) if !v.is_empty() => {
                        members = v.iter().map(|n| n.wrapping_sub(u64::from(node))).collect()
                    }
                    Ok(_) => {}
                    Err(e) => w.errors.push(format!("threads of task {leader:#x}: {e}")),
                }
            }
            for m in members {
                match w.task(m, &mut paths, &mut dsq_ids) {
                    Ok(t) => tasks.push(t),
                    Err(e) => w
                        .errors
                        .push(format!("task at {m:#x}: {}", error_chain(&e))),
                }
            }
        }
    } else {
        w.errors
            .push("no init_task symbol: tasks and cgroups not read".into());
    }
    let mut by_cgroup: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for t in &tasks {
        if let Some(c) = &t.cgroup {
            by_cgroup.entry(c.clone()).or_default().push(t.pid);
        }
    }
    let cgroups = by_cgroup
        .into_iter()
        .map(|(path, mut pids)| {
            pids.sort_unstable();
            CgroupSnapshot { path, pids }
        })
        .collect();
    Snapshot {
        cpus,
        dsqs: dsq_out,
        tasks,
        cgroups,
        ..Snapshot::of_sample(sample, w.errors)
    }
}
