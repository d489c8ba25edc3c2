//! `plantwatch generate`: the man pages and shell completions, made from the very clap command
//! that parses the real command line, so they cannot list a flag the binary does not take or
//! miss one it does. Hidden from `--help` and the man pages: packaging/build-deb.sh runs it
//! before `cargo deb`, which ships what it writes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Command;
use clap_complete::Shell;

/// Arguments of `generate`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(subcommand)]
    what: What,
}

/// What to generate.
#[derive(Debug, clap::Subcommand)]
enum What {
    /// One man page per command and subcommand (plantwatch.1, plantwatch-check.1,
    /// plantwatch-alarms-list.1, ...), each with the exit statuses.
    Man {
        /// The directory to write them in; created if missing, existing pages replaced.
        dir: PathBuf,
    },
    /// Completions for bash (plantwatch.bash), zsh (_plantwatch) and fish (plantwatch.fish).
    Completions {
        /// The directory to write them in; created if missing, existing files replaced.
        dir: PathBuf,
    },
}

/// Writes what `args` asks for, from `cmd` (the CLI's own `Cli::command()`).
pub(super) fn run(args: &Args, cmd: Command) -> anyhow::Result<ExitCode> {
    let (dir, written) = match &args.what {
        What::Man { dir } => (dir, man_pages(cmd, dir)?),
        What::Completions { dir } => (dir, completions(cmd, dir)?),
    };
    out!("{} files written to {}", written.len(), dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes a page for `cmd` and for every subcommand it shows, at any depth; returns the paths.
fn man_pages(cmd: Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let statuses = exit_statuses(&cmd)?;
    create_dir(dir)?;
    // Built, so that each subcommand knows its full name (`plantwatch alarms list`) and carries
    // the global flags (`--config`), as it does when it parses. No `help` subcommand: `--help`
    // is the documented way, and a page for `plantwatch help` says nothing.
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    let mut pending = vec![cmd];
    // Bounded by the command tree: each command is taken once.
    while let Some(cmd) = pending.pop() {
        pending.extend(
            cmd.get_subcommands()
                .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
                .cloned(),
        );
        let name = cmd
            .get_display_name()
            .unwrap_or_else(|| cmd.get_name())
            .to_owned();
        let path = dir.join(format!("{name}.1"));
        let page = render_page(cmd, &statuses)
            .with_context(|| format!("rendering the man page {}", path.display()))?;
        std::fs::write(&path, page)
            .with_context(|| format!("writing {}", path.display()))
            .map_err(super::io_failed)?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

/// One page: clap_mangen's, with EXIT STATUS put before VERSION and AUTHORS, where
/// man-pages(7) orders it.
fn render_page(cmd: Command, statuses: &[(u8, String)]) -> anyhow::Result<String> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    let page = String::from_utf8(page)?;
    let at = ["\n.SH VERSION", "\n.SH AUTHORS"]
        .iter()
        .filter_map(|heading| page.find(heading).map(|i| i + 1))
        .min()
        .unwrap_or(page.len());
    let (head, tail) = page.split_at(at);
    Ok(format!("{head}{}{tail}", exit_status_section(statuses)))
}

/// The `EXIT STATUS` section in roff: one tagged paragraph per status.
fn exit_status_section(statuses: &[(u8, String)]) -> String {
    let mut roff = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in statuses {
        roff.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", roff_text(meaning)));
    }
    roff
}

/// `text` as one roff text line: a backslash is printed, not an escape, and a leading `.` or
/// `'` is not taken for a request.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// The exit statuses as the top-level `--help` lists them under `Exit status:`, so that the
/// man pages and `--help` have one source.
fn exit_statuses(cmd: &Command) -> anyhow::Result<Vec<(u8, String)>> {
    let help = cmd
        .get_after_help()
        .map(ToString::to_string)
        .unwrap_or_default();
    let statuses: Vec<(u8, String)> = help
        .lines()
        .skip_while(|line| line.trim() != "Exit status:")
        .skip(1)
        .map_while(|line| {
            let (code, meaning) = line.trim().split_once(char::is_whitespace)?;
            Some((code.parse().ok()?, meaning.trim().to_owned()))
        })
        .collect();
    anyhow::ensure!(
        !statuses.is_empty(),
        "`plantwatch --help` has no `Exit status:` table to put in the man pages"
    );
    Ok(statuses)
}

/// Writes the bash, zsh and fish completions; returns their paths. (The completions still offer
/// the hidden `generate`: clap_complete 4.6 leaves hidden subcommands in.)
fn completions(mut cmd: Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    create_dir(dir)?;
    let name = cmd.get_name().to_owned();
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| {
            clap_complete::generate_to(shell, &mut cmd, &name, dir)
                .with_context(|| format!("writing the {shell} completions in {}", dir.display()))
                .map_err(super::io_failed)
        })
        .collect()
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating {}", dir.display()))
        .map_err(super::io_failed)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;
    use crate::cli::{Cli, EX_CONFIG, EX_DATAERR, EX_IOERR, EX_UNAVAILABLE, EX_USAGE};

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_help_lists_every_exit_status_the_code_returns() {
        let codes: Vec<u8> = exit_statuses(&Cli::command())
            .unwrap()
            .into_iter()
            .map(|(code, _)| code)
            .collect();
        assert_eq!(
            codes,
            [
                0,
                1,
                EX_USAGE,
                EX_DATAERR,
                EX_UNAVAILABLE,
                EX_IOERR,
                EX_CONFIG
            ]
        );
    }

    #[test]
    fn a_man_page_per_visible_command_each_with_the_exit_statuses() {
        let dir = tempfile::tempdir().unwrap();
        let written = man_pages(Cli::command(), dir.path()).unwrap();
        let names = names(&written);
        let visible = Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .count();
        for expected in [
            "plantwatch.1",
            "plantwatch-check.1",
            "plantwatch-run.1",
            "plantwatch-backup.1",
            "plantwatch-alarms-list.1",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(names.len() > visible, "nested pages too: {names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n.contains("generate") || n.contains("help"))
        );

        let check = std::fs::read_to_string(dir.path().join("plantwatch-check.1")).unwrap();
        // The global flag, under its full command name, as `plantwatch check --help` shows it.
        assert!(check.contains("plantwatch check"), "{check}");
        assert!(check.contains("config"), "{check}");
        for page in &written {
            let text = std::fs::read_to_string(page).unwrap();
            let section = text.split(".SH \"EXIT STATUS\"").nth(1).unwrap_or_else(|| {
                panic!("{} has no EXIT STATUS", page.display());
            });
            for code in ["0", "1", "2", "65", "69", "74", "78"] {
                assert!(
                    section.contains(&format!("\\fB{code}\\fR\n")),
                    "{} lacks exit status {code}",
                    page.display()
                );
            }
        }
    }

    #[test]
    fn completions_for_bash_zsh_and_fish_know_the_subcommands_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let written = completions(Cli::command(), dir.path()).unwrap();
        assert_eq!(
            names(&written),
            ["plantwatch.bash", "_plantwatch", "plantwatch.fish"]
        );
        for file in &written {
            let text = std::fs::read_to_string(file).unwrap();
            for word in ["backup", "config", "log-format", "alarms"] {
                assert!(text.contains(word), "{} lacks {word}", file.display());
            }
        }
    }

    #[test]
    fn roff_text_keeps_backslashes_and_leading_dots_literal() {
        assert_eq!(roff_text(r"C:\state"), r"C:\estate");
        assert_eq!(roff_text(".hidden"), r"\&.hidden");
        assert_eq!(roff_text("plain"), "plain");
    }
}
