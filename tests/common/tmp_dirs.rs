//! Per-process test folders under the system temp dir, `PREFIX-NAME-PID`. The first one a test
//! process makes also removes the folders of earlier test processes that are gone (their PID is
//! no longer running), so the last run's folders stay for inspection and no more pile up.

use std::path::{Path, PathBuf};
use std::sync::Once;

/// A fresh, empty `PREFIX-NAME-PID` folder.
pub fn fresh(prefix: &str, name: &str) -> PathBuf {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| sweep_dead(prefix));
    let d = std::env::temp_dir().join(format!("{prefix}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

/// Removes `PREFIX-…-PID` folders whose process has ended. Only where /proc tells which
/// processes run (elsewhere nothing is removed: a running test's folder must not go).
fn sweep_dead(prefix: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix(prefix).filter(|rest| rest.starts_with('-')).and_then(|rest| rest.rsplit('-').next()).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
