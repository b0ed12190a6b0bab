//! A file mapped into memory, shared by reference count with every reader that holds a slice.
//!
//! Invariant: a region handed to readers (below the owner's committed position) is never written
//! again, and the file is never shrunk below any region a reader may hold. Writers write through
//! raw pointers to regions no reader can see yet, so no `&[u8]` and `&mut [u8]` ever alias.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::MmapRaw;

pub struct MappedFile {
    path: PathBuf,
    file: File,
    map: Option<Arc<MmapRaw>>,
    len_bytes: usize,
}

/// A slice of a mapping that keeps the mapping alive; the owner of `Bytes` handed to readers.
struct MapSlice {
    map: Arc<MmapRaw>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: start + len was checked against the mapping's length when the slice was made,
        // and the region is below a committed position, so nothing writes it any more.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.start), self.len) }
    }
}

impl MappedFile {
    /// Opens (creating if needed) and maps `path`, first setting its length to `len_bytes` if
    /// given (preallocation; new bytes read as zero).
    pub fn open(path: &Path, set_len_bytes: Option<u64>) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if let Some(len) = set_len_bytes {
            file.set_len(len)?;
        }
        let len_bytes = usize::try_from(file.metadata()?.len()).map_err(io::Error::other)?;
        let map = if len_bytes == 0 {
            None
        } else {
            Some(Arc::new(MmapRaw::map_raw(&file)?))
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            map,
            len_bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    /// Every access goes through here: `[start, start + len)` must lie inside the mapping.
    fn assert_in_mapping(&self, start: usize, len: usize) {
        assert!(
            start
                .checked_add(len)
                .is_some_and(|end| end <= self.len_bytes),
            "range out of mapping"
        );
    }

    /// Bytes `[start, start + len)`, read-only.
    pub fn slice(&self, start: usize, len: usize) -> &[u8] {
        self.assert_in_mapping(start, len);
        match &self.map {
            // SAFETY: in bounds (asserted); callers only read committed regions (module invariant).
            Some(m) => unsafe { std::slice::from_raw_parts(m.as_ptr().add(start), len) },
            None => &[],
        }
    }

    /// Bytes `[start, start + len)` as `Bytes` that keep the mapping alive: no copy.
    pub fn shared_slice(&self, start: usize, len: usize) -> Bytes {
        self.assert_in_mapping(start, len);
        match &self.map {
            Some(m) if len > 0 => Bytes::from_owner(MapSlice {
                map: Arc::clone(m),
                start,
                len,
            }),
            _ => Bytes::new(),
        }
    }

    /// Writable bytes `[start, start + len)`.
    ///
    /// # Safety
    /// The caller must own the region exclusively: above every committed position, so that no
    /// reader holds a slice of it, and not borrowed elsewhere.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [u8] {
        self.assert_in_mapping(start, len);
        match &self.map {
            Some(m) => std::slice::from_raw_parts_mut(m.as_mut_ptr().add(start), len),
            None => &mut [],
        }
    }

    /// Writes `parts`, one after the other, at `start` with one `pwritev`: through the page cache
    /// like Kafka's appends, so a new page is filled from the data instead of being zeroed first as
    /// a write fault on the mapping would. The mapping shows the bytes at once (same pages).
    ///
    /// The region must be owned by the caller as for [`MappedFile::slice_mut`]; bytes past it are
    /// never written.
    pub fn write_at(&self, start: usize, parts: &[&[u8]]) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        self.assert_in_mapping(start, total);
        let mut written = 0;
        while written < total {
            // Rebuild the vector past what is written (a short write is rare, but legal).
            let mut skip = written;
            let mut iov = Vec::with_capacity(parts.len());
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                let rest = &p[skip..];
                skip = 0;
                iov.push(libc::iovec {
                    iov_base: rest.as_ptr() as *mut libc::c_void,
                    iov_len: rest.len(),
                });
            }
            // SAFETY: every iovec points into a live slice of `parts`; the file descriptor is open
            // for writing; the range was checked against the mapping (and so the file length).
            let n = unsafe {
                libc::pwritev(
                    self.file.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as libc::c_int,
                    (start + written) as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwritev wrote nothing",
                ));
            }
            written += n as usize;
        }
        Ok(())
    }

    /// Flushes the written pages to disk (msync).
    pub fn flush(&self) -> io::Result<()> {
        match &self.map {
            Some(m) => m.flush(),
            None => Ok(()),
        }
    }

    /// Whether a reader holds a slice of the current mapping (the owner holds one reference).
    pub fn has_readers(&self) -> bool {
        self.map.as_ref().is_some_and(|m| Arc::strong_count(m) > 1)
    }

    /// Flushes `[start, start + len)` to disk (msync of the pages it covers).
    pub fn flush_range(&self, start: usize, len: usize) -> io::Result<()> {
        self.assert_in_mapping(start, len);
        match &self.map {
            Some(m) if len > 0 => m.flush_range(start, len),
            _ => Ok(()),
        }
    }

    /// Sets the file's length and maps it anew. Shrinking is safe only for bytes no reader holds
    /// (past every committed position): pages a reader holds stay within the file, and pages past
    /// the new end are never touched.
    pub fn set_len(&mut self, len_bytes: usize) -> io::Result<()> {
        self.file.set_len(len_bytes as u64)?;
        self.map = if len_bytes == 0 {
            None
        } else {
            Some(Arc::new(MmapRaw::map_raw(&self.file)?))
        };
        self.len_bytes = len_bytes;
        Ok(())
    }

    pub fn sync_all(&self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_all()
    }
}
