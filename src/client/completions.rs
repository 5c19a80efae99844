//! `completions SHELL`: a completion script generated from the same command-line definition
//! the binary parses, so the two cannot drift apart.

use clap::CommandFactory;

/// Writes the completion script for `shell` to standard output.
pub fn print(shell: clap_complete::Shell) -> std::io::Result<()> {
    let mut command = crate::cli::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "orchestrator", &mut out);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &out)
}
