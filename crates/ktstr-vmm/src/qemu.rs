//! The QEMU backend: a pure mapping from [`VmConfig`] to a `qemu-system-x86_64` command line.
//!
//! Topology: QEMU 7.2's x86 CPUID shares the L3 per socket, so each LLC is
//! one QEMU socket and each NUMA node holds `llcs` consecutive sockets. Guest
//! RAM is one shared `memory-backend-file` per node, which the host can map.

use std::path::{Path, PathBuf};

use crate::{AppChannel, Engine, TcgThreads, VmConfig, BULK_CHANNEL_KEY, BULK_PORT_NAME};

/// The QEMU program the backend runs.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";

/// Kernel parameters that make TCG boots faster without changing what a test sees:
/// skip TSC recalibration and mitigation patching, trust the CPU's RNG.
const TCG_CMDLINE: &str = "mitigations=off no_timer_check cryptomgr.notests random.trust_cpu=on";

/// Builds QEMU's arguments for `cfg` on `engine`, with guest RAM in `ram_files` (one per node)
/// and, when `cfg` asks for the bulk channel, its host end on the UNIX socket `bulk_socket`
/// (QEMU connects to it as a client).
pub fn qemu_args(
    cfg: &VmConfig,
    engine: Engine,
    ram_files: &[PathBuf],
    tsc_khz: Option<u64>,
    bulk_socket: Option<&Path>,
) -> Vec<String> {
    let t = &cfg.topology;
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    let (accel, default_cpu) = match engine {
        // KtstrKvm never reaches QEMU; if asked anyway, the nearest QEMU engine is KVM.
        Engine::QemuKvm | Engine::KtstrKvm => ("kvm", "host"),
        Engine::QemuTcg(TcgThreads::Single) => ("tcg,thread=single", "max"),
        Engine::QemuTcg(TcgThreads::Multi) => ("tcg,thread=multi", "max"),
    };
    let cpu = cfg.cpu_model.as_deref().unwrap_or(default_cpu);
    push(&["-accel", accel, "-cpu", cpu]);
    let machine = if t.numa_nodes == 1 {
        "pc,memory-backend=ram0".to_string()
    } else {
        "pc".to_string()
    };
    let smp = format!(
        "cpus={},sockets={},dies=1,cores={},threads={}",
        t.total_cpus(),
        t.total_llcs(),
        t.cores,
        t.threads
    );
    let mem = format!("{}M", cfg.memory_mib);
    push(&["-machine", &machine, "-smp", &smp, "-m", &mem]);
    for (node, mib) in t.split_memory_mib(cfg.memory_mib).iter().enumerate() {
        let path = ram_files
            .get(node)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let backend =
            format!("memory-backend-file,id=ram{node},size={mib}M,mem-path={path},share=on");
        push(&["-object", &backend]);
        if t.numa_nodes > 1 {
            let cpus = t.node_cpus(node as u32);
            let (first, last) = (cpus.first().copied(), cpus.last().copied());
            if let (Some(first), Some(last)) = (first, last) {
                let numa = format!("node,nodeid={node},cpus={first}-{last},memdev=ram{node}");
                push(&["-numa", &numa]);
            }
        }
    }
    let mut cmdline = cfg.cmdline.trim().to_string();
    for extra in ["console=ttyS0", "panic=-1"] {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    if matches!(engine, Engine::QemuTcg(_)) {
        cmdline.push(' ');
        cmdline.push_str(TCG_CMDLINE);
        if let Some(khz) = tsc_khz {
            cmdline.push_str(&format!(" tsc_early_khz={khz}"));
        }
    }
    let bulk_socket = bulk_socket.filter(|_| cfg.bulk_channel);
    if bulk_socket.is_some() {
        cmdline.push_str(&format!(" {BULK_CHANNEL_KEY}={BULK_PORT_NAME}"));
    }
    let kernel = cfg.kernel.display().to_string();
    let initrd = cfg.initramfs.display().to_string();
    let com1 = format!("file:{}", cfg.console_log.display());
    push(&[
        "-kernel",
        &kernel,
        "-initrd",
        &initrd,
        "-append",
        cmdline.trim(),
    ]);
    push(&["-serial", &com1]);
    if let Some(qmp) = &cfg.qmp_socket {
        let chardev = format!("unix:{},server=on,wait=off", qmp.display());
        push(&["-qmp", &chardev]);
    }
    if let Some(sock) = bulk_socket {
        // A serial port, not a console: QEMU throttles a port whose host end is full, but
        // drops what a console port writes then.
        let chardev = format!("socket,id=ktstrbulk,path={}", sock.display());
        let port = format!("virtserialport,bus=ktstrser.0,chardev=ktstrbulk,name={BULK_PORT_NAME}");
        push(&[
            "-device",
            "virtio-serial-pci,id=ktstrser,max_ports=2",
            "-chardev",
            &chardev,
            "-device",
            &port,
        ]);
    }
    match cfg.app_channel {
        AppChannel::Pipe => push(&["-serial", "stdio"]),
        AppChannel::Terminal => push(&[
            "-chardev",
            "stdio,id=com2,signal=off",
            "-serial",
            "chardev:com2",
        ]),
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktstr_topology::Topology;

    fn cfg(t: Topology) -> VmConfig {
        VmConfig::new("/k/vmlinux".into(), "/k/init.cpio".into(), t)
            .memory_mib(1024)
            .console_log("/run/c.log".into())
            .cmdline("rdinit=/init quiet")
    }

    fn arg_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn llcs_become_sockets_and_nodes_group_them() {
        let t = Topology::new(2, 2, 2, 2).unwrap();
        let files: Vec<PathBuf> = vec!["/dev/shm/a".into(), "/dev/shm/b".into()];
        let args = qemu_args(
            &cfg(t),
            Engine::QemuTcg(TcgThreads::Single),
            &files,
            None,
            None,
        );
        assert_eq!(
            arg_after(&args, "-smp"),
            ["cpus=16,sockets=4,dies=1,cores=2,threads=2"]
        );
        assert_eq!(
            arg_after(&args, "-numa"),
            [
                "node,nodeid=0,cpus=0-7,memdev=ram0",
                "node,nodeid=1,cpus=8-15,memdev=ram1"
            ]
        );
        assert_eq!(
            arg_after(&args, "-object"),
            [
                "memory-backend-file,id=ram0,size=512M,mem-path=/dev/shm/a,share=on",
                "memory-backend-file,id=ram1,size=512M,mem-path=/dev/shm/b,share=on"
            ]
        );
        assert_eq!(arg_after(&args, "-machine"), ["pc"]);
        assert_eq!(arg_after(&args, "-accel"), ["tcg,thread=single"]);
    }

    #[test]
    fn single_node_uses_machine_memory_backend() {
        let args = qemu_args(
            &cfg(Topology::default()),
            Engine::QemuKvm,
            &["/dev/shm/x".into()],
            Some(2_100_000),
            None,
        );
        assert_eq!(arg_after(&args, "-machine"), ["pc,memory-backend=ram0"]);
        assert!(arg_after(&args, "-numa").is_empty());
        assert_eq!(arg_after(&args, "-cpu"), ["host"]);
        let append = arg_after(&args, "-append")[0];
        assert!(append.starts_with("rdinit=/init quiet console=ttyS0 panic=-1"));
        assert!(!append.contains("tsc_early_khz"), "KVM needs no TSC hint");
    }

    #[test]
    fn cpu_model_replaces_the_engine_default() {
        let c = cfg(Topology::default()).cpu_model("max,-xsave");
        let args = qemu_args(&c, Engine::QemuTcg(TcgThreads::Single), &[], None, None);
        assert_eq!(arg_after(&args, "-cpu"), ["max,-xsave"]);
        assert_eq!(arg_after(&args, "-accel"), ["tcg,thread=single"]);
        let args = qemu_args(
            &cfg(Topology::default()),
            Engine::QemuTcg(TcgThreads::Single),
            &[],
            None,
            None,
        );
        assert_eq!(arg_after(&args, "-cpu"), ["max"]);
    }

    #[test]
    fn bulk_channel_is_a_named_serial_port_on_the_socket() {
        let sock = Path::new("/run/b.sock");
        let engine = Engine::QemuTcg(TcgThreads::Single);
        let plain = qemu_args(&cfg(Topology::default()), engine, &[], None, Some(sock));
        assert!(arg_after(&plain, "-chardev").is_empty(), "not asked for");
        let c = cfg(Topology::default()).bulk_channel(true);
        let args = qemu_args(&c, engine, &[], None, Some(sock));
        assert_eq!(
            arg_after(&args, "-chardev"),
            ["socket,id=ktstrbulk,path=/run/b.sock"]
        );
        assert_eq!(
            arg_after(&args, "-device"),
            [
                "virtio-serial-pci,id=ktstrser,max_ports=2",
                "virtserialport,bus=ktstrser.0,chardev=ktstrbulk,name=ktstr.frames"
            ]
        );
        let append = arg_after(&args, "-append")[0];
        assert!(append.contains(" ktstr.channel=ktstr.frames"), "{append}");
        let nosock = qemu_args(&c, engine, &[], None, None);
        assert!(!arg_after(&nosock, "-append")[0].contains("ktstr.channel"));
    }

    #[test]
    fn serial_ports_in_order() {
        let mut c = cfg(Topology::default());
        let args = qemu_args(
            &c,
            Engine::QemuTcg(TcgThreads::Multi),
            &[],
            Some(2_100_000),
            None,
        );
        assert_eq!(arg_after(&args, "-serial"), ["file:/run/c.log", "stdio"]);
        assert!(arg_after(&args, "-qmp").is_empty());
        assert!(arg_after(&args, "-append")[0].ends_with("tsc_early_khz=2100000"));
        c.app_channel = AppChannel::Terminal;
        let args = qemu_args(&c, Engine::QemuTcg(TcgThreads::Multi), &[], None, None);
        assert_eq!(
            arg_after(&args, "-serial"),
            ["file:/run/c.log", "chardev:com2"]
        );
        let c = c.qmp_socket("/run/q.sock".into());
        let args = qemu_args(&c, Engine::QemuKvm, &[], None, None);
        assert_eq!(
            arg_after(&args, "-qmp"),
            ["unix:/run/q.sock,server=on,wait=off"]
        );
    }
}
