//! The QEMU backend's process: guest RAM files, QEMU's stdout as COM2, its stderr collected.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{GuestRamFile, VmExit};
use crate::{
    qemu_args, AppChannel, Engine, Qmp, QmpError, VcpuRegisters, VmConfig, VmmError, QEMU_BINARY,
};

/// How long QEMU may take to connect to the bulk channel's socket; it does so while it
/// sets up its devices, before the guest runs.
const BULK_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running QEMU process. Dropping it kills QEMU and removes its RAM files.
pub(super) struct QemuProcess {
    child: Child,
    app: Option<ChildStdout>,
    /// The bulk channel's listening socket, until QEMU's connection is taken.
    bulk: Option<BulkSocket>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    ram_files: Vec<GuestRamFile>,
    qmp_socket: Option<PathBuf>,
}

impl QemuProcess {
    /// Starts QEMU for `cfg` (already validated by [`super::Vm::start`]) on `engine`.
    pub(super) fn start(cfg: &VmConfig, engine: Engine) -> Result<QemuProcess, VmmError> {
        let program = qemu_program()?;
        let stem = run_stem(cfg);
        let ram_files = ram_files(cfg, &stem)?;
        if let Some(sock) = &cfg.qmp_socket {
            let _ = std::fs::remove_file(sock);
        }
        let bulk = if cfg.bulk_channel {
            let path = PathBuf::from(format!("{}-bulk.sock", stem.display()));
            Some(BulkSocket::bind(path).inspect_err(|_| remove_ram_files(&ram_files))?)
        } else {
            None
        };
        let paths: Vec<PathBuf> = ram_files.iter().map(|r| r.path.clone()).collect();
        let sock = bulk.as_ref().map(|b| b.path.as_path());
        let args = qemu_args(cfg, engine, &paths, host_tsc_khz(), sock);
        let mut cmd = Command::new(&program);
        cmd.args(&args).stderr(Stdio::piped());
        match cfg.app_channel {
            AppChannel::Pipe => cmd.stdin(Stdio::null()).stdout(Stdio::piped()),
            AppChannel::Terminal => cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit()),
        };
        let mut child = cmd.spawn().map_err(|source| {
            remove_ram_files(&ram_files);
            VmmError::Spawn {
                program: program.display().to_string(),
                source,
            }
        })?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_thread = child.stderr.take().map(|mut pipe| {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.extend_from_slice(&buf[..n]);
                    }
                }
            })
        });
        Ok(QemuProcess {
            app: child.stdout.take(),
            bulk,
            child,
            stderr,
            stderr_thread,
            ram_files,
            qmp_socket: cfg.qmp_socket.clone(),
        })
    }

    /// COM2's byte stream from the guest (once; `None` in terminal mode).
    pub(super) fn take_app_channel(&mut self) -> Option<ChildStdout> {
        self.app.take()
    }

    /// The bulk channel's stream (once; `None` without one, or when QEMU never connected to
    /// its socket, e.g. because it failed to start).
    pub(super) fn take_bulk_channel(&mut self) -> Option<UnixStream> {
        let bulk = self.bulk.take()?;
        bulk.accept(&mut self.child, BULK_CONNECT_TIMEOUT)
    }

    /// The guest RAM files, one per NUMA node.
    pub(super) fn ram_files(&self) -> &[GuestRamFile] {
        &self.ram_files
    }

    /// The QMP monitor socket, when the config asked for one.
    pub(super) fn qmp_socket(&self) -> Option<&Path> {
        self.qmp_socket.as_deref()
    }

    /// Every vCPU's control registers, read over a fresh QMP connection.
    pub(super) fn registers(&self, timeout: Duration) -> Result<Vec<VcpuRegisters>, QmpError> {
        let path = self
            .qmp_socket
            .as_deref()
            .ok_or_else(|| QmpError::Connect {
                path: PathBuf::new(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the VM was started without a QMP socket",
                ),
            })?;
        Qmp::connect(path, timeout)?.registers()
    }

    /// The engine's exit if it has ended, without blocking.
    pub(super) fn try_wait(&mut self) -> Result<Option<VmExit>, VmmError> {
        match self.child.try_wait().map_err(VmmError::Wait)? {
            Some(status) => Ok(Some(self.exited(status.code()))),
            None => Ok(None),
        }
    }

    /// Kills the engine and reaps it.
    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn exited(&mut self, code: Option<i32>) -> VmExit {
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let engine_stderr = self
            .stderr
            .lock()
            .map(|s| String::from_utf8_lossy(&s).into_owned())
            .unwrap_or_default();
        VmExit::Exited {
            code,
            engine_stderr,
        }
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        self.kill();
        remove_ram_files(&self.ram_files);
        if let Some(sock) = &self.qmp_socket {
            let _ = std::fs::remove_file(sock);
        }
    }
}

/// The listening end of the bulk channel; the socket file goes when it is dropped.
struct BulkSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl BulkSocket {
    /// Listens at `path` (replacing a stale socket there).
    fn bind(path: PathBuf) -> Result<BulkSocket, VmmError> {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|source| VmmError::RunFile {
            path: path.clone(),
            source,
        })?;
        Ok(BulkSocket { listener, path })
    }

    /// QEMU's connection, waited for until `timeout` passes or QEMU exits.
    fn accept(self, child: &mut Child, timeout: Duration) -> Option<UnixStream> {
        self.listener.set_nonblocking(true).ok()?;
        let start = Instant::now();
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).ok()?;
                    return Some(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
            if start.elapsed() > timeout || !matches!(child.try_wait(), Ok(None)) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for BulkSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The run-unique path prefix of this VM's host files (`<dir>/ktstr-ram-<pid>-<n>`): RAM files
/// add `-node<N>`, the bulk channel's socket `-bulk.sock`; stale ones of dead processes go.
fn run_stem(cfg: &VmConfig) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = if cfg.ram_dir.is_dir() {
        cfg.ram_dir.clone()
    } else {
        std::env::temp_dir()
    };
    remove_stale_ram_files(&dir);
    dir.join(format!("ktstr-ram-{}-{n}", std::process::id()))
}

fn ram_files(cfg: &VmConfig, stem: &Path) -> Result<Vec<GuestRamFile>, VmmError> {
    let files: Vec<GuestRamFile> = cfg
        .topology
        .split_memory_mib(cfg.memory_mib)
        .into_iter()
        .enumerate()
        .map(|(node, mib)| GuestRamFile {
            node: node as u32,
            path: PathBuf::from(format!("{}-node{node}", stem.display())),
            size: mib << 20,
        })
        .collect();
    for f in &files {
        // QEMU creates and sizes the file; make sure no stale one of ours is in the way.
        match std::fs::remove_file(&f.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(VmmError::RunFile {
                    path: f.path.clone(),
                    source: e,
                })
            }
            _ => {}
        }
    }
    Ok(files)
}

/// Removes RAM files left by ktstr processes that no longer exist (killed with SIGKILL, say).
fn remove_stale_ram_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("ktstr-ram-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn remove_ram_files(files: &[GuestRamFile]) {
    for f in files {
        let _ = std::fs::remove_file(&f.path);
    }
}

/// Finds `program` in `$PATH`.
fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The host TSC frequency in kHz, measured against the monotonic clock (TCG guests see the host TSC).
/// Environment variable naming the QEMU program to run instead of `qemu-system-x86_64` on PATH.
pub const QEMU_ENV: &str = "KTSTR_QEMU";

/// The QEMU program: `$KTSTR_QEMU` (a path) if set, else `qemu-system-x86_64` on PATH.
fn qemu_program() -> Result<PathBuf, VmmError> {
    if let Some(p) = std::env::var_os(QEMU_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(VmmError::EngineMissing {
                program: format!("{} (from ${QEMU_ENV})", p.display()),
                package: "qemu-system-x86".into(),
            })
        };
    }
    find_in_path(QEMU_BINARY).ok_or_else(|| VmmError::EngineMissing {
        program: QEMU_BINARY.into(),
        package: "qemu-system-x86".into(),
    })
}

fn host_tsc_khz() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        if !cpuinfo.contains("constant_tsc") {
            return None;
        }
        let t0 = Instant::now();
        // SAFETY: RDTSC has no memory effects; constant_tsc was checked above.
        let c0 = unsafe { core::arch::x86_64::_rdtsc() };
        std::thread::sleep(Duration::from_millis(20));
        // SAFETY: as above.
        let c1 = unsafe { core::arch::x86_64::_rdtsc() };
        let ns = t0.elapsed().as_nanos() as u64;
        // Round to 1 MHz: the kernel only needs an estimate it will not recalibrate.
        let khz = c1.checked_sub(c0)? * 1_000_000 / ns.max(1);
        Some((khz + 500) / 1000 * 1000)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_ram_files_of_dead_processes_are_removed() {
        let dir = std::env::temp_dir().join(format!("ktstr-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // PID 4194304 is above the kernel's maximum, so it is never alive.
        let dead = dir.join("ktstr-ram-4194304-0-node0");
        let alive = dir.join(format!("ktstr-ram-{}-0-node0", std::process::id()));
        let other = dir.join("unrelated");
        for f in [&dead, &alive, &other] {
            std::fs::write(f, b"x").unwrap();
        }
        remove_stale_ram_files(&dir);
        assert!(!dead.exists());
        assert!(alive.exists() && other.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tsc_estimate_is_plausible() {
        if let Some(khz) = host_tsc_khz() {
            assert!((100_000..20_000_000).contains(&khz), "{khz}");
        }
    }
}
