//! The mount over a real three-node cluster, used with `std::fs` as any program would.
//! Skipped (with a message) where `/dev/fuse` is missing.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dfs_client::Client;
use dfs_mount::{DIR_MARKER, Mount, MountOptions};
use dfs_node::LocalCluster;
use tokio::runtime::Runtime;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A cluster, a client of it, and the cluster mounted on a temporary directory. Dropping
/// it unmounts, then shuts the cluster down.
struct Fixture {
    mounts: Vec<Mount>,
    cluster: Option<LocalCluster>,
    client: Client,
    rt: Runtime,
    _data: tempfile::TempDir,
    mnt: tempfile::TempDir,
}

impl Fixture {
    /// `None` (after saying why) when this machine cannot mount FUSE.
    fn start(options: MountOptions) -> Result<Option<Fixture>, Box<dyn std::error::Error>> {
        if !Path::new("/dev/fuse").exists() {
            eprintln!("SKIPPED: /dev/fuse is missing, so nothing can be mounted here");
            return Ok(None);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()?;
        let data = tempfile::tempdir()?;
        let cluster = rt.block_on(LocalCluster::start(data.path(), 3, 2))?;
        let client = rt.block_on(cluster.client())?;
        let mnt = tempfile::tempdir()?;
        let mount = dfs_mount::mount(client.clone(), rt.handle().clone(), mnt.path(), options)?;
        Ok(Some(Fixture {
            mounts: vec![mount],
            cluster: Some(cluster),
            client,
            rt,
            _data: data,
            mnt,
        }))
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.path().join(rel)
    }

    /// A second mount of the same cluster (its own client) on a new directory.
    fn second_mount(&mut self, dir: &Path) -> TestResult {
        let client = self
            .rt
            .block_on(self.cluster.as_ref().ok_or("no cluster")?.client())?;
        let mount = dfs_mount::mount(
            client,
            self.rt.handle().clone(),
            dir,
            MountOptions::default(),
        )?;
        self.mounts.push(mount);
        Ok(())
    }

    fn read_plain(&self, name: &str) -> Result<Vec<u8>, dfs_client::ClientError> {
        self.rt
            .block_on(self.client.read(name, 0, None))
            .map(|b| b.to_vec())
    }

    fn names(&self, prefix: &str) -> Vec<String> {
        self.rt
            .block_on(self.client.list(prefix))
            .map(|l| l.into_iter().map(|e| e.name).collect())
            .unwrap_or_default()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for mount in self.mounts.drain(..) {
            if let Err(e) = mount.unmount() {
                eprintln!("unmount failed: {e}");
            }
        }
        if let Some(cluster) = self.cluster.take() {
            self.rt.block_on(cluster.shutdown());
        }
    }
}

/// The sorted names in a directory of the mount.
fn ls(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Waits (up to a deadline) until `check` holds.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn files_write_read_offsets_truncate_append() -> TestResult {
    let Some(fx) = Fixture::start(MountOptions::default())? else {
        return Ok(());
    };
    // Create, write, read back; the plain client sees it once closed.
    fs::create_dir(fx.path("docs"))?;
    fs::write(fx.path("docs/a.txt"), b"hello world")?;
    assert_eq!(fs::read(fx.path("docs/a.txt"))?, b"hello world");
    assert_eq!(fx.read_plain("docs/a.txt")?, b"hello world");
    assert_eq!(fs::metadata(fx.path("docs/a.txt"))?.len(), 11);
    assert!(fs::metadata(fx.path("docs/a.txt"))?.is_file());

    // Writes at offsets, inside and past the end (the gap reads as zeros).
    let f = OpenOptions::new().write(true).open(fx.path("docs/a.txt"))?;
    f.write_at(b"WORLD", 6)?;
    f.write_at(b"!", 13)?;
    // Unsent writes count in the size stat shows.
    assert_eq!(f.metadata()?.len(), 14);
    assert_eq!(fs::metadata(fx.path("docs/a.txt"))?.len(), 14);
    f.sync_all()?;
    // Acknowledged by the cluster once fsync returns.
    assert_eq!(fx.read_plain("docs/a.txt")?, b"hello WORLD\0\0!");
    drop(f);
    assert_eq!(fs::read(fx.path("docs/a.txt"))?, b"hello WORLD\0\0!");

    // Truncate: shrink, then extend with zeros.
    let f = OpenOptions::new().write(true).open(fx.path("docs/a.txt"))?;
    f.set_len(5)?;
    assert_eq!(fs::read(fx.path("docs/a.txt"))?, b"hello");
    f.set_len(7)?;
    drop(f);
    assert_eq!(fx.read_plain("docs/a.txt")?, b"hello\0\0");

    // O_TRUNC, then O_APPEND.
    fs::write(fx.path("docs/a.txt"), b"one\n")?;
    let mut f = OpenOptions::new()
        .append(true)
        .open(fx.path("docs/a.txt"))?;
    f.write_all(b"two\n")?;
    f.write_all(b"three\n")?;
    drop(f);
    assert_eq!(fx.read_plain("docs/a.txt")?, b"one\ntwo\nthree\n");

    // Read and write through one handle, with seeks.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.path("docs/a.txt"))?;
    f.seek(SeekFrom::Start(4))?;
    f.write_all(b"TWO")?;
    f.seek(SeekFrom::Start(0))?;
    let mut back = String::new();
    f.read_to_string(&mut back)?;
    assert_eq!(back, "one\nTWO\nthree\n");
    drop(f);

    // Many small sequential writes (coalesced) and a large sequential read (read-ahead).
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    {
        let mut f = fs::File::create(fx.path("docs/big.bin"))?;
        for chunk in big.chunks(4096) {
            f.write_all(chunk)?;
        }
        f.flush()?;
    }
    assert_eq!(fx.read_plain("docs/big.bin")?, big);
    assert_eq!(fs::read(fx.path("docs/big.bin"))?, big);
    let f = fs::File::open(fx.path("docs/big.bin"))?;
    let mut buf = vec![0u8; 1000];
    f.read_exact_at(&mut buf, 2_500_000)?;
    assert_eq!(&buf[..], &big[2_500_000..2_501_000]);

    // A file made by the plain client shows up (after the entry cache's time at most).
    fx.rt
        .block_on(fx.client.put("docs/from-client.txt", "plain"))?;
    wait_until("the client's file in the mount", || {
        fs::read(fx.path("docs/from-client.txt")).is_ok_and(|d| d == b"plain")
    });
    Ok(())
}

#[test]
fn directories_rename_unlink_and_errors() -> TestResult {
    let Some(mut fx) = Fixture::start(MountOptions::default())? else {
        return Ok(());
    };
    // mkdir keeps an empty directory with a hidden marker.
    fs::create_dir_all(fx.path("a/b/c"))?;
    assert!(fs::metadata(fx.path("a/b/c"))?.is_dir());
    assert_eq!(ls(&fx.path("a/b")), vec!["c"]);
    assert_eq!(ls(&fx.path("a/b/c")), Vec::<String>::new());
    assert!(fx.names("a/b/c/").contains(&format!("a/b/c/{DIR_MARKER}")));
    let e = fs::create_dir(fx.path("a/b")).expect_err("exists");
    assert_eq!(errno(&e), libc::EEXIST);

    // rmdir: only when empty.
    fs::write(fx.path("a/b/c/f"), b"x")?;
    let e = fs::remove_dir(fx.path("a/b/c")).expect_err("not empty");
    assert_eq!(errno(&e), libc::ENOTEMPTY);
    fs::remove_file(fx.path("a/b/c/f"))?;
    // The directory outlives its last file.
    assert!(fs::metadata(fx.path("a/b/c"))?.is_dir());
    fs::remove_dir(fx.path("a/b/c"))?;
    assert_eq!(
        errno(&fs::metadata(fx.path("a/b/c")).expect_err("gone")),
        libc::ENOENT
    );
    assert_eq!(ls(&fx.path("a/b")), Vec::<String>::new());

    // Rename a file (replacing a target) and a directory with files in it.
    fs::write(fx.path("a/one"), b"1")?;
    fs::write(fx.path("a/two"), b"2")?;
    fs::rename(fx.path("a/one"), fx.path("a/two"))?;
    assert_eq!(fs::read(fx.path("a/two"))?, b"1");
    assert_eq!(
        errno(&fs::metadata(fx.path("a/one")).expect_err("moved")),
        libc::ENOENT
    );
    fs::create_dir(fx.path("a/b/d"))?;
    fs::write(fx.path("a/b/d/x"), b"xx")?;
    fs::rename(fx.path("a/b"), fx.path("moved"))?;
    assert_eq!(ls(&fx.path("moved")), vec!["d"]);
    assert_eq!(fs::read(fx.path("moved/d/x"))?, b"xx");
    assert_eq!(
        errno(&fs::metadata(fx.path("a/b")).expect_err("moved")),
        libc::ENOENT
    );
    assert_eq!(ls(&fx.path("a")), vec!["two"]);
    assert!(fx.names("a/b").is_empty(), "{:?}", fx.names("a/b"));
    let e = fs::rename(fx.path("moved"), fx.path("moved/d/inside")).expect_err("into itself");
    assert_eq!(errno(&e), libc::EINVAL);
    fs::create_dir(fx.path("full"))?;
    fs::write(fx.path("full/f"), b"f")?;
    let e = fs::rename(fx.path("moved"), fx.path("full")).expect_err("target not empty");
    assert_eq!(errno(&e), libc::ENOTEMPTY);

    // Listing of the root, without markers.
    assert_eq!(ls(fx.mnt.path()), vec!["a", "full", "moved"]);

    // Errors.
    let e = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(fx.path("a/two"))
        .expect_err("exists");
    assert_eq!(errno(&e), libc::EEXIST);
    assert_eq!(
        errno(&fs::read(fx.path("nothing")).expect_err("missing")),
        libc::ENOENT
    );
    assert_eq!(
        errno(&fs::remove_file(fx.path("nothing")).expect_err("missing")),
        libc::ENOENT
    );
    let e = fs::write(fx.path(&"n".repeat(300)), b"x").expect_err("too long");
    assert_eq!(errno(&e), libc::ENAMETOOLONG);
    let e = std::os::unix::fs::symlink("a/two", fx.path("link")).expect_err("no symlinks");
    assert_eq!(errno(&e), libc::EPERM);
    let e = fs::hard_link(fx.path("a/two"), fx.path("hard")).expect_err("no hard links");
    assert_eq!(errno(&e), libc::EPERM);
    let e = fs::write(fx.path(&format!("full/{DIR_MARKER}")), b"x").expect_err("marker");
    assert_eq!(errno(&e), libc::EPERM);
    let e = fs::remove_file(fx.path("full")).expect_err("a directory");
    assert_eq!(errno(&e), libc::EISDIR);

    // chmod and times are accepted (and not kept).
    let mut perms = fs::metadata(fx.path("a/two"))?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    fs::set_permissions(fx.path("a/two"), perms)?;

    // Unlink; the plain client sees it gone.
    fs::remove_file(fx.path("a/two"))?;
    assert!(fx.names("a/two").is_empty());

    // Everything, empty directories included, is seen by a second mount.
    let other = tempfile::tempdir()?;
    fx.second_mount(other.path())?;
    assert_eq!(ls(other.path()), vec!["a", "full", "moved"]);
    assert_eq!(ls(&other.path().join("moved/d")), vec!["x"]);
    assert!(fs::metadata(other.path().join("a"))?.is_dir());
    assert_eq!(ls(&other.path().join("a")), Vec::<String>::new());
    // Its changes reach the first mount within the cache's time.
    fs::write(other.path().join("full/g"), b"g")?;
    wait_until("the other mount's file", || {
        ls(&fx.path("full")) == vec!["f".to_owned(), "g".to_owned()]
    });
    Ok(())
}

#[test]
fn unaligned_writes_beyond_the_largest_write_at_arrive_whole() -> TestResult {
    // A buffer that passes the write-back size by the last write added, and a write-back
    // size set above what one write at an offset may carry: both must reach the cluster
    // as several writes, not be refused as too large (EFBIG at close).
    let big_buffer = MountOptions {
        write_back: 3 * dfs_proto::WRITE_BYTES_MAX,
        write_back_total: 4 * dfs_proto::WRITE_BYTES_MAX,
        ..MountOptions::default()
    };
    for options in [MountOptions::default(), big_buffer] {
        let Some(fx) = Fixture::start(options)? else {
            return Ok(());
        };
        // tar's 10,240-byte records: 4 MiB is not a multiple of them.
        let data: Vec<u8> = (0..9_000_000u32).map(|i| (i % 253) as u8).collect();
        {
            let mut f = fs::File::create(fx.path("records.tar"))?;
            for record in data.chunks(10_240) {
                f.write_all(record)?;
            }
            f.sync_all()?;
        }
        assert_eq!(fx.read_plain("records.tar")?, data);
        assert_eq!(fs::read(fx.path("records.tar"))?, data);
    }
    Ok(())
}

#[test]
fn write_back_off_and_cache_off_still_work() -> TestResult {
    let options = MountOptions {
        attr_ttl: Duration::ZERO,
        read_ahead: 0,
        write_back: 0,
        ..MountOptions::default()
    };
    let Some(fx) = Fixture::start(options)? else {
        return Ok(());
    };
    let mut f = fs::File::create(fx.path("f"))?;
    f.write_all(b"abc")?;
    // With no write-back, a write is in the cluster when it returns.
    assert_eq!(fx.read_plain("f")?, b"abc");
    f.write_all(b"def")?;
    drop(f);
    fx.rt.block_on(fx.client.append("f", "ghi"))?;
    // No attribute cache: the next stat sees the append at once.
    assert_eq!(fs::metadata(fx.path("f"))?.len(), 9);
    assert_eq!(fs::read(fx.path("f"))?, b"abcdefghi");
    let e = fs::read_dir(fx.path("f")).expect_err("not a directory");
    assert_eq!(e.kind(), ErrorKind::NotADirectory);
    Ok(())
}

#[test]
fn write_back_errors_reach_the_program_and_drop_unmounts() -> TestResult {
    let Some(mut fx) = Fixture::start(MountOptions::default())? else {
        return Ok(());
    };
    // The write is buffered; the file disappears underneath; fsync reports the failure
    // instead of swallowing it.
    let mut f = fs::File::create(fx.path("doomed"))?;
    f.write_all(b"never lands")?;
    fx.rt.block_on(fx.client.delete("doomed"))?;
    let e = f.sync_all().expect_err("the write-back fails");
    assert_eq!(errno(&e), libc::ENOENT, "{e}");
    drop(f);

    // Dropping the mount unmounts it.
    let dir = fx.mnt.path().to_string_lossy().into_owned();
    let mounted = || {
        fs::read_to_string("/proc/self/mountinfo")
            .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(dir.as_str())))
    };
    assert!(mounted());
    fx.mounts.clear();
    assert!(!mounted());
    Ok(())
}

/// A small deterministic generator (no dependency): xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

#[test]
fn random_operations_match_a_local_file() -> TestResult {
    // Small buffers, so coalescing, flushing when full and read-ahead all happen.
    let options = MountOptions {
        read_ahead: 16 << 10,
        write_back: 8 << 10,
        write_back_total: 12 << 10,
        ..MountOptions::default()
    };
    let Some(fx) = Fixture::start(options)? else {
        return Ok(());
    };
    let local_dir = tempfile::tempdir()?;
    let local_path = local_dir.path().join("model");
    let model = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&local_path)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.path("fsx"))?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    const SIZE_MAX: u64 = 48 << 10;
    for step in 0..300 {
        let len = model.metadata()?.len();
        match rng.below(10) {
            0..=4 => {
                let offset = rng.below(SIZE_MAX);
                let n = 1 + rng.below(6000) as usize;
                let byte = (step % 251) as u8 + 1;
                let data: Vec<u8> = (0..n).map(|i| byte.wrapping_add(i as u8)).collect();
                model.write_all_at(&data, offset)?;
                file.write_all_at(&data, offset)?;
            }
            5..=7 => {
                let offset = rng.below(len + 100);
                let n = 1 + rng.below(20_000) as usize;
                let (mut want, mut got) = (vec![0u8; n], vec![0u8; n]);
                let a = model.read_at(&mut want, offset)?;
                let b = file.read_at(&mut got, offset)?;
                assert_eq!(a, b, "step {step}: read of {n} at {offset} (size {len})");
                assert_eq!(want[..a], got[..b], "step {step}: read at {offset}");
            }
            8 => {
                let size = rng.below(SIZE_MAX);
                model.set_len(size)?;
                file.set_len(size)?;
            }
            _ => {
                assert_eq!(file.metadata()?.len(), len, "step {step}: stat size");
                if rng.below(2) == 0 {
                    file.sync_all()?;
                }
            }
        }
    }
    drop(file);
    assert_eq!(fx.read_plain("fsx")?, fs::read(&local_path)?);
    Ok(())
}
