//! The interactive shell: the seed's `->` prompt, the one-shot commands one per line.
//!
//! On a terminal, rustyline gives line editing and history (`$HOME/.dfs_history`). When
//! standard input is not a terminal (a script piped in), lines are read as they come, with
//! no prompt or banner, so the output holds only the commands' results.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tokio::runtime::Runtime;

use crate::cli::{SPLIT_ERROR, ShellCommand, ShellLine, split_line};
use crate::commands::{self, Session};

/// The prompt, as the seed printed it.
const PROMPT: &str = "-> ";

/// The history file, under `$HOME`.
const HISTORY_FILE: &str = ".dfs_history";

/// Runs the shell until `exit`, `quit` or the end of input. `json` applies to every line.
pub fn run(rt: &Runtime, session: &Session, json: bool, servers: &str) -> anyhow::Result<()> {
    let mut input = Input::open()?;
    if matches!(input, Input::Editor { .. }) {
        println!("connected to {servers}; type help or exit");
    }
    while let Some(line) = input.next_line()? {
        let line = match line {
            Ok(line) => line,
            Err(message) => {
                report(&message);
                continue;
            }
        };
        match handle_line(rt, session, json, &line) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Exit) => break,
            // Standard output is gone: nobody can see the rest.
            Err(e) if commands::is_broken_pipe(&e) => break,
            Err(e) => report(&crate::one_line(&e)),
        }
    }
    input.close();
    Ok(())
}

/// What the shell does after a line.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Exit,
}

/// Parses and runs one line. Usage errors and failed commands are printed here; the error
/// returned is one the shell reports the same way (or stops for, on a broken pipe).
fn handle_line(rt: &Runtime, session: &Session, json: bool, line: &str) -> anyhow::Result<Flow> {
    let parsed = match parse_line(line) {
        Parsed::Empty => return Ok(Flow::Continue),
        Parsed::Error(message) => {
            report(&message);
            return Ok(Flow::Continue);
        }
        Parsed::Clap(e) => {
            print_clap(&e)?;
            return Ok(Flow::Continue);
        }
        Parsed::Line(parsed) => parsed,
    };
    match parsed.command {
        ShellCommand::Exit => Ok(Flow::Exit),
        ShellCommand::Help { command } => {
            print_help(command.as_deref())?;
            Ok(Flow::Continue)
        }
        ShellCommand::Op(op) => {
            rt.block_on(commands::execute(session, op, json || parsed.json))?;
            Ok(Flow::Continue)
        }
    }
}

/// A line, understood.
#[derive(Debug)]
enum Parsed {
    /// Blank or a comment.
    Empty,
    /// The line cannot be split into words.
    Error(String),
    /// clap refused it (or it asked for `--help`).
    Clap(clap::Error),
    Line(ShellLine),
}

fn parse_line(line: &str) -> Parsed {
    let Some(words) = split_line(line) else {
        return Parsed::Error(SPLIT_ERROR.to_owned());
    };
    if words.is_empty() {
        return Parsed::Empty;
    }
    match ShellLine::try_parse_from(words) {
        Ok(parsed) => Parsed::Line(parsed),
        Err(e) => Parsed::Clap(e),
    }
}

/// `help` lists the commands; `help CMD` shows one command's arguments.
fn print_help(command: Option<&str>) -> anyhow::Result<()> {
    match command {
        None => {
            let help = ShellLine::command().render_help().to_string();
            write_out(&help)
        }
        Some(name) => match ShellLine::try_parse_from([name, "--help"]) {
            Err(e) => print_clap(&e),
            Ok(_) => write_out(&format!("{name}: no further help\n")),
        },
    }
}

/// Prints clap's answer to a line: help goes to stdout, an error to stderr (see
/// [`shell_error_text`]).
fn print_clap(e: &clap::Error) -> anyhow::Result<()> {
    if e.use_stderr() {
        let text = shell_error_text(e);
        let _ = writeln!(io::stderr().lock(), "{text}");
        Ok(())
    } else {
        write_out(&e.render().to_string())
    }
}

/// A usage error as the shell shows it: clap's message and the command's usage, without
/// blank lines, the shell's own usage line, or the hint about `--help` (the shell spells it
/// `help`).
fn shell_error_text(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !l.starts_with("For more information")
                && !l.starts_with("Usage: dfs ")
        })
        .collect();
    if e.kind() == clap::error::ErrorKind::InvalidSubcommand {
        lines.push("(type help for the commands)");
    }
    lines.join("\n")
}

fn write_out(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        })
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}

/// Prints `error: MESSAGE` on stderr.
fn report(message: &str) {
    let _ = writeln!(io::stderr().lock(), "error: {message}");
}

/// Where lines come from.
enum Input {
    /// A terminal: line editing and history.
    Editor {
        editor: Box<DefaultEditor>,
        history: Option<PathBuf>,
    },
    /// Anything else: plain lines.
    Lines(io::StdinLock<'static>),
}

impl Input {
    fn open() -> anyhow::Result<Input> {
        if !io::stdin().is_terminal() {
            return Ok(Input::Lines(io::stdin().lock()));
        }
        let mut editor = DefaultEditor::new().context("cannot set up line editing")?;
        let history = history_path();
        if let Some(path) = &history {
            // A first run has no history yet; anything else is only worth a log line.
            if let Err(e) = editor.load_history(path)
                && path.exists()
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot load the history");
            }
        }
        Ok(Input::Editor {
            editor: Box::new(editor),
            history,
        })
    }

    /// The next line (`Err` holds a line that cannot be used), or `None` at the end.
    fn next_line(&mut self) -> anyhow::Result<Option<Result<String, String>>> {
        match self {
            Input::Editor { editor, history } => loop {
                match editor.readline(PROMPT) {
                    Ok(line) => {
                        if !line.trim().is_empty() {
                            let _ = editor.add_history_entry(line.as_str());
                            // Saved as we go: a transfer may end the shell with Ctrl-C.
                            if let Some(path) = history {
                                let _ = editor.save_history(path);
                            }
                        }
                        return Ok(Some(Ok(line)));
                    }
                    // Ctrl-C drops the line being typed, as in a shell.
                    Err(ReadlineError::Interrupted) => continue,
                    Err(ReadlineError::Eof) => return Ok(None),
                    Err(e) => return Err(e).context("cannot read a line"),
                }
            },
            Input::Lines(stdin) => {
                let mut buf = Vec::new();
                let n = stdin
                    .read_until(b'\n', &mut buf)
                    .context("cannot read standard input")?;
                if n == 0 {
                    return Ok(None);
                }
                Ok(Some(
                    String::from_utf8(buf).map_err(|_| "the line is not valid UTF-8".to_owned()),
                ))
            }
        }
    }

    /// Saves the history.
    fn close(self) {
        if let Input::Editor {
            mut editor,
            history: Some(path),
        } = self
            && let Err(e) = editor.save_history(&path)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the history");
        }
    }
}

/// `$HOME/.dfs_history`, or nothing without a home.
fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(HISTORY_FILE))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::cli::Command;

    fn parsed(line: &str) -> Parsed {
        parse_line(line)
    }

    #[test]
    fn blank_and_comment_lines_do_nothing() {
        for line in [
            "",
            "   ",
            "\n",
            "\r\n",
            "# a comment",
            "   # indented comment",
        ] {
            assert!(matches!(parsed(line), Parsed::Empty), "{line:?}");
        }
    }

    #[test]
    fn unbalanced_quotes_are_an_error() {
        assert!(matches!(parsed("write f \"oops"), Parsed::Error(_)));
    }

    #[test]
    fn the_seed_session_parses() {
        let script = "create test_synchronization.txt\n\
                      write test_synchronization.txt --random 40\n\
                      read test_synchronization.txt\n\
                      delete test_synchronization.txt\n\
                      write file1 --random 5\n\
                      table\n\
                      exit\n";
        let commands: Vec<ShellCommand> = script
            .lines()
            .map(|l| match parsed(l) {
                Parsed::Line(p) => p.command,
                other => panic!("{l:?}: {other:?}"),
            })
            .collect();
        assert_eq!(commands.len(), 7);
        assert!(matches!(
            commands[1],
            ShellCommand::Op(Command::Write(ref w)) if w.random == Some(40)
        ));
        assert_eq!(commands[5], ShellCommand::Op(Command::Table));
        assert_eq!(commands[6], ShellCommand::Exit);
    }

    #[test]
    fn usage_errors_and_help_come_from_clap() {
        match parsed("write") {
            Parsed::Clap(e) => assert!(e.use_stderr()),
            other => panic!("{other:?}"),
        }
        // (Not a word near a command: clap would suggest it, as it does `truncate` for
        // `frobnicate`.)
        match parsed("xyzzy") {
            Parsed::Clap(e) => assert_eq!(
                shell_error_text(&e),
                "error: unrecognized subcommand 'xyzzy'\n(type help for the commands)"
            ),
            other => panic!("{other:?}"),
        }
        match parsed("write f") {
            Parsed::Clap(e) => assert_eq!(
                shell_error_text(&e),
                "error: the following required arguments were not provided:\n  <TEXT>\n\
                 Usage: write <NAME> <TEXT>"
            ),
            other => panic!("{other:?}"),
        }
        match parsed("stat --help") {
            Parsed::Clap(e) => assert!(!e.use_stderr()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn history_lives_in_home() {
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            assert_eq!(
                history_path(),
                Some(PathBuf::from(home).join(".dfs_history"))
            );
        }
    }
}
