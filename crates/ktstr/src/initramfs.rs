//! Building the guest's initramfs: ktstr as `/init`, its shared libraries,
//! busybox for shells and commands, included files, modules, and the job.
//!
//! The large, rarely-changing part ([`build_base`]) is cached by content key;
//! each run appends a tiny archive with the job ([`job_archive`]). The kernel
//! unpacks concatenated newc archives in order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::CpioWriter;
use crate::guest::{Job, INCLUDE_DIR, JOB_PATH, MODULE_DIR};
use crate::KtstrError;

/// Directories searched for shared libraries, after the binary's own RUNPATH.
const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Directories every guest has (mount points and homes).
const GUEST_DIRS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr",
    "/usr/bin",
    "/usr/sbin",
    "/dev",
    "/proc",
    "/sys",
    "/tmp",
    "/run",
    "/root",
    "/etc",
    "/lib",
    "/ktstr",
];

/// What goes into the cached part of an initramfs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitramfsSpec {
    /// The binary that becomes `/init` (ktstr itself or a test binary).
    pub init: PathBuf,
    /// A busybox binary; its applets become symlinks in /bin, /sbin, /usr/bin, /usr/sbin.
    pub busybox: Option<PathBuf>,
    /// Files or directories copied under [`INCLUDE_DIR`] (ELF files bring their libraries).
    pub include_files: Vec<PathBuf>,
    /// Kernel modules (uncompressed `.ko`), copied to [`MODULE_DIR`] by file name.
    pub modules: Vec<PathBuf>,
    /// Other files at fixed guest paths (guest path, host path); ELF files bring their libraries.
    pub extra_files: Vec<(String, PathBuf)>,
}

/// What an initramfs was built from, for reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitramfsContents {
    /// Guest path -> host source, for every regular file.
    pub files: BTreeMap<String, PathBuf>,
    /// Guest path -> link target.
    pub symlinks: BTreeMap<String, String>,
    /// Archive size in bytes.
    pub size: u64,
}

/// Writes the cached part of an initramfs for `spec` to `out`.
pub fn build_base(spec: &InitramfsSpec, out: &Path) -> Result<InitramfsContents, KtstrError> {
    let mut contents = InitramfsContents::default();
    let mut dirs: BTreeSet<String> = GUEST_DIRS.iter().map(|s| s.to_string()).collect();
    let mut add_file = |contents: &mut InitramfsContents, guest: String, host: PathBuf| {
        let mut p = Path::new(&guest).parent();
        while let Some(d) = p {
            if d != Path::new("/") {
                dirs.insert(d.display().to_string());
            }
            p = d.parent();
        }
        contents.files.insert(guest, host);
    };

    add_file(
        &mut contents,
        "/init".into(),
        stripped(&spec.init, Strip::All)?,
    );
    for lib in elf_closure(&spec.init)? {
        add_file(&mut contents, lib.display().to_string(), lib);
    }
    if let Some(bb) = &spec.busybox {
        add_file(&mut contents, "/bin/busybox".into(), bb.clone());
        for lib in elf_closure(bb)? {
            add_file(&mut contents, lib.display().to_string(), lib);
        }
        for applet in busybox_applets(bb)? {
            if applet != "/bin/busybox" && applet != "/init" && applet != "/linuxrc" {
                contents.symlinks.insert(applet, "/bin/busybox".into());
            }
        }
    }
    for inc in &spec.include_files {
        let host = resolve_include(inc)?;
        let base = host
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (rel, file) in walk(&host)? {
            let guest = if rel.is_empty() {
                format!("{INCLUDE_DIR}/{base}")
            } else {
                format!("{INCLUDE_DIR}/{base}/{rel}")
            };
            for lib in elf_closure(&file)? {
                add_file(&mut contents, lib.display().to_string(), lib);
            }
            add_file(&mut contents, guest, file);
        }
    }
    for (guest, host) in &spec.extra_files {
        for lib in elf_closure(host)? {
            add_file(&mut contents, lib.display().to_string(), lib);
        }
        let copy = if elf_dynamic_info(host)?.is_some() {
            stripped(host, Strip::Debug)?
        } else {
            host.clone()
        };
        add_file(&mut contents, guest.clone(), copy);
    }
    for m in &spec.modules {
        let name = m
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        add_file(&mut contents, format!("{MODULE_DIR}/{name}"), m.clone());
    }

    let tmp = out.with_extension("partial");
    let file = fs::File::create(&tmp).map_err(|e| KtstrError::io(&tmp, e))?;
    let mut w = CpioWriter::new(BufWriter::new(file));
    let wio = |e| KtstrError::io(&tmp, e);
    for d in &dirs {
        w.dir(d, 0o755).map_err(wio)?;
    }
    w.char_dev("/dev/console", 0o600, 5, 1).map_err(wio)?;
    w.char_dev("/dev/null", 0o666, 1, 3).map_err(wio)?;
    for (guest, host) in &contents.files {
        let data = fs::read(host).map_err(|e| KtstrError::io(host, e))?;
        let mode = if guest == "/init" || is_executable(host) {
            0o755
        } else {
            0o644
        };
        w.file(guest, mode, &data).map_err(wio)?;
    }
    for (guest, target) in &contents.symlinks {
        w.symlink(guest, target).map_err(wio)?;
    }
    let (buf, size) = w.finish().map_err(wio)?;
    buf.into_inner()
        .map_err(|e| KtstrError::io(&tmp, e.into_error()))?
        .sync_all()
        .map_err(wio)?;
    fs::rename(&tmp, out).map_err(|e| KtstrError::io(out, e))?;
    contents.size = size;
    Ok(contents)
}

/// The per-run archive holding the job file.
pub fn job_archive(job: &Job) -> Result<Vec<u8>, KtstrError> {
    let json = serde_json::to_vec(job).map_err(|source| KtstrError::Json {
        what: "the guest's job",
        source,
    })?;
    let mut w = CpioWriter::new(Vec::new());
    let err = |entry: &str| {
        let entry = entry.to_string();
        move |source| KtstrError::Cpio { entry, source }
    };
    w.dir("/ktstr", 0o755).map_err(err("/ktstr"))?;
    w.file(JOB_PATH, 0o644, &json).map_err(err(JOB_PATH))?;
    Ok(w.finish().map_err(err("trailer"))?.0)
}

/// A key that changes whenever anything the base archive is built from changes.
pub fn base_cache_key(spec: &InitramfsSpec) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let stamp = |h: &mut std::collections::hash_map::DefaultHasher, p: &Path| {
        p.hash(h);
        if let Ok(m) = fs::metadata(p) {
            m.len().hash(h);
            m.modified().ok().hash(h);
        }
    };
    stamp(&mut h, &spec.init);
    if let Some(b) = &spec.busybox {
        stamp(&mut h, b);
    }
    for p in spec.include_files.iter().chain(&spec.modules) {
        for (_, f) in walk(p).unwrap_or_default() {
            stamp(&mut h, &f);
        }
        stamp(&mut h, p);
    }
    for (guest, host) in &spec.extra_files {
        guest.hash(&mut h);
        stamp(&mut h, host);
    }
    env!("CARGO_PKG_VERSION").hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Resolves an include: an existing path, or a bare name looked up in `$PATH`.
fn resolve_include(p: &Path) -> Result<PathBuf, KtstrError> {
    if p.exists() {
        return p.canonicalize().map_err(|e| KtstrError::io(p, e));
    }
    if p.components().count() == 1 {
        if let Some(found) = find_in_path(p) {
            return Ok(found);
        }
    }
    Err(KtstrError::IncludeMissing(p.to_path_buf()))
}

/// The first regular file called `name` in a `PATH` directory.
pub fn find_in_path(name: impl AsRef<Path>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name.as_ref()))
        .find(|c| c.is_file())
}

/// Every regular file under `p` as (path relative to `p`, host path); a file gives ("", p).
fn walk(p: &Path) -> Result<Vec<(String, PathBuf)>, KtstrError> {
    let meta = fs::metadata(p).map_err(|e| KtstrError::io(p, e))?;
    if !meta.is_dir() {
        return Ok(vec![(String::new(), p.to_path_buf())]);
    }
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&d)
            .map_err(|e| KtstrError::io(&d, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            if e.is_dir() {
                stack.push(e);
            } else if e.is_file() {
                let rel = e.strip_prefix(p).unwrap_or(&e).display().to_string();
                out.push((rel, e));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The dynamic loader and every shared library `elf` needs, transitively; empty for static or non-ELF files.
pub fn elf_closure(elf: &Path) -> Result<Vec<PathBuf>, KtstrError> {
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let mut queue = vec![elf.to_path_buf()];
    while let Some(file) = queue.pop() {
        let Some(info) = elf_dynamic_info(&file)? else {
            continue;
        };
        if let Some(interp) = info.interp {
            if seen.insert(interp.clone()) {
                queue.push(interp);
            }
        }
        let origin = file.parent().map(Path::to_path_buf).unwrap_or_default();
        for needed in info.needed {
            let dirs = info
                .runpath
                .iter()
                .map(|d| PathBuf::from(d.replace("$ORIGIN", &origin.display().to_string())))
                .chain(LIB_DIRS.iter().map(PathBuf::from));
            let lib = dirs
                .map(|d| d.join(&needed))
                .find(|c| c.is_file())
                .ok_or_else(|| KtstrError::LibraryMissing {
                    library: needed.clone(),
                    needed_by: file.clone(),
                })?;
            if seen.insert(lib.clone()) {
                queue.push(lib);
            }
        }
    }
    Ok(seen.into_iter().collect())
}

struct DynamicInfo {
    interp: Option<PathBuf>,
    needed: Vec<String>,
    runpath: Vec<String>,
}

/// PT_INTERP, DT_NEEDED and DT_RUNPATH/DT_RPATH of an x86-64 ELF; `None` if not an ELF or
/// one for another machine (firmware images, cross builds: copied as they are).
fn elf_dynamic_info(path: &Path) -> Result<Option<DynamicInfo>, KtstrError> {
    use object::elf;
    use object::read::elf::{Dyn, FileHeader, ProgramHeader};
    use object::Endianness;

    let data = fs::read(path).map_err(|e| KtstrError::io(path, e))?;
    if !data.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    // e_ident[EI_CLASS] 2 (64-bit), e_ident[EI_DATA] 1 (little-endian), e_machine EM_X86_64.
    let x86_64 = data.len() >= 20
        && data[4] == elf::ELFCLASS64
        && data[5] == elf::ELFDATA2LSB
        && u16::from_le_bytes([data[18], data[19]]) == elf::EM_X86_64;
    if !x86_64 {
        return Ok(None);
    }
    let bad = |what: &str| KtstrError::BadElf {
        path: path.to_path_buf(),
        reason: what.to_string(),
    };
    let header = elf::FileHeader64::<Endianness>::parse(&*data).map_err(|e| bad(&e.to_string()))?;
    let endian = header.endian().map_err(|e| bad(&e.to_string()))?;
    let mut info = DynamicInfo {
        interp: None,
        needed: Vec::new(),
        runpath: Vec::new(),
    };
    let phdrs = header
        .program_headers(endian, &*data)
        .map_err(|e| bad(&e.to_string()))?;
    for ph in phdrs {
        if ph.p_type(endian) == elf::PT_INTERP {
            if let Ok(bytes) = ph.data(endian, &*data) {
                let s = String::from_utf8_lossy(bytes);
                info.interp = Some(PathBuf::from(s.trim_end_matches('\0')));
            }
        }
        if ph.p_type(endian) != elf::PT_DYNAMIC {
            continue;
        }
        let Ok(Some(dynamic)) = ph.dynamic(endian, &*data) else {
            continue;
        };
        // String offsets are relative to DT_STRTAB, a virtual address: map it through the section headers.
        let strtab_addr = dynamic
            .iter()
            .find(|d| d.d_tag(endian) == u64::from(elf::DT_STRTAB))
            .map(|d| d.d_val(endian));
        let sections = header
            .sections(endian, &*data)
            .map_err(|e| bad(&e.to_string()))?;
        let strtab = strtab_addr.and_then(|addr| {
            sections
                .iter()
                .find(|s| {
                    use object::read::elf::SectionHeader;
                    s.sh_addr(endian) == addr && s.sh_type(endian) == elf::SHT_STRTAB
                })
                .and_then(|s| {
                    use object::read::elf::SectionHeader;
                    s.data(endian, &*data).ok()
                })
        });
        let Some(strtab) = strtab else {
            return Err(bad("dynamic string table not found"));
        };
        let string = |off: u64| -> Option<String> {
            let start = usize::try_from(off).ok()?;
            let rest = strtab.get(start..)?;
            let end = rest.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&rest[..end]).into_owned())
        };
        for d in dynamic {
            let tag = d.d_tag(endian);
            if tag == u64::from(elf::DT_NEEDED) {
                info.needed.extend(string(d.d_val(endian)));
            } else if tag == u64::from(elf::DT_RUNPATH) || tag == u64::from(elf::DT_RPATH) {
                if let Some(s) = string(d.d_val(endian)) {
                    info.runpath.extend(s.split(':').map(str::to_string));
                }
            }
        }
    }
    Ok(Some(info))
}

/// Busybox applet paths (`/bin/sh`, `/usr/bin/awk`, ...), as `busybox --list-full` prints them.
fn busybox_applets(busybox: &Path) -> Result<Vec<String>, KtstrError> {
    let mut cmd = Command::new(busybox);
    cmd.arg("--list-full");
    let out = cmd.output().map_err(|e| KtstrError::io(busybox, e))?;
    if !out.status.success() {
        return Err(KtstrError::command_failed(&cmd, &out));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("/{}", l.trim().trim_start_matches('/')))
        .collect())
}

/// How much of an ELF its initramfs copy keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strip {
    /// Nothing but what runs (`/init`: its panics are reported as text, not symbolized).
    All,
    /// The symbol table, not the DWARF (binaries users may want to debug, such as schedulers).
    Debug,
}

/// Stripped copies kept in the cache.
const STRIPPED_CACHE_KEEP: usize = 16;

/// A cached copy of `bin` stripped by `objcopy` (keeps the initramfs small, so the guest
/// unpacks it sooner); `bin` itself when it is not an ELF or `objcopy` is missing.
fn stripped(bin: &Path, how: Strip) -> Result<PathBuf, KtstrError> {
    let dir = crate::kernel::cache_root().join("stripped");
    fs::create_dir_all(&dir).map_err(|e| KtstrError::io(&dir, e))?;
    let key = base_cache_key(&InitramfsSpec {
        init: bin.to_path_buf(),
        ..Default::default()
    });
    let (flag, prefix) = match how {
        Strip::All => ("--strip-all", "all"),
        Strip::Debug => ("--strip-debug", "debug"),
    };
    let out = dir.join(format!("{prefix}-{key}"));
    if out.is_file() {
        return Ok(out);
    }
    crate::run::prune_oldest(&dir, STRIPPED_CACHE_KEEP);
    let tmp = dir.join(format!("{prefix}-{key}.{}.tmp", std::process::id()));
    let ok = Command::new("objcopy")
        .arg(flag)
        .arg(bin)
        .arg(&tmp)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok && fs::rename(&tmp, &out).is_ok() {
        Ok(out)
    } else {
        let _ = fs::remove_file(&tmp);
        Ok(bin.to_path_buf())
    }
}

/// Writes `job` after a cached base archive into `out`.
pub fn write_run_initramfs(base: &Path, job: &Job, out: &Path) -> Result<(), KtstrError> {
    fs::copy(base, out).map_err(|e| KtstrError::io(out, e))?;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(out)
        .map_err(|e| KtstrError::io(out, e))?;
    f.write_all(&job_archive(job)?)
        .map_err(|e| KtstrError::io(out, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::read_entries;
    use crate::guest::JobMode;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ktstr-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn own_test_binary_needs_libc_and_loader() {
        let me = std::env::current_exe().unwrap();
        let libs = elf_closure(&me).unwrap();
        let names: Vec<String> = libs.iter().map(|p| p.display().to_string()).collect();
        assert!(names.iter().any(|n| n.contains("libc.so")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("ld-linux")), "{names:?}");
    }

    #[test]
    fn non_elf_has_no_closure() {
        let d = tmpdir("nonelf");
        let f = d.join("script.sh");
        fs::write(&f, "#!/bin/sh\n").unwrap();
        assert!(elf_closure(&f).unwrap().is_empty());
        // A 32-bit big-endian ELF (like QEMU's hppa-firmware.img): another machine's, no closure.
        let fw = d.join("firmware.img");
        let mut hdr = vec![0x7f, b'E', b'L', b'F', 1, 2, 1, 0];
        hdr.resize(64, 0);
        hdr[18] = 0;
        hdr[19] = 15;
        fs::write(&fw, &hdr).unwrap();
        assert!(elf_closure(&fw).unwrap().is_empty());
    }

    #[test]
    fn base_archive_holds_init_libs_includes_and_job() {
        let d = tmpdir("base");
        let inc = d.join("data");
        fs::create_dir_all(inc.join("sub")).unwrap();
        fs::write(inc.join("sub/a.txt"), "A").unwrap();
        let spec = InitramfsSpec {
            init: std::env::current_exe().unwrap(),
            busybox: None,
            include_files: vec![inc],
            modules: vec![],
            extra_files: vec![],
        };
        let out = d.join("base.cpio");
        let contents = build_base(&spec, &out).unwrap();
        assert!(contents.files.contains_key("/init"));
        assert!(contents.files.contains_key("/include-files/data/sub/a.txt"));
        let job = Job {
            mode: JobMode::Exec {
                argv: vec!["true".into()],
            },
            modules: vec![],
            scheduler: None,
            sysctls: vec![],
            kallsyms: vec![],
            channel_modules: vec![],
        };
        let run = d.join("run.cpio");
        write_run_initramfs(&out, &job, &run).unwrap();
        let entries = read_entries(&fs::read(&run).unwrap()).unwrap();
        let get = |n: &str| entries.iter().find(|e| e.name == n);
        assert_eq!(get("init").map(|e| e.mode), Some(0o100755));
        assert_eq!(get("include-files/data/sub/a.txt").unwrap().data, b"A");
        assert!(get("dev/console").is_some());
        assert!(entries.iter().any(|e| e.name.contains("libc.so")));
        let job_back: Job = serde_json::from_slice(&get("ktstr/job.json").unwrap().data).unwrap();
        assert_eq!(job_back, job);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn busybox_applets_become_symlinks() {
        let bb = Path::new("/bin/busybox");
        if !bb.is_file() {
            crate::testing::skip(
                "/bin/busybox is not installed (scripts/setup installs busybox-static)",
            );
            return;
        }
        let d = tmpdir("bb");
        let spec = InitramfsSpec {
            init: std::env::current_exe().unwrap(),
            busybox: Some(bb.to_path_buf()),
            ..Default::default()
        };
        let c = build_base(&spec, &d.join("b.cpio")).unwrap();
        assert_eq!(
            c.symlinks.get("/bin/sh").map(String::as_str),
            Some("/bin/busybox")
        );
        assert!(
            c.symlinks.contains_key("/sbin/poweroff") || c.symlinks.contains_key("/bin/poweroff")
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_include_is_named() {
        let spec = InitramfsSpec {
            init: std::env::current_exe().unwrap(),
            include_files: vec!["/no/such/file".into()],
            ..Default::default()
        };
        let d = tmpdir("missing");
        let err = build_base(&spec, &d.join("x.cpio")).unwrap_err();
        assert!(err.to_string().contains("/no/such/file"), "{err}");
    }
}
