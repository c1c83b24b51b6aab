//! etcd backups: snapshot, keys and keys-json, stored under `<prefix>/etcd/<name>/` with a metadata
//! document written last (the same commit rule as object backups).
