//! `ktstr kernel build`: a kernel from a source tree with ktstr.kconfig merged in,
//! cached by source version and final config.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cache::{cache_root, kernels_dir, Kernel, KernelMeta, KernelSource, META_FILE};
use super::config::{parse_config, ConfigValue, EXEC_REQUIRED, KTSTR_KCONFIG};
use crate::KtstrError;

/// The config the fragment is merged onto.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConfigBase {
    /// `make tinyconfig`: the smallest, fastest-booting kernel.
    #[default]
    Tiny,
    /// An existing config file, such as a distro kernel's.
    File(PathBuf),
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildOptions {
    /// The kernel source tree.
    pub source: PathBuf,
    /// The base config.
    pub base: ConfigBase,
    /// Another fragment merged after ktstr.kconfig.
    pub extra_kconfig: Option<PathBuf>,
    /// Parallel jobs (default: all host CPUs).
    pub jobs: Option<usize>,
    /// Rebuild even if the result is cached.
    pub force: bool,
}

/// Options that must survive for the result to be usable at all.
const BUILD_CRITICAL: &[&str] = &["SCHED_CLASS_EXT", "BPF_SYSCALL", "DEBUG_INFO_BTF"];

/// Builds (or finds cached) the kernel described by `opts`.
pub fn build(opts: &BuildOptions, progress: &mut dyn FnMut(&str)) -> Result<Kernel, KtstrError> {
    let src = opts
        .source
        .canonicalize()
        .map_err(|e| KtstrError::io(&opts.source, e))?;
    let version = make_capture(&src, &["-s", "kernelversion"])?
        .trim()
        .to_string();
    let mut h = DefaultHasher::new();
    src.hash(&mut h);
    let out = cache_root()
        .join("build")
        .join(format!("{version}-{:08x}", h.finish() as u32));
    std::fs::create_dir_all(&out).map_err(|e| KtstrError::io(&out, e))?;
    let o = format!("O={}", out.display());

    progress(&format!("configuring {version} in {}", out.display()));
    match &opts.base {
        ConfigBase::Tiny => make(&src, &[&o, "tinyconfig"], &mut |_| {}, "make tinyconfig")?,
        ConfigBase::File(f) => {
            std::fs::copy(f, out.join(".config")).map_err(|e| KtstrError::io(f, e))?;
        }
    }
    let mut fragment = KTSTR_KCONFIG.to_string();
    if let Some(extra) = &opts.extra_kconfig {
        fragment.push('\n');
        fragment.push_str(&std::fs::read_to_string(extra).map_err(|e| KtstrError::io(extra, e))?);
    }
    let dot_config = out.join(".config");
    let base = std::fs::read_to_string(&dot_config).map_err(|e| KtstrError::io(&dot_config, e))?;
    std::fs::write(&dot_config, merge_fragment(&base, &fragment))
        .map_err(|e| KtstrError::io(&dot_config, e))?;
    make(
        &src,
        &[&o, "olddefconfig"],
        &mut |_| {},
        "make olddefconfig",
    )?;
    let final_config =
        std::fs::read_to_string(&dot_config).map_err(|e| KtstrError::io(&dot_config, e))?;
    let dropped = dropped_options(&fragment, &final_config);
    for (name, want, got) in &dropped {
        let deps = kconfig_depends(&src, name);
        progress(&format!(
            "warning: CONFIG_{name} wanted {want}, got {got}{}",
            if deps.is_empty() {
                " (not defined by this kernel's Kconfig)".to_string()
            } else {
                format!(" (depends on {})", deps.join(" && "))
            }
        ));
    }
    let fatal: Vec<String> = dropped
        .iter()
        .filter(|(n, _, _)| {
            BUILD_CRITICAL.contains(&n.as_str()) || EXEC_REQUIRED.contains(&n.as_str())
        })
        .map(|(n, _, _)| format!("CONFIG_{n}"))
        .collect();
    if !fatal.is_empty() {
        return Err(KtstrError::Build {
            step: "checking the merged config".into(),
            detail: format!(
                "options ktstr cannot do without were dropped: {}",
                fatal.join(", ")
            ),
        });
    }

    let mut ch = DefaultHasher::new();
    version.hash(&mut ch);
    final_config.hash(&mut ch);
    let config_hash = format!("{:016x}", ch.finish());
    let name = format!("{version}-ktstr-{}", &config_hash[..8]);
    let dest = kernels_dir().join(&name);
    if !opts.force && dest.join(META_FILE).is_file() {
        progress(&format!("kernel {name} already built and cached"));
        return Kernel::from_cache_dir(&dest);
    }
    let jobs = opts.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    progress(&format!(
        "building {name} with {jobs} jobs (make vmlinux bzImage)"
    ));
    let j = format!("-j{jobs}");
    make(
        &src,
        &[&o, &j, "vmlinux", "bzImage"],
        progress,
        "make vmlinux bzImage",
    )?;

    let work = kernels_dir().join(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| KtstrError::io(&work, e))?;
    // The cached vmlinux keeps .BTF and the symbol table but not DWARF: a fraction
    // of the size, and QEMU loads it faster.
    let vmlinux = out.join("vmlinux");
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&vmlinux)
        .arg(work.join("vmlinux"))
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(&vmlinux, work.join("vmlinux")).map_err(|e| KtstrError::io(&vmlinux, e))?;
    }
    for (from, to) in [
        ("arch/x86/boot/bzImage", "vmlinuz"),
        (".config", "config"),
        ("System.map", "System.map"),
    ] {
        let from = out.join(from);
        std::fs::copy(&from, work.join(to)).map_err(|e| KtstrError::io(&from, e))?;
    }
    let release = make_capture(&src, &[&o, "-s", "kernelrelease"])
        .map(|s| s.trim().to_string())
        .unwrap_or(version);
    let source = KernelSource::Built {
        source: src.clone(),
        config_hash,
    };
    KernelMeta::describe(&name, &release, source, &work).write(&work)?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&work, &dest).map_err(|e| KtstrError::io(&dest, e))?;
    progress(&format!("cached kernel {name} in {}", dest.display()));
    Kernel::from_cache_dir(&dest)
}

/// `base` with every option of `fragment` replaced or appended (later fragments win).
pub fn merge_fragment(base: &str, fragment: &str) -> String {
    let frag = parse_config(fragment);
    let mut out: Vec<String> = base
        .lines()
        .filter(|l| {
            let name = option_name(l);
            name.is_none_or(|n| !frag.contains_key(n))
        })
        .map(str::to_string)
        .collect();
    for (name, v) in &frag {
        out.push(match v {
            ConfigValue::Yes => format!("CONFIG_{name}=y"),
            ConfigValue::Module => format!("CONFIG_{name}=m"),
            ConfigValue::NotSet => format!("# CONFIG_{name} is not set"),
            ConfigValue::Value(x) => format!("CONFIG_{name}={x}"),
        });
    }
    out.join("\n") + "\n"
}

fn option_name(line: &str) -> Option<&str> {
    let l = line.trim();
    if let Some(rest) = l.strip_prefix("# CONFIG_") {
        return rest.strip_suffix(" is not set");
    }
    l.strip_prefix("CONFIG_")
        .and_then(|r| r.split_once('='))
        .map(|(n, _)| n)
}

/// Fragment options the final config does not honour: (name, wanted, got).
pub fn dropped_options(fragment: &str, final_config: &str) -> Vec<(String, String, String)> {
    let fin = parse_config(final_config);
    let show = |v: Option<&ConfigValue>| match v {
        Some(ConfigValue::Yes) => "y".to_string(),
        Some(ConfigValue::Module) => "m".to_string(),
        Some(ConfigValue::Value(x)) => x.clone(),
        Some(ConfigValue::NotSet) | None => "not set".to_string(),
    };
    parse_config(fragment)
        .into_iter()
        .filter(|(name, want)| {
            let got = fin.get(name);
            match want {
                ConfigValue::NotSet => !matches!(got, None | Some(ConfigValue::NotSet)),
                other => got != Some(other),
            }
        })
        .map(|(name, want)| {
            let got = show(fin.get(&name));
            (name, show(Some(&want)), got)
        })
        .collect()
}

/// The `depends on` expressions of `config NAME` in the tree's Kconfig files.
fn kconfig_depends(src: &Path, name: &str) -> Vec<String> {
    let mut deps = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            let fname = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !fname.starts_with('.') && fname != "Documentation" && fname != "tools" {
                    stack.push(p);
                }
            } else if fname.starts_with("Kconfig") {
                let Ok(text) = std::fs::read_to_string(&p) else {
                    continue;
                };
                let mut inside = false;
                for line in text.lines().map(str::trim) {
                    if let Some(sym) = line
                        .strip_prefix("config ")
                        .or_else(|| line.strip_prefix("menuconfig "))
                    {
                        inside = sym.trim() == name;
                    } else if inside {
                        if let Some(dep) = line.strip_prefix("depends on ") {
                            deps.push(dep.trim().to_string());
                        }
                    }
                }
            }
        }
    }
    deps.sort();
    deps.dedup();
    deps
}

fn make_capture(src: &Path, args: &[&str]) -> Result<String, KtstrError> {
    let out = Command::new("make")
        .arg("-C")
        .arg(src)
        .args(args)
        .output()
        .map_err(|e| KtstrError::ToolMissing {
            tool: "make".into(),
            hint: format!("{e}; run scripts/setup --kernel-build"),
        })?;
    if !out.status.success() {
        return Err(KtstrError::Build {
            step: format!("make {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs make, passing each output line to `progress`, keeping the tail for errors.
fn make(
    src: &Path,
    args: &[&str],
    progress: &mut dyn FnMut(&str),
    step: &str,
) -> Result<(), KtstrError> {
    let mut child = Command::new("make")
        .arg("-C")
        .arg(src)
        .arg("ARCH=x86_64")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KtstrError::ToolMissing {
            tool: "make".into(),
            hint: format!("{e}; run scripts/setup --kernel-build"),
        })?;
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut tail: Vec<String> = Vec::new();
        if let Some(s) = stderr {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                tail.push(line);
                if tail.len() > 40 {
                    tail.remove(0);
                }
            }
        }
        tail
    });
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            progress(&line);
        }
    }
    let status = child.wait().map_err(|e| KtstrError::io(src, e))?;
    let tail = err_thread.join().unwrap_or_default();
    if !status.success() {
        return Err(KtstrError::Build {
            step: step.into(),
            detail: tail.join("\n"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_overrides_and_appends() {
        let base = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n";
        let merged = merge_fragment(base, "CONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=512\n");
        let m = parse_config(&merged);
        assert_eq!(m["A"], ConfigValue::Yes);
        assert_eq!(m["B"], ConfigValue::Yes);
        assert_eq!(m["C"], ConfigValue::NotSet);
        assert_eq!(m["D"], ConfigValue::Value("512".into()));
        assert_eq!(merged.matches("CONFIG_B").count(), 1);
    }

    #[test]
    fn dropped_options_are_named_with_values() {
        let d = dropped_options(
            "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_N=512\n",
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_N=64\n",
        );
        assert_eq!(
            d,
            vec![
                ("B".to_string(), "y".to_string(), "not set".to_string()),
                ("C".to_string(), "not set".to_string(), "y".to_string()),
                ("N".to_string(), "512".to_string(), "64".to_string()),
            ]
        );
    }

    #[test]
    fn kconfig_dependencies_are_found() {
        let d = std::env::temp_dir().join(format!("ktstr-kconfig-{}", std::process::id()));
        std::fs::create_dir_all(d.join("drivers")).unwrap();
        std::fs::write(
            d.join("drivers/Kconfig"),
            "config FOO\n\tbool \"foo\"\n\tdepends on PCI\n\tdepends on ACPI\n\nconfig BAR\n\tdepends on X\n",
        )
        .unwrap();
        assert_eq!(kconfig_depends(&d, "FOO"), ["ACPI", "PCI"]);
        assert!(kconfig_depends(&d, "NONE").is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}
