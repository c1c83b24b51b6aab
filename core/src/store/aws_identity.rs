//! AWS credentials beyond static keys, resolved by the AWS SDK's own providers (`aws-config`):
//! a role assumed through STS (with an External ID and a session name) on top of whatever base
//! credentials the environment gives; profiles with `role_arn` / `source_profile` / `external_id` /
//! `credential_process`; web identity (`AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, what EKS
//! injects); container and instance credentials. Temporary credentials are cached here and
//! refreshed before they expire, so a long-running controller never signs with an expired key.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;
use tokio::sync::{Mutex, OnceCell};

/// A role to assume through STS before talking to S3.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssumeRole {
    pub role_arn: String,
    /// Sent as `ExternalId`: what the role's trust policy asks of this caller.
    pub external_id: Option<String>,
    /// `RoleSessionName`, visible in CloudTrail. Default: `kubectl-backup-<unix time>`.
    pub session_name: Option<String>,
    /// How long each set of temporary credentials lives (STS's `DurationSeconds`). Default: 1 hour.
    pub duration: Option<Duration>,
    /// The STS endpoint (MinIO, an on-premises STS...). Default: the SDK's (`AWS_ENDPOINT_URL_STS`,
    /// else the region's STS).
    pub sts_endpoint: Option<String>,
}

/// Everything the SDK needs to build the provider, kept until the first request needs it.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub role: Option<AssumeRole>,
    pub region: Option<String>,
    /// Base keys from a BackupLocation's credentials Secret, if it has them.
    pub static_keys: Option<(String, String, Option<String>)>,
    /// PEM CA certificates the STS endpoint's certificate may chain to (`--ca-cert`, `caBundle`).
    pub ca_pems: Vec<Vec<u8>>,
}

/// True when S3 credentials must come from the SDK's providers rather than object_store's own:
/// a role to assume, or no static keys while a profile or web identity is configured.
pub(super) fn wanted(role: Option<&AssumeRole>, have_static_keys: bool) -> bool {
    if role.is_some() {
        return true;
    }
    if have_static_keys {
        return false;
    }
    let env = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    env("AWS_PROFILE") || env("AWS_WEB_IDENTITY_TOKEN_FILE") || shared_files_exist()
}

fn shared_files_exist() -> bool {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let file = |var: &str, default: &str| {
        std::env::var_os(var).map(std::path::PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(default)))
    };
    [file("AWS_CONFIG_FILE", ".aws/config"), file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials")]
        .into_iter()
        .flatten()
        .any(|p| p.exists())
}

/// The provider object_store signs with.
#[derive(Debug)]
pub(super) struct SdkCredentials {
    settings: Settings,
    provider: OnceCell<SharedCredentialsProvider>,
    cached: Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    credential: Arc<AwsCredential>,
    /// When to fetch new ones: before the old ones expire (`None`: they never do).
    refresh_at: Option<SystemTime>,
}

impl SdkCredentials {
    pub(super) fn new(settings: Settings) -> SdkCredentials {
        SdkCredentials { settings, provider: OnceCell::new(), cached: Mutex::new(None) }
    }

    async fn provider(&self) -> Result<&SharedCredentialsProvider, String> {
        self.provider.get_or_try_init(|| build(&self.settings)).await
    }

    fn describe(&self) -> String {
        match &self.settings.role {
            Some(r) => {
                let sts = r.sts_endpoint.as_deref().unwrap_or("the SDK's STS endpoint");
                format!("cannot assume role {} through STS ({sts})", r.role_arn)
            }
            None => "cannot get AWS credentials from the environment (profile, web identity, container or instance credentials)".to_string(),
        }
    }
}

async fn build(s: &Settings) -> Result<SharedCredentialsProvider, String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(r) = &s.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some((id, secret, token)) = &s.static_keys {
        loader = loader.credentials_provider(Credentials::new(id, secret, token.clone(), None, "credentials Secret"));
    }
    if !s.ca_pems.is_empty() {
        loader = trusting(loader, &s.ca_pems)?;
    }
    if let Some(endpoint) = s.role.as_ref().and_then(|r| r.sts_endpoint.as_ref()) {
        // Only the role's STS client uses this configuration's endpoint; S3 goes through object_store.
        loader = loader.endpoint_url(endpoint);
    }
    let conf = loader.load().await;
    let Some(role) = &s.role else {
        return conf.credentials_provider().ok_or_else(|| "the AWS SDK found no credential provider".to_string());
    };
    let mut b = AssumeRoleProvider::builder(role.role_arn.clone()).configure(&conf);
    if conf.region().is_none() {
        // STS needs a region to sign with; the global endpoint's is us-east-1.
        b = b.region(aws_config::Region::from_static("us-east-1"));
    }
    if let Some(id) = &role.external_id {
        b = b.external_id(id);
    }
    let session =
        role.session_name.clone().unwrap_or_else(|| format!("kubectl-backup-{}", jiff::Timestamp::now().as_second()));
    b = b.session_name(session);
    if let Some(d) = role.duration {
        b = b.session_length(d);
    }
    Ok(SharedCredentialsProvider::new(b.build().await))
}

/// The SDK's HTTPS client, trusting the given CAs as well as the system's roots.
fn trusting(loader: aws_config::ConfigLoader, pems: &[Vec<u8>]) -> Result<aws_config::ConfigLoader, String> {
    use aws_smithy_http_client::tls;
    let mut trust = tls::TrustStore::default();
    for pem in pems {
        trust.add_pem_certificate(pem.clone());
    }
    let context =
        tls::TlsContext::builder().with_trust_store(trust).build().map_err(|e| format!("CA certificates: {e}"))?;
    Ok(loader.http_client(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
            .tls_context(context)
            .build_https(),
    ))
}

/// When to refresh credentials fetched at `now` that expire at `expiry`: at three quarters of their
/// life (15 minutes early for an hour's), at once when they are already expired.
fn refresh_at(now: SystemTime, expiry: SystemTime) -> SystemTime {
    match expiry.duration_since(now) {
        Ok(life) => expiry - life / 4,
        Err(_) => expiry,
    }
}

#[async_trait::async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.refresh_at.is_none_or(|t| SystemTime::now() < t)
        {
            return Ok(c.credential.clone());
        }
        let fail = |reason: String| object_store::Error::Generic {
            store: "S3",
            source: format!("{}: {reason}", self.describe()).into(),
        };
        let provider = self.provider().await.map_err(fail)?;
        let creds = provider.provide_credentials().await.map_err(|e| fail(sdk_message(&e)))?;
        let credential = Arc::new(AwsCredential {
            key_id: creds.access_key_id().to_string(),
            secret_key: creds.secret_access_key().to_string(),
            token: creds.session_token().map(str::to_string),
        });
        let now = SystemTime::now();
        tracing::debug!(expiry = ?creds.expiry(), "new AWS credentials");
        *cached =
            Some(Cached { credential: credential.clone(), refresh_at: creds.expiry().map(|e| refresh_at(now, e)) });
        Ok(credential)
    }
}

/// The SDK's error with its causes (its own Display is only the outermost one, "service error"),
/// and the HTTP status of an STS answer: an STS-compatible server whose error body the SDK cannot
/// parse (or a proxy's 403 page) still says what happened.
fn sdk_message(e: &(dyn std::error::Error + 'static)) -> String {
    use aws_sdk_sts::error::SdkError;
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;
    use aws_smithy_runtime_api::http::Response;
    let mut message = crate::error::chain(e.to_string(), e.source());
    let mut cause = Some(e);
    while let Some(err) = cause {
        let status = match (
            err.downcast_ref::<SdkError<AssumeRoleError, Response>>(),
            err.downcast_ref::<SdkError<AssumeRoleWithWebIdentityError, Response>>(),
        ) {
            (Some(SdkError::ServiceError(s)), _) => Some(s.raw().status().as_u16()),
            (_, Some(SdkError::ServiceError(s))) => Some(s.raw().status().as_u16()),
            _ => None,
        };
        if let Some(status) = status {
            message.push_str(&format!(" (HTTP {status} from STS)"));
            break;
        }
        cause = err.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_a_quarter_of_the_life_before_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(refresh_at(now, now + Duration::from_secs(3600)), now + Duration::from_secs(2700));
        assert_eq!(refresh_at(now, now + Duration::from_secs(20)), now + Duration::from_secs(15));
        // Already expired: refresh at once.
        assert!(refresh_at(now, now - Duration::from_secs(5)) <= now);
    }
}
