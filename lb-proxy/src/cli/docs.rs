//! `lb-proxy completions SHELL` and `lb-proxy man`: shell completions and
//! the man page, generated from the binary's own clap command, so a
//! packager ships files that always match the options of the binary they
//! come with (`lb-proxy completions bash > /usr/share/bash-completion/completions/lb-proxy`,
//! `lb-proxy man > /usr/share/man/man1/lb-proxy.1`).

use std::io::{self, Write};

/// The shells `lb-proxy completions` writes a script for: the three a Linux
/// package ships completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash-completion (`/usr/share/bash-completion/completions/lb-proxy`).
    Bash,
    /// zsh (`/usr/share/zsh/vendor-completions/_lb-proxy`).
    Zsh,
    /// fish (`/usr/share/fish/vendor_completions.d/lb-proxy.fish`).
    Fish,
}

impl From<Shell> for clap_complete::Shell {
    fn from(shell: Shell) -> Self {
        match shell {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Writes `shell`'s completion script for `command` (the binary's clap
/// command, named as the binary is) to `out`: subcommands and options (bash
/// and zsh also the values of value enums: `get services|endpoints|...`). The
/// script is made in memory first (clap_complete panics on a failed write),
/// so a closed pipe is an error, not a panic.
pub fn completions(
    shell: Shell,
    mut command: clap::Command,
    out: &mut dyn Write,
) -> io::Result<()> {
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut command,
        name,
        &mut script,
    );
    out.write_all(&script)
}

/// Writes the man page (roff, section 1) of `command` to `out`: name,
/// synopsis, description, options, the list of subcommands, the examples
/// and environment of the long help, and the version.
pub fn man(command: clap::Command, out: &mut dyn Write) -> io::Result<()> {
    clap_mangen::Man::new(command).render(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command shaped like the binary's: a global option, a subcommand with
    /// a positional argument.
    fn command() -> clap::Command {
        clap::Command::new("lb-proxy")
            .about("A load balancer.")
            .arg(clap::Arg::new("config").long("config").global(true))
            .subcommand(clap::Command::new("run").about("Run the proxy."))
            .subcommand(
                clap::Command::new("get")
                    .about("Print tables.")
                    .arg(clap::Arg::new("kind")),
            )
    }

    #[test]
    fn every_shell_completes_subcommands_and_options() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, command(), &mut out).expect("writes");
            let script = String::from_utf8(out).expect("utf-8");
            for word in ["lb-proxy", "get", "run", "config"] {
                assert!(script.contains(word), "{shell:?} lacks {word}:\n{script}");
            }
        }
    }

    #[test]
    fn the_man_page_is_roff_with_a_subcommands_section() {
        let mut out = Vec::new();
        man(command(), &mut out).expect("renders");
        let page = String::from_utf8(out).expect("utf-8");
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
        assert!(page.contains(".TH lb-proxy 1"), "{page}");
        assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
        assert!(page.contains("lb\\-proxy\\-get(1)"), "{page}");
    }
}
