//! One builder per provider: a location and its options -> an `ObjectStore`. Credentials come from
//! the provider's own environment (or a BackupLocation's credentials Secret), never from a URL.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::{BackoffConfig, Certificate, ClientOptions, ObjectStore, RetryConfig};
use url::Url;

use super::{Location, StoreOptions, aws_identity, store_message};
use crate::{Error, Result};

fn fail(location: &Location, reason: String) -> Error {
    Error::Location { location: location.url.clone(), reason }
}

fn retry(options: &StoreOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: options.max_retries.unwrap_or(5),
        retry_timeout: Duration::from_secs(60),
    }
}

/// A local directory.
pub fn local(location: &Location) -> Result<Arc<dyn ObjectStore>> {
    let fail = |reason: String| fail(location, reason);
    let dir = PathBuf::from(&location.bucket);
    // Backups hold Secrets: a local location is the owner's alone. New directories
    // are 0700 and every file this process writes from now on 0600 (the umask:
    // object_store creates the files).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| fail(format!("cannot create directory {}: {e}", dir.display())))?;
    }
    let fs = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| fail(format!("cannot open directory {}: {e}", dir.display())))?
        .with_automatic_cleanup(true);
    Ok(Arc::new(fs))
}

/// S3 and S3-compatible stores (MinIO, Ceph...): endpoint, path style, region, profile.
pub fn s3(location: &Location, options: &StoreOptions) -> Result<object_store::aws::AmazonS3> {
    let fail = |reason: String| fail(location, reason);
    // The CA files are read once: the S3 client and the STS client both trust them.
    let ca = ca_pems(options)?;
    let (client, retry) = (client_options(options, &ca)?, retry(options));
    let mut b = AmazonS3Builder::new().with_client_options(client).with_retry(retry);
    for (key, value) in provider_env("AWS_", &options.credentials) {
        if let Ok(k) = key.to_ascii_lowercase().parse() {
            b = b.with_config(k, value);
        }
    }
    let static_keys = static_keys(&options.credentials);
    if static_keys.is_none()
        && std::env::var_os("AWS_REGION").is_none()
        && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        && let Some(r) = profile_region()
    {
        b = b.with_region(r);
    }
    let have_keys = static_keys.is_some() || std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
    if aws_identity::wanted(options.assume_role.as_ref(), have_keys) {
        let settings = aws_identity::Settings {
            role: options.assume_role.clone(),
            region: options.region.clone().or_else(|| from_env_or(&options.credentials, "AWS_REGION")),
            static_keys,
            ca_pems: ca,
        };
        b = b.with_credentials(Arc::new(aws_identity::SdkCredentials::new(settings)));
    }
    if let Some(region) = &options.region {
        b = b.with_region(region);
    }
    let from_settings = |k: &str| from_env_or(&options.credentials, k);
    let endpoint = options
        .s3_endpoint
        .clone()
        .or_else(|| from_settings("AWS_ENDPOINT_URL"))
        .or_else(|| from_settings("AWS_ENDPOINT"));
    if let Some(endpoint) = &endpoint {
        Url::parse(endpoint).map_err(|e| Error::invalid("S3 endpoint", endpoint, format!("not a URL: {e}")))?;
        b = b.with_endpoint(endpoint);
        if endpoint.starts_with("http://") {
            b = b.with_allow_http(true);
        }
    }
    let path_style = options.path_style.unwrap_or(endpoint.is_some());
    b = b.with_virtual_hosted_style_request(!path_style).with_bucket_name(&location.bucket);
    b.build().map_err(|e| fail(format!("S3 configuration: {}", store_message(&e))))
}

/// Google Cloud Storage.
pub fn gcs(location: &Location, options: &StoreOptions) -> Result<object_store::gcp::GoogleCloudStorage> {
    let fail = |reason: String| fail(location, reason);
    let (client, retry) = (client_options(options, &ca_pems(options)?)?, retry(options));
    let mut b = GoogleCloudStorageBuilder::new().with_client_options(client).with_retry(retry);
    for (key, value) in provider_env("GOOGLE_", &options.credentials) {
        if let Ok(k) = key.to_ascii_lowercase().parse() {
            b = b.with_config(k, value);
        }
    }
    b = b.with_bucket_name(&location.bucket);
    b.build().map_err(|e| fail(format!("GCS configuration: {}", store_message(&e))))
}

/// Azure Blob Storage.
pub fn azure(location: &Location, options: &StoreOptions) -> Result<object_store::azure::MicrosoftAzure> {
    let fail = |reason: String| fail(location, reason);
    let (client, retry) = (client_options(options, &ca_pems(options)?)?, retry(options));
    let mut b = MicrosoftAzureBuilder::new().with_client_options(client).with_retry(retry);
    for (key, value) in provider_env("AZURE_", &options.credentials) {
        if let Ok(k) = key.to_ascii_lowercase().parse() {
            b = b.with_config(k, value);
        }
    }
    if let Ok(endpoint) = std::env::var("AZURE_STORAGE_ENDPOINT")
        && endpoint.starts_with("http://")
    {
        b = b.with_allow_http(true);
    }
    b = b.with_container_name(&location.bucket);
    b.build().map_err(|e| fail(format!("Azure configuration: {}", store_message(&e))))
}

fn client_options(options: &StoreOptions, ca_pems: &[Vec<u8>]) -> Result<ClientOptions> {
    let mut client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(options.request_timeout.unwrap_or(Duration::from_secs(300)))
        .with_pool_idle_timeout(Duration::from_secs(30));
    for pem in ca_pems {
        for c in Certificate::from_pem_bundle(pem).map_err(|e| Error::Other(store_message(&e)))? {
            client = client.with_root_certificate(c);
        }
    }
    Ok(client)
}

/// The extra CAs a store's certificate may chain to: a BackupLocation's inline `caBundle` and the
/// `--ca-cert` file, each checked to hold at least one PEM certificate.
fn ca_pems(options: &StoreOptions) -> Result<Vec<Vec<u8>>> {
    let check = |what: &'static str, value: String, pem: &[u8]| match Certificate::from_pem_bundle(pem) {
        Ok(certs) if certs.is_empty() => Err(Error::invalid(what, value, "no certificate in the file")),
        Ok(_) => Ok(()),
        Err(e) => Err(Error::invalid(what, value, format!("not a PEM certificate bundle: {}", store_message(&e)))),
    };
    let mut pems = Vec::new();
    if let Some(pem) = &options.ca_pem {
        check("caBundle", "(inline)".to_string(), pem)?;
        pems.push(pem.clone());
    }
    if let Some(path) = &options.ca_cert {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| Error::invalid("--ca-cert", shown.clone(), e.to_string()))?;
        check("--ca-cert", shown, &pem)?;
        pems.push(pem);
    }
    Ok(pems)
}

/// The provider's own settings: environment variables starting with `prefix`, then the same names
/// from a credentials Secret (which win). Nothing else.
fn provider_env<'a>(
    prefix: &'a str,
    credentials: &'a [(String, String)],
) -> impl Iterator<Item = (String, String)> + 'a {
    let env = std::env::vars_os().filter_map(move |(k, v)| {
        let (k, v) = (k.into_string().ok()?, v.into_string().ok()?);
        k.starts_with(prefix).then_some((k, v))
    });
    env.chain(credentials.iter().filter(move |(k, _)| k.starts_with(prefix)).cloned())
}

/// A Secret's (or `None`) base keys: id, secret and session token.
fn static_keys(credentials: &[(String, String)]) -> Option<(String, String, Option<String>)> {
    let get = |k: &str| credentials.iter().find(|(c, _)| c == k).map(|(_, v)| v.clone());
    Some((get("AWS_ACCESS_KEY_ID")?, get("AWS_SECRET_ACCESS_KEY")?, get("AWS_SESSION_TOKEN")))
}

/// `name` from a credentials Secret, else from the environment.
fn from_env_or(credentials: &[(String, String)], name: &str) -> Option<String> {
    credentials.iter().find(|(c, _)| c == name).map(|(_, v)| v.clone()).or_else(|| std::env::var(name).ok())
}

/// The region of `AWS_PROFILE` (or `default`) in `~/.aws/config` (`AWS_CONFIG_FILE`): S3 requests
/// are signed for a region before any credential is fetched, so it is read here, at open time.
/// Credentials from profiles are the AWS SDK's business (aws_identity.rs).
fn profile_region() -> Option<String> {
    let config_file = std::env::var_os("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/config")))?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_string());
    let cfg = load_ini(&config_file).ok()?;
    let name = if profile == "default" { "default".to_string() } else { format!("profile {profile}") };
    cfg.section(Some(name.as_str())).and_then(|s| s.get("region")).map(str::to_string)
}

fn load_ini(path: &FsPath) -> Result<ini::Ini> {
    ini::Ini::load_from_file(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}
