//! Kernel symbols: `/proc/kallsyms` or System.map text, or an ELF symbol table.
//!
//! A stripped vmlinux (Debian's) has no symbol table, so the usual source is kallsyms text
//! captured from the guest, whose addresses already include the KASLR slide. System.map
//! and ELF addresses are link-time addresses: [`SymbolTable::slide_to`] finds the slide
//! from one symbol's run-time address and [`SymbolTable::slid`] applies it.

use std::path::{Path, PathBuf};

use object::read::ReadCache;
use object::{Object, ObjectSymbol, SymbolKind};

/// Start of the x86-64 kernel image mapping (`__START_KERNEL_map`); only symbols at or
/// above it move with KASLR.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;

/// One kernel symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Its address.
    pub addr: u64,
    /// The `nm` type letter (`T` global text, `d` local data, ...).
    pub kind: char,
    /// Its name.
    pub name: String,
    /// The module it belongs to (kallsyms `[mod]`), `None` for vmlinux.
    pub module: Option<String>,
}

/// Errors from reading and querying symbol tables.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SymbolError {
    /// A line of kallsyms/System.map text is not `addr type name [module]`.
    #[error("symbol text line {line}: {reason}: `{text}`")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
        /// The line.
        text: String,
    },
    /// No symbol of this name.
    #[error("symbol `{name}` not found")]
    NotFound {
        /// The name looked for.
        name: String,
    },
    /// The ELF could not be parsed.
    #[error("cannot read ELF symbols from {path}")]
    Elf {
        /// The file.
        path: PathBuf,
        /// What object reported.
        #[source]
        source: object::read::Error,
    },
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Symbols in input order with a name index; duplicate names are kept.
#[derive(Clone, Debug, Default)]
pub struct SymbolTable {
    symbols: Vec<Symbol>,
    /// Indices into `symbols`, sorted by (name, index).
    by_name: Vec<u32>,
}

impl SymbolTable {
    /// Builds a table from symbols in any order.
    pub fn new(symbols: Vec<Symbol>) -> Self {
        let n = u32::try_from(symbols.len()).unwrap_or(u32::MAX);
        let mut by_name: Vec<u32> = (0..n).collect();
        by_name.sort_by(|&a, &b| {
            symbols[a as usize]
                .name
                .cmp(&symbols[b as usize].name)
                .then(a.cmp(&b))
        });
        SymbolTable { symbols, by_name }
    }

    /// Parses `/proc/kallsyms` or System.map text (`ffffffff81000000 T _text`, with an
    /// optional tab-separated `[module]` after the name). Blank lines are skipped.
    pub fn from_text(text: &str) -> Result<Self, SymbolError> {
        let mut symbols = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason| SymbolError::Malformed {
                line: i + 1,
                reason,
                text: line.to_string(),
            };
            let mut parts = line.splitn(3, [' ', '\t']);
            let addr = parts.next().ok_or_else(|| bad("no address"))?;
            let addr = u64::from_str_radix(addr, 16).map_err(|_| bad("address is not hex"))?;
            let kind = parts.next().ok_or_else(|| bad("no type"))?;
            let mut kc = kind.chars();
            let kind = match (kc.next(), kc.next()) {
                (Some(c), None) => c,
                _ => return Err(bad("type is not one letter")),
            };
            let rest = parts.next().ok_or_else(|| bad("no name"))?.trim();
            let (name, module) = match rest.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((name, m)) => {
                    let m = m.trim();
                    let m = m
                        .strip_prefix('[')
                        .and_then(|m| m.strip_suffix(']'))
                        .ok_or_else(|| bad("text after the name is not [module]"))?;
                    (name, Some(m.to_string()))
                }
                None => (rest, None),
            };
            if name.is_empty() {
                return Err(bad("no name"));
            }
            symbols.push(Symbol {
                addr,
                kind,
                name: name.to_string(),
                module,
            });
        }
        Ok(Self::new(symbols))
    }

    /// Reads the symbol table (`.symtab`, else `.dynsym`) of an ELF file such as an
    /// unstripped vmlinux; section symbols and empty names are left out.
    pub fn from_elf_file(path: &Path) -> Result<Self, SymbolError> {
        let file = std::fs::File::open(path).map_err(|source| SymbolError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cache = ReadCache::new(file);
        Self::from_elf_data(&cache, path)
    }

    /// Whether the ELF file at `path` has a non-empty `.symtab` (an unstripped vmlinux
    /// does; one extracted from a compressed boot image does not). Reads only its headers.
    pub fn elf_has_symtab(path: &Path) -> bool {
        let Ok(file) = std::fs::File::open(path) else {
            return false;
        };
        let cache = ReadCache::new(file);
        object::File::parse(&cache).is_ok_and(|obj| {
            use object::{Object, ObjectSection};
            obj.section_by_name(".symtab").is_some_and(|s| s.size() > 0)
        })
    }

    /// [`Self::from_elf_file`] on an image held in memory.
    pub fn from_elf(data: &[u8]) -> Result<Self, SymbolError> {
        Self::from_elf_data(data, Path::new("<memory>"))
    }

    fn from_elf_data<'a, R: object::ReadRef<'a>>(
        data: R,
        path: &Path,
    ) -> Result<Self, SymbolError> {
        let obj = object::File::parse(data).map_err(|source| SymbolError::Elf {
            path: path.to_path_buf(),
            source,
        })?;
        let symbols = obj
            .symbols()
            .chain(obj.dynamic_symbols())
            .filter(|s| s.kind() != SymbolKind::Section)
            .filter_map(|s| {
                let name = s.name().ok().filter(|n| !n.is_empty())?;
                let kind = match s.kind() {
                    SymbolKind::Text => 't',
                    SymbolKind::Data | SymbolKind::Tls => 'd',
                    SymbolKind::Unknown if s.is_undefined() => 'u',
                    _ => '?',
                };
                let kind = if s.is_global() {
                    kind.to_ascii_uppercase()
                } else {
                    kind
                };
                Some(Symbol {
                    addr: s.address(),
                    kind,
                    name: name.to_string(),
                    module: None,
                })
            })
            .collect();
        Ok(Self::new(symbols))
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// True when there are no symbols.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// All symbols in input order.
    pub fn iter(&self) -> impl Iterator<Item = &Symbol> {
        self.symbols.iter()
    }

    /// Every symbol named `name`, in input order.
    pub fn lookup_all(&self, name: &str) -> impl Iterator<Item = &Symbol> + '_ {
        let key = |i: &u32| self.symbols.get(*i as usize).map(|s| s.name.as_str());
        let start = self.by_name.partition_point(|i| key(i) < Some(name));
        let end = self.by_name.partition_point(|i| key(i) <= Some(name));
        self.by_name[start..end]
            .iter()
            .filter_map(|&i| self.symbols.get(i as usize))
    }

    /// The first symbol named `name`, preferring vmlinux over modules.
    pub fn lookup(&self, name: &str) -> Option<&Symbol> {
        let mut all = self.lookup_all(name);
        let first = all.next()?;
        if first.module.is_none() {
            return Some(first);
        }
        Some(all.find(|s| s.module.is_none()).unwrap_or(first))
    }

    /// The address of `name`, or [`SymbolError::NotFound`].
    pub fn addr(&self, name: &str) -> Result<u64, SymbolError> {
        self.lookup(name)
            .map(|s| s.addr)
            .ok_or_else(|| SymbolError::NotFound {
                name: name.to_string(),
            })
    }

    /// The KASLR slide: `runtime_addr` (read from the guest) minus the address of `name` here.
    pub fn slide_to(&self, name: &str, runtime_addr: u64) -> Result<i64, SymbolError> {
        Ok(runtime_addr.wrapping_sub(self.addr(name)?) as i64)
    }

    /// A copy with `slide` added to every vmlinux symbol in the kernel image mapping
    /// (at or above [`START_KERNEL_MAP`]); absolute and zero-based per-CPU symbols stay.
    pub fn slid(&self, slide: i64) -> SymbolTable {
        let mut t = self.clone();
        for s in &mut t.symbols {
            if s.addr >= START_KERNEL_MAP && s.module.is_none() {
                s.addr = s.addr.wrapping_add(slide as u64);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
ffffffff81000000 T _text
ffffffff81000000 T startup_64
0000000000032bc0 D runqueues
ffffffff82a4c100 D __per_cpu_offset
ffffffff810f1234 t dup_name
ffffffffc0a01000 t dup_name\t[kvm]
ffffffffc0a02000 T kvm_init\t[kvm]

ffffffff810f9999 t dup_name
";

    #[test]
    fn kallsyms_text_parses() {
        let t = SymbolTable::from_text(TEXT).expect("parse");
        assert_eq!(t.len(), 8);
        assert_eq!(t.addr("_text").expect("_text"), 0xffff_ffff_8100_0000);
        assert_eq!(t.addr("runqueues").expect("rq"), 0x32bc0);
        let kvm = t.lookup("kvm_init").expect("kvm_init");
        assert_eq!((kvm.kind, kvm.module.as_deref()), ('T', Some("kvm")));
        let dups: Vec<u64> = t.lookup_all("dup_name").map(|s| s.addr).collect();
        assert_eq!(
            dups,
            [
                0xffff_ffff_810f_1234,
                0xffff_ffff_c0a0_1000,
                0xffff_ffff_810f_9999
            ]
        );
        assert!(matches!(t.addr("nope"), Err(SymbolError::NotFound { .. })));
    }

    #[test]
    fn lookup_prefers_vmlinux_over_modules() {
        let t = SymbolTable::from_text("ffffffffc0000000 t f\t[m]\nffffffff81000010 t f\n")
            .expect("parse");
        assert_eq!(t.addr("f").expect("f"), 0xffff_ffff_8100_0010);
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        for (text, reason) in [
            ("zz T x", "address is not hex"),
            ("ffff TT x", "type is not one letter"),
            ("ffff T", "no name"),
            ("ffff T x junk", "text after the name is not [module]"),
        ] {
            let input = format!("ffffffff81000000 T _text\n{text}\n");
            match SymbolTable::from_text(&input) {
                Err(SymbolError::Malformed {
                    line: 2, reason: r, ..
                }) => assert_eq!(r, reason),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn kaslr_slide_moves_only_image_symbols() {
        let map = SymbolTable::from_text(TEXT).expect("parse");
        let slide = map.slide_to("_text", 0xffff_ffff_9a00_0000).expect("slide");
        assert_eq!(slide, 0x1900_0000);
        let live = map.slid(slide);
        assert_eq!(live.addr("_text").expect("_text"), 0xffff_ffff_9a00_0000);
        assert_eq!(live.addr("runqueues").expect("rq"), 0x32bc0);
        assert_eq!(live.addr("kvm_init").expect("mod"), 0xffff_ffff_c0a0_2000);
    }

    #[test]
    fn host_kallsyms_parses() {
        let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else {
            println!("skipping: /proc/kallsyms is not readable");
            return;
        };
        let t = SymbolTable::from_text(&text).expect("host kallsyms parses");
        assert!(t.len() > 1000, "only {} symbols", t.len());
        let text_sym = t.lookup("_text").expect("_text in kallsyms");
        assert_eq!(text_sym.module, None);
        if text_sym.addr == 0 {
            println!("kallsyms addresses are hidden (kptr_restrict); names checked only");
        } else {
            assert!(text_sym.addr >= START_KERNEL_MAP, "{:#x}", text_sym.addr);
            let etext = t.addr("_etext").expect("_etext");
            assert!(etext > text_sym.addr);
        }
    }

    #[test]
    fn elf_symbols_of_the_test_binary() {
        let Ok(exe) = std::env::current_exe() else {
            println!("skipping: no current_exe");
            return;
        };
        let t = SymbolTable::from_elf_file(&exe).expect("test binary symbols");
        let main = t.lookup("main").expect("main in the test binary");
        assert_eq!(main.kind, 'T');
        assert_ne!(main.addr, 0);
        assert!(SymbolTable::from_elf(b"junk").is_err());
    }
}
