//! The list commands' output formats on a real control plane, like `kubectl get`'s: `-o wide`
//! (the table's extra columns), `-o jsonpath=TEMPLATE` and `-o jsonpath-as-json=TEMPLATE` over the
//! document `-o json` prints, and a bad template refused as a usage error (exit code 2).

use kubectl_backup_e2e::fixtures::{OwnCluster, namespace, unique};

const NS: &str = "kubectl-backup";

/// The header line and the line of the row whose first cells include `name`.
fn header_and_row<'a>(table: &'a str, name: &str) -> (&'a str, &'a str) {
    let header = table.lines().next().unwrap_or_default();
    let row = table
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
    (header, row)
}

#[test]
fn schedules_and_locations_print_wide_and_jsonpath() {
    let c = OwnCluster::start("out-sched");
    c.install_crds();
    c.t.kubectl(&["create", "namespace", NS]).ok();
    let t = &c.t;
    t.backup(&[
        "schedule",
        "create",
        "nightly",
        "--schedule",
        "0 2 * * *",
        "--ttl",
        "168h",
        "--backup-location",
        "archive",
        "--include-namespaces",
        "shop,web",
    ])
    .ok();
    t.backup(&["schedule", "create", "hourly", "--schedule", "@hourly", "--paused", "--time-zone", "Europe/Paris"])
        .ok();

    // The table has its columns; wide adds more, with the schedules' values.
    let table = t.backup(&["schedule", "list"]).ok().stdout;
    assert!(table.starts_with("NAMESPACE") && !table.contains("TTL"), "{table}");
    let wide = t.backup(&["schedule", "list", "-o", "wide"]).ok().stdout;
    let (header, row) = header_and_row(&wide, "nightly");
    for h in ["NEXT RUN", "TIME ZONE", "LOCATION", "TTL", "NAMESPACES", "LAST SUCCESS", "LAST ERROR"] {
        assert!(header.contains(h), "{h} missing:\n{wide}");
    }
    for v in ["archive", "168h", "shop,web", "UTC"] {
        assert!(row.contains(v), "{v} missing:\n{wide}");
    }
    assert!(header_and_row(&wide, "hourly").1.contains("Europe/Paris"), "{wide}");
    let bare = t.backup(&["schedule", "list", "-o", "wide", "--no-headers"]).ok().stdout;
    assert_eq!(bare.lines().count(), 2, "{bare}");

    // jsonpath over the list document `-o json` prints (the API server lists by name).
    let names = t.backup(&["schedule", "list", "-o", "jsonpath={.items[*].metadata.name}"]).ok().stdout;
    assert_eq!(names, "hourly nightly");
    let lines = t
        .backup(&["schedule", "list", "-o", r#"jsonpath={range .items[*]}{.metadata.name}={.spec.ttl}{"\n"}{end}"#])
        .ok()
        .stdout;
    assert_eq!(lines, "hourly=720h\nnightly=168h\n");
    let paused =
        t.backup(&["schedule", "list", "-o", "jsonpath={.items[?(@.spec.paused==true)].metadata.name}"]).ok().stdout;
    assert_eq!(paused, "hourly");
    let as_json = t.backup(&["schedule", "list", "-o", "jsonpath-as-json={.items[*].metadata.name}"]).ok().json();
    assert_eq!(as_json, serde_json::json!(["hourly", "nightly"]));

    // Locations: region and endpoint in the wide table, the URL through jsonpath.
    t.backup(&[
        "location",
        "add",
        "archive",
        "--url",
        "s3://archive/prefix",
        "--region",
        "eu-west-3",
        "--endpoint",
        "http://minio.example:9000",
        "--skip-check",
    ])
    .ok();
    let wide = t.backup(&["location", "list", "-o", "wide"]).ok().stdout;
    let (header, row) = header_and_row(&wide, "archive");
    for h in ["REGION", "ENDPOINT", "ENCRYPTED TO", "ROLE", "MESSAGE"] {
        assert!(header.contains(h), "{h} missing:\n{wide}");
    }
    assert!(row.contains("eu-west-3") && row.contains("http://minio.example:9000"), "{wide}");
    let url = t.backup(&["location", "list", "-o", "jsonpath={.items[0].spec.url}"]).ok().stdout;
    assert_eq!(url, "s3://archive/prefix");
}

#[test]
fn backups_and_workspaces_print_wide_and_jsonpath() {
    let c = OwnCluster::start("out-backup");
    let t = &c.t;
    let ns = unique("shop");
    t.apply(&format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\ndata: {{k: v}}\n",
        namespace(&ns)
    ))
    .ok();
    let name = unique("b");
    t.backup(&["create", &name, "-n", &ns]).ok();

    let wide = t.backup(&["list", "-o", "wide"]).ok().stdout;
    let (header, row) = header_and_row(&wide, &name);
    for h in ["NAMESPACES", "ERRORS", "WARNINGS", "ENCRYPTION", "SCHEDULE", "LOCATION"] {
        assert!(header.contains(h), "{h} missing:\n{wide}");
    }
    assert!(row.contains(&ns) && row.contains("none"), "{wide}");
    let names = t.backup(&["list", "-o", "jsonpath={.items[*].metadata.name}"]).ok().stdout;
    assert_eq!(names, name);
    let spec = t.backup(&["list", "-o", "jsonpath={.items[0].spec.includedNamespaces[0]}"]).ok().stdout;
    assert_eq!(spec, ns);

    // Workspaces: their items have `name` (not metadata.name), as -o json shows.
    let workspaces = t.backup(&["workspace", "list", "-o", "jsonpath={.items[*].name}"]).ok().stdout;
    assert!(workspaces.split(' ').any(|w| w == ns), "{workspaces}");
    let wide = t.backup(&["workspace", "list", "-o", "wide"]).ok().stdout;
    let (header, row) = header_and_row(&wide, &ns);
    assert!(header.contains("BACKED UP") && header.contains("STATUS"), "{wide}");
    assert!(row.contains(&name) && row.contains("Active"), "{wide}");
}

#[test]
fn a_bad_template_is_a_usage_error_naming_it() {
    let c = OwnCluster::start("out-bad");
    let t = &c.t;
    for (output, problem) in [
        ("jsonpath={.items[*].metadata.name", "unclosed action"),
        ("jsonpath={range .items[*]}{.metadata.name}", "{range} without an {end}"),
        ("jsonpath={.items[?(@.x ==)]}", "is not a JSONPath expression"),
        ("jsonpath", "needs a template"),
        ("jsonpath-as-json={items}", "neither text in quotes nor a path"),
        ("custom-columns=NAME:.metadata.name", "is not a format"),
    ] {
        let run = t.backup(&["list", "-o", output]);
        assert_eq!(run.code, 2, "{output}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{output}: {}", run.stdout);
        assert!(run.stderr.contains("--output") && run.stderr.contains(problem), "{output}: {}", run.stderr);
        if let Some(template) = output.split_once('=').map(|(_, t)| t).filter(|_| output.starts_with("jsonpath")) {
            assert!(run.stderr.contains(&format!("{template:?}")), "{output}: {}", run.stderr);
        }
    }
}
