//! HTTPS: the certificate and key of `server.tls`, loaded with rustls (ring), served to
//! every handshake through a resolver that can swap them while the server runs. A reload
//! (SIGHUP, or a change of either file seen by [`Certs::watch`], e.g. a certbot renewal)
//! that fails keeps the certificate in force and says why.

use crate::config::TlsConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// How often the certificate files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(10);

/// The certificate in force and where it comes from.
#[derive(Debug)]
pub struct Certs {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when last loaded.
    stamp: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Reads and checks a certificate chain and its key. Errors name the key and the file.
fn read(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("server.tls.cert_file: {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls.cert_file: {}: no PEM certificate in the file",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("server.tls.key_file: {}: {e}", key_file.display()))?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        format!(
            "server.tls: the key in {} does not fit the certificate in {}: {e}",
            key_file.display(),
            cert_file.display()
        )
    })
}

impl Certs {
    /// Loads `server.tls`; a missing, unreadable or mismatched file is an error.
    pub fn load(cfg: &TlsConfig) -> Result<Arc<Certs>, String> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        // AES-128-GCM first (and the server's order decides): with AES-NI it costs about
        // a third less CPU per byte than AES-256, and streams are most of what is sent.
        provider
            .cipher_suites
            .sort_by_key(|s| !format!("{:?}", s.suite()).contains("AES_128_GCM"));
        let provider = Arc::new(provider);
        let (cert_file, key_file) = (PathBuf::from(&cfg.cert_file), PathBuf::from(&cfg.key_file));
        let stamp = (modified(&cert_file), modified(&key_file));
        let key = read(&cert_file, &key_file, &provider)?;
        Ok(Arc::new(Certs {
            cert_file,
            key_file,
            provider,
            current: RwLock::new(Arc::new(key)),
            stamp: Mutex::new(stamp),
        }))
    }

    /// Loads the files again. Ok(true): a new certificate is in force.
    pub fn reload(&self) -> Result<bool, String> {
        let stamp = (modified(&self.cert_file), modified(&self.key_file));
        let key = read(&self.cert_file, &self.key_file, &self.provider)?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        let changed = cur.cert != key.cert;
        *cur = Arc::new(key);
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
        Ok(changed)
    }

    /// Reloads when either file's modification time changed; logs the outcome.
    pub fn reload_if_changed(&self) {
        let now = (modified(&self.cert_file), modified(&self.key_file));
        if *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return;
        }
        self.reload_logged("the certificate files changed");
    }

    pub fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(true) => tracing::info!("{why}: new TLS certificate in force"),
            Ok(false) => tracing::debug!("{why}: the TLS certificate is unchanged"),
            Err(e) => {
                // Remember the stamp anyway: a half-written renewal is tried again when
                // the files change once more, not every few seconds.
                *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) =
                    (modified(&self.cert_file), modified(&self.key_file));
                tracing::error!(
                    "{why}, but the new certificate cannot be used; keeping the old one: {e}"
                )
            }
        }
    }

    /// Checks the files every [`WATCH_INTERVAL`] for as long as the server runs.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            let me = self.clone();
            // File reads off the async threads.
            let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
        }
    }

    /// The acceptor for the listener: HTTP/1.1 (ALPN), TLS 1.2 and 1.3.
    pub fn acceptor(self: &Arc<Self>) -> Result<tokio_rustls::TlsAcceptor, String> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        cfg.ignore_client_order = true;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}
