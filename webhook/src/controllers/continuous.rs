//! Continuous backup: every change to the state of a non-ephemeral workspace is backed up. One
//! watch per resource type (cluster-wide) notes which namespaces changed; when a namespace has been
//! quiet for `--debounce`, it is backed up as `<namespace>-<YYYYMMDDhhmmss>` (incrementally by
//! default: only what changed is stored), and its continuous backups are pruned to a time series
//! (`--retention`: every change for 24 h, hourly for 7 days, daily for 30 days), at most
//! `--keep-workspace-backups` of them when that is set.
//!
//! Status-only updates are not changes (a fingerprint of each object without status and
//! server-owned metadata is compared), and objects controllers recreate on restore (Pods,
//! ReplicaSets, Endpoints, ...) are not watched.
//!
//! The watches also note which objects changed (status-only updates too): an incremental backup of
//! a workspace continuing the one this process took before lists none of the watched types, but
//! reads only the objects seen to change since that one began ([`collect::Watched`]): of each type
//! whose watch had listed before that backup began and has not restarted since (a restart may have
//! missed changes), for `--continuous-list-every` after the last backup that listed every type.
//! Every other type is listed as in any backup.
//!
//! The bodies of the changed objects are held until the backup that takes them begins, at most
//! `--continuous-changes-max-mib` for all workspaces: past it, the workspace holding the most is
//! let go of (its changes dropped), and its next backup lists every type.
//!
//! After a start, once every watch has listed, each workspace with a continuous backup is compared
//! with the last one, type by type (every object there at the `resourceVersion` recorded, and no
//! other): the next backup continues it for the types alike, and a workspace in which something
//! changed while no controller watched it is backed up at once, listing the types that differ.
//! A workspace that holds objects and has no backup yet (created while no controller ran, or there
//! before the first start) is backed up then too. At most `--continuous-parallel` backups run at
//! once; the others wait, the one marked first first.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::core::TypeMeta;
use kube::runtime::WatchStreamExt;

use crate::admission::{Decision, decide};
use crate::metrics::SourceLabel;
use kube::runtime::watcher::{self, Event};
use kubectl_backup_core::collect::{self, Change, Resource, Watched};
use kubectl_backup_core::contents::Recorded;
use kubectl_backup_core::input::timestamped_name;
use kubectl_backup_core::model::{BackupSpec, Filters};
use kubectl_backup_core::{EPHEMERAL_LABEL, backup, catalog};

use super::{Context, ObjectRun};

/// How long a started controller waits for every watch to list before it compares the workspaces
/// with their last backups without the types still unlisted ([`Continuous::resume`]).
const RESUME_WAIT: Duration = Duration::from_secs(120);
/// How long past `--continuous-timeout` a backup with volume data may take to end on its own
/// (its mover ended at the deadline, the post hooks run, the backup committed PartiallyFailed)
/// before it is dropped.
const VOLUME_GRACE: Duration = Duration::from_secs(300);

/// Marks continuous backups (in `spec.schedule`), so pruning never touches other backups.
pub const CONTINUOUS: &str = "continuous";

/// Resource types whose changes are controllers at work, not user state.
const IGNORED: &[&str] = &[
    "pods",
    "replicasets.apps",
    "controllerrevisions.apps",
    "endpoints",
    "endpointslices.discovery.k8s.io",
    "leases.coordination.k8s.io",
    "events",
    "events.events.k8s.io",
];

pub struct Continuous {
    pub ctx: Arc<Context>,
    pub debounce: Duration,
    /// At most this many per workspace (0: no limit).
    pub keep: usize,
    pub retention: kubectl_backup_core::retention::Retention,
    pub incremental: bool,
    /// Include the workspace's volume data (`--continuous-include-volumes`).
    pub include_volumes: bool,
    /// How long the watches' changes stand in for LISTs after a backup that listed every type.
    pub list_every: Duration,
    /// The most bytes of changed objects' bodies held for the next backups ([`State::held`]).
    pub max_held: usize,
    /// At most this many backups at once (`--continuous-parallel`).
    pub parallel: usize,
    /// A backup running longer is given up, and counts as failed (`--continuous-timeout`; zero:
    /// no limit; none for backups with volume data).
    pub timeout: Duration,
    /// How a failed backup is taken again when its workspace does not change meanwhile.
    pub retry: Retry,
}

/// A continuous backup that failed (not taken, or taken in part) is taken again `after` it
/// failed, then after twice as long for each failure in a row, at most `times` times in a row
/// (`--continuous-retries`, `--continuous-retry-after`). A change in the workspace still has its
/// backup taken `--debounce` after it, as always, and starts the count anew ([`State::changed`]).
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub times: u32,
    pub after: Duration,
}

impl Retry {
    /// The wait before the retry that follows the `failures`th failure in a row (1 for the
    /// first), if one is left: doubled each time, at most [`MAX_RETRY_WAIT`].
    fn wait(&self, failures: u32) -> Option<Duration> {
        let doubled = self.after.saturating_mul(1 << failures.saturating_sub(1).min(20));
        (failures <= self.times).then(|| doubled.min(MAX_RETRY_WAIT))
    }
}

/// The longest wait between two retries of a failed continuous backup.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(3600);

/// How a continuous backup of a namespace ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// None was taken: the namespace is not a workspace whose state is backed up (any more).
    Skipped,
    /// Taken, complete: its name, and whether it left out LISTs for the watches' changes.
    Completed(String, bool),
    /// Not taken, taken in part (PartiallyFailed), or given up for taking too long.
    Failed,
}

/// What follows a continuous backup's end ([`State::end`]).
#[derive(Debug, PartialEq)]
enum Next {
    /// Nothing until the workspace's next change.
    Nothing,
    /// It failed for the `n`th time in a row and is taken again after the wait.
    Retry(u32, Duration),
    /// It failed for the `n`th time in a row and no retry is left: its next change takes it.
    GaveUp(u32),
    /// It failed, and the workspace changed while it ran: that change's backup comes.
    Changed,
}

#[derive(Default)]
struct State {
    /// Namespace -> its changes not yet backed up ([`State::mark`]).
    dirty: HashMap<String, Mark>,
    /// Namespaces being backed up now.
    running: HashSet<String>,
    /// Namespace -> the objects the watches saw change there since its last backup began (kept
    /// only for namespaces with such a backup, or one running).
    changes: HashMap<String, Watched>,
    /// Resource key -> restarts of its watch so far: a type's changes count only if its watch has
    /// not restarted since the backup they continue began (a restart may have missed changes).
    gaps: HashMap<String, u64>,
    /// The resource types watched and the apiVersion of each, and those whose watch has listed once.
    versions: HashMap<String, String>,
    ready: HashSet<String>,
    /// Every watch has listed once since the start (logged once: a watch that lists again after a
    /// gap, "too old resource version" say, makes them all ready again, and that is no start).
    all_listed: bool,
    /// Namespace -> its last backup by this process that may be continued with the changes.
    bases: HashMap<String, Base>,
    /// The bytes of the bodies all `changes` hold (kept as they change, not summed on each one): at
    /// most `max_held`.
    held: usize,
    max_held: usize,
    /// Namespaces being backed up whose changes since were dropped for `max_held`: the backup
    /// after the running one lists every type.
    dropped: HashSet<String>,
    /// Resource key -> namespace -> name -> each object as its watch last saw it (what a workspace
    /// is compared with its last backup by after a start, [`State::resume`]).
    objects: HashMap<String, HashMap<String, HashMap<String, Seen>>>,
    /// Resource key -> its [`State::gaps`] when its watch last finished listing: a type whose watch
    /// failed since may hold stale `objects` (an event lost without a new LIST).
    listed_gaps: HashMap<String, u64>,
    /// Namespace -> how many of its continuous backups in a row failed ([`Retry`]).
    failures: HashMap<String, u32>,
    /// Namespace -> when its last complete backup that listed every type began or, before one
    /// did, its first backup by this process (or the comparison after a start): `--continuous-list-every`
    /// counts from it. Kept through failed backups, which leave no base, so that a workspace
    /// whose backups fail now and then still owes a listing of every type in time.
    listed: HashMap<String, Instant>,
}

/// A namespace marked for a backup: when it was first marked since its last backup began (its
/// place in the queue for a `--continuous-parallel` slot) and when it last changed (its backup is
/// due `--debounce` after that), or, for a retry of a failed backup, the time it is due.
#[derive(Clone, Copy, Debug)]
struct Mark {
    first: Instant,
    last: Instant,
    retry_at: Option<Instant>,
}

/// An object as its watch last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    /// [`fingerprint`]: a different one is a change worth a backup.
    fingerprint: u64,
    /// Its `resourceVersion` as an etcd revision ([`kubectl_backup_core::contents::version_number`]).
    version: Option<u64>,
}

impl Seen {
    fn of(obj: &DynamicObject) -> Seen {
        let version = kubectl_backup_core::contents::version_number(obj.metadata.resource_version.as_deref());
        Seen { fingerprint: fingerprint(obj), version }
    }
}

/// A backup the watches' changes count from.
struct Base {
    name: String,
    /// The types whose watch had listed when it began, and their [`State::gaps`] then.
    since: HashMap<String, u64>,
}

/// A backup of a namespace begun: what it continues, as [`State::begin`] found it.
struct Begun {
    watched: Option<Watched>,
    /// The types whose watch had listed, and their [`State::gaps`]: what a backup continuing this
    /// one may take from their changes.
    since: HashMap<String, u64>,
    at: Instant,
}

impl State {
    /// Notes the last change of `resource` `ns/name` for the backup that continues the
    /// namespace's last; `change` is made only for a namespace with such a backup, or one running.
    fn note(&mut self, resource: &str, ns: &str, name: &str, change: impl FnOnce() -> Option<Change>) {
        if (self.bases.contains_key(ns) || self.running.contains(ns))
            && let Some(change) = change()
        {
            let w = self.changes.entry(ns.to_string()).or_default();
            let before = w.held_bytes();
            w.note(resource, ns, name, change);
            self.held = self.held - before + w.held_bytes();
            while self.held > self.max_held {
                let most = self.changes.iter().max_by_key(|(_, w)| w.held_bytes());
                let Some((largest, bytes)) = most.map(|(ns, w)| (ns.clone(), w.held_bytes())) else { break };
                tracing::warn!(namespace = %largest, bytes, max = self.max_held, "the changed objects held for the next continuous backups passed --continuous-changes-max-mib; this workspace's next backup lists every type");
                self.take_changes(&largest);
                self.bases.remove(&largest);
                if self.running.contains(&largest) {
                    self.dropped.insert(largest);
                }
            }
        }
    }

    /// Something in `ns` changed: it is marked for a backup, and its failed backups in a row are
    /// forgotten (a change's backup that fails has its own retries).
    fn changed(&mut self, ns: &str) {
        self.failures.remove(ns);
        self.mark(ns);
    }

    /// Marks `ns` for a backup, `--debounce` after this change.
    fn mark(&mut self, ns: &str) {
        let now = Instant::now();
        let m = self.dirty.entry(ns.to_string()).or_insert(Mark { first: now, last: now, retry_at: None });
        // A change's backup is due `--debounce` after it, retry or not.
        (m.last, m.retry_at) = (now, None);
    }

    /// The namespaces whose backup is due now: unchanged for at least `debounce` (or at their
    /// retry's time) and not being backed up, the one marked first first (a workspace that keeps
    /// changing keeps its place), as many as leave at most `parallel` running. Each is taken off
    /// `dirty` and counted as running; the others wait for a free slot, and how many do is the
    /// second value.
    fn due(&mut self, debounce: Duration, parallel: usize) -> (Vec<String>, usize) {
        let (free, now) = (parallel.saturating_sub(self.running.len()), Instant::now());
        let is_due = |m: &Mark| m.retry_at.map_or(m.last.elapsed() >= debounce, |at| now >= at);
        let mut due: Vec<(Instant, &String)> = (self.dirty.iter())
            .filter(|(ns, m)| is_due(m) && !self.running.contains(*ns))
            .map(|(ns, m)| (m.first, ns))
            .collect();
        due.sort();
        let waiting = due.len().saturating_sub(free);
        let due: Vec<String> = due.into_iter().take(free).map(|(_, ns)| ns.clone()).collect();
        for ns in &due {
            self.dirty.remove(ns);
            self.running.insert(ns.clone());
        }
        (due, waiting)
    }

    /// The namespaces the watches hold objects in that have no backup (`backed_up` says which
    /// have one; none begun by this process) and are not marked for one yet.
    fn unbacked(&self, backed_up: impl Fn(&str) -> bool) -> BTreeSet<String> {
        (self.objects.values().flat_map(|of_type| of_type.keys()))
            .filter(|ns| !backed_up(ns) && !self.bases.contains_key(*ns))
            .filter(|ns| !self.running.contains(*ns) && !self.dirty.contains_key(*ns))
            .cloned()
            .collect()
    }

    /// The changes held for `ns`, no longer held.
    fn take_changes(&mut self, ns: &str) -> Option<Watched> {
        let taken = self.changes.remove(ns);
        self.held -= taken.as_ref().map_or(0, Watched::held_bytes);
        taken
    }

    /// A watch of `resource` restarted (or failed, or ended).
    fn gap(&mut self, resource: &str) {
        *self.gaps.entry(resource.to_string()).or_default() += 1;
    }

    /// The watch of `resource` lists again, after a gap: until that LIST is done, a backup that
    /// begins may not count on the type's changes (one deleted before the LIST is not delivered).
    fn relisting(&mut self, resource: &str) {
        self.gap(resource);
        self.ready.remove(resource);
    }

    /// `resource`'s watch saw `ns/name` as `seen` (an item of a LIST after a gap when `listing`,
    /// else an update): its namespace is marked for a backup unless only its status or
    /// server-owned fields moved, and an update is noted as [`State::note`] does. A LIST's item is
    /// only compared: it replaces nothing until the LIST is done ([`State::listed`]), and is not
    /// noted (no backup takes the type from the watch while it lists after a gap).
    fn saw(
        &mut self,
        resource: &str,
        ns: &str,
        name: &str,
        seen: Seen,
        listing: bool,
        change: impl FnOnce() -> Option<Change>,
    ) {
        let held = self.objects.entry(resource.to_string()).or_default().entry(ns.to_string()).or_default();
        let before = match listing {
            true => held.get(name).copied(),
            false => held.insert(name.to_string(), seen),
        };
        if !listing {
            self.note(resource, ns, name, change);
        }
        if before.map(|b| b.fingerprint) != Some(seen.fingerprint) {
            self.changed(ns);
        }
    }

    /// `resource`'s watch saw `ns/name` deleted.
    fn deleted(&mut self, resource: &str, ns: &str, name: &str) {
        if let Some(of_type) = self.objects.get_mut(resource)
            && let Some(held) = of_type.get_mut(ns)
        {
            held.remove(name);
            if held.is_empty() {
                of_type.remove(ns);
            }
        }
        self.note(resource, ns, name, || Some(Change::Deleted));
        self.changed(ns);
    }

    /// `resource`'s watch has listed: `listed` is every object it holds now. After a gap, the
    /// namespace of an object held before and not listed (deleted meanwhile) is marked for a backup.
    /// True the first time every watch has listed.
    fn listed(&mut self, resource: &str, listed: HashMap<String, HashMap<String, Seen>>) -> bool {
        let before = self.objects.insert(resource.to_string(), listed).unwrap_or_default();
        for (ns, names) in before {
            let now = self.objects[resource].get(&ns);
            if names.keys().any(|name| !now.is_some_and(|now| now.contains_key(name))) {
                self.changed(&ns);
            }
        }
        let gaps = self.gaps.get(resource).copied().unwrap_or(0);
        self.listed_gaps.insert(resource.to_string(), gaps);
        if !(self.ready.insert(resource.to_string()) && self.ready.len() == self.versions.len()) {
            return false;
        }
        if std::mem::replace(&mut self.all_listed, true) {
            tracing::debug!(resource, "this watch listed again after a gap: all are ready again");
            return false;
        }
        tracing::info!(
            resource_types = self.ready.len(),
            "every watch has listed: continuous backups take what they see change"
        );
        true
    }

    /// After the controller started: `ns`'s last backup `last`, which recorded `recorded`, compared
    /// with what the watches hold of the workspace, type by type. The next backup continues `last`
    /// for each type whose every object the watches hold at the version recorded (their changes
    /// from now on are its changes, as for a backup this process took, [`Base`]) and lists the
    /// others: something there changed while no watch saw it, so the workspace is marked for a
    /// backup now. A type whose watch failed or lists again since it last listed counts as
    /// changed; one whose watch never listed is left out, as a type not watched is. The types that
    /// differ, in order. For a namespace with no backup begun by this process.
    fn resume(&mut self, ns: &str, last: &str, recorded: &HashMap<String, Recorded>) -> Vec<String> {
        let none = HashMap::new();
        let held = |k: &str| self.objects.get(k).and_then(|o| o.get(ns)).unwrap_or(&none);
        let gaps = |k: &str| self.gaps.get(k).copied().unwrap_or(0);
        // Listed type -> the objects recorded at the version held, or None once one is not (or its
        // watch is not as it listed).
        let mut matched: HashMap<&str, Option<usize>> = (self.listed_gaps.iter())
            .map(|(k, g)| (k.as_str(), Some(0).filter(|_| self.ready.contains(k) && gaps(k) == *g)))
            .collect();
        for (path, r) in recorded {
            let resource = kubectl_backup_core::archive::entry_resource(path).unwrap_or_default();
            let Some(m) = matched.get_mut(resource) else { continue };
            let entry = kubectl_backup_core::archive::parse_entry_path(path).ok();
            let at = entry.as_ref().and_then(|e| held(&e.resource).get(&e.name)).and_then(|s| s.version);
            let alike = entry.is_some_and(|e| e.namespace.as_deref() == Some(ns)) && at.is_some() && at == r.version;
            *m = m.filter(|_| alike).map(|n| n + 1);
        }
        let (alike, mut differ): (Vec<&str>, Vec<&str>) =
            matched.keys().partition(|k| matched[*k] == Some(held(k).len()));
        differ.sort();
        let since = alike.iter().map(|k| (k.to_string(), gaps(k))).collect();
        let differ: Vec<String> = differ.into_iter().map(str::to_string).collect();
        self.bases.insert(ns.to_string(), Base { name: last.to_string(), since });
        self.listed.entry(ns.to_string()).or_insert_with(Instant::now);
        if !differ.is_empty() {
            self.mark(ns);
        }
        differ
    }

    /// Begins a backup of `ns`: takes the changes seen since its last backup began and hands them
    /// on for the types whose watch has run since without a restart (see the module's
    /// documentation), within `list_every` of the last backup that listed every type.
    ///
    /// Unless it owes a listing of every type (`list_every` has passed since [`State::listed`],
    /// or `list_every` is zero), it does not list the types of which the watches hold no object in
    /// `ns` either ([`State::empty_types`]): a workspace's first backup lists only the types it
    /// holds objects of.
    fn begin(&mut self, ns: &str, list_every: Duration) -> Begun {
        let at = Instant::now();
        let mut watched = self.take_changes(ns).unwrap_or_default();
        let gaps = |k: &String| self.gaps.get(k).copied().unwrap_or(0);
        let since = self.ready.iter().map(|k| (k.clone(), gaps(k))).collect();
        let clock = *self.listed.entry(ns.to_string()).or_insert(at);
        let owes_listing = list_every.is_zero() || clock.elapsed() >= list_every;
        if let Some(b) = self.bases.get(ns).filter(|_| !owes_listing) {
            let covered = (b.since.iter())
                .filter(|(k, g)| gaps(k) == **g)
                .filter_map(|(k, _)| Some((k.clone(), self.versions.get(k)?.clone())))
                .collect();
            (watched.since, watched.covered) = (b.name.clone(), covered);
        }
        if !owes_listing {
            (watched.namespace, watched.empty) = (ns.to_string(), self.empty_types(ns));
        }
        let watched = Some(watched).filter(|w| !w.covered.is_empty() || !w.empty.is_empty());
        Begun { watched, since, at }
    }

    /// The watched types (and their apiVersions) of which the watches hold no object in `ns`:
    /// each one's watch has listed and has not failed or restarted since, so what it holds is all
    /// there is (but for an event still on its way, whose change marks `ns` for the next backup,
    /// as any change after a backup began does).
    fn empty_types(&self, ns: &str) -> HashMap<String, String> {
        let gaps = |k: &String| self.gaps.get(k).copied().unwrap_or(0);
        (self.versions.iter())
            .filter(|(k, _)| self.ready.contains(*k) && self.listed_gaps.get(*k) == Some(&gaps(k)))
            .filter(|(k, _)| self.objects.get(*k).and_then(|of_type| of_type.get(ns)).is_none_or(|o| o.is_empty()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Ends a backup of `ns` begun as `begun`. Only a complete one leaves a backup for the
    /// watches' changes to continue; after any other, the next lists every type. A failed one is
    /// marked to be taken again ([`Retry`]) unless the workspace changed while it ran.
    fn end(&mut self, ns: &str, begun: Begun, outcome: Outcome, retry: &Retry) -> Next {
        self.running.remove(ns);
        // What changed while it ran was dropped: nothing to continue it with.
        let dropped = self.dropped.remove(ns);
        let next = match &outcome {
            Outcome::Failed => {
                let failures = self.failures.entry(ns.to_string()).or_default();
                *failures += 1;
                match (self.dirty.contains_key(ns), retry.wait(*failures)) {
                    (true, _) => Next::Changed,
                    (false, Some(wait)) => {
                        let now = Instant::now();
                        let mark = Mark { first: now, last: now, retry_at: Some(now + wait) };
                        self.dirty.insert(ns.to_string(), mark);
                        Next::Retry(*failures, wait)
                    }
                    (false, None) => Next::GaveUp(*failures),
                }
            }
            Outcome::Skipped | Outcome::Completed(..) => {
                self.failures.remove(ns);
                Next::Nothing
            }
        };
        match &outcome {
            // Complete, and no LIST left out.
            Outcome::Completed(_, false) => {
                self.listed.insert(ns.to_string(), begun.at);
            }
            // No longer a workspace: nothing to count from.
            Outcome::Skipped => {
                self.listed.remove(ns);
            }
            _ => {}
        }
        match outcome {
            Outcome::Completed(name, _) if !dropped => {
                self.bases.insert(ns.to_string(), Base { name, since: begun.since });
            }
            _ => {
                self.bases.remove(ns);
                self.take_changes(ns);
            }
        }
        next
    }
}

impl Continuous {
    pub async fn run(self: Arc<Self>) {
        if let Err(e) = self.ctx.location.ensure_writable() {
            tracing::warn!(error = %e, "continuous backup is off");
            return;
        }
        let discovered = match collect::discover(&self.ctx.cluster.client, &self.ctx.cluster.throttle).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "continuous backup is off: discovery failed");
                return;
            }
        };
        let watchable: Vec<Resource> = discovered.resources.into_iter().filter(watchable).collect();
        let watched = watchable.len();
        let versions = watchable.iter().map(|r| (r.key.clone(), r.ar.api_version.clone())).collect();
        let state = Arc::new(Mutex::new(State { versions, max_held: self.max_held, ..Default::default() }));
        for r in watchable {
            tokio::spawn(watch(self.ctx.clone(), r, state.clone()));
        }
        tokio::spawn(self.clone().resume(state.clone()));
        tracing::info!(resource_types = watched, debounce = ?self.debounce, retention = %self.retention, keep = self.keep, incremental = self.incremental, list_every = ?self.list_every, parallel = self.parallel, "continuous backup watching workspaces");
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let due: Vec<(String, Begun)> = {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                let list_every = if self.incremental { self.list_every } else { Duration::ZERO };
                let (due, waiting) = s.due(self.debounce, self.parallel);
                self.ctx.metrics.continuous_waiting.set(waiting as i64);
                due.into_iter().map(|ns| (ns.clone(), s.begin(&ns, list_every))).collect()
            };
            for (ns, begun) in due {
                let (me, state) = (self.clone(), state.clone());
                tokio::spawn(async move {
                    // A backup that panicked ends too: left running, it would hold a slot for good
                    // (one that hangs is given up, [`Continuous::backup`]).
                    let backup = AssertUnwindSafe(me.backup(&ns, begun.watched.as_ref())).catch_unwind();
                    let outcome = backup.await.unwrap_or_else(|_| {
                        tracing::error!(namespace = %ns, "a continuous backup panicked; the next one lists every type");
                        Outcome::Failed
                    });
                    let next = state.lock().unwrap_or_else(|p| p.into_inner()).end(&ns, begun, outcome, &me.retry);
                    match next {
                        Next::Retry(failures, wait) => {
                            tracing::info!(namespace = %ns, failures, retry_in = ?wait, "retrying the failed continuous backup")
                        }
                        Next::GaveUp(failures) => {
                            tracing::warn!(namespace = %ns, failures, "continuous backups failed too often in a row: the next is taken at the workspace's next change")
                        }
                        Next::Nothing | Next::Changed => {}
                    }
                });
            }
        }
    }

    /// Once every watch has listed after the start: each workspace with a continuous backup is
    /// compared with the last one ([`State::resume`], incremental backups only), so that the next
    /// backup continues it, and one that changed while no controller watched it is backed up now;
    /// then a workspace that holds objects and has no backup at all (created while no controller
    /// ran, or there before the first start) is backed up too, not at its first change.
    async fn resume(self: Arc<Self>, state: Arc<Mutex<State>>) {
        let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + RESUME_WAIT;
        loop {
            let waiting: Vec<String> = {
                let s = lock();
                s.versions.keys().filter(|k| !s.listed_gaps.contains_key(*k)).cloned().collect()
            };
            if waiting.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(resource_types = ?waiting, "these watches have not listed: workspaces are compared with their last continuous backups without them");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let store = &self.ctx.location.store;
        // (The store retries a transient failure itself.)
        let listing = match catalog::list(store).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the continuous backups to continue them: each workspace's next backup lists every type, and one changed while no controller watched it, or with no continuous backup, is backed up at its next change");
                return;
            }
        };
        let workspaces: BTreeSet<String> = (listing.backups.iter())
            .filter(|b| b.spec.schedule.as_deref() == Some(CONTINUOUS))
            .filter_map(|b| match b.spec.filters.included_namespaces.as_slice() {
                [ns] => Some(ns.clone()),
                _ => None,
            })
            .collect();
        for ns in workspaces.iter().filter(|_| self.incremental) {
            if !self.is_workspace(ns).await {
                continue;
            }
            let last = backup::latest(store, &self.spec(ns), &self.ctx.cluster.server).await;
            let mut s = lock();
            // A backup begun since counts from its own reads.
            if s.running.contains(ns) || s.bases.contains_key(ns) {
                continue;
            }
            let Some(last) = last else {
                tracing::info!(namespace = %ns, "this workspace's last continuous backup cannot be compared with it: backing it up");
                s.mark(ns);
                continue;
            };
            let differ = s.resume(ns, &last.name, &last.assembled.lines);
            match differ.is_empty() {
                true => {
                    tracing::info!(namespace = %ns, backup = %last.name, "a workspace is as its last continuous backup recorded it: the next one continues it")
                }
                false => {
                    tracing::info!(namespace = %ns, backup = %last.name, changed = ?differ, "a workspace changed while no controller watched it: backing it up")
                }
            }
        }
        // A workspace with a backup of any kind that did not fail (the index, from this listing)
        // is left to its next change, and to the restore of a re-created workspace, which picks
        // from those backups: only one with none is backed up now.
        let index = &self.ctx.index;
        index.load(&listing);
        let unbacked = lock().unbacked(|ns| index.newest(ns).is_some());
        for ns in unbacked {
            if !self.is_workspace(&ns).await {
                continue;
            }
            let mut s = lock();
            // Marked or begun meanwhile (a change): its own backup comes.
            if s.running.contains(&ns) || s.bases.contains_key(&ns) || s.dirty.contains_key(&ns) {
                continue;
            }
            tracing::info!(namespace = %ns, "a workspace has no backup: backing it up");
            s.mark(&ns);
        }
    }

    /// What a continuous backup of `ns` backs up.
    fn spec(&self, ns: &str) -> BackupSpec {
        BackupSpec {
            filters: Filters { included_namespaces: vec![ns.to_string()], ..Default::default() },
            ttl: None,
            storage_location: Some(self.ctx.location.display()),
            schedule: Some(CONTINUOUS.into()),
            incremental: self.incremental,
            include_volumes: self.include_volumes,
            ..Default::default()
        }
    }

    /// Whether `ns` is a workspace whose state is backed up: one the webhook would decide is a
    /// workspace and not ephemeral (by its label, its annotation or `--ephemeral-pattern`), and not
    /// being deleted.
    /// An error reading the namespace counts as not.
    async fn is_workspace(&self, ns: &str) -> bool {
        self.workspace(ns).await.unwrap_or(false)
    }

    /// [`Continuous::is_workspace`], or the error reading the namespace.
    async fn workspace(&self, ns: &str) -> Result<bool, kube::Error> {
        if self.ctx.policy.excluded.contains(ns) {
            return Ok(false);
        }
        let api: Api<Namespace> = Api::all(self.ctx.cluster.client.clone());
        Ok(match api.get_opt(ns).await? {
            Some(n) => {
                let decided = decide(&self.ctx.policy, ns, n.labels(), n.annotations(), &self.ctx.index);
                n.metadata.deletion_timestamp.is_none() && matches!(decided, Decision::Restore(_) | Decision::Nothing)
            }
            None => false,
        })
    }

    /// Backs up `ns` if it is a workspace (one whose namespace cannot be read counts as failed),
    /// then prunes its series. A backup still running after `--continuous-timeout` is given up: its
    /// future is dropped, which stops its heartbeats and its lease, and what it wrote uncommitted
    /// is collected as any interrupted run's.
    ///
    /// One with volume data is not dropped between its claims' pre and post hooks, which would
    /// leave the workload frozen and its mover Pod running: its movers get the timeout as their
    /// deadline ([`MoverSettings::time_limit`](kubectl_backup_core::volume::MoverSettings)), so a
    /// mover still running then is ended by the kubelet, the post hooks run, the claims not begun
    /// are reported, and the backup ends PartiallyFailed. Only if it is still running
    /// [`VOLUME_GRACE`] later (a hung hook, the API server gone) is it dropped.
    async fn backup(&self, ns: &str, watched: Option<&Watched>) -> Outcome {
        match self.workspace(ns).await {
            Ok(true) => {}
            Ok(false) => return Outcome::Skipped,
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "continuous backup failed: cannot read the namespace");
                return Outcome::Failed;
            }
        }
        let name = timestamped_name(&name_prefix(ns), Timestamp::now());
        let mut spec = self.spec(ns);
        let limited = !self.timeout.is_zero();
        if limited && self.include_volumes {
            spec.mover.time_limit = Some(self.timeout);
        }
        let (reference, source) = (Context::namespace_reference(ns), SourceLabel::workspace(ns));
        let run = self.ctx.backup(ObjectRun {
            location: &self.ctx.location,
            name: &name,
            spec,
            trigger: CONTINUOUS,
            source: Some(&source),
            reference: &reference,
            observer: None,
            requester: None,
            watched,
        });
        let limit = match (limited, self.include_volumes) {
            (false, _) => Duration::MAX,
            (true, false) => self.timeout,
            (true, true) => self.timeout + VOLUME_GRACE,
        };
        match tokio::time::timeout(limit, run).await {
            Ok(Ok(b)) => {
                self.prune(ns).await;
                continued_by_changes(name, &b)
            }
            Ok(Err(e)) => {
                tracing::warn!(namespace = %ns, backup = %name, error = %e, "continuous backup failed");
                Outcome::Failed
            }
            Err(_) => {
                tracing::warn!(namespace = %ns, backup = %name, timeout = ?self.timeout, "a continuous backup ran longer than --continuous-timeout: given up");
                // It never reached the end of `Context::backup`, which counts and reports the others.
                let note = format!("backup {name} ran longer than --continuous-timeout ({:?}): given up", self.timeout);
                self.ctx.backup_failed(CONTINUOUS, &reference, note).await;
                Outcome::Failed
            }
        }
    }

    /// Prunes the continuous backups of `ns` to the retention's time series (and to `keep`). Only
    /// the documents of backups named as its continuous backups are read ([`is_named_for`]), not
    /// every backup in the location after every backup.
    async fn prune(&self, ns: &str) {
        let store = &self.ctx.location.store;
        let prefix = name_prefix(ns);
        let Ok(listing) = catalog::list_named(store, |name| is_named_for(&prefix, name)).await else { return };
        // Newest first, as listed.
        let mine: Vec<_> = listing
            .backups
            .iter()
            .filter(|b| b.spec.schedule.as_deref() == Some(CONTINUOUS) && b.spec.filters.included_namespaces == [ns])
            .collect();
        let times: Vec<Timestamp> =
            mine.iter().map(|b| b.metadata.creation_timestamp.unwrap_or(Timestamp::UNIX_EPOCH)).collect();
        let kept = self.retention.keep(&times, Timestamp::now());
        let limit = if self.keep == 0 { usize::MAX } else { self.keep };
        let surplus = mine.iter().enumerate().filter(|(i, _)| !kept.contains(i) || *i >= limit).map(|(_, b)| b);
        for old in surplus {
            match catalog::delete(store, &old.metadata.name).await {
                Ok(_) => {
                    tracing::info!(namespace = %ns, backup = %old.metadata.name, "pruned an old continuous backup")
                }
                Err(e) => {
                    tracing::warn!(backup = %old.metadata.name, error = %e, "could not prune a continuous backup")
                }
            }
        }
    }
}

/// What the names of `ns`'s continuous backups begin with (`<prefix>-<YYYYMMDDhhmmss>`).
fn name_prefix(ns: &str) -> String {
    ns.chars().take(48).collect::<String>().trim_end_matches('-').to_string()
}

/// Whether `name` is a continuous backup's name for a namespace whose [`name_prefix`] is `prefix`
/// (another namespace may share the prefix: the spec says whose it is).
fn is_named_for(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|stamp| stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()))
}

/// How backup `b` (named `name`) ended: only a complete one may be continued by the watches'
/// changes (with whether it left out LISTs for them). One that failed in part may lack objects of
/// a type whose LIST failed, and a backup continuing it would take that type from it as it is;
/// it counts as failed, to be taken again.
fn continued_by_changes(name: String, b: &kubectl_backup_core::model::Backup) -> Outcome {
    if b.status.phase != kubectl_backup_core::model::Phase::Completed {
        tracing::info!(backup = %name, phase = %b.status.phase, "the next continuous backup of this workspace lists every type");
        return Outcome::Failed;
    }
    let skipped = b.status.incremental.as_ref().is_some_and(|i| i.lists_skipped > 0);
    Outcome::Completed(name, skipped)
}

fn watchable(r: &Resource) -> bool {
    r.namespaced
        && r.supports("list")
        && r.supports("watch")
        && collect::never_backed_up(&r.key).is_none()
        && !IGNORED.contains(&r.key.as_str())
}

/// What counts as a change: the object without its type, status and server-owned metadata.
fn fingerprint(obj: &DynamicObject) -> u64 {
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        // A LIST's items come without them, a watch's events with them.
        o.remove("apiVersion");
        o.remove("kind");
        o.remove("status");
        if let Some(m) = o.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            for k in ["resourceVersion", "managedFields", "generation", "uid", "creationTimestamp"] {
                m.remove(k);
            }
            if let Some(l) = m.get_mut("labels").and_then(|l| l.as_object_mut()) {
                l.remove(EPHEMERAL_LABEL);
            }
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    h.finish()
}

async fn watch(ctx: Arc<Context>, r: Resource, state: Arc<Mutex<State>>) {
    let api: Api<DynamicObject> = Api::all_with(ctx.cluster.client.clone(), &r.ar);
    let mut initialized = false;
    // The objects of the LIST under way (the first, or one after a gap): they replace those held
    // once it is done.
    let mut listing: HashMap<String, HashMap<String, Seen>> = HashMap::new();
    // The runtime's backoff between failed watch attempts (exponential, jittered).
    let mut stream = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    while let Some(ev) = stream.next().await {
        let (mut obj, in_list) = match ev {
            Ok(Event::Init) => {
                listing.clear();
                // Listing again after the first time: changes may have been missed meanwhile.
                if initialized {
                    lock().relisting(&r.key);
                }
                continue;
            }
            Ok(Event::InitApply(obj)) => (obj, true),
            Ok(Event::Apply(obj)) => (obj, false),
            Ok(Event::InitDone) => {
                initialized = true;
                lock().listed(&r.key, std::mem::take(&mut listing));
                continue;
            }
            Ok(Event::Delete(obj)) => {
                if let Some(ns) = obj.namespace() {
                    lock().deleted(&r.key, &ns, &obj.name_any());
                }
                continue;
            }
            Err(e) => {
                // The watcher resumes where it was, or lists again; counted as a gap either way.
                lock().gap(&r.key);
                tracing::debug!(resource = %r.key, error = %e, "watch error; the watcher retries with backoff");
                continue;
            }
        };
        let Some(ns) = obj.namespace() else { continue };
        let (name, seen) = (obj.name_any(), Seen::of(&obj));
        if in_list {
            listing.entry(ns.clone()).or_default().insert(name.clone(), seen);
        }
        // The first LIST is what the workspaces hold: not a change.
        if initialized {
            obj.types = Some(TypeMeta { api_version: r.ar.api_version.clone(), kind: r.ar.kind.clone() });
            // Serialized only for a workspace whose next backup takes it.
            let applied = || {
                let json = serde_json::to_vec(&obj).ok()?;
                Some(Change::Applied { json, version: obj.metadata.resource_version.clone() })
            };
            lock().saw(&r.key, &ns, &name, seen, in_list, applied);
        }
    }
    lock().gap(&r.key);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    fn keys(v: &[&str]) -> HashSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn applied(n: u8) -> Change {
        Change::Applied { json: vec![n], version: Some(n.to_string()) }
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const RETRY: Retry = Retry { times: 2, after: Duration::from_secs(30) };

    /// A state whose watches of ConfigMaps and Secrets have listed, with `ws` backed up as `b1`,
    /// during which `ws/a` changed.
    fn backed_up_once() -> State {
        let mut s = State {
            versions: [("configmaps", "v1"), ("secrets", "v1")].map(|(k, v)| (k.into(), v.into())).into(),
            ready: keys(&["configmaps", "secrets"]),
            all_listed: true,
            max_held: usize::MAX,
            ..Default::default()
        };
        s.note("configmaps", "ws", "early", || Some(applied(0))); // before any backup of ws: nothing to continue
        s.running.insert("ws".into());
        let begun = s.begin("ws", HOUR);
        assert!(begun.watched.is_none(), "the first backup of a workspace lists");
        s.note("configmaps", "ws", "a", || Some(applied(1)));
        s.end("ws", begun, Outcome::Completed("b1".into(), false), &RETRY);
        s
    }

    fn covered(w: &Watched) -> HashSet<String> {
        w.covered.keys().cloned().collect()
    }

    #[test]
    fn a_backup_continues_the_last_with_what_changed_since_it_began() {
        let mut s = backed_up_once();
        s.note("secrets", "ws", "b", || Some(applied(2)));
        s.note("configmaps", "ws", "a", || Some(Change::Deleted)); // the last change of an object is what counts
        s.note("secrets", "other", "c", || Some(applied(3))); // a namespace never backed up here: not kept
        assert!(!s.changes.contains_key("other"));
        s.running.insert("ws".into());
        let begun = s.begin("ws", HOUR);
        let w = begun.watched.as_ref().expect("continued");
        assert_eq!(w.since, "b1");
        assert_eq!(covered(w), keys(&["configmaps", "secrets"]));
        assert_eq!(w.covered["secrets"], "v1");
        assert_eq!(w.changed["configmaps"], [("ws/a".to_string(), Change::Deleted)].into());
        assert_eq!(w.changed["secrets"], [("ws/b".to_string(), applied(2))].into());
        // What changes while it runs is for the next one.
        s.note("configmaps", "ws", "d", || Some(applied(4)));
        s.end("ws", begun, Outcome::Completed("b2".into(), true), &RETRY);
        let next = s.begin("ws", HOUR).watched.expect("continued again");
        assert_eq!(next.since, "b2");
        assert_eq!(next.changed.len(), 1);
        assert_eq!(next.changed["configmaps"], [("ws/d".to_string(), applied(4))].into());
    }

    #[test]
    fn a_restarted_watch_or_a_failed_backup_makes_the_next_one_list() {
        let mut s = backed_up_once();
        s.gap("secrets");
        let w = s.begin("ws", HOUR).watched.expect("continued for ConfigMaps");
        assert_eq!(covered(&w), keys(&["configmaps"]), "Secrets may have changed unseen: listed");

        let mut s = backed_up_once();
        s.running.insert("ws".into());
        let begun = s.begin("ws", HOUR);
        s.end("ws", begun, Outcome::Failed, &RETRY);
        assert!(s.begin("ws", HOUR).watched.is_none(), "after a failure the next backup lists");

        let mut s = backed_up_once();
        s.gap("configmaps");
        s.gap("secrets");
        assert!(s.begin("ws", HOUR).watched.is_none(), "no type left to take from the watches");
    }

    #[test]
    fn past_the_bytes_held_the_workspace_holding_most_is_listed_next() {
        let body = |n: usize| Change::Applied { json: vec![b'x'; n], version: Some(n.to_string()) };
        // ws and ws2 backed up once each; ws holds 1 byte (ws/a, changed during its backup).
        let mut s = backed_up_once();
        s.running.insert("ws2".into());
        let begun = s.begin("ws2", HOUR);
        s.end("ws2", begun, Outcome::Completed("c1".into(), false), &RETRY);
        s.max_held = 10;
        s.note("configmaps", "ws", "a", || Some(body(6))); // replaces ws/a's 1 byte
        s.note("secrets", "ws2", "b", || Some(body(3)));
        let held = |s: &State, ns: &str| s.changes[ns].held_bytes();
        assert_eq!((held(&s, "ws"), held(&s, "ws2"), s.held), (6, 3, 9));
        s.note("configmaps", "ws", "a", || Some(body(4))); // an object's last change counts, once
        s.note("configmaps", "ws", "d", || Some(Change::Deleted));
        assert_eq!((held(&s, "ws"), s.held), (4, 7));
        // 12 bytes: ws, holding the most (9), is let go of; ws2 is still continued.
        s.note("configmaps", "ws", "c", || Some(body(5)));
        assert_eq!(s.held, 3);
        assert!(!s.changes.contains_key("ws"));
        s.note("configmaps", "ws", "e", || Some(body(1))); // nothing to continue: not held
        assert_eq!(s.held, 3);
        assert!(s.begin("ws", HOUR).watched.is_none(), "its changes were dropped: the next backup lists");
        let w = s.begin("ws2", HOUR).watched.expect("ws2 continued");
        assert_eq!(w.changed["secrets"], [("ws2/b".to_string(), body(3))].into());
        assert_eq!(s.held, 0, "handed to the backup that takes them");

        // A workspace being backed up: what changes meanwhile is dropped; the backup after it lists.
        let mut s = backed_up_once();
        s.max_held = 10;
        s.running.insert("ws".into());
        let begun = s.begin("ws", HOUR);
        assert!(begun.watched.is_some());
        s.note("configmaps", "ws", "big", || Some(body(11)));
        assert_eq!(s.held, 0);
        s.note("configmaps", "ws", "small", || Some(body(1))); // held again while it runs…
        s.end("ws", begun, Outcome::Completed("b2".into(), true), &RETRY);
        assert!(s.begin("ws", HOUR).watched.is_none(), "…but the change before it was dropped: listed");
        assert_eq!((s.held, s.dropped.len()), (0, 0));
    }

    #[test]
    fn a_watch_not_listed_yet_or_an_old_listing_makes_the_next_one_list() {
        // Secrets' watch had not listed when b1 began: changes before it started were unseen.
        let mut s = backed_up_once();
        s.ready.remove("secrets");
        let begun = s.begin("ws", HOUR);
        s.end("ws", begun, Outcome::Completed("b2".into(), true), &RETRY);
        s.ready.insert("secrets".into());
        let w = s.begin("ws", HOUR).watched.expect("continued for ConfigMaps");
        assert_eq!(covered(&w), keys(&["configmaps"]));

        let mut s = backed_up_once();
        assert!(s.begin("ws", Duration::ZERO).watched.is_none(), "--continuous-list-every=0s always lists");
        // A chain of backups that listed nothing counts from the last that listed every type.
        let mut s = backed_up_once();
        let listed = s.listed["ws"];
        let begun = s.begin("ws", HOUR);
        assert!(begun.watched.is_some());
        s.end("ws", begun, Outcome::Completed("b2".into(), true), &RETRY);
        assert_eq!(s.listed["ws"], listed);
    }

    fn seen(version: u64) -> Seen {
        Seen { fingerprint: version, version: Some(version) }
    }

    /// Watches of ConfigMaps and Secrets that have listed `ws`'s a (version 1), b (2) and s (3).
    fn started() -> State {
        let mut s = State {
            versions: [("configmaps", "v1"), ("secrets", "v1")].map(|(k, v)| (k.into(), v.into())).into(),
            max_held: usize::MAX,
            ..Default::default()
        };
        let ws = |names: &[(&str, u64)]| -> HashMap<String, HashMap<String, Seen>> {
            [("ws".to_string(), names.iter().map(|(n, v)| (n.to_string(), seen(*v))).collect())].into()
        };
        assert!(!s.listed("configmaps", ws(&[("a", 1), ("b", 2)])), "Secrets' watch has not listed");
        assert!(s.listed("secrets", ws(&[("s", 3)])), "every watch has listed");
        assert!(s.dirty.is_empty(), "what the first LISTs find is no change");
        s
    }

    /// What a backup of `ws` recorded: `(resource, name, version)`.
    fn recorded(objects: &[(&str, &str, u64)]) -> HashMap<String, Recorded> {
        let r = |v: u64| Recorded { sha256: [0; 32], size: 1, version: Some(v), reusable: false };
        objects.iter().map(|(k, n, v)| (kubectl_backup_core::archive::entry_path(k, Some("ws"), n), r(*v))).collect()
    }

    #[test]
    fn after_a_start_a_workspace_as_its_last_backup_recorded_it_is_continued() {
        let mut s = started();
        let same = recorded(&[("configmaps", "a", 1), ("configmaps", "b", 2), ("secrets", "s", 3), ("pods", "p", 9)]);
        assert!(s.resume("ws", "b1", &same).is_empty());
        assert!(s.dirty.is_empty(), "nothing to back up");
        // Changes from now on count for the next backup, which continues b1 for both types.
        s.saw("configmaps", "ws", "a", seen(4), false, || Some(applied(4)));
        assert!(s.dirty.contains_key("ws"));
        let w = s.begin("ws", HOUR).watched.expect("continued");
        assert_eq!((w.since.as_str(), covered(&w)), ("b1", keys(&["configmaps", "secrets"])));
        assert_eq!(w.changed["configmaps"], [("ws/a".to_string(), applied(4))].into());
    }

    #[test]
    fn after_a_start_a_workspace_changed_unseen_is_backed_up_listing_what_changed() {
        // Changed, created, deleted: ConfigMaps listed, Secrets continued; backed up at once.
        for (what, last) in [
            ("changed", recorded(&[("configmaps", "a", 1), ("configmaps", "b", 1), ("secrets", "s", 3)])),
            ("created", recorded(&[("configmaps", "a", 1), ("secrets", "s", 3)])),
            (
                "deleted",
                recorded(&[
                    ("configmaps", "a", 1),
                    ("configmaps", "b", 2),
                    ("configmaps", "c", 5),
                    ("secrets", "s", 3),
                ]),
            ),
        ] {
            let mut s = started();
            assert_eq!(s.resume("ws", "b1", &last), ["configmaps"], "{what}");
            assert!(s.dirty.contains_key("ws"), "{what}: backed up now");
            let w = s.begin("ws", HOUR).watched.expect("continued for Secrets");
            assert_eq!(covered(&w), keys(&["secrets"]), "{what}");
        }
        // A type whose watch lists again as it is compared counts as changed.
        let mut s = started();
        s.relisting("secrets");
        let same = recorded(&[("configmaps", "a", 1), ("configmaps", "b", 2), ("secrets", "s", 3)]);
        assert_eq!(s.resume("ws", "b1", &same), ["secrets"]);
        assert!(s.dirty.contains_key("ws"));
        let w = s.begin("ws", HOUR).watched.expect("continued for ConfigMaps");
        assert_eq!(covered(&w), keys(&["configmaps"]));
    }

    #[test]
    fn a_watch_listing_again_is_not_counted_on_and_marks_what_changed_meanwhile() {
        let mut s = backed_up_once();
        s.objects = started().objects;
        s.relisting("configmaps");
        // A backup begun before that LIST is done does not take ConfigMaps from the watch...
        s.running.insert("ws".into());
        let begun = s.begin("ws", HOUR);
        assert_eq!(covered(begun.watched.as_ref().unwrap()), keys(&["secrets"]));
        // ...and the LIST, which finds a changed and b gone, marks the workspace for a backup
        // (holding nothing: no backup takes ConfigMaps from the watch until it has listed).
        s.saw("configmaps", "ws", "a", seen(7), true, || Some(applied(7)));
        assert!(s.dirty.contains_key("ws"), "a changed");
        assert_eq!(s.objects["configmaps"]["ws"]["a"], seen(1), "replaced when the LIST is done");
        s.dirty.clear();
        let again = s.listed("configmaps", [("ws".to_string(), [("a".to_string(), seen(7))].into())].into());
        assert!(!again, "every watch listed once already: not the start's readiness again");
        assert!(s.dirty.contains_key("ws"), "b was deleted meanwhile");
        assert!(s.ready.contains("configmaps"));
        assert_eq!(s.held, 0);
        s.end("ws", begun, Outcome::Completed("b2".into(), true), &RETRY);
        let begun = s.begin("ws", HOUR);
        let w = begun.watched.as_ref().expect("continued");
        assert_eq!(covered(w), keys(&["secrets"]), "ConfigMaps' watch was listing when b2 began");
        s.end("ws", begun, Outcome::Completed("b3".into(), true), &RETRY);
        let w = s.begin("ws", HOUR).watched.expect("continued");
        assert_eq!(covered(&w), keys(&["configmaps", "secrets"]), "listed before b3 began");
    }

    #[test]
    fn after_a_start_what_cannot_be_compared_counts_as_changed_or_is_left_out() {
        let same = || recorded(&[("configmaps", "a", 1), ("configmaps", "b", 2), ("secrets", "s", 3)]);
        let continued = |s: &mut State| covered(&s.begin("ws", HOUR).watched.expect("continued"));
        // A watch that failed after its LIST may have lost an event: its type counts as changed.
        let mut s = started();
        s.gap("configmaps");
        assert_eq!(s.resume("ws", "b1", &same()), ["configmaps"]);
        assert!(s.dirty.contains_key("ws"));
        assert_eq!(continued(&mut s), keys(&["secrets"]));
        // A watch that never listed (its type no longer served, say) is left out, as a type not
        // watched is: listed by the next backup, the workspace not backed up for it.
        let mut s = started();
        s.versions.insert("widgets.example.com".into(), "v1".into());
        let mut with_widgets = same();
        with_widgets.extend(recorded(&[("widgets.example.com", "w", 4)]));
        assert!(s.resume("ws", "b1", &with_widgets).is_empty());
        assert!(s.dirty.is_empty());
        assert_eq!(continued(&mut s), keys(&["configmaps", "secrets"]));
        // A version that is not an etcd revision, or an entry of another namespace: changed.
        let mut s = started();
        let mut unversioned = same();
        let path = kubectl_backup_core::archive::entry_path("secrets", Some("ws"), "s");
        unversioned.get_mut(&path).unwrap().version = None;
        assert_eq!(s.resume("ws", "b1", &unversioned), ["secrets"]);
        let mut s = started();
        let mut elsewhere = same();
        let other = kubectl_backup_core::archive::entry_path("configmaps", Some("other"), "a");
        elsewhere
            .insert(other, elsewhere[&kubectl_backup_core::archive::entry_path("configmaps", Some("ws"), "a")].clone());
        assert_eq!(s.resume("ws", "b1", &elsewhere), ["configmaps"]);
    }

    #[test]
    fn only_a_complete_backup_is_continued_with_the_watches_changes() {
        use kubectl_backup_core::model::{Backup, Phase};
        let mut b = Backup::new("b1", BackupSpec::default());
        b.status.phase = Phase::Completed;
        assert_eq!(continued_by_changes("b1".into(), &b), Outcome::Completed("b1".into(), false));
        // A LIST that failed left its type's objects out: the next backup lists every type.
        b.status.phase = Phase::PartiallyFailed;
        assert_eq!(continued_by_changes("b1".into(), &b), Outcome::Failed);
    }

    #[test]
    fn a_workspace_s_continuous_backups_are_found_by_name() {
        let prefix = name_prefix("team-a");
        let name = timestamped_name(&prefix, "2026-12-07T03:40:05Z".parse().unwrap());
        assert!(is_named_for(&prefix, &name), "{name}");
        for other in [
            "team-a-b-20261207034005",
            "team-a-2026120703400",
            "team-a-2026120703400x",
            "team-ab-20261207034005",
            "team-a",
        ] {
            assert!(!is_named_for(&prefix, other), "{other}");
        }
        // Long names are cut to 48 characters, without a trailing '-'.
        let long = format!("{}-{}", "a".repeat(47), "b".repeat(20));
        assert_eq!(name_prefix(&long), "a".repeat(47));
        assert!(is_named_for(&name_prefix(&long), &timestamped_name(&name_prefix(&long), Timestamp::UNIX_EPOCH)));
    }

    #[test]
    fn due_backups_wait_their_turn_in_the_order_marked() {
        let mut s = State::default();
        let now = Instant::now();
        let ago = |secs: u64| now - Duration::from_secs(secs);
        // (first marked, last changed) seconds ago: c waits longest though it changed last.
        for (ns, first, last) in [("c", 30, 3), ("a", 20, 5), ("b", 10, 4), ("fresh", 40, 0)] {
            s.dirty.insert(ns.into(), Mark { first: ago(first), last: ago(last), retry_at: None });
        }
        s.running.insert("busy".into());
        s.dirty.insert("busy".into(), Mark { first: ago(9), last: ago(9), retry_at: None }); // changed while being backed up
        // Three slots, one taken: the two marked first; "fresh" changed within the debounce.
        let started = |d: (Vec<String>, usize)| d.0;
        assert_eq!(s.due(Duration::from_secs(2), 3), (vec!["c".into(), "a".into()], 1), "b waits");
        assert!(s.running.contains("a") && s.running.contains("c") && !s.dirty.contains_key("a"));
        assert_eq!(s.due(Duration::from_secs(2), 3), (vec![], 1), "every slot taken");
        s.running.remove("busy");
        s.running.remove("a");
        assert_eq!(started(s.due(Duration::from_secs(2), 3)), ["b", "busy"]);
        assert_eq!(s.due(Duration::from_secs(2), 3), (vec![], 0), "fresh is not due yet");
        assert_eq!(s.dirty.keys().collect::<Vec<_>>(), ["fresh"]);
        // Marking again keeps a namespace's place and moves its debounce.
        s.mark("fresh");
        assert_eq!(s.dirty["fresh"].first, ago(40));
        assert!(s.dirty["fresh"].last > now);
    }

    #[test]
    fn a_failed_backup_is_taken_again_later_each_time_until_the_retries_run_out() {
        let mut s = State::default();
        let run = |s: &mut State, outcome: Outcome| {
            let (due, _) = s.due(Duration::ZERO, 1);
            assert_eq!(due, ["ws"], "ws is due");
            let begun = s.begin("ws", HOUR);
            s.end("ws", begun, outcome, &RETRY)
        };
        // Its retry time come (as if the wait had passed).
        let come = |s: &mut State| s.dirty.get_mut("ws").unwrap().retry_at = Some(Instant::now());
        s.mark("ws");
        let before = Instant::now();
        assert_eq!(run(&mut s, Outcome::Failed), Next::Retry(1, Duration::from_secs(30)));
        let at = s.dirty["ws"].retry_at.unwrap();
        assert!(at >= before + Duration::from_secs(30), "retried after the wait");
        assert_eq!(s.due(Duration::ZERO, 1), (vec![], 0), "not before its time, even with no debounce");
        come(&mut s);
        assert_eq!(run(&mut s, Outcome::Failed), Next::Retry(2, Duration::from_secs(60)), "twice as late");
        come(&mut s);
        assert_eq!(run(&mut s, Outcome::Failed), Next::GaveUp(3));
        assert!(s.dirty.is_empty(), "no retry left: the next change takes it");
        // Marked again with nothing changed (by the start's comparison, say): still no retry left.
        s.mark("ws");
        assert_eq!(run(&mut s, Outcome::Failed), Next::GaveUp(4));
        // A change starts the count anew: its backup has its retries.
        s.saw("configmaps", "ws", "x", Seen { fingerprint: 1, version: Some(1) }, false, || None);
        assert_eq!(run(&mut s, Outcome::Failed), Next::Retry(1, Duration::from_secs(30)));
        come(&mut s);
        assert_eq!(run(&mut s, Outcome::Failed), Next::Retry(2, Duration::from_secs(60)));
        s.deleted("configmaps", "ws", "x");
        assert_eq!(s.failures.get("ws"), None, "a deletion is a change");
        assert_eq!(run(&mut s, Outcome::Failed), Next::Retry(1, Duration::from_secs(30)));
        // One that succeeds starts the count anew too.
        s.mark("ws");
        assert_eq!(run(&mut s, Outcome::Completed("ws-1".into(), false)), Next::Nothing);
        s.mark("ws");
        assert_eq!(run(&mut s, Outcome::Failed), Next::Retry(1, Duration::from_secs(30)));
        // A change while it waits: due after the debounce, not the retry's time.
        s.mark("ws");
        assert_eq!(s.dirty["ws"].retry_at, None);
        // A change while it ran: that change's backup comes, not a retry.
        let (due, _) = s.due(Duration::ZERO, 1);
        assert_eq!(due, ["ws"]);
        let begun = s.begin("ws", HOUR);
        s.mark("ws");
        assert_eq!(s.end("ws", begun, Outcome::Failed, &RETRY), Next::Changed);
        assert_eq!(s.dirty["ws"].retry_at, None);
        // No longer a workspace: nothing more, and the count is forgotten.
        assert_eq!(run(&mut s, Outcome::Skipped), Next::Nothing);
        assert!(s.dirty.is_empty() && s.failures.is_empty());
    }

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_an_hour() {
        let r = Retry { times: 30, after: Duration::from_secs(30) };
        assert_eq!(r.wait(1), Some(Duration::from_secs(30)));
        assert_eq!(r.wait(4), Some(Duration::from_secs(240)));
        assert_eq!(r.wait(8), Some(MAX_RETRY_WAIT));
        assert_eq!(r.wait(30), Some(MAX_RETRY_WAIT));
        assert_eq!(r.wait(31), None);
        assert_eq!(Retry { times: 0, after: Duration::from_secs(30) }.wait(1), None, "--continuous-retries=0");
    }

    #[test]
    fn a_backup_leaves_out_the_types_the_watches_hold_nothing_of_in_the_workspace() {
        let mut s = started();
        s.versions.insert("serviceaccounts".into(), "v1".into());
        s.versions.insert("widgets.example.org".into(), "example.org/v1".into());
        let elsewhere = |name: &str| [("other".to_string(), [(name.to_string(), seen(4))].into())].into();
        s.listed("serviceaccounts", elsewhere("default"));
        s.listed("widgets.example.org", HashMap::new());
        let empty = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let all_empty = empty(&[("serviceaccounts", "v1"), ("widgets.example.org", "example.org/v1")]);
        // A first backup: no backup to continue, but two types not to list.
        let w = s.begin("ws", HOUR).watched.expect("types holding nothing in ws");
        assert_eq!((w.namespace.as_str(), &w.empty), ("ws", &all_empty));
        assert!(w.covered.is_empty() && w.since.is_empty(), "nothing to continue");
        let in_other = empty(&[("configmaps", "v1"), ("secrets", "v1"), ("widgets.example.org", "example.org/v1")]);
        assert_eq!(s.begin("other", HOUR).watched.unwrap().empty, in_other);
        // `--continuous-list-every=0s`: every type is listed.
        assert!(s.begin("ws", Duration::ZERO).watched.is_none());
        // A watch that failed since it listed, or lists again, is not counted on.
        s.gap("widgets.example.org");
        assert_eq!(s.begin("ws", HOUR).watched.unwrap().empty, empty(&[("serviceaccounts", "v1")]));
        s.relisting("serviceaccounts");
        assert!(s.begin("ws", HOUR).watched.is_none(), "no type left to count on");
        s.listed("serviceaccounts", elsewhere("default"));
        s.listed("widgets.example.org", HashMap::new());
        // An object created in ws: its type is listed (or taken from the watch, continuing).
        s.saw("widgets.example.org", "ws", "w1", seen(9), false, || Some(applied(9)));
        assert_eq!(s.begin("ws", HOUR).watched.unwrap().empty, empty(&[("serviceaccounts", "v1")]));
        // And deleted: nothing of it in ws again.
        s.deleted("widgets.example.org", "ws", "w1");
        let begun = s.begin("ws", HOUR);
        assert_eq!(begun.watched.as_ref().unwrap().empty, all_empty);
        // Continuing a backup: the types it covers as before, and still not the empty ones...
        s.end("ws", begun, Outcome::Completed("b1".into(), false), &RETRY);
        let w = s.begin("ws", HOUR).watched.unwrap();
        assert_eq!(w.since, "b1");
        assert_eq!(w.empty, all_empty);
        assert!(w.covered.contains_key("configmaps") && w.covered.contains_key("secrets"), "{:?}", w.covered);
        // ...until the backup that lists every type is due.
        s.listed.insert("ws".into(), Instant::now() - 2 * HOUR);
        assert!(s.begin("ws", HOUR).watched.is_none(), "every type listed");
    }

    /// Failed backups leave no base to continue, but do not start `--continuous-list-every` again:
    /// a workspace whose backups keep failing still gets one that lists every type when it is due.
    #[test]
    fn failed_backups_still_owe_a_listing_of_every_type_in_time() {
        let mut s = started();
        s.versions.insert("widgets.example.org".into(), "example.org/v1".into());
        s.listed("widgets.example.org", HashMap::new());
        let begun = s.begin("ws", HOUR);
        let w = begun.watched.as_ref().expect("the first backup leaves out the empty type");
        assert!(w.empty.contains_key("widgets.example.org"), "{:?}", w.empty);
        s.end("ws", begun, Outcome::Failed, &RETRY);
        let begun = s.begin("ws", HOUR);
        assert!(begun.watched.is_some(), "not due yet");
        s.end("ws", begun, Outcome::Failed, &RETRY);
        // Two hours after the first, still failing: the next one lists every type.
        s.listed.insert("ws".into(), Instant::now() - 2 * HOUR);
        let begun = s.begin("ws", HOUR);
        assert!(begun.watched.is_none(), "the failed backups put off the listing of every type");
        // One that fails in part (Failed too) leaves it owed; a complete one starts the clock again.
        s.end("ws", begun, Outcome::Failed, &RETRY);
        let begun = s.begin("ws", HOUR);
        assert!(begun.watched.is_none(), "a failed listing of every type counted as done");
        s.end("ws", begun, Outcome::Completed("b1".into(), false), &RETRY);
        assert!(s.listed["ws"].elapsed() < HOUR);
        let w = s.begin("ws", HOUR).watched.expect("continued");
        assert!(w.empty.contains_key("widgets.example.org") && w.since == "b1", "{:?} {}", w.empty, w.since);
        // No longer a workspace: nothing kept for it.
        let begun = s.begin("ws", HOUR);
        s.end("ws", begun, Outcome::Skipped, &RETRY);
        assert!(!s.listed.contains_key("ws"));
    }

    #[test]
    fn after_a_start_a_workspace_with_no_backup_is_found() {
        let mut s = started();
        for ns in ["new", "marked", "running"] {
            let held = s.objects.get_mut("secrets").unwrap();
            held.entry(ns.into()).or_default().insert("x".into(), seen(7));
        }
        s.mark("marked");
        s.running.insert("running".into());
        let backed_up = |ns: &str| ns == "ws";
        assert_eq!(s.unbacked(backed_up), ["new".to_string()].into());
        assert_eq!(s.unbacked(|_| false), ["new".to_string(), "ws".to_string()].into());
        // Backed up by this process since: it has a base.
        let begun = s.begin("new", HOUR);
        s.end("new", begun, Outcome::Completed("new-1".into(), false), &RETRY);
        assert_eq!(s.unbacked(backed_up), BTreeSet::new());
    }

    #[test]
    fn status_and_server_fields_are_not_changes() {
        let a = obj(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n", "resourceVersion": "1"}, "data": {"k": "v"}}),
        );
        let b = obj(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n", "resourceVersion": "2", "managedFields": []}, "data": {"k": "v"}, "status": {"x": 1}}),
        );
        let c = obj(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n", "resourceVersion": "3"}, "data": {"k": "changed"}}),
        );
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        // As a LIST's item (no apiVersion or kind) and as a watch's event: the same.
        let listed = obj(
            serde_json::json!({"metadata": {"name": "a", "namespace": "n", "resourceVersion": "1"}, "data": {"k": "v"}}),
        );
        assert_eq!(fingerprint(&listed), fingerprint(&a));
    }
}
