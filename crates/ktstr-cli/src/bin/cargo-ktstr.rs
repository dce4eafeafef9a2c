//! `cargo ktstr`: the same commands as `ktstr`, reached through cargo.

fn main() {
    if ktstr::guest::is_guest_init() {
        ktstr::guest::init_main();
    }
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // cargo runs `cargo-ktstr ktstr ARGS...`.
    if args.get(1).is_some_and(|a| a == "ktstr") {
        args.remove(1);
    }
    std::process::exit(ktstr_cli::main_with_args(args));
}
