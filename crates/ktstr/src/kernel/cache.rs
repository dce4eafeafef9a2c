//! The kernel cache: `$XDG_CACHE_HOME/ktstr/kernels/<name>/` with a `ktstr-kernel.json` each.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{parse_config, ConfigValue};
use super::image::{image_kind, ImageKind};
use crate::KtstrError;

/// Metadata file in each cache entry.
pub const META_FILE: &str = "ktstr-kernel.json";

/// Where a cached kernel came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelSource {
    /// Debian packages.
    Debian {
        /// The image package.
        package: String,
        /// Its version.
        version: String,
    },
    /// Built by `ktstr kernel build`.
    Built {
        /// The source tree.
        source: PathBuf,
        /// Hash of the final config.
        config_hash: String,
    },
}

/// What is recorded about a cached kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelMeta {
    /// Cache entry name.
    pub name: String,
    /// Kernel release (`uname -r`).
    pub release: String,
    /// Where it came from.
    pub source: KernelSource,
    /// CONFIG_SCHED_CLASS_EXT=y.
    pub sched_ext: bool,
    /// vmlinux has a .BTF section.
    pub btf: bool,
    /// Unix time it was cached.
    pub created_unix: u64,
}

impl KernelMeta {
    /// Metadata for the kernel files in `dir` (its `config` and `vmlinux`), stamped now.
    pub fn describe(name: &str, release: &str, source: KernelSource, dir: &Path) -> KernelMeta {
        let config = std::fs::read_to_string(dir.join("config")).unwrap_or_default();
        KernelMeta {
            name: name.to_string(),
            release: release.to_string(),
            source,
            sched_ext: parse_config(&config).get("SCHED_CLASS_EXT") == Some(&ConfigValue::Yes),
            btf: super::image::has_btf(&dir.join("vmlinux")),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// Writes the metadata into cache entry `dir`, which makes the entry complete.
    pub fn write(&self, dir: &Path) -> Result<(), KtstrError> {
        let path = dir.join(META_FILE);
        let json = serde_json::to_string_pretty(self).map_err(|source| KtstrError::Json {
            what: "kernel cache metadata",
            source,
        })?;
        std::fs::write(&path, json).map_err(|e| KtstrError::io(&path, e))
    }
}

/// A kernel ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// A short name for messages.
    pub name: String,
    /// The image to boot: the ELF vmlinux when there is one (no decompression), else the bzImage.
    pub boot_image: PathBuf,
    /// The compressed boot image, if known.
    pub bzimage: Option<PathBuf>,
    /// The uncompressed ELF vmlinux, if known.
    pub vmlinux: Option<PathBuf>,
    /// The kernel's `.config`, if known.
    pub config: Option<PathBuf>,
    /// Directory of its modules (`kernel/...` tree), if any.
    pub modules: Option<PathBuf>,
}

/// A cache entry with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedKernel {
    /// The metadata.
    pub meta: KernelMeta,
    /// The bootable kernel.
    pub kernel: Kernel,
    /// The cache entry's directory.
    pub dir: PathBuf,
}

impl CachedKernel {
    /// Bytes the entry takes on disk (walks its module tree: call it for listings only).
    pub fn size(&self) -> u64 {
        dir_size(&self.dir)
    }
}

/// ktstr's cache directory: `$KTSTR_CACHE_DIR`, else `$XDG_CACHE_HOME/ktstr`, else `~/.cache/ktstr`.
pub fn cache_root() -> PathBuf {
    let var = |name| std::env::var_os(name).map(PathBuf::from);
    cache_root_from(var("KTSTR_CACHE_DIR"), var("XDG_CACHE_HOME"), var("HOME"))
}

/// [`cache_root`] from the three variables' values (empty ones count as unset).
fn cache_root_from(ktstr: Option<PathBuf>, xdg: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    let set = |v: Option<PathBuf>| v.filter(|d| !d.as_os_str().is_empty());
    set(ktstr)
        .or_else(|| set(xdg).map(|d| d.join("ktstr")))
        .unwrap_or_else(|| {
            set(home)
                .unwrap_or_else(|| "/root".into())
                .join(".cache/ktstr")
        })
}

/// Where cached kernels live.
pub fn kernels_dir() -> PathBuf {
    cache_root().join("kernels")
}

/// Every complete cache entry, newest release first.
pub fn list() -> Result<Vec<CachedKernel>, KtstrError> {
    let dir = kernels_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        let Ok(text) = std::fs::read_to_string(p.join(META_FILE)) else {
            continue; // an unfinished or foreign directory
        };
        let Ok(meta) = serde_json::from_str::<KernelMeta>(&text) else {
            continue;
        };
        let kernel = Kernel::from_cache_dir(&p)?;
        out.push(CachedKernel {
            meta,
            kernel,
            dir: p,
        });
    }
    out.sort_by(|a, b| {
        super::version_key(&b.meta.release).cmp(&super::version_key(&a.meta.release))
    });
    Ok(out)
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

impl Kernel {
    /// A kernel from a cache entry directory.
    pub fn from_cache_dir(dir: &Path) -> Result<Kernel, KtstrError> {
        let opt = |name: &str| Some(dir.join(name)).filter(|p| p.exists());
        let vmlinux = opt("vmlinux");
        let bzimage = opt("vmlinuz");
        let boot_image = vmlinux
            .clone()
            .or_else(|| bzimage.clone())
            .ok_or_else(|| KtstrError::KernelNotFound {
                spec: dir.display().to_string(),
                hint: "the cache entry has neither vmlinux nor vmlinuz; run `ktstr kernel fetch` again".into(),
            })?;
        Ok(Kernel {
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            boot_image,
            bzimage,
            vmlinux,
            config: opt("config"),
            modules: opt("modules"),
        })
    }

    /// A kernel from an image file; its config is looked for beside it.
    pub fn from_image(path: &Path) -> Result<Kernel, KtstrError> {
        // An image inside a cache entry is that entry, modules and all.
        if let Some(dir) = path.parent().filter(|d| d.join(META_FILE).is_file()) {
            let k = Kernel::from_cache_dir(dir)?;
            if k.vmlinux.as_deref() == Some(path) || k.bzimage.as_deref() == Some(path) {
                return Ok(Kernel {
                    boot_image: path.to_path_buf(),
                    ..k
                });
            }
        }
        let kind = image_kind(path)?.ok_or_else(|| KtstrError::KernelNotFound {
            spec: path.display().to_string(),
            hint: "the file is neither a bzImage nor an ELF vmlinux".into(),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let fname = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut candidates = vec![dir.join("config"), dir.join(".config")];
        if let Some(rel) = fname.strip_prefix("vmlinuz-") {
            candidates.push(dir.join(format!("config-{rel}")));
        }
        // A build tree: arch/x86/boot/bzImage -> ../../../.config
        if let Some(root) = path.ancestors().nth(4) {
            candidates.push(root.join(".config"));
        }
        Ok(Kernel {
            name: fname,
            boot_image: path.to_path_buf(),
            bzimage: (kind == ImageKind::BzImage).then(|| path.to_path_buf()),
            vmlinux: (kind == ImageKind::Elf).then(|| path.to_path_buf()),
            config: candidates.into_iter().find(|p| p.is_file()),
            modules: None,
        })
    }

    /// The kernel's config text, if known.
    pub fn config_text(&self) -> Option<String> {
        self.config
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
    }

    /// True if the config builds in sched_ext; `None` if the config is unknown.
    pub fn sched_ext(&self) -> Option<bool> {
        self.config_text()
            .map(|c| parse_config(&c).get("SCHED_CLASS_EXT") == Some(&ConfigValue::Yes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_root_honours_env_order() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            cache_root_from(p("/k"), p("/x"), p("/h")),
            PathBuf::from("/k")
        );
        assert_eq!(
            cache_root_from(p(""), p("/x"), p("/h")),
            PathBuf::from("/x/ktstr")
        );
        assert_eq!(
            cache_root_from(None, p(""), p("/h")),
            PathBuf::from("/h/.cache/ktstr")
        );
        assert_eq!(
            cache_root_from(None, None, None),
            PathBuf::from("/root/.cache/ktstr")
        );
    }

    #[test]
    fn image_without_kernel_magic_is_refused() {
        let p = std::env::temp_dir().join(format!("ktstr-notkernel-{}", std::process::id()));
        std::fs::write(&p, vec![0u8; 1024]).unwrap();
        let err = Kernel::from_image(&p).unwrap_err();
        assert!(
            err.to_string().contains("neither a bzImage nor an ELF"),
            "{err}"
        );
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn config_found_beside_image() {
        let d = std::env::temp_dir().join(format!("ktstr-img-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let img = d.join("vmlinux");
        std::fs::copy(std::env::current_exe().unwrap(), &img).unwrap();
        std::fs::write(d.join("config"), "CONFIG_SCHED_CLASS_EXT=y\n").unwrap();
        let k = Kernel::from_image(&img).unwrap();
        assert_eq!(k.vmlinux.as_deref(), Some(img.as_path()));
        assert_eq!(k.sched_ext(), Some(true));
        let _ = std::fs::remove_dir_all(&d);
    }
}
