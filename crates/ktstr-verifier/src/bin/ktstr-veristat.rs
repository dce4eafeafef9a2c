//! `ktstr-veristat`: load every program of BPF objects into the running kernel with libbpf at
//! verifier log level 2 plus `BPF_LOG_STATS`, and print one JSON document with each program's
//! verdict, statistics and log. Runs as root (in a ktstr guest); attaches nothing.
//!
//! ```text
//! ktstr-veristat [--log all|failed|none] [--log-program NAME]... [--log-size BYTES] [--log-level 1|2] FILE...
//! ```
//!
//! A FILE is a BPF object (`.bpf.o`) or a binary embedding objects, as libbpf skeletons do.
//! Each program is loaded on its own, like the kernel's veristat does: the object is opened
//! afresh, only that program is marked for loading, and the other programs' slots in
//! struct_ops maps are cleared so libbpf does not load them too (struct_ops maps are created
//! but never registered). A program's log is its own whether its load succeeds or fails. A
//! log that fills the buffer (`ENOSPC`) is captured again with a buffer twice as large, up to
//! the kernel's 1 GiB limit.
//!
//! `--log-level 1` asks the verifier for its level-1 log (branch states and the error) instead of
//! level 2 (every instruction with its register state); `BPF_LOG_STATS` is always added.
//! `--log failed` keeps the logs of failed loads only; `--log-program NAME` keeps NAME's log
//! whatever `--log` says. Exit status: 0 when every program loaded, 1 when one did not or a
//! FILE held no BPF object (the JSON says which), 2 on a usage error or unreadable FILE.
//!
//! Output (one line):
//!
//! ```text
//! {"tool":"ktstr-veristat","kernel":"7.3.4+deb13-cloud-amd64","log_level":6,
//!  "objects":[{"file":"/include-files/x.bpf.o","offset":0,"size":1234,"error":null,
//!   "programs":[{"name":"p","section":"struct_ops/p","type":"struct_ops","insns":57,
//!     "loaded":true,"errno":null,"error":null,"log_bytes":5120,"log_truncated":false,
//!     "stats":{"processed_insns":60,"insn_limit":1000000,"max_states_per_insn":0,
//!              "total_states":3,"peak_states":3,"mark_read":1,"stack_depth":[8],
//!              "stack_depth_max":16,"verification_time_us":120},
//!     "libbpf":["..."],"log":"..."}]}]}
//! ```

use std::ffi::{c_char, CStr};
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;

use ktstr_verifier::embedded::find_bpf_objects;
use ktstr_verifier::{parse_stats, VerifierStats};
use libbpf_rs::{AsRawLibbpf, MapType, ObjectBuilder, OpenObject, PrintLevel};
use serde_json::{json, Value};

/// `BPF_LOG_STATS`, added to whichever level is asked for.
const LOG_STATS: u32 = 4;
/// `BPF_LOG_LEVEL2 | BPF_LOG_STATS`, the default.
const LOG_LEVEL: u32 = 2 | LOG_STATS;
/// First log buffer size.
const DEFAULT_LOG_SIZE: usize = 16 << 20;

/// Where, when set, the JSON report goes instead of stdout: in a ktstr guest, the file guest
/// init sends to the host as typed report frames (ktstr's `guest::REPORT_PATH_ENV`), so
/// nothing the tool or libbpf prints can be taken for the report.
const REPORT_PATH_ENV: &str = "KTSTR_REPORT_PATH";
/// The kernel refuses log buffers larger than `UINT_MAX >> 2`.
const MAX_LOG_SIZE: usize = (u32::MAX >> 2) as usize;
/// Linux `ENOSPC`: the log did not fit.
const ENOSPC: i32 = 28;

/// Why the tool could not do its job at all.
#[derive(Debug, thiserror::Error)]
enum CaptureError {
    /// Bad command line.
    #[error("{0}\nusage: ktstr-veristat [--log all|failed|none] [--log-program NAME]... [--log-size BYTES] [--log-level 1|2] FILE...")]
    Usage(String),
    /// A FILE could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// stdout failed.
    #[error("writing the report: {0}")]
    Write(#[source] io::Error),
}

/// Which logs go into the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogChoice {
    All,
    Failed,
    None,
}

/// The parsed command line.
#[derive(Debug)]
struct Args {
    log: LogChoice,
    log_programs: Vec<String>,
    log_size: usize,
    log_level: u32,
    files: Vec<String>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, CaptureError> {
    let mut a = Args {
        log: LogChoice::All,
        log_programs: Vec::new(),
        log_size: DEFAULT_LOG_SIZE,
        log_level: LOG_LEVEL,
        files: Vec::new(),
    };
    let usage = |m: &str| CaptureError::Usage(m.to_string());
    while let Some(arg) = argv.next() {
        let mut value = |flag: &str| {
            argv.next()
                .ok_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match arg.as_str() {
            "--log" => {
                a.log = match value("--log")?.as_str() {
                    "all" => LogChoice::All,
                    "failed" => LogChoice::Failed,
                    "none" => LogChoice::None,
                    other => return Err(usage(&format!("--log {other}: use all, failed or none"))),
                }
            }
            "--log-program" => a.log_programs.push(value("--log-program")?),
            "--log-size" => {
                let v = value("--log-size")?;
                a.log_size = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LOG_SIZE).contains(n))
                    .ok_or_else(|| {
                        usage(&format!("--log-size {v}: give 1..={MAX_LOG_SIZE} bytes"))
                    })?;
            }
            "--log-level" => {
                a.log_level = match value("--log-level")?.as_str() {
                    "1" => 1 | LOG_STATS,
                    "2" => 2 | LOG_STATS,
                    other => return Err(usage(&format!("--log-level {other}: use 1 or 2"))),
                }
            }
            "-h" | "--help" => return Err(usage("help")),
            f if f.starts_with("--") => return Err(usage(&format!("unknown option {f}"))),
            f => a.files.push(f.to_string()),
        }
    }
    if a.files.is_empty() {
        return Err(usage("no FILE given"));
    }
    Ok(a)
}

/// libbpf's messages (info and warnings) since the last [`take_libbpf_messages`].
static LIBBPF_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn collect_libbpf_message(level: PrintLevel, msg: String) {
    if matches!(level, PrintLevel::Debug) {
        return;
    }
    if let Ok(mut m) = LIBBPF_MESSAGES.lock() {
        m.push(msg.trim_end().to_string());
    }
}

fn take_libbpf_messages() -> Vec<String> {
    LIBBPF_MESSAGES
        .lock()
        .map(|mut m| std::mem::take(&mut *m))
        .unwrap_or_default()
}

/// What one program is, before loading.
#[derive(Debug)]
struct ProgramInfo {
    name: String,
    section: String,
    prog_type: String,
}

/// An object name libbpf accepts, from the file name.
fn object_name(file: &str, index: usize) -> String {
    let stem = Path::new(file)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.split('.').next().unwrap_or("");
    let mut name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty() {
        name = "obj".into();
    }
    if index > 0 {
        name += &format!("_{index}");
    }
    name
}

fn open(name: &str, data: &[u8]) -> Result<OpenObject, String> {
    let mut b = ObjectBuilder::default();
    b.name(name)
        .and_then(|b| b.open_memory(data))
        .map_err(|e| format!("opening the object: {e:#}"))
}

fn program_type_name(prog: *const libbpf_rs::libbpf_sys::bpf_program) -> String {
    // SAFETY: `prog` points to a program of a live object; libbpf returns a static string or NULL.
    let s = unsafe {
        libbpf_rs::libbpf_sys::libbpf_bpf_prog_type_str(libbpf_rs::libbpf_sys::bpf_program__type(
            prog,
        ))
    };
    if s.is_null() {
        return "unknown".into();
    }
    // SAFETY: non-null strings from libbpf_bpf_prog_type_str are static and NUL-terminated.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

fn list_programs(obj: &OpenObject) -> Vec<ProgramInfo> {
    obj.progs()
        .map(|p| ProgramInfo {
            name: p.name().to_string_lossy().into_owned(),
            section: p.section().to_string_lossy().into_owned(),
            prog_type: program_type_name(p.as_libbpf_object().as_ptr()),
        })
        .collect()
}

/// Clears every 8-byte slot of a struct_ops map's data that holds one of `others`, the
/// addresses of the programs not to load (libbpf keeps `struct bpf_program *` there).
fn mask_struct_ops_slots(data: &mut [u8], others: &[usize]) {
    for slot in data.chunks_exact_mut(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(slot);
        let v = u64::from_ne_bytes(word);
        if v != 0 && others.iter().any(|&o| o as u64 == v) {
            slot.fill(0);
        }
    }
}

/// The outcome of loading one program.
#[derive(Debug)]
struct LoadResult {
    insns: Option<u64>,
    errno: Option<i32>,
    error: Option<String>,
    log: String,
    log_truncated: bool,
    libbpf: Vec<String>,
}

/// Loads only `target` of the object in `data`, with a log buffer of `log_size` bytes.
fn load_once(name: &str, data: &[u8], target: &str, log_size: usize, level: u32) -> LoadResult {
    let failed = |error: String| LoadResult {
        insns: None,
        errno: None,
        error: Some(error),
        log: String::new(),
        log_truncated: false,
        libbpf: take_libbpf_messages(),
    };
    let mut obj = match open(name, data) {
        Ok(o) => o,
        Err(e) => return failed(e),
    };
    let mut buf = vec![0u8; log_size];
    let mut target_prog = None;
    let mut others = Vec::new();
    for mut p in obj.progs_mut() {
        let raw = p.as_libbpf_object().as_ptr();
        if p.name().to_string_lossy() == target {
            p.set_autoload(true);
            p.set_log_level(level);
            // SAFETY: `raw` is a program of `obj`; `buf` outlives the load below and is
            // `buf.len()` bytes long.
            let rc = unsafe {
                libbpf_rs::libbpf_sys::bpf_program__set_log_buf(
                    raw,
                    buf.as_mut_ptr().cast::<c_char>(),
                    buf.len() as _,
                )
            };
            if rc != 0 {
                return failed(format!("setting the log buffer: errno {}", -rc));
            }
            target_prog = Some(raw);
        } else {
            p.set_autoload(false);
            others.push(raw as usize);
        }
    }
    let Some(prog) = target_prog else {
        return failed(format!("program {target} vanished on reopening"));
    };
    for mut m in obj.maps_mut() {
        if m.map_type() == MapType::StructOps {
            if let Some(v) = m.initial_value_mut() {
                mask_struct_ops_slots(v, &others);
            }
        }
    }
    take_libbpf_messages();
    // SAFETY: `obj` is an open, not yet loaded object; libbpf only reads and writes it and
    // the log buffer registered above, which is still alive.
    let rc = unsafe { libbpf_rs::libbpf_sys::bpf_object__load(obj.as_libbpf_object().as_ptr()) };
    let libbpf = take_libbpf_messages();
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let log = String::from_utf8_lossy(&buf[..len]).into_owned();
    // SAFETY: `prog` belongs to `obj`, which is still open.
    let insns = unsafe { libbpf_rs::libbpf_sys::bpf_program__insn_cnt(prog) } as u64;
    let errno = (rc != 0).then_some(-rc);
    LoadResult {
        insns: Some(insns),
        errno,
        error: errno.map(|e| io::Error::from_raw_os_error(e).to_string()),
        log_truncated: len + 1 >= buf.len(),
        log,
        libbpf,
    }
}

/// Loads `target`, growing the log buffer while the log does not fit.
fn load_program(
    name: &str,
    data: &[u8],
    target: &str,
    mut log_size: usize,
    level: u32,
) -> LoadResult {
    loop {
        let r = load_once(name, data, target, log_size, level);
        if r.errno == Some(ENOSPC) && r.log_truncated && log_size < MAX_LOG_SIZE {
            log_size = log_size.saturating_mul(2).min(MAX_LOG_SIZE);
            continue;
        }
        return r;
    }
}

fn stats_json(s: &VerifierStats) -> Value {
    json!({
        "processed_insns": s.processed_insns,
        "insn_limit": s.insn_limit,
        "max_states_per_insn": s.max_states_per_insn,
        "total_states": s.total_states,
        "peak_states": s.peak_states,
        "mark_read": s.mark_read,
        "stack_depth": s.stack_depth,
        "stack_depth_max": s.stack_depth_max,
        "max_stack_depth": s.max_stack_depth(),
        "verification_time_us": s.verification_time_us,
    })
}

/// Statistics of a log, with the program size the capture knows.
fn stats_of(insns: Option<u64>, log: &str) -> VerifierStats {
    let mut s = parse_stats(log).pop().unwrap_or_default();
    if insns.is_some() {
        s.prog_size_insns = insns;
    }
    s
}

/// Captures one object; returns its JSON and whether every program loaded.
fn capture_object(
    args: &Args,
    file: &str,
    index: usize,
    offset: usize,
    data: &[u8],
) -> (Value, bool) {
    let name = object_name(file, index);
    let programs = match open(&name, data) {
        Ok(obj) => list_programs(&obj),
        Err(e) => {
            let v = json!({
                "file": file, "offset": offset, "size": data.len(), "error": e,
                "libbpf": take_libbpf_messages(), "programs": [],
            });
            return (v, false);
        }
    };
    let mut all_ok = true;
    let mut out = Vec::new();
    for p in &programs {
        let r = load_program(&name, data, &p.name, args.log_size, args.log_level);
        let loaded = r.errno.is_none() && r.error.is_none();
        all_ok &= loaded;
        let keep_log = args.log_programs.contains(&p.name)
            || match args.log {
                LogChoice::All => true,
                LogChoice::Failed => !loaded,
                LogChoice::None => false,
            };
        let stats = stats_of(r.insns, &r.log);
        out.push(json!({
            "name": p.name,
            "section": p.section,
            "type": p.prog_type,
            "insns": r.insns,
            "loaded": loaded,
            "errno": r.errno,
            "error": r.error,
            "log_bytes": r.log.len(),
            "log_truncated": r.log_truncated,
            "stats": stats_json(&stats),
            "libbpf": r.libbpf,
            "log": keep_log.then_some(r.log),
        }));
    }
    let v = json!({
        "file": file, "offset": offset, "size": data.len(), "error": null, "programs": out,
    });
    (v, all_ok)
}

fn run() -> Result<bool, CaptureError> {
    let args = parse_args(std::env::args().skip(1))?;
    libbpf_rs::set_print(Some((PrintLevel::Info, collect_libbpf_message)));
    let mut objects = Vec::new();
    let mut all_ok = true;
    for file in &args.files {
        let bytes = std::fs::read(file).map_err(|source| CaptureError::Read {
            path: file.clone(),
            source,
        })?;
        let found = find_bpf_objects(&bytes);
        if found.is_empty() {
            all_ok = false;
            objects.push(json!({
                "file": file, "offset": null, "size": bytes.len(),
                "error": "no BPF ELF object (e_machine EM_BPF) in this file", "programs": [],
            }));
        }
        for (i, o) in found.iter().enumerate() {
            let (v, ok) = capture_object(&args, file, i, o.offset, o.data);
            all_ok &= ok;
            objects.push(v);
        }
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .ok();
    let report = json!({
        "tool": "ktstr-veristat",
        "kernel": kernel,
        "log_level": args.log_level,
        "objects": objects,
    });
    let mut json =
        serde_json::to_vec(&report).map_err(|e| CaptureError::Write(io::Error::other(e)))?;
    json.push(b'\n');
    match std::env::var_os(REPORT_PATH_ENV).filter(|p| !p.is_empty()) {
        // In a ktstr guest: guest init sends the file to the host as typed frames.
        Some(path) => std::fs::write(path, &json).map_err(CaptureError::Write)?,
        None => {
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(&json)
                .and_then(|()| stdout.flush())
                .map_err(CaptureError::Write)?;
        }
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ktstr-veristat: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, CaptureError> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn command_line() {
        let a = args(&["--log", "failed", "--log-program", "p", "a.o", "b"]).expect("parses");
        assert_eq!(a.log, LogChoice::Failed);
        assert_eq!(a.log_programs, vec!["p".to_string()]);
        assert_eq!(a.files, vec!["a.o".to_string(), "b".to_string()]);
        assert_eq!(a.log_size, DEFAULT_LOG_SIZE);
        assert_eq!(a.log_level, LOG_LEVEL);
        assert_eq!(
            args(&["--log-level", "1", "x"]).expect("parses").log_level,
            5
        );
        assert!(args(&["--log-level", "3", "x"]).is_err());
        assert!(args(&[]).is_err());
        assert!(args(&["--log", "some", "x"]).is_err());
        assert!(args(&["--log-size", "0", "x"]).is_err());
        assert!(args(&["--frob", "x"]).is_err());
        assert!(args(&["x", "--log"]).is_err());
    }

    #[test]
    fn object_names_are_identifiers() {
        assert_eq!(
            object_name("/include-files/scx_simple.bpf.o", 0),
            "scx_simple"
        );
        assert_eq!(object_name("/x/scx-ktstr", 1), "scx_ktstr_1");
        assert_eq!(object_name("/", 0), "obj");
    }

    #[test]
    fn only_other_programs_slots_are_cleared() {
        let mine = 0x5555_0000_1000usize;
        let other = 0x5555_0000_2000usize;
        let mut data = Vec::new();
        for v in [7u64, mine as u64, other as u64, 0, other as u64] {
            data.extend_from_slice(&v.to_ne_bytes());
        }
        mask_struct_ops_slots(&mut data, &[other]);
        let words: Vec<u64> = data
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .collect();
        assert_eq!(words, vec![7, mine as u64, 0, 0, 0]);
    }

    #[test]
    fn stats_include_program_size() {
        let s = stats_of(
            Some(12),
            "0: (b7) r0 = 0\nverification time 9 usec\nstack depth 0\nprocessed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n",
        );
        assert_eq!(s.prog_size_insns, Some(12));
        assert_eq!(s.processed_insns, Some(2));
        assert_eq!(s.verification_time_us, Some(9));
    }
}
