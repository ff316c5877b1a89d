//! The file's keys and TOML types, checked before the `config` crate reads
//! it: that crate would coerce a mistyped value and read a key as a path.

use std::path::Path;

use super::{ConfigError, DEFAULTS};

/// Every key, at any depth, is a plain name. The `config` crate reads a key
/// as a path, `a[N]` as index N of an array it grows to that length, so a
/// quoted key such as `"x[99999999999]"` would allocate terabytes and abort
/// the process.
fn check_key_names(
    table: &std::collections::HashMap<String, config::Value>,
    prefix: &str,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !plain {
            return Err(ConfigError::Read(format!(
                "key {name:?}: keys are names of letters, digits, `_` and `-`"
            )));
        }
        match &value.kind {
            config::ValueKind::Table(inner) => check_key_names(inner, &name)?,
            config::ValueKind::Array(items) => {
                for item in items {
                    if let config::ValueKind::Table(inner) = &item.kind {
                        check_key_names(inner, &name)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What a TOML value is, in words.
fn kind_name(kind: &config::ValueKind) -> &'static str {
    use config::ValueKind as K;
    match kind {
        K::Nil => "nothing",
        K::Boolean(_) => "a boolean",
        K::I64(_) | K::I128(_) | K::U64(_) | K::U128(_) => "an integer",
        K::Float(_) => "a decimal number",
        K::String(_) => "a string",
        K::Table(_) => "a table",
        K::Array(_) => "an array",
    }
}

/// The value as it was written, for messages.
fn written(kind: &config::ValueKind) -> String {
    match kind {
        config::ValueKind::String(s) => format!("{s:?}"),
        config::ValueKind::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|v| written(&v.kind))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        config::ValueKind::Table(_) => "{...}".into(),
        other => other.to_string(),
    }
}

/// The element type of list keys whose default is empty.
const EMPTY_LIST_ELEMENTS: [(&str, &str); 2] = [
    ("general.interfaces", "a string"),
    ("fpm.allow", "a string"),
];

/// Checks that every key the file sets has the TOML type of its default:
/// the `config` crate would turn `"500"` into 500, and a typo in a type is
/// a mistake to point at, not to guess around. Unknown keys are left to
/// the deserializer, which names them.
pub(super) fn check_types(text: &str, file: &Path) -> Result<(), ConfigError> {
    use config::{File, FileFormat, Source, ValueKind};
    let read =
        |e: config::ConfigError| ConfigError::Read(format!("reading {}: {e}", file.display()));
    let given = File::from_str(text, FileFormat::Toml)
        .collect()
        .map_err(read)?;
    let defaults = File::from_str(DEFAULTS, FileFormat::Toml)
        .collect()
        .map_err(read)?;
    let type_error = |key: String, value: &ValueKind, expected: &str| {
        let hint = match value {
            ValueKind::String(s) if s.trim().parse::<f64>().is_ok() => {
                format!("; write {} without quotes", s.trim())
            }
            ValueKind::String(s) if matches!(s.trim(), "true" | "false") => {
                format!("; write {} without quotes", s.trim())
            }
            ValueKind::I64(_) | ValueKind::U64(_) | ValueKind::I128(_) | ValueKind::U128(_)
                if expected.contains("string") =>
            {
                format!("; write \"{value}\" in quotes")
            }
            _ => String::new(),
        };
        ConfigError::Type {
            key,
            value: written(value),
            expected: format!("expected {expected}, found {}{hint}", kind_name(value)),
        }
    };
    check_key_names(&given, "")?;
    for (section, value) in &given {
        let Some(ValueKind::Table(default_keys)) = defaults.get(section).map(|d| &d.kind) else {
            continue;
        };
        let ValueKind::Table(keys) = &value.kind else {
            return Err(type_error(
                section.clone(),
                &value.kind,
                "a table ([section])",
            ));
        };
        for (key, value) in keys {
            let Some(default) = default_keys.get(key) else {
                continue;
            };
            let name = format!("{section}.{key}");
            let expected = kind_name(&default.kind);
            if kind_name(&value.kind) != expected {
                return Err(type_error(name, &value.kind, expected));
            }
            if let (ValueKind::Array(items), ValueKind::Array(default_items)) =
                (&value.kind, &default.kind)
            {
                let element = default_items
                    .first()
                    .map(|d| kind_name(&d.kind))
                    .or_else(|| {
                        EMPTY_LIST_ELEMENTS
                            .iter()
                            .find(|(k, _)| *k == name)
                            .map(|(_, e)| *e)
                    });
                if let Some(element) = element {
                    if let Some(bad) = items.iter().find(|v| kind_name(&v.kind) != element) {
                        let plural = match element {
                            "a string" => "strings",
                            "an integer" => "integers",
                            other => other,
                        };
                        return Err(type_error(
                            name,
                            &bad.kind,
                            &format!("{plural} in this array"),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
