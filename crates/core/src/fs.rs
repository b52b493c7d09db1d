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

/// The parts of a temporary sibling's name: (the destination's name, tag, writer's pid).
fn parse_tmp_sibling(name: &str) -> Option<(&str, &str, u32)> {
    let rest = name.strip_prefix('.')?;
    let mut parts = rest.rsplitn(4, '.');
    let (_nanos, pid, tag, dest) = (parts.next()?.parse::<u128>().ok()?, parts.next()?.parse().ok()?, parts.next()?, parts.next()?);
    ["tmp", "partial", "old"].contains(&tag).then_some((dest, tag, pid))
}

/// Whether `pid` is a live process on this machine (Linux: /proc; elsewhere assumed dead).
fn alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// Cleans up after writers of `dir` that died mid-write (SIGKILL, power loss): the temporary
/// siblings of [`write_atomic`] and [`AtomicDir`] whose writing process is gone are removed,
/// except that a folder moved aside by an interrupted [`AtomicDir::commit`] is moved back when
/// its destination is missing (the kill fell between the commit's two renames). Not recursive.
/// Returns what it removed or restored. Run it where one process owns the folder (a trainer on
/// its run folder); a writer on another machine sharing the folder would look dead here.
pub fn sweep_stale_temporaries(dir: &Path) -> Result<Vec<PathBuf>, CoreError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut stale: Vec<(PathBuf, String, String)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CoreError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((dest, tag, _)) = parse_tmp_sibling(&name).filter(|(_, _, pid)| !alive(*pid)) {
            stale.push((entry.path(), dest.to_string(), tag.to_string()));
        }
    }
    stale.sort(); // deterministic: the oldest "old" copy of a destination is restored first
    let mut done = Vec::new();
    for (path, dest, tag) in stale {
        let dest = dir.join(dest);
        if tag == "old" && !dest.exists() {
            std::fs::rename(&path, &dest).map_err(|e| CoreError::io(&dest, e))?;
        } else if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| CoreError::io(&path, e))?;
        } else {
            std::fs::remove_file(&path).map_err(|e| CoreError::io(&path, e))?;
        }
        done.push(path);
    }
    Ok(done)
}

/// Removes the folder `path` so that a kill part-way leaves either the whole folder or a
/// temporary sibling that [`sweep_stale_temporaries`] removes, never a half-deleted folder under
/// its own name.
pub fn remove_dir_atomic(path: &Path) -> Result<(), CoreError> {
    let aside = tmp_sibling(path, "tmp");
    match std::fs::rename(path, &aside) {
        Ok(()) => std::fs::remove_dir_all(&aside).map_err(|e| CoreError::io(&aside, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CoreError::io(path, e)),
    }
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

    /// What a killed writer leaves: a temporary file, a partial folder, and a folder moved aside
    /// by a commit killed between its two renames (its destination missing): the first two are
    /// removed, the third moved back; a live writer's temporaries and other names stay.
    #[test]
    fn stale_temporaries_are_swept_and_an_interrupted_commit_is_undone() {
        let root = std::env::temp_dir().join(format!("rmtrain-core-sweep-{}", nanos()));
        let dead = 4_000_000_000u32; // above any Linux pid
        let mine = std::process::id();
        std::fs::create_dir_all(root.join(format!(".step-4.partial.{dead}.17"))).expect("partial");
        std::fs::write(root.join(format!(".step-4.partial.{dead}.17/weights")), b"half").expect("w");
        std::fs::write(root.join(format!(".metrics.jsonl.tmp.{dead}.18")), b"{").expect("tmp");
        std::fs::create_dir_all(root.join(format!(".model.old.{dead}.19"))).expect("old");
        std::fs::write(root.join(format!(".model.old.{dead}.19/w")), b"whole").expect("w");
        std::fs::create_dir_all(root.join(format!(".step-2.old.{dead}.20"))).expect("old, dest present");
        std::fs::create_dir_all(root.join("step-2")).expect("dest");
        std::fs::write(root.join(format!(".live.tmp.{mine}.21")), b"x").expect("live writer");
        for keep in [".hidden", ".a.tmp.notapid.5", "step-3"] {
            std::fs::write(root.join(keep), b"k").expect("other");
        }
        let done = sweep_stale_temporaries(&root).expect("sweep");
        assert_eq!(done.len(), 4, "{done:?}");
        let mut left: Vec<String> = std::fs::read_dir(&root).expect("dir").map(|e| e.expect("e").file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, [".a.tmp.notapid.5".to_string(), ".hidden".into(), format!(".live.tmp.{mine}.21"), "model".into(), "step-2".into(), "step-3".into()]);
        assert_eq!(std::fs::read(root.join("model/w")).expect("restored"), b"whole");
        assert!(sweep_stale_temporaries(&root.join("missing")).expect("no folder").is_empty());
        remove_dir_atomic(&root.join("step-2")).expect("remove");
        remove_dir_atomic(&root.join("step-2")).expect("gone already");
        assert!(!root.join("step-2").exists());
        std::fs::remove_dir_all(&root).expect("clean up");
    }
}
