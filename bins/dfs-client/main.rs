//! `dfs-client`: every dfs operation from the command line, or an interactive shell.
//!
//! ```text
//! dfs-client [--servers A,B,C] [--json] <command>
//! dfs-client [--servers A,B,C] [--json]          # the shell: `->` prompt, same commands
//! ```
//!
//! A thin layer over the `dfs-client` library: [`cli`] parses (one clap definition serves
//! one-shot commands and shell lines), [`commands`] calls the library, [`output`] shapes
//! text and JSON, [`progress`] draws bars for long transfers, [`shell`] reads lines;
//! [`duration`] reads `--ttl` and `--wait` as `dfs-server` reads its durations.
//!
//! Exit status: 0 on success; 1 with one `error: MESSAGE` line on stderr when a command
//! fails; 2 for a usage error (clap's). Logs go to stderr, filtered by `RUST_LOG` (default
//! `warn`).

mod cli;
mod commands;
#[path = "../shared/duration.rs"]
mod duration;
mod mount;
mod output;
mod progress;
mod shell;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dfs::net::Tcp;
use dfs::net::tls::{Tls, TlsFiles};
use dfs_client::{Client, ClientConfig, token_from_env};
use tokio::runtime::Runtime;

use crate::cli::Cli;
use crate::commands::Session;

/// How long leftover background work (a connection closing) may delay the exit.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::from(e).context("cannot start the runtime")),
    };
    let result = run(&rt, cli);
    rt.shutdown_timeout(SHUTDOWN_WAIT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`dfs-client read f | head`): nothing to say.
        Err(e) if commands::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Connects, then runs the command or the shell.
fn run(rt: &Runtime, cli: Cli) -> anyhow::Result<()> {
    let servers = cli.servers();
    let mut config = ClientConfig::from_list(&servers);
    config.token = token_from_env(cli.token_file.as_deref())?;
    if let Some(ca) = &cli.tls_ca {
        config.transport = Tls::from_files(Tcp::shared(), &TlsFiles::client(ca))?.into_shared();
    }
    let client = rt.block_on(Client::with_config(config))?;
    tracing::debug!(%servers, client_id = client.client_id(), "connected");
    match cli.command {
        Some(cli::Command::Mount(args)) => mount::run(rt, client, &args),
        Some(command) => {
            let session = Session {
                client,
                in_shell: false,
            };
            rt.block_on(commands::execute(&session, command, cli.json))
        }
        None => {
            let session = Session {
                client,
                in_shell: true,
            };
            shell::run(rt, &session, cli.json, &servers)
        }
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", one_line(e));
    ExitCode::FAILURE
}

/// An error and its causes on one line, each cause once (a library error often repeats
/// its source's text in its own message).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace(['\r', '\n'], " ")
}

/// Logs to stderr, filtered by `RUST_LOG` (default `warn`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod test {
    use super::*;
    use dfs_client::ClientError;

    #[test]
    fn errors_fit_on_one_line() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::from(ClientError::Io(io));
        assert_eq!(one_line(&e), "local i/o error: no such file");

        let e = anyhow::Error::from(std::io::Error::other("disk full"))
            .context("cannot write to standard output");
        assert_eq!(one_line(&e), "cannot write to standard output: disk full");

        let e = anyhow::Error::from(ClientError::NotFound("no file named \"x\"".into()));
        assert_eq!(one_line(&e), "no file named \"x\"");

        let e = anyhow::anyhow!("first line\nsecond  line");
        assert_eq!(one_line(&e), "first line second  line");
    }

    #[test]
    fn name_errors_name_the_rule() {
        let err = dfs_proto::Name::parse("../x").expect_err("invalid");
        let e = anyhow::Error::from(ClientError::from(err));
        let line = one_line(&e);
        assert!(!line.is_empty() && !line.contains('\n'), "{line}");
    }
}
