//! Which location a command uses: `--location URL|NAME`, else `$KUBECTL_BACKUP_LOCATION`, else the
//! cluster's default BackupLocation, else the embedded default directory.

use kube::Client;
use kubectl_backup_core::kube_client;
use kubectl_backup_core::locations::{self, Resolved, is_name};

use crate::args::Globals;

/// Opens the location. `client` is used if given; otherwise one is made only when needed (a
/// location name, or looking for the cluster's default) and its absence is not an error for the
/// default lookup.
pub async fn open(cli: &Globals, client: Option<&Client>) -> anyhow::Result<Resolved> {
    let given = cli.location.location.as_deref();
    let env_set = std::env::var(kubectl_backup_core::store::LOCATION_ENV).is_ok_and(|v| !v.trim().is_empty());
    let needs_cluster = match given {
        Some(l) => is_name(l),
        None => !env_set || std::env::var(kubectl_backup_core::store::LOCATION_ENV).is_ok_and(|v| is_name(v.trim())),
    };
    let made;
    let client = match client {
        Some(c) => Some(c),
        None if needs_cluster => {
            made = kube_client::client(&cli.kube.options()).await;
            match (&made, given) {
                (Ok(c), _) => Some(c),
                (Err(e), Some(_)) => return Err(anyhow::anyhow!("{e}")),
                (Err(_), None) => None,
            }
        }
        None => None,
    };
    let unseal = cli.location.unseal()?;
    let mut resolved =
        locations::resolve(client, &cli.location.install_namespace, given, &cli.location.options()).await?;
    let keys = resolved.store.unseal().clone().merge(unseal);
    resolved.store = resolved.store.with_unseal(keys);
    Ok(resolved)
}
