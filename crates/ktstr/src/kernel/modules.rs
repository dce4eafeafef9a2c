//! Kernel modules for the guest: find them in a kernel's module tree, add
//! their dependencies (from `.modinfo`), decompress, and order them for loading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cache::{cache_root, Kernel};
use crate::KtstrError;

/// Module files ready to pack, dependencies before the modules needing them.
pub fn resolve_modules(kernel: &Kernel, names: &[String]) -> Result<Vec<PathBuf>, KtstrError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let tree = kernel
        .modules
        .as_ref()
        .ok_or_else(|| KtstrError::ModuleMissing {
            module: names.join(", "),
            kernel: kernel.name.clone(),
            hint: "this kernel has no module tree in the cache".into(),
        })?;
    let index = index_tree(&tree.join("kernel"));
    let builtin = std::fs::read_to_string(tree.join("modules.builtin")).unwrap_or_default();
    let out_dir = cache_root().join("modules").join(&kernel.name);
    std::fs::create_dir_all(&out_dir).map_err(|e| KtstrError::io(&out_dir, e))?;
    let mut ordered: Vec<PathBuf> = Vec::new();
    let mut state: BTreeMap<String, bool> = BTreeMap::new(); // false = visiting, true = done
    for name in names {
        visit(
            &canonical(name),
            kernel,
            &index,
            &builtin,
            &out_dir,
            &mut state,
            &mut ordered,
        )?;
    }
    Ok(ordered)
}

/// Module names treat `-` and `_` alike.
fn canonical(name: &str) -> String {
    name.trim().replace('-', "_")
}

fn visit(
    name: &str,
    kernel: &Kernel,
    index: &BTreeMap<String, PathBuf>,
    builtin: &str,
    out_dir: &Path,
    state: &mut BTreeMap<String, bool>,
    ordered: &mut Vec<PathBuf>,
) -> Result<(), KtstrError> {
    match state.get(name) {
        Some(true) => return Ok(()),
        Some(false) => {
            return Err(KtstrError::ModuleMissing {
                module: name.into(),
                kernel: kernel.name.clone(),
                hint: "its dependencies form a cycle".into(),
            })
        }
        None => {}
    }
    let Some(src) = index.get(name) else {
        if builtin.lines().any(|l| {
            l.rsplit('/')
                .next()
                .map(|f| canonical(f.trim_end_matches(".ko")))
                == Some(name.to_string())
        }) {
            state.insert(name.into(), true);
            return Ok(()); // built in: nothing to load
        }
        return Err(KtstrError::ModuleMissing {
            module: name.into(),
            kernel: kernel.name.clone(),
            hint: "no such module in its module tree, and it is not built in".into(),
        });
    };
    state.insert(name.into(), false);
    let ko = decompressed(src, name, out_dir)?;
    let data = std::fs::read(&ko).map_err(|e| KtstrError::io(&ko, e))?;
    for dep in modinfo(&data, "depends")
        .iter()
        .flat_map(|d| d.split(','))
        .filter(|d| !d.is_empty())
    {
        visit(
            &canonical(dep),
            kernel,
            index,
            builtin,
            out_dir,
            state,
            ordered,
        )?;
    }
    state.insert(name.into(), true);
    ordered.push(ko);
    Ok(())
}

/// Every module file under `tree`, by canonical name.
fn index_tree(tree: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(fname) = p.file_name().map(|f| f.to_string_lossy().into_owned()) {
                if let Some(stem) = fname.split(".ko").next().filter(|_| fname.contains(".ko")) {
                    out.insert(canonical(stem), p);
                }
            }
        }
    }
    out
}

/// An uncompressed copy of a module file (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`).
fn decompressed(src: &Path, name: &str, out_dir: &Path) -> Result<PathBuf, KtstrError> {
    let out = out_dir.join(format!("{name}.ko"));
    if out.is_file() {
        return Ok(out);
    }
    let ext = src
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let data = match ext.as_str() {
        "ko" => std::fs::read(src).map_err(|e| KtstrError::io(src, e))?,
        "zst" => {
            let f = std::fs::File::open(src).map_err(|e| KtstrError::io(src, e))?;
            let decompress =
                |source: Box<dyn std::error::Error + Send + Sync>| KtstrError::Decompress {
                    path: src.to_path_buf(),
                    source,
                };
            let mut d =
                ruzstd::decoding::StreamingDecoder::new(f).map_err(|e| decompress(Box::new(e)))?;
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut d, &mut v).map_err(|e| decompress(Box::new(e)))?;
            v
        }
        "xz" | "gz" => {
            let tool = if ext == "xz" { "xz" } else { "gzip" };
            let mut cmd = Command::new(tool);
            cmd.arg("-dc").arg(src);
            let o = cmd.output().map_err(|e| KtstrError::ToolMissing {
                tool: tool.into(),
                hint: format!("{e}; scripts/setup installs it"),
            })?;
            if !o.status.success() {
                return Err(KtstrError::Decompress {
                    path: src.to_path_buf(),
                    source: Box::new(KtstrError::command_failed(&cmd, &o)),
                });
            }
            o.stdout
        }
        other => {
            return Err(KtstrError::UnknownCompression {
                path: src.to_path_buf(),
                extension: other.to_string(),
            })
        }
    };
    let tmp = out.with_extension(format!("ko.{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(|e| KtstrError::io(&tmp, e))?;
    std::fs::rename(&tmp, &out).map_err(|e| KtstrError::io(&out, e))?;
    Ok(out)
}

/// Values of `key` in a module's `.modinfo` section.
pub fn modinfo(ko: &[u8], key: &str) -> Vec<String> {
    use object::{Object, ObjectSection};
    let Ok(file) = object::File::parse(ko) else {
        return Vec::new();
    };
    let Some(data) = file.section_by_name(".modinfo").and_then(|s| s.data().ok()) else {
        return Vec::new();
    };
    let prefix = format!("{key}=");
    data.split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .filter_map(|kv| kv.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(what: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ktstr-mod-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_corrupt_zst_module_names_its_file_and_keeps_the_cause() {
        let d = scratch("zst");
        let src = d.join("bad.ko.zst");
        std::fs::write(&src, b"not zstd at all").unwrap();
        let err = decompressed(&src, "bad", &d).unwrap_err();
        assert!(
            matches!(&err, KtstrError::Decompress { path, .. } if *path == src),
            "{err:?}"
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "the cause is kept"
        );
        assert!(err.to_string().contains("bad.ko.zst"), "{err}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unknown_module_compression_is_named() {
        let d = scratch("lz4");
        let src = d.join("m.ko.lz4");
        std::fs::write(&src, b"x").unwrap();
        let err = decompressed(&src, "m", &d).unwrap_err();
        assert!(
            matches!(&err, KtstrError::UnknownCompression { extension, .. } if extension == "lz4"),
            "{err:?}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(canonical("virtio-net"), "virtio_net");
    }

    #[test]
    fn modinfo_of_non_elf_is_empty() {
        assert!(modinfo(b"nope", "depends").is_empty());
    }

    #[test]
    fn resolves_dependencies_first_from_the_cached_kernel() {
        // Uses the fetched Debian kernel when present (its virtio_net needs net_failover, which needs failover).
        let Some(k) = crate::kernel::list().ok().and_then(|l| {
            l.into_iter().find(|k| {
                k.kernel
                    .modules
                    .as_ref()
                    .is_some_and(|m| m.join("kernel/drivers/net").is_dir())
            })
        }) else {
            crate::testing::skip("no cached kernel with a module tree (ktstr kernel fetch)");
            return;
        };
        let mods = resolve_modules(&k.kernel, &["virtio-net".into()]).unwrap();
        let names: Vec<String> = mods
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["failover", "net_failover", "virtio_net"]);
        let data = std::fs::read(&mods[2]).unwrap();
        assert_eq!(modinfo(&data, "depends"), ["net_failover"]);
        let err = resolve_modules(&k.kernel, &["no_such_module_x".into()]).unwrap_err();
        assert!(err.to_string().contains("no_such_module_x"), "{err}");
    }
}
