//! Values with a grammar, parsed once: [`Duration`], [`ByteSize`] and [`Cpu`]. A manifest writes
//! them one way (`5m`, `15min`, `256mb`, `4GB`); each consumer reads them another
//! (PostgreSQL wants `min`, Prometheus `m`, Redis `mb`, Kubernetes `Mi`), so the manifest
//! holds the parsed value and every consumer asks for its own rendering. Validation,
//! `plan` and the configuration files then agree by construction.

use std::fmt;

/// Why a duration or size was refused; the message says what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` {problem}")]
pub struct UnitError {
    text: String,
    problem: String,
}

impl UnitError {
    fn new(text: &str, problem: impl Into<String>) -> Self {
        UnitError { text: text.to_string(), problem: problem.into() }
    }
}

/// Splits `5min` or `1h30m` into (number, unit) pairs; every number must carry a unit.
fn terms<'a>(text: &'a str, example: &str) -> Result<Vec<(u64, &'a str)>, UnitError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(UnitError::new(text, format!("is empty; write a value such as {example}")));
    }
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(UnitError::new(text, format!("is not a whole number with a unit, such as {example}")));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| UnitError::new(text, "is too large"))?;
        let after = rest[digits..].trim_start();
        let unit_len = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        if unit_len == 0 {
            return Err(UnitError::new(text, format!("has no unit; write it with one, such as {n}{}", example_unit(example))));
        }
        out.push((n, &after[..unit_len]));
        rest = after[unit_len..].trim_start();
    }
    Ok(out)
}

fn example_unit(example: &str) -> &str {
    example.trim_start_matches(|c: char| c.is_ascii_digit())
}

/// `value` in the largest of `units` (smallest first, the first of weight 1) that
/// writes it exactly: every consumer's spelling is this with its own unit names.
fn largest_exact(value: u64, units: &[(&str, u64)]) -> String {
    let (name, mult) = units.iter().rev().find(|(_, m)| value.is_multiple_of(*m)).copied().unwrap_or(units[0]);
    format!("{}{name}", value / mult)
}

/// A span of time, to the millisecond: `250ms`, `30s`, `5m` or `5min`, `2h`, `1d`, or a
/// sum such as `1h30m`. A bare number is refused: `60` could mean seconds to one
/// consumer and milliseconds to another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    ms: u64,
}

/// Units a duration may be written in, as (name, milliseconds).
const TIME_UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1000), ("sec", 1000), ("m", 60_000), ("min", 60_000), ("h", 3_600_000), ("d", 86_400_000)];

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Duration { ms: secs * 1000 }
    }

    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let mut ms: u64 = 0;
        for (n, unit) in terms(text, "30s")? {
            let Some(&(_, mult)) = TIME_UNITS.iter().find(|(name, _)| *name == unit) else {
                return Err(UnitError::new(text, format!("has unknown unit `{unit}`; use ms, s, m (or min), h or d")));
            };
            ms = n.checked_mul(mult).and_then(|v| ms.checked_add(v)).ok_or_else(|| UnitError::new(text, "is too long"))?;
        }
        Ok(Duration { ms })
    }

    /// Reads a recorded value (a state file's manifest): the grammar, and a bare number
    /// in the unit scalectl before 0.2 gave it, seconds, so that such a state file still
    /// loads. A manifest goes through the schema check first, which refuses bare numbers.
    pub fn read_recorded(text: &str) -> Result<Self, UnitError> {
        match text.trim().parse::<u64>() {
            Ok(n) => Ok(Duration { ms: n.saturating_mul(1000) }),
            Err(_) => Duration::parse(text),
        }
    }

    pub fn as_millis(self) -> u64 {
        self.ms
    }

    /// Whole seconds, rounded down.
    pub fn as_secs(self) -> u64 {
        self.ms / 1000
    }

    pub fn is_zero(self) -> bool {
        self.ms == 0
    }

    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ms)
    }

    /// The largest unit that writes the value exactly, from `units` (largest last).
    /// For postgresql.conf: PostgreSQL knows `ms`, `s`, `min`, `h` and `d` (not `m`, which
    /// is how `checkpointTimeout: 5m` once kept a server from starting).
    pub fn postgres(self) -> String {
        largest_exact(self.ms, &[("ms", 1), ("s", 1000), ("min", 60_000), ("h", 3_600_000), ("d", 86_400_000)])
    }

    /// For Prometheus' configuration and flags: `ms`, `s`, `m`, `h`, `d`.
    pub fn prometheus(self) -> String {
        largest_exact(self.ms, &[("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)])
    }

    /// For people and for humantime (`--for` and friends): the same as [`Display`].
    pub fn human(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Duration {
    /// The manifest's own spelling, with `min` for minutes (unambiguous to every reader).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.postgres())
    }
}

impl std::str::FromStr for Duration {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        Duration::parse(s)
    }
}

/// An amount of memory or disk in bytes: `64kB`, `512MB`, `256mb`, `4GiB`, `1TB`.
/// Units are binary (1 kB = 1024 B) and case-insensitive, as PostgreSQL reads them; a bare
/// number is refused, since PostgreSQL would read it in 8 kB pages and Redis in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize {
    bytes: u64,
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

impl ByteSize {
    pub const fn from_bytes(bytes: u64) -> Self {
        ByteSize { bytes }
    }

    pub const fn mib(n: u64) -> Self {
        ByteSize { bytes: n * MIB }
    }

    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let mut bytes: u64 = 0;
        for (n, unit) in terms(text, "512MB")? {
            let mult = match unit.to_ascii_lowercase().as_str() {
                "b" => 1,
                "k" | "kb" | "kib" => KIB,
                "m" | "mb" | "mib" => MIB,
                "g" | "gb" | "gib" => GIB,
                "t" | "tb" | "tib" => TIB,
                _ => return Err(UnitError::new(text, format!("has unknown unit `{unit}`; use B, kB, MB, GB or TB"))),
            };
            bytes = n.checked_mul(mult).and_then(|v| bytes.checked_add(v)).ok_or_else(|| UnitError::new(text, "is too large"))?;
        }
        Ok(ByteSize { bytes })
    }

    /// Reads a recorded value: the grammar, and a bare number as bytes, as scalectl
    /// before 0.2 read it (see [`Duration::read_recorded`]).
    pub fn read_recorded(text: &str) -> Result<Self, UnitError> {
        match text.trim().parse::<u64>() {
            Ok(bytes) => Ok(ByteSize { bytes }),
            Err(_) => ByteSize::parse(text),
        }
    }

    pub fn bytes(self) -> u64 {
        self.bytes
    }

    /// For postgresql.conf: `B`, `kB`, `MB`, `GB`, `TB` (case matters to PostgreSQL).
    pub fn postgres(self) -> String {
        largest_exact(self.bytes, &[("B", 1), ("kB", KIB), ("MB", MIB), ("GB", GIB), ("TB", TIB)])
    }

    /// For redis.conf, where `mb` is 1024² bytes but `m` would be 10⁶.
    pub fn redis(self) -> String {
        largest_exact(self.bytes, &[("", 1), ("kb", KIB), ("mb", MIB), ("gb", GIB), ("tb", TIB)])
    }

    /// A Kubernetes quantity: `Ki`, `Mi`, `Gi`, `Ti`.
    pub fn kubernetes(self) -> String {
        largest_exact(self.bytes, &[("", 1), ("Ki", KIB), ("Mi", MIB), ("Gi", GIB), ("Ti", TIB)])
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.postgres())
    }
}

impl std::str::FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        ByteSize::parse(s)
    }
}

/// A share of CPU as Kubernetes writes it: `250m` (millicores), `1`, `1.5` (cores), as
/// text or a YAML number. What a process is entitled to when cores are contended: a
/// cgroup's CPU weight on the local target, `requests.cpu` on Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpu {
    millis: u32,
}

impl Cpu {
    /// At most this many cores: more than any machine scalectl targets, and what keeps a
    /// cgroup v1 weight (1024 per core) under its ceiling of 262144.
    pub const MAX_CORES: u32 = 256;

    pub const fn from_millis(millis: u32) -> Self {
        Cpu { millis }
    }

    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let s = text.trim();
        let millis = match s.strip_suffix('m') {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                n.parse::<u64>().map_err(|_| UnitError::new(text, format!("is more than {} cores", Self::MAX_CORES)))?
            }
            Some(_) => return Err(UnitError::new(text, "is not a whole number of millicores, such as 500m")),
            None => {
                // Whole cores and up to three decimals, read as digits (no float rounding:
                // 1.1 is 1100m).
                let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
                let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
                if whole.is_empty() && frac.is_empty() || !digits(whole) || !digits(frac) {
                    return Err(UnitError::new(text, "is not a CPU amount; write cores (1, 1.5) or millicores (500m)"));
                }
                if frac.len() > 3 {
                    return Err(UnitError::new(text, "is not a whole number of millicores; write it as 1.5 or 1500m"));
                }
                let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| UnitError::new(text, "is too large"))? };
                let frac: u64 = format!("{frac:0<3}").parse().unwrap_or(0);
                whole.saturating_mul(1000).saturating_add(frac)
            }
        };
        if millis == 0 {
            return Err(UnitError::new(text, "is no CPU at all; write at least 1m"));
        }
        if millis > u64::from(Self::MAX_CORES) * 1000 {
            return Err(UnitError::new(text, format!("is more than {} cores", Self::MAX_CORES)));
        }
        Ok(Cpu { millis: millis as u32 })
    }

    pub fn millis(self) -> u32 {
        self.millis
    }

    /// As cgroup v1's `cpu.shares` reads it: 1024 per core (as the kubelet writes it),
    /// never below the kernel's minimum of 2.
    pub fn cgroup_v1_shares(self) -> u64 {
        (u64::from(self.millis) * 1024 / 1000).max(2)
    }

    /// A Kubernetes quantity: whole cores bare, else millicores.
    pub fn kubernetes(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.millis % 1000 {
            0 => write!(f, "{}", self.millis / 1000),
            _ => write!(f, "{}m", self.millis),
        }
    }
}

impl ::serde::Serialize for Cpu {
    fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> ::serde::Deserialize<'de> for Cpu {
    /// Text (`500m`, `"1.5"`) or a number (`1`, `0.5`), as Kubernetes takes it.
    fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Cpu, D::Error> {
        #[derive(::serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(u64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::Int(n) => n.to_string(),
            Raw::Float(x) => x.to_string(),
        };
        Cpu::parse(&text).map_err(::serde::de::Error::custom)
    }
}

impl ::schemars::JsonSchema for Cpu {
    fn schema_name() -> ::std::borrow::Cow<'static, str> {
        "Cpu".into()
    }

    fn json_schema(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
        ::schemars::json_schema!({
            "type": ["string", "number"],
            "description": "CPU as Kubernetes writes it: cores (1, 1.5) or millicores (500m).",
            "format": "cpu"
        })
    }
}

/// Values written as text but held parsed (durations, sizes, the comparisons of chaos
/// experiments): `Serialize` through `Display`, `Deserialize` through `$read` (whose
/// error becomes the message), and a JSON Schema string. With `format`, the schema
/// carries it and the located schema check (`schema_check.rs`) parses the value with
/// [`check_format`], so a bad value is reported at its line with every other problem.
#[macro_export]
macro_rules! text_value {
    ($ty:ty, $name:literal, $description:literal, read = $read:path $(, format = $format:literal)?) => {
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let text = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                $read(&text).map_err(::serde::de::Error::custom)
            }
        }

        impl ::schemars::JsonSchema for $ty {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                ::schemars::json_schema!({ "type": "string", "description": $description $(, "format": $format)? })
            }
        }
    };
}

text_value!(
    Duration,
    "Duration",
    "A duration with a unit: 250ms, 30s, 5m (or 5min), 2h, 1d, or a sum such as 1h30m.",
    read = Duration::read_recorded,
    format = "duration"
);
text_value!(
    ByteSize,
    "ByteSize",
    "A size with a binary unit, any case: 64kB, 512MB, 4GB, 1TB.",
    read = ByteSize::read_recorded,
    format = "byte-size"
);

/// Checks `text` against the grammar a schema `format` names; `None` for formats this
/// crate does not own. The schema check calls it, so validation parses exactly as the
/// manifest's types do.
pub fn check_format(format: &str, text: &str) -> Option<Result<(), UnitError>> {
    match format {
        "duration" => Some(Duration::parse(text).map(drop)),
        "byte-size" => Some(ByteSize::parse(text).map(drop)),
        "cpu" => Some(Cpu::parse(text).map(drop)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        Duration::parse(s).unwrap()
    }

    fn b(s: &str) -> ByteSize {
        ByteSize::parse(s).unwrap()
    }

    #[test]
    fn durations_in_every_spelling_mean_the_same() {
        assert_eq!(d("5m"), d("5min"));
        assert_eq!(d("5min"), Duration::from_secs(300));
        assert_eq!(d("1h30m"), d("90min"));
        assert_eq!(d("1h 30m").as_secs(), 5400);
        assert_eq!(d("250ms").as_millis(), 250);
        assert_eq!(d("2d").as_secs(), 172_800);
        assert_eq!(d(" 15s ").as_std(), std::time::Duration::from_secs(15));
    }

    #[test]
    fn cpu_is_read_as_kubernetes_writes_it() {
        let c = |s: &str| Cpu::parse(s).unwrap();
        assert_eq!(c("500m").millis(), 500);
        assert_eq!(c("1.5"), c("1500m"));
        for (text, millis) in [("1.1", 1100), ("1.001", 1001), ("2.01", 2010), ("16.1", 16_100)] {
            assert_eq!(c(text).millis(), millis, "{text}: no float rounding");
        }
        assert_eq!(c(".25").millis(), 250);
        assert_eq!(c("2").to_string(), "2");
        assert_eq!(c("250m").to_string(), "250m");
        assert_eq!(c("0.25").cgroup_v1_shares(), 256);
        assert_eq!(c("1m").cgroup_v1_shares(), 2, "the kernel's floor");
        for (bad, why) in [
            ("0", "no CPU at all"),
            ("0.0001", "whole number of millicores"),
            ("lots", "not a CPU amount"),
            ("1.5m", "millicores"),
            ("300", "more than 256 cores"),
        ] {
            let e = Cpu::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let number: Cpu = serde_json::from_str("0.5").unwrap();
        assert_eq!(number, c("500m"));
        let text: Cpu = serde_json::from_str("\"750m\"").unwrap();
        assert_eq!(text.millis(), 750);
        assert_eq!(serde_json::to_string(&c("1.5")).unwrap(), "\"1500m\"");
    }

    #[test]
    fn a_bare_number_or_unknown_unit_is_refused_with_what_to_write() {
        let e = Duration::parse("60").unwrap_err().to_string();
        assert_eq!(e, "`60` has no unit; write it with one, such as 60s");
        let e = Duration::parse("5 parsecs").unwrap_err().to_string();
        assert!(e.contains("unknown unit `parsecs`; use ms, s, m (or min), h or d"), "{e}");
        assert!(Duration::parse("").is_err());
        assert!(Duration::parse("m5").is_err());
        assert!(Duration::parse("1.5h").is_err(), "whole numbers only");
        assert!(Duration::parse("99999999999999999999d").is_err());
        let e = ByteSize::parse("60").unwrap_err().to_string();
        assert_eq!(e, "`60` has no unit; write it with one, such as 60MB");
    }

    #[test]
    fn postgres_gets_units_it_accepts() {
        // PostgreSQL: "Valid units for this parameter are us, ms, s, min, h, and d".
        assert_eq!(d("5m").postgres(), "5min");
        assert_eq!(d("15min").postgres(), "15min");
        assert_eq!(d("90s").postgres(), "90s");
        assert_eq!(d("1h30m").postgres(), "90min");
        assert_eq!(d("1d").postgres(), "1d");
        assert_eq!(d("1500ms").postgres(), "1500ms");
        assert_eq!(b("256mb").postgres(), "256MB");
        assert_eq!(b("4GB").postgres(), "4GB");
        assert_eq!(b("1536kB").postgres(), "1536kB");
        assert_eq!(b("100b").postgres(), "100B");
    }

    #[test]
    fn prometheus_redis_and_kubernetes_get_their_own_spelling() {
        assert_eq!(d("1min").prometheus(), "1m");
        assert_eq!(d("10s").prometheus(), "10s");
        assert_eq!(d("2d").prometheus(), "2d");
        assert_eq!(d("1h30m").prometheus(), "90m");
        assert_eq!(b("256MB").redis(), "256mb");
        assert_eq!(b("2gb").redis(), "2gb");
        assert_eq!(b("512MB").kubernetes(), "512Mi");
        assert_eq!(b("2GB").kubernetes(), "2Gi");
        assert_eq!(humantime::parse_duration(&d("1h30m").human()).unwrap(), std::time::Duration::from_secs(5400));
    }

    #[test]
    fn serde_reads_and_writes_the_manifest_spelling() {
        let v: Duration = serde_json::from_str("\"5m\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"5min\"");
        let e = serde_json::from_str::<ByteSize>("\"lots\"").unwrap_err().to_string();
        assert!(e.contains("`lots` is not a whole number with a unit"), "{e}");
        assert_eq!(check_format("duration", "60"), Some(Err(Duration::parse("60").unwrap_err())));
        // A state file written before the grammar may hold a bare number: it still loads.
        assert_eq!(serde_json::from_str::<Duration>("\"60\"").unwrap(), Duration::from_secs(60));
        assert_eq!(check_format("uri", "x"), None);
    }
}
