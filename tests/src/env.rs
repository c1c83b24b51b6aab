//! The shared environment: one control plane and one server per object store, started by
//! `harness up` (see `tests/run.sh`) and described in a JSON file whose path is in
//! `KUBECTL_BACKUP_E2E_ENV`. Tests read it; tests that need servers of their own (a second cluster,
//! an API server they restart, a TLS etcd) start them with the same library.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::control_plane::ClusterInfo;
use crate::stores::StoreInfo;

pub const ENV_FILE_VAR: &str = "KUBECTL_BACKUP_E2E_ENV";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SharedEnv {
    pub cluster: ClusterInfo,
    pub s3: StoreInfo,
    pub azure: StoreInfo,
    pub gcs: StoreInfo,
    /// Scratch space for tests (each test makes its own subdirectory).
    pub scratch: PathBuf,
}

impl SharedEnv {
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?).with_context(|| format!("writing {}", path.display()))
    }

    /// The environment `harness up` started. Fails with how to start it when there is none.
    pub fn load() -> Result<SharedEnv> {
        let path = std::env::var_os(ENV_FILE_VAR).map(PathBuf::from).with_context(|| {
            format!("{ENV_FILE_VAR} is not set: the end-to-end tests need the servers `tests/run.sh` starts (run ./tests/run.sh)")
        })?;
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_slice(&text)?)
    }

    pub fn stores(&self) -> [&StoreInfo; 3] {
        [&self.s3, &self.azure, &self.gcs]
    }
}
