//! The `Restore` document a restore returns: counts, per-object results, phase.

use jiff::Timestamp;

use crate::model::{ItemAction, Phase, Restore, RestoreItem, RestoreProgress, RestoreSpec};

pub struct Report {
    restore: Restore,
}

impl Report {
    pub fn new(name: &str, spec: RestoreSpec, start: Timestamp) -> Self {
        let mut restore = Restore::new(name, spec);
        restore.metadata.creation_timestamp = Some(start);
        restore.status.timing.start_timestamp = Some(start);
        Report { restore }
    }

    pub fn add(&mut self, item: RestoreItem) {
        let s = &mut self.restore.status;
        s.counts.add(item.action);
        if matches!(
            item.action,
            ItemAction::Created | ItemAction::Updated | ItemAction::Unchanged | ItemAction::SkippedExists
        ) {
            s.progress.items_restored += 1;
        }
        s.items.push(item);
    }

    /// Objects reported so far.
    pub fn counted(&self) -> u64 {
        self.restore.status.items.len() as u64
    }

    pub fn set_total(&mut self, total: u64) {
        self.restore.status.progress = RestoreProgress { total_items: total, ..self.restore.status.progress.clone() };
    }

    pub fn warn(&mut self, w: String) {
        self.restore.status.warnings.push(w);
    }

    /// Sets the phase: Completed when nothing failed, Failed when every attempted object failed,
    /// PartiallyFailed otherwise. Failures are listed first.
    pub fn finish(mut self) -> Restore {
        let s = &mut self.restore.status;
        let attempted = s.items.iter().filter(|i| i.action != ItemAction::SkippedPolicy).count() as u64;
        s.phase = match s.counts.failed {
            0 => Phase::Completed,
            f if f == attempted => Phase::Failed,
            _ => Phase::PartiallyFailed,
        };
        s.errors = s
            .items
            .iter()
            .filter(|i| i.action == ItemAction::Failed)
            .map(|i| {
                let ns = i.namespace.as_deref().map(|n| format!("{n}/")).unwrap_or_default();
                format!("{} {ns}{}: {}", i.resource, i.name, i.reason.as_deref().unwrap_or("failed"))
            })
            .collect();
        s.items.sort_by(|a, b| {
            (a.action != ItemAction::Failed, &a.resource, &a.namespace, &a.name).cmp(&(
                b.action != ItemAction::Failed,
                &b.resource,
                &b.namespace,
                &b.name,
            ))
        });
        s.timing.completion_timestamp = Some(Timestamp::now());
        self.restore
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, action: ItemAction) -> RestoreItem {
        RestoreItem {
            resource: "configmaps".into(),
            namespace: Some("ns".into()),
            name: name.into(),
            action,
            reason: Some("why".into()),
            diff: None,
        }
    }

    #[test]
    fn phase_and_counts() {
        let mut r = Report::new("r", RestoreSpec::default(), Timestamp::now());
        r.add(item("a", ItemAction::Created));
        r.add(item("b", ItemAction::Failed));
        r.add(item("c", ItemAction::SkippedPolicy));
        let done = r.finish();
        assert_eq!(done.status.phase, Phase::PartiallyFailed);
        assert_eq!(
            (done.status.counts.created, done.status.counts.failed, done.status.counts.skipped_policy),
            (1, 1, 1)
        );
        assert_eq!(done.status.items[0].name, "b", "failures first");
        assert_eq!(done.status.errors, vec!["configmaps ns/b: why".to_string()]);
        assert_eq!(done.status.progress.items_restored, 1);

        let mut r = Report::new("r", RestoreSpec::default(), Timestamp::now());
        r.add(item("b", ItemAction::Failed));
        r.add(item("c", ItemAction::SkippedPolicy));
        assert_eq!(r.finish().status.phase, Phase::Failed);
        let r = Report::new("r", RestoreSpec::default(), Timestamp::now());
        assert_eq!(r.finish().status.phase, Phase::Completed);
    }
}
