//! The bounded reading of an archive's tar stream: every header checked before the tar reader acts
//! on it, so a crafted archive cannot make a reader allocate or read without bound.

use std::io::{self, Read};

use super::{BLOCK, MAX_LONG_NAME, MAX_OBJECT_BYTES};

/// Checks each tar header as the decompressed stream passes through, before the tar reader acts
/// on it: only regular files up to [`MAX_OBJECT_BYTES`] and GNU long names up to 4 KiB (all our
/// writer produces), and no more bytes than `max_total`. The tar reader buffers long names and
/// PAX records whole, so without this a small zstd bomb could make it allocate gigabytes.
pub struct Bounded<R> {
    inner: R,
    /// Data bytes to pass before the next header.
    skip: u64,
    header: Vec<u8>,
    total: u64,
    max_total: u64,
}

impl<R> Bounded<R> {
    pub fn new(inner: R, max_total: u64) -> Self {
        Bounded { inner, skip: 0, header: Vec::with_capacity(BLOCK as usize), total: 0, max_total }
    }

    fn inspect(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.total += data.len() as u64;
        if self.total > self.max_total {
            return Err(invalid(format!(
                "the archive decompresses to more than {} bytes, more than its writer puts in it (a zstd bomb?)",
                self.max_total
            )));
        }
        while !data.is_empty() {
            if self.skip > 0 {
                let k = (self.skip.min(data.len() as u64)) as usize;
                self.skip -= k as u64;
                data = &data[k..];
                continue;
            }
            let k = (BLOCK as usize - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..k]);
            data = &data[k..];
            if self.header.len() == BLOCK as usize {
                self.skip = check_header(&self.header)?;
                self.header.clear();
            }
        }
        Ok(())
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The data length (padded) that follows a tar header, or why the header is refused.
fn check_header(h: &[u8]) -> io::Result<u64> {
    if h.iter().all(|b| *b == 0) {
        return Ok(0); // end-of-archive block
    }
    let size = header_size(&h[124..136]).ok_or_else(|| invalid("a tar header has an unreadable size".into()))?;
    let (what, max) = match h[156] {
        b'0' | 0 => ("an object", MAX_OBJECT_BYTES),
        b'L' => ("a long-name record", MAX_LONG_NAME),
        t => {
            return Err(invalid(format!(
                "a tar entry of type {:?} is not part of a backup archive (only regular files)",
                t as char
            )));
        }
    };
    if size > max {
        return Err(invalid(format!(
            "{what} of {size} bytes is larger than the largest the API server accepts ({max} bytes): refused before reading it"
        )));
    }
    Ok(size.div_ceil(BLOCK) * BLOCK)
}

/// A tar size field: octal ASCII, or GNU base-256 (high bit set).
fn header_size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        let mut v: u64 = (f[0] & 0x7f) as u64;
        for b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(*b as u64)?;
        }
        return Some(v);
    }
    let text = std::str::from_utf8(f).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.inspect(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;

    use super::*;
    use crate::archive::{Expected, read_verified};

    /// zstd of one tar header (`kind`, claiming `size`) followed by `zeros` zero bytes.
    fn bomb(kind: tar::EntryType, size: u64, zeros: usize) -> Vec<u8> {
        let mut raw = Vec::new();
        let mut enc = zstd::Encoder::new(&mut raw, 1).unwrap();
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(kind);
        h.set_cksum();
        enc.write_all(h.as_bytes()).unwrap();
        enc.write_all(&vec![0u8; zeros]).unwrap();
        enc.finish().unwrap();
        raw
    }

    #[test]
    fn oversized_and_foreign_records_are_refused_before_they_are_read() {
        let expected: BTreeMap<String, String> = BTreeMap::new();
        // A long name claiming 1 GiB: the tar reader would buffer it whole.
        let err = read_verified(
            bomb(tar::EntryType::GNULongName, 1 << 30, 1 << 16).as_slice(),
            Expected::map(&expected),
            |_| Ok(()),
        )
        .unwrap_err();
        assert!(
            err.contains("a long-name record of 1073741824 bytes") && err.contains("refused before reading it"),
            "{err}"
        );
        // An object larger than the API server accepts.
        let err =
            read_verified(bomb(tar::EntryType::Regular, 4 << 20, 0).as_slice(), Expected::map(&expected), |_| Ok(()))
                .unwrap_err();
        assert!(err.contains("an object of 4194304 bytes"), "{err}");
        // PAX records (which could change sizes behind the check) and other types.
        let err =
            read_verified(bomb(tar::EntryType::XHeader, 100, 512).as_slice(), Expected::map(&expected), |_| Ok(()))
                .unwrap_err();
        assert!(err.contains("type 'x'") && err.contains("only regular files"), "{err}");
    }

    #[test]
    fn a_stream_longer_than_its_entries_allow_is_refused() {
        // Legal records, but more data than one object can take: many maximal long names.
        let mut raw = Vec::new();
        {
            let mut enc = zstd::Encoder::new(&mut raw, 1).unwrap();
            for _ in 0..2000 {
                let mut h = tar::Header::new_gnu();
                h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
                h.set_size(MAX_LONG_NAME);
                h.set_entry_type(tar::EntryType::GNULongName);
                h.set_cksum();
                enc.write_all(h.as_bytes()).unwrap();
                enc.write_all(&[b'a'; MAX_LONG_NAME as usize]).unwrap();
            }
            enc.finish().unwrap();
        }
        let mut b = Bounded::new(zstd::Decoder::new(raw.as_slice()).unwrap(), 1 << 20);
        let err = std::io::copy(&mut b, &mut std::io::sink()).unwrap_err();
        assert!(err.to_string().contains("decompresses to more than 1048576 bytes"), "{err}");
    }
}
