//! SettingsWatcher: notices the settings file or a secret file changing (or SIGHUP), validates
//! the new settings exactly as at start, and only then hands them to the other actors. A bad
//! file changes nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use actix_web::web;
use notify::{EventKind, RecursiveMode, Watcher};

use super::{EnvSource, Settings, SettingsError};
use crate::credentials::{SecretPaths, STORE_URL_RESTART};
use crate::metrics::stats::rfc3339;
use crate::state::{AppState, ApplyError, ReloadStatus};

/// Editors and config tools write a file in several steps; wait for quiet before reading.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// After the quiet, the file is read twice this far apart and applied only when both reads
/// agree: a writer that pauses between parts is not caught half-way.
const SETTLE: Duration = Duration::from_millis(150);

pub struct SettingsWatcher {
    state: web::Data<AppState>,
    /// The file settings came from; `None` when running on the built-in defaults.
    path: Option<PathBuf>,
    /// Kept alive for as long as the actor runs; dropping it stops the notifications.
    watcher: Option<notify::RecommendedWatcher>,
    /// The directories watched now.
    watched: BTreeSet<PathBuf>,
    /// Which events in them matter; shared with the notification thread.
    interest: Arc<RwLock<Interest>>,
    /// The debounce or settle timer running now; a new change restarts it.
    pending: Option<SpawnHandle>,
}

impl SettingsWatcher {
    /// Starts the actor with the watch already in place, so that no change made after this
    /// returns can be missed.
    pub fn start_watching(state: web::Data<AppState>, path: Option<PathBuf>) -> Addr<Self> {
        Self::create(|ctx| {
            let mut actor = Self {
                state,
                path,
                watcher: None,
                watched: BTreeSet::new(),
                interest: Arc::default(),
                pending: None,
            };
            actor.watch(ctx);
            actor
        })
    }

    /// Watches directories, not files: a save-by-rename or an atomic replacement puts a new
    /// file (new inode) at the path, and deletion and re-creation must be seen too. What is
    /// watched follows the settings: the settings file and the secret files and keys directory
    /// they name.
    fn watch(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let interest = self.interest.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                return;
            };
            let relevant = matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
            );
            let ours = interest
                .read()
                .is_ok_and(|i| event.paths.iter().any(|p| i.covers(p)));
            if ours && relevant {
                addr.do_send(FileChanged);
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(watcher) => self.watcher = Some(watcher),
            Err(err) => tracing::warn!("cannot watch files ({err}); SIGHUP still reloads"),
        }
        self.rewatch();
    }

    /// Points the watch at the files the current settings read.
    fn rewatch(&mut self) {
        let settings = self.state.snapshot().settings.clone();
        let mut want = Interest::default();
        if let Some(path) = &self.path {
            want.files.push(path.clone());
        }
        let secrets = SecretPaths::of(&settings, &EnvSource::Process);
        want.files.extend(secrets.files);
        want.dirs.extend(secrets.dirs);
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let needed = want.watched_dirs();
        for dir in needed.difference(&self.watched) {
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => tracing::info!(path = %dir.display(), "watching for changes"),
                Err(err) => tracing::warn!(
                    path = %dir.display(),
                    "cannot watch ({err}); SIGHUP still reloads"
                ),
            }
        }
        for dir in self.watched.difference(&needed) {
            let _ = watcher.unwatch(dir);
        }
        self.watched = needed;
        if let Ok(mut interest) = self.interest.write() {
            *interest = want;
        }
    }
}

/// The files and directories whose changes are a reload.
#[derive(Debug, Default)]
struct Interest {
    files: Vec<PathBuf>,
    /// Any file in these counts (the keys directory).
    dirs: Vec<PathBuf>,
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Interest {
    fn watched_dirs(&self) -> BTreeSet<PathBuf> {
        let parents = self.files.iter().map(|f| parent_dir(f));
        parents.chain(self.dirs.iter().cloned()).collect()
    }

    /// Whether an event on `path` concerns one of the files (events name the watched directory
    /// joined with the file name).
    fn covers(&self, path: &Path) -> bool {
        let dir = parent_dir(path);
        self.files
            .iter()
            .any(|f| f.file_name() == path.file_name() && parent_dir(f) == dir)
            || self.dirs.iter().any(|d| *d == dir || d == path)
    }
}

impl Actor for SettingsWatcher {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct FileChanged;

impl Handler<FileChanged> for SettingsWatcher {
    type Result = ();

    fn handle(&mut self, _: FileChanged, ctx: &mut Self::Context) {
        if let Some(handle) = self.pending.take() {
            ctx.cancel_future(handle);
        }
        self.pending = Some(ctx.run_later(DEBOUNCE, |act, ctx| {
            let first = act.read_file();
            act.confirm_settled(first, ctx);
        }));
    }
}

impl SettingsWatcher {
    /// The file's bytes now; `None` when it is missing or unreadable.
    fn read_file(&self) -> Option<Vec<u8>> {
        self.path.as_ref().and_then(|path| std::fs::read(path).ok())
    }

    /// Reads the file again after [`SETTLE`]: the same bytes as `earlier` are applied, other
    /// bytes mean it is still being written, so wait once more.
    fn confirm_settled(&mut self, earlier: Option<Vec<u8>>, ctx: &mut Context<Self>) {
        self.pending = Some(ctx.run_later(SETTLE, move |act, ctx| {
            let now = act.read_file();
            if now != earlier {
                act.confirm_settled(now, ctx);
                return;
            }
            act.pending = None;
            let state = act.state.clone();
            let path = act.path.clone();
            ctx.wait(
                async move { reload(&state, path.as_deref(), "file changed", now).await }
                    .into_actor(act)
                    .map(|_, act, _| act.rewatch()),
            );
        }));
    }
}

/// Reload now (SIGHUP, or the file changed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload {
    pub reason: &'static str,
}

impl Handler<Reload> for SettingsWatcher {
    type Result = ();

    fn handle(&mut self, msg: Reload, ctx: &mut Self::Context) {
        let state = self.state.clone();
        let path = self.path.clone();
        // `wait`: one reload at a time; events meanwhile queue behind it.
        ctx.wait(
            async move { reload(&state, path.as_deref(), msg.reason, None).await }
                .into_actor(self)
                .map(|_, act, _| act.rewatch()),
        );
    }
}

/// Validates the settings — `settled`, the file's bytes as the watcher confirmed them, or else
/// read now — then applies what can change in a running process.
async fn reload(state: &AppState, path: Option<&Path>, reason: &str, settled: Option<Vec<u8>>) {
    let at = rfc3339(SystemTime::now());
    let current = state.snapshot();
    let loaded = match (path, settled) {
        (Some(path), Some(bytes)) => String::from_utf8(bytes)
            .map_err(|_| format!("settings file {} is not UTF-8", path.display()))
            .and_then(|text| {
                Settings::from_toml(&text, &path.display().to_string(), &EnvSource::Process)
                    .map_err(|e| e.to_string())
            })
            .map(|mut settings| {
                settings.source = Some(path.to_path_buf());
                settings
            }),
        (Some(path), _) if !path.exists() => Err(format!(
            "settings file {} is missing; keeping the current settings",
            path.display()
        )),
        _ => Settings::load(path, &EnvSource::Process).map_err(|e| e.to_string()),
    };
    let mut next = match loaded {
        Ok(next) => next,
        Err(error) => {
            tracing::error!(reason, "settings not reloaded: {error}");
            state.set_last_reload(ReloadStatus {
                ok: false,
                at,
                error: Some(error),
                restart_needed: Vec::new(),
            });
            return;
        }
    };
    let mut restart_needed = keep_startup_only(&current.settings, &mut next);
    if !restart_needed.is_empty() {
        tracing::warn!(
            settings = %restart_needed.join(", "),
            "changed in the settings file but only applied at start: restart sluice to apply them"
        );
    }
    match state.apply(Arc::new(next)).await {
        Ok(generation) => {
            tracing::info!(reason, generation, "settings reloaded");
            if state.snapshot().credentials.store_url_changed {
                tracing::warn!("store URL changed: {STORE_URL_RESTART}");
                restart_needed.push("store URL".into());
            }
            state.set_last_reload(ReloadStatus {
                ok: true,
                at,
                error: None,
                restart_needed,
            });
        }
        Err(err) => {
            let error = match &err {
                ApplyError::Settings(SettingsError::Invalid { key, .. }) if key == "listen" => {
                    format!("{err} (the running `listen` is kept until a restart)")
                }
                _ => err.to_string(),
            };
            tracing::error!(reason, "settings not reloaded: {error}");
            state.set_last_reload(ReloadStatus {
                ok: false,
                at,
                error: Some(error),
                restart_needed,
            });
        }
    }
}

/// `listen`, `workers` and `shutdown_grace_s` are fixed when the server starts: keep the
/// running values in `next` and name the ones that differ.
fn keep_startup_only(running: &Settings, next: &mut Settings) -> Vec<String> {
    let mut changed = Vec::new();
    if next.listen != running.listen {
        changed.push(format!("listen ({} → {})", running.listen, next.listen));
        next.listen = running.listen;
    }
    if next.workers != running.workers {
        changed.push(format!("workers ({} → {})", running.workers, next.workers));
        next.workers = running.workers;
    }
    if next.tls.is_some() != running.tls.is_some() {
        let on = |tls: &Option<_>| if tls.is_some() { "on" } else { "off" };
        changed.push(format!("tls ({} → {})", on(&running.tls), on(&next.tls)));
        // The listener keeps speaking what it started with; with TLS on, the running files
        // still give its certificate.
        next.tls = running.tls.clone();
    }
    if next.store != running.store {
        // The store's database is opened once; its writer and readers keep it.
        changed.push("store".into());
        next.store = running.store.clone();
    }
    if next.shutdown_grace != running.shutdown_grace {
        changed.push(format!(
            "shutdown_grace_s ({} → {})",
            running.shutdown_grace.as_secs(),
            next.shutdown_grace.as_secs()
        ));
        next.shutdown_grace = running.shutdown_grace;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(text: &str) -> Settings {
        Settings::from_toml(text, "t", &EnvSource::Fixed(HashMap::new())).unwrap()
    }

    #[test]
    fn interest_covers_named_files_and_whole_keys_dirs() {
        let interest = Interest {
            files: vec![
                PathBuf::from("/etc/sluice/sluice.toml"),
                PathBuf::from("key"),
            ],
            dirs: vec![PathBuf::from("/etc/sluice/keys")],
        };
        assert!(interest.covers(Path::new("/etc/sluice/sluice.toml")));
        assert!(!interest.covers(Path::new("/etc/sluice/other.toml")));
        assert!(interest.covers(Path::new("./key")));
        assert!(interest.covers(Path::new("/etc/sluice/keys/carol")));
        assert!(interest.covers(Path::new("/etc/sluice/keys")));
        let dirs: Vec<_> = interest.watched_dirs().into_iter().collect();
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/etc/sluice"),
                PathBuf::from("/etc/sluice/keys"),
                PathBuf::from("."),
            ]
        );
    }

    #[test]
    fn startup_only_settings_are_kept_and_named() {
        let route = "[[routes]]\nprefix = \"/a\"\nupstream = \"http://127.0.0.1:1\"\n";
        let running = settings(&format!(
            "listen = \"127.0.0.1:4080\"\nworkers = 2\n{route}"
        ));
        let mut next = settings(&format!(
            "listen = \"127.0.0.1:5000\"\nworkers = 2\n{route}"
        ));
        let changed = keep_startup_only(&running, &mut next);
        assert_eq!(
            changed,
            vec!["listen (127.0.0.1:4080 → 127.0.0.1:5000)".to_string()]
        );
        assert_eq!(next.listen, running.listen);

        // TLS cannot be turned on or off under a running listener: the running choice stays.
        let tls = "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
        let plain = settings(route);
        let mut with_tls = settings(&format!("{route}{tls}"));
        assert_eq!(
            keep_startup_only(&plain, &mut with_tls),
            vec!["tls (off → on)".to_string()]
        );
        assert!(with_tls.tls.is_none());
        let mut without = settings(route);
        let running_tls = settings(&format!("{route}{tls}"));
        assert_eq!(
            keep_startup_only(&running_tls, &mut without),
            vec!["tls (on → off)".to_string()]
        );
        assert_eq!(without.tls, running_tls.tls);

        // The store's database is opened once: another one is named, and the running one kept.
        let on_file = settings(&format!("{route}[store]\npath = \"a.db\"\n"));
        let mut on_postgres = settings(&format!("{route}[store]\nurl_file = \"store-url\"\n"));
        assert_eq!(
            keep_startup_only(&on_file, &mut on_postgres),
            vec!["store".to_string()]
        );
        assert_eq!(on_postgres.store, on_file.store);
    }
}
