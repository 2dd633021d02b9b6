//! SettingsWatcher: notices the settings file changing (or SIGHUP), validates the new file
//! exactly as at start, and only then hands it to the other actors. A bad file changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use actix_web::web;
use notify::{EventKind, RecursiveMode, Watcher};

use super::{EnvSource, Settings, SettingsError};
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
                pending: None,
            };
            actor.watch(ctx);
            actor
        })
    }

    /// Watches the file's directory, not the file: a save-by-rename or an atomic replacement
    /// puts a new file (new inode) at the path, and deletion and re-creation must be seen too.
    fn watch(&mut self, ctx: &mut Context<Self>) {
        let Some(path) = &self.path else {
            return;
        };
        let Some(name) = path.file_name().map(|n| n.to_os_string()) else {
            return;
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let addr = ctx.address();
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                return;
            };
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()));
            let relevant = matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
            );
            if ours && relevant {
                addr.do_send(FileChanged);
            }
        };
        match notify::recommended_watcher(handler)
            .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w))
        {
            Ok(watcher) => {
                tracing::info!(path = %path.display(), "watching the settings file for changes");
                self.watcher = Some(watcher);
            }
            Err(err) => tracing::warn!(
                path = %path.display(),
                "cannot watch the settings file ({err}); SIGHUP still reloads it"
            ),
        }
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
                    .map(|_, _, _| ()),
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
                .map(|_, _, _| ()),
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
    let restart_needed = keep_startup_only(&current.settings, &mut next);
    if !restart_needed.is_empty() {
        tracing::warn!(
            settings = %restart_needed.join(", "),
            "changed in the settings file but only applied at start: restart sluice to apply them"
        );
    }
    match state.apply(Arc::new(next)).await {
        Ok(generation) => {
            tracing::info!(reason, generation, "settings reloaded");
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
    }
}
