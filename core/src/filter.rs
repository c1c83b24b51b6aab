//! Which namespaces and resources a backup or a restore includes. Backup and restore share it, so a
//! filter means the same thing in both.

use crate::input::{NamePattern, parse_patterns};
use crate::model::{ClusterResources, Filters};
use crate::selector::LabelSelector;
use crate::{EPHEMERAL_ANNOTATION, EPHEMERAL_LABEL, Result};

/// The names one resource type answers to: `configmaps`, `configmap`, `cm`, `ConfigMap`,
/// `deployments.apps`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceNames<'a> {
    pub plural: &'a str,
    pub group: &'a str,
    pub kind: &'a str,
    pub singular: &'a str,
    pub short_names: &'a [String],
}

impl ResourceNames<'_> {
    /// `<plural>` for the core group, `<plural>.<group>` otherwise.
    pub fn key(&self) -> String {
        resource_key(self.plural, self.group)
    }
}

/// `<plural>` for the core group, `<plural>.<group>` otherwise. Used in archive paths and counts.
pub fn resource_key(plural: &str, group: &str) -> String {
    if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") }
}

/// A `--include-resources` / `--exclude-resources` entry.
#[derive(Clone, Debug)]
pub struct ResourcePattern {
    text: String,
    glob: Option<NamePattern>,
}

impl ResourcePattern {
    pub fn parse(what: &'static str, text: &str) -> Result<Self> {
        let text = text.trim().to_ascii_lowercase();
        let glob = NamePattern::parse(what, &text)?;
        Ok(ResourcePattern { glob: (!glob.is_literal()).then_some(glob), text })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, r: &ResourceNames<'_>) -> bool {
        let key = r.key();
        if let Some(glob) = &self.glob {
            return glob.matches(&key) || glob.matches(r.plural);
        }
        let t = self.text.as_str();
        // `deployments.apps` names one group; `deployments` any group.
        if let Some((name, group)) = t.split_once('.') {
            if group == r.group {
                return name == r.plural || name == r.singular || name == r.kind.to_ascii_lowercase();
            }
            return false;
        }
        t == r.plural
            || t == r.singular
            || t == r.kind.to_ascii_lowercase()
            || r.short_names.iter().any(|s| s.eq_ignore_ascii_case(t))
    }
}

/// Parsed filters: namespace globs, resource patterns, label selector, cluster-scoped policy.
#[derive(Clone, Debug)]
pub struct Selection {
    pub include_namespaces: Vec<NamePattern>,
    pub exclude_namespaces: Vec<NamePattern>,
    pub include_resources: Vec<ResourcePattern>,
    pub exclude_resources: Vec<ResourcePattern>,
    pub selector: Option<LabelSelector>,
    pub cluster_resources: ClusterResources,
}

impl Selection {
    pub fn new(filters: &Filters) -> Result<Self> {
        let include_namespaces: Vec<NamePattern> =
            parse_patterns("--include-namespaces", &filters.included_namespaces)?;
        let resources = |what: &'static str, items: &[String]| -> Result<Vec<ResourcePattern>> {
            items
                .iter()
                .flat_map(|s| s.split(','))
                .filter(|s| !s.trim().is_empty())
                .map(|s| ResourcePattern::parse(what, s))
                .collect()
        };
        Ok(Selection {
            include_namespaces: include_namespaces.into_iter().filter(|p| p.as_str() != "*").collect(),
            exclude_namespaces: parse_patterns("--exclude-namespaces", &filters.excluded_namespaces)?,
            include_resources: resources("--include-resources", &filters.included_resources)?,
            exclude_resources: resources("--exclude-resources", &filters.excluded_resources)?,
            selector: filters.label_selector.as_deref().map(LabelSelector::parse).transpose()?,
            cluster_resources: filters.include_cluster_resources,
        })
    }

    /// No namespace filter narrows the set (exclusions may still apply).
    pub fn all_namespaces(&self) -> bool {
        self.include_namespaces.is_empty()
    }

    /// True when `namespace` is named literally by `--include-namespaces` / `-n`.
    pub fn names_namespace_explicitly(&self, namespace: &str) -> bool {
        self.include_namespaces.iter().any(|p| p.is_literal() && p.as_str() == namespace)
    }

    /// Literal names when every include is literal (no glob): these need no namespace LIST.
    pub fn literal_namespaces(&self) -> Option<Vec<String>> {
        if self.include_namespaces.is_empty() || !self.include_namespaces.iter().all(NamePattern::is_literal) {
            return None;
        }
        let mut names: Vec<String> = self.include_namespaces.iter().map(|p| p.as_str().to_string()).collect();
        names.sort();
        names.dedup();
        names.retain(|n| !self.exclude_namespaces.iter().any(|p| p.matches(n)));
        Some(names)
    }

    /// Whether objects of `namespace` are included. `ephemeral` is the namespace's
    /// `kubectl-backup.dev/ephemeral=true` label: such namespaces count only when named explicitly.
    pub fn includes_namespace(&self, namespace: &str, ephemeral: bool) -> bool {
        if self.exclude_namespaces.iter().any(|p| p.matches(namespace)) {
            return false;
        }
        if ephemeral && !self.names_namespace_explicitly(namespace) {
            return false;
        }
        self.include_namespaces.is_empty() || self.include_namespaces.iter().any(|p| p.matches(namespace))
    }

    /// Whether a resource type passes `--include-resources` / `--exclude-resources`.
    pub fn includes_resource(&self, r: &ResourceNames<'_>) -> bool {
        if self.exclude_resources.iter().any(|p| p.matches(r)) {
            return false;
        }
        self.include_resources.is_empty() || self.include_resources.iter().any(|p| p.matches(r))
    }

    /// True when `--exclude-resources` names this resource (used for resources included by default,
    /// like Namespace objects, that only an explicit exclusion drops).
    pub fn excludes_resource_explicitly(&self, r: &ResourceNames<'_>) -> bool {
        self.exclude_resources.iter().any(|p| p.matches(r))
    }

    /// Whether cluster-scoped objects are included wholesale.
    pub fn all_cluster_resources(&self) -> bool {
        match self.cluster_resources {
            ClusterResources::Always => true,
            ClusterResources::Never => false,
            ClusterResources::Auto => self.all_namespaces(),
        }
    }
}

/// True when a Namespace object's labels mark it ephemeral.
pub fn is_ephemeral(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels.get(EPHEMERAL_LABEL).is_some_and(|v| v == "true")
}

/// True when a Namespace is ephemeral by its label, or by the annotation that asks for it (set at
/// creation, e.g. by `kubectl backup workspace new --ephemeral`), so backups skip it whether or not
/// the webhook ever labelled it.
pub fn is_ephemeral_namespace(
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
) -> bool {
    is_ephemeral(labels) || annotations.get(EPHEMERAL_ANNOTATION).is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<'a>(plural: &'a str, group: &'a str, kind: &'a str, short: &'a [String]) -> ResourceNames<'a> {
        ResourceNames { plural, group, kind, singular: "", short_names: short }
    }

    #[test]
    fn resource_patterns_match_like_kubectl() {
        let short = vec!["cm".to_string()];
        let cm = names("configmaps", "", "ConfigMap", &short);
        let deploy = names("deployments", "apps", "Deployment", &[]);
        let widget = names("widgets", "example.org", "Widget", &[]);
        let m = |p: &str, r: &ResourceNames| ResourcePattern::parse("x", p).unwrap().matches(r);
        assert!(m("configmaps", &cm) && m("cm", &cm) && m("ConfigMap", &cm));
        assert!(m("deployments.apps", &deploy) && m("deployments", &deploy) && m("deployment", &deploy));
        assert!(!m("deployments.extensions", &deploy));
        assert!(m("widgets.example.org", &widget) && !m("widgets.example.com", &widget));
        assert!(m("*.example.org", &widget) && !m("*.example.org", &cm));
    }

    #[test]
    fn a_namespace_is_ephemeral_by_label_or_by_annotation() {
        let map = |k: &str, v: &str| std::collections::BTreeMap::from([(k.to_string(), v.to_string())]);
        let none = std::collections::BTreeMap::new();
        assert!(is_ephemeral_namespace(&map(EPHEMERAL_LABEL, "true"), &none));
        assert!(is_ephemeral_namespace(&none, &map(EPHEMERAL_ANNOTATION, "true")));
        assert!(!is_ephemeral_namespace(&none, &map(EPHEMERAL_ANNOTATION, "false")));
        assert!(!is_ephemeral_namespace(&map("team", "true"), &none));
    }

    #[test]
    fn namespaces_include_exclude_and_ephemeral() {
        let s = Selection::new(&Filters {
            included_namespaces: vec!["team-*,pr-7".into()],
            excluded_namespaces: vec!["team-secret".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(s.includes_namespace("team-a", false));
        assert!(!s.includes_namespace("team-secret", false));
        assert!(!s.includes_namespace("other", false));
        // ephemeral: only when named literally
        assert!(!s.includes_namespace("team-b", true));
        assert!(s.includes_namespace("pr-7", true));
        assert_eq!(s.literal_namespaces(), None);

        let all =
            Selection::new(&Filters { excluded_namespaces: vec!["kube-*".into()], ..Default::default() }).unwrap();
        assert!(all.all_namespaces() && all.all_cluster_resources());
        assert!(all.includes_namespace("default", false) && !all.includes_namespace("kube-system", false));
        assert!(!all.includes_namespace("pr-1", true));

        let lit = Selection::new(&Filters { included_namespaces: vec!["b,a,b".into()], ..Default::default() }).unwrap();
        assert_eq!(lit.literal_namespaces(), Some(vec!["a".to_string(), "b".to_string()]));
        assert!(!lit.all_cluster_resources());
    }
}
