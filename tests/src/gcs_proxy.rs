//! A small test-side proxy in front of fake-gcs-server that translates the XML-API writes
//! object_store makes (plain PUT, XML multipart upload) into JSON-API uploads fake-gcs-server
//! understands, and forwards everything else unchanged.
//!
//! (Implementation pending: see the harness brief.)

use anyhow::{Result, bail};

pub struct GcsProxy {
    port: u16,
}

impl GcsProxy {
    pub fn start(upstream: &str) -> Result<GcsProxy> {
        let _ = upstream;
        bail!("the GCS proxy is not written yet")
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}
