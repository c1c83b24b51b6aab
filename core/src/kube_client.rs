//! A Kubernetes client resolved the way kubectl resolves one, plus the bounded retry and client-side
//! rate limit every engine request goes through.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::{Error, Result};

/// Makes aws-lc-rs the process's rustls crypto provider (the one provider of the build) and has it
/// seed its random generator at once, on a thread of its own. Binaries call it first thing in `main`.
/// The repository's builds leave aws-lc's CPU jitter entropy out (`.cargo/config.toml`), so seeding
/// is one getrandom(2); a build without that setting seeds from CPU jitter too, about 75 ms of one
/// core on the first use of randomness (aws/aws-lc-rs#1140), and this thread then overlaps it with
/// parsing the arguments and reading the kubeconfig.
pub fn install_crypto_provider() {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let random = provider.secure_random;
    let _ = provider.install_default();
    std::thread::spawn(move || {
        let mut seed = [0u8; 1];
        let _ = random.fill(&mut seed);
    });
}

/// kubectl's connection flags.
#[derive(Clone, Debug, Default)]
pub struct KubeOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub cluster: Option<String>,
    pub user: Option<String>,
    /// kubectl's overrides, applied on top of what the kubeconfig says.
    pub overrides: Overrides,
}

/// kubectl's connection overrides (`--server`, `--token`, `--as`, ...).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// The API server's address; with it no kubeconfig is needed.
    pub server: Option<String>,
    /// A bearer token used instead of the kubeconfig user's credentials.
    pub token: Option<String>,
    /// Impersonation: user, groups and UID.
    pub as_user: Option<String>,
    pub as_groups: Vec<String>,
    pub as_uid: Option<String>,
    /// PEM file of the CA the server's certificate chains to.
    pub certificate_authority: Option<PathBuf>,
    pub insecure_skip_tls_verify: bool,
    /// How long one request may wait for an answer (None: the default, 2 minutes).
    pub request_timeout: Option<Duration>,
}

/// Resolves a config like kubectl: `--kubeconfig`, else `KUBECONFIG` (a list, merged), else
/// `~/.kube/config`, else in-cluster. `--context/--cluster/--user` pick within it.
pub async fn config(opts: &KubeOptions) -> Result<Config> {
    let mut config = match (kubeconfig(opts).await, &opts.overrides.server) {
        (Ok(config), _) => config,
        // `--server` alone is enough, as with kubectl.
        (Err(_), Some(server)) => Config::new(parse_server(server)?),
        (Err(e), None) => return Err(e),
    };
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(120));
    config.reset_reader_on_write = true;
    // Retries are ours (bounded, see `with_retry`); kube's default retries up to 15 times.
    config.default_retry = false;
    opts.overrides.apply(&mut config)?;
    Ok(config)
}

async fn kubeconfig(opts: &KubeOptions) -> Result<Config> {
    let pick =
        KubeConfigOptions { context: opts.context.clone(), cluster: opts.cluster.clone(), user: opts.user.clone() };
    if let Some(path) = &opts.kubeconfig {
        let kc = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))?;
        Config::from_custom_kubeconfig(kc, &pick)
            .await
            .map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))
    } else if opts.context.is_some() || opts.cluster.is_some() || opts.user.is_some() {
        Config::from_kubeconfig(&pick).await.map_err(|e| Error::Kubeconfig(e.to_string()))
    } else {
        Config::infer().await.map_err(|e| {
            Error::Kubeconfig(format!("{e}; set KUBECONFIG, pass --kubeconfig or --server, or run inside a cluster"))
        })
    }
}

fn parse_server(server: &str) -> Result<http::Uri> {
    let uri: http::Uri = server.parse().map_err(|e| Error::invalid("--server", server, format!("not a URL: {e}")))?;
    if uri.scheme().is_none() || uri.host().is_none() {
        return Err(Error::invalid("--server", server, "not a URL like https://host:6443"));
    }
    Ok(uri)
}

impl Overrides {
    fn apply(&self, config: &mut Config) -> Result<()> {
        if let Some(server) = &self.server {
            config.cluster_url = parse_server(server)?;
        }
        if let Some(token) = &self.token {
            // The token replaces the kubeconfig user's credentials (a client certificate would
            // otherwise authenticate first).
            config.auth_info = kube::config::AuthInfo { token: Some(token.clone().into()), ..Default::default() };
        }
        if let Some(user) = &self.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !self.as_groups.is_empty() {
            if self.as_user.is_none() {
                return Err(Error::invalid("--as-group", self.as_groups.join(","), "needs --as (as kubectl)"));
            }
            config.auth_info.impersonate_groups = Some(self.as_groups.clone());
        }
        if let Some(uid) = &self.as_uid {
            config.auth_info.impersonate_uid = Some(uid.clone());
        }
        if let Some(path) = &self.certificate_authority {
            config.root_cert = Some(read_certificates(path)?);
        }
        if self.insecure_skip_tls_verify {
            config.accept_invalid_certs = true;
        }
        if let Some(t) = self.request_timeout {
            config.read_timeout = (!t.is_zero()).then_some(t);
        }
        Ok(())
    }
}

/// The DER certificates of a PEM file.
fn read_certificates(path: &std::path::Path) -> Result<Vec<Vec<u8>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let shown = path.display().to_string();
    let certs: Vec<Vec<u8>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::invalid("--certificate-authority", shown.clone(), e.to_string()))?
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::invalid("--certificate-authority", shown.clone(), e.to_string()))?;
    if certs.is_empty() {
        return Err(Error::invalid("--certificate-authority", shown, "no PEM certificate in the file"));
    }
    Ok(certs)
}

pub async fn client(opts: &KubeOptions) -> Result<Client> {
    let cfg = config(opts).await?;
    build_client(cfg)
}

/// The Kubernetes client for `cfg`: kube's default layers (base URI, kube's retry of 429/503/504,
/// authentication, impersonation headers, timeouts, a debug span per request) over a connector that
/// sets TCP_NODELAY. kube's own connector leaves Nagle's algorithm on (kube-rs/kube#2056): the
/// first request on a new connection, written right after the TLS handshake's last message, waited
/// for the API server's delayed ACK, some 40 ms, on every command's first request and on each
/// connection a run opens. A proxy URL keeps kube's builder (and its answer to proxies).
pub fn build_client(cfg: Config) -> Result<Client> {
    build_service(cfg).map_err(|e| Error::kube("building the Kubernetes client", e))
}

fn build_service(cfg: Config) -> kube::Result<Client> {
    use http_body_util::BodyExt as _;
    use kube::client::{ClientBuilder, ConfigExt as _, DynBody, retry::RetryPolicy};
    use tower::{BoxError, ServiceBuilder, ServiceExt as _, retry::RetryLayer};

    if cfg.proxy_url.is_some() {
        return Client::try_from(cfg);
    }
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        install_crypto_provider();
    }
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let mut connector = hyper_timeout::TimeoutConnector::new(cfg.rustls_https_connector_with_connector(tcp)?);
    connector.set_connect_timeout(cfg.connect_timeout);
    connector.set_read_timeout(cfg.read_timeout);
    connector.set_write_timeout(cfg.write_timeout);
    connector.set_reset_reader_on_write(cfg.reset_reader_on_write);
    let http = hyper_util::client::legacy::Builder::new(hyper_util::rt::TokioExecutor::new()).build(connector);
    // One debug span per request, its events under kube's target as kube's own stack logs them
    // (`KUBECTL_BACKUP_LOG=kube_client=debug` shows each request), a failure at error level.
    let trace = tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(|req: &http::Request<kube::client::Body>| {
            let (method, url) = (req.method(), req.uri());
            let status = tracing::field::Empty;
            tracing::debug_span!(target: "kube_client", "HTTP", http.method = %method, http.url = %url, http.status_code = status)
        })
        .on_request(|_: &http::Request<kube::client::Body>, _: &tracing::Span| {
            tracing::debug!(target: "kube_client", "requesting")
        })
        .on_response(|res: &http::Response<hyper::body::Incoming>, _: Duration, span: &tracing::Span| {
            span.record("http.status_code", res.status().as_u16());
        })
        .on_eos(|_: Option<&http::HeaderMap>, _: Duration, _: &tracing::Span| {
            tracing::debug!(target: "kube_client", "stream closed")
        })
        .on_failure(|failure: tower_http::classify::ServerErrorsFailureClass, _: Duration, _: &tracing::Span| {
            tracing::error!(target: "kube_client", "request failed: {failure}")
        });
    let service = ServiceBuilder::new()
        .layer(cfg.base_uri_layer())
        .option_layer(cfg.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(cfg.auth_layer()?)
        .layer(cfg.extra_headers_layer()?)
        .layer(trace)
        .map_err(BoxError::from)
        .service(http)
        .map_response(|res| res.map(|body| Box::new(body.map_err(BoxError::from)) as Box<DynBody>))
        .boxed();
    Ok(ClientBuilder::new(service, cfg.default_namespace).build())
}

/// How long discovering one API group may take, retries included, before the group is reported
/// unavailable. An aggregated API whose server is down (an APIService without endpoints) answers
/// 503 to every attempt; without this bound the retries would take about 30 s per group.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Client-side limits for the requests one operation makes: requests per second with a burst, how
/// many run at once, how long one API group's discovery may take, whether a large resource is
/// listed one namespace at a time, and in which encoding LIST pages are asked for.
#[derive(Clone)]
pub struct Throttle {
    limiter: Arc<DefaultDirectRateLimiter>,
    pub concurrency: usize,
    pub discovery_timeout: Duration,
    pub namespace_lists: crate::collect::NamespaceLists,
    pub list_encoding: crate::collect::ListEncoding,
}

impl Throttle {
    pub fn new(qps: u32, burst: u32, concurrency: usize) -> Self {
        let qps = NonZeroU32::new(qps.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Throttle {
            limiter: Arc::new(RateLimiter::direct(Quota::per_second(qps).allow_burst(burst))),
            concurrency: concurrency.max(1),
            discovery_timeout: DISCOVERY_TIMEOUT,
            namespace_lists: Default::default(),
            list_encoding: Default::default(),
        }
    }

    /// The same limits, listing large resources one namespace at a time as `mode` says
    /// (`--list-per-namespace`).
    pub fn with_namespace_lists(mut self, mode: crate::collect::NamespaceLists) -> Self {
        self.namespace_lists = mode;
        self
    }

    /// The same limits, asking for LIST pages as `encoding` says (`--list-encoding`).
    pub fn with_list_encoding(mut self, encoding: crate::collect::ListEncoding) -> Self {
        self.list_encoding = encoding;
        self
    }

    /// The same limits with another bound on one API group's discovery (`--discovery-timeout`).
    pub fn with_discovery_timeout(mut self, limit: Duration) -> Self {
        self.discovery_timeout = limit;
        self
    }

    pub async fn ready(&self) {
        self.limiter.until_ready().await;
    }

    /// Runs `op` after the rate limiter admits it, retrying transient failures (429, 5xx, connection
    /// errors) with exponential backoff: at most 10 attempts, about 30 s in all.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let mut op = op;
        let attempt = || {
            let fut = op();
            async move {
                self.ready().await;
                fut.await
            }
        };
        attempt
            .retry(backoff())
            .when(is_transient)
            .notify(|e, d| tracing::debug!(error = %crate::error::kube_message(e), delay = ?d, "retrying Kubernetes request"))
            .await
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new(100, 200, 16)
    }
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(9)
        .with_jitter()
}

/// Failures worth retrying: throttling, server errors, and the connection going away.
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        // ReadEvents: a response body cut off midway (collect::list reads pages as a stream).
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

/// A connected cluster: the client, the server URL (recorded in backups), and request limits.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub server: String,
    pub throttle: Throttle,
    /// A discovery shared by this cluster's backups (the in-cluster controller); none: each
    /// backup discovers the API itself.
    pub discovery: Option<Arc<crate::collect::SharedDiscovery>>,
}

impl Cluster {
    pub async fn connect(opts: &KubeOptions, throttle: Throttle) -> Result<Cluster> {
        let cfg = config(opts).await?;
        Cluster::from_config(cfg, throttle)
    }

    pub fn from_config(cfg: Config, throttle: Throttle) -> Result<Cluster> {
        let server = cfg.cluster_url.to_string().trim_end_matches('/').to_string();
        let client = build_client(cfg)?;
        Ok(Cluster { client, server, throttle, discovery: None })
    }

    /// Every resource type the server serves ([`crate::collect::discover`]), or the shared
    /// discovery's, when this cluster has one and it is still good.
    pub async fn discover(&self) -> Result<Arc<crate::collect::Discovered>> {
        let fresh = crate::collect::discover(&self.client, &self.throttle);
        match &self.discovery {
            Some(shared) => shared.get(fresh).await,
            None => fresh.await.map(Arc::new),
        }
    }

    /// The server's version, e.g. `v1.20.2`; empty if it cannot be read.
    pub async fn server_version(&self) -> String {
        match self.throttle.call(|| self.client.apiserver_version()).await {
            Ok(v) => v.git_version,
            Err(_) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_cut_off_midway_is_retried_and_a_refusal_or_bad_body_is_not() {
        let cut = kube::Error::ReadEvents(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(is_transient(&cut));
        let status = |code| kube::Error::Api(kube::core::Status::failure("m", "r").with_code(code).boxed());
        assert!(is_transient(&status(503)));
        assert!(is_transient(&status(429)));
        assert!(!is_transient(&status(403)));
        assert!(!is_transient(&status(410)), "an expired continue token is the pager's to handle");
        let not_utf8 = String::from_utf8(vec![0xff]).unwrap_err();
        assert!(!is_transient(&kube::Error::FromUtf8(not_utf8)));
    }

    /// The client's connections have Nagle's algorithm off. While a request waits on a listener
    /// that read it and never answers, the client's end of the connection is found among this
    /// process's file descriptors (duplicated with pidfd_getfd) and asked for TCP_NODELAY. With
    /// kube's own builder (`Client::try_from`) it is off and this test fails.
    #[tokio::test]
    async fn the_client_connects_with_tcp_nodelay() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = build_client(Config::new(format!("http://{server}").parse().unwrap())).unwrap();
        let request = tokio::spawn(async move { client.apiserver_version().await });
        // The connector sets the option once connected and before it writes: the request's first
        // bytes arriving mean the option is set (accept alone may return before).
        let (_held, client_end) = tokio::task::spawn_blocking(move || {
            let (mut held, client_end) = listener.accept().unwrap();
            let mut first = [0u8; 16];
            std::io::Read::read_exact(&mut held, &mut first).unwrap();
            assert!(first.starts_with(b"GET /version"), "the request: {:?}", String::from_utf8_lossy(&first));
            (held, client_end)
        })
        .await
        .unwrap();

        let me = rustix::process::pidfd_open(rustix::process::getpid(), rustix::process::PidfdFlags::empty()).unwrap();
        let ends: Vec<std::net::TcpStream> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|fd| rustix::process::pidfd_getfd(&me, fd, rustix::process::PidfdGetfdFlags::empty()).ok())
            .filter(|fd| {
                rustix::fs::fstat(fd).is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_socket())
            })
            .map(std::net::TcpStream::from)
            .filter(|s| s.local_addr().is_ok_and(|a| a == client_end) && s.peer_addr().is_ok_and(|a| a == server))
            .collect();
        assert_eq!(ends.len(), 1, "the client's end of the connection to {server}");
        assert!(ends[0].nodelay().unwrap(), "the client's connection to {server} has Nagle's algorithm on");
        request.abort();
    }
}
