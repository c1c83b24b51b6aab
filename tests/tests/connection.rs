//! kubectl's connection flags on the plugin, against the real API server: `--as`/`--as-group`
//! (the impersonated user's RBAC applies), `--server`/`--token`/`--certificate-authority` with no
//! kubeconfig at all, `--insecure-skip-tls-verify`, `--request-timeout`, and the error of each misuse.

use kubectl_backup_e2e::env::SharedEnv;
use kubectl_backup_e2e::fixtures::{Tools, namespace, service_account_token, unique};

fn setup(name: &str) -> (SharedEnv, Tools, String) {
    let env = SharedEnv::load().expect("shared environment");
    let mut t = Tools::new(&env.cluster);
    t.location = Some(format!("file://{}", env.scratch.join(unique(name)).display()));
    let ns = unique(name);
    t.apply(&format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{k: v}}\n",
        namespace(&ns)
    ))
    .ok();
    (env, t, ns)
}

#[test]
fn impersonation_applies_the_impersonated_users_rbac() {
    let (_env, t, ns) = setup("imp");
    // A user without bindings: refused by the API server, which names that user.
    let refused = t.backup(&["create", &unique("b"), "-n", &ns, "--as", "mallory@example.com"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("403 Forbidden")
            && refused.stderr.contains("User \"mallory@example.com\" cannot list resource"),
        "{}",
        refused.stderr
    );
    // The same user in a group that may read everything.
    let name = unique("b");
    let done = t
        .backup(&[
            "create",
            &name,
            "-n",
            &ns,
            "--as",
            "mallory@example.com",
            "--as-group",
            "system:masters",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(done["status"]["phase"], "Completed", "{done}");
    // Listed like `kubectl get`: -o name, and --no-headers.
    assert_eq!(t.backup(&["list", "-o", "name"]).ok().stdout, format!("backup/{name}\n"));
    let bare = t.backup(&["list", "--no-headers"]).ok().stdout;
    assert!(bare.starts_with(&name) && bare.lines().count() == 1, "{bare}");
    // A group without a user, as kubectl refuses it.
    let bad = t.backup(&["create", &unique("b"), "-n", &ns, "--as-group", "system:masters"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("--as-group") && bad.stderr.contains("needs --as"), "{}", bad.stderr);
    t.delete_namespace(&ns);
}

#[test]
fn server_token_and_certificate_authority_need_no_kubeconfig() {
    let (env, t, ns) = setup("tok");
    // A ServiceAccount that may read ConfigMaps in this namespace only.
    t.kubectl(&["create", "serviceaccount", "reader", "-n", &ns]).ok();
    t.kubectl(&["create", "role", "reader", "-n", &ns, "--verb=list,watch,get", "--resource=configmaps,namespaces"])
        .ok();
    t.kubectl(&[
        "create",
        "rolebinding",
        "reader",
        "-n",
        &ns,
        "--role=reader",
        &format!("--serviceaccount={ns}:reader"),
    ])
    .ok();
    let token = service_account_token(&t, &ns, "reader");
    let server = env.cluster.server.clone();
    let ca = env.cluster.ca_file.display().to_string();
    // No kubeconfig anywhere.
    let mut bare = t.clone();
    bare.kubeconfig = env.scratch.join("no-such-kubeconfig");
    // `create` of this namespace's ConfigMaps as the ServiceAccount, from flags alone.
    let create = |namespace: &str, trust: &[&str]| {
        let name = unique("b");
        let mut args = vec!["create", name.as_str(), "-n", namespace, "--include-resources", "configmaps"];
        args.extend(["--server", server.as_str(), "--token", token.as_str()]);
        args.extend(trust);
        bare.backup(&args)
    };
    let done = create(&ns, &["--certificate-authority", &ca]);
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert!(done.stdout.contains("Completed"), "{}", done.stdout);
    // It was the ServiceAccount that asked: another namespace is refused in its name.
    let refused = create("default", &["--certificate-authority", &ca]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains(&format!("system:serviceaccount:{ns}:reader")), "{}", refused.stderr);
    // Without the CA the server's certificate is not trusted, unless told to skip the check.
    let untrusted = create(&ns, &[]);
    assert_eq!(untrusted.code, 1, "{}", untrusted.stderr);
    assert!(untrusted.stderr.to_lowercase().contains("certificate"), "{}", untrusted.stderr);
    let skipped = create(&ns, &["--insecure-skip-tls-verify", "--request-timeout", "30s"]);
    assert_eq!(skipped.code, 0, "{}", skipped.stderr);
    // Misuse is named.
    let bad = bare.backup(&["create", &unique("b"), "-n", &ns, "--server", "not a url"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("invalid --server \"not a url\""), "{}", bad.stderr);
    let bad = t.backup(&["create", &unique("b"), "-n", &ns, "--request-timeout", "soon"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("--request-timeout"), "{}", bad.stderr);
    t.delete_namespace(&ns);
}
