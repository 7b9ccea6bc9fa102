//! TLS to PostgreSQL with rustls, with libpq's `sslmode` meanings:
//! `disable` (no TLS), `prefer` (default: TLS if the server offers it, certificate not
//! checked), `require` (TLS, certificate not checked), `verify-ca` (chain checked against
//! OUTBOX_DATABASE_CA_FILE or the system roots), `verify-full` (chain and host name).
//! tokio-postgres itself only knows disable/prefer/require, so the verification modes are
//! taken out of the URL here and enforced by the rustls verifier.

use std::{path::Path, sync::Arc};

use rustls::{
    DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("invalid sslmode {0:?}: expected disable, prefer, require, verify-ca or verify-full")]
    SslMode(String),
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(String),
}

/// Split `sslmode` off a PostgreSQL URL: the URL tokio-postgres can parse, and the mode.
pub fn split_sslmode(url: &str) -> Result<(String, PgSslMode), TlsSetupError> {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return Ok((url.to_string(), PgSslMode::Prefer));
    };
    let mut mode = PgSslMode::Prefer;
    let mut kept = Vec::new();
    for (k, v) in parsed.query_pairs() {
        if k == "sslmode" {
            mode = match v.as_ref() {
                "disable" => PgSslMode::Disable,
                "allow" | "prefer" => PgSslMode::Prefer,
                "require" => PgSslMode::Require,
                "verify-ca" => PgSslMode::VerifyCa,
                "verify-full" => PgSslMode::VerifyFull,
                other => return Err(TlsSetupError::SslMode(other.to_string())),
            };
        } else {
            kept.push((k.into_owned(), v.into_owned()));
        }
    }
    if !parsed.query_pairs().any(|(k, _)| k == "sslmode") {
        return Ok((url.to_string(), mode));
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        // Form encoding writes a space as '+', which tokio-postgres would keep literally;
        // a literal '+' is encoded as %2B, so this swap is exact.
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(kept)
            .finish()
            .replace('+', "%20");
        parsed.set_query(Some(&query));
    }
    Ok((parsed.to_string(), mode))
}

impl PgSslMode {
    /// What tokio-postgres should negotiate.
    pub fn negotiation(self) -> SslMode {
        match self {
            PgSslMode::Disable => SslMode::Disable,
            PgSslMode::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsSetupError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let err = |reason: String| TlsSetupError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))?;
            for cert in certs {
                store
                    .add(cert.map_err(|e| err(e.to_string()))?)
                    .map_err(|e| err(e.to_string()))?;
            }
            if store.is_empty() {
                return Err(err("no certificate in it".into()));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(cert);
            }
        }
    }
    Ok(store)
}

/// The connector for the chosen mode.
pub fn pg_connector(
    mode: PgSslMode,
    ca_file: Option<&Path>,
) -> Result<MakeRustlsConnect, TlsSetupError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let config = match mode {
        PgSslMode::Disable | PgSslMode::Prefer | PgSslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
        PgSslMode::VerifyCa | PgSslMode::VerifyFull => {
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_file)?), provider())
                    .build()
                    .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainVerifier {
                    inner,
                    check_host: mode == PgSslMode::VerifyFull,
                }))
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// `prefer` / `require`: encrypted, certificate not checked (libpq's meaning).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (chain only) and `verify-full` (chain and host name).
#[derive(Debug)]
struct ChainVerifier {
    inner: Arc<WebPkiServerVerifier>,
    check_host: bool,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(TlsError::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.check_host => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_split_off_and_other_parameters_kept() {
        let (url, mode) =
            split_sslmode("postgres://u:p@h:5432/db?sslmode=verify-ca&options=-c%20x%3Dy").unwrap();
        assert_eq!(mode, PgSslMode::VerifyCa);
        assert!(!url.contains("sslmode"));
        assert!(url.contains("options="));
        let cfg = url
            .parse::<tokio_postgres::Config>()
            .expect("tokio-postgres parses what is left");
        assert_eq!(cfg.get_options(), Some("-c x=y"));
        assert_eq!(
            split_sslmode("postgres://h/db").unwrap().1,
            PgSslMode::Prefer
        );
        assert_eq!(
            split_sslmode("postgres://h/db?sslmode=disable").unwrap().1,
            PgSslMode::Disable
        );
        assert!(split_sslmode("postgres://h/db?sslmode=sometimes").is_err());
    }
}
