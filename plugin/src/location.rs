//! Which location a command uses: `--location URL`, else `$KUBECTL_BACKUP_LOCATION`, else the
//! embedded default directory.

use kubectl_backup_core::store::{Location, Store};

use crate::args::LocationArgs;

pub fn url(args: &LocationArgs) -> anyhow::Result<String> {
    Ok(match &args.location {
        Some(l) => l.clone(),
        None => Location::default_url()?,
    })
}

pub fn open(args: &LocationArgs) -> anyhow::Result<Store> {
    Ok(Store::open_url(&url(args)?, &args.options())?)
}
