//! Writes that never leave a half-written file or folder behind: write to a temporary sibling, then
//! rename (atomic on one filesystem). Also sha256 of files, used to pin data and init weights.

use crate::CoreError;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

fn tmp_sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unique = format!(".{name}.{tag}.{}.{}", std::process::id(), nanos());
    path.with_file_name(unique)
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    }
    let tmp = tmp_sibling(path, "tmp");
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(CoreError::io(path, e));
    }
    Ok(())
}

/// Pretty JSON, written atomically.
pub fn write_json_atomic(path: &Path, value: &impl serde::Serialize) -> Result<(), CoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| CoreError::Json { path: path.into(), source: e })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// A folder built under a temporary name and renamed into place by [`AtomicDir::commit`]; dropped
/// without commit, it is removed. Replaces an existing folder at the destination on commit.
pub struct AtomicDir {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl AtomicDir {
    pub fn new(dest: &Path) -> Result<Self, CoreError> {
        if let Some(parent) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| CoreError::io(parent, e))?;
        }
        let tmp = tmp_sibling(dest, "partial");
        std::fs::create_dir_all(&tmp).map_err(|e| CoreError::io(&tmp, e))?;
        Ok(Self { tmp, dest: dest.to_path_buf(), committed: false })
    }

    /// Where to write the folder's files before commit.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn commit(mut self) -> Result<PathBuf, CoreError> {
        if self.dest.exists() {
            // Move the old folder aside first so the destination is never missing a complete copy
            // for longer than two renames.
            let old = tmp_sibling(&self.dest, "old");
            std::fs::rename(&self.dest, &old).map_err(|e| CoreError::io(&self.dest, e))?;
            std::fs::rename(&self.tmp, &self.dest).map_err(|e| CoreError::io(&self.dest, e))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&self.tmp, &self.dest).map_err(|e| CoreError::io(&self.dest, e))?;
        }
        self.committed = true;
        Ok(self.dest.clone())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Hex sha256 of one file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, CoreError> {
    let mut hasher = Sha256::new();
    hash_into(path, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// Hex sha256 of bytes in memory.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hex sha256 over several files in the given order (each file's bytes, then a 0 byte).
pub fn sha256_files(paths: &[&Path]) -> Result<String, CoreError> {
    let mut hasher = Sha256::new();
    for p in paths {
        hash_into(p, &mut hasher)?;
        hasher.update([0u8]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hash_into(path: &Path, hasher: &mut Sha256) -> Result<(), CoreError> {
    let mut f = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| CoreError::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_dir_dropped_without_commit_leaves_nothing() {
        let root = std::env::temp_dir().join(format!("rmtrain-core-test-{}", nanos()));
        let dest = root.join("ckpt");
        {
            let d = AtomicDir::new(&dest).expect("create");
            std::fs::write(d.path().join("a"), b"x").expect("write");
        }
        assert!(!dest.exists());
        assert_eq!(std::fs::read_dir(&root).expect("root").count(), 0);
        let d = AtomicDir::new(&dest).expect("create");
        std::fs::write(d.path().join("a"), b"x").expect("write");
        d.commit().expect("commit");
        assert_eq!(std::fs::read(dest.join("a")).expect("read"), b"x");
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn sha256_of_known_bytes() {
        let p = std::env::temp_dir().join(format!("rmtrain-sha-{}", nanos()));
        write_atomic(&p, b"abc").expect("write");
        assert_eq!(
            sha256_file(&p).expect("hash"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::remove_file(&p).expect("cleanup");
    }
}
