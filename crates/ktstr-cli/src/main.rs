//! `ktstr`: boot kernels with a chosen topology and run things in them.

fn main() {
    // Packed into an initramfs, this binary is the guest's /init.
    if ktstr::guest::is_guest_init() {
        ktstr::guest::init_main();
    }
    std::process::exit(ktstr_cli::main_with_args(std::env::args_os().collect()));
}
