//! object_store's GCS backend against fake-gcs-server behind the write-translating proxy
//! (`kubectl_backup_e2e::gcs_proxy`): every operation the project uses, through the real client.
//!
//! Run with `cargo test -p kubectl-backup-e2e --test gcs_store`.

use std::sync::Arc;

use futures::TryStreamExt;
use kubectl_backup_e2e::gcs_proxy::GcsProxy;
use kubectl_backup_e2e::process::port_open;
use kubectl_backup_e2e::stores::{FakeGcs, GCS_BUCKET};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};
use tempfile::TempDir;

/// fake-gcs-server + proxy, and an object_store client configured from the key file FakeGcs writes.
struct Gcs {
    store: Arc<dyn ObjectStore>,
    server: FakeGcs,
    _dir: TempDir,
}

fn start() -> Gcs {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = FakeGcs::start(dir.path()).expect("starting fake-gcs-server and the proxy");
    let key = server
        .info
        .env
        .iter()
        .find(|(k, _)| k == "GOOGLE_SERVICE_ACCOUNT")
        .map(|(_, v)| v.clone())
        .expect("FakeGcs sets GOOGLE_SERVICE_ACCOUNT");
    assert!(!server.upstream.ends_with(&format!(":{}", server.info.port)), "the client must talk to the proxy");
    let store = GoogleCloudStorageBuilder::new()
        .with_service_account_path(key)
        .with_bucket_name(GCS_BUCKET)
        .build()
        .expect("building the GCS store");
    Gcs { store: Arc::new(store), server, _dir: dir }
}

/// Deterministic, incompressible-looking test data (xorshift64*).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The object's name as fake-gcs-server itself stores it, read through its JSON API (not the proxy).
async fn upstream_name(gcs: &Gcs, name: &str) -> Option<String> {
    let encoded: String = name
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let url = format!("{}/storage/v1/b/{GCS_BUCKET}/o/{encoded}", gcs.server.upstream);
    let resp = reqwest::get(url).await.expect("asking fake-gcs-server");
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    assert!(resp.status().is_success(), "fake-gcs-server answered {}", resp.status());
    let json: serde_json::Value = resp.json().await.expect("object resource");
    Some(json["name"].as_str().expect("name").to_string())
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

#[tokio::test(flavor = "multi_thread")]
async fn put_get_head_range_round_trip() {
    let gcs = start();
    let path = Path::from("backups/ns1/objects.tar.zst");
    let body = data(100_000, 1);
    let put = gcs.store.put(&path, PutPayload::from(body.clone())).await.expect("put");
    let e_tag = put.e_tag.clone().expect("put returns an ETag");
    let version = put.version.clone().expect("put returns x-goog-generation");

    let got = gcs.store.get(&path).await.expect("get");
    assert_eq!(got.meta.size, body.len() as u64);
    assert_eq!(got.meta.e_tag.as_deref(), Some(e_tag.as_str()), "ETag of put and get must agree");
    assert_eq!(got.meta.version.as_deref(), Some(version.as_str()), "generation of put and get must agree");
    assert_eq!(got.bytes().await.expect("get body"), body);

    let head = gcs.store.head(&path).await.expect("head");
    assert_eq!(head.size, body.len() as u64);
    assert_eq!(head.location, path);

    let range = gcs.store.get_range(&path, 1000..5000).await.expect("range get");
    assert_eq!(range.as_ref(), &body[1000..5000]);
    let tail = gcs.store.get_range(&path, 99_990..100_000).await.expect("range get at the end");
    assert_eq!(tail.as_ref(), &body[99_990..]);

    // Overwrite (PutMode::Overwrite) replaces the content and the generation.
    let second = gcs.store.put(&path, PutPayload::from_static(b"v2")).await.expect("overwrite");
    assert_ne!(second.version, put.version);
    assert_eq!(gcs.store.get(&path).await.unwrap().bytes().await.unwrap().as_ref(), b"v2");

    // Empty objects.
    let empty = Path::from("backups/empty");
    gcs.store.put(&empty, PutPayload::new()).await.expect("empty put");
    assert_eq!(gcs.store.head(&empty).await.expect("head empty").size, 0);
    assert!(gcs.store.get(&empty).await.unwrap().bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn put_create_and_conditional_update() {
    let gcs = start();
    let path = Path::from("locks/backup.lock");
    let create = PutOptions { mode: PutMode::Create, ..Default::default() };

    let first = gcs.store.put_opts(&path, PutPayload::from_static(b"first"), create.clone()).await.expect("create");
    let err = gcs
        .store
        .put_opts(&path, PutPayload::from_static(b"second"), create.clone())
        .await
        .expect_err("a second create must fail");
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }),
        "unexpected error: {err:?}"
    );
    assert_eq!(gcs.store.get(&path).await.unwrap().bytes().await.unwrap().as_ref(), b"first");

    // Update with the current generation succeeds; with a stale one it fails.
    let current = UpdateVersion { e_tag: first.e_tag.clone(), version: first.version.clone() };
    let update = PutOptions { mode: PutMode::Update(current.clone()), ..Default::default() };
    let updated = gcs.store.put_opts(&path, PutPayload::from_static(b"third"), update).await.expect("update");
    assert_ne!(updated.version, first.version);
    let stale = PutOptions { mode: PutMode::Update(current), ..Default::default() };
    let err = gcs.store.put_opts(&path, PutPayload::from_static(b"fourth"), stale).await.expect_err("stale update");
    assert!(matches!(err, object_store::Error::Precondition { .. }), "unexpected error: {err:?}");
    assert_eq!(gcs.store.get(&path).await.unwrap().bytes().await.unwrap().as_ref(), b"third");

    // After a delete, create works again.
    gcs.store.delete(&path).await.expect("delete");
    gcs.store.put_opts(&path, PutPayload::from_static(b"again"), create).await.expect("create after delete");

    // Concurrent creates: exactly one wins.
    let racy = Path::from("locks/racy.lock");
    let attempts = (0..8).map(|i| {
        let store = gcs.store.clone();
        let racy = racy.clone();
        tokio::spawn(async move {
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            store.put_opts(&racy, PutPayload::from(format!("writer {i}")), opts).await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let wins = results.iter().filter(|r| r.as_ref().expect("task").is_ok()).count();
    assert_eq!(wins, 1, "exactly one concurrent create must succeed: {results:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_upload_20_mib() {
    let gcs = start();
    let path = Path::from("backups/big/archive.tar.zst");
    let body = data(20 * 1024 * 1024 + 12_345, 7);

    let upload = gcs.store.put_multipart(&path).await.expect("start multipart");
    let mut writer = WriteMultipart::new(upload);
    // Odd-sized writes, so parts do not line up with the writes.
    for chunk in body.chunks(777_777) {
        writer.write(chunk);
    }
    let result = writer.finish().await.expect("finish multipart");
    assert!(result.e_tag.is_some(), "complete returns an ETag");
    assert!(result.version.is_some(), "complete returns x-goog-generation");

    let head = gcs.store.head(&path).await.expect("head");
    assert_eq!(head.size, body.len() as u64);
    assert_eq!(head.e_tag, result.e_tag, "ETag of complete and head must agree");
    let got = gcs.store.get(&path).await.expect("get").bytes().await.expect("body");
    assert_eq!(got.len(), body.len());
    assert!(got == body, "multipart object differs from what was written");
    // A range across the boundary of the first two 5 MiB parts.
    let boundary = 5 * 1024 * 1024u64;
    let range = gcs.store.get_range(&path, boundary - 100..boundary + 100).await.expect("range");
    assert_eq!(range.as_ref(), &body[boundary as usize - 100..boundary as usize + 100]);

    // An aborted upload leaves nothing behind.
    let aborted = Path::from("backups/big/aborted");
    let mut upload = gcs.store.put_multipart(&aborted).await.expect("start multipart");
    upload.put_part(PutPayload::from(data(1024, 3))).await.expect("part");
    upload.abort().await.expect("abort");
    let err = gcs.store.head(&aborted).await.expect_err("aborted upload must not create the object");
    assert!(is_not_found(&err), "unexpected error: {err:?}");

    // A multipart upload without parts makes an empty object.
    let none = Path::from("backups/big/no-parts");
    let mut upload = gcs.store.put_multipart(&none).await.expect("start multipart");
    upload.complete().await.expect("complete without parts");
    assert_eq!(gcs.store.head(&none).await.expect("head").size, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_and_delete() {
    let gcs = start();
    for name in ["list/a.json", "list/b/c.json", "list/b/d.json", "list/c/e/f.json", "other/x.json"] {
        gcs.store.put(&Path::from(name), PutPayload::from(name.as_bytes().to_vec())).await.expect("put");
    }

    let prefix = Path::from("list");
    let mut listed: Vec<(String, u64)> =
        gcs.store.list(Some(&prefix)).map_ok(|m| (m.location.to_string(), m.size)).try_collect().await.expect("list");
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("list/a.json".to_string(), 11),
            ("list/b/c.json".to_string(), 13),
            ("list/b/d.json".to_string(), 13),
            ("list/c/e/f.json".to_string(), 15),
        ]
    );

    let result = gcs.store.list_with_delimiter(Some(&prefix)).await.expect("list_with_delimiter");
    let objects: Vec<String> = result.objects.iter().map(|m| m.location.to_string()).collect();
    let mut prefixes: Vec<String> = result.common_prefixes.iter().map(|p| p.to_string()).collect();
    prefixes.sort();
    assert_eq!(objects, vec!["list/a.json".to_string()]);
    assert_eq!(prefixes, vec!["list/b".to_string(), "list/c".to_string()]);

    let top = gcs.store.list_with_delimiter(None).await.expect("list_with_delimiter at the root");
    let mut top: Vec<String> = top.common_prefixes.iter().map(|p| p.to_string()).collect();
    top.sort();
    assert_eq!(top, vec!["list".to_string(), "other".to_string()]);

    let victim = Path::from("list/b/c.json");
    gcs.store.delete(&victim).await.expect("delete");
    let err = gcs.store.get(&victim).await.expect_err("get after delete");
    assert!(is_not_found(&err), "unexpected error: {err:?}");
    let err = gcs.store.head(&victim).await.expect_err("head after delete");
    assert!(is_not_found(&err), "unexpected error: {err:?}");
    let left: Vec<String> = gcs
        .store
        .list(Some(&Path::from("list/b")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list after delete");
    assert_eq!(left, vec!["list/b/d.json".to_string()]);
    // The sibling is untouched.
    assert_eq!(
        gcs.store.get(&Path::from("list/b/d.json")).await.unwrap().bytes().await.unwrap().as_ref(),
        b"list/b/d.json"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn names_with_spaces_slashes_and_escapes() {
    let gcs = start();
    let names = [
        Path::from("dir with space/sub dir/file +plus&=é.txt"),
        // object_store encodes '%' inside a part as "%25": the stored name contains "%25".
        Path::from_iter(["reports", "100% done?.json"]),
    ];
    for (i, path) in names.iter().enumerate() {
        let body = data(3000 + i, 11 + i as u64);
        gcs.store.put(path, PutPayload::from(body.clone())).await.expect("put");
        assert_eq!(upstream_name(&gcs, path.as_ref()).await.as_deref(), Some(path.as_ref()), "name as stored");
        assert_eq!(gcs.store.get(path).await.expect("get").bytes().await.unwrap(), body);
        assert_eq!(gcs.store.head(path).await.expect("head").size, body.len() as u64);
        assert_eq!(gcs.store.get_range(path, 10..20).await.expect("range").as_ref(), &body[10..20]);

        // The same names through multipart.
        let mp = Path::from(format!("{path}.mp"));
        let mut writer = WriteMultipart::new_with_chunk_size(gcs.store.put_multipart(&mp).await.expect("mp"), 5 << 20);
        writer.write(&body);
        writer.finish().await.expect("finish");
        assert_eq!(upstream_name(&gcs, mp.as_ref()).await.as_deref(), Some(mp.as_ref()), "multipart name as stored");
        assert_eq!(gcs.store.get(&mp).await.expect("get").bytes().await.unwrap(), body);
    }

    let listed: Vec<Path> =
        gcs.store.list(Some(&Path::from("dir with space"))).map_ok(|m| m.location).try_collect().await.expect("list");
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&names[0]), "{listed:?}");
    let delimited = gcs.store.list_with_delimiter(Some(&Path::from("dir with space"))).await.expect("list");
    assert_eq!(delimited.common_prefixes, vec![Path::from("dir with space/sub dir")]);

    for path in &names {
        gcs.store.delete(path).await.expect("delete");
        let err = gcs.store.get(path).await.expect_err("get after delete");
        assert!(is_not_found(&err), "unexpected error: {err:?}");
        assert_eq!(upstream_name(&gcs, path.as_ref()).await, None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attributes_and_copy() {
    let gcs = start();
    let path = Path::from("meta/index.csv");
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, "text/csv".into());
    attributes.insert(Attribute::CacheControl, "no-cache".into());
    attributes.insert(Attribute::Metadata("backup-id".into()), "b-42".into());
    let opts = PutOptions { attributes, ..Default::default() };
    gcs.store.put_opts(&path, PutPayload::from_static(b"a,b\n1,2\n"), opts).await.expect("put with attributes");
    let got = gcs.store.get(&path).await.expect("get");
    assert_eq!(got.attributes.get(&Attribute::ContentType).map(|v| v.as_ref()), Some("text/csv"));
    assert_eq!(got.attributes.get(&Attribute::CacheControl).map(|v| v.as_ref()), Some("no-cache"));
    assert_eq!(got.attributes.get(&Attribute::Metadata("backup-id".into())).map(|v| v.as_ref()), Some("b-42"));
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"a,b\n1,2\n");

    let copy = Path::from("meta/copy of index.csv");
    gcs.store.copy(&path, &copy).await.expect("copy");
    assert_eq!(gcs.store.get(&copy).await.unwrap().bytes().await.unwrap().as_ref(), b"a,b\n1,2\n");
    let err = gcs.store.copy_if_not_exists(&path, &copy).await.expect_err("copy onto an existing object");
    assert!(matches!(err, object_store::Error::AlreadyExists { .. }), "unexpected error: {err:?}");
    let fresh = Path::from("meta/fresh.csv");
    gcs.store.copy_if_not_exists(&path, &fresh).await.expect("copy_if_not_exists to a new name");
    assert_eq!(gcs.store.head(&fresh).await.expect("head").size, 8);
    let err = gcs.store.copy(&Path::from("meta/missing"), &Path::from("meta/x")).await.expect_err("copy of nothing");
    assert!(is_not_found(&err), "unexpected error: {err:?}");
}

#[test]
fn proxy_starts_from_sync_code_and_stops_on_drop() {
    // Nothing listens on port 1: the proxy answers 502 rather than hanging.
    let proxy = GcsProxy::start("http://127.0.0.1:1").expect("start");
    let port = proxy.port();
    assert!(port_open(port));
    let status = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/bucket/object"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&status.stdout), "502");
    drop(proxy);
    assert!(!port_open(port), "the proxy must stop listening when dropped");
}
