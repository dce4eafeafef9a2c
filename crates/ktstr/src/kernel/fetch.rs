//! `ktstr kernel fetch`: Debian trixie-backports' cloud kernel (sched_ext + BTF),
//! downloaded through a private apt state that reuses the machine's own Debian
//! mirror, unpacked into the cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::cache::{kernels_dir, Kernel, KernelMeta, KernelSource, META_FILE};
use super::image::extract_vmlinux;
use crate::KtstrError;

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Debian suite holding the kernels.
    pub suite: String,
    /// Kernel flavour.
    pub flavour: String,
    /// Version prefix (`7.3`); `None` for the newest.
    pub version: Option<String>,
    /// Re-download even if cached.
    pub force: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            suite: "trixie-backports".into(),
            flavour: "cloud-amd64".into(),
            version: None,
            force: false,
        }
    }
}

/// The machine's Debian archive URI, from its apt sources (deb822 `.sources` or one-line lists).
pub fn debian_mirror() -> Result<String, KtstrError> {
    let mut texts = Vec::new();
    for dir in ["/etc/apt/sources.list.d"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut paths: Vec<PathBuf> =
                entries.filter_map(Result::ok).map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let name = p.display().to_string();
                if name.ends_with(".sources") || name.ends_with(".list") {
                    if let Ok(t) = std::fs::read_to_string(&p) {
                        texts.push(t);
                    }
                }
            }
        }
    }
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    texts
        .iter()
        .find_map(|t| mirror_from_sources(t))
        .ok_or_else(|| KtstrError::Fetch {
            step: "finding the Debian mirror".into(),
            detail:
                "no Debian archive entry (a URI ending in /debian) in /etc/apt/sources.list{,.d}"
                    .into(),
        })
}

/// The first Debian archive URI (not the security archive) in apt sources text.
fn mirror_from_sources(text: &str) -> Option<String> {
    let is_archive = |uri: &str| {
        let u = uri.trim_end_matches('/');
        u.ends_with("/debian") && !u.contains("security")
    };
    for line in text.lines().map(str::trim) {
        if let Some(uris) = line.strip_prefix("URIs:") {
            if let Some(u) = uris.split_whitespace().find(|u| is_archive(u)) {
                return Some(u.trim_end_matches('/').to_string());
            }
        } else if let Some(rest) = line.strip_prefix("deb ") {
            // Skip an options block: deb [arch=amd64 signed-by=...] URI suite ...
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(opts) => opts.split_once(']').map(|(_, r)| r).unwrap_or(""),
                None => rest,
            };
            let Some(uri) = rest.split_whitespace().next() else {
                continue;
            };
            if is_archive(uri) {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

/// The newest `linux-binary-<rel>-<flavour>` package among `names`, optionally of a version prefix.
pub fn newest_package(names: &[String], flavour: &str, version: Option<&str>) -> Option<String> {
    names
        .iter()
        .filter_map(|n| {
            let rel = n.strip_prefix("linux-binary-")?;
            // Signed images are preferred; the unsigned twin holds the same kernel.
            if rel.starts_with("unsigned-") {
                return None;
            }
            let rel = rel.strip_suffix(&format!("-{flavour}"))?;
            if !rel.chars().next()?.is_ascii_digit() {
                return None;
            }
            if let Some(v) = version {
                if !super::version_matches(rel, v) {
                    return None;
                }
            }
            Some((super::version_key(rel), n.clone()))
        })
        .max()
        .map(|(_, n)| n)
}

struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new(suite: &str) -> Result<Apt, KtstrError> {
        let dir = super::cache::cache_root().join("apt");
        for d in ["lists/partial", "archives/partial"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| KtstrError::io(&dir, e))?;
        }
        let mirror = debian_mirror()?;
        let list = dir.join("sources.list");
        std::fs::write(&list, format!("deb {mirror} {suite} main\n"))
            .map_err(|e| KtstrError::io(&list, e))?;
        Ok(Apt { dir })
    }

    fn command(&self, program: &str) -> Command {
        let d = self.dir.display();
        let mut c = Command::new(program);
        c.args([
            "-o",
            &format!("Dir::Etc::SourceList={d}/sources.list"),
            "-o",
            "Dir::Etc::SourceParts=/dev/null",
            "-o",
            &format!("Dir::State::Lists={d}/lists"),
            "-o",
            &format!("Dir::Cache::Archives={d}/archives"),
            "-o",
            "Dir::State::status=/dev/null",
            "-o",
            "Debug::NoLocking=1",
            "-o",
            "APT::Sandbox::User=root",
        ]);
        c
    }

    fn run(
        &self,
        program: &str,
        args: &[&str],
        cwd: &Path,
        step: &str,
    ) -> Result<String, KtstrError> {
        let out = self
            .command(program)
            .args(args)
            .current_dir(cwd)
            .output()
            .map_err(|e| KtstrError::ToolMissing {
                tool: program.into(),
                hint: format!("{e}; ktstr fetches Debian kernels with apt (Debian/Ubuntu hosts)"),
            })?;
        if !out.status.success() {
            return Err(KtstrError::Fetch {
                step: step.into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Fetches (or finds in the cache) a Debian sched_ext kernel.
pub fn fetch(opts: &FetchOptions, progress: &mut dyn FnMut(&str)) -> Result<Kernel, KtstrError> {
    // Instant path: something matching is cached already.
    if !opts.force {
        let cached = super::list()?;
        let hit = cached.into_iter().find(|k| {
            matches!(k.meta.source, KernelSource::Debian { .. })
                && opts
                    .version
                    .as_deref()
                    .is_none_or(|v| super::version_matches(&k.meta.release, v))
        });
        if let Some(k) = hit {
            progress(&format!("kernel {} already cached", k.meta.name));
            return Ok(k.kernel);
        }
    }
    let apt = Apt::new(&opts.suite)?;
    progress(&format!("updating the package index of {}", opts.suite));
    apt.run(
        "apt-get",
        &["-qq", "update"],
        &apt.dir,
        "updating the package index",
    )?;
    let pattern = format!("^linux-binary-.*-{}$", opts.flavour);
    let names: Vec<String> = apt
        .run(
            "apt-cache",
            &["search", "--names-only", &pattern],
            &apt.dir,
            "searching packages",
        )?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let package =
        newest_package(&names, &opts.flavour, opts.version.as_deref()).ok_or_else(|| {
            KtstrError::KernelNotFound {
                spec: opts.version.clone().unwrap_or_else(|| "newest".into()),
                hint: format!(
                    "no linux-binary-*-{} package in {}",
                    opts.flavour, opts.suite
                ),
            }
        })?;
    let release = package.trim_start_matches("linux-binary-").to_string();
    let version = apt
        .run(
            "apt-cache",
            &["show", "--no-all-versions", &package],
            &apt.dir,
            "reading the package version",
        )?
        .lines()
        .find_map(|l| l.strip_prefix("Version: ").map(str::to_string))
        .unwrap_or_default();

    let final_dir = kernels_dir().join(&release);
    if !opts.force && final_dir.join(META_FILE).is_file() {
        return Kernel::from_cache_dir(&final_dir);
    }
    let work = kernels_dir().join(format!(".{release}.{}.partial", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| KtstrError::io(&work, e))?;
    let result = fetch_into(&apt, &package, &release, &version, &work, progress).and_then(|()| {
        let _ = std::fs::remove_dir_all(&final_dir);
        std::fs::rename(&work, &final_dir).map_err(|e| KtstrError::io(&final_dir, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&work);
    }
    result?;
    progress(&format!(
        "cached kernel {release} in {}",
        final_dir.display()
    ));
    Kernel::from_cache_dir(&final_dir)
}

fn fetch_into(
    apt: &Apt,
    package: &str,
    release: &str,
    version: &str,
    work: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), KtstrError> {
    let debs = work.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| KtstrError::io(&debs, e))?;
    let packages = [
        package.to_string(),
        format!("linux-base-{release}"),
        format!("linux-modules-{release}"),
    ];
    progress(&format!("downloading {}", packages.join(", ")));
    let mut args = vec!["-qq", "download"];
    args.extend(packages.iter().map(String::as_str));
    apt.run("apt-get", &args, &debs, "downloading packages")?;
    let root = work.join("root");
    for deb in std::fs::read_dir(&debs).map_err(|e| KtstrError::io(&debs, e))? {
        let deb = deb.map_err(|e| KtstrError::io(&debs, e))?.path();
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .output()
            .map_err(|e| KtstrError::ToolMissing {
                tool: "dpkg-deb".into(),
                hint: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(KtstrError::Fetch {
                step: format!("unpacking {}", deb.display()),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
    }
    let moddir = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|d| root.join(d).join(release))
        .find(|d| d.is_dir())
        .ok_or_else(|| KtstrError::Fetch {
            step: "unpacking".into(),
            detail: format!("no modules/{release} directory in the packages"),
        })?;
    let mv =
        |from: &Path, to: &Path| std::fs::rename(from, to).map_err(|e| KtstrError::io(from, e));
    let vmlinuz = [
        moddir.join("vmlinuz"),
        root.join(format!("boot/vmlinuz-{release}")),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| KtstrError::Fetch {
        step: "unpacking".into(),
        detail: "the packages hold no vmlinuz".into(),
    })?;
    mv(&vmlinuz, &work.join("vmlinuz"))?;
    let config = [
        moddir.join("config"),
        root.join(format!("boot/config-{release}")),
    ]
    .into_iter()
    .find(|p| p.is_file());
    if let Some(c) = config {
        mv(&c, &work.join("config"))?;
    }
    // The vmlinux unpacked from the bzImage has no symbol table: the host monitor finds
    // kernel symbols in System.map instead.
    let system_map = root.join(format!("boot/System.map-{release}"));
    if system_map.is_file() {
        mv(&system_map, &work.join("System.map"))?;
    }
    let modules = work.join("modules");
    std::fs::create_dir_all(&modules).map_err(|e| KtstrError::io(&modules, e))?;
    for item in [
        "kernel",
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if moddir.join(item).exists() {
            mv(&moddir.join(item), &modules.join(item))?;
        }
    }
    progress("unpacking the ELF vmlinux from the bzImage");
    let bz = std::fs::read(work.join("vmlinuz"))
        .map_err(|e| KtstrError::io(&work.join("vmlinuz"), e))?;
    if let Some(elf) = extract_vmlinux(&bz)? {
        let p = work.join("vmlinux");
        std::fs::write(&p, elf).map_err(|e| KtstrError::io(&p, e))?;
    }
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(&root);
    let source = KernelSource::Debian {
        package: package.to_string(),
        version: version.to_string(),
    };
    KernelMeta::describe(release, release, source, work).write(work)
}

/// Debian's `linux-source-X.Y` matching the newest fetched kernel, unpacked into the cache; returns the tree.
pub fn linux_source(progress: &mut dyn FnMut(&str)) -> Result<PathBuf, KtstrError> {
    let kernel = fetch(&FetchOptions::default(), progress)?;
    let release = super::list()?
        .into_iter()
        .find(|k| k.kernel == kernel)
        .map(|k| k.meta.release)
        .unwrap_or_else(|| kernel.name.clone());
    let key = super::version_key(&release);
    let (Some(major), Some(minor)) = (key.first(), key.get(1)) else {
        return Err(KtstrError::Fetch {
            step: "finding the source version".into(),
            detail: format!("cannot read a version from `{release}`"),
        });
    };
    let series = format!("{major}.{minor}");
    let tree = super::cache::cache_root()
        .join("src")
        .join(format!("linux-source-{series}"));
    if tree.join("Makefile").is_file() && tree.join("Kconfig").is_file() {
        progress(&format!(
            "linux-source-{series} already unpacked in {}",
            tree.display()
        ));
        return Ok(tree);
    }
    let apt = Apt::new(&FetchOptions::default().suite)?;
    let work = super::cache::cache_root()
        .join("src")
        .join(format!(".linux-source-{series}.partial"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| KtstrError::io(&work, e))?;
    progress(&format!("downloading linux-source-{series}"));
    let package = format!("linux-source-{series}");
    apt.run(
        "apt-get",
        &["-qq", "download", &package],
        &work,
        "downloading the source package",
    )?;
    let deb = std::fs::read_dir(&work)
        .map_err(|e| KtstrError::io(&work, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| KtstrError::Fetch {
            step: "downloading the source package".into(),
            detail: format!("no {package} .deb arrived"),
        })?;
    let root = work.join("root");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        return Err(KtstrError::Fetch {
            step: format!("unpacking {}", deb.display()),
            detail: "dpkg-deb -x failed".into(),
        });
    }
    let tarball = root.join(format!("usr/src/linux-source-{series}.tar.xz"));
    progress(&format!("unpacking {}", tarball.display()));
    let status = Command::new("tar")
        .arg("-xJf")
        .arg(&tarball)
        .arg("-C")
        .arg(&work)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        return Err(KtstrError::Fetch {
            step: format!("unpacking {}", tarball.display()),
            detail: "tar -xJf failed (is xz-utils installed?)".into(),
        });
    }
    let _ = std::fs::remove_file(&deb);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::rename(work.join(format!("linux-source-{series}")), &tree)
        .map_err(|e| KtstrError::io(&tree, e))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_from_deb822() {
        let t = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n";
        assert_eq!(
            mirror_from_sources(t).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn mirror_from_one_line_format() {
        let t = "# c\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_from_sources(t).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            mirror_from_sources("deb http://m.example/ubuntu jammy main\n"),
            None
        );
    }

    #[test]
    fn picks_newest_signed_package() {
        let names: Vec<String> = [
            "linux-binary-7.2.12+deb13-cloud-amd64",
            "linux-binary-unsigned-7.9.0+deb13-cloud-amd64",
            "linux-binary-7.3.4+deb13-cloud-amd64",
            "linux-binary-7.10.0+deb13-rt-amd64",
            "linux-binary-6.19.14+deb13-cloud-amd64",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            newest_package(&names, "cloud-amd64", None).as_deref(),
            Some("linux-binary-7.3.4+deb13-cloud-amd64")
        );
        assert_eq!(
            newest_package(&names, "cloud-amd64", Some("7.2")).as_deref(),
            Some("linux-binary-7.2.12+deb13-cloud-amd64")
        );
        assert_eq!(newest_package(&names, "cloud-amd64", Some("8")), None);
    }
}
