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

/// kubectl's connection flags.
#[derive(Clone, Debug, Default)]
pub struct KubeOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub cluster: Option<String>,
    pub user: Option<String>,
}

/// Resolves a config like kubectl: `--kubeconfig`, else `KUBECONFIG` (a list, merged), else
/// `~/.kube/config`, else in-cluster. `--context/--cluster/--user` pick within it.
pub async fn config(opts: &KubeOptions) -> Result<Config> {
    let pick =
        KubeConfigOptions { context: opts.context.clone(), cluster: opts.cluster.clone(), user: opts.user.clone() };
    let mut config = if let Some(path) = &opts.kubeconfig {
        let kc = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))?;
        Config::from_custom_kubeconfig(kc, &pick)
            .await
            .map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))?
    } else if opts.context.is_some() || opts.cluster.is_some() || opts.user.is_some() {
        Config::from_kubeconfig(&pick).await.map_err(|e| Error::Kubeconfig(e.to_string()))?
    } else {
        Config::infer().await.map_err(|e| {
            Error::Kubeconfig(format!("{e}; set KUBECONFIG, pass --kubeconfig, or run inside a cluster"))
        })?
    };
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(120));
    config.reset_reader_on_write = true;
    // Retries are ours (bounded, see `with_retry`); kube's default retries up to 15 times.
    config.default_retry = false;
    Ok(config)
}

pub async fn client(opts: &KubeOptions) -> Result<Client> {
    let cfg = config(opts).await?;
    Client::try_from(cfg).map_err(|e| Error::kube("building the Kubernetes client", e))
}

/// How long discovering one API group may take, retries included, before the group is reported
/// unavailable. An aggregated API whose server is down (an APIService without endpoints) answers
/// 503 to every attempt; without this bound the retries would take about 30 s per group.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Client-side limits for the requests one operation makes: requests per second with a burst, how
/// many run at once, and how long one API group's discovery may take.
#[derive(Clone)]
pub struct Throttle {
    limiter: Arc<DefaultDirectRateLimiter>,
    pub concurrency: usize,
    pub discovery_timeout: Duration,
}

impl Throttle {
    pub fn new(qps: u32, burst: u32, concurrency: usize) -> Self {
        let qps = NonZeroU32::new(qps.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Throttle {
            limiter: Arc::new(RateLimiter::direct(Quota::per_second(qps).allow_burst(burst))),
            concurrency: concurrency.max(1),
            discovery_timeout: DISCOVERY_TIMEOUT,
        }
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
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// A connected cluster: the client, the server URL (recorded in backups), and request limits.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub server: String,
    pub throttle: Throttle,
}

impl Cluster {
    pub async fn connect(opts: &KubeOptions, throttle: Throttle) -> Result<Cluster> {
        let cfg = config(opts).await?;
        Cluster::from_config(cfg, throttle)
    }

    pub fn from_config(cfg: Config, throttle: Throttle) -> Result<Cluster> {
        let server = cfg.cluster_url.to_string().trim_end_matches('/').to_string();
        let client = Client::try_from(cfg).map_err(|e| Error::kube("building the Kubernetes client", e))?;
        Ok(Cluster { client, server, throttle })
    }

    /// The server's version, e.g. `v1.20.2`; empty if it cannot be read.
    pub async fn server_version(&self) -> String {
        match self.throttle.call(|| self.client.apiserver_version()).await {
            Ok(v) => v.git_version,
            Err(_) => String::new(),
        }
    }
}
