//! TLS for the https listener: rustls (aws-lc-rs provider, its default,
//! with the post-quantum X25519MLKEM768 key exchange first) from a PEM
//! certificate chain and a PEM private key, HTTP/1.1 only.
//!
//! The pair is loaded at start and loaded again when either file changes
//! (checked every `tls_check_interval`) or on request (SIGHUP in the
//! binary), so a renewed certificate (certbot, acme.sh) is served without
//! a restart and without dropping a connection. A pair that does not load
//! (a half-written file, a key that does not match the certificate) is
//! refused and the previous one stays in service. This module must never
//! accept a connection without a configured certificate, nor fall back to
//! plain HTTP.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

/// Why the TLS configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no PEM certificate.
    #[error("reading TLS certificate '{path}': {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key file could not be read or holds no PEM private key.
    #[error("reading TLS private key '{path}': {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match).
    #[error("TLS certificate '{cert}' and key '{key}': {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// What identifies a version of a file without reading it: device, inode,
/// size and modification time, following symbolic links (certbot's
/// `live/` links move to a new file at each renewal).
type FileStamp = (u64, u64, u64, i64, i64);

/// Both files' stamps; `None` for a file that cannot be examined.
pub(crate) type PairStamp = [Option<FileStamp>; 2];

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

/// What a check of the files found.
#[derive(Debug)]
pub(crate) enum Reload {
    /// Neither file changed since the last load or failed attempt.
    Unchanged,
    /// The new pair is in service.
    Reloaded,
    /// The files changed (or a reload was asked for) but the pair does not
    /// load; the previous one stays in service.
    Failed(TlsError),
}

/// The https listener's certificate and key, replaceable while serving.
pub(crate) struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The files' stamps at the last load or failed attempt: a pair that
    /// failed is tried again when a file changes again, and reported once.
    tried: Mutex<PairStamp>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Loads the pair; an error names the file and the reason.
    pub(crate) fn open(cert: &Path, key: &Path) -> Result<Arc<Certificates>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // Stamped before reading: a change after the stamp shows at the next check.
        let stamps = [stamp(cert), stamp(key)];
        let loaded = load(cert, key, &provider)?;
        Ok(Arc::new(Certificates {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: ArcSwap::from_pointee(loaded),
            tried: Mutex::new(stamps),
        }))
    }

    /// The files' stamps now.
    pub(crate) fn stamps(&self) -> PairStamp {
        [stamp(&self.cert), stamp(&self.key)]
    }

    /// Whether `stamps` differ from those of the last load or attempt.
    pub(crate) fn is_new(&self, stamps: &PairStamp) -> bool {
        *self.tried.lock().unwrap_or_else(|e| e.into_inner()) != *stamps
    }

    /// Loads the pair again if either file changed since the last attempt
    /// (`force`: whether or not).
    pub(crate) fn reload(&self, force: bool) -> Reload {
        let stamps = self.stamps();
        {
            let mut tried = self.tried.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *tried == stamps {
                return Reload::Unchanged;
            }
            *tried = stamps;
        }
        match load(&self.cert, &self.key, &self.provider) {
            Ok(loaded) => {
                self.current.store(Arc::new(loaded));
                Reload::Reloaded
            }
            Err(e) => Reload::Failed(e),
        }
    }

    /// The acceptor for the https listeners; every handshake takes the
    /// pair in service at that moment.
    pub(crate) fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| config_error(&self.cert, &self.key, source))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        // dyndns2 is HTTP/1.x; advertise only that (RFC 7301).
        config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Hands every handshake the pair in service (one atomic load).
#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}

/// Reads the chain and the key and checks that they belong together.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Certificate {
        path: cert.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in the file".into()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    // Parses the key and compares its public half with the certificate's.
    CertifiedKey::from_der(chain, private_key, provider)
        .map_err(|source| config_error(cert, key, source))
}

/// rustls refused the pair or the configuration built on it.
fn config_error(cert: &Path, key: &Path, source: rustls::Error) -> TlsError {
    TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new self-signed pair from `openssl req` (the test suite installs
    /// openssl): `DIR/NAME.crt`, `DIR/NAME.key`.
    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        pair_with(dir, name, &[])
    }

    fn pair_with(dir: &Path, name: &str, extensions: &[&str]) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(extensions.iter().flat_map(|e| ["-addext", e]))
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs (apt-get install openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (cert, key)
    }

    fn der(cert: &Path) -> CertificateDer<'static> {
        CertificateDer::pem_file_iter(cert)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
    }

    fn served(certificates: &Certificates) -> CertificateDer<'static> {
        certificates.current.load().cert[0].clone()
    }

    /// Files are rewritten with a later modification time than the last
    /// load's: a file system's clock may not tick between two writes.
    fn replace(from: &Path, to: &Path, seconds: i64) {
        std::fs::copy(from, to).unwrap();
        let at = std::time::SystemTime::now() + std::time::Duration::from_secs(seconds as u64);
        std::fs::File::options()
            .write(true)
            .open(to)
            .unwrap()
            .set_modified(at)
            .unwrap();
    }

    #[test]
    fn a_changed_pair_is_loaded_and_a_broken_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a_cert, a_key) = pair(dir.path(), "a");
        let (b_cert, b_key) = pair(dir.path(), "b");
        let (c_cert, _) = pair(dir.path(), "c");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        replace(&a_cert, &cert, 0);
        replace(&a_key, &key, 0);

        let certificates = Certificates::open(&cert, &key).unwrap();
        assert_eq!(served(&certificates), der(&a_cert));
        assert!(matches!(certificates.reload(false), Reload::Unchanged));

        // A renewal: both files new.
        replace(&b_cert, &cert, 1);
        replace(&b_key, &key, 1);
        assert!(certificates.is_new(&certificates.stamps()));
        assert!(matches!(certificates.reload(false), Reload::Reloaded));
        assert_eq!(served(&certificates), der(&b_cert));
        assert!(!certificates.is_new(&certificates.stamps()));

        // Another certificate with the key in service: refused, once.
        replace(&c_cert, &cert, 2);
        match certificates.reload(false) {
            Reload::Failed(TlsError::Config { source, .. }) => {
                assert!(source.to_string().contains("key"), "{source}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(served(&certificates), der(&b_cert));
        assert!(matches!(certificates.reload(false), Reload::Unchanged));

        // Half written: refused with the file's name, the pair stays.
        let text = std::fs::read(&b_cert).unwrap();
        std::fs::write(&cert, &text[..text.len() / 2]).unwrap();
        match certificates.reload(false) {
            Reload::Failed(e @ TlsError::Certificate { .. }) => {
                assert!(e.to_string().contains("cert.pem"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        // A missing key file, likewise.
        replace(&b_cert, &cert, 3);
        std::fs::remove_file(&key).unwrap();
        assert!(matches!(
            certificates.reload(false),
            Reload::Failed(TlsError::Key { .. })
        ));
        assert_eq!(served(&certificates), der(&b_cert));

        // Whole again; a forced reload loads even unchanged files.
        replace(&a_key, &key, 4);
        replace(&a_cert, &cert, 4);
        assert!(matches!(certificates.reload(false), Reload::Reloaded));
        assert_eq!(served(&certificates), der(&a_cert));
        assert!(matches!(certificates.reload(true), Reload::Reloaded));
        assert!(matches!(certificates.reload(false), Reload::Unchanged));
    }

    #[test]
    fn a_pair_that_does_not_load_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let (a_cert, _) = pair(dir.path(), "a");
        let (_, b_key) = pair(dir.path(), "b");
        let e = Certificates::open(&a_cert, &b_key).unwrap_err();
        assert!(matches!(e, TlsError::Config { .. }), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = Certificates::open(&missing, &b_key).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }

    /// Through a real handshake: a client that offers the post-quantum
    /// hybrid X25519MLKEM768 (Chrome, Firefox, curl on OpenSSL 3.5, Go)
    /// gets it, and a client that offers only classical groups (routers'
    /// OpenSSL 1.1 or mbedTLS) still gets X25519.
    #[tokio::test]
    async fn post_quantum_key_exchange_is_preferred() {
        use rustls::NamedGroup;
        use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
        use rustls::pki_types::ServerName;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dir = tempfile::tempdir().unwrap();
        // A leaf that webpki accepts as its own trust anchor.
        let (cert, key) = pair_with(
            dir.path(),
            "a",
            &[
                "subjectAltName=DNS:localhost",
                "basicConstraints=critical,CA:FALSE",
            ],
        );
        let acceptor = Certificates::open(&cert, &key).unwrap().acceptor().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&cert)).unwrap();
        let roots = Arc::new(roots);
        for (groups, expected) in [
            (
                vec![kx_group::X25519MLKEM768, kx_group::X25519],
                NamedGroup::X25519MLKEM768,
            ),
            (
                vec![kx_group::X25519, kx_group::SECP256R1],
                NamedGroup::X25519,
            ),
        ] {
            let provider = rustls::crypto::CryptoProvider {
                kx_groups: groups,
                ..default_provider()
            };
            let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            let acceptor = acceptor.clone();
            let server = tokio::spawn(async move {
                let mut stream = acceptor.accept(server_io).await.unwrap();
                let mut byte = [0; 1];
                stream.read_exact(&mut byte).await.unwrap();
                stream.write_all(&byte).await.unwrap();
                stream.flush().await.unwrap();
                stream
                    .get_ref()
                    .1
                    .negotiated_key_exchange_group()
                    .map(|g| g.name())
            });
            let name = ServerName::try_from("localhost").unwrap();
            let mut stream = connector.connect(name, client_io).await.unwrap();
            stream.write_all(b"x").await.unwrap();
            let mut byte = [0; 1];
            stream.read_exact(&mut byte).await.unwrap();
            assert_eq!(&byte, b"x");
            let client_saw = stream
                .get_ref()
                .1
                .negotiated_key_exchange_group()
                .map(|g| g.name());
            assert_eq!(client_saw, Some(expected));
            assert_eq!(server.await.unwrap(), Some(expected));
        }
    }
}
