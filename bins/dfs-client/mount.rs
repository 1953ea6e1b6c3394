//! `dfs-client mount DIR`: the cluster's files under DIR, in the foreground until Ctrl-C
//! or SIGTERM (then unmounted, exit 0) or until someone unmounts DIR.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use dfs_client::Client;
use dfs_mount::MountOptions;
use tokio::runtime::Runtime;

use crate::duration::{number_and_unit, parse_duration};

/// `mount DIR [--attr-ttl D] [--read-ahead N] [--write-back N] ...`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct MountArgs {
    /// The directory to mount the cluster on (it must exist).
    pub dir: PathBuf,
    /// How long attributes and directory entries are cached (`0s`: not at all).
    #[arg(long, value_name = "D", default_value = "1s", value_parser = parse_duration)]
    pub attr_ttl: Duration,
    /// Bytes a sequential read fetches at once (`0`: no read-ahead): a number with an
    /// optional unit (`512KiB`, `1MiB`, `4M`).
    #[arg(long, value_name = "N", default_value = "1MiB", value_parser = parse_size)]
    pub read_ahead: usize,
    /// Written bytes one open file buffers before sending them (`0`: send every write).
    #[arg(long, value_name = "N", default_value = "4MiB", value_parser = parse_size)]
    pub write_back: usize,
    /// Written bytes all open files buffer together.
    #[arg(long, value_name = "N", default_value = "64MiB", value_parser = parse_size)]
    pub write_back_total: usize,
    /// How long an operation keeps retrying through a failover before the program gets EIO.
    #[arg(long, value_name = "D", default_value = "30s", value_parser = parse_duration)]
    pub retry_deadline: Duration,
}

impl MountArgs {
    /// The library's options for these flags.
    pub fn options(&self) -> MountOptions {
        MountOptions {
            attr_ttl: self.attr_ttl,
            read_ahead: self.read_ahead,
            write_back: self.write_back,
            write_back_total: self.write_back_total.max(self.write_back),
            retry_deadline: self.retry_deadline,
            ..MountOptions::default()
        }
    }
}

/// A byte count: digits and an optional unit (`K`/`KiB`, `M`/`MiB`, `G`/`GiB`, all powers
/// of 1024; `B` or none for bytes).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (n, unit) = number_and_unit(text, "a size such as 4096, 512KiB or 4MiB")?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Mounts, waits for Ctrl-C, SIGTERM or an unmount from outside, then unmounts.
pub fn run(rt: &Runtime, client: Client, args: &MountArgs) -> anyhow::Result<()> {
    let mount = dfs_mount::mount(client, rt.handle().clone(), &args.dir, args.options())?;
    eprintln!("mounted on {} (Ctrl-C to unmount)", args.dir.display());
    let why = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => { r?; return Ok::<_, std::io::Error>("interrupted"); }
                _ = term.recv() => return Ok("terminated"),
                _ = tick.tick() => if mount.is_finished() { return Ok("unmounted from outside") },
            }
        }
    })?;
    tracing::info!(why, "unmounting");
    mount.unmount()?;
    eprintln!("unmounted {} ({why})", args.dir.display());
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("4XB").is_err());
        assert!(parse_size("lots").is_err());
    }
}
