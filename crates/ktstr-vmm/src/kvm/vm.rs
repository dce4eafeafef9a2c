//! The VM: built from plain settings, started as one thread per vCPU, waited for with a deadline.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ktstr_topology::acpi::{IrqOverride, Uart, VirtioMmioDevice};
use ktstr_topology::{build_tables, AcpiLayout, AcpiTables, ApicLayout, Topology};
use kvm_bindings::{kvm_mp_state, kvm_pit_config, KVM_MP_STATE_RUNNABLE, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use super::bus::{MmioBus, PioBus};
use super::devices::i8042::{I8042_BASE, I8042_LEN};
use super::devices::power::power_ports;
use super::devices::serial::{DEFAULT_OUTPUT_LIMIT, SERIAL_LEN};
use super::devices::virtio::net::DEFAULT_MAC;
use super::devices::virtio::{
    device_name, Block, Console, ConsoleInput, Net, NetPort, VirtioDevice, VirtioMmioTransport,
};
use super::devices::{
    IrqTrigger, PowerDevice, Rtc, SerialDevice, SerialInput, SerialOutput, I8042, POWER_PORT_BASE,
    POWER_PORT_LEN, RTC_BASE, RTC_LEN,
};
use super::error::ioctl;
use super::event_loop::{IoThread, QueueNotifier, Subscriber};
use super::faults::{DroppedOutput, FaultLog, GuestFaults};
use super::layout::{
    E820Entry, MemoryLayout, BIOS_START, BOOT_STACK_TOP, PROGRAM_GPA, PROGRAM_MAX, PROGRAM_STACK,
    PROGRAM_STACKS_GPA, RESET_VECTOR_GPA, RING_SIZE, RSDP_GPA, VIRTIO_MMIO_MAX, ZERO_PAGE_GPA,
};
use super::loader::{self, BootInfo, LoadedKernel};
use super::memory::{self, GuestMemory};
use super::regs::EntryRegs;
use super::reset_vector;
use super::ring::RingReader;
use super::vcpu::{self, KvmExit, Shared, VcpuRegs};
use super::{cpuid, layout, regs, KvmError};

/// Where the TSS KVM needs on Intel goes (three pages just below the BIOS ROM area).
const TSS_GPA: usize = 0xfffb_d000;

/// What the guest runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A Linux kernel: the boot vCPU enters it, the others wait for INIT/SIPI.
    Linux {
        /// ELF vmlinux or bzImage.
        kernel: PathBuf,
        /// Initramfs, if any.
        initramfs: Option<PathBuf>,
        /// The command line, verbatim.
        cmdline: String,
    },
    /// A 64-bit test program loaded at [`PROGRAM_GPA`]: every vCPU enters it at once, in long
    /// mode, with RDI = vCPU index, RSI = APIC ID, RDX = vCPU count, RSP = the top of its own
    /// [`PROGRAM_STACK`]-byte stack.
    Program {
        /// Machine code.
        code: Vec<u8>,
    },
}

/// A file-backed virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The image file.
    pub path: PathBuf,
    /// Whether the guest sees it read-only (VIRTIO_BLK_F_RO).
    pub read_only: bool,
}

/// Settings of a KVM VM, as plain data; [`KvmVmBuilder::build`] turns them into a [`KvmVm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmVmBuilder {
    topology: Topology,
    memory_mib: u64,
    kernel: Option<PathBuf>,
    initramfs: Option<PathBuf>,
    cmdline: String,
    program: Option<Vec<u8>>,
    ring_size: u64,
    irqchip: bool,
    console_file: Option<PathBuf>,
    virtio_console: bool,
    disks: Vec<DiskConfig>,
    net: bool,
    io_thread: bool,
    output_limit: usize,
}

impl Default for KvmVmBuilder {
    fn default() -> Self {
        KvmVmBuilder {
            topology: Topology::default(),
            memory_mib: 256,
            kernel: None,
            initramfs: None,
            cmdline: String::new(),
            program: None,
            ring_size: RING_SIZE,
            irqchip: true,
            console_file: None,
            virtio_console: false,
            disks: Vec::new(),
            net: false,
            io_thread: true,
            output_limit: DEFAULT_OUTPUT_LIMIT,
        }
    }
}

impl KvmVmBuilder {
    /// Sets the CPU topology.
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = topology;
        self
    }

    /// Sets guest RAM in MiB, split evenly over the NUMA nodes.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Boots this kernel (ELF vmlinux or bzImage).
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = Some(path.into());
        self
    }

    /// Gives the kernel this initramfs.
    pub fn initramfs(mut self, path: impl Into<PathBuf>) -> Self {
        self.initramfs = Some(path.into());
        self
    }

    /// Sets the kernel command line (used verbatim).
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }

    /// Runs this 64-bit test program on every vCPU instead of a kernel.
    pub fn program(mut self, code: impl Into<Vec<u8>>) -> Self {
        self.program = Some(code.into());
        self
    }

    /// Sets the size of the shared-memory ring region (multiple of 4 KiB).
    pub fn ring_size(mut self, bytes: u64) -> Self {
        self.ring_size = bytes;
        self
    }

    /// Chooses KVM's in-kernel irqchip and PIT (default) or none (then HLT exits to the VMM).
    pub fn irqchip(mut self, on: bool) -> Self {
        self.irqchip = on;
        self
    }

    /// Also copies COM1 to this file.
    pub fn console_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.console_file = Some(path.into());
        self
    }

    /// The most bytes of each guest output (COM1, COM2, virtio-console) the host keeps in
    /// memory; a guest that writes more loses the oldest (see [`GuestIo::fault_log`]).
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }

    /// Adds a virtio-console, the first virtio-MMIO device (host ends in [`GuestIo`]).
    pub fn virtio_console(mut self, on: bool) -> Self {
        self.virtio_console = on;
        self
    }

    /// Adds a virtio-blk disk backed by `path`; disks follow the console in call order.
    pub fn disk(mut self, path: impl Into<PathBuf>, read_only: bool) -> Self {
        self.disks.push(DiskConfig {
            path: path.into(),
            read_only,
        });
        self
    }

    /// Adds a virtio-net card after the disks (MAC [`DEFAULT_MAC`]), on an in-VMM L2 loopback:
    /// what the guest transmits arrives on its own receive queue; the host injects and
    /// captures frames through [`GuestIo::net`].
    pub fn virtio_net(mut self, on: bool) -> Self {
        self.net = on;
        self
    }

    /// Serves virtqueue notifications on an I/O thread through ioeventfds (default), or on
    /// the vCPU thread that wrote QueueNotify. Needs the in-kernel irqchip.
    pub fn io_thread(mut self, on: bool) -> Self {
        self.io_thread = on;
        self
    }

    /// What the guest will run.
    pub fn payload(&self) -> Result<Payload, KvmError> {
        match (&self.kernel, &self.program) {
            (Some(kernel), None) => Ok(Payload::Linux {
                kernel: kernel.clone(),
                initramfs: self.initramfs.clone(),
                cmdline: self.cmdline.clone(),
            }),
            (None, Some(code)) => Ok(Payload::Program { code: code.clone() }),
            _ => Err(KvmError::BadConfig {
                reason: "give exactly one of a kernel or a test program".into(),
            }),
        }
    }

    /// Creates the VM: memory, tables, devices and vCPUs, ready to [`KvmVm::start`].
    pub fn build(self) -> Result<KvmVm, KvmError> {
        KvmVm::new(self)
    }
}

impl From<&crate::VmConfig> for KvmVmBuilder {
    /// The engine-neutral config as KVM VMM settings: same topology, memory, kernel and
    /// initramfs; the command line gets `console=ttyS0 panic=-1` as the QEMU engine's does,
    /// and COM1 is copied to `console_log`. The bulk channel is a virtio-console, named to
    /// the guest by `ktstr.channel=hvc0`.
    fn from(cfg: &crate::VmConfig) -> Self {
        let channel = if cfg.bulk_channel {
            format!(" {}", crate::BULK_CHANNEL_ARG)
        } else {
            String::new()
        };
        KvmVm::builder()
            .topology(cfg.topology)
            .memory_mib(cfg.memory_mib)
            .kernel(cfg.kernel.clone())
            .initramfs(cfg.initramfs.clone())
            .cmdline(
                format!("{} console=ttyS0 panic=-1{channel}", cfg.cmdline.trim())
                    .trim()
                    .to_string(),
            )
            .console_file(cfg.console_log.clone())
            .virtio_console(cfg.bulk_channel)
    }
}

/// The host's ends of the guest's devices and memory; shared by [`KvmVm`] and [`KvmVmHandle`].
#[derive(Debug, Clone)]
pub struct GuestIo {
    /// COM1 (kernel console) output.
    pub console: SerialOutput,
    /// COM2 (application channel) output from the guest.
    pub app_output: SerialOutput,
    /// COM2 input to the guest.
    pub app_input: SerialInput,
    /// Guest memory, for the monitor.
    pub memory: GuestMemory,
    /// The shared-memory ring's reader.
    pub ring: RingReader,
    /// virtio-console output from the guest, when the VM has one.
    pub virtio_console: Option<SerialOutput>,
    /// virtio-console input to the guest, when the VM has one.
    pub virtio_console_input: Option<ConsoleInput>,
    /// The host's port on the virtio-net loopback, when the VM has a network card.
    pub net: Option<NetPort>,
    /// What the guest did that the VMM refused, counted by the buses and devices.
    pub faults: Arc<GuestFaults>,
    /// Whether COM1 is also copied whole to a file (then its bounded tail loses nothing).
    pub console_on_disk: bool,
}

impl GuestIo {
    /// Everything the VMM refused so far, with the outputs that dropped bytes.
    pub fn fault_log(&self) -> FaultLog {
        let mut log = self.faults.snapshot();
        let outputs = [
            (
                "COM1",
                Some(&self.console).filter(|_| !self.console_on_disk),
            ),
            ("COM2", Some(&self.app_output)),
            ("virtio-console", self.virtio_console.as_ref()),
        ];
        for (device, out) in outputs {
            let Some(out) = out else { continue };
            let bytes = out.dropped();
            if bytes > 0 {
                log.dropped.push(DroppedOutput {
                    device: device.into(),
                    bytes,
                    limit: out.limit(),
                });
            }
        }
        log
    }

    /// Ends every output stream (the VM stopped).
    fn close_outputs(&self) {
        self.console.close();
        self.app_output.close();
        if let Some(v) = &self.virtio_console {
            v.close();
        }
    }
}

impl std::fmt::Debug for SerialInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SerialInput")
    }
}

/// A built VM, not yet running.
pub struct KvmVm {
    // Field order: vCPUs and the VM fd close before the memory they map is unmapped.
    vcpus: Vec<(u32, VcpuFd)>,
    _vm: VmFd,
    _kvm: Kvm,
    bus: Arc<PioBus>,
    mmio: Arc<MmioBus>,
    virtio_mmio: Vec<VirtioMmioDevice>,
    io_subscribers: Vec<Subscriber>,
    kicks: Arc<AtomicU64>,
    io: GuestIo,
    tables: AcpiTables,
    e820: Vec<E820Entry>,
    cmdline: String,
}

impl KvmVm {
    /// Starts describing a VM.
    pub fn builder() -> KvmVmBuilder {
        KvmVmBuilder::default()
    }

    fn new(b: KvmVmBuilder) -> Result<KvmVm, KvmError> {
        let payload = b.payload()?;
        let topology = b.topology;
        let apic = ApicLayout::new(&topology).map_err(|e| KvmError::BadConfig {
            reason: e.to_string(),
        })?;
        if matches!(payload, Payload::Linux { .. }) && !b.irqchip && topology.total_cpus() > 1 {
            return Err(KvmError::BadConfig {
                reason: "Linux needs the in-kernel irqchip to start its other vCPUs".into(),
            });
        }
        let layout = MemoryLayout::new(&topology, b.memory_mib, b.ring_size)?;
        let virtio_count = usize::from(b.virtio_console) + b.disks.len() + usize::from(b.net);
        let virtio_mmio: Vec<VirtioMmioDevice> = (0..virtio_count)
            .map(layout::virtio_mmio_slot)
            .collect::<Option<_>>()
            .ok_or_else(|| KvmError::BadConfig {
                reason: format!(
                    "{virtio_count} virtio devices; at most {VIRTIO_MMIO_MAX} fit the IOAPIC"
                ),
            })?;

        let kvm = Kvm::new().map_err(KvmError::OpenKvm)?;
        let use_io_thread = b.io_thread && b.irqchip && kvm.check_extension(Cap::Ioeventfd);
        let kicks = Arc::new(AtomicU64::new(0));
        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        vm.set_tss_address(TSS_GPA)
            .map_err(ioctl("KVM_SET_TSS_ADDR"))?;
        if b.irqchip {
            vm.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            vm.create_pit2(pit).map_err(ioctl("KVM_CREATE_PIT2"))?;
        }
        let mem = memory::allocate(&layout)?;
        memory::register(&vm, &mem)?;

        let mut acpi = AcpiLayout::new(RSDP_GPA, layout.ram.clone());
        acpi.uarts = vec![Uart::COM1, Uart::COM2];
        acpi.irq_overrides = vec![IrqOverride::PC_TIMER];
        acpi.power = Some(power_ports());
        acpi.virtio_mmio = virtio_mmio.clone();
        let tables = build_tables(&topology, &acpi).map_err(KvmError::Acpi)?;
        if tables.end_gpa() > RESET_VECTOR_GPA {
            return Err(KvmError::DoesNotFit {
                what: "ACPI tables",
                gpa: BIOS_START,
                size: tables.end_gpa() - BIOS_START,
            });
        }
        for t in &tables.blobs {
            mem.write_slice(&t.bytes, GuestAddress(t.gpa))
                .map_err(|source| KvmError::GuestMemory {
                    what: "ACPI table",
                    gpa: t.gpa,
                    source,
                })?;
        }
        regs::write_boot_tables(&mem)?;
        let e820 = layout.e820();

        let (entry, cmdline) = match &payload {
            Payload::Linux {
                kernel,
                initramfs,
                cmdline,
            } => {
                let k: LoadedKernel = loader::load_kernel(&mem, kernel)?;
                reset_vector::write(&mem)?;
                let cmdline_len = loader::write_cmdline(&mem, cmdline)?;
                let initramfs = match initramfs {
                    Some(p) => Some(loader::load_initramfs(&mem, &layout, &k, p)?),
                    None => None,
                };
                let info = BootInfo {
                    cmdline_len,
                    initramfs,
                    e820: e820.clone(),
                    rsdp: tables.rsdp_gpa,
                };
                loader::write_boot_params(&mem, &loader::boot_params(&k, &info)?)?;
                (k.entry, cmdline.clone())
            }
            Payload::Program { code } => {
                let size = code.len() as u64;
                let stacks = u64::from(topology.total_cpus()) * PROGRAM_STACK;
                if size == 0
                    || size > PROGRAM_MAX
                    || PROGRAM_STACKS_GPA + stacks > layout.low_ram_end()
                {
                    return Err(KvmError::DoesNotFit {
                        what: "test program and its stacks",
                        gpa: PROGRAM_GPA,
                        size,
                    });
                }
                mem.write_slice(code, GuestAddress(PROGRAM_GPA))
                    .map_err(|source| KvmError::GuestMemory {
                        what: "test program",
                        gpa: PROGRAM_GPA,
                        source,
                    })?;
                (PROGRAM_GPA, String::new())
            }
        };
        let ring = RingReader::init(&mem, layout.ring_size).map_err(|_| KvmError::DoesNotFit {
            what: "ring",
            gpa: super::layout::RING_GPA,
            size: layout.ring_size,
        })?;

        let faults = Arc::new(GuestFaults::new());
        let console = SerialOutput::with_limit(b.output_limit);
        let app_output = SerialOutput::with_limit(b.output_limit);
        let console_file = match &b.console_file {
            Some(p) => Some(File::create(p).map_err(|source| KvmError::ReadFile {
                what: "console file",
                path: p.clone(),
                source,
            })?),
            None => None,
        };
        let irq = |isa: u8| irq_line(&vm, b.irqchip, u32::from(isa));
        let com1 = Arc::new(Mutex::new(SerialDevice::new(
            irq(Uart::COM1.irq)?,
            console.clone(),
            console_file,
        )));
        let com2 = Arc::new(Mutex::new(SerialDevice::new(
            irq(Uart::COM2.irq)?,
            app_output.clone(),
            None,
        )));
        let mut bus = PioBus::new(faults.clone());
        // A 16550's registers are bytes: wider accesses are refused and counted.
        bus.insert_sized(Uart::COM1.port, SERIAL_LEN, 1, com1)?;
        bus.insert_sized(Uart::COM2.port, SERIAL_LEN, 1, com2.clone())?;
        bus.insert(
            POWER_PORT_BASE,
            POWER_PORT_LEN,
            Arc::new(Mutex::new(PowerDevice)),
        )?;
        bus.insert(I8042_BASE, I8042_LEN, Arc::new(Mutex::new(I8042)))?;
        bus.insert(RTC_BASE, RTC_LEN, Arc::new(Mutex::new(Rtc::default())))?;

        // virtio-MMIO devices live exactly where the DSDT says: console, disks, network card.
        let mut virtio = VirtioAttacher {
            vm: &vm,
            mem: &mem,
            irqchip: b.irqchip,
            slots: virtio_mmio.iter(),
            mmio: MmioBus::new(faults.clone()),
            io_subscribers: use_io_thread.then(Vec::new),
            kicks: Arc::clone(&kicks),
            faults: faults.clone(),
        };
        let mut virtio_console = None;
        let mut virtio_console_input = None;
        if b.virtio_console {
            let out = SerialOutput::with_limit(b.output_limit);
            let t = virtio.attach(Console::new(out.clone()))?;
            Console::wake_on_drain(&t);
            virtio_console = Some(out);
            virtio_console_input = Some(ConsoleInput::new(t));
        }
        for (i, d) in b.disks.iter().enumerate() {
            let blk = Block::open(&d.path, d.read_only, &format!("ktstr-disk{i}"))
                .map_err(KvmError::Disk)?;
            virtio.attach(blk)?;
        }
        let net = match b.net {
            true => Some(NetPort::new(virtio.attach(Net::new(DEFAULT_MAC))?)),
            false => None,
        };
        let (mmio, io_subscribers) = (virtio.mmio, virtio.io_subscribers.unwrap_or_default());

        let host_cpuid = cpuid::supported(&kvm)?;
        let mut vcpus = Vec::new();
        for (cpu, apic_id) in apic.apic_ids() {
            let fd = vm
                .create_vcpu(u64::from(apic_id))
                .map_err(ioctl("KVM_CREATE_VCPU"))?;
            fd.set_cpuid2(&cpuid::for_vcpu(&topology, cpu, &host_cpuid)?)
                .map_err(ioctl("KVM_SET_CPUID2"))?;
            if b.irqchip {
                regs::set_lint(&fd)?;
            }
            match &payload {
                Payload::Linux { .. } if cpu == 0 => {
                    let e = EntryRegs {
                        rip: entry,
                        rsp: BOOT_STACK_TOP,
                        rsi: ZERO_PAGE_GPA,
                        ..Default::default()
                    };
                    regs::enter_long_mode(&fd, e)?;
                }
                Payload::Linux { .. } => {}
                Payload::Program { .. } => {
                    let stack_top = PROGRAM_STACKS_GPA + u64::from(cpu + 1) * PROGRAM_STACK - 16;
                    let e = EntryRegs {
                        rip: entry,
                        rsp: stack_top,
                        rsi: u64::from(apic_id),
                        rdi: u64::from(cpu),
                        rdx: u64::from(topology.total_cpus()),
                    };
                    regs::enter_long_mode(&fd, e)?;
                    if b.irqchip && cpu != 0 {
                        fd.set_mp_state(kvm_mp_state {
                            mp_state: KVM_MP_STATE_RUNNABLE,
                        })
                        .map_err(ioctl("KVM_SET_MP_STATE"))?;
                    }
                }
            }
            vcpus.push((cpu, fd));
        }

        Ok(KvmVm {
            vcpus,
            _vm: vm,
            _kvm: kvm,
            bus: Arc::new(bus),
            mmio: Arc::new(mmio),
            virtio_mmio,
            io_subscribers,
            kicks,
            io: GuestIo {
                console,
                app_output,
                app_input: SerialInput::new(com2),
                memory: mem,
                ring,
                virtio_console,
                virtio_console_input,
                net,
                faults,
                console_on_disk: b.console_file.is_some(),
            },
            tables,
            e820,
            cmdline,
        })
    }

    /// The host's ends of the guest's devices and memory.
    pub fn io(&self) -> &GuestIo {
        &self.io
    }

    /// The ACPI tables written into the guest.
    pub fn acpi_tables(&self) -> &AcpiTables {
        &self.tables
    }

    /// The virtio-MMIO windows and interrupts, as the DSDT describes them (`V000` first).
    pub fn virtio_mmio(&self) -> &[VirtioMmioDevice] {
        &self.virtio_mmio
    }

    /// The e820 map given to the guest.
    pub fn e820(&self) -> &[E820Entry] {
        &self.e820
    }

    /// The kernel command line given to the guest (empty for test programs).
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Starts one thread per vCPU.
    pub fn start(mut self) -> Result<KvmVmHandle, KvmError> {
        vcpu::install_kick_handler()?;
        let io_thread = if self.io_subscribers.is_empty() {
            None
        } else {
            Some(IoThread::start(std::mem::take(&mut self.io_subscribers))?)
        };
        let shared = Arc::new(Shared::default());
        let n = self.vcpus.len() as u32;
        let mut threads = Vec::new();
        for (cpu, fd) in self.vcpus.drain(..) {
            let (bus, mmio, sh) = (
                Arc::clone(&self.bus),
                Arc::clone(&self.mmio),
                Arc::clone(&shared),
            );
            let t = std::thread::Builder::new()
                .name(format!("vcpu{cpu}"))
                .spawn(move || vcpu::run_vcpu(cpu, fd, bus, mmio, sh, n))
                .map_err(|source| KvmError::Os {
                    what: "spawning a vCPU thread",
                    source,
                });
            match t {
                Ok(t) => threads.push((cpu, t)),
                Err(e) => {
                    shared.stop();
                    stop_threads(&mut threads);
                    return Err(e);
                }
            }
        }
        Ok(KvmVmHandle {
            io: self.io.clone(),
            shared,
            threads: Arc::new(Mutex::new(threads)),
            io_thread,
            vm: self,
            started: Instant::now(),
        })
    }

    /// Starts the VM and waits up to `timeout` for it to end.
    pub fn run(self, timeout: Duration) -> Result<(KvmExit, GuestIo), KvmError> {
        let mut h = self.start()?;
        let exit = h.wait(timeout)?;
        Ok((exit, h.io.clone()))
    }
}

/// An interrupt line: an irqfd on `gsi` with the in-kernel irqchip, else a line to nowhere.
fn irq_line(vm: &VmFd, irqchip: bool, gsi: u32) -> Result<IrqTrigger, KvmError> {
    if !irqchip {
        return Ok(IrqTrigger::new(None));
    }
    let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| KvmError::Os {
        what: "creating an interrupt eventfd",
        source,
    })?;
    vm.register_irqfd(&evt, gsi).map_err(ioctl("KVM_IRQFD"))?;
    Ok(IrqTrigger::new(Some(evt)))
}

/// Puts virtio devices on the MMIO bus, one DSDT window after another.
struct VirtioAttacher<'a> {
    vm: &'a VmFd,
    mem: &'a GuestMemory,
    irqchip: bool,
    slots: std::slice::Iter<'a, VirtioMmioDevice>,
    mmio: MmioBus,
    /// The I/O thread's subscribers, when notifications go to it.
    io_subscribers: Option<Vec<Subscriber>>,
    kicks: Arc<AtomicU64>,
    faults: Arc<GuestFaults>,
}

impl VirtioAttacher<'_> {
    /// Puts `device` behind a transport in the next window; with an I/O thread, KVM signals
    /// its queue notifications to it.
    fn attach<D: VirtioDevice + 'static>(
        &mut self,
        device: D,
    ) -> Result<Arc<Mutex<VirtioMmioTransport<D>>>, KvmError> {
        let slot = self.slots.next().ok_or_else(|| KvmError::BadConfig {
            reason: "more virtio devices than virtio-MMIO windows".into(),
        })?;
        let irq = irq_line(self.vm, self.irqchip, slot.gsi)?;
        let mut t =
            VirtioMmioTransport::new(device, self.mem.clone(), irq).map_err(KvmError::Virtio)?;
        let name = format!(
            "{} at {:#x}",
            device_name(t.device().device_id()),
            slot.base
        );
        t.report_faults_to(self.faults.clone(), name);
        let t = Arc::new(Mutex::new(t));
        self.mmio.insert(slot.base, slot.size, t.clone())?;
        if let Some(subs) = &mut self.io_subscribers {
            let n = QueueNotifier::register(self.vm, slot.base, t.clone(), self.kicks.clone())?;
            subs.push(Arc::new(Mutex::new(n)));
        }
        Ok(t)
    }
}

/// Kicks every thread out of KVM_RUN until it has returned, then joins it.
fn stop_threads(threads: &mut Vec<(u32, JoinHandle<()>)>) -> Vec<u32> {
    let mut lost = Vec::new();
    for (cpu, t) in std::mem::take(threads) {
        while !t.is_finished() {
            // An error means the thread is already gone.
            let _ = t.kill(vcpu::kick_signal());
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.join().is_err() {
            lost.push(cpu);
        }
    }
    lost
}

/// The vCPU threads of a running VM, shared with its [`KvmFreezer`]s; emptied (under the
/// lock) before they are joined, so nobody signals a thread that is gone.
type VcpuThreads = Arc<Mutex<Vec<(u32, JoinHandle<()>)>>>;

/// Takes the threads out of `threads` and stops them (see [`stop_threads`]).
fn take_and_stop(threads: &VcpuThreads) -> Vec<u32> {
    let mut taken = std::mem::take(&mut *crate::kvm::lock(threads));
    stop_threads(&mut taken)
}

/// Freezes a running VM's vCPUs from any thread, and lets them go on.
#[derive(Clone)]
pub struct KvmFreezer {
    shared: Arc<Shared>,
    threads: VcpuThreads,
}

impl std::fmt::Debug for KvmFreezer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmFreezer").finish_non_exhaustive()
    }
}

impl KvmFreezer {
    /// Parks every vCPU outside KVM_RUN, waiting up to `timeout` for all of them; on
    /// failure none stays parked. Guest memory does not change until [`KvmFreezer::thaw`].
    pub fn freeze(&self, timeout: Duration) -> Result<(), KvmError> {
        let deadline = Instant::now() + timeout;
        self.shared.ask_pause();
        loop {
            let n = {
                let threads = crate::kvm::lock(&self.threads);
                if threads.is_empty() || self.shared.stopping() {
                    drop(threads);
                    self.shared.release();
                    return Err(KvmError::NotRunning);
                }
                // A kick that lands outside KVM_RUN is lost: kick until every one parked.
                for (_, t) in threads.iter() {
                    let _ = t.kill(vcpu::kick_signal());
                }
                threads.len() as u32
            };
            let parked = self.shared.wait_parked(n, Duration::from_millis(2));
            if parked >= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.shared.release();
                return Err(KvmError::FreezeTimedOut { parked, vcpus: n });
            }
        }
    }

    /// Lets the vCPUs run again.
    pub fn thaw(&self) {
        self.shared.release();
    }
}

/// A running VM.
pub struct KvmVmHandle {
    io: GuestIo,
    shared: Arc<Shared>,
    threads: VcpuThreads,
    io_thread: Option<IoThread>,
    // Keeps the VM, vCPU fds' VM and memory alive until the threads are joined; also
    // holds the I/O thread's kick counter.
    vm: KvmVm,
    started: Instant,
}

impl KvmVmHandle {
    /// The host's ends of the guest's devices and memory.
    pub fn io(&self) -> &GuestIo {
        &self.io
    }

    /// When the vCPU threads were started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// A handle that freezes and thaws this VM's vCPUs from another thread.
    pub fn freezer(&self) -> KvmFreezer {
        KvmFreezer {
            shared: Arc::clone(&self.shared),
            threads: Arc::clone(&self.threads),
        }
    }

    /// Every running vCPU's registers, in vCPU order: each vCPU thread is kicked out of
    /// KVM_RUN, reads its own registers and goes on running.
    pub fn registers(&self, timeout: Duration) -> Result<Vec<VcpuRegs>, KvmError> {
        let threads = crate::kvm::lock(&self.threads);
        if threads.is_empty() || self.shared.stopping() {
            return Err(KvmError::NotRunning);
        }
        let gen = self.shared.request_snapshot();
        let deadline = Instant::now() + timeout;
        loop {
            // A kick that lands outside KVM_RUN is lost, so kick again until all answered.
            for (_, t) in threads.iter() {
                let _ = t.kill(vcpu::kick_signal());
            }
            let got = self.shared.snapshot_answers(gen, Duration::from_millis(2));
            if got.len() >= threads.len() {
                let mut regs: Vec<(u32, VcpuRegs)> = got;
                regs.sort_by_key(|r| r.0);
                return Ok(regs.into_iter().map(|r| r.1).collect());
            }
            if Instant::now() >= deadline || self.shared.stopping() {
                let missing = threads
                    .iter()
                    .map(|t| t.0)
                    .filter(|c| !got.iter().any(|g| g.0 == *c))
                    .collect();
                return Err(KvmError::RegistersTimedOut { missing });
            }
        }
    }

    /// Port-I/O exits the vCPUs handled so far.
    pub fn io_exits(&self) -> u64 {
        self.shared.io_exits()
    }

    /// Whether virtqueue notifications go to the I/O thread (through ioeventfds).
    pub fn has_io_thread(&self) -> bool {
        self.io_thread.is_some()
    }

    /// Virtqueue notifications the I/O thread served so far.
    pub fn io_thread_kicks(&self) -> u64 {
        self.vm.kicks.load(Ordering::Relaxed)
    }

    /// Waits until the guest ends or `timeout` passes (then stops it): how it ended.
    /// [`KvmError::NotRunning`] once the VM was stopped (an earlier wait, or a kill).
    pub fn wait(&mut self, timeout: Duration) -> Result<KvmExit, KvmError> {
        if crate::kvm::lock(&self.threads).is_empty() {
            return Err(KvmError::NotRunning);
        }
        let outcome = self.shared.wait(Instant::now() + timeout);
        self.conclude(outcome)
    }

    /// How the guest ended if it has, without blocking (the VM keeps running otherwise).
    ///
    /// After it returned `Some`, the VM is stopped and later calls return `None`.
    pub fn try_wait(&mut self) -> Result<Option<KvmExit>, KvmError> {
        if crate::kvm::lock(&self.threads).is_empty() {
            return Ok(None);
        }
        match self.shared.wait(Instant::now()) {
            Some(outcome) => self.conclude(Some(outcome)).map(Some),
            None => Ok(None),
        }
    }

    /// Stops every vCPU now and ends the console and application streams.
    pub fn kill(&mut self) {
        self.shared.stop();
        take_and_stop(&self.threads);
        self.stop_io_thread();
        self.io.close_outputs();
    }

    fn stop_io_thread(&mut self) {
        if let Some(t) = &mut self.io_thread {
            t.stop();
        }
    }

    /// Stops the vCPUs and turns `outcome` (taken from `shared`, if any) into the result.
    fn conclude(
        &mut self,
        outcome: Option<Result<KvmExit, KvmError>>,
    ) -> Result<KvmExit, KvmError> {
        let n = crate::kvm::lock(&self.threads).len() as u32;
        self.shared.stop();
        let lost = take_and_stop(&self.threads);
        self.stop_io_thread();
        self.io.close_outputs();
        match (outcome, lost.first()) {
            (Some(o), _) => o,
            (None, Some(cpu)) => Err(KvmError::VcpuLost { cpu: *cpu }),
            (None, None) => Ok(KvmExit::TimedOut {
                vcpus: self.shared.stopped_regs(n),
            }),
        }
    }
}

impl Drop for KvmVmHandle {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_needs_exactly_one_of_kernel_or_program() {
        assert!(KvmVm::builder().payload().is_err());
        let both = KvmVm::builder().kernel("/k").program(vec![0xf4]);
        assert!(both.payload().is_err());
        assert_eq!(
            KvmVm::builder().program(vec![0xf4]).payload().unwrap(),
            Payload::Program { code: vec![0xf4] }
        );
    }

    #[test]
    fn engine_config_converts() {
        let cfg =
            crate::VmConfig::new("/k".into(), "/i".into(), Topology::new(2, 1, 1, 1).unwrap())
                .memory_mib(512)
                .cmdline("rdinit=/init");
        let b = KvmVmBuilder::from(&cfg);
        assert_eq!(
            b.payload().unwrap(),
            Payload::Linux {
                kernel: "/k".into(),
                initramfs: Some("/i".into()),
                cmdline: "rdinit=/init console=ttyS0 panic=-1".into(),
            }
        );
        assert_eq!(b.memory_mib, 512);
        assert_eq!(b.topology.numa_nodes, 2);
    }
}
