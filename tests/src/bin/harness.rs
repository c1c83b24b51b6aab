//! `harness up --dir DIR --env-file FILE [--stores s3,azure,gcs]`: starts the shared test
//! environment (control plane and the object-store servers asked for, all three by default), writes
//! its description to FILE, and runs until SIGTERM/SIGINT, then stops every process it started.
//! `tests/run.sh` starts everything; `demo.sh` only the control plane and S3.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kubectl_backup_e2e::control_plane::ControlPlane;
use kubectl_backup_e2e::env::SharedEnv;
use kubectl_backup_e2e::stores::{Azurite, FakeGcs, S3Server};

fn main() -> Result<()> {
    kubectl_backup_core::kube_client::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    const USAGE: &str = "usage: harness up --dir DIR --env-file FILE [--stores s3,azure,gcs]";
    let mut dir = None;
    let mut env_file = None;
    let mut stores = String::from("s3,azure,gcs");
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("up") => {}
        _ => bail!(USAGE),
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = it.next().map(PathBuf::from),
            "--env-file" => env_file = it.next().map(PathBuf::from),
            "--stores" => stores = it.next().cloned().unwrap_or_default(),
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    let stores = parse_stores(&stores)?;
    let dir = dir.context("--dir is required")?;
    let env_file = env_file.context("--env-file is required")?;
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;

    eprintln!("harness: starting etcd, kube-apiserver, kube-controller-manager in {}", dir.display());
    let mut cluster = ControlPlane::start(&dir.join("cluster"))?;
    eprintln!("harness: control plane ready at {}", cluster.info.server);
    let s3 = S3Server::start(&dir)?;
    let azure = if stores.azure { Some(Azurite::start(&dir)?) } else { None };
    let gcs = if stores.gcs { Some(FakeGcs::start(&dir)?) } else { None };
    let port = |p: Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_else(|| "not started".into());
    eprintln!(
        "harness: object stores ready (s3 :{}, azure {}, gcs {})",
        s3.info.port,
        port(azure.as_ref().map(|a| a.info.port)),
        port(gcs.as_ref().map(|g| g.info.port))
    );

    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let env = SharedEnv {
        cluster: cluster.info.clone(),
        s3: s3.info.clone(),
        azure: azure.as_ref().map(|a| a.info.clone()),
        gcs: gcs.as_ref().map(|g| g.info.clone()),
        scratch,
    };
    // Write atomically: readers wait for the file to appear.
    let tmp = env_file.with_extension("tmp");
    env.write(&tmp)?;
    std::fs::rename(&tmp, &env_file)?;
    // A shell view for people: `source env.sh` points kubectl and the AWS settings at the harness.
    let mut sh = format!("export KUBECONFIG={}\n", cluster.info.kubeconfig.display());
    for (k, v) in &s3.info.env {
        sh.push_str(&format!("export {k}={v}\n"));
    }
    std::fs::write(dir.join("env.sh"), sh)?;
    eprintln!("harness: ready; environment in {}", env_file.display());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => {
                    if let Err(e) = cluster.check_alive() {
                        eprintln!("harness: a control-plane process died: {e:#}");
                        break;
                    }
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    eprintln!("harness: stopping");
    drop(gcs);
    drop(azure);
    drop(s3);
    drop(cluster);
    Ok(())
}

/// Which optional stores to start. S3 always runs: the demo and most tests use it.
struct Stores {
    azure: bool,
    gcs: bool,
}

fn parse_stores(list: &str) -> Result<Stores> {
    let mut stores = Stores { azure: false, gcs: false };
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            "s3" => {}
            "azure" => stores.azure = true,
            "gcs" => stores.gcs = true,
            other => bail!("--stores: unknown store {other:?} (expected a comma list of s3, azure, gcs)"),
        }
    }
    Ok(stores)
}
