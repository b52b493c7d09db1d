//! An exclusive lock on a file, held while one process builds something other processes wait for
//! (the shared init of a WARM run, when members train in separate processes or machines on a
//! shared filesystem). The OS releases it when the holder exits, even by SIGKILL, so a dead
//! holder never blocks the others.

use crate::Result;
use std::fs::File;
use std::path::Path;

/// Held while alive: dropping it closes the file, which releases the lock.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the lock on `path` (created if missing) is ours; says so on stderr when it
    /// has to wait.
    pub fn acquire(path: &Path, what: &str) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| rmtrain_core::CoreError::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| rmtrain_core::CoreError::io(path, e))?;
        if file.try_lock().is_err() {
            eprintln!("{what}: waiting for another process ({} is locked)", path.display());
            file.lock().map_err(|e| rmtrain_core::CoreError::io(path, e))?;
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_until_the_first_drops() {
        let dir = std::env::temp_dir().join(format!("rmtrain-lock-{}", std::process::id()));
        let path = dir.join("x.lock");
        let first = FileLock::acquire(&path, "test").expect("first");
        let other = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
        assert!(other.try_lock().is_err(), "held by the first");
        drop(first);
        assert!(other.try_lock().is_ok(), "free after drop");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
