//! Parsed request values: newtypes whose `TryFrom` runs inside serde, so an invalid
//! value is rejected during deserialization and the error names its field.

use serde::{Deserialize, Serialize};

macro_rules! bounded_int {
    ($name:ident, $inner:ty, $min:expr, $max:expr, $msg:literal) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(pub $inner);

        impl TryFrom<i64> for $name {
            type Error = String;
            fn try_from(v: i64) -> Result<Self, String> {
                if ($min..=$max).contains(&v) { Ok($name(v as $inner)) } else { Err($msg.to_owned()) }
            }
        }
        impl From<$name> for i64 {
            fn from(v: $name) -> i64 {
                v.0 as i64
            }
        }
    };
}

bounded_int!(Quantity, i32, 1, 1_000_000, "must be an integer between 1 and 1000000");
bounded_int!(Stock, i32, 0, i32::MAX as i64, "must be a non-negative integer");
bounded_int!(Cents, i64, 0, 1_000_000_000_000, "must be a non-negative amount of cents");
bounded_int!(Rating, i16, 1, 5, "must be an integer from 1 to 5");
bounded_int!(Units, i32, 1, 10_000_000, "must be a positive integer");

/// A lowercased email address with one `@` and something on both sides.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Email(pub String);

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        let v = v.trim().to_lowercase();
        match v.split_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') && v.len() <= 254 => Ok(Email(v)),
            _ => Err("must be an email address".to_owned()),
        }
    }
}

/// A password of 8 to 256 characters (the upper bound caps hashing work).
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Password(pub String);

impl TryFrom<String> for Password {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        if (8..=256).contains(&v.chars().count()) { Ok(Password(v)) } else { Err("must be 8 to 256 characters".to_owned()) }
    }
}

/// A non-empty name of at most 200 characters.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct Name(pub String);

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        let v = v.trim().to_owned();
        if v.contains('\0') {
            return Err("must not contain NUL characters".to_owned());
        }
        if v.is_empty() || v.chars().count() > 200 { Err("must be 1 to 200 characters".to_owned()) } else { Ok(Name(v)) }
    }
}

/// Free text of at most 10,000 characters.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct Text(pub String);

impl TryFrom<String> for Text {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        // PostgreSQL's text cannot hold NUL: refused here rather than failing the insert.
        if v.contains('\0') {
            return Err("must not contain NUL characters".to_owned());
        }
        if v.chars().count() > 10_000 { Err("must be at most 10000 characters".to_owned()) } else { Ok(Text(v)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(Quantity::try_from(0).is_err());
        assert!(Quantity::try_from(-3).is_err());
        assert_eq!(Quantity::try_from(2).unwrap().0, 2);
        assert!(Rating::try_from(6).is_err());
        assert!(Email::try_from("nope".to_owned()).is_err());
        assert_eq!(Email::try_from(" A@B.c ".to_owned()).unwrap().0, "a@b.c");
        assert!(Password::try_from("short".to_owned()).is_err());
    }
}
