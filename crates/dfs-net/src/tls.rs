//! TLS as a [`Transport`]: encryption and server authentication over any inner transport.
//!
//! [`Tls`] wraps another transport (in practice [`Tcp`](crate::Tcp)). Its
//! [`connect`](Transport::connect) connects with the inner transport, then runs a TLS client
//! handshake that checks the server's certificate against the configured CA and against
//! the host part of the address (`HOST:PORT`, `[IPv6]:PORT`; an IP literal must be an IP
//! subject alternative name of the certificate, a host name a DNS one). Its
//! [`bind`](Transport::bind) returns a listener whose [`accept`](Listener::accept) hands out
//! raw streams at once and whose [`secure`](Listener::secure) runs the TLS server handshake,
//! so the handshake runs on the connection's own task, under the caller's timeout, never in
//! the accept loop.
//!
//! Only the server is authenticated by TLS: there are no client certificates. Peers prove
//! who they are with the protocol's own handshake, inside the encrypted stream.
//!
//! The configurations use rustls with the *ring* crypto provider, passed to each
//! configuration ([`client_config`], [`server_config`]), so no process-wide default
//! provider has to be installed.
//!
//! A node has a CA, a certificate and its private key ([`TlsFiles::node`]): it serves TLS
//! and connects to its peers trusting the CA. A client has only the CA
//! ([`TlsFiles::client`]). [`write_dev_certificates`] writes such a set for development and
//! tests: a CA, and one node certificate signed by it for every name the nodes are reached
//! by.
//!
//! Ending a TLS stream cleanly takes a [`shutdown`](tokio::io::AsyncWriteExt::shutdown),
//! which sends a TLS `close_notify`. A stream the peer drops without one reads, after the
//! data that came before, as an [`io::ErrorKind::UnexpectedEof`] error rather than as a
//! clean end of stream, so that a truncation by someone in between is not mistaken for
//! the peer's own end.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{BoxStream, Listener, SharedTransport, Transport};

pub use rustls;

/// The name of the CA certificate [`write_dev_certificates`] writes.
pub const CA_FILE: &str = "ca.pem";
/// The name of the CA's private key [`write_dev_certificates`] writes.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The name of the node certificate [`write_dev_certificates`] writes.
pub const CERT_FILE: &str = "node.pem";
/// The name of the node certificate's private key [`write_dev_certificates`] writes.
pub const KEY_FILE: &str = "node-key.pem";

/// How long development certificates are valid, from the day before they are written.
const DEV_VALIDITY_YEARS: i32 = 10;

/// Why TLS files could not be read, used or written. Every message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file does not exist.
    #[error("{} does not exist", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it answered.
        source: io::Error,
    },
    /// A file is not PEM (`-----BEGIN ...-----` sections), or a section of it is broken.
    #[error("{} is not a PEM file: {reason}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A PEM file meant to hold certificates holds none.
    #[error("{} holds no certificate (no -----BEGIN CERTIFICATE----- section)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file meant to hold a private key holds none.
    #[error("{} holds no private key (no -----BEGIN PRIVATE KEY----- section)", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A certificate of the CA file cannot be a trust anchor.
    #[error("{} holds a certificate that cannot be used as a CA: {source}", path.display())]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// What rustls answered.
        source: rustls::Error,
    },
    /// The private key is not the key of the certificate.
    #[error(
        "the private key in {} does not belong to the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
    },
    /// The certificate and key cannot serve TLS for another reason (an unsupported key
    /// type, a certificate rustls cannot parse).
    #[error(
        "cannot serve TLS with the certificate in {} and the private key in {}: {source}",
        cert.display(),
        key.display()
    )]
    CertificateAndKey {
        /// The certificate file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// What rustls answered.
        source: rustls::Error,
    },
    /// A certificate was given without its private key.
    #[error("the certificate {} was given without its private key file", path.display())]
    CertificateWithoutKey {
        /// The certificate file.
        path: PathBuf,
    },
    /// A private key was given without its certificate.
    #[error("the private key {} was given without its certificate file", path.display())]
    KeyWithoutCertificate {
        /// The private key file.
        path: PathBuf,
    },
    /// rustls refused the configuration itself (not expected with the built-in provider).
    #[error("TLS configuration refused: {0}")]
    Config(#[source] rustls::Error),
    /// [`write_dev_certificates`] would overwrite a file and was not told to.
    #[error("{} already exists (not overwritten without force)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What writing it answered.
        source: io::Error,
    },
    /// [`write_dev_certificates`] was given no name for the node certificate.
    #[error("no names given for the node certificate (host names or IP addresses)")]
    NoNames,
    /// A name for the node certificate is neither an IP address nor a DNS name.
    #[error("{name:?} cannot be a certificate name: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Generating a key or a certificate failed.
    #[error("cannot generate the development certificates: {0}")]
    Generate(#[source] rcgen::Error),
}

/// Where a [`Tls`] transport's PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) servers must be signed by.
    pub ca: PathBuf,
    /// This side's certificate (chain, leaf first), to serve TLS; with [`key`](Self::key).
    pub cert: Option<PathBuf>,
    /// The private key of [`cert`](Self::cert).
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// A client's files: only the CA, so it connects but cannot serve.
    pub fn client(ca: impl Into<PathBuf>) -> TlsFiles {
        TlsFiles {
            ca: ca.into(),
            cert: None,
            key: None,
        }
    }

    /// A node's files: the CA it trusts its peers by, and its certificate and key to serve.
    pub fn node(
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> TlsFiles {
        TlsFiles {
            ca: ca.into(),
            cert: Some(cert.into()),
            key: Some(key.into()),
        }
    }
}

/// The crypto provider of every configuration built here.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting the CA certificate(s) in the PEM file `ca`, with no
/// client certificate.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(ca)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: ca.to_owned(),
            source,
        })?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server configuration serving the certificate chain in the PEM file `cert` (leaf
/// first) with the private key in the PEM file `key`, asking no client certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certificates(cert)?;
    let private_key = read_private_key(key)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                }
            }
            source => TlsError::CertificateAndKey {
                cert: cert.to_owned(),
                key: key.to_owned(),
                source,
            },
        })?;
    Ok(Arc::new(config))
}

/// The PEM sections of a file.
fn read_pem(path: &Path) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    let bytes = fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsError::Missing {
            path: path.to_owned(),
        },
        _ => TlsError::Read {
            path: path.to_owned(),
            source,
        },
    })?;
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if sections.is_empty() {
        return Err(TlsError::NotPem {
            path: path.to_owned(),
            reason: "no certificate or private key section (-----BEGIN ...-----) in it".into(),
        });
    }
    Ok(sections)
}

/// The certificates of a PEM file, in their order; at least one.
fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = read_pem(path)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    read_pem(path)?
        .into_iter()
        .find_map(|(kind, der)| PrivateKeyDer::from_pem(kind, der))
        .ok_or_else(|| TlsError::NoPrivateKey {
            path: path.to_owned(),
        })
}

/// TLS over an inner transport. See the [module documentation](self).
#[derive(Clone)]
pub struct Tls {
    inner: SharedTransport,
    connector: TlsConnector,
    acceptor: Option<TlsAcceptor>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("inner", &self.inner)
            .field("serves", &self.serves())
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// TLS over `inner`: connects as a client with `client`, and serves with `server`
    /// (without it, [`bind`](Transport::bind) refuses).
    pub fn new(
        inner: SharedTransport,
        client: Arc<ClientConfig>,
        server: Option<Arc<ServerConfig>>,
    ) -> Tls {
        Tls {
            inner,
            connector: TlsConnector::from(client),
            acceptor: server.map(TlsAcceptor::from),
        }
    }

    /// TLS over `inner` from PEM files: trusts `files.ca`, and serves `files.cert` with
    /// `files.key` if both are given (a node) or does not serve if neither is (a client).
    pub fn from_files(inner: SharedTransport, files: &TlsFiles) -> Result<Tls, TlsError> {
        let client = client_config(&files.ca)?;
        let server = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => Some(server_config(cert, key)?),
            (None, None) => None,
            (Some(cert), None) => {
                return Err(TlsError::CertificateWithoutKey { path: cert.clone() });
            }
            (None, Some(key)) => {
                return Err(TlsError::KeyWithoutCertificate { path: key.clone() });
            }
        };
        Ok(Tls::new(inner, client, server))
    }

    /// Whether this transport can serve (it has a server configuration).
    pub fn serves(&self) -> bool {
        self.acceptor.is_some()
    }

    /// This transport as a [`SharedTransport`].
    pub fn into_shared(self) -> SharedTransport {
        Arc::new(self)
    }
}

impl Transport for Tls {
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<BoxStream>> {
        let name = match server_name(addr) {
            Ok(name) => name,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let inner = self.inner.connect(addr);
        let connector = self.connector.clone();
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = inner.await?;
            let stream = connector
                .connect(name, stream)
                .await
                .map_err(|e| handshake_error(&format!("TLS handshake with {addr}"), e))?;
            Ok(Box::new(stream) as BoxStream)
        })
    }

    fn bind(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        let Some(acceptor) = self.acceptor.clone() else {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot serve TLS on {addr}: no certificate and private key configured \
                     (this TLS transport only connects)"
                ),
            );
            return Box::pin(std::future::ready(Err(e)));
        };
        let inner = self.inner.bind(addr);
        Box::pin(async move {
            let inner = inner.await?;
            Ok(Box::new(TlsListener { inner, acceptor }) as Box<dyn Listener>)
        })
    }
}

/// A failed handshake: rustls' message, prefixed with `context` (whose handshake), and a
/// hint for the failures whose cause is common and not obvious from rustls' words.
fn handshake_error(context: &str, e: io::Error) -> io::Error {
    use rustls::CertificateError::{BadSignature, UnknownIssuer};
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let hint = match rustls_error {
        Some(rustls::Error::InvalidCertificate(UnknownIssuer | BadSignature)) => {
            " (the server's certificate is not signed by the CA this client trusts)"
        }
        Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
            " (the peer does not speak TLS)"
        }
        _ if e.kind() == io::ErrorKind::UnexpectedEof => {
            " (the peer closed the connection; does it speak TLS?)"
        }
        _ => "",
    };
    io::Error::new(e.kind(), format!("{context} failed: {e}{hint}"))
}

/// The server name a TLS client checks the certificate of `addr` (`HOST:PORT`,
/// `[IPV6]:PORT`, or a bare host) against.
fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = host_of(addr);
    ServerName::try_from(host)
        .map(|name| name.to_owned())
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot connect with TLS to {addr}: {host:?} is not a valid server name ({e})"
                ),
            )
        })
}

/// The host part of `HOST:PORT` or `[IPV6]:PORT`; a bare host or IP address is its own host.
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[')
        && let Some((host, _)) = rest.split_once(']')
    {
        return host;
    }
    if addr.parse::<IpAddr>().is_ok() {
        return addr;
    }
    addr.rsplit_once(':').map_or(addr, |(host, _port)| host)
}

/// [`Tls`]'s listener: accepts with the inner listener, handshakes in `secure`.
struct TlsListener {
    inner: Box<dyn Listener>,
    acceptor: TlsAcceptor,
}

impl Listener for TlsListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxStream, std::net::SocketAddr)>> {
        self.inner.accept()
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    fn secure(&self, stream: BoxStream) -> BoxFuture<'static, io::Result<BoxStream>> {
        let inner = self.inner.secure(stream);
        let acceptor = self.acceptor.clone();
        Box::pin(async move {
            let stream = inner.await?;
            let stream = acceptor
                .accept(stream)
                .await
                .map_err(|e| handshake_error("TLS handshake with a connecting peer", e))?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

/// The four files [`write_dev_certificates`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCertificates {
    /// The CA certificate ([`CA_FILE`]), what nodes and clients trust.
    pub ca: PathBuf,
    /// The CA's private key ([`CA_KEY_FILE`], mode 0600), to sign more certificates.
    pub ca_key: PathBuf,
    /// The node certificate ([`CERT_FILE`]), signed by the CA.
    pub cert: PathBuf,
    /// The node certificate's private key ([`KEY_FILE`], mode 0600).
    pub key: PathBuf,
}

impl DevCertificates {
    /// Where [`write_dev_certificates`] writes in `dir` (nothing is read or written).
    pub fn in_dir(dir: &Path) -> DevCertificates {
        DevCertificates {
            ca: dir.join(CA_FILE),
            ca_key: dir.join(CA_KEY_FILE),
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
        }
    }

    /// A node's [`TlsFiles`]: the CA, the node certificate and its key.
    pub fn node_files(&self) -> TlsFiles {
        TlsFiles::node(&self.ca, &self.cert, &self.key)
    }

    /// A client's [`TlsFiles`]: the CA only.
    pub fn client_files(&self) -> TlsFiles {
        TlsFiles::client(&self.ca)
    }

    /// The four files, CA first.
    fn all(&self) -> [&Path; 4] {
        [&self.ca, &self.ca_key, &self.cert, &self.key]
    }
}

/// Writes development certificates into `dir` (created if missing): a CA ("dfs development
/// CA", [`CA_FILE`] and its key [`CA_KEY_FILE`]) and one node certificate signed by it
/// ([`CERT_FILE`] and its key [`KEY_FILE`]), with every name of `names` as a subject
/// alternative name: IP addresses (`10.0.0.1`, `::1`, `[::1]`) as IP names, anything else
/// as a DNS name. All nodes can share the node certificate if it names them all. Both are
/// valid for ten years from the day before. Keys are ECDSA P-256, in files of mode 0600.
///
/// Without `force`, refuses (before writing anything) if any of the four files exists,
/// naming it; with `force`, overwrites them. Not for production: the CA key lies next to
/// the certificates, and one key serves every node.
pub fn write_dev_certificates(
    dir: &Path,
    names: &[String],
    force: bool,
) -> Result<DevCertificates, TlsError> {
    if names.is_empty() {
        return Err(TlsError::NoNames);
    }
    let sans = names
        .iter()
        .map(|name| subject_alt_name(name))
        .collect::<Result<Vec<_>, _>>()?;
    let files = DevCertificates::in_dir(dir);
    if !force && let Some(path) = files.all().into_iter().find(|path| path.exists()) {
        return Err(TlsError::Exists {
            path: path.to_owned(),
        });
    }
    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;

    let ((y0, m0, d0), (y1, m1, d1)) = dev_validity();
    let (not_before, not_after) = (
        rcgen::date_time_ymd(y0, m0, d0),
        rcgen::date_time_ymd(y1, m1, d1),
    );
    let ca_key = KeyPair::generate().map_err(TlsError::Generate)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "dfs development CA");
    ca.distinguished_name.push(DnType::OrganizationName, "dfs");
    // Tells apart two development CAs (same common name): a certificate of one CA checked
    // against the other is then "UnknownIssuer", not a signature failure.
    ca.distinguished_name.push(
        DnType::OrganizationalUnitName,
        format!("CA {}", key_id(&ca_key)),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key).map_err(TlsError::Generate)?;
    let issuer = Issuer::from_params(&ca, &ca_key);

    let node_key = KeyPair::generate().map_err(TlsError::Generate)?;
    let mut node = CertificateParams::default();
    node.distinguished_name = DistinguishedName::new();
    node.distinguished_name
        .push(DnType::CommonName, "dfs development node");
    node.distinguished_name
        .push(DnType::OrganizationName, "dfs");
    node.subject_alt_names = sans;
    node.is_ca = IsCa::ExplicitNoCa;
    node.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    node.use_authority_key_identifier_extension = true;
    node.not_before = not_before;
    node.not_after = not_after;
    let node_cert = node
        .signed_by(&node_key, &issuer)
        .map_err(TlsError::Generate)?;

    write_file(&files.ca, &ca_cert.pem(), false, force)?;
    write_file(&files.ca_key, &ca_key.serialize_pem(), true, force)?;
    write_file(&files.cert, &node_cert.pem(), false, force)?;
    write_file(&files.key, &node_key.serialize_pem(), true, force)?;
    Ok(files)
}

/// A short hexadecimal id of a key pair (the start of its public key's point).
fn key_id(key: &KeyPair) -> String {
    // The raw public key of P-256 is 0x04 and two coordinates: skip the 0x04.
    key.public_key_raw()
        .iter()
        .skip(1)
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `name` as a subject alternative name: an IP address (brackets allowed) or a DNS name.
fn subject_alt_name(name: &str) -> Result<SanType, TlsError> {
    let bare = name
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(name);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let bad = |reason: String| TlsError::BadName {
        name: name.to_owned(),
        reason,
    };
    DnsName::try_from(name).map_err(|e| bad(format!("not an IP address nor a DNS name ({e})")))?;
    let ia5 = name
        .try_into()
        .map_err(|e: rcgen::Error| bad(e.to_string()))?;
    Ok(SanType::DnsName(ia5))
}

/// The validity of development certificates, as (year, month, day) of the first and the
/// last day: from yesterday (UTC, some leeway for clocks behind ours) for
/// [`DEV_VALIDITY_YEARS`].
fn dev_validity() -> ((i32, u8, u8), (i32, u8, u8)) {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 86_400;
    let (year, month, day) = civil_from_days(days.saturating_sub(1));
    // Day 28 at most, so that the same day exists in the last year (29 February).
    (
        (year, month, day),
        (year + DEV_VALIDITY_YEARS, month, day.min(28)),
    )
}

/// The (year, month 1-12, day 1-31) of a count of days since 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (i32, u8, u8) {
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], from March
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).unwrap_or(i32::MAX),
        u8::try_from(month).unwrap_or(1),
        u8::try_from(day).unwrap_or(1),
    )
}

/// Writes `contents` to `path`: only if it does not exist unless `force`; `private` files
/// get mode 0600 before anything is written into them.
fn write_file(path: &Path, contents: &str, private: bool, force: bool) -> Result<(), TlsError> {
    let failed = |source: io::Error| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => TlsError::Exists {
            path: path.to_owned(),
        },
        _ => failed(source),
    })?;
    // An overwritten file keeps its mode: narrow it before the key goes in.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(failed)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    file.write_all(contents.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)
}

#[cfg(test)]
mod tests;
