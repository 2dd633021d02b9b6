//! docs/settings.md documents every settings key once, and no key that does not exist.
//!
//! The real keys come from the settings structs themselves: each struct, deserialized with an
//! unknown field, refuses it by listing every field it has (`deny_unknown_fields`), so nested
//! sections, `[[lists]]` of tables and maps of tables (`[pricing."<model>"]`) are found by
//! probing, and a field added to a struct shows up here without anyone listing it. The built-in
//! `settings/sluice.toml`, keys shown only in its comments included, must be documented too.
//! Documented keys are the first cells of docs/settings.md's tables: a full dotted name in
//! backticks (`timeouts.idle_ms`, `routes.prefix`, `pricing.<model>.long_context.threshold`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sluice::settings::SettingsFile;

const PROBE: &str = "zz_not_a_settings_key";
/// How a map key (a model's name under `[pricing]`) is written in dotted names.
const MAP_KEY: &str = "<model>";

fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// One step down into the settings: a field, the entry of a `[[list]]`, or a map's value.
#[derive(Clone, Copy)]
enum Step<'a> {
    Field(&'a str),
    Entry,
    MapValue,
}

fn object(key: &str, value: Value) -> Value {
    Value::Object([(key.to_string(), value)].into_iter().collect())
}

/// The settings with `inner` placed at `path`.
fn nest(path: &[Step], inner: Value) -> Value {
    path.iter().rev().fold(inner, |value, step| match step {
        Step::Field(name) => object(name, value),
        Step::Entry => Value::Array(vec![value]),
        Step::MapValue => object(MAP_KEY, value),
    })
}

/// The fields of the struct at `path`, as its refusal of an unknown field lists them; `None`
/// when there is no struct there.
fn fields_at(path: &[Step]) -> Option<Vec<String>> {
    let probe = nest(path, object(PROBE, Value::from(1)));
    let error = serde_json::from_value::<SettingsFile>(probe)
        .err()?
        .to_string();
    let rest = error.strip_prefix(&format!("unknown field `{PROBE}`, "))?;
    if rest.starts_with("there are no fields") {
        return Some(Vec::new());
    }
    // "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`"
    Some(
        rest.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every key under `path`, by dotted name: `true` for a table (a section, a list of tables, a
/// map of tables), `false` for a value.
fn explore(path: &[Step], dotted: &str, keys: &mut BTreeMap<String, bool>) {
    let fields = fields_at(path).expect("a struct at every explored path");
    for field in &fields {
        let name = if dotted.is_empty() {
            field.clone()
        } else {
            format!("{dotted}.{field}")
        };
        let mut here = path.to_vec();
        here.push(Step::Field(field));
        let table = [
            (None, name.clone()),
            (Some(Step::Entry), name.clone()),
            (Some(Step::MapValue), format!("{name}.{MAP_KEY}")),
        ]
        .into_iter()
        .find_map(|(step, below)| {
            let mut inner = here.clone();
            inner.extend(step);
            fields_at(&inner).map(|_| (inner, below))
        });
        match table {
            Some((inner, below)) => {
                keys.insert(name.clone(), true);
                if below != name {
                    keys.insert(below.clone(), true);
                }
                explore(&inner, &below, keys);
            }
            None => {
                keys.insert(name, false);
            }
        }
    }
}

/// Every settings key the structs accept, by dotted name (`true`: a table).
fn settings_keys() -> BTreeMap<String, bool> {
    let mut keys = BTreeMap::new();
    explore(&[], "", &mut keys);
    keys
}

/// The first cells of docs/settings.md's table rows that are one key in backticks, with the
/// line each is on.
fn documented_keys() -> Vec<(String, usize)> {
    repo_file("docs/settings.md")
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let cell = line.strip_prefix('|')?.split('|').next()?.trim();
            let key = cell.strip_prefix('`')?.strip_suffix('`')?;
            (!key.contains('`')).then(|| (key.to_string(), i + 1))
        })
        .collect()
}

/// The keys the built-in `settings/sluice.toml` sets or shows in a comment (`# key = …`, under
/// a section that may itself be commented out, `# [tls]`), by dotted name; a quoted part of a
/// section's name (a model) is written as [`MAP_KEY`].
fn built_in_file_keys() -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in repo_file("settings/sluice.toml").lines() {
        let line = line
            .strip_prefix("# ")
            .or_else(|| line.strip_prefix('#'))
            .unwrap_or(line);
        let code = line.split(" #").next().unwrap_or("").trim_end();
        if let Some(name) = code
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .map(|s| s.trim_start_matches('[').trim_end_matches(']'))
        {
            // `pricing."claude-x-1.5"` → `pricing.<model>`: every quoted part is a map's key.
            section = name
                .split('"')
                .enumerate()
                .map(|(i, part)| if i % 2 == 1 { MAP_KEY } else { part })
                .collect();
            keys.insert(section.clone());
            continue;
        }
        let Some((key, _)) = code.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        keys.insert(if section.is_empty() {
            key.to_string()
        } else {
            format!("{section}.{key}")
        });
    }
    keys
}

#[test]
fn the_settings_structs_are_found_whole() {
    let keys = settings_keys();
    for (key, table) in [
        ("listen", false),
        ("routes", true),
        ("routes.server_key_file", false),
        ("access.keys", true),
        ("access.keys.key_file", false),
        ("admin.token_file", false),
        ("tls.cert_file", false),
        ("store.url_file", false),
        ("pricing.<model>", true),
        ("pricing.<model>.long_context.threshold", false),
        ("pricing_defaults.inference_geo", false),
        ("quotas.max_concurrent", false),
    ] {
        assert_eq!(keys.get(key), Some(&table), "{key} in {keys:?}");
    }
}

#[test]
fn every_settings_key_is_documented_in_docs_settings_md() {
    let documented: BTreeSet<String> = documented_keys().into_iter().map(|(k, _)| k).collect();
    let missing: Vec<String> = settings_keys()
        .into_iter()
        .filter(|(key, table)| !table && !documented.contains(key))
        .map(|(key, _)| key)
        .collect();
    assert!(
        missing.is_empty(),
        "settings keys with no row in docs/settings.md (add one: | `key` | default | meaning | \
         on reload |): {missing:?}"
    );
}

#[test]
fn every_key_documented_in_docs_settings_md_exists() {
    let keys = settings_keys();
    let unknown: Vec<String> = documented_keys()
        .into_iter()
        .filter(|(key, _)| !keys.contains_key(key))
        .map(|(key, line)| format!("docs/settings.md:{line}: {key}"))
        .collect();
    assert!(
        unknown.is_empty(),
        "documented keys that sluice does not have: {unknown:?}"
    );
}

#[test]
fn docs_settings_md_documents_each_key_once() {
    let mut seen = BTreeMap::new();
    let twice: Vec<String> = documented_keys()
        .into_iter()
        .filter_map(|(key, line)| {
            seen.insert(key.clone(), line)
                .map(|first| format!("{key} (lines {first} and {line})"))
        })
        .collect();
    assert!(twice.is_empty(), "keys documented twice: {twice:?}");
}

#[test]
fn every_key_of_the_built_in_settings_file_exists_and_is_documented() {
    let keys = settings_keys();
    let documented: BTreeSet<String> = documented_keys().into_iter().map(|(k, _)| k).collect();
    let file = built_in_file_keys();
    assert!(
        file.contains("store.url_file") && file.contains("tls.key_file"),
        "{file:?}"
    );
    let unknown: Vec<&String> = file.iter().filter(|k| !keys.contains_key(*k)).collect();
    assert!(
        unknown.is_empty(),
        "settings/sluice.toml shows keys sluice does not have: {unknown:?}"
    );
    let undocumented: Vec<&String> = file
        .iter()
        .filter(|k| !keys[*k] && !documented.contains(*k))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys of settings/sluice.toml missing from docs/settings.md: {undocumented:?}"
    );
}
