//! The release: `krew-manifest.yaml` is the template `scripts/release.sh` generates the release's
//! krew manifest from (it has no sha256, ever); the generated manifest lists exactly the platforms
//! built, each with its archive's real sha256, passes krew's validation rules and installs the way
//! `kubectl krew install --manifest --archive` installs it, after which the real kubectl runs the
//! plugin. The webhook image carries the OCI labels, and `scripts/oci-index.sh` joins the per-platform
//! images into a multi-arch OCI image index that skopeo reads.
//!
//! krew itself runs when `KREW` names a krew binary (`kubectl krew install --manifest --archive`
//! with a temporary KREW_ROOT). It is a Go program that no registry reachable here ships (no Debian,
//! PyPI or npm package, and the Go module proxy is not reachable), so CI has none: then its checks
//! are the ones re-implemented below from its source (internal/index/validation/validate.go,
//! internal/installation/install.go, v0.4.3), and the test says which one it ran.
//!
//! A full release (`scripts/release.sh --out DIR`, 20+ minutes of cross builds) is checked by
//! `KUBECTL_BACKUP_RELEASE_DIR=DIR cargo test -p kubectl-backup-e2e --test krew`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kubectl_backup_e2e::fixtures::{bin_dir, plugin_path};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Plugin {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    version: String,
    homepage: String,
    short_description: String,
    description: String,
    caveats: String,
    platforms: Vec<Platform>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Platform {
    selector: Selector,
    uri: String,
    #[serde(default)]
    sha256: Option<String>,
    bin: String,
    files: Vec<FileOperation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Selector {
    match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOperation {
    from: String,
    to: String,
}

impl Platform {
    fn os_arch(&self) -> (String, String) {
        let label = |k: &str| self.selector.match_labels.get(k).cloned().unwrap_or_default();
        (label("os"), label("arch"))
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");
const IMAGE_LABELS: [&str; 7] = [
    "org.opencontainers.image.source",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

fn parse(path: &Path) -> Plugin {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{} is not a krew Plugin: {e}", path.display()))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sha256_of(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    assert!(out.status.success(), "sha256sum {}: {}", path.display(), stderr(&out));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// This machine as krew names it.
fn host() -> (String, String) {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    (os.to_string(), arch.to_string())
}

fn archive_name(os: &str, arch: &str) -> String {
    format!("kubectl-backup_{VERSION}_{os}_{arch}.tar.gz")
}

/// krew's `ValidatePlugin` (internal/index/validation/validate.go), rule by rule.
fn assert_krew_accepts(p: &Plugin) {
    assert_eq!(p.api_version, "krew.googlecontainertools.github.com/v1alpha2", "krew: unsupported apiVersion");
    assert_eq!(p.kind, "Plugin", "krew: only kind Plugin");
    let name = &p.metadata.name;
    let windows_forbidden = ["CON", "PRN", "AUX", "NUL", "COM1", "LPT1"];
    assert!(
        !name.is_empty()
            && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            && !windows_forbidden.iter().any(|f| f.eq_ignore_ascii_case(name)),
        "krew: the plugin name {name:?} must match ^[\\w-]+$"
    );
    assert!(!p.spec.short_description.is_empty(), "krew: should have a short description");
    assert!(!p.spec.short_description.contains(['\r', '\n']), "krew: no line breaks in the short description");
    assert!(!p.spec.platforms.is_empty(), "krew: should have a platform specified");
    assert!(is_semver_with_v(&p.spec.version), "krew: version {:?} is no v-prefixed semver", p.spec.version);
    for pl in &p.spec.platforms {
        let (os, arch) = pl.os_arch();
        assert!(!pl.uri.is_empty(), "krew: {os}/{arch}: `uri` has to be set");
        let sha = pl.sha256.as_deref().unwrap_or_else(|| panic!("krew: {os}/{arch}: `sha256` sum has to be set"));
        assert!(
            sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "krew: {os}/{arch}: `sha256` value {sha} must match ^[a-f0-9]{{64}}$"
        );
        assert!(!pl.bin.is_empty(), "krew: {os}/{arch}: `bin` has to be set");
        assert!(!pl.files.is_empty(), "krew: {os}/{arch}: `files` has to be unspecified or non-empty");
        assert!(pl.files.iter().all(|f| !f.from.is_empty() && !f.to.is_empty()), "krew: {os}/{arch}: from and to");
        assert!(!pl.selector.match_labels.is_empty(), "krew: {os}/{arch}: `matchLabels` specified but empty");
        assert!(
            pl.selector.match_labels.keys().all(|k| k == "os" || k == "arch"),
            "krew: {os}/{arch}: only the keys os and arch are supported"
        );
    }
}

fn is_semver_with_v(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else { return false };
    let core = rest.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n.len() == 1 || !n.starts_with('0')))
}

/// What our release promises beyond krew's rules, template or generated.
fn assert_ours(p: &Plugin) {
    assert_eq!(p.metadata.name, "backup", "the plugin is `kubectl backup`");
    assert_eq!(p.spec.version, format!("v{VERSION}"), "krew versions are v + the workspace version");
    assert!(p.spec.homepage.starts_with("https://github.com/kubectl-backup/"), "{}", p.spec.homepage);
    assert!(p.spec.short_description.len() <= 60, "{}", p.spec.short_description);
    assert!(p.spec.description.len() > p.spec.short_description.len());
    // The central index has another `backup`: the caveats say where this one comes from.
    assert!(p.spec.caveats.contains("kubectl krew index add kubectl-backup"), "{}", p.spec.caveats);
    assert!(p.spec.caveats.contains("kubectl-backup/backup"), "{}", p.spec.caveats);
    let listed: Vec<(String, String)> = p.spec.platforms.iter().map(Platform::os_arch).collect();
    assert_eq!(listed.iter().collect::<BTreeSet<_>>().len(), listed.len(), "a platform is listed twice: {listed:?}");
    for pl in &p.spec.platforms {
        let (os, arch) = pl.os_arch();
        assert!(
            ["linux", "darwin"].contains(&os.as_str()) && ["amd64", "arm64"].contains(&arch.as_str()),
            "{os}/{arch}"
        );
        assert_eq!(pl.selector.match_labels.len(), 2, "{os}/{arch}: only os and arch select a platform");
        assert_eq!(
            pl.uri,
            format!(
                "https://github.com/kubectl-backup/kubectl-backup/releases/download/v{VERSION}/{}",
                archive_name(&os, &arch)
            ),
            "{os}/{arch}"
        );
        assert_eq!(pl.bin, "kubectl-backup", "{os}/{arch}");
        let from: BTreeSet<&str> = pl.files.iter().map(|f| f.from.as_str()).collect();
        assert_eq!(from, BTreeSet::from(["kubectl-backup", "LICENSE"]), "{os}/{arch}: files");
        assert!(pl.files.iter().all(|f| f.to == "."), "{os}/{arch}: files go to the plugin's root");
    }
}

/// A release directory's manifest: krew accepts it, and every platform it lists has its archive
/// there, whose sha256 is the listed one. Returns the manifest.
fn assert_release(dir: &Path) -> Plugin {
    let manifest = parse(&dir.join("krew-manifest.yaml"));
    assert_krew_accepts(&manifest);
    assert_ours(&manifest);
    for pl in &manifest.spec.platforms {
        let (os, arch) = pl.os_arch();
        let sha = pl.sha256.as_deref().unwrap_or_default();
        assert!(sha.bytes().collect::<BTreeSet<_>>().len() > 1, "{os}/{arch}: placeholder sha256 {sha}");
        let archive = dir.join(pl.uri.rsplit('/').next().unwrap_or_default());
        assert!(archive.is_file(), "{os}/{arch}: the manifest lists {} but it is not in {}", pl.uri, dir.display());
        assert_eq!(sha256_of(&archive), sha, "{os}/{arch}: the manifest's sha256 is not {}'s", archive.display());
    }
    // SHA256SUMS agrees.
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("SHA256SUMS");
    for pl in &manifest.spec.platforms {
        let line =
            format!("{}  {}", pl.sha256.as_deref().unwrap_or_default(), archive_name(&pl.os_arch().0, &pl.os_arch().1));
        assert!(sums.lines().any(|l| l == line), "SHA256SUMS has no line {line:?}:\n{sums}");
    }
    manifest
}

/// `kubectl krew install --manifest=M --archive=A` as krew does it (internal/installation/install.go):
/// the platform matching this machine, the archive's sha256 checked, unpacked into a staging
/// directory, `files` moved into `store/<name>/<version>/`, `bin` inside it and executable, and
/// `bin/kubectl-<name>` a symlink to it. Returns the `bin` directory to put on PATH.
fn krew_install(manifest: &Plugin, archive: &Path, krew_root: &Path) -> PathBuf {
    let pl = manifest
        .spec
        .platforms
        .iter()
        .find(|pl| pl.os_arch() == host())
        .unwrap_or_else(|| panic!("krew: plugin does not offer installation for this platform {:?}", host()));
    assert_eq!(sha256_of(archive), pl.sha256.clone().unwrap_or_default(), "krew: checksum does not match");
    let staging = krew_root.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let untar = run(Command::new("tar").arg("-xzf").arg(archive).arg("-C").arg(&staging));
    assert!(untar.status.success(), "krew: failed to unpack {}: {}", archive.display(), stderr(&untar));
    let install_dir = krew_root.join("store").join(&manifest.metadata.name).join(&manifest.spec.version);
    for op in &pl.files {
        assert!(!op.from.contains(['*', '?', '[']), "globs are not re-implemented here: {}", op.from);
        let from = staging.join(&op.from);
        assert!(from.exists(), "krew: `files` names {} but the archive has no such file", op.from);
        // `to: .` is the install directory itself (create_dir_all stumbles on a trailing `.`).
        let to = if op.to == "." { install_dir.clone() } else { install_dir.join(&op.to) };
        std::fs::create_dir_all(&to).unwrap();
        let dest = to.join(from.file_name().unwrap());
        std::fs::rename(&from, &dest)
            .unwrap_or_else(|e| panic!("krew: moving {} to {}: {e}", from.display(), dest.display()));
    }
    let bin = install_dir.join(&pl.bin);
    assert!(bin.starts_with(&install_dir) && !pl.bin.contains(".."), "krew: bin {} leaves the install dir", pl.bin);
    let mode = std::fs::metadata(&bin)
        .unwrap_or_else(|e| panic!("krew: bin {} is not in the archive: {e}", pl.bin))
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "bin {} is not executable (mode {mode:o})", pl.bin);
    let bin_dir = krew_root.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(&bin, bin_dir.join(format!("kubectl-{}", manifest.metadata.name.replace('-', "_"))))
        .unwrap();
    bin_dir
}

/// Installs the plugin of the manifest at MANIFEST from ARCHIVE into KREW_ROOT: with krew itself when
/// `KREW` names a krew binary, else as krew does. Returns the `bin` directory to put on PATH.
fn install(manifest_path: &Path, archive: &Path, krew_root: &Path) -> Result<PathBuf, String> {
    let manifest = parse(manifest_path);
    let Some(krew) = std::env::var_os("KREW").map(PathBuf::from) else {
        eprintln!("KREW is not set: krew's install checks re-implemented (no krew binary here)");
        return std::panic::catch_unwind(|| krew_install(&manifest, archive, krew_root)).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        });
    };
    // `kubectl krew` as users run it: kubectl finds kubectl-krew on PATH.
    let krew_dir = krew_root.join("krew-bin");
    std::fs::create_dir_all(&krew_dir).unwrap();
    let krew = std::fs::canonicalize(&krew).unwrap_or_else(|e| panic!("KREW={}: {e}", krew.display()));
    std::os::unix::fs::symlink(&krew, krew_dir.join("kubectl-krew")).unwrap();
    let path = format!("{}:{}", krew_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = run(Command::new("kubectl")
        .arg("krew")
        .arg("install")
        .arg(format!("--manifest={}", manifest_path.display()))
        .arg(format!("--archive={}", archive.display()))
        .env("KREW_ROOT", krew_root)
        .env("PATH", path));
    eprintln!("kubectl krew install ({}):\n{}", krew.display(), stderr(&out));
    if out.status.success() { Ok(krew_root.join("bin")) } else { Err(stderr(&out)) }
}

/// Runs the installed plugin through the real kubectl, with krew's bin first on PATH.
fn assert_kubectl_runs_it(bin_dir: &Path) {
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = run(Command::new("kubectl").args(["backup", "--version"]).env("PATH", path));
    assert!(out.status.success(), "kubectl backup --version: {}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("kubectl-backup {VERSION}"));
}

fn release(args: &[&str], out: &Path) -> Output {
    let mut cmd = Command::new(repo().join("scripts/release.sh"));
    cmd.args(args).arg("--out").arg(out).env_remove("SDKROOT");
    run(&mut cmd)
}

/// A stale manifest from an earlier run, which a run must replace or remove.
fn plant_stale_manifest(out: &Path) {
    std::fs::write(out.join("krew-manifest.yaml"), "stale: true\n").unwrap();
}

#[test]
fn the_krew_manifest_template_lists_every_platform_and_no_sha256() {
    let path = repo().join("krew-manifest.yaml");
    let template = parse(&path);
    assert_ours(&template);
    let listed: BTreeSet<(String, String)> = template.spec.platforms.iter().map(Platform::os_arch).collect();
    let every: BTreeSet<(String, String)> = ["linux", "darwin"]
        .iter()
        .flat_map(|os| ["amd64", "arm64"].iter().map(move |arch| (os.to_string(), arch.to_string())))
        .collect();
    assert_eq!(listed, every, "the template lists every platform a release may build");
    for pl in &template.spec.platforms {
        assert_eq!(
            pl.sha256,
            None,
            "{:?}: the template has a sha256; only a release's manifest has them",
            pl.os_arch()
        );
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.lines().any(|l| !l.trim_start().starts_with('#') && l.contains("sha256")),
        "krew-manifest.yaml has a sha256 line"
    );
    assert!(text.contains("TEMPLATE"), "its header says it is the template");
    let license = std::fs::read_to_string(repo().join("LICENSE")).expect("a LICENSE at the root (krew ships it)");
    assert!(license.contains("Apache License") && license.contains("Version 2.0"));
}

#[test]
fn the_release_manifest_lists_only_what_was_packed_and_installs_like_krew() {
    let out = tempfile::tempdir().expect("temp dir");
    plant_stale_manifest(out.path());
    let plugin = plugin_path();
    let run = release(&["--binary", plugin.to_str().unwrap()], out.path());
    let err = stderr(&run);
    assert!(run.status.success(), "release.sh failed:\n{err}");

    let (os, arch) = host();
    let manifest = assert_release(out.path());
    let listed: Vec<(String, String)> = manifest.spec.platforms.iter().map(Platform::os_arch).collect();
    assert_eq!(listed, vec![(os.clone(), arch.clone())], "only the packed platform is listed");
    // It says what it did not build, and why.
    assert!(err.contains("not built") && err.contains("--binary packages one binary"), "{err}");

    // The archive holds what `files` and `bin` name, at its root, and nothing else but README.md.
    let archive = out.path().join(archive_name(&os, &arch));
    let list = crate::run(Command::new("tar").arg("-tvzf").arg(&archive));
    let listing = String::from_utf8_lossy(&list.stdout).into_owned();
    let names: BTreeSet<&str> = listing.lines().filter_map(|l| l.split_whitespace().last()).collect();
    assert_eq!(names, BTreeSet::from(["LICENSE", "README.md", "kubectl-backup"]), "{listing}");
    assert!(listing.lines().all(|l| l.contains(" 0/0 ")), "entries are owned by root:\n{listing}");

    let krew_root = tempfile::tempdir().expect("KREW_ROOT");
    let bin_dir = install(&out.path().join("krew-manifest.yaml"), &archive, krew_root.path()).expect("krew install");
    assert_kubectl_runs_it(&bin_dir);

    // The same binary packs to the same bytes (reproducible archives).
    let again = tempfile::tempdir().expect("temp dir");
    let run2 = release(&["--binary", plugin.to_str().unwrap()], again.path());
    assert!(run2.status.success(), "{}", stderr(&run2));
    assert_eq!(sha256_of(&again.path().join(archive_name(&os, &arch))), sha256_of(&archive));
}

#[test]
fn krew_install_refuses_an_archive_whose_sha256_is_not_the_manifests() {
    let out = tempfile::tempdir().expect("temp dir");
    let plugin = plugin_path();
    let run = release(&["--binary", plugin.to_str().unwrap()], out.path());
    assert!(run.status.success(), "release.sh failed:\n{}", stderr(&run));
    assert_release(out.path());
    // Another archive under the listed name: the check that krew does must catch it.
    let (os, arch) = host();
    let archive = out.path().join(archive_name(&os, &arch));
    let mut bytes = std::fs::read(&archive).unwrap();
    bytes.extend_from_slice(b"\0");
    std::fs::write(&archive, bytes).unwrap();
    let krew_root = tempfile::tempdir().expect("KREW_ROOT");
    let refused = install(&out.path().join("krew-manifest.yaml"), &archive, krew_root.path());
    let message = refused.expect_err("a changed archive was installed");
    assert!(message.contains("checksum does not match"), "{message}");
    assert!(!krew_root.path().join("bin/kubectl-backup").exists(), "the refused plugin is linked");
}

#[test]
fn the_release_script_writes_no_manifest_when_nothing_was_built() {
    let out = tempfile::tempdir().expect("temp dir");
    plant_stale_manifest(out.path());
    // Without a macOS SDK darwin cannot be linked: asked for only that, nothing is built.
    let run = release(&["--platforms", "darwin_arm64"], out.path());
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("darwin_arm64: no macOS SDK"), "it says why darwin was not built:\n{err}");
    assert!(err.contains("nothing was built"), "{err}");
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "a failed release left {left:?} (the stale manifest must be gone too)");
}

#[test]
fn the_release_script_refuses_a_template_with_a_sha256() {
    let out = tempfile::tempdir().expect("temp dir");
    let template = std::fs::read_to_string(repo().join("krew-manifest.yaml")).unwrap();
    let with_placeholder = template.replacen(
        &format!("{}\n", archive_name("linux", "amd64")),
        &format!("{}\n      sha256: \"{}\"\n", archive_name("linux", "amd64"), "0".repeat(64)),
        1,
    );
    assert_ne!(with_placeholder, template, "the template has no linux_amd64 uri line to add a sha256 to");
    let bad = out.path().join("template.yaml");
    std::fs::write(&bad, with_placeholder).unwrap();
    let plugin = plugin_path();
    let dist = out.path().join("dist");
    let run = release(&["--template", bad.to_str().unwrap(), "--binary", plugin.to_str().unwrap()], &dist);
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("has a sha256 field"), "{err}");
    assert!(!dist.join("krew-manifest.yaml").exists(), "a manifest was written from a template with a sha256");
}

#[test]
fn the_release_script_refuses_a_binary_of_another_version() {
    let out = tempfile::tempdir().expect("temp dir");
    plant_stale_manifest(out.path());
    let run = release(&["--binary", "/bin/true"], out.path());
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("expected 'kubectl-backup {VERSION}'")), "{err}");
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "a refused binary left {left:?}");
}

/// The image config of a one-image docker-archive.
fn docker_archive_config(tar: &Path) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let x = run(Command::new("tar").arg("-xf").arg(tar).arg("-C").arg(dir.path()));
    assert!(x.status.success(), "{}", stderr(&x));
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    let config = manifest[0]["Config"].as_str().expect("a Config in manifest.json");
    serde_json::from_slice(&std::fs::read(dir.path().join(config)).unwrap()).unwrap()
}

fn assert_labels(config: &Value, what: &str) {
    let labels = &config["config"]["Labels"];
    for key in IMAGE_LABELS {
        let v = labels[key].as_str().unwrap_or_default();
        assert!(!v.is_empty(), "{what}: label {key} is missing: {labels}");
    }
    assert_eq!(labels["org.opencontainers.image.version"], VERSION, "{what}");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0", "{what}");
    assert_eq!(labels["org.opencontainers.image.title"], "backup-webhook", "{what}");
    let revision = labels["org.opencontainers.image.revision"].as_str().unwrap_or_default();
    assert!(revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()), "{what}: revision {revision}");
    let created = labels["org.opencontainers.image.created"].as_str().unwrap_or_default();
    assert!(created.parse::<jiff::Timestamp>().is_ok(), "{what}: created {created:?} is no RFC 3339 time");
}

fn skopeo(args: &[&str]) -> Value {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("skopeo ({e}): install it with tests/env/install.sh release"));
    assert!(out.status.success(), "skopeo {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("skopeo {args:?} printed no JSON: {e}"))
}

/// The platforms (os/arch) an OCI image archive's index lists, as skopeo reads it; each one's
/// config has the labels.
fn assert_index(oci_tar: &Path) -> BTreeSet<String> {
    let reference = format!("oci-archive:{}", oci_tar.display());
    let index = skopeo(&["inspect", "--raw", &reference]);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index}");
    let platforms: BTreeSet<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            format!("{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap())
        })
        .collect();
    for p in &platforms {
        let arch = p.trim_start_matches("linux/");
        let config = skopeo(&["--override-os", "linux", "--override-arch", arch, "inspect", "--config", &reference]);
        assert_eq!(config["architecture"], arch, "{p}");
        if config["config"]["Entrypoint"][0] == "/usr/local/bin/backup-webhook" {
            assert_labels(&config, p);
        }
    }
    platforms
}

#[test]
fn the_webhook_image_has_the_oci_labels_and_joins_a_multi_arch_index() {
    let dir = tempfile::tempdir().expect("temp dir");
    let name = "localhost/kubectl-backup/backup-webhook:krew-test";
    let amd64 = dir.path().join("amd64.tar");
    let build = run(Command::new(repo().join("scripts/build-image.sh"))
        .arg(&amd64)
        .arg(bin_dir().join("backup-webhook"))
        .env("IMAGE", name));
    assert!(build.status.success(), "build-image.sh: {}", stderr(&build));
    let config = docker_archive_config(&amd64);
    assert_eq!((config["os"].as_str(), config["architecture"].as_str()), (Some("linux"), Some("amd64")));
    assert_labels(&config, "the debug image");

    // An arm64 image of the same name (a stand-in rootfs: a real one needs the release's cross build).
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/stand-in"), "arm64\n").unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"Entrypoint": ["/stand-in"]}"#).unwrap();
    let arm64 = dir.path().join("arm64.tar");
    let packed = run(Command::new(repo().join("scripts/docker-archive.sh"))
        .arg(&rootfs)
        .arg(dir.path().join("config.json"))
        .arg(name)
        .arg(&arm64)
        .env("ARCH", "arm64"));
    assert!(packed.status.success(), "docker-archive.sh: {}", stderr(&packed));

    let oci = dir.path().join("oci.tar");
    let joined = run(Command::new(repo().join("scripts/oci-index.sh")).arg(&oci).arg(&arm64).arg(&amd64));
    assert!(joined.status.success(), "oci-index.sh: {}", stderr(&joined));
    assert_eq!(assert_index(&oci), BTreeSet::from(["linux/amd64".to_string(), "linux/arm64".to_string()]));

    // Two images of one platform make no index.
    let twice =
        run(Command::new(repo().join("scripts/oci-index.sh")).arg(dir.path().join("x.tar")).arg(&amd64).arg(&amd64));
    assert_eq!(twice.status.code(), Some(1));
    assert!(stderr(&twice).contains("like another input"), "{}", stderr(&twice));
    assert!(!dir.path().join("x.tar").exists());
}

/// A full release's directory (`KUBECTL_BACKUP_RELEASE_DIR`, from `scripts/release.sh --out DIR`):
/// static linux binaries for amd64 and arm64, each archive's real sha256 in the manifest, the
/// plugin installed like krew installs it and run by kubectl, and the image index of both platforms.
#[test]
fn a_full_release_has_static_binaries_every_sha256_and_a_two_platform_image() {
    let Some(dir) = std::env::var_os("KUBECTL_BACKUP_RELEASE_DIR").map(PathBuf::from) else {
        eprintln!("KUBECTL_BACKUP_RELEASE_DIR is not set: no full release to check (scripts/release.sh --out DIR)");
        return;
    };
    let manifest = assert_release(&dir);
    let listed: BTreeSet<(String, String)> = manifest.spec.platforms.iter().map(Platform::os_arch).collect();
    for arch in ["amd64", "arm64"] {
        let p = ("linux".to_string(), arch.to_string());
        assert!(listed.contains(&p), "the release has no linux/{arch}");
        let unpacked = tempfile::tempdir().unwrap();
        let x = run(Command::new("tar")
            .arg("-xzf")
            .arg(dir.join(archive_name("linux", arch)))
            .arg("-C")
            .arg(unpacked.path()));
        assert!(x.status.success());
        let elf = run(Command::new("readelf").arg("-lW").arg(unpacked.path().join("kubectl-backup")));
        let headers = String::from_utf8_lossy(&elf.stdout);
        assert!(
            elf.status.success() && !headers.contains("program interpreter"),
            "linux/{arch} is not static:\n{headers}"
        );
    }
    let krew_root = tempfile::tempdir().expect("KREW_ROOT");
    let (os, arch) = host();
    let bin_dir = install(&dir.join("krew-manifest.yaml"), &dir.join(archive_name(&os, &arch)), krew_root.path())
        .expect("krew install");
    assert_kubectl_runs_it(&bin_dir);
    let oci = dir.join(format!("backup-webhook_{VERSION}_oci.tar"));
    assert_eq!(assert_index(&oci), BTreeSet::from(["linux/amd64".to_string(), "linux/arm64".to_string()]));
}
