//! TLS with certificate rotation: the serving certificate and key are re-read when the files change
//! (a Secret update, cert-manager renewal), and new connections get the new certificate without a
//! restart. A file that does not parse is ignored and the previous certificate kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the files are checked.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The bytes the current key was made from, to notice changes.
    loaded_from: ArcSwap<(Vec<u8>, Vec<u8>)>,
}

impl ReloadingCert {
    /// Loads the certificate and key; fails with a message naming the file when they are unusable.
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Arc<ReloadingCert>> {
        let (cert, key) = read(cert_path, key_path)?;
        let ck = certified(&cert, &key, cert_path, key_path)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(ck),
            loaded_from: ArcSwap::from_pointee((cert, key)),
        }))
    }

    /// Re-reads the files; swaps in the new certificate if they changed and parse. Returns whether
    /// the certificate changed.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let (cert, key) = read(&self.cert_path, &self.key_path)?;
        let prev = self.loaded_from.load();
        if prev.0 == cert && prev.1 == key {
            return Ok(false);
        }
        let ck = certified(&cert, &key, &self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(ck));
        self.loaded_from.store(Arc::new((cert, key)));
        Ok(true)
    }

    /// Checks the files every `RELOAD_INTERVAL` until the process ends.
    pub fn watch(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            loop {
                tick.tick().await;
                match me.reload() {
                    Ok(true) => tracing::info!(cert = %me.cert_path.display(), "serving certificate reloaded"),
                    Ok(false) => {}
                    // Mid-rotation the two files can disagree for a moment: keep serving the old pair.
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "serving certificate not reloaded; keeping the previous one")
                    }
                }
            }
        });
    }

    pub fn server_config(self: &Arc<Self>) -> ServerConfig {
        let mut cfg = ServerConfig::builder().with_no_client_auth().with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read(cert: &Path, key: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    use anyhow::Context;
    let c = std::fs::read(cert).with_context(|| format!("reading --tls-cert {}", cert.display()))?;
    let k = std::fs::read(key).with_context(|| format!("reading --tls-key {}", key.display()))?;
    Ok((c, k))
}

fn certified(cert: &[u8], key: &[u8], cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    use anyhow::{Context, bail};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .with_context(|| format!("--tls-cert {} is not PEM", cert_path.display()))?;
    if chain.is_empty() {
        bail!("--tls-cert {} holds no certificate", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .with_context(|| format!("--tls-key {} holds no private key", key_path.display()))?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    CertifiedKey::from_der(chain, key, &provider)
        .with_context(|| format!("--tls-key {} does not match --tls-cert {}", key_path.display(), cert_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubectl_backup_core::pki::Ca;

    #[test]
    fn reload_swaps_only_valid_changed_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test").unwrap();
        let a = ca.write_leaf(dir.path(), "a", "a", &["127.0.0.1"]).unwrap();
        let r = ReloadingCert::load(&a.cert, &a.key).unwrap();
        let first = r.current.load_full();
        assert!(!r.reload().unwrap(), "unchanged files are not reloaded");
        // A new pair: swapped.
        let (cert, key) = ca.leaf("b", &["127.0.0.1"]).unwrap();
        std::fs::write(&a.cert, &cert).unwrap();
        std::fs::write(&a.key, &key).unwrap();
        assert!(r.reload().unwrap());
        assert_ne!(r.current.load_full().cert, first.cert);
        // Half-written rotation (cert of one pair, key of another): refused, old pair kept.
        let (other_cert, _) = ca.leaf("c", &["127.0.0.1"]).unwrap();
        std::fs::write(&a.cert, &other_cert).unwrap();
        let before = r.current.load_full();
        assert!(r.reload().is_err());
        assert_eq!(r.current.load_full().cert, before.cert);
        // Garbage: refused with the file named.
        std::fs::write(&a.key, b"not a key").unwrap();
        let err = format!("{:#}", r.reload().unwrap_err());
        assert!(err.contains("--tls-key"), "{err}");
    }
}
