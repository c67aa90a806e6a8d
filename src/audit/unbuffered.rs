//! Writing records past the page cache (`O_DIRECT`) over a preallocated audit file.
//!
//! Why: a buffered `pwrite` followed by `fdatasync` spends much of its system time on the page
//! cache (copying the bytes in, then finding, locking and writing back the dirty pages). On
//! the benchmark machine it cost 46-48 µs of system CPU per synced batch; the same write
//! through `O_DIRECT`, then `fdatasync` for the disk's cache, cost 32-33 µs (BENCHMARKS.md,
//! session 27). The writer syncs up to once per message, so that CPU is taken from the
//! messages themselves.
//!
//! `O_DIRECT` wants the file offset, the length and the memory address of every write aligned
//! to the device's block. A batch of records is none of these. So this keeps the file's last,
//! partly filled block in an aligned buffer and writes from the start of that block: the
//! bytes already there, the new ones, then zeros up to the next block boundary. Those zeros
//! are the ones the preallocated file holds there already, so the file's content is the same
//! as after a buffered write. It is only used over preallocated space, where a
//! positioned write at the end of the data is what the writer does anyway.
//!
//! Owns: the `O_DIRECT` descriptor and the cached last block. Must not: decide where or when
//! records are written or synced (the writer does), or touch the file in any other way.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The alignment used for offsets, lengths and memory: a page, which also covers devices
/// with 512-byte blocks. A device that needs more refuses the first write (`EINVAL`) and the
/// writer goes back to buffered writes.
pub const ALIGN: usize = 4096;

/// An `O_DIRECT` descriptor of the audit file and the file's last partial block.
#[derive(Debug)]
pub struct Unbuffered {
    file: File,
    /// The aligned window is `buf[at..]` (replaced, never grown in place, by
    /// [`Unbuffered::room`]).
    buf: Vec<u8>,
    at: usize,
    /// The data size whose last partial block is cached in the window's first `tail` bytes;
    /// `None` when unknown (first write, or a write that may have failed part-way).
    tail_of: Option<u64>,
    tail: usize,
}

impl Unbuffered {
    /// Open `path` with `O_DIRECT`, if it is still the file `id` (device, inode) the writer
    /// has open and the file system allows it. `Ok(None)`: not possible here, write buffered.
    pub fn open(path: &Path, id: (u64, u64)) -> io::Result<Option<Unbuffered>> {
        let direct = rustix::fs::OFlags::DIRECT.bits() as i32;
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(direct)
            .open(path)
        {
            Ok(f) => f,
            // EINVAL: the file system has no O_DIRECT (tmpfs on older kernels, some FUSE).
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if (meta.dev(), meta.ino()) != id {
            // Renamed away (logrotate) since the writer opened it: never write another file.
            return Ok(None);
        }
        let mut u = Unbuffered {
            file,
            buf: Vec::new(),
            at: 0,
            tail_of: None,
            tail: 0,
        };
        u.room(2 * ALIGN);
        Ok(Some(u))
    }

    /// Write `data` at `size`, the end of the file's data, over zeros already there. Not
    /// synced. An `EINVAL` error means the device refuses the alignment: nothing was written.
    pub fn write_at_end(&mut self, size: u64, data: &[u8]) -> io::Result<()> {
        let block = size - size % ALIGN as u64;
        let head = (size - block) as usize;
        // Taken: a write that fails part-way leaves the cached block unknown.
        let known = self.tail_of.take();
        if known != Some(size) || self.tail != head {
            self.read_head(block, head)?;
        }
        let used = head + data.len();
        let padded = used.div_ceil(ALIGN) * ALIGN;
        self.room(padded);
        let window = &mut self.buf[self.at..self.at + padded];
        window[head..used].copy_from_slice(data);
        window[used..].fill(0);
        self.file.write_all_at(window, block)?;
        // Keep the new last partial block for the next write.
        let last = used - used % ALIGN;
        self.buf
            .copy_within(self.at + last..self.at + used, self.at);
        self.tail = used - last;
        self.tail_of = Some(size + data.len() as u64);
        Ok(())
    }

    /// Read the first `head` bytes of the block at `block` (the data before `size`) into the
    /// window.
    fn read_head(&mut self, block: u64, head: usize) -> io::Result<()> {
        self.tail = 0;
        if head == 0 {
            return Ok(());
        }
        // A whole block: near the end of the file the read returns less, which is fine.
        let window = &mut self.buf[self.at..self.at + ALIGN];
        let got = loop {
            match self.file.read_at(window, block) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if got < head {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the audit file ends inside its own data ({got} of {head} bytes)"),
            ));
        }
        self.tail = head;
        Ok(())
    }

    /// Make the aligned window at least `len` bytes long, keeping the cached tail.
    fn room(&mut self, len: usize) {
        if self.buf.len() - self.at >= len {
            return;
        }
        let mut bigger = vec![0u8; len.next_multiple_of(ALIGN) + ALIGN];
        // An offset the allocator cannot give (never seen) leaves the window unaligned: the
        // kernel then refuses the write with EINVAL and the writer goes back to buffered writes.
        let at = bigger.as_ptr().align_offset(ALIGN).min(ALIGN);
        bigger[at..at + self.tail].copy_from_slice(&self.buf[self.at..self.at + self.tail]);
        self.buf = bigger;
        self.at = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preallocated(dir: &Path, zeros: usize) -> (std::path::PathBuf, (u64, u64)) {
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, vec![0u8; zeros]).unwrap();
        let m = std::fs::metadata(&path).unwrap();
        (path, (m.dev(), m.ino()))
    }

    /// Lines of every length across block boundaries, written one batch at a time, leave the
    /// file as buffered writes would: the data, then the zeros.
    #[test]
    fn batches_land_as_buffered_writes_would() {
        let dir = tempfile::tempdir().unwrap();
        let (path, id) = preallocated(dir.path(), 64 * 1024);
        let Some(mut u) = Unbuffered::open(&path, id).unwrap() else {
            eprintln!("no O_DIRECT on this file system; nothing to test");
            return;
        };
        let mut want = Vec::new();
        for i in 0..60usize {
            let line: Vec<u8> = std::iter::repeat_n(b'a' + (i % 26) as u8, (i * 97) % 1500 + 1)
                .chain([b'\n'])
                .collect();
            u.write_at_end(want.len() as u64, &line).unwrap();
            want.extend_from_slice(&line);
        }
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[..want.len()], &want[..]);
        assert!(got[want.len()..].iter().all(|&b| b == 0));
        assert_eq!(
            got.len(),
            64 * 1024,
            "the file keeps its preallocated length"
        );
    }

    /// A writer that lost track (a failed write, the file cut back) reads the last block
    /// again instead of trusting its copy.
    #[test]
    fn an_unknown_tail_is_read_back_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (path, id) = preallocated(dir.path(), 16 * 1024);
        let Some(mut u) = Unbuffered::open(&path, id).unwrap() else {
            return;
        };
        u.write_at_end(0, b"first record\n").unwrap();
        // Written by someone else (a buffered write of the writer's own handle).
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"second\n", 13).unwrap();
        drop(f);
        u.tail_of = None;
        u.write_at_end(20, b"third\n").unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[..26], b"first record\nsecond\nthird\n");
        assert!(got[26..].iter().all(|&b| b == 0));
        // A batch written but not committed (its sync failed) is cut off again by the writer:
        // the next write, at the old size, must not reuse the cached block of the new one.
        u.write_at_end(26, b"not synced\n").unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(26).unwrap();
        f.set_len(16 * 1024).unwrap();
        drop(f);
        u.write_at_end(26, b"fourth\n").unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(&got[..33], b"first record\nsecond\nthird\nfourth\n");
        assert!(got[33..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_renamed_file_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let (path, id) = preallocated(dir.path(), 4096);
        std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert!(Unbuffered::open(&path, id).unwrap().is_none());
    }
}
