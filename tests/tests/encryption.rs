//! Client-side encryption (age) of object and etcd backups, on every store, against the real API
//! server, real object stores, a real etcd and the real `age` CLI: what is stored never holds a
//! Secret in the clear, a missing or wrong key is named and writes nothing, a changed ciphertext
//! is refused before any write, and the controller restores from an encrypted backup with the key
//! its BackupLocation names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kubectl_backup_e2e::control_plane::Etcd;
use kubectl_backup_e2e::env::SharedEnv;
use kubectl_backup_e2e::fixtures::{OwnCluster, Tools, annotation, eventually, namespace, unique};
use serde_json::{Value, json};

fn env() -> (SharedEnv, Tools) {
    let env = SharedEnv::load().expect("shared environment");
    let tools = Tools::new(&env.cluster);
    (env, tools)
}

fn scratch(env: &SharedEnv, name: &str) -> PathBuf {
    let d = env.scratch.join(unique(name));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fresh age key pair made by the real `age-keygen`: (identity file, public key).
fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{name}.key"));
    let out = Command::new("age-keygen").arg("-o").arg(&file).output().expect("age-keygen (tests/env/install.sh)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file).unwrap();
    let public = text.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().trim().to_string();
    (file, public)
}

/// A namespace with one Secret whose value is `secret`, and a ConfigMap.
fn app(ns: &str, secret: &str) -> String {
    format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: vault, namespace: {ns}}}\nstringData: {{password: {secret}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{mode: encrypted}}\n",
        namespace(ns)
    )
}

fn secret_value(t: &Tools, ns: &str) -> String {
    let v = t.get_json(&["secret", "vault", "-n", ns]);
    let b64 = v["data"]["password"].as_str().unwrap_or_default();
    String::from_utf8(BASE64.decode(b64).unwrap()).unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every byte stored for backup `name`: the data file as `download` gets it (verified), and the
/// metadata document.
fn stored_bytes(t: &Tools, dir: &Path, name: &str) -> Vec<u8> {
    let file = dir.join(format!("{name}.stored"));
    t.backup(&["download", name, "-f", file.to_str().unwrap()]).ok();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend(t.backup(&["describe", name, "-o", "json"]).ok().stdout.into_bytes());
    bytes
}

#[test]
fn encrypted_backups_round_trip_on_every_store_and_store_no_secret_in_the_clear() {
    let (env, tools) = env();
    let dir = scratch(&env, "enc-stores");
    let (key, public) = keypair(&dir, "team");
    let ns = unique("vault");
    let secret = format!("s3cr3t-{}", unique("v"));
    tools.apply(&app(&ns, &secret)).ok();
    let pass = dir.join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let mut targets: Vec<(String, Tools)> = env
        .stores()
        .into_iter()
        .map(|store| (store.provider.clone(), tools.with_store(store, &unique(&format!("enc-{}", store.provider)))))
        .collect();
    let mut local = tools.clone();
    local.location = Some(format!("file://{}", dir.join("store").display()));
    targets.push(("file".into(), local));
    for (provider, t) in &targets {
        let name = unique("b");
        let created = t.backup(&["create", &name, "-n", &ns, "--encrypt-to", &public, "-o", "json"]).ok().json();
        assert_eq!(created["status"]["phase"], "Completed", "{provider}: {created}");
        let enc = &created["status"]["archive"]["encryption"];
        assert_eq!(enc["algorithm"], "age", "{provider}: {created}");
        assert_eq!(enc["recipients"], json!([public]), "{provider}");
        let store = provider;

        // What a bucket reader gets: no Secret value, no object content.
        let stored = stored_bytes(t, &dir, &name);
        assert!(!contains(&stored, &secret), "{store}: the Secret's value is stored in the clear");
        assert!(!contains(&stored, "encrypted\"") && !contains(&stored, "\"mode\""), "{store}");
        // list and describe need no key.
        assert!(t.backup(&["list"]).ok().stdout.contains(&name));
        let human = t.backup(&["describe", &name]).ok().stdout;
        assert!(human.contains(&format!("Encryption:         age, to {public}")), "{human}");

        // Restored with the key into another namespace: the same Secret.
        let target = unique("back");
        t.backup(&[
            "restore",
            &name,
            "--namespace-mapping",
            &format!("{ns}:{target}"),
            "--identity",
            key.to_str().unwrap(),
        ])
        .ok();
        assert_eq!(secret_value(t, &target), secret, "{store}");
        tools.delete_namespace(&target);

        // With a passphrase instead of keys.
        let name = unique("p");
        t.backup(&["create", &name, "-n", &ns, "--encrypt-passphrase-file", pass.to_str().unwrap()]).ok();
        assert!(!contains(&stored_bytes(t, &dir, &name), &secret), "{store}: passphrase");
        let target = unique("back");
        let mapping = format!("{ns}:{target}");
        t.backup(&["restore", &name, "--namespace-mapping", &mapping, "--passphrase-file", pass.to_str().unwrap()])
            .ok();
        assert_eq!(secret_value(t, &target), secret, "{store}: passphrase");
        tools.delete_namespace(&target);
    }
}

#[test]
fn an_ssh_key_and_the_age_cli_open_what_was_written() {
    let (env, tools) = env();
    let dir = scratch(&env, "enc-pass");
    let ns = unique("vault");
    let secret = format!("pw-{}", unique("v"));
    tools.apply(&app(&ns, &secret)).ok();
    let t = tools.with_store(&env.s3, &unique("enc-pass"));
    // An SSH ed25519 key pair (the real ssh-keygen): the public key encrypts, the private key opens.
    let ssh_key = dir.join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kubectl-backup test", "-f"])
        .arg(&ssh_key)
        .output()
        .expect("ssh-keygen (tests/env/install.sh)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let ssh_public = std::fs::read_to_string(dir.join("id_ed25519.pub")).unwrap().trim().to_string();
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns, "--encrypt-to", &ssh_public]).ok();
    let target = unique("back");
    t.backup(&[
        "restore",
        &name,
        "--namespace-mapping",
        &format!("{ns}:{target}"),
        "--identity",
        ssh_key.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(secret_value(&t, &target), secret);
    tools.delete_namespace(&target);

    // A key pair: the downloaded file is a standard age file that the age CLI opens.
    let (key, public) = keypair(&dir, "cli");
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns, "--encrypt-to", &public]).ok();
    let run = t.backup(&["download", &name, "-f", dir.join("x.tar.zst.age").to_str().unwrap()]).ok();
    assert!(run.stderr.contains("age -d -i KEY"), "{}", run.stderr);
    let listing = t
        .sh(&format!("age -d -i {} {} | tar --zstd -tf -", key.display(), dir.join("x.tar.zst.age").display()))
        .ok()
        .stdout;
    assert!(listing.contains(&format!("resources/secrets/namespaces/{ns}/vault.json")), "{listing}");
    // Without -f, the default name says it is encrypted.
    let location = t.location.clone().unwrap();
    let run = t.sh(&format!("cd {} && kubectl backup download {name} --location {location}", dir.display())).ok();
    assert!(dir.join(format!("{name}.tar.zst.age")).exists(), "{}", run.stderr);
}

#[test]
fn a_missing_or_wrong_key_is_named_and_nothing_is_restored() {
    let (env, tools) = env();
    let dir = scratch(&env, "enc-keys");
    let (_, public) = keypair(&dir, "owner");
    let (other, _) = keypair(&dir, "stranger");
    let ns = unique("vault");
    tools.apply(&app(&ns, "x")).ok();
    let t = tools.with_store(&env.s3, &unique("enc-keys"));
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns, "--encrypt-to", &public]).ok();
    let target = unique("never");
    let mapping = format!("{ns}:{target}");

    let none = t.backup(&["restore", &name, "--namespace-mapping", &mapping]);
    assert_eq!(none.code, 1, "{}", none.stderr);
    assert!(
        none.stderr
            .contains(&format!("backup {name:?} cannot be read: it is encrypted to {public}: pass --identity FILE")),
        "{}",
        none.stderr
    );
    let wrong = t.backup(&["restore", &name, "--namespace-mapping", &mapping, "--identity", other.to_str().unwrap()]);
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(
        wrong
            .stderr
            .contains(&format!("it is encrypted to {public}, and none of the keys given ({})", other.display())),
        "{}",
        wrong.stderr
    );
    // $KUBECTL_BACKUP_IDENTITY is read like --identity.
    let env_wrong = t.sh(&format!(
        "KUBECTL_BACKUP_IDENTITY={} kubectl backup restore {name} --namespace-mapping {mapping} --location {}",
        other.display(),
        t.location.as_deref().unwrap()
    ));
    assert!(env_wrong.code == 1 && env_wrong.stderr.contains("none of the keys given"), "{}", env_wrong.stderr);
    // A file that holds no key is refused as such.
    let bad = t.backup(&["restore", &name, "--identity", dir.join("stranger.key.pub-none").to_str().unwrap()]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("stranger.key.pub-none"), "{}", bad.stderr);
    assert!(t.kubectl(&["get", "namespace", &target]).code != 0, "a failed restore created the target namespace");
}

/// A change made to stored bytes.
type Change = fn(&mut Vec<u8>);

/// Rewrites the stored archive of `name` in a `file://` location with `f`, and the metadata's size
/// and SHA-256 to match, so that only the decryption can notice.
fn tamper(store: &Path, name: &str, f: Change) {
    let dir = store.join("backups").join(name);
    let meta_path = dir.join("metadata.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let key = meta["backup"]["status"]["archive"]["key"].as_str().unwrap().to_string();
    let mut bytes = std::fs::read(dir.join(&key)).unwrap();
    f(&mut bytes);
    std::fs::write(dir.join(&key), &bytes).unwrap();
    meta["backup"]["status"]["archive"]["size"] = json!(bytes.len());
    meta["backup"]["status"]["archive"]["sha256"] = json!(kubectl_backup_core::archive::sha256_hex(&bytes));
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

#[test]
fn a_changed_or_cut_ciphertext_is_refused_before_any_write() {
    let (env, tools) = env();
    let dir = scratch(&env, "enc-tamper");
    let (key, public) = keypair(&dir, "k");
    let ns = unique("vault");
    tools.apply(&app(&ns, "x")).ok();
    let store = dir.join("store");
    let mut t = tools.clone();
    t.location = Some(format!("file://{}", store.display()));
    let cases: [(&str, Change); 2] = [
        ("flipped", |b| {
            let at = b.len() - 40;
            b[at] ^= 0x01;
        }),
        ("cut", |b| b.truncate(b.len() - 17)),
    ];
    for (what, change) in cases {
        let name = unique(what);
        t.backup(&["create", &name, "-n", &ns, "--encrypt-to", &public]).ok();
        tamper(&store, &name, change);
        let target = unique("never");
        let run = t.backup(&[
            "restore",
            &name,
            "--namespace-mapping",
            &format!("{ns}:{target}"),
            "--identity",
            key.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 1, "{what}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("backup {name:?}")) && run.stderr.contains("cannot be used"),
            "{what}: {}",
            run.stderr
        );
        assert!(t.kubectl(&["get", "namespace", &target]).code != 0, "{what}: the restore wrote");
    }
    // The stored bytes themselves changed (metadata untouched): caught by the stored SHA-256.
    let name = unique("raw");
    t.backup(&["create", &name, "-n", &ns, "--encrypt-to", &public]).ok();
    let bdir = store.join("backups").join(&name);
    let archive = std::fs::read_dir(&bdir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("archive-"))
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&archive).unwrap();
    bytes[100] ^= 0x80;
    std::fs::write(&archive, bytes).unwrap();
    let run = t.backup(&["restore", &name, "--identity", key.to_str().unwrap()]);
    assert!(run.code == 1 && run.stderr.contains("SHA-256"), "{}", run.stderr);
}

#[test]
fn an_encrypted_etcd_snapshot_is_restored_and_served() {
    let (env, tools) = env();
    let dir = scratch(&env, "enc-etcd");
    let (key, public) = keypair(&dir, "etcd");
    let etcd = Etcd::start(&dir.join("etcd"), false).unwrap();
    let value = format!("etcd-secret-{}", unique("v"));
    let put = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoint, "put", "/registry/secrets/x", &value])
        .output()
        .unwrap();
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let mut t = tools.clone();
    let store = dir.join("store");
    t.location = Some(format!("file://{}", store.display()));
    for (kind, name) in [("snapshot", "snap"), ("keys-json", "keys")] {
        let b = t
            .backup(&[
                "etcd",
                "snapshot",
                name,
                "--type",
                kind,
                "--endpoints",
                &etcd.endpoint,
                "--encrypt-to",
                &public,
                "-o",
                "json",
            ])
            .ok()
            .json();
        assert_eq!(b["status"]["archive"]["encryption"]["recipients"], json!([public]), "{kind}");
        let stored = stored_etcd(&store, name);
        assert!(!contains(&stored, &value), "{kind}: the value is stored in the clear");
    }
    // Without the key: named, nothing written.
    let out = dir.join("restored");
    let run = t.backup(&["etcd", "restore", "snap", "--data-dir", out.to_str().unwrap()]);
    assert!(run.code == 1 && run.stderr.contains(&format!("encrypted to {public}")), "{}", run.stderr);
    assert!(!out.join("snapshot.db").exists());
    // With it: a snapshot etcdctl accepts, and an etcd started on it serves the key.
    t.backup(&["etcd", "restore", "snap", "--data-dir", out.to_str().unwrap(), "--identity", key.to_str().unwrap()])
        .ok();
    let status = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", out.join("snapshot.db").to_str().unwrap(), "-w", "json"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status["totalKey"].as_u64().unwrap() >= 1, "{status}");
    let data = dir.join("restored-data");
    let restore = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore", out.join("snapshot.db").to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    let served = Etcd::start_on(&dir.join("served"), &data, false).unwrap();
    let got = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &served.endpoint, "get", "/registry/secrets/x", "--print-value-only"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), value);
    // keys-json into a live etcd: a dry run decrypts and compares.
    let dry = t
        .backup(&[
            "etcd",
            "restore",
            "keys",
            "--endpoints",
            &etcd.endpoint,
            "--dry-run",
            "--identity",
            key.to_str().unwrap(),
        ])
        .ok();
    assert!(dry.stdout.contains("1 unchanged"), "{}", dry.stdout);
}

/// The bytes of every file of etcd backup `name` in a `file://` store.
fn stored_etcd(store: &Path, name: &str) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(store.join("etcd").join(name)).unwrap().flatten() {
        all.extend(std::fs::read(e.path()).unwrap());
    }
    all
}

#[test]
fn the_controller_restores_a_workspace_from_an_encrypted_backup_with_its_locations_key() {
    let c = OwnCluster::start("enc-auto");
    let dir = c.dir.join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    let (key, public) = keypair(&dir, "controller");
    let own = "kubectl-backup";
    c.t.apply(&namespace(own)).ok();
    c.t.kubectl(&[
        "create",
        "secret",
        "generic",
        "enc-identity",
        "-n",
        own,
        &format!("--from-file=identity={}", key.display()),
    ])
    .ok();
    let ns = unique("shop");
    let secret = format!("auto-{}", unique("v"));
    c.t.apply(&app(&ns, &secret)).ok();
    let backup = unique("b");
    c.t.backup(&["create", &backup, "-n", &ns, "--encrypt-to", &public]).ok();
    // The controller's location is the BackupLocation "vault" it creates from its flags (as
    // `install --encrypt-to --identity-secret` and the chart set them): encrypted, with the key.
    let webhook = c.webhook_at(
        own,
        "vault",
        &[
            &format!("--default-location-url={}", c.location),
            &format!("--default-location-encrypt-to={public}"),
            "--default-location-identity-secret=enc-identity",
            "--gc-interval=2s",
            "--debounce=2s",
        ],
    );
    let bl = c.t.get_json(&["backuplocations.kubectl-backup.dev", "vault", "-n", own]);
    assert_eq!(bl["spec"]["encryption"], json!({"recipients": [public], "identitySecret": "enc-identity"}));
    c.t.delete_namespace(&ns);
    c.t.kubectl(&["create", "namespace", &ns]).ok();
    eventually("the encrypted backup restored", Duration::from_secs(30), || {
        annotation(&c.t.get_json(&["namespace", &ns]), "kubectl-backup.dev/restore-status").as_deref()
            == Some("Completed")
    });
    assert_eq!(secret_value(&c.t, &ns), secret, "{}", webhook.log());
    // The restore changed the workspace: the controller's continuous backup of it (incremental by
    // default) is encrypted to the location's recipients with no flag anywhere.
    let continuous = || -> Option<Value> {
        let list = c.t.backup(&["list", "-o", "json"]).ok().json();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["spec"]["schedule"] == "continuous" && b["spec"]["includedNamespaces"] == json!([ns]))
            .cloned()
    };
    eventually("a continuous backup of the restored workspace", Duration::from_secs(40), || continuous().is_some());
    let cont = continuous().unwrap();
    assert!(cont["status"]["archive"].is_null(), "a continuous backup is incremental by default: {cont}");
    assert_eq!(cont["status"]["incremental"]["encryption"]["recipients"], json!([public]), "{cont}");
    // Expiry needs no key: an expired encrypted backup goes, the others stay.
    let short = unique("short");
    c.t.backup(&["create", &short, "-n", &ns, "--encrypt-to", &public, "--ttl", "1s"]).ok();
    eventually("the expired encrypted backup deleted", Duration::from_secs(30), || {
        !c.t.backup(&["list", "-o", "json"]).ok().stdout.contains(&short)
    });
    assert!(c.t.backup(&["list"]).ok().stdout.contains(&backup), "{}", webhook.log());
}
