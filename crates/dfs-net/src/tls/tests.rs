use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::Tcp;

/// Bounds every wait of these tests: a failure must show as an error, not a hang.
const WAIT: Duration = Duration::from_secs(10);

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// A fresh directory with development certificates for `for_names`.
fn dev_certs(for_names: &[&str]) -> (tempfile::TempDir, DevCertificates) {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = write_dev_certificates(dir.path(), &names(for_names), false).expect("write");
    (dir, certs)
}

fn transport(files: &TlsFiles) -> Tls {
    Tls::from_files(Tcp::shared(), files).expect("tls from files")
}

fn err_of<T>(result: Result<T, impl std::fmt::Display + std::fmt::Debug>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Binds a TLS server on 127.0.0.1 that secures one connection and echoes what it reads
/// until the end; the join handle answers how `secure` or the echo ended.
async fn echo_server(
    server: &Tls,
    bind: &str,
) -> (String, tokio::task::JoinHandle<io::Result<u64>>) {
    let listener = server.bind(bind).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let (raw, _peer) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("accept in time")?;
        let stream = tokio::time::timeout(WAIT, listener.secure(raw))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "secure hung"))??;
        let (mut read, mut write) = tokio::io::split(stream);
        let copied = tokio::io::copy(&mut read, &mut write).await?;
        write.shutdown().await?;
        Ok(copied)
    });
    (port.to_string(), task)
}

/// Sends `payload` over `stream`, closes its sending side, and reads the echo.
async fn round_trip(mut stream: BoxStream, payload: &[u8]) -> Vec<u8> {
    let (mut read, mut write) = tokio::io::split(&mut stream);
    let reader = async {
        let mut echoed = Vec::new();
        read.read_to_end(&mut echoed).await.expect("read echo");
        echoed
    };
    let writer = async {
        write.write_all(payload).await.expect("write");
        write.shutdown().await.expect("shutdown");
    };
    let (echoed, ()) = tokio::time::timeout(WAIT, async { tokio::join!(reader, writer) })
        .await
        .expect("echo in time");
    echoed
}

#[tokio::test]
async fn bytes_flow_both_ways_over_tls_by_ip_address() {
    let (_dir, certs) = dev_certs(&["127.0.0.1", "localhost"]);
    let server = transport(&certs.node_files());
    let client = transport(&certs.client_files());
    assert!(server.serves() && !client.serves());
    let (port, task) = echo_server(&server, "127.0.0.1:0").await;

    let stream = tokio::time::timeout(WAIT, client.connect(&format!("127.0.0.1:{port}")))
        .await
        .expect("connect in time")
        .expect("connect");
    // Large enough for many TLS records in each direction.
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(stream, &payload).await, payload);
    let copied = task.await.expect("join").expect("server");
    assert_eq!(copied, payload.len() as u64);
}

#[tokio::test]
async fn connecting_by_host_name_checks_the_dns_name() {
    let (_dir, certs) = dev_certs(&["127.0.0.1", "localhost"]);
    // A node connects to its peers with the same transport it serves with.
    let node = transport(&certs.node_files()).into_shared();
    let (port, task) = echo_server(&transport(&certs.node_files()), "127.0.0.1:0").await;
    let stream = tokio::time::timeout(WAIT, node.connect(&format!("localhost:{port}")))
        .await
        .expect("connect in time")
        .expect("connect by localhost");
    assert_eq!(round_trip(stream, b"ping").await, b"ping");
    task.await.expect("join").expect("server");
}

#[tokio::test]
async fn connecting_by_ipv6_literal_in_brackets() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let (_dir, certs) = dev_certs(&["::1"]);
    let (port, task) = echo_server(&transport(&certs.node_files()), "[::1]:0").await;
    let client = transport(&certs.client_files());
    let stream = tokio::time::timeout(WAIT, client.connect(&format!("[::1]:{port}")))
        .await
        .expect("connect in time")
        .expect("connect to [::1]");
    assert_eq!(round_trip(stream, b"six").await, b"six");
    task.await.expect("join").expect("server");
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused_and_told_why() {
    let (_dir, certs) = dev_certs(&["127.0.0.1", "localhost"]);
    let (_other_dir, other) = dev_certs(&["127.0.0.1", "localhost"]);
    let (port, task) = echo_server(&transport(&certs.node_files()), "127.0.0.1:0").await;
    let stranger = transport(&other.client_files());
    let addr = format!("127.0.0.1:{port}");
    let result = tokio::time::timeout(WAIT, stranger.connect(&addr))
        .await
        .expect("refused in time");
    let message = err_of(result);
    assert!(
        message.starts_with(&format!("TLS handshake with {addr} failed: ")),
        "{message}"
    );
    assert!(message.contains("invalid peer certificate"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("not signed by the CA"), "{message}");
    // The server's side of the handshake fails too (the client's alert), and says TLS.
    let server = err_of(task.await.expect("join"));
    assert!(server.contains("TLS handshake"), "{server}");
}

#[tokio::test]
async fn a_certificate_for_other_names_is_refused() {
    let (_dir, certs) = dev_certs(&["example.invalid"]);
    let (port, _task) = echo_server(&transport(&certs.node_files()), "127.0.0.1:0").await;
    let client = transport(&certs.client_files());
    let addr = format!("127.0.0.1:{port}");
    let result = tokio::time::timeout(WAIT, client.connect(&addr))
        .await
        .expect("refused in time");
    let message = err_of(result);
    assert!(
        message.starts_with(&format!("TLS handshake with {addr} failed: ")),
        "{message}"
    );
    assert!(message.contains("not valid for name"), "{message}");
    assert!(message.contains("127.0.0.1"), "{message}");
}

#[tokio::test]
async fn a_plain_tcp_client_does_not_get_through_secure() {
    let (_dir, certs) = dev_certs(&["127.0.0.1"]);
    let (port, task) = echo_server(&transport(&certs.node_files()), "127.0.0.1:0").await;
    let mut plain = Tcp
        .connect(&format!("127.0.0.1:{port}"))
        .await
        .expect("tcp connect");
    plain
        .write_all(b"HELLO dfs 1\nthis is not a TLS client hello\n")
        .await
        .expect("write");
    let ended = tokio::time::timeout(WAIT, task)
        .await
        .expect("secure ends in time")
        .expect("join");
    let message = err_of(ended);
    assert!(message.contains("TLS handshake"), "{message}");
    assert!(message.contains("does not speak TLS"), "{message}");
}

#[tokio::test]
async fn a_silent_client_that_hangs_up_does_not_get_through_secure() {
    let (_dir, certs) = dev_certs(&["127.0.0.1"]);
    let (port, task) = echo_server(&transport(&certs.node_files()), "127.0.0.1:0").await;
    let plain = Tcp
        .connect(&format!("127.0.0.1:{port}"))
        .await
        .expect("tcp connect");
    drop(plain);
    let ended = tokio::time::timeout(WAIT, task)
        .await
        .expect("secure ends in time")
        .expect("join");
    let message = err_of(ended);
    assert!(message.contains("TLS handshake"), "{message}");
}

#[tokio::test]
async fn accept_does_not_wait_for_the_handshake() {
    let (_dir, certs) = dev_certs(&["127.0.0.1"]);
    let listener = transport(&certs.node_files())
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    // A silent client: accept still returns it at once; only `secure` waits for it.
    let _silent = Tcp.connect(&addr.to_string()).await.expect("connect");
    let (raw, _) = tokio::time::timeout(Duration::from_secs(2), listener.accept())
        .await
        .expect("accept returns without a handshake")
        .expect("accept");
    let secured = tokio::time::timeout(Duration::from_millis(200), listener.secure(raw)).await;
    assert!(secured.is_err(), "secure waits for the client's hello");
}

#[tokio::test]
async fn a_client_only_transport_refuses_to_bind() {
    let (_dir, certs) = dev_certs(&["127.0.0.1"]);
    let client = transport(&certs.client_files());
    let message = err_of(client.bind("127.0.0.1:0").await);
    assert!(
        message.contains("no certificate and private key"),
        "{message}"
    );
}

#[test]
fn write_dev_certificates_refuses_to_overwrite_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = write_dev_certificates(dir.path(), &names(&["127.0.0.1"]), false).expect("write");
    assert_eq!(first, DevCertificates::in_dir(dir.path()));
    let ca = fs::read(&first.ca).expect("read ca");
    match write_dev_certificates(dir.path(), &names(&["127.0.0.1"]), false) {
        Err(TlsError::Exists { path }) => assert_eq!(path, first.ca),
        other => panic!("expected Exists, got {other:?}"),
    }
    assert_eq!(fs::read(&first.ca).expect("read ca"), ca, "left untouched");

    // Any one of the files is enough to refuse, and the message names it.
    let lone = tempfile::tempdir().expect("tempdir");
    fs::write(lone.path().join(KEY_FILE), "precious").expect("write");
    let message = err_of(write_dev_certificates(lone.path(), &names(&["a"]), false));
    assert!(message.contains(KEY_FILE), "{message}");
    assert!(
        !lone.path().join(CA_FILE).exists(),
        "nothing written when refused"
    );

    let again = write_dev_certificates(dir.path(), &names(&["127.0.0.1"]), true).expect("force");
    assert_ne!(fs::read(&again.ca).expect("read ca"), ca, "a new CA");
}

#[cfg(unix)]
#[test]
fn key_files_have_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
    let (dir, certs) = dev_certs(&["127.0.0.1"]);
    assert_eq!(mode(&certs.ca_key), 0o600);
    assert_eq!(mode(&certs.key), 0o600);
    assert_ne!(mode(&certs.ca) & 0o044, 0, "certificates stay readable");
    // Overwriting narrows a key file that had a wider mode.
    fs::set_permissions(&certs.key, fs::Permissions::from_mode(0o644)).expect("chmod");
    write_dev_certificates(dir.path(), &names(&["127.0.0.1"]), true).expect("force");
    assert_eq!(mode(&certs.key), 0o600);
}

#[test]
fn dev_certificate_names_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        write_dev_certificates(dir.path(), &[], false),
        Err(TlsError::NoNames)
    ));
    let message = err_of(write_dev_certificates(
        dir.path(),
        &names(&["node 1"]),
        false,
    ));
    assert!(message.contains("\"node 1\""), "{message}");
    assert!(matches!(subject_alt_name("[::1]"), Ok(SanType::IpAddress(ip)) if ip.is_loopback()));
    assert!(matches!(
        subject_alt_name("node-1.dfs.test"),
        Ok(SanType::DnsName(_))
    ));
}

#[test]
fn from_files_names_the_missing_file() {
    let (dir, certs) = dev_certs(&["127.0.0.1"]);
    let missing = dir.path().join("nope.pem");
    let message = err_of(Tls::from_files(Tcp::shared(), &TlsFiles::client(&missing)));
    assert!(
        message.contains("nope.pem") && message.contains("does not exist"),
        "{message}"
    );
    let files = TlsFiles::node(&certs.ca, &certs.cert, &missing);
    let message = err_of(Tls::from_files(Tcp::shared(), &files));
    assert!(message.contains("nope.pem"), "{message}");
}

#[test]
fn from_files_names_a_garbage_file() {
    let (dir, certs) = dev_certs(&["127.0.0.1"]);
    let garbage = dir.path().join("garbage.pem");
    fs::write(&garbage, "this is not a certificate\n").expect("write");
    let message = err_of(Tls::from_files(Tcp::shared(), &TlsFiles::client(&garbage)));
    assert!(
        message.contains("garbage.pem") && message.contains("not a PEM file"),
        "{message}"
    );

    let broken = dir.path().join("broken.pem");
    fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let message = err_of(Tls::from_files(Tcp::shared(), &TlsFiles::client(&broken)));
    assert!(message.contains("broken.pem"), "{message}");

    // Valid PEM, wrong contents: a key where the CA goes, a certificate where the key goes.
    let message = err_of(Tls::from_files(
        Tcp::shared(),
        &TlsFiles::client(&certs.key),
    ));
    assert!(
        message.contains(KEY_FILE) && message.contains("no certificate"),
        "{message}"
    );
    let files = TlsFiles::node(&certs.ca, &certs.cert, &certs.cert);
    let message = err_of(Tls::from_files(Tcp::shared(), &files));
    assert!(
        message.contains(CERT_FILE) && message.contains("no private key"),
        "{message}"
    );
}

#[test]
fn from_files_tells_a_key_of_another_certificate() {
    let (_dir, certs) = dev_certs(&["127.0.0.1"]);
    let files = TlsFiles::node(&certs.ca, &certs.cert, &certs.ca_key);
    match Tls::from_files(Tcp::shared(), &files) {
        Err(e @ TlsError::KeyMismatch { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(CA_KEY_FILE) && message.contains(CERT_FILE),
                "{message}"
            );
        }
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
    let half = TlsFiles {
        key: None,
        ..certs.node_files()
    };
    assert!(matches!(
        Tls::from_files(Tcp::shared(), &half),
        Err(TlsError::CertificateWithoutKey { .. })
    ));
}

#[test]
fn server_names_come_from_the_host_part() {
    assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
    assert_eq!(host_of("[::1]:7000"), "::1");
    assert_eq!(host_of("::1"), "::1");
    assert_eq!(host_of("node-1.dfs.test:7000"), "node-1.dfs.test");
    assert_eq!(host_of("localhost"), "localhost");
    assert!(matches!(
        server_name("127.0.0.1:1"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        server_name("[::1]:1"),
        Ok(ServerName::IpAddress(_))
    ));
    assert!(matches!(
        server_name("localhost:1"),
        Ok(ServerName::DnsName(_))
    ));
    let message = err_of(server_name("not a host:1"));
    assert!(message.contains("not a valid server name"), "{message}");
}

#[test]
fn civil_dates_from_day_counts() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(59), (1970, 3, 1));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(civil_from_days(19_722), (2023, 12, 31));
    assert_eq!(civil_from_days(20_513), (2026, 3, 1));
}

#[tokio::test]
async fn a_tls_client_of_a_plain_server_fails_without_hanging() {
    let (_dir, certs) = dev_certs(&["127.0.0.1"]);
    let listener = Tcp.bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    // A plain server that reads the client hello, answers nonsense and hangs up.
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(b"ERR expected a hello\n").await;
    });
    let client = transport(&certs.client_files());
    let result = tokio::time::timeout(WAIT, client.connect(&addr))
        .await
        .expect("fails in time");
    let message = err_of(result);
    assert!(
        message.starts_with(&format!("TLS handshake with {addr} failed: ")),
        "{message}"
    );
}

#[tokio::test]
async fn a_peer_gone_without_close_notify_reads_as_unexpected_eof() {
    let (_dir, certs) = dev_certs(&["127.0.0.1"]);
    let listener = transport(&certs.node_files())
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let client = transport(&certs.client_files());
    let (connected, accepted) = tokio::join!(client.connect(&addr), async {
        let (raw, _) = listener.accept().await.expect("accept");
        listener.secure(raw).await
    });
    let mut server_side = accepted.expect("secure");
    let mut client_side = connected.expect("connect");
    // The client reads first, taking in the server's TLS 1.3 session tickets: unread data
    // left in its socket would make its close a reset rather than an end of stream.
    server_side.write_all(b"hi").await.expect("write");
    server_side.flush().await.expect("flush");
    let mut hi = [0u8; 2];
    client_side.read_exact(&mut hi).await.expect("read");
    client_side.write_all(b"last").await.expect("write");
    client_side.flush().await.expect("flush");
    drop(client_side); // no shutdown: no close_notify
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, server_side.read_to_end(&mut buf))
        .await
        .expect("read in time");
    assert_eq!(buf, b"last", "what came before is delivered");
    let err = read.expect_err("an abrupt end is not a clean end of stream");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
}
