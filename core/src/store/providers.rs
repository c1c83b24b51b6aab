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

use super::{Location, StoreOptions, store_message};
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
pub fn s3(location: &Location, options: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    let fail = |reason: String| fail(location, reason);
    let (client, retry) = (client_options(options)?, retry(options));
    let mut b = AmazonS3Builder::new().with_client_options(client).with_retry(retry);
    for (key, value) in provider_env("AWS_", &options.credentials) {
        if let Ok(k) = key.to_ascii_lowercase().parse() {
            b = b.with_config(k, value);
        }
    }
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
        && std::env::var_os("AWS_WEB_IDENTITY_TOKEN_FILE").is_none()
        && let Some(profile) = aws_profile()?
    {
        b = b.with_access_key_id(profile.access_key_id).with_secret_access_key(profile.secret_access_key);
        if let Some(t) = profile.session_token {
            b = b.with_token(t);
        }
        if let Some(r) = profile.region
            && std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            b = b.with_region(r);
        }
    }
    if let Some(region) = &options.region {
        b = b.with_region(region);
    }
    let from_settings = |k: &str| {
        options.credentials.iter().find(|(c, _)| c == k).map(|(_, v)| v.clone()).or_else(|| std::env::var(k).ok())
    };
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
    Ok(Arc::new(b.build().map_err(|e| fail(format!("S3 configuration: {}", store_message(&e))))?))
}

/// Google Cloud Storage.
pub fn gcs(location: &Location, options: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    let fail = |reason: String| fail(location, reason);
    let (client, retry) = (client_options(options)?, retry(options));
    let mut b = GoogleCloudStorageBuilder::new().with_client_options(client).with_retry(retry);
    for (key, value) in provider_env("GOOGLE_", &options.credentials) {
        if let Ok(k) = key.to_ascii_lowercase().parse() {
            b = b.with_config(k, value);
        }
    }
    b = b.with_bucket_name(&location.bucket);
    Ok(Arc::new(b.build().map_err(|e| fail(format!("GCS configuration: {}", store_message(&e))))?))
}

/// Azure Blob Storage.
pub fn azure(location: &Location, options: &StoreOptions) -> Result<Arc<dyn ObjectStore>> {
    let fail = |reason: String| fail(location, reason);
    let (client, retry) = (client_options(options)?, retry(options));
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
    Ok(Arc::new(b.build().map_err(|e| fail(format!("Azure configuration: {}", store_message(&e))))?))
}

fn client_options(options: &StoreOptions) -> Result<ClientOptions> {
    let mut client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(options.request_timeout.unwrap_or(Duration::from_secs(300)))
        .with_pool_idle_timeout(Duration::from_secs(30));
    if let Some(pem) = &options.ca_pem {
        let certs = Certificate::from_pem_bundle(pem).map_err(|e| {
            Error::invalid("caBundle", "(inline)", format!("not a PEM certificate bundle: {}", store_message(&e)))
        })?;
        for c in certs {
            client = client.with_root_certificate(c);
        }
    }
    if let Some(path) = &options.ca_cert {
        let pem =
            std::fs::read(path).map_err(|e| Error::invalid("--ca-cert", path.display().to_string(), e.to_string()))?;
        let certs = Certificate::from_pem_bundle(&pem).map_err(|e| {
            Error::invalid(
                "--ca-cert",
                path.display().to_string(),
                format!("not a PEM certificate bundle: {}", store_message(&e)),
            )
        })?;
        if certs.is_empty() {
            return Err(Error::invalid("--ca-cert", path.display().to_string(), "no certificate in the file"));
        }
        for c in certs {
            client = client.with_root_certificate(c);
        }
    }
    Ok(client)
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

struct AwsProfile {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    region: Option<String>,
}

/// Static keys of `AWS_PROFILE` (or `default`) from `~/.aws/credentials` and its region from
/// `~/.aws/config` — the profile chain users of the AWS CLI expect. `None` when there is no such profile.
fn aws_profile() -> Result<Option<AwsProfile>> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let creds_file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
    let config_file =
        std::env::var_os("AWS_CONFIG_FILE").map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_string());
    let explicit = std::env::var_os("AWS_PROFILE").is_some();
    let Some(creds_file) = creds_file.filter(|p| p.exists()) else {
        return if explicit {
            Err(Error::Other(format!(
                "AWS_PROFILE={profile} is set but there is no shared credentials file (~/.aws/credentials)"
            )))
        } else {
            Ok(None)
        };
    };
    let ini = load_ini(&creds_file)?;
    let Some(section) = ini.section(Some(profile.as_str())) else {
        return if explicit {
            Err(Error::Other(format!("AWS_PROFILE={profile}: no such profile in {}", creds_file.display())))
        } else {
            Ok(None)
        };
    };
    let (Some(id), Some(secret)) = (section.get("aws_access_key_id"), section.get("aws_secret_access_key")) else {
        return Ok(None);
    };
    let region = config_file.filter(|p| p.exists()).and_then(|p| load_ini(&p).ok()).and_then(|cfg| {
        let name = if profile == "default" { "default".to_string() } else { format!("profile {profile}") };
        cfg.section(Some(name.as_str())).and_then(|s| s.get("region")).map(str::to_string)
    });
    Ok(Some(AwsProfile {
        access_key_id: id.to_string(),
        secret_access_key: secret.to_string(),
        session_token: section.get("aws_session_token").map(str::to_string),
        region,
    }))
}

fn load_ini(path: &FsPath) -> Result<ini::Ini> {
    ini::Ini::load_from_file(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}
