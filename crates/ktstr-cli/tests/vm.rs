//! VM tests: boot the real kernel under the engine `auto` picks (QEMU TCG on
//! hosts without hardware KVM) and check what the guest reports.
//!
//! They need QEMU and a cached kernel (`scripts/setup`). Without them each test
//! prints why it skipped, unless `KTSTR_REQUIRE_VM=1` (set by `.ci/run`), which
//! turns a missing prerequisite into a failure. VMs run one at a time (a lock
//! file), so the suite stays fast and steady on a 2-CPU host.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ktstr, scx_simple, skip, test_kernel, text, vm_slot, KTSTR};

/// Reads the guest's own view of its topology, one `key value` line per fact.
const TOPOLOGY_SCRIPT: &str = r#"
for c in /sys/devices/system/cpu/cpu[0-9]*; do
  n=${c##*cpu}
  echo "llc$n $(cat $c/cache/index3/shared_cpu_list)"
  echo "smt$n $(cat $c/topology/thread_siblings_list)"
done
for n in /sys/devices/system/node/node[0-9]*; do echo "node${n##*node} $(cat $n/cpulist)"; done
echo "online $(cat /sys/devices/system/cpu/online)"
"#;

fn check_topology(spec: &str) {
    let Some(_slot) = vm_slot() else { return };
    let topo: ktstr::Topology = spec.parse().unwrap();
    let out = ktstr(&[
        "exec",
        "--topology",
        spec,
        "--",
        "sh",
        "-c",
        TOPOLOGY_SCRIPT,
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "ktstr failed: {}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    let facts: std::collections::BTreeMap<&str, &str> =
        stdout.lines().filter_map(|l| l.split_once(' ')).collect();
    let want = topo.expected();
    let last = topo.total_cpus() - 1;
    assert_eq!(
        facts.get("online").copied(),
        Some(format!("0-{last}").as_str())
            .filter(|_| last > 0)
            .or(Some("0")),
        "{stdout}"
    );
    for (cpu, llc) in want.llc_shared_cpu_lists.iter().enumerate() {
        assert_eq!(
            facts.get(format!("llc{cpu}").as_str()).copied(),
            Some(llc.as_str()),
            "LLC of cpu{cpu} for {spec}:\n{stdout}"
        );
    }
    for (cpu, smt) in want.thread_siblings_lists.iter().enumerate() {
        assert_eq!(
            facts.get(format!("smt{cpu}").as_str()).copied(),
            Some(smt.as_str()),
            "SMT siblings of cpu{cpu} for {spec}:\n{stdout}"
        );
    }
    for (node, cpus) in want.node_cpulists.iter().enumerate() {
        assert_eq!(
            facts.get(format!("node{node}").as_str()).copied(),
            Some(cpus.as_str()),
            "node{node} for {spec}:\n{stdout}"
        );
    }
    let nodes = facts.keys().filter(|k| k.starts_with("node")).count();
    assert_eq!(nodes as u32, topo.numa_nodes, "{stdout}");
}

#[test]
fn vm_topology_default_two_cores() {
    check_topology("1,1,2,1");
}

#[test]
fn vm_topology_two_llcs_with_smt() {
    check_topology("1,2,2,2");
}

#[test]
fn vm_topology_two_numa_nodes() {
    check_topology("2,2,1,1");
}

#[test]
fn vm_topology_two_nodes_of_two_llcs_with_smt() {
    check_topology("2,2,2,2");
}

#[test]
fn vm_topology_two_llcs_of_four_smt_cores() {
    check_topology("1,2,4,2");
}

#[test]
fn vm_exec_streams_output_and_exit_status() {
    let Some(_slot) = vm_slot() else { return };
    let out = ktstr(&[
        "exec", "--", "sh", "-c",
        "echo out-line; echo err-line >&2; test -d /sys/fs/cgroup/cgroup.procs || test -f /sys/fs/cgroup/cgroup.procs; \
         grep -q ' /sys/fs/bpf ' /proc/mounts && grep -q ' /sys/kernel/tracing ' /proc/mounts && echo mounts-ok; \
         cat /sys/kernel/sched_ext/state; exit 7",
    ]);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(7), "stdout:\n{o}\nstderr:\n{e}");
    assert!(o.contains("out-line\n") && !o.contains("err-line"), "{o}");
    assert!(e.contains("err-line"), "{e}");
    assert!(o.contains("mounts-ok"), "{o}");
    assert!(
        o.contains("disabled"),
        "sched_ext state should be readable: {o}"
    );
    assert!(
        e.contains(common::default_engine_line()),
        "the engine and mode are named: {e}"
    );
}

#[test]
fn vm_guest_touching_unclaimed_mmio_is_refused_and_reported() {
    if !common::ours_runs() {
        // Not `skip`: QEMU's engine has no such report, and on the CI host (PVM) ours
        // cannot boot Linux; the nested lane runs this on ktstr's VMM.
        common::say_skipped(
            "only ktstr's own VMM reports refused guest I/O, and it does not run here",
        );
        return;
    }
    let Some(_slot) = vm_slot() else { return };
    // 0xe0000000 is in the MMIO hole below 4 GiB, where no device sits.
    let out = ktstr(&[
        "exec",
        "-v",
        "--",
        "sh",
        "-c",
        "devmem 0xe0000000 32; devmem 0xe0000010 32 0x1234 && echo wrote",
    ]);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{o}\nstderr:\n{e}");
    assert!(o.contains("0xFFFFFFFF\nwrote"), "reads as all ones: {o}");
    let line = e
        .lines()
        .find(|l| l.contains("guest: unclaimed I/O refused:"))
        .unwrap_or_else(|| panic!("-v names what was refused: {e}"));
    assert!(line.contains("MMIO read 0xe0000000 x1"), "{line}");
    assert!(line.contains("MMIO write 0xe0000010 x1"), "{line}");
    assert!(
        !e.contains("warning: guest:"),
        "nothing beyond unclaimed I/O: {e}"
    );
}

#[test]
fn vm_large_output_arrives_intact() {
    let Some(_slot) = vm_slot() else { return };
    // 200 KB through the bulk channel (QEMU's virtio-serial port, ktstr's VMM's
    // virtio-console) or COM2: frames are split and must reassemble in order.
    let out = ktstr(&["exec", "-v", "--", "sh", "-c", "seq 1 30000"]);
    let e = text(&out.stderr);
    assert!(out.status.success(), "{e}");
    let device = if common::ours_runs() {
        "/dev/hvc0"
    } else {
        "/dev/vport"
    };
    // Either the guest moved to the channel, or the host said why there was none.
    assert!(
        e.contains(&format!("guest: frames on {device}"))
            || e.contains("frames on COM2, no bulk channel: the kernel has no"),
        "{e}"
    );
    let o = text(&out.stdout);
    let nums: Vec<u32> = o.lines().map(|l| l.parse().expect("a number")).collect();
    assert_eq!(nums, (1..=30000).collect::<Vec<_>>());
    assert!(
        !text(&out.stderr).contains("guest channel"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn vm_command_writing_into_the_frame_channels_cannot_change_the_result() {
    let Some(_slot) = vm_slot() else { return };
    // Random bytes and a forged-looking frame header straight onto COM2, and an attempt on
    // the bulk channel's port, which guest init holds open (a virtio port opens once).
    let script = r#"echo before
head -c 65536 /dev/urandom >/dev/ttyS1
printf 'KTSF\004\000\000\000\000\000\000\000\004\000\000\000' >/dev/ttyS1
for p in /dev/vport*; do
    [ -e "$p" ] && ! head -c 4096 /dev/urandom >"$p" 2>/dev/null && echo "$p refused"
done
echo after
exit 7"#;
    let out = ktstr(&["exec", "-v", "--", "sh", "-c", script]);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    if e.contains("frames on COM2, no bulk channel") {
        // Without the channel, frames share COM2 with whatever the guest writes there.
        common::say_skipped("this kernel and engine keep frames on COM2");
        return;
    }
    assert_eq!(out.status.code(), Some(7), "stdout:\n{o}\nstderr:\n{e}");
    let lines: Vec<&str> = o.lines().filter(|l| !l.ends_with(" refused")).collect();
    assert_eq!(lines, ["before", "after"], "{o}");
    if e.contains("guest: frames on /dev/vport") {
        assert!(o.contains("refused"), "the port is init's alone: {o}");
    }
}

#[test]
fn vm_frames_stay_on_com2_when_asked() {
    let Some(_slot) = vm_slot() else { return };
    let out = ktstr(&[
        "exec",
        "-v",
        "--no-bulk-channel",
        "--",
        "sh",
        "-c",
        "seq 1 3000; exit 3",
    ]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{e}");
    assert!(
        e.contains("frames on COM2, no bulk channel: asked for COM2 only"),
        "{e}"
    );
    assert!(!e.contains("guest: frames on"), "{e}");
    let nums: Vec<u32> = text(&out.stdout)
        .lines()
        .map(|l| l.parse().expect("a number"))
        .collect();
    assert_eq!(nums, (1..=3000).collect::<Vec<_>>());
}

/// `--monitor --snapshot-every`: the host freezes the guest (QMP `stop`/`cont` on QEMU,
/// parked vCPU threads on ktstr's own VMM in the nested lane) and reads every task through
/// BTF: the command's three sleepers (the pids it printed) must be seen asleep, in the root
/// cgroup, while they live.
#[test]
fn vm_snapshots_freeze_the_guest_and_see_its_tasks() {
    let Some(_slot) = vm_slot() else { return };
    let dir = std::env::temp_dir().join(format!("ktstr-vm-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let monitor = dir.join("m.jsonl");
    let out = ktstr(&[
        "exec",
        "--monitor",
        monitor.to_str().unwrap(),
        "--snapshot-every",
        "300",
        "--",
        "sh",
        "-c",
        // Long enough for the monitor to start: on a kernel without a symbol table the guest
        // sends its whole kallsyms first, which takes ~30 s under nested KVM.
        "for i in 1 2 3; do sleep 60 & echo $!; done; sleep 6; kill $(jobs -p)",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let pids: Vec<i64> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 3, "{}", text(&out.stdout));
    let file = monitor.with_extension("snapshots.json");
    let snaps: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}\n{stderr}", file.display())),
    )
    .expect("snapshots JSON");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(snaps.len() >= 2, "{} snapshots\n{stderr}", snaps.len());
    let mut saw = 0;
    for s in &snaps {
        assert!(s.get("errors").is_none(), "{}: {}", s["name"], s["errors"]);
        let frozen = s["frozen_us"].as_u64().unwrap_or(0);
        assert!(
            frozen > 0 && frozen < 2_000_000,
            "{}: frozen {frozen} us",
            s["name"]
        );
        let sleepers = s["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .filter(|t| {
                t["pid"].as_i64().is_some_and(|p| pids.contains(&p))
                    && t["state"].as_u64().is_some_and(|st| st != 0)
                    && t["cgroup"] == "/"
            })
            .count();
        if sleepers == 3 {
            saw += 1;
        }
    }
    assert!(
        saw >= 2,
        "only {saw} snapshots saw the three sleepers\n{stderr}"
    );
}

#[test]
fn vm_include_files_and_signal_status() {
    let Some(_slot) = vm_slot() else { return };
    let dir = std::env::temp_dir().join(format!("ktstr-inc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "included!\n").unwrap();
    let inc = dir.display().to_string();
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let script = format!("cat /include-files/{name}/hello.txt; kill -9 $$");
    let out = ktstr(&["exec", "-i", &inc, "--", "sh", "-c", &script]);
    assert!(
        text(&out.stdout).contains("included!"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(128 + 9),
        "killed by SIGKILL maps to 137"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vm_shell_exec_runs_a_command() {
    let Some(_slot) = vm_slot() else { return };
    let out = ktstr(&["shell", "--topology", "1,1,1,1", "--exec", "nproc; echo $0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().next(), Some("1"));
}

#[test]
fn vm_kernel_panic_during_command_is_reported() {
    let Some(_slot) = vm_slot() else { return };
    let out = ktstr(&[
        "exec",
        "--",
        "sh",
        "-c",
        "echo before-panic; sleep 1; echo c > /proc/sysrq-trigger; sleep 5",
    ]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{e}");
    assert!(text(&out.stdout).contains("before-panic"));
    assert!(e.contains("guest kernel died while the command ran"), "{e}");
    assert!(
        e.contains("Kernel panic") || e.contains("Oops"),
        "console tail is shown: {e}"
    );
    assert!(e.contains("last console lines"), "{e}");
}

#[test]
fn vm_timeout_kills_the_vm_and_keeps_partial_output() {
    let Some(_slot) = vm_slot() else { return };
    let start = Instant::now();
    let out = ktstr(&[
        "exec",
        "--timeout",
        "20",
        "--",
        "sh",
        "-c",
        "echo partial; sleep 600",
    ]);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("partial"));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn vm_guest_dying_before_the_command_is_an_infrastructure_failure() {
    let Some(_slot) = vm_slot() else { return };
    // No init at that path: the kernel panics before any command can run.
    let out = ktstr(&[
        "exec",
        "--attempts",
        "2",
        "--cmdline",
        "rdinit=/no/such/init",
        "--",
        "true",
    ]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{e}");
    assert!(e.contains("infrastructure failure"), "{e}");
    assert!(e.contains("(2 attempt(s))"), "retried once: {e}");
    assert!(
        e.contains("retried: guest died before the command ran"),
        "{e}"
    );
    assert!(e.contains("Kernel panic"), "{e}");
}

#[test]
fn vm_ctrl_c_stops_the_vm_and_removes_its_files() {
    let Some(_slot) = vm_slot() else { return };
    let shm_before = ram_files();
    let mut child = Command::new(KTSTR)
        .args(["exec", "--", "sh", "-c", "echo running; sleep 600"])
        .env("KTSTR_KERNEL", test_kernel().unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the command is running (the guest printed), then interrupt.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    assert_eq!(&first, b"running\n");
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // Only this ktstr's files count: other VMs (benchmarks, other tests) may run meanwhile.
    let mine = format!("ktstr-ram-{pid}-");
    let leaked: Vec<PathBuf> = ram_files()
        .into_iter()
        .filter(|p| !shm_before.contains(p))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&mine))
        })
        .collect();
    assert!(leaked.is_empty(), "guest RAM files left behind: {leaked:?}");
    let run_dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("ktstr-run-{pid}-"))
        })
        .collect();
    assert!(run_dirs.is_empty(), "run directories left behind");
}

fn ram_files() -> Vec<PathBuf> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("ktstr-ram-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn missing_kernel_is_a_clear_error() {
    let out = ktstr(&["exec", "--kernel", "/no/such/vmlinux", "--", "true"]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125));
    assert!(e.contains("kernel `/no/such/vmlinux` not found"), "{e}");
}

#[test]
fn missing_scheduler_is_named_as_the_scheduler() {
    if common::test_kernel().is_none() {
        common::skip("no kernel: run `ktstr kernel fetch` or set KTSTR_KERNEL");
        return;
    }
    let out = ktstr(&["exec", "--scheduler", "/no/such/scheduler", "--", "true"]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{e}");
    assert!(
        e.contains("scheduler binary `/no/such/scheduler` not found"),
        "{e}"
    );
    assert!(!e.contains("kernel `"), "not a kernel problem: {e}");
}

#[test]
fn kernel_lacking_config_is_refused_with_the_list() {
    let dir = std::env::temp_dir().join(format!("ktstr-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Any ELF stands in for the image: the config check refuses it before booting.
    std::fs::copy(KTSTR, dir.join("vmlinux")).unwrap();
    std::fs::write(
        dir.join("config"),
        "CONFIG_BLK_DEV_INITRD=y\nCONFIG_DEVTMPFS=m\n",
    )
    .unwrap();
    let k = dir.join("vmlinux").display().to_string();
    let out = ktstr(&["exec", "--kernel", &k, "--", "true"]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{e}");
    assert!(e.contains("CONFIG_DEVTMPFS (=m, must be =y)"), "{e}");
    assert!(e.contains("CONFIG_SERIAL_8250_CONSOLE (not set)"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_qemu_says_what_to_install() {
    if test_kernel().is_none() {
        skip("no kernel: run `ktstr kernel fetch` or set KTSTR_KERNEL");
        return;
    }
    let out = Command::new(KTSTR)
        .args(["exec", "--vmm", "qemu", "--accel", "tcg", "--", "true"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{e}");
    assert!(e.contains("apt-get install -y qemu-system-x86"), "{e}");
}

#[test]
fn vm_modules_load_with_their_dependencies() {
    let Some(_slot) = vm_slot() else { return };
    let out = ktstr(&[
        "exec", "--module", "virtio-net", "--", "sh", "-c",
        "for m in failover net_failover virtio_net; do test -d /sys/module/$m && echo loaded-$m; done",
    ]);
    let o = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        o,
        "loaded-failover\nloaded-net_failover\nloaded-virtio_net\n"
    );
    let bad = ktstr(&["exec", "--module", "no_such_module_x", "--", "true"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(
        text(&bad.stderr).contains("no_such_module_x"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn vm_scheduler_attaches_and_stays_attached() {
    let Some(_slot) = vm_slot() else { return };
    let Some(scx) = scx_simple() else { return };
    let out = ktstr(&[
        "exec",
        "--scheduler",
        &scx,
        "--",
        "sh",
        "-c",
        "cat /sys/kernel/sched_ext/state /sys/kernel/sched_ext/root/ops",
    ]);
    let e = text(&out.stderr);
    assert!(out.status.success(), "{e}");
    assert_eq!(text(&out.stdout), "enabled\nsimple\n");
    assert!(e.contains("scheduler scx_simple: attached in"), "{e}");
    assert!(
        e.contains("as `simple`; still attached when the command ended"),
        "{e}"
    );
}

#[test]
fn vm_scheduler_ejected_mid_command_fails_with_the_kernel_reason() {
    let Some(_slot) = vm_slot() else { return };
    let Some(scx) = scx_simple() else { return };
    // SysRq-S makes the kernel disable the BPF scheduler, as it would after an error or a stall.
    let out = ktstr(&[
        "exec",
        "--scheduler",
        &scx,
        "--",
        "sh",
        "-c",
        "echo S > /proc/sysrq-trigger; sleep 1; cat /sys/kernel/sched_ext/state",
    ]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{e}");
    assert_eq!(
        text(&out.stdout),
        "disabled\n",
        "the command itself ran and succeeded"
    );
    assert!(e.contains("FAILED: ejected by the kernel"), "{e}");
    assert!(
        e.contains("disabled by sysrq-S"),
        "the kernel's reason: {e}"
    );
    assert!(
        e.contains("scx_simple| EXIT:"),
        "the scheduler's own exit line: {e}"
    );
}

#[test]
fn vm_scheduler_exiting_at_startup_is_reported_and_the_command_skipped() {
    let Some(_slot) = vm_slot() else { return };
    let out = ktstr(&[
        "exec",
        "--scheduler",
        "/bin/false",
        "--",
        "echo",
        "should-not-run",
    ]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{e}");
    assert!(text(&out.stdout).is_empty());
    assert!(
        e.contains("scheduler false: never attached; exited at start-up (status 1)"),
        "{e}"
    );
    assert!(e.contains("the command was not run"), "{e}");
}

#[test]
fn kernel_without_sched_ext_is_refused_for_scheduler_runs() {
    let dir = std::env::temp_dir().join(format!("ktstr-noscx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(KTSTR, dir.join("vmlinux")).unwrap();
    let config: String = ktstr::kernel::EXEC_REQUIRED
        .iter()
        .map(|o| format!("CONFIG_{o}=y\n"))
        .collect();
    std::fs::write(
        dir.join("config"),
        config + "# CONFIG_SCHED_CLASS_EXT is not set\n",
    )
    .unwrap();
    let k = dir.join("vmlinux").display().to_string();
    let out = ktstr(&[
        "exec",
        "--kernel",
        &k,
        "--scheduler",
        "/bin/true",
        "--",
        "true",
    ]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{e}");
    assert!(e.contains("CONFIG_SCHED_CLASS_EXT (not set)"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
