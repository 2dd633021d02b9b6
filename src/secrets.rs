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

/// Reads one secret file. Trailing line breaks are not part of the secret; an empty file is no
/// secret.
pub fn read_secret_file(path: &Path) -> Result<Option<Secret>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    Ok((!value.is_empty()).then(|| Secret::new(value.to_string())))
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
/// an empty file is skipped with a warning.
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
        match read_secret_file(&path)? {
            Some(secret) => keys.push((name, path, secret)),
            None => warnings.push(format!("{} skipped: it is empty", path.display())),
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
