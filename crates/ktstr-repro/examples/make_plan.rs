//! Prints the plan for failure text files as JSON, on a kernel's BTF:
//! `make_plan VMLINUX RELEASE [--kallsyms F] [--traceable F] [--kernel-only] FILES...`.
//! `--kernel-only` drops the BPF-callback probes (for `probe_run`, which attaches kprobes
//! and the trigger only).

use std::error::Error;

use ktstr_btf_monitor::{Btf, SymbolTable};
use ktstr_repro::plan::{parse_filter_functions, Target};
use ktstr_repro::{plan, Failure, KernelInfo};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let vmlinux = args.next().ok_or("VMLINUX")?;
    let release = args.next().ok_or("RELEASE")?;
    let (mut kallsyms, mut traceable, mut kernel_only, mut text) =
        (None, None, false, String::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kallsyms" => {
                kallsyms = Some(std::fs::read_to_string(args.next().ok_or("--kallsyms F")?)?)
            }
            "--traceable" => {
                traceable = Some(std::fs::read_to_string(
                    args.next().ok_or("--traceable F")?,
                )?)
            }
            "--kernel-only" => kernel_only = true,
            f => text += &std::fs::read_to_string(f)?,
        }
    }
    let btf = Btf::from_file(std::path::Path::new(&vmlinux))?;
    let syms = kallsyms.map(|k| SymbolTable::from_text(&k)).transpose()?;
    let traceable = traceable.map(|t| parse_filter_functions(&t));
    let k = KernelInfo {
        release: &release,
        btf: &btf,
        symbols: syms.as_ref(),
        traceable: traceable.as_ref(),
        no_kprobe: None,
    };
    let mut p = plan(&Failure::parse(&text)?, &k)?;
    if kernel_only {
        p.probes
            .retain(|x| matches!(x.target, Target::Kernel { .. }));
    }
    println!("{}", serde_json::to_string_pretty(&p)?);
    Ok(())
}
