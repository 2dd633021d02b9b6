//! The state file: counters that survive restarts. Written atomically (temp file, fsync,
//! rename); one that cannot be read is moved aside with a warning, never deleted or overwritten.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::stats::StatsBook;

const FORMAT_VERSION: u32 = 1;

#[derive(serde::Serialize)]
struct OnDiskRef<'a> {
    version: u32,
    book: &'a StatsBook,
}

#[derive(serde::Deserialize)]
struct OnDisk {
    version: u32,
    book: StatsBook,
}

/// What was found at the state file's path.
#[derive(Debug)]
pub enum Loaded {
    /// No file yet.
    Fresh,
    Restored(Box<StatsBook>),
    /// A file that could not be read, now moved aside.
    MovedAside,
    /// A file that could not be read nor moved: it must not be overwritten.
    Stuck,
}

pub fn load(path: &Path) -> Loaded {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Loaded::Fresh,
        Err(err) => return move_aside(path, &err.to_string()),
    };
    match serde_json::from_slice::<OnDisk>(&bytes) {
        Ok(state) if state.version == FORMAT_VERSION => {
            tracing::info!(path = %path.display(), "counters restored from the state file");
            Loaded::Restored(Box::new(state.book))
        }
        Ok(state) => move_aside(path, &format!("unknown format version {}", state.version)),
        Err(err) => move_aside(path, &err.to_string()),
    }
}

fn move_aside(path: &Path, reason: &str) -> Loaded {
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let aside = PathBuf::from(format!("{}.unreadable-{stamp}", path.display()));
    match fs::rename(path, &aside) {
        Ok(()) => {
            tracing::warn!(
                path = %path.display(),
                moved_to = %aside.display(),
                "state file could not be read ({reason}); moved aside, counting starts afresh"
            );
            Loaded::MovedAside
        }
        Err(err) => {
            tracing::error!(
                path = %path.display(),
                "state file could not be read ({reason}) nor moved aside ({err}); it is left as \
                 it is and counters are kept in memory only"
            );
            Loaded::Stuck
        }
    }
}

/// Writes `book` to `path` atomically: readers see the old file or the new one, never a part.
pub fn save(path: &Path, book: &StatsBook) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    if path.exists() && fs::metadata(path)?.is_dir() {
        return Err(io::Error::other(format!(
            "{} is a directory",
            path.display()
        )));
    }
    let bytes = serde_json::to_vec(&OnDiskRef {
        version: FORMAT_VERSION,
        book,
    })
    .map_err(io::Error::other)?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("stats.json");
    let temp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        // Make the rename itself durable.
        if let Ok(dir) = fs::File::open(&dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unreadable_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/stats.json");
        let mut book = StatsBook::new("2026-11-27T10:00:00Z".into());
        book.lifetime.totals.requests = 7;
        save(&path, &book).unwrap();
        assert!(matches!(load(&path), Loaded::Restored(b) if *b == book));

        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(load(&path), Loaded::MovedAside));
        assert!(!path.exists());
        let aside: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("stats.json.unreadable-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(
            fs::read(path.parent().unwrap().join(&aside[0])).unwrap(),
            b"{not json"
        );
    }
}
