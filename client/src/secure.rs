//! `--tls` and the room password: what the connection needs to reach a server over TLS and
//! get into a room that has a password.
//!
//! The server is verified against the system's trusted roots plus any `--tls-ca` file; a
//! failed verification ends the attempt (the reason goes to the status bar) and is never
//! followed by a plain-text try. The password comes from `CHAT_PASSWORD` or
//! `--password-file`, never from a flag of its own, which `ps` would show to everyone.

use anyhow::{Context, anyhow, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// How to reach the server over TLS: whom to trust and which name to verify.
#[derive(Clone)]
pub struct Tls {
    pub connector: TlsConnector,
    /// The host part of `--server`, which the certificate must name.
    pub name: ServerName<'static>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish()
    }
}

impl Tls {
    /// Trusts the system's roots and, if given, the certificates in `extra_ca` (PEM), and
    /// verifies the host of `server` (`HOST:PORT`, `[V6]:PORT`).
    pub fn new(server: &str, extra_ca: Option<&Path>) -> anyhow::Result<Tls> {
        let mut roots = RootCertStore::empty();
        // A system without a usable store still works with --tls-ca alone.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_ca {
            let mut added = 0;
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read --tls-ca {}", path.display()))?
            {
                let cert =
                    cert.with_context(|| format!("cannot parse --tls-ca {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("--tls-ca {}: not a usable CA", path.display()))?;
                added += 1;
            }
            if added == 0 {
                bail!("no certificate in --tls-ca {}", path.display());
            }
        }
        if roots.is_empty() {
            bail!(
                "no trusted certificates: the system has none; give the server's CA with --tls-ca"
            );
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            // TLS 1.2 and 1.3.
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name: server_name(server)?,
        })
    }
}

/// The host of `HOST:PORT` as the name to verify: a DNS name or an IP address.
pub fn server_name(server: &str) -> anyhow::Result<ServerName<'static>> {
    let host = match server.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => server,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| anyhow!("{host:?} is not a host name or address to verify"))
}

/// The room password. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    pub fn new(text: impl Into<String>) -> Password {
        Password(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// From `--password-file` if given, else from `CHAT_PASSWORD` (`env`), else none. A file
    /// loses one trailing newline, as the server reads its own.
    pub fn find(file: Option<&Path>, env: Option<String>) -> anyhow::Result<Option<Password>> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --password-file {}", path.display()))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            return Ok(Some(Password::new(text)));
        }
        Ok(env.filter(|p| !p.is_empty()).map(Password::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_to_verify_is_the_host_of_the_address() {
        let name = |s: &str| server_name(s).map(|n| n.to_str().into_owned());
        assert_eq!(
            name("chat.example.org:6697").ok().as_deref(),
            Some("chat.example.org")
        );
        assert_eq!(name("127.0.0.1:6697").ok().as_deref(), Some("127.0.0.1"));
        assert_eq!(name("[::1]:6697").ok().as_deref(), Some("::1"));
        assert_eq!(name("localhost").ok().as_deref(), Some("localhost"));
        assert!(name("bad host:1").is_err());
    }

    #[test]
    fn a_password_file_loses_one_trailing_newline_and_beats_the_environment() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("password");
        std::fs::write(&file, "from file\n").expect("write");
        let found = Password::find(Some(&file), Some("from env".into())).expect("read");
        assert_eq!(found, Some(Password::new("from file")));
        let found = Password::find(None, Some("from env".into())).expect("read");
        assert_eq!(found, Some(Password::new("from env")));
        assert_eq!(Password::find(None, Some(String::new())).expect("ok"), None);
        assert_eq!(Password::find(None, None).expect("ok"), None);
        assert!(Password::find(Some(&dir.path().join("missing")), None).is_err());
        assert_eq!(format!("{:?}", Password::new("secret")), "Password(..)");
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").expect("write");
        let error = Tls::new("localhost:6697", Some(&file)).expect_err("refused");
        assert!(format!("{error:#}").contains("no certificate"), "{error:#}");
        assert!(Tls::new("localhost:6697", Some(&dir.path().join("missing"))).is_err());
    }
}
