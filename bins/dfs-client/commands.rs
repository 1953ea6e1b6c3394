//! Running one command: call the client library, print the result.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use dfs_client::{Client, Condition, ReadStream, WriteAck};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::cli::{Command, LockArgs, WriteArgs};
use crate::output;
use crate::progress::Progress;

/// What every command runs with.
pub struct Session {
    /// The connected client, shared by every command of a shell.
    pub client: Client,
    /// Whether commands come from the shell (which owns standard input, and wants a line
    /// break after a read's bytes).
    pub in_shell: bool,
}

/// Runs one command, printing its result to stdout as text or (`json`) as one JSON line.
pub async fn execute(session: &Session, command: Command, json: bool) -> anyhow::Result<()> {
    let client = &session.client;
    match command {
        Command::Create { name } => {
            let info = client.create(&name).await?;
            emit(
                json,
                || output::file_info_json(&info),
                || output::created_text(&info),
            )
        }
        Command::Write(WriteArgs {
            name,
            text,
            offset: Some(offset),
            cond,
            ..
        }) => {
            let data = write_at_data(session, text.map(PathBuf::from)).await?;
            let bytes = data.len() as u64;
            let ack = client
                .write_at_if(&name, offset, data, cond.condition())
                .await?;
            emit(
                json,
                || output::write_json(&name, &ack, None),
                || output::write_text(&format!("wrote at {offset}:"), bytes, &name, &ack),
            )
        }
        Command::Truncate { name, size, cond } => {
            let ack = client.truncate_if(&name, size, cond.condition()).await?;
            emit(
                json,
                || output::write_json(&name, &ack, None),
                || output::truncated_text(&name, &ack),
            )
        }
        Command::Write(WriteArgs {
            name,
            text,
            random,
            cond,
            offset: None,
        }) => {
            let (data, letters) = match (text, random) {
                (_, Some(n)) => {
                    let letters = random_letters(n);
                    (letters.clone(), Some(letters))
                }
                (Some(text), None) => (text, None),
                (None, None) => bail!("write needs TEXT or --random N"),
            };
            let bytes = data.len() as u64;
            let ack = client.append_if(&name, data, cond.condition()).await?;
            emit(
                json,
                || output::write_json(&name, &ack, letters.as_deref()),
                || {
                    let mut text = letters
                        .as_deref()
                        .map(|l| format!("{l}\n"))
                        .unwrap_or_default();
                    text += &output::write_text("appended", bytes, &name, &ack);
                    text
                },
            )
        }
        Command::Put { name, file, cond } => {
            let ack = put(session, &name, file, cond.condition()).await?;
            emit(
                json,
                || output::write_json(&name, &ack, None),
                || output::write_text("wrote", ack.size, &name, &ack),
            )
        }
        Command::Read { name, offset, len } => read(session, &name, offset, len).await,
        Command::Get { name, file } => {
            let (target, bytes) = get(client, &name, &file).await?;
            let shown = target.display().to_string();
            emit(
                json,
                || output::get_json(&name, &shown, bytes),
                || {
                    format!(
                        "downloaded {name} to {shown} ({bytes} {})\n",
                        if bytes == 1 { "byte" } else { "bytes" }
                    )
                },
            )
        }
        Command::Delete { name, cond } => {
            client.delete_if(&name, cond.condition()).await?;
            emit(
                json,
                || output::delete_json(&name),
                || format!("deleted {name}\n"),
            )
        }
        Command::Ls { prefix } => {
            let entries = client.list(prefix.as_deref().unwrap_or("")).await?;
            emit(
                json,
                || output::list_json(&entries),
                || output::list_text(&entries),
            )
        }
        Command::Stat { name } => {
            let info = client.stat(&name).await?;
            emit(
                json,
                || output::file_info_json(&info),
                || output::stat_text(&info),
            )
        }
        Command::Table => {
            let entries = client.table().await?;
            emit(
                json,
                || output::table_json(&entries),
                || output::table_text(&entries),
            )
        }
        Command::Status => {
            let status = client.status().await?;
            emit(
                json,
                || output::status_json(&status),
                || output::status_text(&status),
            )
        }
        Command::Scrub => {
            let reports = client.scrub().await?;
            emit(
                json,
                || output::scrub_json(&reports),
                || output::scrub_text(&reports),
            )
        }
        Command::Lock(args) => {
            let LockArgs {
                name, ttl, wait, ..
            } = &args;
            let grant = client.lock(name, args.mode(), *ttl, *wait).await?;
            emit(
                json,
                || output::lock_json(&grant),
                || output::lock_text("locked", &grant),
            )
        }
        Command::Renew { lease } => {
            let grant = client.renew(lease).await?;
            emit(
                json,
                || output::lock_json(&grant),
                || output::lock_text("renewed", &grant),
            )
        }
        Command::Unlock { lease } => {
            client.unlock(lease).await?;
            emit(
                json,
                || output::unlock_json(lease),
                || format!("unlocked lease {lease}\n"),
            )
        }
        Command::Mount(_) => {
            bail!("mount runs from the command line (`dfs-client mount DIR`), not in the shell")
        }
    }
}

/// Whether an error is stdout having gone away (`dfs-client read f | head`): not worth a
/// message.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Prints `json()` as one line, or `text()` as it is.
fn emit(
    json: bool,
    value: impl FnOnce() -> Value,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let mut text = if json {
        let mut line = serde_json::to_string(&value())?;
        line.push('\n');
        line
    } else {
        text()
    };
    if text.is_empty() {
        return Ok(());
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    write_stdout(text.as_bytes())?;
    flush_stdout()
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    io::stdout()
        .lock()
        .write_all(bytes)
        .context("cannot write to standard output")
}

fn flush_stdout() -> anyhow::Result<()> {
    io::stdout()
        .lock()
        .flush()
        .context("cannot write to standard output")
}

/// `n` random lowercase letters, as the seed's `write NAME N` made.
pub fn random_letters(n: u64) -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(rng.random_range(b'a'..=b'z')))
        .collect()
}

/// `put`: streams a local file or standard input as the new content, if `cond` holds.
/// The bytes of `write --offset`: a local file's, or standard input's (one-shot only),
/// at most [`dfs_client::WRITE_BYTES_MAX`] of them (read no further).
async fn write_at_data(session: &Session, file: Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let max = dfs_client::WRITE_BYTES_MAX;
    let mut data = Vec::new();
    let limit = max as u64 + 1;
    match file.filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            let f = tokio::fs::File::open(&path)
                .await
                .map_err(|e| anyhow!("cannot open {}: {e}", path.display()))?;
            f.take(limit)
                .read_to_end(&mut data)
                .await
                .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
        }
        None if session.in_shell => {
            bail!(
                "write --offset reads standard input only as a one-shot command; give a FILE in the shell"
            )
        }
        None => {
            tokio::io::stdin()
                .take(limit)
                .read_to_end(&mut data)
                .await
                .context("cannot read standard input")?;
        }
    }
    if data.len() > max {
        bail!("write --offset writes at most {max} bytes at once; split larger writes");
    }
    Ok(data)
}

async fn put(
    session: &Session,
    name: &str,
    file: Option<PathBuf>,
    cond: Condition,
) -> anyhow::Result<WriteAck> {
    let client = &session.client;
    match file.filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            let f = tokio::fs::File::open(&path)
                .await
                .map_err(|e| anyhow!("cannot open {}: {e}", path.display()))?;
            let meta = f
                .metadata()
                .await
                .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
            if meta.is_dir() {
                bail!("cannot upload {}: it is a directory", path.display());
            }
            let size = meta.is_file().then_some(meta.len());
            Ok(upload(client, name, f, size, cond).await?)
        }
        None if session.in_shell => {
            bail!("put reads standard input only as a one-shot command; give a FILE in the shell")
        }
        None => {
            let size = None;
            let reader = tokio::io::stdin();
            if io::stdin().is_terminal() {
                // Someone is typing: a spinner would only get in the way.
                Ok(client.put_stream_if(name, reader, cond).await?)
            } else {
                Ok(upload(client, name, reader, size, cond).await?)
            }
        }
    }
}

async fn upload<R>(
    client: &Client,
    name: &str,
    reader: R,
    size: Option<u64>,
    cond: Condition,
) -> Result<WriteAck, dfs_client::ClientError>
where
    R: AsyncRead + Unpin,
{
    match Progress::new(&format!("put {name}"), size) {
        Some(progress) => {
            client
                .put_stream_if(name, progress.bar().wrap_async_read(reader), cond)
                .await
        }
        None => client.put_stream_if(name, reader, cond).await,
    }
}

/// `read`: the bytes go to stdout as they arrive.
async fn read(session: &Session, name: &str, offset: u64, len: Option<u64>) -> anyhow::Result<()> {
    let mut stream = session.client.read_stream(name, offset, len).await?;
    // A bar would mix with the bytes on a terminal; show one only when they go elsewhere.
    let progress = if io::stdout().is_terminal() {
        None
    } else {
        Progress::new(&format!("read {name}"), Some(stream.len()))
    };
    let mut last = None;
    while let Some(chunk) = stream.next_chunk().await {
        let chunk = chunk?;
        write_stdout(&chunk)?;
        if let Some(p) = &progress {
            p.bar().inc(chunk.len() as u64);
        }
        last = chunk.last().copied().or(last);
    }
    drop(progress);
    if session.in_shell && last.is_some_and(|b| b != b'\n') {
        // Keep the next prompt or result on a line of its own.
        write_stdout(b"\n")?;
    }
    flush_stdout()
}

/// `get`: downloads into a temporary file beside the target and renames it into place, so
/// the target never holds a partial download. Returns the target and the bytes written.
async fn get(client: &Client, name: &str, file: &Path) -> anyhow::Result<(PathBuf, u64)> {
    let target = target_path(name, file, is_dir(file).await);
    let stream = client.read_stream(name, 0, None).await?;
    let (tmp, out) = create_temp_beside(&target).await?;
    let result = download(stream, out, name).await;
    let result = match result {
        Ok(bytes) => tokio::fs::rename(&tmp, &target)
            .await
            .map(|()| bytes)
            .map_err(|e| anyhow!("cannot write {}: {e}", target.display())),
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    Ok((target, result?))
}

async fn is_dir(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir())
}

/// Where `get NAME FILE` writes: FILE, or inside it under the name's last segment when FILE
/// is a directory.
fn target_path(name: &str, file: &Path, file_is_dir: bool) -> PathBuf {
    if file_is_dir {
        let base = name.rsplit('/').next().unwrap_or(name);
        file.join(base)
    } else {
        file.to_path_buf()
    }
}

/// A new file in the target's directory, named after it so a leftover is recognisable.
async fn create_temp_beside(target: &Path) -> anyhow::Result<(PathBuf, tokio::fs::File)> {
    let base = target
        .file_name()
        .ok_or_else(|| anyhow!("{} does not name a file", target.display()))?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut attempts = 0;
    loop {
        let suffix: u32 = rand::random();
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(base);
        tmp_name.push(format!(".{suffix:08x}.dfs-part"));
        let tmp = dir.join(tmp_name);
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => attempts += 1,
            Err(e) => bail!("cannot create a file in {}: {e}", dir.display()),
        }
    }
}

async fn download(
    mut stream: ReadStream,
    mut out: tokio::fs::File,
    name: &str,
) -> anyhow::Result<u64> {
    let progress = Progress::new(&format!("get {name}"), Some(stream.len()));
    let mut written = 0u64;
    while let Some(chunk) = stream.next_chunk().await {
        let chunk = chunk?;
        out.write_all(&chunk)
            .await
            .context("cannot write the download")?;
        written += chunk.len() as u64;
        if let Some(p) = &progress {
            p.bar().inc(chunk.len() as u64);
        }
    }
    out.flush().await.context("cannot write the download")?;
    out.sync_all().await.context("cannot write the download")?;
    Ok(written)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn random_letters_are_lowercase() {
        let s = random_letters(1000);
        assert_eq!(s.len(), 1000);
        assert!(s.bytes().all(|b| b.is_ascii_lowercase()));
        assert_eq!(random_letters(0), "");
    }

    #[test]
    fn get_targets() {
        let file = Path::new("out.bin");
        assert_eq!(
            target_path("a/b/c.txt", file, false),
            PathBuf::from("out.bin")
        );
        assert_eq!(
            target_path("a/b/c.txt", Path::new("dl"), true),
            PathBuf::from("dl/c.txt")
        );
        assert_eq!(
            target_path("top", Path::new("dl"), true),
            PathBuf::from("dl/top")
        );
    }

    #[test]
    fn temp_files_sit_beside_the_target() {
        let dir =
            std::env::temp_dir().join(format!("dfs-client-test-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let target = dir.join("x.bin");
        let (tmp, _f) = rt.block_on(create_temp_beside(&target)).expect("temp file");
        assert_eq!(tmp.parent(), Some(dir.as_path()));
        let tmp_name = tmp.file_name().and_then(|n| n.to_str()).expect("utf-8");
        assert!(tmp_name.starts_with(".x.bin.") && tmp_name.ends_with(".dfs-part"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn broken_pipes_are_recognised() {
        let e = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("cannot write to standard output");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow!("no server available")));
    }
}
