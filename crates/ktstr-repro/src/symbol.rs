//! Stack frames (`name+0xoff/0xsize [module]`) and what their symbol names: a kernel
//! function, a BPF program (`bpf_prog_<tag>_<name>`), or a struct_ops trampoline
//! (`bpf__sched_ext_ops_<op>`).

use serde::{Deserialize, Serialize};

/// One frame of a backtrace or call trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The symbol, e.g. `scx_do_enqueue_task`.
    pub symbol: String,
    /// Offset into the symbol.
    pub offset: u64,
    /// The symbol's size.
    pub size: u64,
    /// The module in brackets after the frame (`bpf` for BPF programs in kallsyms).
    pub module: Option<String>,
    /// True for a `? ` frame: an address found on the stack that the unwinder could not
    /// prove is a return address.
    pub unreliable: bool,
}

/// Longest symbol name accepted (KSYM_NAME_LEN is 512).
const MAX_SYMBOL: usize = 512;

fn is_symbol_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$')
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

impl Frame {
    /// Parses one frame line (leading blanks allowed); `None` when it is not one.
    ///
    /// Accepts `sym+0x1a/0x20`, `? sym+0x1a/0x20` and a trailing ` [module]`.
    pub fn parse(line: &str) -> Option<Frame> {
        let mut s = line.trim();
        let unreliable = match s.strip_prefix("? ") {
            Some(rest) => {
                s = rest.trim_start();
                true
            }
            None => false,
        };
        let (loc, module) = match s.split_once(' ') {
            Some((loc, rest)) => {
                let m = rest.trim().strip_prefix('[')?.strip_suffix(']')?;
                (loc, Some(m.to_string()))
            }
            None => (s, None),
        };
        let (symbol, off_size) = loc.rsplit_once('+')?;
        let (off, size) = off_size.split_once('/')?;
        if symbol.is_empty() || symbol.len() > MAX_SYMBOL || !symbol.chars().all(is_symbol_char) {
            return None;
        }
        Some(Frame {
            symbol: symbol.to_string(),
            offset: hex(off)?,
            size: hex(size)?,
            module,
            unreliable,
        })
    }
}

/// What a symbol in a stack is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SymbolKind {
    /// A kernel function; the name without a compiler suffix (`.cold`, `.isra.0`, ...).
    Kernel {
        /// The function's name as written in the source.
        function: String,
        /// The suffix the compiler added, e.g. `.cold`, if any.
        clone_suffix: Option<String>,
    },
    /// A JITed BPF program: `bpf_prog_<tag>_<name>`.
    BpfProg {
        /// The program's tag (16 hex digits, a hash of its instructions).
        tag: String,
        /// The program's name (its function name when the object has BTF).
        name: String,
    },
    /// The struct_ops trampoline the kernel calls a sched_ext callback through:
    /// `bpf__sched_ext_ops_<op>`.
    StructOpsStub {
        /// The callback.
        op: String,
    },
}

/// Classifies a symbol name.
pub fn classify(symbol: &str) -> SymbolKind {
    if let Some(rest) = symbol.strip_prefix("bpf_prog_") {
        if let Some((tag, name)) = rest.split_once('_') {
            if tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()) && !name.is_empty() {
                return SymbolKind::BpfProg {
                    tag: tag.to_string(),
                    name: name.to_string(),
                };
            }
        }
    }
    if let Some(op) = symbol.strip_prefix("bpf__sched_ext_ops_") {
        if !op.is_empty() {
            return SymbolKind::StructOpsStub { op: op.to_string() };
        }
    }
    match symbol.find('.') {
        Some(dot) if dot > 0 => SymbolKind::Kernel {
            function: symbol[..dot].to_string(),
            clone_suffix: Some(symbol[dot..].to_string()),
        },
        _ => SymbolKind::Kernel {
            function: symbol.to_string(),
            clone_suffix: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_with_and_without_marks() {
        let f = Frame::parse("   bpf_prog_cb55bb7efa107ee2_ktstr_enqueue+0x101/0x147").unwrap();
        assert_eq!((f.offset, f.size, f.unreliable), (0x101, 0x147, false));
        let f = Frame::parse(" ? next_uptodate_folio+0xa5/0x2e0").unwrap();
        assert!(f.unreliable);
        assert_eq!(f.symbol, "next_uptodate_folio");
        let f = Frame::parse("bpf__sched_ext_ops_enqueue+0x0/0xad [bpf]").unwrap();
        assert_eq!(f.module.as_deref(), Some("bpf"));
        for bad in [
            "",
            "Backtrace:",
            "CPU states",
            "sym+0x1",
            "sym+1/2",
            "a b+0x1/0x2",
            "+0x1/0x2",
        ] {
            assert_eq!(Frame::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn symbols_classify() {
        assert_eq!(
            classify("bpf_prog_cb55bb7efa107ee2_ktstr_enqueue"),
            SymbolKind::BpfProg {
                tag: "cb55bb7efa107ee2".into(),
                name: "ktstr_enqueue".into()
            }
        );
        assert_eq!(
            classify("bpf__sched_ext_ops_init_task"),
            SymbolKind::StructOpsStub {
                op: "init_task".into()
            }
        );
        assert_eq!(
            classify("__handle_sysrq.cold"),
            SymbolKind::Kernel {
                function: "__handle_sysrq".into(),
                clone_suffix: Some(".cold".into())
            }
        );
        // Not a 16-digit tag: an ordinary kernel function of that name.
        assert!(matches!(
            classify("bpf_prog_free"),
            SymbolKind::Kernel { .. }
        ));
    }
}
