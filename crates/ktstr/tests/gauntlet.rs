//! The gauntlet in VMs, driven as nextest drives a test binary under
//! `cargo ktstr test --gauntlet`: `--list` (with `$KTSTR_GAUNTLET=1`) names each
//! `gauntlet/<test>/<preset>` the test's constraints admit, and `--exact NAME` runs one.
//!
//! `gauntlet_tiny` admits at most 4 CPUs: of the presets, `4cpu-1llc-nosmt` and
//! `4cpu-2llc-nosmt`. Both boot (4 vCPUs: single-threaded TCG on a smaller host), and the
//! guest's own view of its CPUs and LLCs is checked against each; a rejected preset
//! (`9cpu-3llc-nosmt`) is neither listed nor run. `gauntlet_tiny` is `ignore`d so that a
//! plain `cargo test` does not boot its own topology as well: its gauntlet runs are listed
//! with the ignored tests. `gauntlet_huge` asks for more memory than the host has: its runs
//! skip, saying why, without booting. Last, the `cargo test` form: the test's own run followed by its
//! gauntlet runs, in one process.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::ensure;
use ktstr::prelude::*;
use ktstr::test_support::VmResult;

/// What the guest saw: its online CPUs, LLCs and NUMA nodes, from sysfs.
#[ktstr_test(max_cpus = 4, duration_s = 1, ignore, post_vm = guest_saw_the_preset)]
fn gauntlet_tiny(ctx: &Ctx) -> Result<AssertResult> {
    let t = &ctx.topo;
    println!(
        "guest topology: cpus={} llcs={} nodes={}",
        t.cpus.len(),
        t.llcs.len(),
        t.nodes.len()
    );
    Ok(AssertResult::pass())
}

/// Admits the same two presets, but asks for more guest memory than any host has: its
/// gauntlet runs are skipped, saying so, without a VM.
#[ktstr_test(max_cpus = 4, memory_mib = 1 << 40, ignore)]
fn gauntlet_huge(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::pass())
}

/// The guest's CPUs and LLCs are the ones the host booted for the preset.
fn guest_saw_the_preset(vm: &VmResult) -> anyhow::Result<()> {
    let dims: Vec<usize> = vm
        .topology
        .split(',')
        .map(|d| d.parse().unwrap_or(0))
        .collect();
    ensure!(dims.len() == 4, "topology {:?}", vm.topology);
    let topo = vm
        .topo
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no guest topology"))?;
    let (cpus, llcs) = (dims[0] * dims[1] * dims[2] * dims[3], dims[0] * dims[1]);
    ensure!(
        topo.cpus.len() == cpus && topo.llcs.len() == llcs,
        "{}: booted {} ({cpus} CPUs, {llcs} LLCs) but the guest saw {} CPUs in {} LLCs",
        vm.test,
        vm.topology,
        topo.cpus.len(),
        topo.llcs.len()
    );
    Ok(())
}

fn this_binary(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args(args)
        .env("KTSTR_GAUNTLET", "1")
        .env("KTSTR_VERBOSE", "1")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the test binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn gauntlet_lists_and_runs_the_presets_a_test_admits() {
    // The listing nextest takes: the tiny test's runs are among the ignored.
    let list = this_binary(&["--list", "--format", "terse", "--ignored"], &[]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let stdout = text(&list.stdout);
    let listed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .filter(|n| n.starts_with("gauntlet/gauntlet_tiny/"))
        .collect();
    assert_eq!(
        listed,
        [
            "gauntlet/gauntlet_tiny/4cpu-1llc-nosmt",
            "gauntlet/gauntlet_tiny/4cpu-2llc-nosmt"
        ],
        "{stdout}"
    );
    // libtest's own listing follows (the test's own run, ignored).
    assert!(stdout.contains("gauntlet_tiny: test"), "{stdout}");
    let stderr = text(&list.stderr);
    assert!(
        stderr.contains("gauntlet/gauntlet_tiny/9cpu-3llc-nosmt: not run: 9 CPUs > max_cpus 4"),
        "{stderr}"
    );
    let plain = this_binary(&["--list", "--format", "terse"], &[]);
    assert!(
        !text(&plain.stdout).contains("gauntlet/gauntlet_tiny/"),
        "{}",
        text(&plain.stdout)
    );

    // A rejected preset asked for by name is refused without a VM.
    let rejected = this_binary(&["--exact", "gauntlet/gauntlet_tiny/9cpu-3llc-nosmt"], &[]);
    assert_eq!(rejected.status.code(), Some(101));
    assert!(
        text(&rejected.stderr).contains("constraints reject this preset (9 CPUs > max_cpus 4)"),
        "{}",
        text(&rejected.stderr)
    );

    let dir = std::env::temp_dir().join(format!("ktstr-gauntlet-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // A preset whose memory the host cannot hold is skipped with the reason, and recorded.
    let huge = "gauntlet/gauntlet_huge/4cpu-2llc-nosmt";
    let out = this_binary(&["--exact", huge], &[("KTSTR_RESULTS_DIR", &dir)]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "SKIPPED {huge}: preset 4cpu-2llc-nosmt: its {} MiB of guest memory do not fit in this host's",
            1u64 << 40
        )),
        "{stderr}"
    );
    let record = dir.join("gauntlet__gauntlet_huge__4cpu-2llc-nosmt.json");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap();
    assert_eq!(record["verdict"], "skip");
    assert_eq!(record["topology"], "1,2,2,1");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // (preset, topology as recorded, what the guest printed)
    let want = [
        ("4cpu-1llc-nosmt", "1,1,4,1", "cpus=4 llcs=1"),
        ("4cpu-2llc-nosmt", "1,2,2,1", "cpus=4 llcs=2"),
    ];
    for (preset, topology, seen) in want {
        let name = format!("gauntlet/gauntlet_tiny/{preset}");
        let started = std::time::Instant::now();
        let out = this_binary(
            &["--exact", &name, "--nocapture"],
            &[("KTSTR_RESULTS_DIR", &dir), ("KTSTR_OUTPUT_DIR", &dir)],
        );
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        eprintln!("{name}: {:.1} s\n{stderr}", started.elapsed().as_secs_f64());
        if stderr.contains(&format!("SKIPPED {name}")) {
            // No QEMU or kernel here (under KTSTR_REQUIRE_VM=1 the run itself fails).
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        assert!(out.status.success(), "{name}:\n{stdout}\n{stderr}");
        assert!(stdout.contains(&format!("test {name} ... ok")), "{stdout}");
        if host_cpus < 4 {
            assert!(
                stderr.contains(&format!(
                    "ktstr: {name}: 4 vCPUs on {host_cpus} host CPUs: single-threaded TCG"
                )),
                "{stderr}"
            );
        }
        let stem = name.replace('/', "__");
        let record: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{stem}.json"))).expect("its record"),
        )
        .expect("a JSON record");
        assert_eq!(record["test"], name.as_str());
        assert_eq!(record["verdict"], "pass", "{record}");
        assert_eq!(record["topology"], topology, "{record}");
        if host_cpus < 4 {
            // The summary table says it too (its last column).
            assert_eq!(
                record["note"],
                format!("4 vCPUs on {host_cpus} host CPUs: single-threaded TCG").as_str(),
                "{record}"
            );
        }
        let guest = std::fs::read_to_string(dir.join(format!("{stem}.stdout"))).unwrap();
        assert!(
            guest.contains(&format!("guest topology: {seen} ")),
            "{name}: {guest}"
        );
    }
    // Nothing ran for the rejected preset.
    let files = file_names(&dir);
    assert!(!files.iter().any(|f| f.contains("9cpu")), "{files:?}");
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".json")).count(),
        2,
        "{files:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // Under `cargo test` (no nextest to run each name), the test's own run is followed by
    // its gauntlet runs, each recorded under its own name.
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "gauntlet_tiny", "--ignored", "--nocapture"])
        .env("KTSTR_GAUNTLET", "1")
        .env("KTSTR_RESULTS_DIR", &dir)
        .env("KTSTR_OUTPUT_DIR", &dir)
        .env_remove("NEXTEST_RUN_ID")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let mut records: Vec<String> = file_names(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".json"))
        .collect();
    records.sort();
    assert_eq!(
        records,
        [
            "gauntlet__gauntlet_tiny__4cpu-1llc-nosmt.json",
            "gauntlet__gauntlet_tiny__4cpu-2llc-nosmt.json",
            "gauntlet_tiny.json"
        ]
    );
    let own = std::fs::read_to_string(dir.join("gauntlet_tiny.stdout")).unwrap();
    assert!(own.contains("guest topology: cpus=2 llcs=1 "), "{own}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn file_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
