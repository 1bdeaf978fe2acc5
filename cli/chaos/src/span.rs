//! A duration written the way people write them (`500ms`, `30s`, `2m`), so that experiment
//! files read naturally; parsed once, at load, into a `std::time::Duration`.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span(pub Duration);

impl Span {
    pub const fn secs(s: u64) -> Span {
        Span(Duration::from_secs(s))
    }

    /// Reads `500ms`, `30s`, `1m 30s` in the grammar of manifests
    /// (`scalectl_core::units::Duration`); a bare number is refused because its unit
    /// would be a guess.
    pub fn parse(text: &str) -> Result<Span, String> {
        scalectl_core::units::Duration::parse(text).map(|d| Span(d.as_std())).map_err(|e| e.to_string())
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

scalectl_core::text_value!(Span, "Duration", "A duration such as 500ms, 30s or 2m.", read = Span::parse, format = "duration");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written_and_bare_numbers_are_refused() {
        assert_eq!(Span::parse("500ms").unwrap().0, Duration::from_millis(500));
        assert_eq!(Span::parse("1m 30s").unwrap().0, Duration::from_secs(90));
        assert!(Span::parse("30").unwrap_err().contains("`30` has no unit"));
        assert!(Span::parse("2 minutes").is_err(), "one grammar with manifests");
        assert_eq!(Span::secs(90).to_string(), "1m 30s");
    }
}
