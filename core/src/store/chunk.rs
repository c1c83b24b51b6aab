//! Upload chunks: the buffers a backup's compressed stream is cut into on its way to a multipart
//! upload, each in its own anonymous memory map.
//!
//! Why not a `Vec`: glibc serves the first large buffer with `mmap` and returns it with `munmap`,
//! but on that free it raises its mmap threshold to the buffer's size, so every later chunk comes
//! from a malloc arena, and an arena keeps what is freed resident. A 100k-object backup passes
//! 20-odd such chunks through several threads' arenas; the retained memory was 4-6 MiB of its
//! peak RSS (docs/benchmarks.md). A map of its own is returned to the system when the part that
//! carries it has been sent, whatever the allocator's state. One map per MiB of compressed
//! output costs one `mmap`/`munmap` pair and its page faults, nothing measurable next to
//! compressing that MiB (docs/benchmarks.md).

use std::io::{self, Read};

use bytes::Bytes;
use memmap2::MmapMut;

/// A chunk being filled: `len` bytes of `map` are data.
pub(crate) struct Chunk {
    map: MmapMut,
    len: usize,
}

impl Chunk {
    /// An empty chunk of `capacity` (more than 0) bytes; its pages are touched only as it fills.
    pub(crate) fn new(capacity: usize) -> io::Result<Self> {
        Ok(Chunk { map: MmapMut::map_anon(capacity.max(1))?, len: 0 })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == self.map.len()
    }

    /// Copies as much of `data` as fits; returns how many bytes that was.
    pub(crate) fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.map.len() - self.len);
        self.map[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Reads from `r` into the free space until the chunk is full or `r` ends; returns how many
    /// bytes were read (0: `r` had ended).
    pub(crate) fn fill_from(&mut self, r: &mut impl Read) -> io::Result<usize> {
        let start = self.len;
        while !self.is_full() {
            match r.read(&mut self.map[self.len..]) {
                Ok(0) => break,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.len - start)
    }

    /// The data as `Bytes`, without a copy: the map is released when the last `Bytes` of it drops.
    pub(crate) fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_takes_what_fits_and_hands_over_exactly_its_data() {
        let mut c = Chunk::new(8).unwrap();
        assert!(c.is_empty());
        assert_eq!(c.fill(b"hello"), 5);
        assert_eq!(c.fill(b" world"), 3, "only what fits");
        assert!(c.is_full());
        assert_eq!(c.fill(b"more"), 0);
        let b = c.into_bytes();
        assert_eq!(&b[..], b"hello wo");
        let tail = b.slice(6..);
        drop(b);
        assert_eq!(&tail[..], b"wo", "a slice keeps the map alive");
    }

    #[test]
    fn a_chunk_reads_until_full_or_the_end() {
        let mut src: &[u8] = b"0123456789";
        let mut c = Chunk::new(4).unwrap();
        assert_eq!(c.fill_from(&mut src).unwrap(), 4);
        assert_eq!(&c.into_bytes()[..], b"0123");
        let mut c = Chunk::new(16).unwrap();
        assert_eq!(c.fill_from(&mut src).unwrap(), 6);
        assert!(!c.is_full());
        assert_eq!(c.fill_from(&mut src).unwrap(), 0, "the reader has ended");
        assert_eq!(&c.into_bytes()[..], b"456789");
    }
}
