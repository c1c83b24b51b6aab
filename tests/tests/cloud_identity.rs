//! The credentials people really use for S3, against a real S3 + STS server (moto) and the real API
//! server: a role assumed through STS with an External ID (flags, a profile, a BackupLocation), web
//! identity (what EKS injects), refresh of temporary credentials in the long-running controller,
//! an STS refusal named as such, and an endpoint behind TLS with a private CA.
//!
//! moto does not evaluate trust policies, so every test reads what was really sent from moto's
//! request recording: the STS call's parameters and the key each request was signed with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kubectl_backup_core::pki::Ca;
use kubectl_backup_e2e::env::SharedEnv;
use kubectl_backup_e2e::fixtures::{OwnCluster, Tools, eventually, namespace, unique};
use kubectl_backup_e2e::stores::{Moto, Recorded};

const ACCOUNT: &str = "123456789012";
/// The base credentials the role is assumed with (moto accepts any).
const BASE_KEY: &str = "AKIABASEKEY000000001";
const BASE_SECRET: &str = "base-secret-key-0000000000000000000000";
const BUCKET: &str = "identity";

fn scratch(env: &SharedEnv, name: &str) -> PathBuf {
    let d = env.scratch.join(unique(name));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn role(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// Admin tools on the shared cluster whose only AWS settings are `env`, and a location in moto.
fn tools_for(env: &SharedEnv, moto: &Moto, prefix: &str, aws: &[(&str, &str)]) -> Tools {
    let mut t = Tools::new(&env.cluster);
    t.env = vec![
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL".into(), moto.endpoint.clone()),
        // Nothing from the machine's own AWS set-up.
        ("AWS_CONFIG_FILE".into(), "/nonexistent/aws-config".into()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), "/nonexistent/aws-credentials".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ];
    t.env.extend(aws.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    t.location = Some(format!("s3://{BUCKET}/{prefix}"));
    t
}

fn base_keys() -> [(&'static str, &'static str); 2] {
    [("AWS_ACCESS_KEY_ID", BASE_KEY), ("AWS_SECRET_ACCESS_KEY", BASE_SECRET)]
}

/// A namespace with a ConfigMap whose value is `value`.
fn app(t: &Tools, ns: &str, value: &str) {
    t.apply(&format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{value: {value}}}\n",
        namespace(ns)
    ))
    .ok();
}

fn configmap_value(t: &Tools, ns: &str) -> String {
    t.get_json(&["configmap", "settings", "-n", ns])["data"]["value"].as_str().unwrap_or_default().to_string()
}

fn sts_calls(recorded: &[Recorded]) -> Vec<&Recorded> {
    recorded.iter().filter(|r| r.param("Action").is_some_and(|a| a.starts_with("AssumeRole"))).collect()
}

/// Requests to S3: signed for service `s3`.
fn s3_calls(recorded: &[Recorded]) -> Vec<&Recorded> {
    recorded.iter().filter(|r| r.service() == Some("s3")).collect()
}

/// Every S3 request was signed with temporary keys (moto's start with ASIA) that STS handed out,
/// never with `never`; returns the distinct keys in order of first use.
fn assert_s3_signed_with_temporary_keys(recorded: &[Recorded], never: &str) -> Vec<String> {
    let s3 = s3_calls(recorded);
    assert!(!s3.is_empty(), "no S3 request was recorded: {recorded:#?}");
    let mut keys: Vec<String> = Vec::new();
    for r in &s3 {
        let key = r.access_key().unwrap_or_default();
        assert_ne!(key, never, "S3 was called with the base credentials: {} {}", r.method, r.url);
        assert!(
            key.starts_with("ASIA"),
            "S3 was called with {key:?}, not temporary credentials: {} {}",
            r.method,
            r.url
        );
        if !keys.iter().any(|k| k == key) {
            keys.push(key.to_string());
        }
    }
    keys
}

#[test]
fn backup_and_restore_through_an_assumed_role_send_the_external_id_and_use_only_temporary_keys() {
    let env = SharedEnv::load().expect("shared environment");
    let dir = scratch(&env, "sts-role");
    let moto = Moto::start(&dir, None, &[]).unwrap();
    moto.create_bucket(BUCKET).unwrap();
    let t = tools_for(&env, &moto, "role", &base_keys());
    let ns = unique("role");
    app(&t, &ns, "through-a-role");
    let arn = role("backup-writer");
    let flags = ["--role-arn", arn.as_str(), "--external-id", "tenant-7f3a", "--session-name", "ci-backup"];

    let name = unique("b");
    let mut args = vec!["create", name.as_str(), "-n", ns.as_str(), "-o", "json"];
    args.extend(flags);
    let created = t.backup(&args).ok().json();
    assert_eq!(created["status"]["phase"], "Completed", "{created}");
    let target = unique("back");
    let mapping = format!("{ns}:{target}");
    let mut args = vec!["restore", name.as_str(), "--namespace-mapping", mapping.as_str()];
    args.extend(flags);
    t.backup(&args).ok();
    assert_eq!(configmap_value(&t, &target), "through-a-role");

    let recorded = moto.recording().unwrap();
    let sts = sts_calls(&recorded);
    // One role assumption per command: the credentials are cached for the command's life.
    assert_eq!(sts.len(), 2, "{sts:#?}");
    for call in sts {
        assert_eq!(call.param("Action").as_deref(), Some("AssumeRole"));
        assert_eq!(call.param("RoleArn").as_deref(), Some(arn.as_str()), "{call:?}");
        assert_eq!(call.param("ExternalId").as_deref(), Some("tenant-7f3a"), "{call:?}");
        assert_eq!(call.param("RoleSessionName").as_deref(), Some("ci-backup"), "{call:?}");
        assert_eq!(call.access_key(), Some(BASE_KEY), "STS must be called with the base credentials");
    }
    assert_s3_signed_with_temporary_keys(&recorded, BASE_KEY);
    t.delete_namespace(&ns);
    t.delete_namespace(&target);
}

#[test]
fn an_aws_profile_with_role_arn_and_source_profile_works_and_an_sso_profile_is_named_unsupported() {
    let env = SharedEnv::load().expect("shared environment");
    let dir = scratch(&env, "sts-profile");
    let moto = Moto::start(&dir, None, &[]).unwrap();
    moto.create_bucket(BUCKET).unwrap();
    let config = dir.join("config");
    let arn = role("from-profile");
    std::fs::write(
        &config,
        format!(
            "[profile base]\naws_access_key_id = {BASE_KEY}\naws_secret_access_key = {BASE_SECRET}\n\n\
             [profile backup]\nrole_arn = {arn}\nsource_profile = base\nexternal_id = profile-ext\n\
             role_session_name = profile-session\nregion = us-east-1\n\n\
             [profile corporate]\nsso_start_url = https://example.awsapps.com/start\nsso_region = us-east-1\n\
             sso_account_id = {ACCOUNT}\nsso_role_name = Backup\nregion = us-east-1\n"
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let mut t = tools_for(&env, &moto, "profile", &[("AWS_PROFILE", "backup")]);
    t.env.retain(|(k, _)| k != "AWS_CONFIG_FILE");
    t.env.push(("AWS_CONFIG_FILE".into(), config.clone()));
    let ns = unique("prof");
    app(&t, &ns, "from-a-profile");
    let name = unique("b");
    let created = t.backup(&["create", &name, "-n", &ns, "-o", "json"]).ok().json();
    assert_eq!(created["status"]["phase"], "Completed", "{created}");

    let recorded = moto.recording().unwrap();
    let sts = sts_calls(&recorded);
    assert_eq!(sts.len(), 1, "{sts:#?}");
    assert_eq!(sts[0].param("RoleArn").as_deref(), Some(arn.as_str()));
    assert_eq!(sts[0].param("ExternalId").as_deref(), Some("profile-ext"));
    assert_eq!(sts[0].param("RoleSessionName").as_deref(), Some("profile-session"));
    assert_eq!(sts[0].access_key(), Some(BASE_KEY), "the source profile's keys sign the AssumeRole call");
    assert_s3_signed_with_temporary_keys(&recorded, BASE_KEY);

    // AWS SSO profiles need the SDK's SSO support, which is not built in: named, nothing written.
    let mut sso = t.clone();
    sso.env.retain(|(k, _)| k != "AWS_PROFILE");
    sso.env.push(("AWS_PROFILE".into(), "corporate".into()));
    let before = s3_calls(&moto.recording().unwrap()).len();
    let refused = sso.backup(&["create", &unique("sso"), "-n", &ns]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("cannot get AWS credentials from the environment") && refused.stderr.contains("sso"),
        "{}",
        refused.stderr
    );
    assert_eq!(s3_calls(&moto.recording().unwrap()).len(), before, "an S3 request was sent without credentials");
    t.delete_namespace(&ns);
}

#[test]
fn a_web_identity_token_file_is_exchanged_for_temporary_credentials() {
    let env = SharedEnv::load().expect("shared environment");
    let dir = scratch(&env, "sts-web");
    let moto = Moto::start(&dir, None, &[]).unwrap();
    moto.create_bucket(BUCKET).unwrap();
    // What EKS mounts: a projected ServiceAccount token. moto does not verify it; the test checks
    // that exactly this token was sent.
    let token = format!("eyJhbGciOiJSUzI1NiJ9.{}.c2lnbmF0dXJl", unique("payload"));
    let token_file = dir.join("token");
    std::fs::write(&token_file, &token).unwrap();
    let arn = role("irsa-backup");
    let token_path = token_file.display().to_string();
    let t = tools_for(
        &env,
        &moto,
        "web",
        &[
            ("AWS_ROLE_ARN", arn.as_str()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path.as_str()),
            ("AWS_ROLE_SESSION_NAME", "irsa-session"),
        ],
    );
    let ns = unique("web");
    app(&t, &ns, "web-identity");
    let name = unique("b");
    let created = t.backup(&["create", &name, "-n", &ns, "-o", "json"]).ok().json();
    assert_eq!(created["status"]["phase"], "Completed", "{created}");
    assert!(t.backup(&["list"]).ok().stdout.contains(&name));

    let recorded = moto.recording().unwrap();
    let sts = sts_calls(&recorded);
    assert!(!sts.is_empty(), "no STS call: {recorded:#?}");
    for call in &sts {
        assert_eq!(call.param("Action").as_deref(), Some("AssumeRoleWithWebIdentity"), "{call:?}");
        assert_eq!(call.param("RoleArn").as_deref(), Some(arn.as_str()));
        assert_eq!(call.param("WebIdentityToken").as_deref(), Some(token.as_str()));
        assert_eq!(call.param("RoleSessionName").as_deref(), Some("irsa-session"));
    }
    assert_s3_signed_with_temporary_keys(&recorded, BASE_KEY);
    t.delete_namespace(&ns);
}

#[test]
fn an_sts_refusal_or_an_unreachable_sts_is_named_and_nothing_is_written() {
    let env = SharedEnv::load().expect("shared environment");
    let dir = scratch(&env, "sts-refused");
    // moto checking credentials, as AWS does: the base key is unknown to it.
    let moto = Moto::start(&dir, None, &[("INITIAL_NO_AUTH_ACTION_COUNT", "0".to_string())]).unwrap();
    let t = tools_for(&env, &moto, "refused", &base_keys());
    let ns = unique("refused");
    app(&t, &ns, "x");
    let arn = role("not-for-you");
    let refused = t.backup(&["create", &unique("b"), "-n", &ns, "--role-arn", &arn, "--external-id", "wrong"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains(&format!("cannot assume role {arn} through STS")), "{}", refused.stderr);
    // STS's answer. (moto words the error body as EC2 does, <Errors><Error>, which the SDK's STS
    // parser does not read, so its code shows only in moto's log; AWS's own body is parsed and its
    // code and message are in the chain.)
    assert!(
        refused.stderr.contains("service error") && refused.stderr.contains("(HTTP 403 from STS)"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(BASE_SECRET), "the secret key leaked into the message");
    let recorded = moto.recording().unwrap();
    assert!(s3_calls(&recorded).is_empty(), "S3 was called without credentials: {recorded:#?}");

    // An STS endpoint nobody answers on: named with its URL.
    let closed = format!("http://127.0.0.1:{}", kubectl_backup_e2e::process::free_port());
    let unreachable = t.backup(&["create", &unique("b"), "-n", &ns, "--role-arn", &arn, "--sts-endpoint", &closed]);
    assert_eq!(unreachable.code, 1, "{}", unreachable.stderr);
    assert!(
        unreachable.stderr.contains(&format!("cannot assume role {arn} through STS ({closed})")),
        "{}",
        unreachable.stderr
    );
    // And an assumed role for a store that has no IAM: refused before anything is sent.
    let mut gcs = t.clone();
    gcs.location = Some("gs://bucket/p".into());
    let wrong = gcs.backup(&["create", &unique("b"), "-n", &ns, "--role-arn", &arn]);
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("an IAM role is assumed for S3 locations only"), "{}", wrong.stderr);
    t.delete_namespace(&ns);
}

/// A CA of the test's own and a certificate for `localhost` it signed: (cert, key, ca) files.
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = Ca::new("kubectl-backup test CA").unwrap();
    let files = ca.write_leaf(&dir.join("tls"), "moto", "localhost", &["localhost", "127.0.0.1"]).unwrap();
    (files.cert, files.key, files.ca)
}

#[test]
fn an_endpoint_behind_tls_with_a_private_ca_works_with_ca_cert_and_is_refused_without() {
    let env = SharedEnv::load().expect("shared environment");
    let dir = scratch(&env, "sts-tls");
    let (cert, key, ca) = private_ca(&dir);
    let moto = Moto::start(&dir, Some((&cert, &key, &ca)), &[]).unwrap();
    assert!(moto.endpoint.starts_with("https://"));
    moto.create_bucket(BUCKET).unwrap();
    let t = tools_for(&env, &moto, "tls", &base_keys());
    let ns = unique("tls");
    app(&t, &ns, "over-tls");

    // Without the CA: refused, and the message says it is the certificate.
    let refused = t.backup(&["create", &unique("b"), "-n", &ns]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("certificate") && refused.stderr.contains("UnknownIssuer"), "{}", refused.stderr);

    // With it: S3 and, through an assumed role, STS both trust the private CA.
    let arn = role("tls-writer");
    let name = unique("b");
    let ca_path = ca.display().to_string();
    let created =
        t.backup(&["create", &name, "-n", &ns, "--ca-cert", &ca_path, "--role-arn", &arn, "-o", "json"]).ok().json();
    assert_eq!(created["status"]["phase"], "Completed", "{created}");
    let listed = t.backup(&["list", "--ca-cert", &ca_path, "--role-arn", &arn]).ok().stdout;
    assert!(listed.contains(&name), "{listed}");
    let recorded = moto.recording().unwrap();
    assert_eq!(sts_calls(&recorded).len(), 2);
    assert_s3_signed_with_temporary_keys(&recorded, BASE_KEY);
    t.delete_namespace(&ns);
}

/// First and last signing time of each key, from the S3 requests.
fn key_use(recorded: &[Recorded]) -> BTreeMap<String, (jiff::Timestamp, jiff::Timestamp)> {
    let mut uses: BTreeMap<String, (jiff::Timestamp, jiff::Timestamp)> = BTreeMap::new();
    for r in s3_calls(recorded) {
        let (Some(key), Some(at)) = (r.access_key(), r.signed_at()) else { continue };
        let e = uses.entry(key.to_string()).or_insert((at, at));
        e.0 = e.0.min(at);
        e.1 = e.1.max(at);
    }
    uses
}

#[test]
fn the_controller_assumes_a_locations_role_and_renews_the_credentials_before_they_expire() {
    let c = OwnCluster::start("sts-ctl");
    let moto = Moto::start(&c.dir.join("moto"), None, &[]).unwrap();
    moto.create_bucket(BUCKET).unwrap();
    let ns = "kubectl-backup";
    let _webhook = c.webhook(ns, &["--continuous=false", "--location-check-interval=1s"]);
    // The base keys in a Secret the BackupLocation names; the role on top, with credentials that
    // live 15 seconds (moto honours a DurationSeconds below STS's 900).
    c.t.kubectl(&[
        "create",
        "secret",
        "generic",
        "moto-base",
        "-n",
        ns,
        &format!("--from-literal=AWS_ACCESS_KEY_ID={BASE_KEY}"),
        &format!("--from-literal=AWS_SECRET_ACCESS_KEY={BASE_SECRET}"),
    ])
    .ok();
    let arn = role("controller");
    c.t.backup(&[
        "location",
        "add",
        "through-role",
        "--url",
        &format!("s3://{BUCKET}/controller"),
        "--endpoint",
        &moto.endpoint,
        "--credentials-secret",
        "moto-base",
        "--role-arn",
        &arn,
        "--external-id",
        "controller-ext",
        "--role-duration-seconds",
        "15",
        "--sts-endpoint",
        &moto.endpoint,
    ])
    .ok();
    let bl = c.t.get_json(&["backuplocations.kubectl-backup.dev", "through-role", "-n", ns]);
    assert_eq!(bl["spec"]["assumeRole"]["roleArn"], arn.as_str(), "{bl}");
    assert_eq!(bl["spec"]["assumeRole"]["externalId"], "controller-ext", "{bl}");
    assert_eq!(bl["spec"]["assumeRole"]["durationSeconds"], 15, "{bl}");
    eventually("the location Available", Duration::from_secs(30), || {
        c.t.get_json(&["backuplocations.kubectl-backup.dev", "through-role", "-n", ns])["status"]["phase"]
            == "Available"
    });
    // Checked every second for 40 s: at least two renewals.
    std::thread::sleep(Duration::from_secs(40));

    let recorded = moto.recording().unwrap();
    let sts = sts_calls(&recorded);
    assert!(sts.len() >= 3, "expected a renewal every ~11 s, got {} STS calls", sts.len());
    for call in &sts {
        assert_eq!(call.param("RoleArn").as_deref(), Some(arn.as_str()));
        assert_eq!(call.param("ExternalId").as_deref(), Some("controller-ext"));
        assert_eq!(call.param("DurationSeconds").as_deref(), Some("15"));
        assert_eq!(call.access_key(), Some(BASE_KEY), "the Secret's keys sign the AssumeRole call");
    }
    let keys = assert_s3_signed_with_temporary_keys(&recorded, BASE_KEY);
    assert!(keys.len() >= 3, "the controller kept one set of credentials: {keys:?}");
    // No key is used past its 15-second life: each is renewed first.
    for (key, (first, last)) in key_use(&recorded) {
        let used_for = last.duration_since(first);
        assert!(used_for < jiff::SignedDuration::from_secs(15), "{key} was used for {used_for:?}, past its 15 s life");
    }
    assert_eq!(
        c.t.get_json(&["backuplocations.kubectl-backup.dev", "through-role", "-n", ns])["status"]["phase"],
        "Available"
    );
}
