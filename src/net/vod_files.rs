//! Finding, confining, opening and indexing stored files for video on demand, off the
//! shard's thread.
//!
//! A shard never touches the disk for this: `Output::OpenVod` makes the driver run
//! [`open`] on glommio's blocking thread (`spawn_blocking`), because `stat`, `realpath` and
//! the first pass over a large FLV can take long, and opening a FIFO would block forever.
//! The answer comes back to the shard as a value (`Shard::handle_vod_opened`).
//!
//! Confinement is checked on the resolved path, not the name: the name was already refused
//! if it holds `..` or is absolute (`relay/vod_source.rs`), and here the path's real
//! location (every symlink followed) must still lie inside the real `vod_dir`, and be a
//! regular file. The file is opened once, with `O_NONBLOCK` (a FIFO swapped in after the
//! check still cannot block) and checked again through its descriptor; the shard then reads
//! that same descriptor, so nothing swapped in later is read.
//!
//! A download over HTTP (`GET /vod/{app}/{name}.mp4`, [`open_download`]) goes through the
//! same confinement and the same checked descriptor, but needs no index: it is sent as the
//! bytes on disk.
//!
//! A playing source's reads go into a buffer the shard allocated: the relay then owns the
//! bytes and sends frames straight from them (`relay/vod_source.rs`), where io_uring's
//! reads came back in glommio's buffers and had to be copied out once more. What the page
//! cache holds is read on the shard's thread without waiting ([`read_cached`]); only the
//! rest goes to the blocking threads ([`read_at`]), a thread switch there and back.
//!
//! Indexes are kept in one process-wide cache keyed by real path, size and modification
//! time: every viewer of a file on every core shares one index, and a file replaced on
//! disk gets a new one.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use bytes::BytesMut;

use crate::media::vod_index::{VodIndex, index_flv};

/// Fills `buf`, which holds `file` from `offset` on, up to `len` bytes: fewer only at the
/// end of the file. `pread` waits for the disk: this runs on a blocking thread.
pub fn read_at(file: &File, offset: u64, len: usize, buf: BytesMut) -> std::io::Result<BytesMut> {
    fill(file, offset, len, buf, 0).map(|(buf, _)| buf)
}

/// Fills `buf` as [`read_at`] does with what the page cache holds, never waiting for the
/// disk (`RWF_NOWAIT`), so on the shard's own thread: a file being played is nearly always
/// cached, and then no trip to a blocking thread is needed. Also says whether `buf` is
/// complete (`len` bytes, or the end of the file); if not, [`read_at`] reads the rest.
pub fn read_cached(
    file: &File,
    offset: u64,
    len: usize,
    buf: BytesMut,
) -> std::io::Result<(BytesMut, bool)> {
    fill(file, offset, len, buf, libc::RWF_NOWAIT)
}

fn fill(
    file: &File,
    offset: u64,
    len: usize,
    mut buf: BytesMut,
    flags: libc::c_int,
) -> std::io::Result<(BytesMut, bool)> {
    buf.reserve(len.saturating_sub(buf.len()));
    while buf.len() < len {
        let at = libc::off_t::try_from(offset + buf.len() as u64)
            .map_err(|_| std::io::Error::other("offset beyond what preadv2 takes"))?;
        let missing = len - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..missing];
        let iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: spare.len(),
        };
        // SAFETY: `preadv2` writes at most `iov_len` bytes at `iov_base`, the buffer's
        // spare capacity, which it owns and may be written; only the bytes it reports
        // written are then counted as the buffer's (`set_len` below).
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, flags) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock if flags != 0 => return Ok((buf, false)),
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Ok((buf, true));
        }
        // SAFETY: the first `n` bytes of the spare capacity were just written by
        // `preadv2`, and `n` is at most what was asked.
        unsafe { buf.set_len(buf.len() + n as usize) };
    }
    Ok((buf, true))
}

/// Indexes kept at most; the oldest-inserted are dropped first beyond this.
const CACHE_ENTRIES: usize = 256;

/// What looking a name up found.
pub enum Opened {
    /// The file, its real path and its index.
    Found {
        path: Arc<Path>,
        index: Arc<VodIndex>,
        file: File,
    },
    /// None of the candidate names exists.
    Missing,
    /// A name exists but must not or cannot be played.
    Refused(String),
}

type Key = (PathBuf, u64, Option<SystemTime>);

struct Cache {
    map: HashMap<Key, Arc<VodIndex>>,
    order: Vec<Key>,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(|| {
        Mutex::new(Cache {
            map: HashMap::new(),
            order: Vec::new(),
        })
    })
}

/// Looks `candidates` (file names, in order) up in `dir`. Blocking: call it off the shard.
pub fn open(dir: &Path, candidates: &[String]) -> Opened {
    let real_dir = match dir.canonicalize() {
        Ok(d) => d,
        Err(e) => return Opened::Refused(format!("VOD directory {}: {e}", dir.display())),
    };
    for name in candidates {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Opened::Refused(format!("{}: {e}", path.display())),
            Ok(_) => {}
        }
        return open_one(&real_dir, &path);
    }
    Opened::Missing
}

/// What looking a file up for a download found.
pub enum DownloadFile {
    /// The checked descriptor and the file's length.
    Found {
        file: File,
        len: u64,
    },
    Missing,
    /// It exists but must not or cannot be sent (the reason is for the log).
    Refused(String),
}

/// Looks `name` (a file name, e.g. `movie.mp4`) up in `dir` for a download, confined as
/// [`open`] confines a play. Blocking: call it off the shard.
pub fn open_download(dir: &Path, name: &str) -> DownloadFile {
    let real_dir = match dir.canonicalize() {
        Ok(d) => d,
        Err(e) => return DownloadFile::Refused(format!("VOD directory {}: {e}", dir.display())),
    };
    // The route refuses `..`, slashes and absolute names already; refuse them here too,
    // so this function is safe on its own.
    if name.is_empty() || name.contains(['/', '\\', '\0']) || name == "." || name == ".." {
        return DownloadFile::Refused(format!("{name:?} is not a plain file name"));
    }
    let path = dir.join(name);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DownloadFile::Missing,
        Err(e) => return DownloadFile::Refused(format!("{}: {e}", path.display())),
        Ok(_) => {}
    }
    match open_checked(&real_dir, &path) {
        Ok((_, file, meta)) => DownloadFile::Found {
            file,
            len: meta.len(),
        },
        Err(why) => DownloadFile::Refused(why),
    }
}

/// Resolves `path` (every symlink followed), checks that it lies inside `real_dir` and is
/// a regular file, opens it without blocking on a FIFO and checks the descriptor again.
fn open_checked(
    real_dir: &Path,
    path: &Path,
) -> Result<(PathBuf, File, std::fs::Metadata), String> {
    let real = match path.canonicalize() {
        Ok(p) => p,
        // A dangling symlink: there is nothing to play.
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if !real.starts_with(real_dir) {
        return Err(format!(
            "{} leads outside the VOD directory",
            path.display()
        ));
    }
    match std::fs::metadata(&real) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(format!("{} is not a regular file", path.display())),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&real)
    {
        Ok(f) => f,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    match file.metadata() {
        Ok(m) if m.is_file() => Ok((real, file, m)),
        Ok(_) => Err(format!("{} is not a regular file", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn open_one(real_dir: &Path, path: &Path) -> Opened {
    let (real, file, meta) = match open_checked(real_dir, path) {
        Ok(found) => found,
        Err(why) => return Opened::Refused(why),
    };
    let key: Key = (real.clone(), meta.len(), meta.modified().ok());
    if let Some(index) = cache().lock().ok().and_then(|c| c.map.get(&key).cloned()) {
        return Opened::Found {
            path: real.into(),
            index,
            file,
        };
    }
    let is_mp4 = real
        .extension()
        .is_some_and(|e| matches!(e.to_str(), Some("mp4" | "m4v" | "mov")));
    let built = {
        let reader = BufReader::with_capacity(64 * 1024, &file);
        if is_mp4 {
            crate::media::mp4::index_mp4(reader, meta.len())
        } else {
            index_flv(reader, meta.len())
        }
    };
    let index = match built {
        Ok(i) => Arc::new(i),
        Err(e) => return Opened::Refused(format!("{}: {e}", path.display())),
    };
    tracing::info!(file = %real.display(), frames = index.samples.len(), duration_ms = index.duration_ms, "stored file indexed");
    if let Ok(mut c) = cache().lock() {
        if c.order.len() >= CACHE_ENTRIES {
            let old = c.order.remove(0);
            c.map.remove(&old);
        }
        c.order.push(key.clone());
        c.map.insert(key, index.clone());
    }
    Opened::Found {
        path: real.into(),
        index,
        file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fill_the_buffer_from_the_offset_and_stop_at_the_end_of_the_file() {
        let path = std::env::temp_dir().join(format!("shardcast-read-{}", std::process::id()));
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let read = read_at(&file, 1000, 5000, BytesMut::new()).unwrap();
        assert_eq!(read[..], data[1000..6000]);
        // Past the end: what there is.
        let read = read_at(&file, 99_000, 5000, BytesMut::with_capacity(10)).unwrap();
        assert_eq!(read[..], data[99_000..]);
        // Just written, so cached: complete without a blocking thread.
        let (read, complete) = read_cached(&file, 70_000, 40_000, BytesMut::new()).unwrap();
        assert!(complete);
        assert_eq!(read[..], data[70_000..]);
        // A partial buffer is carried on from where it stopped.
        let part = BytesMut::from(&data[10..20]);
        let read = read_at(&file, 10, 100, part).unwrap();
        assert_eq!(read[..], data[10..110]);
        std::fs::remove_file(&path).unwrap();
    }
}
