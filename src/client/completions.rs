//! `completions SHELL`: a completion script generated from the same command-line definition
//! the binary parses, so the two cannot drift apart.

/// Writes the completion script of `command` (the binary's whole command line) for `shell`
/// to standard output.
pub fn print(shell: clap_complete::Shell, mut command: clap::Command) -> std::io::Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "orchestrator", &mut out);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &out)
}
