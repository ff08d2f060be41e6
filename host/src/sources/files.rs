//! Change detection for the directories a source may read: each is
//! fingerprinted (names, sizes, modification times of its entries) a few
//! times a second, and a change wakes the source. Polling a directory of a
//! few files costs microseconds, sees edits made through renames (as
//! editors and config managers do) and needs no inotify limits.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// How often directories are looked at: a change is applied after two
/// looks that agree, 150–300 ms after it was written.
pub const POLL: Duration = Duration::from_millis(150);

/// Watches `dirs` until the node stops; notifies `changed` once a change
/// has held still for one more look, so a file caught half written (a
/// `>` redirect, an editor rewriting in place) is read once it is whole.
pub fn spawn(dirs: Vec<PathBuf>, changed: Arc<Notify>) {
    tokio::spawn(async move {
        let look = |dirs: Vec<PathBuf>| async move {
            tokio::task::spawn_blocking(move || fingerprint(&dirs))
                .await
                .ok()
        };
        let Some(mut applied) = look(dirs.clone()).await else {
            return;
        };
        let mut pending: Option<u64> = None;
        loop {
            tokio::time::sleep(POLL).await;
            let Some(now) = look(dirs.clone()).await else {
                continue;
            };
            if now == applied {
                pending = None;
            } else if pending == Some(now) {
                applied = now;
                pending = None;
                changed.notify_one();
            } else {
                pending = Some(now);
            }
        }
    });
}

/// A hash of what is in the directories; an unreadable directory hashes
/// as its error, so it changing back is seen too.
fn fingerprint(dirs: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for dir in dirs {
        dir.hash(&mut h);
        hash_dir(dir, &mut h);
    }
    h.finish()
}

fn hash_dir(dir: &Path, h: &mut impl Hasher) {
    // A tag first, so that "no such directory" never hashes like an
    // empty one.
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => {
            0u8.hash(h);
            e
        }
        Err(e) => {
            1u8.hash(h);
            e.kind().hash(h);
            return;
        }
    };
    let mut seen: Vec<(std::ffi::OsString, u64, i128)> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let meta = e.metadata().ok();
            let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let modified = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(-1);
            (e.file_name(), len, modified)
        })
        .collect();
    seen.sort();
    seen.hash(h);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_moves_with_content() {
        let dir = std::env::temp_dir().join(format!("muster-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dirs = vec![dir.clone()];
        let empty = fingerprint(&dirs);
        std::fs::write(dir.join("a.toml"), "x").unwrap();
        let one = fingerprint(&dirs);
        assert_ne!(empty, one);
        std::fs::write(dir.join("a.toml"), "xy").unwrap();
        assert_ne!(one, fingerprint(&dirs));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_ne!(empty, fingerprint(&dirs));
    }
}
