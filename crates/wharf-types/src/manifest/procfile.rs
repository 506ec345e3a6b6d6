//! The Procfile shorthand: `type: command` per line.

use super::ManifestError;
use crate::{ProcessSpec, ProcessType};
use std::collections::BTreeMap;

/// Parses a Procfile. Blank lines and `#` comments are skipped.
pub fn parse_procfile(
    text: &str,
    file: &str,
) -> Result<BTreeMap<ProcessType, ProcessSpec>, ManifestError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |column: usize, message: String| ManifestError {
            file: file.to_string(),
            line: i + 1,
            column,
            field: None,
            message,
        };
        let Some((name, command)) = trimmed.split_once(':') else {
            return Err(err(
                1,
                format!("expected `type: command`, found {trimmed:?}"),
            ));
        };
        let ptype = ProcessType::new(name.trim()).map_err(|e| err(1, e.to_string()))?;
        let command = command.trim();
        if command.is_empty() {
            return Err(err(
                name.len() + 2,
                format!("process `{ptype}` has no command"),
            ));
        }
        if out.contains_key(&ptype) {
            return Err(err(1, format!("process `{ptype}` is declared twice")));
        }
        let spec = ProcessSpec::from_command(&ptype, command);
        out.insert(ptype, spec);
    }
    if out.is_empty() {
        return Err(ManifestError::whole_file(
            file,
            "no process declared; add a line like `web: node app.js`",
        ));
    }
    Ok(out)
}
