//! TLS for `--tls-listen`: the certificate and key, loaded from PEM files and reloadable.
//!
//! rustls with the ring provider, TLS 1.2 and 1.3 (nothing older exists in rustls). The
//! configuration in force is swapped whole on [`Certs::reload`] (SIGHUP in the binary):
//! handshakes that start afterwards use the new certificate, sessions already established
//! keep the keys they negotiated, and files that do not load leave the old configuration in
//! place.

use anyhow::{Context, anyhow};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

/// The server's certificate chain and key, as files and as the configuration in force.
#[derive(Debug)]
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    /// Read once per new TLS connection (a clone of an `Arc`); written on reload.
    current: RwLock<Arc<ServerConfig>>,
}

impl Certs {
    /// Loads the certificate chain and key. Fails, saying which file and why, if either is
    /// missing, holds no PEM item of its kind, or the key does not fit the certificate.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Certs>> {
        let config = server_config(cert, key)?;
        Ok(Arc::new(Certs {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(config)),
        }))
    }

    /// Reads the files again. On success new handshakes use them; on failure nothing
    /// changes and the error says why.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// The configuration for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn server_config(cert: &Path, key: &Path) -> anyhow::Result<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot parse the TLS certificate {}", cert.display()))?;
    if chain.is_empty() {
        return Err(anyhow!(
            "no certificate (-----BEGIN CERTIFICATE-----) in {}",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        // TLS 1.2 is the minimum: rustls has nothing older.
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| {
            format!(
                "the key {} does not fit the certificate {}",
                key.display(),
                cert.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let made =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, made.cert.pem()).expect("write cert");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
        (cert, key)
    }

    #[test]
    fn loads_a_pair_and_refuses_what_is_not_one() {
        let dir = std::env::temp_dir().join(format!("chat-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = write_pair(&dir, "a");
        let (_, other_key) = write_pair(&dir, "b");
        let certs = Certs::load(&cert, &key).expect("a good pair loads");

        let missing = dir.join("missing.pem");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        for (c, k, says) in [
            (&missing, &key, "cannot read the TLS certificate"),
            (&garbage, &key, "no certificate"),
            (&cert, &missing, "cannot read a private key"),
            (&cert, &garbage, "cannot read a private key"),
            (&key, &key, "no certificate"),
            (&cert, &other_key, "does not fit"),
        ] {
            let error = format!("{:#}", Certs::load(c, k).expect_err("refused"));
            assert!(error.contains(says), "{c:?} {k:?}: {error}");
        }

        // A reload that fails keeps what was there, and says why.
        std::fs::write(&cert, "broken\n").expect("write");
        assert!(certs.reload().is_err());
        let _still = certs.acceptor();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
