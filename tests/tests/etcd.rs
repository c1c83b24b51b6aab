//! `kubectl backup etcd ...` against real etcd servers (Debian's etcd 3.4), started per test in
//! scratch directories and checked with the real `etcdctl`; and the real use: the kube-apiserver's
//! own etcd snapshotted, restored into a new data directory, and served by a new kube-apiserver.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kubectl_backup_core::pki::Ca;
use kubectl_backup_e2e::control_plane::{ApiServer, Etcd};
use kubectl_backup_e2e::env::SharedEnv;
use kubectl_backup_e2e::fixtures::{Run, Tools, sample_app, unique};
use serde_json::Value;

type Keys = BTreeMap<Vec<u8>, Vec<u8>>;

fn env() -> SharedEnv {
    SharedEnv::load().expect("shared environment")
}

/// A fresh directory under the shared scratch space.
fn scratch(env: &SharedEnv, name: &str) -> PathBuf {
    let d = env.scratch.join(unique(name));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `kubectl backup ...` (through the real kubectl) with a `file://` location in `dir`.
fn tools_in(env: &SharedEnv, dir: &Path) -> Tools {
    let mut t = Tools::new(&env.cluster);
    t.location = Some(format!("file://{}", dir.display()));
    t
}

fn etcd_flags(etcd: &Etcd) -> Vec<String> {
    let mut a = vec!["--endpoints".to_string(), etcd.endpoint.clone()];
    if let Some(tls) = &etcd.tls {
        for (flag, path) in [("--cacert", &tls.client.ca), ("--cert", &tls.client.cert), ("--key", &tls.client.key)] {
            a.push(flag.into());
            a.push(path.display().to_string());
        }
    }
    a
}

/// `kubectl backup etcd ARGS <connection flags of etcd>`.
fn kb_etcd(t: &Tools, args: &[&str], etcd: &Etcd) -> Run {
    let mut all: Vec<String> = std::iter::once("etcd".to_string()).chain(args.iter().map(|s| s.to_string())).collect();
    all.extend(etcd_flags(etcd));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    t.backup(&refs)
}

/// `kubectl backup etcd ARGS` with no etcd flags.
fn kb(t: &Tools, args: &[&str]) -> Run {
    let mut all = vec!["etcd"];
    all.extend_from_slice(args);
    t.backup(&all)
}

fn etcdctl(etcd: &Etcd, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3").args(etcd.etcdctl_args()).args(args);
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("running etcdctl");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A Go string literal of any bytes (`etcdctl txn` unquotes it).
fn quote(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for b in bytes {
        s.push_str(&format!("\\x{b:02x}"));
    }
    s.push('"');
    s
}

/// Writes keys with `etcdctl txn` (100 puts per transaction), byte for byte.
fn put_all(etcd: &Etcd, keys: &Keys) {
    let all: Vec<_> = keys.iter().collect();
    for chunk in all.chunks(100) {
        let mut input = String::from("\n");
        for (k, v) in chunk {
            input.push_str(&format!("put {} {}\n", quote(k), quote(v)));
        }
        input.push_str("\n\n");
        let out = etcdctl(etcd, &["txn"], Some(&input));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("SUCCESS"), "{out:?}");
    }
}

/// Every key and value in etcd, read with etcdctl.
fn all_keys(etcd: &Etcd) -> Keys {
    let out = etcdctl(etcd, &["get", "", "--prefix", "-w", "json"], None);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    let key = BASE64.decode(kv["key"].as_str().unwrap()).unwrap();
                    let value = kv["value"].as_str().map(|s| BASE64.decode(s).unwrap()).unwrap_or_default();
                    (key, value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn revision(etcd: &Etcd) -> i64 {
    let out = etcdctl(etcd, &["endpoint", "status", "-w", "json"], None);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["Status"]["header"]["revision"].as_i64().unwrap()
}

/// `n` keys under `prefix`: text values (with non-ASCII), binary values (every byte value occurs),
/// empty values, and keys that are not UTF-8.
fn sample_keys(prefix: &str, n: usize) -> Keys {
    use rand::RngExt;
    let mut rng = rand::rng();
    let mut keys = Keys::new();
    for i in 0..n {
        let mut key = format!("{prefix}{i:05}").into_bytes();
        if i % 7 == 3 {
            key.extend_from_slice(&[0xff, 0x00, b'/', b'.', b'.', 0x80]);
        }
        let value = match i % 5 {
            0 => {
                let len = rng.random_range(1..300usize);
                let mut v: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                // `etcdctl txn` would take a value starting with '-' for a flag.
                if v[0] == b'-' {
                    v[0] = 0;
                }
                v.extend_from_slice(&[0, 0xff, 0xfe, 0x80]);
                v
            }
            1 if i % 2 == 1 => Vec::new(),
            _ => format!("value {i} — é ✓ \"quoted\"\n").into_bytes(),
        };
        keys.insert(key, value);
    }
    keys
}

fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// The one data file of an etcd backup in a `file://` location.
fn data_file(store: &Path, name: &str) -> PathBuf {
    let dir = store.join("etcd").join(name);
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "metadata.json")
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

fn failed(run: &Run, needle: &str) {
    assert_eq!(run.code, 1, "expected exit 1:\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert!(run.stderr.contains(needle), "expected {needle:?} in stderr:\n{}", run.stderr);
}

#[test]
fn snapshot_passes_etcdctl_and_a_restored_etcd_serves_every_key() {
    let env = env();
    let dir = scratch(&env, "etcd-snap");
    let store = dir.join("store");
    let etcd = Etcd::start(&dir.join("source"), false).unwrap();
    let keys = sample_keys("app/", 500);
    put_all(&etcd, &keys);
    let source_keys = all_keys(&etcd);
    assert_eq!(source_keys, keys);
    let rev = revision(&etcd);
    let t = tools_in(&env, &store);

    let b = kb_etcd(&t, &["snapshot", "snap", "-o", "json"], &etcd).ok().json();
    assert_eq!(b["kind"], "EtcdBackup");
    assert_eq!(b["apiVersion"], "kubectl-backup.dev/v1alpha1");
    assert_eq!(b["spec"]["type"], "snapshot");
    assert_eq!(b["spec"]["endpoints"][0], etcd.endpoint.as_str());
    let s = &b["status"];
    assert_eq!(s["phase"], "Completed");
    assert_eq!(s["revision"], rev);
    assert_eq!(s["etcdVersion"], "3.4.23");
    assert_eq!(s["memberName"], "harness");
    assert!(s["memberId"].as_str().unwrap().len() >= 8 && s["clusterId"].is_string(), "{s}");
    assert!(s["startTimestamp"].is_string() && s["completionTimestamp"].is_string() && s["expiration"].is_string());

    // The stored file is what the metadata says, and etcdctl accepts it as a snapshot.
    let file = data_file(&store, "snap");
    assert!(file.file_name().unwrap().to_string_lossy().ends_with(".db"));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), s["archive"]["size"].as_u64().unwrap());
    assert_eq!(sha256_file(&file), s["archive"]["sha256"].as_str().unwrap());
    let out = etcdctl(&etcd, &["snapshot", "status", file.to_str().unwrap(), "-w", "json"], None);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["revision"], rev, "etcdctl snapshot status: {status}");

    // restore --data-dir writes a verified snapshot.db; etcdctl restores it; etcd serves every key.
    let restore_dir = dir.join("restore");
    let r = kb(&t, &["restore", "snap", "--data-dir", restore_dir.to_str().unwrap(), "-o", "json"]).ok().json();
    assert_eq!(r["kind"], "EtcdRestore");
    let snapshot = restore_dir.join("snapshot.db");
    assert_eq!(r["status"]["snapshot"], snapshot.to_str().unwrap());
    assert_eq!(sha256_file(&snapshot), s["archive"]["sha256"].as_str().unwrap());
    let human = kb(&t, &["restore", "snap", "--data-dir", restore_dir.to_str().unwrap()]);
    failed(&human, "already exists");
    let human = kb(&t, &["restore", "snap", "--data-dir", restore_dir.to_str().unwrap(), "--overwrite"]).ok();
    assert!(human.stdout.contains("snapshot restore"), "{}", human.stdout);

    let data_dir = dir.join("restored-data");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore", snapshot.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "etcdctl snapshot restore: {}", String::from_utf8_lossy(&out.stderr));
    let restored = Etcd::start_on(&dir.join("restored"), &data_dir, false).unwrap();
    assert_eq!(all_keys(&restored), source_keys);

    // download -f gives the same verified bytes.
    let dl = dir.join("dl.db");
    kb(&t, &["download", "snap", "-f", dl.to_str().unwrap()]).ok();
    assert_eq!(sha256_file(&dl), s["archive"]["sha256"].as_str().unwrap());
    failed(&kb(&t, &["download", "snap", "-f", dl.to_str().unwrap()]), "already exists");

    // A damaged file is refused before anything is written.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[4096] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let bad_dir = dir.join("bad");
    failed(&kb(&t, &["restore", "snap", "--data-dir", bad_dir.to_str().unwrap()]), "SHA-256");
    assert!(!bad_dir.join("snapshot.db").exists());
    let bad_dl = dir.join("bad.db");
    failed(&kb(&t, &["download", "snap", "-f", bad_dl.to_str().unwrap()]), "SHA-256");
    assert!(!bad_dl.exists());
}

#[test]
fn keys_and_keys_json_round_trip_1000_keys_with_binary_values() {
    let env = env();
    let dir = scratch(&env, "etcd-keys");
    let store = dir.join("store");
    let source = Etcd::start(&dir.join("source"), false).unwrap();
    let mut keys = sample_keys("app/", 1000);
    keys.extend(sample_keys("other/", 20));
    put_all(&source, &keys);
    let source_keys = all_keys(&source);
    assert_eq!(source_keys.len(), 1020);
    let rev = revision(&source);
    let app_keys: Keys =
        source_keys.iter().filter(|(k, _)| k.starts_with(b"app/")).map(|(k, v)| (k.clone(), v.clone())).collect();
    let t = tools_in(&env, &store);

    for kind in ["keys", "keys-json"] {
        let name = format!("{kind}-app");
        let b =
            kb_etcd(&t, &["snapshot", &name, "--type", kind, "--prefix", "app/", "-o", "json"], &source).ok().json();
        assert_eq!(b["spec"]["type"], kind);
        assert_eq!(b["spec"]["prefix"], "app/");
        assert_eq!(b["status"]["keys"], 1000, "{b}");
        assert_eq!(b["status"]["revision"], rev);
        let file = data_file(&store, &name);
        assert_eq!(sha256_file(&file), b["status"]["archive"]["sha256"].as_str().unwrap());

        // The file is readable by other tools.
        if kind == "keys" {
            let out = Command::new("unzip").arg("-Z1").arg(&file).output().unwrap();
            assert!(out.status.success(), "unzip: {}", String::from_utf8_lossy(&out.stderr));
            let names: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
            assert_eq!(names.len(), 1000);
            assert!(names.iter().all(|n| !n.contains('/') && !n.starts_with('.') && !n.contains('\\')), "{names:?}");
            assert!(names.contains(&"app%2F00002".to_string()), "{:?}", &names[..5]);
            // Extracting it stays inside the target directory.
            let x = dir.join("unzipped");
            let out = Command::new("unzip").arg("-q").arg(&file).arg("-d").arg(&x).output().unwrap();
            assert!(out.status.success(), "unzip: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(std::fs::read_dir(&x).unwrap().count(), 1000);
            assert_eq!(std::fs::read(x.join("app%2F00002")).unwrap(), app_keys[&b"app/00002".to_vec()]);
        } else {
            let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            assert_eq!(doc["kind"], "EtcdKeys");
            assert_eq!(doc["revision"], rev);
            assert_eq!(doc["count"], 1000);
            let first = &doc["keys"][0];
            assert_eq!(first["key"], "app/00000");
            assert_eq!(
                BASE64.decode(first["valueBase64"].as_str().unwrap()).unwrap(),
                app_keys[&b"app/00000".to_vec()]
            );
            assert_eq!(doc["keys"][2]["value"], "value 2 — é ✓ \"quoted\"\n");
            let binary_key = doc["keys"].as_array().unwrap().iter().find(|k| k.get("keyBase64").is_some()).unwrap();
            assert!(
                BASE64
                    .decode(binary_key["keyBase64"].as_str().unwrap())
                    .unwrap()
                    .ends_with(&[0xff, 0, b'/', b'.', b'.', 0x80])
            );
        }

        // Into an empty etcd: a dry run lists 1000 additions and writes nothing.
        let target = Etcd::start(&dir.join(format!("target-{kind}")), false).unwrap();
        put_all(&target, &[(b"unrelated".to_vec(), b"stays".to_vec())].into());
        let dry = kb_etcd(&t, &["restore", &name, "--dry-run", "-o", "json"], &target).ok().json();
        assert_eq!(dry["spec"]["dryRun"], true);
        assert_eq!(dry["status"]["counts"], serde_json::json!({"added": 1000, "changed": 0, "unchanged": 0}));
        assert_eq!(dry["status"]["added"].as_array().unwrap().len(), 1000);
        assert_eq!(all_keys(&target).len(), 1, "a dry run wrote keys");

        let done = kb_etcd(&t, &["restore", &name], &target).ok();
        assert!(done.stdout.contains("1000 added"), "{}", done.stdout);
        let mut want = app_keys.clone();
        want.insert(b"unrelated".to_vec(), b"stays".to_vec());
        assert_eq!(all_keys(&target), want, "{kind}: restored keys differ");

        // Again: nothing to do. Change one key: the dry run names it, the restore fixes it.
        let again = kb_etcd(&t, &["restore", &name, "--dry-run", "-o", "json"], &target).ok().json();
        assert_eq!(again["status"]["counts"], serde_json::json!({"added": 0, "changed": 0, "unchanged": 1000}));
        put_all(&target, &[(b"app/00004".to_vec(), b"tampered".to_vec())].into());
        let dry = kb_etcd(&t, &["restore", &name, "--dry-run"], &target).ok();
        assert!(dry.stdout.contains("would add 0, change 1; 999 unchanged"), "{}", dry.stdout);
        assert!(dry.stdout.contains("~ app/00004"), "{}", dry.stdout);
        assert_eq!(all_keys(&target)[&b"app/00004".to_vec()], b"tampered");
        kb_etcd(&t, &["restore", &name], &target).ok();
        assert_eq!(all_keys(&target), want);
    }

    // Without --prefix: every key.
    let b = kb_etcd(&t, &["snapshot", "all-json", "--type", "keys-json", "-o", "json"], &source).ok().json();
    assert_eq!(b["status"]["keys"], 1020);
    let target = Etcd::start(&dir.join("target-all"), false).unwrap();
    kb_etcd(&t, &["restore", "all-json"], &target).ok();
    assert_eq!(all_keys(&target), source_keys);

    let list = kb(&t, &["list", "-o", "json"]).ok().json();
    assert_eq!(list["kind"], "EtcdBackupList");
    let mut names: Vec<&str> =
        list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["all-json", "keys-app", "keys-json-app"]);
    let table = kb(&t, &["get"]).ok().stdout;
    assert!(table.starts_with("NAME") && table.contains("keys-json") && table.contains("1020"), "{table}");
}

#[test]
fn tls_etcd_with_client_certificates() {
    let env = env();
    let dir = scratch(&env, "etcd-tls");
    let store = dir.join("store");
    let etcd = Etcd::start(&dir.join("etcd"), true).unwrap();
    let tls = etcd.tls.clone().unwrap();
    let keys = sample_keys("tls/", 100);
    put_all(&etcd, &keys);
    let t = tools_in(&env, &store);

    let b = kb_etcd(&t, &["snapshot", "tls-snap", "-o", "json"], &etcd).ok().json();
    assert!(b["spec"]["endpoints"][0].as_str().unwrap().starts_with("https://"));
    let file = data_file(&store, "tls-snap");
    let out = etcdctl(&etcd, &["snapshot", "status", file.to_str().unwrap(), "-w", "json"], None);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["revision"], b["status"]["revision"]);

    let b = kb_etcd(&t, &["snapshot", "tls-json", "--type", "keys-json", "-o", "json"], &etcd).ok().json();
    assert_eq!(b["status"]["keys"], 100);
    let target = Etcd::start(&dir.join("target"), true).unwrap();
    kb_etcd(&t, &["restore", "tls-json"], &target).ok();
    assert_eq!(all_keys(&target), keys);

    // Mistakes, each named.
    let ca = tls.client.ca.to_str().unwrap();
    let cert = tls.client.cert.to_str().unwrap();
    let key = tls.client.key.to_str().unwrap();
    let other = Ca::new("another-ca").unwrap().write_leaf(&dir.join("other"), "other", "other", &[]).unwrap();
    let no_client_cert = t.backup(&["etcd", "snapshot", "x1", "--endpoints", &etcd.endpoint, "--cacert", ca]);
    failed(&no_client_cert, "client certificate");
    assert!(no_client_cert.stderr.contains("--cert and --key"), "{}", no_client_cert.stderr);
    let wrong_ca = t.backup(&[
        "etcd",
        "snapshot",
        "x2",
        "--endpoints",
        &etcd.endpoint,
        "--cacert",
        other.ca.to_str().unwrap(),
        "--cert",
        cert,
        "--key",
        key,
    ]);
    failed(&wrong_ca, "not signed by the CA in --cacert");
    let no_ca = t.backup(&["etcd", "snapshot", "x3", "--endpoints", &etcd.endpoint, "--cert", cert, "--key", key]);
    failed(&no_ca, "--cacert");
    let wrong_key = t.backup(&[
        "etcd",
        "snapshot",
        "x4",
        "--endpoints",
        &etcd.endpoint,
        "--cacert",
        ca,
        "--cert",
        cert,
        "--key",
        other.key.to_str().unwrap(),
    ]);
    failed(&wrong_key, "does not belong to the certificate");
    let untrusted_client = t.backup(&[
        "etcd",
        "snapshot",
        "x5",
        "--endpoints",
        &etcd.endpoint,
        "--cacert",
        ca,
        "--cert",
        other.cert.to_str().unwrap(),
        "--key",
        other.key.to_str().unwrap(),
    ]);
    failed(&untrusted_client, "client certificate");
    let half = t.backup(&["etcd", "snapshot", "x6", "--endpoints", &etcd.endpoint, "--cacert", ca, "--cert", cert]);
    failed(&half, "pass --key");
    let plain = etcd.endpoint.replace("https://", "http://");
    failed(&t.backup(&["etcd", "snapshot", "x7", "--endpoints", &plain]), "use https://");
    failed(
        &t.backup(&["etcd", "snapshot", "x8", "--endpoints", &plain, "--cacert", ca, "--cert", cert, "--key", key]),
        "use https://",
    );
    let listed = kb(&t, &["list", "-o", "json"]).ok().json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "a failed run was listed: {listed}");
}

#[test]
fn the_kube_apiservers_etcd_is_snapshotted_and_a_new_apiserver_serves_it() {
    let env = env();
    let dir = scratch(&env, "etcd-kube");
    let store = dir.join("store");
    let tools = Tools::new(&env.cluster);
    let ns = unique("etcd-kube");
    tools.apply(&sample_app(&ns)).ok();
    tools.kubectl(&["create", "configmap", "big", "-n", &ns, "--from-literal=answer=42"]).ok();
    let t = tools_in(&env, &store);

    let b =
        t.backup(&["etcd", "snapshot", "kube", "--endpoints", &env.cluster.etcd_endpoint, "-o", "json"]).ok().json();
    assert_eq!(b["status"]["phase"], "Completed");
    let restore_dir = dir.join("restore");
    kb(&t, &["restore", "kube", "--data-dir", restore_dir.to_str().unwrap()]).ok();
    let data_dir = dir.join("etcd-data");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(restore_dir.join("snapshot.db"))
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "etcdctl snapshot restore: {}", String::from_utf8_lossy(&out.stderr));
    let etcd = Etcd::start_on(&dir.join("etcd"), &data_dir, false).unwrap();
    let mut api = ApiServer::start(&dir.join("apiserver"), &etcd.endpoint).unwrap();
    let restored = Tools::new(&api.info);

    let cm = restored.get_json(&["configmap", "settings", "-n", &ns]);
    assert_eq!(cm["data"]["color"], "blue");
    let cm = restored.get_json(&["configmap", "big", "-n", &ns]);
    assert_eq!(cm["data"]["answer"], "42");
    let secret = restored.get_json(&["secret", "credentials", "-n", &ns]);
    assert_eq!(BASE64.decode(secret["data"]["password"].as_str().unwrap()).unwrap(), b"s3cr3t");
    let deploy = restored.get_json(&["deployment", "web", "-n", &ns]);
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert!(restored.names(&["namespaces"]).contains(&ns));
    assert!(restored.names(&["rolebindings", "-n", &ns]).contains(&"web-reads".to_string()));
    api.check_alive().unwrap();
    tools.delete_namespace(&ns);
}

#[test]
fn bad_input_is_refused_clearly() {
    let env = env();
    let dir = scratch(&env, "etcd-bad");
    let store = dir.join("store");
    let etcd = Etcd::start(&dir.join("etcd"), false).unwrap();
    put_all(&etcd, &sample_keys("bad/", 10));
    let t = tools_in(&env, &store);

    // A usage error, from the argument parser like every bad flag value: exit 2, the choices named.
    let bad_type = kb_etcd(&t, &["snapshot", "b1", "--type", "full"], &etcd);
    assert_eq!(bad_type.code, 2, "{}", bad_type.stderr);
    assert!(
        bad_type.stderr.contains("invalid value 'full' for '--type")
            && bad_type.stderr.contains("[possible values: snapshot, keys, keys-json]"),
        "{}",
        bad_type.stderr
    );
    failed(&kb_etcd(&t, &["snapshot", "Bad_Name"], &etcd), "etcd backup name");
    failed(&kb_etcd(&t, &["snapshot", "b1", "--ttl", "soon"], &etcd), "--ttl");
    failed(&kb_etcd(&t, &["snapshot", "b1", "--prefix", "bad/"], &etcd), "--prefix");
    failed(&kb(&t, &["snapshot", "b1"]), "--endpoints");
    failed(&kb(&t, &["snapshot", "b1", "--endpoints", "ftp://127.0.0.1:1"]), "http:// or https://");

    // An existing name is never overwritten.
    let first = kb_etcd(&t, &["snapshot", "dup", "-o", "json"], &etcd).ok().json();
    put_all(&etcd, &sample_keys("more/", 10));
    failed(&kb_etcd(&t, &["snapshot", "dup"], &etcd), "already exists");
    failed(&kb_etcd(&t, &["snapshot", "dup", "--type", "keys"], &etcd), "already exists");
    let now = kb(&t, &["describe", "dup", "-o", "json"]).ok().json();
    assert_eq!(now["status"]["archive"]["sha256"], first["status"]["archive"]["sha256"]);
    assert_eq!(now["status"]["revision"], first["status"]["revision"]);
    assert_eq!(std::fs::read_dir(store.join("etcd/dup")).unwrap().count(), 2);
    let human = kb(&t, &["describe", "dup"]).ok().stdout;
    assert!(human.contains("Type:          snapshot") && human.contains("SHA-256:"), "{human}");

    // Wrong types for restore.
    kb_etcd(&t, &["snapshot", "k", "--type", "keys"], &etcd).ok();
    let r = kb(&t, &["restore", "k", "--data-dir", dir.join("x").to_str().unwrap()]);
    failed(&r, "is a keys backup, not a snapshot");
    failed(&kb_etcd(&t, &["restore", "dup"], &etcd), "is a snapshot");
    failed(&kb(&t, &["restore", "dup"]), "--data-dir DIR");

    // Unknown names.
    failed(&kb(&t, &["describe", "nope"]), "not found");
    failed(&kb(&t, &["download", "nope"]), "not found");
    failed(&kb(&t, &["restore", "nope", "--data-dir", dir.join("y").to_str().unwrap()]), "not found");
    failed(&kb(&t, &["delete", "nope", "--yes"]), "not found");
    failed(&kb(&t, &["delete", "dup"]), "--yes");

    // Nothing listening: refused at once; a server that never answers: bounded.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    failed(&kb(&t, &["snapshot", "u1", "--endpoints", &format!("http://127.0.0.1:{closed}")]), "connection refused");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());

    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
        }
    });
    let started = Instant::now();
    let r = kb(&t, &["snapshot", "u2", "--endpoints", &format!("http://127.0.0.1:{port}")]);
    failed(&r, "no answer within");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());

    // One dead endpoint among live ones: the live member is used, the dead one reported.
    let b = t
        .backup(&[
            "etcd",
            "snapshot",
            "multi",
            "--endpoints",
            &format!("http://127.0.0.1:{closed},{}", etcd.endpoint),
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(b["status"]["endpoint"], etcd.endpoint.as_str());
    assert!(b["status"]["warnings"][0].as_str().unwrap().contains("connection refused"), "{b}");

    let names: Vec<String> = kb(&t, &["list", "-o", "json"]).ok().json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn interrupted_runs_leave_nothing_listed_and_are_cleaned_up() {
    let env = env();
    let dir = scratch(&env, "etcd-leftover");
    let store = dir.join("store");
    let etcd = Etcd::start(&dir.join("etcd"), false).unwrap();
    put_all(&etcd, &sample_keys("left/", 10));
    let t = tools_in(&env, &store);

    // What a killed run leaves: a data file without metadata, and a multipart staging file.
    let leftover_dir = store.join("etcd/crashed");
    std::fs::create_dir_all(&leftover_dir).unwrap();
    std::fs::write(leftover_dir.join("snapshot-1-deadbeef.db"), b"partial").unwrap();
    std::fs::write(leftover_dir.join("snapshot-2-deadbeef.db#1"), b"partial part").unwrap();

    let list = kb(&t, &["list", "-o", "json"]).ok();
    assert_eq!(list.json()["items"], serde_json::json!([]));
    assert!(list.stderr.contains("crashed"), "{}", list.stderr);
    failed(&kb(&t, &["describe", "crashed"]), "interrupted");

    // The next successful run of that name removes them.
    kb_etcd(&t, &["snapshot", "crashed"], &etcd).ok();
    let files: Vec<String> = std::fs::read_dir(&leftover_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| !f.contains("deadbeef")), "{files:?}");

    // delete removes leftovers of a name that never committed.
    let other = store.join("etcd/never");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("keys-1-cafe.zip"), b"partial").unwrap();
    let d = kb(&t, &["delete", "never", "--yes"]).ok();
    assert!(d.stdout.contains("leftover"), "{}", d.stdout);
    assert!(!other.join("keys-1-cafe.zip").exists());
}

#[test]
fn s3_location_holds_every_type() {
    let env = env();
    let dir = scratch(&env, "etcd-s3");
    let etcd = Etcd::start(&dir.join("etcd"), false).unwrap();
    let keys = sample_keys("s3/", 200);
    put_all(&etcd, &keys);
    let t = Tools::new(&env.cluster).with_store(&env.s3, &unique("etcd"));

    for (name, kind) in [("s3-snap", "snapshot"), ("s3-keys", "keys"), ("s3-json", "keys-json")] {
        let b = kb_etcd(&t, &["snapshot", name, "--type", kind, "-o", "json"], &etcd).ok().json();
        assert_eq!(b["status"]["phase"], "Completed", "{b}");
        assert!(b["spec"]["location"].as_str().unwrap().starts_with("s3://"), "{b}");
        let file = dir.join(format!("{name}.bin"));
        kb(&t, &["download", name, "-f", file.to_str().unwrap()]).ok();
        assert_eq!(sha256_file(&file), b["status"]["archive"]["sha256"].as_str().unwrap());
        assert_eq!(std::fs::metadata(&file).unwrap().len(), b["status"]["archive"]["size"].as_u64().unwrap());
    }
    let names: Vec<String> = kb(&t, &["list", "-o", "json"]).ok().json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    // Restores read from S3: the snapshot passes etcdctl, the keys go back into an etcd.
    let restore_dir = dir.join("restore");
    kb(&t, &["restore", "s3-snap", "--data-dir", restore_dir.to_str().unwrap()]).ok();
    let out = etcdctl(&etcd, &["snapshot", "status", restore_dir.join("snapshot.db").to_str().unwrap()], None);
    assert!(!out.stdout.is_empty());
    let target = Etcd::start(&dir.join("target"), false).unwrap();
    kb_etcd(&t, &["restore", "s3-keys"], &target).ok();
    assert_eq!(all_keys(&target), keys);

    for name in ["s3-snap", "s3-keys", "s3-json"] {
        let d = kb(&t, &["delete", name, "--yes"]).ok();
        assert!(d.stdout.contains("deleted"), "{}", d.stdout);
    }
    assert_eq!(kb(&t, &["list", "-o", "json"]).ok().json()["items"], serde_json::json!([]));
    failed(&kb(&t, &["describe", "s3-snap"]), "not found");
}
