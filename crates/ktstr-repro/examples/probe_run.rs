//! A stand-in for issue 17's in-guest agent, to capture real probe records: loads
//! `bpf/probe.bpf.o`, fills its config from a plan, attaches the kprobes and the exit
//! trigger (fentry/fexit and the scheduler's callbacks are the agent's job, not done here),
//! waits for the trigger's record or SECONDS, and prints the ring's records in sequence
//! order, one `REC <hex>` line each, then `HEAD <records written>`.
//!
//! `cargo build --release -p ktstr-repro --features agent --example probe_run`, then in the
//! guest: `probe_run probe.bpf.o plan.json SECONDS [POLL_MS]` (POLL_MS, default 200, is how
//! often the ring is read for the trigger's record; make it long when measuring overhead).

use std::error::Error;
use std::io::Write;
use std::time::{Duration, Instant};

use ktstr_repro::probe_config::{attachments, probe_configs, Program};
use ktstr_repro::ProbePlan;
use libbpf_rs::{KprobeOpts, MapCore, MapFlags, ObjectBuilder};

/// Slots of the program's ring (`RING_SLOTS` in probe.bpf.c).
const RING_SLOTS: u32 = 4096;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (obj_path, plan_path, secs, poll_ms) = match args.as_slice() {
        [_, o, p, s] => (o, p, s.parse::<u64>()?, 200),
        [_, o, p, s, ms] => (o, p, s.parse::<u64>()?, ms.parse::<u64>()?),
        _ => return Err("usage: probe_run OBJ PLAN.json SECONDS [POLL_MS]".into()),
    };
    let plan: ProbePlan = serde_json::from_slice(&std::fs::read(plan_path)?)?;

    let mut open = ObjectBuilder::default().open_file(obj_path)?;
    for mut p in open.progs_mut() {
        let n = p.name().to_string_lossy().into_owned();
        if n == "ktstr_repro_fentry" || n == "ktstr_repro_fexit" {
            p.set_autoload(false);
        }
    }
    let obj = open.load()?;
    let map = |name: &str| {
        obj.maps()
            .find(|m| m.name() == name)
            .ok_or_else(|| format!("no map {name}"))
    };
    let cfg = map("probe_cfg")?;
    for c in probe_configs(&plan) {
        cfg.update(&c.key.to_ne_bytes(), &c.value, MapFlags::ANY)?;
    }
    let prog = |name: &str| {
        obj.progs_mut()
            .find(|p| p.name() == name)
            .ok_or_else(|| format!("no program {name}"))
    };
    let kprobe = prog("ktstr_repro_kprobe")?;
    let exit = prog("ktstr_repro_exit")?;
    let mut links = Vec::new();
    for a in attachments(&plan) {
        let r = match a.program {
            Program::Kprobe => kprobe.attach_kprobe_with_opts(
                false,
                &a.target,
                KprobeOpts {
                    cookie: a.cookie,
                    ..Default::default()
                },
            ),
            Program::ExitTracepoint => exit.attach(),
            other => {
                eprintln!("skipped {other:?} on {}", a.target);
                continue;
            }
        };
        match r {
            Ok(l) => links.push(l),
            Err(e) => eprintln!("attach {:?} {}: {e}", a.program, a.target),
        }
    }
    println!("attached {}", links.len());
    std::io::stdout().flush()?;

    let ring = map("ring")?;
    let start = Instant::now();
    let mut recs: Vec<(u64, Vec<u8>)>;
    loop {
        recs = Vec::new();
        for i in 0..RING_SLOTS {
            let Some(v) = ring.lookup(&i.to_ne_bytes(), MapFlags::ANY)? else {
                continue;
            };
            let seq = u64::from_ne_bytes(v[0..8].try_into()?);
            let len = u32::from_ne_bytes(v[8..12].try_into()?) as usize;
            if seq != 0 && len <= v.len() - 16 {
                recs.push((seq, v[16..16 + len].to_vec()));
            }
        }
        let triggered = recs.iter().any(|(_, r)| r.get(5) == Some(&2));
        if triggered || start.elapsed() >= Duration::from_secs(secs) {
            break;
        }
        std::thread::sleep(Duration::from_millis(poll_ms));
    }
    drop(links);
    recs.sort_by_key(|(s, _)| *s);
    let mut out = std::io::stdout().lock();
    for (_, r) in &recs {
        let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(out, "REC {hex}")?;
    }
    writeln!(out, "HEAD {}", recs.last().map_or(0, |(s, _)| *s))?;
    Ok(())
}
