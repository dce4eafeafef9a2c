//! Builds the BPF side: `vmlinux.h` from the target kernel's BTF (bpftool), then
//! `src/bpf/main.bpf.c` with clang-19 against the kernel tree's sched_ext headers
//! into a libbpf skeleton. Everything generated goes to `OUT_DIR`.
//!
//! Inputs (each with a default found in ktstr's cache):
//! - `KTSTR_VMLINUX`: the kernel ELF whose BTF to compile against; else the
//!   newest cached kernel with sched_ext, Debian's fetched ones first.
//! - `KTSTR_LINUX_SOURCE`: the kernel tree with `tools/sched_ext/include`; else
//!   `<cache>/src/linux-source-7.3` (`ktstr kernel source`).
//! - `BPFTOOL`, `CLANG`: the tools; else `bpftool` and `clang-19`.

use std::path::{Path, PathBuf};
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

const SETUP: &str = "run `scripts/setup --sched-ext`";

/// Stops the build with a one-line reason and what to do about it.
fn fail(msg: &str) -> ! {
    eprintln!("error: scx-ktstr: {msg}");
    std::process::exit(1)
}

fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("KTSTR_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| fail("neither HOME nor XDG_CACHE_HOME is set: set KTSTR_CACHE_DIR"));
    base.join("ktstr")
}

/// The newest cached kernel with sched_ext, preferring Debian's fetched ones.
fn cached_vmlinux(cache: &Path) -> Option<PathBuf> {
    let kernels = cache.join("kernels");
    println!("cargo:rerun-if-changed={}", kernels.display());
    let mut best: Option<((bool, u64), PathBuf)> = None;
    for entry in std::fs::read_dir(&kernels).ok()?.flatten() {
        let dir = entry.path();
        let Ok(meta) = std::fs::read_to_string(dir.join("ktstr-kernel.json")) else {
            continue;
        };
        let vmlinux = dir.join("vmlinux");
        if !meta.contains("\"sched_ext\": true") || !vmlinux.is_file() {
            continue;
        }
        let created = meta
            .split("\"created_unix\":")
            .nth(1)
            .and_then(|s| s.trim_start().split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let key = (meta.contains("\"debian\""), created);
        if best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, vmlinux));
        }
    }
    best.map(|(_, p)| p)
}

fn env_path(var: &str) -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed={var}");
    std::env::var_os(var).map(PathBuf::from)
}

/// `tool` itself if it runs, else the first of `fallbacks` that exists.
fn find_tool(var: &str, tool: &str, fallbacks: &[PathBuf]) -> Option<PathBuf> {
    if let Some(p) = env_path(var) {
        return Some(p);
    }
    let runs = |p: &Path| Command::new(p).arg("--version").output().is_ok();
    std::iter::once(PathBuf::from(tool))
        .chain(fallbacks.iter().cloned())
        .find(|p| runs(p))
}

/// Turns the kernel tree's `SCX_ENUM_INIT` list (`SCX_ENUM_SET(skel, TYPE, NAME);` lines)
/// into a Rust function that fills each `__NAME` rodata field from the running kernel.
fn write_enum_setter(autogen: &Path, dest: &Path) {
    println!("cargo:rerun-if-changed={}", autogen.display());
    let text = std::fs::read_to_string(autogen)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", autogen.display())));
    let mut code = String::from(
        "/// Sets every `__SCX_*` rodata field from `value(enum type, enumerator)`.\n\
         pub fn set_scx_enums(rodata: &mut types::rodata, value: &dyn Fn(&str, &str) -> u64) {\n",
    );
    for args in text
        .lines()
        .filter_map(|l| l.split("SCX_ENUM_SET(skel,").nth(1))
    {
        let mut parts = args.split([',', ')']).map(str::trim);
        let (Some(ty), Some(name)) = (parts.next(), parts.next()) else {
            fail(&format!(
                "cannot parse `{}` in {}",
                args.trim(),
                autogen.display()
            ));
        };
        code += &format!("    rodata.__{name} = value(\"{ty}\", \"{name}\");\n");
    }
    code += "}\n";
    std::fs::write(dest, code)
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", dest.display())));
}

/// `KTSTR_VMLINUX`, else the cached kernel to compile against.
fn find_vmlinux(cache: &Path) -> PathBuf {
    let vmlinux = env_path("KTSTR_VMLINUX").or_else(|| cached_vmlinux(cache));
    match vmlinux {
        Some(v) if v.is_file() => v,
        Some(v) => fail(&format!(
            "kernel {} not found: set KTSTR_VMLINUX",
            v.display()
        )),
        None => fail(&format!(
            "no kernel with sched_ext in {}: {SETUP}, or set KTSTR_VMLINUX",
            cache.join("kernels").display()
        )),
    }
}

/// The kernel tree's `tools/sched_ext/include` (scx/common.bpf.h and friends).
fn find_scx_include(cache: &Path) -> PathBuf {
    let source =
        env_path("KTSTR_LINUX_SOURCE").unwrap_or_else(|| cache.join("src/linux-source-7.3"));
    let include = source.join("tools/sched_ext/include");
    if !include.join("scx/common.bpf.h").is_file() {
        fail(&format!(
            "{} has no scx/common.bpf.h: {SETUP} (it runs `ktstr kernel source`), \
             or set KTSTR_LINUX_SOURCE",
            include.display()
        ));
    }
    include
}

fn main() {
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set")));
    let cache = cache_root();

    let vmlinux = find_vmlinux(&cache);
    let scx_include = find_scx_include(&cache);
    let bpftool = find_tool(
        "BPFTOOL",
        "bpftool",
        &[
            PathBuf::from("/usr/sbin/bpftool"),
            cache.join("schedulers/build/sbin/bpftool"),
        ],
    )
    .unwrap_or_else(|| fail(&format!("bpftool not found: {SETUP}, or set BPFTOOL")));
    let clang = find_tool("CLANG", "clang-19", &[])
        .unwrap_or_else(|| fail(&format!("clang-19 not found: {SETUP}, or set CLANG")));

    println!("cargo:rerun-if-changed={}", vmlinux.display());
    let dump = Command::new(&bpftool)
        .args(["btf", "dump", "file"])
        .arg(&vmlinux)
        .args(["format", "c"])
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", bpftool.display())));
    if !dump.status.success() {
        fail(&format!(
            "`bpftool btf dump file {}` failed: {}",
            vmlinux.display(),
            String::from_utf8_lossy(&dump.stderr).trim()
        ));
    }
    std::fs::write(out.join("vmlinux.h"), &dump.stdout)
        .unwrap_or_else(|e| fail(&format!("cannot write vmlinux.h to {}: {e}", out.display())));

    write_enum_setter(
        &scx_include.join("scx/enums.autogen.h"),
        &out.join("scx_enums.rs"),
    );

    let src = "src/bpf/main.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=src/bpf/intf.h");
    let include = |p: &Path| format!("-I{}", p.display());
    let args = [
        include(&out),
        include(&scx_include),
        include(&scx_include.join("bpf-compat")),
        "-mcpu=v3".to_string(),
        "-fms-extensions".to_string(),
        "-Wno-microsoft-anon-tag".to_string(),
        "-Wall".to_string(),
        "-Wno-compare-distinct-pointer-types".to_string(),
    ];
    if let Err(e) = SkeletonBuilder::new()
        .source(src)
        .clang(&clang)
        .clang_args(args)
        .build_and_generate(out.join("bpf_skel.rs"))
    {
        fail(&format!("compiling {src} with {}: {e:#}", clang.display()));
    }
}
