//! The command line: one clap definition serves the one-shot commands and the shell's lines.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dfs_client::{Condition, LockMode};

use crate::duration::parse_duration;

/// The most random letters `write NAME --random N` makes: they are built in memory and printed.
pub const RANDOM_LETTERS_MAX: u64 = 16 << 20;

/// `dfs-client [--servers A,B,C] [--json] [COMMAND]`.
#[derive(Debug, Parser)]
#[command(
    name = "dfs-client",
    version,
    about = "Use a dfs cluster: one command, or an interactive shell when none is given",
    after_help = "Without a command, dfs-client opens a shell (prompt `->`) that takes the same \
                  commands, one per line, until `exit`."
)]
pub struct Cli {
    /// The nodes to use, as a comma-separated list of host:port [default: $DFS_SERVERS, else
    /// 127.0.0.1:6000,127.0.0.1:7000,127.0.0.1:8000].
    #[arg(long, short = 's', value_name = "A,B,C")]
    pub servers: Option<String>,

    /// Print results as JSON (one value per command, on one line).
    #[arg(long, global = true)]
    pub json: bool,

    /// A file holding the access token to present, for a cluster that requires one
    /// [default: $DFS_TOKEN].
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Connect with TLS, trusting the certificate authority in this PEM file.
    #[arg(long, global = true, env = "DFS_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// What to do; without one, an interactive shell starts.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The servers to use: `--servers`, else a non-empty `$DFS_SERVERS`, else the default.
    pub fn servers(&self) -> String {
        resolve_servers(self.servers.as_deref(), std::env::var("DFS_SERVERS").ok())
    }
}

fn resolve_servers(flag: Option<&str>, env: Option<String>) -> String {
    match (flag, env) {
        (Some(list), _) => list.to_owned(),
        (None, Some(list)) if !list.trim().is_empty() => list,
        _ => dfs_client::DEFAULT_SERVERS.to_owned(),
    }
}

/// Every operation, the same in one-shot use and in the shell.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Create an empty file (fails if it exists).
    Create {
        /// The file's name.
        name: String,
    },
    /// Append TEXT to a file (creating it if missing), or N random letters with --random;
    /// with --offset N, write the bytes of a local FILE (or standard input) at byte N of an
    /// existing file instead (overwriting, extending; a gap past the end becomes zeros).
    Write(WriteArgs),
    /// Replace a file's content with a local file, or with standard input.
    Put {
        /// The file's name.
        name: String,
        /// The local file to upload; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        /// Only if these hold.
        #[command(flatten)]
        cond: CondArgs,
    },
    /// Print a file's bytes (all of them by default) to standard output, as they are.
    #[command(alias = "cat")]
    Read {
        /// The file's name.
        name: String,
        /// The first byte to read.
        #[arg(long, default_value_t = 0, value_name = "N")]
        offset: u64,
        /// How many bytes to read (to the end of the file by default).
        #[arg(long, value_name = "N")]
        len: Option<u64>,
    },
    /// Download a file into a local file (written beside it, then renamed into place).
    Get {
        /// The file's name.
        name: String,
        /// The local file to write (an existing directory gets the name's last segment).
        file: PathBuf,
    },
    /// Delete a file from every replica and from the table.
    #[command(alias = "rm")]
    Delete {
        /// The file's name.
        name: String,
        /// Only if these hold.
        #[command(flatten)]
        cond: CondArgs,
    },
    /// List files (those whose name starts with PREFIX) with size and version.
    #[command(alias = "list")]
    Ls {
        /// Only names starting with this.
        prefix: Option<String>,
    },
    /// Show a file's size, version, replicas, checksum and modification time.
    Stat {
        /// The file's name.
        name: String,
    },
    /// Show the placement table: every file, the nodes holding it and how many of its R
    /// replicas it has (`1/2  under-replicated` for one short of a replica).
    Table,
    /// Show every node (address, up or down and for how long, role), the cluster map's
    /// leader and term, and how many files are short of replicas.
    Status,
    /// Check every copy on every node against its checksum now; damaged copies are replaced
    /// by good ones from other replicas. Prints what each node found.
    Scrub,
    /// Take a lock lease on NAME and print its lease id and fencing token. The lease lapses
    /// after --ttl unless renewed; pass the token to writes with --fence.
    Lock(LockArgs),
    /// Renew a lease: it lasts its ttl again from now (fails once it has lapsed).
    Renew {
        /// The lease id `lock` printed.
        lease: u64,
    },
    /// Release a lease (fails once it has lapsed).
    Unlock {
        /// The lease id `lock` printed.
        lease: u64,
    },
    /// Set an existing file's size: cut the end off, or extend it with zeros.
    Truncate {
        /// The file's name.
        name: String,
        /// The new size in bytes.
        size: u64,
        /// Only if these hold.
        #[command(flatten)]
        cond: CondArgs,
    },
    /// Mount the cluster's files on DIR (FUSE) and serve them until Ctrl-C or SIGTERM.
    Mount(crate::mount::MountArgs),
}

/// `write NAME TEXT` or `write NAME --random N`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct WriteArgs {
    /// The file's name.
    pub name: String,
    /// The text to append; with --offset, the local FILE whose bytes to write (`-` or
    /// nothing: standard input).
    #[arg(
        required_unless_present_any = ["random", "offset"],
        conflicts_with = "random"
    )]
    pub text: Option<String>,
    /// Append N random lowercase letters instead, and print them (the seed's test mode).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=RANDOM_LETTERS_MAX))]
    pub random: Option<u64>,
    /// Write at byte N of an existing file instead of appending (at most 4 MiB, applied
    /// whole); the data comes from FILE or standard input.
    #[arg(long, value_name = "N", conflicts_with = "random")]
    pub offset: Option<u64>,
    /// Only if these hold.
    #[command(flatten)]
    pub cond: CondArgs,
}

/// `--fence TOKEN` and `--if-version V` of `write`, `put` and `delete`: what the file's
/// primary requires before it changes anything (nothing is changed when they do not hold).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Args)]
#[command(next_help_heading = "Conditions")]
pub struct CondArgs {
    /// Only while the lock whose fencing token (from `lock`) is TOKEN has not been granted
    /// to anyone else since.
    #[arg(long, value_name = "TOKEN")]
    pub fence: Option<u64>,
    /// Only if the file is at version V (as `stat` shows it); 0: only if it does not exist
    /// (or was created and never written).
    #[arg(long, value_name = "V")]
    pub if_version: Option<u64>,
}

impl CondArgs {
    /// The library's condition for these flags.
    pub fn condition(self) -> Condition {
        let mut cond = Condition::NONE;
        if let Some(token) = self.fence {
            cond = cond.with_fence(token);
        }
        if let Some(version) = self.if_version {
            cond = cond.with_version(version);
        }
        cond
    }
}

/// `lock NAME [--shared] [--ttl D] [--wait D]`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LockArgs {
    /// The name to lock (a file's name; the file need not exist).
    pub name: String,
    /// Share the lock with other shared holders (exclusive by default).
    #[arg(long)]
    pub shared: bool,
    /// How long the lease lasts unless renewed: a number with a unit (`500ms`, `10s`, `2m`,
    /// `1h`; a bare number is seconds).
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// How long to wait while others hold the lock, as for --ttl (0s: fail at once).
    #[arg(long, value_name = "D", default_value = "0s", value_parser = parse_duration)]
    pub wait: Duration,
}

impl LockArgs {
    /// Shared or exclusive.
    pub fn mode(&self) -> LockMode {
        if self.shared {
            LockMode::Shared
        } else {
            LockMode::Exclusive
        }
    }
}

/// One line typed into the shell.
#[derive(Debug, Parser)]
#[command(
    name = "dfs",
    no_binary_name = true,
    disable_help_subcommand = true,
    disable_version_flag = true,
    help_template = "Commands:\n{subcommands}\n\nOptions (on any line):\n{options}\n\n\
                     Quote arguments with spaces: write notes.txt \"hello world\""
)]
pub struct ShellLine {
    /// Print this command's result as JSON.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: ShellCommand,
}

/// What a shell line can ask for: an operation, or one of the shell's own commands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ShellCommand {
    /// An operation.
    #[command(flatten)]
    Op(Command),
    /// Leave the shell (also `quit`, or Ctrl-D).
    #[command(alias = "quit")]
    Exit,
    /// Show the commands, or one command's arguments.
    Help {
        /// The command to explain.
        command: Option<String>,
    },
}

/// Why a shell line could not be split into words.
pub const SPLIT_ERROR: &str = "unbalanced quotes or a trailing backslash";

/// Splits a shell line into words the way a POSIX shell would (quotes, backslashes, `#`
/// comments); `None` when quotes are unbalanced.
pub fn split_line(line: &str) -> Option<Vec<String>> {
    shlex::split(line.trim_end_matches(['\r', '\n']))
}

#[cfg(test)]
mod test {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn one_shot(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("dfs-client").chain(args.iter().copied()))
    }

    fn op(args: &[&str]) -> Command {
        match one_shot(args) {
            Ok(Cli {
                command: Some(c), ..
            }) => c,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    fn shell(line: &str) -> Result<ShellLine, clap::Error> {
        let words = split_line(line).expect("balanced quotes");
        ShellLine::try_parse_from(words)
    }

    fn shell_op(line: &str) -> (Command, bool) {
        match shell(line) {
            Ok(ShellLine {
                command: ShellCommand::Op(c),
                json,
            }) => (c, json),
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    fn name(s: &str) -> String {
        s.to_owned()
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
        ShellLine::command().debug_assert();
    }

    #[test]
    fn split_handles_quotes_escapes_and_comments() {
        let check = |line: &str, want: Option<&[&str]>| {
            let got = split_line(line);
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{line:?}");
        };
        check("write a b", Some(&["write", "a", "b"]));
        check("  write   a\tb  ", Some(&["write", "a", "b"]));
        check(
            "write a \"hello world\"",
            Some(&["write", "a", "hello world"]),
        );
        check("write a 'it''s'", Some(&["write", "a", "its"]));
        check(
            "write a \"say \\\"hi\\\"\"",
            Some(&["write", "a", "say \"hi\""]),
        );
        check(
            "write a hello\\ world",
            Some(&["write", "a", "hello world"]),
        );
        check("write a ''", Some(&["write", "a", ""]));
        check("ls\r\n", Some(&["ls"]));
        check("", Some(&[]));
        check("   ", Some(&[]));
        check("# just a comment", Some(&[]));
        check("ls # the rest", Some(&["ls"]));
        check("write a \"open", None);
        check("write a 'open", None);
        check("write a trailing\\", None);
    }

    #[test]
    fn one_shot_commands_parse() {
        assert_eq!(
            op(&["create", "a/b.txt"]),
            Command::Create {
                name: name("a/b.txt")
            }
        );
        assert_eq!(
            op(&["write", "f", "hello world"]),
            Command::Write(WriteArgs {
                name: name("f"),
                text: Some(name("hello world")),
                random: None,
                offset: None,
                cond: CondArgs::default()
            })
        );
        assert_eq!(
            op(&["write", "f", "--offset", "7", "local.bin"]),
            Command::Write(WriteArgs {
                name: name("f"),
                text: Some(name("local.bin")),
                random: None,
                offset: Some(7),
                cond: CondArgs::default()
            })
        );
        assert!(matches!(
            op(&["write", "f", "--offset", "7"]),
            Command::Write(WriteArgs {
                text: None,
                offset: Some(7),
                ..
            })
        ));
        assert_eq!(
            op(&["truncate", "f", "12", "--fence", "3"]),
            Command::Truncate {
                name: name("f"),
                size: 12,
                cond: CondArgs {
                    fence: Some(3),
                    if_version: None
                }
            }
        );
        assert_eq!(
            op(&["write", "f", "--random", "40"]),
            Command::Write(WriteArgs {
                name: name("f"),
                text: None,
                random: Some(40),
                offset: None,
                cond: CondArgs::default()
            })
        );
        assert_eq!(
            op(&["write", "f", "--", "--not-a-flag"]),
            Command::Write(WriteArgs {
                name: name("f"),
                text: Some(name("--not-a-flag")),
                random: None,
                offset: None,
                cond: CondArgs::default()
            })
        );
        assert_eq!(
            op(&["put", "f"]),
            Command::Put {
                name: name("f"),
                file: None,
                cond: CondArgs::default()
            }
        );
        assert_eq!(
            op(&["put", "f", "-"]),
            Command::Put {
                name: name("f"),
                file: Some(PathBuf::from("-")),
                cond: CondArgs::default()
            }
        );
        assert_eq!(
            op(&["put", "f", "local.bin"]),
            Command::Put {
                name: name("f"),
                file: Some(PathBuf::from("local.bin")),
                cond: CondArgs::default()
            }
        );
        assert_eq!(
            op(&["read", "f"]),
            Command::Read {
                name: name("f"),
                offset: 0,
                len: None
            }
        );
        assert_eq!(
            op(&["read", "f", "--offset", "5", "--len", "10"]),
            Command::Read {
                name: name("f"),
                offset: 5,
                len: Some(10)
            }
        );
        assert_eq!(
            op(&["read", "--len=3", "f"]),
            Command::Read {
                name: name("f"),
                offset: 0,
                len: Some(3)
            }
        );
        assert_eq!(
            op(&["get", "f", "out.bin"]),
            Command::Get {
                name: name("f"),
                file: PathBuf::from("out.bin")
            }
        );
        assert_eq!(
            op(&["delete", "f"]),
            Command::Delete {
                name: name("f"),
                cond: CondArgs::default()
            }
        );
        assert_eq!(
            op(&["rm", "f"]),
            Command::Delete {
                name: name("f"),
                cond: CondArgs::default()
            }
        );
        assert_eq!(op(&["ls"]), Command::Ls { prefix: None });
        assert_eq!(
            op(&["ls", "logs/"]),
            Command::Ls {
                prefix: Some(name("logs/"))
            }
        );
        assert_eq!(op(&["stat", "f"]), Command::Stat { name: name("f") });
        assert_eq!(op(&["table"]), Command::Table);
        assert_eq!(op(&["scrub"]), Command::Scrub);
        assert_eq!(op(&["status"]), Command::Status);
    }

    #[test]
    fn lock_commands_parse() {
        let lock = |name: &str, shared, ttl_ms, wait_ms| {
            Command::Lock(LockArgs {
                name: name.to_owned(),
                shared,
                ttl: Duration::from_millis(ttl_ms),
                wait: Duration::from_millis(wait_ms),
            })
        };
        assert_eq!(op(&["lock", "f"]), lock("f", false, 10_000, 0));
        assert_eq!(
            op(&["lock", "f", "--shared", "--ttl", "500ms", "--wait", "2m"]),
            lock("f", true, 500, 120_000)
        );
        assert_eq!(
            op(&["lock", "--wait=5", "f"]),
            lock("f", false, 10_000, 5000)
        );
        match op(&["lock", "f", "--shared"]) {
            Command::Lock(args) => assert_eq!(args.mode(), LockMode::Shared),
            other => panic!("{other:?}"),
        }
        match op(&["lock", "f"]) {
            Command::Lock(args) => assert_eq!(args.mode(), LockMode::Exclusive),
            other => panic!("{other:?}"),
        }
        assert_eq!(op(&["renew", "17"]), Command::Renew { lease: 17 });
        assert_eq!(op(&["unlock", "17"]), Command::Unlock { lease: 17 });
    }

    #[test]
    fn conditions_parse() {
        let cond = |fence, if_version| CondArgs { fence, if_version };
        assert_eq!(
            op(&["write", "f", "x", "--fence", "42"]),
            Command::Write(WriteArgs {
                name: name("f"),
                text: Some(name("x")),
                random: None,
                offset: None,
                cond: cond(Some(42), None),
            })
        );
        assert_eq!(
            op(&["put", "f", "-", "--if-version", "0", "--fence", "7"]),
            Command::Put {
                name: name("f"),
                file: Some(PathBuf::from("-")),
                cond: cond(Some(7), Some(0)),
            }
        );
        assert_eq!(
            op(&["delete", "f", "--if-version", "3"]),
            Command::Delete {
                name: name("f"),
                cond: cond(None, Some(3)),
            }
        );
        assert_eq!(CondArgs::default().condition(), Condition::NONE);
        assert_eq!(cond(Some(9), None).condition(), Condition::fenced(9));
        assert_eq!(cond(None, Some(0)).condition(), Condition::if_version(0));
        assert_eq!(
            cond(Some(9), Some(4)).condition(),
            Condition::fenced(9).with_version(4)
        );
    }

    #[test]
    fn global_flags_parse() {
        let cli = one_shot(&["--servers", "h1:1,h2:2", "--json", "stat", "f"]).expect("parses");
        assert_eq!(cli.servers.as_deref(), Some("h1:1,h2:2"));
        assert!(cli.json);
        let cli = one_shot(&["stat", "f", "--json"]).expect("parses");
        assert!(cli.json, "--json after the command counts too");
        let cli = one_shot(&["-s", "h:1"]).expect("parses");
        assert_eq!(cli.servers.as_deref(), Some("h:1"));
        assert_eq!(cli.command, None, "no command means the shell");
        assert!(!cli.json);
    }

    #[test]
    fn servers_default() {
        assert_eq!(one_shot(&[]).expect("parses").servers, None);
        let default = dfs_client::DEFAULT_SERVERS;
        assert_eq!(resolve_servers(None, None), default);
        assert_eq!(resolve_servers(None, Some(String::new())), default);
        assert_eq!(resolve_servers(None, Some(" ".into())), default);
        assert_eq!(resolve_servers(None, Some("e:1".into())), "e:1");
        assert_eq!(resolve_servers(Some("f:1"), Some("e:1".into())), "f:1");
        assert_eq!(
            resolve_servers(Some(""), None),
            "",
            "an explicit empty list is refused later"
        );
    }

    #[test]
    fn one_shot_usage_errors() {
        let kind = |args: &[&str]| {
            one_shot(args)
                .map(|c| c.command)
                .expect_err("must fail")
                .kind()
        };
        assert_eq!(kind(&["create"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["write", "f"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["write", "f", "x", "--random", "3"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["write", "f", "--random", "x"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["write", "f", "--random", "-1"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            kind(&["write", "f", "--random", "99999999999"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["read", "f", "--offset", "x"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(kind(&["get", "f"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["lock"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            kind(&["lock", "f", "--ttl", "10 days"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["lock", "f", "--wait", "1.5s"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(kind(&["renew"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["unlock", "x"]), ErrorKind::ValueValidation);
        assert_eq!(
            kind(&["put", "f", "--fence", "-1"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            kind(&["delete", "f", "--if-version", "v2"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(kind(&["stat", "a", "b"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["frobnicate"]), ErrorKind::InvalidSubcommand);
        assert_eq!(kind(&["exit"]), ErrorKind::InvalidSubcommand, "shell-only");
        // clap exits with 2 for usage errors.
        assert_eq!(
            one_shot(&["create"])
                .map(|_| ())
                .expect_err("fails")
                .exit_code(),
            2
        );
    }

    #[test]
    fn shell_lines_parse() {
        let seed = [
            (
                "create test_synchronization.txt",
                Command::Create {
                    name: name("test_synchronization.txt"),
                },
            ),
            (
                "write test_synchronization.txt --random 40",
                Command::Write(WriteArgs {
                    name: name("test_synchronization.txt"),
                    text: None,
                    random: Some(40),
                    offset: None,
                    cond: CondArgs::default(),
                }),
            ),
            (
                "read test_synchronization.txt",
                Command::Read {
                    name: name("test_synchronization.txt"),
                    offset: 0,
                    len: None,
                },
            ),
            (
                "delete test_synchronization.txt",
                Command::Delete {
                    name: name("test_synchronization.txt"),
                    cond: CondArgs::default(),
                },
            ),
            (
                "write file1 --random 5",
                Command::Write(WriteArgs {
                    name: name("file1"),
                    text: None,
                    random: Some(5),
                    offset: None,
                    cond: CondArgs::default(),
                }),
            ),
            ("table", Command::Table),
        ];
        for (line, want) in seed {
            assert_eq!(shell_op(line), (want, false), "{line}");
        }
        assert_eq!(
            shell_op("write \"my notes/a b.txt\" 'hello world'"),
            (
                Command::Write(WriteArgs {
                    name: name("my notes/a b.txt"),
                    text: Some(name("hello world")),
                    random: None,
                    offset: None,
                    cond: CondArgs::default()
                }),
                false
            )
        );
        assert_eq!(
            shell_op("put f local.bin").0,
            Command::Put {
                name: name("f"),
                file: Some(PathBuf::from("local.bin")),
                cond: CondArgs::default()
            }
        );
        assert_eq!(
            shell_op("read f --offset 1 --len 2").0,
            Command::Read {
                name: name("f"),
                offset: 1,
                len: Some(2)
            }
        );
        assert_eq!(
            shell_op("get f out").0,
            Command::Get {
                name: name("f"),
                file: PathBuf::from("out")
            }
        );
        assert_eq!(shell_op("ls"), (Command::Ls { prefix: None }, false));
        assert_eq!(shell_op("ls --json"), (Command::Ls { prefix: None }, true));
        assert_eq!(
            shell_op("--json stat f"),
            (Command::Stat { name: name("f") }, true)
        );
        assert_eq!(shell_op("status --json"), (Command::Status, true));
        assert_eq!(
            shell_op("lock counter --ttl 30s --wait 1s --json"),
            (
                Command::Lock(LockArgs {
                    name: name("counter"),
                    shared: false,
                    ttl: Duration::from_secs(30),
                    wait: Duration::from_secs(1),
                }),
                true
            )
        );
        assert_eq!(shell_op("renew 5"), (Command::Renew { lease: 5 }, false));
        assert_eq!(shell_op("unlock 5"), (Command::Unlock { lease: 5 }, false));
        assert_eq!(
            shell_op("write counter 2 --fence 12").0,
            Command::Write(WriteArgs {
                name: name("counter"),
                text: Some(name("2")),
                random: None,
                offset: None,
                cond: CondArgs {
                    fence: Some(12),
                    if_version: None
                },
            })
        );
    }

    #[test]
    fn shell_own_commands_parse() {
        let cmd = |line: &str| shell(line).expect("parses").command;
        assert_eq!(cmd("exit"), ShellCommand::Exit);
        assert_eq!(cmd("quit"), ShellCommand::Exit);
        assert_eq!(cmd("help"), ShellCommand::Help { command: None });
        assert_eq!(
            cmd("help write"),
            ShellCommand::Help {
                command: Some(name("write"))
            }
        );
    }

    #[test]
    fn shell_errors() {
        let kind = |line: &str| {
            shell(line)
                .map(|l| l.command)
                .expect_err("must fail")
                .kind()
        };
        assert_eq!(kind("frobnicate"), ErrorKind::InvalidSubcommand);
        assert_eq!(kind("write f"), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind("--servers a:1 ls"), ErrorKind::UnknownArgument);
        assert_eq!(kind("write --help"), ErrorKind::DisplayHelp);
        assert_eq!(kind("--help"), ErrorKind::DisplayHelp);
    }

    #[test]
    fn shell_help_lists_every_command() {
        let help = ShellLine::command().render_help().to_string();
        for cmd in [
            "create", "write", "put", "read", "get", "delete", "ls", "stat", "table", "status",
            "scrub", "lock", "renew", "unlock", "truncate", "exit", "help",
        ] {
            assert!(help.contains(cmd), "{cmd} missing from\n{help}");
        }
    }
}
