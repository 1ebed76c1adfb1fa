//! TLS to etcd: the PEM files of `[source.etcd]` read into a rustls client
//! configuration (ring as the crypto provider, so the build needs neither
//! OpenSSL nor aws-lc), checked once at validation and once per client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The PEM files of `[source.etcd]` for TLS: whom to trust and, for etcd's
/// `--client-cert-auth`, who this client is. Paths, not contents, so a
/// restart picks up rotated files and the key never sits in a Debug print.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// CA bundle that signs etcd's server certificate; without it the
    /// public web roots (webpki-roots) are trusted.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// A TLS file of `[source.etcd]` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Which setting (`ca_file`, `cert_file`, `key_file`).
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable PEM item, or the key does not fit the
    /// certificate.
    #[error("{path}: {message}")]
    Invalid {
        /// Which setting (`ca_file`, `cert_file`, `key_file`).
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl TlsError {
    /// The setting it is about (`ca_file`, `cert_file` or `key_file`), for
    /// the error path `source.etcd.<field>`.
    pub fn field(&self) -> &'static str {
        match self {
            TlsError::Read { field, .. } | TlsError::Invalid { field, .. } => field,
        }
    }
}

fn read_pem(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(field: &'static str, path: &Path, message: String) -> TlsError {
    TlsError::Invalid {
        field,
        path: path.to_path_buf(),
        message,
    }
}

/// Every certificate of a PEM file (other PEM items are skipped); at least
/// one is required.
fn certificates(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(field, path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            field,
            path,
            "no PEM certificate (BEGIN CERTIFICATE) in it".into(),
        ));
    }
    Ok(certs)
}

/// Reads and checks the TLS files into the configuration `https://`
/// endpoints are dialled with: every certificate parses and the client key
/// matches the client certificate (so `check` and a reload report a bad file
/// instead of a source that never syncs). Without `ca_file` the public web
/// roots are trusted; without `cert_file`/`key_file` no client certificate
/// is presented.
pub fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match &files.ca_file {
        Some(ca) => {
            for cert in certificates("ca_file", ca)? {
                roots.add(cert).map_err(|e| {
                    invalid("ca_file", ca, format!("not a usable CA certificate: {e}"))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| {
            // ring supports the default versions: only a broken build gets here.
            let ca = files.ca_file.clone().unwrap_or_default();
            invalid("ca_file", &ca, format!("TLS setup: {e}"))
        })?
        .with_root_certificates(roots);
    let config = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates("cert_file", cert)?;
            let key_pem = read_pem("key_file", key)?;
            let private = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| invalid("key_file", key, format!("no usable PEM private key: {e}")))?;
            let does_not_fit = |e: rustls::Error| {
                invalid(
                    "key_file",
                    key,
                    format!("does not fit {}: {e}", cert.display()),
                )
            };
            rustls::sign::CertifiedKey::from_der(chain.clone(), private.clone_key(), &provider)
                .map_err(does_not_fit)?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(does_not_fit)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_files_the_web_roots_are_trusted_and_no_certificate_is_presented() {
        let config = tls_config(&TlsFiles::default()).expect("config");
        assert!(!config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_with_its_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").expect("write");
        let err = tls_config(&TlsFiles {
            ca_file: Some(ca),
            ..TlsFiles::default()
        })
        .expect_err("refused");
        assert_eq!(err.field(), "ca_file");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn a_missing_file_is_a_read_error_on_its_field() {
        let err = tls_config(&TlsFiles {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        })
        .expect_err("refused");
        assert!(
            matches!(
                err,
                TlsError::Read {
                    field: "ca_file",
                    ..
                }
            ),
            "{err}"
        );
    }
}
