//! Secret values (server keys, access keys, the admin token), where they are read from (an env
//! var or a file), and their safe fingerprints. A secret's value never reaches `Debug`, a log
//! line or JSON; only its fingerprint does.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A secret read from the environment. Its value never reaches `Debug`, logs or JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
}

impl Secret {
    pub fn new(value: String) -> Self {
        Self { value }
    }
    pub fn expose(&self) -> &str {
        &self.value
    }
    /// First 12 hex digits of the SHA-256 of the value: safe to show, stable across restarts.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.value.as_bytes())
    }
}

/// First 12 hex digits of the SHA-256 of `secret`.
pub fn fingerprint(secret: &[u8]) -> String {
    let digest = Sha256::digest(secret);
    hex::encode(&digest[..6])
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

/// Where one secret lives: a file (wins when set) or an env var. The settings hold this, never
/// the value; the CredentialResolver reads it at start and at every reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSource {
    /// Env var name; "" = none.
    pub env: String,
    /// File holding the secret; relative paths are resolved against the base directory given to
    /// [`read`](Self::read).
    pub file: Option<PathBuf>,
}

impl SecretSource {
    /// The secret, or `None` when the env var is unset/empty or the file is empty. A file that
    /// is set but cannot be read is an error: a typo must not silently drop a key.
    pub fn read(&self, env: &EnvSource, base_dir: &Path) -> Result<Option<Secret>, String> {
        match &self.file {
            Some(file) => read_secret_file(&resolve(base_dir, file)),
            None if self.env.is_empty() => Ok(None),
            None => Ok(env.var(&self.env).map(Secret::new)),
        }
    }

    /// The file this secret is read from, resolved (`None` when it comes from an env var).
    pub fn path(&self, base_dir: &Path) -> Option<PathBuf> {
        self.file.as_ref().map(|f| resolve(base_dir, f))
    }

    /// Where it comes from, for summaries and errors: `$NAME` or the file path.
    pub fn describe(&self, base_dir: &Path) -> String {
        match self.path(base_dir) {
            Some(path) => path.display().to_string(),
            None => format!("${}", self.env),
        }
    }
}

/// `path` as is when absolute, else under `base_dir`.
pub fn resolve(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// The directory relative secret files are read from: `$CREDENTIALS_DIRECTORY` (systemd's
/// `LoadCredential`) when set, else the directory of the settings file, else the working
/// directory.
pub fn base_dir(settings_file: Option<&Path>, env: &EnvSource) -> PathBuf {
    if let Some(dir) = env.var("CREDENTIALS_DIRECTORY") {
        return PathBuf::from(dir);
    }
    match settings_file.and_then(Path::parent) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The most a secret file may hold: keys, tokens and URLs are short, and a file of a gigabyte
/// must not be read into memory (nor become a key).
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Reads a file that holds secret material (or a certificate) without ever waiting on it: it is
/// opened non-blocking, so a FIFO or a device at the path cannot hang the start or a reload, and
/// only a regular file (checked on the opened file) of at most `max` bytes is read.
pub fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file (a FIFO, device or directory is never read)".into());
    }
    if meta.len() > max {
        return Err(format!("larger than {max} bytes ({} bytes)", meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(bytes)
}

/// Reads one secret file. Trailing line breaks are not part of the secret; an empty file is no
/// secret.
pub fn read_secret_file(path: &Path) -> Result<Option<Secret>, String> {
    let cannot = |reason: String| format!("cannot read secret file {}: {reason}", path.display());
    let bytes = read_regular_file(path, MAX_SECRET_BYTES).map_err(cannot)?;
    let text = String::from_utf8(bytes).map_err(|_| cannot("it is not UTF-8 text".into()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    Ok((!value.is_empty()).then(|| Secret::new(value.to_string())))
}

/// A warning when a secret read from `source` has what a person typing it never sends: a
/// byte-order mark, or spaces or tabs at either end. Only a trailing line break is not part of
/// a secret, so such a key is kept as it is, and would otherwise silently never match.
pub fn whitespace_warning(source: &str, secret: &Secret) -> Option<String> {
    let value = secret.expose();
    let what = if value.starts_with('\u{feff}') {
        "starts with a byte-order mark"
    } else if value.ends_with([' ', '\t']) {
        "ends with a space or tab"
    } else if value.starts_with([' ', '\t']) {
        "starts with a space or tab"
    } else {
        return None;
    };
    Some(format!(
        "the secret in {source} {what}, which is part of it (only a trailing line break is \
         not): a client sending the key without it is refused"
    ))
}

/// A warning when `path` can be read by its group or by others: a secret file should be
/// readable by its owner alone.
pub fn exposure_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "secret file {} is readable by group or others (mode {:o}); `chmod 600` it",
            path.display(),
            mode & 0o777
        )
    })
}

/// One caller's file in a keys directory: (caller, path, key).
pub type KeyFile = (String, PathBuf, Secret);

/// The callers of a keys directory: one per regular file, file name = caller, content = key,
/// sorted by name. Hidden files (editor and tool leftovers such as `.carol.swp`) are skipped;
/// a file that is empty or cannot be read as a key (not UTF-8, too large, gone) is skipped with
/// a warning, so one bad file never holds back the others (a revocation among them).
pub fn read_keys_dir(dir: &Path) -> Result<(Vec<KeyFile>, Vec<String>), String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read keys directory {}: {e}", dir.display()))?;
    let mut keys = Vec::new();
    let mut warnings = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("cannot read keys directory {}: {e}", dir.display()))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            warnings.push(format!("{} skipped: its name is not UTF-8", path.display()));
            continue;
        };
        if name.starts_with('.') || name.ends_with('~') || !path.is_file() {
            continue;
        }
        match read_secret_file(&path) {
            Ok(Some(secret)) => {
                warnings.extend(whitespace_warning(&path.display().to_string(), &secret));
                keys.push((name, path, secret));
            }
            Ok(None) => warnings.push(format!("{} skipped: it is empty", path.display())),
            Err(reason) => warnings.push(format!("{} skipped: {reason}", path.display())),
        }
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((keys, warnings))
}

/// Where to read the environment from: the process, or a fixed map in tests.
pub enum EnvSource {
    Process,
    Fixed(HashMap<String, String>),
}

impl EnvSource {
    /// The variable's value; unset and empty are the same.
    pub fn var(&self, name: &str) -> Option<String> {
        let value = match self {
            EnvSource::Process => std::env::var(name).ok(),
            EnvSource::Fixed(map) => map.get(name).cloned(),
        };
        value.filter(|v| !v.is_empty())
    }

    /// Every variable (names and values that are not UTF-8 are left out).
    pub fn all(&self) -> Vec<(String, String)> {
        match self {
            EnvSource::Process => std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            EnvSource::Fixed(map) => map.clone().into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    fn no_env() -> EnvSource {
        EnvSource::Fixed(HashMap::new())
    }

    #[test]
    fn file_wins_over_env_and_loses_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "sk-from-file\n").unwrap();
        let env = EnvSource::Fixed(HashMap::from([(
            "K".to_string(),
            "sk-from-env".to_string(),
        )]));
        let source = SecretSource {
            env: "K".into(),
            file: Some("key".into()),
        };
        let secret = source.read(&env, dir.path()).unwrap().unwrap();
        assert_eq!(secret.expose(), "sk-from-file");
        let env_only = SecretSource {
            env: "K".into(),
            file: None,
        };
        assert_eq!(
            env_only.read(&env, dir.path()).unwrap().unwrap().expose(),
            "sk-from-env"
        );
        assert_eq!(SecretSource::default().read(&env, dir.path()), Ok(None));
    }

    #[test]
    fn missing_file_is_an_error_and_empty_file_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let source = SecretSource {
            env: String::new(),
            file: Some("absent".into()),
        };
        let err = source.read(&no_env(), dir.path()).unwrap_err();
        assert!(err.contains("absent"), "{err}");
        std::fs::write(dir.path().join("absent"), "\r\n").unwrap();
        assert_eq!(source.read(&no_env(), dir.path()), Ok(None));
    }

    #[test]
    fn credentials_directory_is_the_base_when_set() {
        let env = EnvSource::Fixed(HashMap::from([(
            "CREDENTIALS_DIRECTORY".to_string(),
            "/run/credentials/sluice.service".to_string(),
        )]));
        let settings = Path::new("/etc/sluice/sluice.toml");
        assert_eq!(
            base_dir(Some(settings), &env),
            PathBuf::from("/run/credentials/sluice.service")
        );
        assert_eq!(
            base_dir(Some(settings), &no_env()),
            PathBuf::from("/etc/sluice")
        );
        assert_eq!(
            base_dir(Some(Path::new("s.toml")), &no_env()),
            PathBuf::from(".")
        );
        assert_eq!(
            resolve(Path::new("/b"), Path::new("/abs")),
            PathBuf::from("/abs")
        );
    }

    #[test]
    fn keys_dir_has_one_caller_per_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("carol"), "key-carol\n").unwrap();
        std::fs::write(dir.path().join("bob"), "key-bob").unwrap();
        std::fs::write(dir.path().join(".bob.swp"), "junk").unwrap();
        std::fs::write(dir.path().join("dave"), "").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let (keys, warnings) = read_keys_dir(dir.path()).unwrap();
        let names: Vec<_> = keys
            .iter()
            .map(|(n, _, k)| (n.as_str(), k.expose()))
            .collect();
        assert_eq!(names, vec![("bob", "key-bob"), ("carol", "key-carol")]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("dave"), "{warnings:?}");
        assert!(read_keys_dir(&dir.path().join("nope")).is_err());
    }

    #[test]
    fn a_fifo_at_a_secret_path_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("token");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // Before the fix this read blocked for good; on a thread of its own, a hang fails the
        // test instead of stalling it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(read_secret_file(&fifo)).unwrap());
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO must not wait for a writer");
        let err = result.unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_secret_file_larger_than_the_cap_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(1 << 30).unwrap(); // sparse: 1 GiB on paper
        let err = read_secret_file(&path).unwrap_err();
        assert!(err.contains("larger than"), "{err}");
        std::fs::write(&path, vec![b'k'; MAX_SECRET_BYTES as usize]).unwrap();
        assert!(read_secret_file(&path).unwrap().is_some());
    }

    #[test]
    fn one_bad_file_in_keys_dir_is_skipped_with_a_warning_and_the_rest_apply() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alice"), "key-alice\n").unwrap();
        std::fs::write(dir.path().join("blob"), [0xff, 0xfe, 0x00, 0x9f]).unwrap();
        let big = std::fs::File::create(dir.path().join("huge")).unwrap();
        big.set_len(1 << 30).unwrap();
        std::fs::write(dir.path().join("carol"), "key-carol \n").unwrap();
        std::fs::write(dir.path().join("dan"), "\u{feff}key-dan").unwrap();
        let (keys, warnings) = read_keys_dir(dir.path()).unwrap();
        let names: Vec<_> = keys.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, vec!["alice", "carol", "dan"], "{warnings:?}");
        let about = |name: &str, what: &str| {
            warnings
                .iter()
                .any(|w| w.contains(&format!("/{name}")) && w.contains(what))
        };
        assert!(about("blob", "skipped: "), "{warnings:?}");
        assert!(about("huge", "larger than"), "{warnings:?}");
        assert!(about("carol", "ends with a space or tab"), "{warnings:?}");
        assert!(about("dan", "byte-order mark"), "{warnings:?}");
        // Kept as it is: only a trailing line break is not part of a secret.
        assert_eq!(keys[1].2.expose(), "key-carol ");
    }

    #[test]
    fn group_or_world_readable_file_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "k").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(exposure_warning(&path), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let warning = exposure_warning(&path).unwrap();
        assert!(
            warning.contains("640") && !warning.contains("k\""),
            "{warning}"
        );
    }
}
