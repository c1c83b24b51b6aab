//! A small test-side proxy in front of fake-gcs-server that translates the XML-API writes
//! object_store makes (plain PUT, XML multipart upload, copy) into JSON-API calls fake-gcs-server
//! understands, and forwards everything else unchanged.
//!
//! Translations (only for XML-API object paths `/{bucket}/{object}`):
//!
//! - `PUT` without `uploadId`/`partNumber`/`x-goog-copy-source`: one JSON-API upload (`uploadType=media`,
//!   or `uploadType=multipart` with a metadata part when the request carries attributes such as
//!   `Cache-Control` or `x-goog-meta-*`). Answers with `ETag`, `x-goog-generation`, ...
//! - `POST ?uploads`, `PUT ?partNumber=N&uploadId=ID`, `POST ?uploadId=ID`, `DELETE ?uploadId=ID`: the
//!   XML multipart upload. Parts stay in the proxy's memory; completing concatenates the listed parts
//!   and uploads them as one object.
//! - `PUT` with `x-goog-copy-source`: the JSON-API `copyTo`.
//!
//! fake-gcs-server ignores `ifGenerationMatch`, so the proxy checks `x-goog-if-generation-match`
//! itself (under a per-object lock) and answers 412 when it does not hold; it still passes the
//! condition upstream as `ifGenerationMatch`, and an upstream 412 comes back as 412.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use quick_xml::escape::escape;
use serde_json::Value;
use tokio::sync::{OwnedMutexGuard, oneshot};

/// The proxy server. Dropping it stops the server and joins its thread.
pub struct GcsProxy {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GcsProxy {
    /// Starts on 127.0.0.1 with a free port, in front of `upstream` (e.g. "http://127.0.0.1:4443"),
    /// serving on its own thread with its own tokio runtime, so it works from sync and async callers.
    pub fn start(upstream: &str) -> Result<GcsProxy> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).context("binding the GCS proxy")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the GCS proxy's HTTP client")?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client,
            uploads: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        });
        let app = Router::new().fallback(handle).with_state(shared);

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let thread = std::thread::Builder::new()
            .name(format!("gcs-proxy-{port}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("gcs-proxy-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(e).context("building the GCS proxy runtime")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ =
                                ready_tx.send(Err(anyhow::Error::new(e).context("registering the GCS proxy socket")));
                            return;
                        }
                    };
                    let (graceful_tx, graceful_rx) = oneshot::channel::<()>();
                    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                        let _ = graceful_rx.await;
                    });
                    let server = tokio::spawn(std::future::IntoFuture::into_future(server));
                    let _ = ready_tx.send(Ok(()));
                    // A dropped sender also means stop.
                    let _ = stop_rx.await;
                    let _ = graceful_tx.send(());
                    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("spawning the GCS proxy thread")?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                anyhow::bail!("the GCS proxy thread exited during startup");
            }
        }
        tracing::debug!(port, upstream, "GCS proxy started");
        Ok(GcsProxy { port, stop: Some(stop_tx), thread: Some(thread) })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for GcsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// State shared by all requests.
struct Shared {
    upstream: String,
    client: reqwest::Client,
    /// Multipart uploads in progress, by upload ID.
    uploads: Mutex<HashMap<String, Upload>>,
    /// Per-object locks that make check-then-write (preconditions) atomic, by "bucket/object".
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    counter: AtomicU64,
}

struct Upload {
    bucket: String,
    object: String,
    meta: WriteMeta,
    precondition: Option<u64>,
    parts: BTreeMap<u32, Part>,
}

struct Part {
    etag: String,
    data: Bytes,
}

/// Object metadata a write carries in its headers.
#[derive(Clone, Default)]
struct WriteMeta {
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    storage_class: Option<String>,
    metadata: Vec<(String, String)>,
}

const META_PREFIX: &str = "x-goog-meta-";
const GENERATION_MATCH: &str = "x-goog-if-generation-match";
const COPY_SOURCE: &str = "x-goog-copy-source";
const MAX_PART_NUMBER: u32 = 10_000;

impl WriteMeta {
    fn from_headers(headers: &HeaderMap) -> WriteMeta {
        let get = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let metadata = headers
            .iter()
            .filter_map(|(k, v)| {
                let key = k.as_str().strip_prefix(META_PREFIX)?;
                Some((key.to_string(), v.to_str().ok()?.to_string()))
            })
            .collect();
        WriteMeta {
            content_type: get(&header::CONTENT_TYPE),
            cache_control: get(&header::CACHE_CONTROL),
            content_disposition: get(&header::CONTENT_DISPOSITION),
            content_encoding: get(&header::CONTENT_ENCODING),
            content_language: get(&header::CONTENT_LANGUAGE),
            storage_class: get(&HeaderName::from_static("x-goog-storage-class")),
            metadata,
        }
    }

    /// Whether anything beyond the content type needs the JSON metadata of a multipart upload.
    fn needs_metadata(&self) -> bool {
        self.cache_control.is_some()
            || self.content_disposition.is_some()
            || self.content_encoding.is_some()
            || self.content_language.is_some()
            || self.storage_class.is_some()
            || !self.metadata.is_empty()
    }

    fn content_type(&self) -> &str {
        self.content_type.as_deref().unwrap_or("application/octet-stream")
    }

    fn to_json(&self, object: &str) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("name".into(), object.into());
        m.insert("contentType".into(), self.content_type().into());
        let optional = [
            ("cacheControl", &self.cache_control),
            ("contentDisposition", &self.content_disposition),
            ("contentEncoding", &self.content_encoding),
            ("contentLanguage", &self.content_language),
            ("storageClass", &self.storage_class),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                m.insert(key.into(), v.as_str().into());
            }
        }
        if !self.metadata.is_empty() {
            let md: serde_json::Map<String, Value> =
                self.metadata.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
            m.insert("metadata".into(), Value::Object(md));
        }
        Value::Object(m)
    }
}

/// Holds a per-object lock; removes the lock from the table when nobody else waits for it.
struct ObjectGuard<'a> {
    shared: &'a Shared,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for ObjectGuard<'_> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            let mut locks = self.shared.locks.lock().unwrap_or_else(|e| e.into_inner());
            // The table and this guard hold the only references: nobody else waits.
            if Arc::strong_count(OwnedMutexGuard::mutex(&guard)) == 2 {
                locks.remove(&self.key);
            }
            drop(guard);
        }
    }
}

/// A response that ends a request early (boxed: a `Response` is large).
struct Fail(Box<Response>);

impl From<Response> for Fail {
    fn from(resp: Response) -> Fail {
        Fail(Box::new(resp))
    }
}

type Outcome<T> = std::result::Result<T, Fail>;
type Reply = Outcome<Response>;

impl Shared {
    async fn lock_object(&self, bucket: &str, object: &str) -> ObjectGuard<'_> {
        let key = format!("{bucket}/{object}");
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        ObjectGuard { shared: self, key, guard: Some(guard) }
    }

    fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    fn object_json_url(&self, bucket: &str, object: &str) -> String {
        format!("{}/storage/v1/b/{}/o/{}", self.upstream, encode_segment(bucket), encode_segment(object))
    }

    /// The current generation of an object, or None when it does not exist.
    async fn current_generation(&self, bucket: &str, object: &str) -> Outcome<Option<u64>> {
        let resp = self.client.get(self.object_json_url(bucket, object)).send().await.map_err(upstream_failed)?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let json: Value = resp.json().await.map_err(upstream_failed)?;
                let generation = json_u64(&json, "generation").ok_or_else(|| {
                    xml_error(StatusCode::BAD_GATEWAY, "InternalError", "upstream object has no generation")
                })?;
                Ok(Some(generation))
            }
            _ => Err(relay(resp).into()),
        }
    }

    /// Fails with 412 unless the object's generation is `expected` (0: the object must not exist).
    async fn check_precondition(&self, bucket: &str, object: &str, expected: Option<u64>) -> Reply {
        let Some(expected) = expected else { return Ok(empty(StatusCode::OK)) };
        let current = self.current_generation(bucket, object).await?;
        if current.unwrap_or(0) == expected {
            Ok(empty(StatusCode::OK))
        } else {
            Err(xml_error(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold.",
            )
            .into())
        }
    }

    /// One JSON-API upload of a whole object; the upstream's object resource on success.
    async fn upload(
        &self,
        bucket: &str,
        object: &str,
        meta: &WriteMeta,
        data: Bytes,
        precondition: Option<u64>,
    ) -> Outcome<Value> {
        let mut query: Vec<(&str, String)> = Vec::new();
        let (content_type, body) = if meta.needs_metadata() {
            query.push(("uploadType", "multipart".into()));
            let boundary = format!("gcs-proxy-{:x}-{:x}", nanos(), self.next_id());
            let metadata = meta.to_json(object).to_string();
            let mut body = BytesMut::with_capacity(data.len() + metadata.len() + 256);
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {}\r\n\r\n", meta.content_type()).as_bytes());
            body.extend_from_slice(&data);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            (format!("multipart/related; boundary={boundary}"), body.freeze())
        } else {
            query.push(("uploadType", "media".into()));
            query.push(("name", object.to_string()));
            (meta.content_type().to_string(), data)
        };
        if let Some(generation) = precondition {
            query.push(("ifGenerationMatch", generation.to_string()));
        }
        let query = serde_urlencoded::to_string(&query).map_err(|e| internal(&e.to_string()))?;
        let url = format!("{}/upload/storage/v1/b/{}/o?{query}", self.upstream, encode_segment(bucket));
        let resp = self
            .client
            .post(url)
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(upstream_failed)?;
        object_resource(resp).await
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let target = match xml_object_path(req.uri().path()) {
        Some(t) => t,
        None => return forward(&shared, req).await,
    };
    let query: Vec<(String, String)> = serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let method = req.method().clone();
    let upload_id = param("uploadId");
    let is_write = match method {
        Method::PUT => true,
        Method::POST => upload_id.is_some() || param("uploads").is_some(),
        Method::DELETE => true,
        _ => false,
    };
    if !is_write {
        return forward(&shared, req).await;
    }
    let (bucket, object) = match target {
        Ok(t) => t,
        Err(message) => return xml_error(StatusCode::BAD_REQUEST, "InvalidArgument", &message),
    };
    let reply = match (method, upload_id) {
        (Method::PUT, Some(id)) => put_part(&shared, &bucket, &object, &id, param("partNumber"), req).await,
        (Method::PUT, None) if param("partNumber").is_some() => {
            Err(xml_error(StatusCode::BAD_REQUEST, "InvalidArgument", "partNumber without uploadId").into())
        }
        (Method::PUT, None) if req.headers().contains_key(COPY_SOURCE) => copy(&shared, &bucket, &object, req).await,
        (Method::PUT, None) => put_object(&shared, &bucket, &object, req).await,
        (Method::POST, None) => initiate(&shared, &bucket, &object, req).await,
        (Method::POST, Some(id)) => complete(&shared, &bucket, &object, &id, req).await,
        (Method::DELETE, Some(id)) => abort(&shared, &bucket, &object, &id),
        (_, _) => {
            // A plain object DELETE: fake-gcs-server handles it; the lock orders it with the writes.
            let _guard = shared.lock_object(&bucket, &object).await;
            Ok(forward(&shared, req).await)
        }
    };
    reply.unwrap_or_else(|e| *e.0)
}

async fn put_object(shared: &Shared, bucket: &str, object: &str, req: Request) -> Reply {
    let precondition = precondition(req.headers())?;
    let meta = WriteMeta::from_headers(req.headers());
    let data = read_body(req).await?;
    let _guard = shared.lock_object(bucket, object).await;
    shared.check_precondition(bucket, object, precondition).await?;
    let resource = shared.upload(bucket, object, &meta, data, precondition).await?;
    tracing::debug!(bucket, object, "GCS proxy: PUT translated to a JSON-API upload");
    Ok(write_response(&resource, Body::empty()))
}

async fn copy(shared: &Shared, bucket: &str, object: &str, req: Request) -> Reply {
    let precondition = precondition(req.headers())?;
    let source = req.headers().get(COPY_SOURCE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (src_bucket, src_object) = match xml_object_path(&format!("/{}", source.trim_start_matches('/'))) {
        Some(Ok(s)) => s,
        _ => return Err(xml_error(StatusCode::BAD_REQUEST, "InvalidArgument", "invalid x-goog-copy-source").into()),
    };
    let _guard = shared.lock_object(bucket, object).await;
    shared.check_precondition(bucket, object, precondition).await?;
    let mut url = format!(
        "{}/copyTo/b/{}/o/{}",
        shared.object_json_url(&src_bucket, &src_object),
        encode_segment(bucket),
        encode_segment(object)
    );
    if let Some(generation) = precondition {
        url.push_str(&format!("?ifGenerationMatch={generation}"));
    }
    let resp = shared.client.post(url).send().await.map_err(upstream_failed)?;
    let resource = object_resource(resp).await?;
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult><LastModified>{}</LastModified><ETag>{}</ETag></CopyObjectResult>",
        escape(json_str(&resource, "updated").unwrap_or_default()),
        escape(quoted_etag(&resource)),
    );
    Ok(write_response(&resource, Body::from(body)))
}

async fn initiate(shared: &Shared, bucket: &str, object: &str, req: Request) -> Reply {
    let precondition = precondition(req.headers())?;
    let meta = WriteMeta::from_headers(req.headers());
    let resp = shared
        .client
        .get(format!("{}/storage/v1/b/{}", shared.upstream, encode_segment(bucket)))
        .send()
        .await
        .map_err(upstream_failed)?;
    if resp.status() == StatusCode::NOT_FOUND {
        return Err(xml_error(StatusCode::NOT_FOUND, "NoSuchBucket", "The specified bucket does not exist.").into());
    }
    if !resp.status().is_success() {
        return Err(relay(resp).into());
    }
    let id = format!("{:x}{:08x}", nanos(), shared.next_id());
    let upload =
        Upload { bucket: bucket.to_string(), object: object.to_string(), meta, precondition, parts: BTreeMap::new() };
    shared.uploads.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), upload);
    tracing::debug!(bucket, object, upload_id = id, "GCS proxy: multipart upload started");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<InitiateMultipartUploadResult><Bucket>{}</Bucket><Key>{}</Key><UploadId>{}</UploadId></InitiateMultipartUploadResult>",
        escape(bucket),
        escape(object),
        escape(id.as_str())
    );
    Ok(xml_response(StatusCode::OK, body))
}

async fn put_part(
    shared: &Shared,
    bucket: &str,
    object: &str,
    upload_id: &str,
    part_number: Option<String>,
    req: Request,
) -> Reply {
    let number = part_number
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| xml_error(StatusCode::BAD_REQUEST, "InvalidArgument", "partNumber must be 1..=10000"))?;
    let data = read_body(req).await?;
    let etag = format!("\"{upload_id}-{number}-{:x}\"", shared.next_id());
    let mut uploads = shared.uploads.lock().unwrap_or_else(|e| e.into_inner());
    let upload = find_upload(&mut uploads, upload_id, bucket, object)?;
    upload.parts.insert(number, Part { etag: etag.clone(), data });
    let mut resp = empty(StatusCode::OK);
    resp.headers_mut().insert(header::ETAG, header_value(&etag));
    Ok(resp)
}

async fn complete(shared: &Shared, bucket: &str, object: &str, upload_id: &str, req: Request) -> Reply {
    let body = read_body(req).await?;
    let body = std::str::from_utf8(&body)
        .map_err(|_| xml_error(StatusCode::BAD_REQUEST, "MalformedXML", "body is not UTF-8"))?;
    let listed = parse_complete(body).map_err(|m| xml_error(StatusCode::BAD_REQUEST, "MalformedXML", &m))?;
    if listed.is_empty() {
        return Err(xml_error(StatusCode::BAD_REQUEST, "MalformedXML", "no parts listed").into());
    }
    if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(
            xml_error(StatusCode::BAD_REQUEST, "InvalidPartOrder", "parts must be listed in ascending order").into()
        );
    }
    let (chunks, meta, precondition) = {
        let mut uploads = shared.uploads.lock().unwrap_or_else(|e| e.into_inner());
        let upload = find_upload(&mut uploads, upload_id, bucket, object)?;
        let mut chunks = Vec::with_capacity(listed.len());
        for (number, etag) in &listed {
            match upload.parts.get(number) {
                Some(part) if part.etag.trim_matches('"') == etag.trim_matches('"') => chunks.push(part.data.clone()),
                _ => {
                    return Err(xml_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidPart",
                        &format!("part {number} was not uploaded or its ETag does not match"),
                    )
                    .into());
                }
            }
        }
        (chunks, upload.meta.clone(), upload.precondition)
    };
    let mut data = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for chunk in &chunks {
        data.extend_from_slice(chunk);
    }
    drop(chunks);
    let _guard = shared.lock_object(bucket, object).await;
    shared.check_precondition(bucket, object, precondition).await?;
    let resource = shared.upload(bucket, object, &meta, data.freeze(), precondition).await?;
    // Only a successful upload ends the multipart upload, so a failed complete can be retried.
    shared.uploads.lock().unwrap_or_else(|e| e.into_inner()).remove(upload_id);
    tracing::debug!(bucket, object, upload_id, parts = listed.len(), "GCS proxy: multipart upload completed");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUploadResult><Location>/{}/{}</Location><Bucket>{}</Bucket><Key>{}</Key><ETag>{}</ETag></CompleteMultipartUploadResult>",
        encode_segment(bucket),
        encode_segment(object),
        escape(bucket),
        escape(object),
        escape(quoted_etag(&resource)),
    );
    let mut resp = write_response(&resource, Body::from(body));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    Ok(resp)
}

fn abort(shared: &Shared, bucket: &str, object: &str, upload_id: &str) -> Reply {
    let mut uploads = shared.uploads.lock().unwrap_or_else(|e| e.into_inner());
    find_upload(&mut uploads, upload_id, bucket, object)?;
    uploads.remove(upload_id);
    tracing::debug!(bucket, object, upload_id, "GCS proxy: multipart upload aborted");
    Ok(empty(StatusCode::NO_CONTENT))
}

fn find_upload<'a>(
    uploads: &'a mut HashMap<String, Upload>,
    upload_id: &str,
    bucket: &str,
    object: &str,
) -> Outcome<&'a mut Upload> {
    match uploads.get_mut(upload_id) {
        Some(u) if u.bucket == bucket && u.object == object => Ok(u),
        _ => Err(xml_error(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The requested upload was not found for this bucket and object.",
        )
        .into()),
    }
}

/// A CompleteMultipartUpload body.
#[derive(serde::Deserialize)]
struct CompleteMultipartUpload {
    #[serde(rename = "Part", default)]
    parts: Vec<CompletedPart>,
}

#[derive(serde::Deserialize)]
struct CompletedPart {
    #[serde(rename = "PartNumber")]
    number: u32,
    #[serde(rename = "ETag")]
    etag: String,
}

/// The (PartNumber, ETag) pairs of a CompleteMultipartUpload body, in the listed order.
fn parse_complete(body: &str) -> std::result::Result<Vec<(u32, String)>, String> {
    let doc: CompleteMultipartUpload =
        quick_xml::de::from_str(body).map_err(|e| format!("not a CompleteMultipartUpload body: {e}"))?;
    if doc.parts.is_empty() {
        return Err("a CompleteMultipartUpload body names no <Part>".into());
    }
    Ok(doc.parts.into_iter().map(|p| (p.number, p.etag.trim().to_string())).collect())
}

/// `x-goog-if-generation-match` as a number.
fn precondition(headers: &HeaderMap) -> Outcome<Option<u64>> {
    match headers.get(GENERATION_MATCH) {
        None => Ok(None),
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).map(Some).ok_or_else(|| {
            xml_error(StatusCode::BAD_REQUEST, "InvalidArgument", "x-goog-if-generation-match must be a number").into()
        }),
    }
}

async fn read_body(req: Request) -> Outcome<Bytes> {
    axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .map_err(|e| xml_error(StatusCode::BAD_REQUEST, "IncompleteBody", &e.to_string()).into())
}

/// The JSON object resource of a successful upstream write, or the upstream's error relayed.
async fn object_resource(resp: reqwest::Response) -> Outcome<Value> {
    if !resp.status().is_success() {
        return Err(relay(resp).into());
    }
    Ok(resp.json::<Value>().await.map_err(upstream_failed)?)
}

/// The XML API's answer to a write: ETag and generation headers from the JSON object resource.
fn write_response(resource: &Value, body: Body) -> Response {
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(header::ETAG, header_value(&quoted_etag(resource)));
    if let Some(generation) = json_u64(resource, "generation") {
        headers.insert("x-goog-generation", HeaderValue::from(generation));
    }
    if let Some(metageneration) = json_u64(resource, "metageneration") {
        headers.insert("x-goog-metageneration", HeaderValue::from(metageneration));
    }
    let hashes: Vec<String> = [("crc32c", "crc32c"), ("md5", "md5Hash")]
        .iter()
        .filter_map(|(name, field)| json_str(resource, field).map(|v| format!("{name}={v}")))
        .collect();
    if !hashes.is_empty() {
        headers.insert("x-goog-hash", header_value(&hashes.join(",")));
    }
    resp
}

/// The object's ETag as fake-gcs-server's XML reads report it: the JSON `etag`, quoted.
fn quoted_etag(resource: &Value) -> String {
    format!("\"{}\"", json_str(resource, "etag").unwrap_or_default().trim_matches('"'))
}

fn json_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

/// A JSON-API number field (sent as a string, int64 style).
fn json_u64(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Forwards a request unchanged and streams the answer back.
async fn forward(shared: &Shared, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return xml_error(StatusCode::BAD_REQUEST, "IncompleteBody", &e.to_string()),
    };
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{path_and_query}", shared.upstream);
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let mut request = shared.client.request(parts.method, url).headers(headers);
    if !body.is_empty() {
        request = request.body(body);
    }
    match request.send().await {
        Ok(resp) => relay(resp),
        Err(e) => upstream_failed(e),
    }
}

/// An upstream response, status, headers and streamed body.
fn relay(resp: reqwest::Response) -> Response {
    let status = resp.status();
    let mut headers = resp.headers().clone();
    strip_hop_by_hop(&mut headers);
    let stream = futures::stream::try_unfold(resp, |mut resp| async move {
        Ok::<_, reqwest::Error>(resp.chunk().await?.map(|chunk| (chunk, resp)))
    });
    let mut out = Response::new(Body::from_stream(stream));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"] {
        headers.remove(name);
    }
}

fn upstream_failed(e: reqwest::Error) -> Response {
    xml_error(StatusCode::BAD_GATEWAY, "InternalError", &format!("fake-gcs-server request failed: {e}"))
}

fn internal(message: &str) -> Response {
    xml_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
}

fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    resp
}

fn xml_error(status: StatusCode, code: &str, message: &str) -> Response {
    xml_response(
        status,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message></Error>",
            escape(code),
            escape(message)
        ),
    )
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// `/{bucket}/{object}` of an XML-API object request: None for JSON-API paths and bucket-level
/// requests, Err when the path does not decode to UTF-8 names.
fn xml_object_path(path: &str) -> Option<std::result::Result<(String, String), String>> {
    const JSON_API: [&str; 5] =
        ["/storage/v1/", "/upload/storage/v1/", "/download/storage/v1/", "/batch/", "/_internal/"];
    if JSON_API.iter().any(|p| path.starts_with(p)) {
        return None;
    }
    let rest = path.strip_prefix('/')?;
    let (bucket, object) = rest.split_once('/')?;
    if bucket.is_empty() || object.is_empty() {
        return None;
    }
    Some(match (percent_decode(bucket), percent_decode(object)) {
        (Some(b), Some(o)) if !b.is_empty() && !o.is_empty() => Ok((b, o)),
        _ => Err(format!("cannot decode the object path {path:?}")),
    })
}

/// Decodes `%XX` escapes (a `+` stays a `+`, as in paths); None when not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned())
}

/// Everything but RFC 3986's unreserved characters is escaped in a path segment.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes one path segment.
fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_object_paths() {
        assert_eq!(
            xml_object_path("/backups/a%2Fb%20c/d+e.txt"),
            Some(Ok(("backups".to_string(), "a/b c/d+e.txt".to_string())))
        );
        assert_eq!(xml_object_path("/backups"), None);
        assert_eq!(xml_object_path("/backups/"), None);
        assert_eq!(xml_object_path("/storage/v1/b/backups/o/x"), None);
        assert!(matches!(xml_object_path("/backups/%FF"), Some(Err(_))));
        assert_eq!(encode_segment("a/b c+ü"), "a%2Fb%20c%2B%C3%BC");
    }

    #[test]
    fn parses_complete_body() {
        let body = "<CompleteMultipartUpload><Part><ETag>\"u-1-0\"</ETag><PartNumber>1</PartNumber></Part>\
                    <Part><ETag>&quot;u-2-1&quot;</ETag><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>";
        assert_eq!(parse_complete(body).unwrap(), vec![(1, "\"u-1-0\"".to_string()), (2, "\"u-2-1\"".to_string())]);
        assert!(parse_complete("<Part><ETag>x</ETag></Part>").unwrap_err().contains("no <Part>"));
        let no_number = "<CompleteMultipartUpload><Part><ETag>x</ETag></Part></CompleteMultipartUpload>";
        assert!(parse_complete(no_number).unwrap_err().contains("PartNumber"));
    }
}
