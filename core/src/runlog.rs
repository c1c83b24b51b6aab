//! The log of one run (a backup or a restore), stored next to what it describes as `log.txt`:
//! `backups/<name>/log.txt` once the backup is committed, `restores/<name>/log.txt` beside the
//! restore's record. `kubectl backup logs` prints it. It holds what the run did step by step and
//! its outcome: resource names, counts and (redacted) messages, never object data.

use std::fmt::Display;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use jiff::Timestamp;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::progress::{Event, Observer};
use crate::store::Store;
use crate::{Error, Result};

pub const LOG_FILE: &str = "log.txt";
/// Lines kept; later ones are counted, not kept (a 100k-object run lists thousands of resources).
const MAX_LINES: usize = 20_000;

/// Collects a run's log while passing every progress event on to `inner`.
pub struct RunLog {
    inner: Arc<dyn Observer>,
    lines: Mutex<Lines>,
}

#[derive(Default)]
struct Lines {
    kept: Vec<String>,
    dropped: u64,
    /// Resources listed with no objects since the last line (namespace, resource): one line for
    /// all of them per namespace.
    empty: Vec<(Option<String>, String)>,
}

impl Lines {
    fn push(&mut self, line: String) {
        if self.kept.len() < MAX_LINES {
            self.kept.push(line);
        } else {
            self.dropped += 1;
        }
    }

    fn flush_empty(&mut self) {
        let mut empty = std::mem::take(&mut self.empty);
        // One line per namespace (and one for cluster-wide resources), in the order first listed.
        while let Some((ns, _)) = empty.first().cloned() {
            let (these, rest): (Vec<_>, Vec<_>) = empty.into_iter().partition(|(n, _)| *n == ns);
            let names: Vec<String> = these.into_iter().map(|(_, r)| r).collect();
            let line = match ns {
                Some(ns) => stamp(format_args!("listed in namespace {ns}, no objects: {}", names.join(", "))),
                None => stamp(format_args!("listed, no objects: {}", names.join(", "))),
            };
            self.push(line);
            empty = rest;
        }
    }
}

fn stamp(text: impl Display) -> String {
    let line = format!("{} {}", Timestamp::now().round(jiff::Unit::Millisecond).unwrap_or(Timestamp::now()), text);
    crate::error::redact(&line)
}

impl RunLog {
    pub fn new(inner: Arc<dyn Observer>) -> Arc<RunLog> {
        Arc::new(RunLog { inner, lines: Mutex::default() })
    }

    /// Adds a line, stamped with the time, secrets redacted.
    pub fn line(&self, text: impl Display) {
        let line = stamp(text);
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.flush_empty();
        lines.push(line);
    }

    /// Notes a resource listed with no objects (folded into one line with the others).
    fn empty(&self, namespace: Option<String>, resource: String) {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).empty.push((namespace, resource));
    }

    /// The whole log.
    pub fn text(&self) -> String {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.flush_empty();
        let mut text = lines.kept.join("\n");
        if lines.dropped > 0 {
            text.push_str(&format!("\n... {} more lines not kept", lines.dropped));
        }
        text.push('\n');
        text
    }

    /// Stores the log as `<dir>/log.txt`.
    pub async fn save(&self, store: &Store, dir: &Path) -> Result<()> {
        let path = dir.clone().join(LOG_FILE);
        store.objects().put(&path, Bytes::from(self.text()).into()).await.map_err(|e| store.error(e))?;
        Ok(())
    }
}

impl Observer for RunLog {
    fn event(&self, event: Event) {
        match &event {
            Event::Planned { resources } => self.line(format_args!("discovered {resources} resource types to list")),
            Event::Listed { resource, namespace, items: 0 } => self.empty(namespace.clone(), resource.clone()),
            Event::Listed { resource, namespace: Some(ns), items } => {
                self.line(format_args!("listed {resource} in namespace {ns}: {items}"))
            }
            Event::Listed { resource, namespace: None, items } => self.line(format_args!("listed {resource}: {items}")),
            Event::Uploading { bytes } => self.line(format_args!("uploading the archive ({bytes} bytes)")),
            Event::Verified { items } => self.line(format_args!("verified {items} objects against their SHA-256")),
            Event::RestorePlanned { total } => self.line(format_args!("restoring {total} objects")),
            Event::Waiting { what } => self.line(format_args!("waiting for {what}")),
            Event::Continuing { backup, deltas } => self.line(format_args!(
                "storing the contents as changes since backup {backup} (which has {deltas} sets of changes)"
            )),
            Event::Archived { .. } | Event::Restored { .. } | Event::VolumeBytes { .. } => {}
        }
        self.inner.event(event);
    }
}

/// The log stored in `dir`, if any.
pub async fn read(store: &Store, dir: &Path) -> Result<Option<String>> {
    let path = dir.clone().join(LOG_FILE);
    match store.objects().get(&path).await {
        Ok(r) => {
            let bytes = r.bytes().await.map_err(|e| store.error(e))?;
            String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|_| Error::Other(format!("{path} in {} is not text", store.url())))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store.error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Quiet;

    #[test]
    fn events_become_lines_and_secrets_do_not() {
        let log = RunLog::new(Arc::new(Quiet));
        log.event(Event::Listed { resource: "configmaps".into(), namespace: Some("shop".into()), items: 3 });
        log.event(Event::Archived { items: 3, bytes: 10 });
        log.line("failed: https://acct.blob.core.windows.net/c?sig=SECRET");
        let text = log.text();
        assert!(text.contains("listed configmaps in namespace shop: 3"), "{text}");
        assert!(!text.contains("SECRET"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn resources_with_no_objects_share_one_line() {
        let log = RunLog::new(Arc::new(Quiet));
        log.event(Event::Listed { resource: "pods".into(), namespace: Some("shop".into()), items: 0 });
        log.event(Event::Listed { resource: "nodes".into(), namespace: None, items: 0 });
        log.event(Event::Listed { resource: "services".into(), namespace: Some("shop".into()), items: 0 });
        log.event(Event::Listed { resource: "secrets".into(), namespace: Some("shop".into()), items: 2 });
        log.event(Event::Listed { resource: "jobs.batch".into(), namespace: Some("shop".into()), items: 0 });
        let text = log.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].ends_with(" listed in namespace shop, no objects: pods, services"), "{text}");
        assert!(lines[1].ends_with(" listed, no objects: nodes"), "{text}");
        assert!(lines[2].ends_with(" listed secrets in namespace shop: 2"), "{text}");
        assert!(lines[3].ends_with(" listed in namespace shop, no objects: jobs.batch"), "{text}");
    }
}
