//! Collapses a verifier log from stdin to stdout and prints the summary on stderr:
//! `cargo run -p ktstr-verifier --example collapse < log`.

use std::io;

fn main() -> Result<(), ktstr_verifier::VerifierError> {
    let s = ktstr_verifier::collapse_to_writer(io::stdin().lock(), io::stdout().lock())?;
    eprintln!(
        "{} -> {} lines ({:.1}% kept), {} folds",
        s.lines_in,
        s.lines_out,
        100.0 * s.lines_out as f64 / s.lines_in.max(1) as f64,
        s.folds
    );
    Ok(())
}
