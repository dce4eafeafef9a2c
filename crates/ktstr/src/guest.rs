//! The guest side: ktstr's `/init`.
//!
//! The host packs the ktstr binary (or a test binary) as `/init` with a job
//! file at [`JOB_PATH`]. As PID 1 it mounts the kernel filesystems, opens COM2
//! raw, says [`Hello`], loads modules, runs the job's command while framing its
//! output ([`crate::proto`]), reports [`CommandExit`], and powers the VM off.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::proto::{Encoder, FrameKind};
use crate::sched::{self, SchedulerJob};

/// Where the host puts the job in the initramfs.
pub const JOB_PATH: &str = "/ktstr/job.json";
/// The serial device of the application channel (COM2).
pub const APP_TTY: &str = "/dev/ttyS1";
/// The kernel command-line key by which the engine offers the bulk channel: `hvc0` (ktstr's
/// VMM's virtio-console) or the name of a virtio-serial port (QEMU).
pub use ktstr_vmm::BULK_CHANNEL_KEY as CHANNEL_KEY;
/// The bulk channel's console device on ktstr's VMM.
pub const BULK_TTY: &str = "/dev/hvc0";
/// Where the kernel lists virtio-serial ports, each with its `name`.
const VIRTIO_PORTS: &str = "/sys/class/virtio-ports";
/// A pipe read shorter than this makes the pump wait [`COALESCE_WAIT`] before the next.
const COALESCE_BELOW: usize = 16 * 1024;
/// How long the pump lets output gather after a short read.
const COALESCE_WAIT: Duration = Duration::from_millis(1);
/// How long guest init waits for the bulk channel's device to appear.
const BULK_WAIT: Duration = Duration::from_secs(5);
/// Where `--include-files` land in the guest.
pub const INCLUDE_DIR: &str = "/include-files";
/// Where modules land in the guest.
pub const MODULE_DIR: &str = "/lib/modules/ktstr";
/// `PATH` in the guest.
pub const GUEST_PATH: &str = "/include-files:/bin:/sbin:/usr/bin:/usr/sbin";

/// What the guest is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Run a command and report, or hand COM2 to an interactive shell.
    pub mode: JobMode,
    /// Module file names under [`MODULE_DIR`], loaded in order before the command.
    #[serde(default)]
    pub modules: Vec<String>,
    /// A sched_ext scheduler to attach before the command and check after it.
    #[serde(default)]
    pub scheduler: Option<SchedulerJob>,
    /// Sysctls `(key, value)` written under `/proc/sys` after the modules load and before the
    /// scheduler starts (`kernel.sched_x` is `/proc/sys/kernel/sched_x`).
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// Kernel symbols the host wants from `/proc/kallsyms` (for its monitor), answered
    /// with a [`FrameKind::Symbols`] frame before the command starts.
    #[serde(default)]
    pub kallsyms: Vec<String>,
    /// Module file names under [`MODULE_DIR`] the bulk channel needs (virtio-mmio or
    /// virtio-pci, and virtio-console, where the kernel has them as modules), loaded only
    /// when the engine offers the channel ([`CHANNEL_KEY`]).
    #[serde(default)]
    pub channel_modules: Vec<String>,
}

/// The two things guest init can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum JobMode {
    /// Run `argv` with framed stdout/stderr and exit status.
    Exec {
        /// Program and arguments; the program is looked up in [`GUEST_PATH`].
        argv: Vec<String>,
    },
    /// Run an interactive busybox shell on COM2.
    Shell,
}

/// Sent once guest init is up: proof the guest booted before the command ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Guest uptime when init started, seconds.
    pub uptime_s: f64,
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
    /// CPUs online.
    pub cpus_online: u32,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandExit {
    /// Exit code if it exited.
    pub code: Option<i32>,
    /// Signal if it was killed by one.
    pub signal: Option<i32>,
    /// Wall time of the command, milliseconds.
    pub runtime_ms: u64,
}

/// The variable naming the file a `#[ktstr_test]` body writes its report to. Guest init
/// sets it for the command, reads the file when the command ends and sends it on as
/// [`FrameKind::Report`] frames, so nothing the command prints can stand in for it.
pub const REPORT_PATH_ENV: &str = "KTSTR_REPORT_PATH";
/// Where guest init asks for the report.
const REPORT_PATH: &str = "/run/ktstr/report.json";

/// The COM2 writer shared by init and its panic hook.
static CHANNEL: Mutex<Option<(File, Encoder)>> = Mutex::new(None);

fn send(kind: FrameKind, payload: &[u8]) {
    if let Ok(mut guard) = CHANNEL.lock() {
        if let Some((tty, enc)) = guard.as_mut() {
            let bytes = enc.frames(kind, payload);
            let _ = tty.write_all(&bytes);
        }
    }
}

fn log(msg: &str) {
    send(FrameKind::Log, msg.as_bytes());
}

/// Waits until everything written to COM2 has left the UART.
fn drain() {
    if let Ok(guard) = CHANNEL.lock() {
        if let Some((tty, _)) = guard.as_ref() {
            // SAFETY: tcdrain on an fd we own; it only waits for output to drain.
            unsafe { libc::tcdrain(tty.as_raw_fd()) };
        }
    }
}

/// Runs as PID 1 and never returns: the VM powers off at the end.
pub fn init_main() -> ! {
    std::panic::set_hook(Box::new(|info| {
        send(
            FrameKind::InitError,
            format!("guest init panicked: {info}").as_bytes(),
        );
        power_off();
    }));
    let mount_errors = mount_filesystems();
    let job = read_job();
    if let Ok(Job {
        mode: JobMode::Shell,
        modules,
        ..
    }) = &job
    {
        // The shell owns COM2 as a terminal: no frames, plain text only.
        if let Err(e) = load_modules(modules).and_then(|()| shell(&mount_errors)) {
            eprintln!("ktstr init: {e}");
        }
        power_off();
    }
    match open_app_channel() {
        Ok(tty) => {
            if let Ok(mut g) = CHANNEL.lock() {
                *g = Some((tty, Encoder::default()));
            }
        }
        Err(e) => {
            // Nothing to report on: the host sees no Hello and says so.
            eprintln!("ktstr init: cannot open {APP_TTY}: {e}");
            power_off();
        }
    }
    let hello = Hello {
        uptime_s: uptime_s(),
        kernel_release: kernel_release(),
        cpus_online: cpus_online(),
    };
    send(
        FrameKind::Hello,
        serde_json::to_string(&hello).unwrap_or_default().as_bytes(),
    );
    for e in mount_errors {
        log(&e);
    }
    if let Ok(j) = &job {
        switch_to_bulk_channel(&j.channel_modules);
    }
    let wanted = job
        .as_ref()
        .map(|j| j.kallsyms.join(","))
        .unwrap_or_default();
    if !wanted.is_empty() {
        match kallsyms_lines(&wanted) {
            Ok(lines) => send(FrameKind::Symbols, lines.as_bytes()),
            Err(e) => log(&format!("reading /proc/kallsyms: {e}")),
        }
        // An empty Symbols frame ends them (a long answer spans several frames).
        send(FrameKind::Symbols, b"");
    }
    let result = job.and_then(|job| {
        load_modules(&job.modules)?;
        write_sysctls(&job.sysctls)?;
        match &job.mode {
            JobMode::Exec { argv } => exec(argv, job.scheduler.as_ref()),
            JobMode::Shell => Ok(()),
        }
    });
    if let Err(e) = result {
        send(FrameKind::InitError, e.as_bytes());
    }
    power_off()
}

/// When the engine offers the bulk channel, moves every later frame from COM2 to it: loads
/// its modules, waits for [`BULK_TTY`], and starts a new frame sequence there. COM2 keeps
/// the hello before and any failure to switch, said in a log frame.
fn switch_to_bulk_channel(modules: &[String]) {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let Some(name) = cmdline_value(&cmdline, CHANNEL_KEY) else {
        return;
    };
    let opened = load_modules(modules).and_then(|()| {
        let start = Instant::now();
        loop {
            if let Some(dev) = bulk_device(name) {
                return open_bulk_device(&dev).map(|f| (f, dev));
            }
            if start.elapsed() > BULK_WAIT {
                return Err(format!(
                    "channel `{name}` did not appear within {BULK_WAIT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    match opened {
        Ok((file, dev)) => {
            if let Ok(mut g) = CHANNEL.lock() {
                *g = Some((file, Encoder::default()));
            }
            log(&format!("frames on {dev}"));
        }
        Err(e) => log(&format!("bulk channel unusable, frames stay on COM2: {e}")),
    }
}

/// The value of `key=value` on a kernel command line.
fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
}

/// The device of the bulk channel `name` once it exists: `/dev/hvc0` for `hvc0`, else the
/// virtio-serial port of that name.
fn bulk_device(name: &str) -> Option<String> {
    if name == "hvc0" {
        return Path::new(BULK_TTY).exists().then(|| BULK_TTY.to_string());
    }
    let ports = std::fs::read_dir(VIRTIO_PORTS).ok()?;
    ports.filter_map(Result::ok).find_map(|p| {
        let port_name = std::fs::read_to_string(p.path().join("name")).ok()?;
        let dev = format!("/dev/{}", p.file_name().to_string_lossy());
        (port_name.trim() == name && Path::new(&dev).exists()).then_some(dev)
    })
}

/// Opens the bulk channel's device: a console as a raw tty, a serial port as it is.
fn open_bulk_device(dev: &str) -> Result<File, String> {
    let opened = if dev == BULK_TTY {
        open_raw_tty(dev)
    } else {
        std::fs::OpenOptions::new().read(true).write(true).open(dev)
    };
    opened.map_err(|e| format!("opening {dev}: {e}"))
}

/// The `/proc/kallsyms` lines of the vmlinux symbols named in `wanted` (comma-separated;
/// `*` for every one), read only as far as the last of them: the file is large and slow to
/// read under TCG, and `_text` alone (the host's usual ask) is on one of its first lines.
fn kallsyms_lines(wanted: &str) -> std::io::Result<String> {
    let mut f = KallsymsFilter::new(wanted);
    let mut r = std::io::BufReader::with_capacity(64 << 10, File::open("/proc/kallsyms")?);
    let mut line = Vec::new();
    while !f.done() {
        line.clear();
        if std::io::BufRead::read_until(&mut r, b'\n', &mut line)? == 0 {
            break;
        }
        f.line(&line);
    }
    Ok(f.out)
}

/// Keeps the lines of kallsyms text whose name is in `wanted` and that belong to vmlinux
/// (no `[module]`). Plain byte scanning: this runs in the guest, often under TCG.
#[cfg(test)]
fn filter_kallsyms(text: &[u8], wanted: &str) -> String {
    let mut f = KallsymsFilter::new(wanted);
    for line in text.split(|&b| b == b'\n') {
        if f.done() {
            break;
        }
        f.line(line);
    }
    f.out
}

/// The kallsyms lines found so far, and the names still looked for.
struct KallsymsFilter<'a> {
    left: Vec<&'a [u8]>,
    /// `*`: every vmlinux line.
    all: bool,
    out: String,
}

impl<'a> KallsymsFilter<'a> {
    fn new(wanted: &'a str) -> Self {
        KallsymsFilter {
            all: wanted.trim() == "*",
            left: wanted
                .split(',')
                .map(|s| s.trim().as_bytes())
                .filter(|s| !s.is_empty())
                .collect(),
            out: String::new(),
        }
    }

    fn done(&self) -> bool {
        !self.all && self.left.is_empty()
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        // `ADDR T NAME` with no tab-separated `[module]` after the name.
        if line.contains(&b'\t') {
            return;
        }
        let mut f = line.splitn(3, |&b| b == b' ');
        let (Some(_), Some(_), Some(name)) = (f.next(), f.next(), f.next()) else {
            return;
        };
        let keep = self.all
            || match self.left.iter().position(|w| *w == name) {
                Some(i) => {
                    self.left.swap_remove(i);
                    true
                }
                None => false,
            };
        if keep {
            self.out.push_str(&String::from_utf8_lossy(line));
            self.out.push('\n');
        }
    }
}

fn read_job() -> Result<Job, String> {
    let text = std::fs::read_to_string(JOB_PATH).map_err(|e| format!("reading {JOB_PATH}: {e}"))?;
    let job: Job = serde_json::from_str(&text).map_err(|e| format!("parsing {JOB_PATH}: {e}"))?;
    std::env::set_var("PATH", GUEST_PATH);
    std::env::set_var("HOME", "/root");
    std::env::set_var("TERM", "linux");
    let _ = std::fs::create_dir_all("/root");
    Ok(job)
}

/// `/proc/sys` path of a sysctl key (`kernel.x` or `kernel/x`), refusing `..` and empty parts.
fn sysctl_path(key: &str) -> Result<String, String> {
    let parts: Vec<&str> = key.split(['.', '/']).collect();
    if parts.iter().any(|p| p.is_empty() || *p == "..") {
        return Err(format!("sysctl `{key}` is not a key like kernel.sched_x"));
    }
    Ok(format!("/proc/sys/{}", parts.join("/")))
}

fn write_sysctls(sysctls: &[(String, String)]) -> Result<(), String> {
    for (key, value) in sysctls {
        let path = sysctl_path(key)?;
        std::fs::write(&path, value).map_err(|e| format!("sysctl {key}={value} ({path}): {e}"))?;
        log(&format!("sysctl {key} = {value}"));
    }
    Ok(())
}

fn load_modules(modules: &[String]) -> Result<(), String> {
    for m in modules {
        load_module(&Path::new(MODULE_DIR).join(m))?;
    }
    Ok(())
}

fn exec(argv: &[String], scheduler: Option<&SchedulerJob>) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let running = match scheduler.map(sched::start) {
        None => None,
        Some(Ok(r)) => Some(r),
        Some(Err(report)) => {
            // Without its scheduler the command would test the wrong thing: report and stop.
            let json = serde_json::to_string(&report).unwrap_or_default();
            send(FrameKind::Scheduler, json.as_bytes());
            return Ok(());
        }
    };
    if running.is_some() {
        if let Some(job) = scheduler {
            // A test process restarting the scheduler needs its path and arguments.
            let _ = std::fs::create_dir_all("/run/ktstr");
            let _ = std::fs::write(
                sched::STARTED_JOB_PATH,
                serde_json::to_string(job).unwrap_or_default(),
            );
        }
    }
    let command_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = running.map(|mut r| {
        let done = std::sync::Arc::clone(&command_done);
        std::thread::spawn(move || {
            let handover = || Path::new(sched::HANDOVER_PATH).exists();
            let lost = sched::watch(&mut r, &|| {
                done.load(std::sync::atomic::Ordering::SeqCst) || handover()
            });
            if lost.is_none() && handover() {
                // The test process detaches the scheduler: stop it and report it now.
                let report = sched::finish(r, None);
                let json = serde_json::to_string(&report).unwrap_or_default();
                send(FrameKind::Scheduler, json.as_bytes());
                let _ = std::fs::write(sched::HANDOVER_DONE_PATH, b"");
                return None;
            }
            Some((r, lost))
        })
    });
    let start = Instant::now();
    let _ = std::fs::create_dir_all("/run/ktstr");
    let _ = std::fs::remove_file(REPORT_PATH);
    let requests = forward_requests();
    let mut command = Command::new(program);
    if requests.is_ok() {
        command.env(
            crate::request::REQUEST_PATH_ENV,
            crate::request::REQUEST_PATH,
        );
    } else if let Err(e) = &requests {
        log(&format!("host requests unavailable: {e}"));
    }
    let mut child = command
        .args(args)
        .env(REPORT_PATH_ENV, REPORT_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    // Each pump holds a sender until its pipe closes, sends () after each chunk it moved,
    // and counts itself in `busy` while it writes one out (a slow COM2 can take seconds).
    let (tx, rx) = mpsc::channel::<()>();
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if let Some(out) = child.stdout.take() {
        pump(out, FrameKind::Stdout, tx.clone(), busy.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump(err, FrameKind::Stderr, tx.clone(), busy.clone());
    }
    drop(tx);
    // Wait until both pipes close, or the command is gone and its pipes have stayed quiet
    // (no chunk moved, none being written) for a second.
    let mut exited = None;
    let mut moved = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(()) => moved = Instant::now(),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if exited.is_none() {
                    exited = child.try_wait().ok().flatten().map(|s| (s, Instant::now()));
                }
                // A daemon the command left behind may hold the pipes open.
                let quiet = busy.load(std::sync::atomic::Ordering::SeqCst) == 0
                    && moved.elapsed() > Duration::from_secs(1);
                if quiet && matches!(exited, Some((_, t)) if t.elapsed() > Duration::from_secs(1)) {
                    break;
                }
            }
        }
    }
    let status = match exited {
        Some((s, _)) => s,
        None => child
            .wait()
            .map_err(|e| format!("waiting for `{program}`: {e}"))?,
    };
    let runtime_ms = start.elapsed().as_millis() as u64;
    command_done.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(w) = watcher {
        match w.join() {
            Ok(Some((r, lost))) => {
                let report = sched::finish(r, lost);
                let json = serde_json::to_string(&report).unwrap_or_default();
                send(FrameKind::Scheduler, json.as_bytes());
            }
            Ok(None) => {}
            Err(_) => log("the scheduler watcher panicked"),
        }
    }
    // A test body's report, before the exit that ends the run on the host.
    if let Ok(report) = std::fs::read(REPORT_PATH) {
        send(FrameKind::Report, &report);
    }
    use std::os::unix::process::ExitStatusExt;
    let exit = CommandExit {
        code: status.code(),
        signal: status.signal(),
        runtime_ms,
    };
    send(
        FrameKind::Exit,
        serde_json::to_string(&exit).unwrap_or_default().as_bytes(),
    );
    Ok(())
}

/// Makes the request FIFO ([`crate::request`]) and forwards each line written to it as a
/// [`FrameKind::Request`] frame, from a thread of its own, for as long as init lives.
fn forward_requests() -> Result<(), String> {
    use std::io::BufRead;
    let path = crate::request::REQUEST_PATH;
    let c = std::ffi::CString::new(path).map_err(|e| e.to_string())?;
    // SAFETY: mkfifo with a NUL-terminated path we own.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(format!("mkfifo {path}: {e}"));
        }
    }
    // Opened for writing too, so the reader never sees end-of-file between writers.
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("opening {path}: {e}"))?;
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(fifo);
        let mut line = Vec::new();
        loop {
            line.clear();
            match lines.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.len() <= libc::PIPE_BUF => {
                    send(FrameKind::Request, line.trim_ascii_end())
                }
                Ok(n) => log(&format!(
                    "a request of {n} bytes dropped: longer than one pipe write"
                )),
            }
        }
    });
    Ok(())
}

/// Sends what `pipe` gives as `kind` frames, straight from its own thread (no hop through
/// another thread: under TCG every cross-vCPU wake-up is costly), until the pipe closes;
/// `alive` says each chunk moved and is dropped then, `busy` counts it while it writes.
fn pump(
    mut pipe: impl Read + Send + 'static,
    kind: FrameKind,
    alive: mpsc::Sender<()>,
    busy: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    use std::sync::atomic::Ordering::SeqCst;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; crate::proto::MAX_PAYLOAD];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    busy.fetch_add(1, SeqCst);
                    send(kind, &buf[..n]);
                    busy.fetch_sub(1, SeqCst);
                    let _ = alive.send(());
                    // A writer of small pieces: let a few gather in the pipe, so that each
                    // frame (and each exit to the VMM) carries more of them.
                    if n < COALESCE_BELOW {
                        std::thread::sleep(COALESCE_WAIT);
                    }
                }
            }
        }
        drop(alive);
    })
}

fn shell(mount_errors: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let tty = |what| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(APP_TTY)
            .map_err(|e| format!("opening {APP_TTY} for the shell's {what}: {e}"))
    };
    let (stdin, stdout, stderr) = (tty("stdin")?, tty("stdout")?, tty("stderr")?);
    set_sane_tty(&stdin);
    for e in mount_errors {
        let _ = writeln!(&stdout, "ktstr init: {e}\r");
    }
    let _ = writeln!(
        &stdout,
        "ktstr shell: {} CPUs, kernel {}; files from --include-files are in {INCLUDE_DIR}; `exit` powers off.\r",
        cpus_online(),
        kernel_release()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .current_dir("/root");
    // SAFETY: between fork and exec we only call async-signal-safe setsid and ioctl.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start /bin/sh: {e}"))?;
    let _ = status;
    Ok(())
}

/// Mounts the filesystems a scheduler test needs; returns what failed.
fn mount_filesystems() -> Vec<String> {
    let mounts: [(&str, &str, &str, bool); 10] = [
        ("proc", "/proc", "proc", true),
        ("sysfs", "/sys", "sysfs", true),
        ("devtmpfs", "/dev", "devtmpfs", true),
        ("devpts", "/dev/pts", "devpts", false),
        ("tmpfs", "/tmp", "tmpfs", false),
        ("tmpfs", "/run", "tmpfs", false),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", true),
        ("debugfs", "/sys/kernel/debug", "debugfs", false),
        ("tracefs", "/sys/kernel/tracing", "tracefs", false),
        ("bpf", "/sys/fs/bpf", "bpf", false),
    ];
    let mut errors = Vec::new();
    for (src, target, fstype, required) in mounts {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(src, target, fstype) {
            errors.push(format!(
                "{}mount {fstype} on {target} failed: {e}",
                if required { "required " } else { "" }
            ));
        }
    }
    errors
}

fn mount(src: &str, target: &str, fstype: &str) -> std::io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(std::io::Error::other);
    let (src, target, fstype) = (c(src)?, c(target)?, c(fstype)?);
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn open_app_channel() -> std::io::Result<File> {
    open_raw_tty(APP_TTY)
}

/// `path` opened as a raw tty: no line discipline between the frames and the wire.
fn open_raw_tty(path: &str) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)?;
    // SAFETY: termios is plain data; tcgetattr fills it for our own fd.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer to a termios.
    if unsafe { libc::tcgetattr(tty.as_raw_fd(), &mut t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: cfmakeraw only edits the struct we own.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: valid fd and pointer to a termios; cfsetspeed edits our struct.
    unsafe {
        libc::cfsetspeed(&mut t, libc::B115200);
        if libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(tty)
}

/// Puts a tty back to cooked mode with CR-LF output, for the interactive shell.
fn set_sane_tty(tty: &File) {
    // SAFETY: termios is plain data.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer.
    if unsafe { libc::tcgetattr(tty.as_raw_fd(), &mut t) } == 0 {
        t.c_iflag |= libc::ICRNL;
        t.c_oflag |= libc::OPOST | libc::ONLCR;
        t.c_lflag |= libc::ICANON | libc::ECHO | libc::ECHOE | libc::ISIG;
        // SAFETY: valid fd and pointer.
        unsafe { libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, &t) };
    }
}

fn load_module(path: &Path) -> Result<(), String> {
    let data =
        std::fs::read(path).map_err(|e| format!("reading module {}: {e}", path.display()))?;
    let params = c"";
    // SAFETY: init_module reads `data.len()` bytes from a live buffer and a NUL-terminated string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            data.as_ptr(),
            data.len() as libc::c_ulong,
            params.as_ptr(),
        )
    };
    let err = std::io::Error::last_os_error();
    if rc == 0 || err.raw_os_error() == Some(libc::EEXIST) {
        Ok(())
    } else {
        Err(format!("loading module {}: {err}", path.display()))
    }
}

fn uptime_s() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn cpus_online() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| ktstr_topology::parse_cpu_list(&s).ok())
        .map(|v| v.len() as u32)
        .unwrap_or(0)
}

fn power_off() -> ! {
    drain();
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    // SAFETY: PID 1 powering the machine off is the intended end of the run.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    // reboot only returns on failure (not PID 1, or no permission): there is nothing left to do.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// True when this process should act as guest init (PID 1).
pub fn is_guest_init() -> bool {
    std::process::id() == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_name_comes_from_the_command_line() {
        let line = "rdinit=/init quiet ktstr.channel=ktstr.frames console=ttyS0";
        assert_eq!(cmdline_value(line, CHANNEL_KEY), Some("ktstr.frames"));
        assert_eq!(cmdline_value("ktstr.channelx=1", "ktstr.channel"), None);
        assert_eq!(cmdline_value("ktstr.channel=", "ktstr.channel"), None);
        assert_eq!(cmdline_value("quiet", "ktstr.channel"), None);
    }

    #[test]
    fn kallsyms_lines_are_filtered_to_vmlinux_symbols() {
        let text = "ffffffff81000000 T _text\n\
                    ffffffffc0001000 t runqueues\t[fake]\n\
                    ffffffff83cf65c0 D runqueues\n\
                    ffffffff829340e0 D __per_cpu_offset\n\
                    ffffffff829340e8 D never_read\n";
        let got = filter_kallsyms(text.as_bytes(), "runqueues, __per_cpu_offset,,missing");
        assert_eq!(
            got,
            "ffffffff83cf65c0 D runqueues\nffffffff829340e0 D __per_cpu_offset\n"
        );
        let early = filter_kallsyms(text.as_bytes(), "_text");
        assert_eq!(early, "ffffffff81000000 T _text\n");
        assert_eq!(filter_kallsyms(b"junk\n\n", "junk"), "");
        assert_eq!(filter_kallsyms(b"1 t a b\n", "a b"), "1 t a b\n");
        let all = filter_kallsyms(text.as_bytes(), "*");
        assert_eq!(
            all.lines().count(),
            4,
            "every vmlinux line, no module's: {all}"
        );
    }

    #[test]
    fn sysctl_keys_map_to_proc_sys() {
        assert_eq!(
            sysctl_path("kernel.sched_rt_runtime_us").unwrap(),
            "/proc/sys/kernel/sched_rt_runtime_us"
        );
        assert_eq!(
            sysctl_path("vm/swappiness").unwrap(),
            "/proc/sys/vm/swappiness"
        );
        assert!(sysctl_path("kernel..x").is_err());
        assert!(sysctl_path("../etc").is_err());
    }

    #[test]
    fn job_json_round_trip_and_strictness() {
        let job = Job {
            mode: JobMode::Exec {
                argv: vec!["nproc".into()],
            },
            modules: vec![],
            scheduler: None,
            sysctls: vec![],
            kallsyms: vec![],
            channel_modules: vec![],
        };
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(
            text,
            r#"{"mode":{"exec":{"argv":["nproc"]}},"modules":[],"scheduler":null,"sysctls":[],"kallsyms":[],"channel_modules":[]}"#
        );
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), job);
        assert!(serde_json::from_str::<Job>(r#"{"mode":"shell","extra":1}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Job>(r#"{"mode":"shell"}"#)
                .unwrap()
                .mode,
            JobMode::Shell
        );
    }
}
