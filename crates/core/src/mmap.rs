//! Read-only memory maps of weight files, the one place rmtrain uses `unsafe`. A map lets a
//! loader read a multi-GB safetensors file tensor by tensor without copying it into memory, and
//! lets averaging read N members slice by slice; [`release`] hands pages already read back to the
//! kernel so a pass over a file keeps only what it is working on resident.
//!
//! Why mapping is `unsafe`: the bytes behind a `&[u8]` can change (or vanish, a SIGBUS) if another
//! process truncates or rewrites the file while it is mapped. rmtrain never writes a weight file in
//! place: every checkpoint, average and export goes to a temporary sibling and is renamed over the
//! destination ([`crate::write_atomic`], [`crate::AtomicDir`]), which leaves an open map on the old
//! inode intact. What remains is a file edited in place by some other program while we read it;
//! that is the assumption these functions make, the same one `safetensors` and candle make.

use crate::CoreError;
use std::ops::Range;
use std::path::Path;

pub use memmap2::Mmap;

/// Maps `path` read-only (shared, so pages come from and return to the page cache).
#[allow(unsafe_code)]
pub fn map_readonly(path: &Path) -> Result<Mmap, CoreError> {
    let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
    // SAFETY: the map is only sound while no one truncates or modifies the file. rmtrain writes
    // weight files to a temporary sibling and renames (never in place), so an existing file's
    // inode is never changed under a map; other programs editing it in place are assumed not to
    // (see the module doc). The map is read-only, so we never write through it.
    unsafe { Mmap::map(&file) }.map_err(|e| CoreError::io(path, e))
}

/// Tells the kernel the bytes `range` of `map` will not be read again soon: their pages leave this
/// process's resident set (they stay in the page cache, and a later read faults them back in with
/// the file's contents). Without it, reading a whole map makes the whole file count as resident.
/// Advice only: a failure is ignored, as the data stays correct either way.
#[allow(unsafe_code)]
pub fn release(map: &Mmap, range: Range<usize>) {
    if range.is_empty() || range.end > map.len() {
        return;
    }
    // SAFETY: MADV_DONTNEED on a shared file mapping drops the pages from our page tables; any
    // later access re-reads them from the file, so every `&[u8]` into the map still sees the same
    // bytes under the same assumption as `map_readonly` (the file is not modified while mapped).
    // The guard above keeps the range inside the map: memmap2 rounds `range.start` down to a
    // page boundary but does not check that start + len stays within the mapping, so the guard
    // must stay.
    #[cfg(unix)]
    let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_file_and_releases_pages_without_changing_its_bytes() {
        let dir = std::env::temp_dir().join(format!("rmtrain-mmap-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("bytes");
        let bytes: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i % 251) as u8).collect();
        crate::write_atomic(&path, &bytes).expect("write");
        let map = map_readonly(&path).expect("map");
        assert_eq!(&map[..], &bytes[..]);
        release(&map, 100..9000);
        assert_eq!(&map[..], &bytes[..], "released pages read back from the file");
        crate::write_atomic(&dir.join("empty"), b"").expect("write");
        assert!(map_readonly(&dir.join("empty")).expect("an empty file maps").is_empty());
        assert!(map_readonly(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
