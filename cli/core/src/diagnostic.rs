//! One problem found in a manifest or experiment file, with where it is and, when we can
//! guess, what the user meant.

use std::fmt;

use serde::Serialize;

use crate::tree::Location;

#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub loc: Location,
    /// Dotted key path (`spec.shop.workers`); empty for the document itself.
    pub path: String,
    pub message: String,
    /// A suggestion such as the nearest valid key.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(loc: Location, path: &str, message: impl Into<String>) -> Self {
        Diagnostic { loc, path: path.to_string(), message: message.into(), hint: None }
    }

    pub fn with_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.loc)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// The JSON form of a diagnostic for `-o json`.
#[derive(Serialize)]
pub struct DiagnosticJson<'a> {
    pub file: &'a str,
    pub line: usize,
    pub column: usize,
    pub path: &'a str,
    pub message: &'a str,
    pub hint: Option<&'a str>,
}

impl Diagnostic {
    pub fn to_json(&self) -> DiagnosticJson<'_> {
        DiagnosticJson {
            file: &self.loc.file,
            line: self.loc.line,
            column: self.loc.col,
            path: &self.path,
            message: &self.message,
            hint: self.hint.as_deref(),
        }
    }
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::nearest;

    #[test]
    fn nearest_finds_typos_but_not_strangers() {
        assert_eq!(nearest("replicsa", ["replicas", "roles"]), Some("replicas"));
        assert_eq!(nearest("Workers", ["workers"]), Some("workers"));
        assert_eq!(nearest("zebra", ["replicas", "roles"]), None);
    }
}
