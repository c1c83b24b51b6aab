//! Locations: a URL (`s3://`, `gs://`, `az://`, `file://`) -> an [`ObjectStore`] rooted at its prefix.
//!
//! Credentials come from each provider's standard environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and,
//! for S3, from the AWS SDK's providers (profiles, web identity, a role assumed through STS). Nothing else in the environment
//! is read, and no secret ever appears in an error or a log line: the display form of a location is
//! its URL, which is refused if it carries credentials.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use tokio::sync::mpsc;
use url::Url;

mod aws_identity;
mod chunk;
mod providers;

pub use aws_identity::AssumeRole;

use crate::{Error, Result};

/// The largest metadata document read (one of 1M objects is about 150 MB).
pub const MAX_DOCUMENT_BYTES: u64 = 512 * 1024 * 1024;

/// Multipart part size: the smallest S3 accepts for parts other than the last. A part is held in
/// memory until it is sent, so it is most of what a large backup's peak RSS has above a small
/// one's: 8 MiB parts cost 3 MiB more at 100k objects, once the chunks were maps of their own and
/// the pages reused their buffers (docs/benchmarks.md; before, glibc's retention hid it).
const PART: usize = 5 << 20;
/// Parts uploading at once. Bounds memory: about PART x (this + 1).
const PARTS_IN_FLIGHT: usize = 3;

/// Environment variable naming the default location.
pub const LOCATION_ENV: &str = "KUBECTL_BACKUP_LOCATION";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    S3,
    Gcs,
    Azure,
    File,
}

/// A parsed location URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub provider: Provider,
    /// Bucket (S3, GCS) or container (Azure); the directory for `file://`.
    pub bucket: String,
    /// Key prefix inside the bucket; empty for the bucket root.
    pub prefix: String,
    url: String,
}

impl Location {
    pub fn parse(text: &str) -> Result<Location> {
        let bad = |reason: &str| Error::invalid("location", text, reason.to_string());
        if text.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(bad("the path must not contain '.' or '..' segments"));
        }
        let url = Url::parse(text).map_err(|e| {
            bad(&format!("not a URL ({e}); expected s3://bucket/prefix, gs://bucket/prefix, az://container/prefix or file:///absolute/path"))
        })?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid(
                "location",
                redact(&url),
                "credentials in the URL are not accepted; use the provider's environment (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_KEY, ...)",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("query strings and fragments are not supported"));
        }
        let provider = match url.scheme() {
            "s3" | "s3a" => Provider::S3,
            "gs" | "gcs" => Provider::Gcs,
            "az" | "azure" | "abfs" => Provider::Azure,
            "file" => Provider::File,
            other => {
                return Err(bad(&format!("unsupported scheme {other:?}; use s3://, gs://, az:// or file://")));
            }
        };
        if provider == Provider::File {
            if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                return Err(bad("file URLs need an absolute path: file:///absolute/path"));
            }
            let path = url.to_file_path().map_err(|_| bad("file URLs need an absolute path: file:///absolute/path"))?;
            return Ok(Location {
                provider,
                bucket: path.to_string_lossy().trim_end_matches('/').to_string(),
                prefix: String::new(),
                url: url.to_string().trim_end_matches('/').to_string(),
            });
        }
        let bucket = url.host_str().unwrap_or_default().to_string();
        if bucket.is_empty() {
            return Err(bad("missing bucket or container name"));
        }
        let prefix = url.path().trim_matches('/').to_string();
        if prefix.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(bad("the prefix must not contain '.' or '..' segments"));
        }
        if prefix.contains("//") {
            return Err(bad("the prefix must not contain empty segments ('//')"));
        }
        let scheme = match provider {
            Provider::S3 => "s3",
            Provider::Gcs => "gs",
            Provider::Azure => "az",
            Provider::File => unreachable!(),
        };
        let url =
            if prefix.is_empty() { format!("{scheme}://{bucket}") } else { format!("{scheme}://{bucket}/{prefix}") };
        Ok(Location { provider, bucket, prefix, url })
    }

    /// The location used when none is given: `$KUBECTL_BACKUP_LOCATION`, else a directory under the
    /// user's XDG data dir (`~/.local/share/kubectl-backup`).
    pub fn default_url() -> Result<String> {
        if let Ok(v) = std::env::var(LOCATION_ENV)
            && !v.trim().is_empty()
        {
            return Ok(v);
        }
        Ok(format!("file://{}", default_dir()?.display()))
    }

    /// The URL without credentials; safe to print.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// The embedded default: `$XDG_DATA_HOME/kubectl-backup`.
pub fn default_dir() -> Result<PathBuf> {
    use etcetera::BaseStrategy;
    let base = etcetera::choose_base_strategy().map_err(|e| {
        Error::Other(format!("cannot find the user's data directory ({e}); set {LOCATION_ENV} or pass --location"))
    })?;
    Ok(base.data_dir().join("kubectl-backup"))
}

/// Options that are not part of the URL: what MinIO and other S3-compatible stores need.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// S3 endpoint, e.g. `http://minio.local:9000`. Implies path-style requests unless `path_style` is false.
    pub s3_endpoint: Option<String>,
    pub region: Option<String>,
    /// PEM file with the CA (or bundle) that signed the store's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Path-style (`endpoint/bucket/key`) instead of virtual-hosted requests.
    pub path_style: Option<bool>,
    /// Per-request timeout. Default 5 minutes (a part upload of 8 MiB on a slow link).
    pub request_timeout: Option<Duration>,
    /// Retries of one request. Default 5.
    pub max_retries: Option<usize>,
    /// A PEM CA bundle given inline (a BackupLocation's caBundle), in addition to `ca_cert`.
    pub ca_pem: Option<Vec<u8>>,
    /// Provider settings from a credentials Secret, as environment-variable names
    /// (`AWS_SECRET_ACCESS_KEY`, ...). They override the process environment.
    pub credentials: Vec<(String, String)>,
    /// S3: a role to assume through STS on top of the base credentials.
    pub assume_role: Option<AssumeRole>,
}

/// What [`Store::upload_sealed`] stored.
#[derive(Debug)]
pub struct Uploaded {
    /// Bytes received (the plaintext).
    pub plain: u64,
    /// Bytes stored, and their SHA-256 (hex).
    pub size: u64,
    pub sha256: String,
}

/// An open location: an object store whose root is the location's prefix.
#[derive(Clone)]
pub struct Store {
    location: Location,
    objects: Arc<dyn ObjectStore>,
    /// Signs URLs that reach one object of the location without credentials (none for a local directory).
    signer: Option<Arc<dyn Signer>>,
    /// Who can read the data files written here (none: written in the clear).
    seal: Option<crate::crypto::Seal>,
    /// What opens encrypted data files read from here.
    unseal: crate::crypto::Unseal,
}

/// A cloud store under the location's prefix, as an object store and as a URL signer.
fn with_prefix<T: ObjectStore + Signer>(store: T, prefix: &str) -> (Arc<dyn ObjectStore>, Arc<dyn Signer>) {
    if prefix.is_empty() {
        let s = Arc::new(store);
        (s.clone(), s)
    } else {
        let s = Arc::new(PrefixStore::new(store, prefix));
        (s.clone(), s)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("location", &self.location.url).finish()
    }
}

impl Store {
    /// Opens a location from its URL text.
    pub fn open_url(url: &str, options: &StoreOptions) -> Result<Store> {
        Store::open(&Location::parse(url)?, options)
    }

    pub fn open(location: &Location, options: &StoreOptions) -> Result<Store> {
        if let Some(role) = &options.assume_role
            && location.provider != Provider::S3
        {
            return Err(Error::invalid(
                "--role-arn (assumeRole)",
                &role.role_arn,
                format!("an IAM role is assumed for S3 locations only, and {} is not one", location.url()),
            ));
        }
        let store = match location.provider {
            // A local directory: no prefix store, the directory is the location.
            Provider::File => {
                let objects = providers::local(location)?;
                let (seal, unseal, signer) = (None, Default::default(), None);
                return Ok(Store { location: location.clone(), objects, signer, seal, unseal });
            }
            Provider::S3 => with_prefix(providers::s3(location, options)?, &location.prefix),
            Provider::Gcs => with_prefix(providers::gcs(location, options)?, &location.prefix),
            Provider::Azure => with_prefix(providers::azure(location, options)?, &location.prefix),
        };
        let (objects, signer) = (store.0, Some(store.1));
        Ok(Store { location: location.clone(), objects, signer, seal: None, unseal: Default::default() })
    }

    /// The same location, writing data files encrypted to `seal` (or in the clear when `None`).
    pub fn with_seal(mut self, seal: Option<crate::crypto::Seal>) -> Store {
        self.seal = seal;
        self
    }

    /// The same location, opening encrypted data files with `unseal`.
    pub fn with_unseal(mut self, unseal: crate::crypto::Unseal) -> Store {
        self.unseal = unseal;
        self
    }

    pub fn seal(&self) -> Option<&crate::crypto::Seal> {
        self.seal.as_ref()
    }

    pub fn unseal(&self) -> &crate::crypto::Unseal {
        &self.unseal
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn url(&self) -> &str {
        self.location.url()
    }

    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    /// Whether [`Store::signed_url`] works here (an object store, not a local directory).
    pub fn signs_urls(&self) -> bool {
        self.signer.is_some()
    }

    /// A URL that reaches `path` without credentials until `expires` has passed: how a mover Pod
    /// reads or writes one volume part, holding no credentials of the location.
    pub async fn signed_url(&self, method: http::Method, path: &Path, expires: Duration) -> Result<Url> {
        let Some(signer) = &self.signer else {
            return Err(Error::Location {
                location: self.url().into(),
                reason: "volume data is moved by Pods in the cluster, which cannot reach a local directory: use an S3, GCS or Azure location".into(),
            });
        };
        signer.signed_url(method, path, expires).await.map_err(|e| self.error(e))
    }

    /// Wraps an object_store error with this location (and never with credentials).
    pub fn error(&self, source: object_store::Error) -> Error {
        Error::Store { location: self.location.url.clone(), source }
    }

    /// Puts `bytes` at `path` only if nothing is there. Returns `Ok(false)` if something already is.
    ///
    /// Uses the store's conditional put where it has one (S3 `If-None-Match`, GCS generation match,
    /// Azure `If-None-Match`, local link); falls back to check-then-put where the store refuses it.
    pub async fn put_if_absent(&self, path: &Path, bytes: Bytes) -> Result<bool> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.objects.put_opts(path, PutPayload::from_bytes(bytes.clone()), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) | Err(object_store::Error::NotSupported { .. }) => {
                match self.objects.head(path).await {
                    Ok(_) => Ok(false),
                    Err(object_store::Error::NotFound { .. }) => {
                        self.objects.put(path, PutPayload::from_bytes(bytes)).await.map_err(|e| self.error(e))?;
                        Ok(true)
                    }
                    Err(e) => Err(self.error(e)),
                }
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// Uploads a backup's data file from `plain` chunks, encrypted on the way with this store's seal
    /// when it has one (in a blocking task: age is synchronous). Object archives, which already
    /// have a writer thread, put [`crate::crypto::Sealed`] in it instead.
    pub async fn upload_sealed(
        &self,
        path: &Path,
        mut plain: mpsc::Receiver<Bytes>,
        progress: impl Fn(u64),
    ) -> Result<Uploaded> {
        const CHUNK: usize = 1 << 20;
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let seal = self.seal.clone();
        let sealer = tokio::task::spawn_blocking(move || -> Result<Uploaded> {
            let mut w = crate::crypto::Sealed::new(
                crate::committed::Digesting::new(ChunkSender::new(tx, CHUNK)),
                seal.as_ref(),
            )?;
            let io = |e: io::Error| Error::Other(format!("encrypting the upload: {e}"));
            while let Some(b) = plain.blocking_recv() {
                w.write_all(&b).map_err(io)?;
            }
            let plain = w.written();
            let (mut rest, size, sha256) = w.finish().map_err(io)?.finish();
            rest.flush().map_err(io)?;
            Ok(Uploaded { plain, size, sha256 })
        });
        let uploaded = self.upload(path, rx, progress).await;
        let sealed = sealer.await.map_err(|e| Error::Other(format!("encrypting the upload: {e}")))?;
        let sent = uploaded?;
        let sealed = sealed?;
        if sent != sealed.size {
            return Err(Error::Other(format!(
                "upload of {path} is incomplete: {sent} of {} bytes were sent",
                sealed.size
            )));
        }
        Ok(sealed)
    }

    /// Removes the staging files interrupted multipart uploads leave under `dir` in a local
    /// directory (`<name>#<n>`, which listing does not show). Returns how many were removed.
    ///
    /// Cloud stores keep interrupted multipart uploads out of sight too; S3 and GCS buckets should
    /// have a lifecycle rule that aborts incomplete multipart uploads (see docs/storage.md).
    pub fn remove_staging_files(&self, dir: &Path) -> usize {
        if self.location.provider != Provider::File {
            return 0;
        }
        let fs_dir = PathBuf::from(&self.location.bucket).join(dir.as_ref());
        let Ok(entries) = std::fs::read_dir(&fs_dir) else { return 0 };
        let mut removed = 0;
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().contains('#') && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            // Leave no empty directory behind (as the store's own cleanup does).
            let _ = std::fs::remove_dir(&fs_dir);
        }
        removed
    }

    /// Uploads the chunks received on `chunks` as one object (multipart: parts of 5 MiB, three in
    /// flight), calling `progress` with the bytes sent so far. On failure the multipart upload is
    /// aborted and `chunks` closed, so the producer stops. The object exists only if this succeeds.
    pub async fn upload(&self, path: &Path, mut chunks: mpsc::Receiver<Bytes>, progress: impl Fn(u64)) -> Result<u64> {
        let parts = self.objects.put_multipart(path).await.map_err(|e| self.error(e))?;
        let mut w = WriteMultipart::new_with_chunk_size(parts, PART);
        let mut sent = 0u64;
        while let Some(chunk) = chunks.recv().await {
            if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                chunks.close();
                let _ = w.abort().await;
                return Err(self.error(e));
            }
            sent += chunk.len() as u64;
            // The chunk joins the part as it is (no copy into a part buffer).
            w.put(chunk);
            progress(sent);
        }
        w.finish().await.map_err(|e| self.error(e))?;
        Ok(sent)
    }

    /// Uploads a local file as one object (multipart, streamed 1 MiB at a time), then checks the
    /// store holds exactly its size. Returns the bytes sent.
    pub async fn upload_file(&self, path: &Path, mut file: std::fs::File) -> Result<u64> {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let reader = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            io::Seek::rewind(&mut file)?;
            let mut sent = 0u64;
            loop {
                let mut buf = chunk::Chunk::new(1 << 20)?;
                let n = buf.fill_from(&mut file)?;
                if n == 0 {
                    return Ok(sent);
                }
                sent += n as u64;
                if tx.blocking_send(buf.into_bytes()).is_err() {
                    return Ok(sent);
                }
            }
        });
        let uploaded = self.upload(path, rx, |_| {}).await;
        let read = reader.await.map_err(|e| Error::Other(format!("reading {path} for upload: {e}")))?;
        let read = read.map_err(|e| Error::Other(format!("reading {path} for upload: {e}")))?;
        let sent = uploaded?;
        if sent != read {
            self.remove_quietly(path).await;
            return Err(Error::Other(format!("upload of {path} is incomplete: {sent} of {read} bytes were sent")));
        }
        crate::commit::check_uploaded(self, path, sent).await?;
        Ok(sent)
    }

    /// Deletes an object, logging (not failing) when that is impossible: for cleanup paths.
    pub async fn remove_quietly(&self, path: &Path) {
        if let Err(e) = self.objects.delete(path).await
            && !matches!(e, object_store::Error::NotFound { .. })
        {
            tracing::warn!(%path, error = %store_message(&e), "could not remove an uncommitted file; `kubectl backup delete` removes it");
        }
    }

    /// Reads a whole (small) object; `Ok(None)` when it does not exist.
    /// A small document (metadata, markers), or `None` when it does not exist. One larger than
    /// [`MAX_DOCUMENT_BYTES`] is refused before it is read: whoever can write to the bucket must
    /// not be able to make a reader allocate without bound.
    pub async fn get_optional(&self, path: &Path) -> Result<Option<Bytes>> {
        self.get_optional_within(path, MAX_DOCUMENT_BYTES).await
    }

    /// [`Store::get_optional`] for a document that is never larger than `limit` bytes.
    pub async fn get_optional_within(&self, path: &Path, limit: u64) -> Result<Option<Bytes>> {
        match self.objects.get(path).await {
            Ok(r) if r.meta.size > limit => Err(Error::Location {
                location: self.url().into(),
                reason: format!(
                    "{path} is {} bytes, more than such a document may be ({limit} bytes): refused without reading it",
                    r.meta.size
                ),
            }),
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.error(e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }
}

/// A `Write` that hands fixed-size chunks (each in its own map, see [`chunk`]) to an async
/// consumer (the multipart uploader). Used from a blocking thread; a closed channel surfaces as
/// `BrokenPipe`.
pub struct ChunkSender {
    tx: mpsc::Sender<Bytes>,
    buf: Option<chunk::Chunk>,
    chunk: usize,
}

impl ChunkSender {
    pub fn new(tx: mpsc::Sender<Bytes>, chunk: usize) -> Self {
        ChunkSender { tx, buf: None, chunk }
    }

    fn send(&mut self) -> io::Result<()> {
        let Some(chunk) = self.buf.take().filter(|c| !c.is_empty()) else { return Ok(()) };
        self.tx
            .blocking_send(chunk.into_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload stopped"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let chunk = match &mut self.buf {
                Some(c) => c,
                None => self.buf.insert(chunk::Chunk::new(self.chunk)?),
            };
            rest = &rest[chunk.fill(rest)..];
            if chunk.is_full() {
                self.send()?;
            }
        }
        Ok(buf.len())
    }

    /// Sends what is buffered. Called once, at the end of the archive.
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// An object_store error as one line, without the Debug noise.
pub fn store_message(err: &object_store::Error) -> String {
    crate::error::chain(err.to_string(), std::error::Error::source(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_provider() {
        let l = Location::parse("s3://bucket/some/prefix/").unwrap();
        assert_eq!(
            (l.provider, l.bucket.as_str(), l.prefix.as_str(), l.url()),
            (Provider::S3, "bucket", "some/prefix", "s3://bucket/some/prefix")
        );
        let l = Location::parse("gs://b").unwrap();
        assert_eq!((l.provider, l.prefix.as_str()), (Provider::Gcs, ""));
        let l = Location::parse("az://container/p").unwrap();
        assert_eq!((l.provider, l.bucket.as_str()), (Provider::Azure, "container"));
        let l = Location::parse("file:///var/backups/").unwrap();
        assert_eq!((l.provider, l.bucket.as_str()), (Provider::File, "/var/backups"));
    }

    #[test]
    fn refuses_bad_locations_with_a_reason() {
        for (text, needle) in [
            ("bucket/prefix", "not a URL"),
            ("ftp://x/y", "unsupported scheme"),
            ("s3://AKIA:secret@bucket/p", "credentials in the URL"),
            ("s3:///p", "missing bucket"),
            ("s3://b/../x", "'..'"),
            ("file://relative/path", "absolute path"),
        ] {
            let err = Location::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(!err.contains("secret"), "secret leaked: {err}");
        }
    }
}
