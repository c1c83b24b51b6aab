//! `backup-webhook`: a mutating admission webhook that marks new workspaces for auto-restore or as
//! ephemeral, and the controllers that run beside it. Engine work is done by kubectl-backup-core.
//!
//! - [`admission`] — the pure decision and JSON patch
//! - [`index`] — newest backup per namespace, in memory
//! - [`server`] — axum routes, TLS serving
//! - [`tls`] — certificate reload
//! - [`controllers`] — restore worker, schedules, expiry, continuous backup
//! - [`metrics`] — Prometheus

pub mod admission;
pub mod args;
pub mod controllers;
pub mod index;
pub mod mark;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod tls;

use std::sync::Arc;

use anyhow::Context;
use kubectl_backup_core::kube_client::{self, Cluster, Throttle};
use kubectl_backup_core::locations;

use crate::admission::Policy;
use crate::args::Args;
use crate::index::Index;
use crate::metrics::Metrics;

/// The kube config: in-cluster when running in a pod, else the usual kubeconfig.
async fn kube_config(args: &Args) -> anyhow::Result<kube::Config> {
    if args.kube.kubeconfig.is_none()
        && args.kube.context.is_none()
        && let Ok(cfg) = kube::Config::incluster()
    {
        return Ok(cfg);
    }
    Ok(kube_client::config(&args.kube.options()).await?)
}

/// How long a stopping webhook waits for the runs that move volume data to end.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs the webhook and its controllers until SIGTERM/SIGINT: connect, start the supervised
/// controllers, serve.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let cert = tls::ReloadingCert::load(&args.tls_cert, &args.tls_key)?;
    cert.watch();
    let ctx = Arc::new(connect(&args).await?);
    let mut supervisor = runtime::Supervisor::default();
    start_controllers(&mut supervisor, &ctx, &args);
    serve(&args, &ctx, &cert, &supervisor).await?;
    // Runs moving volume data end cleanly first: their mover Pods deleted, their post hooks run
    // (a workload frozen by a pre hook let go), nothing more committed. Within the Pod's default
    // 30 s of grace.
    kubectl_backup_core::interrupt::request();
    tracing::info!("stopping: ending the runs that move volume data");
    if !kubectl_backup_core::interrupt::drained(SHUTDOWN_WAIT).await {
        tracing::warn!(waited = ?SHUTDOWN_WAIT, "runs moving volume data did not end in time; stopping anyway");
    }
    supervisor.shutdown().await;
    tracing::info!("backup-webhook stopped");
    Ok(())
}

/// Everything the admission server and the controllers share: the cluster, the signing key, the
/// location, the index and the metrics.
async fn connect(args: &Args) -> anyhow::Result<controllers::Context> {
    let policy = Arc::new(Policy::new(
        &args.policy.ephemeral_patterns,
        args.policy.workspace_selector.as_deref(),
        &args.policy.namespace,
        &args.policy.workspace_resources,
    )?);
    let cfg = kube_config(args).await?;
    let throttle = Throttle::new(args.kube.qps, args.kube.burst, args.kube.concurrency)
        .with_discovery_timeout(args.discovery_timeout)
        .with_list_encoding(args.list_encoding);
    let mut cluster = Cluster::from_config(cfg.clone(), throttle)?;
    // One discovery for the backups this process takes, kept good by controllers::discovery.
    cluster.discovery = Some(controllers::discovery::shared());
    // The key that signs the marks of new workspaces: admission answers only once it is loaded.
    let key = Arc::new(
        mark::Key::load_or_create(&cluster.client, &args.policy.namespace)
            .await
            .context("loading the key that signs the webhook's marks")?,
    );
    create_default_location(&cluster, args).await?;
    // `--location` is a URL or the name of a BackupLocation in our namespace.
    let location = locations::resolve(
        Some(&cluster.client),
        &args.policy.namespace,
        Some(&args.location.location),
        &args.location.options(),
    )
    .await
    .with_context(|| format!("opening --location {}", args.location.location))?;
    Ok(controllers::Context {
        cluster,
        location,
        policy,
        index: Arc::new(Index::default()),
        metrics: Arc::new(Metrics::default()),
        namespace: args.policy.namespace.clone(),
        reporter: "backup-webhook".into(),
        key,
        kube_config: cfg,
        catch_up_identity: args.catch_up_identity.clone(),
        min_schedule_interval: args.min_schedule_interval,
        volume_identity: args.volume_identity.clone(),
        mover: kubectl_backup_core::volume::MoverSettings {
            image: args.mover_image.clone(),
            bytes_per_second: args.mover_bandwidth,
            time_limit: None,
        },
    })
}

/// The index refresher and the controllers the flags turn on, each supervised.
fn start_controllers(supervisor: &mut runtime::Supervisor, ctx: &Arc<controllers::Context>, args: &Args) {
    // The index: loaded now (readiness waits for it), then refreshed in the background.
    {
        let (index, store, metrics) = (ctx.index.clone(), ctx.location.store.clone(), ctx.metrics.clone());
        let every = args.index_refresh;
        supervisor.spawn("index", move || {
            let (index, store, metrics) = (index.clone(), store.clone(), metrics.clone());
            async move {
                loop {
                    match index.refresh(&store).await {
                        Ok(()) => {
                            metrics.index_backups.set(index.backups() as i64);
                        }
                        Err(e) => {
                            metrics.index_refresh_errors.inc();
                            tracing::warn!(error = %e, "could not refresh the backup index; keeping the previous one");
                        }
                    };
                    tokio::time::sleep(if index.ready() { every } else { std::time::Duration::from_secs(2) }).await;
                }
            }
        });
    }
    {
        let ctx = ctx.clone();
        supervisor.spawn("discovery-changes", move || controllers::discovery::run(ctx.clone()));
    }
    if args.restore_worker {
        let worker = Arc::new(controllers::restore::RestoreWorker { ctx: ctx.clone() });
        supervisor.spawn("restore-worker", move || worker.clone().run());
    }
    if args.schedules {
        let ctx = ctx.clone();
        supervisor.spawn("schedules", move || controllers::schedules::run(ctx.clone()));
    }
    {
        let ctx = ctx.clone();
        supervisor.spawn("backup-requests", move || controllers::requests::run_backups(ctx.clone()));
    }
    {
        let ctx = ctx.clone();
        supervisor.spawn("restore-requests", move || controllers::requests::run_restores(ctx.clone()));
    }
    {
        let (ctx, every) = (ctx.clone(), args.gc_interval);
        supervisor.spawn("expiry", move || controllers::expiry::run(ctx.clone(), every));
    }
    {
        let (ctx, every) = (ctx.clone(), args.location_check_interval);
        supervisor.spawn("location-health", move || controllers::health::run(ctx.clone(), every));
    }
    {
        // As often as locations are checked: the default minute.
        let (ctx, every) = (ctx.clone(), args.location_check_interval);
        supervisor.spawn("metric-series", move || controllers::forget_deleted_sources(ctx.clone(), every));
    }
    if args.continuous {
        let c = Arc::new(controllers::continuous::Continuous {
            ctx: ctx.clone(),
            debounce: args.debounce,
            keep: args.keep_workspace_backups,
            retention: args.retention,
            incremental: args.continuous_incremental,
            list_every: args.continuous_list_every,
            max_held: args.continuous_changes_max_mib.saturating_mul(1 << 20),
            include_volumes: args.continuous_include_volumes,
            parallel: args.continuous_parallel,
            timeout: args.continuous_timeout,
            retry: controllers::continuous::Retry {
                times: args.continuous_retries,
                after: args.continuous_retry_after,
            },
        });
        supervisor.spawn("continuous", move || c.clone().run());
    }
}

/// `/metrics` (plain or TLS) in the background, then the admission server until a signal.
async fn serve(
    args: &Args,
    ctx: &controllers::Context,
    cert: &Arc<tls::ReloadingCert>,
    supervisor: &runtime::Supervisor,
) -> anyhow::Result<()> {
    if let Some(addr) = args.metrics_addr {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding --metrics-addr {addr}"))?;
        let router = server::metrics_router(ctx.metrics.clone());
        if args.metrics_tls {
            // The serving certificate of the webhook (reloaded on rotation like it).
            tokio::spawn(server::serve_tls(listener, Arc::new(cert.server_config()), router, shutdown_signal()));
        } else {
            tokio::spawn(server::serve_plain(listener, router, shutdown_signal()));
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    tracing::info!(listen = %args.listen, location = %ctx.location.display(), "backup-webhook serving");
    let app = server::router(server::AppState {
        policy: ctx.policy.clone(),
        index: ctx.index.clone(),
        metrics: ctx.metrics.clone(),
        key: ctx.key.clone(),
        health: supervisor.health.clone(),
    });
    server::serve_tls(listener, Arc::new(cert.server_config()), app, shutdown_signal()).await;
    Ok(())
}

/// Creates the BackupLocation `--location` names from the `--default-location-*` flags when it is
/// missing. Right after a one-shot `kubectl apply` its CRD may not be established yet: retried for a
/// minute, then the process fails (and is restarted).
async fn create_default_location(cluster: &Cluster, args: &Args) -> anyhow::Result<()> {
    let name = args.location.location.as_str();
    let Some(spec) = args.default_location.spec() else { return Ok(()) };
    if !locations::is_name(name) {
        tracing::warn!(location = %name, "--default-location-url is ignored: --location is a URL, not a BackupLocation name");
        return Ok(());
    }
    let namespace = &args.policy.namespace;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match locations::create_if_missing(&cluster.client, namespace, name, spec.clone()).await {
            Ok(locations::Ensured::Created) => {
                tracing::info!(location = %name, url = %spec.url, "created the default BackupLocation from --default-location-url");
                return Ok(());
            }
            Ok(locations::Ensured::Existed) => {
                tracing::info!(location = %name, "BackupLocation exists; --default-location-* flags left it as it is");
                return Ok(());
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!(location = %name, error = %e, "cannot create the default BackupLocation yet (is its CRD established?); retrying");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(e)).with_context(|| {
                    format!("creating BackupLocation {name:?} in namespace {namespace:?} from --default-location-url (is the backuplocations.kubectl-backup.dev CRD installed?)")
                });
            }
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
