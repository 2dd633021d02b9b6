//! `sluice check`: every error in the settings and the secrets they name at once, and the
//! warnings about a set-up that starts but is risky or will not work as meant.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::credentials::SecretMaterial;
use crate::settings::{CredentialPolicy, EnvSource, Settings, StoreLocation};

/// What a start would run on, or every reason it would refuse, with the warnings either way.
pub struct Findings {
    /// The summary a start logs, when there is no error.
    pub summary: Option<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// Settings and material, when both could be read (a start needs them).
    pub loaded: Option<(Settings, SecretMaterial)>,
}

/// Reads the settings and their secrets exactly as a start does and collects every finding.
pub fn examine(path: Option<&Path>, env: &EnvSource) -> Findings {
    let mut findings = Findings {
        summary: None,
        errors: Vec::new(),
        warnings: Vec::new(),
        loaded: None,
    };
    let settings = match Settings::load(path, env) {
        Ok(settings) => settings,
        Err(err) => {
            findings.errors = err.each().iter().map(|e| e.to_string()).collect();
            return findings;
        }
    };
    findings.warnings.extend(state_warnings(&settings));
    let material = match SecretMaterial::read(&settings, env) {
        Ok(material) => material,
        Err(err) => {
            findings.errors = err.each().iter().map(|e| e.to_string()).collect();
            return findings;
        }
    };
    if let Err(err) = material.refuse_open_relay(&settings) {
        findings.errors.push(err.to_string());
    }
    findings
        .warnings
        .extend(exposure_warnings(&settings, &material));
    findings.warnings.extend(material.warnings.iter().cloned());
    if findings.errors.is_empty() {
        findings.summary = Some(format!(
            "{}\n{}",
            settings.summary(),
            material.summary(&settings)
        ));
        findings.loaded = Some((settings, material));
    }
    findings
}

/// The `check` command: the summary on stdout, then warnings and errors on stderr, one per
/// line; exit 1 when there is an error.
pub fn main(path: Option<&Path>) -> ExitCode {
    let findings = examine(path, &EnvSource::Process);
    if let Some(summary) = &findings.summary {
        // A reader that stopped early (`sluice check | head -1`) is no failure.
        let _ = writeln!(std::io::stdout().lock(), "ok: {summary}");
    }
    let mut err = std::io::stderr().lock();
    for warning in &findings.warnings {
        let _ = writeln!(err, "warning: {warning}");
    }
    for error in &findings.errors {
        let _ = writeln!(err, "error: {error}");
    }
    let (e, w) = (findings.errors.len(), findings.warnings.len());
    if e + w > 0 {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let _ = writeln!(err, "{}, {}", plural(e, "error"), plural(w, "warning"));
    }
    if e > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Risks of how sluice is reached and what its routes can do with the secrets it has.
pub fn exposure_warnings(settings: &Settings, material: &SecretMaterial) -> Vec<String> {
    let mut warnings = Vec::new();
    let listen = settings.listen;
    if !listen.ip().is_loopback() && material.admin_token.is_none() {
        warnings.push(format!(
            "listen {listen} reaches beyond loopback and no admin token is set: anyone who \
             reaches the port can read /stats, /metrics and /usage (set [admin] token_env or \
             token_file)"
        ));
    }
    if !listen.ip().is_loopback() && settings.tls.is_none() {
        warnings.push(format!(
            "listen {listen} reaches beyond loopback without TLS: access keys and clients' own \
             API keys and OAuth tokens cross the network in clear text (set [tls] cert_file and \
             key_file, put a TLS-terminating proxy in front, or listen on 127.0.0.1)"
        ));
    }
    for (route, key) in settings.routes.iter().zip(&material.server_keys) {
        if route.credential_policy == CredentialPolicy::ServerOnly && key.is_none() {
            warnings.push(format!(
                "route {} is server_only but has no server key ({} unset): every request to it \
                 gets 401",
                route.prefix,
                route
                    .server_key_source()
                    .describe(&crate::secrets::base_dir(
                        settings.source.as_deref(),
                        &EnvSource::Process
                    ))
            ));
        }
    }
    warnings
}

/// Where sluice keeps state must be writable, or it is lost at exit.
pub fn state_warnings(settings: &Settings) -> Vec<String> {
    let mut warnings = Vec::new();
    if let StoreLocation::Sqlite(path) = &settings.store.location {
        let state_dir = EnvSource::Process.var("STATE_DIRECTORY");
        let file = crate::store::resolve_path(path, state_dir.as_deref());
        if let Err(reason) = writable_dir(&parent_dir(&file)) {
            warnings.push(format!(
                "store.path {}: {reason}; the store cannot be written",
                file.display()
            ));
        }
    }
    if let Some(file) = &settings.stats.state_file {
        if let Err(reason) = writable_dir(&parent_dir(file)) {
            warnings.push(format!(
                "stats.state_file {}: {reason}; counters will not survive a restart",
                file.display()
            ));
        }
    }
    warnings
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether files can be created in `dir` (or in the directory that would hold it, when it does
/// not exist yet): probed by creating and removing a file, which also covers read-only mounts
/// and sandboxes that permission bits do not show.
pub fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut probe = dir;
    while !probe.exists() {
        probe = match probe.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
    }
    if !probe.is_dir() {
        return Err(format!("{} is not a directory", probe.display()));
    }
    let file = probe.join(format!(".sluice-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&file);
            Ok(())
        }
        Err(err) => Err(format!("{} is not writable ({err})", probe.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_directory_under_a_file_is_not_writable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(writable_dir(&dir.path().join("not/yet/there")), Ok(()));
        std::fs::write(dir.path().join("file"), "").unwrap();
        let err = writable_dir(&dir.path().join("file/state")).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn wide_listen_and_keyless_server_only_are_warned_about() {
        let text = "listen = \"0.0.0.0:4080\"\n[[routes]]\nprefix = \"/a\"\n\
                    upstream = \"http://127.0.0.1:1\"\ncredential_policy = \"server_only\"\n\
                    server_key_env = \"NO_SUCH_KEY\"\n[admin]\ntoken_env = \"NO_SUCH_TOKEN\"\n";
        let env = EnvSource::Fixed(HashMap::new());
        let settings = Settings::from_toml(text, "t", &env).unwrap();
        let material = SecretMaterial::read(&settings, &env).unwrap();
        let warnings = exposure_warnings(&settings, &material);
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        assert!(warnings[0].contains("no admin token"));
        assert!(warnings[1].contains("without TLS"));
        assert!(warnings[2].contains("route /a is server_only"));
    }
}
