//! Real programs against the FUSE mount (`dfs-client mount DIR`) of a three-node cluster of
//! real `dfs-server` processes (R = 2): `cp -r`, `tar`, `git`, `fio` with verification,
//! `rsync`, the fsx-style checker (`fsx.rs`), and a node SIGKILLed while programs run.
//!
//! Every runner takes the directory to work in, so it does not care whether that is the
//! mount. A test skips (saying so) only when a program it runs is not installed; `.ci/run`
//! installs them. Every program run has a deadline: a hung mount fails the test instead of
//! hanging it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dfs::client::{Client, ClientConfig};

use crate::fsx::{self, Rng};
use crate::harness::{Cluster, FAILOVER_DEADLINE, IDS, POLL};
use crate::util::client_cmd;

/// How long the mount may take to appear, and to go away after SIGTERM.
const MOUNT_DEADLINE: Duration = Duration::from_secs(30);
/// How long any one program run against the mount may take.
const PROGRAM_DEADLINE: Duration = Duration::from_secs(300);
/// Lines of the mount's log shown when a test fails.
const MOUNT_LOG_LINES: usize = 60;

// ---------------------------------------------------------------------------------------
// The fixture.

/// A three-node cluster (R = 2) and `dfs-client mount` of it on a fresh directory.
pub(crate) struct Mounted {
    pub(crate) cluster: Cluster,
    /// The mount point.
    pub(crate) dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

impl Mounted {
    /// Starts the cluster and the mount, and waits until the mount point is in
    /// `/proc/self/mountinfo`. Fails with the mount's stderr if it exits first.
    pub(crate) fn start() -> Mounted {
        Self::start_with(&[])
    }

    /// [`Mounted::start`] with further `mount` flags (such as `--attr-ttl 1s`).
    pub(crate) fn start_with(flags: &[&str]) -> Mounted {
        let cluster = Cluster::start(2);
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("mnt");
        fs::create_dir(&dir).expect("mkdir mount point");
        let dir = dir.canonicalize().expect("canonical mount point");
        let log = tmp.path().join("mount.log");
        let child = client_cmd(&cluster.servers(&IDS))
            .arg("mount")
            .arg(&dir)
            .args(flags)
            .args(extra_mount_flags())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("mount log"))
            .spawn()
            .expect("spawn dfs-client mount");
        let mut m = Mounted {
            cluster,
            dir,
            child: Some(child),
            log,
            tmp: Some(tmp),
        };
        let start = Instant::now();
        loop {
            if is_mounted(&m.dir) {
                break;
            }
            if let Some(status) = m.exit_status() {
                m.fail(&format!(
                    "dfs-client mount exited before mounting: {status}"
                ));
            }
            if start.elapsed() > MOUNT_DEADLINE {
                m.fail(&format!(
                    "{} not in /proc/self/mountinfo within {MOUNT_DEADLINE:?}",
                    m.dir.display()
                ));
            }
            std::thread::sleep(POLL);
        }
        eprintln!("mounted {} in {:?}", m.dir.display(), start.elapsed());
        m
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The end of the mount's log.
    pub(crate) fn log_tail(&self) -> String {
        let text = fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(MOUNT_LOG_LINES)..];
        format!(
            "--- dfs-client mount, log {}, last {} lines:\n{}",
            self.log.display(),
            tail.len(),
            tail.join("\n")
        )
    }

    /// Fails the test with `message`, whether the mount still runs, and its log.
    #[track_caller]
    pub(crate) fn fail(&mut self, message: &str) -> ! {
        let state = match self.exit_status() {
            Some(status) => format!("the mount process has exited: {status}"),
            None if self.child.is_some() => "the mount process is running".to_owned(),
            None => "the mount process was stopped".to_owned(),
        };
        panic!("{message}\n({state})\n{}", self.log_tail())
    }

    /// The node ids still running.
    pub(crate) fn running(&self) -> Vec<u64> {
        self.cluster.running()
    }

    /// Checks every file of `local` is in the cluster as `prefix/<path>` with the same
    /// content, through the client library (all of them, and `list`'s sizes) and through the
    /// `dfs-client` CLI (`read`, a few of them).
    pub(crate) fn check_through_client(&self, local: &Path, prefix: &str) {
        let files: Vec<String> = manifest(local)
            .into_iter()
            .filter(|(_, e)| matches!(e, Entry::File { .. }))
            .map(|(path, _)| path)
            .collect();
        let running = self.running();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut config =
            ClientConfig::new(running.iter().map(|&id| self.cluster.node(id).addr.clone()));
        config.retry_deadline = FAILOVER_DEADLINE;
        rt.block_on(async {
            let client = Client::with_config(config).await.expect("connect");
            let listed: BTreeMap<String, u64> = client
                .list(&under(prefix, ""))
                .await
                .expect("list")
                .into_iter()
                .map(|e| (e.name, e.size))
                .collect();
            for path in &files {
                let name = under(prefix, path);
                let want = fs::read(local.join(path)).expect("read local file");
                assert_eq!(
                    listed.get(&name),
                    Some(&(want.len() as u64)),
                    "list {prefix}/ through the client library: {name}"
                );
                let got = client
                    .read(&name, 0, None)
                    .await
                    .unwrap_or_else(|e| panic!("read {name} through the client library: {e}"));
                assert_same_bytes(&format!("{name} through the client library"), &got, &want);
            }
        });
        for path in files.iter().take(5) {
            let name = under(prefix, path);
            let out = self.cluster.run(&running, &["read", &name], None);
            assert!(
                out.status.success(),
                "dfs-client read {name}: {}",
                shown(&out)
            );
            let want = fs::read(local.join(path)).expect("read local file");
            assert_same_bytes(
                &format!("{name} through dfs-client read"),
                &out.stdout,
                &want,
            );
        }
        eprintln!(
            "{} files under {prefix}/ read back through the client library ({} through the CLI)",
            files.len(),
            files.len().min(5)
        );
    }

    /// SIGTERM, and checks the mount exits 0 and is gone from mountinfo.
    pub(crate) fn unmount(&mut self) {
        let status = self.stop();
        if !status.is_some_and(|s| s.success()) {
            self.fail(&format!(
                "dfs-client mount did not exit 0 on SIGTERM within {MOUNT_DEADLINE:?}: {status:?}"
            ));
        }
        if is_mounted(&self.dir) {
            self.fail("the mount point is still mounted after the mount exited");
        }
    }

    /// SIGTERM to the mount process (by PID), waits for it within the deadline, SIGKILL if
    /// it does not exit; its exit status (None: it had to be killed, or was stopped before).
    fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    eprintln!(
                        "the mount exited ({status}) {:?} after SIGTERM",
                        start.elapsed()
                    );
                    return Some(status);
                }
                Ok(None) if start.elapsed() < MOUNT_DEADLINE => std::thread::sleep(POLL),
                _ => {
                    eprintln!(
                        "the mount did not exit within {MOUNT_DEADLINE:?} of SIGTERM: SIGKILL"
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.stop();
        if is_mounted(&self.dir) {
            eprintln!("{} still mounted: umount -l", self.dir.display());
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
            if let Some(tmp) = self.tmp.take() {
                eprintln!(
                    "mount test failed; its files kept in {}",
                    tmp.keep().display()
                );
            }
        }
        // Then the cluster's own drop stops the nodes.
    }
}

/// Further `mount` flags for every test from `DFS_MOUNT_ARGS` (split at spaces), to try
/// the tests with other settings: `DFS_MOUNT_ARGS="--write-back 0 --attr-ttl 0s"`.
fn extra_mount_flags() -> Vec<String> {
    let flags: Vec<String> = std::env::var("DFS_MOUNT_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !flags.is_empty() {
        eprintln!("mount flags from DFS_MOUNT_ARGS: {flags:?}");
    }
    flags
}

/// The cluster's name of `path` under the mount's `prefix` directory (`""`: the top).
fn under(prefix: &str, path: &str) -> String {
    match prefix {
        "" => path.to_owned(),
        _ => format!("{prefix}/{path}"),
    }
}

/// Whether `dir` (canonical) is a mount point in `/proc/self/mountinfo`.
pub(crate) fn is_mounted(dir: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = dir.to_string_lossy();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| unescape_mountinfo(point) == want)
}

/// Mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// Programs.

/// Whether `program` is an executable file in `PATH`.
pub(crate) fn installed(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The first of `programs` not installed, announced as a skip of `test`.
pub(crate) fn missing(test: &str, programs: &[&str]) -> bool {
    match programs.iter().find(|p| !installed(p)) {
        Some(p) => {
            eprintln!("SKIPPED {test}: `{p}` is not installed (not in PATH); .ci/run installs it");
            true
        }
        None => false,
    }
}

/// Runs `cmd` to the end with its output captured; past `limit` it is SIGKILLed (by its
/// handle: only the process started here) and the error has what it printed.
pub(crate) fn run_program(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let line = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {line}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("wait {line}: {e}"))? {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = Output {
        status: status.unwrap_or_else(|| std::os::unix::process::ExitStatusExt::from_raw(9)),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    match status {
        Some(_) => Ok(out),
        None => Err(format!(
            "{line} did not finish within {limit:?} (SIGKILLed): {}",
            shown(&out)
        )),
    }
}

/// A program's status and the ends of its output, for a failure message.
pub(crate) fn shown(out: &Output) -> String {
    let tail = |b: &[u8]| {
        let text = String::from_utf8_lossy(b);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    };
    format!(
        "{}\n--- stdout (end):\n{}\n--- stderr (end):\n{}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    )
}

fn cmd(program: &str) -> Command {
    Command::new(program)
}

/// Runs a program within [`PROGRAM_DEADLINE`]; its output if it exits 0.
pub(crate) fn run_ok(what: &str, cmd: &mut Command) -> Result<Output, String> {
    match run_program(cmd, PROGRAM_DEADLINE) {
        Ok(out) if out.status.success() => Ok(out),
        Ok(out) => Err(format!("{what}: {}", shown(&out))),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

// ---------------------------------------------------------------------------------------
// Trees.

/// A deterministic tree under `root`: nested directories (an empty one too), many small
/// files (empty ones, page-sized ones, odd sizes, text and binary) and a few of a few MiB.
pub(crate) fn make_tree(root: &Path, seed: u64, small: usize, big: &[usize]) {
    let mut rng = Rng::new(seed);
    let dirs = [
        "",
        "src",
        "src/net",
        "src/net/deep/deeper",
        "docs",
        "assets/img",
        "empty/dir",
    ];
    for dir in dirs {
        fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    let sizes = [0usize, 1, 4095, 4096, 4097, 65_536, 131_073];
    for i in 0..small {
        let dir = dirs[i % (dirs.len() - 1)];
        let len = match i {
            i if i < sizes.len() => sizes[i],
            _ => rng.index(12_000),
        };
        let (name, data) = if i % 3 == 0 {
            let text: String = (0..len)
                .map(|_| char::from(b"abcdefghij klmnop\nqrstuvwxyz"[rng.index(28)]))
                .collect();
            (format!("file-{i}.txt"), text.into_bytes())
        } else {
            (format!("blob_{i}.bin"), rng.bytes(len))
        };
        fs::write(root.join(dir).join(name), data).expect("write");
    }
    for (i, &len) in big.iter().enumerate() {
        fs::write(root.join(format!("assets/big-{i}.dat")), rng.bytes(len)).expect("write");
    }
}

/// What a tree holds at one path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Dir,
    File { len: u64, sha256: String },
}

/// Every path under `root` (relative, `/`-separated) with its kind, size and sha256 (from
/// `sha256sum`, which reads the files itself). Symlinks and the like fail the test.
pub(crate) fn manifest(root: &Path) -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    let mut files = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() {
            root.to_owned()
        } else {
            root.join(&rel)
        };
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        {
            let entry = entry.expect("readdir entry");
            let name = entry.file_name().into_string().expect("UTF-8 name");
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(root.join(&path)).expect("lstat");
            if meta.is_dir() {
                entries.insert(path.clone(), Entry::Dir);
                stack.push(path);
            } else if meta.is_file() {
                files.push((path, meta.len()));
            } else {
                panic!(
                    "{}: neither a file nor a directory",
                    root.join(&path).display()
                );
            }
        }
    }
    for batch in files.chunks(200) {
        let out = run_program(
            cmd("sha256sum")
                .arg("--")
                .args(batch.iter().map(|(p, _)| p))
                .current_dir(root),
            PROGRAM_DEADLINE,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "sha256sum in {}: {}",
            root.display(),
            shown(&out)
        );
        let text = String::from_utf8(out.stdout).expect("UTF-8 sha256sum output");
        let sums: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.split_once("  "))
            .map(|(sum, path)| (path, sum))
            .collect();
        for (path, len) in batch {
            let sha256 = sums
                .get(path.as_str())
                .unwrap_or_else(|| panic!("sha256sum left out {path}"));
            entries.insert(
                path.clone(),
                Entry::File {
                    len: *len,
                    sha256: (*sha256).to_owned(),
                },
            );
        }
    }
    entries
}

/// Checks the trees under `a` and `b` hold the same paths, kinds, sizes and checksums;
/// the number of files.
pub(crate) fn same_tree(what: &str, a: &Path, b: &Path) -> Result<usize, String> {
    let (ma, mb) = (manifest(a), manifest(b));
    let mut diffs = Vec::new();
    for (path, entry) in &ma {
        match mb.get(path) {
            None => diffs.push(format!("only in {}: {path}", a.display())),
            Some(other) if other != entry => {
                diffs.push(format!("{path}: {entry:?} vs {other:?}"));
            }
            Some(_) => {}
        }
    }
    for path in mb.keys().filter(|p| !ma.contains_key(*p)) {
        diffs.push(format!("only in {}: {path}", b.display()));
    }
    let files = ma
        .values()
        .filter(|e| matches!(e, Entry::File { .. }))
        .count();
    if !diffs.is_empty() {
        return Err(format!(
            "{what}: {} and {} differ in {} of {} paths:\n  {}",
            a.display(),
            b.display(),
            diffs.len(),
            ma.len(),
            diffs
                .iter()
                .take(30)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        ));
    }
    if files == 0 {
        return Err(format!("{what}: no files in {}", a.display()));
    }
    Ok(files)
}

#[track_caller]
fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: {} bytes, want {}; first differing offset {first}",
            got.len(),
            want.len()
        );
    }
}

/// The repository's own `crates/` directory: a real source tree.
fn source_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates")
}

// ---------------------------------------------------------------------------------------
// The runners: each works in the directory it is given (the mount, or a plain one).

/// `cp -r` of `src` into `root/name` and back out into `out/name`: identical trees; the
/// number of files.
pub(crate) fn cp_round_trip(
    src: &Path,
    root: &Path,
    out: &Path,
    name: &str,
) -> Result<usize, String> {
    let inside = root.join(name);
    run_ok(
        &format!("cp -r {} in", src.display()),
        cmd("cp").arg("-r").arg(src).arg(&inside),
    )?;
    let back = out.join(name);
    run_ok(
        &format!("cp -r {} out", inside.display()),
        cmd("cp").arg("-r").arg(&inside).arg(&back),
    )?;
    same_tree("cp -r in", src, &inside)?;
    same_tree("cp -r out", src, &back)
}

// ---------------------------------------------------------------------------------------
// The tests.

fn timed(test: &str, start: Instant) {
    eprintln!("{test}: took {:.1?}", start.elapsed());
}

#[test]
fn mount_cp_r_of_a_source_tree_in_and_out_is_identical() {
    let test = "mount_cp_r_of_a_source_tree_in_and_out_is_identical";
    if missing(test, &["cp", "sha256sum"]) {
        return;
    }
    let start = Instant::now();
    let mut m = Mounted::start();
    let work = tempfile::tempdir().expect("tempdir");
    let gen_tree = work.path().join("gen");
    make_tree(&gen_tree, 11, 150, &[(1 << 20) + 123, (3 << 20) - 7]);
    let out = work.path().join("out");
    fs::create_dir(&out).expect("mkdir");
    let real = cp_round_trip(&source_tree(), &m.dir, &out, "crates").unwrap_or_else(|e| m.fail(&e));
    let generated = cp_round_trip(&gen_tree, &m.dir, &out, "gen").unwrap_or_else(|e| m.fail(&e));
    eprintln!("cp -r: {real} files of crates/ and {generated} generated ones, identical");
    m.check_through_client(&gen_tree, "gen");
    m.unmount();
    timed(test, start);
}

/// `tar` of `src` into an archive in `root`, extracted inside `root`, and that tree archived
/// again and extracted outside into `out`: all identical to `src`. The archive written into
/// `root` is also byte for byte the one `tar` makes of `src` in `out`.
pub(crate) fn tar_round_trip(src: &Path, root: &Path, out: &Path) -> Result<usize, String> {
    let dir = root.join("tar");
    fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let archive = dir.join("a.tar");
    let tar_c = |from: &Path, to: &Path| {
        let mut c = cmd("tar");
        c.arg("--sort=name")
            .arg("-C")
            .arg(from)
            .arg("-cf")
            .arg(to)
            .arg(".");
        c
    };
    run_ok("tar -c into the mount", &mut tar_c(src, &archive))?;
    let local = out.join("local.tar");
    run_ok("tar -c locally", &mut tar_c(src, &local))?;
    let (a, b) = (read(&archive)?, read(&local)?);
    if a != b {
        return Err(format!(
            "the archive in {} ({} bytes) is not the one made locally ({} bytes)",
            archive.display(),
            a.len(),
            b.len()
        ));
    }
    let inside = dir.join("x");
    fs::create_dir(&inside).map_err(|e| format!("mkdir {}: {e}", inside.display()))?;
    run_ok(
        "tar -x inside the mount",
        cmd("tar").arg("-C").arg(&inside).arg("-xf").arg(&archive),
    )?;
    same_tree("tar -x inside the mount", src, &inside)?;
    let again = out.join("again.tar");
    run_ok("tar -c of the extracted tree", &mut tar_c(&inside, &again))?;
    let back = out.join("back");
    fs::create_dir(&back).map_err(|e| format!("mkdir {}: {e}", back.display()))?;
    run_ok(
        "tar -x outside",
        cmd("tar").arg("-C").arg(&back).arg("-xf").arg(&again),
    )?;
    same_tree(
        "tar of the tree in the mount, extracted outside",
        src,
        &back,
    )
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))
}

fn write(path: &Path, data: &[u8]) -> Result<(), String> {
    fs::write(path, data).map_err(|e| format!("write {}: {e}", path.display()))
}

/// `git` with no system or user configuration (`HOME` is `home`), fixed identities and dates.
fn git(home: &Path, repo: &Path) -> Command {
    let mut c = cmd("git");
    c.env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.join("gitconfig"))
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .env("LC_ALL", "C")
        .args([
            "-c",
            "user.name=dfs test",
            "-c",
            "user.email=test@dfs.invalid",
        ])
        .arg("-C")
        .arg(repo);
    c
}

/// A git repository in `root/repo`: init, add, commit, a second commit, `git fsck --full`,
/// `git log` with both commits, a clean `git status`, and a clone out into `out` with the
/// same files. The commit ids (two lines of `git log`).
pub(crate) fn git_session(src: &Path, root: &Path, out: &Path) -> Result<String, String> {
    let home = out.join("home");
    fs::create_dir_all(&home).map_err(|e| format!("mkdir: {e}"))?;
    let repo = root.join("repo");
    run_ok(
        "git init",
        git(&home, root).args(["init", "-q", "-b", "main", "repo"]),
    )?;
    run_ok(
        "cp -r the tree into the repository",
        cmd("cp").arg("-r").arg(src).arg(repo.join("tree")),
    )?;
    // git keeps no empty directories: the clone would not have them.
    let empty = repo.join("tree/empty");
    fs::remove_dir_all(&empty).map_err(|e| format!("rm -r {}: {e}", empty.display()))?;
    write(&repo.join("README"), b"first\n")?;
    run_ok("git add", git(&home, &repo).args(["add", "-A"]))?;
    run_ok(
        "git commit",
        git(&home, &repo).args(["commit", "-q", "-m", "first commit"]),
    )?;
    write(&repo.join("README"), b"first\nsecond\n")?;
    write(
        &repo.join("tree/new-file.txt"),
        b"added in the second commit\n",
    )?;
    let gone = manifest(&repo.join("tree"))
        .into_iter()
        .find(|(_, e)| matches!(e, Entry::File { .. }))
        .map(|(p, _)| p)
        .ok_or("no file to remove")?;
    fs::remove_file(repo.join("tree").join(&gone)).map_err(|e| format!("rm {gone}: {e}"))?;
    run_ok("git add (2)", git(&home, &repo).args(["add", "-A"]))?;
    run_ok(
        "git commit (2)",
        git(&home, &repo).args(["commit", "-q", "-m", "second commit"]),
    )?;
    let fsck = run_ok(
        "git fsck --full",
        git(&home, &repo).args(["fsck", "--full", "--strict"]),
    )?;
    let fsck_text = format!(
        "{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    if ["error", "missing", "broken", "corrupt", "bad"]
        .iter()
        .any(|w| fsck_text.to_lowercase().contains(w))
    {
        return Err(format!("git fsck --full exited 0 but says:\n{fsck_text}"));
    }
    let log = run_ok("git log", git(&home, &repo).args(["log", "--format=%H %s"]))?;
    let log = String::from_utf8_lossy(&log.stdout).into_owned();
    let subjects: Vec<&str> = log
        .lines()
        .map(|l| l.split_once(' ').map_or("", |(_, s)| s))
        .collect();
    if subjects != ["second commit", "first commit"] {
        return Err(format!("git log shows {subjects:?}:\n{log}"));
    }
    let status = run_ok(
        "git status",
        git(&home, &repo).args(["status", "--porcelain"]),
    )?;
    if !status.stdout.is_empty() {
        return Err(format!(
            "git status after the commits is not clean:\n{}",
            String::from_utf8_lossy(&status.stdout)
        ));
    }
    let clone = out.join("clone");
    run_ok(
        "git clone out of the mount",
        git(&home, out).args(["clone", "-q"]).arg(&repo).arg(&clone),
    )?;
    same_tree(
        "git clone of the repository",
        &repo.join("tree"),
        &clone.join("tree"),
    )?;
    if read(&clone.join("README"))? != b"first\nsecond\n" {
        return Err("the clone's README differs".to_owned());
    }
    Ok(log)
}

/// `fio` jobs with verification on files in `root/fio`: random 4 KiB writes over a file of
/// `rand_size` and sequential 64 KiB ones over one of `seq_size`, each read back and checked
/// (crc32c) by fio itself. A line per job.
pub(crate) fn fio_verify(
    root: &Path,
    rand_size: &str,
    seq_size: &str,
) -> Result<Vec<String>, String> {
    let dir = root.join("fio");
    fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let mut lines = Vec::new();
    for (name, rw, bs, size) in [
        ("randwrite", "randwrite", "4k", rand_size),
        ("seqwrite", "write", "64k", seq_size),
    ] {
        let start = Instant::now();
        let out = run_ok(
            &format!("fio {name}"),
            cmd("fio")
                .arg(format!("--name={name}"))
                .arg(format!("--filename={}", dir.join(name).display()))
                .arg(format!("--rw={rw}"))
                .arg(format!("--bs={bs}"))
                .arg(format!("--size={size}"))
                .args([
                    "--ioengine=psync",
                    "--verify=crc32c",
                    "--do_verify=1",
                    "--verify_fatal=1",
                    "--end_fsync=1",
                    "--fallocate=none",
                    "--randseed=1234",
                    "--output-format=json",
                    // Otherwise fio leaves its verify state in the working directory.
                    "--verify_state_save=0",
                ])
                .current_dir(&dir),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let errors = String::from_utf8_lossy(&out.stderr);
        let json: serde_json::Value = text
            .find('{')
            .and_then(|at| serde_json::from_str(&text[at..]).ok())
            .ok_or_else(|| format!("fio {name}: no JSON report: {}", shown(&out)))?;
        let job = &json["jobs"][0];
        let (error, written, read) = (
            job["error"].as_i64(),
            job["write"]["io_bytes"].as_u64().unwrap_or(0),
            job["read"]["io_bytes"].as_u64().unwrap_or(0),
        );
        if error != Some(0)
            || errors.contains("verify")
            || text[..text.find('{').unwrap_or(0)].contains("verify")
        {
            return Err(format!("fio {name}: error {error:?}: {}", shown(&out)));
        }
        if written == 0 || read != written {
            return Err(format!(
                "fio {name}: wrote {written} bytes but verified {read}: {}",
                shown(&out)
            ));
        }
        lines.push(format!(
            "{name}: {written} bytes written, all read back and verified, in {:.1?}",
            start.elapsed()
        ));
    }
    Ok(lines)
}

/// `rsync --stats` output: the number of regular files it transferred.
fn rsync_transferred(out: &Output) -> Result<u64, String> {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Number of regular files transferred: "))
        .and_then(|n| n.trim().replace(',', "").parse().ok())
        .ok_or_else(|| format!("rsync printed no file count: {text}"))
}

/// `rsync` flags used against the mount: `-a`, and `--checksum` because the mount accepts
/// `utimensat` but keeps the store's modification times (see dfs-mount's docs), so `-a`'s
/// quick check (size and time) alone would find most files changed on every run: with plain
/// `-a`, a second run over an unchanged tree transferred 89 of 152 files again.
pub(crate) const RSYNC_FLAGS: &[&str] = &["-a", "--checksum"];

/// `rsync` of `src` into `root/rsync` and out into `out/rsync`: identical; again, nothing
/// transferred; after changing `changed` files in `src`, just those. Returns the counts.
pub(crate) fn rsync_round_trip(src: &Path, root: &Path, out: &Path) -> Result<String, String> {
    let rsync = |from: &Path, to: &Path| -> Result<u64, String> {
        let out = run_ok(
            &format!("rsync {} -> {}", from.display(), to.display()),
            cmd("rsync")
                .args(RSYNC_FLAGS)
                .arg("--stats")
                .arg(format!("{}/", from.display()))
                .arg(format!("{}/", to.display())),
        )?;
        rsync_transferred(&out)
    };
    let (inside, back) = (root.join("rsync"), out.join("rsync"));
    let first = rsync(src, &inside)?;
    rsync(&inside, &back)?;
    same_tree("rsync in", src, &inside)?;
    let files = same_tree("rsync out", src, &back)?;
    if first != files as u64 {
        return Err(format!(
            "the first rsync transferred {first} of {files} files"
        ));
    }
    let second = rsync(src, &inside)?;
    if second != 0 {
        return Err(format!(
            "a second rsync with nothing changed transferred {second} files"
        ));
    }
    // Change three files: one in place at the same size, one grown, one emptied.
    let changed: Vec<String> = manifest(src)
        .into_iter()
        .filter(|(_, e)| matches!(e, Entry::File { len, .. } if *len > 16))
        .map(|(p, _)| p)
        .step_by(7)
        .take(3)
        .collect();
    for (i, path) in changed.iter().enumerate() {
        let file = src.join(path);
        let mut data = read(&file)?;
        match i {
            0 => data[..8].copy_from_slice(b"CHANGED!"),
            1 => data.extend_from_slice(b"grown by the third rsync"),
            _ => data.clear(),
        }
        write(&file, &data)?;
        // A later modification time, so rsync's quick check (size and time) sees the change
        // even within the same second.
        let later = std::time::SystemTime::now() + Duration::from_secs(10 + i as u64);
        fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(later))
            .map_err(|e| format!("set the time of {path}: {e}"))?;
    }
    let third = rsync(src, &inside)?;
    same_tree("rsync of the changed tree", src, &inside)?;
    if third != changed.len() as u64 {
        return Err(format!(
            "rsync after changing {} files ({changed:?}) transferred {third}",
            changed.len()
        ));
    }
    Ok(format!(
        "rsync {RSYNC_FLAGS:?}: {first} files in, {second} on the unchanged rerun, {third} after changing {changed:?}"
    ))
}

/// The fsx checker on `root/fsx-<i>` for each seed, at once, one thread each.
pub(crate) fn fsx_files(
    root: &Path,
    seeds: &[u64],
    ops: u64,
    progress: Option<Arc<AtomicU64>>,
) -> Result<Vec<fsx::Report>, String> {
    let threads: Vec<_> = seeds
        .iter()
        .enumerate()
        .map(|(i, &seed)| {
            let root = root.to_owned();
            let mut config = fsx::Config::new(seed, ops);
            config.progress = if i == 0 { progress.clone() } else { None };
            std::thread::spawn(move || fsx::run(&root, &format!("fsx-{i}"), config))
        })
        .collect();
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for t in threads {
        match t.join() {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("an fsx thread panicked".to_owned()),
        }
    }
    if errors.is_empty() {
        Ok(reports)
    } else {
        Err(errors.join("\n\n"))
    }
}

#[test]
fn mount_tar_in_extract_inside_and_tar_out_are_identical() {
    let test = "mount_tar_in_extract_inside_and_tar_out_are_identical";
    if missing(test, &["tar", "sha256sum"]) {
        return;
    }
    let start = Instant::now();
    let mut m = Mounted::start();
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    make_tree(&src, 12, 120, &[(2 << 20) + 5]);
    let files = tar_round_trip(&src, &m.dir, work.path()).unwrap_or_else(|e| m.fail(&e));
    eprintln!("tar: {files} files, identical in and out");
    m.unmount();
    timed(test, start);
}

#[test]
fn mount_git_init_commit_twice_fsck_and_log() {
    let test = "mount_git_init_commit_twice_fsck_and_log";
    if missing(test, &["git", "cp", "sha256sum"]) {
        return;
    }
    let start = Instant::now();
    let mut m = Mounted::start();
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    make_tree(&src, 13, 60, &[(1 << 20) + 1]);
    let log = git_session(&src, &m.dir, work.path()).unwrap_or_else(|e| m.fail(&e));
    eprintln!("git log in the mount:\n{log}");
    m.unmount();
    timed(test, start);
}

#[test]
fn mount_fio_random_and_sequential_writes_verify() {
    let test = "mount_fio_random_and_sequential_writes_verify";
    if missing(test, &["fio"]) {
        return;
    }
    let start = Instant::now();
    let mut m = Mounted::start();
    // Random 4 KiB writes over 2 MiB (512 of them, each a replicated write at an offset:
    // the mount sends a range when the next write is not contiguous), then sequential ones
    // over 8 MiB.
    let lines = fio_verify(&m.dir, "2m", "8m").unwrap_or_else(|e| m.fail(&e));
    eprintln!("fio:\n  {}", lines.join("\n  "));
    m.unmount();
    timed(test, start);
}

#[test]
fn mount_rsync_in_and_out_then_only_changes() {
    let test = "mount_rsync_in_and_out_then_only_changes";
    if missing(test, &["rsync", "sha256sum"]) {
        return;
    }
    let start = Instant::now();
    let mut m = Mounted::start();
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    make_tree(&src, 14, 100, &[(1 << 20) + 77]);
    let summary = rsync_round_trip(&src, &m.dir, work.path()).unwrap_or_else(|e| m.fail(&e));
    eprintln!("{summary}");
    m.unmount();
    timed(test, start);
}

#[test]
fn mount_fsx_random_ops_match_the_model() {
    let test = "mount_fsx_random_ops_match_the_model";
    let start = Instant::now();
    let mut m = Mounted::start();
    let ops = fsx::ops_or(3_000);
    let seeds = [fsx::seed_or(101), 102];
    let reports = fsx_files(&m.dir, &seeds, ops, None).unwrap_or_else(|e| m.fail(&e));
    for (seed, report) in seeds.iter().zip(&reports) {
        eprintln!("fsx on the mount, seed {seed}: {report}");
    }
    // What the mount holds is what the cluster holds.
    m.check_through_client(&m.dir.clone(), "");
    m.unmount();
    timed(test, start);
}

#[test]
fn mount_fsx_and_cp_r_go_on_through_a_node_sigkill() {
    let test = "mount_fsx_and_cp_r_go_on_through_a_node_sigkill";
    if missing(test, &["cp", "sha256sum"]) {
        return;
    }
    let start = Instant::now();
    let mut m = Mounted::start();
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("src");
    make_tree(&src, 15, 150, &[(2 << 20) + 3]);
    let ops = fsx::ops_or(2_000);
    let seed = fsx::seed_or(103);
    let progress = Arc::new(AtomicU64::new(0));
    let fsx_run = {
        let (root, progress) = (m.dir.clone(), progress.clone());
        std::thread::spawn(move || fsx_files(&root, &[seed], ops, Some(progress)))
    };
    let waited = Instant::now();
    while progress.load(Ordering::Relaxed) < ops / 4 {
        if fsx_run.is_finished() {
            let result = fsx_run.join();
            m.fail(&format!(
                "fsx ended before a quarter of its ops: {result:?}"
            ));
        }
        if waited.elapsed() > PROGRAM_DEADLINE {
            m.fail("fsx did not get a quarter through its ops in time");
        }
        std::thread::sleep(POLL);
    }
    let cp_run = {
        let (src, inside) = (src.clone(), m.dir.join("cp"));
        std::thread::spawn(move || {
            run_ok(
                "cp -r during the kill",
                cmd("cp").arg("-r").arg(&src).arg(&inside),
            )
        })
    };
    // The node that orders the fsx file's writes.
    let running = m.running();
    let stat = m.cluster.json(&running, &["stat", "fsx-0"]);
    let victim = stat["replicas"][0]
        .as_u64()
        .unwrap_or_else(|| m.fail(&format!("no primary in {stat}")));
    let at = progress.load(Ordering::Relaxed);
    m.cluster.kill(victim);
    eprintln!("killed node {victim} (the primary of fsx-0) at fsx op {at} of {ops}, cp -r running");
    let reports = fsx_run
        .join()
        .unwrap_or_else(|_| m.fail("the fsx thread panicked"))
        .unwrap_or_else(|e| m.fail(&e));
    eprintln!("fsx through the kill, seed {seed}: {}", reports[0]);
    cp_run
        .join()
        .unwrap_or_else(|_| m.fail("the cp thread panicked"))
        .unwrap_or_else(|e| m.fail(&e));
    let files =
        same_tree("cp -r through the kill", &src, &m.dir.join("cp")).unwrap_or_else(|e| m.fail(&e));
    let back = work.path().join("back");
    run_ok(
        "cp -r out after the kill",
        cmd("cp").arg("-r").arg(m.dir.join("cp")).arg(&back),
    )
    .and_then(|_| same_tree("cp -r out after the kill", &src, &back))
    .unwrap_or_else(|e| m.fail(&e));
    eprintln!("cp -r through the kill: {files} files identical in the mount and copied out");
    // Everything the mount shows is what the remaining nodes serve.
    m.check_through_client(&m.dir.clone(), "");
    m.check_through_client(&src, "cp");
    m.unmount();
    timed(test, start);
}

#[test]
fn mount_tests_skip_only_for_a_program_not_in_path() {
    assert!(installed("sh"));
    assert!(!installed("no-such-program-for-dfs-tests"));
    assert!(!missing("this check", &["sh"]));
    assert!(missing(
        "this check",
        &["sh", "no-such-program-for-dfs-tests"]
    ));
}
