//! `SLUICE__` environment overrides: each variable names one setting (`__` between levels, a
//! number for an entry of a list, as in `SLUICE__ROUTES__0__UPSTREAM`), is applied on top of the
//! file, and is named in any error its value causes.

use super::SettingsError;

const PREFIX: &str = "SLUICE__";

/// One override: the variable, the settings path it names (`routes[0].upstream`) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub var: String,
    pub path: String,
    pub value: String,
}

/// The overrides among `vars`, sorted by variable name; a variable whose name cannot be a path
/// (`SLUICE__ROUTES____X`) is an error naming it.
pub fn from_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, SettingsError> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (var, value) in vars {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        match path_of(rest) {
            Some(path) => found.push(Override { var, path, value }),
            None => errors.push(SettingsError::Parse(format!(
                "{var}: not a settings path (levels are separated by `__`, e.g. \
                 SLUICE__TIMEOUTS__IDLE_MS or SLUICE__ROUTES__0__UPSTREAM)"
            ))),
        }
    }
    SettingsError::all_or(errors)?;
    found.sort_by(|a, b| a.var.cmp(&b.var));
    Ok(found)
}

/// `ROUTES__0__UPSTREAM` → `routes[0].upstream`.
fn path_of(rest: &str) -> Option<String> {
    let mut path = String::new();
    for segment in rest.split("__") {
        if segment.is_empty() {
            return None;
        }
        if segment.bytes().all(|b| b.is_ascii_digit()) {
            if path.is_empty() {
                return None;
            }
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment.to_lowercase());
        }
    }
    Some(path)
}

/// Adds the overrides to `builder` on top of `file`. An index must name an entry the file
/// already has: an override changes a route, it cannot invent one with only some of its keys.
pub fn apply(
    mut builder: config::ConfigBuilder<config::builder::DefaultState>,
    overrides: &[Override],
    file: &config::Config,
) -> Result<config::ConfigBuilder<config::builder::DefaultState>, SettingsError> {
    let mut errors = Vec::new();
    for o in overrides {
        if let Some(end) = o.path.rfind(']') {
            let entry = &o.path[..=end];
            if file.get::<config::Value>(entry).is_err() {
                errors.push(SettingsError::invalid(
                    entry,
                    format!(
                        "{} overrides an entry the settings file does not have; an override \
                         can change an existing entry (write the entry in the file, then \
                         override its keys)",
                        o.var
                    ),
                ));
                continue;
            }
        }
        builder = match builder.set_override(&o.path, typed(&o.value)) {
            Ok(builder) => builder,
            Err(err) => {
                errors.push(SettingsError::Parse(format!("{}: {err}", o.var)));
                return Err(SettingsError::all_or(errors).unwrap_err());
            }
        };
    }
    SettingsError::all_or(errors)?;
    Ok(builder)
}

/// The value as TOML would type it: a boolean, a number, else a string.
fn typed(value: &str) -> config::Value {
    if let Ok(b) = value.parse::<bool>() {
        return b.into();
    }
    if let Ok(n) = value.parse::<i64>() {
        return n.into();
    }
    if let Ok(f) = value.parse::<f64>() {
        return f.into();
    }
    value.to_string().into()
}

/// `err` with the variable that set the offending key named, when an override did.
pub fn name_variable(err: SettingsError, overrides: &[Override]) -> SettingsError {
    match err {
        SettingsError::Several(all) => SettingsError::Several(
            all.into_iter()
                .map(|e| name_variable(e, overrides))
                .collect(),
        ),
        SettingsError::Invalid { key, reason } => match overrides.iter().find(|o| o.path == key) {
            Some(o) => SettingsError::Invalid {
                reason: format!("{reason} (set by {})", o.var),
                key,
            },
            None => SettingsError::Invalid { key, reason },
        },
        SettingsError::Parse(reason) => {
            let unknown = reason
                .split('`')
                .nth(1)
                .filter(|_| reason.contains("unknown field"));
            let from = unknown.and_then(|field| {
                overrides
                    .iter()
                    .find(|o| o.path.rsplit('.').next() == Some(field))
            });
            match from {
                Some(o) => SettingsError::Parse(format!("{reason} (set by {})", o.var)),
                None => SettingsError::Parse(reason),
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variable_names_become_paths_with_indexes() {
        let found = from_env(vars(&[
            ("SLUICE__ROUTES__0__UPSTREAM", "http://x"),
            ("SLUICE__TIMEOUTS__IDLE_MS", "5"),
            ("SLUICE_SETTINGS", "ignored"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        let paths: Vec<_> = found.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(paths, vec!["routes[0].upstream", "timeouts.idle_ms"]);
        let err = from_env(vars(&[("SLUICE__ROUTES____X", "1")])).unwrap_err();
        assert!(err.to_string().contains("SLUICE__ROUTES____X"), "{err}");
        assert!(from_env(vars(&[("SLUICE__0", "1")])).is_err());
    }

    #[test]
    fn errors_name_the_variable_that_set_the_key() {
        let overrides = from_env(vars(&[("SLUICE__TIMEOUTS__IDLE_MS", "0")])).unwrap();
        let err = SettingsError::invalid("timeouts.idle_ms", "must be greater than 0");
        let named = name_variable(err, &overrides).to_string();
        assert!(
            named.contains("set by SLUICE__TIMEOUTS__IDLE_MS"),
            "{named}"
        );
        let other = SettingsError::invalid("listen", "bad");
        assert_eq!(name_variable(other.clone(), &overrides), other);
        let overrides = from_env(vars(&[("SLUICE__LISTN", "x")])).unwrap();
        let err = SettingsError::Parse("unknown field `listn`, expected one of …".into());
        assert!(name_variable(err, &overrides)
            .to_string()
            .contains("set by SLUICE__LISTN"));
    }

    #[test]
    fn values_are_typed_like_toml() {
        assert!(typed("true").into_bool().unwrap());
        assert_eq!(typed("1234").into_int().unwrap(), 1234);
        assert_eq!(typed("127.0.0.1:9").into_string().unwrap(), "127.0.0.1:9");
    }
}
