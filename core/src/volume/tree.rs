//! The file tree of a volume as a tar stream, and back.
//!
//! The format is a plain tar (GNU headers) that GNU tar and bsdtar can read:
//!
//! - Entries are relative paths in a depth-first walk sorted by file name; the volume root itself
//!   is the first entry, `./`, so its mode, owner and mtime travel too. Names and link targets
//!   longer than 100 bytes use GNU `@LongLink` records.
//! - Every header carries all twelve mode bits, the numeric uid and gid and the mtime in seconds.
//!   A PAX record (`x`) right before an entry adds what the header cannot hold: `mtime` with
//!   nanoseconds, and each extended attribute as `SCHILY.xattr.<name>` (the GNU tar/star
//!   convention). `system.*` attributes are not carried except POSIX ACLs, nor is
//!   `security.selinux`: the cluster labels a volume for the Pod that mounts it, and the labels
//!   of another Pod would lock the new one out.
//! - The second and later names of a file with several hard links are `Link` entries naming the
//!   first; symlinks are `Symlink` entries (never followed); FIFOs are `Fifo` entries. Sockets,
//!   devices and anything on another filesystem are not stored and are listed in
//!   [`TreeStats::skipped`].
//! - File contents are stored whole, holes included (compression makes runs of zeros cheap). On
//!   extraction every 4 KiB-aligned block of zeros becomes a hole again, so sparse files come back
//!   sparse.
//!
//! Extraction treats the archive as untrusted: an entry or hard-link target that is absolute or
//! has a `..` component is refused, as is any path that would pass through a symbolic link, and
//! whatever already sits at a path is removed rather than written through.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Display;
use std::fs::{self, File, FileTimes, Metadata, OpenOptions, Permissions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt, fchown, lchown};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Timespec, Timestamps, UTIME_OMIT};
use tar::{Builder, Entry, EntryType, Header};
use xattr::FileExt as _;

/// What a walk or an extraction saw.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeStats {
    /// Regular files (a hard link's second name counts as a link, not a file).
    pub files: u64,
    /// Directories, the root included.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Second and later names of hard-linked files.
    pub hardlinks: u64,
    /// Bytes of regular-file contents (apparent size).
    pub bytes: u64,
    /// Entries not stored or not restored, each "path: why" (sockets, devices, other filesystems,
    /// an xattr that could not be set...).
    pub skipped: Vec<String>,
}

impl TreeStats {
    fn skip(&mut self, rel: &Path, why: impl Display) {
        self.skipped.push(format!("{}: {why}", shown(rel)));
    }
}

/// PAX key prefix of an extended attribute.
const XATTR_PREFIX: &str = "SCHILY.xattr.";
/// Size of the blocks checked for zeros when recreating holes.
const HOLE_BLOCK: usize = 4096;
const ZERO_BLOCK: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

/// Whether an extended attribute is carried, in either direction.
///
/// `system.*` attributes are filesystem internals (NFSv4 ACLs, inline data...) except the two
/// POSIX ACLs, whose xattr form restores exactly. `security.selinux` belongs to the Pod that mounts
/// the volume, not to the data.
fn carried_xattr(name: &str) -> bool {
    let acl = name == "system.posix_acl_access" || name == "system.posix_acl_default";
    let internal = name.starts_with("system.") || name == "security.selinux";
    (acl || !internal) && !name.contains(['=', '\n'])
}

/// A path relative to the volume as shown to users: the root is `.`.
fn shown(rel: &Path) -> std::path::Display<'_> {
    if rel.as_os_str().is_empty() { Path::new(".") } else { rel }.display()
}

/// Prefixes an error with the path it happened at.
fn at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", shown(path)))
}

/// Whether an xattr call failed only because the filesystem has no extended attributes.
fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error())
}

/// Opens `path` for reading without following a symlink in its last component.
fn open_nofollow(path: &Path, extra: OFlags) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | extra;
    Ok(File::from(rustix::fs::open(path, flags, Mode::empty())?))
}

/// A modification time with nanoseconds; `nanos` is always below one second, also before 1970.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mtime {
    secs: i64,
    nanos: u32,
}

impl Mtime {
    const NANOS: i128 = 1_000_000_000;

    fn of(meta: &Metadata) -> Self {
        let nanos = u32::try_from(meta.mtime_nsec()).unwrap_or(0);
        Mtime { secs: meta.mtime(), nanos }
    }

    fn total_nanos(self) -> i128 {
        i128::from(self.secs) * Self::NANOS + i128::from(self.nanos)
    }

    /// The PAX `mtime` value, a decimal number of seconds such as `1700000000.123456789`.
    fn to_pax(self) -> String {
        let total = self.total_nanos();
        let sign = if total < 0 { "-" } else { "" };
        let abs = total.unsigned_abs();
        let nanos = Self::NANOS.unsigned_abs();
        format!("{sign}{}.{:09}", abs / nanos, abs % nanos)
    }

    fn from_pax(value: &str) -> Option<Self> {
        let (negative, value) = match value.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let (int, frac) = value.split_once('.').unwrap_or((value, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) {
            return None;
        }
        let frac = format!("{:0<9}", &frac[..frac.len().min(9)]);
        let abs = i128::from(int.parse::<u64>().ok()?) * Self::NANOS + frac.parse::<i128>().ok()?;
        let total = if negative { -abs } else { abs };
        Some(Mtime {
            secs: i64::try_from(total.div_euclid(Self::NANOS)).ok()?,
            nanos: u32::try_from(total.rem_euclid(Self::NANOS)).ok()?,
        })
    }

    fn system_time(self) -> SystemTime {
        match u64::try_from(self.secs) {
            Ok(secs) => UNIX_EPOCH + Duration::new(secs, self.nanos),
            Err(_) => {
                UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs()) + Duration::from_nanos(self.nanos.into())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Writes `root`'s tree as a tar stream to `out` and returns `out` (so the caller can finish a
/// compressor).
///
/// Fails, naming the path, when an entry cannot be read or a file changes size while it is read;
/// the stream written so far then has no end-of-archive marker and must be discarded.
pub fn write_tree<W: Write>(root: &Path, out: W) -> io::Result<(W, TreeStats)> {
    let root = fs::canonicalize(root).map_err(at(root))?;
    let root_meta = fs::metadata(&root).map_err(at(&root))?;
    if !root_meta.is_dir() {
        let e = io::Error::new(io::ErrorKind::NotADirectory, "not a directory");
        return Err(at(&root)(e));
    }
    let mut walker = Walker {
        builder: Builder::new(EndGuard { inner: out, failed: false }),
        root_dev: root_meta.dev(),
        root,
        links: HashMap::new(),
        stats: TreeStats::default(),
    };
    match walker.walk() {
        Ok(()) => {
            walker.builder.finish()?;
            let guard = walker.builder.into_inner()?;
            Ok((guard.inner, walker.stats))
        }
        Err(e) => {
            walker.builder.get_mut().failed = true;
            Err(e)
        }
    }
}

/// About how many bytes [`write_tree`] will write for `root`: a header per entry and each file's
/// contents rounded up to tar's blocks (extended headers for xattrs and long names not counted),
/// each hard-linked file once, other filesystems left out — as the walk does. Reads metadata only:
/// the total that progress is shown against.
pub fn measure(root: &Path) -> io::Result<u64> {
    const BLOCK: u64 = 512;
    let root_dev = fs::metadata(root).map_err(at(root))?.dev();
    let (mut total, mut seen) = (2 * BLOCK, std::collections::HashSet::new());
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if meta.dev() != root_dev {
            continue;
        }
        total += BLOCK;
        if meta.is_dir() {
            if let Ok(names) = read_names(&path) {
                pending.extend(names.into_iter().map(|n| path.join(n)));
            }
        } else if meta.is_file() && (meta.nlink() == 1 || seen.insert((meta.dev(), meta.ino()))) {
            total += meta.size().div_ceil(BLOCK) * BLOCK;
        }
    }
    Ok(total)
}

/// Passes writes through until a walk fails; then refuses them, so that the end-of-archive marker
/// `Builder` writes when dropped cannot make a truncated stream look complete.
struct EndGuard<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Write for EndGuard<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("archive abandoned after an error"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads exactly the size written in a file's header, failing if the file shrinks or grows.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other("file grew while being archived")),
            };
        }
        let max = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 && max > 0 {
            let e = io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being archived");
            return Err(e);
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// The state of one `write_tree` walk.
struct Walker<W: Write> {
    builder: Builder<EndGuard<W>>,
    root: PathBuf,
    root_dev: u64,
    /// First archived name of each file with several links, by (device, inode).
    links: HashMap<(u64, u64), PathBuf>,
    stats: TreeStats,
}

impl<W: Write> Walker<W> {
    /// Depth-first, children in file-name order, with an explicit stack (deep trees, small stacks).
    fn walk(&mut self) -> io::Result<()> {
        let mut pending = vec![PathBuf::new()];
        while let Some(rel) = pending.pop() {
            let full = self.root.join(&rel);
            self.visit(&rel, &full, &mut pending).map_err(at(&full))?;
        }
        Ok(())
    }

    fn visit(&mut self, rel: &Path, full: &Path, pending: &mut Vec<PathBuf>) -> io::Result<()> {
        let meta = match fs::symlink_metadata(full) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.stats.skip(rel, "vanished before it could be read");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if meta.dev() != self.root_dev {
            self.stats.skip(rel, "on another filesystem, not stored");
            return Ok(());
        }
        let kind = meta.file_type();
        if kind.is_dir() {
            self.append_plain(rel, full, &meta, EntryType::Directory)?;
            self.stats.dirs += 1;
            let mut names = read_names(full)?;
            names.sort_unstable();
            pending.extend(names.into_iter().rev().map(|name| rel.join(name)));
        } else if kind.is_file() {
            self.append_file(rel, full, &meta)?;
        } else if kind.is_symlink() {
            self.append_symlink(rel, full, &meta)?;
        } else if kind.is_fifo() {
            self.append_plain(rel, full, &meta, EntryType::Fifo)?;
        } else if kind.is_socket() {
            self.stats.skip(rel, "socket, not stored");
        } else {
            self.stats.skip(rel, "device node, not stored");
        }
        Ok(())
    }

    /// A directory or FIFO: a header without data.
    fn append_plain(&mut self, rel: &Path, full: &Path, meta: &Metadata, kind: EntryType) -> io::Result<()> {
        let xattrs = self.read_xattrs(rel, full);
        self.append_pax(meta, &xattrs)?;
        let mut header = header_for(meta, kind, 0);
        let name = if kind == EntryType::Directory { dir_name(rel) } else { rel.into() };
        self.builder.append_data(&mut header, name, io::empty())
    }

    fn append_symlink(&mut self, rel: &Path, full: &Path, meta: &Metadata) -> io::Result<()> {
        let target = match fs::read_link(full) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.stats.skip(rel, "vanished before it could be read");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let xattrs = self.read_xattrs(rel, full);
        self.append_pax(meta, &xattrs)?;
        let mut header = header_for(meta, EntryType::Symlink, 0);
        self.builder.append_link(&mut header, rel, target)?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn append_file(&mut self, rel: &Path, full: &Path, meta: &Metadata) -> io::Result<()> {
        let key = (meta.dev(), meta.ino());
        if meta.nlink() > 1
            && let Some(first) = self.links.get(&key)
        {
            let mut header = header_for(meta, EntryType::Link, 0);
            self.builder.append_link(&mut header, rel, first)?;
            self.stats.hardlinks += 1;
            return Ok(());
        }
        let file = match open_nofollow(full, OFlags::NONBLOCK) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.stats.skip(rel, "vanished before it could be read");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let opened = file.metadata()?;
        if !opened.is_file() || (opened.dev(), opened.ino()) != key {
            return Err(io::Error::other("replaced by another file while being archived"));
        }
        let xattrs = self.read_xattrs(rel, full);
        self.append_pax(&opened, &xattrs)?;
        let size = opened.len();
        let mut header = header_for(&opened, EntryType::Regular, size);
        let reader = ExactReader { inner: file, remaining: size };
        self.builder.append_data(&mut header, rel, reader)?;
        if opened.nlink() > 1 {
            self.links.insert(key, rel.to_path_buf());
        }
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }

    /// The carried extended attributes of `full` (not following a symlink), sorted by name.
    /// Failures are noted in the stats, never fatal.
    fn read_xattrs(&mut self, rel: &Path, full: &Path) -> Vec<(String, Vec<u8>)> {
        let names = match xattr::list(full) {
            Ok(names) => names,
            Err(e) if unsupported(&e) => return Vec::new(),
            Err(e) => {
                self.stats.skip(rel, format_args!("extended attributes not stored: {e}"));
                return Vec::new();
            }
        };
        let mut xattrs = Vec::new();
        for name in names {
            let Some(key) = name.to_str() else {
                self.stats.skip(rel, format_args!("xattr {name:?} not stored: name is not UTF-8"));
                continue;
            };
            if !carried_xattr(key) {
                continue;
            }
            match xattr::get(full, &name) {
                Ok(Some(value)) => xattrs.push((key.to_owned(), value)),
                Ok(None) => {}
                Err(e) => self.stats.skip(rel, format_args!("xattr {key} not stored: {e}")),
            }
        }
        xattrs.sort();
        xattrs
    }

    /// The PAX record before an entry: nanosecond mtime and extended attributes, if any.
    fn append_pax(&mut self, meta: &Metadata, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
        let mtime = Mtime::of(meta);
        let mut records: Vec<(String, Vec<u8>)> = Vec::with_capacity(xattrs.len() + 1);
        if mtime.nanos != 0 || mtime.secs < 0 {
            records.push(("mtime".to_owned(), mtime.to_pax().into_bytes()));
        }
        for (name, value) in xattrs {
            records.push((format!("{XATTR_PREFIX}{name}"), value.clone()));
        }
        let pairs = records.iter().map(|(key, value)| (key.as_str(), value.as_slice()));
        self.builder.append_pax_extensions(pairs)
    }
}

/// The file names in a directory, unsorted.
fn read_names(dir: &Path) -> io::Result<Vec<OsString>> {
    fs::read_dir(dir)?.map(|entry| entry.map(|entry| entry.file_name())).collect()
}

/// A directory's archive name: `./` for the root, else the path with a trailing slash.
fn dir_name(rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        return PathBuf::from("./");
    }
    let mut name = rel.as_os_str().to_owned();
    name.push("/");
    name.into()
}

/// A GNU header with the entry's type, twelve mode bits, numeric owner and mtime in seconds.
fn header_for(meta: &Metadata, kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(meta.mode() & 0o7777);
    header.set_uid(meta.uid().into());
    header.set_gid(meta.gid().into());
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header.set_size(size);
    header
}

// ---------------------------------------------------------------------------------------------
// Extraction
// ---------------------------------------------------------------------------------------------

/// Extracts a stream written by [`write_tree`] into the existing directory `root`.
///
/// Whatever already sits at an entry's path is replaced. Directory modes and mtimes are applied
/// last, deepest first. An owner or xattr that cannot be set is noted in
/// [`TreeStats::skipped`]; anything else that fails stops the extraction with an error naming the
/// entry.
pub fn extract_tree<R: Read>(input: R, root: &Path) -> io::Result<TreeStats> {
    let root = fs::canonicalize(root).map_err(at(root))?;
    let mut extractor = Extractor { root, stats: TreeStats::default(), dirs: Vec::new() };
    let mut archive = tar::Archive::new(input);
    let reading = |e: io::Error| io::Error::new(e.kind(), format!("reading the archive: {e}"));
    // Raw entries: long names and PAX records are read here, see `Extensions`.
    let mut extensions = Extensions::default();
    for entry in archive.entries().map_err(reading)?.raw(true) {
        let mut entry = entry.map_err(reading)?;
        if !extensions.absorb(&mut entry).map_err(reading)? {
            extractor.extract(&mut entry, std::mem::take(&mut extensions))?;
        }
    }
    extractor.finish_dirs()?;
    Ok(extractor.stats)
}

/// The path an archive entry names, relative to the volume, or an error naming it when it is
/// absolute or has a `..` component. `.` components are dropped; the root is the empty path.
fn archive_relative(path: &Path) -> io::Result<PathBuf> {
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => rel.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                let why = "refused: absolute paths and `..` would leave the volume";
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display())));
            }
        }
    }
    Ok(rel)
}

/// The extension members (`L`, `K`, `x`) read before the entry they describe.
///
/// The tar crate's own PAX parser splits records at newlines, which binary xattr values (ACLs,
/// capabilities) may contain; records here are cut by their length, as the format says.
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl Extensions {
    /// Largest extension member accepted (many xattrs, each up to 64 KiB).
    const MAX_SIZE: u64 = 16 << 20;

    /// Keeps `entry` if it is an extension member and says so; global PAX headers are ignored.
    fn absorb<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> io::Result<bool> {
        let kind = entry.header().entry_type();
        let slot = if kind.is_gnu_longname() {
            &mut self.long_name
        } else if kind.is_gnu_longlink() {
            &mut self.long_link
        } else if kind.is_pax_local_extensions() {
            &mut self.pax
        } else {
            return Ok(kind.is_pax_global_extensions());
        };
        if entry.size() > Self::MAX_SIZE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "oversized extension header"));
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        if !kind.is_pax_local_extensions() {
            while data.last() == Some(&0) {
                data.pop();
            }
        }
        *slot = Some(data);
        Ok(true)
    }
}

/// The records of a PAX extended header, each `"<length> <key>=<value>\n"` where the length
/// counts the whole record.
fn pax_records(mut data: &[u8]) -> io::Result<Vec<(&str, &[u8])>> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed PAX record");
    let mut records = Vec::new();
    while data.first().is_some_and(|&b| b != 0) {
        let space = data.iter().position(|&b| b == b' ').ok_or_else(malformed)?;
        let len: usize = std::str::from_utf8(&data[..space]).ok().and_then(|n| n.parse().ok()).ok_or_else(malformed)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(malformed());
        }
        let record = &data[space + 1..len - 1];
        let equals = record.iter().position(|&b| b == b'=').ok_or_else(malformed)?;
        let key = std::str::from_utf8(&record[..equals]).map_err(|_| malformed())?;
        records.push((key, &record[equals + 1..]));
        data = &data[len..];
    }
    Ok(records)
}

/// What a header and the extension members before it say about an entry, besides its contents.
struct Member {
    path: PathBuf,
    link: Option<PathBuf>,
    attrs: Attrs,
}

/// The metadata restored on an entry.
struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Mtime,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn read_member(header: &Header, extensions: Extensions) -> io::Result<Member> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let records = extensions.pax.as_deref().map(pax_records).transpose()?.unwrap_or_default();
    let record = |key: &str| records.iter().rev().find(|(k, _)| *k == key).map(|(_, value)| *value);
    let number = |key: &str, field: io::Result<u64>| match record(key) {
        Some(value) => std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()).ok_or_else(|| invalid(key)),
        None => field,
    };
    let id = |value: u64| u32::try_from(value).map_err(|_| invalid("owner id out of range"));
    let mtime = match record("mtime").and_then(|v| std::str::from_utf8(v).ok()) {
        Some(value) => Mtime::from_pax(value).ok_or_else(|| invalid("malformed PAX mtime"))?,
        None => Mtime { secs: i64::try_from(header.mtime()?).unwrap_or(i64::MAX), nanos: 0 },
    };
    let xattrs = records
        .iter()
        .filter_map(|(key, value)| Some((key.strip_prefix(XATTR_PREFIX)?.to_owned(), value.to_vec())))
        .collect();
    let path = extensions.long_name.or_else(|| record("path").map(<[u8]>::to_vec));
    let link = extensions.long_link.or_else(|| record("linkpath").map(<[u8]>::to_vec));
    let link = link.or_else(|| header.link_name_bytes().map(Cow::into_owned));
    Ok(Member {
        path: bytes_path(path.unwrap_or_else(|| header.path_bytes().into_owned())),
        link: link.map(bytes_path),
        attrs: Attrs {
            mode: header.mode()? & 0o7777,
            uid: id(number("uid", header.uid())?)?,
            gid: id(number("gid", header.gid())?)?,
            mtime,
            xattrs,
        },
    })
}

fn bytes_path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes))
}

/// Something whose owner and xattrs are set: an open file or directory, or a symlink by path.
enum Target<'a> {
    Open(&'a File),
    Symlink(&'a Path),
}

/// The state of one `extract_tree` run.
struct Extractor {
    root: PathBuf,
    stats: TreeStats,
    /// Directories whose mode and mtime are applied once everything is extracted.
    dirs: Vec<(PathBuf, u32, Mtime)>,
}

impl Extractor {
    fn extract<R: Read>(&mut self, entry: &mut Entry<'_, R>, extensions: Extensions) -> io::Result<()> {
        let header = entry.header();
        let kind = header.entry_type();
        let named = String::from_utf8_lossy(&header.path_bytes()).into_owned();
        let member = read_member(header, extensions).map_err(at(Path::new(&named)))?;
        let Member { path, link, attrs } = member;
        let rel = archive_relative(&path)?;
        if rel.as_os_str().is_empty() && kind != EntryType::Directory {
            let e = io::Error::new(io::ErrorKind::InvalidData, "refused: only a directory may name the volume root");
            return Err(at(&path)(e));
        }
        let link = || link.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "link without a target"));
        let extracted = match kind {
            EntryType::Regular | EntryType::Continuous => self.extract_file(entry, &rel, &attrs),
            EntryType::Directory => self.extract_dir(&rel, attrs),
            EntryType::Symlink => link().and_then(|target| self.extract_symlink(&target, &rel, &attrs)),
            EntryType::Link => link().and_then(|target| self.extract_hardlink(&target, &rel)),
            EntryType::Fifo => self.extract_fifo(&rel, &attrs),
            // Its sparse map would have to be read here; `write_tree` never writes one.
            EntryType::GNUSparse => {
                Err(io::Error::new(io::ErrorKind::Unsupported, "GNU sparse entries are not supported"))
            }
            other => {
                self.stats.skip(&rel, format_args!("entry type {other:?} not restored"));
                Ok(())
            }
        };
        extracted.map_err(at(&path))
    }

    fn extract_file<R: Read>(&mut self, entry: &mut Entry<'_, R>, rel: &Path, attrs: &Attrs) -> io::Result<()> {
        let (full, _) = self.prepare(rel, false)?;
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&full)?;
        let size = copy_with_holes(entry, &mut file)?;
        self.set_owner_and_xattrs(rel, attrs, &Target::Open(&file))?;
        set_mode_and_mtime(&file, attrs.mode, attrs.mtime)?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }

    fn extract_dir(&mut self, rel: &Path, attrs: Attrs) -> io::Result<()> {
        let full = self.root.join(rel);
        if !rel.as_os_str().is_empty() && !self.prepare(rel, true)?.1 {
            fs::DirBuilder::new().mode(0o700).create(&full)?;
        }
        let dir = open_nofollow(&full, OFlags::DIRECTORY)?;
        self.set_owner_and_xattrs(rel, &attrs, &Target::Open(&dir))?;
        self.dirs.push((rel.to_path_buf(), attrs.mode, attrs.mtime));
        self.stats.dirs += 1;
        Ok(())
    }

    fn extract_symlink(&mut self, target: &Path, rel: &Path, attrs: &Attrs) -> io::Result<()> {
        let (full, _) = self.prepare(rel, false)?;
        std::os::unix::fs::symlink(target, &full)?;
        self.set_owner_and_xattrs(rel, attrs, &Target::Symlink(&full))?;
        let times = Timestamps {
            last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
            last_modification: Timespec { tv_sec: attrs.mtime.secs, tv_nsec: attrs.mtime.nanos.into() },
        };
        if let Err(e) = rustix::fs::utimensat(CWD, &full, &times, AtFlags::SYMLINK_NOFOLLOW) {
            self.stats.skip(rel, format_args!("mtime not restored: {e}"));
        }
        self.stats.symlinks += 1;
        Ok(())
    }

    fn extract_hardlink(&mut self, target: &Path, rel: &Path) -> io::Result<()> {
        let target_rel =
            archive_relative(target).map_err(|e| io::Error::new(e.kind(), format!("hard link target {e}")))?;
        if target_rel.as_os_str().is_empty() {
            let why = "refused: hard link to the volume root";
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        self.check_parents(&target_rel, false)?;
        let (full, _) = self.prepare(rel, false)?;
        fs::hard_link(self.root.join(&target_rel), &full)?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    fn extract_fifo(&mut self, rel: &Path, attrs: &Attrs) -> io::Result<()> {
        let (full, _) = self.prepare(rel, false)?;
        rustix::fs::mknodat(CWD, &full, FileType::Fifo, Mode::from_raw_mode(0o600), 0)?;
        let fifo = open_nofollow(&full, OFlags::NONBLOCK)?;
        self.set_owner_and_xattrs(rel, attrs, &Target::Open(&fifo))?;
        set_mode_and_mtime(&fifo, attrs.mode, attrs.mtime)
    }

    /// Makes `rel`'s parent directories exist and clears whatever sits at `rel`, except an
    /// existing directory when `keep_dir`. Returns the full path and whether a directory was kept.
    fn prepare(&self, rel: &Path, keep_dir: bool) -> io::Result<(PathBuf, bool)> {
        self.check_parents(rel, true)?;
        let full = self.root.join(rel);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() && keep_dir => return Ok((full, true)),
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&full)?,
            Ok(_) => fs::remove_file(&full)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok((full, false))
    }

    /// Refuses a path whose parents pass through a symbolic link or a non-directory; creates the
    /// missing ones when `create`.
    fn check_parents(&self, rel: &Path, create: bool) -> io::Result<()> {
        let Some(parent) = rel.parent() else { return Ok(()) };
        let mut full = self.root.clone();
        for (depth, component) in parent.components().enumerate() {
            full.push(component);
            let prefix = || parent.components().take(depth + 1).collect::<PathBuf>();
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    let why = format!("refused: {} is a symbolic link", prefix().display());
                    return Err(io::Error::new(io::ErrorKind::InvalidData, why));
                }
                Ok(_) => {
                    let why = format!("{} is not a directory", prefix().display());
                    return Err(io::Error::new(io::ErrorKind::NotADirectory, why));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => fs::create_dir(&full)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Owner first (chown clears setuid and file capabilities), then extended attributes.
    fn set_owner_and_xattrs(&mut self, rel: &Path, attrs: &Attrs, target: &Target<'_>) -> io::Result<()> {
        let (uid, gid) = (Some(attrs.uid), Some(attrs.gid));
        let owned = match target {
            Target::Open(file) => fchown(file, uid, gid),
            Target::Symlink(path) => lchown(path, uid, gid),
        };
        match owned {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                self.stats.skip(rel, format_args!("owner {}:{} not restored: {e}", attrs.uid, attrs.gid));
            }
            Err(e) => return Err(e),
        }
        for (name, value) in &attrs.xattrs {
            if !carried_xattr(name) {
                self.stats.skip(rel, format_args!("xattr {name} not restored: not carried"));
                continue;
            }
            let set = match target {
                Target::Open(file) => file.set_xattr(name, value),
                Target::Symlink(path) => xattr::set(path, name, value),
            };
            if let Err(e) = set {
                self.stats.skip(rel, format_args!("xattr {name} not restored: {e}"));
            }
        }
        Ok(())
    }

    /// Directory modes and mtimes, deepest first, once their children exist.
    fn finish_dirs(&mut self) -> io::Result<()> {
        for (rel, mode, mtime) in std::mem::take(&mut self.dirs).into_iter().rev() {
            let full = self.root.join(&rel);
            self.check_parents(&rel, false)
                .and_then(|()| open_nofollow(&full, OFlags::DIRECTORY))
                .and_then(|dir| set_mode_and_mtime(&dir, mode, mtime))
                .map_err(at(&rel))?;
        }
        Ok(())
    }
}

/// Mode after owner (chown clears setuid), mtime last.
fn set_mode_and_mtime(file: &File, mode: u32, mtime: Mtime) -> io::Result<()> {
    file.set_permissions(Permissions::from_mode(mode))?;
    file.set_times(FileTimes::new().set_modified(mtime.system_time()))
}

/// Copies `input` into the new, empty `file`, seeking over 4 KiB-aligned blocks of zeros instead
/// of writing them, so that they stay holes. Returns the file's size.
fn copy_with_holes(input: &mut impl Read, file: &mut File) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * HOLE_BLOCK];
    let (mut logical, mut cursor) = (0u64, 0u64);
    loop {
        let filled = read_full(input, &mut buf)?;
        for block in buf[..filled].chunks(HOLE_BLOCK) {
            if block != &ZERO_BLOCK[..block.len()] {
                if cursor != logical {
                    file.seek(SeekFrom::Start(logical))?;
                }
                file.write_all(block)?;
                cursor = logical + block.len() as u64;
            }
            logical += block.len() as u64;
        }
        if filled < buf.len() {
            break;
        }
    }
    file.set_len(logical)?;
    Ok(logical)
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{chown, symlink};

    use sha2::{Digest, Sha256};

    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// Deterministic pseudo-random bytes (a 64-bit LCG, high bits).
    fn lcg_bytes(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (state >> 56) as u8
            })
            .collect()
    }

    fn set_mtime(path: &Path, secs: i64, nanos: i64) {
        let times = Timestamps {
            last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
            last_modification: Timespec { tv_sec: secs, tv_nsec: nanos },
        };
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    fn write_file(path: &Path, data: &[u8], mode: u32) {
        fs::write(path, data).unwrap();
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    fn long_name() -> PathBuf {
        Path::new(&"d".repeat(60)).join("f".repeat(80))
    }

    /// Builds the tree every round-trip test archives. Returns whether the filesystem took user
    /// xattrs (tmpfs before 6.6 and some overlay setups do not; the xattr checks then only cover
    /// the absence of attributes).
    fn build_source(root: &Path) -> bool {
        let dir = root.join("dir");
        fs::create_dir_all(dir.join("d".repeat(60))).unwrap();
        fs::create_dir(dir.join("private")).unwrap();
        fs::set_permissions(dir.join("private"), Permissions::from_mode(0o750)).unwrap();
        fs::create_dir(dir.join("shared")).unwrap();
        fs::set_permissions(dir.join("shared"), Permissions::from_mode(0o1777)).unwrap();
        write_file(&root.join("random.bin"), &lcg_bytes(3 * MIB as usize, 7), 0o644);
        write_file(&dir.join("owned.txt"), b"belongs to 1000\n", 0o600);
        chown(dir.join("owned.txt"), Some(1000), Some(1000)).unwrap();
        write_file(&root.join("setuid-bin"), b"#!/bin/sh\n", 0o4755);
        symlink("random.bin", root.join("link-rel")).unwrap();
        symlink("../missing", dir.join("dangling")).unwrap();
        symlink(long_name(), dir.join("long-link")).unwrap();
        write_file(&dir.join(long_name()), b"deep\n", 0o644);
        write_file(&root.join("hard-a"), b"one inode, two names\n", 0o640);
        fs::hard_link(root.join("hard-a"), dir.join("hard-b")).unwrap();
        let sparse = File::create(root.join("sparse.img")).unwrap();
        sparse.set_len(64 * MIB).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&sparse, &[0xA5; 4096], 32 * MIB).unwrap();
        write_file(&root.join("empty"), b"", 0o644);
        write_file(&root.join("xattr.txt"), b"has attributes\n", 0o644);
        let xattrs = xattr::set(root.join("xattr.txt"), "user.test", b"hello").is_ok();
        if xattrs {
            xattr::set(dir.join("private"), "user.dir", b"\x00binary\n=").unwrap();
        }
        rustix::fs::mknodat(CWD, root.join("fifo"), FileType::Fifo, Mode::from_raw_mode(0o640), 0).unwrap();
        set_mtime(&root.join("random.bin"), 1_600_000_000, 123_456_789);
        set_mtime(&dir.join("private"), 1_500_000_000, 0);
        set_mtime(&root.join("link-rel"), 1_400_000_000, 5);
        set_mtime(&dir, 1_650_000_000, 42);
        xattrs
    }

    /// What the tests compare of one entry.
    #[derive(Debug, PartialEq)]
    struct Node {
        kind: &'static str,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: (i64, i64),
        /// SHA-256 of a file, target of a symlink.
        content: String,
        xattrs: BTreeMap<String, Vec<u8>>,
    }

    /// Every entry under `root`, by relative path (the root is ``), read independently of the
    /// code under test.
    fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
        let mut nodes = BTreeMap::new();
        let mut pending = vec![PathBuf::new()];
        while let Some(rel) = pending.pop() {
            let full = root.join(&rel);
            let meta = fs::symlink_metadata(&full).unwrap();
            let kind = meta.file_type();
            let (kind, content) = if kind.is_dir() {
                for entry in fs::read_dir(&full).unwrap() {
                    pending.push(rel.join(entry.unwrap().file_name()));
                }
                ("dir", String::new())
            } else if kind.is_symlink() {
                ("symlink", fs::read_link(&full).unwrap().display().to_string())
            } else if kind.is_fifo() {
                ("fifo", String::new())
            } else {
                let mut hasher = Sha256::new();
                let (mut file, mut buf) = (File::open(&full).unwrap(), vec![0u8; 1 << 16]);
                loop {
                    match file.read(&mut buf).unwrap() {
                        0 => break,
                        n => hasher.update(&buf[..n]),
                    }
                }
                ("file", hex::encode(hasher.finalize()))
            };
            let xattrs = xattr::list(&full)
                .unwrap()
                .filter_map(|name| name.into_string().ok())
                .filter(|name| name != "security.selinux")
                .map(|name| {
                    let value = xattr::get(&full, &name).unwrap().unwrap();
                    (name, value)
                })
                .collect();
            let node = Node {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                content,
                xattrs,
            };
            nodes.insert(rel, node);
        }
        nodes
    }

    fn archive_of(root: &Path) -> (Vec<u8>, TreeStats) {
        write_tree(root, Vec::new()).unwrap()
    }

    #[test]
    fn round_trip_preserves_the_tree() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let xattrs = build_source(src.path());
        let (archive, written) = archive_of(src.path());
        let extracted = extract_tree(archive.as_slice(), dst.path()).unwrap();

        let (before, after) = (snapshot(src.path()), snapshot(dst.path()));
        assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
        for (path, node) in &before {
            assert_eq!(Some(node), after.get(path), "{}", path.display());
        }
        assert_eq!(after[Path::new("setuid-bin")].mode, 0o4755);
        assert_eq!(after[Path::new("dir/shared")].mode, 0o1777);
        assert_eq!((after[Path::new("dir/owned.txt")].uid, after[Path::new("dir/owned.txt")].gid), (1000, 1000));
        assert_eq!(after[Path::new("random.bin")].mtime, (1_600_000_000, 123_456_789));
        assert_eq!(after[Path::new("link-rel")].mtime, (1_400_000_000, 5));
        assert_eq!(after[Path::new("dir")].mtime, (1_650_000_000, 42));
        if xattrs {
            assert_eq!(after[Path::new("xattr.txt")].xattrs["user.test"], b"hello");
            assert_eq!(after[Path::new("dir/private")].xattrs["user.dir"], b"\x00binary\n=");
        }

        let ino = |rel: &str| fs::metadata(dst.path().join(rel)).unwrap().ino();
        assert_eq!(ino("hard-a"), ino("dir/hard-b"));
        let sparse = fs::metadata(dst.path().join("sparse.img")).unwrap();
        assert_eq!(sparse.len(), 64 * MIB);
        assert!(sparse.blocks() * 512 < MIB, "{} bytes allocated", sparse.blocks() * 512);

        let expected = TreeStats {
            files: 8,
            dirs: 5,
            symlinks: 3,
            hardlinks: 1,
            bytes: 3 * MIB + 16 + 10 + 5 + 21 + 64 * MIB + 15,
            skipped: Vec::new(),
        };
        assert_eq!(written, expected);
        assert_eq!(extracted, written);
    }

    #[test]
    fn measure_is_close_to_what_the_walk_writes() {
        let src = tempfile::tempdir().unwrap();
        build_source(src.path());
        let (archive, _) = archive_of(src.path());
        let measured = measure(src.path()).unwrap();
        let written = archive.len() as u64;
        // The walk adds extended headers (nanosecond times, xattrs); tar pads the end to 10 KiB.
        assert!(measured <= written && measured * 100 >= written * 99, "measured {measured}, written {written}");
    }

    #[test]
    fn extracting_twice_replaces_existing_entries() {
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        build_source(src.path());
        let (archive, written) = archive_of(src.path());
        extract_tree(archive.as_slice(), dst.path()).unwrap();
        fs::write(dst.path().join("random.bin"), b"changed since").unwrap();
        let again = extract_tree(archive.as_slice(), dst.path()).unwrap();
        assert_eq!(again, written);
        assert_eq!(snapshot(src.path()), snapshot(dst.path()));
        let ino = |rel: &str| fs::metadata(dst.path().join(rel)).unwrap().ino();
        assert_eq!(ino("hard-a"), ino("dir/hard-b"));
    }

    #[test]
    fn existing_symlinks_in_the_volume_are_replaced_not_followed() {
        let (src, base) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        fs::create_dir(src.path().join("dir")).unwrap();
        fs::write(src.path().join("dir/inner.txt"), b"inner").unwrap();
        fs::write(src.path().join("top.txt"), b"top").unwrap();
        let (archive, _) = archive_of(src.path());

        let (root, outside) = (base.path().join("root"), base.path().join("outside"));
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim.txt"), b"original").unwrap();
        symlink(outside.join("victim.txt"), root.join("top.txt")).unwrap();
        symlink(&outside, root.join("dir")).unwrap();

        extract_tree(archive.as_slice(), &root).unwrap();
        assert_eq!(fs::read(outside.join("victim.txt")).unwrap(), b"original");
        assert_eq!(read_names(&outside).unwrap(), vec![OsString::from("victim.txt")]);
        assert!(fs::symlink_metadata(root.join("top.txt")).unwrap().is_file());
        assert!(fs::symlink_metadata(root.join("dir")).unwrap().is_dir());
        assert_eq!(fs::read(root.join("dir/inner.txt")).unwrap(), b"inner");
    }

    /// One entry of a hand-made archive: name and link name bytes go in unchecked.
    fn raw_entry(builder: &mut Builder<Vec<u8>>, name: &[u8], kind: EntryType, link: &[u8], data: &[u8]) {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    /// A volume root inside a base directory, to see what lands next to it.
    fn volume() -> (tempfile::TempDir, PathBuf) {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        fs::create_dir(&root).unwrap();
        (base, root)
    }

    #[test]
    fn paths_leaving_the_volume_are_refused() {
        let (base, root) = volume();
        let absolute = base.path().join("absolute");
        let names: [&[u8]; 3] = [b"../escape", b"a/../../escape", absolute.as_os_str().as_encoded_bytes()];
        for name in names {
            let mut builder = Builder::new(Vec::new());
            raw_entry(&mut builder, name, EntryType::Regular, b"", b"pwned");
            let archive = builder.into_inner().unwrap();
            let err = extract_tree(archive.as_slice(), &root).unwrap_err();
            let name = String::from_utf8_lossy(name);
            assert!(err.to_string().contains(name.as_ref()), "{err}");
            assert!(err.to_string().contains("refused"), "{err}");
        }
        assert_eq!(read_names(base.path()).unwrap(), vec![OsString::from("root")]);
        assert!(read_names(&root).unwrap().is_empty());
    }

    #[test]
    fn hard_links_leaving_the_volume_are_refused() {
        let (base, root) = volume();
        fs::write(base.path().join("secret"), b"secret").unwrap();
        let mut builder = Builder::new(Vec::new());
        raw_entry(&mut builder, b"inside", EntryType::Link, b"../secret", b"");
        let archive = builder.into_inner().unwrap();
        let err = extract_tree(archive.as_slice(), &root).unwrap_err().to_string();
        assert!(err.contains("inside") && err.contains("../secret"), "{err}");
        assert_eq!(fs::metadata(base.path().join("secret")).unwrap().nlink(), 1);
        assert!(read_names(&root).unwrap().is_empty());
    }

    #[test]
    fn symlinks_from_the_archive_are_never_passed_through() {
        let (base, root) = volume();
        let outside = base.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"secret").unwrap();
        let target = outside.as_os_str().as_encoded_bytes();
        let attempts: [(&[u8], EntryType, &[u8]); 3] = [
            (b"s/pwned", EntryType::Regular, b""),
            (b"s/sub/", EntryType::Directory, b""),
            (b"l", EntryType::Link, b"s/secret"),
        ];
        for (name, kind, link) in attempts {
            let mut builder = Builder::new(Vec::new());
            raw_entry(&mut builder, b"s", EntryType::Symlink, target, b"");
            raw_entry(&mut builder, name, kind, link, b"");
            let archive = builder.into_inner().unwrap();
            let err = extract_tree(archive.as_slice(), &root).unwrap_err().to_string();
            assert!(err.contains(std::str::from_utf8(name).unwrap()), "{err}");
            assert!(err.contains("s is a symbolic link"), "{err}");
        }
        assert_eq!(read_names(&outside).unwrap(), vec![OsString::from("secret")]);
        assert_eq!(fs::metadata(outside.join("secret")).unwrap().nlink(), 1);
    }

    #[test]
    fn sockets_are_skipped_with_a_reason() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a.txt"), b"a").unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(src.path().join("sock")).unwrap();
        let (archive, stats) = archive_of(src.path());
        assert_eq!(stats.skipped, vec!["sock: socket, not stored".to_owned()]);
        assert_eq!((stats.files, stats.dirs), (1, 1));
        let dst = tempfile::tempdir().unwrap();
        let extracted = extract_tree(archive.as_slice(), dst.path()).unwrap();
        assert_eq!(read_names(dst.path()).unwrap(), vec![OsString::from("a.txt")]);
        assert_eq!((extracted.files, extracted.dirs, extracted.skipped.len()), (1, 1, 0));
    }

    #[test]
    fn a_file_that_changes_size_fails_the_read() {
        let read = |data: &[u8], size: u64| {
            let reader = ExactReader { inner: data, remaining: size };
            io::copy(&mut { reader }, &mut io::sink())
        };
        assert_eq!(read(b"abc", 3).unwrap(), 3);
        let shrank = read(b"abc", 5).unwrap_err();
        assert_eq!(shrank.kind(), io::ErrorKind::UnexpectedEof);
        assert!(read(b"abc", 2).unwrap_err().to_string().contains("grew"));
    }

    #[test]
    fn a_failed_walk_leaves_no_end_marker() {
        let mut builder = Builder::new(EndGuard { inner: Vec::new(), failed: false });
        let mut header = Header::new_gnu();
        header.set_size(1);
        builder.append_data(&mut header, "a", &b"a"[..]).unwrap();
        builder.get_mut().failed = true;
        let written = builder.get_ref().inner.len();
        drop(builder);
        assert_eq!(written, 1024, "header and one data block, no trailing zero blocks");
    }

    #[test]
    fn pax_mtime_round_trips() {
        let cases = [
            (Mtime { secs: 1_700_000_000, nanos: 123_456_789 }, "1700000000.123456789"),
            (Mtime { secs: -2, nanos: 500_000_000 }, "-1.500000000"),
            (Mtime { secs: 0, nanos: 1 }, "0.000000001"),
        ];
        for (mtime, pax) in cases {
            assert_eq!(mtime.to_pax(), pax);
            assert_eq!(Mtime::from_pax(pax), Some(mtime));
        }
        assert_eq!(Mtime::from_pax("12"), Some(Mtime { secs: 12, nanos: 0 }));
        assert_eq!(Mtime::from_pax("1.5"), Some(Mtime { secs: 1, nanos: 500_000_000 }));
        assert_eq!(Mtime::from_pax("1.1234567891"), Some(Mtime { secs: 1, nanos: 123_456_789 }));
        for bad in ["", "x", "1.x", "-", ".5", "1e3"] {
            assert_eq!(Mtime::from_pax(bad), None, "{bad}");
        }
        let before = Mtime { secs: -2, nanos: 500_000_000 }.system_time();
        assert_eq!(UNIX_EPOCH.duration_since(before).unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn pax_records_are_cut_by_length_not_newlines() {
        let mut builder = Builder::new(Vec::new());
        let value: &[u8] = b"\n\x00a=b\n";
        builder.append_pax_extensions([("SCHILY.xattr.user.bin", value), ("mtime", b"1.5".as_slice())]).unwrap();
        let archive = builder.into_inner().unwrap();
        let size = usize::try_from(Header::from_byte_slice(&archive[..512]).size().unwrap()).unwrap();
        let records = pax_records(&archive[512..512 + size]).unwrap();
        assert_eq!(records, vec![("SCHILY.xattr.user.bin", value), ("mtime", b"1.5".as_slice())]);
        for bad in [b"5 a=b\n".as_slice(), b"99 a=b\n", b"x a=b\n", b"7 ab\nc\n", b"6 a=bc"] {
            assert!(pax_records(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn xattr_policy_keeps_data_and_acls_only() {
        for carried in
            ["user.test", "trusted.x", "security.capability", "system.posix_acl_access", "system.posix_acl_default"]
        {
            assert!(carried_xattr(carried), "{carried}");
        }
        for dropped in ["system.nfs4_acl", "system.data", "security.selinux", "user.a=b"] {
            assert!(!carried_xattr(dropped), "{dropped}");
        }
    }
}
