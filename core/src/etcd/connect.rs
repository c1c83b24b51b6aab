//! Reaching etcd: endpoint and TLS checks before the first packet, one client per member, bounded
//! timeouts and retries, and errors that say what is wrong (a CA that does not match, a missing
//! client certificate, a key that belongs to another certificate, nothing listening).

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::model::EtcdSource;
use crate::{Error, Result};

/// TCP + TLS connect, per attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A unary request (status, one page of keys, one transaction).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting to a member we are probing and its first answer, together.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next message of a stream (a snapshot) before giving up.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts to reach one member when the connection is refused or reset.
const ATTEMPTS: u32 = 3;
/// Largest response we decode: pages shrink until one fits.
pub const MAX_MESSAGE: usize = 64 << 20;

/// The client TLS files of a source, checked and read.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    options: Option<TlsOptions>,
}

impl TlsFiles {
    /// Reads and checks the files: each PEM, the certificate and key present together and
    /// belonging together.
    pub fn load(source: &EtcdSource) -> Result<TlsFiles> {
        let mut files = TlsFiles {
            ca: source.ca_file.clone(),
            cert: source.cert_file.clone(),
            key: source.key_file.clone(),
            options: None,
        };
        let mut tls = TlsOptions::new();
        let mut any = false;
        if let Some(ca) = &files.ca {
            let pem = read("--cacert", ca)?;
            let certs = certificates("--cacert", ca, &pem)?;
            if certs.is_empty() {
                return Err(Error::invalid("--cacert", ca.display().to_string(), "no PEM certificate in the file"));
            }
            tls = tls.ca_certificate(Certificate::from_pem(pem));
            any = true;
        }
        match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read("--cert", cert)?;
                let key_pem = read("--key", key)?;
                let chain = certificates("--cert", cert, &cert_pem)?;
                if chain.is_empty() {
                    return Err(Error::invalid("--cert", cert.display().to_string(), "no PEM certificate in the file"));
                }
                let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    Error::invalid("--key", key.display().to_string(), format!("no PEM private key in the file ({e})"))
                })?;
                let provider = rustls::crypto::aws_lc_rs::default_provider();
                if let Err(e) = rustls::sign::CertifiedKey::from_der(chain, private, &provider) {
                    let reason = match e {
                        rustls::Error::InconsistentKeys(_) => format!(
                            "this private key does not belong to the certificate in --cert {}; pass the key that was issued with it",
                            cert.display()
                        ),
                        other => format!("cannot use this private key: {other}"),
                    };
                    return Err(Error::invalid("--key", key.display().to_string(), reason));
                }
                tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
                any = true;
            }
            (Some(cert), None) => {
                return Err(Error::invalid(
                    "--cert",
                    cert.display().to_string(),
                    "a client certificate needs its private key: pass --key too",
                ));
            }
            (None, Some(key)) => {
                return Err(Error::invalid(
                    "--key",
                    key.display().to_string(),
                    "a private key needs its client certificate: pass --cert too",
                ));
            }
            (None, None) => {}
        }
        if any {
            files.options = Some(tls);
        }
        Ok(files)
    }

    fn any(&self) -> bool {
        self.options.is_some()
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::invalid(flag, path.display().to_string(), format!("cannot read it: {e}")))
}

fn certificates(flag: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(flag, path.display().to_string(), format!("not a PEM certificate file ({e})")))
}

/// Checks an endpoint and gives it a scheme: `https://` with TLS files, `http://` without.
pub fn normalize_endpoint(endpoint: &str, tls: &TlsFiles) -> Result<String> {
    let e = endpoint.trim().trim_end_matches('/');
    if e.is_empty() {
        return Err(Error::invalid("--endpoints", endpoint, "empty endpoint; expected e.g. https://127.0.0.1:2379"));
    }
    let with_scheme = if e.contains("://") {
        e.to_string()
    } else if tls.any() {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|err| {
        Error::invalid("--endpoints", endpoint, format!("not a URL ({err}); expected e.g. https://127.0.0.1:2379"))
    })?;
    match url.scheme() {
        "http" if tls.any() => {
            return Err(Error::invalid(
                "--endpoints",
                endpoint,
                "--cacert/--cert/--key were given for a plain http:// endpoint; use https://",
            ));
        }
        "http" | "https" => {}
        other => {
            return Err(Error::invalid(
                "--endpoints",
                endpoint,
                format!("unsupported scheme {other:?}; use http:// or https://"),
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
        return Err(Error::invalid("--endpoints", endpoint, "expected host:port, e.g. https://127.0.0.1:2379"));
    }
    if url.path() != "/" && !url.path().is_empty() {
        return Err(Error::invalid(
            "--endpoints",
            endpoint,
            "an endpoint has no path; expected e.g. https://127.0.0.1:2379",
        ));
    }
    Ok(with_scheme)
}

/// One member, reached through its own endpoint, and what it said about itself.
#[derive(Clone)]
pub struct Member {
    pub client: Client,
    pub endpoint: String,
    pub revision: i64,
    pub member_id: u64,
    pub cluster_id: u64,
    pub version: String,
    pub db_size: i64,
}

/// Connects to every endpoint of `source`, asks each member for its status, and returns the one
/// with the highest revision (the first on a tie), as etcd-operator does. Fails, naming each
/// endpoint's problem, only if none answers. Bounded: all endpoints at once, each at most
/// [`PROBE_TIMEOUT`] per try, and only refused or reset connections tried again ([`ATTEMPTS`]).
pub async fn best_member(source: &EtcdSource) -> Result<(Member, Vec<String>)> {
    let tls = TlsFiles::load(source)?;
    if source.endpoints.iter().all(|e| e.trim().is_empty()) {
        return Err(Error::invalid("--endpoints", "", "no etcd endpoint given; pass --endpoints https://HOST:2379"));
    }
    let endpoints: Vec<String> = source
        .endpoints
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|e| normalize_endpoint(e, &tls))
        .collect::<Result<_>>()?;
    let probes = futures::future::join_all(endpoints.iter().map(|e| probe(e, &tls))).await;
    let mut best: Option<Member> = None;
    let mut failures = Vec::new();
    for r in probes {
        match r {
            Ok(m) => {
                if best.as_ref().is_none_or(|b| m.revision > b.revision) {
                    best = Some(m);
                }
            }
            Err(e) => failures.push(e),
        }
    }
    match best {
        Some(m) => Ok((m, failures.iter().map(ToString::to_string).collect())),
        None if failures.len() == 1 => Err(failures.remove(0)),
        None => Err(Error::Other(format!(
            "no etcd endpoint answered: {}",
            failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        ))),
    }
}

/// A client of one endpoint and its status.
async fn probe(endpoint: &str, tls: &TlsFiles) -> Result<Member> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match probe_once(endpoint, tls).await {
            Ok(m) => return Ok(m),
            Err(Failure { retry: true, .. }) if attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
            }
            Err(f) => return Err(f.error),
        }
    }
}

struct Failure {
    error: Error,
    retry: bool,
}

async fn probe_once(endpoint: &str, tls: &TlsFiles) -> std::result::Result<Member, Failure> {
    let client = connect(endpoint, tls).await.map_err(|e| Failure { retry: false, error: e })?;
    let mut c = client.clone();
    let status = match tokio::time::timeout(PROBE_TIMEOUT, c.status()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let retry = retryable(&e);
            return Err(Failure { retry, error: explain(endpoint, tls, &e) });
        }
        Err(_) => {
            return Err(Failure { retry: false, error: timeout_error(endpoint, PROBE_TIMEOUT) });
        }
    };
    let header = status.header().ok_or_else(|| Failure {
        retry: false,
        error: Error::Etcd { endpoint: endpoint.into(), reason: "the status answer has no header".into() },
    })?;
    Ok(Member {
        client,
        endpoint: endpoint.to_string(),
        revision: header.revision(),
        member_id: header.member_id(),
        cluster_id: header.cluster_id(),
        version: status.version().to_string(),
        db_size: status.db_size(),
    })
}

/// A client of exactly one endpoint (so every request of a backup goes to the member we chose).
pub async fn connect(endpoint: &str, tls: &TlsFiles) -> Result<Client> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(20))
        .with_keep_alive_while_idle(false);
    if let Some(t) = &tls.options {
        options = options.with_tls(t.clone());
    }
    match tokio::time::timeout(CONNECT_TIMEOUT * 2, Client::connect([endpoint], Some(options))).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(explain(endpoint, tls, &e)),
        Err(_) => Err(timeout_error(endpoint, CONNECT_TIMEOUT * 2)),
    }
}

pub fn timeout_error(endpoint: &str, after: Duration) -> Error {
    Error::Etcd {
        endpoint: endpoint.into(),
        reason: format!(
            "no answer within {}s: check the address and port, that etcd is running, and any firewall in between",
            after.as_secs()
        ),
    }
}

/// Range failures the keys reader answers differently from every other error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeFailure {
    /// The page is over the client's message limit: ask for fewer keys.
    TooLarge,
    /// The revision being read was compacted: the run cannot finish consistently.
    Compacted,
}

/// Classifies a range error. tonic (its decode limit) and etcd (`ErrCompacted`) both answer
/// OUT_OF_RANGE, and `etcd_client::Error` wraps them in more than one variant, so the text is
/// what tells them apart; it is read here and nowhere else.
pub fn range_failure(e: &etcd_client::Error) -> Option<RangeFailure> {
    let text = chain(e);
    if text.contains("message length too large") {
        Some(RangeFailure::TooLarge)
    } else if text.contains("compacted") {
        Some(RangeFailure::Compacted)
    } else {
        None
    }
}

/// Refused or reset connections may be a member restarting: worth another try. TLS and
/// permission problems are not.
fn retryable(e: &etcd_client::Error) -> bool {
    let text = chain(e).to_ascii_lowercase();
    (text.contains("connection refused") || text.contains("connection reset") || text.contains("broken pipe"))
        && !text.contains("certificate")
}

/// The error and all its sources on one line, without repeats. (`etcd_client::Error` does not
/// expose its source, so the gRPC status or transport error inside it is walked instead.)
pub fn chain(err: &etcd_client::Error) -> String {
    let (msg, src): (String, Option<&(dyn std::error::Error + 'static)>) = match err {
        etcd_client::Error::GRpcStatus(s) => (format!("{:?}: {}", s.code(), s.message()), std::error::Error::source(s)),
        etcd_client::Error::TransportError(t) => (err.to_string(), std::error::Error::source(t)),
        etcd_client::Error::IoError(e) => (err.to_string(), std::error::Error::source(e)),
        other => (other.to_string(), None),
    };
    crate::error::chain(msg, src)
}

/// An etcd client error as something a person can act on.
pub fn explain(endpoint: &str, tls: &TlsFiles, err: &etcd_client::Error) -> Error {
    let raw = chain(err);
    Error::Etcd { endpoint: endpoint.into(), reason: explain_text(&raw, endpoint.starts_with("https://"), tls) }
}

/// The reason for [`explain`], from the error text.
pub fn explain_text(raw: &str, https: bool, tls: &TlsFiles) -> String {
    let text = raw.to_ascii_lowercase();
    let closed = ["connection closed", "connection reset", "unexpected eof", "early eof", "broken pipe"];
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    let advice = if has(&["unknownissuer", "unknown issuer", "unknown authority"]) {
        match &tls.ca {
            Some(ca) => format!(
                "the server's certificate is not signed by the CA in --cacert {}; pass the CA that signed the etcd serving certificate",
                ca.display()
            ),
            None => "the server's certificate is not signed by a trusted CA; pass the CA that signed it with --cacert"
                .into(),
        }
    } else if has(&["notvalidforname", "not valid for name", "certificate is not valid for"]) {
        "the server's certificate does not name this host; use an endpoint address that is in its subject alternative names".into()
    } else if has(&["certificaterequired", "certificate required"]) {
        match &tls.cert {
            None => "the server requires a client certificate: pass --cert and --key".into(),
            Some(cert) => format!("the server refused the client certificate in --cert {}", cert.display()),
        }
    } else if has(&["badcertificate", "bad certificate", "unknownca", "unknown ca", "certificateunknown"]) {
        match &tls.cert {
            None => "the server requires a client certificate: pass --cert and --key".into(),
            Some(cert) => format!(
                "the server rejected the client certificate in --cert {}: is it signed by the CA etcd trusts (--trusted-ca-file)?",
                cert.display()
            ),
        }
    } else if has(&["expired", "notvalidyet"]) && has(&["certificate"]) {
        "a certificate has expired or is not valid yet; check the certificates and the clock".into()
    } else if has(&["inconsistentkeys", "keymismatch"]) {
        "the private key in --key does not belong to the certificate in --cert".into()
    } else if has(&["corrupt message", "invalidcontenttype", "invalid content type", "wrong version number"]) {
        "the server does not speak TLS here: use http:// (and no --cacert/--cert/--key), or the port that serves TLS"
            .into()
    } else if has(&["tls handshake eof"]) {
        "the TLS handshake was cut off: the server may not serve TLS on this port (then use http://), or it refused the connection".into()
    } else if has(&["grpc-status header missing", "mapped from http status"]) {
        "the server at this address does not answer like etcd (an HTTP server or proxy answered); check the host and the port of etcd's client URL (usually 2379)".into()
    } else if !https && (has(&closed) || has(&["frame with invalid size", "http2 error", "h2 protocol error"])) {
        "the server closed the connection: if etcd serves TLS on this port, use https:// with --cacert (and --cert/--key for client authentication)".into()
    } else if https && has(&closed) {
        match &tls.cert {
            None => "the server closed the connection after the TLS handshake: it probably requires a client certificate (etcd --client-cert-auth): pass --cert and --key".into(),
            Some(cert) => format!(
                "the server closed the connection after the TLS handshake: it probably rejected the client certificate in --cert {}: is it signed by the CA etcd trusts (--trusted-ca-file)?",
                cert.display()
            ),
        }
    } else if has(&["connection refused"]) {
        "connection refused: nothing listens on this address; check the host, the port and that etcd is running".into()
    } else if has(&["dns error", "failed to lookup", "name or service not known", "no address associated"]) {
        "the host name does not resolve; check the endpoint".into()
    } else if has(&["timed out", "deadline", "elapsed"]) {
        "no answer in time: check the address and port, that etcd is running, and any firewall in between".into()
    } else if has(&["unauthenticated", "user name is empty", "invalid auth token"]) {
        "etcd has authentication enabled: connect with a client certificate (--cert/--key) whose common name is an etcd user allowed to read".into()
    } else if has(&["permissiondenied", "permission denied"]) {
        "permission denied: the etcd user (the client certificate's common name) may not do this".into()
    } else {
        return raw.to_string();
    };
    format!("{advice} ({raw})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Ca;

    fn source(dir: &Path, ca: bool, cert: bool, key: bool) -> EtcdSource {
        EtcdSource {
            endpoints: vec!["https://127.0.0.1:2379".into()],
            ca_file: ca.then(|| dir.join("ca.crt")),
            cert_file: cert.then(|| dir.join("client.crt")),
            key_file: key.then(|| dir.join("client.key")),
            prefix: None,
        }
    }

    #[test]
    fn tls_files_are_checked_before_connecting() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test-ca").unwrap();
        ca.write_leaf(dir.path(), "client", "client", &[]).unwrap();
        ca.write_leaf(dir.path(), "other", "other", &[]).unwrap();
        TlsFiles::load(&source(dir.path(), true, true, true)).unwrap();

        let err = TlsFiles::load(&source(dir.path(), true, true, false)).unwrap_err().to_string();
        assert!(err.contains("--cert") && err.contains("pass --key"), "{err}");
        let err = TlsFiles::load(&source(dir.path(), true, false, true)).unwrap_err().to_string();
        assert!(err.contains("pass --cert"), "{err}");

        // The key of another certificate.
        let mut s = source(dir.path(), true, true, true);
        s.key_file = Some(dir.path().join("other.key"));
        let err = TlsFiles::load(&s).unwrap_err().to_string();
        assert!(err.contains("does not belong to the certificate"), "{err}");

        // A key where the CA should be.
        let mut s = source(dir.path(), true, false, false);
        s.ca_file = Some(dir.path().join("client.key"));
        let err = TlsFiles::load(&s).unwrap_err().to_string();
        assert!(err.contains("--cacert") && err.contains("no PEM certificate"), "{err}");

        let mut s = source(dir.path(), false, false, false);
        s.ca_file = Some(dir.path().join("missing.crt"));
        let err = TlsFiles::load(&s).unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn endpoints_get_a_scheme_and_are_checked() {
        let plain = TlsFiles::default();
        assert_eq!(normalize_endpoint("127.0.0.1:2379", &plain).unwrap(), "http://127.0.0.1:2379");
        assert_eq!(normalize_endpoint("https://e:2379/", &plain).unwrap(), "https://e:2379");
        let tls = TlsFiles { options: Some(TlsOptions::new()), ..Default::default() };
        assert_eq!(normalize_endpoint("e:2379", &tls).unwrap(), "https://e:2379");
        let err = normalize_endpoint("http://e:2379", &tls).unwrap_err().to_string();
        assert!(err.contains("use https://"), "{err}");
        for bad in ["", "ftp://e:1", "http://e", "http://e:1/path"] {
            assert!(normalize_endpoint(bad, &plain).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_are_explained() {
        let plain = TlsFiles::default();
        let with_ca = TlsFiles { ca: Some("/etc/ca.crt".into()), ..Default::default() };
        let t = explain_text("transport error: invalid peer certificate: UnknownIssuer", true, &with_ca);
        assert!(t.contains("not signed by the CA in --cacert /etc/ca.crt"), "{t}");
        let t = explain_text("transport error: received fatal alert: CertificateRequired", true, &plain);
        assert!(t.contains("requires a client certificate"), "{t}");
        let t = explain_text("Cancelled: operation was canceled: transport error: connection closed", true, &with_ca);
        assert!(t.contains("requires a client certificate") && t.contains("--cert and --key"), "{t}");
        let t = explain_text("Cancelled: operation was canceled: transport error: connection closed", false, &plain);
        assert!(t.contains("use https://"), "{t}");
        let t = explain_text("tcp connect error: Connection refused (os error 111)", false, &plain);
        assert!(t.starts_with("connection refused"), "{t}");
        let t = explain_text("something new", false, &plain);
        assert_eq!(t, "something new");
    }
}
