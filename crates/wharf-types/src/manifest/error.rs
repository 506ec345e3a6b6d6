//! Manifest errors with file, line, column and field path.

use std::fmt;
use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A manifest the user must fix: where, which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field (`process.web.replicas`), when one applies.
    pub field: Option<String>,
    pub message: String,
}

impl ManifestError {
    pub fn whole_file(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            line: 1,
            column: 1,
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ManifestError {}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Finds spans of fields by path, and the path of a span, in the parsed document.
pub(crate) struct Locator<'a> {
    text: &'a str,
    file: &'a str,
    doc: Option<Spanned<DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    pub(crate) fn new(text: &'a str, file: &'a str) -> Self {
        Self {
            text,
            file,
            doc: DeTable::parse(text).ok(),
        }
    }

    /// An error at the deepest existing prefix of `path` (the key if the field exists).
    pub(crate) fn at(&self, path: &[&str], message: impl Into<String>) -> ManifestError {
        let span = self.span_of(path).unwrap_or(0..0);
        let (line, column) = line_col(self.text, span.start);
        ManifestError {
            file: self.file.to_string(),
            line,
            column,
            field: (!path.is_empty()).then(|| path.join(".")),
            message: message.into(),
        }
    }

    fn span_of(&self, path: &[&str]) -> Option<Range<usize>> {
        let mut table = self.doc.as_ref()?.get_ref();
        let mut best = None;
        for (i, segment) in path.iter().enumerate() {
            let Some((key, value)) = table.iter().find(|(k, _)| k.get_ref() == segment) else {
                break;
            };
            best = Some(if i + 1 == path.len() {
                value.span()
            } else {
                key.span()
            });
            match value.get_ref() {
                DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        best
    }

    /// The dotted path of the innermost key whose key or value text contains `offset`.
    /// Tables declared by `[headers]` only span their header, so every table is searched.
    fn path_at(&self, offset: usize) -> Vec<String> {
        fn walk(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
            for (key, value) in table.iter() {
                path.push(key.get_ref().to_string());
                if let DeValue::Table(t) = value.get_ref() {
                    if walk(t, offset, path) {
                        return true;
                    }
                }
                let (k, v) = (key.span(), value.span());
                let hit = k.contains(&offset) || v.contains(&offset);
                if hit {
                    return true;
                }
                path.pop();
            }
            false
        }
        let mut path = Vec::new();
        if let Some(doc) = self.doc.as_ref() {
            walk(doc.get_ref(), offset, &mut path);
        }
        path
    }
}

/// Converts a toml/serde error into a located [`ManifestError`].
pub(crate) fn from_toml(text: &str, file: &str, e: &toml::de::Error) -> ManifestError {
    let offset = e.span().map_or(0, |s| s.start);
    let (line, column) = line_col(text, offset);
    let path = Locator::new(text, file).path_at(offset);
    let mut message = e.message().trim().to_string();
    if message.starts_with("unknown field") {
        message.push_str("; check the spelling against the manifest reference in the README");
    }
    ManifestError {
        file: file.to_string(),
        line,
        column,
        field: (!path.is_empty()).then(|| path.join(".")),
        message,
    }
}
