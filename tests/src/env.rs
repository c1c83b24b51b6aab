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
    /// Absent when the harness was started without it (`harness up --stores s3`, as `demo.sh` does).
    #[serde(default)]
    pub azure: Option<StoreInfo>,
    #[serde(default)]
    pub gcs: Option<StoreInfo>,
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

    /// Every store the harness started.
    pub fn stores(&self) -> Vec<&StoreInfo> {
        [Some(&self.s3), self.azure.as_ref(), self.gcs.as_ref()].into_iter().flatten().collect()
    }

    /// Azurite; fails the test with how to get it when the harness did not start it.
    pub fn azure(&self) -> &StoreInfo {
        self.azure.as_ref().expect("the harness runs no Azurite: start it with `harness up --stores s3,azure,gcs`")
    }

    /// fake-gcs-server; fails the test with how to get it when the harness did not start it.
    pub fn gcs(&self) -> &StoreInfo {
        self.gcs
            .as_ref()
            .expect("the harness runs no fake-gcs-server: start it with `harness up --stores s3,azure,gcs`")
    }
}
