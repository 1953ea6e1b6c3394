//! The harness: start, kill and restart real server processes; run the real client.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A `dfs-server` process with its own data directory.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a one-member cluster on a free port in a fresh temp dir.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut server = Server {
            child: None,
            port: 0,
            data_dir: tmp.path().join("data"),
            _tmp: Some(tmp),
        };
        // A port found free can be taken by someone else before the server binds it:
        // try a few.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!("dfs-server did not start; see {}", server.log().display());
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    /// Spawns the process and waits until it accepts connections; false if it exited.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_dfs-server"))
            .args([
                "--id",
                "1",
                "--cluster",
                &format!("1={}", self.addr()),
                "--data-dir",
            ])
            .arg(&self.data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn dfs-server");
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if welcomes(&self.addr()) {
                return true;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                eprintln!("dfs-server exited early: {status}");
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("dfs-server did not listen within {START_DEADLINE:?}");
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM")
            .success();
        assert!(ok, "kill -TERM failed");
        wait_exit(&mut child, Duration::from_secs(20))
    }

    /// Starts the process again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        assert!(self.spawn(), "restart failed; see {}", self.log().display());
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Runs `dfs-client --servers ADDR ARGS...`.
    pub fn cli(&self, args: &[&str]) -> Output {
        client_cmd(&self.addr())
            .args(args)
            .output()
            .expect("run dfs-client")
    }

    /// Runs the client with `stdin` as its input.
    pub fn cli_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_stdin(client_cmd(&self.addr()).args(args), stdin)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn client_cmd(servers: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dfs-client"));
    cmd.args(["--servers", servers])
        .env_remove("DFS_SERVERS")
        .env_remove("DFS_TOKEN")
        .env_remove("DFS_TLS_CA");
    cmd
}

pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dfs-client");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("dfs-client output");
    feeder.join().expect("feeder");
    out
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Asserts success and returns stdout as a string.
#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts failure with exactly one line on stderr and returns that line.
#[track_caller]
pub fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        err.lines().count(),
        1,
        "expected one line on stderr, got: {err:?}"
    );
    err
}

#[track_caller]
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("valid JSON on stdout")
}

pub fn write_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write local file");
    p
}

/// Whether a node at `addr` answers a client hello with a welcome: it is serving, not just
/// listening (the kernel accepts connections before the node's accept loop runs).
pub fn welcomes(addr: &str) -> bool {
    welcomes_with(addr, None)
}

/// [`welcomes`], the hello carrying an access token.
pub fn welcomes_with(addr: &str, token: Option<&str>) -> bool {
    use std::io::{Read, Write};

    use bytes::BytesMut;
    use dfs::proto::{ClientCodec, ClientFrame, Hello, Role, ServerFrame};
    use tokio_util::codec::{Decoder, Encoder};

    let Ok(mut socket) = TcpStream::connect(addr) else {
        return false;
    };
    let mut codec = ClientCodec::new();
    let mut out = BytesMut::new();
    if codec
        .encode(
            ClientFrame::Hello(Hello::new(Role::Client).with_token(token.map(str::to_owned))),
            &mut out,
        )
        .is_err()
        || socket.write_all(&out).is_err()
        || socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .is_err()
    {
        return false;
    }
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(ServerFrame::Welcome(_))) => return true,
            Ok(Some(_)) | Err(_) => return false,
            Ok(None) => {}
        }
        match socket.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
