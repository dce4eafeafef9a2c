//! Kernels: the cache, fetching Debian's sched_ext kernels, building from
//! source, resolving `--kernel`, and checking a kernel's config.

mod build;
mod cache;
mod config;
mod fetch;
mod image;
mod modules;

pub use build::{build, BuildOptions, ConfigBase};
pub use cache::{cache_root, kernels_dir, list, CachedKernel, Kernel, KernelMeta, KernelSource};
pub use config::{check_config, parse_config, ConfigValue, EXEC_REQUIRED, KTSTR_KCONFIG};
pub use fetch::{debian_mirror, fetch, linux_source, newest_package, FetchOptions};
pub use image::{extract_vmlinux, has_btf, image_kind, ImageKind};
pub use modules::{modinfo, resolve_modules};

use std::path::Path;

use crate::KtstrError;

/// Resolves a `--kernel` value (or `KTSTR_KERNEL`, or the newest cached kernel, or a fresh fetch).
///
/// Accepts a cache name, a version prefix (`7.3`, fetched if not cached), a
/// path to a bzImage or vmlinux, a cached kernel directory, or a kernel source
/// tree (built if needed).
pub fn resolve(spec: Option<&str>, progress: &mut dyn FnMut(&str)) -> Result<Kernel, KtstrError> {
    let env = std::env::var("KTSTR_KERNEL").ok().filter(|s| !s.is_empty());
    let spec = spec.map(str::to_string).or(env);
    let Some(spec) = spec else {
        if let Some(newest) = list()?
            .into_iter()
            .max_by(|a, b| a.meta.created_unix.cmp(&b.meta.created_unix))
        {
            return Ok(newest.kernel);
        }
        progress("no kernel cached: fetching the newest Debian sched_ext kernel");
        return fetch(&FetchOptions::default(), progress);
    };
    let path = Path::new(&spec);
    if path.is_file() {
        return Kernel::from_image(path);
    }
    if path.is_dir() {
        if path.join(cache::META_FILE).is_file() {
            return Kernel::from_cache_dir(path);
        }
        if path.join("Kconfig").is_file() && path.join("Makefile").is_file() {
            return build(
                &BuildOptions {
                    source: path.to_path_buf(),
                    ..BuildOptions::default()
                },
                progress,
            );
        }
        for candidate in ["vmlinux", "arch/x86/boot/bzImage"] {
            if path.join(candidate).is_file() {
                return Kernel::from_image(&path.join(candidate));
            }
        }
        return Err(KtstrError::KernelNotFound {
            spec,
            hint: "the directory is neither a kernel cache entry, a kernel source tree nor a build tree".into(),
        });
    }
    let cached = list()?;
    if let Some(k) = cached.iter().find(|k| k.meta.name == spec) {
        return Ok(k.kernel.clone());
    }
    if let Some(k) = cached
        .iter()
        .filter(|k| version_matches(&k.meta.release, &spec))
        .max_by_key(|k| version_key(&k.meta.release))
    {
        return Ok(k.kernel.clone());
    }
    if spec.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        progress(&format!("kernel {spec} not cached: fetching it"));
        return fetch(
            &FetchOptions {
                version: Some(spec),
                ..FetchOptions::default()
            },
            progress,
        );
    }
    Err(KtstrError::KernelNotFound {
        spec,
        hint: "give a path, a cached name (`ktstr kernel list`), or a version such as 7.3".into(),
    })
}

/// True if `release` (`7.3.4+deb13-cloud-amd64`) is version `want` (`7.3`, `7.3.4`) or a release of it.
pub fn version_matches(release: &str, want: &str) -> bool {
    release == want
        || release
            .strip_prefix(want)
            .is_some_and(|rest| rest.starts_with(['.', '+', '-']))
}

/// A sort key for kernel releases: the numeric components before any `+` or `-`.
pub fn version_key(release: &str) -> Vec<u64> {
    release
        .split(['+', '-'])
        .next()
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes_match_at_boundaries() {
        assert!(version_matches("7.3.4+deb13-cloud-amd64", "7.3"));
        assert!(version_matches("7.3.4+deb13-cloud-amd64", "7.3.4"));
        assert!(!version_matches("7.31.0+deb13-cloud-amd64", "7.3"));
        assert!(!version_matches("6.19.10+deb13-cloud-amd64", "7"));
    }

    #[test]
    fn version_keys_order_numerically() {
        let mut v = vec!["7.2.12+deb13", "7.10.1+deb13", "7.2.9+deb13", "7.3.4+deb13"];
        v.sort_by_key(|r| version_key(r));
        assert_eq!(
            v,
            ["7.2.9+deb13", "7.2.12+deb13", "7.3.4+deb13", "7.10.1+deb13"]
        );
    }
}
