//! Boots the cached Debian kernel on ktstr's KVM VMM with a virtio-console, a virtio-blk disk
//! and a virtio-net card, and checks that Linux's own drivers work against them. The guest is
//! a busybox initramfs whose `/init` loads the virtio modules the kernel does not have built
//! in, then, with its output on COM2 (`/dev/ttyS1`):
//!
//! - virtio-console: writes a line to `/dev/hvc0`, reads a line the host sends and echoes it
//!   back; the host checks the exact bytes it received.
//! - virtio-blk: prints the first and the last sector of `/dev/vda` (a 1 MiB file the host
//!   filled with a known pattern) and writes two sectors of its own at sector 8; after the run
//!   the host compares the whole file with what it should now hold.
//! - virtio-net: the card is on the VMM's loopback, which reflects every frame the guest sends
//!   back to it. The host plays 10.0.0.1 on that link: it answers the guest's ARP request and
//!   ICMP echo requests by injecting replies, so `ping -c 3 10.0.0.1` gets three answers. The
//!   host checks the frames it answered and both sides' counters.
//! - COM1 carries the kernel log; the guest ends with `poweroff -f` (ACPI S5).
//!
//! Skips (prints `SKIPPED`, never fails) where KVM cannot boot Linux: no `/dev/kvm`, PVM, or a
//! CPU without vmx/svm. Skips through [`common::skip`], which fails under
//! `KTSTR_REQUIRE_VM=1`, without a cached kernel, its virtio modules, busybox or cpio.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{busybox_root, cpio, field, linux_guest_prereqs, scratch_dir, skip, stderr};
use ktstr_topology::Topology;
use ktstr_vmm::kvm::devices::virtio::net::DEFAULT_MAC;
use ktstr_vmm::kvm::{KvmExit, KvmVm, NetPort};

const TEST: &str = "linux_drives_virtio_console_blk_and_net";

/// How long the whole guest may take (nested KVM boots take 10-25 s).
const WAIT: Duration = Duration::from_secs(240);

/// Modules the devices need, in load order (dependencies first); built-in ones are skipped.
const MODULES: [&str; 6] = [
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    "virtio_console",
    "virtio_mmio",
];

/// Disk size: 2048 sectors.
const DISK_LEN: usize = 1 << 20;
const SECTOR: usize = 512;
/// Where sector 0 starts; the rest of the disk is [`disk_byte`].
const DISK_HEADER: &[u8] = b"ktstr virtio-blk sector 0\n";
/// The guest writes `yes GUEST_TEXT | head -c GUEST_WRITE_LEN` at sector GUEST_WRITE_SECTOR.
const GUEST_TEXT: &str = "ktstr guest wrote this";
const GUEST_WRITE_SECTOR: usize = 8;
const GUEST_WRITE_LEN: usize = 2 * SECTOR;

/// What the guest writes to `/dev/hvc0` first, and what the host sends it.
const HVC_HELLO: &str = "hvc0: hello from the guest";
const HOST_LINE: &str = "ping from the host";

/// The host's end of the network link: 10.0.0.1 at a locally administered MAC.
const PEER_MAC: [u8; 6] = [0x02, 0x6b, 0x74, 0x00, 0x00, 0x01];
const PEER_IP: [u8; 4] = [10, 0, 0, 1];
const GUEST_IP: [u8; 4] = [10, 0, 0, 2];
const ETH_ARP: [u8; 2] = [0x08, 0x06];
const ETH_IPV4: [u8; 2] = [0x08, 0x00];
/// ARP for Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4) up to the opcode.
const ARP_ETH_IPV4: [u8; 6] = [0, 1, 8, 0, 6, 4];

/// The disk's initial byte at `offset`.
fn disk_byte(offset: usize) -> u8 {
    match DISK_HEADER.get(offset) {
        Some(b) => *b,
        None => (offset % 251) as u8,
    }
}

/// The bytes `yes GUEST_TEXT | head -c GUEST_WRITE_LEN` produce.
fn guest_write() -> Vec<u8> {
    let line = format!("{GUEST_TEXT}\n");
    line.bytes().cycle().take(GUEST_WRITE_LEN).collect()
}

/// The init script: modules, then each device in turn, everything on COM2.
fn init_script(modules: &[String]) -> String {
    let loads: String = modules.iter().map(|m| format!("load {m}\n")).collect();
    let last = DISK_LEN / SECTOR - 1;
    let guest_ip = ip_text(&GUEST_IP);
    let peer_ip = ip_text(&PEER_IP);
    format!(
        r#"load() {{
    case "$1" in
    *.xz) xzcat "$1" >/tmp/m.ko ;;
    *.gz) zcat "$1" >/tmp/m.ko ;;
    *) cp "$1" /tmp/m.ko ;;
    esac && insmod /tmp/m.ko && echo "init: loaded $1" || echo "init: FAILED to load $1"
}}
{loads}n=0
until [ -c /dev/hvc0 ] && [ -b /dev/vda ] && [ -e /sys/class/net/eth0 ]; do
    n=$((n + 1))
    [ $n -gt 400 ] && break
    usleep 50000
done
echo "virtio: $(cat /sys/bus/virtio/devices/*/device | tr '\n' ' ')"

if [ -c /dev/hvc0 ]; then
    exec 3<>/dev/hvc0
    stty raw -echo <&3
    echo "{HVC_HELLO}" >&3
    echo "hvc0: ready"
    if read -t 60 -r line <&3; then
        echo "hvc0: got $line"
        echo "hvc0: echo $line" >&3
    else
        echo "hvc0: FAILED to read a line"
    fi
    exec 3>&-
else
    echo "hvc0: FAILED: no /dev/hvc0"
fi

echo "blk: sectors $(cat /sys/block/vda/size)"
echo "blk: sector 0 $(dd if=/dev/vda bs={SECTOR} count=1 2>/dev/null | od -An -v -tx1 | tr -d ' \n')"
echo "blk: sector {last} $(dd if=/dev/vda bs={SECTOR} skip={last} count=1 2>/dev/null | od -An -v -tx1 | tr -d ' \n')"
if yes '{GUEST_TEXT}' | head -c {GUEST_WRITE_LEN} | dd of=/dev/vda bs={SECTOR} seek={GUEST_WRITE_SECTOR} conv=fsync 2>/dev/null; then
    echo "blk: wrote"
else
    echo "blk: FAILED to write"
fi
sync

echo 1 >/proc/sys/net/ipv6/conf/eth0/disable_ipv6
ip link set eth0 up && ip addr add {guest_ip}/24 dev eth0 && echo "net: up"
echo "net: mac $(cat /sys/class/net/eth0/address)"
ping -c 3 -w 60 {peer_ip}
echo "net: tx_packets $(cat /sys/class/net/eth0/statistics/tx_packets)"
echo "net: rx_packets $(cat /sys/class/net/eth0/statistics/rx_packets)"
echo "init: done"
poweroff -f
"#
    )
}

fn mac_text(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

fn ip_text(ip: &[u8; 4]) -> String {
    let parts: Vec<String> = ip.iter().map(u8::to_string).collect();
    parts.join(".")
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A module file's name without `.ko` and a compression suffix, `-` read as `_`.
fn module_name(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    let stem = [".ko", ".ko.xz", ".ko.gz", ".ko.zst"]
        .iter()
        .find_map(|s| name.strip_suffix(s))?;
    Some(stem.replace('-', "_"))
}

/// The files of the [`MODULES`] the kernel next to `vmlinux` does not have built in, in load
/// order, and the names of those built in; `Err` names a module the test cannot load.
fn modules_to_load(vmlinux: &Path) -> Result<(Vec<PathBuf>, Vec<String>), String> {
    let kernel_dir = vmlinux.parent().unwrap_or(Path::new("/"));
    let dir = kernel_dir.join("modules");
    let builtin: HashSet<String> = match std::fs::read_to_string(dir.join("modules.builtin")) {
        Ok(list) => list
            .lines()
            .filter_map(|l| module_name(Path::new(l)))
            .collect(),
        // A kernel without modules (one from `ktstr kernel build`): its config says what
        // is built in.
        Err(_) => built_in_by_config(&kernel_dir.join("config")),
    };
    let mut files = Vec::new();
    files_under(&dir, &mut files);
    let (mut load, mut built_in) = (Vec::new(), Vec::new());
    for m in MODULES {
        if builtin.contains(m) {
            built_in.push(m.to_string());
            continue;
        }
        let Some(f) = files.iter().find(|f| module_name(f).as_deref() == Some(m)) else {
            return Err(format!(
                "{m} is neither built into the kernel nor in {}",
                dir.display()
            ));
        };
        if f.to_string_lossy().ends_with(".zst") {
            return Err(format!(
                "{} is zstd-compressed, which busybox cannot unpack",
                f.display()
            ));
        }
        load.push(f.clone());
    }
    Ok((load, built_in))
}

/// The [`MODULES`] whose config option is `=y` in the kernel config at `config`.
fn built_in_by_config(config: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    MODULES
        .iter()
        .filter(|m| {
            let option = format!("CONFIG_{}=y", m.to_uppercase());
            text.lines().any(|l| l.trim() == option)
        })
        .map(|m| m.to_string())
        .collect()
}

/// Writes the initramfs (busybox, `/init`, the modules) as a newc cpio at `out`.
fn build_initramfs(
    dir: &Path,
    busybox: &Path,
    modules: &[PathBuf],
    out: &Path,
) -> Result<(), String> {
    let names: Vec<String> = modules
        .iter()
        .map(|m| {
            m.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let guest_modules: Vec<String> = names.iter().map(|n| format!("/lib/modules/{n}")).collect();
    let root = busybox_root(dir, busybox, &init_script(&guest_modules))?;
    for (m, name) in modules.iter().zip(&names) {
        std::fs::copy(m, root.join("lib/modules").join(name))
            .map_err(|e| format!("copying {}: {e}", m.display()))?;
    }
    cpio(&root, out)
}

/// RFC 1071 checksum of `data`.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The ARP reply of 10.0.0.1 to an Ethernet ARP request for it.
fn arp_reply(frame: &[u8]) -> Option<Vec<u8>> {
    let arp = frame.get(14..42)?;
    if frame[12..14] != ETH_ARP || arp[..6] != ARP_ETH_IPV4 || arp[6..8] != [0, 1] {
        return None;
    }
    let (sha, spa, tpa) = (&arp[8..14], &arp[14..18], &arp[24..28]);
    if tpa != PEER_IP {
        return None;
    }
    let mut r = Vec::with_capacity(42);
    r.extend_from_slice(sha);
    r.extend_from_slice(&PEER_MAC);
    r.extend_from_slice(&ETH_ARP);
    r.extend_from_slice(&ARP_ETH_IPV4);
    r.extend_from_slice(&[0, 2]);
    r.extend_from_slice(&PEER_MAC);
    r.extend_from_slice(&PEER_IP);
    r.extend_from_slice(sha);
    r.extend_from_slice(spa);
    Some(r)
}

/// The ICMP echo reply of 10.0.0.1 to an echo request sent to it.
fn echo_reply(frame: &[u8]) -> Option<Vec<u8>> {
    let ip = frame.get(14..)?;
    let ihl = usize::from(*ip.first()? & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    if frame[12..14] != ETH_IPV4
        || ip[0] >> 4 != 4
        || ihl < 20
        || total < ihl + 8
        || total > ip.len()
        || ip[9] != 1
        || ip[16..20] != PEER_IP
        || ip[ihl] != 8
    {
        return None;
    }
    let mut r = Vec::with_capacity(14 + total);
    r.extend_from_slice(&frame[6..12]);
    r.extend_from_slice(&PEER_MAC);
    r.extend_from_slice(&ETH_IPV4);
    let mut ip = ip[..total].to_vec();
    // Swapping the addresses keeps the header checksum valid.
    let (src, dst) = ip[12..20].split_at_mut(4);
    src.swap_with_slice(dst);
    ip[ihl] = 0;
    ip[ihl + 2..ihl + 4].fill(0);
    let sum = internet_checksum(&ip[ihl..]);
    ip[ihl + 2..ihl + 4].copy_from_slice(&sum.to_be_bytes());
    r.extend_from_slice(&ip);
    Some(r)
}

/// Plays 10.0.0.1 on the loopback until `stop`: answers each distinct ARP request and echo
/// request the guest sends. Returns the requests answered, in order.
fn serve_peer(port: NetPort, stop: Arc<AtomicBool>) -> Vec<Vec<u8>> {
    let mut seen_tx = 0;
    let mut answered: Vec<Vec<u8>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let tx = port.stats().tx_frames;
        if tx != seen_tx {
            seen_tx = tx;
            for f in port.transmitted() {
                if answered.contains(&f) {
                    continue;
                }
                if let Some(reply) = arp_reply(&f).or_else(|| echo_reply(&f)) {
                    port.inject(&reply);
                    answered.push(f);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    answered
}

/// Bytes from a run of hex digits.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[test]
fn linux_drives_virtio_console_blk_and_net() {
    let Some((vmlinux, busybox)) = linux_guest_prereqs(TEST) else {
        return;
    };
    let (modules, built_in) = match modules_to_load(&vmlinux) {
        Ok(m) => m,
        Err(why) => {
            skip(TEST, &why);
            return;
        }
    };
    stderr(&format!(
        "{}: built in: {built_in:?}; loaded: {:?}\n",
        vmlinux.display(),
        modules
            .iter()
            .filter_map(|m| module_name(m))
            .collect::<Vec<_>>()
    ));

    let dir = scratch_dir("linux-devices");
    let initramfs = dir.join("initramfs.cpio");
    if let Err(why) = build_initramfs(&dir, &busybox, &modules, &initramfs) {
        let _ = std::fs::remove_dir_all(&dir);
        skip(TEST, &format!("cannot build the initramfs: {why}"));
        return;
    }
    let disk = dir.join("disk.img");
    let initial: Vec<u8> = (0..DISK_LEN).map(disk_byte).collect();
    std::fs::write(&disk, &initial).expect("disk image");

    let vm = KvmVm::builder()
        .topology(Topology::new(1, 1, 2, 1).expect("topology"))
        .memory_mib(512)
        .kernel(&vmlinux)
        .initramfs(&initramfs)
        .cmdline("console=ttyS0 rdinit=/init panic=-1 loglevel=6")
        .virtio_console(true)
        .disk(&disk, false)
        .virtio_net(true)
        .build()
        .expect("build");
    let io = vm.io().clone();
    let hvc = io.virtio_console.clone().expect("virtio-console output");
    let hvc_input = io
        .virtio_console_input
        .clone()
        .expect("virtio-console input");
    let net = io.net.clone().expect("virtio-net port");
    let t0 = Instant::now();
    let mut h = vm.start().expect("start");

    let app = io.app_output.clone();
    let console_feeder = std::thread::spawn(move || {
        let ready = app.wait_for(b"hvc0: ready", WAIT);
        if ready {
            hvc_input.send(format!("{HOST_LINE}\n").as_bytes());
        }
        ready
    });
    let stop = Arc::new(AtomicBool::new(false));
    let peer = {
        let (net, stop) = (net.clone(), Arc::clone(&stop));
        std::thread::spawn(move || serve_peer(net, stop))
    };

    let exit = h.wait(WAIT).expect("wait");
    let ran = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let answered = peer.join().expect("network peer thread");
    let fed = console_feeder.join().expect("console feeder thread");
    let after = std::fs::read(&disk).expect("read the disk image back");
    let _ = std::fs::remove_dir_all(&dir);

    let app = io.app_output.text();
    let log = io.console.text();
    stderr(&format!("--- COM1 ---\n{log}\n--- COM2 ---\n{app}\n"));
    stderr(&format!(
        "END: {exit} after {:.1} s; virtio-console: {:?}; net: {:?}\n",
        ran.as_secs_f64(),
        hvc.text(),
        net.stats()
    ));
    let ctx = format!("COM2:\n{app}");

    // The guest ran its script to the end and powered off.
    assert_eq!(exit, KvmExit::PowerOff { status: 0 }, "{exit}; {ctx}");
    assert!(app.contains("init: done"), "init script finished; {ctx}");
    assert!(!app.contains("FAILED"), "no step failed; {ctx}");
    // COM1: the kernel log, with the disk's size as virtio_blk read it from config space.
    assert!(log.contains("Linux version "), "kernel log on COM1");
    let blocks = format!("[vda] {} 512-byte logical blocks", DISK_LEN / SECTOR);
    assert!(log.contains(&blocks), "COM1 has `{blocks}`");
    // One virtio device of each kind: net (1), block (2), console (3).
    let mut ids: Vec<&str> = field(&app, "virtio:")
        .unwrap_or_else(|| panic!("virtio device list; {ctx}"))
        .split_whitespace()
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["0x0001", "0x0002", "0x0003"], "{ctx}");

    // virtio-console, both ways.
    assert!(fed, "the guest opened hvc0; {ctx}");
    assert_eq!(field(&app, "hvc0: got"), Some(HOST_LINE), "{ctx}");
    assert_eq!(
        hvc.text(),
        format!("{HVC_HELLO}\nhvc0: echo {HOST_LINE}\n"),
        "virtio-console output"
    );

    // virtio-blk: the guest saw the host's bytes, and the host sees the guest's.
    assert_eq!(
        field(&app, "blk: sectors"),
        Some((DISK_LEN / SECTOR).to_string().as_str()),
        "{ctx}"
    );
    for sector in [0, DISK_LEN / SECTOR - 1] {
        let key = format!("blk: sector {sector}");
        let read = field(&app, &key)
            .and_then(unhex)
            .unwrap_or_else(|| panic!("`{key}` with hex; {ctx}"));
        let start = sector * SECTOR;
        assert!(
            read == initial[start..start + SECTOR],
            "guest read of sector {sector} differs from the image; {ctx}"
        );
    }
    let mut expected = initial;
    let at = GUEST_WRITE_SECTOR * SECTOR;
    expected[at..at + GUEST_WRITE_LEN].copy_from_slice(&guest_write());
    assert_eq!(after.len(), DISK_LEN, "disk image size");
    if let Some(off) = (0..DISK_LEN).find(|&i| after[i] != expected[i]) {
        let end = (off + 32).min(DISK_LEN);
        panic!(
            "disk image differs at byte {off}: {:02x?}, expected {:02x?}; {ctx}",
            &after[off..end],
            &expected[off..end]
        );
    }

    // virtio-net: the card's MAC, the guest's ARP request and three echo requests answered.
    assert_eq!(
        field(&app, "net: mac"),
        Some(mac_text(&DEFAULT_MAC).as_str()),
        "{ctx}"
    );
    assert!(
        app.contains("3 packets transmitted, 3 packets received"),
        "ping got its answers; {ctx}"
    );
    let arp: Vec<&Vec<u8>> = answered.iter().filter(|f| f[12..14] == ETH_ARP).collect();
    let echo: Vec<&Vec<u8>> = answered.iter().filter(|f| f[12..14] == ETH_IPV4).collect();
    assert!(!arp.is_empty(), "the guest asked for 10.0.0.1; {ctx}");
    let request = &arp[0];
    assert_eq!(request[..6], [0xff; 6], "ARP request is broadcast");
    assert_eq!(request[6..12], DEFAULT_MAC, "from the card's MAC");
    assert_eq!(request[22..28], DEFAULT_MAC, "sender hardware address");
    assert_eq!(request[28..32], GUEST_IP, "sender IP");
    assert_eq!(request[38..42], PEER_IP, "target IP");
    assert_eq!(echo.len(), 3, "echo requests answered; {ctx}");
    for e in &echo {
        assert_eq!(e[..6], PEER_MAC, "echo request to the peer's MAC");
        assert_eq!(e[6..12], DEFAULT_MAC, "echo request from the card's MAC");
        assert_eq!(e[26..30], GUEST_IP, "echo request from 10.0.0.2");
    }
    let count = |key: &str| -> u64 {
        field(&app, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("`{key}`; {ctx}"))
    };
    let (guest_tx, guest_rx) = (count("net: tx_packets"), count("net: rx_packets"));
    let host = net.stats();
    assert_eq!(host.tx_errors, 0, "{host:?}");
    assert!(
        guest_tx >= 4,
        "guest sent the ARP and 3 echo requests: {guest_tx}"
    );
    assert!(
        host.tx_frames >= guest_tx,
        "host saw what the guest sent: {host:?}, guest {guest_tx}"
    );
    // Each frame sent comes back by the loopback, and each answer arrives.
    assert!(
        guest_rx >= 4 + 4,
        "guest received its own 4 frames and 4 answers: {guest_rx}"
    );
    assert!(
        host.rx_frames >= guest_rx,
        "host delivered what the guest received: {host:?}, guest {guest_rx}"
    );
}
