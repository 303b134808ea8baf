//! `rediss://`: TLS over the same socket code, with redis-py's settings
//! (`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, `ssl_cert_reqs`,
//! `ssl_check_hostname`). The rustls configuration is built once, when the
//! handler is made (reading certificate files is not network I/O), so a
//! bad path fails at construction rather than at the first command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::errors::CacheError;

/// What redis-py calls the `ssl_*` options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of CAs to trust; `None`: the system's store.
    pub ca_certs: Option<PathBuf>,
    /// Client certificate and key (PEM), for servers that require one.
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// `ssl_cert_reqs="none"` turns verification off (redis-py allows it).
    pub verify: bool,
    pub check_hostname: bool,
}

impl TlsOptions {
    /// redis-py's defaults: verify the chain and the host name.
    pub fn verified() -> TlsOptions {
        TlsOptions {
            verify: true,
            check_hostname: true,
            ..TlsOptions::default()
        }
    }
}

fn invalid(detail: String) -> CacheError {
    CacheError::InvalidValue {
        context: "TLS settings".into(),
        detail,
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CacheError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            invalid(format!(
                "cannot read certificates from {}: {e}",
                path.display()
            ))
        })
}

fn roots(options: &TlsOptions) -> Result<RootCertStore, CacheError> {
    let mut store = RootCertStore::empty();
    match &options.ca_certs {
        Some(path) => {
            for cert in read_certs(path)? {
                store.add(cert).map_err(|e| {
                    invalid(format!("bad CA certificate in {}: {e}", path.display()))
                })?;
            }
        }
        None => {
            // Unreadable system entries are skipped, as OpenSSL does.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = store.add(cert);
            }
        }
    }
    Ok(store)
}

/// The rustls client configuration for `options`.
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, CacheError> {
    let provider = Arc::new(ring::default_provider());
    let inner = if options.verify {
        let store = roots(options)?;
        if store.is_empty() {
            return Err(invalid(
                "no CA certificates to verify the server with (give ssl_ca_certs)".into(),
            ));
        }
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| invalid(e.to_string()))?,
        )
    } else {
        None
    };
    let verifier = Arc::new(Verifier {
        inner,
        check_hostname: options.check_hostname,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&options.certfile, &options.keyfile) {
        (Some(cert), key) => {
            let chain = read_certs(cert)?;
            let key_path = key.as_deref().unwrap_or(cert);
            let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
                invalid(format!(
                    "cannot read the private key from {}: {e}",
                    key_path.display()
                ))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid(e.to_string()))?
        }
        (None, Some(_)) => return Err(invalid("ssl_keyfile given without ssl_certfile".into())),
        (None, None) => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

pub fn server_name(host: &str) -> std::io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

/// WebPKI verification, optionally without the host-name check, or none
/// at all (`ssl_cert_reqs="none"`): the choices redis-py offers.
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    check_hostname: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_hostname => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
