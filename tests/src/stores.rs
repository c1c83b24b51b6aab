//! Real object-store servers on 127.0.0.1: s3s-fs (S3 with SigV4 checks), Azurite (Azure Blob) and
//! fake-gcs-server (GCS, behind the write-translating proxy in `gcs_proxy`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::gcs_proxy::GcsProxy;
use crate::process::{
    Process, cache_dir, cached_tool, find_glob_tool, free_port, free_port_on, port_open, retry_on_port_clash, wait_for,
};

/// How to reach one store: the location URL for `--location` and the environment that authenticates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoreInfo {
    pub provider: String,
    /// Location URL of the bucket root (add a prefix per test).
    pub url: String,
    pub env: Vec<(String, String)>,
    /// Port of the server (or of the proxy in front of it).
    pub port: u16,
}

impl StoreInfo {
    /// A location URL under a fresh prefix.
    pub fn location(&self, prefix: &str) -> String {
        format!("{}/{prefix}", self.url)
    }
}

pub const S3_BUCKET: &str = "backups";
pub const S3_ACCESS_KEY: &str = "harness-access-key";
pub const S3_SECRET_KEY: &str = "harness-secret-key-0123456789";

/// s3s-fs: a real S3 protocol server that checks SigV4 signatures, storing into a directory.
pub struct S3Server {
    pub info: StoreInfo,
    pub root: PathBuf,
    _process: Process,
}

impl S3Server {
    pub fn start(dir: &Path) -> Result<S3Server> {
        Self::start_on(dir, std::net::Ipv4Addr::LOCALHOST)
    }

    /// s3s-fs listening on `address` (one a node's Pods reach, for in-cluster tests).
    pub fn start_on(dir: &Path, address: std::net::Ipv4Addr) -> Result<S3Server> {
        let root = dir.join("s3");
        std::fs::create_dir_all(root.join(S3_BUCKET))?;
        let log = dir.join("s3s-fs.log");
        let (port, process) = retry_on_port_clash(&log, || Self::spawn(&root, address, &log))?;
        let info =
            StoreInfo { provider: "s3".into(), url: format!("s3://{S3_BUCKET}"), env: s3_env_on(address, port), port };
        Ok(S3Server { info, root, _process: process })
    }

    /// s3s-fs on a port free on `address`, once it answers as an S3 server: a port that merely
    /// accepts connections may be another server's that took it first (s3s-fs then exits).
    fn spawn(root: &Path, address: std::net::Ipv4Addr, log: &Path) -> Result<(u16, Process)> {
        let port = free_port_on(address);
        let bin = cached_tool("tools/bin/s3s-fs")?;
        let args: Vec<String> = vec![
            "--host".into(),
            address.to_string(),
            "--port".into(),
            port.to_string(),
            "--access-key".into(),
            S3_ACCESS_KEY.into(),
            "--secret-key".into(),
            S3_SECRET_KEY.into(),
            root.display().to_string(),
        ];
        let mut process = Process::spawn("s3s-fs", bin, &args, log, &[])?;
        wait_for("s3s-fs", &mut process, Duration::from_secs(30), || s3_answers(address, port))?;
        Ok((port, process))
    }
}

/// Whether an S3 server answers on `address:port`: a request without a signature gets S3's
/// `AccessDenied` error document.
fn s3_answers(address: std::net::Ipv4Addr, port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&(address, port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: s3\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).contains("<Code>AccessDenied</Code>")
}

/// The environment that points the AWS settings at a local S3 endpoint.
pub fn s3_env(port: u16) -> Vec<(String, String)> {
    s3_env_on(std::net::Ipv4Addr::LOCALHOST, port)
}

/// The environment that points the AWS settings at an S3 endpoint on `address`.
pub fn s3_env_on(address: std::net::Ipv4Addr, port: u16) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL".into(), format!("http://{address}:{port}")),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
    ]
}

pub const AZURE_ACCOUNT: &str = "devstoreaccount1";
/// The public, well-known key of the storage emulator (not a secret).
pub const AZURE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
pub const AZURE_CONTAINER: &str = "backups";

/// Azurite's blob service.
pub struct Azurite {
    pub info: StoreInfo,
    _process: Process,
}

impl Azurite {
    pub fn start(dir: &Path) -> Result<Azurite> {
        let data = dir.join("azurite");
        std::fs::create_dir_all(&data)?;
        let port = free_port();
        let root = cached_tool("azurite")?;
        let bin = root.join("node_modules/.bin/azurite-blob");
        let args: Vec<String> = vec![
            "--blobHost".into(),
            "127.0.0.1".into(),
            "--blobPort".into(),
            port.to_string(),
            "--location".into(),
            data.display().to_string(),
            "--disableTelemetry".into(),
            "--silent".into(),
            "--skipApiVersionCheck".into(),
            "--loose".into(),
        ];
        let mut process = Process::spawn("azurite", &bin, &args, &dir.join("azurite.log"), &[])?;
        wait_for("azurite", &mut process, Duration::from_secs(60), || port_open(port))?;
        let endpoint = format!("http://127.0.0.1:{port}/{AZURE_ACCOUNT}");
        create_azure_container(&root, &endpoint, AZURE_CONTAINER)?;
        let info = StoreInfo {
            provider: "azure".into(),
            url: format!("az://{AZURE_CONTAINER}"),
            env: vec![
                ("AZURE_STORAGE_ACCOUNT_NAME".into(), AZURE_ACCOUNT.into()),
                ("AZURE_STORAGE_ACCOUNT_KEY".into(), AZURE_KEY.into()),
                ("AZURE_STORAGE_ENDPOINT".into(), endpoint),
                ("AZURE_ALLOW_HTTP".into(), "true".into()),
            ],
            port,
        };
        Ok(Azurite { info, _process: process })
    }
}

/// Creates a container with the Azure SDK for JavaScript (object_store has no container API).
fn create_azure_container(azurite_root: &Path, endpoint: &str, container: &str) -> Result<()> {
    let script = format!(
        r#"const {{ BlobServiceClient, StorageSharedKeyCredential }} = require("@azure/storage-blob");
const cred = new StorageSharedKeyCredential("{AZURE_ACCOUNT}", "{AZURE_KEY}");
const svc = new BlobServiceClient("{endpoint}", cred);
svc.getContainerClient("{container}").createIfNotExists().then(() => process.exit(0), e => {{ console.error(e.message); process.exit(1); }});"#
    );
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg(script)
        .current_dir(azurite_root)
        .output()
        .context("running node to create the Azure container")?;
    if !out.status.success() {
        bail!("creating Azure container {container}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

pub const GCS_BUCKET: &str = "backups";

/// fake-gcs-server with the write-translating proxy in front (object_store writes through the XML
/// API, which fake-gcs-server lacks).
pub struct FakeGcs {
    pub info: StoreInfo,
    pub upstream: String,
    _proxy: GcsProxy,
    _process: Process,
}

impl FakeGcs {
    pub fn start(dir: &Path) -> Result<FakeGcs> {
        let root = dir.join("gcs");
        std::fs::create_dir_all(&root)?;
        let bin = find_glob_tool(&cache_dir().join("venv"), "fake-gcs-server/bin/fake-gcs-server-linux-amd64")?;
        let port = free_port();
        let upstream = format!("http://127.0.0.1:{port}");
        let args: Vec<String> = vec![
            "-scheme".into(),
            "http".into(),
            "-host".into(),
            "127.0.0.1".into(),
            "-port".into(),
            port.to_string(),
            "-backend".into(),
            "filesystem".into(),
            "-filesystem-root".into(),
            root.display().to_string(),
            "-external-url".into(),
            upstream.clone(),
            "-public-host".into(),
            format!("127.0.0.1:{port}"),
            "-log-level".into(),
            "warn".into(),
        ];
        let mut process = Process::spawn("fake-gcs-server", &bin, &args, &dir.join("fake-gcs-server.log"), &[])?;
        wait_for("fake-gcs-server", &mut process, Duration::from_secs(30), || port_open(port))?;
        // An open port is not yet a server that answers (under load, the first POST has failed):
        // the bucket is made once its API answers 2xx, or 409: an earlier attempt made it.
        let create_bucket = || {
            std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
                .args(["-H", "Content-Type: application/json", "--data"])
                .arg(format!(r#"{{"name":"{GCS_BUCKET}"}}"#))
                .arg(format!("{upstream}/storage/v1/b"))
                .output()
                .is_ok_and(|out| out.stdout.starts_with(b"2") || out.stdout == b"409")
        };
        wait_for(
            &format!("fake-gcs-server making bucket {GCS_BUCKET}"),
            &mut process,
            Duration::from_secs(30),
            create_bucket,
        )?;
        let proxy = GcsProxy::start(&upstream)?;
        // A service-account key that points object_store at the proxy and disables OAuth.
        let key = dir.join("gcs-service-account.json");
        let key_json = serde_json::json!({
            "type": "service_account",
            "private_key": "",
            "private_key_id": "harness",
            "client_email": "harness@example.iam.gserviceaccount.com",
            "gcs_base_url": format!("http://127.0.0.1:{}", proxy.port()),
            "disable_oauth": true,
        });
        std::fs::write(&key, serde_json::to_vec_pretty(&key_json)?)?;
        let info = StoreInfo {
            provider: "gcs".into(),
            url: format!("gs://{GCS_BUCKET}"),
            env: vec![
                ("GOOGLE_SERVICE_ACCOUNT".into(), key.display().to_string()),
                ("GOOGLE_ALLOW_HTTP".into(), "true".into()),
            ],
            port: proxy.port(),
        };
        Ok(FakeGcs { info, upstream, _proxy: proxy, _process: process })
    }
}

/// moto's server: S3 and STS (AssumeRole, AssumeRoleWithWebIdentity) behind one endpoint, recording
/// every request it receives (its recorder), for the cloud-identity tests. moto does not evaluate
/// trust policies, so the tests read what was sent from the recording. s3s-fs stays the main S3
/// server; moto is the STS peer.
pub struct Moto {
    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` with a certificate.
    pub endpoint: String,
    client: reqwest::blocking::Client,
    _process: Process,
}

/// One request moto received.
#[derive(Clone, Debug, Deserialize)]
pub struct Recorded {
    pub method: String,
    pub url: String,
    pub headers: std::collections::BTreeMap<String, String>,
    /// The form body of STS calls (decoded), empty for others.
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub body_encoded: bool,
}

impl Recorded {
    /// The access key id the request was signed with (from its SigV4 Authorization header).
    pub fn access_key(&self) -> Option<&str> {
        let auth = self.headers.get("Authorization")?;
        auth.split("Credential=").nth(1)?.split('/').next()
    }

    /// The AWS service the request was signed for (`s3`, `sts`).
    pub fn service(&self) -> Option<&str> {
        let auth = self.headers.get("Authorization")?;
        auth.split("Credential=").nth(1)?.split(',').next()?.split('/').nth(3)
    }

    /// A form parameter of an STS call (`Action`, `RoleArn`, `ExternalId`...).
    pub fn param(&self, name: &str) -> Option<String> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&self.body)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// `X-Amz-Date`, when the request was signed.
    pub fn signed_at(&self) -> Option<jiff::Timestamp> {
        let d = self.headers.get("X-Amz-Date")?;
        jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", d)
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp())
    }
}

impl Moto {
    /// Starts moto on a free port; `tls` = (certificate, key) PEM files serves HTTPS with them and
    /// `ca` is what the harness trusts for its own calls. `env` goes to moto (e.g.
    /// `INITIAL_NO_AUTH_ACTION_COUNT=0` to make it check credentials).
    pub fn start(dir: &Path, tls: Option<(&Path, &Path, &Path)>, env: &[(&str, String)]) -> Result<Moto> {
        std::fs::create_dir_all(dir)?;
        let bin = cached_tool("venv/bin/moto_server")?;
        let port = free_port();
        let mut args = vec!["-H".to_string(), "127.0.0.1".into(), "-p".into(), port.to_string()];
        let mut client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30));
        let endpoint = match tls {
            Some((cert, key, ca)) => {
                args.extend(["-c".into(), cert.display().to_string(), "-k".into(), key.display().to_string()]);
                let ca = reqwest::Certificate::from_pem(&std::fs::read(ca)?)?;
                client = client.tls_certs_only([ca]);
                format!("https://localhost:{port}")
            }
            None => format!("http://127.0.0.1:{port}"),
        };
        let log = dir.join(format!("moto-{port}.log"));
        // The recorder writes to a file, by default in the working directory, which every moto
        // started from it would share.
        let mut env = env.to_vec();
        env.push(("MOTO_RECORDER_FILEPATH", dir.join(format!("moto-{port}.recording")).display().to_string()));
        let mut process = Process::spawn("moto_server", bin, &args, &log, &env)?;
        wait_for("moto_server", &mut process, Duration::from_secs(60), || port_open(port))?;
        let moto = Moto { endpoint, client: client.build()?, _process: process };
        moto.post("/moto-api/recorder/start-recording")?;
        Ok(moto)
    }

    fn post(&self, path: &str) -> Result<String> {
        let r = self.client.post(format!("{}{path}", self.endpoint)).send()?;
        let status = r.status();
        let text = r.text()?;
        if !status.is_success() {
            bail!("moto {path}: {status}: {text}");
        }
        Ok(text)
    }

    /// Creates a bucket (moto accepts the unsigned request).
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        let r = self.client.put(format!("{}/{name}", self.endpoint)).send()?;
        if !r.status().is_success() {
            bail!("creating bucket {name} in moto: {}: {}", r.status(), r.text()?);
        }
        Ok(())
    }

    /// Every request received since the recording started, in order (the recorder's own calls
    /// left out).
    pub fn recording(&self) -> Result<Vec<Recorded>> {
        use base64::Engine;
        let text = self
            .client
            .get(format!("{}/moto-api/recorder/download-recording", self.endpoint))
            .send()?
            .error_for_status()?
            .text()?;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut r: Recorded = serde_json::from_str(line).with_context(|| format!("moto recording line {line}"))?;
            if r.body_encoded {
                let raw = base64::engine::general_purpose::STANDARD.decode(r.body.as_bytes()).unwrap_or_default();
                r.body = String::from_utf8(raw).unwrap_or_default();
            }
            if !r.url.contains("/moto-api/") {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener};

    /// A port that another server took (here one answering plain HTTP the way kube-apiserver's TLS
    /// port does) does not count as s3s-fs started; s3s-fs itself does.
    #[test]
    fn only_an_s3_server_answering_counts_as_started() {
        let other = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = other.local_addr().unwrap().port();
        let answering = std::thread::spawn(move || {
            let (mut c, _) = other.accept().unwrap();
            let mut request = [0u8; 512];
            let _ = c.read(&mut request);
            c.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n").unwrap();
        });
        assert!(!s3_answers(Ipv4Addr::LOCALHOST, port), "a server answering 400 taken for s3s-fs");
        answering.join().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let s3 = S3Server::start(dir.path()).unwrap();
        assert!(s3_answers(Ipv4Addr::LOCALHOST, s3.info.port));
    }
}
